//! Watch mode against a fake [`Reconciler`] that records what it is asked: the trait is
//! the seam between the watch loop and plan+apply, so a test double belongs here.
//! Files, HTTP and timers are real (with short intervals).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::watch::{
    github_signature, BuildOutcome, BuildReport, CancellationToken, ConfigSummary, ReconcileReport,
    Reconciler, TriggerError, Upstream, UpstreamError, Wake, Watch, WatchError, WatchOptions,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const HOUR: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Reload(Result<(), String>),
    /// The wake, and the configuration text in force.
    Reconcile(Wake, String),
    Trigger(String),
}

/// A reconciler whose configuration is "valid unless it contains `invalid`".
struct Fake {
    summary: ConfigSummary,
    calls: mpsc::UnboundedSender<Call>,
    /// The last good configuration text.
    good: Mutex<String>,
    /// Upstreams whose resolution fails.
    failing: Mutex<BTreeSet<Upstream>>,
    /// How long each reconcile takes (unless canceled).
    delay: Duration,
    /// Builds every reconcile reports.
    builds: Vec<BuildReport>,
    /// When each reconcile started, and what it polled.
    polls: Mutex<Vec<(Instant, BTreeSet<Upstream>)>>,
}

impl Reconciler for Fake {
    async fn reload(&self) -> Result<ConfigSummary, String> {
        let text = std::fs::read_to_string(&self.summary.config_file).map_err(|e| e.to_string());
        let result = match text {
            Ok(text) if text.contains("invalid") => {
                Err("kpack.toml:1:1: unknown key `invalid`".to_string())
            }
            Ok(text) => {
                *self.good.lock().unwrap() = text;
                Ok(self.summary.clone())
            }
            Err(e) => Err(e),
        };
        let _ = self.calls.send(Call::Reload(
            result.as_ref().map(|_| ()).map_err(Clone::clone),
        ));
        result
    }

    async fn reconcile(&self, wake: Wake, cancel: CancellationToken) -> ReconcileReport {
        let text = self.good.lock().unwrap().clone();
        self.polls
            .lock()
            .unwrap()
            .push((Instant::now(), wake.polls.clone()));
        let _ = self.calls.send(Call::Reconcile(wake.clone(), text));
        tokio::select! {
            () = tokio::time::sleep(self.delay) => {}
            () = cancel.cancelled() => {}
        }
        let failing = self.failing.lock().unwrap().clone();
        let upstream_errors = wake
            .polls
            .iter()
            .filter(|u| failing.contains(*u))
            .map(|u| UpstreamError {
                upstream: u.clone(),
                message: "connection refused".into(),
            })
            .collect();
        ReconcileReport {
            builds: self.builds.clone(),
            upstream_errors,
            error: None,
        }
    }

    async fn trigger(&self, image: &str) -> Result<(), TriggerError> {
        if image != "hello" {
            return Err(TriggerError::UnknownImage(image.to_string()));
        }
        let _ = self.calls.send(Call::Trigger(image.to_string()));
        Ok(())
    }

    async fn status(&self) -> serde_json::Value {
        json!({ "images": { "hello": { "tag": "localhost:5000/hello" } } })
    }

    fn queue_length(&self) -> usize {
        3
    }
}

struct Harness {
    dir: tempfile::TempDir,
    config: PathBuf,
    addr: std::net::SocketAddr,
    calls: mpsc::UnboundedReceiver<Call>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), WatchError>>,
    fake: Arc<Fake>,
}

struct Setup {
    upstreams: Vec<Upstream>,
    interval: Duration,
    delay: Duration,
    builds: Vec<BuildReport>,
    secret: Option<String>,
    failing: Vec<Upstream>,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            upstreams: Vec::new(),
            interval: HOUR,
            delay: Duration::ZERO,
            builds: Vec::new(),
            secret: None,
            failing: Vec::new(),
        }
    }
}

/// A config dir holding `kpack.toml`, a path source `app/` and a state dir
/// `app/.kpackd` (ignored); watch started on it, its startup reconcile seen.
async fn start(setup: Setup) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kpack.toml");
    std::fs::write(&config, "# version 1\n").unwrap();
    let app = dir.path().join("app");
    std::fs::create_dir_all(app.join(".kpackd")).unwrap();
    std::fs::write(app.join("main.py"), "print('hi')\n").unwrap();
    let (tx, calls) = mpsc::unbounded_channel();
    let fake = Arc::new(Fake {
        summary: ConfigSummary {
            config_file: config.clone(),
            local_paths: BTreeSet::from([app.clone()]),
            ignored: BTreeSet::from([app.join(".kpackd")]),
            upstreams: setup.upstreams.into_iter().collect(),
            poll_interval: setup.interval,
            doorbell: None,
        },
        calls: tx,
        good: Mutex::new(String::new()),
        failing: Mutex::new(setup.failing.into_iter().collect()),
        delay: setup.delay,
        builds: setup.builds,
        polls: Mutex::new(Vec::new()),
    });
    let watch = Watch::bind(WatchOptions {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        webhook_secret: setup.secret,
        debounce: Duration::from_millis(100),
        grace: Duration::from_secs(5),
        ..WatchOptions::default()
    })
    .await
    .unwrap();
    let addr = watch.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(watch.run(fake.clone(), shutdown.clone()));
    let mut harness = Harness {
        dir,
        config,
        addr,
        calls,
        shutdown,
        task,
        fake,
    };
    assert_eq!(harness.next().await, Call::Reload(Ok(())));
    match harness.next().await {
        Call::Reconcile(wake, _) => assert!(wake.startup, "{wake:?}"),
        other => panic!("expected the startup reconcile, got {other:?}"),
    }
    // Let notify settle its watches before the test changes files.
    tokio::time::sleep(Duration::from_millis(150)).await;
    harness
}

impl Harness {
    async fn next(&mut self) -> Call {
        self.next_within(Duration::from_secs(5))
            .await
            .expect("a call within 5 s")
    }

    async fn next_within(&mut self, limit: Duration) -> Option<Call> {
        tokio::time::timeout(limit, self.calls.recv())
            .await
            .ok()
            .flatten()
    }

    async fn next_reconcile(&mut self) -> (Wake, String) {
        loop {
            if let Call::Reconcile(wake, text) = self.next().await {
                return (wake, text);
            }
        }
    }

    /// How an editor saves: write a temporary file, rename it over the original.
    fn atomic_save(&self, text: &str) {
        let tmp = self.dir.path().join(".kpack.toml.swp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    async fn get(&self, path: &str) -> (u16, String) {
        request(self.addr, "GET", path, &[], b"").await
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
        request(self.addr, "POST", path, headers, body).await
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("watch stops within 5 s")
            .unwrap();
        assert!(result.is_ok(), "{result:?}");
    }
}

/// A minimal HTTP/1.1 client: one request per connection.
async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (413) and close before reading a large body.
    let _ = stream.write_all(body).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap()
}

#[tokio::test]
async fn an_atomic_save_of_the_config_reloads_and_reconciles_within_a_second() {
    let mut h = start(Setup::default()).await;
    let saved = Instant::now();
    h.atomic_save("# version 2\n");
    assert_eq!(h.next().await, Call::Reload(Ok(())));
    let (wake, text) = h.next_reconcile().await;
    let latency = saved.elapsed();
    assert!(wake.config_changed, "{wake:?}");
    assert_eq!(text, "# version 2\n");
    assert!(latency < Duration::from_secs(1), "took {latency:?}");
    // One save, one reload: nothing else follows.
    assert_eq!(h.next_within(Duration::from_millis(400)).await, None);

    // A plain in-place write counts too.
    std::fs::write(&h.config, "# version 3\n").unwrap();
    assert_eq!(h.next().await, Call::Reload(Ok(())));
    assert_eq!(h.next_reconcile().await.1, "# version 3\n");
    h.stop().await;
}

#[tokio::test]
async fn an_invalid_edit_is_reported_and_the_last_good_config_keeps_running() {
    let mut h = start(Setup::default()).await;
    h.atomic_save("invalid = true\n");
    match h.next().await {
        Call::Reload(Err(diagnostic)) => {
            assert!(diagnostic.contains("unknown key"), "{diagnostic}")
        }
        other => panic!("expected a failed reload, got {other:?}"),
    }
    assert_eq!(h.next_within(Duration::from_millis(500)).await, None);

    let (status, body) = h.get("/status").await;
    assert_eq!(status, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        status["watch"]["config_error"],
        "kpack.toml:1:1: unknown key `invalid`"
    );
    let (_, metrics) = h.get("/metrics").await;
    assert!(
        metrics.contains("kpackd_config_reload_errors_total 1\n"),
        "{metrics}"
    );

    // A trigger still reconciles, with the last good configuration.
    assert_eq!(h.post("/images/hello/trigger", &[], b"").await.0, 202);
    assert_eq!(h.next().await, Call::Trigger("hello".into()));
    let (wake, text) = h.next_reconcile().await;
    assert!(!wake.config_changed);
    assert_eq!(text, "# version 1\n");

    // Fixing the file clears the error.
    h.atomic_save("# fixed\n");
    assert_eq!(h.next().await, Call::Reload(Ok(())));
    assert_eq!(h.next_reconcile().await.1, "# fixed\n");
    let (_, body) = h.get("/status").await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["watch"]["config_error"], serde_json::Value::Null);
    h.stop().await;
}

#[tokio::test]
async fn a_change_in_a_path_source_reconciles_but_not_in_the_state_dir() {
    let mut h = start(Setup::default()).await;
    let app = h.dir.path().join("app");
    std::fs::write(app.join(".kpackd").join("state.db"), "x").unwrap();
    std::fs::create_dir_all(app.join(".git")).unwrap();
    std::fs::write(app.join(".git").join("index"), "x").unwrap();
    assert_eq!(h.next_within(Duration::from_millis(500)).await, None);

    std::fs::create_dir_all(app.join("lib")).unwrap();
    std::fs::write(app.join("lib").join("util.py"), "x = 1\n").unwrap();
    let (wake, _) = h.next_reconcile().await;
    assert_eq!(wake.paths_changed, BTreeSet::from([canonical(&app)]));
    h.stop().await;
}

#[tokio::test]
async fn a_github_push_webhook_polls_that_repository() {
    let app = Upstream::Git("https://github.com/acme/app.git".into());
    let other = Upstream::Git("git@github.com:acme/other.git".into());
    let stack = Upstream::Registry("localhost:5000/stacks/run:latest".into());
    let mut h = start(Setup {
        upstreams: vec![app.clone(), other.clone(), stack],
        ..Setup::default()
    })
    .await;
    let payload = json!({
        "ref": "refs/heads/main",
        "after": "0123456789abcdef0123456789abcdef01234567",
        "repository": {
            "full_name": "acme/app",
            "html_url": "https://github.com/acme/app",
            "clone_url": "https://github.com/acme/app.git",
            "ssh_url": "git@github.com:acme/app.git"
        }
    })
    .to_string();
    let sent = Instant::now();
    let (status, body) = h
        .post(
            "/hooks/git",
            &[
                ("X-GitHub-Event", "push"),
                ("Content-Type", "application/json"),
            ],
            payload.as_bytes(),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["polled"], json!([app.to_string()]));
    let (wake, _) = h.next_reconcile().await;
    assert!(sent.elapsed() < Duration::from_secs(1));
    assert_eq!(wake.polls, BTreeSet::from([app.clone()]));

    // GitLab names the other one over ssh.
    let gitlab = json!({ "project": { "git_ssh_url": "git@github.com:acme/other.git" } });
    let (status, _) = h
        .post("/hooks/git", &[], gitlab.to_string().as_bytes())
        .await;
    assert_eq!(status, 202);
    assert_eq!(
        h.next_reconcile().await.0.polls,
        BTreeSet::from([other.clone()])
    );

    // An empty body polls every git upstream.
    let (status, body) = h.post("/hooks/git", &[], b"").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        h.next_reconcile().await.0.polls,
        BTreeSet::from([app, other])
    );

    assert_eq!(h.post("/hooks/git", &[], b"{not json").await.0, 400);
    h.stop().await;
}

#[tokio::test]
async fn with_a_secret_webhooks_must_be_signed() {
    let app = Upstream::Git("https://github.com/acme/app.git".into());
    let mut h = start(Setup {
        upstreams: vec![app.clone()],
        secret: Some("s3cret".into()),
        ..Setup::default()
    })
    .await;
    let payload = br#"{"repository":{"clone_url":"https://github.com/acme/app.git"}}"#;
    assert_eq!(h.post("/hooks/git", &[], payload).await.0, 401);
    let wrong = github_signature("guess", payload);
    assert_eq!(
        h.post("/hooks/git", &[("X-Hub-Signature-256", &wrong)], payload)
            .await
            .0,
        401
    );
    assert_eq!(h.next_within(Duration::from_millis(300)).await, None);
    let signature = github_signature("s3cret", payload);
    let (status, _) = h
        .post(
            "/hooks/git",
            &[("X-Hub-Signature-256", &signature)],
            payload,
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(h.next_reconcile().await.0.polls, BTreeSet::from([app]));
    // Triggers need it too.
    assert_eq!(h.post("/images/hello/trigger", &[], b"").await.0, 401);
    let (status, _) = h
        .post(
            "/images/hello/trigger",
            &[("Authorization", "Bearer s3cret")],
            b"",
        )
        .await;
    assert_eq!(status, 202);
    h.stop().await;
}

#[tokio::test]
async fn a_trigger_marks_the_image_and_reconciles() {
    let mut h = start(Setup::default()).await;
    let (status, body) = h.post("/images/hello/trigger", &[], b"").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(h.next().await, Call::Trigger("hello".into()));
    let (wake, _) = h.next_reconcile().await;
    assert_eq!(wake.triggers, BTreeSet::from(["hello".to_string()]));

    let (status, body) = h.post("/images/nope/trigger", &[], b"").await;
    assert_eq!(status, 404);
    assert!(body.contains("no image named"), "{body}");
    assert_eq!(h.get("/images/hello/trigger").await.0, 405);
    assert_eq!(h.next_within(Duration::from_millis(300)).await, None);
    h.stop().await;
}

#[tokio::test]
async fn healthz_status_and_unknown_routes() {
    let h = start(Setup::default()).await;
    assert_eq!(h.get("/healthz").await, (200, "ok\n".to_string()));
    let (status, body) = h.get("/status").await;
    assert_eq!(status, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["images"]["hello"]["tag"], "localhost:5000/hello");
    assert_eq!(status["watch"]["running"], serde_json::Value::Null);
    assert_eq!(h.get("/nope").await.0, 404);
    assert_eq!(h.post("/healthz", &[], b"").await.0, 405);
    h.stop().await;
}

#[tokio::test]
async fn bodies_over_one_mebibyte_are_refused() {
    let mut h = start(Setup::default()).await;
    let big = vec![b' '; engine::watch::MAX_BODY + 1];
    assert_eq!(h.post("/hooks/git", &[], &big).await.0, 413);
    // Chunked, so that only reading tells the size.
    let mut stream = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let head = "POST /hooks/git HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..3 {
        let chunk = vec![b' '; 512 * 1024];
        let _ = stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await;
        let _ = stream.write_all(&chunk).await;
        let _ = stream.write_all(b"\r\n").await;
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert_eq!(h.next_within(Duration::from_millis(300)).await, None);
    h.stop().await;
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let builds = vec![
        BuildReport {
            image: "hello".into(),
            outcome: BuildOutcome::Succeeded,
            reasons: vec!["COMMIT".into()],
            duration: Duration::from_secs(42),
        },
        BuildReport {
            image: "worker".into(),
            outcome: BuildOutcome::Failed,
            reasons: vec!["CONFIG".into(), "STACK".into()],
            duration: Duration::from_millis(1500),
        },
    ];
    let h = start(Setup {
        builds,
        ..Setup::default()
    })
    .await;
    let (status, text) = h.get("/metrics").await;
    assert_eq!(status, 200);

    let samples = parse_prometheus(&text);
    let value = |name: &str| {
        samples
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
    };
    assert_eq!(
        value(r#"kpackd_builds_total{outcome="succeeded",reason="COMMIT"}"#),
        1.0
    );
    assert_eq!(
        value(r#"kpackd_builds_total{outcome="failed",reason="CONFIG,STACK"}"#),
        1.0
    );
    assert_eq!(value("kpackd_reconciles_total"), 1.0);
    assert_eq!(value("kpackd_queue_length"), 3.0);
    assert_eq!(value("kpackd_build_duration_seconds_count"), 2.0);
    assert_eq!(value("kpackd_build_duration_seconds_sum"), 43.5);
    assert_eq!(
        value(r#"kpackd_build_duration_seconds_bucket{le="1"}"#),
        0.0
    );
    assert_eq!(
        value(r#"kpackd_build_duration_seconds_bucket{le="5"}"#),
        1.0
    );
    assert_eq!(
        value(r#"kpackd_build_duration_seconds_bucket{le="60"}"#),
        2.0
    );
    assert_eq!(
        value(r#"kpackd_build_duration_seconds_bucket{le="+Inf"}"#),
        2.0
    );
    for kind in [
        "# TYPE kpackd_builds_total counter",
        "# TYPE kpackd_build_duration_seconds histogram",
        "# TYPE kpackd_upstream_poll_errors_total counter",
        "# TYPE kpackd_queue_length gauge",
        "# TYPE kpackd_reconciles_total counter",
    ] {
        assert!(text.contains(kind), "{kind} missing in\n{text}");
    }
    h.stop().await;
}

/// Checks every line is a comment or `name{labels} value`, and returns the samples.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unterminated labels in {line:?}");
            let mut labels = &series[name_end + 1..series.len() - 1];
            while !labels.is_empty() {
                let (key, rest) = labels
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("bad label in {line:?}"));
                assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                // The value runs to the first unescaped quote.
                let mut end = None;
                let mut escaped = false;
                for (i, c) in rest.char_indices() {
                    match (escaped, c) {
                        (false, '\\') => escaped = true,
                        (false, '"') => {
                            end = Some(i);
                            break;
                        }
                        _ => escaped = false,
                    }
                }
                let end = end.unwrap_or_else(|| panic!("unterminated value in {line:?}"));
                labels = rest[end + 1..]
                    .strip_prefix(',')
                    .unwrap_or(&rest[end + 1..]);
            }
        }
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        samples.push((series.to_string(), value));
    }
    samples
}

#[tokio::test]
async fn wakes_during_a_reconcile_coalesce_into_one_more() {
    let mut h = start(Setup {
        delay: Duration::from_millis(800),
        ..Setup::default()
    })
    .await;
    // Let the startup reconcile end.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(h.post("/images/hello/trigger", &[], b"").await.0, 202);
    assert_eq!(h.next().await, Call::Trigger("hello".into()));
    let (first, _) = h.next_reconcile().await;
    assert_eq!(first.triggers.len(), 1);
    // While it runs: five triggers, a config save and a source change.
    for _ in 0..5 {
        assert_eq!(h.post("/images/hello/trigger", &[], b"").await.0, 202);
    }
    h.atomic_save("# version 2\n");
    std::fs::write(h.dir.path().join("app").join("new.py"), "y = 2\n").unwrap();
    let mut reconciles = Vec::new();
    while let Some(call) = h.next_within(Duration::from_millis(2000)).await {
        if let Call::Reconcile(wake, text) = call {
            reconciles.push((wake, text));
        }
    }
    assert_eq!(reconciles.len(), 1, "{reconciles:#?}");
    let (wake, text) = &reconciles[0];
    assert!(wake.config_changed);
    assert_eq!(wake.triggers, BTreeSet::from(["hello".to_string()]));
    assert_eq!(wake.paths_changed.len(), 1);
    assert_eq!(text, "# version 2\n");
    h.stop().await;
}

#[tokio::test]
async fn upstreams_are_polled_every_interval_and_back_off_on_errors() {
    let good = Upstream::Git("https://example.com/good.git".into());
    let bad = Upstream::Registry("localhost:5000/stacks/run:latest".into());
    let h = start(Setup {
        upstreams: vec![good.clone(), bad.clone()],
        interval: Duration::from_millis(100),
        failing: vec![bad.clone()],
        ..Setup::default()
    })
    .await;
    let polled = |upstream: &Upstream, since: Instant| -> Vec<Duration> {
        h.fake
            .polls
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, polls)| *at >= since && polls.contains(upstream))
            .map(|(at, _)| *at - since)
            .collect()
    };
    let begin = Instant::now();
    tokio::time::sleep(Duration::from_millis(2600)).await;
    // Good: about every 100 ms (±10%).
    let good_polls = polled(&good, begin);
    assert!(good_polls.len() >= 20, "{good_polls:?}");
    // Bad: the wait doubles after each failure (200, 400, 800 ms…, ±10%).
    let bad_polls = polled(&bad, begin);
    let gaps: Vec<Duration> = bad_polls.windows(2).map(|w| w[1] - w[0]).collect();
    assert!((2..=4).contains(&gaps.len()), "{bad_polls:?}");
    for pair in gaps.windows(2) {
        let ratio = pair[1].as_secs_f64() / pair[0].as_secs_f64();
        assert!((1.5..2.7).contains(&ratio), "gaps {gaps:?}");
    }
    let (_, metrics) = h.get("/metrics").await;
    let errors = format!("kpackd_upstream_poll_errors_total{{upstream=\"{bad}\"}} ");
    let line = metrics
        .lines()
        .find(|l| l.starts_with(&errors))
        .unwrap_or_else(|| panic!("{metrics}"));
    let count: f64 = line[errors.len()..].parse().unwrap();
    assert!(count as usize >= bad_polls.len(), "{metrics}");

    // A success brings the interval back.
    h.fake.failing.lock().unwrap().clear();
    let cleared = Instant::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = polled(&bad, cleared);
    assert!(after.len() >= 4, "{after:?}");
    let last_gap = after[after.len() - 1] - after[after.len() - 2];
    assert!(last_gap < Duration::from_millis(250), "{after:?}");
    h.stop().await;
}

#[tokio::test]
async fn shutdown_cancels_the_running_reconcile_and_returns() {
    let mut h = start(Setup {
        delay: HOUR,
        ..Setup::default()
    })
    .await;
    assert_eq!(h.post("/images/hello/trigger", &[], b"").await.0, 202);
    // The startup reconcile is still running: the trigger waits.
    assert_eq!(h.next().await, Call::Trigger("hello".into()));
    assert_eq!(h.next_within(Duration::from_millis(300)).await, None);
    let addr = h.addr;
    let stopping = Instant::now();
    h.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(2));
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn an_invalid_config_at_start_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kpack.toml");
    std::fs::write(&config, "invalid\n").unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let fake = Arc::new(Fake {
        summary: ConfigSummary {
            config_file: config,
            local_paths: BTreeSet::new(),
            ignored: BTreeSet::new(),
            upstreams: BTreeSet::new(),
            poll_interval: HOUR,
            doorbell: None,
        },
        calls: tx,
        good: Mutex::new(String::new()),
        failing: Mutex::new(BTreeSet::new()),
        delay: Duration::ZERO,
        builds: Vec::new(),
        polls: Mutex::new(Vec::new()),
    });
    let watch = Watch::bind(WatchOptions::default()).await.unwrap();
    let error = watch
        .run(fake, CancellationToken::new())
        .await
        .expect_err("an invalid config");
    assert!(
        matches!(error, WatchError::Config(ref d) if d.contains("unknown key")),
        "{error}"
    );
}

#[test]
fn a_config_summary_names_each_upstream_once_and_skips_outputs() {
    let fixtures = canonical(&testkit::fixtures::valid());
    let config = planner::load(&fixtures.join("full.toml")).unwrap();
    let state = config.settings.state_dir.clone();
    let summary = ConfigSummary::from_config(&config, state.clone());
    let registry = |s: &str| Upstream::Registry(s.to_string());
    assert_eq!(
        summary.upstreams,
        BTreeSet::from([
            Upstream::Git("https://github.com/example/hello.git".into()),
            registry("registry.example.com/stacks/bookworm-build:latest"),
            registry("registry.example.com/buildpacks/node:1.2"),
            registry("registry.example.com/builders/paketo:latest"),
        ]),
        "a digest-pinned run image is not polled"
    );
    let dir = &fixtures;
    for local in [
        "apps/site",
        "buildpacks/app",
        "buildpacks/meta",
        "buildpacks/runtime",
        "out/stacks",
    ] {
        assert!(
            summary.local_paths.contains(&dir.join(local)),
            "{local} in {:?}",
            summary.local_paths
        );
    }
    assert_eq!(
        summary.ignored,
        BTreeSet::from([state, dir.join("out/images"), dir.join("out/cache")])
    );
    assert_eq!(summary.poll_interval, Duration::from_secs(90 * 60));
    assert_eq!(summary.config_file, fixtures.join("full.toml"));
}
