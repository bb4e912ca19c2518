//! The app layers: one per slice `config/metadata.toml` lists, then one with the rest of
//! the app dir.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use imageref::Digest;

use super::glob::glob_match;
use super::{io_err, write_err, ExportError, ExportRequest};
use crate::lifecycle::phase::APP_DIR;
use crate::oci::layer::LayerBuilder;
use crate::source::app_contents::AppContents;

/// The app layers: one per slice, then one with the rest of the app dir, each with its
/// fingerprint when the record of the app dir knows all its files (`app_contents`), and
/// that record.
pub(super) async fn app_layers(
    req: &ExportRequest<'_>,
    slices: &[Vec<String>],
) -> Result<AppLayers, ExportError> {
    let app_dir = req.app_dir.to_path_buf();
    let (uid, gid) = (u64::from(req.uid), u64::from(req.gid));
    let slices = slices.to_vec();
    tokio::task::spawn_blocking(move || slice_app(&app_dir, (uid, gid), &slices))
        .await
        .expect("slicing the app does not panic")
}

/// The app layers with their fingerprints, and the record of the app dir.
type AppLayers = (Vec<(LayerBuilder, Option<Digest>)>, AppContents);

/// [`app_layers`], on a blocking thread.
fn slice_app(
    app_dir: &Path,
    (uid, gid): (u64, u64),
    slices: &[Vec<String>],
) -> Result<AppLayers, ExportError> {
    let mut contents = AppContents::load(app_dir);
    let entries = walk(app_dir).map_err(io_err(app_dir))?;
    let known = known_contents(app_dir, &entries, &mut contents)?;
    let mut builders = Vec::new();
    if slices.is_empty() {
        let mut builder = LayerBuilder::new(uid, gid);
        builder
            .add(Path::new(APP_DIR), app_dir)
            .map_err(|e| write_err("app", e))?;
        for (rel, sha256) in &known {
            builder.know(app_dir.join(rel), *sha256);
        }
        builders.push(builder);
    } else {
        let mut claimed: BTreeSet<PathBuf> = BTreeSet::new();
        for patterns in slices {
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
            builders.push(chosen_layer(app_dir, &chosen, &known, (uid, gid))?);
        }
        let rest: Vec<PathBuf> = entries
            .iter()
            .filter(|(rel, _)| !claimed.contains(rel))
            .map(|(rel, _)| rel.clone())
            .collect();
        builders.push(chosen_layer(app_dir, &rest, &known, (uid, gid))?);
    }
    let with_fingerprints = builders
        .into_iter()
        .map(|builder| {
            let fingerprint = builder.fingerprint().map_err(|e| write_err("app", e))?;
            Ok((builder, fingerprint))
        })
        .collect::<Result<Vec<_>, ExportError>>()?;
    Ok((with_fingerprints, contents))
}

/// The layer of the `chosen` entries of `app_dir` (each with the directories on its way,
/// with their modes), knowing the contents of the files in `known`. The entries are
/// taken where they are, without staging them: a hard link would move their ctime,
/// which tells a file the build left alone (see `source::mirror`).
fn chosen_layer(
    app_dir: &Path,
    chosen: &[PathBuf],
    known: &BTreeMap<PathBuf, [u8; 32]>,
    (uid, gid): (u64, u64),
) -> Result<LayerBuilder, ExportError> {
    let mut builder = LayerBuilder::new(uid, gid);
    let app = Path::new(APP_DIR);
    let add = |builder: &mut LayerBuilder, rel: &Path| {
        builder
            .add_entry(&app.join(rel), &app_dir.join(rel))
            .map(drop)
            .map_err(|e| write_err("app", e))
    };
    add(&mut builder, Path::new(""))?;
    for rel in chosen {
        for ancestor in rel.ancestors().skip(1) {
            if !ancestor.as_os_str().is_empty() {
                add(&mut builder, ancestor)?;
            }
        }
        add(&mut builder, rel)?;
        if let Some(sha256) = known.get(rel) {
            builder.know(app_dir.join(rel), *sha256);
        }
    }
    Ok(builder)
}

/// The contents of the regular files of the app dir that its record knows, looked up
/// before any layer is written.
fn known_contents(
    app_dir: &Path,
    entries: &[(PathBuf, bool)],
    contents: &mut AppContents,
) -> Result<BTreeMap<PathBuf, [u8; 32]>, ExportError> {
    let mut known = BTreeMap::new();
    for (rel, is_dir) in entries {
        if *is_dir {
            continue;
        }
        let path = app_dir.join(rel);
        let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
        if !meta.is_file() {
            continue;
        }
        if let Some(sha256) = contents.contents(rel, &meta) {
            known.insert(rel.clone(), sha256);
        }
    }
    Ok(known)
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::source::path::copy_cached;

    /// Longer than a file system clock tick.
    fn settle() {
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Rewrites `path` with `contents` of the same size and puts its mtime back, as
    /// `touch -d` would.
    fn rewrite_keeping_stat(path: &Path, contents: &[u8]) {
        let mtime = fs::metadata(path).unwrap().modified().unwrap();
        assert_eq!(fs::metadata(path).unwrap().len(), contents.len() as u64);
        fs::write(path, contents).unwrap();
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }

    /// Copies `src` into `<root>/<name>/app` as a build would, slices it (data/* apart)
    /// and returns each layer's fingerprint and diffID, remembering the fingerprints.
    fn build(src: &Path, root: &Path, name: &str) -> Vec<(Option<Digest>, Digest)> {
        let work = root.join(name);
        let app = work.join("app");
        copy_cached(src, None, &app, &root.join("cache/paths/src.json")).unwrap();
        settle();
        layers_of(&app)
    }

    fn layers_of(app: &Path) -> Vec<(Option<Digest>, Digest)> {
        let (layers, mut contents) =
            slice_app(app, (1000, 1000), &[vec!["data/*".to_string()]]).unwrap();
        let out = layers
            .into_iter()
            .map(|(builder, fingerprint)| {
                let diff_id = builder.diff_id().unwrap();
                if let Some(f) = &fingerprint {
                    assert_eq!(contents.diff_id(f).as_ref().unwrap_or(&diff_id), &diff_id);
                    contents.remember(f, &diff_id);
                }
                (fingerprint, diff_id)
            })
            .collect();
        contents.save();
        out
    }

    #[test]
    fn fingerprints_follow_the_contents_even_when_size_and_mtime_stay() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("data")).unwrap();
        fs::write(src.join("app.sh"), "echo version 1\n").unwrap();
        fs::write(src.join("data/blob.bin"), "aaaaaaaa").unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        for file in ["app.sh", "data/blob.bin"] {
            fs::File::options()
                .write(true)
                .open(src.join(file))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        settle();

        let first = build(&src, dir.path(), "1");
        assert!(first.iter().all(|(f, _)| f.is_some()), "{first:?}");
        // The same source again: the same fingerprints, known to give the same diffIDs.
        let again = build(&src, dir.path(), "2");
        assert_eq!(again, first);

        // The source changes without a change of size or mtime: a new data layer.
        rewrite_keeping_stat(&src.join("data/blob.bin"), b"bbbbbbbb");
        settle();
        let edited = build(&src, dir.path(), "3");
        assert!(edited[0].0.is_some());
        assert_ne!(edited[0], first[0]);
        assert_eq!(edited[1], first[1]);

        // A buildpack rewrites a file of the app dir the same way: no fingerprint, and
        // the diffID read from the files is the new one.
        let work = dir.path().join("4");
        let app = work.join("app");
        copy_cached(&src, None, &app, &dir.path().join("cache/paths/src.json")).unwrap();
        settle();
        rewrite_keeping_stat(&app.join("data/blob.bin"), b"aaaaaaaa");
        let rebuilt = layers_of(&app);
        assert_eq!(rebuilt[0].0, None);
        assert_eq!(rebuilt[0].1, first[0].1);
        assert_ne!(rebuilt[0].1, edited[0].1);
    }
}
