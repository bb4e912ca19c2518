//! The mirror of a path source: a copy of its files that kpackd keeps between builds of
//! one image, so that a build's app directory is made of hard links to it instead of a
//! copy of every byte of the source.
//!
//! The user's directory is never linked: buildpacks write to `/workspace`, and what they
//! write must not reach the source. They can write to the mirror's files through the
//! links, so a mirror file counts only while its `lstat` shows that nobody did:
//!
//! 1. When a build's app directory is made, every file of the source is taken from the
//!    mirror if the mirror's record vouches that the mirror file holds exactly the
//!    source file's current contents (and has its mode); otherwise the source file is
//!    copied into a new mirror file first. Then the app directory links it, and the
//!    app directory's record (`app_contents`) keeps each file's stat after the link.
//! 2. When the build ends, before its work directory is removed, a mirror file whose
//!    stat is still the one the app directory's record kept (and not racy by the stat
//!    cache's rule) was not written, chmod-ed, linked or unlinked by anyone since
//!    ([`intact`]): every one of those moves its ctime, which nobody can set back.
//!    Export reads the app directory but does not link it, for this reason.
//! 3. Once the work directory is gone, each such file, now with a link count of one, is
//!    recorded with its new stat and contents ([`Intact::save`]); every other mirror
//!    file is removed, and is copied from the source again at the next build.
//!
//! A build that is killed leaves a mirror without a record: the next build copies
//! everything, as if there were no mirror. The mirror holds one file per source file,
//! named by the sha256 of its relative path (so that no directory of the source can be
//! in the way of a file of it), and lives in kpackd's state, out of every sandbox.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::app_contents::record_file;
use super::path::PathError;
use super::stat_cache::{Stat, StatCache};

/// Where the mirror of the path source `dir`/`sub_path`, as built for `image`, is kept
/// under `cache_dir`: `mirrors/<sha256 of the image, directory and sub-path>/`, with its
/// record next to it (`.json`). One per image, since builds of one image never overlap.
pub fn mirror_dir(cache_dir: &Path, image: &str, dir: &Path, sub_path: Option<&str>) -> PathBuf {
    let mut key = Sha256::new();
    key.update(image.as_bytes());
    key.update(b"\0");
    key.update(dir.as_os_str().as_bytes());
    key.update(b"\0");
    key.update(sub_path.unwrap_or("").as_bytes());
    cache_dir.join("mirrors").join(hex::encode(key.finalize()))
}

/// The mirror file of the source file at `relative`.
fn file_of(mirror: &Path, relative: &Path) -> PathBuf {
    mirror.join(hex::encode(Sha256::digest(relative.as_os_str().as_bytes())))
}

fn record_of(mirror: &Path) -> PathBuf {
    mirror.with_extension("json")
}

fn mode(executable: bool) -> u32 {
    if executable {
        0o755
    } else {
        0o644
    }
}

/// A mirror being brought up to date with its source, file by file.
pub(crate) struct Mirror {
    dir: PathBuf,
    record: StatCache,
}

impl Mirror {
    /// Opens the mirror in `dir`, creating it. Its record is loaded and removed: the
    /// links about to be made move every file's ctime, and only [`Intact::save`] can
    /// tell again which files are what the record says.
    pub(crate) fn open(dir: &Path) -> Result<Mirror, PathError> {
        fs::create_dir_all(dir).map_err(|source| mirror_error(dir, source))?;
        let file = record_of(dir);
        let record = StatCache::load(&file);
        match fs::remove_file(&file) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(mirror_error(&file, e));
            }
            _ => {}
        }
        Ok(Mirror {
            dir: dir.to_path_buf(),
            record,
        })
    }

    /// The mirror file of the source file `source` (at `relative`, whose stat before
    /// it was read is `stat`), holding its contents with mode 755 when `executable`,
    /// else 644; and the sha256 of those contents. `known` is that sha256 when the
    /// source's stat cache knows it: a mirror file the record vouches for is then used
    /// as it is, and otherwise the source is copied in the kernel. Unknown contents are
    /// read once, hashed while they are copied, and recorded in `cache`.
    pub(crate) fn provide(
        &mut self,
        relative: &Path,
        source: &Path,
        stat: Stat,
        executable: bool,
        known: Option<[u8; 32]>,
        cache: &mut StatCache,
    ) -> Result<(PathBuf, [u8; 32]), PathError> {
        let at = file_of(&self.dir, relative);
        let mode = mode(executable);
        if let Some(known) = known {
            if let Ok(meta) = fs::symlink_metadata(&at) {
                if meta.is_file()
                    && meta.mode() & 0o7777 == mode
                    && self.record.lookup(relative, &Stat::of(&meta)) == Some(known)
                {
                    return Ok((at, known));
                }
            }
            let temp = self.temp()?;
            fs::copy(source, temp.path())
                .and_then(|_| fs::set_permissions(temp.path(), fs::Permissions::from_mode(mode)))
                .map_err(|e| mirror_error(temp.path(), e))?;
            let after = fs::symlink_metadata(source).map_err(|e| read_error(source, e))?;
            if Stat::of(&after) == stat {
                temp.persist(&at).map_err(|e| mirror_error(&at, e.error))?;
                return Ok((at, known));
            }
            // The source changed while it was copied: read it again, hashing it.
        }
        let mut temp = self.temp()?;
        let mut input = fs::File::open(source).map_err(|e| read_error(source, e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(source, e)),
            };
            hasher.update(&buf[..n]);
            temp.write_all(&buf[..n])
                .map_err(|e| mirror_error(temp.path(), e))?;
        }
        fs::set_permissions(temp.path(), fs::Permissions::from_mode(mode))
            .map_err(|e| mirror_error(temp.path(), e))?;
        let sha256: [u8; 32] = hasher.finalize().into();
        cache.record(relative, stat, sha256);
        temp.persist(&at).map_err(|e| mirror_error(&at, e.error))?;
        Ok((at, sha256))
    }

    fn temp(&self) -> Result<tempfile::NamedTempFile, PathError> {
        tempfile::Builder::new()
            .prefix(".new-")
            .tempfile_in(&self.dir)
            .map_err(|e| mirror_error(&self.dir, e))
    }
}

/// The mirror files a build left as they were linked, with their contents: taken by
/// [`intact`] before the build's work directory is removed, saved by [`Intact::save`]
/// after.
#[derive(Debug)]
pub struct Intact {
    mirror: PathBuf,
    /// Relative path, sha256 of the contents, inode.
    files: Vec<(PathBuf, [u8; 32], u64)>,
}

/// The files of the mirror in `mirror` that nobody changed since they were linked into
/// the app directory `app_dir` (module docs, step 2). Call it once nothing runs in the
/// build any more, before its work directory is removed.
pub fn intact(app_dir: &Path, mirror: &Path) -> Intact {
    let mut record = StatCache::load(&record_file(app_dir));
    let files = record
        .paths()
        .into_iter()
        .filter_map(|relative| {
            let meta = fs::symlink_metadata(file_of(mirror, &relative)).ok()?;
            let sha256 = record.lookup(&relative, &Stat::of(&meta))?;
            Some((relative, sha256, meta.ino()))
        })
        .collect();
    Intact {
        mirror: mirror.to_path_buf(),
        files,
    }
}

impl Intact {
    /// How many mirror files the build left intact.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether the build left no mirror file intact.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Records the intact files that are now linked from the mirror only, and removes
    /// every other file of the mirror (module docs, step 3). Call it once the build's
    /// work directory is removed. Failing to save is logged: the mirror only saves time.
    pub fn save(self) {
        let mut next = StatCache::empty_at(&record_of(&self.mirror));
        let mut kept = BTreeSet::new();
        for (relative, sha256, ino) in self.files {
            let at = file_of(&self.mirror, &relative);
            let Ok(meta) = fs::symlink_metadata(&at) else {
                continue;
            };
            if meta.ino() == ino && meta.nlink() == 1 {
                next.record(&relative, Stat::of(&meta), sha256);
                kept.insert(at);
            }
        }
        let Ok(entries) = fs::read_dir(&self.mirror) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !kept.contains(&path) {
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!(file = %path.display(), "could not remove a stale mirror file: {e}");
                }
            }
        }
        next.save_settled();
    }
}

fn mirror_error(path: &Path, source: io::Error) -> PathError {
    PathError::Mirror {
        path: path.to_path_buf(),
        source,
    }
}

fn read_error(path: &Path, source: io::Error) -> PathError {
    PathError::Read {
        path: path.to_path_buf(),
        source,
    }
}
