//! The directory cache of one image, in the reference lifecycle's volume cache layout:
//! `committed/` holds the blobs named by diffID and the metadata; a new commit is
//! assembled in `staging/` and swapped in.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use imageref::Digest;
use serde::{Deserialize, Serialize};

use super::{io_err, CacheError};
use crate::lifecycle::export::{BuildpackLayersMetadata, LayerMetadata};

/// The cache metadata file, as the reference lifecycle names it.
pub(super) const METADATA_FILE: &str = "io.buildpacks.lifecycle.cache.metadata";

/// Beside the metadata: each cached blob's digest and size by diffID, so that a cache
/// image's manifest is written without reading the blobs again.
const DIGESTS_FILE: &str = "blob-digests.json";

/// diffID → (blob digest, blob size), as strings for a plain JSON file.
pub(super) type BlobDigests = BTreeMap<String, (String, u64)>;

/// What the cache holds: per buildpack, its cached layers (the label's shape).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheMetadata {
    #[serde(default)]
    pub buildpacks: Vec<BuildpackLayersMetadata>,
}

impl CacheMetadata {
    pub(super) fn layer(&self, id: &str, name: &str) -> Option<&LayerMetadata> {
        self.buildpacks
            .iter()
            .find(|b| b.key == id)
            .and_then(|b| b.layers.get(name))
    }
}

/// The directory cache of one image.
#[derive(Debug, Clone)]
pub struct CacheDir {
    dir: PathBuf,
}

impl CacheDir {
    /// `<caches_dir>/<image>`, the image name made a safe directory name.
    pub fn for_image(caches_dir: &Path, image: &str) -> CacheDir {
        let name: String = image
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        // `.` and `..` would name the cache's parents.
        let name = if name.chars().all(|c| c == '.') {
            format!("_{name}")
        } else {
            name
        };
        CacheDir {
            dir: caches_dir.join(name),
        }
    }

    pub fn at(dir: impl Into<PathBuf>) -> CacheDir {
        CacheDir { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An empty `staging` directory, where the next commit is assembled.
    pub(super) fn fresh_staging(&self) -> Result<PathBuf, CacheError> {
        let staging = self.dir.join("staging");
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(io_err(&staging))?;
        }
        fs::create_dir_all(&staging).map_err(io_err(&staging))?;
        Ok(staging)
    }

    fn committed(&self) -> PathBuf {
        self.dir.join("committed")
    }

    /// The cached blob of the layer with this diffID.
    pub fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.committed().join(blob_name(diff_id))
    }

    /// Locks the cache against other builds of the same image until the file is dropped.
    pub async fn lock(&self) -> Result<File, CacheError> {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&self.dir)
            .map_err(io_err(&self.dir))?;
        crate::lifecycle::stack::lock_file(&self.dir.join("lock"))
            .await
            .map_err(|e| CacheError::Io {
                path: self.dir.join("lock"),
                source: io::Error::other(e.to_string()),
            })
    }

    /// What [`DIGESTS_FILE`] says of the committed blobs; empty when unreadable (the
    /// blobs are then hashed when needed).
    pub(super) fn blob_digests(&self) -> BlobDigests {
        fs::read(self.committed().join(DIGESTS_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// The committed metadata; empty when there is none or it cannot be read.
    pub fn metadata(&self) -> CacheMetadata {
        let path = self.committed().join(METADATA_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "cache metadata unreadable; starting empty");
                CacheMetadata::default()
            }),
            Err(_) => CacheMetadata::default(),
        }
    }
}

pub(super) fn blob_name(diff_id: &Digest) -> String {
    format!("{}:{}.tar.gz", diff_id.algorithm(), diff_id.hex())
}

/// Writes `metadata` and the blob `digests` into `staging`, then `committed` → `committed-backup`, `staging` →
/// `committed`, and the backup goes.
pub(super) fn commit(
    cache: &CacheDir,
    metadata: &CacheMetadata,
    digests: &BlobDigests,
) -> Result<(), CacheError> {
    let staging = cache.dir.join("staging");
    for (file, json) in [
        (METADATA_FILE, serde_json::to_vec(metadata)),
        (DIGESTS_FILE, serde_json::to_vec(digests)),
    ] {
        let path = staging.join(file);
        fs::write(&path, json.expect("cache metadata serialises")).map_err(io_err(&path))?;
    }
    let committed = cache.committed();
    let backup = cache.dir.join("committed-backup");
    if backup.exists() {
        fs::remove_dir_all(&backup).map_err(io_err(&backup))?;
    }
    if committed.exists() {
        fs::rename(&committed, &backup).map_err(io_err(&committed))?;
    }
    let staging = cache.dir.join("staging");
    fs::rename(&staging, &committed).map_err(io_err(&committed))?;
    if backup.exists() {
        fs::remove_dir_all(&backup).map_err(io_err(&backup))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_dirs_are_safe_names() {
        let c = CacheDir::for_image(Path::new("/s/cache"), "../team/app:1");
        assert_eq!(c.dir(), Path::new("/s/cache/.._team_app_1"));
        let c = CacheDir::for_image(Path::new("/s/cache"), "..");
        assert_eq!(c.dir(), Path::new("/s/cache/_.."));
    }
}
