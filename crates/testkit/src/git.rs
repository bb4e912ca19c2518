//! Real git remotes for tests: bare repositories made with the `git` CLI at pinned dates
//! (so commit ids are the same on every run), served over `file://` or by `git daemon`
//! on loopback.

use std::fs;
use std::io::Read as _;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The first commit's date; each later commit and tag is one minute on.
const EPOCH: u64 = 1_700_000_000;

/// One entry of a commit: what the work tree holds at `path` afterwards.
#[derive(Debug, Clone, Copy)]
pub enum Entry<'a> {
    /// A regular file (mode 644).
    File(&'a str, &'a str),
    /// A regular file with its executable bits set (mode 755).
    Executable(&'a str, &'a str),
    /// A symbolic link to the given target, stored as git stores it.
    Symlink(&'a str, &'a str),
    /// Nothing: the path is deleted.
    Removed(&'a str),
}

/// A bare repository in its own temp dir, with a work clone that commits are made in
/// and pushed from.
pub struct BareRepo {
    dir: tempfile::TempDir,
    ticks: u64,
    branch: String,
}

impl BareRepo {
    /// An empty bare repository whose default branch is `main`.
    pub fn new() -> Self {
        crate::require("git", "git");
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let repo = BareRepo {
            dir,
            ticks: 0,
            branch: "main".into(),
        };
        repo.git(repo.dir.path(), &["init", "-q", "--bare", "repo.git"]);
        repo.git(repo.dir.path(), &["init", "-q", "work"]);
        repo.git(&repo.work(), &["remote", "add", "origin", "../repo.git"]);
        repo
    }

    /// The bare repository's directory.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("repo.git")
    }

    /// The repository as a `file://` URL.
    pub fn url(&self) -> String {
        format!("file://{}", self.path().display())
    }

    /// Commits `files` (path, contents) on the current branch and pushes it; returns
    /// the commit id.
    pub fn commit(&mut self, files: &[(&str, &str)], message: &str) -> String {
        let entries: Vec<Entry<'_>> = files.iter().map(|&(p, c)| Entry::File(p, c)).collect();
        self.commit_entries(&entries, message)
    }

    /// Commits files, executables, symlinks and deletions on the current branch and
    /// pushes it; returns the commit id.
    pub fn commit_entries(&mut self, entries: &[Entry<'_>], message: &str) -> String {
        let work = self.work();
        for entry in entries {
            match *entry {
                Entry::File(path, contents) => write(&work.join(path), contents, 0o644),
                Entry::Executable(path, contents) => write(&work.join(path), contents, 0o755),
                Entry::Symlink(path, target) => {
                    let at = work.join(path);
                    remove(&at);
                    create_parent(&at);
                    std::os::unix::fs::symlink(target, &at).expect("creating a symlink");
                }
                Entry::Removed(path) => remove(&work.join(path)),
            }
        }
        self.git(&work, &["add", "-A"]);
        self.tick();
        self.git(&work, &["commit", "-q", "--allow-empty", "-m", message]);
        let refspec = format!("HEAD:refs/heads/{}", self.branch);
        self.git(&work, &["push", "-q", "-f", "origin", &refspec]);
        self.git(&work, &["rev-parse", "HEAD"])
    }

    /// Makes later commits go to `branch`, starting from the current commit.
    pub fn switch_branch(&mut self, branch: &str) {
        self.git(&self.work(), &["checkout", "-q", "-B", branch]);
        self.branch = branch.into();
    }

    /// Tags the current commit with a lightweight tag and pushes it.
    pub fn tag(&mut self, name: &str) {
        self.git(&self.work(), &["tag", name]);
        self.push_tag(name);
    }

    /// Tags the current commit with an annotated tag and pushes it.
    pub fn annotated_tag(&mut self, name: &str, message: &str) {
        self.tick();
        self.git(&self.work(), &["tag", "-a", "-m", message, name]);
        self.push_tag(name);
    }

    /// Serves the repository with `git daemon` on 127.0.0.1; it is killed on drop.
    pub fn serve_daemon(&self) -> GitDaemon {
        crate::require("git", "git");
        let port = crate::free_port();
        let log_path = self.dir.path().join(format!("daemon-{port}.log"));
        let log = fs::File::create(&log_path).expect("creating the daemon log");
        let child = Command::new("git")
            .arg("daemon")
            .arg("--export-all")
            .arg("--reuseaddr")
            .arg("--verbose")
            .arg("--informative-errors")
            .arg("--log-destination=stderr")
            .arg(format!("--base-path={}", self.dir.path().display()))
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting git daemon");
        let mut daemon = GitDaemon {
            child,
            port,
            log: log_path,
        };
        daemon.wait_until_accepting();
        daemon
    }

    fn push_tag(&self, name: &str) {
        let refspec = format!("refs/tags/{name}:refs/tags/{name}");
        self.git(&self.work(), &["push", "-q", "-f", "origin", &refspec]);
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    fn tick(&mut self) {
        self.ticks += 1;
    }

    /// Runs git with a pinned identity and date and no user or system configuration;
    /// returns its trimmed stdout.
    fn git(&self, dir: &Path, args: &[&str]) -> String {
        let date = format!("@{} +0000", EPOCH + 60 * self.ticks);
        let output = Command::new("git")
            .current_dir(dir)
            .args(["-c", "init.defaultBranch=main", "-c", "core.symlinks=true"])
            .args(["-c", "commit.gpgSign=false", "-c", "tag.gpgSign=false"])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "Ada Lovelace")
            .env("GIT_AUTHOR_EMAIL", "ada@example.com")
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_NAME", "Ada Lovelace")
            .env("GIT_COMMITTER_EMAIL", "ada@example.com")
            .env("GIT_COMMITTER_DATE", &date)
            .output()
            .expect("running git");
        assert!(
            output.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .expect("git prints UTF-8 here")
            .trim()
            .to_string()
    }
}

impl Default for BareRepo {
    fn default() -> Self {
        Self::new()
    }
}

/// A running `git daemon` serving one [`BareRepo`] as `git://127.0.0.1:<port>/repo.git`.
pub struct GitDaemon {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl GitDaemon {
    /// The repository's `git://` URL.
    pub fn url(&self) -> String {
        format!("git://127.0.0.1:{}/repo.git", self.port)
    }

    /// How many upload-pack requests (fetch or ls-refs connections) the daemon has
    /// served so far.
    pub fn upload_pack_requests(&self) -> usize {
        let mut log = String::new();
        fs::File::open(&self.log)
            .and_then(|mut f| f.read_to_string(&mut log))
            .expect("reading the daemon log");
        log.lines()
            .filter(|line| line.contains("Request upload-pack"))
            .count()
    }

    fn wait_until_accepting(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("polling git daemon") {
                panic!(
                    "git daemon exited with {status}: {}",
                    fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "git daemon did not accept connections on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write(path: &Path, contents: &str, mode: u32) {
    remove(path);
    create_parent(path);
    fs::write(path, contents).expect("writing a file in the work tree");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("setting a file's mode");
}

fn create_parent(path: &Path) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("creating a directory in the work tree");
    }
}

fn remove(path: &Path) {
    if path.symlink_metadata().is_ok() {
        fs::remove_file(path).expect("removing a file from the work tree");
    }
}
