//! Analyze, restore and the cache (notes §9).
//!
//! - [`analyze`] reads the previous image's `io.buildpacks.lifecycle.metadata` label and
//!   its layers by diffID, so export can reuse launch layers without uploading them again.
//! - [`CacheDir`] is the directory cache of one image, `<state-dir>/cache/<image>/`: the
//!   `cache = true` layers as the tar+gzip blobs export writes, named by diffID, and their
//!   metadata, in the reference lifecycle's volume cache layout (`committed/`, `staging/`).
//! - [`restore`] puts back, before build, the layer metadata and contents the layer-types
//!   table says: metadata of launch layers from the image label, metadata and contents of
//!   cache layers from the cache (contents only when the image and cache agree).
//! - [`save`] commits the build's cache layers after a successful export.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use imageref::{Digest, ImageRef};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::hashing::HashingReader;

use super::descriptor::{escape_id, write_toml, GroupBuildpack};
use super::export::{
    buildpack_layers, BuildpackLayers, ExportError, LayerMetadata, LayersMetadata, PreviousImage,
    LIFECYCLE_LABEL,
};
use super::phase::LAYERS_DIR;
use super::{LogSink, Phase};
use crate::oci::layer::{LayerBuilder, WrittenLayer};
use crate::oci::{unpack, ContainerConfig, ImageConfig, ImageStore, OciError, UnpackOptions};

/// The cache metadata file, as the reference lifecycle names it.
const METADATA_FILE: &str = "io.buildpacks.lifecycle.cache.metadata";

/// Beside the metadata: each cached blob's digest and size by diffID, so that a cache
/// image's manifest is written without reading the blobs again.
const DIGESTS_FILE: &str = "blob-digests.json";

/// diffID → (blob digest, blob size), as strings for a plain JSON file.
type BlobDigests = BTreeMap<String, (String, u64)>;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cache layer `{layer}` of buildpack {buildpack}: {reason}")]
    Layer {
        buildpack: String,
        layer: String,
        reason: String,
    },
    #[error(transparent)]
    Layers(#[from] ExportError),
    #[error("cache image {image}: {source}")]
    Image {
        image: String,
        #[source]
        source: OciError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the cache holds: per buildpack, its cached layers (the label's shape).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheMetadata {
    #[serde(default)]
    pub buildpacks: Vec<BuildpackLayers>,
}

impl CacheMetadata {
    fn layer(&self, id: &str, name: &str) -> Option<&LayerMetadata> {
        self.buildpacks
            .iter()
            .find(|b| b.key == id)
            .and_then(|b| b.layers.get(name))
    }
}

/// The directory cache of one image.
#[derive(Debug, Clone)]
pub struct CacheDir {
    dir: PathBuf,
}

impl CacheDir {
    /// `<state_dir>/cache/<image>`, the image name made a safe directory name.
    pub fn for_image(state_dir: &Path, image: &str) -> CacheDir {
        let name: String = image
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        // `.` and `..` would name the cache's parents.
        let name = if name.chars().all(|c| c == '.') {
            format!("_{name}")
        } else {
            name
        };
        CacheDir {
            dir: state_dir.join("cache").join(name),
        }
    }

    pub fn at(dir: impl Into<PathBuf>) -> CacheDir {
        CacheDir { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An empty `staging` directory, where the next commit is assembled.
    fn fresh_staging(&self) -> Result<PathBuf, CacheError> {
        let staging = self.dir.join("staging");
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(io_err(&staging))?;
        }
        fs::create_dir_all(&staging).map_err(io_err(&staging))?;
        Ok(staging)
    }

    fn committed(&self) -> PathBuf {
        self.dir.join("committed")
    }

    /// The cached blob of the layer with this diffID.
    pub fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.committed().join(blob_name(diff_id))
    }

    /// Locks the cache against other builds of the same image until the file is dropped.
    pub async fn lock(&self) -> Result<File, CacheError> {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&self.dir)
            .map_err(io_err(&self.dir))?;
        super::stack::lock_file(&self.dir.join("lock"))
            .await
            .map_err(|e| CacheError::Io {
                path: self.dir.join("lock"),
                source: io::Error::other(e.to_string()),
            })
    }

    /// What [`DIGESTS_FILE`] says of the committed blobs; empty when unreadable (the
    /// blobs are then hashed when needed).
    fn blob_digests(&self) -> BlobDigests {
        fs::read(self.committed().join(DIGESTS_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// The committed metadata; empty when there is none or it cannot be read.
    pub fn metadata(&self) -> CacheMetadata {
        let path = self.committed().join(METADATA_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "cache metadata unreadable; starting empty");
                CacheMetadata::default()
            }),
            Err(_) => CacheMetadata::default(),
        }
    }
}

fn blob_name(diff_id: &Digest) -> String {
    format!("{}:{}.tar.gz", diff_id.algorithm(), diff_id.hex())
}

/// Reads the previous image (the last build's output): its lifecycle label and its layers
/// by diffID. A missing, unreadable or unlabelled image gives empty metadata, as in the
/// reference analyzer.
pub async fn analyze(
    store: &ImageStore,
    previous: Option<&ImageRef>,
    logs: &dyn LogSink,
) -> PreviousImage {
    let Some(r) = previous else {
        return PreviousImage::default();
    };
    let image = match store.image(r).await {
        Ok(image) => image,
        // A layout that does not exist yet has no previous image either.
        Err(OciError::NotFound { .. } | OciError::Layout { .. }) => {
            logs.line(Phase::Analyze, None, &format!("No previous image at {r}"));
            return PreviousImage::default();
        }
        Err(e) => {
            tracing::warn!(image = %r, error = %e, "previous image unreadable; building without it");
            logs.line(
                Phase::Analyze,
                None,
                &format!("Previous image {r} unreadable, not reusing its layers: {e}"),
            );
            return PreviousImage::default();
        }
    };
    let metadata: LayersMetadata = image
        .config
        .labels()
        .get(LIFECYCLE_LABEL)
        .and_then(|text| {
            serde_json::from_str(text)
                .inspect_err(
                    |e| tracing::warn!(image = %r, error = %e, "previous image label unreadable"),
                )
                .ok()
        })
        .unwrap_or_default();
    let layers = image
        .config
        .rootfs
        .diff_ids
        .iter()
        .cloned()
        .zip(image.manifest.layers.iter().cloned())
        .collect();
    logs.line(
        Phase::Analyze,
        None,
        &format!("Previous image {r} ({})", image.digest()),
    );
    PreviousImage {
        reference: Some(image.pinned()),
        metadata,
        layers,
    }
}

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
        let from_cache = cached.buildpacks.iter().find(|b| b.key == bp.id);
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
            inner: flate2::read::GzDecoder::new(BufReader::with_capacity(256 * 1024, file)),
            hasher: Sha256::new(),
        };
        unpack::unpack_layer(&mut tar, &root, &UnpackOptions { chown: false })
            .map_err(|e| e.to_string())?;
        Digest::sha256_hex(&hex::encode(tar.hasher.finalize())).map_err(|e| e.to_string())
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

/// Commits the `cache = true` layers of `group` in `layers_dir` to the cache: layers export
/// already wrote (`written`, by `<esc id>/<name>`, as [`super::export::ExportReport::written`]) are
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
        let mut bp_md = BuildpackLayers {
            key: bp.id.clone(),
            version: bp.version.clone(),
            ..Default::default()
        };
        for layer in buildpack_layers(layers_dir, &bp.id)? {
            if !layer.toml.types.cache {
                continue;
            }
            if !layer.dir.is_dir() {
                tracing::warn!(buildpack = %bp.id, layer = %layer.name, "cache layer without a directory not cached");
                continue;
            }
            let key = format!("{}/{}", escape_id(&bp.id), layer.name);
            let written = match written.get(&key) {
                Some(w) => w.clone(),
                None => {
                    let in_image = Path::new(LAYERS_DIR)
                        .join(escape_id(&bp.id))
                        .join(&layer.name);
                    write_layer((uid, gid), in_image, layer.dir.clone(), work_dir)
                        .await
                        .map_err(|e| CacheError::Layer {
                            buildpack: bp.id.clone(),
                            layer: layer.name.clone(),
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
                LayerMetadata::new(&written.diff_id, &layer.toml),
            );
        }
        if !bp_md.layers.is_empty() {
            metadata.buildpacks.push(bp_md);
        }
    }
    commit(cache, &metadata, &digests)?;
    Ok(metadata)
}

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
    let found = match store.image(image).await {
        Ok(found) => found,
        Err(OciError::NotFound { .. } | OciError::Layout { .. }) => {
            logs.line(Phase::Restore, None, &format!("No cache image at {image}"));
            return Ok(0);
        }
        Err(e) => {
            tracing::warn!(cache = %image, error = %e, "cache image unreadable; using the local cache");
            logs.line(
                Phase::Restore,
                None,
                &format!("Cache image {image} unreadable, using the local cache: {e}"),
            );
            return Ok(0);
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
                return Ok(0);
            }
        },
        None => {
            logs.line(
                Phase::Restore,
                None,
                &format!("{image} is not a cache image (no {METADATA_FILE} label), using the local cache"),
            );
            return Ok(0);
        }
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
                return Ok(0);
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
                    return Ok(0);
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
    let mut diff_ids: Vec<Digest> = Vec::new();
    for bp in &metadata.buildpacks {
        for layer in bp.layers.values() {
            let diff_id = Digest::parse(&layer.sha).map_err(|e| CacheError::Layer {
                buildpack: bp.key.clone(),
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
            let hex = hex::encode(reader.hasher.finalize());
            let digest = Digest::sha256_hex(&hex).expect("a sha256 is a digest");
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

/// The `created` time of cache images: fixed, like the app image's.
const CREATED: &str = "1980-01-01T00:00:01Z";

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

/// Writes `metadata` and the blob `digests` into `staging`, then `committed` → `committed-backup`, `staging` →
/// `committed`, and the backup goes.
fn commit(
    cache: &CacheDir,
    metadata: &CacheMetadata,
    digests: &BlobDigests,
) -> Result<(), CacheError> {
    let staging = cache.dir.join("staging");
    for (file, json) in [
        (METADATA_FILE, serde_json::to_vec(metadata)),
        (DIGESTS_FILE, serde_json::to_vec(digests)),
    ] {
        let path = staging.join(file);
        fs::write(&path, json.expect("cache metadata serialises")).map_err(io_err(&path))?;
    }
    let committed = cache.committed();
    let backup = cache.dir.join("committed-backup");
    if backup.exists() {
        fs::remove_dir_all(&backup).map_err(io_err(&backup))?;
    }
    if committed.exists() {
        fs::rename(&committed, &backup).map_err(io_err(&committed))?;
    }
    let staging = cache.dir.join("staging");
    fs::rename(&staging, &committed).map_err(io_err(&committed))?;
    if backup.exists() {
        fs::remove_dir_all(&backup).map_err(io_err(&backup))?;
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

    #[test]
    fn cache_dirs_are_safe_names() {
        let c = CacheDir::for_image(Path::new("/s"), "../team/app:1");
        assert_eq!(c.dir(), Path::new("/s/cache/.._team_app_1"));
        let c = CacheDir::for_image(Path::new("/s"), "..");
        assert_eq!(c.dir(), Path::new("/s/cache/_.."));
    }
}
