//! The example fleet (kpack.toml at the repository's root, its Debian stack, buildpacks and
//! apps) as the end-to-end tests build it: the stack, copies of the apps, and the built
//! images unpacked and run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the example stack into the repository's `out/stacks` if it is not there (about
/// two minutes the first time, then cached), and copies it to `layout` so that this test
/// can patch its run image without touching the one the demo uses.
pub fn example_stack(layout: &Path) {
    for (program, package) in [
        ("debootstrap", "debootstrap"),
        ("umoci", "umoci"),
        ("skopeo", "skopeo"),
        ("bwrap", "bubblewrap"),
    ] {
        testkit::require(program, package);
    }
    let status = Command::new(repo().join("examples/stacks/bookworm/build-stack"))
        .status()
        .expect("running build-stack");
    assert!(
        status.success(),
        "examples/stacks/bookworm/build-stack failed"
    );
    let status = Command::new("cp")
        .arg("-a")
        .arg(repo().join("out/stacks"))
        .arg(layout)
        .status()
        .expect("running cp");
    assert!(status.success(), "copying out/stacks");
}

pub fn git(dir: &Path, args: &[&str], tick: u64) {
    let date = format!("{} +0000", 1_700_000_000 + tick * 60);
    let status = Command::new("git")
        .args([
            "-c",
            "user.name=kpackd",
            "-c",
            "user.email=kpackd@example.com",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_DATE", &date)
        .env("GIT_COMMITTER_DATE", &date)
        .status()
        .expect("running git");
    assert!(status.success(), "git {args:?} failed");
}

pub fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("running cp");
    assert!(status.success(), "copying {}", from.display());
}

pub fn expect_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({:?}):\n{}\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// An image unpacked by umoci: its root filesystem and the runtime config made from its
/// image config (entrypoint, env, working directory, user).
pub struct Unpacked {
    _dir: tempfile::TempDir,
    bundle: PathBuf,
}

impl Unpacked {
    pub fn new(layout: &Path, name: &str) -> Unpacked {
        let dir = tempfile::tempdir().expect("temp dir");
        let bundle = dir.path().join("bundle");
        let output = Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:{name}", layout.display()))
            .arg(&bundle)
            .output()
            .expect("running umoci");
        expect_success(&output, "umoci unpack");
        Unpacked { _dir: dir, bundle }
    }

    pub fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }

    /// bwrap running the image's entrypoint (or `args` instead) as the image's user, on
    /// the host's network.
    pub fn command(&self, env: &[(&str, &str)], args: &[&str]) -> Command {
        let config: serde_json::Value = serde_json::from_slice(
            &fs::read(self.bundle.join("config.json")).expect("reading config.json"),
        )
        .expect("config.json");
        let process = &config["process"];
        let mut command = Command::new("bwrap");
        command
            .arg("--bind")
            .arg(self.rootfs())
            .args(["/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"])
            .args(["--unshare-user", "--unshare-pid", "--die-with-parent"])
            .args(["--uid", &process["user"]["uid"].to_string()])
            .args(["--gid", &process["user"]["gid"].to_string()])
            .arg("--clearenv");
        for var in process["env"].as_array().expect("env") {
            let (name, value) = var
                .as_str()
                .expect("env entry")
                .split_once('=')
                .expect("NAME=value");
            command.args(["--setenv", name, value]);
        }
        for (name, value) in env {
            command.args(["--setenv", name, value]);
        }
        command.args(["--chdir", process["cwd"].as_str().expect("cwd"), "--"]);
        if args.is_empty() {
            for arg in process["args"].as_array().expect("args") {
                command.arg(arg.as_str().expect("arg"));
            }
        } else {
            command.args(args);
        }
        command
    }

    /// Starts the image's default process with `PORT` set and returns what GET `path`
    /// answers.
    pub fn serve_and_get(&self, path: &str) -> String {
        use std::io::{Read as _, Write as _};
        let port = testkit::free_port();
        let mut server = self
            .command(&[("PORT", &port.to_string())], &[])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting the image");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let answer = loop {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("request");
                let mut answer = String::new();
                stream.read_to_string(&mut answer).expect("response");
                break answer;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the image did not answer on port {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        };
        server.kill().expect("stopping the image");
        server.wait().expect("waiting for the image");
        answer
    }
}

/// Runs the example fleet's images from the OCI layout `images` and checks what they
/// answer: hello-python and static-site serve HTTP, the worker's processes run.
pub fn assert_example_images_answer(images: &Path) {
    let hello = Unpacked::new(images, "hello-python");
    let answer = hello.serve_and_get("/");
    assert!(
        answer.starts_with("HTTP/1.0 200"),
        "hello-python answered:\n{answer}"
    );
    assert!(
        answer.contains("Hello from hello-python on Python 3."),
        "{answer}"
    );
    assert!(
        answer.contains("examples/python-runtime examples/python-app"),
        "the buildpacks' launch env: {answer}"
    );
    let site = Unpacked::new(images, "static-site");
    let answer = site.serve_and_get("/");
    assert!(
        answer.contains("<h1>static-site</h1>"),
        "static-site answered:\n{answer}"
    );
    let worker = Unpacked::new(images, "worker");
    let output = worker
        .command(&[], &[])
        .output()
        .expect("running the worker");
    expect_success(&output, "the worker's default process");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains("process type worker"), "{printed}");
    assert!(printed.contains("worker: done, 3 items"), "{printed}");
    let output = worker
        .command(&[], &["/cnb/process/report"])
        .output()
        .expect("running the worker's report");
    expect_success(&output, "the worker's report process");
    assert!(String::from_utf8_lossy(&output.stdout).contains("report: 3 items queued"));
}
