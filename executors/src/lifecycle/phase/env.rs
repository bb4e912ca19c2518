//! The environment of buildpack programs: the build image's allow-listed variables, the
//! user's platform env, the operator's env and the `CNB_*` variables.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::context::{BuildpackDir, PhaseContext};
use super::sandbox::home_dir;
use super::PhaseError;
use crate::lifecycle::descriptor::ApiVersion;

pub use launcher::env::Env;

/// The build image's environment reduced to what the lifecycle passes on.
pub(in crate::lifecycle) fn base_env(ctx: &PhaseContext) -> Env {
    const ALLOWED: [&str; 14] = [
        "HOME",
        "HOSTNAME",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "NO_PROXY",
        "no_proxy",
        "CNB_STACK_ID",
        "PATH",
        "LD_LIBRARY_PATH",
        "LIBRARY_PATH",
        "CPATH",
        "PKG_CONFIG_PATH",
    ];
    let mut env: Env = ctx
        .image_env
        .iter()
        .filter(|(name, _)| ALLOWED.contains(&name.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(home) = home_dir(ctx) {
        env.entry("HOME".into()).or_insert(home);
    }
    // What a container runtime gives an image without PATH (the spec requires one).
    env.entry("PATH".into())
        .or_insert_with(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    env
}

/// The build image's `/cnb/build-config/env/`, copied out of the image (regular files only,
/// so that no symlink of the image leads to a host file).
pub(in crate::lifecycle) struct OperatorEnv {
    dir: Option<PathBuf>,
}

impl OperatorEnv {
    pub(in crate::lifecycle) fn load(
        root: &Path,
        scratch: &Path,
    ) -> Result<OperatorEnv, PhaseError> {
        let mut dir = root.to_path_buf();
        for part in ["cnb", "build-config", "env"] {
            dir.push(part);
            match fs::symlink_metadata(&dir) {
                Ok(meta) if meta.is_dir() => {}
                _ => return Ok(OperatorEnv { dir: None }),
            }
        }
        let copy = scratch.join("operator-env");
        let io_err = |source| PhaseError::Io {
            what: format!("copy the operator env from {}", dir.display()),
            source,
        };
        fs::create_dir_all(&copy).map_err(io_err)?;
        for entry in fs::read_dir(&dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            if entry.file_type().map_err(io_err)?.is_file() {
                fs::copy(entry.path(), copy.join(entry.file_name())).map_err(io_err)?;
            }
        }
        Ok(OperatorEnv { dir: Some(copy) })
    }
}

/// The environment of a buildpack program (section 7 of the notes): `base` (the allow-list
/// plus earlier build layers' changes), the user's `<platform>/env/` unless the buildpack
/// clears it, the operator's env, and the `CNB_*` variables common to detect and build.
pub(in crate::lifecycle) fn buildpack_env(
    ctx: &PhaseContext,
    bp: &BuildpackDir,
    base: &Env,
    operator_env: &OperatorEnv,
) -> io::Result<Env> {
    let mut env = base.clone();
    if !bp.descriptor.buildpack.clear_env {
        launcher::env::apply_user_env_dir(&mut env, &ctx.platform_dir.join("env"))?;
    }
    if let Some(dir) = &operator_env.dir {
        launcher::env::apply_operator_env_dir(&mut env, dir)?;
    }
    let api = bp.api();
    env.insert(
        "CNB_BUILDPACK_DIR".into(),
        ctx.buildpack_dir_inside(bp).to_string_lossy().into_owned(),
    );
    if api >= ApiVersion::new(0, 8) {
        env.insert(
            "CNB_PLATFORM_DIR".into(),
            ctx.platform_dir_inside().to_string_lossy().into_owned(),
        );
    }
    if api >= ApiVersion::new(0, 10) {
        let target = &ctx.target;
        env.insert("CNB_TARGET_OS".into(), target.os.clone());
        env.insert("CNB_TARGET_ARCH".into(), target.arch.clone());
        let optional = [
            ("CNB_TARGET_ARCH_VARIANT", &target.arch_variant),
            ("CNB_TARGET_DISTRO_NAME", &target.distro_name),
            ("CNB_TARGET_DISTRO_VERSION", &target.distro_version),
        ];
        for (name, value) in optional {
            if let Some(value) = value.as_ref().filter(|v| !v.is_empty()) {
                env.insert(name.into(), value.clone());
            }
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::descriptor::{BuildpackDescriptor, BuildpackInfo};
    use crate::lifecycle::phase::{Isolation, Target};

    fn bp(id: &str) -> BuildpackDir {
        BuildpackDir {
            path: PathBuf::from("/nonexistent").join(id),
            descriptor: BuildpackDescriptor {
                api: "0.10".into(),
                buildpack: BuildpackInfo {
                    id: id.into(),
                    version: "1".into(),
                    ..BuildpackInfo::default()
                },
                order: Vec::new(),
                ..BuildpackDescriptor::default()
            },
        }
    }

    #[test]
    fn base_env_keeps_the_allow_list_and_finds_home_in_passwd() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("etc")).expect("mkdir");
        fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\ncnb:x:1002:1000::/home/builder:/bin/sh\n",
        )
        .expect("write");
        let ctx = PhaseContext {
            isolation: Isolation::Bubblewrap,
            sandbox_root: dir.path().to_path_buf(),
            uid: 1002,
            gid: 1000,
            app_dir: PathBuf::new(),
            layers_dir: PathBuf::new(),
            platform_dir: PathBuf::new(),
            buildpacks: Vec::new(),
            network: false,
            target: Target::default(),
            image_env: Env::from([
                ("PATH".into(), "/usr/bin".into()),
                ("CNB_USER_ID".into(), "1002".into()),
                ("http_proxy".into(), "http://proxy".into()),
            ]),
        };
        let env = base_env(&ctx);
        assert_eq!(
            env,
            Env::from([
                ("HOME".into(), "/home/builder".into()),
                ("PATH".into(), "/usr/bin".into()),
                ("http_proxy".into(), "http://proxy".into()),
            ])
        );
    }

    #[test]
    fn buildpack_env_user_operator_and_cnb_variables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let platform = dir.path().join("platform");
        fs::create_dir_all(root.join("cnb/build-config/env")).expect("mkdir");
        fs::create_dir_all(platform.join("env")).expect("mkdir");
        fs::write(root.join("cnb/build-config/env/OP"), "operator").expect("write");
        fs::write(root.join("cnb/build-config/env/USER_VAR"), "operator").expect("write");
        std::os::unix::fs::symlink("/etc/hostname", root.join("cnb/build-config/env/HOST"))
            .expect("symlink");
        fs::write(platform.join("env/USER_VAR"), "user").expect("write");
        fs::write(platform.join("env/PATH"), "/user/bin").expect("write");
        let ctx = PhaseContext {
            isolation: Isolation::Bubblewrap,
            sandbox_root: root.clone(),
            uid: 1000,
            gid: 1000,
            app_dir: PathBuf::new(),
            layers_dir: PathBuf::new(),
            platform_dir: platform,
            buildpacks: Vec::new(),
            network: false,
            target: Target {
                os: "linux".into(),
                arch: "amd64".into(),
                ..Target::default()
            },
            image_env: Env::new(),
        };
        let scratch = dir.path().join("scratch");
        let operator = OperatorEnv::load(&root, &scratch).expect("operator env");
        let base = Env::from([("PATH".to_owned(), "/bin".to_owned())]);

        let mut bp = bp("x");
        let env = buildpack_env(&ctx, &bp, &base, &operator).expect("env");
        assert_eq!(env["PATH"], "/user/bin:/bin");
        assert_eq!(
            env["USER_VAR"], "user",
            "an operator file without suffix is a default"
        );
        assert_eq!(env["OP"], "operator");
        assert!(
            !env.contains_key("HOST"),
            "symlinks of the image are not followed"
        );
        assert_eq!(env["CNB_BUILDPACK_DIR"], "/cnb/buildpacks/x/1");
        assert_eq!(env["CNB_PLATFORM_DIR"], "/platform");
        assert_eq!(env["CNB_TARGET_OS"], "linux");
        assert_eq!(env["CNB_TARGET_ARCH"], "amd64");
        assert!(!env.contains_key("CNB_TARGET_DISTRO_NAME"));

        bp.descriptor.buildpack.clear_env = true;
        bp.descriptor.api = "0.7".into();
        let env = buildpack_env(&ctx, &bp, &base, &operator).expect("env");
        assert_eq!(env["PATH"], "/bin");
        assert_eq!(
            env["USER_VAR"], "operator",
            "clear-env drops the user's env only"
        );
        assert!(!env.contains_key("CNB_PLATFORM_DIR"));
        assert!(!env.contains_key("CNB_TARGET_OS"));
    }
}
