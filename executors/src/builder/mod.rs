//! Builder images: kpackd writes each builder that has a `tag` as a CNB builder image
//! (the distribution spec's builder: the stack's build image, one layer per buildpack at
//! `/cnb/buildpacks/<id>/<version>/`, `/cnb/order.toml`, `/cnb/run.toml`,
//! `/cnb/stack.toml`, the `io.buildpacks.builder.metadata`, `io.buildpacks.buildpack.order`
//! and `io.buildpacks.buildpack.layers` labels) and pushes it.
//!
//! [`publish`] is the one entry point the engine calls; the same inputs give the same
//! digest. Its parts, by role:
//!
//! - [`normalised`]: layers whose bytes depend on their contents only;
//! - [`layers`]: the layers a builder adds, among them [`layers::buildpack_layer`], the
//!   one writer of a directory buildpack's layer (builders and buildpackages alike);
//! - [`buildpacks`]: each buildpack as a layer, written or reused by digest, with its
//!   `io.buildpacks.buildpack.layers` entry;
//! - [`lifecycle`]: a lifecycle image's `/cnb/lifecycle`, unpacked with bounds;
//! - [`metadata`]: the order, labels, `/cnb/*.toml` files and image config;
//! - [`push`]: blobs, config and manifest, through [`ImageStore`].

mod buildpacks;
pub mod entrypoint;
pub mod layers;
mod lifecycle;
mod metadata;
pub mod normalised;
mod push;

use std::collections::BTreeSet;
use std::path::PathBuf;

use cnb::buildpack::OrderGroup;
use imageref::{Digest, ImageRef};

use crate::lifecycle::stack::config_env;
use crate::lifecycle::{LogSink, Phase};
use crate::oci::{ImageStore, OciError};
use buildpacks::{BuilderLayer, LayerBlob};
use normalised::Owner;

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

/// Makes the errors of one builder's publish.
pub(crate) struct Fail<'a>(&'a str);

impl Fail<'_> {
    pub fn builder(&self) -> &str {
        self.0
    }

    pub fn image(&self, what: String, source: OciError) -> PublishError {
        PublishError::Image {
            builder: self.0.to_string(),
            what,
            source,
        }
    }

    pub fn io(&self, what: impl Into<String>, source: std::io::Error) -> PublishError {
        PublishError::Io {
            builder: self.0.to_string(),
            what: what.into(),
            source,
        }
    }

    pub fn invalid(&self, message: String) -> PublishError {
        PublishError::Invalid {
            builder: self.0.to_string(),
            message,
        }
    }
}

/// Writes the builder image of `req` and pushes it under its tag: the build image's
/// layers (reused by digest), one layer per buildpack (sorted by id and version), the
/// CNB user's directories, the lifecycle and the build entrypoint when given, and the
/// `/cnb/*.toml` files; labels and config from [`metadata`]. Layer files are written in
/// a temporary directory, removed on return.
pub async fn publish(
    store: &ImageStore,
    req: &PublishRequest,
    logs: &dyn LogSink,
) -> Result<PublishResult, PublishError> {
    let fail = Fail(&req.builder);
    let work = tempfile::Builder::new()
        .prefix("kpackd-builder-")
        .tempdir()
        .map_err(|e| fail.io("make a work directory", e))?;

    let base = store
        .image(&req.build_image)
        .await
        .map_err(|e| fail.image(format!("read the build image {}", req.build_image), e))?;
    let owner = cnb_user(&base.config, &req.build_image).map_err(|m| fail.invalid(m))?;
    let mut layers = base_layers(&base, &req.build_image).map_err(|m| fail.invalid(m))?;
    let base_count = layers.len();

    let previous = buildpacks::Previous::read(store, &req.tag).await;
    let mut seen = BTreeSet::new();
    let mut resolved = Vec::with_capacity(req.buildpacks.len());
    for bp in &req.buildpacks {
        if !seen.insert((bp.id.clone(), bp.version.clone())) {
            return Err(fail.invalid(format!("buildpack {}@{} is given twice", bp.id, bp.version)));
        }
        logs.line(
            Phase::Export,
            None,
            &format!("Adding buildpack {}@{}", bp.id, bp.version),
        );
        resolved.push(buildpacks::resolve(store, bp, &previous, work.path(), &fail).await?);
    }
    resolved.sort_by(|a, b| (&a.id, &a.version).cmp(&(&b.id, &b.version)));
    let order = metadata::resolve_order(&req.order, &resolved).map_err(|m| fail.invalid(m))?;
    layers.extend(resolved.iter().map(|bp| bp.layer.clone()));

    let lifecycle = match &req.lifecycle_image {
        Some(image) => {
            logs.line(
                Phase::Export,
                None,
                &format!("Adding the lifecycle of {image}"),
            );
            Some(lifecycle::lifecycle(store, image, work.path(), &fail).await?)
        }
        None => None,
    };
    let files = metadata::cnb_files(req, &order);
    layers.extend(own_layers(req, owner, lifecycle.as_ref(), files, work.path(), &fail).await?);

    let labels = metadata::labels(
        req,
        &resolved,
        &order,
        lifecycle.as_ref().map(|l| metadata::LifecycleInfo {
            version: &l.version,
            apis: &l.apis,
        }),
    );
    let config = metadata::image_config(&base.config, owner, labels, &layers[base_count..]);
    let pushed = push::push(store, &req.tag, config, &layers, logs, &fail).await?;
    Ok(PublishResult {
        digest: pushed.digest,
        image: pushed.image,
        blobs_uploaded: pushed.blobs_uploaded,
        bytes_uploaded: pushed.bytes_uploaded,
    })
}

/// The build image's layers, reused by digest; or why they cannot be.
fn base_layers(base: &crate::oci::Image, image: &ImageRef) -> Result<Vec<BuilderLayer>, String> {
    if base.manifest.layers.len() != base.config.rootfs.diff_ids.len() {
        return Err(format!(
            "the build image {image} lists {} layers and {} diffIDs",
            base.manifest.layers.len(),
            base.config.rootfs.diff_ids.len()
        ));
    }
    let from = base.pinned();
    Ok(base
        .manifest
        .layers
        .iter()
        .zip(&base.config.rootfs.diff_ids)
        .map(|(descriptor, diff_id)| BuilderLayer {
            diff_id: diff_id.clone(),
            descriptor: descriptor.clone(),
            blob: LayerBlob::Copied { from: from.clone() },
            created_by: String::new(),
        })
        .collect())
}

/// The layers after the buildpacks: the CNB user's directories, the lifecycle (written
/// already), the build entrypoint, and the `/cnb` files last, so that a changed order
/// rewrites only the last layer.
async fn own_layers(
    req: &PublishRequest,
    owner: Owner,
    lifecycle: Option<&lifecycle::Lifecycle>,
    files: Vec<(&'static str, String)>,
    work: &std::path::Path,
    fail: &Fail<'_>,
) -> Result<Vec<BuilderLayer>, PublishError> {
    let mut layers = Vec::new();
    let out = work.to_path_buf();
    let dirs = blocking(
        move || layers::user_dirs_layer(owner, &out),
        fail,
        "directories",
    )
    .await?;
    layers.push(BuilderLayer::written(
        dirs,
        "kpackd: /workspace, /layers, /platform".into(),
    ));
    if let Some(lifecycle) = lifecycle {
        layers.push(BuilderLayer::written(
            lifecycle.layer.clone(),
            format!("kpackd: lifecycle {}", lifecycle.version),
        ));
    }
    if let Some(entrypoint) = &req.entrypoint {
        let (entrypoint, out) = (entrypoint.clone(), work.to_path_buf());
        let written = blocking(
            move || layers::entrypoint_layer(&entrypoint, &out),
            fail,
            "build entrypoint",
        )
        .await?;
        layers.push(BuilderLayer::written(
            written,
            format!("kpackd: /{}", layers::ENTRYPOINT_PATH),
        ));
    }
    let out = work.to_path_buf();
    let written = blocking(
        move || layers::cnb_files_layer(&files, &out),
        fail,
        "/cnb files",
    )
    .await?;
    layers.push(BuilderLayer::written(
        written,
        "kpackd: /cnb/order.toml, /cnb/run.toml, /cnb/stack.toml".into(),
    ));
    Ok(layers)
}

/// Runs a layer writer on a blocking thread.
async fn blocking(
    write: impl FnOnce() -> Result<crate::oci::layer::WrittenLayer, OciError> + Send + 'static,
    fail: &Fail<'_>,
    what: &str,
) -> Result<crate::oci::layer::WrittenLayer, PublishError> {
    tokio::task::spawn_blocking(write)
        .await
        .expect("writing a layer does not panic")
        .map_err(|e| fail.image(format!("write the {what} layer"), e))
}

/// The CNB user and group of the build image (`CNB_USER_ID`, `CNB_GROUP_ID`), or why
/// not.
fn cnb_user(config: &crate::oci::ImageConfig, image: &ImageRef) -> Result<Owner, String> {
    let env = config_env(config);
    let id = |name: &str| {
        let value = env.get(name).ok_or_else(|| {
            format!("the build image {image} does not set {name} (the platform spec requires it)")
        })?;
        value.trim().parse::<u32>().map(u64::from).map_err(|_| {
            format!(
                "the build image {image}: {name}={:?} is not a numeric id",
                value.escape_debug().to_string()
            )
        })
    };
    Ok(Owner {
        uid: id("CNB_USER_ID")?,
        gid: id("CNB_GROUP_ID")?,
    })
}
