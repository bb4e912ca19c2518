//! The sandbox of a phase: under bubblewrap, the build image's root with the app, the
//! layers, the platform dir and the buildpacks bound at their places, and a private
//! `$HOME`; in a container, the container itself (see [`Isolation`]).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::context::{
    Isolation, PhaseContext, APP_DIR, BUILDPACKS_DIR, LAYERS_DIR, PLATFORM_DIR, TMP_DIR,
};
use super::PhaseError;
use crate::sandbox::{prepare_mount_points, Bind, Direct, Sandbox, SandboxError};

/// Where a phase runs buildpack programs.
#[derive(Debug, Clone)]
pub(in crate::lifecycle) struct PhaseSandbox {
    runner: Runner,
    /// The programs' working directory: the app directory as they see it.
    cwd: PathBuf,
}

#[derive(Debug, Clone)]
enum Runner {
    Bubblewrap(Sandbox),
    Container(Direct),
}

impl PhaseSandbox {
    /// This sandbox with `run_dir` (a host directory) as one program run's scratch
    /// directory, and the path that run sees it at: `/tmp` under bubblewrap, its own
    /// path in a container.
    pub(in crate::lifecycle) fn with_run_dir(&self, run_dir: &Path) -> (PhaseSandbox, PathBuf) {
        match &self.runner {
            Runner::Bubblewrap(sandbox) => (
                PhaseSandbox {
                    runner: Runner::Bubblewrap(
                        sandbox.clone().bind(Bind::writable(run_dir, TMP_DIR)),
                    ),
                    cwd: self.cwd.clone(),
                },
                PathBuf::from(TMP_DIR),
            ),
            Runner::Container(_) => (self.clone(), run_dir.to_path_buf()),
        }
    }

    /// A command running `program` (a path as programs see it) in the app directory with
    /// exactly `env`.
    pub(in crate::lifecycle) fn command(
        &self,
        program: &Path,
        args: &[String],
        env: &BTreeMap<String, String>,
    ) -> Result<tokio::process::Command, SandboxError> {
        match &self.runner {
            Runner::Bubblewrap(sandbox) => sandbox.command(program, args, env, &self.cwd),
            Runner::Container(direct) => direct.command(program, args, env, &self.cwd),
        }
    }

    /// Whether the programs' process groups must be ended by the caller when they exit
    /// (in a container nothing else ends what a buildpack left running).
    pub(in crate::lifecycle) fn ends_process_groups(&self) -> bool {
        matches!(self.runner, Runner::Container(_))
    }
}

/// The sandbox of a phase. Under bubblewrap: the root, the app and layers (writable only
/// for build), platform, and the buildpacks over a skeleton of their mount points under
/// `scratch`. In a container: the programs run directly, as the CNB user.
pub(in crate::lifecycle) fn phase_sandbox(
    ctx: &PhaseContext,
    scratch: &Path,
    build: bool,
) -> Result<PhaseSandbox, PhaseError> {
    let io_err = |what: &str| {
        let what = what.to_owned();
        move |source| PhaseError::Io { what, source }
    };
    let runner = match ctx.isolation {
        Isolation::Bubblewrap => Runner::Bubblewrap(bubblewrap_sandbox(ctx, scratch, build)?),
        Isolation::Container => {
            fs::create_dir_all(&ctx.layers_dir).map_err(io_err("create the layers directory"))?;
            Runner::Container(Direct::new(ctx.uid, ctx.gid))
        }
    };
    Ok(PhaseSandbox {
        runner,
        cwd: ctx.app_dir_inside(),
    })
}

/// The bubblewrap sandbox of a phase (see [`phase_sandbox`]).
fn bubblewrap_sandbox(
    ctx: &PhaseContext,
    scratch: &Path,
    build: bool,
) -> Result<Sandbox, PhaseError> {
    let io_err = |what: &str| {
        let what = what.to_owned();
        move |source| PhaseError::Io { what, source }
    };
    let targets = [APP_DIR, LAYERS_DIR, PLATFORM_DIR, BUILDPACKS_DIR].map(Path::new);
    let all_exist = targets
        .iter()
        .chain([TMP_DIR, "/proc", "/dev"].map(Path::new).iter())
        .all(|t| {
            ctx.sandbox_root
                .join(t.strip_prefix("/").unwrap_or(t))
                .is_dir()
        });
    if !all_exist {
        // Concurrent builds may race to create them: a second try sees them.
        prepare_mount_points(&ctx.sandbox_root, &targets)
            .or_else(|_| prepare_mount_points(&ctx.sandbox_root, &targets))
            .map_err(io_err("create the sandbox mount points in the build image"))?;
    }
    fs::create_dir_all(&ctx.layers_dir).map_err(io_err("create the layers directory"))?;
    crate::sandbox::ensure_bwrap()?;
    let skeleton = scratch.join("buildpacks");
    let mut sandbox = Sandbox::new(&ctx.sandbox_root, ctx.uid, ctx.gid)
        .network(ctx.network)
        .bind(Bind {
            source: ctx.app_dir.clone(),
            target: APP_DIR.into(),
            writable: build,
        })
        .bind(Bind {
            source: ctx.layers_dir.clone(),
            target: LAYERS_DIR.into(),
            writable: build,
        })
        .bind(Bind::read_only(&ctx.platform_dir, PLATFORM_DIR));
    fs::create_dir_all(&skeleton).map_err(io_err("create the buildpacks mount points"))?;
    sandbox = sandbox.bind(Bind::read_only(&skeleton, BUILDPACKS_DIR));
    // The build image's root is read-only, but buildpacks write to $HOME (package manager
    // caches): a fresh, private home for each phase, when the image has that directory.
    let home = home_dir(ctx).filter(|home| {
        let home = Path::new(home);
        let taken = [
            APP_DIR,
            LAYERS_DIR,
            PLATFORM_DIR,
            "/cnb",
            TMP_DIR,
            "/proc",
            "/dev",
        ];
        home != Path::new("/") && !taken.iter().any(|t| home.starts_with(t))
    });
    if let Some(home) = home {
        let in_root = ctx.sandbox_root.join(home.trim_start_matches('/'));
        if fs::symlink_metadata(&in_root).is_ok_and(|m| m.is_dir()) {
            let scratch_home = scratch.join("home");
            fs::create_dir_all(&scratch_home).map_err(io_err("create the home directory"))?;
            sandbox = sandbox.bind(Bind::writable(&scratch_home, home));
        }
    }
    for bp in ctx
        .buildpacks
        .iter()
        .filter(|bp| !bp.descriptor.is_composite())
    {
        let inside = bp.sandbox_path();
        let rel = inside
            .strip_prefix(BUILDPACKS_DIR)
            .expect("a buildpack's sandbox path is under the buildpacks dir");
        fs::create_dir_all(skeleton.join(rel))
            .map_err(io_err("create the buildpacks mount points"))?;
        sandbox = sandbox.bind(Bind::read_only(&bp.path, inside));
    }
    Ok(sandbox)
}

/// The CNB user's home: the image's `HOME`, else its entry in the image's `/etc/passwd`.
pub(in crate::lifecycle) fn home_dir(ctx: &PhaseContext) -> Option<String> {
    if let Some(home) = ctx.image_env.get("HOME").filter(|h| h.starts_with('/')) {
        return Some(home.clone());
    }
    let passwd = ctx.sandbox_root.join("etc/passwd");
    if !fs::symlink_metadata(&passwd).is_ok_and(|m| m.is_file()) {
        return None;
    }
    let text = fs::read_to_string(passwd).ok()?;
    let uid = ctx.uid.to_string();
    text.lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() >= 7 && fields[2] == uid)
        .map(|fields| fields[5].to_owned())
        .filter(|home| home.starts_with('/'))
}
