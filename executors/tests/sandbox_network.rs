//! The sandbox's network against real bubblewrap and slirp4netns: with network, a program
//! reaches a server on an address of the machine and gets its data back, but not the host's
//! loopback; without, it reaches nothing; names resolve through the user-mode stack's
//! forwarder; the stack ends with the sandbox; a missing slirp4netns is a clear error.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use executors::sandbox::{prepare_mount_points, Sandbox, SandboxError};
use testkit::rootfs::{minimal_rootfs, CNB_GID, CNB_UID};

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

/// A minimal root with a regular `/etc/resolv.conf`, as images have.
fn fixture() -> Fixture {
    testkit::require("bwrap", "bubblewrap");
    testkit::require("slirp4netns", "slirp4netns");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    minimal_rootfs(&root, &[]).expect("minimal rootfs");
    prepare_mount_points(&root, &[]).expect("mount points");
    std::fs::write(root.join("etc/resolv.conf"), "nameserver 192.0.2.53\n").expect("write");
    Fixture { _dir: dir, root }
}

impl Fixture {
    fn sandbox(&self, network: bool) -> Sandbox {
        Sandbox::new(&self.root, CNB_UID, CNB_GID).network(network)
    }
}

async fn run(sandbox: &Sandbox, script: &str) -> Output {
    sandbox
        .command(
            Path::new("/bin/bash"),
            &["-c".to_owned(), script.to_owned()],
            &BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]),
            Path::new("/"),
        )
        .expect("command")
        .output()
        .await
        .expect("run bwrap")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A global IPv4 address of this machine (not loopback), from `ip -4 addr`.
fn host_address() -> IpAddr {
    testkit::require("ip", "iproute2");
    let output = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .expect("run ip");
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace().skip_while(|f| *f != "inet");
            fields.nth(1)?.split('/').next()?.parse().ok()
        })
        .next()
        .unwrap_or_else(|| panic!("no global IPv4 address on this machine: {text}"))
}

/// A server on `address` that greets every connection; it counts them.
struct Server {
    address: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Server {
    fn start(ip: IpAddr, greeting: &'static str) -> Server {
        let listener = TcpListener::bind((ip, 0)).expect("listen");
        let address = listener.local_addr().expect("address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(greeting.as_bytes());
            }
        });
        Server { address, accepted }
    }

    /// A bash line printing what the server sent, or `unreachable`.
    fn fetch(&self) -> String {
        let host = match self.address.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => ip.to_string(),
        };
        format!(
            "(exec 3<>/dev/tcp/{host}/{port} && cat <&3) 2>/dev/null || echo unreachable\n",
            port = self.address.port()
        )
    }
}

#[tokio::test]
async fn network_reaches_the_machine_but_not_its_loopback() {
    let fixture = fixture();
    let outside = Server::start(host_address(), "hello from the machine\n");
    let loopback = Server::start("127.0.0.1".parse().expect("ip"), "hello from loopback\n");
    let loopback6 = TcpListener::bind("[::1]:0")
        .ok()
        .map(|_| Server::start("::1".parse().expect("ip"), "hello from ::1\n"));
    // slirp4netns's gateway is its alias for the host's loopback, when that is allowed.
    let gateway = format!(
        "(echo > /dev/tcp/10.0.2.2/{}) 2>/dev/null && echo gateway-reached || echo unreachable\n",
        loopback.address.port()
    );
    let mut script = outside.fetch() + &loopback.fetch() + &gateway;
    if let Some(server) = &loopback6 {
        script += &server.fetch();
    }

    let on = stdout(&run(&fixture.sandbox(true), &script).await);
    let mut expected = "hello from the machine\nunreachable\nunreachable\n".to_owned();
    if loopback6.is_some() {
        expected += "unreachable\n";
    }
    assert_eq!(on, expected);

    let off = stdout(&run(&fixture.sandbox(false), &script).await);
    let mut expected = "unreachable\n".repeat(3);
    if loopback6.is_some() {
        expected += "unreachable\n";
    }
    assert_eq!(off, expected, "without network nothing is reachable");
    let interfaces = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '";
    assert_eq!(
        stdout(&run(&fixture.sandbox(false), interfaces).await),
        "lo\n"
    );

    assert_eq!(outside.accepted.load(Ordering::SeqCst), 1);
    for server in [Some(&loopback), loopback6.as_ref()].into_iter().flatten() {
        assert_eq!(
            server.accepted.load(Ordering::SeqCst),
            0,
            "nothing of the sandbox's arrived on loopback"
        );
    }
}

#[tokio::test]
async fn names_resolve_through_the_forwarder() {
    let fixture = fixture();
    let resolv = stdout(&run(&fixture.sandbox(true), "cat /etc/resolv.conf").await);
    assert!(resolv.starts_with("nameserver 10.0.2.3\n"), "{resolv}");
    assert_eq!(resolv.matches("nameserver").count(), 1, "{resolv}");
    // Without network the image's own file stays.
    let resolv = stdout(&run(&fixture.sandbox(false), "cat /etc/resolv.conf").await);
    assert_eq!(resolv, "nameserver 192.0.2.53\n");
    // An image without the file gets an empty one to mount over.
    let dir = tempfile::tempdir().expect("tempdir");
    minimal_rootfs(dir.path(), &[]).expect("minimal rootfs");
    assert!(!dir.path().join("etc/resolv.conf").exists());
    prepare_mount_points(dir.path(), &[]).expect("mount points");
    let sandbox = Sandbox::new(dir.path(), CNB_UID, CNB_GID).network(true);
    let resolv = stdout(&run(&sandbox, "cat /etc/resolv.conf").await);
    assert!(resolv.starts_with("nameserver 10.0.2.3\n"), "{resolv}");
}

#[tokio::test]
async fn the_network_stack_ends_with_the_sandbox() {
    let fixture = fixture();
    let mut child = fixture
        .sandbox(true)
        .command(
            Path::new("/bin/bash"),
            &["-c".to_owned(), "echo started; sleep 600".to_owned()],
            &BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]),
            Path::new("/"),
        )
        .expect("command")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(child.stdout.take().expect("piped"));
    tokio::io::AsyncBufReadExt::read_line(&mut reader, &mut line)
        .await
        .expect("read");
    assert_eq!(line, "started\n");
    let bwrap = child.id().expect("running");
    let sandbox = std::fs::read_to_string(format!("/proc/{bwrap}/task/{bwrap}/children"))
        .expect("bwrap's children");
    let sandbox: u32 = sandbox.trim().parse().expect("one child");
    let netns = std::fs::read_link(format!("/proc/{sandbox}/ns/net")).expect("its namespace");
    assert_eq!(slirps(&netns), 1, "slirp4netns serves the sandbox");
    drop(child);
    // Killing is asynchronous: the wait ends on the condition.
    while slirps(&netns) > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many slirp4netns processes hold the network namespace `netns` (`net:[inode]`).
fn slirps(netns: &Path) -> usize {
    std::fs::read_dir("/proc")
        .expect("list /proc")
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|process| {
            std::fs::read(process.join("cmdline")).is_ok_and(|cmdline| {
                cmdline
                    .split(|b| *b == 0)
                    .next()
                    .is_some_and(|p| p.ends_with(b"slirp4netns"))
            })
        })
        .filter(|process| {
            std::fs::read_dir(process.join("fd")).is_ok_and(|fds| {
                fds.filter_map(Result::ok)
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|link| link == netns))
            })
        })
        .count()
}

/// Set, to a prepared root, in the environment of this test binary run again by
/// `a_missing_slirp4netns_is_a_clear_error` with a PATH that lacks slirp4netns.
const ROOT_WITHOUT_SLIRP: &str = "KPACKD_TEST_ROOT_WITHOUT_SLIRP4NETNS";

#[tokio::test]
async fn a_missing_slirp4netns_is_a_clear_error() {
    if let Some(root) = std::env::var_os(ROOT_WITHOUT_SLIRP) {
        let sandbox = |network| Sandbox::new(&root, CNB_UID, CNB_GID).network(network);
        let error = sandbox(true)
            .command(
                Path::new("/bin/true"),
                &[],
                &BTreeMap::new(),
                Path::new("/"),
            )
            .expect_err("no slirp4netns on PATH");
        assert!(
            matches!(error, SandboxError::NetworkHelperMissing { .. }),
            "{error}"
        );
        let message = error.to_string();
        assert!(
            message.contains("install the Debian package slirp4netns"),
            "{message}"
        );
        sandbox(false)
            .command(
                Path::new("/bin/true"),
                &[],
                &BTreeMap::new(),
                Path::new("/"),
            )
            .expect("without network slirp4netns is not needed");
        return;
    }
    // PATH is the process's: change it only in a run of its own, with only bwrap on it.
    let fixture = fixture();
    let bin = tempfile::tempdir().expect("tempdir");
    let bwrap = executors::sandbox::ensure_bwrap().expect("bwrap");
    std::os::unix::fs::symlink(bwrap, bin.path().join("bwrap")).expect("symlink");
    let output = std::process::Command::new(std::env::current_exe().expect("this test"))
        .args(["--exact", "a_missing_slirp4netns_is_a_clear_error"])
        .env(ROOT_WITHOUT_SLIRP, &fixture.root)
        .env("PATH", bin.path())
        .output()
        .expect("run this test again");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && text.contains("1 passed"),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
