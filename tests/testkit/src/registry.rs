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
