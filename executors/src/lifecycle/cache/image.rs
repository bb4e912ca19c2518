//! Cache images (`cache = { image = "<ref>" }`): pulled into the directory cache before
//! restore, pushed from it after save.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::Path;

use imageref::{Digest, ImageRef};
use sha2::{Digest as _, Sha256};

use super::dir::{blob_name, commit, BlobDigests, METADATA_FILE};
use super::{io_err, CacheDir, CacheError, CacheMetadata};
use crate::hashing::HashingReader;
use crate::lifecycle::{LogSink, Phase};
use crate::oci::layer::WrittenLayer;
use crate::oci::{ContainerConfig, Descriptor, Image, ImageConfig, ImageStore, OciError};

/// Brings the cache image `image` (`cache = { image = "<ref>" }`) into the directory
/// cache: its metadata label and its layers, downloading only the layers the directory
/// lacks. The directory is then what restore reads, as with a directory cache. A cache
/// image that is missing (a first build) or unreadable leaves the directory as it is:
/// a cache makes builds faster, it never fails them.
pub async fn pull_image(
    cache: &CacheDir,
    store: &ImageStore,
    image: &ImageRef,
    logs: &dyn LogSink,
) -> Result<usize, CacheError> {
    let Some((found, metadata)) = read_cache_image(store, image, logs).await else {
        return Ok(0);
    };
    let staging = cache.fresh_staging()?;
    let committed_digests = cache.blob_digests();
    let mut digests = BlobDigests::new();
    let mut downloaded = 0;
    for (diff_id, blob) in found
        .config
        .rootfs
        .diff_ids
        .iter()
        .zip(&found.manifest.layers)
    {
        let target = staging.join(blob_name(diff_id));
        let local = cache.layer_path(diff_id);
        if local.is_file() && fs::hard_link(&local, &target).is_ok() {
            if let Some(known) = committed_digests.get(&diff_id.to_string()) {
                digests.insert(diff_id.to_string(), known.clone());
            }
            continue;
        }
        if !download_blob(store, image, blob, &staging, diff_id, logs).await? {
            return Ok(0);
        }
        digests.insert(diff_id.to_string(), (blob.digest.to_string(), blob.size));
        downloaded += 1;
    }
    commit(cache, &metadata, &digests)?;
    logs.line(
        Phase::Restore,
        None,
        &format!(
            "Cache image {image} ({}): {} layers, {downloaded} downloaded",
            found.digest(),
            found.manifest.layers.len()
        ),
    );
    Ok(downloaded)
}

/// The cache image `image` and its metadata label; `None` (said in the log) when it is
/// missing, unreadable or not a cache image.
async fn read_cache_image(
    store: &ImageStore,
    image: &ImageRef,
    logs: &dyn LogSink,
) -> Option<(Image, CacheMetadata)> {
    let found = match store.image(image).await {
        Ok(found) => found,
        Err(OciError::NotFound { .. } | OciError::Layout { .. }) => {
            logs.line(Phase::Restore, None, &format!("No cache image at {image}"));
            return None;
        }
        Err(e) => {
            tracing::warn!(cache = %image, error = %e, "cache image unreadable; using the local cache");
            logs.line(
                Phase::Restore,
                None,
                &format!("Cache image {image} unreadable, using the local cache: {e}"),
            );
            return None;
        }
    };
    let metadata: CacheMetadata = match found.config.labels().get(METADATA_FILE) {
        Some(text) => match serde_json::from_str(text) {
            Ok(metadata) => metadata,
            Err(e) => {
                logs.line(
                    Phase::Restore,
                    None,
                    &format!("Cache image {image} has an unreadable {METADATA_FILE} label, using the local cache: {e}"),
                );
                return None;
            }
        },
        None => {
            logs.line(
                Phase::Restore,
                None,
                &format!("{image} is not a cache image (no {METADATA_FILE} label), using the local cache"),
            );
            return None;
        }
    };
    Some((found, metadata))
}

/// Downloads the layer `blob` (of diffID `diff_id`) of the cache image into `staging`;
/// `false` (said in the log) when the registry cannot give it whole.
async fn download_blob(
    store: &ImageStore,
    image: &ImageRef,
    blob: &Descriptor,
    staging: &Path,
    diff_id: &Digest,
    logs: &dyn LogSink,
) -> Result<bool, CacheError> {
    let target = staging.join(blob_name(diff_id));
    let mut stream = match store.open_blob(image, blob).await {
        Ok(stream) => stream,
        Err(e) => {
            logs.line(
                Phase::Restore,
                None,
                &format!(
                    "Cache image {image}: layer {} unreadable, using the local cache: {e}",
                    blob.digest
                ),
            );
            return Ok(false);
        }
    };
    let partial = staging.join(format!("{}.partial", blob_name(diff_id)));
    let mut file = tokio::fs::File::create(&partial)
        .await
        .map_err(io_err(&partial))?;
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                logs.line(
                    Phase::Restore,
                    None,
                    &format!("Cache image {image}: layer {} failed mid-download, using the local cache: {e}", blob.digest),
                );
                return Ok(false);
            }
        };
        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
            .await
            .map_err(io_err(&partial))?;
    }
    tokio::io::AsyncWriteExt::flush(&mut file)
        .await
        .map_err(io_err(&partial))?;
    drop(file);
    fs::rename(&partial, &target).map_err(io_err(&target))?;
    Ok(true)
}

/// Writes the directory cache as the cache image `image`: one layer per cached layer
/// (the blobs the directory holds, pushed only when the destination lacks them) and the
/// metadata as the `io.buildpacks.lifecycle.cache.metadata` label, as the reference
/// lifecycle's cache images carry it.
pub async fn push_image(
    cache: &CacheDir,
    store: &ImageStore,
    image: &ImageRef,
    platform: (&str, &str),
    logs: &dyn LogSink,
) -> Result<ImageRef, CacheError> {
    let metadata = cache.metadata();
    let layers = cached_layers(cache, &metadata).await?;
    let mut labels = BTreeMap::new();
    labels.insert(
        METADATA_FILE.to_string(),
        serde_json::to_string(&metadata).expect("cache metadata serialises"),
    );
    let config = ImageConfig {
        os: platform.0.to_string(),
        architecture: platform.1.to_string(),
        variant: None,
        created: Some(CREATED.to_string()),
        config: Some(ContainerConfig {
            labels: Some(labels),
            ..Default::default()
        }),
        rootfs: Default::default(),
        history: Vec::new(),
        other: Default::default(),
    };
    let pushed = store
        .push_image(image, config, &layers)
        .await
        .map_err(|e| CacheError::Image {
            image: image.to_string(),
            source: e,
        })?;
    logs.line(
        Phase::Export,
        None,
        &format!("Saved cache image {pushed} ({} layers)", layers.len()),
    );
    Ok(pushed)
}

/// The blobs of the layers `metadata` lists, once each, in order, with their digests
/// (recorded when committed, else hashed here).
async fn cached_layers(
    cache: &CacheDir,
    metadata: &CacheMetadata,
) -> Result<Vec<WrittenLayer>, CacheError> {
    let mut diff_ids: Vec<Digest> = Vec::new();
    for bp in &metadata.buildpacks {
        for layer in bp.layers.values() {
            let diff_id = Digest::parse(&layer.sha).map_err(|e| CacheError::Layer {
                buildpack: bp.key.to_string(),
                layer: layer.sha.clone(),
                reason: e.to_string(),
            })?;
            if !diff_ids.contains(&diff_id) {
                diff_ids.push(diff_id);
            }
        }
    }
    let known = cache.blob_digests();
    let mut layers = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let path = cache.layer_path(&diff_id);
        let recorded = known
            .get(&diff_id.to_string())
            .and_then(|(digest, size)| Some((Digest::parse(digest).ok()?, *size)));
        if let Some((digest, size)) = recorded {
            layers.push(WrittenLayer {
                diff_id,
                digest,
                size,
                path,
            });
            continue;
        }
        // A blob cached before digests were recorded: hashed once here.
        let hashed = path.clone();
        let (digest, size) = tokio::task::spawn_blocking(move || -> io::Result<(Digest, u64)> {
            let mut reader = HashingReader {
                inner: BufReader::new(File::open(&hashed)?),
                hasher: Sha256::new(),
            };
            let size = io::copy(&mut reader, &mut io::sink())?;
            let digest = Digest::from_sha256(reader.hasher);
            Ok((digest, size))
        })
        .await
        .expect("hashing a file does not panic")
        .map_err(io_err(&path))?;
        layers.push(WrittenLayer {
            diff_id,
            digest,
            size,
            path,
        });
    }
    Ok(layers)
}

/// The `created` time of cache images: fixed, like the app image's.
const CREATED: &str = "1980-01-01T00:00:01Z";
