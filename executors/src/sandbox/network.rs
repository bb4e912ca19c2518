//! Outbound network for a sandbox, without the host's loopback.
//!
//! bwrap makes the sandbox's network namespace (`--unshare-all`), reports the sandbox's
//! pid on fd 3 (`--json-status-fd`) and waits on fd 4 (`--block-fd`) before running the
//! program. Both fds are FIFOs in a private temporary directory, opened by `sh`
//! redirections just before it execs bwrap (so the command's pid stays bwrap's). A helper
//! thread reads the pid, attaches `slirp4netns --disable-host-loopback` to the
//! namespace, waits until the interface is configured, releases bwrap, and stops
//! slirp4netns when bwrap's status stream ends (bwrap exited or was killed).
//!
//! If attaching fails the sandbox's process is killed before it runs the program: a build
//! that asked for network fails rather than running without it (or with the host's).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// What `sh` runs: open the FIFOs as fds 3 and 4, then become bwrap.
const SCRIPT: &str = r#"status=$1; block=$2; shift 2; exec "$@" 3>"$status" 4<"$block""#;

/// slirp4netns's fixed addresses: its DNS forwarder inside the default 10.0.2.0/24.
const DNS: &str = "10.0.2.3";

/// One sandbox's network, prepared before its command is spawned.
pub(super) struct Attach {
    dir: tempfile::TempDir,
    slirp4netns: PathBuf,
}

impl Attach {
    pub(super) fn prepare() -> io::Result<Attach> {
        let slirp4netns = on_path("slirp4netns").ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "find `slirp4netns` on PATH (network = true needs it): apt-get install slirp4netns",
            )
        })?;
        let dir = tempfile::Builder::new().prefix("kpackd-net-").tempdir()?;
        for fifo in ["status", "block"] {
            let status = Command::new("mkfifo")
                .arg("-m")
                .arg("600")
                .arg(dir.path().join(fifo))
                .status()?;
            if !status.success() {
                return Err(io::Error::other(format!("mkfifo {fifo}: {status}")));
            }
        }
        fs::write(dir.path().join("resolv.conf"), resolv_conf())?;
        Ok(Attach { dir, slirp4netns })
    }

    /// The `/etc/resolv.conf` to bind into the sandbox.
    pub(super) fn resolv_conf(&self) -> PathBuf {
        self.dir.path().join("resolv.conf")
    }

    /// `sh`'s arguments before bwrap's own.
    pub(super) fn shell_args(&self, bwrap: &Path) -> Vec<std::ffi::OsString> {
        vec![
            "-c".into(),
            SCRIPT.into(),
            "sh".into(),
            self.dir.path().join("status").into(),
            self.dir.path().join("block").into(),
            bwrap.into(),
        ]
    }

    /// Starts the helper thread; it owns the FIFOs' directory until bwrap ends.
    ///
    /// The thread waits for `sh` to open the FIFOs: a command dropped without being
    /// spawned leaves it waiting.
    pub(super) fn start(self) -> io::Result<()> {
        std::thread::Builder::new()
            .name("sandbox-network".into())
            .spawn(move || self.run())?;
        Ok(())
    }

    fn run(self) {
        // Opened in the order the shell opens them, each open waiting for the other end.
        let status = match File::open(self.dir.path().join("status")) {
            Ok(status) => status,
            Err(error) => {
                tracing::error!("open the sandbox's status FIFO: {error}");
                return;
            }
        };
        let block = OpenOptions::new()
            .write(true)
            .open(self.dir.path().join("block"));
        let mut documents = serde_json::Deserializer::from_reader(BufReader::new(status))
            .into_iter::<serde_json::Value>();
        let pid = documents
            .next()
            .and_then(Result::ok)
            .and_then(|first| first.get("child-pid").and_then(serde_json::Value::as_u64));
        let slirp = match (pid, block) {
            (Some(pid), Ok(mut block)) => {
                match self.attach(pid) {
                    Ok(slirp) => {
                        let _ = block.write_all(b"1");
                        Some(slirp)
                    }
                    Err(error) => {
                        tracing::error!(
                            "attach slirp4netns to the sandbox: {error}; the sandbox is killed \
                             (network = true needs slirp4netns: apt-get install slirp4netns)"
                        );
                        // Killed while it waits on the block fd, before the program runs.
                        let _ = Command::new("kill")
                            .args(["-KILL", &pid.to_string()])
                            .status();
                        None
                    }
                }
            }
            (pid, block) => {
                // The command was killed before bwrap started.
                tracing::debug!(?pid, ok = block.is_ok(), "the sandbox did not start");
                None
            }
        };
        // Until bwrap ends (its status stream closes); writing to a closed FIFO would kill it.
        for _ in documents {}
        if let Some(mut slirp) = slirp {
            // Closing its exit fd (stdin) stops it.
            drop(slirp.stdin.take());
            let _ = slirp.wait();
        }
    }

    /// Runs slirp4netns on the sandbox's network namespace and waits until it is
    /// configured. bwrap run with privileges owns the namespace from the caller's user
    /// namespace; unprivileged, from the sandbox's: the second try joins that one.
    fn attach(&self, pid: u64) -> io::Result<Child> {
        let netns = format!("/proc/{pid}/ns/net");
        let userns = format!("--userns-path=/proc/{pid}/ns/user");
        let mut last = None;
        for join_userns in [false, true] {
            let mut command = Command::new(&self.slirp4netns);
            command.args([
                "--configure",
                "--mtu=65520",
                "--disable-host-loopback",
                "--ready-fd=1",
                "--exit-fd=0",
                "--netns-type=path",
            ]);
            if join_userns {
                command.arg(&userns);
            }
            let log = self.dir.path().join("slirp4netns.log");
            command
                .arg(&netns)
                .arg("tap0")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(File::create(&log)?);
            let mut child = command.spawn()?;
            let mut ready = [0u8; 1];
            let configured = child
                .stdout
                .take()
                .map(|mut out| out.read_exact(&mut ready).is_ok())
                .unwrap_or(false);
            if configured {
                return Ok(child);
            }
            let _ = child.kill();
            let _ = child.wait();
            last = Some(
                fs::read_to_string(&log)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            );
        }
        Err(io::Error::other(format!(
            "slirp4netns failed: {}",
            last.unwrap_or_default()
        )))
    }
}

/// The sandbox's resolv.conf: slirp4netns's forwarder, with the host's search domains
/// and options.
fn resolv_conf() -> String {
    let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut text = format!("nameserver {DNS}\n");
    for line in host.lines() {
        let keyword = line.split_whitespace().next().unwrap_or_default();
        if matches!(keyword, "search" | "domain" | "options") {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
