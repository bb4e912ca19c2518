//! Pushing a builder image through [`ImageStore`], as export pushes an app image: the
//! blobs (several at a time; copied or mounted across repositories, skipped when the
//! destination has them, streamed, never held in memory), then the config, then the
//! manifest under the tag.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use imageref::{Digest, ImageRef};

use super::buildpacks::{BuilderLayer, LayerBlob};
use super::Fail;
use super::PublishError;
use crate::lifecycle::{LogSink, Phase};
use crate::oci::{
    media_type, BlobTransfer, ImageConfig, ImageManifest, ImageStore, Manifest, RawManifest,
};

/// What a push did.
pub struct Pushed {
    pub digest: Digest,
    pub image: ImageRef,
    pub blobs_uploaded: usize,
    pub bytes_uploaded: u64,
}

/// Pushes `layers` (in image order), then `config` with `rootfs` set to their diffIDs,
/// then the manifest under `dest`.
pub async fn push(
    store: &ImageStore,
    dest: &ImageRef,
    mut config: ImageConfig,
    layers: &[BuilderLayer],
    logs: &dyn LogSink,
    fail: &Fail<'_>,
) -> Result<Pushed, PublishError> {
    let bytes = Arc::new(AtomicU64::new(0));
    let what = || format!("push {dest}");
    // By index: a stream of borrowed layers makes the future lose `Send` (rustc's
    // higher-ranked lifetime limits), and the engine spawns it.
    let transfers: Vec<BlobTransfer> = futures::stream::iter(0..layers.len())
        .map(|i| {
            let bytes = bytes.clone();
            let layer = &layers[i];
            async move {
                let how = match &layer.blob {
                    LayerBlob::Written(w) => {
                        let how = store
                            .push_blob_file(dest, &layer.descriptor, &w.path)
                            .await?;
                        if how == BlobTransfer::Uploaded {
                            bytes.fetch_add(w.size, Ordering::Relaxed);
                        }
                        how
                    }
                    LayerBlob::Copied { from } => {
                        let counter = bytes.clone();
                        store
                            .copy_blob(
                                from,
                                dest,
                                &layer.descriptor,
                                Arc::new(move |n| {
                                    counter.fetch_add(n, Ordering::Relaxed);
                                }),
                            )
                            .await?
                    }
                };
                tracing::debug!(layer = %layer.descriptor.digest, ?how, "builder layer pushed");
                Ok(how)
            }
        })
        .buffered(store.settings().parallel_blobs.max(1))
        .try_collect()
        .await
        .map_err(|e| fail.image(what(), e))?;
    let mut blobs_uploaded = transfers
        .iter()
        .filter(|t| **t == BlobTransfer::Uploaded)
        .count();

    config.rootfs.diff_ids = layers.iter().map(|l| l.diff_id.clone()).collect();
    let config_bytes = Bytes::from(serde_json::to_vec(&config).expect("a config serialises"));
    let config_size = config_bytes.len() as u64;
    let (config_descriptor, config_transfer) = store
        .push_blob_bytes(dest, media_type::OCI_CONFIG, config_bytes)
        .await
        .map_err(|e| fail.image(what(), e))?;
    if config_transfer == BlobTransfer::Uploaded {
        blobs_uploaded += 1;
        bytes.fetch_add(config_size, Ordering::Relaxed);
    }
    let manifest = RawManifest::from_manifest(&Manifest::Image(ImageManifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.into()),
        config: config_descriptor,
        layers: layers.iter().map(|l| l.descriptor.clone()).collect(),
        annotations: None,
    }));
    let image = store
        .push_manifest(dest, &manifest)
        .await
        .map_err(|e| fail.image(what(), e))?;
    let bytes_uploaded = bytes.load(Ordering::Relaxed);
    logs.line(
        Phase::Export,
        None,
        &format!(
            "Builder {} pushed as {image}: {blobs_uploaded} blobs, {bytes_uploaded} bytes uploaded",
            fail.builder()
        ),
    );
    Ok(Pushed {
        digest: manifest.digest,
        image,
        blobs_uploaded,
        bytes_uploaded,
    })
}
