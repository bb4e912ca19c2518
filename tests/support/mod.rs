//! What the end-to-end tests of the `kpackd` binary share: a small real stack (a root
//! filesystem of the host's own programs, written as OCI images), shell buildpacks,
//! and a way to run the binary.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use executors::oci::layer::LayerBuilder;
use executors::oci::{ContainerConfig, ImageConfig, ImageStore, StoreSettings};
use imageref::ImageRef;

pub const STACK_ID: &str = "io.kpackd.test";

/// Writes a build image and a run image for the test stack into the OCI layout `layout`
/// (refs `build` and `run`), from one minimal root filesystem made in `work`.
pub fn write_stack(work: &Path, layout: &Path) {
    testkit::require("bwrap", "bubblewrap");
    let rootfs = work.join("rootfs");
    testkit::rootfs::minimal_rootfs(&rootfs, &[]).expect("making a minimal root filesystem");
    let layers = work.join("layers");
    std::fs::create_dir_all(&layers).expect("making the layers dir");
    let mut builder = LayerBuilder::new(0, 0);
    for entry in std::fs::read_dir(&rootfs).expect("reading the rootfs") {
        let entry = entry.expect("reading the rootfs");
        builder
            .add(Path::new(&entry.file_name()), &entry.path())
            .expect("adding to the base layer");
    }
    let base = builder.write(&layers).expect("writing the base layer");
    runtime().block_on(async {
        let store = ImageStore::new(StoreSettings::default());
        for (name, extra) in [("build", true), ("run", false)] {
            let reference = ImageRef::parse(&format!("oci:{}:{name}", layout.display()))
                .expect("a layout reference");
            store
                .push_image(&reference, stack_config(extra), std::slice::from_ref(&base))
                .await
                .expect("writing a stack image");
        }
    });
}

/// Adds one layer (a file `/etc/patch-level` with `level`) on top of the run image:
/// what a CVE fix to the run image looks like.
pub fn patch_run_image(work: &Path, layout: &Path, level: &str) {
    let dir = work.join(format!("patch-{level}"));
    std::fs::create_dir_all(dir.join("etc")).expect("making the patch dir");
    std::fs::write(dir.join("etc/patch-level"), level).expect("writing the patch");
    let mut builder = LayerBuilder::new(0, 0);
    builder
        .add(Path::new("etc/patch-level"), &dir.join("etc/patch-level"))
        .expect("adding the patch");
    let patch = builder.write(&dir).expect("writing the patch layer");
    runtime().block_on(async {
        let store = ImageStore::new(StoreSettings::default());
        let reference =
            ImageRef::parse(&format!("oci:{}:run", layout.display())).expect("a layout ref");
        let image = store
            .image(&reference)
            .await
            .expect("reading the run image");
        let mut layers = Vec::new();
        for (descriptor, diff_id) in image
            .manifest
            .layers
            .iter()
            .zip(image.config.rootfs.diff_ids.iter())
        {
            let path = layout
                .join("blobs")
                .join(descriptor.digest.algorithm())
                .join(descriptor.digest.hex());
            layers.push(executors::oci::layer::WrittenLayer {
                diff_id: diff_id.clone(),
                digest: descriptor.digest.clone(),
                size: descriptor.size,
                path,
            });
        }
        layers.push(patch);
        store
            .push_image(&reference, image.config.clone(), &layers)
            .await
            .expect("writing the patched run image");
    });
}

fn stack_config(build: bool) -> ImageConfig {
    let mut labels = BTreeMap::new();
    labels.insert("io.buildpacks.stack.id".to_string(), STACK_ID.to_string());
    labels.insert("io.buildpacks.base.id".to_string(), STACK_ID.to_string());
    let mut env = vec!["PATH=/usr/local/bin:/usr/bin:/bin".to_string()];
    if build {
        env.push("CNB_USER_ID=1000".into());
        env.push("CNB_GROUP_ID=1000".into());
        env.push(format!("CNB_STACK_ID={STACK_ID}"));
    }
    let config: ImageConfig = serde_json::from_value(serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
    }))
    .expect("a valid image config");
    ImageConfig {
        config: Some(ContainerConfig {
            user: Some("1000:1000".into()),
            env: Some(env),
            labels: Some(labels),
            ..serde_json::from_value(serde_json::json!({})).expect("an empty container config")
        }),
        ..config
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Writes a component buildpack `id` into `dir/<name>` with the given `detect` and
/// `build` scripts (POSIX sh bodies).
pub fn write_buildpack(dir: &Path, name: &str, id: &str, detect: &str, build: &str) -> PathBuf {
    let bp = dir.join(name);
    std::fs::create_dir_all(bp.join("bin")).expect("making the buildpack dir");
    std::fs::write(
        bp.join("buildpack.toml"),
        format!("api = \"0.10\"\n\n[buildpack]\nid = \"{id}\"\nversion = \"0.1.0\"\n\n[[targets]]\nos = \"linux\"\n"),
    )
    .expect("writing buildpack.toml");
    for (script, body) in [("detect", detect), ("build", build)] {
        let path = bp.join("bin").join(script);
        std::fs::write(&path, format!("#!/bin/sh\nset -eu\n{body}\n")).expect("writing a script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("making a script executable");
    }
    bp
}

/// Runs the kpackd binary in `dir` with its own state, returning its output.
pub fn kpackd(dir: &Path, args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_kpackd"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("KPACKD_STATE_DIR")
        .output()
        .expect("running kpackd");
    eprintln!(
        "$ kpackd {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}
