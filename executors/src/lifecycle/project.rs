//! What the app's project descriptor changes about a build, applied before detect: its
//! file selection prunes the app directory, its env joins the platform env (the
//! image's own env wins), and its group replaces the builder's order — unless the image
//! names its own buildpacks, which win over the descriptor as they win over the order.
//! Inline buildpacks become generated buildpack directories in the build's work dir.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use super::descriptor::{escape_id, OrderEntry, OrderGroup};
use crate::source::project::{
    GroupEntry, InlineBuildpack, ProjectDescriptor, ProjectError, INLINE_VERSION,
};

/// The build's env, order and extra buildpacks once the descriptor is applied.
#[derive(Debug, Clone, Default)]
pub struct ProjectSettings {
    pub env: BTreeMap<String, String>,
    pub order: Vec<OrderGroup>,
    /// Generated inline buildpacks, to add to the build's buildpacks.
    pub buildpack_dirs: Vec<PathBuf>,
    /// What the build log should say about the descriptor.
    pub notes: Vec<String>,
}

/// What [`apply`] works from.
#[derive(Debug, Clone)]
pub struct ProjectInputs {
    pub app_dir: PathBuf,
    /// The descriptor the image names (relative to the app), or None for the default.
    pub descriptor: Option<String>,
    /// The image's env, which wins over the descriptor's.
    pub env: BTreeMap<String, String>,
    /// The builder's order.
    pub order: Vec<OrderGroup>,
    /// The image's own group (kpack.toml `buildpacks`), which wins over the descriptor's.
    pub image_group: Option<OrderGroup>,
    /// Where inline buildpacks are generated.
    pub work_dir: PathBuf,
}

/// Reads the descriptor, prunes the app directory and works out env and order. Blocks
/// on the file system: run it on a blocking thread.
pub fn apply(inputs: &ProjectInputs) -> Result<ProjectSettings, ProjectError> {
    let descriptor = ProjectDescriptor::load(&inputs.app_dir, inputs.descriptor.as_deref())?;
    let descriptor = descriptor.unwrap_or_default();
    let name = inputs
        .descriptor
        .as_deref()
        .unwrap_or(crate::source::project::DEFAULT_PROJECT_DESCRIPTOR);
    let mut notes = Vec::new();
    if !descriptor.is_empty() {
        notes.push(format!("Applying {name}"));
    }
    descriptor.files.apply(&inputs.app_dir)?;
    let mut env: BTreeMap<String, String> = descriptor.env.iter().cloned().collect();
    for (key, value) in &inputs.env {
        env.insert(key.clone(), value.clone());
    }
    let mut buildpack_dirs = Vec::new();
    let mut entries = |list: &[GroupEntry]| -> Result<Vec<OrderEntry>, ProjectError> {
        list.iter()
            .map(|entry| match entry {
                GroupEntry::Buildpack { id, version } => Ok(OrderEntry {
                    id: id.clone(),
                    version: version.clone().unwrap_or_default(),
                    optional: false,
                }),
                GroupEntry::Inline(inline) => {
                    let dir = generate(inline, &inputs.work_dir).map_err(|source| {
                        ProjectError::Inline {
                            id: inline.id.clone(),
                            source,
                        }
                    })?;
                    buildpack_dirs.push(dir);
                    Ok(OrderEntry {
                        id: inline.id.clone(),
                        version: INLINE_VERSION.to_string(),
                        optional: false,
                    })
                }
            })
            .collect()
    };
    let pre = entries(&descriptor.pre)?;
    let post = entries(&descriptor.post)?;
    let group = entries(&descriptor.group)?;
    let base: Vec<OrderGroup> = match (&inputs.image_group, group.is_empty()) {
        (Some(image_group), _) => {
            if !group.is_empty() {
                notes.push(format!(
                    "The image's buildpacks replace the group of {name}"
                ));
            }
            vec![image_group.clone()]
        }
        (None, false) => vec![OrderGroup { group }],
        (None, true) => inputs.order.clone(),
    };
    let order = base
        .into_iter()
        .map(|g| OrderGroup {
            group: pre.iter().chain(&g.group).chain(&post).cloned().collect(),
        })
        .collect();
    Ok(ProjectSettings {
        env,
        order,
        buildpack_dirs,
        notes,
    })
}

/// Writes the buildpack an inline script stands for: `bin/detect` passes, `bin/build`
/// is the script, run by its shell.
fn generate(inline: &InlineBuildpack, work_dir: &Path) -> io::Result<PathBuf> {
    let dir = work_dir
        .join("inline-buildpacks")
        .join(escape_id(&inline.id));
    let bin = dir.join("bin");
    fs::create_dir_all(&bin)?;
    let mut info = toml::Table::new();
    info.insert("id".into(), inline.id.clone().into());
    info.insert("version".into(), INLINE_VERSION.into());
    info.insert(
        "name".into(),
        format!("Inline buildpack {}", inline.id).into(),
    );
    let mut descriptor = toml::Table::new();
    descriptor.insert("api".into(), inline.api.clone().into());
    descriptor.insert("buildpack".into(), info.into());
    let descriptor = toml::to_string(&descriptor).map_err(io::Error::other)?;
    fs::write(dir.join("buildpack.toml"), descriptor)?;
    let shell = inline.shell.trim();
    let shebang = if shell.starts_with('/') {
        format!("#!{shell}")
    } else {
        format!("#!/usr/bin/env {shell}")
    };
    let programs = [
        ("detect", "#!/bin/sh\nexit 0\n".to_string()),
        ("build", format!("{shebang}\n{}\n", inline.inline)),
    ];
    for (name, text) in programs {
        let path = bin.join(name);
        fs::write(&path, text)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
    }
    Ok(dir)
}
