//! One build, start to end: prepare the stack, analyze the previous image, detect,
//! restore, build, export and save the cache — what the reference `creator` does, without
//! a daemon.
//!
//! [`build_image`] takes a [`BuildRequest`] (plain data the engine fills from kpack.toml)
//! and returns a [`BuildResult`]. Work directories live under the request's `work_root`
//! and are removed when the build ends, also when it fails. Cancelling is dropping the future:
//! buildpack programs are killed with it. The image is pushed only after every buildpack
//! succeeded, so a failed build leaves the registry untouched.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::PathBuf;

use imageref::{Digest, ImageRef};

use super::build::{build, BuildError};
use super::cache::{self, CacheDir, CacheError};
use super::descriptor::{DescriptorError, OrderGroup};
use super::detect::{detect, DetectError};
use super::export::{export, ExportError, ExportRequest};
use super::phase::{BuildpackDir, Isolation, PhaseContext, LAYERS_DIR, PLATFORM_DIR};
use super::project::{self, ProjectInputs, ProjectSettings};
use super::stack::{self, BuildRoot, StackError};
use super::{LogSink, Phase};
use crate::oci::{ImageStore, LayerCompression};
use crate::source::project::ProjectError;

/// Everything one build needs. Plain data: the engine fills it from kpack.toml.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The image's name in kpack.toml.
    pub image: String,
    /// Where the image goes.
    pub tag: ImageRef,
    pub additional_tags: Vec<ImageRef>,
    /// The stack's build and run images, pinned by digest.
    pub build_image: ImageRef,
    pub run_image: ImageRef,
    /// Every buildpack directory (holding `buildpack.toml`) the order may name.
    pub buildpack_dirs: Vec<PathBuf>,
    /// The builder's order.
    pub order: Vec<OrderGroup>,
    /// The image's own group (kpack.toml `buildpacks`): it replaces the order, and the
    /// project descriptor's group.
    pub image_group: Option<OrderGroup>,
    /// The project descriptor to read, relative to the app directory; None reads
    /// `project.toml` when there is one.
    pub project_descriptor: Option<String>,
    /// The app source, materialised for this build; buildpacks may change it.
    pub app_dir: PathBuf,
    /// Platform env (`<platform>/env/<NAME>`); `SOURCE_DATE_EPOCH` here sets `created`.
    pub env: BTreeMap<String, String>,
    /// Give buildpacks outbound network, without the host's loopback (see
    /// [`crate::sandbox::Sandbox::network`]).
    pub network: bool,
    /// Where the build's work directory is made; it is removed when the build ends.
    pub work_root: PathBuf,
    /// Where build images are unpacked, one directory per digest, shared by builds.
    pub stacks_dir: PathBuf,
    /// With `cache`: the directory that keeps the image's cache layers.
    pub cache_dir: PathBuf,
    /// The last build's output, whose layers are reused; `None`: the tag.
    pub previous_image: Option<ImageRef>,
    /// Keep and restore `cache = true` layers in `cache_dir`.
    pub cache: bool,
    /// With `cache`: also keep them in this cache image, pulled into the directory
    /// before restore and pushed from it after export (`cache = { image = "<ref>" }`).
    pub cache_image: Option<ImageRef>,
    /// `io.buildpacks.project.metadata` (`{"source": {...}}`), if known.
    pub project_metadata: Option<serde_json::Value>,
    /// The process type the image starts instead of the buildpacks' default; the build
    /// fails when no buildpack defined it.
    pub default_process: Option<String>,
    /// How the image's layers are compressed (`layer-compression`).
    pub layer_compression: LayerCompression,
}

/// What a successful build made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildResult {
    /// The app image manifest's digest.
    pub digest: Digest,
    /// The tag pinned to the digest.
    pub image: ImageRef,
    /// `(id, version)` of the buildpacks that built it, in order.
    pub buildpacks: Vec<(String, String)>,
    /// Process types, sorted.
    pub processes: Vec<String>,
    pub default_process: Option<String>,
    pub rebasable: bool,
    pub run_image_top_layer: Digest,
    /// Blobs (layers, config) whose bytes were sent to the registry or layout, and bytes.
    pub layers_uploaded: usize,
    pub bytes_uploaded: u64,
    /// Cache layers whose contents were restored before the build.
    pub cache_layers_restored: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("prepare the stack: {0}")]
    Stack(#[from] StackError),
    #[error("read buildpack: {0}")]
    Buildpack(#[from] DescriptorError),
    #[error("project descriptor: {0}")]
    Project(#[from] ProjectError),
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("restore or save the cache: {0}")]
    Cache(#[from] CacheError),
    #[error("export: {0}")]
    Export(#[from] ExportError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> LifecycleError {
    let what = what.into();
    move |source| LifecycleError::Io { what, source }
}

/// Builds the app image of `req` and pushes it under its tags, running the buildpacks under
/// bubblewrap in the build image, unpacked under the state dir.
pub async fn build_image(
    store: &ImageStore,
    req: &BuildRequest,
    logs: &dyn LogSink,
) -> Result<BuildResult, LifecycleError> {
    build_isolated(store, req, &Placement::Bubblewrap, logs).await
}

/// Builds the app image of `req` from inside its build image (a container: kpackd's build
/// entrypoint in a builder image): the same phases as [`build_image`], with the buildpack
/// programs run directly as the CNB user, the build image's facts read from `root`, and
/// the layers and platform directories at `/layers` and `/platform` (created when
/// missing). `req.build_image` only names the image for logs; `req.app_dir` is where the
/// programs find the app (`/workspace` in a builder image).
pub async fn build_image_in_container(
    store: &ImageStore,
    req: &BuildRequest,
    root: &BuildRoot,
    logs: &dyn LogSink,
) -> Result<BuildResult, LifecycleError> {
    build_isolated(store, req, &Placement::Container(root.clone()), logs).await
}

/// Where a build's programs run.
enum Placement {
    /// Under bubblewrap in the build image, unpacked under the state dir.
    Bubblewrap,
    /// In the running system, which is the build image.
    Container(BuildRoot),
}

/// One build, either way (see [`build_image`]): the phases in order. Over 100 lines as
/// the one place that reads as the lifecycle's sequence of phases.
async fn build_isolated(
    store: &ImageStore,
    req: &BuildRequest,
    placement: &Placement,
    logs: &dyn LogSink,
) -> Result<BuildResult, LifecycleError> {
    logs.phase_started(Phase::Prepare);
    let stack = match placement {
        Placement::Bubblewrap => {
            logs.line(
                Phase::Prepare,
                None,
                &format!("Preparing build image {}", req.build_image),
            );
            BuildRoot::from(stack::prepare(store, &req.build_image, &req.stacks_dir, logs).await?)
        }
        Placement::Container(root) => {
            logs.line(
                Phase::Prepare,
                None,
                &format!("Building inside build image {}", req.build_image),
            );
            root.clone()
        }
    };
    let run = stack::run_image(store, &req.run_image).await?;
    let mut target = run.target.clone();
    if target.distro_name.is_none() {
        target.distro_name = stack.target.distro_name.clone();
        target.distro_version = stack.target.distro_version.clone();
    }

    let work_root = &req.work_root;
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(work_root)
        .map_err(io_err(format!("create {}", work_root.display())))?;
    let work = tempfile::Builder::new()
        .prefix("build-")
        .tempdir_in(work_root)
        .map_err(io_err(format!(
            "create a work dir in {}",
            work_root.display()
        )))?;
    let (layers_dir, platform_dir) = match placement {
        Placement::Bubblewrap => (work.path().join("layers"), work.path().join("platform")),
        Placement::Container(_) => (PathBuf::from(LAYERS_DIR), PathBuf::from(PLATFORM_DIR)),
    };
    let scratch = work.path().join("scratch");
    for dir in [&layers_dir, &platform_dir.join("env"), &scratch] {
        fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
    }
    let settings = apply_project(req, work.path(), logs).await?;
    for (name, value) in &settings.env {
        let path = platform_dir.join("env").join(name);
        fs::write(&path, value).map_err(io_err(format!("write {}", path.display())))?;
    }
    let buildpacks = req
        .buildpack_dirs
        .iter()
        .chain(&settings.buildpack_dirs)
        .map(BuildpackDir::read)
        .collect::<Result<Vec<_>, _>>()?;
    let ctx = PhaseContext {
        isolation: match placement {
            Placement::Bubblewrap => Isolation::Bubblewrap,
            Placement::Container(_) => Isolation::Container,
        },
        sandbox_root: stack.rootfs.clone(),
        uid: stack.uid,
        gid: stack.gid,
        app_dir: req.app_dir.clone(),
        layers_dir: layers_dir.clone(),
        platform_dir,
        buildpacks,
        network: req.network,
        target,
        image_env: stack.env.clone(),
    };
    if matches!(placement, Placement::Container(_)) {
        // Started as root: the CNB user's programs write the app and layers directories.
        for dir in [&req.app_dir, &layers_dir] {
            crate::sandbox::hand_over_tree(dir, stack.uid, stack.gid)
                .map_err(io_err(format!("give {} to the CNB user", dir.display())))?;
        }
    }

    let previous_ref = req.previous_image.as_ref().unwrap_or(&req.tag);
    logs.phase_started(Phase::Analyze);
    let previous = cache::analyze(store, Some(previous_ref), logs).await;

    logs.phase_started(Phase::Detect);
    let outcome = detect(&ctx, &settings.order, logs).await?;
    let group = outcome.group.group.clone();

    // Without a cache, an empty one: launch layers' metadata still comes from the image.
    let cache_dir = match req.cache {
        true => CacheDir::at(&req.cache_dir),
        false => CacheDir::at(work.path().join("no-cache")),
    };
    let _cache_lock = cache_dir.lock().await?;
    logs.phase_started(Phase::Restore);
    let cache_image = req.cache_image.as_ref().filter(|_| req.cache);
    if let Some(image) = cache_image {
        cache::pull_image(&cache_dir, store, image, logs).await?;
    }
    let restored =
        cache::restore(&layers_dir, &scratch, &group, &previous, &cache_dir, logs).await?;
    if matches!(placement, Placement::Container(_)) {
        crate::sandbox::hand_over_tree(&layers_dir, stack.uid, stack.gid)
            .map_err(io_err("give the restored layers to the CNB user"))?;
    }

    logs.phase_started(Phase::Build);
    build(&ctx, &outcome, logs).await?;

    let created = match settings.env.get("SOURCE_DATE_EPOCH") {
        Some(v) => Some(v.trim().parse::<u64>().map_err(|_| LifecycleError::Io {
            what: "read SOURCE_DATE_EPOCH".into(),
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{v:?} is not a number of seconds"),
            ),
        })?),
        None => None,
    };
    logs.phase_started(Phase::Export);
    let exported = export(
        store,
        &ExportRequest {
            layers_dir: &layers_dir,
            app_dir: &req.app_dir,
            work_dir: &scratch,
            run_image: &run,
            run_image_name: image_name(&req.run_image),
            previous: &previous,
            uid: stack.uid,
            gid: stack.gid,
            tag: &req.tag,
            additional_tags: &req.additional_tags,
            project_metadata: req.project_metadata.as_ref(),
            created,
            default_process: req.default_process.as_deref(),
            layer_compression: req.layer_compression,
        },
        logs,
    )
    .await?;

    if req.cache {
        cache::save(
            &cache_dir,
            &layers_dir,
            &scratch,
            &group,
            &exported.written,
            (stack.uid, stack.gid),
            logs,
        )
        .await?;
        if let Some(image) = cache_image {
            // The app image is pushed: a cache that cannot be saved fails nothing.
            let platform = (
                run.image.config.os.as_str(),
                run.image.config.architecture.as_str(),
            );
            if let Err(e) = cache::push_image(&cache_dir, store, image, platform, logs).await {
                tracing::warn!(cache = %image, error = %e, "cache image not saved");
                logs.line(Phase::Export, None, &format!("Cache image not saved: {e}"));
            }
        }
    }
    tracing::info!(image = %exported.image, blobs_uploaded = exported.blobs_uploaded, bytes_uploaded = exported.bytes_uploaded, "build exported");
    Ok(BuildResult {
        digest: exported.digest,
        image: exported.image,
        buildpacks: exported.buildpacks,
        processes: exported.processes,
        default_process: exported.default_process,
        rebasable: exported.rebasable,
        run_image_top_layer: exported.run_image_top_layer,
        layers_uploaded: exported.blobs_uploaded,
        bytes_uploaded: exported.bytes_uploaded,
        cache_layers_restored: restored.contents.len(),
    })
}

/// Applies the app's project descriptor (see [`project`]) on a blocking thread.
async fn apply_project(
    req: &BuildRequest,
    work_dir: &std::path::Path,
    logs: &dyn LogSink,
) -> Result<ProjectSettings, LifecycleError> {
    let inputs = ProjectInputs {
        app_dir: req.app_dir.clone(),
        descriptor: req.project_descriptor.clone(),
        env: req.env.clone(),
        order: req.order.clone(),
        image_group: req.image_group.clone(),
        work_dir: work_dir.to_path_buf(),
    };
    let settings = tokio::task::spawn_blocking(move || project::apply(&inputs))
        .await
        .map_err(|e| LifecycleError::Io {
            what: "apply the project descriptor".into(),
            source: io::Error::other(e),
        })??;
    for note in &settings.notes {
        logs.line(Phase::Prepare, None, note);
    }
    Ok(settings)
}

/// A reference as users name it: a registry image without its pinned digest (the rebaser
/// compares run image names that way), a layout as given.
fn image_name(r: &ImageRef) -> String {
    match r {
        ImageRef::Registry(reg) => {
            let mut name = format!("{}/{}", reg.registry, reg.repository);
            if let Some(tag) = &reg.tag {
                name.push(':');
                name.push_str(tag);
            }
            name
        }
        ImageRef::Layout(_) => r.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_image_names_drop_the_digest() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("registry.example/stacks/run:1@{digest}")).unwrap();
        assert_eq!(image_name(&r), "registry.example/stacks/run:1");
        let r = ImageRef::parse(&format!("registry.example/stacks/run@{digest}")).unwrap();
        assert_eq!(image_name(&r), "registry.example/stacks/run");
    }
}
