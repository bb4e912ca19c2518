//! A state directory kpackd cannot use says why: a truncated `state.db`, a read-only
//! directory and a full disk each get their own message instead of a generic lock or
//! SQLite error (or, for the truncated database, instead of silently starting afresh).
//! The read-only and full cases run kpackd in a mount namespace of its own (`unshare -m`,
//! as root, like the sandbox tests) over a read-only bind mount and a tiny tmpfs.

use std::path::Path;
use std::process::{Command, Output};

/// A kpack.toml that validates without any image or registry being reachable: only
/// `trigger` and the state are exercised here.
fn fleet(dir: &Path) {
    let bp = dir.join("bp");
    std::fs::create_dir_all(bp.join("bin")).expect("buildpack dir");
    std::fs::write(
        bp.join("buildpack.toml"),
        "api = \"0.10\"\n\n[buildpack]\nid = \"test/bp\"\nversion = \"0.1.0\"\n",
    )
    .expect("buildpack.toml");
    std::fs::create_dir_all(dir.join("app")).expect("app dir");
    std::fs::write(
        dir.join("kpack.toml"),
        r#"[stacks.s]
build-image = "127.0.0.1:9/stack/build"
run-image = "127.0.0.1:9/stack/run"

[stores.st]
buildpacks = ["bp"]

[builders.b]
stack = "s"
store = "st"
order = [{ group = [{ id = "test/bp" }] }]

[images.app]
tag = "127.0.0.1:9/app"
builder = "b"
source = { path = "app" }
"#,
    )
    .expect("kpack.toml");
}

/// Runs `script` with sh in `dir`, `$KPACKD` naming the binary.
fn sh(dir: &Path, script: &str) -> Output {
    let output = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .env("KPACKD", env!("CARGO_BIN_EXE_kpackd"))
        .env("NO_COLOR", "1")
        .env_remove("KPACKD_STATE_DIR")
        .output()
        .expect("running sh");
    eprintln!(
        "$ {script}\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stderr(output: &Output) -> String {
    // Diagnostics wrap long lines; compare on words.
    String::from_utf8_lossy(&output.stderr)
        .split_whitespace()
        .filter(|w| *w != "|" && *w != "`->" && *w != "|->" && *w != "x")
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn a_truncated_state_database_is_refused_not_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    fleet(dir.path());
    let made = sh(dir.path(), "\"$KPACKD\" trigger app --state-dir st");
    assert!(made.status.success(), "{}", stderr(&made));
    // Checkpointed and truncated, as a failed copy or a full disk leaves it.
    std::fs::write(dir.path().join("st/state.db"), b"").expect("truncate");
    for wal in ["st/state.db-wal", "st/state.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(wal));
    }
    let out = sh(dir.path(), "\"$KPACKD\" builds --state-dir st");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("st/state.db is empty (0 bytes) although it holds the state"),
        "{}",
        stderr(&out)
    );
    let size = std::fs::metadata(dir.path().join("st/state.db"))
        .expect("state.db")
        .len();
    assert_eq!(size, 0, "the truncated database was written over");
}

#[test]
fn a_read_only_state_directory_is_named_as_such() {
    testkit::require("unshare", "util-linux");
    let dir = tempfile::tempdir().expect("tempdir");
    fleet(dir.path());
    let made = sh(dir.path(), "\"$KPACKD\" trigger app --state-dir st");
    assert!(made.status.success(), "{}", stderr(&made));
    let ro = "mount --bind st st && mount -o remount,bind,ro st";
    for command in ["apply", "trigger app"] {
        let out = sh(
            dir.path(),
            &format!("unshare -m sh -c '{ro} && \"$KPACKD\" {command} --state-dir st'"),
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{command}: {err}");
        assert!(
            err.contains("the state directory st is not writable")
                && err.contains("Read-only file system"),
            "{command}: {err}"
        );
        assert!(!err.contains("--lock-timeout"), "{command}: {err}");
    }
}

#[test]
fn a_full_disk_is_named_as_such() {
    testkit::require("unshare", "util-linux");
    let dir = tempfile::tempdir().expect("tempdir");
    fleet(dir.path());
    std::fs::create_dir(dir.path().join("disk")).expect("mount point");
    let out = sh(
        dir.path(),
        "unshare -m sh -c 'mount -t tmpfs -o size=2m tmpfs disk \
         && \"$KPACKD\" trigger app --state-dir disk/st \
         && (dd if=/dev/zero of=disk/filler bs=4k 2>/dev/null; true) \
         && \"$KPACKD\" trigger app --state-dir disk/st'",
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("write the state in disk/st: the disk is full"),
        "{err}"
    );
}
