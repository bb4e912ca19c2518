//! Path sources: a local directory, versioned by a sha256 over the files git would see
//! in it (honouring `.gitignore` and `.ignore`, whether or not it is a repository), and
//! copied file for file into the app directory.
//!
//! The source is self-contained: ignore files of the directory and below apply, those
//! of directories above it do not, so the version depends on nothing outside it.
//! Hidden files count; `.git` never does. Empty directories are not part of a source
//! (as in git). Symbolic links are kept as links, and must resolve inside the source.
//!
//! With a stat cache ([`stat_cache_file`]), a file whose stat has not changed since it
//! was last hashed is not read to be hashed (see `stat_cache` for the rule that keeps
//! this exact); [`copy_cached`] then copies it in the kernel.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::hashing::HashingReader;

use super::app_dir::{confined_path, AppDir};
use super::mirror::Mirror;
use super::stat_cache::{Stat, StatCache};
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
    #[error("could not write the mirror file {}", path.display())]
    Mirror {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Entry(#[from] EntryError),
}

/// The version of the source at `dir` (or its `sub_path`): `sha256:<hex>` over each
/// file's relative name, executable bit and contents and each link's target, in name
/// order. Modification times and owners do not count. File contents stream through the
/// hasher.
pub fn hash(dir: &Path, sub_path: Option<&str>) -> Result<String, PathError> {
    hash_with(dir, sub_path, &mut StatCache::none())
}

/// [`hash`], reading only the files whose stat differs from what the stat cache kept in
/// `stat_cache` (see [`stat_cache_file`]) recorded; the cache is updated.
pub fn hash_cached(
    dir: &Path,
    sub_path: Option<&str>,
    stat_cache: &Path,
) -> Result<String, PathError> {
    let mut cache = StatCache::load(stat_cache);
    let version = hash_with(dir, sub_path, &mut cache)?;
    cache.save();
    Ok(version)
}

fn hash_with(
    dir: &Path,
    sub_path: Option<&str>,
    cache: &mut StatCache,
) -> Result<String, PathError> {
    let mut tree = TreeHasher::default();
    for entry in entries(dir, sub_path)? {
        let entry = entry?;
        match &entry.kind {
            Kind::File { executable, stat } => {
                let contents = match cache.lookup(&entry.relative, stat) {
                    Some(known) => known,
                    None => {
                        let mut file = open(&entry.absolute)?;
                        let hasher = hashing_copy(&mut file, &mut io::sink())
                            .map_err(|source| read_error(&entry.absolute, source))?;
                        let sha256: [u8; 32] = hasher.finalize().into();
                        cache.record(&entry.relative, *stat, sha256);
                        sha256
                    }
                };
                tree.file(&entry.relative, *executable, &contents);
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
    copy_with(dir, sub_path, dest, &mut StatCache::none())
}

/// [`copy`] with the stat cache kept in `stat_cache`: a file the cache knows is copied
/// in the kernel and not hashed, unless its stat moved during the copy.
///
/// It also writes the record of what `dest` holds (see [`app_contents`]), so that export
/// can tell an unchanged app layer without reading it.
///
/// [`app_contents`]: super::app_contents
pub fn copy_cached(
    dir: &Path,
    sub_path: Option<&str>,
    dest: &Path,
    stat_cache: &Path,
) -> Result<String, PathError> {
    let mut cache = StatCache::load(stat_cache);
    let mut record = super::app_contents::new_record(dest, stat_cache);
    let version = copy_recording(dir, sub_path, dest, &mut cache, &mut record)?;
    cache.save();
    record.save_settled();
    Ok(version)
}

/// [`copy_cached`] through the mirror kept in `mirror` (see [`mirror`]): `dest` is made
/// of hard links to the mirror's files, and only the files that the mirror does not
/// hold as they are in the source are copied. Once the build that uses `dest` ends,
/// [`mirror::intact`] and [`mirror::Intact::save`] keep the mirror's record.
///
/// [`mirror`]: super::mirror
/// [`mirror::intact`]: super::mirror::intact
/// [`mirror::Intact::save`]: super::mirror::Intact::save
pub fn copy_mirrored(
    dir: &Path,
    sub_path: Option<&str>,
    dest: &Path,
    stat_cache: &Path,
    mirror: &Path,
) -> Result<String, PathError> {
    let mut cache = StatCache::load(stat_cache);
    let mut mirror = Mirror::open(mirror)?;
    let mut record = super::app_contents::new_record(dest, stat_cache);
    let version = copy_into(
        dir,
        sub_path,
        dest,
        &mut cache,
        &mut record,
        Some(&mut mirror),
    )?;
    cache.save();
    record.save_settled();
    Ok(version)
}

fn copy_with(
    dir: &Path,
    sub_path: Option<&str>,
    dest: &Path,
    cache: &mut StatCache,
) -> Result<String, PathError> {
    copy_recording(dir, sub_path, dest, cache, &mut StatCache::none())
}

/// [`copy_with`], recording in `record` what each file of `dest` holds.
fn copy_recording(
    dir: &Path,
    sub_path: Option<&str>,
    dest: &Path,
    cache: &mut StatCache,
    record: &mut StatCache,
) -> Result<String, PathError> {
    copy_into(dir, sub_path, dest, cache, record, None)
}

/// [`copy_recording`], through `mirror` when there is one.
fn copy_into(
    dir: &Path,
    sub_path: Option<&str>,
    dest: &Path,
    cache: &mut StatCache,
    record: &mut StatCache,
    mut mirror: Option<&mut Mirror>,
) -> Result<String, PathError> {
    let mut app = AppDir::create(dest)?;
    let mut tree = TreeHasher::default();
    for entry in entries(dir, sub_path)? {
        let entry = entry?;
        match entry.kind {
            Kind::File { executable, stat } => {
                let known = cache.lookup(&entry.relative, &stat);
                if let Some(mirror) = mirror.as_deref_mut() {
                    let (file, contents) = mirror.provide(
                        &entry.relative,
                        &entry.absolute,
                        stat,
                        executable,
                        known,
                        cache,
                    )?;
                    app.link_file(&entry.relative, &file)?;
                    tree.file(&entry.relative, executable, &contents);
                    let linked = dest.join(&entry.relative);
                    let written = fs::symlink_metadata(&linked)
                        .map_err(|source| read_error(&linked, source))?;
                    record.record(&entry.relative, Stat::of(&written), contents);
                    continue;
                }
                let copied_known = match known {
                    Some(known) => {
                        app.copy_file(&entry.relative, &entry.absolute, executable)?;
                        let after = fs::symlink_metadata(&entry.absolute)
                            .map_err(|source| read_error(&entry.absolute, source))?;
                        (Stat::of(&after) == stat).then_some(known)
                    }
                    None => None,
                };
                let contents = match copied_known {
                    Some(known) => known,
                    None => {
                        let mut file = HashingReader {
                            inner: open(&entry.absolute)?,
                            hasher: Sha256::new(),
                        };
                        app.file(&entry.relative, &mut file, executable)?;
                        let sha256: [u8; 32] = file.hasher.finalize().into();
                        cache.record(&entry.relative, stat, sha256);
                        sha256
                    }
                };
                tree.file(&entry.relative, executable, &contents);
                let copied = dest.join(&entry.relative);
                let written =
                    fs::symlink_metadata(&copied).map_err(|source| read_error(&copied, source))?;
                record.record(&entry.relative, Stat::of(&written), contents);
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

/// Where the stat cache of the path source `dir`/`sub_path` is kept under `cache_dir`:
/// `paths/<sha256 of the directory and sub-path>.json`.
pub fn stat_cache_file(cache_dir: &Path, dir: &Path, sub_path: Option<&str>) -> PathBuf {
    let mut key = Sha256::new();
    key.update(dir.as_os_str().as_bytes());
    key.update(b"\0");
    key.update(sub_path.unwrap_or("").as_bytes());
    cache_dir
        .join("paths")
        .join(format!("{}.json", hex::encode(key.finalize())))
}

/// The tree hash [`hash`] and [`copy`] compute, one entry at a time in name order.
#[derive(Default)]
struct TreeHasher(Sha256);

impl TreeHasher {
    /// A file whose contents hash to `contents` (sha256).
    fn file(&mut self, relative: &Path, executable: bool, contents: &[u8; 32]) {
        self.0
            .update(if executable { b"100755 " } else { b"100644 " });
        self.0.update(relative.as_os_str().as_bytes());
        self.0.update(b"\0");
        self.0.update(contents);
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
    File { executable: bool, stat: Stat },
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
                    stat: Stat::of(&meta),
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
    use std::os::unix::fs::MetadataExt as _;

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

    /// Sets the mtime of `path` (as `touch -d` does), leaving its contents alone.
    fn set_mtime(path: &Path, mtime: std::time::SystemTime) {
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }

    fn settle() {
        // Longer than a file system clock tick, so that what was written before is
        // strictly older than what is written after.
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    /// Hashes `src` with the stat cache in `file`; returns the version and how many
    /// files had to be read.
    fn hash_counting(src: &Path, file: &Path) -> (String, usize) {
        let mut cache = StatCache::load(file);
        let version = hash_with(src, None, &mut cache).unwrap();
        let hashed = cache.hashed();
        cache.save();
        (version, hashed)
    }

    #[test]
    fn the_stat_cache_skips_unchanged_files_and_catches_a_same_size_same_mtime_edit() {
        let dir = tempfile::tempdir().unwrap();
        let (src, file) = (dir.path().join("src"), dir.path().join("stat/cache.json"));
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("a.txt"), "hello world\n").unwrap();
        fs::write(src.join("b.txt"), "another file\n").unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
        set_mtime(&src.join("a.txt"), old);
        settle();

        let (first, hashed) = hash_counting(&src, &file);
        assert_eq!(
            (first.as_str(), hashed),
            (hash(&src, None).unwrap().as_str(), 2)
        );
        settle();
        let saved = fs::metadata(&file).unwrap();
        assert_eq!(
            hash_counting(&src, &file),
            (first.clone(), 0),
            "nothing read"
        );
        let kept = fs::metadata(&file).unwrap();
        assert_eq!(
            (saved.ino(), saved.modified().unwrap()),
            (kept.ino(), kept.modified().unwrap()),
            "nothing changed: the cache is not written again"
        );

        // Same size, mtime put back: only the ctime, which nobody can set, moved.
        let before = fs::metadata(src.join("a.txt")).unwrap();
        fs::write(src.join("a.txt"), "HELLO WORLD\n").unwrap();
        set_mtime(&src.join("a.txt"), old);
        let after = fs::metadata(src.join("a.txt")).unwrap();
        assert_eq!(
            (before.len(), before.modified().unwrap()),
            (after.len(), after.modified().unwrap())
        );
        settle();
        let (edited, hashed) = hash_counting(&src, &file);
        assert_ne!(edited, first);
        assert_eq!(
            (edited.as_str(), hashed),
            (hash(&src, None).unwrap().as_str(), 1)
        );

        // The copy takes the version from the cache and the bytes from the file.
        let mut cache = StatCache::load(&file);
        let copied = copy_with(&src, None, &dir.path().join("app"), &mut cache).unwrap();
        assert_eq!((copied, cache.hashed()), (edited, 0));
        assert_eq!(
            fs::read_to_string(dir.path().join("app/a.txt")).unwrap(),
            "HELLO WORLD\n"
        );
    }

    #[test]
    fn entries_not_older_than_the_cache_file_are_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let (src, file) = (dir.path().join("src"), dir.path().join("cache.json"));
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("a.txt"), "alpha\n").unwrap();
        settle();
        let (first, _) = hash_counting(&src, &file);
        // A cache file whose mtime is not after the files' stat: as if the file were
        // changed in the same tick it was hashed in. Every entry is racy.
        set_mtime(&file, std::time::SystemTime::UNIX_EPOCH);
        assert_eq!(hash_counting(&src, &file), (first.clone(), 1));
        // Saved again (later than the file's ctime), the entry counts.
        settle();
        assert_eq!(hash_counting(&src, &file), (first, 0));
    }
}
