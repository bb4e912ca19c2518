//! The plan as people read it: a plan holding every kind of change, rendered.

use imageref::Digest;
use planner::plan::{
    Action, Change, Detail, Note, Plan, StackKey, Summary, Upstream, UpstreamFailure,
    FORMAT_VERSION,
};
use planner::Reason;

use super::render;

const C1: &str = "3f2a9c1e5b7d4a6f8e0c2b4d6f8a0c2e4b6d8f0a";
const C2: &str = "8d04e77a1c3e5f7b9d1f3a5c7e9b1d3f5a7c9e1b";
const RUN1: &str = "sha256:1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809";
const RUN2: &str = "sha256:9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0";
const BUILD1: &str = "sha256:b1b2b3b4b5b6b7b8b9b0b1b2b3b4b5b6b7b8b9b0b1b2b3b4b5b6b7b8b9b0b1b2";
const BUILD2: &str = "sha256:c1c2c3c4c5c6c7c8c9c0c1c2c3c4c5c6c7c8c9c0c1c2c3c4c5c6c7c8c9c0c1c2";

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
            ..change("api", Action::Build, None)
        },
        Change {
            reasons: vec![Reason::Stack],
            details: vec![detail(Reason::Stack, "run image", Some(RUN1), Some(RUN2))],
            ..change("docs", Action::Rebase, Some(4))
        },
        Change {
            reasons: vec![Reason::Commit],
            details: vec![detail(Reason::Commit, "source commit", Some(C1), Some(C2))],
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
            old: Digest::parse(BUILD1).unwrap(),
            new: Digest::parse(BUILD2).unwrap(),
            images: vec!["docs".into(), "svc-1".into()],
        }],
        failing: Vec::new(),
        builders: Vec::new(),
    }
}

#[test]
fn human_rendering() {
    insta::assert_snapshot!(render(&representative(), false));
}

#[test]
fn human_rendering_of_the_example_in_the_semantics() {
    let mut plan = representative();
    plan.changes
        .retain(|c| matches!(c.action, Action::Build | Action::Rebase | Action::Noop));
    plan.changes.sort_by_key(|c| match c.action {
        Action::Build if c.last_build.is_some() => 0,
        Action::Rebase => 1,
        _ => 2,
    });
    plan.notes.clear();
    plan.summary = Summary::of(&plan.changes);
    insta::assert_snapshot!(render(&plan, false), @r#"
    kpackd will perform the following actions:

      ~ image "hello" will be rebuilt            (COMMIT)
          source commit: 3f2a9c1 → 8d04e77
      ↻ image "docs" will be rebased             (STACK)
          run image: sha256:1a2b… → sha256:9f8e…
      + image "api" will be built                (CONFIG: first build)

    Plan: 1 to build, 1 to rebuild, 1 to rebase, 0 to forget, 7 unchanged.
    "#);
}

#[test]
fn colours_only_when_asked() {
    let plan = representative();
    assert!(!render(&plan, false).contains('\u{1b}'));
    assert!(render(&plan, true).contains('\u{1b}'));
}

#[test]
fn nothing_to_do() {
    let mut plan = representative();
    plan.changes.retain(|c| c.action == Action::Noop);
    plan.summary = Summary::of(&plan.changes);
    plan.errors.clear();
    plan.notes.clear();
    assert!(!plan.has_changes());
    assert_eq!(
        render(&plan, false),
        "No changes. The fleet is up to date.\n"
    );
}

/// Builders published show first, with their reasons; unchanged ones not at all.
#[test]
fn human_rendering_of_publishes() {
    use planner::plan::{BuilderAction, BuilderChange};
    let builder = |name: &str, action, last_publish| BuilderChange {
        builder: name.into(),
        action,
        tag: format!("registry.example.com/builders/{name}"),
        reasons: Vec::new(),
        details: Vec::new(),
        inputs: None,
        last_publish,
        blocked_by: Vec::new(),
    };
    let mut plan = representative();
    plan.changes
        .retain(|c| c.image == "api" || c.image == "svc-1");
    plan.summary = Summary::of(&plan.changes);
    plan.errors.clear();
    plan.notes.clear();
    plan.builders = vec![
        BuilderChange {
            reasons: vec![Reason::Buildpack, Reason::Stack],
            details: vec![
                detail(
                    Reason::Buildpack,
                    "buildpack examples/python@0.1.0",
                    Some(RUN1),
                    Some(RUN2),
                ),
                detail(Reason::Stack, "build image", Some(BUILD1), Some(BUILD2)),
            ],
            ..builder("default", BuilderAction::Publish, Some(3))
        },
        BuilderChange {
            reasons: vec![Reason::Config],
            details: vec![detail(Reason::Config, "first publish", None, None)],
            ..builder("jammy", BuilderAction::Publish, None)
        },
        builder("quiet", BuilderAction::Noop, Some(1)),
    ];
    insta::assert_snapshot!(render(&plan, false), @r#"
    kpackd will perform the following actions:

      ~ builder "default" will be republished    (BUILDPACK, STACK)
          buildpack examples/python@0.1.0: sha256:1a2b… → sha256:9f8e…
          build image: sha256:b1b2… → sha256:c1c2…
      + builder "jammy" will be published        (CONFIG: first publish)
      + image "api" will be built                (CONFIG: first build)

    Plan: 2 to publish, 1 to build, 0 to rebuild, 0 to rebase, 0 to forget, 1 unchanged.
    "#);
    plan.builders.truncate(0);
    plan.builders
        .push(builder("quiet", BuilderAction::Noop, Some(1)));
    plan.changes.retain(|c| c.action == Action::Noop);
    plan.summary = Summary::of(&plan.changes);
    assert_eq!(
        render(&plan, false),
        "No changes. The fleet is up to date.\n"
    );
}
