//! Minimal stack root filesystems assembled from the host's own programs: bash, the usual
//! coreutils, grep and sed (python3 when asked), each with the libraries `ldd` names and
//! the dynamic loader, and a `cnb` user 1000:1000. Fast enough to make one per test.
//!
//! Files are hard links to the host's own where possible (copies otherwise): treat the tree
//! as read-only, as the sandbox does — changing a file's mode would change the host's.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// The CNB user and group of the minimal stack.
pub const CNB_UID: u32 = 1000;
pub const CNB_GID: u32 = 1000;

/// Programs every minimal root has; `sh` is bash.
const BASE_PROGRAMS: &[&str] = &[
    "bash", "basename", "cat", "chmod", "cp", "cut", "date", "dirname", "echo", "env", "false",
    "grep", "head", "id", "ln", "ls", "mkdir", "mktemp", "mv", "printf", "pwd", "readlink", "rm",
    "sed", "sleep", "sort", "tail", "tee", "test", "touch", "tr", "true", "uname", "wc",
];

/// Directories searched before PATH, so that a version manager's shim on PATH (a script
/// that needs its own tree) does not stand in for the system's program.
const SYSTEM_DIRS: &[&str] = &["/usr/bin", "/bin", "/usr/sbin", "/sbin"];

/// Builds a root filesystem in `dir` (which may exist and be empty) with the base programs
/// plus `programs` (e.g. `["python3"]`, which also brings its standard library), their
/// libraries, `/etc/passwd` and `/etc/group` with `cnb` 1000:1000, `/etc/os-release`,
/// `/tmp`, `/home/cnb`, `/proc` and `/dev`. The host's directory layout is mirrored,
/// symlinks included (`/bin` → `usr/bin` on a merged-/usr system), so the loader is found
/// at the path programs name.
pub fn minimal_rootfs(dir: &Path, programs: &[&str]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let mut rootfs = Rootfs {
        dir: dir.to_path_buf(),
        installed: HashSet::new(),
    };
    let mut binaries = Vec::new();
    for name in BASE_PROGRAMS.iter().chain(programs) {
        let program = host_program(name)?;
        rootfs.install(&program)?;
        binaries.push(program.clone());
        if name.starts_with("python") {
            binaries.extend(rootfs.install_python_library(&program)?);
        }
    }
    for library in libraries(&binaries)? {
        rootfs.install(&library)?;
    }

    rootfs.install(Path::new("/bin"))?;
    let sh = dir.join("bin/sh");
    if fs::symlink_metadata(&sh).is_err() {
        symlink(host_program("bash")?, sh)?;
    }
    if Path::new("/etc/os-release").exists() {
        rootfs.install(Path::new("/etc/os-release"))?;
    }
    for sub in ["etc", "home/cnb", "proc", "dev", "tmp"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::write(
        dir.join("etc/passwd"),
        format!(
            "root:x:0:0:root:/root:/bin/bash\ncnb:x:{CNB_UID}:{CNB_GID}:cnb:/home/cnb:/bin/bash\n"
        ),
    )?;
    fs::write(
        dir.join("etc/group"),
        format!("root:x:0:\ncnb:x:{CNB_GID}:\n"),
    )?;
    Ok(())
}

struct Rootfs {
    dir: PathBuf,
    installed: HashSet<PathBuf>,
}

impl Rootfs {
    /// Puts the host's absolute `path` at the same path in the root: each directory on the
    /// way is created, each symlink on the way recreated and followed, and the file itself
    /// hard-linked (or copied).
    fn install(&mut self, path: &Path) -> io::Result<()> {
        self.install_within(path, 0)
    }

    fn install_within(&mut self, path: &Path, depth: usize) -> io::Result<()> {
        if depth > 40 {
            return Err(io::Error::other(format!(
                "too many symlinks resolving {}",
                path.display()
            )));
        }
        if !self.installed.insert(path.to_path_buf()) {
            return Ok(());
        }
        let components: Vec<Component> = path.components().collect();
        let mut host = PathBuf::from("/");
        for (i, component) in components.iter().enumerate() {
            match component {
                Component::RootDir | Component::CurDir => continue,
                // Everything in `host` so far is a real directory, so `..` is its parent.
                Component::ParentDir => {
                    host.pop();
                    continue;
                }
                Component::Normal(name) => host.push(name),
                Component::Prefix(_) => unreachable!("no path prefixes on unix"),
            }
            let inside = self
                .dir
                .join(host.strip_prefix("/").expect("host is absolute"));
            let meta = fs::symlink_metadata(&host)?;
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&host)?;
                if fs::symlink_metadata(&inside).is_err() {
                    symlink(&target, &inside)?;
                }
                let parent = host.parent().expect("a symlink has a parent");
                let rest: PathBuf = components[i + 1..].iter().collect();
                return self.install_within(&parent.join(target).join(rest), depth + 1);
            }
            if meta.is_dir() {
                if fs::symlink_metadata(&inside).is_err() {
                    fs::create_dir(&inside)?;
                }
            } else if fs::symlink_metadata(&inside).is_err() {
                link_or_copy(&host, &inside)?;
            }
        }
        Ok(())
    }

    /// Installs the standard library of the python at `program` (`/usr/lib/<python3.X>`)
    /// and returns its extension modules, whose libraries must come along too.
    fn install_python_library(&mut self, program: &Path) -> io::Result<Vec<PathBuf>> {
        let real = fs::canonicalize(program)?;
        let version = real
            .file_name()
            .expect("a program has a file name")
            .to_os_string();
        let library = Path::new("/usr/lib").join(version);
        let mut extensions = Vec::new();
        if library.is_dir() {
            self.install(&library)?;
            self.install_tree(&library, &mut extensions)?;
        }
        Ok(extensions)
    }

    /// Mirrors the host directory `dir` recursively; collects the shared objects in it.
    fn install_tree(&mut self, dir: &Path, shared_objects: &mut Vec<PathBuf>) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let inside = self.dir.join(path.strip_prefix("/").expect("absolute"));
            let file_type = entry.file_type()?;
            if file_type.is_dir() {
                fs::create_dir_all(&inside)?;
                self.install_tree(&path, shared_objects)?;
            } else if file_type.is_symlink() {
                if fs::symlink_metadata(&inside).is_err() {
                    symlink(fs::read_link(&path)?, &inside)?;
                }
            } else if fs::symlink_metadata(&inside).is_err() {
                if path.to_string_lossy().ends_with(".so") {
                    shared_objects.push(path.clone());
                }
                link_or_copy(&path, &inside)?;
            }
        }
        Ok(())
    }
}

/// The host's program `name`: from the system directories, else from PATH.
fn host_program(name: &str) -> io::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    SYSTEM_DIRS
        .iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "`{name}` is not installed on this host, so no root filesystem can have it"
                ),
            )
        })
}

/// Every library (and the dynamic loader) that `ldd` names for `binaries`.
fn libraries(binaries: &[PathBuf]) -> io::Result<Vec<PathBuf>> {
    crate::require("ldd", "libc-bin");
    let mut found = HashSet::new();
    for chunk in binaries.chunks(64) {
        // ldd exits non-zero when one of them is not dynamic; its output is still complete.
        let output = Command::new("ldd").args(chunk).output()?;
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(path) = path.filter(|p| p.starts_with('/') && !p.ends_with(':')) {
                found.insert(PathBuf::from(path));
            }
        }
    }
    let mut libraries: Vec<PathBuf> = found.into_iter().collect();
    libraries.sort();
    Ok(libraries)
}

fn link_or_copy(from: &Path, to: &Path) -> io::Result<()> {
    fs::hard_link(from, to).or_else(|_| fs::copy(from, to).map(|_| ()))
}
