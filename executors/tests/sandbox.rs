//! The sandbox against real bubblewrap in a minimal root filesystem built from the host's
//! programs: identity, binds, the read-only root, network isolation, environment isolation,
//! and the process tree dying with its command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use executors::sandbox::{prepare_mount_points, Bind, Sandbox, SandboxError};
use testkit::rootfs::{minimal_rootfs, CNB_GID, CNB_UID};

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    out: PathBuf,
}

/// A minimal root with `/data` (read-only bind) and `/out` (writable bind) mount points.
fn fixture() -> Fixture {
    testkit::require("bwrap", "bubblewrap");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    minimal_rootfs(&root, &[]).expect("minimal rootfs");
    prepare_mount_points(&root, &[Path::new("/data"), Path::new("/out")]).expect("mount points");
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::create_dir(&out).expect("mkdir");
    std::fs::write(data.join("hello.txt"), "hello from the host\n").expect("write");
    Fixture {
        _dir: dir,
        root,
        data,
        out,
    }
}

impl Fixture {
    fn sandbox(&self) -> Sandbox {
        Sandbox::new(&self.root, CNB_UID, CNB_GID)
            .bind(Bind::read_only(&self.data, "/data"))
            .bind(Bind::writable(&self.out, "/out"))
    }
}

fn env(vars: &[(&str, &str)]) -> BTreeMap<String, String> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn run(sandbox: &Sandbox, script: &str, vars: &[(&str, &str)]) -> Output {
    sandbox
        .command(
            Path::new("/bin/bash"),
            &["-c".to_owned(), script.to_owned()],
            &env(vars),
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

#[tokio::test]
async fn runs_as_the_cnb_user() {
    let fixture = fixture();
    let output = run(&fixture.sandbox(), "id -u; id -g; id -un", &[]).await;
    assert_eq!(stdout(&output), "1000\n1000\ncnb\n");
}

#[tokio::test]
async fn reads_binds_and_writes_only_where_writable() {
    let fixture = fixture();
    let output = run(
        &fixture.sandbox(),
        "cat /data/hello.txt
         echo made > /out/made.txt
         if touch /data/nope 2>/dev/null; then echo data-writable; fi
         if touch /etc/nope 2>/dev/null; then echo root-writable; fi
         echo tmp > /tmp/scratch && cat /tmp/scratch",
        &[],
    )
    .await;
    assert_eq!(stdout(&output), "hello from the host\ntmp\n");
    assert_eq!(
        std::fs::read_to_string(fixture.out.join("made.txt")).expect("written through the bind"),
        "made\n"
    );
    assert!(!fixture.root.join("etc/nope").exists());
}

#[tokio::test]
async fn working_directory_and_program_arguments() {
    let fixture = fixture();
    let output = fixture
        .sandbox()
        .command(
            Path::new("/usr/bin/env"),
            &[
                "bash".to_owned(),
                "-c".to_owned(),
                "pwd; echo \"$1\"".to_owned(),
                "x".to_owned(),
                "one arg".to_owned(),
            ],
            &env(&[("PATH", "/usr/bin:/bin")]),
            Path::new("/data"),
        )
        .expect("command")
        .output()
        .await
        .expect("run bwrap");
    assert_eq!(stdout(&output), "/data\none arg\n");
}

#[tokio::test]
async fn environment_is_exactly_what_is_given() {
    let fixture = fixture();
    std::env::set_var("KPACKD_HOST_ONLY", "leaked");
    let sandbox = fixture
        .sandbox()
        .env("BASE", "base")
        .env("SHARED", "from-sandbox");
    let output = run(
        &sandbox,
        "env | sort",
        &[("SHARED", "from-command"), ("WITH_SPACE", "a b")],
    )
    .await;
    // bash itself adds PWD, SHLVL and _ to the environment it passes on.
    let vars: Vec<String> = stdout(&output)
        .lines()
        .filter(|l| !l.starts_with("PWD=") && !l.starts_with("SHLVL=") && !l.starts_with("_="))
        .map(str::to_owned)
        .collect();
    assert_eq!(vars, ["BASE=base", "SHARED=from-command", "WITH_SPACE=a b"]);
}

#[tokio::test]
async fn network_is_off_unless_asked() {
    let fixture = fixture();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
    let port = listener.local_addr().expect("address").port();
    // bash's /dev/tcp connects without any network tool in the root.
    let script = format!("(echo > /dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo connected || echo refused; cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '");

    let off = stdout(&run(&fixture.sandbox(), &script, &[]).await);
    assert_eq!(
        off, "refused\nlo\n",
        "only an isolated loopback without network"
    );

    testkit::require("slirp4netns", "slirp4netns");
    let on = stdout(&run(&fixture.sandbox().network(true), &script, &[]).await);
    assert_eq!(
        on, "refused\nlo\ntap0\n",
        "its own network, without the host's loopback (tests/sandbox_network.rs)"
    );
}

#[tokio::test]
async fn dropping_the_command_kills_the_process_tree() {
    let fixture = fixture();
    // A marker no other process on the host has in its command line.
    let marker = format!("{}.{}", std::process::id(), CNB_UID);
    let mut child = fixture
        .sandbox()
        .command(
            Path::new("/bin/bash"),
            &[
                "-c".to_owned(),
                format!("sleep 1{marker} & echo started; wait"),
            ],
            &env(&[("PATH", "/usr/bin:/bin")]),
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
    // The backgrounded sleep may not have exec'd yet when the echo arrives; and killing is
    // asynchronous. Both waits end on the condition, with no time limit.
    while sleepers(&marker) == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(child);
    while sleepers(&marker) > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// How many processes on the host run `sleep 1<marker>`.
fn sleepers(marker: &str) -> usize {
    let wanted = format!("sleep\01{marker}\0");
    std::fs::read_dir("/proc")
        .expect("list /proc")
        .filter_map(|entry| std::fs::read(entry.ok()?.path().join("cmdline")).ok())
        .filter(|cmdline| cmdline == wanted.as_bytes())
        .count()
}

#[tokio::test]
async fn missing_mount_point_is_a_clear_error() {
    let fixture = fixture();
    let sandbox = fixture
        .sandbox()
        .bind(Bind::read_only(&fixture.data, "/not-prepared"));
    let error = sandbox
        .command(
            Path::new("/bin/true"),
            &[],
            &BTreeMap::new(),
            Path::new("/"),
        )
        .expect_err("no mount point");
    assert!(
        matches!(error, SandboxError::MissingMountPoint { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("/not-prepared"), "{error}");
}

#[test]
fn prepare_mount_points_refuses_symlinks_out_of_the_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("mkdir");
    std::os::unix::fs::symlink(&outside, root.join("escape")).expect("symlink");
    let error = prepare_mount_points(&root, &[Path::new("/escape/layers")])
        .expect_err("a symlink on the way");
    assert!(error.to_string().contains("not a directory"), "{error}");
    assert!(!outside.join("layers").exists());
    prepare_mount_points(
        &root,
        &[Path::new("/workspace"), Path::new("/cnb/buildpacks")],
    )
    .expect("plain mount points");
    for made in ["proc", "dev", "tmp", "workspace", "cnb/buildpacks"] {
        assert!(root.join(made).is_dir(), "{made}");
    }
}

#[tokio::test]
async fn minimal_root_has_python_when_asked() {
    testkit::require("bwrap", "bubblewrap");
    let dir = tempfile::tempdir().expect("tempdir");
    minimal_rootfs(dir.path(), &["python3"]).expect("minimal rootfs with python3");
    let sandbox = Sandbox::new(dir.path(), CNB_UID, CNB_GID);
    let output = run(
        &sandbox,
        "python3 -c 'import hashlib, json, sys; print(json.dumps([sys.version_info[0], hashlib.sha256(b\"\").hexdigest()[:8]]))'; sh -c 'echo sh is here'",
        &[("PATH", "/usr/bin:/bin")],
    )
    .await;
    assert_eq!(stdout(&output), "[3, \"e3b0c442\"]\nsh is here\n");
}
