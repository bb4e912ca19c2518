//! The detect phase against real bubblewrap and the shell buildpacks in tests/buildpacks:
//! plan resolution across buildpacks, `or` alternatives, optional and composite
//! buildpacks, the files detect leaves, and the report when no group passes.

#[path = "buildpacks/fixture.rs"]
mod fixture;

use executors::lifecycle::descriptor::{Group, ResolvedPlan};
use executors::lifecycle::detect::{detect, DetectError, DetectOutcome, Verdict};
use executors::lifecycle::phase::BuildpackDir;
use executors::lifecycle::Phase;
use fixture::{add_buildpack, fixture, order, read, write_buildpack, Logs};

/// A `bin/detect` that passes, saying so.
const PASS: (&str, &str) = ("detect", "#!/bin/sh\necho \"detect: passing\"\nexit 0\n");

fn ids(outcome: &DetectOutcome) -> Vec<&str> {
    outcome.group.group.iter().map(|g| g.id.as_str()).collect()
}

#[tokio::test]
async fn resolves_the_plan_across_buildpacks_with_or_and_optional_ones() {
    let f = fixture(&["node-engine", "or", "extra", "npm", "never"]);
    let logs = Logs::default();
    let order = order(&[&[
        ("test/node-engine", false),
        ("test/or", false),
        ("test/extra", true),
        ("test/npm", false),
        ("test/never", true),
    ]]);
    let outcome = detect(&f.ctx, &order, &logs).await.expect("detect passes");

    // extra (optional) requires python, which nobody provides: dropped. never (optional)
    // failed: dropped. or's first alternative provides yarn, which nobody requires: its
    // `or` alternative, requiring node, is used.
    assert_eq!(ids(&outcome), ["test/node-engine", "test/or", "test/npm"]);
    assert_eq!(outcome.group.group[2].api, "0.12");
    assert_eq!(outcome.plan.entries.len(), 1);
    let entry = &outcome.plan.entries[0];
    assert_eq!(entry.name(), "node");
    let providers: Vec<&str> = entry.providers.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(providers, ["test/node-engine"]);
    assert_eq!(entry.requires.len(), 2);
    assert_eq!(entry.requires[0].metadata["from"].as_str(), Some("or"));
    assert_eq!(entry.requires[1].metadata["version"].as_str(), Some("18"));

    // The same, on disk, in the platform spec's format.
    let group_toml = read(f.ctx.layers_dir.join("group.toml"));
    assert!(group_toml.contains("[[group]]"), "{group_toml}");
    assert!(group_toml.contains("api = \"0.10\""), "{group_toml}");
    assert_eq!(
        Group::read(&f.ctx.layers_dir.join("group.toml")).expect("group.toml"),
        outcome.group
    );
    let plan_toml = read(f.ctx.layers_dir.join("plan.toml"));
    assert!(plan_toml.contains("[[entries.providers]]"), "{plan_toml}");
    assert!(plan_toml.contains("[[entries.requires]]"), "{plan_toml}");
    assert_eq!(
        ResolvedPlan::read(&f.ctx.layers_dir.join("plan.toml")).expect("plan.toml"),
        outcome.plan
    );
    assert_eq!(
        DetectOutcome::read(&f.ctx.layers_dir).expect("read back"),
        outcome
    );

    // Detect says who participates; every line the programs printed went to the log with
    // its buildpack.
    let lines = logs.0.lock().expect("lock").clone();
    assert!(lines.contains(&(
        Phase::Detect,
        None,
        "3 of 5 buildpacks participating".into()
    )));
    assert!(lines.contains(&(Phase::Detect, None, "test/npm 1.0.0".into())));
    assert!(logs.has(Phase::Detect, "test/npm", "npm: requiring node"));
    assert!(logs.has(Phase::Detect, "test/never", "never: said on stderr"));
    assert!(logs.has(
        Phase::Detect,
        "test/node-engine",
        "node-engine: detecting in /workspace"
    ));
}

#[tokio::test]
async fn composite_buildpacks_expand_and_the_first_passing_group_wins() {
    let f = fixture(&["node-engine", "npm", "meta", "never"]);
    let order = order(&[
        &[("test/never", false)],
        &[("test/meta", false)],
        &[("test/node-engine", false)],
    ]);
    let outcome = detect(&f.ctx, &order, &Logs::default())
        .await
        .expect("detect passes");
    assert_eq!(ids(&outcome), ["test/node-engine", "test/npm"]);
    assert_eq!(outcome.plan.entries[0].name(), "node");
}

#[tokio::test]
async fn older_api_gets_positional_arguments() {
    let f = fixture(&["old-api"]);
    let outcome = detect(
        &f.ctx,
        &order(&[&[("test/old-api", false)]]),
        &Logs::default(),
    )
    .await
    .expect("detect passes");
    assert_eq!(ids(&outcome), ["test/old-api"]);
    assert_eq!(outcome.plan.entries[0].name(), "old");
}

#[tokio::test]
async fn no_passing_group_reports_every_group_and_what_each_buildpack_said() {
    let f = fixture(&["node-engine", "never", "broken", "npm"]);
    std::fs::remove_file(f.ctx.app_dir.join("package.json")).expect("rm");
    let order = order(&[
        &[("test/never", false)],
        &[("test/broken", false), ("test/node-engine", true)],
        &[("test/node-engine", false), ("test/npm", false)],
    ]);
    let err = detect(&f.ctx, &order, &Logs::default())
        .await
        .expect_err("no group passes");
    let message = err.to_string();
    for expected in [
        "no buildpack group passed",
        "group 1: test/never@1.0.0",
        "test/never@1.0.0: fail (exit 100)",
        "| never: nothing to do here",
        "| never: said on stderr",
        "group 2: test/broken@1.0.0, test/node-engine@1.0.0 (optional)",
        "test/broken@1.0.0: error (exit 3)",
        "| broken: crashing",
        "group 3:",
        "| node-engine: no package.json",
    ] {
        assert!(
            message.contains(expected),
            "{expected:?} missing from:\n{message}"
        );
    }
    let DetectError::NoGroupPassed { groups, errored } = err else {
        panic!("unexpected error {err}")
    };
    assert!(errored);
    assert_eq!(groups.len(), 3);
    assert_eq!(
        groups[1].buildpacks[0].verdict,
        Verdict::Error("exit 3".into())
    );
    assert!(!f.ctx.layers_dir.join("group.toml").exists());
}

#[tokio::test]
async fn an_unmet_plan_fails_the_group() {
    let f = fixture(&["npm"]);
    let err = detect(&f.ctx, &order(&[&[("test/npm", false)]]), &Logs::default())
        .await
        .expect_err("npm requires node, which nobody provides");
    let message = err.to_string();
    assert!(
        message.contains("test/npm@1.0.0 requires \"node\", which no earlier buildpack provides"),
        "{message}"
    );
}

#[tokio::test]
async fn detect_futures_can_be_spawned() {
    let f = fixture(&["reporter"]);
    let handle = tokio::spawn(async move {
        let logs = Logs::default();
        detect(&f.ctx, &order(&[&[("test/reporter", false)]]), &logs)
            .await
            .map(|o| o.group.group.len())
    });
    assert_eq!(handle.await.expect("join").expect("detect"), 1);
}

#[tokio::test]
async fn a_buildpack_for_another_target_errors_unless_optional() {
    let f = fixture(&["arm-only", "reporter"]);
    let err = detect(
        &f.ctx,
        &order(&[&[("test/arm-only", false), ("test/reporter", false)]]),
        &Logs::default(),
    )
    .await
    .expect_err("arm64 only");
    assert!(
        err.to_string()
            .contains("no target of the buildpack matches"),
        "{err}"
    );
    let outcome = detect(
        &f.ctx,
        &order(&[&[("test/arm-only", true), ("test/reporter", false)]]),
        &Logs::default(),
    )
    .await
    .expect("optional: dropped");
    assert_eq!(ids(&outcome), ["test/reporter"]);
}

/// Buildpack spec, "Deprecations: buildpack.toml (TOML) `stacks` Array": `[[stacks]]` is
/// the form of `[[targets]]` deprecated in Buildpack API 0.10, bionic translating to Ubuntu
/// 18.04 on amd64. The reference lifecycle translates it only from Buildpack API 0.10 on
/// or when bionic is the only stack; otherwise it ignores stack ids and infers
/// `os = linux` from `bin/build`. So an API 0.9 buildpack for bionic and jammy runs on a
/// Debian stack.
#[tokio::test]
async fn an_old_multi_stack_buildpack_passes_detection_on_debian() {
    let mut f = fixture(&[]);
    f.ctx.target.distro_name = Some("debian".into());
    f.ctx.target.distro_version = Some("12".into());
    let stacks = "[[stacks]]\nid = \"io.buildpacks.stacks.bionic\"\n\
                  [[stacks]]\nid = \"io.buildpacks.stacks.jammy\"\n";
    for (id, api) in [
        ("test/multi-stack", "0.9"),
        ("test/multi-stack-new", "0.10"),
    ] {
        let descriptor =
            format!("api = \"{api}\"\n[buildpack]\nid = \"{id}\"\nversion = \"1.0.0\"\n{stacks}");
        add_buildpack(&mut f, id, &descriptor, &[PASS, ("build", "#!/bin/sh\n")]);
    }

    let outcome = detect(
        &f.ctx,
        &order(&[&[("test/multi-stack", false)]]),
        &Logs::default(),
    )
    .await
    .expect("API 0.9: the stacks say nothing about the distribution");
    assert_eq!(ids(&outcome), ["test/multi-stack"]);

    // From API 0.10 on, bionic among the stacks means Ubuntu 18.04: not this stack.
    let err = detect(
        &f.ctx,
        &order(&[&[("test/multi-stack-new", false)]]),
        &Logs::default(),
    )
    .await
    .expect_err("API 0.10: bionic is Ubuntu 18.04");
    assert!(
        err.to_string()
            .contains("no target of the buildpack matches"),
        "{err}"
    );
}

/// Buildpack spec, "Buildpack API Compatibility": the lifecycle returns an error for a
/// Buildpack API it does not support. kpackd runs those of the reference lifecycle, 0.7
/// to 0.12; a buildpack of another API is refused when the build reads it, with its id,
/// version and API in the error.
#[test]
fn a_buildpack_of_an_unsupported_api_is_refused_by_name() {
    let f = fixture(&[]);
    for api in ["0.99", "0.6", "1.0"] {
        let descriptor =
            format!("api = \"{api}\"\n[buildpack]\nid = \"test/future\"\nversion = \"2.0.0\"\n");
        let dir = write_buildpack(&f, &format!("future-{api}"), &descriptor, &[PASS]);
        let err = BuildpackDir::read(&dir).expect_err("an API outside 0.7 to 0.12");
        let message = err.to_string();
        assert!(message.contains("test/future@2.0.0"), "{message}");
        assert!(
            message.contains(&format!("Buildpack API {api}")),
            "{message}"
        );
        assert!(message.contains("0.7 to 0.12"), "{message}");
    }
}

/// Buildpack spec, "Buildpack Interface: Detection": `bin/detect` passes (0), fails (100)
/// or errors (any other status). The reference lifecycle logs each buildpack that errored
/// at info level (`err:  <id>@<version> (<code>)`), so the build log says so even when a
/// later group passes.
#[tokio::test]
async fn a_detect_error_is_in_the_log_when_a_later_group_passes() {
    let f = fixture(&["broken", "reporter"]);
    let logs = Logs::default();
    let outcome = detect(
        &f.ctx,
        &order(&[&[("test/broken", false)], &[("test/reporter", false)]]),
        &logs,
    )
    .await
    .expect("the second group passes");
    assert_eq!(ids(&outcome), ["test/reporter"]);
    let lines = logs.0.lock().expect("lock").clone();
    assert!(
        lines.contains(&(
            Phase::Detect,
            None,
            "err:  test/broken@1.0.0 (exit 3)".into()
        )),
        "{lines:#?}"
    );
}
