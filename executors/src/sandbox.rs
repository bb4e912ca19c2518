//! The sandbox: runs a buildpack's programs inside a stack's build image root filesystem with
//! bubblewrap (`bwrap`), as the stack's CNB user, with nothing of the host but the directories
//! a phase binds in, no network unless asked, and exactly the environment the caller gives.
//! Asked, the network is the sandbox's own, with outbound access only ([`network`]).
//!
//! How the pieces fit:
//! - The root is bound read-only at `/`. bwrap cannot create mount points in it, so every
//!   bind target, and `/proc`, `/dev` and `/tmp`, must already exist in the unpacked root:
//!   call [`prepare_mount_points`] on it once (for `/workspace`, `/layers`, `/platform`,
//!   `/cnb/buildpacks`, …) before running anything.
//! - The process runs as `uid:gid` inside a new user namespace in which that id is the only
//!   one mapped, to the user running kpackd. Whatever the process writes to a writable bind
//!   belongs to that user on the host, and it can only write where that user can: bind
//!   sources must belong to the user running kpackd. Files of other host users appear as
//!   owned by `nobody` inside.
//! - The command is a new process group and is killed when dropped; bwrap runs with
//!   `--die-with-parent` and the process is pid 1 of its own pid namespace, so killing bwrap
//!   ends the whole tree inside. `--die-with-parent` is tied to the spawning *thread*: spawn
//!   from an async task, not from a `spawn_blocking` thread that may exit first.
//! - With network, the user-mode network stack that serves the sandbox runs beside bwrap
//!   and ends with it, or with kpackd (see [`network`]).
//!
//! Inside a container of the build image there is nothing to confine to: [`Direct`] runs
//! programs as they are, as the CNB user, with the same environment rules.

mod network;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;

/// Mount points the sandbox itself puts over the root.
const SANDBOX_MOUNTS: [&str; 3] = ["/proc", "/dev", "/tmp"];

/// A process runner confined to an image root filesystem.
#[derive(Debug, Clone)]
pub struct Sandbox {
    root: PathBuf,
    uid: u32,
    gid: u32,
    network: bool,
    binds: Vec<Bind>,
    env: Vec<(String, String)>,
}

/// A host directory or file made visible inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// A path on the host.
    pub source: PathBuf,
    /// An absolute path inside the sandbox.
    pub target: PathBuf,
    pub writable: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("find `bwrap` on PATH: install the Debian package bubblewrap")]
    BwrapMissing,
    #[error("find `{program}` on PATH (a sandbox with network needs it): install the Debian package {package}")]
    NetworkHelperMissing {
        program: &'static str,
        package: &'static str,
    },
    #[error("prepare the sandbox's network: {0}")]
    Network(#[source] io::Error),
    #[error("use {} as a sandbox root: it is not a directory", root.display())]
    RootMissing { root: PathBuf },
    #[error(
        "mount {} in the sandbox: the mount point {} does not exist (create it with prepare_mount_points)",
        target.display(),
        mount_point.display()
    )]
    MissingMountPoint {
        target: PathBuf,
        mount_point: PathBuf,
    },
    #[error("bind {} into the sandbox: it does not exist", source_path.display())]
    BindSourceMissing { source_path: PathBuf },
    #[error("use {} in the sandbox: paths inside the sandbox must be absolute", path.display())]
    RelativePath { path: PathBuf },
    #[error("set the environment variable {name:?} in the sandbox: names must be non-empty without `=`, and neither names nor values may contain NUL")]
    InvalidEnv { name: String },
}

impl Bind {
    pub fn read_only(source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Bind {
        Bind {
            source: source.into(),
            target: target.into(),
            writable: false,
        }
    }

    pub fn writable(source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Bind {
        Bind {
            source: source.into(),
            target: target.into(),
            writable: true,
        }
    }
}

impl Sandbox {
    /// A sandbox over the unpacked image root `root` (bound read-only), running as
    /// `uid:gid` inside, without network.
    pub fn new(root: impl Into<PathBuf>, uid: u32, gid: u32) -> Sandbox {
        Sandbox {
            root: root.into(),
            uid,
            gid,
            network: false,
            binds: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Gives the sandbox outbound network (buildpacks that download dependencies need it):
    /// its own network namespace behind a user-mode network stack (`slirp4netns`), which
    /// reaches what the host reaches except the host's loopback. The root's
    /// `/etc/resolv.conf`, when it is a regular file, is then replaced by one naming that
    /// stack's DNS forwarder. Commands fail with [`SandboxError::NetworkHelperMissing`]
    /// when `slirp4netns` is not installed: never is the host's network used instead.
    pub fn network(mut self, on: bool) -> Sandbox {
        self.network = on;
        self
    }

    /// Adds a bind. Binds are mounted in the order added, so a bind inside another bind's
    /// target must come after it.
    pub fn bind(mut self, bind: Bind) -> Sandbox {
        self.binds.push(bind);
        self
    }

    /// Sets a variable in every command's environment; a command's own `env` wins.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Sandbox {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A command ready to spawn: `program` and `cwd` are paths inside the sandbox (a
    /// program without `/` is looked up in `env`'s PATH); the environment is exactly the
    /// sandbox's variables and then `env` — nothing leaks from the host. stdin is
    /// `/dev/null` unless the caller changes it. The command is killed when dropped. With
    /// network, spawn the command at most once.
    pub fn command(
        &self,
        program: &Path,
        args: &[String],
        env: &BTreeMap<String, String>,
        cwd: &Path,
    ) -> Result<tokio::process::Command, SandboxError> {
        let bwrap = ensure_bwrap()?;
        let network = if self.network {
            Some(network::Network::prepare()?)
        } else {
            None
        };
        if !self.root.is_dir() {
            return Err(SandboxError::RootMissing {
                root: self.root.clone(),
            });
        }
        if !cwd.is_absolute() {
            return Err(SandboxError::RelativePath {
                path: cwd.to_path_buf(),
            });
        }
        let mut bwrap_args: Vec<OsString> = Vec::new();
        let mut push = |args: &[&dyn AsRef<std::ffi::OsStr>]| {
            bwrap_args.extend(args.iter().map(|a| a.as_ref().to_os_string()));
        };
        push(&[&"--unshare-all", &"--unshare-user"]);
        for arg in network.iter().flat_map(network::Network::bwrap_args) {
            push(&[&arg]);
        }
        let (uid, gid) = (self.uid.to_string(), self.gid.to_string());
        push(&[&"--die-with-parent", &"--new-session"]);
        push(&[&"--uid", &uid, &"--gid", &gid]);
        push(&[&"--ro-bind", &self.root, &"/"]);
        for target in SANDBOX_MOUNTS {
            self.check_mount_point(Path::new(target), &[])?;
        }
        push(&[&"--proc", &"/proc", &"--dev", &"/dev", &"--tmpfs", &"/tmp"]);
        for (i, bind) in self.binds.iter().enumerate() {
            if !bind.target.is_absolute() {
                return Err(SandboxError::RelativePath {
                    path: bind.target.clone(),
                });
            }
            if fs::symlink_metadata(&bind.source).is_err() {
                return Err(SandboxError::BindSourceMissing {
                    source_path: bind.source.clone(),
                });
            }
            self.check_mount_point(&bind.target, &self.binds[..i])?;
            let kind = if bind.writable { "--bind" } else { "--ro-bind" };
            push(&[&kind, &bind.source, &bind.target]);
        }
        let resolv = Path::new("/etc/resolv.conf");
        let root_has_resolv =
            fs::symlink_metadata(self.root.join("etc/resolv.conf")).is_ok_and(|m| m.is_file());
        if let Some(network) = network.as_ref().filter(|_| root_has_resolv) {
            for arg in network.resolv_conf_args(resolv) {
                push(&[&arg]);
            }
        }
        push(&[&"--clearenv"]);
        let mut vars: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, value) in self.env.iter().map(|(n, v)| (n, v)).chain(env) {
            if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
                return Err(SandboxError::InvalidEnv { name: name.clone() });
            }
            vars.insert(name, value);
        }
        for (name, value) in &vars {
            push(&[&"--setenv", name, value]);
        }
        push(&[&"--chdir", &cwd, &"--", &program]);
        bwrap_args.extend(args.iter().map(OsString::from));

        tracing::debug!(root = %self.root.display(), program = %program.display(), ?args, "sandbox command");
        let mut command = tokio::process::Command::new(bwrap);
        command
            .args(bwrap_args)
            .env_clear()
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(network) = network {
            network.attach(&mut command)?;
        }
        Ok(command)
    }

    /// Fails unless `target` exists in what is mounted below it: the root, or the source of
    /// the last earlier bind whose target contains it.
    fn check_mount_point(&self, target: &Path, earlier: &[Bind]) -> Result<(), SandboxError> {
        let mount_point = earlier
            .iter()
            .rev()
            .find_map(|bind| {
                let rest = target.strip_prefix(&bind.target).ok()?;
                Some(bind.source.join(rest))
            })
            .unwrap_or_else(|| self.root.join(relative(target)));
        if fs::symlink_metadata(&mount_point).is_ok() {
            Ok(())
        } else {
            Err(SandboxError::MissingMountPoint {
                target: target.to_path_buf(),
                mount_point,
            })
        }
    }
}

/// A process runner for kpackd running inside the build image (a container): programs run
/// directly, with exactly the environment the caller gives, as `uid:gid` when kpackd runs
/// as root (else as kpackd's own user, which a container runtime made the CNB user). The
/// command is a new process group, killed when dropped; see [`Direct::command`].
#[derive(Debug, Clone)]
pub struct Direct {
    uid: u32,
    gid: u32,
}

impl Direct {
    pub fn new(uid: u32, gid: u32) -> Direct {
        Direct { uid, gid }
    }

    /// A command ready to spawn, like [`Sandbox::command`] but without confinement:
    /// `program` and `cwd` are real paths; the environment is exactly `env`; stdin is
    /// `/dev/null`; the program is the leader of a new process group. Only the leader is
    /// killed when the command is dropped: callers end the group (see
    /// [`kill_process_group`]).
    pub fn command(
        &self,
        program: &Path,
        args: &[String],
        env: &BTreeMap<String, String>,
        cwd: &Path,
    ) -> Result<tokio::process::Command, SandboxError> {
        if !cwd.is_absolute() {
            return Err(SandboxError::RelativePath {
                path: cwd.to_path_buf(),
            });
        }
        for (name, value) in env {
            if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
                return Err(SandboxError::InvalidEnv { name: name.clone() });
            }
        }
        tracing::debug!(program = %program.display(), ?args, "direct command");
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .env_clear()
            .envs(env)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        if rustix::process::geteuid().is_root() {
            // The standard library also drops the supplementary groups when root sets a uid.
            command.uid(self.uid).gid(self.gid);
        }
        Ok(command)
    }
}

/// Kills the process group `pgid` (a [`Direct`] command's), ignoring a group that is gone.
pub fn kill_process_group(pgid: u32) {
    let Some(pid) = i32::try_from(pgid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    if let Err(e) = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL) {
        if e != rustix::io::Errno::SRCH {
            tracing::warn!(pgid, error = %e, "kill a buildpack's process group");
        }
    }
}

/// Makes `path` belong to `uid:gid` when kpackd runs as root (in a container, before it
/// lets the CNB user's programs write there); does nothing otherwise.
pub fn hand_over(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// [`hand_over`] for `path` and everything below it (symlinks are not followed).
pub fn hand_over_tree(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let mut pending = vec![path.to_path_buf()];
    while let Some(current) = pending.pop() {
        std::os::unix::fs::lchown(&current, Some(uid), Some(gid))?;
        if fs::symlink_metadata(&current)?.is_dir() {
            for entry in fs::read_dir(&current)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(())
}

/// The path of `bwrap` on PATH, or an error naming the Debian package to install.
pub fn ensure_bwrap() -> Result<PathBuf, SandboxError> {
    find_on_path("bwrap").ok_or(SandboxError::BwrapMissing)
}

/// The path of `program` in a directory of PATH.
fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Creates, as directories in the unpacked image root, the mount points of binds with these
/// `targets` and of the sandbox's own `/proc`, `/dev` and `/tmp`, and an empty
/// `/etc/resolv.conf` when the image has none (a sandbox with network mounts its own over
/// it). Refuses to follow a symlink of the root on the way, since an image's absolute
/// symlink would lead onto the host.
pub fn prepare_mount_points(root: &Path, targets: &[&Path]) -> io::Result<()> {
    let sandbox_mounts = SANDBOX_MOUNTS.iter().map(Path::new);
    for target in sandbox_mounts.chain(targets.iter().copied()) {
        let mut path = root.to_path_buf();
        for component in relative(target).components() {
            let Component::Normal(name) = component else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("mount point {} is not a plain path", target.display()),
                ));
            };
            path.push(name);
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!(
                            "mount point {}: {} in the root is not a directory",
                            target.display(),
                            path.display()
                        ),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&path)?,
                Err(e) => return Err(e),
            }
        }
    }
    prepare_resolv_conf(root)
}

/// Creates an empty `/etc/resolv.conf` in the root when there is none. An `/etc` that is not
/// a directory, and a `resolv.conf` of any kind (a symlink included), are left alone; the
/// sandbox then keeps the image's.
fn prepare_resolv_conf(root: &Path) -> io::Result<()> {
    let etc = root.join("etc");
    if !fs::symlink_metadata(&etc).is_ok_and(|meta| meta.is_dir()) {
        return Ok(());
    }
    // create_new does not follow a symlink, and a concurrent preparation finds the file.
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(etc.join("resolv.conf"))
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// `target` without its leading `/`.
fn relative(target: &Path) -> &Path {
    target.strip_prefix("/").unwrap_or(target)
}
