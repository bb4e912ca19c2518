//! The app layers: one per slice `config/metadata.toml` lists, then one with the rest of
//! the app dir.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::glob::glob_match;
use super::{io_err, write_err, ExportError, ExportRequest};
use crate::lifecycle::phase::APP_DIR;
use crate::oci::layer::LayerBuilder;

/// The app layers: one per slice, then one with the rest of the app dir.
pub(super) async fn app_layers(
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
