//! Restore: puts back, before build, the layer metadata and contents the layer-types
//! table says.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::Path;

use imageref::Digest;
use sha2::{Digest as _, Sha256};

use super::{io_err, CacheDir, CacheError};
use crate::hashing::HashingReader;
use crate::lifecycle::descriptor::{escape_id, write_toml, GroupBuildpack};
use crate::lifecycle::export::{LayerMetadata, PreviousImage};
use crate::lifecycle::phase::LAYERS_DIR;
use crate::lifecycle::{LogSink, Phase};
use crate::oci::{unpack, UnpackOptions};

/// What restore put back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// `<esc id>/<name>` of layers whose metadata was written.
    pub metadata: Vec<String>,
    /// `<esc id>/<name>` of layers whose contents came from the cache.
    pub contents: Vec<String>,
}

/// Restores `store.toml`, layer metadata and cached layer contents into `layers_dir` for the
/// buildpacks of `group`, per the layer-types table. `work_dir` is scratch space on the
/// same file system as `layers_dir`.
pub async fn restore(
    layers_dir: &Path,
    work_dir: &Path,
    group: &[GroupBuildpack],
    previous: &PreviousImage,
    cache: &CacheDir,
    logs: &dyn LogSink,
) -> Result<RestoreReport, CacheError> {
    let cached = cache.metadata();
    let mut report = RestoreReport::default();
    for bp in group {
        let bp_dir = layers_dir.join(escape_id(&bp.id));
        fs::create_dir_all(&bp_dir).map_err(io_err(&bp_dir))?;
        let from_image = previous.metadata.buildpack(&bp.id);
        if let Some(store) = from_image.and_then(|b| b.store.as_ref()) {
            let table = json_table(&serde_json::Value::Object(store.metadata.clone()));
            write_metadata_toml(&bp_dir.join("store.toml"), table)?;
        }
        let mut remembered: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, layer) in from_image.iter().flat_map(|b| &b.layers) {
            if !layer.launch || (layer.build && !layer.cache) {
                continue;
            }
            if layer.cache && !cached.layer(&bp.id, name).is_some_and(|c| c.cache) {
                continue;
            }
            write_layer_toml(&bp_dir, name, layer)?;
            remembered.insert(name.as_str(), layer.sha.as_str());
            report
                .metadata
                .push(format!("{}/{name}", escape_id(&bp.id)));
        }
        let from_cache = cached.buildpacks.iter().find(|b| b.key == bp.id.as_str());
        let cache_layers = || {
            from_cache
                .into_iter()
                .flat_map(|b| &b.layers)
                .filter(|(_, l)| l.cache)
        };
        for (name, layer) in cache_layers() {
            if layer.launch && remembered.contains_key(name.as_str()) {
                continue;
            }
            write_layer_toml(&bp_dir, name, layer)?;
            remembered.insert(name.as_str(), layer.sha.as_str());
            report
                .metadata
                .push(format!("{}/{name}", escape_id(&bp.id)));
        }
        for (name, layer) in cache_layers() {
            let key = format!("{}/{name}", escape_id(&bp.id));
            if remembered.get(name.as_str()) != Some(&layer.sha.as_str()) {
                remove_layer(&bp_dir, name)?;
                report.metadata.retain(|k| k != &key);
                continue;
            }
            match restore_contents(cache, layer, &bp_dir, &bp.id, name, work_dir).await {
                Ok(()) => {
                    logs.line(
                        Phase::Restore,
                        None,
                        &format!("Restoring data for \"{}:{name}\" from cache", bp.id),
                    );
                    report.contents.push(key);
                }
                Err(e) => {
                    tracing::warn!(buildpack = %bp.id, layer = %name, error = %e, "cached layer not restored");
                    logs.line(
                        Phase::Restore,
                        None,
                        &format!("Not restoring \"{}:{name}\" from cache: {e}", bp.id),
                    );
                    remove_layer(&bp_dir, name)?;
                    report.metadata.retain(|k| k != &key);
                }
            }
        }
    }
    Ok(report)
}

/// Writes `<layer>.toml` with only `[metadata]` (never `[types]`).
fn write_layer_toml(bp_dir: &Path, name: &str, layer: &LayerMetadata) -> Result<(), CacheError> {
    write_metadata_toml(
        &bp_dir.join(format!("{name}.toml")),
        json_table(&layer.data),
    )
}

fn write_metadata_toml(path: &Path, metadata: toml::Table) -> Result<(), CacheError> {
    let mut doc = toml::Table::new();
    if !metadata.is_empty() {
        doc.insert("metadata".into(), toml::Value::Table(metadata));
    }
    write_toml(path, &doc).map_err(|e| CacheError::Io {
        path: path.to_path_buf(),
        source: io::Error::other(e.to_string()),
    })
}

/// Label JSON as a TOML table; what TOML cannot hold (null) is left out.
fn json_table(value: &serde_json::Value) -> toml::Table {
    fn convert(v: &serde_json::Value) -> Option<toml::Value> {
        Some(match v {
            serde_json::Value::Null => return None,
            serde_json::Value::Bool(b) => toml::Value::Boolean(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => toml::Value::Integer(i),
                None => toml::Value::Float(n.as_f64()?),
            },
            serde_json::Value::String(s) => toml::Value::String(s.clone()),
            serde_json::Value::Array(a) => {
                toml::Value::Array(a.iter().filter_map(convert).collect())
            }
            serde_json::Value::Object(o) => toml::Value::Table(
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), convert(v)?)))
                    .collect(),
            ),
        })
    }
    match convert(value) {
        Some(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    }
}

fn remove_layer(bp_dir: &Path, name: &str) -> Result<(), CacheError> {
    let dir = bp_dir.join(name);
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&dir)(e)),
        _ => {}
    }
    for file in [format!("{name}.toml"), format!("{name}.sha")] {
        let path = bp_dir.join(file);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&path)(e)),
            _ => {}
        }
    }
    Ok(())
}

/// Unpacks the cached blob into a scratch root, checks the tar's sha256 against the
/// diffID, then moves the layer directory into place.
async fn restore_contents(
    cache: &CacheDir,
    layer: &LayerMetadata,
    bp_dir: &Path,
    id: &str,
    name: &str,
    work_dir: &Path,
) -> Result<(), CacheError> {
    let layer_err = |reason: String| CacheError::Layer {
        buildpack: id.to_string(),
        layer: name.to_string(),
        reason,
    };
    let diff_id = Digest::parse(&layer.sha).map_err(|e| layer_err(e.to_string()))?;
    let blob = cache.layer_path(&diff_id);
    let scratch = tempfile::Builder::new()
        .prefix(".restore-")
        .tempdir_in(work_dir)
        .map_err(io_err(work_dir))?;
    let root = scratch.path().to_path_buf();
    let unpacked = tokio::task::spawn_blocking(move || -> Result<Digest, String> {
        let file = File::open(&blob).map_err(|e| format!("{}: {e}", blob.display()))?;
        let mut tar = HashingReader {
            inner: flate2::read::MultiGzDecoder::new(BufReader::with_capacity(256 * 1024, file)),
            hasher: Sha256::new(),
        };
        unpack::unpack_layer(&mut tar, &root, &UnpackOptions { chown: false })
            .map_err(|e| e.to_string())?;
        Ok(Digest::from_sha256(tar.hasher))
    })
    .await
    .expect("unpacking a cached layer does not panic")
    .map_err(layer_err)?;
    if unpacked != diff_id {
        return Err(layer_err(format!(
            "the cached blob is corrupt: expected {diff_id}, got {unpacked}"
        )));
    }
    let source = scratch
        .path()
        .join(LAYERS_DIR.trim_start_matches('/'))
        .join(escape_id(id))
        .join(name);
    let target = bp_dir.join(name);
    if target.exists() {
        fs::remove_dir_all(&target).map_err(io_err(&target))?;
    }
    if source.is_dir() {
        fs::rename(&source, &target).map_err(io_err(&target))?;
    } else {
        fs::create_dir_all(&target).map_err(io_err(&target))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_label_data_becomes_toml_metadata() {
        let t = json_table(&json!({"v": "1", "n": 2, "nested": {"ok": true, "gone": null}}));
        let text = toml::to_string(&t).unwrap();
        assert!(text.contains("v = \"1\""));
        assert!(text.contains("ok = true"));
        assert!(!text.contains("gone"));
    }
}
