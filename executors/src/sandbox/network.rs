//! Outbound network for a sandbox, without the host's loopback: the sandbox keeps its own
//! network namespace and `slirp4netns` gives it a user-mode network stack whose traffic
//! leaves from the host as ordinary sockets.
//!
//! bwrap creates the namespace (`--unshare-all`), reports the sandbox's pid on a status
//! pipe (`--json-status-fd`) and, once its own setup is done, waits on a block pipe
//! (`--block-fd`) before it runs the program. A helper thread reads the pid, waits until
//! bwrap has configured the namespace's loopback, attaches `slirp4netns` to the namespace,
//! waits until it has configured its interface, and only then releases bwrap. If anything
//! fails the sandbox is killed while it waits: a build that asked for network fails; it
//! never runs without it, and never with the host's.
//!
//! Order matters: `slirp4netns --configure` brings the namespace's `lo` up, which makes the
//! kernel give it 127.0.0.1; bwrap's own loopback setup adds that address exclusively and
//! dies (`loopback: Failed RTM_NEWADDR`) when it is already there. Attaching before bwrap
//! has added it is a race that fails some builds.
//!
//! Lifetime: `slirp4netns` stops when its exit pipe closes. The helper thread holds the
//! other end until bwrap's status pipe ends (bwrap exited or was killed, and the command
//! was dropped), and the kernel closes it if kpackd itself dies.
//!
//! `--disable-host-loopback` makes slirp4netns refuse connections to 127.0.0.0/8 on the
//! host, including through its gateway address 10.0.2.2; IPv6 is not enabled, so `::1` of
//! the host is not reachable either. Inside, `/etc/resolv.conf` names slirp4netns's DNS
//! forwarder 10.0.2.3, which asks the host's resolvers.

// The pre-exec hooks and the NS_GET_USERNS ioctl have no safe form; each use says why it
// is sound.
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::FdFlags;
use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

use super::SandboxError;

/// The program and the Debian package that provides it.
pub(super) const HELPER: &str = "slirp4netns";
pub(super) const HELPER_PACKAGE: &str = "slirp4netns";

/// The device slirp4netns creates the sandbox's interface with.
const TUN: &str = "/dev/net/tun";
/// slirp4netns's DNS forwarder, in its default network 10.0.2.0/24.
const DNS: &str = "10.0.2.3";
/// How long bwrap's setup and slirp4netns's may take before the sandbox is killed.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest `/etc/resolv.conf` written into a sandbox: it goes through a pipe before
/// bwrap runs, so it must fit in the pipe's buffer.
const MAX_RESOLV_CONF: usize = 4096;

/// One sandbox's network, prepared before its command is spawned: the pipes bwrap gets and
/// the ends the helper thread keeps.
pub(super) struct Network {
    slirp4netns: PathBuf,
    /// bwrap writes its status here; the helper reads it.
    status_write: OwnedFd,
    status_read: File,
    /// bwrap waits on this until the helper writes (or the pipe closes).
    block_read: OwnedFd,
    block_write: File,
    /// The sandbox's `/etc/resolv.conf`, already written and closed at the other end.
    resolv_read: OwnedFd,
}

/// The fds of a spawned bwrap the command must keep open across exec.
struct Inherited(Vec<OwnedFd>);

impl Network {
    /// Makes the pipes; fails naming the package when `slirp4netns` is not installed, and
    /// when this user may not use the TUN device slirp4netns needs.
    pub(super) fn prepare() -> Result<Network, SandboxError> {
        let slirp4netns =
            super::find_on_path(HELPER).ok_or(SandboxError::NetworkHelperMissing {
                program: HELPER,
                package: HELPER_PACKAGE,
            })?;
        rustix::fs::access(
            TUN,
            rustix::fs::Access::READ_OK | rustix::fs::Access::WRITE_OK,
        )
        .map_err(|error| {
            SandboxError::Network(io::Error::new(
                io::Error::from(error).kind(),
                format!("slirp4netns needs {TUN}, which this user cannot open: {error}"),
            ))
        })?;
        let (status_read, status_write) = io::pipe().map_err(SandboxError::Network)?;
        let (block_read, block_write) = io::pipe().map_err(SandboxError::Network)?;
        let (resolv_read, mut resolv_write) = io::pipe().map_err(SandboxError::Network)?;
        let text = resolv_conf(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
        resolv_write
            .write_all(text.as_bytes())
            .map_err(SandboxError::Network)?;
        drop(resolv_write);
        Ok(Network {
            slirp4netns,
            status_write: status_write.into(),
            status_read: File::from(OwnedFd::from(status_read)),
            block_read: block_read.into(),
            block_write: File::from(OwnedFd::from(block_write)),
            resolv_read: resolv_read.into(),
        })
    }

    /// bwrap's arguments that hand it the status and block pipes.
    pub(super) fn bwrap_args(&self) -> Vec<OsString> {
        vec![
            "--json-status-fd".into(),
            self.status_write.as_raw_fd().to_string().into(),
            "--block-fd".into(),
            self.block_read.as_raw_fd().to_string().into(),
        ]
    }

    /// bwrap's arguments that put the sandbox's `/etc/resolv.conf` in place.
    pub(super) fn resolv_conf_args(&self, target: &Path) -> Vec<OsString> {
        vec![
            "--ro-bind-data".into(),
            self.resolv_read.as_raw_fd().to_string().into(),
            target.into(),
        ]
    }

    /// Makes `command` (bwrap) inherit its ends of the pipes and starts the helper thread,
    /// which waits for bwrap to start. A command dropped without being spawned closes the
    /// status pipe, and the thread ends. The command is meant to be spawned once.
    pub(super) fn attach(self, command: &mut tokio::process::Command) -> Result<(), SandboxError> {
        let inherited = Inherited(vec![self.status_write, self.block_read, self.resolv_read]);
        // SAFETY: the hook only clears FD_CLOEXEC on fds the closure owns (fcntl is
        // async-signal-safe and nothing is allocated); the closure, and so the parent's
        // copies of these fds, is dropped with the command.
        unsafe {
            command.pre_exec(move || {
                for fd in &inherited.0 {
                    rustix::io::fcntl_setfd(fd, FdFlags::empty())?;
                }
                Ok(())
            });
        }
        let helper = Helper {
            slirp4netns: self.slirp4netns,
            status: BufReader::new(self.status_read),
            block: self.block_write,
        };
        std::thread::Builder::new()
            .name("sandbox-network".into())
            .spawn(move || helper.run())
            .map_err(SandboxError::Network)?;
        Ok(())
    }
}

/// The helper thread's side of one sandbox.
struct Helper {
    slirp4netns: PathBuf,
    status: BufReader<File>,
    block: File,
}

/// A running slirp4netns: it exits when `exit` is dropped.
struct Slirp {
    child: Child,
    exit: File,
}

impl Helper {
    fn run(mut self) {
        let Some(pid) = self.child_pid() else {
            // The command was dropped unspawned, or bwrap failed before starting the sandbox.
            return;
        };
        // Opened at once: until the block pipe releases it, the sandbox only ends if bwrap's
        // setup fails, and a pidfd keeps naming it even then (a reused pid is not killed).
        let pidfd = Pid::from_raw(pid).and_then(|pid| pidfd_open(pid, PidfdFlags::empty()).ok());
        let slirp = match self.start_slirp(pid) {
            Ok(slirp) => {
                // bwrap only needs a byte; if it is gone, the write fails and the status
                // stream below ends at once.
                let _ = self.block.write_all(b"1");
                Some(slirp)
            }
            Err(error) => {
                tracing::error!(
                    pid,
                    "give the sandbox its network: {error}; the sandbox is killed before its \
                     program runs"
                );
                if let Some(pidfd) = &pidfd {
                    let _ = pidfd_send_signal(pidfd, Signal::KILL);
                }
                None
            }
        };
        drop(self.block);
        // Until bwrap ends: it writes its exit code here, and its end closes when it exits.
        let mut sink = Vec::new();
        let _ = self.status.read_to_end(&mut sink);
        if let Some(Slirp { mut child, exit }) = slirp {
            drop(exit);
            match child.wait() {
                Ok(status) => tracing::debug!(pid, %status, "slirp4netns ended"),
                Err(error) => tracing::warn!(pid, "wait for slirp4netns: {error}"),
            }
        }
    }

    /// The sandbox's pid, from bwrap's first status line (`{ "child-pid": N, … }`).
    fn child_pid(&mut self) -> Option<i32> {
        let mut line = String::new();
        self.status.read_line(&mut line).ok()?;
        let status: serde_json::Value = serde_json::from_str(&line).ok()?;
        let pid = status.get("child-pid")?.as_i64()?;
        i32::try_from(pid).ok().filter(|pid| *pid > 0)
    }

    /// Waits for bwrap's loopback, then runs slirp4netns on the sandbox's namespace and
    /// waits until it has configured the interface.
    fn start_slirp(&self, pid: i32) -> io::Result<Slirp> {
        let deadline = Instant::now() + SETUP_TIMEOUT;
        wait_for_loopback(pid, deadline)?;
        // The namespace, and the user namespace that owns it, which slirp4netns must join
        // to configure it. Not the sandbox's current user namespace: bwrap moves the
        // sandbox into a nested one to switch to the CNB user.
        let netns = OwnedFd::from(File::open(format!("/proc/{pid}/ns/net"))?);
        // SAFETY: NS_GET_USERNS has no argument; `OwnerUserns` takes the fd it returns.
        let userns = unsafe { rustix::ioctl::ioctl(&netns, OwnerUserns) }?;
        let (ready_read, ready_write) = io::pipe()?;
        let (exit_read, exit_write) = io::pipe()?;
        let mut log = tempfile::tempfile()?;
        let mut command = std::process::Command::new(&self.slirp4netns);
        command
            .args([
                "--configure",
                "--mtu=65520",
                "--disable-host-loopback",
                "--enable-sandbox",
                "--enable-seccomp",
                "--netns-type=path",
            ])
            .arg(format!("--ready-fd={}", ready_write.as_raw_fd()))
            .arg(format!("--exit-fd={}", exit_read.as_raw_fd()))
            .arg(format!(
                "--userns-path=/proc/self/fd/{}",
                userns.as_raw_fd()
            ))
            .arg(format!("/proc/self/fd/{}", netns.as_raw_fd()))
            .arg("tap0")
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.try_clone()?);
        let inherited = Inherited(vec![ready_write.into(), exit_read.into(), netns, userns]);
        // SAFETY: as in `Network::attach`: only fcntl on fds the closure owns.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                for fd in &inherited.0 {
                    rustix::io::fcntl_setfd(fd, FdFlags::empty())?;
                }
                Ok(())
            });
        }
        let mut child = command.spawn()?;
        // Our copies of slirp4netns's ends: without dropping them, a failed slirp4netns
        // would not close the ready pipe.
        drop(command);
        let exit = File::from(OwnedFd::from(exit_write));
        let ready = wait_readable(ready_read.as_fd(), deadline).and_then(|()| {
            let mut byte = [0u8; 1];
            (&ready_read).read(&mut byte)
        });
        if let Ok(1) = ready {
            return Ok(Slirp { child, exit });
        }
        let _ = child.kill();
        let status = child.wait()?;
        let mut text = String::new();
        log.rewind()?;
        let _ = log.take(16 * 1024).read_to_string(&mut text);
        let why = match ready {
            Err(error) => error.to_string(),
            Ok(_) => format!("it exited ({status})"),
        };
        Err(io::Error::other(format!(
            "slirp4netns did not configure the sandbox's network: {why}: {}",
            text.trim()
        )))
    }
}

/// The `NS_GET_USERNS` ioctl: the user namespace that owns a namespace, as a new fd
/// (close-on-exec).
struct OwnerUserns;

// SAFETY: the opcode is NS_GET_USERNS (`_IO(0xb7, 0x1)`), which reads no argument and
// returns a new file descriptor that nothing else owns.
unsafe impl rustix::ioctl::Ioctl for OwnerUserns {
    type Output = OwnedFd;
    const IS_MUTATING: bool = false;

    fn opcode(&self) -> rustix::ioctl::Opcode {
        rustix::ioctl::opcode::none(0xb7, 0x1)
    }

    fn as_ptr(&mut self) -> *mut std::ffi::c_void {
        std::ptr::null_mut()
    }

    unsafe fn output_from_ptr(
        out: rustix::ioctl::IoctlOutput,
        _: *mut std::ffi::c_void,
    ) -> rustix::io::Result<OwnedFd> {
        // SAFETY: on success the ioctl's result is a new fd.
        Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(out) })
    }
}

/// Waits until bwrap has given the sandbox's loopback its address: then 127.0.0.1 is a
/// local address in the namespace's routing tables.
fn wait_for_loopback(pid: i32, deadline: Instant) -> io::Result<()> {
    let path = format!("/proc/{pid}/net/fib_trie");
    loop {
        let table = std::fs::read_to_string(&path)?;
        if has_local_loopback(&table) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "bwrap did not set up the sandbox's loopback in time",
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Whether a `/proc/net/fib_trie` lists 127.0.0.1 as a local (host) address.
fn has_local_loopback(fib_trie: &str) -> bool {
    let mut lines = fib_trie.lines();
    while let Some(line) = lines.next() {
        if line.trim_end().ends_with("-- 127.0.0.1")
            && lines
                .next()
                .is_some_and(|leaf| leaf.contains("/32 host LOCAL"))
        {
            return true;
        }
    }
    false
}

/// Waits until `fd` is readable (or closed), up to `deadline`.
fn wait_readable(fd: std::os::fd::BorrowedFd<'_>, deadline: Instant) -> io::Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
        }
        let timeout = Timespec {
            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) => continue,
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(error) => return Err(error.into()),
        }
    }
}

/// The sandbox's `/etc/resolv.conf`: slirp4netns's forwarder, with the host's search
/// domains and options, cut to [`MAX_RESOLV_CONF`].
fn resolv_conf(host: &str) -> String {
    let mut text = format!("nameserver {DNS}\n");
    for line in host.lines() {
        let keyword = line.split_whitespace().next().unwrap_or_default();
        if matches!(keyword, "search" | "domain" | "options")
            && text.len() + line.len() < MAX_RESOLV_CONF
        {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_names_the_forwarder_and_keeps_search_domains() {
        let host = "# managed\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch example.org\n";
        assert_eq!(
            resolv_conf(host),
            "nameserver 10.0.2.3\noptions edns0 trust-ad\nsearch example.org\n"
        );
        let long = format!("search {}\n", "a".repeat(10_000));
        assert_eq!(resolv_conf(&long), "nameserver 10.0.2.3\n");
    }

    #[test]
    fn loopback_address_in_fib_trie() {
        let down = "Main:\n  +-- 0.0.0.0/0 3 0 5\nLocal:\n  +-- 0.0.0.0/0 3 0 5\n";
        assert!(!has_local_loopback(down));
        let up = "Local:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 127.0.0.0\n        /8 host LOCAL\n     |-- 127.0.0.1\n        /32 host LOCAL\n";
        assert!(has_local_loopback(up));
    }
}
