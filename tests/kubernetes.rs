//! Builds as Kubernetes Pods, end to end: the `kpackd` binary with `executor =
//! "kubernetes"`, the test API server and node (`testkit::kube`), whose Pods really run
//! the published builder image's entrypoint with bwrap and push to the loopback registry.
//! The builder is published by the same apply (with kpackd's real build entrypoint);
//! the app comes from a git daemon the Pods reach on the host's network.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use executors::oci::layer::{LayerBuilder, WrittenLayer};
use executors::oci::{ContainerConfig, ImageConfig, ImageStore, StoreSettings};
use imageref::ImageRef;
use serde_json::Value;
use support::{wait_for, write_buildpack};
use testkit::git::{BareRepo, GitDaemon};
use testkit::kube::ApiServer;
use testkit::registry::Registry;

const STACK_ID: &str = "io.kpackd.kube-test";

const CONFIG: &str = r#"[kpackd]
state-dir = "state"
executor = "{executor}"

[kubernetes]
max-pods = {max_pods}

[stacks.test]
build-image = "{prefix}/stacks/build"
run-image = "{prefix}/stacks/run"

[stores.test]
buildpacks = ["buildpacks/hello"]

[builders.test]
stack = "test"
store = "test"
order = [{ group = [{ id = "test/hello" }] }]
tag = "{builder_prefix}/builders/test"
"#;

/// The buildpack: greets with the app's greeting, sleeping as long as the app's
/// `sleep.txt` says first (so that a test can catch its Pod running).
const BUILD: &str = r#"echo "building $(cat greeting.txt)"
sleep "$(cat sleep.txt 2>/dev/null || echo 0)"
layer="$CNB_LAYERS_DIR/greeter"
mkdir -p "$layer/bin"
printf '#!/bin/sh\necho "$(cat /workspace/greeting.txt)"\n' > "$layer/bin/greet"
chmod +x "$layer/bin/greet"
printf '[types]\nlaunch = true\n' > "$layer.toml"
cat > "$CNB_LAYERS_DIR/launch.toml" <<EOT
[[processes]]
type = "web"
command = ["greet"]
default = true
EOT"#;

/// One fleet: a directory with kpack.toml, its stack in the registry, a git remote per
/// app, and the cluster.
struct Fleet {
    dir: tempfile::TempDir,
    prefix: String,
    builder_prefix: String,
    apps: Vec<(String, BareRepo, GitDaemon, String)>,
    cluster: Option<ApiServer>,
    kubeconfig: PathBuf,
}

/// A unique repository prefix in the shared registry.
fn unique_prefix(registry: &Registry, what: &str) -> String {
    registry.repo(&format!(
        "kube-{what}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos()
    ))
}

impl Fleet {
    /// A fleet building the apps `(name, sleep seconds)` with `executor`, the stack under
    /// `prefix` (pushed already when `stack_pushed`), the builder under `builder_prefix`.
    fn new(executor: &str, prefix: &str, builder_prefix: &str, apps: &[(&str, u32)]) -> Fleet {
        let dir = tempfile::tempdir().expect("a temp dir");
        let root = dir.path();
        write_buildpack(
            &root.join("buildpacks"),
            "hello",
            "test/hello",
            "test -f greeting.txt",
            BUILD,
        );
        let apps = apps
            .iter()
            .map(|(name, sleep)| {
                let mut repo = BareRepo::new();
                let commit = repo.commit(
                    &[
                        ("greeting.txt", &format!("hello from {name}")),
                        ("sleep.txt", &sleep.to_string()),
                    ],
                    "the app",
                );
                let daemon = repo.serve_daemon();
                (name.to_string(), repo, daemon, commit)
            })
            .collect();
        let cluster = (executor == "kubernetes").then(ApiServer::start);
        let kubeconfig = root.join("kubeconfig");
        if let Some(cluster) = &cluster {
            cluster
                .write_kubeconfig(&kubeconfig)
                .expect("writing the kubeconfig");
        }
        let fleet = Fleet {
            dir,
            prefix: prefix.to_string(),
            builder_prefix: builder_prefix.to_string(),
            apps,
            cluster,
            kubeconfig,
        };
        fleet.configure(executor, 4, "");
        fleet
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn cluster(&self) -> &ApiServer {
        self.cluster.as_ref().expect("a kubernetes fleet")
    }

    /// Writes kpack.toml; `extra` goes into every image's table.
    fn configure(&self, executor: &str, max_pods: usize, extra: &str) {
        let mut text = CONFIG
            .replace("{executor}", executor)
            .replace("{max_pods}", &max_pods.to_string())
            .replace("{prefix}", &self.prefix)
            .replace("{builder_prefix}", &self.builder_prefix);
        for (name, _, daemon, _) in &self.apps {
            text.push_str(&format!(
                "\n[images.{name}]\ntag = \"{}/apps/{name}\"\nbuilder = \"test\"\nsource = {{ git = \"{}\", revision = \"main\" }}\nenv = {{ SOURCE_DATE_EPOCH = \"1700000000\" }}\n{extra}\n",
                self.prefix,
                daemon.url()
            ));
        }
        std::fs::write(self.root().join("kpack.toml"), text).expect("writing kpack.toml");
    }

    fn env(&self) -> Vec<(&'static str, PathBuf)> {
        vec![
            (
                executors::builder::entrypoint::ENTRYPOINT_ENV,
                testkit::entrypoint(),
            ),
            ("KUBECONFIG", self.kubeconfig.clone()),
        ]
    }

    fn kpackd(&self, args: &[&str]) -> std::process::Output {
        let env = self.env();
        let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
        support::kpackd_with_env(self.root(), args, &env)
    }

    fn spawn(&self, name: &str, args: &[&str]) -> support::Background {
        let out = std::fs::File::create(self.root().join(format!("{name}.out"))).unwrap();
        let err = std::fs::File::create(self.root().join(format!("{name}.err"))).unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_kpackd"));
        command
            .args(args)
            .current_dir(self.root())
            .env("NO_COLOR", "1")
            .env_remove("KPACKD_STATE_DIR")
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in self.env() {
            command.env(k, v);
        }
        let child = command.spawn().expect("starting kpackd");
        support::Background {
            child,
            name: name.to_string(),
            dir: self.root().to_path_buf(),
            started: Instant::now(),
        }
    }

    /// `kpackd apply --json`.
    fn apply(&self) -> (Option<i32>, Value) {
        let output = self.kpackd(&["apply", "--json"]);
        let report = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        (output.status.code(), report)
    }

    /// The objects of `kind` (`pods`, `secrets`) in the default namespace.
    fn objects(&self, kind: &str) -> Vec<Value> {
        let (status, body) = http_get(&format!(
            "{}/api/v1/namespaces/default/{kind}",
            self.cluster().url()
        ));
        assert_eq!(status, 200, "{body}");
        let list: Value = serde_json::from_str(&body).expect("a list");
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until a Pod's container runs while `apply` runs; returns the Pod.
    fn running_pod(&self, apply: &mut support::Background) -> Value {
        wait_for("a running build Pod", Duration::from_secs(180), || {
            if let Some(status) = apply.wait_timeout(Duration::ZERO) {
                panic!("apply ended ({status}) first:\n{}", apply.output());
            }
            self.objects("pods")
                .into_iter()
                .find(|p| p["status"]["containerStatuses"][0]["state"]["running"].is_object())
        })
    }

    fn app_commit(&mut self, name: &str, sleep: u32, greeting: &str) {
        let app = self.apps.iter_mut().find(|a| a.0 == name).expect("an app");
        app.3 = app.1.commit(
            &[
                ("greeting.txt", greeting),
                ("sleep.txt", &sleep.to_string()),
            ],
            "a change",
        );
    }
}

/// `GET url` with curl: the status and the body.
fn http_get(url: &str) -> (u16, String) {
    let output = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", url])
        .output()
        .expect("running curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Pushes the stack (build and run image: a minimal root file system with CA
/// certificates, which the build entrypoint needs) under `prefix`.
fn push_stack(prefix: &str, work: &Path) -> (WrittenLayer, ImageConfig) {
    let rootfs = work.join("rootfs");
    testkit::rootfs::minimal_rootfs(&rootfs, &[]).expect("a minimal root file system");
    std::fs::create_dir_all(rootfs.join("etc/ssl/certs")).unwrap();
    std::fs::copy(
        "/etc/ssl/certs/ca-certificates.crt",
        rootfs.join("etc/ssl/certs/ca-certificates.crt"),
    )
    .expect("the host's CA certificates (Debian package ca-certificates)");
    let mut builder = LayerBuilder::new(0, 0);
    let mut names: Vec<_> = std::fs::read_dir(&rootfs)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        builder.add(Path::new(&name), &rootfs.join(&name)).unwrap();
    }
    let layers = work.join("layers");
    std::fs::create_dir_all(&layers).unwrap();
    let base = builder.write(&layers).unwrap();
    let mut run_config = None;
    support::runtime().block_on(async {
        let store = ImageStore::new(StoreSettings::default());
        for (name, build) in [("build", true), ("run", false)] {
            let mut env = vec!["PATH=/usr/local/bin:/usr/bin:/bin".to_string()];
            if build {
                env.push("CNB_USER_ID=1000".into());
                env.push("CNB_GROUP_ID=1000".into());
                env.push(format!("CNB_STACK_ID={STACK_ID}"));
            }
            let config = ImageConfig {
                architecture: "amd64".into(),
                os: "linux".into(),
                config: Some(ContainerConfig {
                    user: Some("1000:1000".into()),
                    env: Some(env),
                    labels: Some(
                        [
                            ("io.buildpacks.stack.id".to_string(), STACK_ID.to_string()),
                            ("io.buildpacks.base.id".to_string(), STACK_ID.to_string()),
                        ]
                        .into(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let reference = ImageRef::parse(&format!("{prefix}/stacks/{name}")).unwrap();
            store
                .push_image(&reference, config.clone(), std::slice::from_ref(&base))
                .await
                .expect("pushing a stack image");
            run_config = Some(config);
        }
    });
    (base, run_config.expect("the run image's config"))
}

fn result<'a>(report: &'a Value, image: &str) -> &'a Value {
    report["results"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["image"] == image))
        .unwrap_or_else(|| panic!("{image} in {report:#}"))
}

/// A fleet on the cluster, its stack pushed; the stack's work directory and base layer
/// (for [`patch_run_image`]).
fn kube_fleet(apps: &[(&str, u32)]) -> (Fleet, Stack) {
    let registry = Registry::shared();
    let prefix = unique_prefix(registry, "fleet");
    let work = tempfile::tempdir().unwrap();
    let (base, run_config) = push_stack(&prefix, work.path());
    (
        Fleet::new("kubernetes", &prefix, &prefix, apps),
        Stack {
            work,
            base,
            run_config,
        },
    )
}

struct Stack {
    work: tempfile::TempDir,
    base: WrittenLayer,
    run_config: ImageConfig,
}

#[test]
fn an_image_builds_in_a_pod_as_it_builds_locally() {
    let (fleet, stack) = kube_fleet(&[("app", 2)]);
    let mut apply = fleet.spawn("apply", &["apply", "--json"]);
    let pod = fleet.running_pod(&mut apply);

    // The Pod: the published builder by digest, its entrypoint, no privileges.
    let metadata = &pod["metadata"];
    assert_eq!(metadata["name"], "kpackd-app-1");
    assert_eq!(metadata["labels"]["kpackd.dev/image"], "app");
    assert_eq!(metadata["labels"]["kpackd.dev/build"], "1");
    assert!(metadata["labels"]["kpackd.dev/lineage"].is_string());
    let spec = &pod["spec"];
    let container = &spec["containers"][0];
    let image = container["image"].as_str().unwrap();
    assert!(
        image.starts_with(&format!("{}/builders/test@sha256:", fleet.prefix)),
        "{image}"
    );
    assert_eq!(
        container["command"],
        serde_json::json!([
            "/cnb/lifecycle/kpackd",
            "build",
            "--request",
            "/kpackd/request/request.json",
            "--result-file",
            "/dev/termination-log"
        ])
    );
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(spec["securityContext"]["runAsUser"], 1000);
    assert_eq!(spec["securityContext"]["runAsGroup"], 1000);
    let security = &container["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(spec["activeDeadlineSeconds"], 3600);
    let secrets = fleet.objects("secrets");
    assert_eq!(secrets.len(), 2, "{secrets:#?}");
    assert!(secrets
        .iter()
        .any(|s| s["type"] == "kubernetes.io/dockerconfigjson"));
    for secret in &secrets {
        assert_eq!(
            secret["metadata"]["ownerReferences"][0]["name"],
            "kpackd-app-1"
        );
        assert_eq!(secret["metadata"]["labels"]["kpackd.dev/build"], "1");
    }

    let status = apply
        .wait_timeout(Duration::from_secs(300))
        .expect("apply ends");
    assert!(status.success(), "{}", apply.output());
    let report: Value = serde_json::from_str(&apply.stdout()).expect("a JSON report");
    let built = result(&report, "app");
    assert_eq!(built["status"], "succeeded", "{report:#}");
    let digest = built["digest"].as_str().unwrap().to_string();
    // Nothing is left on the cluster.
    assert!(fleet.objects("pods").is_empty());
    assert!(fleet.objects("secrets").is_empty());

    // The log reads as a local build's.
    let logs = support::stdout(&fleet.kpackd(&["logs", "app"]));
    for line in [
        "===> DETECT",
        "===> BUILD",
        "[build] [test/hello] building hello from app",
        "===> EXPORT",
    ] {
        assert!(logs.lines().any(|l| l == line), "{line:?} in\n{logs}");
    }
    let builds = support::stdout(&fleet.kpackd(&["builds", "app", "--json"]));
    assert!(builds.contains("succeeded"), "{builds}");

    // The same inputs built locally give the same image.
    let local = Fleet::new(
        "local",
        &fleet.prefix,
        &unique_prefix(Registry::shared(), "local"),
        &[],
    );
    let (name, _, daemon, _) = &fleet.apps[0];
    let text = std::fs::read_to_string(fleet.root().join("kpack.toml"))
        .unwrap()
        .replace("executor = \"kubernetes\"", "executor = \"local\"")
        .replace(
            &format!("{}/apps/{name}", fleet.prefix),
            &format!("{}/local-apps/{name}", fleet.prefix),
        )
        .replace(
            &format!("{}/builders/test", fleet.prefix),
            &format!("{}/builders/test", local.builder_prefix),
        );
    assert!(text.contains(&daemon.url()));
    std::fs::write(local.root().join("kpack.toml"), text).unwrap();
    let (code, report) = local.apply();
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(result(&report, "app")["digest"], digest.as_str());

    // A run image patch rebases without a Pod: nothing is created on the cluster.
    let before = fleet.cluster().resource_version();
    patch_run_image(
        &fleet.prefix,
        stack.work.path(),
        &stack.base,
        &stack.run_config,
    );
    let (code, report) = fleet.apply();
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(result(&report, "app")["action"], "rebase", "{report:#}");
    assert_eq!(fleet.cluster().resource_version(), before);
}

/// Pushes a run image with one more layer under the same tag: the stack's base layer
/// (in `work`, where [`push_stack`] wrote it) and a patch.
fn patch_run_image(prefix: &str, work: &Path, base: &WrittenLayer, config: &ImageConfig) {
    let dir = work.join("patch");
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("etc/patch-level"), "2").unwrap();
    let mut builder = LayerBuilder::new(0, 0);
    builder
        .add(Path::new("etc/patch-level"), &dir.join("etc/patch-level"))
        .unwrap();
    let patch = builder.write(&dir).unwrap();
    support::runtime().block_on(async {
        let store = ImageStore::new(StoreSettings::default());
        let run = ImageRef::parse(&format!("{prefix}/stacks/run")).unwrap();
        store
            .push_image(&run, config.clone(), &[base.clone(), patch])
            .await
            .expect("patching the run image");
    });
}

/// `kpackd logs <image>` of the last build.
fn log_of(fleet: &Fleet, image: &str) -> String {
    support::stdout(&fleet.kpackd(&["logs", image]))
}

/// The statuses of an image's builds, by number.
fn statuses(fleet: &Fleet, image: &str) -> Vec<String> {
    let output = fleet.kpackd(&["builds", image, "--json"]);
    let builds: Vec<Value> = serde_json::from_slice(&output.stdout).expect("builds as JSON");
    let mut builds: Vec<(u64, String)> = builds
        .iter()
        .map(|b| {
            (
                b["number"].as_u64().unwrap(),
                b["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    builds.sort();
    builds.into_iter().map(|(_, s)| s).collect()
}

/// The failure message of `image` in an apply report.
fn failure(report: &Value, image: &str) -> String {
    let result = result(report, image);
    assert_eq!(result["status"], "failed", "{report:#}");
    result["failure"]["message"].as_str().unwrap().to_string()
}

#[test]
fn a_pod_evicted_mid_build_fails_the_build_with_the_reason() {
    let (fleet, _stack) = kube_fleet(&[("app", 600)]);
    let mut apply = fleet.spawn("apply", &["apply", "--json"]);
    let pod = fleet.running_pod(&mut apply);
    let name = pod["metadata"]["name"].as_str().unwrap();
    assert!(fleet.cluster().evict("default", name));
    let status = apply
        .wait_timeout(Duration::from_secs(120))
        .expect("apply ends");
    assert!(!status.success(), "{}", apply.output());
    let report: Value = serde_json::from_str(&apply.stdout()).expect("a JSON report");
    let message = failure(&report, "app");
    assert!(message.contains("Evicted"), "{message}");
    assert!(log_of(&fleet, "app").contains("Evicted"));
    assert!(fleet.objects("pods").is_empty());
    assert!(fleet.objects("secrets").is_empty());
}

#[test]
fn a_pod_past_its_deadline_fails_the_build_with_the_reason() {
    let (fleet, _stack) = kube_fleet(&[("app", 600)]);
    fleet.configure("kubernetes", 4, "timeout = \"20s\"");
    let (code, report) = fleet.apply();
    assert_eq!(code, Some(1), "{report:#}");
    let message = failure(&report, "app");
    assert!(message.contains("DeadlineExceeded"), "{message}");
    assert!(log_of(&fleet, "app").contains("DeadlineExceeded"));
    assert!(fleet.objects("pods").is_empty());
}

#[test]
fn a_builder_image_that_cannot_be_pulled_fails_the_build_after_a_while() {
    // The builder is published to a registry of its own, which is then stopped; a new
    // cluster (whose node has not pulled it) cannot pull it.
    let registry = Registry::shared();
    let prefix = unique_prefix(registry, "unpullable");
    let builders = Registry::start();
    let work = tempfile::tempdir().unwrap();
    push_stack(&prefix, work.path());
    let mut fleet = Fleet::new(
        "kubernetes",
        &prefix,
        &unique_prefix(&builders, "builders"),
        &[("app", 0)],
    );
    let (code, report) = fleet.apply();
    assert_eq!(code, Some(0), "{report:#}");
    drop(builders);
    fleet.cluster = Some(ApiServer::start());
    fleet
        .cluster()
        .write_kubeconfig(&fleet.kubeconfig)
        .expect("writing the kubeconfig");
    fleet.app_commit("app", 0, "hello again");
    let started = Instant::now();
    let (code, report) = fleet.apply();
    assert_eq!(code, Some(1), "{report:#}");
    let message = failure(&report, "app");
    assert!(
        message.contains("ErrImagePull") || message.contains("ImagePullBackOff"),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(240));
    assert!(log_of(&fleet, "app").contains("ErrImagePull"));
    assert!(fleet.objects("pods").is_empty());
}

#[test]
fn sigterm_deletes_the_running_pod_and_its_secrets() {
    let (fleet, _stack) = kube_fleet(&[("app", 600)]);
    let mut apply = fleet.spawn("apply", &["apply"]);
    fleet.running_pod(&mut apply);
    apply.signal("TERM");
    apply
        .wait_timeout(Duration::from_secs(60))
        .expect("apply ends");
    assert!(fleet.objects("pods").is_empty(), "{}", apply.output());
    assert!(fleet.objects("secrets").is_empty());
    assert_eq!(statuses(&fleet, "app"), ["canceled"]);
}

#[test]
fn a_build_that_ended_while_kpackd_was_killed_is_adopted_not_redone() {
    let (fleet, _stack) = kube_fleet(&[("app", 5)]);
    let mut apply = fleet.spawn("apply", &["apply"]);
    let pod = fleet.running_pod(&mut apply);
    let name = pod["metadata"]["name"].as_str().unwrap().to_string();
    apply.signal("KILL");
    apply.wait_timeout(Duration::from_secs(10));
    wait_for("the Pod to succeed", Duration::from_secs(180), || {
        fleet
            .objects("pods")
            .iter()
            .find(|p| p["metadata"]["name"] == name.as_str())
            .filter(|p| p["status"]["phase"] == "Succeeded")
            .map(|_| ())
    });
    let output = fleet.kpackd(&["apply"]);
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ran on in its Pod"), "{stderr}");
    // One build, recorded from its Pod; no second Pod was made.
    assert_eq!(statuses(&fleet, "app"), ["succeeded"]);
    assert!(fleet.objects("pods").is_empty());
    assert!(fleet.objects("secrets").is_empty());
    assert!(log_of(&fleet, "app").contains("===> EXPORT"));
}

#[test]
fn no_more_pods_run_at_once_than_max_pods() {
    let (fleet, _stack) = kube_fleet(&[("one", 1), ("two", 1), ("three", 1)]);
    fleet.configure("kubernetes", 2, "");
    let mut apply = fleet.spawn("apply", &["apply", "--json"]);
    let mut most = 0;
    let status = loop {
        if let Some(status) = apply.wait_timeout(Duration::from_millis(50)) {
            break status;
        }
        most = most.max(fleet.objects("pods").len());
        assert!(
            apply.started.elapsed() < Duration::from_secs(600),
            "apply ends"
        );
    };
    assert!(status.success(), "{}", apply.output());
    assert!((1..=2).contains(&most), "{most} Pods at once");
    let report: Value = serde_json::from_str(&apply.stdout()).expect("a JSON report");
    for image in ["one", "two", "three"] {
        assert_eq!(result(&report, image)["status"], "succeeded");
    }
}

#[test]
fn a_build_still_running_after_kpackd_was_killed_is_followed_to_its_end() {
    let (fleet, _stack) = kube_fleet(&[("app", 8)]);
    let mut apply = fleet.spawn("apply", &["apply"]);
    fleet.running_pod(&mut apply);
    apply.signal("KILL");
    apply.wait_timeout(Duration::from_secs(10));
    let output = fleet.kpackd(&["apply"]);
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ran on in its Pod"), "{stderr}");
    assert_eq!(statuses(&fleet, "app"), ["succeeded"]);
    assert!(fleet.objects("pods").is_empty());
    let log = log_of(&fleet, "app");
    assert!(log.contains("following Pod kpackd-app-1"), "{log}");
    assert!(log.contains("===> EXPORT"), "{log}");
}
