//! Export: writes the app image from the layers directory the build left, on top of the
//! run image, the way the reference lifecycle's exporter does (notes §8):
//!
//! 1. the run image's layers, copied blob by blob (mounted within a registry, never
//!    downloaded when the destination has them);
//! 2. per buildpack in group order, its `launch = true` layers sorted by name — a layer
//!    whose `<layer>.toml` is there without its directory reuses the previous image's
//!    layer by the diffID its label recorded;
//! 3. the launch SBOM layer, if any; the app layers (one per slice, then the rest of
//!    `/workspace`); the launcher; `/layers/config`; the `/cnb/process/<type>` links.
//!
//! Every layer is written by [`LayerBuilder`] (normalised, hence reproducible) and reused
//! from the previous image when its diffID is there. Same inputs, same image digest.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use imageref::{Digest, ImageRef};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::descriptor::{
    escape_id, Group, GroupBuildpack, Label, LayerMetadata as LayerToml, Process, Slice, Store,
};
use super::phase::{APP_DIR, LAYERS_DIR};
use super::stack::RunImage;
use super::{LogSink, Phase};
use crate::oci::layer::{LayerBuilder, WrittenLayer};
use crate::oci::{
    media_type, BlobTransfer, Descriptor, ImageConfig, ImageManifest, ImageStore, Manifest,
    OciError, RawManifest,
};

/// The platform API whose image semantics kpackd follows (`CNB_PLATFORM_API` of app images).
pub const PLATFORM_API: &str = "0.12";

pub const LIFECYCLE_LABEL: &str = "io.buildpacks.lifecycle.metadata";
pub const BUILD_LABEL: &str = "io.buildpacks.build.metadata";
pub const PROJECT_LABEL: &str = "io.buildpacks.project.metadata";
pub const REBASABLE_LABEL: &str = "io.buildpacks.rebasable";

/// 1980-01-01T00:00:01Z, the `created` of every app image unless SOURCE_DATE_EPOCH says.
pub const NORMALISED_CREATED: u64 = crate::oci::layer::NORMALISED_MTIME;

const LAUNCHER_PATH: &str = "/cnb/lifecycle/launcher";
const PROCESS_DIR: &str = "/cnb/process";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("read {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("layer `{layer}` of buildpack {buildpack}: {reason}")]
    Layer {
        buildpack: String,
        layer: String,
        reason: String,
    },
    #[error("write the {what} layer: {source}")]
    WriteLayer {
        what: String,
        #[source]
        source: OciError,
    },
    #[error("process type `{0}` cannot name a file in /cnb/process")]
    BadProcessType(String),
    #[error("default process type `{0}` is not one of the processes")]
    UnknownDefaultProcess(String),
    #[error("write the app image {image}: {source}")]
    Oci {
        image: String,
        #[source]
        source: OciError,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------------------
// The `io.buildpacks.lifecycle.metadata` label (lc:platform/files LayersMetadata), also the
// shape of the cache metadata (without the image-only parts).

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LayersMetadata {
    #[serde(default)]
    pub app: Vec<Sha>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom: Option<Sha>,
    #[serde(default)]
    pub buildpacks: Vec<BuildpackLayers>,
    #[serde(default)]
    pub config: Sha,
    #[serde(default)]
    pub launcher: Sha,
    #[serde(rename = "process-types", default)]
    pub process_types: Sha,
    #[serde(rename = "runImage", default)]
    pub run_image: RunImageMetadata,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<StackMetadata>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sha {
    #[serde(default)]
    pub sha: String,
}

/// One buildpack's layers; `key` is the buildpack id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildpackLayers {
    pub key: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub layers: BTreeMap<String, LayerMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreMetadata>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreMetadata {
    #[serde(default)]
    pub metadata: serde_json::Map<String, Value>,
}

/// A layer as labels and cache metadata record it: its diffID, `[metadata]` and types.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerMetadata {
    #[serde(default)]
    pub sha: String,
    #[serde(default)]
    pub data: Value,
    #[serde(default)]
    pub build: bool,
    #[serde(default)]
    pub launch: bool,
    #[serde(default)]
    pub cache: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunImageMetadata {
    #[serde(rename = "topLayer", default)]
    pub top_layer: String,
    #[serde(default)]
    pub reference: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackMetadata {
    #[serde(rename = "runImage", default)]
    pub run_image: RunImageRef,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunImageRef {
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
}

impl LayerMetadata {
    /// What the label records of a layer with this diffID and `<layer>.toml`.
    pub fn new(diff_id: &Digest, toml: &LayerToml) -> LayerMetadata {
        LayerMetadata {
            sha: diff_id.to_string(),
            data: table_json(&toml.metadata),
            build: toml.types.build,
            launch: toml.types.launch,
            cache: toml.types.cache,
        }
    }
}

impl LayersMetadata {
    /// The layers a buildpack had, by id.
    pub fn buildpack(&self, id: &str) -> Option<&BuildpackLayers> {
        self.buildpacks.iter().find(|b| b.key == id)
    }
}

// ---------------------------------------------------------------------------------------
// The layers directory as the build leaves it.

/// A layer of a buildpack in the layers directory.
#[derive(Debug, Clone)]
pub struct BuildpackLayer {
    pub name: String,
    pub toml: LayerToml,
    /// `<layers>/<esc id>/<name>`; it may not exist.
    pub dir: PathBuf,
}

/// Files in a buildpack's layers dir that are not layers.
const NOT_LAYERS: [&str; 3] = ["launch", "build", "store"];

/// The layers of the buildpack `id` (every `<name>.toml` but launch/build/store), sorted
/// by name.
pub fn buildpack_layers(layers_dir: &Path, id: &str) -> Result<Vec<BuildpackLayer>, ExportError> {
    let dir = layers_dir.join(escape_id(id));
    let listing = match fs::read_dir(&dir) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&dir)(e)),
    };
    let mut layers = Vec::new();
    for entry in listing {
        let path = entry.map_err(io_err(&dir))?.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".toml"))
        else {
            continue;
        };
        if NOT_LAYERS.contains(&name) || !path.is_file() {
            continue;
        }
        let toml = LayerToml::read(&path).map_err(|e| ExportError::Layer {
            buildpack: id.to_string(),
            layer: name.to_string(),
            reason: e.to_string(),
        })?;
        layers.push(BuildpackLayer {
            name: name.to_string(),
            dir: dir.join(name),
            toml,
        });
    }
    layers.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(layers)
}

/// `<layers>/config/metadata.toml`, as the build writes it and the launcher reads it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ConfigMetadata {
    #[serde(rename = "buildpack-default-process-type", default)]
    pub default_process: Option<String>,
    #[serde(default)]
    pub buildpacks: Vec<GroupBuildpack>,
    #[serde(default)]
    pub processes: Vec<Process>,
    #[serde(default)]
    pub slices: Vec<Slice>,
    #[serde(default)]
    pub labels: Vec<Label>,
}

impl ConfigMetadata {
    pub fn read(path: &Path) -> Result<ConfigMetadata, ExportError> {
        let text = fs::read_to_string(path).map_err(io_err(path))?;
        let mut md: ConfigMetadata = toml::from_str(&text).map_err(|e| ExportError::Read {
            path: path.to_path_buf(),
            reason: e.message().to_string(),
        })?;
        md.default_process = md.default_process.filter(|d| !d.is_empty());
        Ok(md)
    }
}

// ---------------------------------------------------------------------------------------
// The previous image, as analyze found it.

/// The image the last build wrote, for reusing its layers by diffID.
#[derive(Debug, Clone, Default)]
pub struct PreviousImage {
    /// Where its blobs can be read (pinned); `None` when there is no previous image.
    pub reference: Option<ImageRef>,
    /// Its `io.buildpacks.lifecycle.metadata` label (empty when absent or unreadable).
    pub metadata: LayersMetadata,
    /// Its layers by diffID.
    pub layers: BTreeMap<Digest, Descriptor>,
}

impl PreviousImage {
    /// Where the layer with this diffID can be copied from, if the previous image has it.
    fn layer(&self, diff_id: &Digest) -> Option<(&ImageRef, &Descriptor)> {
        Some((self.reference.as_ref()?, self.layers.get(diff_id)?))
    }

    /// The layer with this diffID as the new image takes it over from this one (its
    /// blob copied, never rewritten), if this image has it. `local` is a copy on disk, if
    /// one was written anyway.
    fn reused(
        &self,
        diff_id: &Digest,
        created_by: String,
        local: Option<WrittenLayer>,
    ) -> Option<ImageLayer> {
        let (from, descriptor) = self.layer(diff_id)?;
        Some(ImageLayer {
            diff_id: diff_id.clone(),
            descriptor: descriptor.clone(),
            blob: Blob::Copied { from: from.clone() },
            created_by,
            local,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Export itself.

/// What export needs. The layers dir holds `group.toml`, `config/metadata.toml` and each
/// buildpack's layers as the build left them.
#[derive(Debug, Clone)]
pub struct ExportRequest<'a> {
    pub layers_dir: &'a Path,
    pub app_dir: &'a Path,
    /// Scratch space for layer files (cleaned by the caller).
    pub work_dir: &'a Path,
    pub run_image: &'a RunImage,
    /// The run image's name as users know it (`runImage.image` in the label, which the
    /// rebaser resolves); the pinned reference when empty.
    pub run_image_name: String,
    pub previous: &'a PreviousImage,
    /// The stack's CNB user and group, which layer entries get.
    pub uid: u32,
    pub gid: u32,
    pub tag: &'a ImageRef,
    pub additional_tags: &'a [ImageRef],
    /// `io.buildpacks.project.metadata`; `{}` when `None`.
    pub project_metadata: Option<&'a Value>,
    /// `created`, in seconds since the epoch (SOURCE_DATE_EPOCH); 1980-01-01T00:00:01Z
    /// when `None`.
    pub created: Option<u64>,
    /// The process the image starts (its Entrypoint), instead of the buildpacks' default
    /// (the lifecycle's `-process-type`); it must be one of the processes.
    pub default_process: Option<&'a str>,
}

/// What export wrote.
#[derive(Debug, Clone)]
pub struct ExportReport {
    pub digest: Digest,
    /// The tag pinned to the digest.
    pub image: ImageRef,
    pub buildpacks: Vec<(String, String)>,
    pub processes: Vec<String>,
    pub default_process: Option<String>,
    pub rebasable: bool,
    pub run_image_top_layer: Digest,
    /// The label written, which the cache and the next build's analyze read.
    pub metadata: LayersMetadata,
    /// Blobs (layers and config) whose bytes were sent, and how many bytes.
    pub blobs_uploaded: usize,
    pub bytes_uploaded: u64,
    /// Layers of the buildpacks written in this export, by `<esc id>/<name>`, for the
    /// cache to keep without writing them again.
    pub written: BTreeMap<String, WrittenLayer>,
}

/// Where an image layer's blob comes from.
#[derive(Debug, Clone)]
enum Blob {
    /// Written to a file in this export.
    Written(WrittenLayer),
    /// A blob of another image (run image, previous image).
    Copied { from: ImageRef },
}

#[derive(Debug, Clone)]
struct ImageLayer {
    diff_id: Digest,
    descriptor: Descriptor,
    blob: Blob,
    created_by: String,
    /// The layer as written here, also when the image reuses an equal blob.
    local: Option<WrittenLayer>,
}

/// Writes the app image and pushes it under the tag and the additional tags.
pub async fn export(
    store: &ImageStore,
    req: &ExportRequest<'_>,
    logs: &dyn LogSink,
) -> Result<ExportReport, ExportError> {
    let group_path = req.layers_dir.join("group.toml");
    let group = Group::read(&group_path)
        .map_err(|e| ExportError::Read {
            path: group_path,
            reason: e.to_string(),
        })?
        .group;
    let build_md = ConfigMetadata::read(&req.layers_dir.join("config/metadata.toml"))?;
    let default_process = req
        .default_process
        .map(str::to_string)
        .or_else(|| build_md.default_process.clone());
    if let Some(default) = &default_process {
        if !build_md.processes.iter().any(|p| &p.kind == default) {
            return Err(ExportError::UnknownDefaultProcess(default.clone()));
        }
    }
    let run = req.run_image;
    let mut layers: Vec<ImageLayer> = run
        .image
        .manifest
        .layers
        .iter()
        .zip(&run.image.config.rootfs.diff_ids)
        .map(|(descriptor, diff_id)| ImageLayer {
            diff_id: diff_id.clone(),
            descriptor: descriptor.clone(),
            blob: Blob::Copied {
                from: run.reference.clone(),
            },
            created_by: String::new(),
            local: None,
        })
        .collect();
    let run_layer_count = layers.len();
    let mut metadata = LayersMetadata::default();
    let mut written = BTreeMap::new();
    let owner = (req.uid, req.gid);
    let writer = LayerWriter {
        work_dir: req.work_dir.to_path_buf(),
        previous: req.previous,
    };

    for bp in &group {
        let mut bp_md = BuildpackLayers {
            key: bp.id.clone(),
            version: bp.version.clone(),
            ..Default::default()
        };
        for layer in buildpack_layers(req.layers_dir, &bp.id)? {
            if !layer.toml.types.launch {
                continue;
            }
            let layer_err = |reason: String| ExportError::Layer {
                buildpack: bp.id.clone(),
                layer: layer.name.clone(),
                reason,
            };
            let created_by = format!(
                "Layer: '{}', Created by buildpack: {}@{}",
                layer.name, bp.id, bp.version
            );
            let image_layer = if layer.dir.is_dir() {
                let in_image = Path::new(LAYERS_DIR)
                    .join(escape_id(&bp.id))
                    .join(&layer.name);
                // The cache keeps a copy of cache layers: those are always written.
                let image_layer = if layer.toml.types.cache {
                    writer
                        .write_dir(owner, in_image, layer.dir.clone(), created_by)
                        .await?
                } else {
                    writer
                        .write_or_reuse(dir_layer(owner, in_image, layer.dir.clone()), created_by)
                        .await?
                };
                if let Some(w) = &image_layer.local {
                    written.insert(format!("{}/{}", escape_id(&bp.id), layer.name), w.clone());
                }
                image_layer
            } else if layer.toml.types.cache {
                return Err(layer_err(
                    "a cache=true layer has no directory to export".into(),
                ));
            } else {
                let sha = req
                    .previous
                    .metadata
                    .buildpack(&bp.id)
                    .and_then(|b| b.layers.get(&layer.name))
                    .map(|l| l.sha.clone())
                    .ok_or_else(|| {
                        layer_err(
                            "cannot reuse it: it has no directory and the previous image has no such layer"
                                .into(),
                        )
                    })?;
                let diff_id = Digest::parse(&sha).map_err(|e| layer_err(e.to_string()))?;
                let reused = req
                    .previous
                    .reused(&diff_id, created_by, None)
                    .ok_or_else(|| {
                        layer_err(format!(
                            "cannot reuse it: the previous image has no layer {diff_id}"
                        ))
                    })?;
                logs.line(
                    Phase::Export,
                    None,
                    &format!("Reusing layer '{}:{}'", bp.id, layer.name),
                );
                reused
            };
            bp_md.layers.insert(
                layer.name.clone(),
                LayerMetadata::new(&image_layer.diff_id, &layer.toml),
            );
            layers.push(image_layer);
        }
        bp_md.store = read_store(req.layers_dir, &bp.id)?;
        metadata.buildpacks.push(bp_md);
    }

    let sbom_dir = req.layers_dir.join("sbom/launch");
    if sbom_dir.is_dir() {
        let in_image = Path::new(LAYERS_DIR).join("sbom/launch");
        let layer = writer
            .write_dir(owner, in_image, sbom_dir, "Launch SBOM".into())
            .await?;
        metadata.sbom = Some(Sha {
            sha: layer.diff_id.to_string(),
        });
        layers.push(layer);
    }

    let slices: Vec<Vec<String>> = build_md.slices.iter().map(|s| s.paths.clone()).collect();
    let app_layers = app_layers(req, &slices).await?;
    let sliced = slices.len();
    for (i, builder) in app_layers.into_iter().enumerate() {
        let created_by = if sliced == 0 {
            "Application Layer".to_string()
        } else {
            format!("Application Slice: {}", i + 1)
        };
        let layer = writer
            .write_or_reuse(move || Ok(builder), created_by)
            .await?;
        metadata.app.push(Sha {
            sha: layer.diff_id.to_string(),
        });
        layers.push(layer);
    }

    let launcher_file = req.work_dir.join("launcher");
    fs::write(&launcher_file, crate::launcher_binary()).map_err(io_err(&launcher_file))?;
    fs::set_permissions(&launcher_file, fs::Permissions::from_mode(0o755))
        .map_err(io_err(&launcher_file))?;
    let layer = writer
        .write_dir(
            (0, 0),
            LAUNCHER_PATH.into(),
            launcher_file,
            "Buildpacks Launcher".into(),
        )
        .await?;
    metadata.launcher.sha = layer.diff_id.to_string();
    layers.push(layer);

    let layer = writer
        .write_dir(
            owner,
            Path::new(LAYERS_DIR).join("config"),
            req.layers_dir.join("config"),
            "Buildpacks Application Launcher Config".into(),
        )
        .await?;
    metadata.config.sha = layer.diff_id.to_string();
    layers.push(layer);

    if !build_md.processes.is_empty() {
        let links = req.work_dir.join("process-types");
        fs::create_dir_all(&links).map_err(io_err(&links))?;
        fs::set_permissions(&links, fs::Permissions::from_mode(0o755)).map_err(io_err(&links))?;
        for p in &build_md.processes {
            if p.kind.is_empty() || p.kind.contains('/') || p.kind == "." || p.kind == ".." {
                return Err(ExportError::BadProcessType(p.kind.clone()));
            }
            let link = links.join(&p.kind);
            if fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(LAUNCHER_PATH, &link).map_err(io_err(&link))?;
            }
        }
        let layer = writer
            .write_dir(
                (0, 0),
                PROCESS_DIR.into(),
                links,
                "Buildpacks Process Types".into(),
            )
            .await?;
        metadata.process_types.sha = layer.diff_id.to_string();
        layers.push(layer);
    }

    let run_image_name = if req.run_image_name.is_empty() {
        run.reference.to_string()
    } else {
        req.run_image_name.clone()
    };
    metadata.run_image = RunImageMetadata {
        top_layer: run.top_layer.to_string(),
        reference: match &run.reference {
            ImageRef::Registry(r) => r.to_string(),
            ImageRef::Layout(_) => run.image.digest().to_string(),
        },
        image: run_image_name.clone(),
        mirrors: Vec::new(),
    };
    metadata.stack = Some(StackMetadata {
        run_image: RunImageRef {
            image: run_image_name,
            mirrors: Vec::new(),
        },
    });

    let entrypoint = match &default_process {
        Some(t) => format!("{PROCESS_DIR}/{t}"),
        None => LAUNCHER_PATH.to_string(),
    };
    let config = image_config(
        req,
        &build_md,
        &group,
        &metadata,
        &layers[run_layer_count..],
        entrypoint,
    );
    let rebasable = config
        .labels()
        .get(REBASABLE_LABEL)
        .is_none_or(|v| v != "false");
    logs.line(
        Phase::Export,
        None,
        &format!("Pushing {} layers to {}", layers.len(), req.tag),
    );
    let pushed = push(store, req, config, &layers, logs).await?;
    for tag in std::iter::once(req.tag).chain(req.additional_tags) {
        logs.line(
            Phase::Export,
            None,
            &format!("Saved {tag} ({})", pushed.digest),
        );
    }
    Ok(ExportReport {
        digest: pushed.digest,
        image: pushed.image,
        buildpacks: group
            .iter()
            .map(|g| (g.id.clone(), g.version.clone()))
            .collect(),
        processes: build_md.processes.iter().map(|p| p.kind.clone()).collect(),
        default_process,
        rebasable,
        run_image_top_layer: run.top_layer.clone(),
        metadata,
        blobs_uploaded: pushed.blobs_uploaded,
        bytes_uploaded: pushed.bytes_uploaded,
        written,
    })
}

/// `sha256:` and the first 12 hex digits, as in `kpackd inspect`.
fn short_digest(digest: &Digest) -> String {
    let hex = digest.hex();
    format!("{}:{}", digest.algorithm(), &hex[..hex.len().min(12)])
}

fn write_err(what: &str, source: OciError) -> ExportError {
    ExportError::WriteLayer {
        what: what.to_string(),
        source,
    }
}

fn oci_err(image: &ImageRef, source: OciError) -> ExportError {
    ExportError::Oci {
        image: image.to_string(),
        source,
    }
}

/// `<layers>/<esc id>/store.toml` `[metadata]`, if the buildpack wrote one.
fn read_store(layers_dir: &Path, id: &str) -> Result<Option<StoreMetadata>, ExportError> {
    let path = layers_dir.join(escape_id(id)).join("store.toml");
    let store = Store::read(&path).map_err(|e| ExportError::Read {
        path,
        reason: e.to_string(),
    })?;
    Ok(store.map(|s| StoreMetadata {
        metadata: table_json(&s.metadata)
            .as_object()
            .cloned()
            .unwrap_or_default(),
    }))
}

/// A TOML table as label JSON.
pub fn table_json(table: &toml::Table) -> Value {
    serde_json::to_value(table).unwrap_or_else(|_| json!({}))
}

/// The entries of a layer holding `on_disk` as `in_image`, owned by `(uid, gid)`.
fn dir_layer(
    (uid, gid): (u32, u32),
    in_image: PathBuf,
    on_disk: PathBuf,
) -> impl FnOnce() -> Result<LayerBuilder, OciError> + Send + 'static {
    move || {
        let mut builder = LayerBuilder::new(uid.into(), gid.into());
        builder.add(&in_image, &on_disk)?;
        Ok(builder)
    }
}

/// Writes layers on a blocking thread and reuses the previous image's blob when the
/// diffID matches.
struct LayerWriter<'a> {
    work_dir: PathBuf,
    previous: &'a PreviousImage,
}

impl LayerWriter<'_> {
    /// Writes the layer of `(uid, gid)` holding `on_disk` as `in_image`.
    async fn write_dir(
        &self,
        owner: (u32, u32),
        in_image: PathBuf,
        on_disk: PathBuf,
        created_by: String,
    ) -> Result<ImageLayer, ExportError> {
        self.write(dir_layer(owner, in_image, on_disk), created_by)
            .await
    }

    /// Collects the entries (walking directories) and writes the layer, on a blocking
    /// thread.
    async fn write(
        &self,
        collect: impl FnOnce() -> Result<LayerBuilder, OciError> + Send + 'static,
        created_by: String,
    ) -> Result<ImageLayer, ExportError> {
        let work_dir = self.work_dir.clone();
        let written = tokio::task::spawn_blocking(move || collect()?.write(&work_dir))
            .await
            .expect("writing a layer does not panic")
            .map_err(|e| write_err(&created_by, e))?;
        Ok(self.reuse_or_write(written, created_by))
    }

    /// Like [`write`](Self::write), but on a rebuild first hashes the tar alone: a layer
    /// the previous image has is then neither compressed nor written to disk, which is
    /// most of the work for big unchanged layers (app slices of assets, say). Such a layer
    /// comes without a local copy, so layers the cache needs go through `write`.
    async fn write_or_reuse(
        &self,
        collect: impl FnOnce() -> Result<LayerBuilder, OciError> + Send + 'static,
        created_by: String,
    ) -> Result<ImageLayer, ExportError> {
        if self.previous.reference.is_none() || self.previous.layers.is_empty() {
            return self.write(collect, created_by).await;
        }
        let work_dir = self.work_dir.clone();
        let previous: BTreeSet<Digest> = self.previous.layers.keys().cloned().collect();
        let outcome = tokio::task::spawn_blocking(move || {
            let builder = collect()?;
            let diff_id = builder.diff_id()?;
            if previous.contains(&diff_id) {
                return Ok(Err(diff_id));
            }
            builder.write(&work_dir).map(Ok)
        })
        .await
        .expect("writing a layer does not panic")
        .map_err(|e| write_err(&created_by, e))?;
        Ok(match outcome {
            Ok(written) => self.reuse_or_write(written, created_by),
            Err(diff_id) => self
                .previous
                .reused(&diff_id, created_by, None)
                .expect("the previous image has this diffID: checked above"),
        })
    }

    /// The image layer for a layer written to disk: the previous image's blob when it
    /// has the same diffID, else the new one.
    fn reuse_or_write(&self, written: WrittenLayer, created_by: String) -> ImageLayer {
        let diff_id = written.diff_id.clone();
        if self.previous.layer(&diff_id).is_some() {
            return self
                .previous
                .reused(&diff_id, created_by, Some(written))
                .expect("the previous image has this diffID: checked above");
        }
        ImageLayer {
            diff_id,
            descriptor: written.descriptor(),
            blob: Blob::Written(written.clone()),
            created_by,
            local: Some(written),
        }
    }
}

/// The app layers: one per slice, then one with the rest of the app dir.
async fn app_layers(
    req: &ExportRequest<'_>,
    slices: &[Vec<String>],
) -> Result<Vec<LayerBuilder>, ExportError> {
    let (app_dir, work_dir) = (req.app_dir.to_path_buf(), req.work_dir.to_path_buf());
    let (uid, gid) = (u64::from(req.uid), u64::from(req.gid));
    let slices = slices.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut builders = Vec::new();
        if slices.is_empty() {
            let mut builder = LayerBuilder::new(uid, gid);
            builder
                .add(Path::new(APP_DIR), &app_dir)
                .map_err(|e| write_err("app", e))?;
            builders.push(builder);
            return Ok(builders);
        }
        let entries = walk(&app_dir).map_err(io_err(&app_dir))?;
        let mut claimed: BTreeSet<PathBuf> = BTreeSet::new();
        for (i, patterns) in slices.iter().enumerate() {
            let mut chosen = Vec::new();
            let mut within: Vec<&Path> = Vec::new();
            for (rel, is_dir) in &entries {
                if claimed.contains(rel) {
                    continue;
                }
                let text = rel.to_string_lossy();
                let matched = within.iter().any(|d| rel.starts_with(d))
                    || patterns.iter().any(|p| glob_match(p, &text));
                if matched {
                    if *is_dir {
                        within.push(rel);
                    }
                    chosen.push(rel.clone());
                }
            }
            claimed.extend(chosen.iter().cloned());
            let staging = work_dir.join(format!("slice-{i}"));
            stage(&app_dir, &staging, &chosen)?;
            let mut builder = LayerBuilder::new(uid, gid);
            builder
                .add(Path::new(APP_DIR), &staging)
                .map_err(|e| write_err("app", e))?;
            builders.push(builder);
        }
        let rest: Vec<PathBuf> = entries
            .iter()
            .filter(|(rel, _)| !claimed.contains(rel))
            .map(|(rel, _)| rel.clone())
            .collect();
        let staging = work_dir.join("app-rest");
        stage(&app_dir, &staging, &rest)?;
        let mut builder = LayerBuilder::new(uid, gid);
        builder
            .add(Path::new(APP_DIR), &staging)
            .map_err(|e| write_err("app", e))?;
        builders.push(builder);
        Ok(builders)
    })
    .await
    .expect("slicing the app does not panic")
}

/// Every entry below `dir`, relative, in lexical order, with whether it is a directory.
fn walk(dir: &Path) -> io::Result<Vec<(PathBuf, bool)>> {
    fn visit(root: &Path, rel: &Path, out: &mut Vec<(PathBuf, bool)>) -> io::Result<()> {
        let mut children: Vec<_> = fs::read_dir(root.join(rel))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        children.sort();
        for name in children {
            let child = rel.join(name);
            let is_dir = fs::symlink_metadata(root.join(&child))?.is_dir();
            out.push((child.clone(), is_dir));
            if is_dir {
                visit(root, &child, out)?;
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    visit(dir, Path::new(""), &mut out)?;
    Ok(out)
}

/// Mirrors the chosen entries of `app_dir` into `staging` (hard links, copies across file
/// systems; directories on the way with their modes), so one layer can hold just them.
fn stage(app_dir: &Path, staging: &Path, chosen: &[PathBuf]) -> Result<(), ExportError> {
    let mode = |p: &Path| -> Result<u32, ExportError> {
        Ok(fs::symlink_metadata(p).map_err(io_err(p))?.mode() & 0o7777)
    };
    fs::create_dir_all(staging).map_err(io_err(staging))?;
    fs::set_permissions(staging, fs::Permissions::from_mode(mode(app_dir)?))
        .map_err(io_err(staging))?;
    for rel in chosen {
        let (source, target) = (app_dir.join(rel), staging.join(rel));
        for ancestor in rel
            .ancestors()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            let dir = staging.join(ancestor);
            if !ancestor.as_os_str().is_empty() && !dir.exists() {
                fs::create_dir(&dir).map_err(io_err(&dir))?;
                fs::set_permissions(
                    &dir,
                    fs::Permissions::from_mode(mode(&app_dir.join(ancestor))?),
                )
                .map_err(io_err(&dir))?;
            }
        }
        let meta = fs::symlink_metadata(&source).map_err(io_err(&source))?;
        if meta.is_dir() {
            if !target.exists() {
                fs::create_dir(&target).map_err(io_err(&target))?;
            }
            fs::set_permissions(&target, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(io_err(&target))?;
        } else if meta.file_type().is_symlink() {
            let link = fs::read_link(&source).map_err(io_err(&source))?;
            std::os::unix::fs::symlink(link, &target).map_err(io_err(&target))?;
        } else if meta.is_file() {
            fs::hard_link(&source, &target)
                .or_else(|_| fs::copy(&source, &target).map(drop))
                .map_err(io_err(&target))?;
        }
    }
    Ok(())
}

/// Go's `filepath.Match` on `/`-separated paths: `*` and `?` never match `/`; `[...]`
/// classes with ranges and `^` negation; `\` escapes. `**` is two `*`: it does not cross
/// `/` either. A malformed class matches nothing.
///
/// Patterns come from buildpacks, so matching must not backtrack: the name positions the
/// pattern can have reached are carried token by token, in O(pattern × name) time.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let Some(tokens) = tokens(pattern) else {
        return false;
    };
    let name: Vec<char> = name.chars().collect();
    // reached[j]: the tokens so far can match exactly `name[..j]`.
    let mut reached = vec![false; name.len() + 1];
    reached[0] = true;
    for token in &tokens {
        let mut next = vec![false; name.len() + 1];
        match token {
            Token::Star => {
                // Any run of characters other than `/` after a reached position.
                let mut open = false;
                for j in 0..=name.len() {
                    open = reached[j] || (open && name[j - 1] != '/');
                    next[j] = open;
                }
            }
            single => {
                for j in 0..name.len() {
                    next[j + 1] = reached[j] && single.matches(name[j]);
                }
            }
        }
        if !next.contains(&true) {
            return false;
        }
        reached = next;
    }
    reached[name.len()]
}

/// One element of a glob pattern.
enum Token {
    /// `*`: any run of characters but `/`.
    Star,
    /// `?`: one character but `/`.
    Any,
    /// `[...]`: one character but `/` in (or, negated, not in) the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// A character, possibly escaped with `\`; it may be `/`.
    Literal(char),
}

impl Token {
    /// Whether this single-character token matches `c`.
    fn matches(&self, c: char) -> bool {
        match self {
            Token::Star | Token::Any => c != '/',
            Token::Class { negated, ranges } => {
                c != '/' && ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
            Token::Literal(l) => *l == c,
        }
    }
}

/// The tokens of `pattern`; `None` when a class is malformed.
fn tokens(pattern: &str) -> Option<Vec<Token>> {
    let p: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '*' => {
                tokens.push(Token::Star);
                i += 1;
            }
            '?' => {
                tokens.push(Token::Any);
                i += 1;
            }
            '[' => {
                let (class, len) = class(&p[i + 1..])?;
                tokens.push(class);
                i += 1 + len;
            }
            '\\' if i + 1 < p.len() => {
                tokens.push(Token::Literal(p[i + 1]));
                i += 2;
            }
            c => {
                tokens.push(Token::Literal(c));
                i += 1;
            }
        }
    }
    Some(tokens)
}

/// Parses a class body (after `[`): the class and the length of the body including `]`;
/// `None` when the class is malformed. A `]` right after `[` or `[^` is a member.
fn class(p: &[char]) -> Option<(Token, usize)> {
    let mut i = 0;
    let negated = p.first() == Some(&'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let ch = *p.get(i)?;
        if ch == ']' && !first {
            return Some((Token::Class { negated, ranges }, i + 1));
        }
        first = false;
        let lo = if ch == '\\' {
            i += 1;
            *p.get(i)?
        } else {
            ch
        };
        i += 1;
        let hi = if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|&h| h != ']') {
            i += 1;
            let h = if p[i] == '\\' {
                i += 1;
                *p.get(i)?
            } else {
                p[i]
            };
            i += 1;
            h
        } else {
            lo
        };
        ranges.push((lo, hi));
    }
}

/// The app image config: the run image's, with the CNB env, working dir, entrypoint,
/// labels, `created` and history for the `added` layers (`rootfs` is set when pushing).
fn image_config(
    req: &ExportRequest<'_>,
    build_md: &ConfigMetadata,
    group: &[GroupBuildpack],
    metadata: &LayersMetadata,
    added: &[ImageLayer],
    entrypoint: String,
) -> ImageConfig {
    let mut config: ImageConfig = req.run_image.image.config.clone();
    let created = rfc3339(req.created.unwrap_or(NORMALISED_CREATED));
    config.created = Some(created.clone());
    let mut runtime = config.config.take().unwrap_or_default();

    let mut env: Vec<String> = runtime.env.take().unwrap_or_default();
    let run_path = env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .to_string();
    let set = |env: &mut Vec<String>, name: &str, value: String| {
        let entry = format!("{name}={value}");
        match env
            .iter_mut()
            .find(|kv| kv.split_once('=').is_some_and(|(k, _)| k == name))
        {
            Some(kv) => *kv = entry,
            None => env.push(entry),
        }
    };
    set(&mut env, "CNB_LAYERS_DIR", LAYERS_DIR.into());
    set(&mut env, "CNB_APP_DIR", APP_DIR.into());
    set(&mut env, "CNB_PLATFORM_API", PLATFORM_API.into());
    set(&mut env, "CNB_DEPRECATION_MODE", "quiet".into());
    // A run image may list the CNB directories already: each appears once.
    let rest: Vec<&str> = run_path
        .split(':')
        .filter(|dir| *dir != PROCESS_DIR && *dir != "/cnb/lifecycle")
        .collect();
    set(
        &mut env,
        "PATH",
        format!("{PROCESS_DIR}:/cnb/lifecycle:{}", rest.join(":")),
    );
    runtime.env = Some(env);
    runtime.working_dir = Some(APP_DIR.into());
    runtime.entrypoint = Some(vec![entrypoint]);
    runtime.cmd = None;

    let mut labels = runtime.labels.take().unwrap_or_default();
    for label in &build_md.labels {
        labels.insert(label.key.clone(), label.value.clone());
    }
    labels.insert(
        LIFECYCLE_LABEL.into(),
        serde_json::to_string(metadata).expect("label metadata serialises"),
    );
    let build_label = json!({
        "bom": [],
        "buildpacks": group.iter().map(|g| {
            let mut b = json!({"id": g.id, "version": g.version});
            if let Some(h) = &g.homepage {
                b["homepage"] = json!(h);
            }
            b
        }).collect::<Vec<_>>(),
        "launcher": {
            "version": env!("CARGO_PKG_VERSION"),
            "source": {"git": {"repository": "kpackd", "commit": ""}}
        },
        "processes": build_md.processes.iter().map(|p| {
            let mut v = json!({
                "type": p.kind,
                "command": p.command,
                "args": p.args,
                "direct": p.direct,
                "buildpackID": p.buildpack_id,
            });
            if let Some(dir) = &p.working_dir {
                v["working-dir"] = json!(dir);
            }
            if !p.exec_env.is_empty() {
                v["exec-env"] = json!(p.exec_env);
            }
            v
        }).collect::<Vec<_>>(),
        "buildpack-default-process-type": build_md.default_process.clone().unwrap_or_default(),
    });
    labels.insert(BUILD_LABEL.into(), build_label.to_string());
    labels.insert(
        PROJECT_LABEL.into(),
        req.project_metadata
            .cloned()
            .unwrap_or_else(|| json!({}))
            .to_string(),
    );
    if let Some(stack_id) = &req.run_image.stack_id {
        labels.insert(super::stack::STACK_ID_LABEL.into(), stack_id.clone());
    }
    runtime.labels = Some(labels);
    config.config = Some(runtime);

    if !config.history.is_empty() {
        config.history.extend(
            added
                .iter()
                .map(|l| json!({"created": created, "created_by": l.created_by})),
        );
    }
    config
}

/// `1980-01-01T00:00:01Z` from seconds since the epoch. RFC 3339 has four-digit years:
/// later times are written as the last second of 9999.
pub fn rfc3339(secs: u64) -> String {
    /// 10000-01-01T00:00:00Z.
    const YEAR_10000: u64 = 253_402_300_800;
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.min(YEAR_10000 - 1));
    humantime::format_rfc3339_seconds(time).to_string()
}

struct Pushed {
    digest: Digest,
    image: ImageRef,
    blobs_uploaded: usize,
    bytes_uploaded: u64,
}

/// Blobs first (several at a time), then the config, then the manifest under the tag
/// (by digest first) and every additional tag.
async fn push(
    store: &ImageStore,
    req: &ExportRequest<'_>,
    mut config: ImageConfig,
    layers: &[ImageLayer],
    logs: &dyn LogSink,
) -> Result<Pushed, ExportError> {
    let dest = req.tag;
    let said = |i: usize, how: BlobTransfer| {
        let layer = &layers[i];
        let how = match how {
            BlobTransfer::Existed => "already there",
            BlobTransfer::Mounted => "mounted",
            BlobTransfer::Uploaded => "uploaded",
        };
        logs.line(
            Phase::Export,
            None,
            &format!(
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
            ),
        );
    };
    let bytes = Arc::new(AtomicU64::new(0));
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
                        let counter = bytes.clone();
                        let how = store
                            .copy_blob(
                                from,
                                dest,
                                &layer.descriptor,
                                Arc::new(move |n| {
                                    counter.fetch_add(n, Ordering::Relaxed);
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
    let mut blobs_uploaded = transfers
        .iter()
        .filter(|t| **t == BlobTransfer::Uploaded)
        .count();

    config.rootfs.diff_ids = layers.iter().map(|l| l.diff_id.clone()).collect();
    let config_bytes = Bytes::from(serde_json::to_vec(&config).expect("a config serialises"));
    let config_size = config_bytes.len() as u64;
    let had_config = store
        .blob_exists(dest, &crate::oci::sha256_digest(&config_bytes))
        .await
        .map_err(|e| oci_err(dest, e))?;
    let config_descriptor = store
        .push_blob_bytes(dest, media_type::OCI_CONFIG, config_bytes)
        .await
        .map_err(|e| oci_err(dest, e))?;
    if !had_config {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_go() {
        assert!(glob_match("static/*", "static/a.css"));
        assert!(!glob_match("static/*", "static/a/b.css"));
        assert!(glob_match("*.txt", "notes.txt"));
        assert!(!glob_match("*.txt", "dir/notes.txt"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "a/c"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(!glob_match("[^a-c]x", "bx"));
        assert!(glob_match("\\*", "*"));
        assert!(!glob_match("[", "a"));
        assert!(glob_match("**", "ab"));
        assert!(!glob_match("**", "a/b"));
        assert!(glob_match("a/**/c", "a/b/c"));
        assert!(!glob_match("a/**/c", "a/b/d/c"));
        assert!(glob_match("\\/", "/"));
        assert!(glob_match("a\\", "a\\"));
        assert!(glob_match("[]]", "]"));
        assert!(!glob_match("a[", ""));
        assert!(glob_match("", ""));
    }

    /// Many `*` against a long name that does not match: a backtracking matcher takes
    /// exponential time here (patterns come from buildpacks).
    #[test]
    fn many_stars_match_in_polynomial_time() {
        let pattern = format!("{}b", "a*".repeat(30));
        let name = "a".repeat(200);
        assert!(!glob_match(&pattern, &name));
        assert!(glob_match(&pattern, &format!("{name}b")));
        assert!(!glob_match(&"*".repeat(30), &format!("{name}/")));
    }

    /// The matcher kpackd had before, which backtracks: the new one must agree with it on
    /// every small pattern and name.
    /// Go's `filepath.Match` on `/`-separated paths: `*` and `?` never match `/`; `[...]`
    /// classes with ranges and `^` negation; `\` escapes.
    fn reference_match(pattern: &str, name: &str) -> bool {
        let p: Vec<char> = pattern.chars().collect();
        let n: Vec<char> = name.chars().collect();
        ref_from(&p, &n)
    }

    fn ref_from(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => {
                let rest = &p[1..];
                (0..=n.len())
                    .take_while(|&i| i == 0 || n[i - 1] != '/')
                    .any(|i| ref_from(rest, &n[i..]))
            }
            Some('?') => n.first().is_some_and(|&c| c != '/') && ref_from(&p[1..], &n[1..]),
            Some('[') => {
                let Some(&c) = n.first() else { return false };
                match ref_class(&p[1..], c) {
                    Some((matched, len)) => matched && c != '/' && ref_from(&p[1 + len..], &n[1..]),
                    None => false,
                }
            }
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && ref_from(&p[2..], &n[1..]),
            Some(&c) => n.first() == Some(&c) && ref_from(&p[1..], &n[1..]),
        }
    }

    /// Matches `c` against a class body (after `[`): whether it matched and the length of
    /// the body including `]`; `None` when the class is malformed.
    fn ref_class(p: &[char], c: char) -> Option<(bool, usize)> {
        let mut i = 0;
        let negated = p.first() == Some(&'^');
        if negated {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        loop {
            let ch = *p.get(i)?;
            if ch == ']' && !first {
                return Some((matched != negated, i + 1));
            }
            first = false;
            let lo = if ch == '\\' {
                i += 1;
                *p.get(i)?
            } else {
                ch
            };
            i += 1;
            let hi = if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|&h| h != ']') {
                i += 1;
                let h = if p[i] == '\\' {
                    i += 1;
                    *p.get(i)?
                } else {
                    p[i]
                };
                i += 1;
                h
            } else {
                lo
            };
            if lo <= c && c <= hi {
                matched = true;
            }
        }
    }

    #[test]
    fn globs_match_like_the_backtracking_matcher() {
        let atoms = [
            "a", "b", "/", "*", "?", "[a-b]", "[^a]", "\\*", "\\", "[", "]",
        ];
        let chars = ['a', 'b', '/', '*', ']', '\\'];
        let mut patterns = vec![String::new()];
        for _ in 0..3 {
            let longer: Vec<String> = patterns
                .iter()
                .flat_map(|p| atoms.iter().map(move |a| format!("{p}{a}")))
                .collect();
            patterns.extend(longer);
        }
        patterns.sort();
        patterns.dedup();
        let mut names = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = names
                .iter()
                .flat_map(|n| chars.iter().map(move |c| format!("{n}{c}")))
                .collect();
            names.extend(longer);
        }
        names.sort();
        names.dedup();
        for pattern in &patterns {
            for name in &names {
                assert_eq!(
                    glob_match(pattern, name),
                    reference_match(pattern, name),
                    "pattern {pattern:?}, name {name:?}"
                );
            }
        }
    }

    #[test]
    fn created_dates() {
        assert_eq!(rfc3339(NORMALISED_CREATED), "1980-01-01T00:00:01Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_251_200), "2024-03-01T00:00:00Z");
        assert_eq!(rfc3339(315_532_801), "1980-01-01T00:00:01Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn lifecycle_label_shape() {
        let mut md = LayersMetadata::default();
        md.app.push(Sha {
            sha: "sha256:aa".into(),
        });
        md.buildpacks.push(BuildpackLayers {
            key: "a/b".into(),
            version: "1".into(),
            layers: BTreeMap::from([(
                "deps".into(),
                LayerMetadata {
                    sha: "sha256:bb".into(),
                    data: json!({"k": "v"}),
                    launch: true,
                    ..Default::default()
                },
            )]),
            store: None,
        });
        md.run_image.top_layer = "sha256:cc".into();
        let v = serde_json::to_value(&md).unwrap();
        assert_eq!(v["buildpacks"][0]["layers"]["deps"]["data"]["k"], "v");
        assert_eq!(v["runImage"]["topLayer"], "sha256:cc");
        assert!(v.get("process-types").is_some());
        assert!(v.get("sbom").is_none());
        let back: LayersMetadata = serde_json::from_value(v).unwrap();
        assert_eq!(back, md);
    }
}
