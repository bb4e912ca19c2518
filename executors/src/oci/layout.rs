//! OCI image layouts on disk (`oci-layout`, `index.json`, `blobs/sha256/`), as skopeo
//! and umoci read and write them. Blobs land first, `index.json` last, each through a
//! temp file and a rename, so a killed writer never leaves a ref to a missing blob.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use imageref::Digest;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::blob::{file_stream, verified, BlobStream};
use super::manifest::{media_type, Descriptor, ImageIndex, REF_NAME_ANNOTATION};
use super::OciError;

const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_CONTENT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
const INDEX_FILE: &str = "index.json";

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// Whether `dir` holds an OCI image layout.
    pub fn exists(dir: &Path) -> bool {
        dir.join(LAYOUT_FILE).is_file()
    }

    /// An existing layout; an error when `dir` holds none.
    pub fn open(dir: &Path) -> Result<Layout, OciError> {
        if !Layout::exists(dir) {
            return Err(OciError::Layout {
                dir: dir.into(),
                reason: "not an OCI image layout (no `oci-layout` file)".into(),
            });
        }
        Ok(Layout { dir: dir.into() })
    }

    /// The layout at `dir`, made (with an empty index) when missing.
    pub fn open_or_create(dir: &Path) -> Result<Layout, OciError> {
        let blobs = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(|e| OciError::io(&blobs, e))?;
        let layout = Layout { dir: dir.into() };
        if !dir.join(LAYOUT_FILE).is_file() {
            layout.write_atomically(LAYOUT_FILE, LAYOUT_CONTENT.as_bytes())?;
        }
        if !dir.join(INDEX_FILE).is_file() {
            let empty = ImageIndex {
                schema_version: 2,
                media_type: Some(media_type::OCI_INDEX.into()),
                manifests: Vec::new(),
                annotations: None,
            };
            layout.write_index(&empty)?;
        }
        Ok(layout)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join("blobs")
            .join(digest.algorithm())
            .join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// The layout's `index.json`.
    pub fn index(&self) -> Result<ImageIndex, OciError> {
        let path = self.dir.join(INDEX_FILE);
        let bytes = fs::read(&path).map_err(|e| OciError::io(&path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| OciError::Layout {
            dir: self.dir.clone(),
            reason: format!("invalid index.json: {e}"),
        })
    }

    /// The index entry named `name`; without a name, the only entry.
    pub fn find(&self, name: Option<&str>) -> Result<Descriptor, OciError> {
        let index = self.index()?;
        let not_found = |reason: String| OciError::NotFound {
            reference: format!(
                "oci:{}{}",
                self.dir.display(),
                name.map(|n| format!(":{n}")).unwrap_or_default()
            ),
            message: reason,
        };
        match name {
            Some(name) => index
                .manifests
                .into_iter()
                .rev()
                .find(|d| d.ref_name() == Some(name))
                .ok_or_else(|| not_found(format!("the layout has no image named `{name}`"))),
            None => match index.manifests.len() {
                1 => Ok(index.manifests.into_iter().next().expect("one entry")),
                0 => Err(not_found("the layout holds no image".into())),
                n => Err(not_found(format!(
                    "the layout holds {n} images; name one as oci:DIR:NAME"
                ))),
            },
        }
    }

    /// A blob's bytes, whole: for manifests and configs.
    pub async fn read_blob(&self, digest: &Digest) -> Result<Bytes, OciError> {
        let path = self.blob_path(digest);
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| self.missing_blob(digest, e))?;
        let actual = Digest::sha256(&bytes);
        if &actual != digest {
            return Err(OciError::DigestMismatch {
                what: path.display().to_string(),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(Bytes::from(bytes))
    }

    /// A blob's bytes as a stream, checked against the digest at the end.
    pub async fn open_blob(&self, digest: &Digest) -> Result<BlobStream, OciError> {
        let path = self.blob_path(digest);
        if !path.is_file() {
            return Err(self.missing_blob(digest, std::io::ErrorKind::NotFound.into()));
        }
        Ok(verified(file_stream(&path).await?, digest.clone()))
    }

    fn missing_blob(&self, digest: &Digest, e: std::io::Error) -> OciError {
        if e.kind() == std::io::ErrorKind::NotFound {
            OciError::NotFound {
                reference: format!("oci:{}", self.dir.display()),
                message: format!("blob {digest} is missing"),
            }
        } else {
            OciError::io(self.blob_path(digest), e)
        }
    }

    /// Writes a blob from a stream: into a temp file beside its final place, hashed on
    /// the way, renamed into place only when the digest matches.
    pub async fn write_blob<S>(&self, digest: &Digest, stream: S) -> Result<u64, OciError>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send,
    {
        let target = self.blob_path(digest);
        let parent = target.parent().expect("a blob path has a parent");
        let temp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(parent)
            .map_err(|e| OciError::io(parent, e))?;
        let (std_file, temp_path) = temp.into_parts();
        let mut file = tokio::fs::File::from_std(std_file);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut stream = std::pin::pin!(stream);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| OciError::io(&target, e))?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk)
                .await
                .map_err(|e| OciError::io(&*temp_path, e))?;
        }
        file.flush()
            .await
            .map_err(|e| OciError::io(&*temp_path, e))?;
        drop(file);
        let actual = Digest::from_sha256(hasher);
        if actual != *digest {
            return Err(OciError::DigestMismatch {
                what: format!("blob written to oci:{}", self.dir.display()),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        fs::set_permissions(&*temp_path, readable()).map_err(|e| OciError::io(&*temp_path, e))?;
        temp_path
            .persist(&target)
            .map_err(|e| OciError::io(&target, e.error))?;
        Ok(size)
    }

    pub async fn write_blob_bytes(&self, bytes: Bytes) -> Result<Digest, OciError> {
        let digest = Digest::sha256(&bytes);
        if !self.has_blob(&digest) {
            self.write_blob(&digest, futures::stream::iter([Ok(bytes)]))
                .await?;
        }
        Ok(digest)
    }

    /// Adds a blob that already sits in a file with a known digest (a layer just
    /// written): hard-linked when the file system allows, copied otherwise.
    pub async fn add_blob_file(&self, digest: &Digest, path: &Path) -> Result<(), OciError> {
        let target = self.blob_path(digest);
        if target.is_file() {
            return Ok(());
        }
        match fs::hard_link(path, &target) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(_) => self
                .write_blob(digest, file_stream(path).await?)
                .await
                .map(drop),
        }
    }

    /// Points `name` (or, without a name, the unnamed entry) at `descriptor`,
    /// replacing whatever it named before. Blocking: it locks the layout against other
    /// writers (in this process or another) for the read-modify-write of `index.json`.
    pub fn set_ref(&self, name: Option<&str>, mut descriptor: Descriptor) -> Result<(), OciError> {
        let lock_path = self.dir.join(LAYOUT_FILE);
        let lock = File::open(&lock_path).map_err(|e| OciError::io(&lock_path, e))?;
        lock.lock().map_err(|e| OciError::io(&lock_path, e))?;
        let mut index = self.index()?;
        index.manifests.retain(|d| d.ref_name() != name);
        let mut annotations = descriptor.annotations.take().unwrap_or_default();
        annotations.remove(REF_NAME_ANNOTATION);
        if let Some(name) = name {
            annotations.insert(REF_NAME_ANNOTATION.into(), name.into());
        }
        descriptor.annotations = (!annotations.is_empty()).then_some(annotations);
        index.manifests.push(descriptor);
        self.write_index(&index)
    }

    fn write_index(&self, index: &ImageIndex) -> Result<(), OciError> {
        let bytes = serde_json::to_vec(index).expect("an index serialises to JSON");
        self.write_atomically(INDEX_FILE, &bytes)
    }

    fn write_atomically(&self, name: &str, bytes: &[u8]) -> Result<(), OciError> {
        let target = self.dir.join(name);
        let mut temp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&self.dir)
            .map_err(|e| OciError::io(&self.dir, e))?;
        temp.write_all(bytes)
            .and_then(|()| temp.as_file().sync_all())
            .map_err(|e| OciError::io(temp.path(), e))?;
        fs::set_permissions(temp.path(), readable()).map_err(|e| OciError::io(temp.path(), e))?;
        temp.persist(&target)
            .map_err(|e| OciError::io(&target, e.error))?;
        Ok(())
    }
}

/// Layouts are read by other users' tools, but temp files are made 0600.
fn readable() -> fs::Permissions {
    std::os::unix::fs::PermissionsExt::from_mode(0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(bytes: &[u8]) -> Descriptor {
        Descriptor::new(
            media_type::OCI_MANIFEST,
            Digest::sha256(bytes),
            bytes.len() as u64,
        )
    }

    #[test]
    fn refs_are_named_replaced_and_found() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!Layout::exists(dir.path()));
        let layout = Layout::open_or_create(dir.path()).unwrap();
        assert!(Layout::exists(dir.path()));
        let empty = layout.find(None).unwrap_err();
        assert!(empty.to_string().contains("holds no image"), "{empty}");

        layout.set_ref(Some("a"), descriptor(b"one")).unwrap();
        assert_eq!(layout.find(None).unwrap().digest, Digest::sha256(b"one"));
        layout.set_ref(Some("b"), descriptor(b"two")).unwrap();
        layout.set_ref(Some("a"), descriptor(b"three")).unwrap();
        let index = layout.index().unwrap();
        assert_eq!(index.manifests.len(), 2, "`a` was replaced, not added");
        assert_eq!(
            layout.find(Some("a")).unwrap().digest,
            Digest::sha256(b"three")
        );
        assert_eq!(layout.find(Some("a")).unwrap().ref_name(), Some("a"));
        let several = layout.find(None).unwrap_err();
        assert!(several.to_string().contains("name one"), "{several}");
        let missing = layout.find(Some("c")).unwrap_err();
        assert!(matches!(missing, OciError::NotFound { .. }), "{missing}");

        // What other tools read: the layout marker and the ref-name annotation.
        let marker = fs::read_to_string(dir.path().join(LAYOUT_FILE)).unwrap();
        assert_eq!(marker, LAYOUT_CONTENT);
        let raw = fs::read_to_string(dir.path().join(INDEX_FILE)).unwrap();
        assert!(
            raw.contains(r#""org.opencontainers.image.ref.name":"b""#),
            "{raw}"
        );
    }

    #[tokio::test]
    async fn blobs_are_checked_on_the_way_in_and_out() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::open_or_create(dir.path()).unwrap();
        let digest = layout
            .write_blob_bytes(Bytes::from_static(b"content"))
            .await
            .unwrap();
        assert!(layout.has_blob(&digest));
        assert_eq!(&layout.read_blob(&digest).await.unwrap()[..], b"content");

        let wrong = Digest::sha256(b"something else");
        let err = layout
            .write_blob(
                &wrong,
                futures::stream::iter([Ok(Bytes::from_static(b"content"))]),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
        assert!(!layout.has_blob(&wrong), "a mismatched blob is not kept");

        fs::write(layout.blob_path(&digest), b"tampered").unwrap();
        let err = layout.read_blob(&digest).await.unwrap_err();
        assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
    }
}
