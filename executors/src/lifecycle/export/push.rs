//! Pushing the app image: its blobs, config and manifest, under every tag.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use imageref::{Digest, ImageRef};

use super::{oci_err, Blob, ExportError, ExportRequest, ImageLayer};
use crate::lifecycle::{LogSink, Phase};
use crate::oci::{
    media_type, BlobTransfer, ImageConfig, ImageManifest, ImageStore, Manifest, RawManifest,
};

/// `sha256:` and the first 12 hex digits, as in `kpackd inspect`.
fn short_digest(digest: &Digest) -> String {
    let hex = digest.hex();
    format!("{}:{}", digest.algorithm(), &hex[..hex.len().min(12)])
}

pub(super) struct Pushed {
    pub(super) digest: Digest,
    pub(super) image: ImageRef,
    pub(super) blobs_uploaded: usize,
    pub(super) bytes_uploaded: u64,
}

/// Blobs first (several at a time), then the config, then the manifest under the tag
/// (by digest first) and every additional tag.
pub(super) async fn push(
    store: &ImageStore,
    req: &ExportRequest<'_>,
    mut config: ImageConfig,
    layers: &[ImageLayer],
    logs: &dyn LogSink,
) -> Result<Pushed, ExportError> {
    let dest = req.tag;
    let bytes = Arc::new(AtomicU64::new(0));
    let mut blobs_uploaded = push_layers(store, dest, layers, logs, &bytes).await?;

    config.rootfs.diff_ids = layers.iter().map(|l| l.diff_id.clone()).collect();
    let config_bytes = Bytes::from(serde_json::to_vec(&config).expect("a config serialises"));
    let config_size = config_bytes.len() as u64;
    let (config_descriptor, config_transfer) = store
        .push_blob_bytes(dest, media_type::OCI_CONFIG, config_bytes)
        .await
        .map_err(|e| oci_err(dest, e))?;
    if config_transfer == BlobTransfer::Uploaded {
        blobs_uploaded += 1;
        bytes.fetch_add(config_size, Ordering::Relaxed);
    }
    let manifest = RawManifest::from_manifest(&Manifest::Image(ImageManifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.into()),
        config: config_descriptor.clone(),
        layers: layers.iter().map(|l| l.descriptor.clone()).collect(),
        annotations: None,
    }));
    let image = store
        .push_manifest(dest, &manifest)
        .await
        .map_err(|e| oci_err(dest, e))?;
    for tag in req.additional_tags {
        if !tag.same_location(dest) {
            let all = layers
                .iter()
                .map(|l| &l.descriptor)
                .chain(std::iter::once(&config_descriptor));
            for blob in all {
                store
                    .copy_blob(&image, tag, blob, Arc::new(|_| {}))
                    .await
                    .map_err(|e| oci_err(tag, e))?;
            }
        }
        store
            .push_manifest(tag, &manifest)
            .await
            .map_err(|e| oci_err(tag, e))?;
    }
    Ok(Pushed {
        digest: manifest.digest,
        image,
        blobs_uploaded,
        bytes_uploaded: bytes.load(Ordering::Relaxed),
    })
}

/// Pushes the blob of every layer to `dest`, several at a time, each said in `logs` as it
/// ends; adds the bytes uploaded to `bytes`. How many were uploaded.
async fn push_layers(
    store: &ImageStore,
    dest: &ImageRef,
    layers: &[ImageLayer],
    logs: &dyn LogSink,
    bytes: &Arc<AtomicU64>,
) -> Result<usize, ExportError> {
    let said =
        |i: usize, how: BlobTransfer| logs.line(Phase::Export, None, &layer_line(layers, i, how));
    let parallel = store.settings().parallel_blobs.max(1);
    // By index: a stream of borrowed layers makes the future lose `Send` (rustc's
    // higher-ranked lifetime limits), and the engine spawns it.
    let transfers: Vec<BlobTransfer> = futures::stream::iter(0..layers.len())
        .map(|i| {
            let bytes = bytes.clone();
            let layer = &layers[i];
            async move {
                match &layer.blob {
                    Blob::Written(w) => {
                        let how = store
                            .push_blob_file(dest, &layer.descriptor, &w.path)
                            .await?;
                        if how == BlobTransfer::Uploaded {
                            bytes.fetch_add(w.size, Ordering::Relaxed);
                        }
                        said(i, how);
                        Ok(how)
                    }
                    Blob::Copied { from } => {
                        let how = store
                            .copy_blob(
                                from,
                                dest,
                                &layer.descriptor,
                                Arc::new(move |n| {
                                    bytes.fetch_add(n, Ordering::Relaxed);
                                }),
                            )
                            .await?;
                        said(i, how);
                        Ok(how)
                    }
                }
            }
        })
        .buffered(parallel)
        .try_collect()
        .await
        .map_err(|e| oci_err(dest, e))?;
    Ok(transfers
        .iter()
        .filter(|t| **t == BlobTransfer::Uploaded)
        .count())
}

/// `Layer 2/5 sha256:0123456789ab 1.5 MiB (examples/python): uploaded`.
fn layer_line(layers: &[ImageLayer], i: usize, how: BlobTransfer) -> String {
    let layer = &layers[i];
    let how = match how {
        BlobTransfer::Existed => "already there",
        BlobTransfer::Mounted => "mounted",
        BlobTransfer::Uploaded => "uploaded",
    };
    format!(
        "Layer {}/{} {} {:.1} MiB ({}): {how}",
        i + 1,
        layers.len(),
        short_digest(&layer.descriptor.digest),
        layer.descriptor.size as f64 / (1024.0 * 1024.0),
        if layer.created_by.is_empty() {
            "run image"
        } else {
            &layer.created_by
        },
    )
}
