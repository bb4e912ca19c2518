//! What a phase knows about one build ([`PhaseContext`]), the buildpacks it may run
//! ([`BuildpackDir`]), the target ([`Target`]) and where things are inside the sandbox.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::env::Env;
use crate::lifecycle::descriptor::{
    escape_id, read_buildpack_toml, ApiVersion, BuildpackDescriptor, DescriptorError, TargetSpec,
    MIN_BUILDPACK_API,
};

/// Where things are inside the sandbox.
pub const APP_DIR: &str = "/workspace";
pub const LAYERS_DIR: &str = "/layers";
pub const PLATFORM_DIR: &str = "/platform";
pub const BUILDPACKS_DIR: &str = "/cnb/buildpacks";
/// A run's scratch directory (holding its plan file).
pub const TMP_DIR: &str = "/tmp";

/// How buildpack programs are kept apart from kpackd and the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// kpackd runs on the host: each program runs under bubblewrap with the unpacked build
    /// image as its root and the app, layers, platform dir and buildpacks bound at their
    /// places (see [`crate::sandbox::Sandbox`]).
    Bubblewrap,
    /// kpackd runs inside the build image already (a container: the build image's root is
    /// `/`): programs run directly, as the CNB user, and see every directory at its real
    /// path. The container is the sandbox.
    Container,
}

/// The running system's own root: the build image's root when kpackd runs inside it
/// ([`Isolation::Container`]).
pub const CONTAINER_ROOT: &str = "/";

/// Everything the detect and build phases need to know about one build.
#[derive(Debug, Clone)]
pub struct PhaseContext {
    /// How the programs are isolated: chosen by who runs the build (kpackd on the host,
    /// or its build entrypoint inside the build image).
    pub isolation: Isolation,
    /// The build image's root: the unpacked build image, bound read-only at `/` under
    /// [`Isolation::Bubblewrap`]; [`CONTAINER_ROOT`] under [`Isolation::Container`].
    pub sandbox_root: PathBuf,
    /// The build image's CNB user and group (`CNB_USER_ID`, `CNB_GROUP_ID`).
    pub uid: u32,
    pub gid: u32,
    /// The app source, at `/workspace` (writable during build).
    pub app_dir: PathBuf,
    /// The layers directory, at `/layers`.
    pub layers_dir: PathBuf,
    /// The platform directory (`env/` holds the user's variables), at `/platform`.
    pub platform_dir: PathBuf,
    /// Every buildpack the order may name, composite ones included.
    pub buildpacks: Vec<BuildpackDir>,
    /// Give buildpack programs outbound network (their own namespace, without the host's
    /// loopback: see [`crate::sandbox::Sandbox::network`]).
    pub network: bool,
    /// The target the image is built for (`CNB_TARGET_*`, target matching).
    pub target: Target,
    /// The build image's config `Env`; only the lifecycle's allow-list (`HOME`,
    /// `HOSTNAME`, proxies, `CNB_STACK_ID`, the POSIX path variables) reaches buildpacks.
    pub image_env: Env,
}

impl PhaseContext {
    /// Where programs see `host` (one of this context's directories), which bubblewrap
    /// binds at `sandbox`.
    fn inside(&self, host: &Path, sandbox: &str) -> PathBuf {
        match self.isolation {
            Isolation::Bubblewrap => PathBuf::from(sandbox),
            Isolation::Container => host.to_path_buf(),
        }
    }

    /// Where programs see the app directory (their working directory).
    pub(in crate::lifecycle) fn app_dir_inside(&self) -> PathBuf {
        self.inside(&self.app_dir, APP_DIR)
    }

    /// Where programs see the layers directory.
    pub(in crate::lifecycle) fn layers_dir_inside(&self) -> PathBuf {
        self.inside(&self.layers_dir, LAYERS_DIR)
    }

    /// Where programs see the platform directory.
    pub(in crate::lifecycle) fn platform_dir_inside(&self) -> PathBuf {
        self.inside(&self.platform_dir, PLATFORM_DIR)
    }

    /// Makes `path` (a directory or file kpackd made for the programs to write) the CNB
    /// user's, in a container when kpackd runs as root. Under bubblewrap the user running
    /// kpackd is the only one mapped, and owns everything already.
    pub(in crate::lifecycle) fn hand_over(&self, path: &Path) -> io::Result<()> {
        match self.isolation {
            Isolation::Bubblewrap => Ok(()),
            Isolation::Container => crate::sandbox::hand_over(path, self.uid, self.gid),
        }
    }

    /// Where programs see the buildpack `bp` (`CNB_BUILDPACK_DIR`).
    pub(in crate::lifecycle) fn buildpack_dir_inside(&self, bp: &BuildpackDir) -> PathBuf {
        match self.isolation {
            Isolation::Bubblewrap => bp.sandbox_path(),
            Isolation::Container => bp.path.clone(),
        }
    }
}

/// A buildpack on the host: its directory and its `buildpack.toml`.
#[derive(Debug, Clone)]
pub struct BuildpackDir {
    pub path: PathBuf,
    pub descriptor: BuildpackDescriptor,
}

impl BuildpackDir {
    /// Reads `<path>/buildpack.toml`.
    pub fn read(path: impl Into<PathBuf>) -> Result<BuildpackDir, DescriptorError> {
        let path = path.into();
        let descriptor = read_buildpack_toml(&path)?;
        Ok(BuildpackDir { path, descriptor })
    }

    pub fn id(&self) -> &str {
        &self.descriptor.buildpack.id
    }

    pub fn version(&self) -> &str {
        &self.descriptor.buildpack.version
    }

    /// The buildpack's directory inside the sandbox.
    pub fn sandbox_path(&self) -> PathBuf {
        Path::new(BUILDPACKS_DIR)
            .join(escape_id(self.id()))
            .join(self.version())
    }

    /// Its buildpack API; the oldest supported when `buildpack.toml` names none.
    pub(in crate::lifecycle) fn api(&self) -> ApiVersion {
        self.descriptor.api_version().unwrap_or(MIN_BUILDPACK_API)
    }
}

/// The target platform of a build; `None`/empty fields are unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    pub os: String,
    pub arch: String,
    pub arch_variant: Option<String>,
    pub distro_name: Option<String>,
    pub distro_version: Option<String>,
}

impl Target {
    /// Whether a buildpack with these (effective) targets runs on this target. An empty
    /// field on either side matches anything; an empty list matches everything.
    pub fn satisfies(&self, specs: &[TargetSpec]) -> bool {
        fn eq(a: &str, b: &str) -> bool {
            a.is_empty() || b.is_empty() || a == b
        }
        specs.is_empty()
            || specs.iter().any(|spec| {
                eq(&spec.os, &self.os)
                    && eq(&spec.arch, &self.arch)
                    && eq(&spec.variant, self.arch_variant.as_deref().unwrap_or(""))
                    && (spec.distros.is_empty()
                        || self.distro_name.is_none()
                        || spec.distros.iter().any(|d| {
                            eq(&d.name, self.distro_name.as_deref().unwrap_or(""))
                                && eq(&d.version, self.distro_version.as_deref().unwrap_or(""))
                        }))
            })
    }
}

/// A scratch directory for a phase, next to the layers dir (so in kpackd's work dir, on
/// its file system), else in the system's temporary directory. Buildpacks' `/tmp` is in it.
/// In a container the layers dir is `/layers`: the system's temporary directory then, made
/// the CNB user's when kpackd runs as root (programs write their plan files in it).
pub(in crate::lifecycle) fn scratch_dir(
    ctx: &PhaseContext,
    prefix: &str,
) -> io::Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    if ctx.isolation == Isolation::Container {
        let dir = builder.tempdir()?;
        ctx.hand_over(dir.path())?;
        return Ok(dir);
    }
    match ctx.layers_dir.parent().filter(|p| p.is_dir()) {
        Some(parent) => builder.tempdir_in(parent),
        None => builder.tempdir(),
    }
}

/// Fails when `path` is a symlink. Files a buildpack wrote are read by kpackd on the host,
/// where a symlink would lead out of the sandbox (to files the buildpack must not see).
pub(in crate::lifecycle) fn refuse_symlink(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is a symlink, which kpackd does not follow out of the sandbox",
                path.display()
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_matching() {
        use crate::lifecycle::descriptor::DistroSpec;
        let target = Target {
            os: "linux".into(),
            arch: "arm64".into(),
            arch_variant: Some("v8".into()),
            distro_name: Some("ubuntu".into()),
            distro_version: Some("22.04".into()),
        };
        let spec = |os: &str, arch: &str, variant: &str, distros: &[(&str, &str)]| TargetSpec {
            os: os.into(),
            arch: arch.into(),
            variant: variant.into(),
            distros: distros
                .iter()
                .map(|(name, version)| DistroSpec {
                    name: (*name).into(),
                    version: (*version).into(),
                })
                .collect(),
        };
        assert!(target.satisfies(&[]));
        assert!(target.satisfies(&[spec("linux", "", "", &[])]));
        assert!(target.satisfies(&[
            spec("linux", "amd64", "", &[]),
            spec("linux", "arm64", "v8", &[])
        ]));
        assert!(!target.satisfies(&[spec("linux", "amd64", "", &[])]));
        assert!(!target.satisfies(&[spec("linux", "arm64", "v7", &[])]));
        assert!(target.satisfies(&[spec("", "", "", &[("debian", "12"), ("ubuntu", "")])]));
        assert!(!target.satisfies(&[spec("", "", "", &[("ubuntu", "18.04")])]));
        assert!(!target.satisfies(&[spec("windows", "", "", &[])]));
    }
}
