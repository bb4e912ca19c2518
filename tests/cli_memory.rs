//! `kpackd inspect`, run as a user runs it, against a registry on loopback that serves an
//! image config of 300 MB: whether the manifest declares that size or a small one, kpackd
//! fails with an error saying so and its peak memory stays far below the config's size.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::thread;

/// What the registry serves as the config: 300 MB.
const SERVED: usize = 300 << 20;
/// The peak resident memory kpackd may reach, in KiB: 100 MB.
const MAX_RSS_KIB: u64 = 100 * 1000;
const CONFIG_DIGEST: &str =
    "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// Starts a registry on 127.0.0.1 whose every manifest names a config of `declared`
/// bytes, and whose every blob is [`SERVED`] bytes of JSON-looking text, streamed
/// without a Content-Length. Returns its port.
fn serve(declared: u64) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("a bound address").port();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{CONFIG_DIGEST}","size":{declared}}},"layers":[]}}"#
    );
    thread::spawn(move || {
        for socket in listener.incoming().flatten() {
            let manifest = manifest.clone();
            thread::spawn(move || answer(socket, &manifest));
        }
    });
    port
}

/// Answers the requests of one connection.
fn answer(socket: TcpStream, manifest: &str) {
    let mut reader = BufReader::new(socket.try_clone().expect("clone the socket"));
    let mut socket = socket;
    loop {
        let mut request = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => request.push_str(&line),
            }
        }
        let head_only = request.starts_with("HEAD ");
        let path = request.split_whitespace().nth(1).unwrap_or_default();
        let result = if path.contains("/manifests/") {
            let body = if head_only { "" } else { manifest };
            write!(
                socket,
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\n\r\n{body}",
                manifest.len()
            )
        } else if path.contains("/blobs/") {
            // No Content-Length a client could check up front: the body just runs on.
            let chunk = vec![b' '; 64 << 10];
            // kpackd hangs up as soon as it has read too much: a failed write ends it.
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{")
                .and_then(|()| {
                    (0..SERVED / chunk.len()).try_for_each(|_| socket.write_all(&chunk))
                });
            return;
        } else {
            write!(socket, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{{}}")
        };
        if result.is_err() {
            return;
        }
    }
}

/// Runs `kpackd inspect <image>` under `/usr/bin/time`: its exit code, its stderr with
/// the line wrapping undone, and its peak RSS in KiB.
fn inspect(work: &Path, image: &str) -> (Option<i32>, String, u64) {
    let rss = work.join("rss");
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss)
        .arg(env!("CARGO_BIN_EXE_kpackd"))
        .args(["inspect", image])
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env("DOCKER_CONFIG", work)
        .output()
        .expect("kpackd runs under /usr/bin/time");
    let stderr = String::from_utf8_lossy(&out.stderr)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let peak = std::fs::read_to_string(&rss)
        .expect("/usr/bin/time wrote the peak RSS")
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .expect("a peak RSS in KiB");
    (out.status.code(), stderr, peak)
}

#[test]
fn a_config_declared_as_300_mb_is_refused_without_reading_it() {
    let work = tempfile::tempdir().unwrap();
    let port = serve(SERVED as u64);
    let (code, stderr, peak) = inspect(work.path(), &format!("127.0.0.1:{port}/big/app:v1"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("declares {SERVED} bytes, more than the")),
        "{stderr}"
    );
    assert!(peak < MAX_RSS_KIB, "peak RSS {peak} KiB\n{stderr}");
}

#[test]
fn a_300_mb_config_declared_small_is_cut_at_its_declared_size() {
    let work = tempfile::tempdir().unwrap();
    let port = serve(1024);
    let (code, stderr, peak) = inspect(work.path(), &format!("127.0.0.1:{port}/big/app:v1"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("served more than its declared size of 1024 bytes"),
        "{stderr}"
    );
    assert!(peak < MAX_RSS_KIB, "peak RSS {peak} KiB\n{stderr}");
}
