//! Builder images: kpackd writes each builder that has a `tag` as a CNB builder image
//! (the distribution spec's builder: the stack's build image, one layer per buildpack at
//! `/cnb/buildpacks/<id>/<version>/`, `/cnb/order.toml`, `/cnb/run.toml`,
//! `/cnb/stack.toml`, the `io.buildpacks.builder.metadata`, `io.buildpacks.buildpack.order`
//! and `io.buildpacks.buildpack.layers` labels) and pushes it.
//!
//! [`publish`] is the one entry point the engine calls; the same inputs give the same
//! digest.

pub mod entrypoint;

use std::path::PathBuf;

use cnb::buildpack::OrderGroup;
use imageref::{Digest, ImageRef};

use crate::lifecycle::LogSink;
use crate::oci::{ImageStore, OciError};

/// Everything one builder image needs. Plain data: the engine fills it from kpack.toml
/// and the plan's pins.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// The builder's name in kpack.toml (for logs).
    pub builder: String,
    /// Where the builder image goes.
    pub tag: ImageRef,
    /// The stack's build image, pinned by digest: the builder's base.
    pub build_image: ImageRef,
    /// The stack's run image as users name it (no digest), and its mirrors: written to
    /// `/cnb/run.toml`, `/cnb/stack.toml` and the builder metadata label.
    pub run_image: ImageRef,
    pub run_image_mirrors: Vec<ImageRef>,
    /// The stack id (for `/cnb/stack.toml` and the legacy `stack` label).
    pub stack_id: String,
    /// Every buildpack the order may name, each written as its own layer.
    pub buildpacks: Vec<PublishBuildpack>,
    /// The builder's order.
    pub order: Vec<OrderGroup>,
    /// A lifecycle image whose `/cnb/lifecycle` is added (`lifecycle = { image = … }`),
    /// pinned by digest; None: kpackd's own build entrypoint only.
    pub lifecycle_image: Option<ImageRef>,
    /// kpackd's static build entrypoint, written at `/cnb/lifecycle/kpackd`.
    pub entrypoint: Option<PathBuf>,
}

/// One buildpack of a builder image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishBuildpack {
    pub id: String,
    pub version: String,
    pub source: PublishBuildpackSource,
}

/// Where a buildpack's layer comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishBuildpackSource {
    /// A directory holding `buildpack.toml`: its layer is written the way a buildpackage
    /// of it would be, byte for byte.
    Directory(PathBuf),
    /// The layer with this diffID in a buildpackage or builder image, pinned: reused as it
    /// is (same blob, so registries share it).
    Layer { image: ImageRef, diff_id: Digest },
}

/// What publishing made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishResult {
    /// The builder image manifest's digest.
    pub digest: Digest,
    /// The tag pinned to the digest.
    pub image: ImageRef,
    /// Blobs whose bytes were sent, and how many bytes.
    pub blobs_uploaded: usize,
    pub bytes_uploaded: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("builder {builder}: {what}: {source}")]
    Image {
        builder: String,
        what: String,
        #[source]
        source: OciError,
    },
    #[error("builder {builder}: {what}: {source}")]
    Io {
        builder: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("builder {builder}: {message}")]
    Invalid { builder: String, message: String },
}

/// Writes the builder image of `req` and pushes it under its tag.
pub async fn publish(
    store: &ImageStore,
    req: &PublishRequest,
    logs: &dyn LogSink,
) -> Result<PublishResult, PublishError> {
    let _ = (store, logs);
    Err(PublishError::Invalid {
        builder: req.builder.clone(),
        message: "publishing builder images is not written yet".into(),
    })
}
