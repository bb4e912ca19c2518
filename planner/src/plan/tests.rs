//! The plan as programs read it: the JSON of a plan holding every kind of change.

use super::*;

/// A digest of the constants below.
fn d(digest: &str) -> Digest {
    Digest::parse(digest).expect("a valid digest")
}

const C1: &str = "3f2a9c1e5b7d4a6f8e0c2b4d6f8a0c2e4b6d8f0a";
const C2: &str = "8d04e77a1c3e5f7b9d1f3a5c7e9b1d3f5a7c9e1b";
const RUN1: &str = "sha256:1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809";
const RUN2: &str = "sha256:9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0";
const BUILD1: &str = "sha256:b1b2b3b4b5b6b7b8b9b0b1b2b3b4b5b6b7b8b9b0b1b2b3b4b5b6b7b8b9b0b1b2";
const BUILD2: &str = "sha256:c1c2c3c4c5c6c7c8c9c0c1c2c3c4c5c6c7c8c9c0c1c2c3c4c5c6c7c8c9c0c1c2";
const PY: &str = "sha256:0a0b0c0d0e0f0a0b0c0d0e0f0a0b0c0d0e0f0a0b0c0d0e0f0a0b0c0d0e0f0a0b";

fn inputs(source: &str, run_image: &str) -> Inputs {
    Inputs {
        source: source.into(),
        run_image: d(run_image),
        build_image: d(BUILD2),
        buildpacks: BTreeMap::from([("examples/python@0.1.0".into(), d(PY))]),
        config: "sha256:c0f1".into(),
        builder: "default".into(),
        stack: StackKey::stack("bookworm"),
        stack_id: "io.kpackd.stacks.bookworm".into(),
        target: Target {
            os: "linux".into(),
            arch: "amd64".into(),
            variant: None,
        },
        last_image: None,
        image_buildpacks: Vec::new(),
    }
}

fn change(image: &str, action: Action, last_build: Option<u64>) -> Change {
    Change {
        image: image.into(),
        action,
        reasons: Vec::new(),
        details: Vec::new(),
        inputs: None,
        last_build,
        blocked_by: Vec::new(),
    }
}

fn detail(reason: Reason, what: &str, old: Option<&str>, new: Option<&str>) -> Detail {
    Detail {
        reason,
        what: what.into(),
        old: old.map(Into::into),
        new: new.map(Into::into),
    }
}

/// hello rebuilt, docs rebased, api built, legacy forgotten, worker blocked, seven
/// unchanged, and a build image moved under docs.
fn representative() -> Plan {
    let failure = UpstreamFailure {
        upstream: Upstream::Source {
            source: "https://github.com/example/worker.git#main".into(),
        },
        error: "could not connect to github.com".into(),
    };
    let mut changes = vec![
        Change {
            reasons: vec![Reason::Config],
            details: vec![detail(Reason::Config, "first build", None, None)],
            inputs: Some(inputs(C2, RUN2)),
            ..change("api", Action::Build, None)
        },
        Change {
            reasons: vec![Reason::Stack],
            details: vec![detail(Reason::Stack, "run image", Some(RUN1), Some(RUN2))],
            inputs: Some(Inputs {
                last_image: Some(d(BUILD1)),
                image_buildpacks: Vec::new(),
                ..inputs(C1, RUN2)
            }),
            ..change("docs", Action::Rebase, Some(4))
        },
        Change {
            reasons: vec![Reason::Commit],
            details: vec![detail(Reason::Commit, "source commit", Some(C1), Some(C2))],
            inputs: Some(inputs(C2, RUN2)),
            ..change("hello", Action::Build, Some(12))
        },
        change("legacy", Action::Forget, Some(2)),
        Change {
            blocked_by: vec![failure.clone()],
            ..change("worker", Action::Blocked, Some(1))
        },
    ];
    changes.extend((1..=7).map(|n| change(&format!("svc-{n}"), Action::Noop, Some(n))));
    Plan {
        format_version: FORMAT_VERSION,
        lineage: "5b0e8f2c-3c1d-4f7a-9a51-2d7c1e0b9f34".into(),
        serial: 7,
        config: "kpack.toml".into(),
        summary: Summary::of(&changes),
        changes,
        errors: vec![failure],
        notes: vec![Note {
            stack: StackKey::stack("bookworm"),
            what: "build image".into(),
            old: d(BUILD1),
            new: d(BUILD2),
            images: vec!["docs".into(), "svc-1".into()],
        }],
        failing: Vec::new(),
        builders: Vec::new(),
    }
}

#[test]
fn json_form() {
    insta::assert_json_snapshot!(representative());
}

#[test]
fn a_saved_plan_reads_back_as_it_was() {
    let plan = representative();
    let json = serde_json::to_string(&plan).unwrap();
    let back: Plan = serde_json::from_str(&json).unwrap();
    assert_eq!(back, plan);
}

#[test]
fn buildpacks_without_digests_are_refused() {
    let mut json = serde_json::to_value(inputs(C1, RUN1)).unwrap();
    json["buildpacks"] = serde_json::json!(["examples/python@0.1.0", "examples/go@0.3.0"]);
    let err = serde_json::from_value::<Inputs>(json).unwrap_err();
    assert!(err.to_string().contains("examples/go@0.3.0"), "{err}");
}

/// A publish, a blocked builder and an unchanged one, beside the images: the
/// `builders` list, and the rest of the plan as it was.
#[test]
fn json_form_with_builders() {
    let publish_inputs = PublishInputs {
        tag: "registry.example.com/builders/default".into(),
        stack: StackKey::stack("bookworm"),
        stack_id: "io.kpackd.stacks.bookworm".into(),
        build_image: d(BUILD2),
        run_image: "registry.example.com/stacks/run".into(),
        run_image_mirrors: vec!["mirror.example.com/stacks/run".into()],
        order: vec![vec!["examples/python".into(), "examples/procfile?".into()]],
        buildpacks: BTreeMap::from([("examples/python@0.1.0".into(), d(PY))]),
        lifecycle_image: None,
        entrypoint: Some(d(RUN1)),
    };
    let mut plan = representative();
    plan.builders = vec![
        BuilderChange {
            builder: "default".into(),
            action: BuilderAction::Publish,
            tag: publish_inputs.tag.clone(),
            reasons: vec![Reason::Stack],
            details: vec![detail(
                Reason::Stack,
                "build image",
                Some(BUILD1),
                Some(BUILD2),
            )],
            inputs: Some(publish_inputs.clone()),
            last_publish: Some(2),
            blocked_by: Vec::new(),
        },
        BuilderChange {
            builder: "jammy".into(),
            action: BuilderAction::Blocked,
            tag: "registry.example.com/builders/jammy".into(),
            reasons: Vec::new(),
            details: Vec::new(),
            inputs: None,
            last_publish: None,
            blocked_by: vec![UpstreamFailure {
                upstream: Upstream::LifecycleImage {
                    builder: "jammy".into(),
                },
                error: "manifest unknown".into(),
            }],
        },
        BuilderChange {
            builder: "quiet".into(),
            action: BuilderAction::Noop,
            tag: "registry.example.com/builders/quiet".into(),
            reasons: Vec::new(),
            details: Vec::new(),
            inputs: Some(publish_inputs),
            last_publish: Some(1),
            blocked_by: Vec::new(),
        },
    ];
    let json = serde_json::to_value(&plan).unwrap();
    let mut without = json.clone();
    without.as_object_mut().unwrap().remove("builders");
    assert_eq!(
        without,
        serde_json::to_value(representative()).unwrap(),
        "builders change nothing else"
    );
    insta::assert_json_snapshot!(json["builders"]);
    let back: Plan = serde_json::from_value(json).unwrap();
    assert_eq!(back, plan);
}
