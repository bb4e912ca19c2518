//! The layers directory as the build leaves it (each buildpack's layers, its
//! `store.toml`, `config/metadata.toml`), and the app image layers made from it, in
//! image order: the buildpacks' launch layers, the launch SBOM, the app, the launcher,
//! the launcher config and the process-type links.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use imageref::Digest;
use serde::Deserialize;

use super::labels::{
    buildpack_entry, layer_metadata, table_json, BuildpackLayersMetadata, Sha, StoreMetadata,
};
use super::reuse::{dir_layer, LayerWriter};
use super::slices::app_layers;
use super::{io_err, ExportError, ExportRequest, ImageLayer, LAUNCHER_PATH, PROCESS_DIR};
use crate::lifecycle::descriptor::{
    escape_id, GroupBuildpack, Label, LayerMetadata as LayerToml, Process, Slice, Store,
};
use crate::lifecycle::phase::LAYERS_DIR;
use crate::lifecycle::{LogSink, Phase};
use crate::oci::layer::WrittenLayer;
use cnb::names::LayerName;

/// A layer of a buildpack in the layers directory.
#[derive(Debug, Clone)]
pub struct BuildpackLayer {
    pub name: LayerName,
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
        let layer_err = |reason: String| ExportError::Layer {
            buildpack: id.to_string(),
            layer: name.to_string(),
            reason,
        };
        let toml = LayerToml::read(&path).map_err(|e| layer_err(e.to_string()))?;
        let name = LayerName::parse(name).map_err(|e| layer_err(e.to_string()))?;
        layers.push(BuildpackLayer {
            dir: dir.join(name.as_str()),
            name,
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

/// `<layers>/<esc id>/store.toml` `[metadata]`, if the buildpack wrote one.
pub(super) fn read_store(
    layers_dir: &Path,
    id: &str,
) -> Result<Option<StoreMetadata>, ExportError> {
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

/// Adds the `launch = true` layers of buildpack `bp` to `layers`, sorted by name, and
/// returns what the label records of them. Layers written here go into `written`, by
/// `<esc id>/<name>`.
pub(super) async fn add_buildpack_layers(
    req: &ExportRequest<'_>,
    writer: &LayerWriter<'_>,
    bp: &GroupBuildpack,
    layers: &mut Vec<ImageLayer>,
    written: &mut BTreeMap<String, WrittenLayer>,
    logs: &dyn LogSink,
) -> Result<BuildpackLayersMetadata, ExportError> {
    let mut bp_md = buildpack_entry(&bp.id, &bp.version)?;
    for layer in buildpack_layers(req.layers_dir, &bp.id)? {
        if !layer.toml.types.launch {
            continue;
        }
        let image_layer = buildpack_layer(req, writer, bp, &layer, written, logs).await?;
        bp_md.layers.insert(
            layer.name.clone(),
            layer_metadata(&image_layer.diff_id, &layer.toml),
        );
        layers.push(image_layer);
    }
    bp_md.store = read_store(req.layers_dir, &bp.id)?;
    Ok(bp_md)
}

/// One launch layer of a buildpack: written from its directory, or, when only its
/// `<layer>.toml` is there, the previous image's layer by the diffID its label recorded.
async fn buildpack_layer(
    req: &ExportRequest<'_>,
    writer: &LayerWriter<'_>,
    bp: &GroupBuildpack,
    layer: &BuildpackLayer,
    written: &mut BTreeMap<String, WrittenLayer>,
    logs: &dyn LogSink,
) -> Result<ImageLayer, ExportError> {
    let layer_err = |reason: String| ExportError::Layer {
        buildpack: bp.id.clone(),
        layer: layer.name.to_string(),
        reason,
    };
    let created_by = format!(
        "Layer: '{}', Created by buildpack: {}@{}",
        layer.name, bp.id, bp.version
    );
    if layer.dir.is_dir() {
        let owner = (req.uid, req.gid);
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
                .write_or_reuse(
                    dir_layer(owner, in_image, layer.dir.clone()),
                    created_by,
                    None,
                )
                .await?
        };
        if let Some(w) = &image_layer.local {
            written.insert(format!("{}/{}", escape_id(&bp.id), layer.name), w.clone());
        }
        Ok(image_layer)
    } else if layer.toml.types.cache {
        Err(layer_err(
            "a cache=true layer has no directory to export".into(),
        ))
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
        Ok(reused)
    }
}

/// Adds the launch SBOM layer, if the build left `<layers>/sbom/launch`.
pub(super) async fn add_sbom_layer(
    req: &ExportRequest<'_>,
    writer: &LayerWriter<'_>,
    layers: &mut Vec<ImageLayer>,
) -> Result<Option<Sha>, ExportError> {
    let sbom_dir = req.layers_dir.join("sbom/launch");
    if !sbom_dir.is_dir() {
        return Ok(None);
    }
    let in_image = Path::new(LAYERS_DIR).join("sbom/launch");
    let layer = writer
        .write_dir((req.uid, req.gid), in_image, sbom_dir, "Launch SBOM".into())
        .await?;
    let sha = Sha {
        sha: layer.diff_id.to_string(),
    };
    layers.push(layer);
    Ok(Some(sha))
}

/// Adds the app layers (one per slice, then the rest of the app dir).
pub(super) async fn add_app_layers(
    req: &ExportRequest<'_>,
    writer: &LayerWriter<'_>,
    build_md: &ConfigMetadata,
    layers: &mut Vec<ImageLayer>,
) -> Result<Vec<Sha>, ExportError> {
    let slices: Vec<Vec<String>> = build_md.slices.iter().map(|s| s.paths.clone()).collect();
    let (app_layers, mut contents) = app_layers(req, &slices).await?;
    let sliced = slices.len();
    let mut app = Vec::new();
    for (i, (builder, fingerprint)) in app_layers.into_iter().enumerate() {
        let created_by = if sliced == 0 {
            "Application Layer".to_string()
        } else {
            format!("Application Slice: {}", i + 1)
        };
        let known = fingerprint.as_ref().and_then(|f| contents.diff_id(f));
        let layer = writer
            .write_or_reuse(move || Ok(builder), created_by, known)
            .await?;
        if let Some(fingerprint) = &fingerprint {
            contents.remember(fingerprint, &layer.diff_id);
        }
        app.push(Sha {
            sha: layer.diff_id.to_string(),
        });
        layers.push(layer);
    }
    tokio::task::spawn_blocking(move || contents.save())
        .await
        .expect("saving the layer fingerprints does not panic");
    Ok(app)
}

/// Adds the launcher layer.
pub(super) async fn add_launcher_layer(
    req: &ExportRequest<'_>,
    writer: &LayerWriter<'_>,
    layers: &mut Vec<ImageLayer>,
) -> Result<Sha, ExportError> {
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
    let sha = Sha {
        sha: layer.diff_id.to_string(),
    };
    layers.push(layer);
    Ok(sha)
}

/// Adds the `/layers/config` layer (the launcher's `metadata.toml`).
pub(super) async fn add_config_layer(
    req: &ExportRequest<'_>,
    writer: &LayerWriter<'_>,
    layers: &mut Vec<ImageLayer>,
) -> Result<Sha, ExportError> {
    let layer = writer
        .write_dir(
            (req.uid, req.gid),
            Path::new(LAYERS_DIR).join("config"),
            req.layers_dir.join("config"),
            "Buildpacks Application Launcher Config".into(),
        )
        .await?;
    let sha = Sha {
        sha: layer.diff_id.to_string(),
    };
    layers.push(layer);
    Ok(sha)
}

/// Adds the `/cnb/process/<type>` links to the launcher, if there are processes.
pub(super) async fn add_process_types_layer(
    req: &ExportRequest<'_>,
    writer: &LayerWriter<'_>,
    build_md: &ConfigMetadata,
    layers: &mut Vec<ImageLayer>,
) -> Result<Option<Sha>, ExportError> {
    if build_md.processes.is_empty() {
        return Ok(None);
    }
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
    let sha = Sha {
        sha: layer.diff_id.to_string(),
    };
    layers.push(layer);
    Ok(Some(sha))
}
