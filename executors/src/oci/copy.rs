//! Copying an image between registries and layouts, in any direction. An index is
//! copied whole — every platform, byte for byte — so the copy keeps its digest. Blobs
//! stream through bounded memory, several at a time, skipped when present.

use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use imageref::{Digest, ImageRef};

use super::manifest::{Descriptor, Manifest, RawManifest};
use super::{BlobTransfer, ImageStore, OciError};

/// What a copy reports as it goes; every method defaults to nothing.
pub trait CopyProgress: Send + Sync {
    fn blob_started(&self, _blob: &Descriptor) {}
    fn blob_bytes(&self, _blob: &Digest, _bytes: u64) {}
    fn blob_finished(&self, _blob: &Descriptor, _how: BlobTransfer) {}
}

impl CopyProgress for () {}

/// What a copy did.
#[derive(Debug, Clone)]
pub struct CopyReport {
    /// The destination, pinned to the copied manifest's digest.
    pub destination: ImageRef,
    pub digest: Digest,
    pub media_type: String,
    /// Every blob of the image (configs and layers of every platform) and how it got
    /// there.
    pub blobs: Vec<(Descriptor, BlobTransfer)>,
}

/// Copies the image `src` names to `dst`: blobs, then manifests (an index's children
/// before the index), then the tag or layout name.
pub async fn copy_image(
    store: &ImageStore,
    src: &ImageRef,
    dst: &ImageRef,
    progress: Arc<dyn CopyProgress>,
) -> Result<CopyReport, OciError> {
    let top = store.manifest(src).await?;
    let blobs = Mutex::new(Vec::new());
    copy_contents(store, src, dst, &top, &progress, &blobs).await?;
    let destination = store.push_manifest(dst, &top).await?;
    tracing::info!(%src, %dst, digest = %top.digest, "copied image");
    Ok(CopyReport {
        destination,
        digest: top.digest,
        media_type: top.media_type,
        blobs: blobs
            .into_inner()
            .expect("no copy task panicked holding the lock"),
    })
}

/// Everything `manifest` refers to, recursively, so that it can be pushed next.
async fn copy_contents(
    store: &ImageStore,
    src: &ImageRef,
    dst: &ImageRef,
    manifest: &RawManifest,
    progress: &Arc<dyn CopyProgress>,
    done: &Mutex<Vec<(Descriptor, BlobTransfer)>>,
) -> Result<(), OciError> {
    match manifest.parse()? {
        Manifest::Image(image) => {
            let blobs = std::iter::once(image.config).chain(image.layers);
            futures::stream::iter(blobs)
                .map(|blob| async move {
                    progress.blob_started(&blob);
                    let on_bytes = {
                        let (progress, digest) = (progress.clone(), blob.digest.clone());
                        Arc::new(move |n| progress.blob_bytes(&digest, n))
                    };
                    let how = store.copy_blob(src, dst, &blob, on_bytes).await?;
                    progress.blob_finished(&blob, how);
                    done.lock()
                        .expect("no copy task panicked holding the lock")
                        .push((blob, how));
                    Ok::<_, OciError>(())
                })
                .buffer_unordered(store.settings().parallel_blobs.max(1))
                .try_collect::<()>()
                .await
        }
        Manifest::Index(index) => {
            for child in &index.manifests {
                let child = store.manifest_by_digest(src, &child.digest).await?;
                Box::pin(copy_contents(store, src, dst, &child, progress, done)).await?;
                store.push_manifest_by_digest(dst, &child).await?;
            }
            Ok(())
        }
    }
}
