//! Rebase: puts an app image on a patched run image without rebuilding it. The layers
//! up to the run image's top layer are swapped for the new run image's, every layer
//! above stays as it is (same digests, never downloaded nor uploaded again), and only a
//! new config and manifest are written.
//!
//! The flow, as the CNB rebaser does it (platform spec, `rebaser`):
//! 1. read the app image and the new run image (for an index, the entry matching the
//!    app image's platform);
//! 2. check the preconditions — lifecycle metadata present, `io.buildpacks.rebasable`
//!    not `"false"`, same stack id, same target (os, architecture, variant, distro),
//!    run image named in the metadata — all but the stack id waived by `force`;
//! 3. build the new config (diffIDs, history, os/architecture, labels) and manifest;
//! 4. for each distinct destination, make the new run image's layers present (a
//!    cross-repository mount on the same registry, a stream otherwise), and the app
//!    layers when the destination is not where the app image lives; then the config,
//!    then the manifest under the primary tag and every additional tag, in order.
//!
//! Nothing is written before every check has passed, so a refused rebase leaves the
//! destination untouched.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use imageref::{Digest, ImageRef};

use crate::oci::{BlobTransfer, Image, ImageStore, Manifest, OciError};

mod checks;
mod config;
mod error;
mod metadata;
mod rebased;

pub use error::RebaseError;
use rebased::Rebased;

/// Labels that describe the base image; a rebase takes them from the new run image.
use cnb::labels::BASE_LABEL_PREFIXES;
/// The label holding the lifecycle's metadata, with `runImage.topLayer`; `"false"` in
/// the rebasable label on an image that must not be rebased; the legacy stack id, on
/// run images and the app images built on them.
pub use cnb::labels::{
    LIFECYCLE_METADATA as LIFECYCLE_LABEL, REBASABLE as REBASABLE_LABEL, STACK_ID as STACK_ID_LABEL,
};
const DISTRO_LABELS: [&str; 2] = [cnb::labels::DISTRO_NAME, cnb::labels::DISTRO_VERSION];
/// Manifest annotations naming the base image, updated when present.
const BASE_DIGEST_ANNOTATION: &str = "org.opencontainers.image.base.digest";
const BASE_NAME_ANNOTATION: &str = "org.opencontainers.image.base.name";

/// One rebase to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebaseRequest {
    /// The app image as it is now, best pinned by digest.
    pub image: ImageRef,
    /// The new run image, best pinned by digest.
    pub run_image: ImageRef,
    /// Where the result goes: the primary tag first, then additional tags.
    pub tags: Vec<ImageRef>,
    /// The stack id the new run image must declare (`io.buildpacks.stack.id`), if known.
    pub expected_stack_id: Option<String>,
    /// Rebase although the image is not rebasable, the target differs or the run image
    /// is not the one the metadata names (the CNB rebaser's `-force`). A stack id
    /// mismatch and a missing top layer are refused even so.
    pub force: bool,
}

/// A run image as an app image's metadata records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunImageRecord {
    /// `repo@sha256:…` (as the label says, possibly empty for the old one).
    pub reference: String,
    /// The diffID of its top layer.
    pub top_layer: Digest,
}

/// How many layers reached a destination, and how.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerTransfers {
    pub existed: usize,
    pub mounted: usize,
    pub uploaded: usize,
}

impl LayerTransfers {
    fn add(&mut self, how: BlobTransfer) {
        match how {
            BlobTransfer::Existed => self.existed += 1,
            BlobTransfer::Mounted => self.mounted += 1,
            BlobTransfer::Uploaded => self.uploaded += 1,
        }
    }
}

/// What a rebase did: plain data for the build record (reason STACK, old → new run
/// image, output digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebaseResult {
    /// The primary tag pinned to the new manifest.
    pub image: ImageRef,
    /// The new manifest's digest.
    pub digest: Digest,
    /// The manifest digest of the image rebased.
    pub previous_digest: Digest,
    /// Every tag written, in order.
    pub tags: Vec<ImageRef>,
    pub old_run_image: RunImageRecord,
    pub new_run_image: RunImageRecord,
    /// The manifest digest of the new run image (for an index, its chosen entry).
    pub new_run_image_digest: Digest,
    /// Run image layers taken out, and put in.
    pub old_base_layers: usize,
    pub new_base_layers: usize,
    /// Layers above the run image, kept as they were.
    pub app_layers: usize,
    /// Layers made present at the destinations, summed over destinations.
    pub layers: LayerTransfers,
    /// Bytes sent: layer bytes streamed, plus every config and manifest written (an
    /// upper bound for those: a config the destination has is not sent again).
    pub bytes_uploaded: u64,
}

/// Rebases `req.image` onto `req.run_image` and pushes the result under `req.tags`.
pub async fn rebase(store: &ImageStore, req: &RebaseRequest) -> Result<RebaseResult, RebaseError> {
    if req.tags.is_empty() {
        return Err(RebaseError::NoTags);
    }
    let app = store
        .image(&req.image)
        .await
        .map_err(|source| RebaseError::ReadImage {
            image: req.image.to_string(),
            source,
        })?;
    if app.index_digest.is_some() {
        return Err(RebaseError::AppImageIsIndex {
            image: req.image.to_string(),
        });
    }
    let run = run_image_for(store, req, &app).await?;
    let rebased = Rebased::new(req, &app, &run)?;
    tracing::debug!(
        image = %req.image,
        run_image = %req.run_image,
        old_top_layer = %rebased.old_run_image.top_layer,
        new_top_layer = %rebased.new_run_image.top_layer,
        "rebase planned"
    );

    let sent = Arc::new(AtomicU64::new(0));
    let mut layers = LayerTransfers::default();
    let mut prepared: Vec<&ImageRef> = Vec::new();
    let mut pinned = Vec::with_capacity(req.tags.len());
    for tag in &req.tags {
        if !prepared.iter().any(|p| p.same_location(tag)) {
            for how in rebased
                .copy_layers(store, req, &app, &run, tag, &sent)
                .await?
            {
                layers.add(how);
            }
            let write_err = |source| RebaseError::Write {
                destination: tag.to_string(),
                source,
            };
            // The config is new: it names the new run image.
            store
                .upload_blob_bytes(
                    tag,
                    &rebased.manifest.config.media_type,
                    rebased.config.clone(),
                )
                .await
                .map_err(write_err)?;
            sent.fetch_add(rebased.config.len() as u64, Ordering::Relaxed);
            prepared.push(tag);
        }
        let written = store
            .push_manifest(tag, &rebased.raw_manifest)
            .await
            .map_err(|source| RebaseError::Write {
                destination: tag.to_string(),
                source,
            })?;
        sent.fetch_add(rebased.raw_manifest.bytes.len() as u64, Ordering::Relaxed);
        pinned.push(written);
    }

    let result = RebaseResult {
        image: pinned[0].clone(),
        digest: rebased.raw_manifest.digest.clone(),
        previous_digest: app.digest().clone(),
        tags: req.tags.clone(),
        old_run_image: rebased.old_run_image,
        new_run_image: rebased.new_run_image,
        new_run_image_digest: run.digest().clone(),
        old_base_layers: rebased.old_base_layers,
        new_base_layers: run.manifest.layers.len(),
        app_layers: rebased.app_layers,
        layers,
        bytes_uploaded: sent.load(Ordering::Relaxed),
    };
    tracing::info!(
        image = %result.image,
        previous = %result.previous_digest,
        run_image = %result.new_run_image.reference,
        app_layers = result.app_layers,
        mounted = result.layers.mounted,
        uploaded = result.layers.uploaded,
        bytes_uploaded = result.bytes_uploaded,
        "rebased"
    );
    Ok(result)
}

/// The new run image, for an index the entry of the app image's platform (not the
/// store's configured one: an arm64 app is rebased onto the arm64 run image).
async fn run_image_for(
    store: &ImageStore,
    req: &RebaseRequest,
    app: &Image,
) -> Result<Image, RebaseError> {
    let read_err = |source| RebaseError::ReadImage {
        image: req.run_image.to_string(),
        source,
    };
    let top = store.manifest(&req.run_image).await.map_err(read_err)?;
    let (index_digest, raw_manifest, manifest) = match top.parse().map_err(read_err)? {
        Manifest::Image(m) => (None, top, m),
        Manifest::Index(index) => {
            let platform = app.config.platform();
            let entry =
                index
                    .for_platform(&platform)
                    .ok_or_else(|| RebaseError::PlatformMissing {
                        image: req.image.to_string(),
                        run_image: req.run_image.to_string(),
                        platform: platform.to_string(),
                        available: index
                            .manifests
                            .iter()
                            .filter_map(|d| d.platform.as_ref().map(ToString::to_string))
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?;
            let child = store
                .manifest_by_digest(&req.run_image, &entry.digest)
                .await
                .map_err(read_err)?;
            match child.parse().map_err(read_err)? {
                Manifest::Image(m) => (Some(top.digest), child, m),
                Manifest::Index(_) => {
                    return Err(read_err(OciError::Unsupported(format!(
                        "{}: an index inside an index is not supported",
                        req.run_image
                    ))))
                }
            }
        }
    };
    let raw_config = store
        .read_blob(&req.run_image, &manifest.config)
        .await
        .map_err(read_err)?;
    let config = serde_json::from_slice(&raw_config).map_err(|e| {
        read_err(OciError::Invalid {
            what: format!("image config of {}", req.run_image),
            reason: e.to_string(),
        })
    })?;
    Ok(Image {
        source: req.run_image.clone(),
        index_digest,
        raw_manifest,
        manifest,
        raw_config,
        config,
    })
}
