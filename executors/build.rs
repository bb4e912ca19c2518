//! Compiles the launcher (crates/launcher/src/main.rs, std only) with rustc alone into a static
//! executable, so that it runs in any run image, even one without a libc; the crate embeds
//! it as `launcher_binary()` and the exporter writes it as /cnb/lifecycle/launcher.
//!
//! Also sets `KPACKD_GIT_COMMIT`, the commit the sources were built from (`unknown` when
//! they are not a git checkout), which app images name as the launcher's source.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the launcher's sources are said to be, in the binary, wherever they were built.
const LAUNCHER_SOURCES: &str = "/kpackd/crates/launcher/src";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let sources = manifest_dir.join("../crates/launcher/src");
    let output =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("launcher");
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = env::var("TARGET").expect("cargo sets TARGET");
    println!("cargo:rerun-if-changed={}", sources.display());
    let commit = git_commit(&manifest_dir).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=KPACKD_GIT_COMMIT={commit}");

    let status = Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "--crate-type",
            "bin",
            "--crate-name",
            "launcher",
        ])
        .args(["--target", &target])
        .args([
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
        ])
        .args(["-C", "target-feature=+crt-static"])
        // Panic messages name source files: without this, the checkout's path would be in
        // the binary, and app images built by the same kpackd from two checkouts would
        // differ.
        .arg(format!(
            "--remap-path-prefix={}={LAUNCHER_SOURCES}",
            sources.display()
        ))
        .arg(sources.join("main.rs"))
        .arg("-o")
        .arg(&output)
        .status()
        .expect("running rustc to compile the launcher");
    assert!(status.success(), "compiling the launcher failed: {status}");
}

/// `git rev-parse HEAD` in `dir`, if it is a git checkout and git runs; asks cargo to run
/// this script again when HEAD moves (a commit, a checkout).
fn git_commit(dir: &Path) -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()?;
        out.status.success().then_some(())?;
        Some(String::from_utf8(out.stdout).ok()?.trim().to_string())
    };
    let commit = git(&["rev-parse", "HEAD"])?;
    if commit.len() != 40 || !commit.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(&["rev-parse", "--symbolic-full-name", "HEAD"]) {
        if branch.starts_with("refs/") {
            watched.push(branch);
        }
    }
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            let path = dir.join(path);
            // A path that does not exist would make cargo run this script every build.
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    Some(commit)
}
