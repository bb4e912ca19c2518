//! Reusing the previous image's layers: [`PreviousImage`] as analyze found it, and the
//! [`LayerWriter`] that writes a layer or takes the previous image's blob when the diffID
//! matches.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use imageref::{Digest, ImageRef};

use super::labels::LayersMetadata;
use super::{write_err, Blob, ExportError, ImageLayer};
use crate::oci::compress::default_threads;
use crate::oci::layer::{LayerBuilder, WrittenLayer};
use crate::oci::{media_type, Descriptor, LayerCompression, OciError};

/// The image the last build wrote, for reusing its layers by diffID.
#[derive(Debug, Clone, Default)]
pub struct PreviousImage {
    /// Where its blobs can be read (pinned); `None` when there is no previous image.
    pub reference: Option<ImageRef>,
    /// Its `io.buildpacks.lifecycle.metadata` label (empty when absent or unreadable).
    pub metadata: LayersMetadata,
    /// Its layers by diffID.
    pub layers: BTreeMap<Digest, Descriptor>,
}

impl PreviousImage {
    /// Where the layer with this diffID can be copied from, if the previous image has it.
    pub(super) fn layer(&self, diff_id: &Digest) -> Option<(&ImageRef, &Descriptor)> {
        Some((self.reference.as_ref()?, self.layers.get(diff_id)?))
    }

    /// The layer with this diffID as the new image takes it over from this one (its
    /// blob copied, never rewritten), if this image has it. `local` is a copy on disk, if
    /// one was written anyway.
    pub(super) fn reused(
        &self,
        diff_id: &Digest,
        created_by: String,
        local: Option<WrittenLayer>,
    ) -> Option<ImageLayer> {
        let (from, descriptor) = self.layer(diff_id)?;
        Some(ImageLayer {
            diff_id: diff_id.clone(),
            descriptor: descriptor.clone(),
            blob: Blob::Copied { from: from.clone() },
            created_by,
            local,
        })
    }
}

/// The entries of a layer holding `on_disk` as `in_image`, owned by `(uid, gid)`.
pub(super) fn dir_layer(
    (uid, gid): (u32, u32),
    in_image: PathBuf,
    on_disk: PathBuf,
) -> impl FnOnce() -> Result<LayerBuilder, OciError> + Send + 'static {
    move || {
        let mut builder = LayerBuilder::new(uid.into(), gid.into());
        builder.add(&in_image, &on_disk)?;
        Ok(builder)
    }
}

/// Writes layers on a blocking thread and reuses the previous image's blob when the
/// diffID matches and it is compressed the way this image's layers are.
pub(super) struct LayerWriter<'a> {
    pub(super) work_dir: PathBuf,
    pub(super) previous: &'a PreviousImage,
    pub(super) compression: LayerCompression,
}

impl LayerWriter<'_> {
    /// Writes the layer of `(uid, gid)` holding `on_disk` as `in_image`.
    pub(super) async fn write_dir(
        &self,
        owner: (u32, u32),
        in_image: PathBuf,
        on_disk: PathBuf,
        created_by: String,
    ) -> Result<ImageLayer, ExportError> {
        self.write(dir_layer(owner, in_image, on_disk), created_by)
            .await
    }

    /// Collects the entries (walking directories) and writes the layer, on a blocking
    /// thread.
    async fn write(
        &self,
        collect: impl FnOnce() -> Result<LayerBuilder, OciError> + Send + 'static,
        created_by: String,
    ) -> Result<ImageLayer, ExportError> {
        let work_dir = self.work_dir.clone();
        let compression = self.compression;
        let written = tokio::task::spawn_blocking(move || {
            collect()?.write_compressed(&work_dir, compression, default_threads())
        })
        .await
        .expect("writing a layer does not panic")
        .map_err(|e| write_err(&created_by, e))?;
        Ok(self.reuse_or_write(written, created_by))
    }

    /// Like [`write`](Self::write), but on a rebuild first hashes the tar alone: a layer
    /// the previous image has is then neither compressed nor written to disk, which is
    /// most of the work for big unchanged layers (app slices of assets, say). Such a layer
    /// comes without a local copy, so layers the cache needs go through `write`.
    ///
    /// `known_diff_id` is the diffID the layer has, if the caller knows it without
    /// reading the layer (the app layers' fingerprints): when the previous image has it,
    /// the layer is not even collected.
    pub(super) async fn write_or_reuse(
        &self,
        collect: impl FnOnce() -> Result<LayerBuilder, OciError> + Send + 'static,
        created_by: String,
        known_diff_id: Option<Digest>,
    ) -> Result<ImageLayer, ExportError> {
        if self.previous.reference.is_none() || self.previous.layers.is_empty() {
            return self.write(collect, created_by).await;
        }
        let known = known_diff_id.filter(|diff_id| {
            self.previous
                .layer(diff_id)
                .is_some_and(|(_, descriptor)| self.reusable(descriptor))
        });
        if let Some(diff_id) = known {
            return Ok(self
                .previous
                .reused(&diff_id, created_by, None)
                .expect("the previous image has this diffID: checked above"));
        }
        let work_dir = self.work_dir.clone();
        let compression = self.compression;
        let previous: BTreeSet<Digest> = self
            .previous
            .layers
            .iter()
            .filter(|(_, descriptor)| self.reusable(descriptor))
            .map(|(diff_id, _)| diff_id.clone())
            .collect();
        if previous.is_empty() {
            return self.write(collect, created_by).await;
        }
        let outcome = tokio::task::spawn_blocking(move || {
            let builder = collect()?;
            let diff_id = builder.diff_id()?;
            if previous.contains(&diff_id) {
                return Ok(Err(diff_id));
            }
            builder
                .write_compressed(&work_dir, compression, default_threads())
                .map(Ok)
        })
        .await
        .expect("writing a layer does not panic")
        .map_err(|e| write_err(&created_by, e))?;
        Ok(match outcome {
            Ok(written) => self.reuse_or_write(written, created_by),
            Err(diff_id) => self
                .previous
                .reused(&diff_id, created_by, None)
                .expect("the previous image has this diffID: checked above"),
        })
    }

    /// Whether a previous image's layer blob is compressed as this image's layers are
    /// (so that switching `layer-compression` rewrites the layers it covers).
    fn reusable(&self, descriptor: &Descriptor) -> bool {
        let wanted = self.compression.media_type();
        descriptor.media_type == wanted
            || (self.compression == LayerCompression::Gzip
                && descriptor.media_type == media_type::DOCKER_LAYER_GZIP)
    }

    /// The image layer for a layer written to disk: the previous image's blob when it
    /// has the same diffID, else the new one.
    fn reuse_or_write(&self, written: WrittenLayer, created_by: String) -> ImageLayer {
        let diff_id = written.diff_id.clone();
        let reusable = self
            .previous
            .layer(&diff_id)
            .is_some_and(|(_, descriptor)| self.reusable(descriptor));
        if reusable {
            return self
                .previous
                .reused(&diff_id, created_by, Some(written))
                .expect("the previous image has this diffID: checked above");
        }
        ImageLayer {
            diff_id,
            descriptor: written.descriptor(),
            blob: Blob::Written(written.clone()),
            created_by,
            local: Some(written),
        }
    }
}
