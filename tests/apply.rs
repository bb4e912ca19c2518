//! `kpackd apply` end to end: the binary, a real stack in an OCI layout, real shell
//! buildpacks in bubblewrap, a real git remote. Builds, noops, a commit, a rebase, a
//! failing image next to good ones, the lock and stale saved plans.

mod support;

use std::path::Path;

use support::{kpackd, stdout, write_buildpack, write_stack};
use testkit::git::BareRepo;

/// A fleet of three images on one stack: `local` from a path, `remote` from git, `broken`
/// from a path whose build fails.
struct Fleet {
    dir: tempfile::TempDir,
    repo: BareRepo,
    /// The stack's one layer, for images made on top of it.
    base: executors::oci::layer::WrittenLayer,
}

impl Fleet {
    fn new() -> Fleet {
        let dir = tempfile::tempdir().expect("a temp dir");
        let root = dir.path();
        let base = write_stack(&root.join("work"), &root.join("stacks"));
        let bps = root.join("buildpacks");
        write_buildpack(
            &bps,
            "hello",
            "test/hello",
            "test -f greeting.txt",
            r#"layer="$CNB_LAYERS_DIR/greeter"
mkdir -p "$layer/bin"
printf '#!/bin/sh\necho "$(cat /workspace/greeting.txt) from $0"\n' > "$layer/bin/greet"
chmod +x "$layer/bin/greet"
printf '[types]\nlaunch = true\n' > "$layer.toml"
if [ -f fail ]; then echo "the app asked to fail" >&2; exit 1; fi
cat > "$CNB_LAYERS_DIR/launch.toml" <<EOT
[[processes]]
type = "web"
command = ["greet"]
default = true
EOT
echo "built $(cat greeting.txt)""#,
        );
        for (name, contents) in [("local", "hello"), ("broken", "broken")] {
            let app = root.join("apps").join(name);
            std::fs::create_dir_all(&app).expect("an app dir");
            std::fs::write(app.join("greeting.txt"), contents).expect("an app file");
            if name == "broken" {
                std::fs::write(app.join("fail"), "").expect("an app file");
            }
        }
        let mut repo = BareRepo::new();
        repo.commit(&[("greeting.txt", "hi from git")], "first");
        std::fs::write(
            root.join("kpack.toml"),
            format!(
                r#"[kpackd]
state-dir = "state"

[stacks.test]
build-image = "oci:stacks:build"
run-image = "oci:stacks:run"

[stores.test]
buildpacks = ["buildpacks/hello"]

[builders.test]
stack = "test"
store = "test"
order = [{{ group = [{{ id = "test/hello" }}] }}]

[images.local]
tag = "oci:out:local"
builder = "test"
source = {{ path = "apps/local" }}

[images.broken]
tag = "oci:out:broken"
builder = "test"
source = {{ path = "apps/broken" }}

[images.remote]
tag = "oci:out:remote"
builder = "test"
source = {{ git = "{}", revision = "main" }}
"#,
                repo.url()
            ),
        )
        .expect("writing kpack.toml");
        Fleet { dir, repo, base }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let output = kpackd(self.root(), args);
        serde_json::from_slice(&output.stdout).expect("kpackd printed JSON")
    }
}

fn actions(plan: &serde_json::Value) -> Vec<(String, String)> {
    plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            (
                c["image"].as_str().expect("image").to_string(),
                c["action"].as_str().expect("action").to_string(),
            )
        })
        .collect()
}

/// `kpackd plan --json` in `root`.
fn plan(root: &Path) -> serde_json::Value {
    serde_json::from_slice(&kpackd(root, &["plan", "--json"]).stdout).expect("JSON")
}

fn pair(image: &str, action: &str) -> (String, String) {
    (image.to_string(), action.to_string())
}

#[test]
fn apply_builds_rebuilds_on_commit_rebases_on_run_image_and_isolates_failures() {
    let mut fleet = Fleet::new();

    let first = kpackd(fleet.root(), &["apply", "--json"]);
    assert_eq!(
        first.status.code(),
        Some(1),
        "a failed image makes apply exit 1"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&first.stdout).expect("apply --json prints JSON");
    let status = |report: &serde_json::Value, image: &str| {
        report["results"]
            .as_array()
            .expect("results")
            .iter()
            .find(|r| r["image"] == image)
            .map(|r| r["status"].as_str().expect("status").to_string())
    };
    assert_eq!(status(&report, "local").as_deref(), Some("succeeded"));
    assert_eq!(status(&report, "remote").as_deref(), Some("succeeded"));
    assert_eq!(status(&report, "broken").as_deref(), Some("failed"));
    let log = kpackd(fleet.root(), &["logs", "broken"]);
    assert!(
        stdout(&log).contains("the app asked to fail"),
        "the failed build's log is kept"
    );

    // Nothing changed: every image is a noop (the failed one too, its inputs are the same).
    let again = fleet.json(&["plan", "--json"]);
    assert_eq!(
        actions(&again),
        vec![
            pair("broken", "noop"),
            pair("local", "noop"),
            pair("remote", "noop")
        ]
    );
    // ... but the failure stays visible: a buildpack's own failure, not retried.
    assert_eq!(again["failing"][0]["image"], "broken");
    assert_eq!(again["failing"][0]["kind"], "build");
    assert_eq!(again["failing"][0]["step"], "building");
    let text = stdout(&kpackd(fleet.root(), &["plan"]));
    assert!(
        text.contains("✗ image \"broken\" failed in building (build #1)")
            && text.contains("the app asked to fail")
            && text.contains("No changes, but 1 image's last build failed.")
            && !text.contains("up to date"),
        "the plan names the failing image:\n{text}"
    );
    let second = kpackd(fleet.root(), &["apply"]);
    assert_eq!(second.status.code(), Some(0));

    // A commit: exactly one COMMIT build.
    fleet
        .repo
        .commit(&[("greeting.txt", "hello again")], "second");
    let plan = fleet.json(&["plan", "--json"]);
    assert_eq!(
        actions(&plan),
        vec![
            pair("broken", "noop"),
            pair("local", "noop"),
            pair("remote", "build")
        ]
    );
    assert_eq!(plan["changes"][2]["reasons"], serde_json::json!(["COMMIT"]));
    assert_eq!(kpackd(fleet.root(), &["apply"]).status.code(), Some(0));

    // A patched run image: the built images are rebased, the failed one is rebuilt.
    support::patch_run_image(
        &fleet.root().join("work"),
        &fleet.root().join("stacks"),
        "1",
    );
    let plan = fleet.json(&["plan", "--json"]);
    assert_eq!(
        actions(&plan),
        vec![
            pair("broken", "build"),
            pair("local", "rebase"),
            pair("remote", "rebase")
        ]
    );
    let rebased = kpackd(fleet.root(), &["apply", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&rebased.stdout).expect("JSON");
    assert_eq!(status(&report, "local").as_deref(), Some("succeeded"));
    assert_eq!(status(&report, "remote").as_deref(), Some("succeeded"));

    let builds = fleet.json(&["builds", "local", "--json"]);
    let actions: Vec<&str> = builds
        .as_array()
        .expect("builds")
        .iter()
        .map(|b| b["action"].as_str().expect("action"))
        .collect();
    assert_eq!(actions, ["build", "rebase"]);
}

#[test]
fn a_second_writer_is_refused_and_a_stale_plan_is_refused() {
    let fleet = Fleet::new();
    let lock = engine::state::StateLock::acquire(&fleet.root().join("state"), None)
        .expect("taking the lock");
    let refused = kpackd(fleet.root(), &["apply"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!("state is locked by pid {}", std::process::id())),
        "names the holder: {stderr}"
    );
    drop(lock);

    let saved = fleet.root().join("plan.json");
    let plan = kpackd(
        fleet.root(),
        &["plan", "--out", saved.to_str().expect("utf-8 path")],
    );
    assert!(plan.status.success());
    assert!(kpackd(fleet.root(), &["trigger", "local"]).status.success());
    let stale = kpackd(
        fleet.root(),
        &["apply", saved.to_str().expect("utf-8 path")],
    );
    assert_eq!(stale.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&stale.stderr).contains("the plan is stale"));
}

#[test]
fn history_limits_drop_old_builds_and_their_logs() {
    let fleet = Fleet::new();
    let config = fleet.root().join("kpack.toml");
    let text = std::fs::read_to_string(&config).expect("reading kpack.toml");
    std::fs::write(
        &config,
        text.replace(
            "[images.local]\n",
            "[images.local]\nhistory = { success = 1, failed = 1 }\n",
        ),
    )
    .expect("writing kpack.toml");
    for round in 0..3 {
        if round > 0 {
            assert!(kpackd(fleet.root(), &["trigger", "local"]).status.success());
        }
        let plan = fleet.json(&["plan", "--json", "--target", "local"]);
        assert_eq!(
            actions(&plan),
            vec![pair("local", "build")],
            "round {round}"
        );
        assert!(kpackd(fleet.root(), &["apply", "--target", "local"])
            .status
            .success());
    }
    let builds = fleet.json(&["builds", "local", "--json"]);
    let numbers: Vec<u64> = builds
        .as_array()
        .expect("builds")
        .iter()
        .map(|b| b["number"].as_u64().expect("number"))
        .collect();
    assert_eq!(numbers, [3], "only the newest success is kept");
    let logs: Vec<String> = std::fs::read_dir(fleet.root().join("state/logs/local"))
        .expect("the image's log dir")
        .map(|e| {
            e.expect("a log entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(logs, ["3.log"], "dropped builds' logs are deleted");
    let gone = kpackd(fleet.root(), &["logs", "local", "--build", "1"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("builds of local kept: 3"));
}

/// A store may hold buildpackage images: the buildpack's layer is extracted once (by
/// diffID) and builds like a directory buildpack.
#[test]
fn a_buildpackage_image_in_a_store_builds_like_a_directory() {
    let fleet = Fleet::new();
    let root = fleet.root();
    support::write_buildpackage(
        &root.join("buildpacks/hello"),
        "test/hello",
        &root.join("bps"),
        "hello",
        &root.join("work/bp"),
    );
    let config = root.join("kpack.toml");
    let text = std::fs::read_to_string(&config).expect("reading kpack.toml");
    std::fs::write(
        &config,
        text.replace(
            r#"buildpacks = ["buildpacks/hello"]"#,
            r#"buildpacks = [{ image = "oci:bps:hello" }]"#,
        ),
    )
    .expect("writing kpack.toml");

    let plan = fleet.json(&["plan", "--json", "--target", "local"]);
    let digests = &plan["changes"][0]["inputs"]["buildpack_digests"];
    let digest = digests["test/hello@0.1.0"].as_str().unwrap_or_default();
    assert!(
        digest.starts_with("sha256:"),
        "pinned by layer diffID: {plan}"
    );

    let first = kpackd(root, &["apply", "--target", "local"]);
    assert_eq!(first.status.code(), Some(0), "{}", support::stdout(&first));
    let log = support::stdout(&kpackd(root, &["logs", "local"]));
    assert!(
        log.contains("Extracting buildpack test/hello@0.1.0 from oci:"),
        "{log}"
    );
    assert!(log.contains("built hello"), "the buildpack ran: {log}");
    let inspect = fleet.json(&["inspect", "oci:out:local", "--json"]);
    assert_eq!(
        inspect["cnb"]["buildpacks"][0]["id"], "test/hello",
        "{inspect}"
    );

    // Extracted once: the next build reuses the directory.
    assert!(kpackd(root, &["trigger", "local"]).status.success());
    let second = kpackd(root, &["apply", "--target", "local"]);
    assert_eq!(
        second.status.code(),
        Some(0),
        "{}",
        support::stdout(&second)
    );
    let log = support::stdout(&kpackd(root, &["logs", "local"]));
    assert!(!log.contains("Extracting buildpack"), "{log}");
    assert!(log.contains("built hello"), "{log}");
}

/// A builder may be a ready-made CNB builder image: its build image is the builder, its
/// buildpacks and order come from the image, its run image from the builder's metadata.
#[test]
fn a_builder_image_builds_with_its_own_buildpacks_and_order() {
    let fleet = Fleet::new();
    let root = fleet.root();
    support::write_builder(
        &fleet.base,
        &root.join("buildpacks/hello"),
        "test/hello",
        "oci:stacks:run",
        &root.join("builders"),
        "default",
        &root.join("work/builder"),
    );
    let config = root.join("kpack.toml");
    let text = std::fs::read_to_string(&config).expect("reading kpack.toml");
    std::fs::write(
        &config,
        text.replace(
            "[builders.test]\nstack = \"test\"\nstore = \"test\"\norder = [{ group = [{ id = \"test/hello\" }] }]\n",
            "[builders.test]\nbuilder = \"oci:builders:default\"\n",
        ),
    )
    .expect("writing kpack.toml");
    assert!(
        std::fs::read_to_string(&config)
            .expect("reading kpack.toml")
            .contains("builder = \"oci:builders:default\""),
        "the builder is a builder image now"
    );
    let validate = kpackd(root, &["validate"]);
    assert_eq!(validate.status.code(), Some(0), "{validate:?}");

    let applied = kpackd(root, &["apply", "--target", "local"]);
    assert_eq!(applied.status.code(), Some(0), "{}", stdout(&applied));
    let log = stdout(&kpackd(root, &["logs", "local"]));
    assert!(
        log.contains("Extracting buildpack test/hello@0.1.0"),
        "{log}"
    );
    assert!(log.contains("built hello"), "{log}");
    let inspect = fleet.json(&["inspect", "oci:out:local", "--json"]);
    assert_eq!(
        inspect["cnb"]["buildpacks"][0]["id"], "test/hello",
        "{inspect}"
    );
    assert_eq!(inspect["cnb"]["stackId"], support::STACK_ID, "{inspect}");
    let plan = kpackd(root, &["plan", "--detailed-exitcode", "--target", "local"]);
    assert_eq!(plan.status.code(), Some(0), "{}", stdout(&plan));
}

/// A build that outlives its image's `timeout` is stopped (its processes killed) and
/// fails outside the build: the next plans retry it (`RETRY`) three times, then leave it
/// failing until an input changes.
#[test]
fn a_build_past_its_timeout_is_stopped_and_retried_a_bounded_number_of_times() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let root = dir.path();
    write_stack(&root.join("work"), &root.join("stacks"));
    write_buildpack(
        &root.join("buildpacks"),
        "slow",
        "test/slow",
        "true",
        r#"if [ -f slow ]; then sleep 3600; fi
mkdir -p "$CNB_LAYERS_DIR/done"
printf '[types]\nlaunch = true\n' > "$CNB_LAYERS_DIR/done.toml""#,
    );
    let app = root.join("app");
    std::fs::create_dir_all(&app).expect("an app dir");
    std::fs::write(app.join("slow"), "").expect("an app file");
    let config = support::one_image_config(
        "slow",
        "test/slow",
        "slow",
        "source = { path = \"app\" }\ntimeout = \"2s\"",
    );
    std::fs::write(root.join("kpack.toml"), config).expect("writing kpack.toml");

    let first = kpackd(root, &["apply"]);
    assert_eq!(first.status.code(), Some(1), "a timed-out build fails");
    let builds = support::builds_json(root).expect("builds");
    assert_eq!(builds[0]["status"], "failed");
    let message = builds[0]["failure"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("timed out after 2s"),
        "the failure says why: {:#}",
        builds[0]
    );
    assert!(
        support::processes_with_cmdline(&["sleep", "3600"]).is_empty(),
        "the build's processes were killed"
    );

    for retry in 1..=3 {
        let planned = plan(root);
        assert_eq!(planned["changes"][0]["action"], "build", "retry {retry}");
        assert_eq!(
            planned["changes"][0]["reasons"],
            serde_json::json!(["RETRY"])
        );
        let what = planned["changes"][0]["details"][0]["what"]
            .as_str()
            .unwrap_or_default();
        assert!(
            what.ends_with(&format!("failed in building, retry {retry} of 3")),
            "{what}"
        );
        assert_eq!(kpackd(root, &["apply"]).status.code(), Some(1));
    }
    let planned = plan(root);
    assert_eq!(
        planned["changes"][0]["action"], "noop",
        "retries are bounded"
    );
    assert_eq!(planned["failing"][0]["kind"], "infrastructure");
    assert_eq!(planned["failing"][0]["retries"], 3);
    assert_eq!(planned["failing"][0]["build"], 4);

    // The fix is an input change: built again, and it succeeds.
    std::fs::remove_file(app.join("slow")).expect("removing the marker");
    let planned = plan(root);
    assert_eq!(
        planned["changes"][0]["reasons"],
        serde_json::json!(["COMMIT"])
    );
    assert_eq!(kpackd(root, &["apply"]).status.code(), Some(0));
    assert!(
        plan(root).get("failing").is_none(),
        "nothing fails any more"
    );
}

/// kpack's registry source: `source = { image = "REF" }` builds the image's files (its
/// `sub-path`), pinned by digest at plan time; a new digest is a `COMMIT` naming both
/// digests. The image is untrusted: a sub-path that is a symlink out of it fails the build.
#[test]
fn a_source_image_builds_and_a_new_digest_of_it_is_a_commit() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let root = dir.path();
    write_stack(&root.join("work"), &root.join("stacks"));
    write_buildpack(
        &root.join("buildpacks"),
        "hello",
        "test/hello",
        "test -f greeting.txt",
        r#"echo "built $(cat greeting.txt)"
test ! -e README.md || { echo "README.md is outside the sub-path" >&2; exit 1; }
mkdir -p "$CNB_LAYERS_DIR/done"
printf '[types]\nlaunch = true\n' > "$CNB_LAYERS_DIR/done.toml""#,
    );
    let version = |n: u32, greeting: &str| {
        let src = root.join(format!("src-{n}"));
        std::fs::create_dir_all(src.join("app")).expect("a source dir");
        std::fs::write(src.join("README.md"), "not the app").expect("a file");
        std::fs::write(src.join("app/greeting.txt"), greeting).expect("a file");
        support::write_source_image(&src, &root.join("sources"), "app");
    };
    version(1, "one");
    let config = support::one_image_config(
        "hello",
        "test/hello",
        "app",
        "source = { image = \"oci:sources:app\", sub-path = \"app\" }",
    );
    std::fs::write(root.join("kpack.toml"), config).expect("writing kpack.toml");

    assert_eq!(kpackd(root, &["apply"]).status.code(), Some(0));
    assert!(stdout(&kpackd(root, &["logs", "app"])).contains("built one"));
    assert_eq!(plan(root)["changes"][0]["action"], "noop");

    version(2, "two");
    let planned = plan(root);
    assert_eq!(planned["changes"][0]["action"], "build");
    assert_eq!(
        planned["changes"][0]["reasons"],
        serde_json::json!(["COMMIT"])
    );
    let detail = &planned["changes"][0]["details"][0];
    assert_eq!(detail["what"], "source image");
    for side in ["old", "new"] {
        assert!(
            detail[side]
                .as_str()
                .is_some_and(|d| d.starts_with("sha256:")),
            "{detail}"
        );
    }
    assert_ne!(detail["old"], detail["new"]);
    assert_eq!(kpackd(root, &["apply"]).status.code(), Some(0));
    assert!(stdout(&kpackd(root, &["logs", "app"])).contains("built two"));

    // A hostile image: the sub-path is a symlink to a host directory.
    let src = root.join("src-3");
    std::fs::create_dir_all(&src).expect("a source dir");
    std::os::unix::fs::symlink("/etc", src.join("app")).expect("a symlink");
    support::write_source_image(&src, &root.join("sources"), "app");
    assert_eq!(kpackd(root, &["apply"]).status.code(), Some(1));
    let builds = support::builds_json(root).expect("builds");
    let last = builds.last().expect("a build");
    assert!(
        last["failure"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("sub-path `app` is not a directory in the image")),
        "{last:#}"
    );
}
