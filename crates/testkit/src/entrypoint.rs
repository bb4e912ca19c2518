//! kpackd's static build entrypoint (`crates/entrypoint`), built once per test run with
//! `scripts/build-entrypoint` into its own target directory (so the build does not wait
//! on the cargo that runs the tests), unless `KPACKD_ENTRYPOINT` names one.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The entrypoint binary: `$KPACKD_ENTRYPOINT`, else built by `scripts/build-entrypoint`
/// (a no-op when it is up to date). Parallel tests, in this process or others, build it
/// once: a file lock beside the build serialises them.
pub fn entrypoint() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(build).clone()
}

fn build() -> PathBuf {
    if let Some(path) = std::env::var_os("KPACKD_ENTRYPOINT").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "KPACKD_ENTRYPOINT={} is not a file",
            path.display()
        );
        return path;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                workspace.join(dir)
            }
        })
        .unwrap_or_else(|| workspace.join("target"));
    std::fs::create_dir_all(&target).expect("create the target directory");
    let lock = File::create(target.join("entrypoint.lock")).expect("create the build lock");
    lock.lock().expect("lock the entrypoint build");
    let output = Command::new(workspace.join("scripts/build-entrypoint"))
        .env("CARGO_TARGET_DIR", &target)
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/build-entrypoint");
    assert!(
        output.status.success(),
        "scripts/build-entrypoint failed ({})",
        output.status
    );
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    assert!(path.is_file(), "scripts/build-entrypoint printed {path:?}");
    path
}
