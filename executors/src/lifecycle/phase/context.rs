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

/// Everything the detect and build phases need to know about one build.
#[derive(Debug, Clone)]
pub struct PhaseContext {
    /// The unpacked build image, bound read-only at `/`.
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
pub(in crate::lifecycle) fn scratch_dir(
    ctx: &PhaseContext,
    prefix: &str,
) -> io::Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
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
