//! Compiles the launcher (crates/launcher/src/main.rs, std only) with rustc alone into a static
//! executable, so that it runs in any run image, even one without a libc; the crate embeds
//! it as `launcher_binary()` and the exporter writes it as /cnb/lifecycle/launcher.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let sources = manifest_dir.join("../crates/launcher/src");
    let output =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("launcher");
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = env::var("TARGET").expect("cargo sets TARGET");
    println!("cargo:rerun-if-changed={}", sources.display());

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
        .arg(sources.join("main.rs"))
        .arg("-o")
        .arg(&output)
        .status()
        .expect("running rustc to compile the launcher");
    assert!(status.success(), "compiling the launcher failed: {status}");
}
