//! Publishes of builder images against a real SQLite file in a temp dir.

use std::collections::BTreeMap;

use imageref::Digest;
use planner::plan::{Detail, PublishInputs, StackKey};
use planner::Reason;

use super::super::State;
use super::*;

fn digest(name: &str) -> Digest {
    Digest::sha256(name.as_bytes())
}

fn inputs(build_image: &str) -> PublishInputs {
    PublishInputs {
        tag: "registry.example.com/builders/default".into(),
        stack: StackKey::stack("bookworm"),
        stack_id: "io.kpackd.stacks.bookworm".into(),
        build_image: digest(build_image),
        run_image: "registry.example.com/stacks/run".into(),
        run_image_mirrors: Vec::new(),
        order: vec![vec!["examples/python".into()]],
        buildpacks: BTreeMap::from([("examples/python@0.1.0".into(), digest("sha256:py"))]),
        lifecycle_image: None,
        entrypoint: Some(digest("sha256:e1")),
    }
}

fn queue(state: &mut State, builder: &str, inputs: &PublishInputs) -> Publish {
    let details = vec![Detail {
        reason: Reason::Config,
        what: "first publish".into(),
        old: None,
        new: None,
    }];
    state
        .begin_publish(&NewPublish {
            builder,
            reasons: &[Reason::Config],
            details: &details,
            inputs,
            tag: &inputs.tag,
        })
        .unwrap()
}

#[test]
fn publishes_are_numbered_per_builder_and_the_last_success_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::open(dir.path()).unwrap();
    assert!(state.recorded().unwrap().builders.is_empty());
    let serial = state.serial().unwrap();

    let first = queue(&mut state, "default", &inputs("sha256:b1"));
    assert_eq!((first.number, first.status), (1, PublishStatus::Queued));
    assert_eq!(
        first.log,
        dir.path().join(PUBLISH_LOGS).join("default").join("1.log")
    );
    assert!(
        state.serial().unwrap() > serial,
        "a publish moves the serial"
    );
    state.start_publish(first.id).unwrap();
    let done = state
        .finish_publish(
            first.id,
            PublishOutcome::Succeeded {
                digest: digest("sha256:d1"),
            },
        )
        .unwrap();
    assert_eq!(done.status, PublishStatus::Succeeded);
    assert_eq!(done.digest, Some(digest("sha256:d1")));

    // A failed publish is not what the rules compare with.
    let second = queue(&mut state, "default", &inputs("sha256:b2"));
    assert_eq!(second.number, 2);
    state.start_publish(second.id).unwrap();
    let failed = state
        .finish_publish(
            second.id,
            PublishOutcome::Failed {
                message: "registry down".into(),
            },
        )
        .unwrap();
    assert_eq!(failed.failure.as_deref(), Some("registry down"));
    let recorded = state.recorded().unwrap().builders;
    assert_eq!(recorded["default"].number, 1);
    assert_eq!(recorded["default"].inputs, inputs("sha256:b1"));
    assert_eq!(recorded["default"].digest, digest("sha256:d1"));

    assert_eq!(queue(&mut state, "other", &inputs("sha256:b1")).number, 1);
    let all = state.publishes(None).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(state.publishes(Some("default")).unwrap().len(), 2);
}

#[test]
fn an_ended_publish_never_changes_and_a_dead_one_is_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::open(dir.path()).unwrap();
    let publish = queue(&mut state, "default", &inputs("sha256:b1"));
    // Success only after publishing started.
    assert!(state
        .finish_publish(
            publish.id,
            PublishOutcome::Succeeded {
                digest: digest("sha256:d1")
            }
        )
        .is_err());
    state.start_publish(publish.id).unwrap();
    assert!(state.mark_interrupted().unwrap().is_empty());
    let publishes = state.publishes(None).unwrap();
    assert_eq!(publishes[0].status, PublishStatus::Interrupted);
    assert!(state
        .finish_publish(publish.id, PublishOutcome::Canceled)
        .is_err());
}

#[test]
fn a_digest_that_does_not_decode_names_the_builder() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::open(dir.path()).unwrap();
    queue(&mut state, "default", &inputs("sha256:b1"));
    state
        .conn
        .execute("UPDATE publishes SET digest = 'sha256:short'", [])
        .unwrap();
    let err = state.publishes(None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "read the recorded digest of publish of builder default #1"
    );
}
