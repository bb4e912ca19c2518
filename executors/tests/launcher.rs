//! The embedded launcher, run for real in the sandbox over a minimal root: an app image's
//! `/layers` and `/workspace` laid out as the exporter writes them, started through
//! `/cnb/process/<type>` and user commands. Where the platform spec leaves room, the
//! expected behaviour is the reference launcher's (its `launch/` package and launcher
//! acceptance cases).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use executors::sandbox::{prepare_mount_points, Bind, Sandbox};
use testkit::rootfs::{minimal_rootfs, CNB_GID, CNB_UID};

const METADATA: &str = r#"buildpack-default-process-type = "web"

[[buildpacks]]
id = "examples/hello"
version = "1.0.0"
api = "0.12"

[[buildpacks]]
id = "examples/legacy"
version = "0.1.0"
api = "0.8"

[[processes]]
type = "web"
command = ["greet"]
args = ["default-arg"]
direct = true
buildpack-id = "examples/hello"

[[processes]]
type = "shell"
command = ["echo \"$GREETING\" from-profile=$FROM_PROFILE from-profile.d=$FROM_PROFILE_D cwd=$PWD"]
direct = false
buildpack-id = "examples/legacy"
working-dir = "/layers"

[[processes]]
type = "legacy-words"
command = ["echo"]
args = ["$HOME"]
direct = false
buildpack-id = "examples/legacy"

[[processes]]
type = "exec.d-checker"
command = ["printf"]
args = ['FROM_EXEC_D: "%s"', "$FROM_EXEC_D"]
direct = false
buildpack-id = "examples/hello"
"#;

struct App {
    _dir: tempfile::TempDir,
    root: PathBuf,
    layers: PathBuf,
    workspace: PathBuf,
}

fn write(path: &Path, content: &str, mode: u32) {
    fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    fs::write(path, content).expect("write");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Installs the launcher as /cnb/lifecycle/launcher with /cnb/process/<type> links.
fn install_launcher(root: &Path, process_types: &[&str]) {
    let launcher = root.join("cnb/lifecycle/launcher");
    fs::create_dir_all(launcher.parent().expect("a parent")).expect("mkdir");
    fs::write(&launcher, executors::launcher_binary()).expect("write launcher");
    fs::set_permissions(&launcher, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::create_dir_all(root.join("cnb/process")).expect("mkdir");
    for process_type in process_types {
        symlink(
            "/cnb/lifecycle/launcher",
            root.join("cnb/process").join(process_type),
        )
        .expect("symlink");
    }
}

fn app() -> App {
    testkit::require("bwrap", "bubblewrap");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    minimal_rootfs(&root, &[]).expect("minimal rootfs");
    prepare_mount_points(&root, &[Path::new("/layers"), Path::new("/workspace")])
        .expect("mount points");
    install_launcher(&root, &["web", "shell", "legacy-words", "exec.d-checker"]);

    let layers = dir.path().join("layers");
    write(&layers.join("config/metadata.toml"), METADATA, 0o644);
    let greeter = layers.join("examples_hello/greeter");
    write(
        &greeter.join("env.launch/GREETING.override"),
        "hello from a layer",
        0o644,
    );
    write(
        &greeter.join("bin/greet"),
        "#!/bin/bash\necho \"$GREETING, args: $*, exec.d: $FROM_EXEC_D, cwd: $PWD\"\n",
        0o755,
    );
    write(
        &greeter.join("exec.d/set-var"),
        "#!/bin/bash\necho 'FROM_EXEC_D = \"yes\"' >&3\n",
        0o755,
    );
    write(
        &layers.join("examples_legacy/tools/profile.d/tools.sh"),
        "export FROM_PROFILE_D=1\n",
        0o644,
    );
    let workspace = dir.path().join("workspace");
    write(
        &workspace.join(".profile"),
        "export FROM_PROFILE=1\n",
        0o644,
    );
    App {
        _dir: dir,
        root,
        layers,
        workspace,
    }
}

/// Runs `program` in the app image the way a container runtime would: the image config's
/// environment, cwd /workspace.
async fn run(app: &App, program: &str, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
    let mut env: BTreeMap<String, String> = [
        ("PATH", "/cnb/process:/cnb/lifecycle:/usr/bin:/bin"),
        ("CNB_LAYERS_DIR", "/layers"),
        ("CNB_APP_DIR", "/workspace"),
        ("HOME", "/home/cnb"),
    ]
    .iter()
    .chain(extra_env)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.retain(|_, v| !v.is_empty());
    Sandbox::new(&app.root, CNB_UID, CNB_GID)
        .bind(Bind::read_only(&app.layers, "/layers"))
        .bind(Bind::read_only(&app.workspace, "/workspace"))
        .command(
            Path::new(program),
            &args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            &env,
            Path::new("/workspace"),
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
async fn process_link_runs_the_process_in_its_environment() {
    let app = app();
    let output = run(&app, "/cnb/process/web", &[], &[]).await;
    assert_eq!(
        stdout(&output),
        "hello from a layer, args: default-arg, exec.d: yes, cwd: /workspace\n"
    );
}

#[tokio::test]
async fn user_args_replace_the_process_args() {
    let app = app();
    let output = run(&app, "/cnb/process/web", &["one", "two words"], &[]).await;
    assert_eq!(
        stdout(&output),
        "hello from a layer, args: one two words, exec.d: yes, cwd: /workspace\n"
    );
}

#[tokio::test]
async fn launcher_without_arguments_needs_a_command() {
    // The reference launcher chooses a process only through argv[0]: the image's
    // entrypoint is /cnb/process/<default>, and the bare launcher needs a command.
    let app = app();
    let output = run(&app, "/cnb/lifecycle/launcher", &[], &[]).await;
    assert_eq!(output.status.code(), Some(82));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("when there is no default process a command is required"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn cnb_process_type_selects_nothing_and_warns() {
    // Platform API 0.12: CNB_PROCESS_TYPE no longer selects a process; the launcher says
    // how to run it instead (the reference launcher's acceptance case).
    let app = app();
    let output = run(
        &app,
        "/cnb/lifecycle/launcher",
        &[],
        &[("CNB_PROCESS_TYPE", "shell"), ("CNB_PLATFORM_API", "0.12")],
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(82), "{stderr}");
    assert!(
        stderr.contains("Warning: CNB_PROCESS_TYPE is not supported in Platform API 0.12"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Warning: Run with ENTRYPOINT 'shell' to invoke the 'shell' process type"),
        "{stderr}"
    );
    assert!(
        stderr.contains("when there is no default process a command is required"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_process_without_arguments_is_a_script_run_after_the_profiles() {
    let app = app();
    let output = run(&app, "/cnb/process/shell", &[], &[]).await;
    assert_eq!(
        stdout(&output),
        "hello from a layer from-profile=1 from-profile.d=1 cwd=/layers\n"
    );
}

#[tokio::test]
async fn each_shell_word_is_evaluated_like_eval_echo() {
    let app = app();
    // An older buildpack's process: the user's arguments extend its own, each one word.
    // `eval echo \"$1\"` re-splits a word before echo joins it again, so runs of spaces
    // inside a word become one, as with the reference launcher.
    let output = run(&app, "/cnb/process/legacy-words", &["extra  arg"], &[]).await;
    assert_eq!(stdout(&output), "/home/cnb extra arg\n");
    // The exec.d acceptance case: quotes inside a word are removed, variables expand.
    let output = run(&app, "/cnb/process/exec.d-checker", &[], &[]).await;
    assert_eq!(stdout(&output), "FROM_EXEC_D: yes");
    // A user command through the shell: command substitution runs in each word.
    let output = run(
        &app,
        "/cnb/lifecycle/launcher",
        &["echo", "say \"hi\" to $GREETING", "$(echo substituted)"],
        &[],
    )
    .await;
    assert_eq!(
        stdout(&output),
        "say hi to hello from a layer substituted\n"
    );
}

#[tokio::test]
async fn user_command_gets_the_launch_environment() {
    let app = app();
    let output = run(
        &app,
        "/cnb/lifecycle/launcher",
        &["--", "env"],
        &[
            ("CNB_PLATFORM_API", "0.12"),
            ("CNB_DEPRECATION_MODE", "quiet"),
        ],
    )
    .await;
    let env: BTreeMap<String, String> = stdout(&output)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(env["GREETING"], "hello from a layer");
    assert_eq!(env["FROM_EXEC_D"], "yes");
    assert_eq!(
        env["PATH"],
        "/layers/examples_hello/greeter/bin:/usr/bin:/bin"
    );
    assert_eq!(env["HOME"], "/home/cnb");
    for launcher_only in [
        "CNB_LAYERS_DIR",
        "CNB_APP_DIR",
        "CNB_PROCESS_TYPE",
        "CNB_PLATFORM_API",
        "CNB_DEPRECATION_MODE",
    ] {
        assert!(!env.contains_key(launcher_only), "{launcher_only} leaked");
    }

    let output = run(
        &app,
        "/cnb/lifecycle/launcher",
        &["echo $GREETING | tr a-z A-Z"],
        &[],
    )
    .await;
    assert_eq!(stdout(&output), "HELLO FROM A LAYER\n");
}

#[tokio::test]
async fn errors_are_one_line_and_a_launch_exit_code() {
    let app = app();
    let output = run(&app, "/cnb/lifecycle/launcher", &["--"], &[]).await;
    assert_eq!(output.status.code(), Some(82));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "launcher: when there is no default process a command is required: give a command, or run a process type through /cnb/process/<type>\n"
    );
}

#[tokio::test]
async fn launcher_runs_in_a_root_without_libc() {
    testkit::require("bwrap", "bubblewrap");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    fs::create_dir(&root).expect("mkdir");
    prepare_mount_points(&root, &[]).expect("mount points");
    install_launcher(&root, &[]);
    let output = Sandbox::new(&root, CNB_UID, CNB_GID)
        .command(
            Path::new("/cnb/lifecycle/launcher"),
            &["--".to_owned(), "/bin/missing".to_owned()],
            &BTreeMap::new(),
            Path::new("/"),
        )
        .expect("command")
        .output()
        .await
        .expect("run bwrap");
    assert_eq!(output.status.code(), Some(82));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "launcher: command `/bin/missing` not found in PATH=\n"
    );
}

#[test]
fn launcher_is_statically_linked() {
    // An ELF executable needs a dynamic loader (and so a libc in the image) exactly when
    // it has a PT_INTERP program header.
    const PT_INTERP: u32 = 3;
    let elf = executors::launcher_binary();
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf[4], 2, "64-bit");
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let header = phoff + i * phentsize;
        let p_type = u32::from_le_bytes(elf[header..header + 4].try_into().expect("4 bytes"));
        assert_ne!(p_type, PT_INTERP, "the launcher asks for a dynamic loader");
    }
}

#[test]
fn launcher_bytes_do_not_depend_on_where_kpackd_was_built() {
    // Its panic messages name source files: named from the checkout, every app image would
    // depend on the directory kpackd was built in.
    let elf = executors::launcher_binary();
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("executors/ is inside the workspace");
    let needle = checkout.to_string_lossy();
    assert!(
        !elf.windows(needle.len()).any(|w| w == needle.as_bytes()),
        "the launcher names the checkout {needle}"
    );
    let fixed = b"/kpackd/crates/launcher/src/";
    assert!(
        elf.windows(fixed.len()).any(|w| w == fixed),
        "the launcher names its sources under /kpackd/crates/launcher/src/"
    );
}
