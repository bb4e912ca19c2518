//! `kpackd inspect` and `kpackd copy`, run as a user runs them, against a real registry
//! on loopback, OCI layouts on disk, and skopeo on the other side.

#[path = "../executors/tests/oci_support/mod.rs"]
mod oci_support;

use std::path::Path;
use std::process::{Command, Output};

use base64::Engine as _;
use imageref::Platform;
use oci_support::*;
use testkit::registry::Registry;

/// Runs kpackd with no colours, no RUST_LOG and the docker config at `docker_config`.
fn kpackd(docker_config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kpackd"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env("DOCKER_CONFIG", docker_config)
        .output()
        .expect("kpackd runs")
}

fn ok(out: &Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "exit {:?}\n{stderr}", out.status);
    (stdout, stderr)
}

fn skopeo(args: &[&str]) -> String {
    testkit::require("skopeo", "skopeo");
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const LIFECYCLE: &str = r#"{"buildpacks":[{"key":"examples/python","version":"0.1.0"}],"runImage":{"topLayer":"sha256:1111111111111111111111111111111111111111111111111111111111111111","reference":"registry.example.com/run@sha256:2222222222222222222222222222222222222222222222222222222222222222"}}"#;
const BUILD: &str = r#"{"buildpacks":[{"id":"examples/python","version":"0.1.0"}],"processes":[{"type":"web","command":["python3","app.py"],"args":[],"direct":true}],"buildpack-default-process-type":"web","launcher":{"version":"0.1.0"}}"#;
const PROJECT: &str = r#"{"source":{"type":"git","version":{"commit":"8d04e77"},"metadata":{"repository":"https://example.com/hello.git"}}}"#;

/// A two-layer image labelled as a CNB app image would be.
async fn push_app_image(r: &str, work: &Path) -> String {
    let store = store();
    let layers = [
        layer(work, &[("base.txt", "base")]),
        layer(work, &[("app.py", "print('hi')\n")]),
    ];
    let labels = [
        ("io.buildpacks.lifecycle.metadata", LIFECYCLE),
        ("io.buildpacks.build.metadata", BUILD),
        ("io.buildpacks.project.metadata", PROJECT),
        ("io.buildpacks.base.id", "io.kpackd.stacks.test"),
    ];
    let pinned = store
        .push_image(
            &parse(r),
            config(&Platform::linux_amd64(), &labels),
            &layers,
        )
        .await
        .unwrap();
    pinned.digest().unwrap().to_string()
}

#[tokio::test]
async fn inspect_shows_digest_layers_config_and_cnb_metadata() {
    let reg = Registry::shared();
    let work = tempfile::tempdir().unwrap();
    let r = format!("{}:v1", reg.repo("cli-inspect/app"));
    let digest = push_app_image(&r, work.path()).await;

    let (json, _) = ok(&kpackd(work.path(), &["inspect", &r, "--json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["digest"], digest);
    assert_eq!(v["platform"], "linux/amd64");
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    for l in layers {
        assert!(l["digest"].as_str().unwrap().starts_with("sha256:"));
        assert!(l["size"].as_u64().unwrap() > 0);
    }
    assert_eq!(v["config"]["user"], "1000:1000");
    assert_eq!(v["config"]["entrypoint"][0], "/app/run");
    assert_eq!(
        v["labels"]["io.buildpacks.base.id"],
        "io.kpackd.stacks.test"
    );
    let cnb = &v["cnb"];
    assert_eq!(cnb["stackId"], "io.kpackd.stacks.test");
    assert_eq!(cnb["buildpacks"][0]["id"], "examples/python");
    assert_eq!(cnb["processes"][0]["type"], "web");
    assert_eq!(cnb["processes"][0]["command"][1], "app.py");
    assert_eq!(cnb["defaultProcess"], "web");
    assert!(cnb["runImage"]["topLayer"]
        .as_str()
        .unwrap()
        .starts_with("sha256:1111"));
    assert_eq!(cnb["source"]["version"]["commit"], "8d04e77");

    let (human, _) = ok(&kpackd(work.path(), &["inspect", &format!("docker://{r}")]));
    for expected in [
        format!("Digest:     {digest}"),
        "Platform:   linux/amd64".to_string(),
        "Layers (2,".to_string(),
        "Buildpack:      examples/python@0.1.0".to_string(),
        "Process:        web (default): python3 app.py".to_string(),
        "Run top layer:  sha256:1111".to_string(),
    ] {
        assert!(human.contains(&expected), "no `{expected}` in:\n{human}");
    }
}

#[tokio::test]
async fn copy_goes_registry_to_layout_to_registry_and_skopeo_agrees() {
    let reg = Registry::shared();
    let work = tempfile::tempdir().unwrap();
    let src = format!("{}:v1", reg.repo("cli-copy/source"));
    let digest = push_app_image(&src, work.path()).await;
    let layout = work.path().join("air-gap");
    let saved = format!("oci:{}:saved", layout.display());

    let (stdout, stderr) = ok(&kpackd(work.path(), &["copy", &src, &saved]));
    assert_eq!(stdout.trim(), saved);
    assert!(stderr.contains("3 blobs (3 sent"), "{stderr}");
    let inspected: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        &format!("oci:{}:saved", layout.display()),
    ]))
    .unwrap();
    assert_eq!(inspected["Digest"], digest);

    let (json, _) = ok(&kpackd(work.path(), &["inspect", &saved, "--json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["digest"], digest);

    let back = format!("{}:relocated", reg.repo("cli-copy/back"));
    let (stdout, _) = ok(&kpackd(work.path(), &["copy", &saved, &back]));
    assert_eq!(
        stdout.trim(),
        format!("{}@{digest}", reg.repo("cli-copy/back"))
    );
    let (_, stderr) = ok(&kpackd(work.path(), &["copy", &saved, &back]));
    assert!(stderr.contains("3 already there"), "{stderr}");

    // Within one registry, blobs are mounted rather than sent.
    let mounted = format!("{}:v1", reg.repo("cli-copy/mounted"));
    let (_, stderr) = ok(&kpackd(work.path(), &["copy", &back, &mounted]));
    assert!(stderr.contains("(0 sent, 3 mounted"), "{stderr}");
    let inspected: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{back}"),
    ]))
    .unwrap();
    assert_eq!(inspected["Digest"], digest);
}

#[tokio::test]
async fn kpackd_inspects_and_copies_what_skopeo_wrote() {
    let reg = Registry::shared();
    let work = tempfile::tempdir().unwrap();
    let src = format!("{}:v1", reg.repo("cli-skopeo/source"));
    let digest = push_app_image(&src, work.path()).await;
    let layout = work.path().join("by-skopeo");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{src}"),
        &format!("oci:{}:app", layout.display()),
    ]);
    let r = format!("oci:{}:app", layout.display());
    let (json, _) = ok(&kpackd(work.path(), &["inspect", &r, "--json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["digest"], digest);
    assert_eq!(v["cnb"]["buildpacks"][0]["version"], "0.1.0");

    let dst = format!("{}:v1", reg.repo("cli-skopeo/target"));
    ok(&kpackd(work.path(), &["copy", &r, &dst]));
    let (json, _) = ok(&kpackd(work.path(), &["inspect", &dst, "--json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["digest"], digest);
}

#[test]
fn errors_name_the_reference_and_exit_1() {
    let reg = Registry::shared();
    let work = tempfile::tempdir().unwrap();
    let missing = format!("{}:nope", reg.repo("cli-errors/absent"));
    let out = kpackd(work.path(), &["inspect", &missing]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cli-errors/absent:nope"), "{stderr}");
    assert!(stderr.contains("not found"), "{stderr}");

    let out = kpackd(work.path(), &["copy", "Not A Ref", "oci:x"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid image reference `Not A Ref`"),
        "{stderr}"
    );

    let port = testkit::free_port();
    let out = kpackd(
        work.path(),
        &["inspect", &format!("127.0.0.1:{port}/down/app:v1")],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot reach registry 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[tokio::test]
async fn credentials_never_reach_the_output() {
    const PASSWORD: &str = "Very-Secret-Pass-42";
    let reg = Registry::start_with_auth("kpackd", PASSWORD);
    let work = tempfile::tempdir().unwrap();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("kpackd:{PASSWORD}"));
    let docker = work.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{basic}"}}}}}}"#, reg.addr()),
    )
    .unwrap();
    let r = format!("{}:v1", reg.repo("secret/app"));
    let layout = format!("oci:{}:app", work.path().join("layout").display());
    let store = store();
    let pinned = store
        .push_image(
            &parse(&layout),
            config(&Platform::linux_amd64(), &[]),
            &[layer(work.path(), &[("a", "b")])],
        )
        .await
        .unwrap();

    let runs = [
        kpackd(&docker, &["-vvv", "copy", &layout, &r]),
        kpackd(&docker, &["-vvv", "inspect", &r, "--json"]),
    ];
    for out in &runs {
        let (stdout, stderr) = ok(out);
        assert!(
            stderr.contains("DEBUG") || stderr.contains("TRACE"),
            "{stderr}"
        );
        for text in [&stdout, &stderr] {
            assert!(!text.contains(PASSWORD), "the password leaked:\n{text}");
            assert!(!text.contains(&basic), "the basic auth leaked:\n{text}");
        }
    }
    let (json, _) = ok(&runs[1]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let digest = store.resolve_digest(&pinned).await.unwrap();
    assert_eq!(v["digest"], digest.to_string());

    // Wrong credentials: refused, and the attempt does not show them either.
    let wrong = work.path().join("wrong");
    std::fs::create_dir_all(&wrong).unwrap();
    std::fs::write(
        wrong.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"username":"kpackd","password":"{PASSWORD}-wrong"}}}}}}"#,
            reg.addr()
        ),
    )
    .unwrap();
    let out = kpackd(&wrong, &["-vvv", "inspect", &r]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("secret/app:v1"), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "the password leaked:\n{stderr}");
}

#[tokio::test]
async fn a_credential_helper_supplies_the_password() {
    const PASSWORD: &str = "helper-given-secret";
    let reg = Registry::start_with_auth("kpackd", PASSWORD);
    let work = tempfile::tempdir().unwrap();
    // A docker credential helper as docker runs them: `get`, the server on stdin, JSON
    // on stdout; it records the server it was asked about.
    let bin = work.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-kpackd-test");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\necho \"$server\" > {}\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"kpackd\",\"Secret\":\"{PASSWORD}\"}}' \"$server\"\n",
            work.path().join("asked").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let docker = work.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"credHelpers":{{"{}":"kpackd-test"}}}}"#, reg.addr()),
    )
    .unwrap();
    let layout = format!("oci:{}:app", work.path().join("layout").display());
    store()
        .push_image(
            &parse(&layout),
            config(&Platform::linux_amd64(), &[]),
            &[layer(work.path(), &[("a", "b")])],
        )
        .await
        .unwrap();
    let r = format!("{}:v1", reg.repo("helped/app"));
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_kpackd"))
        .args(["-vv", "copy", &layout, &r])
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env("DOCKER_CONFIG", &docker)
        .env("PATH", path)
        .output()
        .unwrap();
    let (_, stderr) = ok(&out);
    assert!(!stderr.contains(PASSWORD), "the password leaked:\n{stderr}");
    assert_eq!(
        std::fs::read_to_string(work.path().join("asked"))
            .unwrap()
            .trim(),
        reg.addr()
    );
    // Without the helper, the same registry refuses.
    let out = kpackd(work.path(), &["inspect", &r]);
    assert_eq!(out.status.code(), Some(1));
}
