//! The stat cache of a path source: for each file, what `lstat` said of it (size,
//! mtime and ctime in nanoseconds, inode, device) and the sha256 of its contents, as
//! git's index keeps them. A file whose stat is unchanged since it was hashed is neither
//! read nor hashed again.
//!
//! A stat can stay the same while the contents change only when the change lands in
//! the same clock tick as the stat (file system timestamps are coarse, a few
//! milliseconds on Linux) — rewriting a file, even with `touch -d` to put its mtime back,
//! moves its ctime, which no user can set. Hence the rule for such *racy* entries: an
//! entry counts only when its mtime and ctime are strictly older than the cache file's
//! own mtime (taken from the same file system clock when the cache was saved); any other
//! entry is hashed again, every time, until it is old enough. A new cache holds only
//! the entries that were confirmed or hashed in this run, so files that went away
//! leave it.
//!
//! The cache is a hint, never the truth: a missing, unreadable or malformed cache file
//! means hashing everything, and a cache that cannot be saved is logged and forgotten.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What `lstat` says of a file, as far as a change of its contents shows in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stat {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    dev: u64,
}

impl Stat {
    pub(crate) fn of(meta: &fs::Metadata) -> Stat {
        Stat {
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }

    /// Whether both timestamps are strictly older than `saved_ns`, the cache file's mtime:
    /// only then can no change within the same tick hide behind an equal stat.
    fn settled_before(&self, saved_ns: i128) -> bool {
        self.mtime_ns < saved_ns && self.ctime_ns < saved_ns
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    stat: Stat,
    /// Hex sha256 of the file's contents.
    sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    /// Entries by path relative to the source root.
    files: BTreeMap<PathBuf, Entry>,
    /// For the record of an app dir (see `app_contents`): where the layer fingerprints
    /// of app dirs copied from the same source are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fingerprints: Option<PathBuf>,
}

/// A stat cache loaded from (and saved back to) one file.
#[derive(Debug, Default)]
pub(crate) struct StatCache {
    file: Option<PathBuf>,
    /// The entries as loaded, and the cache file's mtime in nanoseconds.
    loaded: BTreeMap<PathBuf, Entry>,
    saved_ns: i128,
    /// The entries of this run, saved by [`StatCache::save`].
    next: BTreeMap<PathBuf, Entry>,
    /// How many files were looked up, and how many of them had to be read.
    looked_up: usize,
    hashed: usize,
    /// See [`CacheFile::fingerprints`].
    fingerprints: Option<PathBuf>,
    /// Whether the file was read, and whether `fingerprints` changed since.
    loaded_file: bool,
    fingerprints_changed: bool,
}

impl StatCache {
    /// A cache that remembers nothing and saves nowhere.
    pub(crate) fn none() -> StatCache {
        StatCache::default()
    }

    /// Loads the cache kept in `file`; a missing or unreadable one is an empty cache.
    pub(crate) fn load(file: &Path) -> StatCache {
        let mut cache = StatCache {
            file: Some(file.to_path_buf()),
            ..StatCache::default()
        };
        let Ok(meta) = fs::metadata(file) else {
            return cache;
        };
        let parsed = fs::read(file).map_err(|e| e.to_string()).and_then(|bytes| {
            serde_json::from_slice::<CacheFile>(&bytes).map_err(|e| e.to_string())
        });
        match parsed {
            Ok(parsed) => {
                cache.loaded = parsed.files;
                cache.fingerprints = parsed.fingerprints;
                cache.saved_ns = Stat::of(&meta).mtime_ns;
                cache.loaded_file = true;
            }
            Err(reason) => {
                tracing::debug!(file = %file.display(), %reason, "stat cache unreadable: hashing every file");
            }
        }
        cache
    }

    /// The sha256 of the contents of the file at `relative`, if its stat `now` is the one
    /// recorded and the entry is not racy (module docs). The entry is kept.
    pub(crate) fn lookup(&mut self, relative: &Path, now: &Stat) -> Option<[u8; 32]> {
        self.looked_up += 1;
        let entry = self.loaded.get(relative)?;
        if entry.stat != *now || !entry.stat.settled_before(self.saved_ns) {
            return None;
        }
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(&entry.sha256, &mut sha256).ok()?;
        self.next.insert(relative.to_path_buf(), entry.clone());
        Some(sha256)
    }

    /// The relative paths of the loaded entries, in order.
    pub(crate) fn paths(&self) -> Vec<PathBuf> {
        self.loaded.keys().cloned().collect()
    }

    /// Records the contents hash of a file just read, with the stat taken before it was
    /// read (so a change during the read shows as a changed stat next time).
    pub(crate) fn record(&mut self, relative: &Path, stat: Stat, sha256: [u8; 32]) {
        self.hashed += 1;
        let sha256 = hex::encode(sha256);
        self.next
            .insert(relative.to_path_buf(), Entry { stat, sha256 });
    }

    /// A cache that starts empty (whatever `file` holds) and is saved to `file`.
    pub(crate) fn empty_at(file: &Path) -> StatCache {
        StatCache {
            file: Some(file.to_path_buf()),
            ..StatCache::default()
        }
    }

    /// Where the layer fingerprints that go with this record are kept, if it says.
    pub(crate) fn fingerprints(&self) -> Option<&Path> {
        self.fingerprints.as_deref()
    }

    /// Sets where the layer fingerprints that go with this record are kept.
    pub(crate) fn set_fingerprints(&mut self, file: PathBuf) {
        self.fingerprints_changed |= self.fingerprints.as_ref() != Some(&file);
        self.fingerprints = Some(file);
    }

    /// Whether the file already says what saving would write: it was read, every entry
    /// of it was confirmed (so each is settled before the file's mtime) and nothing was
    /// hashed or changed. A fleet whose sources did not change rewrites no cache.
    fn unchanged(&self) -> bool {
        self.loaded_file
            && self.hashed == 0
            && !self.fingerprints_changed
            && self.next.len() == self.loaded.len()
    }

    /// The newest mtime or ctime among this run's entries, in nanoseconds.
    pub(crate) fn newest_ns(&self) -> Option<i128> {
        self.next
            .values()
            .map(|e| e.stat.mtime_ns.max(e.stat.ctime_ns))
            .max()
    }

    /// Saves like [`save`](Self::save), and again (up to a few times, a few milliseconds
    /// apart) while the file is not strictly newer than every entry, so that entries
    /// written just before are not racy when it is loaded.
    pub(crate) fn save_settled(self) {
        if self.unchanged() {
            return;
        }
        let (Some(file), Some(newest)) = (self.file.clone(), self.newest_ns()) else {
            return self.save();
        };
        for _ in 0..5 {
            if let Err(e) = self.write(&file) {
                tracing::warn!(file = %file.display(), "could not save the record: {e}");
                return;
            }
            let saved = fs::metadata(&file).map(|m| Stat::of(&m).mtime_ns);
            if saved.is_ok_and(|saved| saved > newest) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// How many files were read and hashed in this run.
    #[cfg(test)]
    pub(crate) fn hashed(&self) -> usize {
        self.hashed
    }

    /// Writes this run's entries over the cache file (atomically: a temporary file,
    /// then a rename). Failing to is logged: the cache only saves time.
    pub(crate) fn save(self) {
        tracing::debug!(
            files = self.looked_up,
            hashed = self.hashed,
            "stat cache: files read and hashed"
        );
        let Some(file) = &self.file else {
            return;
        };
        if self.unchanged() {
            return;
        }
        if let Err(e) = self.write(file) {
            tracing::warn!(file = %file.display(), "could not save the stat cache: {e}");
        }
    }

    fn write(&self, file: &Path) -> std::io::Result<()> {
        let dir = file.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let temp = tempfile::Builder::new().prefix(".stat-").tempfile_in(dir)?;
        let body = CacheFile {
            files: self.next.clone(),
            fingerprints: self.fingerprints.clone(),
        };
        let mut out = std::io::BufWriter::new(temp);
        serde_json::to_writer(&mut out, &body)?;
        let temp = out.into_inner().map_err(|e| e.into_error())?;
        temp.persist(file).map_err(|e| e.error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(mtime_ns: i128, ctime_ns: i128) -> Stat {
        Stat {
            size: 10,
            mtime_ns,
            ctime_ns,
            ino: 7,
            dev: 1,
        }
    }

    #[test]
    fn entries_not_older_than_the_cache_are_racy() {
        let mut cache = StatCache {
            saved_ns: 1_000,
            ..StatCache::default()
        };
        for (name, at) in [("old", 999), ("same-tick", 1_000), ("later", 1_001)] {
            cache.loaded.insert(
                PathBuf::from(name),
                Entry {
                    stat: stat(at, at),
                    sha256: "ab".repeat(32),
                },
            );
        }
        assert_eq!(
            cache.lookup(Path::new("old"), &stat(999, 999)),
            Some([0xab; 32])
        );
        assert_eq!(
            cache.lookup(Path::new("same-tick"), &stat(1_000, 1_000)),
            None
        );
        assert_eq!(cache.lookup(Path::new("later"), &stat(1_001, 1_001)), None);
        // An older mtime does not help when the ctime (a rewrite) is recent.
        cache.loaded.insert(
            PathBuf::from("touched"),
            Entry {
                stat: stat(10, 1_000),
                sha256: "cd".repeat(32),
            },
        );
        assert_eq!(cache.lookup(Path::new("touched"), &stat(10, 1_000)), None);
        // A changed stat is a miss whatever the times.
        assert_eq!(cache.lookup(Path::new("old"), &stat(999, 998)), None);
    }
}
