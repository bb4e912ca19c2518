//! The example fleet (kpack.toml at the repository's root, its Debian stack, buildpacks
//! and apps) built with `executor = "kubernetes"` on the test API server and node
//! (`testkit::kube`), whose Pods really run the published builder's entrypoint: every
//! image builds in a Pod of its own, runs and answers, and equals a local apply of the
//! same inputs; a commit is one new Pod, a run image patch none.
//!
//! The Kubernetes executor pushes to registries only, so the example's `oci:` tags are
//! rewritten to the loopback registry, and the stack is copied there.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::example::{
    assert_example_images_answer, copy_tree, example_stack, expect_success, repo, Unpacked,
};
use support::wait_for;
use testkit::git::{BareRepo, Entry, GitDaemon};
use testkit::kube::ApiServer;
use testkit::registry::Registry;

const IMAGES: [&str; 3] = ["hello-python", "static-site", "worker"];

/// `skopeo copy` between two references, the registry's side without TLS.
fn skopeo_copy(from: &str, to: &str) {
    let output = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .args([from, to])
        .output()
        .expect("running skopeo");
    expect_success(&output, &format!("skopeo copy {from} {to}"));
}

/// Copies the example stack's images from the layout `stacks` to `prefix/stacks`.
fn push_stack(stacks: &Path, prefix: &str, images: &[&str]) {
    for image in images {
        skopeo_copy(
            &format!("oci:{}:{image}", stacks.display()),
            &format!("docker://{prefix}/stacks:{image}"),
        );
    }
}

/// The worker app as a git repository served by `git daemon` (which a Pod reaches on the
/// host's network, where a `file://` URL would not).
fn worker_repo() -> (BareRepo, GitDaemon) {
    let app = repo().join("examples/apps/worker");
    let procfile = fs::read_to_string(app.join("Procfile")).expect("the worker's Procfile");
    let work = fs::read_to_string(app.join("work.sh")).expect("the worker's work.sh");
    let mut bare = BareRepo::new();
    bare.commit_entries(
        &[
            Entry::File("Procfile", &procfile),
            Entry::Executable("work.sh", &work),
        ],
        "worker",
    );
    let daemon = bare.serve_daemon();
    (bare, daemon)
}

/// The example kpack.toml as `dir/{which}.toml` (next to the example buildpacks and apps
/// in `dir`: a path source's path is part of its image), with its own state directory, the
/// stack under `prefix/stacks`, the builder and images under `prefix/which`, the worker
/// from `worker_url`.
fn write_config(dir: &Path, prefix: &str, which: &str, worker_url: &str, executor: &str) {
    let config = fs::read_to_string(repo().join("kpack.toml")).expect("reading kpack.toml");
    let mut config = config
        .replace(
            "[kpackd]\n",
            &format!("[kpackd]\nexecutor = \"{executor}\"\n"),
        )
        .replace(
            "state-dir = \".kpackd\"",
            &format!("state-dir = \".kpackd-{which}\""),
        )
        .replace("\"oci:out/stacks:", &format!("\"{prefix}/stacks:"))
        .replace(
            "\"oci:out/builders:",
            &format!("\"{prefix}/{which}/builders:"),
        )
        .replace("\"oci:out/images:", &format!("\"{prefix}/{which}/images:"))
        .replace(
            "source = { path = \"examples/apps/worker\" }",
            &format!("source = {{ git = \"{worker_url}\", revision = \"main\" }}"),
        );
    assert!(
        !config.contains("oci:"),
        "an oci: reference is left:\n{config}"
    );
    assert!(
        config.contains(worker_url),
        "the worker is no longer in kpack.toml"
    );
    if executor == "kubernetes" {
        config.push_str(&format!(
            "\n[kubernetes]\nsource-repository = \"{prefix}/sources\"\n"
        ));
    }
    assert!(
        config.contains(&format!(".kpackd-{which}")),
        "no state-dir in kpack.toml"
    );
    fs::write(dir.join(format!("{which}.toml")), config).expect("writing the config");
}

/// The names of the Pods created on `cluster` since it started, from a watch (Pods are
/// deleted when their build ends, so a list would not show them).
struct PodWatch {
    curl: Child,
    events: PathBuf,
}

impl PodWatch {
    fn start(cluster: &ApiServer, events: PathBuf) -> PodWatch {
        let file = fs::File::create(&events).expect("the watch's file");
        let curl = Command::new("curl")
            .args(["-sN", "--max-time", "3600"])
            .arg(format!(
                "{}/api/v1/namespaces/default/pods?watch=true&resourceVersion=0",
                cluster.url()
            ))
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("running curl");
        PodWatch { curl, events }
    }

    /// The Pods ADDED so far.
    fn created(&self) -> BTreeSet<String> {
        let text = fs::read_to_string(&self.events).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| event["type"] == "ADDED")
            .filter_map(|event| {
                event["object"]["metadata"]["name"]
                    .as_str()
                    .map(String::from)
            })
            .collect()
    }

    /// Waits until `expected` Pods were created, then checks that it is exactly those.
    fn expect_created(&self, expected: &BTreeSet<String>) {
        wait_for("the watch to see the Pods", Duration::from_secs(10), || {
            (self.created().len() >= expected.len()).then_some(())
        });
        assert_eq!(&self.created(), expected);
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        let _ = self.curl.kill();
        let _ = self.curl.wait();
    }
}

fn names(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// `kpackd apply CONFIG --json` in `dir`, which must succeed: the report's results.
fn apply(dir: &Path, config: &str, env: &[(&str, &Path)]) -> Vec<Value> {
    let output = support::kpackd_with_env(dir, &["apply", config, "--json"], env);
    expect_success(&output, "kpackd apply");
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    report["results"].as_array().cloned().unwrap_or_default()
}

fn field(results: &[Value], image: &str, key: &str) -> String {
    results
        .iter()
        .find(|r| r["image"] == image)
        .and_then(|r| r[key].as_str())
        .unwrap_or_else(|| panic!("no {key} for {image} in {results:#?}"))
        .to_string()
}

/// Pulls the fleet's images from `prefix/which/images` into the layout `layout`.
fn pull_images(prefix: &str, which: &str, layout: &Path) {
    for image in IMAGES {
        skopeo_copy(
            &format!("docker://{prefix}/{which}/images:{image}"),
            &format!("oci:{}:{image}", layout.display()),
        );
    }
}

#[test]
fn example_fleet_builds_in_pods_as_locally_rebuilds_in_one_pod_and_rebases_in_none() {
    for (program, package) in [("curl", "curl"), ("skopeo", "skopeo"), ("umoci", "umoci")] {
        testkit::require(program, package);
    }
    let work = tempfile::tempdir().expect("a temp dir");
    let root = work.path();
    let stacks = root.join("stacks");
    example_stack(&stacks);
    let prefix = Registry::shared().repo(&format!(
        "kube-examples-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos()
    ));
    push_stack(&stacks, &prefix, &["bookworm-build", "bookworm-run"]);
    let (mut worker, daemon) = worker_repo();

    let cluster = ApiServer::start();
    let kubeconfig = root.join("kubeconfig");
    cluster
        .write_kubeconfig(&kubeconfig)
        .expect("writing the kubeconfig");
    let entrypoint = testkit::entrypoint();
    let env: [(&str, &Path); 2] = [
        (
            executors::builder::entrypoint::ENTRYPOINT_ENV,
            entrypoint.as_path(),
        ),
        ("KUBECONFIG", kubeconfig.as_path()),
    ];
    let fleet = root.join("fleet");
    fs::create_dir_all(fleet.join("examples")).expect("examples dir");
    copy_tree(
        &repo().join("examples/buildpacks"),
        &fleet.join("examples/buildpacks"),
    );
    copy_tree(&repo().join("examples/apps"), &fleet.join("examples/apps"));
    write_config(&fleet, &prefix, "kube", &daemon.url(), "kubernetes");
    write_config(&fleet, &prefix, "local", &daemon.url(), "local");
    let watch = PodWatch::start(&cluster, root.join("pods.json"));

    // Every image builds in a Pod of its own.
    let results = apply(&fleet, "kube.toml", &env);
    for image in IMAGES {
        assert_eq!(
            field(&results, image, "status"),
            "succeeded",
            "{results:#?}"
        );
        assert_eq!(field(&results, image, "action"), "build", "{results:#?}");
    }
    let first = names(&[
        "kpackd-hello-python-1",
        "kpackd-static-site-1",
        "kpackd-worker-1",
    ]);
    watch.expect_created(&first);

    // Each runs and answers.
    let pulled = root.join("pulled");
    pull_images(&prefix, "kube", &pulled);
    assert_example_images_answer(&pulled);

    // A local apply of the same inputs gives the same images.
    let local_results = apply(&fleet, "local.toml", &env);
    for image in IMAGES {
        assert_eq!(
            field(&local_results, image, "digest"),
            field(&results, image, "digest"),
            "{image}: built in a Pod and locally"
        );
    }
    watch.expect_created(&first);

    // A new commit to the worker: one build, in one new Pod.
    worker.commit(&[("NOTES.md", "a new commit\n")], "notes");
    let results = apply(&fleet, "kube.toml", &env);
    assert_eq!(field(&results, "worker", "action"), "build", "{results:#?}");
    assert_eq!(field(&results, "worker", "status"), "succeeded");
    for image in ["hello-python", "static-site"] {
        assert!(
            results
                .iter()
                .all(|r| r["image"] != image || r["action"] == "noop"),
            "{image} changed: {results:#?}"
        );
    }
    let mut second = first.clone();
    second.insert("kpackd-worker-2".into());
    watch.expect_created(&second);

    // A patched run image: rebases, nothing created on the cluster.
    let status = Command::new(repo().join("examples/stacks/bookworm/build-stack"))
        .arg("--out")
        .arg(&stacks)
        .arg("--patch-run-image")
        .status()
        .expect("running build-stack --patch-run-image");
    assert!(status.success(), "build-stack --patch-run-image failed");
    push_stack(&stacks, &prefix, &["bookworm-run"]);
    let before = cluster.resource_version();
    let results = apply(&fleet, "kube.toml", &env);
    for image in IMAGES {
        assert_eq!(field(&results, image, "action"), "rebase", "{results:#?}");
        assert_eq!(field(&results, image, "status"), "succeeded");
    }
    assert_eq!(
        cluster.resource_version(),
        before,
        "the rebases touched the cluster"
    );
    watch.expect_created(&second);
    let rebased = root.join("rebased");
    pull_images(&prefix, "kube", &rebased);
    let hello = Unpacked::new(&rebased, "hello-python");
    assert!(
        hello.rootfs().join("etc/kpackd-patch").is_file(),
        "the rebased hello-python lacks the run image's patch"
    );
    assert!(hello.serve_and_get("/healthz").contains("ok"));
}
