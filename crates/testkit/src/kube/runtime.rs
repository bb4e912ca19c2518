//! The container runtime of the node agent, from real tools: `skopeo` pulls an image into
//! an OCI layout, `umoci` unpacks it into a root filesystem, `bwrap` runs the container's
//! process in it. This file builds their command lines and reads what they leave behind;
//! the agent runs them.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command};

use base64::Engine;
use serde_json::Value;

/// The tag the pulled image gets in its layout.
const TAG: &str = "pulled";

/// `skopeo copy docker://<image> oci:<layout>:pulled`, with the pull secret's
/// `.dockerconfigjson` as the auth file when there is one.
pub(crate) fn pull_command(image: &str, layout: &Path, authfile: Option<&Path>) -> Command {
    let mut command = Command::new("skopeo");
    command
        .args(["copy", "--src-tls-verify=false", "--quiet"])
        .arg(format!("docker://{image}"))
        .arg(format!("oci:{}:{TAG}", layout.display()));
    if let Some(authfile) = authfile {
        command.arg("--src-authfile").arg(authfile);
    }
    command
}

/// `umoci unpack --rootless --image <layout>:pulled <bundle>`: every file of the root
/// belongs to the user running the tests, who is the container's user inside the sandbox.
pub(crate) fn unpack_command(layout: &Path, bundle: &Path) -> Command {
    let mut command = Command::new("umoci");
    command
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:{TAG}", layout.display()))
        .arg(bundle);
    command
}

/// What the pulled image says about running it.
#[derive(Debug, Clone, Default)]
pub(crate) struct ImageConfig {
    /// `sha256:…` of the manifest pulled.
    pub(crate) manifest_digest: String,
    pub(crate) entrypoint: Vec<String>,
    pub(crate) cmd: Vec<String>,
    /// `NAME=value` entries.
    pub(crate) env: Vec<String>,
    pub(crate) working_dir: String,
}

impl ImageConfig {
    /// Reads the manifest and config of the image `skopeo` wrote to `layout`.
    pub(crate) fn read(layout: &Path) -> io::Result<ImageConfig> {
        let index = read_json(&layout.join("index.json"))?;
        let descriptor = index["manifests"]
            .as_array()
            .and_then(|ms| {
                ms.iter()
                    .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == TAG)
            })
            .ok_or_else(|| io::Error::other("the pulled layout has no image tagged `pulled`"))?;
        let manifest_digest = descriptor["digest"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let manifest = read_json(&blob(layout, &manifest_digest)?)?;
        let config = read_json(&blob(
            layout,
            manifest["config"]["digest"].as_str().unwrap_or_default(),
        )?)?;
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let config = &config["config"];
        Ok(ImageConfig {
            manifest_digest,
            entrypoint: strings(&config["Entrypoint"]),
            cmd: strings(&config["Cmd"]),
            env: strings(&config["Env"]),
            working_dir: config["WorkingDir"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        })
    }
}

/// The uid and gid umoci resolved the image's `User` to (through the image's own
/// `/etc/passwd` and `/etc/group`), from the bundle's runtime config.
pub(crate) fn image_user(bundle: &Path) -> io::Result<(u32, u32)> {
    let config = read_json(&bundle.join("config.json"))?;
    let user = &config["process"]["user"];
    let id = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
    Ok((id(&user["uid"]), id(&user["gid"])))
}

fn read_json(path: &Path) -> io::Result<Value> {
    serde_json::from_slice(&fs::read(path)?).map_err(io::Error::other)
}

/// The path of blob `digest` in `layout`; the digest comes from the image, so it is
/// checked to be a digest before it becomes a path.
fn blob(layout: &Path, digest: &str) -> io::Result<PathBuf> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| io::Error::other(format!("`{digest}` is not a sha256 digest")))?;
    Ok(layout.join("blobs/sha256").join(hex))
}

/// Writes the `.dockerconfigjson` of a pull secret where skopeo reads it as an auth file.
pub(crate) fn write_authfile(secret: &Value, path: &Path) -> io::Result<bool> {
    let Some(encoded) = secret["data"][".dockerconfigjson"].as_str() else {
        return Ok(false);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(io::Error::other)?;
    fs::write(path, decoded)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(true)
}

/// Writes a Secret volume's files into `dir`: every key, or only the `items` asked for
/// (at their `path`, with their `mode`), with `defaultMode` (0644) otherwise.
pub(crate) fn write_secret_volume(
    dir: &Path,
    volume: &Value,
    secret: &Value,
) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let default_mode = volume["defaultMode"].as_u64().unwrap_or(0o644) as u32;
    let data = secret["data"].as_object().cloned().unwrap_or_default();
    let files: Vec<(String, String, u32)> = match volume["items"].as_array() {
        Some(items) => items
            .iter()
            .map(|item| {
                (
                    item["key"].as_str().unwrap_or_default().to_string(),
                    item["path"].as_str().unwrap_or_default().to_string(),
                    item["mode"].as_u64().map_or(default_mode, |m| m as u32),
                )
            })
            .collect(),
        None => data
            .keys()
            .map(|k| (k.clone(), k.clone(), default_mode))
            .collect(),
    };
    for (key, path, mode) in files {
        let value = data.get(&key).and_then(Value::as_str).ok_or_else(|| {
            format!(
                "references non-existent secret key: {key} (secret {})",
                secret["metadata"]["name"]
            )
        })?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|e| format!("secret key {key} is not base64: {e}"))?;
        let relative = relative(&path).ok_or_else(|| format!("invalid item path {path:?}"))?;
        let file = dir.join(relative);
        if let Some(parent) = file.parent() {
            fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        fs::write(&file, bytes).map_err(|e| e.to_string())?;
        fs::set_permissions(&file, fs::Permissions::from_mode(mode & 0o777))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `path` without its leading `/`, if it has no `..` in it.
fn relative(path: &str) -> Option<PathBuf> {
    let relative: PathBuf = Path::new(path)
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
        .collect();
    let clean = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    (clean && !relative.as_os_str().is_empty()).then_some(relative)
}

/// Creates the mount point `target` (a directory, or a file when `file`) inside `rootfs`,
/// refusing a path through a symlink of the image (it could lead out of the root).
/// Targets under what the sandbox mounts itself (`/dev`, `/proc`, `/tmp`) are left to
/// bwrap.
pub(crate) fn mount_point(rootfs: &Path, target: &str, file: bool) -> Result<(), String> {
    let relative = relative(target).ok_or_else(|| format!("invalid mount path {target:?}"))?;
    if ["dev", "proc", "tmp"]
        .iter()
        .any(|top| relative.starts_with(top))
    {
        return Ok(());
    }
    let mut path = rootfs.to_path_buf();
    let components: Vec<_> = relative.components().collect();
    for (i, component) in components.iter().enumerate() {
        path.push(component);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!(
                    "mount path {target} goes through a symlink of the image"
                ))
            }
            Ok(_) => {}
            Err(_) if file && i + 1 == components.len() => {
                fs::write(&path, b"").map_err(|e| e.to_string())?
            }
            Err(_) => fs::create_dir(&path).map_err(|e| e.to_string())?,
        }
    }
    Ok(())
}

/// A host path made visible in the sandbox.
#[derive(Debug, Clone)]
pub(crate) struct Mount {
    pub(crate) source: PathBuf,
    pub(crate) target: String,
    pub(crate) writable: bool,
}

/// How to run one container.
#[derive(Debug, Clone)]
pub(crate) struct Container {
    pub(crate) rootfs: PathBuf,
    pub(crate) read_only_root: bool,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) hostname: String,
    pub(crate) working_dir: String,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) mounts: Vec<Mount>,
    pub(crate) argv: Vec<String>,
}

impl Container {
    /// The bwrap command line: the root filesystem at `/`, its own `/proc`, `/dev` and
    /// `/tmp`, every namespace new but the network's, the container's user, exactly the
    /// container's environment, and killed with the agent thread that spawned it.
    pub(crate) fn command(&self) -> Command {
        let mut command = Command::new("bwrap");
        command
            .arg(if self.read_only_root {
                "--ro-bind"
            } else {
                "--bind"
            })
            .arg(&self.rootfs)
            .arg("/")
            .args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"])
            .args(["--unshare-all", "--share-net", "--unshare-user"])
            .args([
                "--uid",
                &self.uid.to_string(),
                "--gid",
                &self.gid.to_string(),
            ])
            .args(["--hostname", &self.hostname])
            .args(["--die-with-parent", "--new-session"]);
        for mount in &self.mounts {
            command
                .arg(if mount.writable {
                    "--bind"
                } else {
                    "--ro-bind"
                })
                .arg(&mount.source)
                .arg(&mount.target);
        }
        command
            .args(["--chdir", &self.working_dir])
            .arg("--clearenv");
        for (name, value) in &self.env {
            command.args(["--setenv", name, value]);
        }
        command.arg("--").args(&self.argv);
        command
    }
}

/// Kills `child` and everything it started, also what no longer dies with it: bwrap is
/// stopped first, so that it starts nothing more, then its children are killed (the
/// sandbox's init, whose end ends its pid namespace, even when bwrap had not yet told it
/// to die with its parent), then bwrap itself.
pub(crate) fn kill_tree(child: &mut Child) {
    use rustix::process::{kill_process, Pid, Signal};
    let Some(pid) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) else {
        let _ = child.kill();
        let _ = child.wait();
        return;
    };
    let _ = kill_process(pid, Signal::STOP);
    for grandchild in children(child.id()) {
        if let Some(p) = i32::try_from(grandchild).ok().and_then(Pid::from_raw) {
            let _ = kill_process(p, Signal::KILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The processes whose parent is `parent`, from `/proc/*/stat`.
fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid …`: comm may hold spaces and parentheses.
            let after_comm = &stat[stat.rfind(')')? + 1..];
            let ppid: u32 = after_comm.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_stay_inside() {
        assert_eq!(relative("/etc/secret"), Some(PathBuf::from("etc/secret")));
        assert_eq!(relative("a/b"), Some(PathBuf::from("a/b")));
        assert_eq!(relative("/a/../../etc"), None);
        assert_eq!(relative("/"), None);
    }
}
