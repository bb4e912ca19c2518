//! The examples a user copies: the CI pipelines under examples/ci run kpackd command lines,
//! and these tests run the same lines against a small fleet and check their exit codes as
//! docs/commands.md documents them; the example kpack.toml must validate.

mod support;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use support::example::{
    assert_example_images_answer, copy_tree, example_stack, expect_success, git, repo, Unpacked,
};

const KPACKD: &str = env!("CARGO_BIN_EXE_kpackd");

/// The subcommands docs/commands.md documents; `kpackd` followed by anything else (a comment, an
/// install line) is not a command line.
const SUBCOMMANDS: &[&str] = &[
    "validate", "schema", "graph", "plan", "apply", "watch", "status", "builds", "logs", "trigger",
    "inspect", "copy",
];

/// Every `kpackd <subcommand> …` in a CI file, as its words up to the first shell operator
/// (redirection, pipe, `||`, `;`). Comment lines are skipped.
fn kpackd_commands(text: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        for (i, word) in words.iter().enumerate() {
            if *word != "kpackd" || !words.get(i + 1).is_some_and(|w| SUBCOMMANDS.contains(w)) {
                continue;
            }
            let mut command = Vec::new();
            for word in &words[i + 1..] {
                if word.starts_with(['>', '<', '|', '&', ';', ')']) || word.starts_with("2>") {
                    break;
                }
                match word.strip_suffix(';') {
                    Some(last) => {
                        command.push(last.to_string());
                        break;
                    }
                    None => command.push(word.to_string()),
                }
            }
            commands.push(command);
        }
    }
    commands
}

fn run(dir: &Path, args: &[String]) -> Output {
    Command::new(KPACKD)
        .args(args)
        .current_dir(dir)
        .env("KPACKD_STATE_DIR", dir.join(".kpackd"))
        .env("NO_COLOR", "1")
        .output()
        .expect("running kpackd")
}

fn umoci(args: &[&str], dir: &Path) {
    let status = Command::new("umoci")
        .args(args)
        .current_dir(dir)
        .status()
        .expect("running umoci");
    assert!(status.success(), "umoci {args:?} failed");
}

/// A fleet of one image on a stack of two empty images with the CNB labels and env, in OCI
/// layouts: enough to validate and plan; nothing here is built.
fn small_fleet() -> tempfile::TempDir {
    testkit::require("umoci", "umoci");
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    umoci(&["init", "--layout", "stacks"], root);
    for image in ["build", "run"] {
        let reference = format!("stacks:{image}");
        umoci(&["new", "--image", &reference], root);
        umoci(
            &[
                "config",
                "--image",
                &reference,
                "--os",
                "linux",
                "--architecture",
                "amd64",
                "--config.user",
                "1000:1000",
                "--config.env",
                "PATH=/usr/bin:/bin",
                "--config.env",
                "CNB_USER_ID=1000",
                "--config.env",
                "CNB_GROUP_ID=1000",
                "--config.label",
                "io.buildpacks.base.id=io.kpackd.tests.examples",
            ],
            root,
        );
    }

    let buildpack = root.join("buildpacks/hello");
    fs::create_dir_all(buildpack.join("bin")).expect("buildpack dir");
    fs::write(
        buildpack.join("buildpack.toml"),
        "api = \"0.10\"\n\n[buildpack]\nid = \"examples/hello\"\nversion = \"0.1.0\"\n\n[[targets]]\nos = \"linux\"\n",
    )
    .expect("buildpack.toml");
    for script in ["detect", "build"] {
        fs::write(buildpack.join("bin").join(script), "#!/bin/sh\nexit 0\n").expect("script");
    }

    fs::create_dir_all(root.join("app")).expect("app dir");
    fs::write(root.join("app/hello.txt"), "hello\n").expect("app file");

    fs::write(
        root.join("kpack.toml"),
        r#"[kpackd]
state-dir = ".kpackd"

[stacks.test]
build-image = "oci:stacks:build"
run-image = "oci:stacks:run"

[stores.test]
buildpacks = ["buildpacks/hello"]

[builders.test]
stack = "test"
store = "test"
order = [{ group = [{ id = "examples/hello" }] }]

[images.hello]
tag = "oci:out/images:hello"
builder = "test"
source = { path = "app" }
"#,
    )
    .expect("kpack.toml");
    dir
}

/// Runs a CI file's kpackd command lines in order against a fresh small fleet: nothing has
/// been built, so a plan has changes. `apply` is not run (it builds; the end-to-end tests
/// cover it) but must be given the config or a plan an earlier line saved.
fn check_ci_file(relative: &str) {
    let text = fs::read_to_string(repo().join(relative)).expect("reading the CI file");
    let commands = kpackd_commands(&text);
    let fleet = small_fleet();
    let dir = fleet.path();
    let mut ran = Vec::new();
    for command in &commands {
        let line = format!("kpackd {}", command.join(" "));
        let has = |flag: &str| command.iter().any(|w| w == flag);
        let after = |flag: &str| {
            command
                .iter()
                .position(|w| w == flag)
                .and_then(|i| command.get(i + 1))
                .cloned()
        };
        match command[0].as_str() {
            "apply" => {
                let target = command.get(1).expect("apply names a config or a plan");
                assert!(
                    target == "kpack.toml" || dir.join(target).is_file(),
                    "{relative}: `{line}` applies {target}, which no earlier line wrote"
                );
                continue;
            }
            "watch" | "logs" | "trigger" => continue,
            _ => {}
        }
        let output = run(dir, command);
        let code = output.status.code();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let expected = match command[0].as_str() {
            // Nothing is built yet: every image is a first build, a change.
            "plan" if has("--detailed-exitcode") => 2,
            _ => 0,
        };
        assert_eq!(
            code,
            Some(expected),
            "{relative}: `{line}` exited {code:?}, docs/commands.md says {expected}\n{stderr}"
        );
        if let Some(out) = after("--out") {
            let saved = fs::read_to_string(dir.join(&out))
                .unwrap_or_else(|e| panic!("{relative}: `{line}` wrote no {out}: {e}"));
            let plan: serde_json::Value = serde_json::from_str(&saved)
                .unwrap_or_else(|e| panic!("{relative}: {out} is not JSON: {e}"));
            assert!(plan.is_object(), "{relative}: {out} is not a plan object");
        }
        if has("--json") {
            let json: serde_json::Value = serde_json::from_slice(&output.stdout)
                .unwrap_or_else(|e| panic!("{relative}: `{line}` printed no JSON: {e}"));
            if command[0] == "plan" {
                assert_eq!(json["format_version"], 1, "{relative}: `{line}`");
            }
        }
        ran.push(command[0].clone());
    }
    for needed in ["validate", "plan"] {
        assert!(
            ran.iter().any(|c| c == needed),
            "{relative} runs no `kpackd {needed}`: {commands:?}"
        );
    }
    assert!(
        commands
            .iter()
            .any(|c| c[0] == "plan" && c.iter().any(|w| w == "--detailed-exitcode")),
        "{relative} plans without --detailed-exitcode"
    );
    assert!(
        commands.iter().any(|c| c[0] == "apply"),
        "{relative} never applies"
    );
}

#[test]
fn github_actions_workflow_commands_behave_as_documented() {
    check_ci_file("examples/ci/github/kpackd.yml");
}

#[test]
fn gitlab_ci_commands_behave_as_documented() {
    check_ci_file("examples/ci/gitlab/.gitlab-ci.yml");
}

#[test]
fn ci_command_lines_are_found() {
    let text = "
      # kpackd plans here; kpackd reads the docker config
      - cargo install --locked --git \"$URL\" kpackd
      - kpackd validate kpack.toml
      - kpackd plan kpack.toml --detailed-exitcode --out plan.json > plan.txt || code=$?
      - if [ \"$code\" -eq 2 ]; then kpackd apply plan.json; fi
    ";
    assert_eq!(
        kpackd_commands(text),
        vec![
            vec!["validate", "kpack.toml"],
            vec![
                "plan",
                "kpack.toml",
                "--detailed-exitcode",
                "--out",
                "plan.json"
            ],
            vec!["apply", "plan.json"],
        ]
    );
}

#[test]
fn example_fleet_validates() {
    let output = Command::new(KPACKD)
        .args(["validate", "kpack.toml"])
        .current_dir(repo())
        .output()
        .expect("running kpackd");
    assert!(
        output.status.success(),
        "kpackd validate kpack.toml failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The example buildpacks are POSIX sh (the build image's /bin/sh is dash) and say so.
#[test]
fn example_buildpack_scripts_are_posix_sh() {
    let buildpacks = repo().join("examples/buildpacks");
    let mut checked = 0;
    for entry in fs::read_dir(&buildpacks).expect("examples/buildpacks") {
        let bin = entry.expect("entry").path().join("bin");
        for script in ["detect", "build"] {
            let path = bin.join(script);
            if !path.exists() {
                continue;
            }
            let text = fs::read_to_string(&path).expect("script");
            assert!(
                text.starts_with("#!/bin/sh\n"),
                "{} is not a sh script",
                path.display()
            );
            let status = Command::new("sh")
                .arg("-n")
                .arg(&path)
                .status()
                .expect("running sh -n");
            assert!(status.success(), "{} has a syntax error", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} buildpack scripts found");
}

// ---------------------------------------------------------------------------------------
// The example fleet end to end: the real Debian stack, the example buildpacks and apps.

/// The example kpack.toml, rewritten for a fleet in `dir`: the stack in `dir/stacks`, the
/// worker from a git repository, everything else as in the repository.
fn example_fleet(dir: &Path) {
    example_stack(&dir.join("stacks"));
    fs::create_dir_all(dir.join("examples")).expect("examples dir");
    copy_tree(
        &repo().join("examples/buildpacks"),
        &dir.join("examples/buildpacks"),
    );
    copy_tree(&repo().join("examples/apps"), &dir.join("examples/apps"));

    let worker = dir.join("worker");
    copy_tree(&repo().join("examples/apps/worker"), &worker);
    git(&worker, &["init", "-q", "-b", "main"], 0);
    git(&worker, &["add", "."], 0);
    git(&worker, &["commit", "-q", "-m", "worker"], 0);

    let config = fs::read_to_string(repo().join("kpack.toml")).expect("reading kpack.toml");
    let config = config.replace("oci:out/stacks:", "oci:stacks:").replace(
        "source = { path = \"examples/apps/worker\" }",
        &format!(
            "source = {{ git = \"file://{}\", revision = \"main\" }}",
            worker.display()
        ),
    );
    assert!(
        config.contains("git = \"file://"),
        "the worker is no longer in kpack.toml"
    );
    fs::write(dir.join("kpack.toml"), config).expect("writing kpack.toml");
}

fn kpackd(dir: &Path, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    run(dir, &args)
}

/// `kpackd plan --json`: each image's action and reasons.
/// The manifest digest of `name` in the layout `layout`, as skopeo reads it.
fn image_digest(layout: &Path, name: &str) -> String {
    let output = Command::new("skopeo")
        .args(["inspect", "--format", "{{.Digest}}"])
        .arg(format!("oci:{}:{name}", layout.display()))
        .output()
        .expect("running skopeo");
    expect_success(&output, "skopeo inspect");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The plan's builders: (builder, action, reasons).
fn publishes(dir: &Path) -> Vec<(String, String, Vec<String>)> {
    let output = kpackd(dir, &["plan", "kpack.toml", "--json"]);
    expect_success(&output, "kpackd plan --json");
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).expect("plan JSON");
    plan["builders"]
        .as_array()
        .expect("builders")
        .iter()
        .map(|b| {
            let reasons = b["reasons"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(|r| r.as_str())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            (
                b["builder"].as_str().unwrap_or("").to_string(),
                b["action"].as_str().unwrap_or("").to_string(),
                reasons,
            )
        })
        .collect()
}

fn planned(dir: &Path) -> Vec<(String, String, Vec<String>)> {
    let output = kpackd(dir, &["plan", "kpack.toml", "--json"]);
    expect_success(&output, "kpackd plan --json");
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).expect("plan JSON");
    let mut changes: Vec<_> = plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            let reasons = c["reasons"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .map(|r| r.as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default();
            (
                c["image"].as_str().unwrap_or("").to_string(),
                c["action"].as_str().unwrap_or("").to_string(),
                reasons,
            )
        })
        .collect();
    changes.sort();
    changes
}

/// What ./scripts/demo shows, checked: apply builds the fleet and every image runs; a new
/// commit is one COMMIT build; a patched run image is rebases only, after which the
/// images run on the new base; then there is nothing left to do.
#[test]
fn example_fleet_builds_runs_rebuilds_and_rebases() {
    let fleet = tempfile::tempdir().expect("temp dir");
    let dir = fleet.path();
    example_fleet(dir);
    let images = dir.join("out/images");
    let all = |action: &str, reason: &str| -> Vec<(String, String, Vec<String>)> {
        ["hello-python", "static-site", "worker"]
            .iter()
            .map(|i| (i.to_string(), action.to_string(), vec![reason.to_string()]))
            .collect()
    };

    assert_eq!(
        planned(dir),
        all("build", "CONFIG"),
        "a fresh state builds everything"
    );
    assert_eq!(
        publishes(dir),
        vec![("default".into(), "publish".into(), vec!["CONFIG".into()])],
        "the example builder has a tag: it is published"
    );
    expect_success(&kpackd(dir, &["apply", "kpack.toml"]), "the first apply");
    let builder = dir.join("out/builders");
    assert!(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:default", builder.display()))
            .output()
            .expect("running skopeo")
            .status
            .success(),
        "skopeo cannot read the published builder"
    );
    assert_eq!(
        kpackd(dir, &["plan", "kpack.toml", "--detailed-exitcode"])
            .status
            .code(),
        Some(0),
        "after an apply there is nothing to do"
    );

    assert_example_images_answer(&images);

    // The published builder, read back as a builder image, builds the same image.
    let config = fs::read_to_string(dir.join("kpack.toml")).expect("reading kpack.toml");
    let worker_source = config
        .lines()
        .find(|l| l.contains("git = \"file://"))
        .expect("the worker's source")
        .to_string();
    fs::write(
        dir.join("kpack.toml"),
        format!(
            "{config}\n[builders.published]\nbuilder = \"oci:out/builders:default\"\n\n\
             [images.worker-again]\ntag = \"oci:out/images:worker-again\"\n\
             builder = \"published\"\n{worker_source}\n"
        ),
    )
    .expect("writing kpack.toml");
    expect_success(
        &kpackd(dir, &["apply", "kpack.toml"]),
        "the apply with the published builder",
    );
    assert_eq!(
        image_digest(&images, "worker-again"),
        image_digest(&images, "worker"),
        "the published builder builds the same image as the assembled one"
    );
    fs::write(dir.join("kpack.toml"), &config).expect("writing kpack.toml");
    expect_success(
        &kpackd(dir, &["apply", "kpack.toml"]),
        "the apply forgetting worker-again",
    );

    // A new commit on the branch the worker follows: exactly one COMMIT build.
    let repo_dir = dir.join("worker");
    fs::write(repo_dir.join("NOTES.md"), "a new commit\n").expect("editing the worker");
    git(&repo_dir, &["add", "."], 1);
    git(&repo_dir, &["commit", "-q", "-m", "notes"], 1);
    assert_eq!(
        planned(dir),
        vec![
            ("hello-python".into(), "noop".into(), vec![]),
            ("static-site".into(), "noop".into(), vec![]),
            ("worker".into(), "build".into(), vec!["COMMIT".into()]),
        ]
    );
    expect_success(
        &kpackd(dir, &["apply", "kpack.toml"]),
        "the apply of the commit",
    );

    // A patched run image: rebases only, and the rebased images run on the new base.
    let status = Command::new(repo().join("examples/stacks/bookworm/build-stack"))
        .arg("--out")
        .arg(dir.join("stacks"))
        .arg("--patch-run-image")
        .status()
        .expect("running build-stack --patch-run-image");
    assert!(status.success(), "build-stack --patch-run-image failed");
    assert_eq!(planned(dir), all("rebase", "STACK"));
    assert_eq!(
        publishes(dir),
        vec![("default".into(), "noop".into(), vec![])],
        "a patched run image leaves the builder as it is"
    );
    expect_success(
        &kpackd(dir, &["apply", "kpack.toml"]),
        "the apply of the rebases",
    );
    let hello = Unpacked::new(&images, "hello-python");
    assert!(
        hello.rootfs().join("etc/kpackd-patch").is_file(),
        "the rebased hello-python lacks the run image's patch"
    );
    assert!(hello.serve_and_get("/healthz").contains("ok"));
    let worker = Unpacked::new(&images, "worker");
    expect_success(
        &worker
            .command(&[], &[])
            .output()
            .expect("running the worker"),
        "the rebased worker",
    );

    assert_eq!(
        kpackd(dir, &["plan", "kpack.toml", "--detailed-exitcode"])
            .status
            .code(),
        Some(0),
        "the second apply left nothing to do"
    );
    expect_success(&kpackd(dir, &["apply", "kpack.toml"]), "a no-op apply");
}
