//! The stack: the build image, unpacked once per manifest digest under
//! `<stacks dir>/<digest hex>/rootfs` for the sandbox to use as its root, with what
//! the lifecycle needs from its config (CNB user and group, `PATH`, stack id, target);
//! and the run image, of which only the manifest and config are read.
//!
//! Unpacked roots are content addressed and shared by every build that uses the same build
//! image. A lock file per digest serialises the first unpack; the root is unpacked into a
//! temporary directory and renamed into place, so a root that exists is always complete.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Component, Path, PathBuf};

use super::phase::{Target, APP_DIR, BUILDPACKS_DIR, LAYERS_DIR, PLATFORM_DIR};
use super::{LogSink, Phase};
use crate::oci::{self, Image, ImageConfig, ImageStore, OciError, UnpackOptions};
use crate::sandbox;
use imageref::{Digest, ImageRef};

/// Labels of the run and build images the lifecycle reads.
pub use cnb::labels::{
    DISTRO_NAME as DISTRO_NAME_LABEL, DISTRO_VERSION as DISTRO_VERSION_LABEL,
    STACK_ID as STACK_ID_LABEL,
};

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("read {image}: {source}")]
    Image {
        image: String,
        #[source]
        source: OciError,
    },
    #[error("build image {image}: its config does not set {name} (the platform spec requires CNB_USER_ID, CNB_GROUP_ID and PATH)")]
    MissingEnv { image: String, name: &'static str },
    #[error("build image {image}: {name}={value:?} is not a numeric id")]
    BadId {
        image: String,
        name: &'static str,
        value: String,
    },
    #[error("run image {image}: it has no layers")]
    EmptyRunImage { image: String },
    #[error("run image {image}: its config does not name an os")]
    NoOs { image: String },
    #[error("prepare the stack root {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StackError + '_ {
    move |source| StackError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The target an image config declares: `os`, `architecture`, `variant` and the
/// `io.buildpacks.base.distro.*` labels.
pub fn target_of(config: &ImageConfig) -> Target {
    let labels = config.labels();
    let label = |k: &str| labels.get(k).filter(|v| !v.is_empty()).cloned();
    Target {
        os: config.os.clone(),
        arch: config.architecture.clone(),
        arch_variant: config.variant.clone().filter(|v| !v.is_empty()),
        distro_name: label(DISTRO_NAME_LABEL),
        distro_version: label(DISTRO_VERSION_LABEL),
    }
}

/// A build image, unpacked and ready to be a sandbox root.
#[derive(Debug, Clone)]
pub struct Stack {
    /// The build image, pinned to its manifest digest when it is in a registry.
    pub image: ImageRef,
    /// The image manifest's digest, which names the unpacked root.
    pub digest: Digest,
    /// The unpacked root filesystem, with the lifecycle's mount points made.
    pub rootfs: PathBuf,
    /// `CNB_USER_ID` and `CNB_GROUP_ID` of the image config.
    pub uid: u32,
    pub gid: u32,
    /// `PATH` of the image config.
    pub path: String,
    /// The whole `Env` of the image config.
    pub env: BTreeMap<String, String>,
    /// `io.buildpacks.stack.id` (legacy), or `CNB_STACK_ID` of the env.
    pub stack_id: Option<String>,
    /// The build image's target; the distro falls back to the root's `/etc/os-release`.
    pub target: Target,
}

/// What the lifecycle needs of the build image its programs run in: the root, the CNB
/// user, the config `Env` and the target. From a [`Stack`] (unpacked, for bubblewrap), or
/// from the running system when kpackd runs inside the build image ([`BuildRoot::running`]).
#[derive(Debug, Clone)]
pub struct BuildRoot {
    /// The root programs run in: an unpacked image, or `/`.
    pub rootfs: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// The build image's config `Env`.
    pub env: BTreeMap<String, String>,
    pub target: Target,
}

impl From<Stack> for BuildRoot {
    fn from(stack: Stack) -> BuildRoot {
        BuildRoot {
            rootfs: stack.rootfs,
            uid: stack.uid,
            gid: stack.gid,
            env: stack.env,
            target: stack.target,
        }
    }
}

impl BuildRoot {
    /// The running system as the build image, as a container runtime starts one: `env`
    /// is the process environment (the image's `Env` and what the runtime adds; it must
    /// set `CNB_USER_ID`, `CNB_GROUP_ID` and `PATH`), the root is `/`, and the target is
    /// `target`'s os and architecture with the distro of `/etc/os-release` unless
    /// `target` names one. `image` names the build image in errors.
    pub fn running(
        image: &str,
        env: BTreeMap<String, String>,
        mut target: Target,
    ) -> Result<BuildRoot, StackError> {
        let uid = id_from_env(&env, "CNB_USER_ID", image)?;
        let gid = id_from_env(&env, "CNB_GROUP_ID", image)?;
        if !env.contains_key("PATH") {
            return Err(StackError::MissingEnv {
                image: image.to_owned(),
                name: "PATH",
            });
        }
        let root = PathBuf::from(super::phase::context::CONTAINER_ROOT);
        if target.distro_name.is_none() {
            if let Some((name, version)) = os_release(&root) {
                target.distro_name = Some(name);
                target.distro_version = Some(version);
            }
        }
        Ok(BuildRoot {
            rootfs: root,
            uid,
            gid,
            env,
            target,
        })
    }
}

/// The run image the app image is built on: only its manifest and config are read.
#[derive(Debug, Clone)]
pub struct RunImage {
    pub image: Image,
    /// Pinned: `repo@sha256:…` for a registry; the layout reference otherwise.
    pub reference: ImageRef,
    /// The diffID of its last layer: the rebase anchor.
    pub top_layer: Digest,
    pub target: Target,
    pub stack_id: Option<String>,
}

/// Reads the run image's manifest and config.
pub async fn run_image(store: &ImageStore, r: &ImageRef) -> Result<RunImage, StackError> {
    let image = store.image(r).await.map_err(|source| StackError::Image {
        image: r.to_string(),
        source,
    })?;
    let top_layer = image
        .config
        .rootfs
        .diff_ids
        .last()
        .cloned()
        .ok_or_else(|| StackError::EmptyRunImage {
            image: r.to_string(),
        })?;
    if image.config.os.is_empty() {
        return Err(StackError::NoOs {
            image: r.to_string(),
        });
    }
    Ok(RunImage {
        reference: image.pinned(),
        target: target_of(&image.config),
        stack_id: image.config.labels().get(STACK_ID_LABEL).cloned(),
        top_layer,
        image,
    })
}

/// Pulls and unpacks the build image `r` into `<stacks_dir>/<digest hex>/rootfs`
/// unless a build before did, and reads what the lifecycle needs from its config.
pub async fn prepare(
    store: &ImageStore,
    r: &ImageRef,
    stacks_dir: &Path,
    logs: &dyn LogSink,
) -> Result<Stack, StackError> {
    let image = store.image(r).await.map_err(|source| StackError::Image {
        image: r.to_string(),
        source,
    })?;
    let digest = image.digest().clone();
    let env = config_env(&image.config);
    let name = r.to_string();
    let uid = id_from_env(&env, "CNB_USER_ID", &name)?;
    let gid = id_from_env(&env, "CNB_GROUP_ID", &name)?;
    let path = env
        .get("PATH")
        .cloned()
        .ok_or_else(|| StackError::MissingEnv {
            image: name.clone(),
            name: "PATH",
        })?;

    let stacks = stacks_dir;
    let dir = stacks.join(digest.hex());
    let rootfs = dir.join("rootfs");
    if dir.is_dir() {
        tracing::debug!(image = %r, rootfs = %rootfs.display(), "build image already unpacked");
    } else {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(stacks)
            .map_err(io_err(stacks))?;
        let lock_path = stacks.join(format!("{}.lock", digest.hex()));
        let _lock = lock_file(&lock_path).await?;
        if !dir.is_dir() {
            logs.line(
                Phase::Prepare,
                None,
                &format!("Unpacking build image {r} ({digest})"),
            );
            unpack(store, &image.pinned(), stacks, &dir).await?;
        }
    }

    let labels = image.config.labels();
    let mut target = target_of(&image.config);
    if target.distro_name.is_none() {
        if let Some((name, version)) = os_release(&rootfs) {
            target.distro_name = Some(name);
            target.distro_version = Some(version);
        }
    }
    let stack_id = labels
        .get(STACK_ID_LABEL)
        .or_else(|| env.get("CNB_STACK_ID"))
        .filter(|s| !s.is_empty())
        .cloned();
    Ok(Stack {
        image: image.pinned(),
        digest,
        rootfs,
        uid,
        gid,
        path,
        env,
        stack_id,
        target,
    })
}

/// Unpacks into a temporary directory beside `dir`, makes the mount points, then renames
/// it to `dir`: readers never see a half-unpacked root.
async fn unpack(
    store: &ImageStore,
    pinned: &ImageRef,
    stacks: &Path,
    dir: &Path,
) -> Result<(), StackError> {
    let temp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(stacks)
        .map_err(io_err(stacks))?;
    let root = temp.path().join("rootfs");
    // The root is only ever a read-only sandbox root: files owned by the user running
    // kpackd are what the sandbox's single-id user namespace maps best.
    let options = UnpackOptions { chown: false };
    oci::unpack_image(store, pinned, &root, &options)
        .await
        .map_err(|source| StackError::Image {
            image: pinned.to_string(),
            source,
        })?;
    let targets = [BUILDPACKS_DIR, LAYERS_DIR, PLATFORM_DIR, APP_DIR].map(Path::new);
    let prepare_root = root.clone();
    tokio::task::spawn_blocking(move || sandbox::prepare_mount_points(&prepare_root, &targets))
        .await
        .expect("making mount points does not panic")
        .map_err(io_err(&root))?;
    fs::rename(temp.path(), dir).map_err(io_err(dir))?;
    tracing::info!(image = %pinned, rootfs = %dir.join("rootfs").display(), "build image unpacked");
    Ok(())
}

/// Takes an exclusive lock on `path` (created when missing), waiting for it on a blocking
/// thread. Dropping the file releases it.
pub(crate) async fn lock_file(path: &Path) -> Result<File, StackError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        file.lock().map_err(io_err(&path))?;
        Ok(file)
    })
    .await
    .expect("locking a file does not panic")
}

/// The `Env` of an image config as a map.
pub fn config_env(config: &ImageConfig) -> BTreeMap<String, String> {
    config
        .config
        .as_ref()
        .and_then(|c| c.env.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn id_from_env(
    env: &BTreeMap<String, String>,
    name: &'static str,
    image: &str,
) -> Result<u32, StackError> {
    let value = env.get(name).ok_or_else(|| StackError::MissingEnv {
        image: image.to_string(),
        name,
    })?;
    value.trim().parse().map_err(|_| StackError::BadId {
        image: image.to_string(),
        name,
        value: value.clone(),
    })
}

/// `ID` and `VERSION_ID` of the root's `/etc/os-release` (or `/usr/lib/os-release`),
/// following symlinks inside the root only.
pub fn os_release(root: &Path) -> Option<(String, String)> {
    let text = ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|p| read_in_root(root, Path::new(p)))?;
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            fields.insert(k.trim(), v.trim().trim_matches(['"', '\'']).to_string());
        }
    }
    let name = fields.get("ID").cloned().unwrap_or_default();
    let version = fields.get("VERSION_ID").cloned().unwrap_or_default();
    (!name.is_empty() || !version.is_empty()).then_some((name, version))
}

/// Reads the file at `path` (relative to `root`), resolving symlinks as if `root` were `/`.
fn read_in_root(root: &Path, path: &Path) -> Option<String> {
    let mut current = path.to_path_buf();
    for _ in 0..16 {
        let mut resolved = PathBuf::new();
        for c in current.components() {
            match c {
                Component::Normal(n) => resolved.push(n),
                Component::ParentDir => {
                    resolved.pop();
                }
                _ => {}
            }
        }
        let on_disk = root.join(&resolved);
        let meta = fs::symlink_metadata(&on_disk).ok()?;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&on_disk).ok()?;
            current = if target.is_absolute() {
                target
            } else {
                resolved.parent().unwrap_or(Path::new("")).join(target)
            };
            continue;
        }
        return fs::read_to_string(on_disk).ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_follows_symlinks_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("etc")).unwrap();
        fs::create_dir_all(root.path().join("usr/lib")).unwrap();
        fs::write(
            root.path().join("usr/lib/os-release"),
            "NAME=\"Debian\"\nID=debian\nVERSION_ID=\"12\"\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("../usr/lib/os-release", root.path().join("etc/os-release"))
            .unwrap();
        assert_eq!(
            os_release(root.path()),
            Some(("debian".into(), "12".into()))
        );
        fs::remove_file(root.path().join("etc/os-release")).unwrap();
        std::os::unix::fs::symlink("/etc/../../../x", root.path().join("etc/os-release")).unwrap();
        // Falls back to /usr/lib/os-release; the absolute link never leaves the root.
        assert_eq!(os_release(root.path()).unwrap().0, "debian");
    }
}
