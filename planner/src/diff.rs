//! The rebuild rules: which images need a build, a rebase, nothing, or to be forgotten,
//! decided from what kpack.toml wants (`Desired`), what the upstreams are now
//! (`Observed`) and what was built before (`Recorded`). Pure: plain values in, a Plan out.
//!
//! Every reason compares with the last build that ran to completion, whether it
//! succeeded or failed. A failed build recorded the inputs it tried, so it is tried again
//! exactly when one of them changes (kpack skips BUILDPACK and STACK after a failure, so
//! a fixed builder never retries: kpack #1198), and never in a loop on unchanged inputs.
//! Canceled and interrupted builds did not run to completion: they are not compared with.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use imageref::{Digest, Target};

use crate::plan::{
    Action, Change, Detail, Failing, Inputs, Note, Plan, StackKey, Summary, Upstream,
    UpstreamFailure, FORMAT_VERSION,
};
use crate::Reason;

mod builder;

pub use builder::{diff_builders, DesiredBuilder, RecordedPublish};

/// What kpack.toml wants for one image, with the engine's view of its builder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub image: String,
    /// The hash of the image's configuration (env, source location, builder,
    /// default process, network), computed by the engine.
    pub config: String,
    /// The source's identity: its location, revision and sub-path. The key of its
    /// version in [`Observed::sources`]; images sharing a source share one lookup.
    pub source: String,
    pub builder: String,
    pub stack: StackKey,
    /// The stack id the image's stack declares now.
    pub stack_id: String,
    pub target: Target,
    /// The buildpacks the builder provides now: `id@version` → content digest.
    pub buildpacks: BTreeMap<String, Digest>,
    /// The reasons that may cause work for this image (kpack.toml's `rebuild-on`).
    pub rebuild_on: BTreeSet<Reason>,
    /// The image's own group (kpack.toml `buildpacks`), `id` or `id@version` each;
    /// empty: the builder's order. Part of `config`; kept to name the change.
    #[serde(default)]
    pub image_buildpacks: Vec<String>,
}

/// What the engine found when it resolved each distinct upstream, once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// Stack name → manifest digest of its run image.
    pub run_images: BTreeMap<StackKey, Digest>,
    /// Stack name → manifest digest of its build image.
    pub build_images: BTreeMap<StackKey, Digest>,
    /// Source identity → its version now.
    pub sources: BTreeMap<String, SourceVersion>,
    /// Upstreams that could not be resolved: their dependents are blocked.
    pub failures: Vec<UpstreamFailure>,
}

/// The version of a source, by the kind of source it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "kebab-case")]
pub enum SourceVersion {
    /// A git commit id.
    Commit(String),
    /// The git tree id of the sub-path: commits touching nothing under it are no change.
    Tree(String),
    /// A sha256 over a directory's files or a downloaded archive.
    Content(String),
    /// The manifest digest of a source image.
    Image(Digest),
}

impl SourceVersion {
    /// The version as the plan's inputs record it.
    pub fn id(&self) -> String {
        match self {
            SourceVersion::Commit(id) | SourceVersion::Tree(id) | SourceVersion::Content(id) => {
                id.clone()
            }
            SourceVersion::Image(digest) => digest.to_string(),
        }
    }

    /// How the plan names a change of this version.
    fn what(&self) -> &'static str {
        match self {
            SourceVersion::Commit(_) => "source commit",
            SourceVersion::Tree(_) => "source tree",
            SourceVersion::Content(_) => "source content",
            SourceVersion::Image(_) => "source image",
        }
    }
}

/// What the state records, as far as the rules need it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    pub lineage: String,
    pub serial: u64,
    /// Every image the state knows of, by name.
    pub images: BTreeMap<String, RecordedImage>,
    /// The last successful publish of each builder, by name.
    #[serde(default)]
    pub builders: BTreeMap<String, RecordedPublish>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedImage {
    /// The last build that ran to completion: succeeded or failed.
    pub last_build: Option<RecordedBuild>,
    /// `kpackd trigger` requests not yet consumed by a build.
    pub pending_triggers: u32,
}

/// A build or rebase that ran to completion, with the inputs it was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedBuild {
    pub number: u64,
    /// `build` or `rebase`.
    pub action: Action,
    pub outcome: BuildOutcome,
    pub inputs: Inputs,
    /// The buildpacks detection chose, `id@version` → content digest; known after a
    /// success. A failed build is compared by every buildpack it was given instead.
    pub buildpacks_used: Option<BTreeMap<String, Digest>>,
    /// Whether the image may be rebased (label `io.buildpacks.rebasable`).
    pub rebasable: bool,
    /// The manifest digest of the image made.
    pub output: Option<Digest>,
    /// Why a failed build failed; absent after a success.
    #[serde(default)]
    pub failure: Option<RecordedFailure>,
}

/// How many times in a row a build that failed for a cause outside the build is tried
/// again (reason `RETRY`) before kpackd waits for an input to change.
pub const RETRY_LIMIT: u32 = 3;

/// Why a build failed, as far as the rules need it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedFailure {
    /// The step it failed in (`resolving-source`, `building`, …).
    pub step: String,
    /// The error, one line per cause.
    pub message: String,
    pub kind: FailureKind,
    /// How many builds in a row, ending with this one, failed for a cause outside the
    /// build; 0 when this failure is the build's own.
    pub infrastructure_failures: u32,
    /// When the build ended, in seconds since the Unix epoch.
    pub finished_at: i64,
}

/// Whose fault a failure is: it decides whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureKind {
    /// The build's own: a buildpack failed, no group passed detection, an invalid
    /// buildpack. The same inputs fail the same way, so only a change of an input or
    /// `kpackd trigger` builds again.
    Build,
    /// Outside the build: the network, a registry, the disk, the sandbox, the image's
    /// `timeout`. Tried again (reason `RETRY`).
    Infrastructure,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Build => "build",
            FailureKind::Infrastructure => "infrastructure",
        }
    }
}

impl RecordedFailure {
    /// When `kpackd watch` may retry: the wait doubles from one minute with each
    /// failure in a row (1, 2, 4 minutes), in seconds since the Unix epoch. `apply`
    /// retries at once: someone asked.
    pub fn retry_due(&self) -> i64 {
        let doublings = self
            .infrastructure_failures
            .saturating_sub(1)
            .min(RETRY_LIMIT);
        self.finished_at.saturating_add(60 << doublings)
    }

    /// The retry this failure earns, if any: its number (1 for the first).
    pub fn retry(&self) -> Option<u32> {
        (self.kind == FailureKind::Infrastructure && self.infrastructure_failures <= RETRY_LIMIT)
            .then_some(self.infrastructure_failures)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildOutcome {
    Succeeded,
    Failed,
}

/// Decides what to do with every image. See the module documentation and docs/design.md.
pub fn diff(desired: &[Desired], observed: &Observed, recorded: &Recorded) -> Plan {
    let mut changes = Vec::new();
    let mut failing_images = Vec::new();
    let mut notes: BTreeMap<(StackKey, Digest, Digest), Vec<String>> = BTreeMap::new();
    for image in desired {
        let record = recorded.images.get(&image.image);
        let last = record.and_then(|r| r.last_build.as_ref());
        let pins = match pin(image, observed) {
            Ok(pins) => pins,
            Err(blocked_by) => {
                changes.push(Change {
                    image: image.image.clone(),
                    action: Action::Blocked,
                    reasons: Vec::new(),
                    details: Vec::new(),
                    inputs: None,
                    last_build: last.map(|b| b.number),
                    blocked_by,
                });
                continue;
            }
        };
        let build_image = pins.inputs.build_image.clone();
        let triggers = record.map_or(0, |r| r.pending_triggers);
        let change = plan_image(image, pins, last, triggers);
        if let Some(failing) = last.and_then(|l| still_failing(&change, l)) {
            failing_images.push(failing);
        }
        // A build image change alone is no reason for work (as in kpack), but the
        // reader should know the next build will differ.
        if let Some(last) = last {
            if matches!(change.action, Action::Noop | Action::Rebase)
                && last.inputs.stack == image.stack
                && last.inputs.build_image != build_image
            {
                notes
                    .entry((
                        image.stack.clone(),
                        last.inputs.build_image.clone(),
                        build_image,
                    ))
                    .or_default()
                    .push(image.image.clone());
            }
        }
        changes.push(change);
    }
    let wanted: BTreeSet<&str> = desired.iter().map(|d| d.image.as_str()).collect();
    for (name, record) in &recorded.images {
        if !wanted.contains(name.as_str()) {
            changes.push(Change {
                image: name.clone(),
                action: Action::Forget,
                reasons: Vec::new(),
                details: Vec::new(),
                inputs: None,
                last_build: record.last_build.as_ref().map(|b| b.number),
                blocked_by: Vec::new(),
            });
        }
    }
    changes.sort_by(|a, b| a.image.cmp(&b.image));
    let mut errors = observed.failures.clone();
    errors.sort();
    errors.dedup();
    Plan {
        format_version: FORMAT_VERSION,
        lineage: recorded.lineage.clone(),
        serial: recorded.serial,
        config: String::new(),
        summary: Summary::of(&changes),
        changes,
        errors,
        notes: notes
            .into_iter()
            .map(|((stack, old, new), images)| Note {
                stack,
                what: "build image".to_string(),
                old,
                new,
                images,
            })
            .collect(),
        failing: failing_images,
        builders: Vec::new(),
    }
}

/// An image whose last build failed and that this plan does not build again.
fn still_failing(change: &Change, last: &RecordedBuild) -> Option<Failing> {
    let failure = last.failure.as_ref()?;
    (change.action == Action::Noop).then(|| Failing {
        image: change.image.clone(),
        build: last.number,
        step: failure.step.clone(),
        error: failure.message.clone(),
        kind: failure.kind,
        retries: failure.infrastructure_failures.saturating_sub(1),
    })
}

/// The inputs a build would use now, or the failed upstreams that prevent knowing them.
fn pin(image: &Desired, observed: &Observed) -> Result<Pins, Vec<UpstreamFailure>> {
    let source = observed.sources.get(&image.source);
    let build_image = observed.build_images.get(&image.stack);
    let run_image = observed.run_images.get(&image.stack);
    let needed = [
        (
            Upstream::Source {
                source: image.source.clone(),
            },
            source.is_some(),
        ),
        (
            Upstream::Buildpacks {
                builder: image.builder.clone(),
            },
            true,
        ),
        (
            Upstream::BuildImage {
                stack: image.stack.clone(),
            },
            build_image.is_some(),
        ),
        (
            Upstream::RunImage {
                stack: image.stack.clone(),
            },
            run_image.is_some(),
        ),
    ];
    let mut blocked_by = Vec::new();
    for (upstream, found) in needed {
        let failed = observed.failures.iter().filter(|f| f.upstream == upstream);
        let before = blocked_by.len();
        blocked_by.extend(failed.cloned());
        if blocked_by.len() == before && !found {
            blocked_by.push(UpstreamFailure {
                upstream,
                error: "not resolved".to_string(),
            });
        }
    }
    match (source, build_image, run_image) {
        (Some(source), Some(build_image), Some(run_image)) if blocked_by.is_empty() => Ok(Pins {
            inputs: Inputs {
                source: source.id(),
                run_image: run_image.clone(),
                build_image: build_image.clone(),
                buildpacks: image.buildpacks.clone(),
                config: image.config.clone(),
                builder: image.builder.clone(),
                stack: image.stack.clone(),
                stack_id: image.stack_id.clone(),
                target: image.target.clone(),
                last_image: None,
                image_buildpacks: image.image_buildpacks.clone(),
            },
            source_what: source.what(),
        }),
        _ => {
            blocked_by.sort();
            blocked_by.dedup();
            Err(blocked_by)
        }
    }
}

/// What a build of an image would be made from now.
struct Pins {
    inputs: Inputs,
    /// How a change of this source's version is named.
    source_what: &'static str,
}

/// The rules proper, for an image whose upstreams all resolved.
fn plan_image(
    image: &Desired,
    Pins {
        inputs: pins,
        source_what,
    }: Pins,
    last: Option<&RecordedBuild>,
    pending_triggers: u32,
) -> Change {
    let mut details = Vec::new();
    match last {
        None => details.push(note(Reason::Config, "first build")),
        Some(last) => {
            details.extend(changes_since(last, &pins, source_what));
            details.retain(|d| image.rebuild_on.contains(&d.reason));
        }
    }
    // An explicit request is not an upstream change: `rebuild-on` does not silence it.
    if pending_triggers > 0 {
        details.push(note(Reason::Trigger, "requested"));
    }
    // Nor is a retry: the work was wanted and did not happen.
    let retry = last.and_then(|l| Some((l, l.failure.as_ref()?.retry()?)));
    if let Some((last, attempt)) = retry {
        let step = last.failure.as_ref().map_or("", |f| f.step.as_str());
        details.push(note(
            Reason::Retry,
            &format!(
                "build #{} failed in {step}, retry {attempt} of {RETRY_LIMIT}",
                last.number
            ),
        ));
    }
    let reasons: Vec<Reason> = Reason::ALL
        .into_iter()
        .filter(|r| details.iter().any(|d| d.reason == *r))
        .collect();
    let (action, inputs) = match (reasons.as_slice(), last) {
        ([], _) => (Action::Noop, None),
        // A failed rebase is tried again as the same rebase.
        ([Reason::Retry], Some(last)) if last.action == Action::Rebase => {
            (Action::Rebase, Some(last.inputs.clone()))
        }
        ([Reason::Stack], Some(last)) => match rebase_obstacle(last, &pins) {
            None => (Action::Rebase, Some(rebase_inputs(last, pins))),
            Some(obstacle) => {
                details.push(obstacle);
                (Action::Build, Some(pins))
            }
        },
        _ => (Action::Build, Some(pins)),
    };
    details.sort_by_key(|d| d.reason);
    Change {
        image: image.image.clone(),
        action,
        reasons,
        details,
        inputs,
        last_build: last.map(|b| b.number),
        blocked_by: Vec::new(),
    }
}

/// Every reason that fired since `last`, before `rebuild-on` is applied.
fn changes_since(last: &RecordedBuild, now: &Inputs, source_what: &str) -> Vec<Detail> {
    let was = &last.inputs;
    let mut details = Vec::new();
    if was.config != now.config {
        details.push(change(Reason::Config, "config", &was.config, &now.config));
        if was.builder != now.builder {
            details.push(change(
                Reason::Config,
                "builder",
                &was.builder,
                &now.builder,
            ));
        }
        if was.image_buildpacks != now.image_buildpacks {
            details.push(change(
                Reason::Config,
                "buildpacks",
                &group_text(&was.image_buildpacks),
                &group_text(&now.image_buildpacks),
            ));
        }
    }
    if was.source != now.source {
        details.push(change(
            Reason::Commit,
            source_what,
            &was.source,
            &now.source,
        ));
    }
    details.extend(buildpack_changes(last, &now.buildpacks));
    if was.run_image != now.run_image {
        details.push(change(
            Reason::Stack,
            "run image",
            &was.run_image.to_string(),
            &now.run_image.to_string(),
        ));
    }
    details
}

/// BUILDPACK: after a success, a buildpack it used changed digest or left the builder
/// (new, unused buildpacks do not count). After a failure, any change to the buildpacks
/// it was given: a buildpack added to the builder may be the fix.
fn buildpack_changes(last: &RecordedBuild, provided: &BTreeMap<String, Digest>) -> Vec<Detail> {
    let compared = match (last.outcome, &last.buildpacks_used) {
        (BuildOutcome::Succeeded, Some(used)) => used,
        _ => &last.inputs.buildpacks,
    };
    let mut details: Vec<Detail> = compared
        .iter()
        .filter_map(|(id, was)| match provided.get(id) {
            Some(now) if now == was => None,
            Some(now) => Some(change(
                Reason::Buildpack,
                &format!("buildpack {id}"),
                &was.to_string(),
                &now.to_string(),
            )),
            None => Some(Detail {
                reason: Reason::Buildpack,
                what: format!("buildpack {id}"),
                old: Some(was.to_string()),
                new: Some("gone from the builder".to_string()),
            }),
        })
        .collect();
    if last.outcome == BuildOutcome::Failed {
        details.extend(
            provided
                .iter()
                .filter(|(id, _)| !compared.contains_key(*id))
                .map(|(id, now)| Detail {
                    reason: Reason::Buildpack,
                    what: format!("buildpack {id}"),
                    old: Some("absent".to_string()),
                    new: Some(now.to_string()),
                }),
        );
    }
    details
}

/// Why a STACK-only change cannot be a rebase, if it cannot.
fn rebase_obstacle(last: &RecordedBuild, now: &Inputs) -> Option<Detail> {
    if last.outcome != BuildOutcome::Succeeded || last.output.is_none() {
        return Some(note(Reason::Stack, "last build failed"));
    }
    if !last.rebasable {
        return Some(note(Reason::Stack, "not rebasable"));
    }
    if last.inputs.stack_id != now.stack_id {
        return Some(change(
            Reason::Stack,
            "stack id",
            &last.inputs.stack_id,
            &now.stack_id,
        ));
    }
    if last.inputs.target != now.target {
        return Some(change(
            Reason::Stack,
            "target",
            &last.inputs.target.to_string(),
            &now.target.to_string(),
        ));
    }
    None
}

/// A rebase keeps everything of the last build but the run image.
fn rebase_inputs(last: &RecordedBuild, now: Inputs) -> Inputs {
    Inputs {
        run_image: now.run_image,
        buildpacks: last
            .buildpacks_used
            .clone()
            .unwrap_or_else(|| last.inputs.buildpacks.clone()),
        last_image: last.output.clone(),
        ..last.inputs.clone()
    }
}

/// An image's own group as the plan names it.
fn group_text(group: &[String]) -> String {
    if group.is_empty() {
        "the builder's order".to_string()
    } else {
        group.join(", ")
    }
}

fn change(reason: Reason, what: &str, old: &str, new: &str) -> Detail {
    Detail {
        reason,
        what: what.to_string(),
        old: Some(old.to_string()),
        new: Some(new.to_string()),
    }
}

fn note(reason: Reason, what: &str) -> Detail {
    Detail {
        reason,
        what: what.to_string(),
        old: None,
        new: None,
    }
}

#[cfg(test)]
mod tests;
