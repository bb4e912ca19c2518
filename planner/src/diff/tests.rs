//! The rebuild rules (docs/concepts.md), one row each: a world where image "hello" was built from
//! exactly what is upstream now, one edit to it, and the action and reasons expected.

use super::*;
use crate::plan::{BuilderAction, BuilderChange};

/// A digest of the constants below.
fn d(digest: &str) -> Digest {
    Digest::parse(digest).expect("a valid digest")
}

const C1: &str = "3f2a9c1e5b7d4a6f8e0c2b4d6f8a0c2e4b6d8f0a";
const C2: &str = "8d04e77a1c3e5f7b9d1f3a5c7e9b1d3f5a7c9e1b";
const RUN1: &str = "sha256:1a2b0000000000000000000000000000000000000000000000000000000000aa";
const RUN2: &str = "sha256:9f8e0000000000000000000000000000000000000000000000000000000000bb";
const BUILD1: &str = "sha256:b111000000000000000000000000000000000000000000000000000000000001";
const BUILD2: &str = "sha256:b222000000000000000000000000000000000000000000000000000000000002";
const PY1: &str = "sha256:0a01000000000000000000000000000000000000000000000000000000000001";
const PY2: &str = "sha256:0a02000000000000000000000000000000000000000000000000000000000002";
const NODE: &str = "sha256:0b01000000000000000000000000000000000000000000000000000000000001";
const OUT: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

const PYTHON: &str = "examples/python@0.1.0";
const NODEJS: &str = "examples/node@1.0.0";
const SOURCE: &str = "https://github.com/example/hello.git#main";

/// Desired, observed and recorded for one image, "hello", built from all of it.
struct World {
    desired: Desired,
    observed: Observed,
    recorded: Recorded,
}

fn linux(arch: &str) -> Target {
    Target {
        os: "linux".into(),
        arch: arch.into(),
        variant: None,
    }
}

fn world() -> World {
    let desired = Desired {
        image: "hello".into(),
        config: "sha256:c0f1".into(),
        source: SOURCE.into(),
        builder: "default".into(),
        stack: StackKey::stack("bookworm"),
        stack_id: "io.kpackd.stacks.bookworm".into(),
        target: linux("amd64"),
        buildpacks: BTreeMap::from([(PYTHON.into(), d(PY1)), (NODEJS.into(), d(NODE))]),
        rebuild_on: Reason::ALL.into_iter().collect(),
        image_buildpacks: Vec::new(),
    };
    let observed = Observed {
        run_images: BTreeMap::from([(StackKey::stack("bookworm"), d(RUN1))]),
        build_images: BTreeMap::from([(StackKey::stack("bookworm"), d(BUILD1))]),
        sources: BTreeMap::from([(SOURCE.into(), SourceVersion::Commit(C1.into()))]),
        failures: Vec::new(),
    };
    let inputs = Inputs {
        source: C1.into(),
        run_image: d(RUN1),
        build_image: d(BUILD1),
        buildpacks: desired.buildpacks.clone(),
        config: desired.config.clone(),
        builder: desired.builder.clone(),
        stack: desired.stack.clone(),
        stack_id: desired.stack_id.clone(),
        target: desired.target.clone(),
        last_image: None,
        image_buildpacks: Vec::new(),
    };
    let last = RecordedBuild {
        number: 3,
        action: Action::Build,
        outcome: BuildOutcome::Succeeded,
        inputs,
        buildpacks_used: Some(BTreeMap::from([(PYTHON.into(), d(PY1))])),
        rebasable: true,
        output: Some(d(OUT)),
        failure: None,
    };
    let recorded = Recorded {
        lineage: "lineage-1".into(),
        serial: 7,
        images: BTreeMap::from([(
            "hello".into(),
            RecordedImage {
                last_build: Some(last),
                pending_triggers: 0,
            },
        )]),
        builders: BTreeMap::new(),
    };
    World {
        desired,
        observed,
        recorded,
    }
}

impl World {
    fn last(&mut self) -> &mut RecordedBuild {
        self.recorded
            .images
            .get_mut("hello")
            .unwrap()
            .last_build
            .as_mut()
            .unwrap()
    }
    fn never_built(&mut self) {
        self.recorded.images.clear();
    }
    fn last_failed(&mut self) {
        self.failed(FailureKind::Build, 0);
    }
    /// The last build failed outside the build, the `streak`-th time in a row.
    fn infra_failed(&mut self, streak: u32) {
        self.failed(FailureKind::Infrastructure, streak);
    }
    fn failed(&mut self, kind: FailureKind, streak: u32) {
        let last = self.last();
        last.outcome = BuildOutcome::Failed;
        last.buildpacks_used = None;
        last.output = None;
        last.failure = Some(RecordedFailure {
            step: "building".into(),
            message: "it broke".into(),
            kind,
            infrastructure_failures: streak,
            finished_at: 1_700_000_000,
        });
    }
    fn config(&mut self) {
        self.desired.config = "sha256:c0f2".into();
    }
    fn builder(&mut self) {
        self.desired.config = "sha256:c0f3".into();
        self.desired.builder = "paketo".into();
    }
    fn commit(&mut self) {
        self.observed
            .sources
            .insert(SOURCE.into(), SourceVersion::Commit(C2.into()));
    }
    fn python_edited(&mut self) {
        self.desired.buildpacks.insert(PYTHON.into(), d(PY2));
    }
    fn python_gone(&mut self) {
        self.desired.buildpacks.remove(PYTHON);
    }
    fn node_edited(&mut self) {
        self.desired.buildpacks.insert(NODEJS.into(), d(PY2));
    }
    fn buildpack_added(&mut self) {
        self.desired
            .buildpacks
            .insert("examples/go@0.3.0".into(), d(PY2));
    }
    fn run_image(&mut self) {
        self.observed
            .run_images
            .insert(StackKey::stack("bookworm"), d(RUN2));
    }
    fn build_image(&mut self) {
        self.observed
            .build_images
            .insert(StackKey::stack("bookworm"), d(BUILD2));
    }
    fn trigger(&mut self) {
        self.recorded
            .images
            .entry("hello".into())
            .or_default()
            .pending_triggers = 2;
    }
    fn opt_out(&mut self, reason: Reason) {
        self.desired.rebuild_on.remove(&reason);
    }
    fn plan(&self) -> Plan {
        diff(
            std::slice::from_ref(&self.desired),
            &self.observed,
            &self.recorded,
        )
    }
}

use Reason::{
    Buildpack as BUILDPACK, Commit as COMMIT, Config as CONFIG, Retry as RETRY, Stack as STACK,
    Trigger as TRIGGER,
};

/// A row: what it is, the edit to the world, the action and reasons expected.
type Row = (&'static str, fn(&mut World), Action, &'static [Reason]);

#[test]
fn the_rules_one_row_each() {
    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        ("nothing changed",                     |_| {},                                         Action::Noop,    &[]),
        ("first build",                         |w| w.never_built(),                            Action::Build,   &[CONFIG]),
        ("config changed",                      |w| w.config(),                                 Action::Build,   &[CONFIG]),
        ("builder changed (kpack ignores it)",  |w| w.builder(),                                Action::Build,   &[CONFIG]),
        ("new commit",                          |w| w.commit(),                                 Action::Build,   &[COMMIT]),
        ("sub-path tree unchanged",             |w| { w.observed.sources.insert(SOURCE.into(), SourceVersion::Tree(C1.into())); }, Action::Noop, &[]),
        ("used buildpack edited, same version", |w| w.python_edited(),                          Action::Build,   &[BUILDPACK]),
        ("used buildpack gone from builder",    |w| w.python_gone(),                            Action::Build,   &[BUILDPACK]),
        ("unused buildpack edited",             |w| w.node_edited(),                            Action::Noop,    &[]),
        ("new unused buildpack",                |w| w.buildpack_added(),                        Action::Noop,    &[]),
        ("run image patched",                   |w| w.run_image(),                              Action::Rebase,  &[STACK]),
        ("trigger",                             |w| w.trigger(),                                Action::Build,   &[TRIGGER]),
        ("build image alone",                   |w| w.build_image(),                            Action::Noop,    &[]),
        ("build image and commit",              |w| { w.build_image(); w.commit(); },           Action::Build,   &[COMMIT]),
        ("STACK + COMMIT is a build",           |w| { w.run_image(); w.commit(); },             Action::Build,   &[COMMIT, STACK]),
        ("STACK + BUILDPACK is a build",        |w| { w.run_image(); w.python_edited(); },      Action::Build,   &[BUILDPACK, STACK]),
        ("STACK + TRIGGER is a build",          |w| { w.run_image(); w.trigger(); },            Action::Build,   &[STACK, TRIGGER]),
        ("STACK, not rebasable",                |w| { w.run_image(); w.last().rebasable = false; }, Action::Build, &[STACK]),
        ("STACK, stack id changed",             |w| { w.run_image(); w.desired.stack_id = "io.other".into(); }, Action::Build, &[STACK]),
        ("STACK, target changed",               |w| { w.run_image(); w.desired.target = linux("arm64"); }, Action::Build, &[STACK]),
        ("STACK after a failed build",          |w| { w.last_failed(); w.run_image(); },        Action::Build,   &[STACK]),
        ("STACK after a rebase",                |w| { w.last().action = Action::Rebase; w.run_image(); }, Action::Rebase, &[STACK]),
        ("every reason",                        |w| { w.config(); w.commit(); w.python_edited(); w.run_image(); w.trigger(); }, Action::Build, &[CONFIG, COMMIT, BUILDPACK, STACK, TRIGGER]),
        ("first build, triggered",              |w| { w.never_built(); w.trigger(); },          Action::Build,   &[CONFIG, TRIGGER]),
        // A failed build is retried exactly when something it was built from changes.
        ("failed, nothing changed: no loop",    |w| w.last_failed(),                            Action::Noop,    &[]),
        ("failed, commit",                      |w| { w.last_failed(); w.commit(); },           Action::Build,   &[COMMIT]),
        ("failed, config",                      |w| { w.last_failed(); w.config(); },           Action::Build,   &[CONFIG]),
        ("failed, buildpack fixed (kpack #1198)", |w| { w.last_failed(); w.python_edited(); },  Action::Build,   &[BUILDPACK]),
        ("failed, any buildpack edited",        |w| { w.last_failed(); w.node_edited(); },      Action::Build,   &[BUILDPACK]),
        ("failed, buildpack added",             |w| { w.last_failed(); w.buildpack_added(); },  Action::Build,   &[BUILDPACK]),
        ("failed, trigger",                     |w| { w.last_failed(); w.trigger(); },          Action::Build,   &[TRIGGER]),
        // rebuild-on drops the reasons the user opted out of.
        ("opt-out COMMIT, new commit",          |w| { w.opt_out(COMMIT); w.commit(); },         Action::Noop,    &[]),
        ("opt-out CONFIG, config changed",      |w| { w.opt_out(CONFIG); w.config(); },         Action::Noop,    &[]),
        ("opt-out BUILDPACK, buildpack edited", |w| { w.opt_out(BUILDPACK); w.python_edited(); }, Action::Noop,  &[]),
        ("opt-out STACK, run image patched",    |w| { w.opt_out(STACK); w.run_image(); },       Action::Noop,    &[]),
        ("opt-out STACK, STACK + COMMIT",       |w| { w.opt_out(STACK); w.run_image(); w.commit(); }, Action::Build, &[COMMIT]),
        ("opt-out COMMIT, STACK + COMMIT",      |w| { w.opt_out(COMMIT); w.run_image(); w.commit(); }, Action::Rebase, &[STACK]),
        ("opt-out CONFIG, first build",         |w| { w.opt_out(CONFIG); w.never_built(); },    Action::Build,   &[CONFIG]),
        ("opt-out everything, trigger",         |w| { w.desired.rebuild_on.clear(); w.trigger(); }, Action::Build, &[TRIGGER]),
        // A failure outside the build is retried, RETRY_LIMIT times in a row.
        ("failed outside the build",            |w| w.infra_failed(1),                          Action::Build,   &[RETRY]),
        ("failed outside, last retry",          |w| w.infra_failed(RETRY_LIMIT),                Action::Build,   &[RETRY]),
        ("failed outside, retries spent",       |w| w.infra_failed(RETRY_LIMIT + 1),            Action::Noop,    &[]),
        ("failed outside, and a commit",        |w| { w.infra_failed(1); w.commit(); },         Action::Build,   &[COMMIT, RETRY]),
        ("failed outside, retries spent, commit", |w| { w.infra_failed(9); w.commit(); },       Action::Build,   &[COMMIT]),
        ("failed rebase outside the build",     |w| { w.last().action = Action::Rebase; w.infra_failed(1); }, Action::Rebase, &[RETRY]),
        ("opt-out everything, retry",           |w| { w.desired.rebuild_on.clear(); w.infra_failed(2); }, Action::Build, &[RETRY]),
    ];
    let mut failures = Vec::new();
    for (name, edit, action, reasons) in rows {
        let mut w = world();
        edit(&mut w);
        let plan = w.plan();
        let change = &plan.changes[0];
        if change.action != action || change.reasons != reasons {
            failures.push(format!(
                "{name}: expected {action} {reasons:?}, got {} {:?}",
                change.action, change.reasons
            ));
        }
        for reason in &change.reasons {
            if !change.details.iter().any(|d| d.reason == *reason) {
                failures.push(format!("{name}: no detail for {reason}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn details(plan: &Plan) -> Vec<(Reason, String, Option<String>, Option<String>)> {
    plan.changes[0]
        .details
        .iter()
        .map(|d| (d.reason, d.what.clone(), d.old.clone(), d.new.clone()))
        .collect()
}

#[test]
fn details_say_what_changed_from_what_to_what() {
    let mut w = world();
    w.commit();
    w.python_gone();
    assert_eq!(
        details(&w.plan()),
        [
            (
                COMMIT,
                "source commit".into(),
                Some(C1.into()),
                Some(C2.into())
            ),
            (
                BUILDPACK,
                format!("buildpack {PYTHON}"),
                Some(PY1.into()),
                Some("gone from the builder".into())
            ),
        ]
    );

    let mut w = world();
    w.never_built();
    assert_eq!(
        details(&w.plan()),
        [(CONFIG, "first build".into(), None, None)]
    );

    let mut w = world();
    w.run_image();
    w.desired.stack_id = "io.other".into();
    assert_eq!(
        details(&w.plan()),
        [
            (
                STACK,
                "run image".into(),
                Some(RUN1.into()),
                Some(RUN2.into())
            ),
            (
                STACK,
                "stack id".into(),
                Some("io.kpackd.stacks.bookworm".into()),
                Some("io.other".into())
            ),
        ]
    );

    let mut w = world();
    w.builder();
    let plan = w.plan();
    assert_eq!(plan.changes[0].details[1].what, "builder");
}

#[test]
fn a_build_pins_what_is_upstream_now() {
    let mut w = world();
    w.commit();
    w.run_image();
    w.build_image();
    w.buildpack_added();
    let plan = w.plan();
    let inputs = plan.changes[0].inputs.as_ref().unwrap();
    assert_eq!(inputs.source, C2);
    assert_eq!(inputs.run_image, d(RUN2));
    assert_eq!(inputs.build_image, d(BUILD2));
    assert_eq!(inputs.buildpacks, w.desired.buildpacks);
    assert_eq!(inputs.last_image, None);
    assert_eq!(plan.changes[0].last_build, Some(3));
}

#[test]
fn a_rebase_keeps_the_last_build_but_its_run_image() {
    let mut w = world();
    w.opt_out(COMMIT);
    w.commit();
    w.run_image();
    let plan = w.plan();
    let inputs = plan.changes[0].inputs.as_ref().unwrap();
    assert_eq!(plan.changes[0].action, Action::Rebase);
    assert_eq!(inputs.run_image, d(RUN2));
    assert_eq!(inputs.source, C1, "the opted-out commit is not built");
    assert_eq!(inputs.last_image, Some(d(OUT)));
    assert_eq!(
        inputs.buildpacks,
        BTreeMap::from([(PYTHON.to_string(), d(PY1))])
    );
}

#[test]
fn a_build_image_change_alone_is_a_note_under_its_stack() {
    let mut w = world();
    w.build_image();
    let plan = w.plan();
    assert_eq!(plan.changes[0].action, Action::Noop);
    assert_eq!(
        plan.notes,
        [Note {
            stack: StackKey::stack("bookworm"),
            what: "build image".into(),
            old: d(BUILD1),
            new: d(BUILD2),
            images: vec!["hello".into()],
        }]
    );
    w.commit();
    assert!(
        w.plan().notes.is_empty(),
        "the build uses the new build image"
    );
}

#[test]
fn images_no_longer_desired_are_forgotten() {
    let w = world();
    let plan = diff(&[], &w.observed, &w.recorded);
    assert_eq!(plan.changes.len(), 1);
    assert_eq!(plan.changes[0].action, Action::Forget);
    assert_eq!(plan.changes[0].image, "hello");
    assert_eq!(plan.changes[0].inputs, None);
    assert_eq!(plan.summary.forget, 1);
}

#[test]
fn a_failed_upstream_blocks_its_dependents_only() {
    let mut w = world();
    let mut other = w.desired.clone();
    other.image = "docs".into();
    other.stack = StackKey::stack("jammy");
    w.observed
        .run_images
        .insert(StackKey::stack("jammy"), d(RUN2));
    w.observed
        .build_images
        .insert(StackKey::stack("jammy"), d(BUILD2));
    w.observed.run_images.remove(&StackKey::stack("bookworm"));
    let failure = UpstreamFailure {
        upstream: Upstream::RunImage {
            stack: StackKey::stack("bookworm"),
        },
        error: "manifest unknown".into(),
    };
    w.observed.failures.push(failure.clone());
    w.observed.failures.push(failure.clone());
    let plan = diff(&[w.desired.clone(), other], &w.observed, &w.recorded);
    let docs = &plan.changes[0];
    let hello = &plan.changes[1];
    assert_eq!((docs.image.as_str(), docs.action), ("docs", Action::Build));
    assert_eq!(
        (hello.image.as_str(), hello.action),
        ("hello", Action::Blocked)
    );
    assert_eq!(hello.blocked_by, std::slice::from_ref(&failure));
    assert_eq!(hello.inputs, None);
    assert_eq!(plan.errors, [failure], "each failed upstream reported once");
    assert_eq!(plan.summary.blocked, 1);
    assert_eq!(plan.summary.build, 1);
}

#[test]
fn an_upstream_neither_resolved_nor_failed_blocks() {
    let mut w = world();
    w.observed.sources.clear();
    let plan = w.plan();
    assert_eq!(plan.changes[0].action, Action::Blocked);
    assert_eq!(
        plan.changes[0].blocked_by,
        [UpstreamFailure {
            upstream: Upstream::Source {
                source: SOURCE.into()
            },
            error: "not resolved".into(),
        }]
    );
}

#[test]
fn a_builders_failed_buildpacks_block_its_images() {
    let mut w = world();
    w.observed.failures.push(UpstreamFailure {
        upstream: Upstream::Buildpacks {
            builder: "default".into(),
        },
        error: "examples/buildpacks/python: no buildpack.toml".into(),
    });
    assert_eq!(w.plan().changes[0].action, Action::Blocked);
}

#[test]
fn the_plan_carries_the_state_it_was_made_against() {
    let plan = world().plan();
    assert_eq!(plan.format_version, 1);
    assert_eq!(plan.lineage, "lineage-1");
    assert_eq!(plan.serial, 7);
    assert_eq!(
        plan.summary,
        Summary {
            noop: 1,
            ..Summary::default()
        }
    );
    assert!(!plan.has_changes());
}

#[test]
fn a_failed_image_that_is_not_built_again_is_listed_as_failing() {
    let mut w = world();
    assert!(w.plan().failing.is_empty(), "nothing fails");

    w.last_failed();
    let plan = w.plan();
    assert_eq!(plan.changes[0].action, Action::Noop);
    assert_eq!(
        plan.failing,
        vec![Failing {
            image: "hello".into(),
            build: 3,
            step: "building".into(),
            error: "it broke".into(),
            kind: FailureKind::Build,
            retries: 0,
        }]
    );

    // Being retried: not listed; retries spent: listed, with how many.
    w.infra_failed(1);
    assert!(w.plan().failing.is_empty());
    w.infra_failed(RETRY_LIMIT + 1);
    let failing = &w.plan().failing[0];
    assert_eq!(
        (failing.kind, failing.retries),
        (FailureKind::Infrastructure, RETRY_LIMIT)
    );

    // Built again for another reason: not listed.
    w.commit();
    assert!(w.plan().failing.is_empty());
}

#[test]
fn a_failed_rebase_is_retried_as_the_same_rebase() {
    let mut w = world();
    w.last().action = Action::Rebase;
    w.last().inputs.last_image = Some(d(OUT));
    w.infra_failed(1);
    let plan = w.plan();
    assert_eq!(plan.changes[0].inputs.as_ref(), Some(&w.last().inputs));
}

#[test]
fn watch_waits_longer_after_each_failure_outside_the_build() {
    let mut w = world();
    let due = |w: &mut World| {
        let f = w.last().failure.clone().unwrap();
        f.retry_due() - f.finished_at
    };
    w.infra_failed(1);
    assert_eq!(due(&mut w), 60);
    w.infra_failed(2);
    assert_eq!(due(&mut w), 120);
    w.infra_failed(3);
    assert_eq!(due(&mut w), 240);
}

/// The image's own group (`buildpacks`) is configuration: a change of it is CONFIG, and
/// the plan names the group before and after.
#[test]
fn a_change_of_the_image_s_buildpacks_is_named() {
    let mut w = world();
    w.desired.config = "sha256:c0f4".into();
    w.desired.image_buildpacks = vec!["examples/python".into(), "examples/node@1.0.0".into()];
    let plan = w.plan();
    let change = &plan.changes[0];
    assert_eq!(change.action, Action::Build);
    assert_eq!(change.reasons, [CONFIG]);
    let named = change
        .details
        .iter()
        .find(|d| d.what == "buildpacks")
        .expect("a buildpacks detail");
    assert_eq!(named.old.as_deref(), Some("the builder's order"));
    assert_eq!(
        named.new.as_deref(),
        Some("examples/python, examples/node@1.0.0")
    );
    let json = serde_json::to_value(&change.inputs).unwrap();
    assert_eq!(
        json["image_buildpacks"],
        serde_json::json!(["examples/python", "examples/node@1.0.0"])
    );
    // Without a group of its own, the inputs read as they always did.
    let mut plain = world();
    plain.never_built();
    let plain = serde_json::to_value(plain.plan()).unwrap();
    assert!(plain["changes"][0]["inputs"].is_object());
    assert!(!plain.to_string().contains("image_buildpacks"));
}

const LIFECYCLE1: &str = "sha256:1c01000000000000000000000000000000000000000000000000000000000001";
const LIFECYCLE2: &str = "sha256:1c02000000000000000000000000000000000000000000000000000000000002";
const ENTRY1: &str = "sha256:e001000000000000000000000000000000000000000000000000000000000001";
const ENTRY2: &str = "sha256:e002000000000000000000000000000000000000000000000000000000000002";

/// Desired, observed and recorded for one published builder, "default", last published
/// from all of it.
struct BuilderWorld {
    desired: DesiredBuilder,
    observed: Observed,
    recorded: BTreeMap<String, RecordedPublish>,
}

fn builder_world() -> BuilderWorld {
    let desired = DesiredBuilder {
        builder: "default".into(),
        tag: "registry.example.com/builders/default".into(),
        stack: StackKey::stack("bookworm"),
        stack_id: "io.kpackd.stacks.bookworm".into(),
        run_image: "registry.example.com/stacks/run".into(),
        run_image_mirrors: Vec::new(),
        order: vec![
            vec!["examples/python".into()],
            vec!["examples/node?".into()],
        ],
        buildpacks: BTreeMap::from([(PYTHON.into(), d(PY1)), (NODEJS.into(), d(NODE))]),
        lifecycle: true,
        lifecycle_image: Some(d(LIFECYCLE1)),
        entrypoint: Some(d(ENTRY1)),
    };
    let observed = world().observed;
    let inputs = diff_builders(std::slice::from_ref(&desired), &observed, &BTreeMap::new())[0]
        .inputs
        .clone()
        .expect("pinned");
    let recorded = BTreeMap::from([(
        "default".into(),
        RecordedPublish {
            number: 2,
            inputs,
            digest: d(OUT),
        },
    )]);
    BuilderWorld {
        desired,
        observed,
        recorded,
    }
}

impl BuilderWorld {
    fn plan(&self) -> BuilderChange {
        diff_builders(
            std::slice::from_ref(&self.desired),
            &self.observed,
            &self.recorded,
        )
        .remove(0)
    }
}

/// A builder row: what it is, the edit, the action, the reasons and the `what` of the
/// first detail.
type BuilderRow = (
    &'static str,
    fn(&mut BuilderWorld),
    BuilderAction,
    &'static [Reason],
    &'static str,
);

#[test]
fn the_publishing_rules_one_row_each() {
    use BuilderAction::{Blocked, Noop, Publish};
    #[rustfmt::skip]
    let rows: Vec<BuilderRow> = vec![
        ("nothing changed",                |_| {},                                                       Noop,    &[],          ""),
        ("first publish",                  |w| w.recorded.clear(),                                       Publish, &[CONFIG],    "first publish"),
        ("build image patched",            |w| { w.observed.build_images.insert(StackKey::stack("bookworm"), d(BUILD2)); }, Publish, &[STACK], "build image"),
        ("run image patched: not ours",    |w| { w.observed.run_images.insert(StackKey::stack("bookworm"), d(RUN2)); }, Noop, &[], ""),
        ("buildpack edited",               |w| { w.desired.buildpacks.insert(PYTHON.into(), d(PY2)); }, Publish, &[BUILDPACK], "buildpack examples/python@0.1.0"),
        ("buildpack added",                |w| { w.desired.buildpacks.insert("examples/go@0.3.0".into(), d(PY2)); }, Publish, &[BUILDPACK], "buildpack examples/go@0.3.0"),
        ("buildpack removed",              |w| { w.desired.buildpacks.remove(NODEJS); },                 Publish, &[BUILDPACK], "buildpack examples/node@1.0.0"),
        ("order changed",                  |w| w.desired.order.reverse(),                                Publish, &[CONFIG],    "order"),
        ("tag changed",                    |w| w.desired.tag = "registry.example.com/builders/other".into(), Publish, &[CONFIG], "tag"),
        ("run image renamed",              |w| w.desired.run_image = "registry.example.com/stacks/run2".into(), Publish, &[CONFIG], "run image"),
        ("run image mirror added",         |w| w.desired.run_image_mirrors.push("mirror.example.com/run".into()), Publish, &[CONFIG], "run image mirrors"),
        ("stack id changed",               |w| w.desired.stack_id = "io.other".into(),                   Publish, &[CONFIG],    "stack id"),
        ("lifecycle image moved",          |w| w.desired.lifecycle_image = Some(d(LIFECYCLE2)),      Publish, &[CONFIG],    "lifecycle image"),
        ("lifecycle image removed",        |w| { w.desired.lifecycle = false; w.desired.lifecycle_image = None; }, Publish, &[CONFIG], "lifecycle image"),
        ("entrypoint rebuilt",             |w| w.desired.entrypoint = Some(d(ENTRY2)),               Publish, &[CONFIG],    "entrypoint"),
        ("stack and buildpack",            |w| { w.observed.build_images.insert(StackKey::stack("bookworm"), d(BUILD2)); w.desired.buildpacks.insert(PYTHON.into(), d(PY2)); }, Publish, &[BUILDPACK, STACK], "buildpack examples/python@0.1.0"),
        ("build image failed: blocked",    |w| { w.observed.build_images.clear(); w.observed.failures.push(UpstreamFailure { upstream: Upstream::BuildImage { stack: StackKey::stack("bookworm") }, error: "unreachable".into() }); }, Blocked, &[], ""),
        ("buildpacks failed: blocked",     |w| w.observed.failures.push(UpstreamFailure { upstream: Upstream::Buildpacks { builder: "default".into() }, error: "no buildpack.toml".into() }), Blocked, &[], ""),
        ("lifecycle image unresolved",     |w| w.desired.lifecycle_image = None,                         Blocked, &[],          ""),
    ];
    let mut failures = Vec::new();
    for (name, edit, action, reasons, what) in rows {
        let mut w = builder_world();
        edit(&mut w);
        let change = w.plan();
        let first = change.details.first().map_or("", |d| d.what.as_str());
        if change.action != action || change.reasons != reasons || first != what {
            failures.push(format!(
                "{name}: expected {action} {reasons:?} `{what}`, got {} {:?} `{first}`",
                change.action, change.reasons
            ));
        }
        if (action == Blocked) == change.blocked_by.is_empty() {
            failures.push(format!("{name}: blocked_by {:?}", change.blocked_by));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A publish leaves the images alone: the image rules do not see builders at all.
#[test]
fn a_publish_does_not_make_images_rebuild() {
    let mut b = builder_world();
    b.recorded.clear();
    assert_eq!(b.plan().action, BuilderAction::Publish);
    assert_eq!(world().plan().changes[0].action, Action::Noop);
}

/// The plan's JSON lists builders apart from the images, only when there are some.
#[test]
fn builders_are_a_list_of_their_own_in_the_plan_json() {
    let mut plan = world().plan();
    let json = serde_json::to_value(&plan).unwrap();
    assert!(json.get("builders").is_none());
    let mut b = builder_world();
    b.recorded.clear();
    plan.builders = vec![b.plan()];
    assert!(plan.has_changes());
    let json = serde_json::to_value(&plan).unwrap();
    let builder = &json["builders"][0];
    assert_eq!(builder["builder"], "default");
    assert_eq!(builder["action"], "publish");
    assert_eq!(builder["tag"], "registry.example.com/builders/default");
    assert_eq!(builder["reasons"], serde_json::json!(["CONFIG"]));
    assert_eq!(builder["inputs"]["build_image"], BUILD1);
    assert_eq!(json["changes"].as_array().map(Vec::len), Some(1));
    let back: Plan = serde_json::from_value(json).unwrap();
    assert_eq!(back, plan);
}
