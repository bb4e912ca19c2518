//! The state store against a real SQLite file in a temp dir.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::os::unix::fs::PermissionsExt as _;

use imageref::{Digest, Target};
use planner::diff::BuildOutcome;
use planner::plan::{Detail, Inputs, StackKey};
use planner::Reason;

use super::*;

/// A valid digest standing for `name`.
fn digest(name: &str) -> Digest {
    Digest::sha256(name.as_bytes())
}

fn inputs(source: &str) -> Inputs {
    Inputs {
        source: source.into(),
        run_image: digest("sha256:run1"),
        build_image: digest("sha256:build1"),
        buildpacks: BTreeMap::from([("examples/python@0.1.0".into(), digest("sha256:py"))]),
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

const REASONS: &[Reason] = &[Reason::Commit];

fn details() -> Vec<Detail> {
    vec![Detail {
        reason: Reason::Commit,
        what: "source commit".into(),
        old: Some("aaa".into()),
        new: Some("bbb".into()),
    }]
}

fn queue(state: &mut State, image: &str, action: Action, inputs: &Inputs) -> Build {
    let details = details();
    state
        .begin_build(&NewBuild {
            image,
            action,
            reasons: REASONS,
            details: &details,
            inputs,
            tag: "oci:out:hello",
        })
        .unwrap()
}

fn succeed(state: &mut State, build: &Build, output: &str) -> Build {
    for step in [
        BuildStatus::ResolvingSource,
        BuildStatus::Preparing,
        BuildStatus::Detecting,
        BuildStatus::Building,
        BuildStatus::Exporting,
    ] {
        state.transition(build.id, step).unwrap();
    }
    state
        .finish(
            build.id,
            Outcome::Succeeded {
                output: digest(output),
                buildpacks_used: BTreeMap::from([(
                    "examples/python@0.1.0".into(),
                    digest("sha256:py"),
                )]),
                rebasable: true,
            },
        )
        .unwrap()
}

#[test]
fn a_new_state_is_private_migrated_and_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let state = State::open(&state_dir).unwrap();
    let mode = std::fs::metadata(state_dir.join(DATABASE_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let journal: String = state
        .conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
    let version: i64 = state
        .conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version as usize, migrations::latest());
    assert_eq!(state.serial().unwrap(), 0);
    assert_eq!(state.lineage().len(), 36, "{}", state.lineage());
    let lineage = state.lineage().to_string();
    drop(state);
    let again = State::open(&state_dir).unwrap();
    assert_eq!(again.lineage(), lineage, "the lineage is made once");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = State::open(dir.path()).unwrap();
    state
        .conn
        .pragma_update(None, "user_version", 99_i64)
        .unwrap();
    drop(state);
    let err = State::open(dir.path()).unwrap_err();
    assert!(matches!(err, StateError::TooNew { found: 99, .. }), "{err}");
}

#[test]
fn every_write_moves_the_serial() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::open(dir.path()).unwrap();
    let mut last = state.serial().unwrap();
    let mut moved = |state: &State, what: &str| {
        let now = state.serial().unwrap();
        assert!(now > last, "{what}: serial {now} after {last}");
        last = now;
    };
    state.add_trigger("hello").unwrap();
    moved(&state, "trigger");
    let build = queue(&mut state, "hello", Action::Build, &inputs("c1"));
    moved(&state, "begin");
    state
        .transition(build.id, BuildStatus::ResolvingSource)
        .unwrap();
    moved(&state, "transition");
    state
        .finish(
            build.id,
            Outcome::Failed {
                message: "no".into(),
                kind: FailureKind::Build,
            },
        )
        .unwrap();
    moved(&state, "finish");
    state.forget("hello").unwrap();
    moved(&state, "forget");
    assert_eq!(state.recorded().unwrap().serial, last);
}

#[test]
fn builds_are_numbered_per_image_and_walk_the_state_machine() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::open(dir.path()).unwrap();
    let first = queue(&mut state, "hello", Action::Build, &inputs("c1"));
    let other = queue(&mut state, "docs", Action::Build, &inputs("c1"));
    assert_eq!((first.number, other.number), (1, 1));
    assert_eq!(first.status, BuildStatus::Queued);
    assert_eq!(first.log, dir.path().join("logs/hello/1.log"));
    assert_eq!(first.reasons, REASONS);
    assert_eq!(first.details, details());
    assert_eq!(first.inputs, inputs("c1"));

    let err = state
        .transition(first.id, BuildStatus::Building)
        .unwrap_err();
    assert!(matches!(err, StateError::Transition { .. }), "{err}");
    let err = state
        .transition(first.id, BuildStatus::Succeeded)
        .unwrap_err();
    assert!(
        matches!(err, StateError::Transition { .. }),
        "ends go through finish: {err}"
    );

    let done = succeed(&mut state, &first, "sha256:out1");
    assert_eq!(done.status, BuildStatus::Succeeded);
    assert_eq!(done.output, Some(digest("sha256:out1")));
    assert_eq!(done.rebasable, Some(true));
    assert!(done.started_at.is_some() && done.finished_at.is_some());
    let err = state
        .finish(
            done.id,
            Outcome::Failed {
                message: "x".into(),
                kind: FailureKind::Build,
            },
        )
        .unwrap_err();
    assert!(matches!(err, StateError::Transition { .. }), "{err}");

    let second = queue(&mut state, "hello", Action::Rebase, &inputs("c1"));
    assert_eq!(second.number, 2);
    let err = state
        .transition(second.id, BuildStatus::Detecting)
        .unwrap_err();
    assert!(matches!(err, StateError::Transition { .. }), "{err}");
    state.transition(second.id, BuildStatus::Rebasing).unwrap();
    let failed = state
        .finish(
            second.id,
            Outcome::Failed {
                message: "registry said no".into(),
                kind: FailureKind::Build,
            },
        )
        .unwrap();
    assert_eq!(
        failed.failure,
        Some(Failure {
            step: BuildStatus::Rebasing,
            message: "registry said no".into(),
            kind: FailureKind::Build,
        })
    );
    let history = state.builds(Some("hello")).unwrap();
    assert_eq!(history.iter().map(|b| b.number).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(state.builds(None).unwrap().len(), 3);
    assert_eq!(state.images().unwrap(), ["docs", "hello"]);

    let err = state
        .begin_build(&NewBuild {
            image: "hello",
            action: Action::Noop,
            reasons: &[],
            details: &[],
            inputs: &inputs("c1"),
            tag: "t",
        })
        .unwrap_err();
    assert!(matches!(err, StateError::NotABuild(Action::Noop)), "{err}");
}

#[test]
fn recorded_holds_the_last_completed_build_and_pending_triggers() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::open(dir.path()).unwrap();
    let first = queue(&mut state, "hello", Action::Build, &inputs("c1"));
    succeed(&mut state, &first, "sha256:out1");
    // Still running: not what the rules compare with.
    let running = queue(&mut state, "hello", Action::Build, &inputs("c2"));
    state.add_trigger("docs").unwrap();
    state.add_trigger("docs").unwrap();

    let recorded = state.recorded().unwrap();
    assert_eq!(recorded.lineage, state.lineage());
    let hello = &recorded.images["hello"];
    let last = hello.last_build.as_ref().unwrap();
    assert_eq!(last.number, 1);
    assert_eq!(last.outcome, BuildOutcome::Succeeded);
    assert_eq!(last.inputs.source, "c1");
    assert_eq!(last.output, Some(digest("sha256:out1")));
    assert!(last.rebasable);
    assert_eq!(
        last.buildpacks_used,
        Some(BTreeMap::from([(
            "examples/python@0.1.0".to_string(),
            digest("sha256:py")
        )]))
    );
    let docs = &recorded.images["docs"];
    assert_eq!(docs.pending_triggers, 2);
    assert!(docs.last_build.is_none());

    state
        .finish(
            running.id,
            Outcome::Failed {
                message: "detect failed".into(),
                kind: FailureKind::Build,
            },
        )
        .unwrap();
    let last = state.recorded().unwrap().images["hello"]
        .last_build
        .clone()
        .unwrap();
    assert_eq!((last.number, last.outcome), (2, BuildOutcome::Failed));
    assert_eq!(last.inputs.source, "c2");
}

#[test]
fn failures_outside_the_build_are_counted_in_a_row_and_reset_by_any_other_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::open(dir.path()).unwrap();
    let fail = |state: &mut State, kind: FailureKind| {
        let build = queue(state, "hello", Action::Build, &inputs("c1"));
        state
            .finish(
                build.id,
                Outcome::Failed {
                    message: "connection refused".into(),
                    kind,
                },
            )
            .unwrap();
    };
    let streak = |state: &State| {
        let recorded = state.recorded().unwrap();
        let last = recorded.images["hello"].last_build.clone().unwrap();
        let failure = last.failure.expect("the last build failed");
        (failure.kind, failure.infrastructure_failures)
    };
    fail(&mut state, FailureKind::Infrastructure);
    assert_eq!(streak(&state), (FailureKind::Infrastructure, 1));
    fail(&mut state, FailureKind::Infrastructure);
    assert_eq!(streak(&state), (FailureKind::Infrastructure, 2));
    // A canceled build does not end the streak: it never ran to completion.
    let canceled = queue(&mut state, "hello", Action::Build, &inputs("c1"));
    state.finish(canceled.id, Outcome::Canceled).unwrap();
    fail(&mut state, FailureKind::Infrastructure);
    assert_eq!(streak(&state), (FailureKind::Infrastructure, 3));
    fail(&mut state, FailureKind::Build);
    assert_eq!(streak(&state), (FailureKind::Build, 0));
    fail(&mut state, FailureKind::Infrastructure);
    assert_eq!(streak(&state), (FailureKind::Infrastructure, 1));
    let ok = queue(&mut state, "hello", Action::Build, &inputs("c1"));
    succeed(&mut state, &ok, "sha256:out");
    fail(&mut state, FailureKind::Infrastructure);
    assert_eq!(streak(&state), (FailureKind::Infrastructure, 1));

    // The kind is kept with the build.
    let builds = state.builds(Some("hello")).unwrap();
    let last = builds.last().unwrap().failure.clone().unwrap();
    assert_eq!(last.kind, FailureKind::Infrastructure);
}

#[test]
fn a_state_from_before_failure_kinds_reads_its_failures_as_the_builds_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::open(dir.path()).unwrap();
    let build = queue(&mut state, "hello", Action::Build, &inputs("c1"));
    state
        .finish(
            build.id,
            Outcome::Failed {
                message: "x".into(),
                kind: FailureKind::Infrastructure,
            },
        )
        .unwrap();
    drop(state);
    // As schema 1 left it: no kind recorded.
    let conn = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    conn.execute("UPDATE builds SET failure_kind = NULL", [])
        .unwrap();
    drop(conn);
    let state = State::open(dir.path()).unwrap();
    let recorded = state.recorded().unwrap();
    let failure = recorded.images["hello"]
        .last_build
        .clone()
        .unwrap()
        .failure
        .unwrap();
    assert_eq!(
        (failure.kind, failure.infrastructure_failures),
        (FailureKind::Build, 0)
    );
}

#[test]
fn a_completed_build_consumes_triggers_an_unfinished_one_releases_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::open(dir.path()).unwrap();
    state.add_trigger("hello").unwrap();
    let canceled = queue(&mut state, "hello", Action::Build, &inputs("c1"));
    state.add_trigger("hello").unwrap();
    assert_eq!(
        state.recorded().unwrap().images["hello"].pending_triggers,
        1
    );
    state.finish(canceled.id, Outcome::Canceled).unwrap();
    assert_eq!(
        state.recorded().unwrap().images["hello"].pending_triggers,
        2,
        "a canceled build gives its triggers back"
    );
    let build = queue(&mut state, "hello", Action::Build, &inputs("c1"));
    succeed(&mut state, &build, "sha256:out");
    assert_eq!(
        state.recorded().unwrap().images["hello"].pending_triggers,
        0
    );

    // A rebase does not claim triggers: they ask for a build.
    state.add_trigger("hello").unwrap();
    let rebase = queue(&mut state, "hello", Action::Rebase, &inputs("c1"));
    state.transition(rebase.id, BuildStatus::Rebasing).unwrap();
    state
        .finish(
            rebase.id,
            Outcome::Succeeded {
                output: digest("sha256:out2"),
                buildpacks_used: BTreeMap::new(),
                rebasable: true,
            },
        )
        .unwrap();
    assert_eq!(
        state.recorded().unwrap().images["hello"].pending_triggers,
        1
    );
}

#[test]
fn builds_left_running_by_a_dead_process_are_marked_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::open(dir.path()).unwrap();
    state.add_trigger("hello").unwrap();
    let build = queue(&mut state, "hello", Action::Build, &inputs("c1"));
    state
        .transition(build.id, BuildStatus::ResolvingSource)
        .unwrap();
    let done = queue(&mut state, "docs", Action::Build, &inputs("c1"));
    succeed(&mut state, &done, "sha256:docs");
    drop(state);

    let mut state = State::open(dir.path()).unwrap();
    let serial = state.serial().unwrap();
    let interrupted = state.mark_interrupted().unwrap();
    assert_eq!(interrupted.len(), 1);
    assert_eq!(interrupted[0].image, "hello");
    assert_eq!(interrupted[0].status, BuildStatus::Interrupted);
    assert!(state.serial().unwrap() > serial);
    let recorded = state.recorded().unwrap();
    assert!(
        recorded.images["hello"].last_build.is_none(),
        "an interrupted build is planned again"
    );
    assert_eq!(recorded.images["hello"].pending_triggers, 1);
    assert!(state.mark_interrupted().unwrap().is_empty());
    let serial = state.serial().unwrap();
    state.mark_interrupted().unwrap();
    assert_eq!(
        state.serial().unwrap(),
        serial,
        "nothing to repair, no write"
    );
}

#[test]
fn forget_drops_an_image_and_returns_its_logs() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::open(dir.path()).unwrap();
    let build = queue(&mut state, "hello", Action::Build, &inputs("c1"));
    succeed(&mut state, &build, "sha256:out");
    state.add_trigger("hello").unwrap();
    queue(&mut state, "docs", Action::Build, &inputs("c1"));
    let logs = state.forget("hello").unwrap();
    assert_eq!(logs, [dir.path().join("logs/hello/1.log")]);
    assert_eq!(state.images().unwrap(), ["docs"]);
    assert!(state.builds(Some("hello")).unwrap().is_empty());
    assert!(!state.recorded().unwrap().images.contains_key("hello"));
}

#[test]
fn history_keeps_the_newest_builds_of_each_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::open(dir.path()).unwrap();
    for n in 1..=4 {
        let build = queue(&mut state, "hello", Action::Build, &inputs("c1"));
        succeed(&mut state, &build, &format!("sha256:out{n}"));
        let failed = queue(&mut state, "hello", Action::Build, &inputs("c1"));
        state
            .finish(
                failed.id,
                Outcome::Failed {
                    message: "no".into(),
                    kind: FailureKind::Build,
                },
            )
            .unwrap();
    }
    let running = queue(&mut state, "hello", Action::Build, &inputs("c1"));
    let two = NonZeroU32::new(2).unwrap();
    let one = NonZeroU32::new(1).unwrap();
    let dropped = state.prune_history("hello", two, one).unwrap();
    assert_eq!(dropped.len(), 5, "{dropped:?}");
    let kept: Vec<u64> = state
        .builds(Some("hello"))
        .unwrap()
        .iter()
        .map(|b| b.number)
        .collect();
    // Succeeded: 1 3 5 7, failed: 2 4 6 8, running: 9.
    assert_eq!(kept, [5, 7, 8, running.number]);
    let serial = state.serial().unwrap();
    assert!(state.prune_history("hello", two, one).unwrap().is_empty());
    assert_eq!(state.serial().unwrap(), serial);
}

#[test]
fn two_handles_see_each_others_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = State::open(dir.path()).unwrap();
    let reader = State::open(dir.path()).unwrap();
    writer.add_trigger("hello").unwrap();
    assert_eq!(reader.serial().unwrap(), writer.serial().unwrap());
    assert_eq!(
        reader.recorded().unwrap().images["hello"].pending_triggers,
        1
    );
}

/// Commands started together (an apply and a `kpackd builds`) open a new state at once:
/// none may fail with "database is locked".
#[test]
fn many_opens_of_a_new_state_at_once_all_succeed() {
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
        let openers: Vec<_> = (0..6)
            .map(|_| {
                let dir = dir.path().to_path_buf();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    State::open(&dir).map(|s| s.lineage().to_string())
                })
            })
            .collect();
        let lineages: Vec<String> = openers
            .into_iter()
            .map(|t| t.join().unwrap().expect("the state opens"))
            .collect();
        assert!(lineages.iter().all(|l| *l == lineages[0]), "{lineages:?}");
    }
}

/// The SQL form of "has not ended" agrees with [`BuildStatus::is_end`] for every status.
#[test]
fn the_sql_running_condition_matches_is_end() {
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    for status in BuildStatus::ALL {
        let running: bool = conn
            .query_row(
                &format!("SELECT {RUNNING} FROM (SELECT ?1 AS status)"),
                [status.as_str()],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(running, !status.is_end(), "{status}");
    }
}

#[test]
fn one_build_and_the_last_success_are_read_without_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::open(dir.path()).unwrap();
    assert!(state.last_succeeded("hello").unwrap().is_none());
    let first = queue(&mut state, "hello", Action::Build, &inputs("c1"));
    succeed(&mut state, &first, "sha256:out1");
    let second = queue(&mut state, "hello", Action::Build, &inputs("c2"));
    succeed(&mut state, &second, "sha256:out2");
    let other = queue(&mut state, "docs", Action::Build, &inputs("c1"));
    succeed(&mut state, &other, "sha256:docs");
    let third = queue(&mut state, "hello", Action::Rebase, &inputs("c2"));
    state.transition(third.id, BuildStatus::Rebasing).unwrap();
    state
        .finish(
            third.id,
            Outcome::Failed {
                message: "registry said no".into(),
                kind: FailureKind::Build,
            },
        )
        .unwrap();

    let last = state.last_succeeded("hello").unwrap().unwrap();
    assert_eq!(
        (last.number, last.output.clone()),
        (2, Some(digest("sha256:out2")))
    );
    assert_eq!(last.log, dir.path().join("logs/hello/2.log"));
    assert_eq!(
        Some(&last),
        state
            .builds(Some("hello"))
            .unwrap()
            .iter()
            .rev()
            .find(|b| b.status == BuildStatus::Succeeded)
    );

    let read = state.build(third.id).unwrap();
    assert_eq!((read.image.as_str(), read.number), ("hello", 3));
    assert_eq!(read.status, BuildStatus::Failed);
    assert_eq!(read.log, dir.path().join("logs/hello/3.log"));
    let err = state.build(BuildId(9999)).unwrap_err();
    assert!(
        matches!(err, StateError::NoSuchBuild(BuildId(9999))),
        "{err}"
    );
}

/// A stored value that does not decode is reported with the record it belongs to, and
/// the value's error as the cause.
#[test]
fn a_value_that_does_not_decode_names_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::open(dir.path()).unwrap();
    let build = queue(&mut state, "hello", Action::Build, &inputs("c1"));
    state
        .conn
        .execute("UPDATE builds SET status = 'melted'", [])
        .unwrap();
    let err = state.build(build.id).unwrap_err();
    assert_eq!(
        err.to_string(),
        "read the recorded status of build hello #1"
    );
    assert!(matches!(err, StateError::Corrupt { what: "status", .. }));
    state
        .conn
        .execute("UPDATE builds SET status = 'queued', inputs = '{'", [])
        .unwrap();
    let err = state.builds(Some("hello")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "read the recorded inputs of build hello #1"
    );
}
