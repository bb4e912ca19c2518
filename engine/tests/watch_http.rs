//! What watch mode's HTTP server lets a client hold or do: silent connections, slow
//! headers and bodies, blank secrets, and requests a web page could make. The
//! reconciler is a fake that records what it is asked; sockets and timers are real.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use engine::watch::{
    CancellationToken, ConfigSummary, HttpLimits, ReconcileReport, Reconciler, TriggerError,
    Upstream, Wake, Watch, WatchError, WatchOptions, WEBHOOK_SECRET_ENV,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Records every reconcile and trigger.
struct Fake {
    summary: ConfigSummary,
    calls: mpsc::UnboundedSender<String>,
}

impl Reconciler for Fake {
    async fn reload(&self) -> Result<ConfigSummary, String> {
        Ok(self.summary.clone())
    }

    async fn reconcile(&self, wake: Wake, _cancel: CancellationToken) -> ReconcileReport {
        let _ = self.calls.send(format!("reconcile {wake}"));
        ReconcileReport::default()
    }

    async fn trigger(&self, image: &str) -> Result<(), TriggerError> {
        if image != "hello" {
            return Err(TriggerError::UnknownImage(image.to_string()));
        }
        let _ = self.calls.send(format!("trigger {image}"));
        Ok(())
    }

    async fn status(&self) -> serde_json::Value {
        serde_json::json!({})
    }
}

struct Server {
    _dir: tempfile::TempDir,
    addr: SocketAddr,
    calls: mpsc::UnboundedReceiver<String>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), WatchError>>,
}

/// Watch on a loopback port with `limits` and one git upstream, its startup reconcile
/// seen.
async fn serve(limits: HttpLimits) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kpack.toml");
    std::fs::write(&config, "").unwrap();
    let (tx, mut calls) = mpsc::unbounded_channel();
    let fake = std::sync::Arc::new(Fake {
        summary: ConfigSummary {
            config_file: config,
            local_paths: BTreeSet::new(),
            ignored: BTreeSet::new(),
            upstreams: BTreeSet::from([Upstream::Git("https://github.com/acme/app.git".into())]),
            poll_interval: Duration::from_secs(3600),
            doorbell: None,
        },
        calls: tx,
    });
    let watch = Watch::bind(WatchOptions {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        http: limits,
        ..WatchOptions::default()
    })
    .await
    .unwrap();
    let addr = watch.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(watch.run(fake, shutdown.clone()));
    let first = tokio::time::timeout(Duration::from_secs(5), calls.recv())
        .await
        .expect("the startup reconcile within 5 s");
    assert!(first.is_some_and(|c| c.starts_with("reconcile")));
    Server {
        _dir: dir,
        addr,
        calls,
        shutdown,
        task,
    }
}

impl Server {
    /// What the reconciler was asked within `limit`, if anything.
    async fn call_within(&mut self, limit: Duration) -> Option<String> {
        tokio::time::timeout(limit, self.calls.recv())
            .await
            .ok()
            .flatten()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("watch stops within 10 s")
            .unwrap();
        assert!(result.is_ok(), "{result:?}");
    }
}

/// One request on its own connection; the status, or None when the server closed the
/// connection without answering or did not answer within 3 s.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<u16> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        let response = String::from_utf8_lossy(&response);
        response.split(' ').nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .ok()
        .flatten()
}

/// How long until the server closes `stream` (reads EOF or an error), up to `limit`.
async fn closed_after(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buffer = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

#[tokio::test]
async fn silent_connections_beyond_the_cap_are_closed_and_healthz_still_answers() {
    const CAP: usize = 8;
    const SILENT: usize = 300;
    let server = serve(HttpLimits {
        max_connections: CAP,
        // Long: only the cap can explain connections closing during the test.
        header_timeout: Duration::from_secs(60),
        ..HttpLimits::default()
    })
    .await;
    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let started = Instant::now();
    assert_eq!(
        request(server.addr, "GET", "/healthz", &[]).await,
        Some(200)
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // The server keeps at most CAP of them open.
    let closed = futures::future::join_all(
        silent
            .iter_mut()
            .map(|stream| closed_after(stream, Duration::from_secs(2))),
    )
    .await;
    let closed = closed.iter().filter(|c| c.is_some()).count();
    assert!(
        closed >= SILENT - CAP,
        "only {closed} of {SILENT} silent connections were closed"
    );
    drop(silent);
    server.stop().await;
}

#[tokio::test]
async fn a_connection_that_sends_no_headers_is_closed_after_the_header_timeout() {
    let timeout = Duration::from_millis(500);
    let server = serve(HttpLimits {
        header_timeout: timeout,
        ..HttpLimits::default()
    })
    .await;

    // Nothing at all.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let after = closed_after(&mut stream, Duration::from_secs(5))
        .await
        .expect("closed within 5 s");
    assert!(after >= timeout - Duration::from_millis(100), "{after:?}");

    // Half a request.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    assert!(closed_after(&mut stream, Duration::from_secs(5))
        .await
        .is_some());

    // Kept alive after an answer, then silent: the same timeout is the idle timeout.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    while !response.ends_with(b"ok\n") {
        let mut buffer = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buffer))
            .await
            .expect("an answer within 3 s")
            .unwrap();
        assert_ne!(n, 0, "closed before answering: {response:?}");
        response.extend_from_slice(&buffer[..n]);
    }
    assert!(response.starts_with(b"HTTP/1.1 200"));
    assert!(closed_after(&mut stream, Duration::from_secs(5))
        .await
        .is_some());
    server.stop().await;
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_refused() {
    let mut server = serve(HttpLimits {
        body_timeout: Duration::from_millis(300),
        ..HttpLimits::default()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST /hooks/git HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert_eq!(server.call_within(Duration::from_millis(300)).await, None);
    server.stop().await;
}

#[tokio::test]
async fn a_blank_webhook_secret_is_refused() {
    for blank in ["", " ", "\t\n"] {
        let result = Watch::bind(WatchOptions {
            webhook_secret: Some(blank.to_string()),
            ..WatchOptions::default()
        })
        .await;
        let error = result.expect_err("a blank secret is refused");
        assert!(matches!(error, WatchError::BlankSecret), "{error:?}");
        assert!(error.to_string().contains(WEBHOOK_SECRET_ENV), "{error}");
    }
}

#[tokio::test]
async fn a_form_post_from_a_web_page_triggers_nothing() {
    let mut server = serve(HttpLimits::default()).await;
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let evil = ("Origin", "http://evil.example");
    let own = format!("http://{}", server.addr);
    for path in ["/images/hello/trigger", "/hooks/git"] {
        for headers in [
            vec![form, evil],
            vec![form],
            vec![("Content-Type", "text/plain")],
            vec![evil],
            vec![("Origin", own.as_str())],
            vec![("Origin", "null"), ("Content-Type", "application/json")],
        ] {
            let status = request(server.addr, "POST", path, &headers)
                .await
                .expect("an answer");
            assert!((400..500).contains(&status), "{path} {headers:?}: {status}");
        }
    }
    assert_eq!(server.call_within(Duration::from_millis(500)).await, None);

    // What `curl -X POST` and webhooks send still works.
    let trigger = request(server.addr, "POST", "/images/hello/trigger", &[]).await;
    assert_eq!(trigger, Some(202));
    assert_eq!(
        server.call_within(Duration::from_secs(3)).await.as_deref(),
        Some("trigger hello")
    );
    let json = [("Content-Type", "application/json; charset=utf-8")];
    assert_eq!(
        request(server.addr, "POST", "/hooks/git", &json).await,
        Some(202)
    );
    server.stop().await;
}
