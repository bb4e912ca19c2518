//! The test API server and node agent, driven by the real `kubectl` and by plain HTTP,
//! running real images from the loopback registry.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::kube::ApiServer;
use testkit::registry::Registry;

/// A server and a kubectl configured for it, with its own discovery cache.
struct Cluster {
    server: ApiServer,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        testkit::require("kubectl", "kubernetes-client");
        let server = ApiServer::start();
        let dir = tempfile::tempdir().unwrap();
        server
            .write_kubeconfig(&dir.path().join("kubeconfig"))
            .unwrap();
        Cluster { server, dir }
    }

    fn kubectl_with(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.dir.path().join("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .env("HOME", self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl");
        let mut input = child.stdin.take().unwrap();
        input
            .write_all(stdin.unwrap_or_default().as_bytes())
            .unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// kubectl's stdout; panics with its stderr when it fails.
    fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_stdin(args, None)
    }

    fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_with(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// One request over HTTP/1.0: the status and the body.
    fn http(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
        let addr = self.server.url().trim_start_matches("http://").to_string();
        let mut stream = TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, body.to_string())
    }

    fn json(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let (status, text) = self.http(method, path, body);
        (status, serde_json::from_str(&text).unwrap())
    }

    fn create_pod(&self, pod: &Value) -> Value {
        let (status, created) = self.json("POST", "/api/v1/namespaces/default/pods", Some(pod));
        assert_eq!(status, 201, "{created}");
        created
    }

    fn pod(&self, name: &str) -> Option<Value> {
        let (status, pod) = self.json(
            "GET",
            &format!("/api/v1/namespaces/default/pods/{name}"),
            None,
        );
        (status == 200).then_some(pod)
    }

    /// Polls the pod until `done` holds; panics with its last state after `limit`.
    fn wait_pod(&self, name: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let pod = self.pod(name).unwrap_or(Value::Null);
            if done(&pod) {
                return pod;
            }
            assert!(
                Instant::now() < deadline,
                "pod {name} never got there: {pod:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_phase(&self, name: &str, phase: &str) -> Value {
        self.wait_pod(name, Duration::from_secs(120), |p| {
            p["status"]["phase"] == phase
        })
    }
}

/// A tiny image on the shared registry — bash, coreutils and their libraries, user
/// 1000:1000 — pinned by digest.
fn tiny_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| push_tiny_image(Registry::shared(), "kube/tiny"))
}

fn push_tiny_image(registry: &Registry, repository: &str) -> String {
    testkit::require("umoci", "umoci");
    testkit::require("skopeo", "skopeo");
    let work = tempfile::tempdir().unwrap();
    let rootfs = work.path().join("rootfs");
    testkit::rootfs::minimal_rootfs(&rootfs, &[]).unwrap();
    let layout = work.path().join("layout");
    let image = format!("{}:tiny", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    run(Command::new("umoci")
        .args(["insert", "--rootless", "--image", &image])
        .arg(&rootfs)
        .arg("/"));
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--config.user",
        "1000:1000",
        "--config.env",
        "PATH=/usr/bin:/bin",
        "--config.env",
        "FROM_IMAGE=yes",
        "--config.entrypoint",
        "/bin/sh",
        "--config.entrypoint",
        "-c",
        "--config.cmd",
        "echo default command",
        "--config.workingdir",
        "/home/cnb",
    ]));
    let digest_file = work.path().join("digest");
    let mut push = Command::new("skopeo");
    push.args(["copy", "--quiet", "--dest-tls-verify=false"]);
    if let Some((user, password)) = registry.credentials() {
        push.arg("--dest-creds").arg(format!("{user}:{password}"));
    }
    run(push
        .arg("--digestfile")
        .arg(&digest_file)
        .arg(format!("oci:{image}"))
        .arg(format!("docker://{}:1", registry.repo(repository))));
    let digest = std::fs::read_to_string(&digest_file).unwrap();
    format!("{}@{}", registry.repo(repository), digest.trim())
}

fn run(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A pod of one container `main` running `script` with sh in the tiny image.
fn pod(name: &str, script: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"kpackd.dev/image": name, "kpackd.dev/build": "1"}},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000},
            "containers": [{
                "name": "main",
                "image": tiny_image(),
                "command": ["/bin/sh", "-c", script],
            }],
        },
    })
}

fn terminated(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]["state"]["terminated"]
}

#[test]
fn kubectl_creates_gets_follows_and_deletes() {
    let cluster = Cluster::start();
    let version = cluster.kubectl(&["version", "-o", "json"]);
    assert!(version.contains("v1.32.0"), "{version}");

    let secret =
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: greeting\nstringData:\n  word: hello\n";
    let created = cluster.kubectl_stdin(&["create", "-f", "-"], Some(secret));
    assert_eq!(created.trim(), "secret/greeting created");
    let secret: Value =
        serde_json::from_str(&cluster.kubectl(&["get", "secret", "greeting", "-o", "json"]))
            .unwrap();
    assert_eq!(secret["data"]["word"], "aGVsbG8=");
    assert_eq!(secret["type"], "Opaque");

    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: counter
  labels:
    kpackd.dev/image: counter
    kpackd.dev/lineage: abc
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: {}
    command: ["/bin/sh", "-c", "for i in 1 2 3; do echo line $i; sleep 0.5; done"]
"#,
        tiny_image()
    );
    let manifest_path = cluster.dir.path().join("pod.yaml");
    std::fs::write(&manifest_path, &manifest).unwrap();
    let applied = cluster.kubectl(&["apply", "-f", manifest_path.to_str().unwrap()]);
    assert!(applied.contains("pod/counter created"), "{applied}");

    let selected = cluster.kubectl(&[
        "get",
        "pods",
        "-l",
        "kpackd.dev/image=counter,kpackd.dev/lineage",
        "-o",
        "name",
    ]);
    assert_eq!(selected.trim(), "pod/counter");
    let none = cluster.kubectl(&["get", "pods", "-l", "kpackd.dev/image=other", "-o", "name"]);
    assert_eq!(none.trim(), "");
    let table = cluster.kubectl(&["get", "pods"]);
    assert!(
        table.contains("NAME") && table.contains("counter"),
        "{table}"
    );

    // kubectl's typed generators send protobuf.
    let created = cluster.kubectl(&["create", "namespace", "builds"]);
    assert_eq!(created.trim(), "namespace/builds created");
    cluster.kubectl(&[
        "create",
        "secret",
        "docker-registry",
        "registry",
        "-n",
        "builds",
        "--docker-server=127.0.0.1:5000",
        "--docker-username=builder",
        "--docker-password=s3cret",
    ]);
    cluster.kubectl(&[
        "create",
        "secret",
        "generic",
        "plain",
        "-n",
        "builds",
        "--from-literal=k=v",
    ]);
    let secrets: Value =
        serde_json::from_str(&cluster.kubectl(&["get", "secrets", "-n", "builds", "-o", "json"]))
            .unwrap();
    let types: Vec<&str> = secrets["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Opaque", "kubernetes.io/dockerconfigjson"]);
    assert_eq!(secrets["items"][0]["data"]["k"], "dg==");

    let got: Value =
        serde_json::from_str(&cluster.kubectl(&["get", "pod", "counter", "-o", "json"])).unwrap();
    assert_eq!(got["metadata"]["labels"]["kpackd.dev/lineage"], "abc");
    assert!(got["metadata"]["uid"]
        .as_str()
        .is_some_and(|u| u.len() == 36));
    assert!(
        got["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );

    // Applying a changed manifest patches the pod.
    std::fs::write(
        &manifest_path,
        manifest.replace("lineage: abc", "lineage: def"),
    )
    .unwrap();
    let applied = cluster.kubectl(&["apply", "-f", manifest_path.to_str().unwrap()]);
    assert!(applied.contains("pod/counter configured"), "{applied}");
    let relabelled = cluster.kubectl(&[
        "get",
        "pod",
        "counter",
        "-o",
        "jsonpath={.metadata.labels.kpackd\\.dev/lineage}",
    ]);
    assert_eq!(relabelled, "def");

    cluster.wait_pod("counter", Duration::from_secs(120), |p| {
        p["status"]["phase"] == "Running" || p["status"]["phase"] == "Succeeded"
    });
    let logs = cluster.kubectl(&["logs", "-f", "counter", "-c", "main"]);
    assert_eq!(logs, "line 1\nline 2\nline 3\n");
    let done = cluster.wait_phase("counter", "Succeeded");
    assert_eq!(terminated(&done)["reason"], "Completed");

    let deleted = cluster.kubectl(&["delete", "pod", "counter"]);
    assert!(deleted.contains("pod \"counter\" deleted"), "{deleted}");
    let missing = cluster.kubectl_with(&["get", "pod", "counter"], None);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("NotFound") && stderr.contains("\"counter\" not found"),
        "{stderr}"
    );
}

#[test]
fn kubectl_delete_kills_a_running_pod_and_waits_for_it_to_go() {
    let cluster = Cluster::start();
    cluster.create_pod(&pod("sleeper", "echo started; exec sleep 600"));
    cluster.wait_phase("sleeper", "Running");
    let started = Instant::now();
    cluster.kubectl(&["delete", "pod", "sleeper", "--timeout=30s"]);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(cluster.pod("sleeper").is_none());
}

#[test]
fn a_pod_runs_with_its_env_secret_volume_and_termination_message() {
    let cluster = Cluster::start();
    let (status, _) = cluster.json(
        "POST",
        "/api/v1/namespaces/default/secrets",
        Some(&json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "request"},
            "stringData": {"build.json": "{\"app\":\"hello\"}"},
        })),
    );
    assert_eq!(status, 201);
    let mut spec = pod(
        "build",
        "echo \"GREETING=$GREETING FROM_IMAGE=$FROM_IMAGE HOME_REF=$HOME_REF POD=$POD REQUEST=$REQUEST\"; \
         cat /request/build.json; echo; ls -l /request/build.json | cut -c1-10; id -u; id -g; pwd; \
         echo scratch > /scratch/file && cat /scratch/file; \
         printf 'sha256:1234' > /dev/termination-log",
    );
    spec["spec"]["containers"][0]["env"] = json!([
        {"name": "GREETING", "value": "hi"},
        {"name": "HOME_REF", "value": "$(GREETING)-there"},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "REQUEST", "valueFrom": {"secretKeyRef": {"name": "request", "key": "build.json"}}},
    ]);
    spec["spec"]["containers"][0]["volumeMounts"] = json!([
        {"name": "request", "mountPath": "/request", "readOnly": true},
        {"name": "scratch", "mountPath": "/scratch"},
    ]);
    spec["spec"]["volumes"] = json!([
        {"name": "request", "secret": {"secretName": "request", "defaultMode": 0o440}},
        {"name": "scratch", "emptyDir": {}},
    ]);
    let created = cluster.create_pod(&spec);
    assert_eq!(created["status"]["phase"], "Pending");
    assert!(created["metadata"]["resourceVersion"].is_string());
    assert!(created["metadata"]["creationTimestamp"].is_string());

    let done = cluster.wait_phase("build", "Succeeded");
    let state = terminated(&done);
    assert_eq!(state["exitCode"], 0);
    assert_eq!(state["reason"], "Completed");
    assert_eq!(state["message"], "sha256:1234");
    assert!(state["startedAt"].is_string() && state["finishedAt"].is_string());
    let image_id = done["status"]["containerStatuses"][0]["imageID"]
        .as_str()
        .unwrap();
    assert!(
        tiny_image().ends_with(image_id.rsplit('@').next().unwrap()),
        "{image_id}"
    );

    let (status, log) = cluster.http("GET", "/api/v1/namespaces/default/pods/build/log", None);
    assert_eq!(status, 200);
    assert_eq!(
        log,
        "GREETING=hi FROM_IMAGE=yes HOME_REF=hi-there POD=build REQUEST={\"app\":\"hello\"}\n{\"app\":\"hello\"}\n-r--r-----\n1000\n1000\n/home/cnb\nscratch\n"
    );
}

#[test]
fn the_image_entrypoint_and_cmd_run_when_the_pod_names_no_command() {
    let cluster = Cluster::start();
    let mut spec = pod("defaults", "");
    let container = spec["spec"]["containers"][0].as_object_mut().unwrap();
    container.remove("command");
    cluster.create_pod(&spec);
    cluster.wait_phase("defaults", "Succeeded");
    let (_, log) = cluster.http("GET", "/api/v1/namespaces/default/pods/defaults/log", None);
    assert_eq!(log, "default command\n");
}

#[test]
fn a_failing_container_fails_the_pod_with_its_exit_code() {
    let cluster = Cluster::start();
    cluster.create_pod(&pod("failing", "echo about to fail >&2; exit 3"));
    let failed = cluster.wait_phase("failing", "Failed");
    assert_eq!(terminated(&failed)["exitCode"], 3);
    assert_eq!(terminated(&failed)["reason"], "Error");
    let logs = cluster.kubectl(&["logs", "failing"]);
    assert_eq!(logs, "about to fail\n");
}

#[test]
fn an_image_that_cannot_be_pulled_leaves_the_pod_pending() {
    let cluster = Cluster::start();
    let mut spec = pod("unpullable", "true");
    spec["spec"]["containers"][0]["image"] = json!(format!(
        "{}:missing",
        Registry::shared().repo("kube/nothing-here")
    ));
    cluster.create_pod(&spec);
    let pending = cluster.wait_pod("unpullable", Duration::from_secs(120), |p| {
        let reason = &p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"];
        reason == "ErrImagePull" || reason == "ImagePullBackOff"
    });
    assert_eq!(pending["status"]["phase"], "Pending");
    let (status, error) = cluster.json(
        "GET",
        "/api/v1/namespaces/default/pods/unpullable/log",
        None,
    );
    assert_eq!(status, 400, "{error}");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("waiting to start"));
}

#[test]
fn the_active_deadline_kills_the_pod() {
    let cluster = Cluster::start();
    let mut spec = pod("slow", "echo working; exec sleep 600");
    spec["spec"]["activeDeadlineSeconds"] = json!(3);
    cluster.create_pod(&spec);
    let failed = cluster.wait_phase("slow", "Failed");
    assert_eq!(failed["status"]["reason"], "DeadlineExceeded");
    assert_eq!(terminated(&failed)["exitCode"], 137);
}

#[test]
fn an_evicted_pod_fails() {
    let cluster = Cluster::start();
    cluster.create_pod(&pod("evictee", "exec sleep 600"));
    cluster.wait_phase("evictee", "Running");
    assert!(cluster.server.evict("default", "evictee"));
    let failed = cluster.wait_phase("evictee", "Failed");
    assert_eq!(failed["status"]["reason"], "Evicted");
    assert!(failed["status"]["message"]
        .as_str()
        .unwrap()
        .contains("low on resource"));
}

#[test]
fn run_as_non_root_refuses_a_root_user() {
    let cluster = Cluster::start();
    let mut spec = pod("rooted", "true");
    spec["spec"]["securityContext"]["runAsUser"] = json!(0);
    cluster.create_pod(&spec);
    cluster.wait_pod("rooted", Duration::from_secs(120), |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            == "CreateContainerConfigError"
    });
}

/// The event types and pod phases of a watch that ran to its timeout.
fn watch_events(cluster: &Cluster, path: &str) -> Vec<(String, Value)> {
    let (status, body) = cluster.http("GET", path, None);
    assert_eq!(status, 200, "{body}");
    body.lines()
        .map(|line| {
            let event: Value = serde_json::from_str(line).unwrap();
            (
                event["type"].as_str().unwrap().to_string(),
                event["object"].clone(),
            )
        })
        .collect()
}

#[test]
fn a_watch_from_a_resource_version_sees_added_modified_and_deleted() {
    let cluster = Cluster::start();
    let (_, list) = cluster.json("GET", "/api/v1/namespaces/default/pods", None);
    let from = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    cluster.create_pod(&pod("watched", "echo hi"));
    cluster.wait_phase("watched", "Succeeded");
    let (status, _) = cluster.http("DELETE", "/api/v1/namespaces/default/pods/watched", None);
    assert_eq!(status, 200);
    cluster.wait_pod("watched", Duration::from_secs(30), Value::is_null);

    let events = watch_events(
        &cluster,
        &format!("/api/v1/namespaces/default/pods?watch=true&resourceVersion={from}&timeoutSeconds=1&labelSelector=kpackd.dev%2Fimage%3Dwatched"),
    );
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"ADDED"));
    assert_eq!(kinds.last(), Some(&"DELETED"));
    assert!(kinds[1..kinds.len() - 1].iter().all(|k| *k == "MODIFIED"));
    let phases: Vec<&str> = events
        .iter()
        .filter_map(|(_, o)| o["status"]["phase"].as_str())
        .collect();
    assert!(
        phases.contains(&"Running") && phases.contains(&"Succeeded"),
        "{phases:?}"
    );
    let versions: Vec<u64> = events
        .iter()
        .map(|(_, o)| {
            o["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");

    // A watch that is open when the change happens.
    let now = cluster.server.resource_version();
    let path = format!(
        "/api/v1/namespaces/default/secrets?watch=1&resourceVersion={now}&timeoutSeconds=3"
    );
    let watcher = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| watch_events(&cluster, &path));
        std::thread::sleep(Duration::from_millis(500));
        let (status, _) = cluster.json(
            "POST",
            "/api/v1/namespaces/default/secrets",
            Some(&json!({"metadata": {"name": "live"}, "data": {"a": "Yg=="}})),
        );
        assert_eq!(status, 201);
        watcher.join().unwrap()
    });
    assert_eq!(watcher.len(), 1);
    assert_eq!(watcher[0].0, "ADDED");
    assert_eq!(watcher[0].1["metadata"]["name"], "live");
}

#[test]
fn an_expired_resource_version_is_gone() {
    let cluster = Cluster::start();
    cluster.json(
        "POST",
        "/api/v1/namespaces/default/secrets",
        Some(&json!({"metadata": {"name": "old"}})),
    );
    cluster.server.compact();
    let events = watch_events(
        &cluster,
        "/api/v1/namespaces/default/secrets?watch=true&resourceVersion=1",
    );
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "ERROR");
    assert_eq!(events[0].1["kind"], "Status");
    assert_eq!(events[0].1["code"], 410);
    assert_eq!(events[0].1["reason"], "Expired");

    let (status, gone) = cluster.json(
        "GET",
        "/api/v1/namespaces/default/secrets?resourceVersion=1&resourceVersionMatch=Exact",
        None,
    );
    assert_eq!(status, 410);
    assert_eq!(gone["code"], 410);

    // From the current resourceVersion on, nothing is missing.
    let now = cluster.server.resource_version();
    let events = watch_events(
        &cluster,
        &format!(
            "/api/v1/namespaces/default/secrets?watch=true&resourceVersion={now}&timeoutSeconds=1"
        ),
    );
    assert!(events.is_empty());
}

#[test]
fn errors_are_status_objects() {
    let cluster = Cluster::start();
    let (status, missing) = cluster.json("GET", "/api/v1/namespaces/default/pods/nope", None);
    assert_eq!(status, 404);
    assert_eq!(missing["kind"], "Status");
    assert_eq!(missing["reason"], "NotFound");
    assert_eq!(missing["details"]["name"], "nope");

    let (status, invalid) = cluster.json(
        "POST",
        "/api/v1/namespaces/default/pods",
        Some(&json!({"metadata": {"name": "empty"}, "spec": {}})),
    );
    assert_eq!(status, 422);
    assert_eq!(invalid["reason"], "Invalid");
    assert_eq!(invalid["details"]["causes"][0]["field"], "spec.containers");

    let secret = json!({"metadata": {"name": "twice"}, "stringData": {"a": "b"}});
    let (status, _) = cluster.json("POST", "/api/v1/namespaces/default/secrets", Some(&secret));
    assert_eq!(status, 201);
    let (status, conflict) =
        cluster.json("POST", "/api/v1/namespaces/default/secrets", Some(&secret));
    assert_eq!(status, 409);
    assert_eq!(conflict["reason"], "AlreadyExists");

    let (status, _) = cluster.json(
        "POST",
        "/api/v1/namespaces/elsewhere/secrets",
        Some(&secret),
    );
    assert_eq!(status, 404);
    let (status, _) = cluster.json(
        "POST",
        "/api/v1/namespaces",
        Some(&json!({"metadata": {"name": "elsewhere"}})),
    );
    assert_eq!(status, 201);
    let (status, _) = cluster.json(
        "POST",
        "/api/v1/namespaces/elsewhere/secrets",
        Some(&secret),
    );
    assert_eq!(status, 201);

    let (status, deleted) =
        cluster.json("DELETE", "/api/v1/namespaces/default/secrets/twice", None);
    assert_eq!(status, 200);
    assert_eq!(deleted["metadata"]["name"], "twice");
    let (status, _) = cluster.json("DELETE", "/api/v1/namespaces/default/secrets/twice", None);
    assert_eq!(status, 404);
}

#[test]
fn a_pull_secret_lets_the_node_pull_from_a_registry_with_auth() {
    let registry = Registry::start_with_auth("builder", "s3cret");
    let image = push_tiny_image(&registry, "kube/private");
    let cluster = Cluster::start();
    let auth = base64_encode(b"builder:s3cret");
    let config = json!({"auths": {registry.addr(): {"auth": auth}}}).to_string();
    let (status, created) = cluster.json(
        "POST",
        "/api/v1/namespaces/default/secrets",
        Some(&json!({
            "metadata": {"name": "registry"},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64_encode(config.as_bytes())},
        })),
    );
    assert_eq!(status, 201, "{created}");

    let mut with = pod("authenticated", "echo pulled");
    with["spec"]["containers"][0]["image"] = json!(image);
    with["spec"]["imagePullSecrets"] = json!([{"name": "registry"}]);
    cluster.create_pod(&with);
    // Pulled again, not taken from what the other pod pulled.
    let mut without = pod("anonymous", "echo pulled");
    without["spec"]["containers"][0]["image"] = json!(image);
    without["spec"]["containers"][0]["imagePullPolicy"] = json!("Always");
    cluster.create_pod(&without);

    cluster.wait_phase("authenticated", "Succeeded");
    let refused = cluster.wait_pod("anonymous", Duration::from_secs(120), |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImagePull"
    });
    assert_eq!(refused["status"]["phase"], "Pending");
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn updates_check_the_resource_version_and_what_may_change() {
    let cluster = Cluster::start();
    cluster.create_pod(&pod("labelled", "exec sleep 600"));
    let labelled = cluster.kubectl(&["label", "pod", "labelled", "kpackd.dev/lineage=l1"]);
    assert!(labelled.contains("pod/labelled labeled"), "{labelled}");
    cluster.kubectl(&["annotate", "pod", "labelled", "note=kept"]);
    let pod = cluster.pod("labelled").unwrap();
    assert_eq!(pod["metadata"]["labels"]["kpackd.dev/lineage"], "l1");
    assert_eq!(pod["metadata"]["annotations"]["note"], "kept");

    let mut stale = pod.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    let (status, conflict) = cluster.json(
        "PUT",
        "/api/v1/namespaces/default/pods/labelled",
        Some(&stale),
    );
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["reason"], "Conflict");

    let mut respecced = cluster.pod("labelled").unwrap();
    respecced["spec"]["restartPolicy"] = json!("Always");
    let (status, invalid) = cluster.json(
        "PUT",
        "/api/v1/namespaces/default/pods/labelled",
        Some(&respecced),
    );
    assert_eq!(status, 422, "{invalid}");

    let (status, _) = cluster.json(
        "POST",
        "/api/v1/namespaces/default/secrets",
        Some(&json!({"metadata": {"name": "s"}, "stringData": {"a": "1"}})),
    );
    assert_eq!(status, 201);
    let patch = r#"{"stringData":{"b":"2"}}"#;
    cluster.kubectl(&["patch", "secret", "s", "--type=merge", "-p", patch]);
    let secret: Value =
        serde_json::from_str(&cluster.kubectl(&["get", "secret", "s", "-o", "json"])).unwrap();
    assert_eq!(secret["data"], json!({"a": "MQ==", "b": "Mg=="}));
    cluster.kubectl(&["delete", "pod", "labelled"]);
}

#[test]
fn deleting_an_owner_deletes_what_it_owns() {
    let cluster = Cluster::start();
    let owner = cluster.create_pod(&pod("owner", "exec sleep 600"));
    let (status, _) = cluster.json(
        "POST",
        "/api/v1/namespaces/default/secrets",
        Some(&json!({
            "metadata": {"name": "owned", "ownerReferences": [{
                "apiVersion": "v1", "kind": "Pod", "name": "owner",
                "uid": owner["metadata"]["uid"], "controller": true,
            }]},
            "stringData": {"request": "{}"},
        })),
    );
    assert_eq!(status, 201);
    cluster.wait_phase("owner", "Running");
    cluster.kubectl(&["delete", "pod", "owner"]);
    let (status, _) = cluster.http("GET", "/api/v1/namespaces/default/secrets/owned", None);
    assert_eq!(status, 404);
}

#[test]
fn deleting_a_namespace_deletes_what_is_in_it() {
    let cluster = Cluster::start();
    cluster.kubectl(&["create", "namespace", "scratch"]);
    cluster.kubectl(&[
        "create",
        "secret",
        "generic",
        "s",
        "-n",
        "scratch",
        "--from-literal=a=b",
    ]);
    let mut sleeper = pod("sleeper", "exec sleep 600");
    sleeper["metadata"]["namespace"] = json!("scratch");
    let (status, _) = cluster.json("POST", "/api/v1/namespaces/scratch/pods", Some(&sleeper));
    assert_eq!(status, 201);
    let deleted = cluster.kubectl(&["delete", "namespace", "scratch", "--timeout=60s"]);
    assert!(
        deleted.contains("namespace \"scratch\" deleted"),
        "{deleted}"
    );
    for path in [
        "/api/v1/namespaces/scratch",
        "/api/v1/namespaces/scratch/pods/sleeper",
        "/api/v1/namespaces/scratch/secrets/s",
    ] {
        let (status, _) = cluster.http("GET", path, None);
        assert_eq!(status, 404, "{path}");
    }
}

#[test]
fn a_watch_with_a_selector_sees_objects_enter_and_leave_it() {
    let cluster = Cluster::start();
    let from = cluster.server.resource_version();
    let secret =
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: moving\n  labels:\n    tier: a\n";
    cluster.kubectl_stdin(&["create", "-f", "-"], Some(secret));
    cluster.kubectl(&["label", "--overwrite", "secret", "moving", "tier=b"]);
    cluster.kubectl(&["label", "--overwrite", "secret", "moving", "tier=a"]);
    cluster.kubectl(&["create", "secret", "generic", "unlabelled"]);
    cluster.kubectl(&["delete", "secret", "moving"]);
    let events = watch_events(
        &cluster,
        &format!("/api/v1/namespaces/default/secrets?watch=1&labelSelector=tier%3Da&resourceVersion={from}&timeoutSeconds=1"),
    );
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|(kind, o)| {
            (
                kind.as_str(),
                o["metadata"]["labels"]["tier"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("ADDED", "a"),
            ("DELETED", "b"),
            ("ADDED", "a"),
            ("DELETED", "a")
        ]
    );
}

#[test]
fn pulled_images_are_kept_as_the_pull_policy_says() {
    let cluster = Cluster::start();
    cluster.create_pod(&pod("first", "echo first"));
    cluster.wait_phase("first", "Succeeded");
    let mut cached = pod("cached", "echo cached");
    cached["spec"]["containers"][0]["imagePullPolicy"] = json!("Never");
    cluster.create_pod(&cached);
    let done = cluster.wait_phase("cached", "Succeeded");
    let first = cluster.pod("first").unwrap();
    assert_eq!(
        done["status"]["containerStatuses"][0]["imageID"],
        first["status"]["containerStatuses"][0]["imageID"]
    );

    let mut absent = pod("absent", "true");
    absent["spec"]["containers"][0]["image"] =
        json!(format!("{}:other", Registry::shared().repo("kube/tiny")));
    absent["spec"]["containers"][0]["imagePullPolicy"] = json!("Never");
    cluster.create_pod(&absent);
    let waiting = cluster.wait_pod("absent", Duration::from_secs(120), |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImageNeverPull"
    });
    assert_eq!(waiting["status"]["phase"], "Pending");
}

/// Processes whose command line has `marker` in it.
fn processes_with(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(marker))
        .collect()
}

#[test]
fn pods_stopped_as_they_start_leave_no_process_behind() {
    let cluster = Cluster::start();
    let marker = format!("marker-{}", std::process::id());
    let names: Vec<String> = (0..6).map(|i| format!("racer-{i}")).collect();
    for name in &names {
        cluster.create_pod(&pod(name, &format!("exec sleep 600 # {marker}")));
    }
    for (i, name) in names.iter().enumerate() {
        cluster.wait_phase(name, "Running");
        if i % 2 == 0 {
            cluster.http(
                "DELETE",
                &format!("/api/v1/namespaces/default/pods/{name}"),
                None,
            );
        } else {
            assert!(cluster.server.evict("default", name));
        }
    }
    for (i, name) in names.iter().enumerate() {
        if i % 2 == 0 {
            cluster.wait_pod(name, Duration::from_secs(60), Value::is_null);
        } else {
            cluster.wait_phase(name, "Failed");
        }
    }
    assert_eq!(processes_with(&marker), Vec::<String>::new());
}
