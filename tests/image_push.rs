//! `kpackd image push`: kpackd's own image, read back with skopeo, unpacked with umoci
//! and run with bwrap with nothing but the image's root; the same inputs make the same
//! digest; a dynamic binary is refused.
//!
//! The binary is the static kpackd when `KPACKD_STATIC` names one (scripts/build-static
//! prints its path), else the static build entrypoint, which tests the image's assembly
//! as well: any static executable does.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testkit::registry::Registry;

fn kpackd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kpackd"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .output()
        .expect("kpackd runs")
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A static executable, and the arguments that make it print something and exit 0.
fn static_binary() -> (PathBuf, &'static [&'static str]) {
    match std::env::var_os("KPACKD_STATIC").filter(|p| !p.is_empty()) {
        Some(path) => (PathBuf::from(path), &["--version"]),
        None => (testkit::entrypoint(), &["--help"]),
    }
}

fn skopeo_json(args: &[&str]) -> serde_json::Value {
    testkit::require("skopeo", "skopeo");
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo runs");
    serde_json::from_slice(ok(&out, "skopeo").as_bytes()).expect("skopeo prints JSON")
}

/// The digest of a registry reference as kpackd prints it, `…@sha256:…`.
fn digest_of(printed: &str) -> String {
    let (_, digest) = printed
        .trim()
        .rsplit_once('@')
        .unwrap_or_else(|| panic!("no digest in {printed:?}"));
    digest.to_string()
}

#[test]
fn kpackds_image_runs_kpackd_with_nothing_else() {
    let registry = Registry::start();
    let (binary, args) = static_binary();
    let binary_arg = binary.to_str().expect("a UTF-8 path");
    let tag = format!("{}:test", registry.repo("kpackd"));
    let printed = ok(
        &kpackd(&[
            "image",
            "push",
            &tag,
            "--binary",
            binary_arg,
            "--revision",
            "0123abc",
        ]),
        "image push",
    );
    let digest = digest_of(&printed);

    let inspected = skopeo_json(&["inspect", "--tls-verify=false", &format!("docker://{tag}")]);
    assert_eq!(inspected["Digest"], digest.as_str());
    assert_eq!(inspected["Architecture"], "amd64");
    assert_eq!(inspected["Os"], "linux");
    assert_eq!(inspected["Created"], "1980-01-01T00:00:01Z");
    assert_eq!(inspected["Layers"].as_array().map(Vec::len), Some(2));
    let labels = &inspected["Labels"];
    assert_eq!(labels["org.opencontainers.image.revision"], "0123abc");
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    let config = skopeo_json(&[
        "inspect",
        "--config",
        "--tls-verify=false",
        &format!("docker://{tag}"),
    ]);
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/kpackd"])
    );
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(
        config["config"]["Env"],
        serde_json::json!(["SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"])
    );

    // The same inputs, again and into an OCI layout: the same image.
    let again = ok(
        &kpackd(&[
            "image",
            "push",
            &format!("{}:again", registry.repo("kpackd")),
            "--binary",
            binary_arg,
            "--revision",
            "0123abc",
        ]),
        "image push again",
    );
    assert_eq!(digest_of(&again), digest);
    let work = tempfile::tempdir().expect("a temp dir");
    let layout = work.path().join("layout");
    let into_layout = ok(
        &kpackd(&[
            "image",
            "push",
            &format!("oci:{}:kpackd", layout.display()),
            "--binary",
            binary_arg,
            "--revision",
            "0123abc",
        ]),
        "image push to a layout",
    );
    assert_eq!(
        into_layout.trim(),
        format!("oci:{}:kpackd", layout.display())
    );
    let in_layout = skopeo_json(&["inspect", &format!("oci:{}:kpackd", layout.display())]);
    assert_eq!(in_layout["Digest"], digest.as_str());

    // Root-owned entries, /kpackd executable by all.
    let manifest = skopeo_json(&[
        "inspect",
        "--raw",
        &format!("oci:{}:kpackd", layout.display()),
    ]);
    let mut listed = Vec::new();
    for layer in manifest["layers"].as_array().expect("layers") {
        let digest = layer["digest"].as_str().expect("a digest");
        let blob = layout.join("blobs/sha256").join(&digest["sha256:".len()..]);
        let out = Command::new("tar")
            .arg("-tvzf")
            .arg(&blob)
            .output()
            .expect("tar runs");
        listed.extend(ok(&out, "tar").lines().map(str::to_string));
    }
    let entry = |name: &str| {
        listed
            .iter()
            .find(|line| line.ends_with(&format!(" {name}")))
            .unwrap_or_else(|| panic!("no {name} in {listed:#?}"))
            .clone()
    };
    assert!(
        entry("kpackd").starts_with("-rwxr-xr-x 0/0 "),
        "{listed:#?}"
    );
    assert!(
        entry("etc/ssl/certs/ca-certificates.crt").starts_with("-rw-r--r-- 0/0 "),
        "{listed:#?}"
    );
    assert_eq!(listed.len(), 5, "nothing else: {listed:#?}");

    // Unpacked, it runs with nothing but its own root, as its user.
    testkit::require("umoci", "umoci");
    let bundle = work.path().join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:kpackd", layout.display()))
        .arg(&bundle)
        .output()
        .expect("umoci runs");
    ok(&out, "umoci unpack");
    let rootfs = bundle.join("rootfs");
    let mut files = Vec::new();
    collect_files(&rootfs, &rootfs, &mut files);
    files.sort();
    assert_eq!(files, ["etc/ssl/certs/ca-certificates.crt", "kpackd"]);
    let out = Command::new("bwrap")
        .arg("--bind")
        .arg(&rootfs)
        .args(["/", "--proc", "/proc", "--dev", "/dev"])
        .args(["--unshare-user", "--unshare-pid", "--die-with-parent"])
        .args(["--uid", "65532", "--gid", "65532", "--clearenv"])
        .args([
            "--setenv",
            "SSL_CERT_FILE",
            "/etc/ssl/certs/ca-certificates.crt",
        ])
        .args(["--", "/kpackd"])
        .args(args)
        .output()
        .expect("bwrap runs");
    let printed = ok(&out, "/kpackd in the image");
    assert!(!printed.trim().is_empty(), "/kpackd printed nothing");
}

fn collect_files(root: &Path, dir: &Path, files: &mut Vec<String>) {
    for entry in fs::read_dir(dir).expect("a readable directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            collect_files(root, &path, files);
        } else {
            let relative = path.strip_prefix(root).expect("under the root");
            files.push(relative.display().to_string());
        }
    }
}

#[test]
fn a_dynamic_binary_is_refused_with_how_to_build_a_static_one() {
    let work = tempfile::tempdir().expect("a temp dir");
    let out = kpackd(&[
        "image",
        "push",
        &format!("oci:{}:kpackd", work.path().join("layout").display()),
        "--binary",
        env!("CARGO_BIN_EXE_kpackd"),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("dynamically linked"), "{stderr}");
    assert!(stderr.contains("scripts/build-static"), "{stderr}");
    assert!(!work.path().join("layout").exists(), "nothing was pushed");
}
