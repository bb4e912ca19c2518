//! What the tests of the test API server and node share: a server with a kubectl set up
//! for it, plain HTTP requests, and a tiny image on the loopback registry.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::kube::ApiServer;
use testkit::registry::Registry;

/// A server and a kubectl configured for it, with its own discovery cache.
pub struct Cluster {
    pub server: ApiServer,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start() -> Cluster {
        testkit::require("kubectl", "kubernetes-client");
        let server = ApiServer::start();
        let dir = tempfile::tempdir().unwrap();
        server
            .write_kubeconfig(&dir.path().join("kubeconfig"))
            .unwrap();
        Cluster { server, dir }
    }

    pub fn kubectl_with(&self, args: &[&str], stdin: Option<&str>) -> Output {
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
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_stdin(args, None)
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_with(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// One request over HTTP/1.0: the status and the body.
    pub fn http(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
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

    pub fn json(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let (status, text) = self.http(method, path, body);
        (status, serde_json::from_str(&text).unwrap())
    }

    pub fn create_pod(&self, pod: &Value) -> Value {
        let (status, created) = self.json("POST", "/api/v1/namespaces/default/pods", Some(pod));
        assert_eq!(status, 201, "{created}");
        created
    }

    pub fn pod(&self, name: &str) -> Option<Value> {
        let (status, pod) = self.json(
            "GET",
            &format!("/api/v1/namespaces/default/pods/{name}"),
            None,
        );
        (status == 200).then_some(pod)
    }

    /// Polls the pod until `done` holds; panics with its last state after `limit`.
    pub fn wait_pod(&self, name: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
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

    pub fn wait_phase(&self, name: &str, phase: &str) -> Value {
        self.wait_pod(name, Duration::from_secs(120), |p| {
            p["status"]["phase"] == phase
        })
    }
}

/// A tiny image on the shared registry — bash, coreutils and their libraries, user
/// 1000:1000 — pinned by digest.
pub fn tiny_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| push_tiny_image(Registry::shared(), "kube/tiny"))
}

pub fn push_tiny_image(registry: &Registry, repository: &str) -> String {
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

pub fn run(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A pod of one container `main` running `script` with sh in the tiny image.
pub fn pod(name: &str, script: &str) -> Value {
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

pub fn terminated(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]["state"]["terminated"]
}

/// The event types and pod phases of a watch that ran to its timeout.
pub fn watch_events(cluster: &Cluster, path: &str) -> Vec<(String, Value)> {
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

pub fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Processes whose command line has `marker` in it.
pub fn processes_with(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(marker))
        .collect()
}
