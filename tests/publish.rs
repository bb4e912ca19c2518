//! Publishing builder images end to end: the `kpackd` binary, a loopback registry, a
//! real stack and a shell buildpack. A builder with a `tag` is published before its
//! images are built, published again when its buildpacks or its stack's build image
//! change (and only then), and the builder image it pushes builds the same app image as
//! the builder kpackd assembles. kpackd's build entrypoint is a file of the test's
//! (`KPACKD_ENTRYPOINT`).

mod support;

use std::path::Path;

use support::{kpackd_with_env, spawn_kpackd, stdout, wait_for, write_buildpack, write_stack};
use testkit::registry::Registry;

/// A stack and a builder in the loopback registry, one image built from a path.
struct Fleet {
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT/<unique prefix>`: every repository of this test under it.
    prefix: String,
}

const CONFIG: &str = r#"[kpackd]
state-dir = "state"

[stacks.test]
build-image = "{prefix}/stacks/build"
run-image = "{prefix}/stacks/run"

[stores.test]
buildpacks = ["buildpacks/hello"]

[builders.test]
stack = "test"
store = "test"
order = [{ group = [{ id = "test/hello" }] }]
tag = "{prefix}/builders/test"
{extra_builders}
[images.local]
tag = "{prefix}/apps/local"
builder = "{builder}"
source = { path = "apps/local" }
"#;

/// kpackd in `dir`, with the test's build entrypoint `dir/kpackd-entrypoint`.
fn kpackd(dir: &Path, args: &[&str]) -> std::process::Output {
    let entrypoint = dir.join("kpackd-entrypoint");
    kpackd_with_env(
        dir,
        args,
        &[(executors::builder::entrypoint::ENTRYPOINT_ENV, &entrypoint)],
    )
}

impl Fleet {
    fn new() -> Fleet {
        let dir = tempfile::tempdir().expect("a temp dir");
        let root = dir.path();
        let registry = Registry::shared();
        let prefix = registry.repo(&format!(
            "publish-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_nanos()
        ));
        write_stack(&root.join("work"), &root.join("stacks"));
        write_buildpack(
            &root.join("buildpacks"),
            "hello",
            "test/hello",
            "test -f greeting.txt",
            r#"layer="$CNB_LAYERS_DIR/greeter"
mkdir -p "$layer/bin"
printf '#!/bin/sh\necho "$(cat /workspace/greeting.txt)"\n' > "$layer/bin/greet"
chmod +x "$layer/bin/greet"
printf '[types]\nlaunch = true\n' > "$layer.toml"
cat > "$CNB_LAYERS_DIR/launch.toml" <<EOT
[[processes]]
type = "web"
command = ["greet"]
default = true
EOT"#,
        );
        let app = root.join("apps/local");
        std::fs::create_dir_all(&app).expect("an app dir");
        std::fs::write(app.join("greeting.txt"), "hello").expect("an app file");
        std::fs::write(
            root.join("kpackd-entrypoint"),
            "#!/bin/sh\n# entrypoint 1\n",
        )
        .expect("an entrypoint");
        let fleet = Fleet { dir, prefix };
        fleet.push_stack_image("build");
        fleet.push_stack_image("run");
        fleet.configure("test", "");
        fleet
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Copies the stack image `name` from the test's layout to the registry.
    fn push_stack_image(&self, name: &str) {
        let copied = kpackd(
            self.root(),
            &[
                "copy",
                "--quiet",
                &format!("oci:stacks:{name}"),
                &format!("{}/stacks/{name}", self.prefix),
            ],
        );
        assert_eq!(copied.status.code(), Some(0), "copying the {name} image");
    }

    /// Writes kpack.toml: image `local` built with `builder`, `extra_builders` added.
    fn configure(&self, builder: &str, extra_builders: &str) {
        let text = CONFIG
            .replace("{prefix}", &self.prefix)
            .replace("{builder}", builder)
            .replace("{extra_builders}", extra_builders);
        std::fs::write(self.root().join("kpack.toml"), text).expect("writing kpack.toml");
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let output = kpackd(self.root(), args);
        serde_json::from_slice(&output.stdout).expect("kpackd printed JSON")
    }

    /// `kpackd apply --json`, which must succeed.
    fn apply(&self) -> serde_json::Value {
        let output = kpackd(self.root(), &["apply", "--json"]);
        assert_eq!(output.status.code(), Some(0), "apply succeeds");
        serde_json::from_slice(&output.stdout).expect("apply --json prints JSON")
    }
}

/// The builder's action and reasons in a plan.
fn builder_change(plan: &serde_json::Value) -> (String, Vec<String>) {
    let builder = &plan["builders"][0];
    assert_eq!(builder["builder"], "test", "{plan:#}");
    (
        builder["action"].as_str().expect("an action").to_string(),
        reasons(builder),
    )
}

fn reasons(change: &serde_json::Value) -> Vec<String> {
    change["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .map(|r| r.as_str().expect("a reason").to_string())
        .collect()
}

/// The image change of `local` in a plan: its action and reasons.
fn image_change(plan: &serde_json::Value) -> (String, Vec<String>) {
    let change = &plan["changes"][0];
    assert_eq!(change["image"], "local", "{plan:#}");
    (
        change["action"].as_str().expect("an action").to_string(),
        reasons(change),
    )
}

fn publish(report: &serde_json::Value) -> &serde_json::Value {
    let publishes = report["publishes"].as_array().expect("publishes");
    assert_eq!(publishes.len(), 1, "{report:#}");
    &publishes[0]
}

fn digest_of(report: &serde_json::Value, image: &str) -> String {
    report["results"]
        .as_array()
        .expect("results")
        .iter()
        .find(|r| r["image"] == image)
        .and_then(|r| r["digest"].as_str())
        .unwrap_or_else(|| panic!("{image} was built: {report:#}"))
        .to_string()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(ToString::to_string).collect()
}

#[test]
fn a_builder_with_a_tag_is_published_when_its_inputs_change_and_builds_the_same_image() {
    let fleet = Fleet::new();

    // First: the builder is published (CONFIG: first publish), the image built.
    let plan = fleet.json(&["plan", "--json"]);
    assert_eq!(builder_change(&plan), ("publish".into(), s(&["CONFIG"])));
    assert_eq!(plan["builders"][0]["details"][0]["what"], "first publish");
    assert_eq!(image_change(&plan), ("build".into(), s(&["CONFIG"])));
    let text = stdout(&kpackd(fleet.root(), &["plan"]));
    assert!(
        text.contains("+ builder \"test\" will be published") && text.contains("1 to publish"),
        "{text}"
    );
    let report = fleet.apply();
    let first = publish(&report);
    assert_eq!(first["status"], "succeeded", "{report:#}");
    assert_eq!(first["publish"], 1);
    let published_digest = first["digest"].as_str().expect("a digest").to_string();

    // Nothing changed: nothing planned.
    let plan = fleet.json(&["plan", "--json"]);
    assert_eq!(builder_change(&plan), ("noop".into(), Vec::new()));
    assert_eq!(image_change(&plan), ("noop".into(), Vec::new()));
    assert!(stdout(&kpackd(fleet.root(), &["plan"])).contains("No changes."));

    // The state lists the publish.
    let status = fleet.json(&["status", "--json"]);
    assert_eq!(status["builders"][0]["builder"], "test");
    assert_eq!(status["builders"][0]["digest"], published_digest.as_str());
    let publishes = fleet.json(&["builds", "--builder", "test", "--json"]);
    assert_eq!(publishes.as_array().map(Vec::len), Some(1));
    assert_eq!(publishes[0]["status"], "succeeded");
    let text = stdout(&kpackd(fleet.root(), &["status"]));
    assert!(
        text.contains("BUILDER") && text.contains("#1 publish") && text.contains("succeeded"),
        "{text}"
    );
    let text = stdout(&kpackd(fleet.root(), &["builds", "--builder"]));
    assert!(text.contains("PUBLISH") && text.contains("#1"), "{text}");

    // A directory buildpack edited: published again (BUILDPACK), and the image rebuilt
    // by its own rule (the buildpack it used changed).
    let build_script = fleet.root().join("buildpacks/hello/bin/build");
    let mut script = std::fs::read_to_string(&build_script).expect("the build script");
    script.push_str("# edited\n");
    std::fs::write(&build_script, script).expect("editing the buildpack");
    let plan = fleet.json(&["plan", "--json"]);
    assert_eq!(builder_change(&plan), ("publish".into(), s(&["BUILDPACK"])));
    assert_eq!(image_change(&plan), ("build".into(), s(&["BUILDPACK"])));
    let report = fleet.apply();
    assert_eq!(publish(&report)["status"], "succeeded");
    assert_eq!(publish(&report)["publish"], 2);

    // The stack's build image patched: published again (STACK); the image is not
    // rebuilt for it (a build image change alone is no reason).
    support::patch_image_in_layout(
        &fleet.root().join("work"),
        &fleet.root().join("stacks"),
        "build",
        "1",
    );
    fleet.push_stack_image("build");
    let plan = fleet.json(&["plan", "--json"]);
    assert_eq!(builder_change(&plan), ("publish".into(), s(&["STACK"])));
    assert_eq!(image_change(&plan), ("noop".into(), Vec::new()));
    let report = fleet.apply();
    assert_eq!(publish(&report)["status"], "succeeded");
    assert!(report["results"].as_array().expect("results").is_empty());

    // A new kpackd (another build entrypoint): published again (CONFIG, named).
    std::fs::write(
        fleet.root().join("kpackd-entrypoint"),
        "#!/bin/sh\n# entrypoint 2\n",
    )
    .expect("a new entrypoint");
    let plan = fleet.json(&["plan", "--json"]);
    assert_eq!(builder_change(&plan), ("publish".into(), s(&["CONFIG"])));
    assert_eq!(plan["builders"][0]["details"][0]["what"], "entrypoint");
    assert_eq!(image_change(&plan), ("noop".into(), Vec::new()));
    assert_eq!(publish(&fleet.apply())["publish"], 4);

    // The image built with the assembled builder, and with the builder image kpackd
    // published: the same image.
    assert_eq!(
        kpackd(fleet.root(), &["trigger", "local"]).status.code(),
        Some(0)
    );
    let assembled = digest_of(&fleet.apply(), "local");
    fleet.configure(
        "published",
        &format!(
            "\n[builders.published]\nbuilder = \"{}/builders/test\"\n",
            fleet.prefix
        ),
    );
    let plan = fleet.json(&["plan", "--json"]);
    assert_eq!(builder_change(&plan), ("noop".into(), Vec::new()));
    // CONFIG (the builder's name), and BUILDPACK: a buildpack in an image is known by
    // its layer's diffID, a directory by a hash of its files.
    assert_eq!(
        image_change(&plan),
        ("build".into(), s(&["CONFIG", "BUILDPACK"]))
    );
    let from_published = digest_of(&fleet.apply(), "local");
    assert_eq!(from_published, assembled);
}

/// A publish that fails is reported and makes apply exit 1; the images of its builder
/// are built all the same, and the next plan publishes again.
#[test]
fn a_failed_publish_fails_apply_but_not_the_images() {
    let fleet = Fleet::new();
    let config = fleet.root().join("kpack.toml");
    let text = std::fs::read_to_string(&config).expect("kpack.toml");
    // Nothing listens on port 1: the push cannot reach the registry.
    let text = text.replace(
        &format!("tag = \"{}/builders/test\"", fleet.prefix),
        "tag = \"127.0.0.1:1/builders/test\"",
    );
    std::fs::write(&config, text).expect("writing kpack.toml");

    let output = kpackd(fleet.root(), &["apply", "--json"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "a failed publish fails apply"
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let failed = publish(&report);
    assert_eq!(failed["status"], "failed");
    assert!(failed["failure"].as_str().is_some_and(|f| !f.is_empty()));
    assert!(
        !digest_of(&report, "local").is_empty(),
        "the image was built"
    );

    // Not published: planned again, with the same reason; the image is up to date.
    let plan = fleet.json(&["plan", "--json"]);
    assert_eq!(builder_change(&plan), ("publish".into(), s(&["CONFIG"])));
    assert_eq!(image_change(&plan), ("noop".into(), Vec::new()));
    let text = stdout(&kpackd(fleet.root(), &["builds"]));
    assert!(
        text.contains("BUILDER") && text.contains("failed"),
        "{text}"
    );
}

/// The succeeded publishes of builder `test`, with their reasons, read quietly.
fn succeeded_publishes(dir: &Path) -> Vec<Vec<String>> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kpackd"))
        .args(["builds", "--builder", "--json"])
        .current_dir(dir)
        .env_remove("KPACKD_STATE_DIR")
        .output()
        .expect("running kpackd");
    let list: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap_or_default();
    list.iter()
        .filter(|p| p["builder"] == "test" && p["status"] == "succeeded")
        .map(reasons)
        .collect()
}

/// Watch goes through the same plan and apply: it publishes the builder, and publishes
/// it again when a buildpack of it is edited.
#[test]
fn watch_publishes_a_builder_and_again_when_its_buildpack_is_edited() {
    let fleet = Fleet::new();
    let addr = format!("127.0.0.1:{}", testkit::free_port());
    let mut watch = spawn_kpackd(fleet.root(), "watch", &["watch", "--listen", &addr]);
    let long = std::time::Duration::from_secs(120);
    let first = wait_for("the first publish", long, || {
        let done = succeeded_publishes(fleet.root());
        (!done.is_empty()).then_some(done)
    });
    assert_eq!(first, [s(&["CONFIG"])], "{}", watch.output());

    let build_script = fleet.root().join("buildpacks/hello/bin/build");
    let mut script = std::fs::read_to_string(&build_script).expect("the build script");
    script.push_str("# edited while watched\n");
    std::fs::write(&build_script, script).expect("editing the buildpack");
    let both = wait_for("the second publish", long, || {
        let done = succeeded_publishes(fleet.root());
        (done.len() >= 2).then_some(done)
    });
    assert_eq!(both[1], s(&["BUILDPACK"]), "{}", watch.output());

    watch.signal("TERM");
    assert!(
        watch
            .wait_timeout(std::time::Duration::from_secs(30))
            .is_some(),
        "watch stops on SIGTERM"
    );
}
