//! Save: commits the build's cache layers after a successful export.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::dir::{blob_name, commit, BlobDigests};
use super::{io_err, CacheDir, CacheError, CacheMetadata};
use crate::lifecycle::descriptor::{escape_id, GroupBuildpack};
use crate::lifecycle::export::{buildpack_entry, buildpack_layers, layer_metadata};
use crate::lifecycle::phase::LAYERS_DIR;
use crate::lifecycle::{LogSink, Phase};
use crate::oci::layer::{LayerBuilder, WrittenLayer};
use crate::oci::{LayerCompression, OciError};

/// Commits the `cache = true` layers of `group` in `layers_dir` to the cache: layers export
/// already wrote (`written`, by `<esc id>/<name>`, as [`crate::lifecycle::export::ExportReport::written`]) are
/// linked, unchanged ones kept from the last commit, others written.
pub async fn save(
    cache: &CacheDir,
    layers_dir: &Path,
    work_dir: &Path,
    group: &[GroupBuildpack],
    written: &BTreeMap<String, WrittenLayer>,
    (uid, gid): (u32, u32),
    logs: &dyn LogSink,
) -> Result<CacheMetadata, CacheError> {
    let staging = cache.fresh_staging()?;
    let committed_digests = cache.blob_digests();
    let mut digests = BlobDigests::new();
    let mut metadata = CacheMetadata::default();
    for bp in group {
        let mut bp_md = buildpack_entry(&bp.id, &bp.version)?;
        for layer in buildpack_layers(layers_dir, &bp.id)? {
            if !layer.toml.types.cache {
                continue;
            }
            if !layer.dir.is_dir() {
                tracing::warn!(buildpack = %bp.id, layer = %layer.name, "cache layer without a directory not cached");
                continue;
            }
            let key = format!("{}/{}", escape_id(&bp.id), layer.name);
            // The cache keeps gzip blobs: a zstd layer of the image is written again.
            let exported = written
                .get(&key)
                .filter(|w| w.compression() == LayerCompression::Gzip);
            let written = match exported {
                Some(w) => w.clone(),
                None => {
                    let in_image = Path::new(LAYERS_DIR)
                        .join(escape_id(&bp.id))
                        .join(&layer.name);
                    write_layer((uid, gid), in_image, layer.dir.clone(), work_dir)
                        .await
                        .map_err(|e| CacheError::Layer {
                            buildpack: bp.id.clone(),
                            layer: layer.name.to_string(),
                            reason: e.to_string(),
                        })?
                }
            };
            let target = staging.join(blob_name(&written.diff_id));
            let committed = cache.layer_path(&written.diff_id);
            let key = written.diff_id.to_string();
            let source = if committed.is_file() {
                // Its bytes may have come from a cache image: its own digest holds.
                if let Some(known) = committed_digests.get(&key) {
                    digests.insert(key, known.clone());
                }
                committed
            } else {
                digests.insert(key, (written.digest.to_string(), written.size));
                written.path.clone()
            };
            if !target.exists() {
                fs::hard_link(&source, &target)
                    .or_else(|_| fs::copy(&source, &target).map(drop))
                    .map_err(io_err(&target))?;
            }
            logs.line(
                Phase::Export,
                None,
                &format!("Caching layer '{}:{}'", bp.id, layer.name),
            );
            bp_md.layers.insert(
                layer.name.clone(),
                layer_metadata(&written.diff_id, &layer.toml),
            );
        }
        if !bp_md.layers.is_empty() {
            metadata.buildpacks.push(bp_md);
        }
    }
    commit(cache, &metadata, &digests)?;
    Ok(metadata)
}

/// Writes the layer holding `on_disk` as `in_image`, walking and writing on a blocking
/// thread.
async fn write_layer(
    (uid, gid): (u32, u32),
    in_image: PathBuf,
    on_disk: PathBuf,
    work_dir: &Path,
) -> Result<WrittenLayer, OciError> {
    let work_dir = work_dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut builder = LayerBuilder::new(uid.into(), gid.into());
        builder.add(&in_image, &on_disk)?;
        builder.write(&work_dir)
    })
    .await
    .expect("writing a layer does not panic")
}
