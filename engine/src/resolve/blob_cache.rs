//! The content-addressed cache of immutable OCI blobs (platform manifests of an index,
//! image configs) under `<sources>/oci/<algorithm>/<hex>`: what an earlier plan fetched
//! is not requested again.

use std::io::Write as _;
use std::path::PathBuf;

use imageref::Digest;

/// The OCI blob cache in one directory.
#[derive(Debug, Clone)]
pub(crate) struct BlobCache {
    dir: PathBuf,
}

impl BlobCache {
    pub(crate) fn new(dir: PathBuf) -> BlobCache {
        BlobCache { dir }
    }

    /// A blob of the cache, when present and intact.
    pub(crate) fn get(&self, digest: &Digest) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.dir.join(digest.algorithm()).join(digest.hex())).ok()?;
        (Digest::sha256(&bytes) == *digest).then_some(bytes)
    }

    /// Keeps an immutable blob; a failure only costs a request later.
    pub(crate) fn put(&self, digest: &Digest, bytes: &[u8]) {
        if let Err(error) = self.write(digest, bytes) {
            tracing::debug!(%digest, %error, "could not cache a blob");
        }
    }

    /// Writes the blob to a temporary file beside its place and renames it there, so a
    /// reader never sees a partial blob.
    fn write(&self, digest: &Digest, bytes: &[u8]) -> std::io::Result<()> {
        let dir = self.dir.join(digest.algorithm());
        std::fs::create_dir_all(&dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
        tmp.write_all(bytes)?;
        tmp.persist(dir.join(digest.hex())).map_err(|e| e.error)?;
        Ok(())
    }

    #[cfg(test)]
    fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_blob_is_read_back_and_a_corrupt_one_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = BlobCache::new(tmp.path().join("oci"));
        let bytes = b"{\"config\":{}}".to_vec();
        let digest = Digest::sha256(&bytes);
        assert_eq!(cache.get(&digest), None);
        cache.put(&digest, &bytes);
        assert_eq!(cache.get(&digest), Some(bytes));
        let written = cache.dir().join(digest.algorithm()).join(digest.hex());
        let leftovers: Vec<_> = std::fs::read_dir(written.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, [std::ffi::OsString::from(digest.hex())]);
        std::fs::write(&written, b"tampered").unwrap();
        assert_eq!(cache.get(&digest), None);
    }
}
