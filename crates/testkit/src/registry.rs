//! A real OCI registry on loopback: the Debian `docker-registry` (CNCF distribution
//! 2.8), storage in a temp dir, optionally behind htpasswd auth. It records every
//! request from its access log, so tests can count uploads.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One request the registry answered, from its access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub status: u16,
}

/// A running registry; killed when dropped.
pub struct Registry {
    child: Child,
    /// Closing it makes the wrapper shell kill the registry, also when the test
    /// process dies without dropping (the shared instance is a static).
    stdin: Option<ChildStdin>,
    addr: String,
    credentials: Option<(String, String)>,
    log: Arc<(Mutex<Vec<Request>>, Condvar)>,
    dir: tempfile::TempDir,
}

impl Registry {
    /// The registry shared by every test of this test binary (no auth). Give each test
    /// its own repository names.
    pub fn shared() -> &'static Registry {
        static SHARED: OnceLock<Registry> = OnceLock::new();
        SHARED.get_or_init(Registry::start)
    }

    /// A fresh registry without auth.
    pub fn start() -> Registry {
        Registry::launch(None)
    }

    /// A fresh registry accepting only `user`/`password` (htpasswd, bcrypt).
    pub fn start_with_auth(user: &str, password: &str) -> Registry {
        Registry::launch(Some((user.to_string(), password.to_string())))
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `127.0.0.1:PORT/<repository>`, ready to append `:tag`.
    pub fn repo(&self, repository: &str) -> String {
        format!("{}/{repository}", self.addr)
    }

    /// The user and password, for a registry started with auth.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// Where the registry keeps its data.
    pub fn storage_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every request answered so far, in log order. Waits until the log has caught up
    /// with this call (a marker request is sent and awaited).
    pub fn requests(&self) -> Vec<Request> {
        static MARKER: AtomicU64 = AtomicU64::new(0);
        let marker = format!(
            "/v2/kpackd-testkit-sync/{}-{}",
            std::process::id(),
            MARKER.fetch_add(1, Ordering::SeqCst)
        );
        http_get(&self.addr, &marker).expect("the registry answers a sync request");
        let (lock, ready) = &*self.log;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut log = lock.lock().expect("log lock");
        while !log.iter().any(|r| r.path == marker) {
            assert!(
                Instant::now() < deadline,
                "the registry never logged {marker}"
            );
            log = ready
                .wait_timeout(log, Duration::from_millis(100))
                .expect("log lock")
                .0;
        }
        log.iter()
            .filter(|r| !r.path.starts_with("/v2/kpackd-testkit-sync/"))
            .cloned()
            .collect()
    }

    /// How many requests with `method` had a path containing `path_part`.
    pub fn count(&self, method: &str, path_part: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path.contains(path_part))
            .count()
    }

    /// Blob uploads begun in `repository` (POSTs to its upload endpoint, mounts
    /// included).
    pub fn blob_uploads(&self, repository: &str) -> usize {
        self.count("POST", &format!("/v2/{repository}/blobs/uploads/"))
    }

    fn launch(credentials: Option<(String, String)>) -> Registry {
        crate::require("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().expect("a temp dir for the registry");
        let port = crate::free_port();
        let addr = format!("127.0.0.1:{port}");
        let auth = match &credentials {
            Some((user, password)) => {
                crate::require("htpasswd", "apache2-utils");
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .expect("htpasswd runs");
                assert!(out.status.success(), "htpasswd failed");
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, out.stdout).expect("writing htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: kpackd-test\n    path: {}\n",
                    file.display()
                )
            }
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n  secret: kpackd-test\n{auth}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("writing the registry config");
        let mut child = Command::new("sh")
            .args([
                "-c",
                "docker-registry serve \"$1\" & pid=$!; read _; kill $pid; wait $pid",
                "sh",
            ])
            .arg(&config_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting docker-registry");
        let log = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let stderr_text = Arc::new(Mutex::new(String::new()));
        {
            let log = log.clone();
            let stdout = child.stdout.take().expect("piped stdout");
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(request) = parse_access_line(&line) {
                        let (lock, ready) = &*log;
                        lock.lock().expect("log lock").push(request);
                        ready.notify_all();
                    }
                }
            });
            let stderr = child.stderr.take().expect("piped stderr");
            let text = stderr_text.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut t = text.lock().expect("stderr lock");
                    t.push_str(&line);
                    t.push('\n');
                }
            });
        }
        let registry = Registry {
            stdin: child.stdin.take(),
            child,
            addr,
            credentials,
            log,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match http_get(&registry.addr, "/v2/") {
                Ok(status) if status == 200 || status == 401 => return registry,
                _ if Instant::now() > deadline => panic!(
                    "docker-registry did not come up on {}:\n{}",
                    registry.addr,
                    stderr_text.lock().expect("stderr lock")
                ),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// A canned answer a [`FaultyProxy`] gives instead of forwarding a request.
#[derive(Debug, Clone)]
pub struct Fault {
    /// The request method it applies to; None: any.
    pub method: Option<String>,
    /// A part of the request path (query included) it applies to.
    pub path_contains: String,
    /// How many matching requests get it; the ones after are forwarded.
    pub times: usize,
    /// The status answered; 0 closes the connection without answering.
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Fault {
    /// `status` with an OCI error envelope (`code`, `message`) as the body, for
    /// `times` requests whose path contains `path_contains`.
    pub fn error(
        status: u16,
        path_contains: &str,
        times: usize,
        code: &str,
        message: &str,
    ) -> Fault {
        Fault {
            method: None,
            path_contains: path_contains.to_string(),
            times,
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: format!(r#"{{"errors":[{{"code":"{code}","message":"{message}"}}]}}"#),
        }
    }
}

impl Fault {
    /// The connection closed with no answer, as when a registry restarts, for `times`
    /// requests whose path contains `path_contains`.
    pub fn hang_up(path_contains: &str, times: usize) -> Fault {
        Fault {
            method: None,
            path_contains: path_contains.to_string(),
            times,
            status: 0,
            headers: Vec::new(),
            body: String::new(),
        }
    }
}

/// A loopback HTTP proxy in front of a real registry that answers chosen requests
/// itself (a 503, a 202 to a mount) and forwards every other one, one connection per
/// request. Registries build upload URLs from the `Host` header, so clients that talk to
/// the proxy keep talking to it. Stops when dropped.
pub struct FaultyProxy {
    addr: String,
    faults: Arc<Mutex<Vec<Fault>>>,
    answered: Arc<Mutex<Vec<Request>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl FaultyProxy {
    /// A proxy to `registry` with no faults yet.
    pub fn start(registry: &Registry) -> FaultyProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let addr = listener.local_addr().expect("a local address").to_string();
        let proxy = FaultyProxy {
            addr,
            faults: Arc::new(Mutex::new(Vec::new())),
            answered: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        let (upstream, faults, answered, stop) = (
            registry.addr.clone(),
            proxy.faults.clone(),
            proxy.answered.clone(),
            proxy.stop.clone(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let (upstream, faults, answered) =
                    (upstream.clone(), faults.clone(), answered.clone());
                std::thread::spawn(move || {
                    let _ = proxy_one(client, &upstream, &faults, &answered);
                });
            }
        });
        proxy
    }

    /// `127.0.0.1:PORT` of the proxy: use it as the registry host.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `127.0.0.1:PORT/<repository>` through the proxy.
    pub fn repo(&self, repository: &str) -> String {
        format!("{}/{repository}", self.addr)
    }

    pub fn add(&self, fault: Fault) {
        self.faults.lock().expect("fault lock").push(fault);
    }

    /// The requests the proxy answered itself, with the status it gave.
    pub fn faults_given(&self) -> Vec<Request> {
        self.answered.lock().expect("answered lock").clone()
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}

/// Reads an HTTP head (through the blank line) a byte at a time, so that nothing of
/// the body is consumed.
fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
        if head.len() > 64 * 1024 {
            return Err(std::io::Error::other("HTTP head too long"));
        }
    }
    Ok(head)
}

/// The head with any `Connection` header replaced by `Connection: close`.
fn closing(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

fn proxy_one(
    mut client: TcpStream,
    upstream: &str,
    faults: &Mutex<Vec<Fault>>,
    answered: &Mutex<Vec<Request>>,
) -> std::io::Result<()> {
    let head = read_head(&mut client)?;
    let first = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let mut parts = first.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let fault = {
        let mut faults = faults.lock().expect("fault lock");
        faults
            .iter_mut()
            .find(|f| {
                f.times > 0
                    && f.method.as_ref().is_none_or(|m| *m == method)
                    && path.contains(&f.path_contains)
            })
            .map(|f| {
                f.times -= 1;
                f.clone()
            })
    };
    if let Some(fault) = fault {
        answered.lock().expect("answered lock").push(Request {
            method: method.clone(),
            path,
            status: fault.status,
        });
        if fault.status == 0 {
            return client.shutdown(std::net::Shutdown::Both);
        }
        let mut response = format!("HTTP/1.1 {} Fault\r\n", fault.status);
        for (name, value) in &fault.headers {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
        let body = if method == "HEAD" {
            ""
        } else {
            fault.body.as_str()
        };
        response.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            fault.body.len()
        ));
        client.write_all(response.as_bytes())?;
        return client.shutdown(std::net::Shutdown::Both);
    }
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(&closing(&head))?;
    // The body, if any, goes up while the answer comes down.
    let (mut from_client, mut to_server) = (client.try_clone()?, server.try_clone()?);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_server);
    });
    let response_head = read_head(&mut server)?;
    client.write_all(&closing(&response_head))?;
    std::io::copy(&mut server, &mut client)?;
    client.shutdown(std::net::Shutdown::Both)
}

/// The status of a bare HTTP/1.0 GET.
fn http_get(addr: &str, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP response"))
}

/// `127.0.0.1 - user [date] "PUT /v2/x/blobs/uploads/... HTTP/1.1" 201 0 "" "ua"`.
fn parse_access_line(line: &str) -> Option<Request> {
    let (_, rest) = line.split_once('"')?;
    let (request, rest) = rest.split_once('"')?;
    let mut parts = request.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let status = rest.split_whitespace().next()?.parse().ok()?;
    Some(Request {
        method,
        path,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_access_lines() {
        let r = parse_access_line(
            r#"127.0.0.1 - - [24/Nov/2026:08:59:21 +0000] "POST /v2/a/blobs/uploads/ HTTP/1.1" 202 0 "" "curl/7.88.1""#,
        )
        .unwrap();
        assert_eq!(
            r,
            Request {
                method: "POST".into(),
                path: "/v2/a/blobs/uploads/".into(),
                status: 202
            }
        );
    }
}
