//! Path sources: a local directory, versioned by a sha256 over the files git would see
//! in it (honouring `.gitignore` and `.ignore`, whether or not it is a repository), and
//! copied file for file into the app directory.
//!
//! The source is self-contained: ignore files of the directory and below apply, those
//! of directories above it do not, so the version depends on nothing outside it.
//! Hidden files count; `.git` never does. Empty directories are not part of a source
//! (as in git). Symbolic links are kept as links, and must resolve inside the source.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::hashing::HashingReader;

use super::app_dir::{confined_path, AppDir};
use super::{digest_string, hashing_copy, EntryError};

/// A path source that cannot be hashed or copied.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("sub-path `{sub_path}` must be relative and stay inside the source")]
    InvalidSubPath { sub_path: String },
    #[error("source directory {} does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("could not read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not walk the source directory {}", root.display())]
    Walk {
        root: PathBuf,
        #[source]
        source: ignore::Error,
    },
    #[error(transparent)]
    Entry(#[from] EntryError),
}

/// The version of the source at `dir` (or its `sub_path`): `sha256:<hex>` over each
/// file's relative name, executable bit and contents and each link's target, in name
/// order. Modification times and owners do not count. File contents stream through the
/// hasher.
pub fn hash(dir: &Path, sub_path: Option<&str>) -> Result<String, PathError> {
    let mut tree = TreeHasher::default();
    for entry in entries(dir, sub_path)? {
        let entry = entry?;
        match &entry.kind {
            Kind::File { executable } => {
                let mut file = open(&entry.absolute)?;
                let contents = hashing_copy(&mut file, &mut io::sink())
                    .map_err(|source| read_error(&entry.absolute, source))?;
                tree.file(&entry.relative, *executable, contents);
            }
            Kind::Symlink { target } => tree.symlink(&entry.relative, target),
        }
    }
    Ok(tree.finish())
}

/// Copies exactly the files and links [`hash`] covers into `dest`, a fresh directory,
/// and returns the version of what it copied (what [`hash`] gives for it) from the same
/// single read of each file.
pub fn copy(dir: &Path, sub_path: Option<&str>, dest: &Path) -> Result<String, PathError> {
    let mut app = AppDir::create(dest)?;
    let mut tree = TreeHasher::default();
    for entry in entries(dir, sub_path)? {
        let entry = entry?;
        match entry.kind {
            Kind::File { executable } => {
                let mut file = HashingReader {
                    inner: open(&entry.absolute)?,
                    hasher: Sha256::new(),
                };
                app.file(&entry.relative, &mut file, executable)?;
                tree.file(&entry.relative, executable, file.hasher);
            }
            Kind::Symlink { target } => {
                tree.symlink(&entry.relative, &target);
                app.symlink(&entry.relative, target)?;
            }
        }
    }
    app.finish()?;
    Ok(tree.finish())
}

/// The tree hash [`hash`] and [`copy`] compute, one entry at a time in name order.
#[derive(Default)]
struct TreeHasher(Sha256);

impl TreeHasher {
    fn file(&mut self, relative: &Path, executable: bool, contents: Sha256) {
        self.0
            .update(if executable { b"100755 " } else { b"100644 " });
        self.0.update(relative.as_os_str().as_bytes());
        self.0.update(b"\0");
        self.0.update(contents.finalize());
    }

    fn symlink(&mut self, relative: &Path, target: &Path) {
        self.0.update(b"120000 ");
        self.0.update(relative.as_os_str().as_bytes());
        self.0.update(b"\0");
        self.0.update(target.as_os_str().as_bytes());
        self.0.update(b"\0");
    }

    fn finish(self) -> String {
        digest_string(self.0)
    }
}

enum Kind {
    File { executable: bool },
    Symlink { target: PathBuf },
}

/// A file or link of the source; `relative` is its name inside the app directory.
struct Entry {
    relative: PathBuf,
    absolute: PathBuf,
    kind: Kind,
}

/// The files and links of the source at `dir`/`sub_path`, in a stable order (sorted
/// by name within each directory). The walk starts at `dir` so that ignore files on the
/// way down to the sub-path apply, but only descends along the sub-path.
fn entries(
    dir: &Path,
    sub_path: Option<&str>,
) -> Result<impl Iterator<Item = Result<Entry, PathError>>, PathError> {
    let sub = match sub_path {
        Some(raw) => confined_path(Path::new(raw)).ok_or_else(|| PathError::InvalidSubPath {
            sub_path: raw.into(),
        })?,
        None => PathBuf::new(),
    };
    let root = dir.join(&sub);
    if !root.is_dir() {
        return Err(PathError::Missing { path: root });
    }
    let chain_root = root.clone();
    let walk = ignore::WalkBuilder::new(dir)
        .standard_filters(false)
        .hidden(false)
        .ignore(true)
        .git_ignore(true)
        .git_exclude(true)
        .require_git(false)
        .follow_links(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(move |e| {
            e.file_name() != ".git"
                && (e.path().starts_with(&chain_root) || chain_root.starts_with(e.path()))
        })
        .build();
    let walk_root = dir.to_path_buf();
    Ok(walk.filter_map(move |item| {
        let entry = match item {
            Ok(entry) => entry,
            Err(err) if err.io_error().is_none() => {
                tracing::warn!(dir = %walk_root.display(), "skipping an unreadable ignore rule: {err}");
                return None;
            }
            Err(source) => {
                return Some(Err(PathError::Walk {
                    root: walk_root.clone(),
                    source,
                }))
            }
        };
        let relative = entry.path().strip_prefix(&root).ok()?.to_path_buf();
        let file_type = entry.file_type()?;
        let kind = if file_type.is_symlink() {
            match fs::read_link(entry.path()) {
                Ok(target) => Kind::Symlink { target },
                Err(source) => return Some(Err(read_error(entry.path(), source))),
            }
        } else if file_type.is_file() {
            match entry.metadata() {
                Ok(meta) => Kind::File {
                    executable: meta.permissions().mode() & 0o111 != 0,
                },
                Err(source) => {
                    return Some(Err(PathError::Walk {
                        root: walk_root.clone(),
                        source,
                    }))
                }
            }
        } else {
            // Directories are implied by their files; sockets and fifos are no source.
            return None;
        };
        Some(Ok(Entry {
            relative,
            absolute: entry.into_path(),
            kind,
        }))
    }))
}

fn open(path: &Path) -> Result<fs::File, PathError> {
    fs::File::open(path).map_err(|source| read_error(path, source))
}

fn read_error(path: &Path, source: io::Error) -> PathError {
    PathError::Read {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_returns_the_version_hash_gives() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("app/bin")).unwrap();
        fs::write(src.join(".gitignore"), "*.log\n").unwrap();
        fs::write(src.join("app/main.py"), "print('hi')\n").unwrap();
        fs::write(src.join("app/debug.log"), "ignored\n").unwrap();
        fs::write(src.join("app/bin/run"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(src.join("app/bin/run"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("bin/run", src.join("app/run")).unwrap();

        let whole = copy(&src, None, &dir.path().join("whole")).unwrap();
        assert_eq!(whole, hash(&src, None).unwrap());
        assert!(!dir.path().join("whole/app/debug.log").exists());
        let sub = copy(&src, Some("app"), &dir.path().join("sub")).unwrap();
        assert_eq!(sub, hash(&src, Some("app")).unwrap());
        assert_ne!(sub, whole);

        fs::write(src.join("app/main.py"), "print('bye')\n").unwrap();
        let changed = copy(&src, Some("app"), &dir.path().join("changed")).unwrap();
        assert_ne!(changed, sub);
        assert_eq!(changed, hash(&src, Some("app")).unwrap());
    }
}
