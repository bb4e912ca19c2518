//! A misbehaving registry on 127.0.0.1, answering raw HTTP/1.1: reads stop at their
//! deadlines and sizes, credentials stay away from plain-HTTP token realms on other
//! hosts, and a registry that wants tokens is asked for the challenge once and for each
//! scope's token once, however many stores and requests.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use executors::oci::{
    CredentialSource, Descriptor, ImageStore, OciError, RetryPolicy, StoreSettings,
};
use futures::StreamExt;
use imageref::{Digest, ImageRef, Platform};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the fake registry does with a request.
#[derive(Clone)]
enum Answer {
    /// Reads the request and never answers.
    Hang,
    /// Sends `head`, then `body`; stops and holds the connection open after
    /// `stall_after` body bytes when given.
    Send {
        head: String,
        body: Arc<Vec<u8>>,
        stall_after: Option<usize>,
    },
}

/// Bytes of body the server managed to write, over all connections.
type Written = Arc<AtomicUsize>;

/// Starts a server that answers every request with `answer(request head)`.
async fn serve<F>(answer: F) -> (u16, Written)
where
    F: Fn(&str) -> Answer + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let written: Written = Arc::default();
    let answer = Arc::new(answer);
    let counter = written.clone();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let answer = answer.clone();
            let counter = counter.clone();
            tokio::spawn(connection(socket, answer, counter));
        }
    });
    (port, written)
}

async fn connection<F>(mut socket: TcpStream, answer: Arc<F>, written: Written)
where
    F: Fn(&str) -> Answer + Send + Sync + 'static,
{
    loop {
        let Some(head) = read_head(&mut socket).await else {
            return;
        };
        match answer(&head) {
            Answer::Hang => {
                tokio::time::sleep(Duration::from_secs(600)).await;
                return;
            }
            Answer::Send {
                head: response,
                body,
                stall_after,
            } => {
                if socket.write_all(response.as_bytes()).await.is_err() {
                    return;
                }
                let end = stall_after.unwrap_or(body.len()).min(body.len());
                for chunk in body[..end].chunks(16 * 1024) {
                    if socket.write_all(chunk).await.is_err() {
                        return;
                    }
                    written.fetch_add(chunk.len(), Ordering::SeqCst);
                }
                if stall_after.is_some() {
                    tokio::time::sleep(Duration::from_secs(600)).await;
                    return;
                }
            }
        }
    }
}

/// A request's head (request line and headers), or None when the client went away.
async fn read_head(socket: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if socket.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn ok(content_type: &str, body: Vec<u8>, stall_after: Option<usize>) -> Answer {
    Answer::Send {
        head: format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ),
        body: Arc::new(body),
        stall_after,
    }
}

fn store(credentials: CredentialSource) -> ImageStore {
    ImageStore::new(StoreSettings {
        insecure_registries: Vec::new(),
        platform: Platform::linux_amd64(),
        credentials,
        retry: RetryPolicy {
            attempts: 1,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
        },
        parallel_blobs: 4,
        connect_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
    })
}

fn image(port: u16) -> ImageRef {
    ImageRef::parse(&format!("127.0.0.1:{port}/hostile/app:v1")).unwrap()
}

fn sha256(bytes: &[u8]) -> Digest {
    use sha2::Digest as _;
    let hex: String = sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Digest::parse(&format!("sha256:{hex}")).unwrap()
}

fn assert_timed_out(err: &OciError, started: Instant) {
    assert!(matches!(err, OciError::TimedOut { .. }), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30), "{err}");
}

#[tokio::test]
async fn a_registry_that_never_answers_times_out() {
    let (port, _) = serve(|_| Answer::Hang).await;
    let started = Instant::now();
    let err = store(CredentialSource::anonymous())
        .manifest(&image(port))
        .await
        .unwrap_err();
    assert_timed_out(&err, started);
}

#[tokio::test]
async fn a_blob_that_stalls_midway_times_out() {
    let blob = vec![7u8; 256 * 1024];
    let descriptor = Descriptor::new("application/octet-stream", sha256(&blob), blob.len() as u64);
    let body = blob.clone();
    let (port, _) =
        serve(move |_| ok("application/octet-stream", body.clone(), Some(64 * 1024))).await;
    let started = Instant::now();
    let mut stream = store(CredentialSource::anonymous())
        .open_blob(&image(port), &descriptor)
        .await
        .unwrap();
    let mut failure = None;
    while let Some(chunk) = stream.next().await {
        if let Err(e) = chunk {
            failure = Some(e);
            break;
        }
    }
    let failure = failure.expect("a stalled blob cannot end well");
    assert_eq!(failure.kind(), std::io::ErrorKind::TimedOut, "{failure}");
    assert!(failure.to_string().contains("timed out"), "{failure}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn a_config_larger_than_declared_is_cut_short() {
    let served = vec![b'{'; 64 << 20];
    let declared = vec![b'{'; 1024];
    let descriptor = Descriptor::new(
        "application/vnd.oci.image.config.v1+json",
        sha256(&declared),
        declared.len() as u64,
    );
    // No Content-Length a client could check up front: the body just runs on.
    let body = Arc::new(served.clone());
    let (port, written) = serve(move |_| Answer::Send {
        head: "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".into(),
        body: body.clone(),
        stall_after: None,
    })
    .await;
    let err = store(CredentialSource::anonymous())
        .read_blob(&image(port), &descriptor)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("declared"), "{err}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = written.load(Ordering::SeqCst);
    assert!(sent < served.len() / 2, "the server wrote {sent} bytes");
}

#[tokio::test]
async fn a_manifest_over_four_mib_is_refused() {
    let served = vec![b' '; 64 << 20];
    let body = Arc::new(served.clone());
    let (port, written) = serve(move |_| Answer::Send {
        head: "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n".into(),
        body: body.clone(),
        stall_after: None,
    })
    .await;
    let err = store(CredentialSource::anonymous())
        .manifest(&image(port))
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::Invalid { .. }), "{err}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = written.load(Ordering::SeqCst);
    assert!(sent < served.len() / 2, "the server wrote {sent} bytes");
}

#[tokio::test]
async fn credentials_stay_away_from_a_plain_http_realm_on_another_port() {
    let got_authorization = Arc::new(AtomicBool::new(false));
    let token_requests = Arc::new(AtomicUsize::new(0));
    let (seen, count) = (got_authorization.clone(), token_requests.clone());
    let (token_port, _) = serve(move |head| {
        count.fetch_add(1, Ordering::SeqCst);
        if head.to_ascii_lowercase().contains("\r\nauthorization:") {
            seen.store(true, Ordering::SeqCst);
        }
        ok("application/json", br#"{"token":"t"}"#.to_vec(), None)
    })
    .await;
    let (port, _) = serve(move |_| Answer::Send {
        head: format!(
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:{token_port}/token\",service=\"x\"\r\nContent-Length: 0\r\n\r\n"
        ),
        body: Arc::new(Vec::new()),
        stall_after: None,
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        format!(r#"{{"auths":{{"127.0.0.1:{port}":{{"auth":"dXNlcjpzZWNyZXQ="}}}}}}"#),
    )
    .unwrap();
    let _ = store(CredentialSource::docker_config(&config))
        .manifest(&image(port))
        .await;
    assert!(
        token_requests.load(Ordering::SeqCst) > 0,
        "the token realm was never asked"
    );
    assert!(
        !got_authorization.load(Ordering::SeqCst),
        "the token realm on another port was sent the registry's credentials"
    );
}

#[tokio::test]
async fn one_challenge_per_host_and_one_token_per_scope_for_the_whole_process() {
    let token_requests = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = token_requests.clone();
    let (token_port, _) = serve(move |head| {
        seen.lock()
            .unwrap()
            .push(head.lines().next().unwrap_or_default().to_string());
        ok(
            "application/json",
            br#"{"token":"t1","expires_in":300}"#.to_vec(),
            None,
        )
    })
    .await;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[]}}"#,
        sha256(b"{}")
    );
    let challenges = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let (counted_challenges, counted_answers) = (challenges.clone(), answered.clone());
    let (port, _) = serve(move |head| {
        if head
            .to_ascii_lowercase()
            .contains("\r\nauthorization: bearer t1\r\n")
        {
            counted_answers.fetch_add(1, Ordering::SeqCst);
            return ok(
                "application/vnd.oci.image.manifest.v1+json",
                manifest.clone().into_bytes(),
                None,
            );
        }
        counted_challenges.fetch_add(1, Ordering::SeqCst);
        Answer::Send {
            head: format!(
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:{token_port}/token\",service=\"hostile\"\r\nContent-Length: 0\r\n\r\n"
            ),
            body: Arc::new(Vec::new()),
            stall_after: None,
        }
    })
    .await;

    // A burst from one store, then reads from a second store of the same process.
    let first = store(CredentialSource::anonymous());
    let app = image(port);
    let burst = (0..8).map(|_| first.manifest(&app));
    for result in futures::future::join_all(burst).await {
        result.unwrap();
    }
    let second = store(CredentialSource::anonymous());
    second.manifest(&image(port)).await.unwrap();
    let other = ImageRef::parse(&format!("127.0.0.1:{port}/hostile/other:v1")).unwrap();
    second.manifest(&other).await.unwrap();

    assert_eq!(challenges.load(Ordering::SeqCst), 1, "one 401 in all");
    assert_eq!(answered.load(Ordering::SeqCst), 10);
    let tokens = token_requests.lock().unwrap().clone();
    assert_eq!(tokens.len(), 2, "one token per repository: {tokens:#?}");
    assert!(
        tokens[0].contains("scope=repository%3Ahostile%2Fapp%3Apull")
            && tokens[0].contains("service=hostile"),
        "{tokens:#?}"
    );
    assert!(
        tokens[1].contains("scope=repository%3Ahostile%2Fother%3Apull"),
        "{tokens:#?}"
    );
}
