//! `kpackd plan`, `trigger`, `status` and `builds` as users run them: the binary, a real
//! git remote, stack images in an OCI layout, a real state database.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use engine::planning::PlanFile;
use engine::state::{BuildStatus, NewBuild, Outcome, State};
use executors::oci::{ContainerConfig, ImageConfig, ImageStore, StoreSettings};
use imageref::ImageRef;
use planner::plan::Action;
use testkit::git::BareRepo;

/// kpack.toml in a temp dir: a stack in an OCI layout, one directory buildpack, and
/// images `hello` (git), `docs` (git, sub-path `docs`) and `site` (path).
struct Fleet {
    dir: tempfile::TempDir,
    repo: BareRepo,
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Writes an empty linux/amd64 stack image labelled with `marker`.
fn push_stack_image(reference: &str, marker: &str) {
    let r = ImageRef::parse(reference).unwrap();
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: Some(ContainerConfig {
            labels: Some(BTreeMap::from([
                (
                    "io.buildpacks.base.id".to_string(),
                    "tests.stack".to_string(),
                ),
                ("marker".to_string(), marker.to_string()),
            ])),
            ..Default::default()
        }),
        ..Default::default()
    };
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(ImageStore::new(StoreSettings::default()).push_image(&r, config, &[]))
        .unwrap();
}

impl Fleet {
    fn new() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let mut repo = BareRepo::new();
        repo.commit(
            &[("README.md", "hello\n"), ("docs/index.md", "# docs\n")],
            "first",
        );
        let fleet = Fleet { dir, repo };
        push_stack_image(&fleet.layout("build"), "build-1");
        push_stack_image(&fleet.layout("run"), "run-1");
        write(
            &fleet.path("buildpacks/hello/buildpack.toml"),
            "api = \"0.10\"\n[buildpack]\nid = \"tests/hello\"\nversion = \"0.1.0\"\n",
        );
        write(&fleet.path("site/index.html"), "<h1>hi</h1>\n");
        fleet.write_config("");
        fleet
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn layout(&self, name: &str) -> String {
        format!("oci:{}/stacks:{name}", self.dir.path().display())
    }

    fn write_config(&self, extra: &str) {
        let url = self.repo.url();
        write(
            &self.path("kpack.toml"),
            &format!(
                r#"[kpackd]
state-dir = "state"

[stacks.base]
build-image = "oci:stacks:build"
run-image = "oci:stacks:run"

[stores.main]
buildpacks = ["buildpacks/hello"]

[builders.default]
stack = "base"
store = "main"
order = [{{ group = [{{ id = "tests/hello" }}] }}]

[images.hello]
tag = "oci:out:hello"
builder = "default"
source = {{ git = "{url}", revision = "main" }}

[images.docs]
tag = "oci:out:docs"
builder = "default"
source = {{ git = "{url}", revision = "main", sub-path = "docs" }}

[images.site]
tag = "oci:out:site"
builder = "default"
source = {{ path = "site" }}
{extra}"#
            ),
        );
    }

    /// Runs kpackd in the fleet's directory, without colours unless asked.
    fn kpackd(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kpackd"))
            .current_dir(self.dir.path())
            .args(args)
            .env_remove("KPACKD_STATE_DIR")
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .output()
            .unwrap()
    }

    /// Records every build and rebase of a saved plan as succeeded, as apply would.
    fn apply_saved(&self, plan: &Path) {
        let file = PlanFile::read(plan).unwrap();
        let mut state = State::open(&self.path("state")).unwrap();
        for change in &file.plan.changes {
            let Some(inputs) = &change.inputs else {
                continue;
            };
            let build = state
                .begin_build(&NewBuild {
                    image: &change.image,
                    action: change.action,
                    reasons: &change.reasons,
                    details: &change.details,
                    inputs,
                    tag: &format!("oci:out:{}", change.image),
                })
                .unwrap();
            let steps: &[BuildStatus] = if change.action == Action::Rebase {
                &[BuildStatus::Rebasing]
            } else {
                &[
                    BuildStatus::ResolvingSource,
                    BuildStatus::Preparing,
                    BuildStatus::Detecting,
                    BuildStatus::Building,
                    BuildStatus::Exporting,
                ]
            };
            for step in steps {
                state.transition(build.id, *step).unwrap();
            }
            state
                .finish(
                    build.id,
                    Outcome::Succeeded {
                        output: imageref::Digest::parse(&format!(
                            "sha256:{:064x}",
                            build.number + 0xabc0
                        ))
                        .unwrap(),
                        buildpacks_used: inputs.buildpacks.clone(),
                        rebasable: true,
                    },
                )
                .unwrap();
        }
    }

    /// Plans with `--out` and records the plan as applied.
    fn build_everything(&self) {
        let out = self.kpackd(&["plan", "--out", "plan.json"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        self.apply_saved(&self.path("plan.json"));
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_first_plan_builds_everything() {
    let fleet = Fleet::new();
    let out = fleet.kpackd(&["plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        !text.contains('\u{1b}'),
        "no colours off a terminal: {text}"
    );
    insta::assert_snapshot!("first_plan", text);
    let out = fleet.kpackd(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = fleet.kpackd(&["--color", "always", "plan"]);
    assert!(stdout(&out).contains('\u{1b}'), "--color always colours");
}

#[test]
fn the_json_plan_has_the_documented_shape() {
    let fleet = Fleet::new();
    let out = fleet.kpackd(&["plan", "--json", "kpack.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["format_version"], 1);
    assert_eq!(plan["serial"], 0);
    assert_eq!(plan["config"], "kpack.toml");
    assert_eq!(plan["lineage"].as_str().unwrap().len(), 36);
    assert_eq!(
        plan["summary"],
        serde_json::json!({"build": 3, "rebase": 0, "noop": 0, "forget": 0, "blocked": 0})
    );
    assert_eq!(plan["errors"], serde_json::json!([]));
    let changes = plan["changes"].as_array().unwrap();
    let names: Vec<&str> = changes
        .iter()
        .map(|c| c["image"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["docs", "hello", "site"]);
    let hello = &changes[1];
    assert_eq!(hello["action"], "build");
    assert_eq!(hello["reasons"], serde_json::json!(["CONFIG"]));
    assert_eq!(hello["details"][0]["reason"], "CONFIG");
    let inputs = &hello["inputs"];
    assert_eq!(inputs["source"].as_str().unwrap().len(), 40);
    assert!(inputs["run_image"].as_str().unwrap().starts_with("sha256:"));
    assert!(inputs["build_image"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert_eq!(
        inputs["buildpacks"],
        serde_json::json!(["tests/hello@0.1.0"])
    );
}

#[test]
fn commits_triggers_and_run_images_show_with_their_reasons() {
    let mut fleet = Fleet::new();
    fleet.build_everything();
    let out = fleet.kpackd(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("No changes."), "{}", stdout(&out));

    let commit = fleet
        .repo
        .commit(&[("README.md", "hello again\n")], "readme");
    let out = fleet.kpackd(&["trigger", "site"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = fleet.kpackd(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("→ {}", &commit[..7])), "{text}");
    insta::assert_snapshot!("commit_and_trigger", text);
    fleet.kpackd(&["plan", "--out", "plan.json"]);
    fleet.apply_saved(&fleet.path("plan.json"));

    push_stack_image(&fleet.layout("run"), "run-2");
    let out = fleet.kpackd(&["plan", "--json"]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["summary"]["rebase"], 3, "{plan:#}");
    assert_eq!(plan["changes"][0]["action"], "rebase");
    assert_eq!(plan["changes"][0]["reasons"], serde_json::json!(["STACK"]));
}

#[test]
fn a_missing_branch_blocks_its_image_and_fails_the_plan() {
    let fleet = Fleet::new();
    let url = fleet.repo.url();
    fleet.write_config(&format!(
        "\n[images.broken]\ntag = \"oci:out:broken\"\nbuilder = \"default\"\n\
         source = {{ git = \"{url}\", revision = \"release\" }}\n"
    ));
    let out = fleet.kpackd(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("! image \"broken\" is blocked"), "{text}");
    assert!(text.contains("`release`"), "names the branch: {text}");
    assert!(text.contains("main"), "names the refs that exist: {text}");
    assert!(text.contains("+ image \"hello\" will be built"), "{text}");
    assert!(
        text.contains("3 to build") && text.contains("1 blocked"),
        "{text}"
    );

    let out = fleet.kpackd(&["plan", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["summary"]["blocked"], 1);
    assert_eq!(plan["errors"].as_array().unwrap().len(), 1);
}

#[test]
fn unknown_names_are_errors_that_list_the_images() {
    let fleet = Fleet::new();
    for args in [&["plan", "--target", "nope"][..], &["trigger", "nope"][..]] {
        let out = fleet.kpackd(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("no image named `nope`") && err.contains("docs, hello, site"),
            "{args:?}: {err}"
        );
        assert!(stdout(&out).is_empty());
    }
    let out = fleet.kpackd(&["plan", "--target", "site", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["changes"].as_array().unwrap().len(), 1);
}

#[test]
fn status_and_builds_read_the_state() {
    let fleet = Fleet::new();
    let out = fleet.kpackd(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("never built"), "{}", stdout(&out));

    fleet.build_everything();
    fleet.kpackd(&["trigger", "hello"]);
    let out = fleet.kpackd(&["status"]);
    let text = stdout(&out);
    assert!(text.starts_with("IMAGE"), "{text}");
    assert!(text.contains("#1 build"), "{text}");
    assert!(text.contains("succeeded, triggered"), "{text}");
    let out = fleet.kpackd(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hello = &status["images"][1];
    assert_eq!(hello["image"], "hello");
    assert_eq!(hello["pending_triggers"], 1);
    assert_eq!(hello["last_build"]["status"], "succeeded");
    assert!(hello["digest"].as_str().unwrap().starts_with("sha256:"));

    let out = fleet.kpackd(&["builds", "--json", "docs"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let builds: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(builds.as_array().unwrap().len(), 1);
    assert_eq!(builds[0]["number"], 1);
    assert_eq!(builds[0]["reasons"], serde_json::json!(["CONFIG"]));
    let out = fleet.kpackd(&["builds"]);
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 4, "{text}");
    let out = fleet.kpackd(&["builds", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no builds recorded for image `ghost`"));
}
