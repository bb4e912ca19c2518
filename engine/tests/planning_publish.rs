//! Planning published builders against real upstreams: stack and lifecycle images in
//! OCI layouts, a directory buildpack, kpackd's entrypoint as a file, and a real state.

use std::collections::BTreeMap;
use std::path::Path;

use engine::planning::make_plan;
use engine::state::{NewPublish, PublishOutcome, State};
use executors::oci::{ContainerConfig, ImageConfig, ImageStore, StoreSettings};
use imageref::ImageRef;
use planner::plan::{BuilderAction, BuilderChange, Upstream};
use planner::Reason;

async fn push_image(reference: &str, marker: &str) -> String {
    let store = ImageStore::new(StoreSettings::default());
    let r = ImageRef::parse(reference).unwrap();
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: Some(ContainerConfig {
            labels: Some(BTreeMap::from([
                (
                    "io.buildpacks.base.id".to_string(),
                    "io.kpackd.tests".to_string(),
                ),
                ("marker".to_string(), marker.to_string()),
            ])),
            ..Default::default()
        }),
        ..Default::default()
    };
    store.push_image(&r, config, &[]).await.unwrap();
    store.resolve_digest(&r).await.unwrap().to_string()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn config_text(lifecycle: &str) -> String {
    format!(
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
tag = "oci:out:builder"
lifecycle = {{ image = "{lifecycle}" }}

[builders.unused]
stack = "base"
store = "main"
order = [{{ group = [{{ id = "tests/hello" }}] }}]
tag = "oci:out:unused"

[images.local]
tag = "oci:out:local"
builder = "default"
source = {{ path = "src" }}
"#
    )
}

async fn plan(dir: &Path, targets: &[String]) -> planner::plan::Plan {
    let config = planner::load(&dir.join("kpack.toml")).unwrap();
    let state = State::open(&dir.join("state")).unwrap();
    make_plan(&config, &state, targets).await.unwrap().plan
}

fn default(plan: &planner::plan::Plan) -> &BuilderChange {
    plan.builders
        .iter()
        .find(|b| b.builder == "default")
        .expect("builder default is planned")
}

/// The publish of `change` recorded as a success.
fn record(dir: &Path, change: &BuilderChange) {
    let mut state = State::open(&dir.join("state")).unwrap();
    let publish = state
        .begin_publish(&NewPublish {
            builder: &change.builder,
            reasons: &change.reasons,
            details: &change.details,
            inputs: change.inputs.as_ref().unwrap(),
            tag: &change.tag,
        })
        .unwrap();
    state.start_publish(publish.id).unwrap();
    state
        .finish_publish(
            publish.id,
            PublishOutcome::Succeeded {
                digest: imageref::Digest::parse(
                    "sha256:0000000000000000000000000000000000000000000000000000000000000001",
                )
                .unwrap(),
            },
        )
        .unwrap();
}

/// One test: it sets `KPACKD_ENTRYPOINT`, which the whole process sees.
#[tokio::test]
async fn a_published_builder_pins_its_lifecycle_image_and_entrypoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let layout = |name: &str| format!("oci:{}/{name}", dir.display());
    let build = push_image(&layout("stacks:build"), "build-1").await;
    push_image(&layout("stacks:run"), "run-1").await;
    let lifecycle = push_image(&layout("lifecycle:v1"), "lifecycle-1").await;
    write(
        &dir.join("buildpacks/hello/buildpack.toml"),
        "api = \"0.10\"\n[buildpack]\nid = \"tests/hello\"\nversion = \"0.1.0\"\n",
    );
    write(&dir.join("buildpacks/hello/bin/detect"), "#!/bin/sh\n");
    write(&dir.join("buildpacks/hello/bin/build"), "#!/bin/sh\n");
    write(&dir.join("src/index.html"), "<h1>hi</h1>\n");
    let entrypoint = dir.join("kpackd-entrypoint");
    write(&entrypoint, "entrypoint 1");
    std::env::set_var(executors::builder::entrypoint::ENTRYPOINT_ENV, &entrypoint);
    write(&dir.join("kpack.toml"), &config_text("oci:lifecycle:v1"));

    // First plan: both builders published, pinned.
    let first = plan(dir, &[]).await;
    let names: Vec<&str> = first.builders.iter().map(|b| b.builder.as_str()).collect();
    assert_eq!(names, ["default", "unused"]);
    let change = default(&first);
    assert_eq!(change.action, BuilderAction::Publish);
    assert_eq!(change.reasons, [Reason::Config]);
    let inputs = change.inputs.as_ref().unwrap();
    assert_eq!(inputs.build_image.to_string(), build);
    assert_eq!(
        inputs.lifecycle_image.as_ref().map(ToString::to_string),
        Some(lifecycle)
    );
    let entrypoint_digest = inputs.entrypoint.clone().expect("the entrypoint is hashed");
    assert!(entrypoint_digest.to_string().starts_with("sha256:"));
    assert_eq!(inputs.buildpacks.len(), 1);
    assert_eq!(inputs.order, [["tests/hello"]]);
    assert_eq!(first.publishes(), 2);

    // A plan of one image publishes only the builders it is built with.
    let targeted = plan(dir, &["local".to_string()]).await;
    let names: Vec<&str> = targeted
        .builders
        .iter()
        .map(|b| b.builder.as_str())
        .collect();
    assert_eq!(names, ["default"]);

    // Published: nothing to do.
    record(dir, change);
    assert_eq!(default(&plan(dir, &[]).await).action, BuilderAction::Noop);

    // A new lifecycle image digest, then a new entrypoint: CONFIG, named.
    push_image(&layout("lifecycle:v1"), "lifecycle-2").await;
    let moved = plan(dir, &[]).await;
    let change = default(&moved);
    assert_eq!(change.action, BuilderAction::Publish);
    assert_eq!(change.details[0].what, "lifecycle image");
    record(dir, change);
    write(&entrypoint, "entrypoint 2");
    let rebuilt = plan(dir, &[]).await;
    assert_eq!(default(&rebuilt).details[0].what, "entrypoint");
    assert_eq!(default(&rebuilt).reasons, [Reason::Config]);

    // A lifecycle image that cannot be read blocks the builder only.
    write(
        &dir.join("kpack.toml"),
        &config_text("oci:lifecycle:missing"),
    );
    let blocked = plan(dir, &[]).await;
    let change = default(&blocked);
    assert_eq!(change.action, BuilderAction::Blocked);
    assert_eq!(
        change.blocked_by[0].upstream,
        Upstream::LifecycleImage {
            builder: "default".into()
        }
    );
    assert!(blocked
        .errors
        .iter()
        .any(|e| e.upstream == change.blocked_by[0].upstream));
    assert_eq!(blocked.changes[0].image, "local");
    assert_ne!(blocked.changes[0].action, planner::plan::Action::Blocked);
}
