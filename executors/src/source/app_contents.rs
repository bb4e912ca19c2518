//! The record of an app dir's contents: what the copy of a path source wrote into the app
//! dir (each file's `lstat` right after it was written, and the sha256 of its contents),
//! kept next to the app dir, and the layer fingerprints of app dirs copied from the same
//! source, kept with that source's stat cache.
//!
//! Export uses them to tell an unchanged app layer without reading it: a layer's
//! fingerprint is a sha256 over everything its tar is made of — each entry's name, type,
//! mode, owner, size and link target, and the sha256 of each file's contents in place of
//! the contents — so two layers with the same fingerprint have the same tar, and the same
//! diffID. A file's contents count as known only when its stat is the one recorded and
//! both its timestamps are strictly older than the record file (the stat cache's rule):
//! a buildpack that rewrites a file of the app dir moves its ctime past the record, even
//! when it puts size and mtime back, so that file is read again. Any file that is not
//! known leaves the layer without a fingerprint, and export hashes its tar as before.
//!
//! The record and the fingerprints are hints kept by kpackd in its own state; a missing
//! or unreadable one means reading the layer.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use imageref::Digest;
use serde::{Deserialize, Serialize};

use super::stat_cache::{Stat, StatCache};

/// The most fingerprints kept per source: enough for every image built from it to find
/// its app layers again; past it the file starts over.
const MAX_FINGERPRINTS: usize = 256;

/// The file that records what the copy wrote into `app_dir`.
pub fn record_file(app_dir: &Path) -> PathBuf {
    app_dir.with_extension("contents.json")
}

/// A fresh record for the copy of a path source into `app_dir`, whose stat cache is kept
/// in `stat_cache`.
pub(crate) fn new_record(app_dir: &Path, stat_cache: &Path) -> StatCache {
    let file = record_file(app_dir);
    let _ = fs::remove_file(&file);
    let mut record = StatCache::empty_at(&file);
    record.set_fingerprints(stat_cache.with_extension("layers.json"));
    record
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Fingerprints {
    /// diffIDs by layer fingerprint.
    layers: BTreeMap<String, String>,
}

/// What export knows of the app dir at `app_dir` from the copy's record.
#[derive(Debug, Default)]
pub struct AppContents {
    record: StatCache,
    fingerprints: BTreeMap<String, String>,
    changed: bool,
}

impl AppContents {
    /// Loads the record of `app_dir` and its fingerprints; none when the app dir was not
    /// copied from a path source.
    pub fn load(app_dir: &Path) -> AppContents {
        let record = StatCache::load(&record_file(app_dir));
        let fingerprints = record
            .fingerprints()
            .and_then(|file| fs::read(file).ok())
            .and_then(|bytes| serde_json::from_slice::<Fingerprints>(&bytes).ok())
            .map(|f| f.layers)
            .unwrap_or_default();
        AppContents {
            record,
            fingerprints,
            changed: false,
        }
    }

    /// The sha256 of the contents of the file at `relative` in the app dir, whose `lstat`
    /// is `meta`, when the record knows it (module docs).
    pub fn contents(&mut self, relative: &Path, meta: &fs::Metadata) -> Option<[u8; 32]> {
        self.record.lookup(relative, &Stat::of(meta))
    }

    /// The diffID of the layer with this fingerprint, if one was seen.
    pub fn diff_id(&self, fingerprint: &Digest) -> Option<Digest> {
        Digest::parse(self.fingerprints.get(&fingerprint.to_string())?).ok()
    }

    /// Remembers the diffID of the layer with this fingerprint.
    pub fn remember(&mut self, fingerprint: &Digest, diff_id: &Digest) {
        if self.diff_id(fingerprint).as_ref() == Some(diff_id) {
            return;
        }
        if self.fingerprints.len() >= MAX_FINGERPRINTS {
            self.fingerprints.clear();
        }
        self.fingerprints
            .insert(fingerprint.to_string(), diff_id.to_string());
        self.changed = true;
    }

    /// Saves the fingerprints when new ones were remembered; failing to is logged.
    pub fn save(self) {
        let Some(file) = self.record.fingerprints().filter(|_| self.changed) else {
            return;
        };
        let body = Fingerprints {
            layers: self.fingerprints,
        };
        let written = serde_json::to_vec(&body)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                let dir = file.parent().unwrap_or(Path::new("."));
                let temp = tempfile::Builder::new()
                    .prefix(".layers-")
                    .tempfile_in(dir)?;
                fs::write(temp.path(), bytes)?;
                temp.persist(file).map(drop).map_err(|e| e.error)
            });
        if let Err(e) = written {
            tracing::warn!(file = %file.display(), "could not save the layer fingerprints: {e}");
        }
    }
}
