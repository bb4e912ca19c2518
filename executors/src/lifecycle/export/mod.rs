//! Export: writes the app image from the layers directory the build left, on top of the
//! run image, the way the reference lifecycle's exporter does:
//!
//! 1. the run image's layers, copied blob by blob (mounted within a registry, never
//!    downloaded when the destination has them);
//! 2. per buildpack in group order, its `launch = true` layers sorted by name — a layer
//!    whose `<layer>.toml` is there without its directory reuses the previous image's
//!    layer by the diffID its label recorded;
//! 3. the launch SBOM layer, if any; the app layers (one per slice, then the rest of
//!    `/workspace`); the launcher; `/layers/config`; the `/cnb/process/<type>` links.
//!
//! Every layer is written by [`LayerBuilder`](crate::oci::layer::LayerBuilder) (normalised, hence reproducible) and reused
//! from the previous image when its diffID is there. Same inputs, same image digest.

mod config;
mod glob;
mod labels;
mod layers;
mod push;
mod reuse;
mod slices;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use imageref::{Digest, ImageRef};
use serde_json::Value;

pub use config::{rfc3339, LAUNCHER_COMMIT, NORMALISED_CREATED};
pub use glob::glob_match;
pub use labels::{
    buildpack_entry, layer_metadata, run_image_reference, table_json, BuildpackLayersMetadata,
    LayerMetadata, LayersMetadata, RunImageMetadata, RunImageRef, Sha, StackMetadata,
    StoreMetadata, BUILD_LABEL, LIFECYCLE_LABEL, PROJECT_LABEL, REBASABLE_LABEL,
};
pub use layers::{buildpack_layers, BuildpackLayer, ConfigMetadata};
pub use reuse::PreviousImage;

use super::descriptor::{Group, GroupBuildpack};
use super::stack::RunImage;
use super::{LogSink, Phase};
use crate::oci::layer::WrittenLayer;
use crate::oci::{Descriptor, ImageStore, LayerCompression, OciError};
use reuse::LayerWriter;

/// The platform API whose image semantics kpackd follows (`CNB_PLATFORM_API` of app images).
pub const PLATFORM_API: &str = "0.12";

const LAUNCHER_PATH: &str = "/cnb/lifecycle/launcher";
const PROCESS_DIR: &str = "/cnb/process";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("read {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("the group names buildpack {id:?}: {reason}")]
    BuildpackId { id: String, reason: String },
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
    /// How the layers written here are compressed.
    pub layer_compression: LayerCompression,
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
    let group = read_group(req.layers_dir)?;
    let build_md = ConfigMetadata::read(&req.layers_dir.join("config/metadata.toml"))?;
    let default_process = default_process(req, &build_md)?;
    let mut layers = run_image_layers(req.run_image);
    let run_layer_count = layers.len();
    let mut metadata = LayersMetadata::default();
    let mut written = BTreeMap::new();
    let writer = LayerWriter {
        work_dir: req.work_dir.to_path_buf(),
        previous: req.previous,
        compression: req.layer_compression,
    };

    for bp in &group {
        let bp_md =
            layers::add_buildpack_layers(req, &writer, bp, &mut layers, &mut written, logs).await?;
        metadata.buildpacks.push(bp_md);
    }
    metadata.sbom = layers::add_sbom_layer(req, &writer, &mut layers).await?;
    metadata.app = layers::add_app_layers(req, &writer, &build_md, &mut layers).await?;
    metadata.launcher = layers::add_launcher_layer(req, &writer, &mut layers).await?;
    metadata.config = layers::add_config_layer(req, &writer, &mut layers).await?;
    if let Some(sha) = layers::add_process_types_layer(req, &writer, &build_md, &mut layers).await?
    {
        metadata.process_types = sha;
    }
    let (run_image, stack) = run_image_metadata(req);
    metadata.run_image = run_image;
    metadata.stack = Some(stack);

    let config = config::image_config(
        req,
        &build_md,
        &group,
        &metadata,
        &layers[run_layer_count..],
        entrypoint(default_process.as_deref()),
    );
    let rebasable = config
        .labels()
        .get(REBASABLE_LABEL)
        .is_none_or(|v| v != "false");
    let pushed = push_image(store, req, config, &layers, logs).await?;
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
        run_image_top_layer: req.run_image.top_layer.clone(),
        metadata,
        blobs_uploaded: pushed.blobs_uploaded,
        bytes_uploaded: pushed.bytes_uploaded,
        written,
    })
}

/// The buildpacks of `<layers>/group.toml`, in order.
fn read_group(layers_dir: &Path) -> Result<Vec<GroupBuildpack>, ExportError> {
    let group_path = layers_dir.join("group.toml");
    Ok(Group::read(&group_path)
        .map_err(|e| ExportError::Read {
            path: group_path,
            reason: e.to_string(),
        })?
        .group)
}

/// The process the image starts: the one the request names, else the buildpacks'
/// default; it must be one of the processes.
fn default_process(
    req: &ExportRequest<'_>,
    build_md: &ConfigMetadata,
) -> Result<Option<String>, ExportError> {
    let default_process = req
        .default_process
        .map(str::to_string)
        .or_else(|| build_md.default_process.clone());
    if let Some(default) = &default_process {
        if !build_md.processes.iter().any(|p| &p.kind == default) {
            return Err(ExportError::UnknownDefaultProcess(default.clone()));
        }
    }
    Ok(default_process)
}

/// The run image's layers, which the app image copies blob by blob.
fn run_image_layers(run: &RunImage) -> Vec<ImageLayer> {
    run.image
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
        .collect()
}

/// The `runImage` and `stack` parts of the lifecycle label, which the rebaser reads.
fn run_image_metadata(req: &ExportRequest<'_>) -> (RunImageMetadata, StackMetadata) {
    let run = req.run_image;
    let run_image_name = if req.run_image_name.is_empty() {
        run.reference.to_string()
    } else {
        req.run_image_name.clone()
    };
    let run_image = RunImageMetadata {
        top_layer: run.top_layer.to_string(),
        reference: run_image_reference(&run.image),
        image: run_image_name.clone(),
        mirrors: Vec::new(),
    };
    let stack = StackMetadata {
        run_image: RunImageRef {
            image: run_image_name,
            mirrors: Vec::new(),
        },
    };
    (run_image, stack)
}

/// The image's Entrypoint: the default process's link, else the launcher.
fn entrypoint(default_process: Option<&str>) -> String {
    match default_process {
        Some(t) => format!("{PROCESS_DIR}/{t}"),
        None => LAUNCHER_PATH.to_string(),
    }
}

/// Pushes the image under the tag and the additional tags, saying so in the log.
async fn push_image(
    store: &ImageStore,
    req: &ExportRequest<'_>,
    config: crate::oci::ImageConfig,
    layers: &[ImageLayer],
    logs: &dyn LogSink,
) -> Result<push::Pushed, ExportError> {
    logs.line(
        Phase::Export,
        None,
        &format!("Pushing {} layers to {}", layers.len(), req.tag),
    );
    let pushed = push::push(store, req, config, layers, logs).await?;
    for tag in std::iter::once(req.tag).chain(req.additional_tags) {
        logs.line(
            Phase::Export,
            None,
            &format!("Saved {tag} ({})", pushed.digest),
        );
    }
    Ok(pushed)
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
