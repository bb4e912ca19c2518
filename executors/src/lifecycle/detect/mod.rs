//! The detect phase: expand the order into groups, run each buildpack's `bin/detect` in
//! the sandbox, resolve the build plan, and keep the first group that passes.
//!
//! How to call it (run.rs):
//! ```text
//! let ctx = PhaseContext {
//!     isolation,                              // bubblewrap on the host, or in a container
//!     sandbox_root, uid, gid,                 // the build image's root and its CNB user
//!     app_dir, layers_dir, platform_dir,      // host directories owned by kpackd's user
//!     buildpacks: vec![BuildpackDir::read(path)?, ...], // every buildpack, composites too
//!     network, target, image_env,             // image_env: the build image's config Env
//! };
//! let outcome = detect(&ctx, &order, &logs).await?;   // writes <layers>/group.toml, plan.toml
//! let output = build(&ctx, &outcome, &logs).await?;   // see build.rs
//! ```
//! Dropping the future kills the buildpack programs still running. What the sandbox holds
//! is in [`super::phase`].
//!
//! Detect follows the buildpack spec and the reference lifecycle: see [`expand_order`]
//! and [`resolve_group`]. `bin/detect` runs of one buildpack are shared between groups, and
//! up to four run at once.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;

use futures::stream::{self, StreamExt};

use super::descriptor::{write_toml, BuildPlan, DescriptorError, Group, OrderGroup, ResolvedPlan};
use super::phase::context::scratch_dir;
use super::phase::env::{base_env, OperatorEnv};
use super::phase::sandbox::{phase_sandbox, PhaseSandbox};
use super::phase::{Env, PhaseContext, PhaseError, ProgramError};
use super::{LogSink, Phase};

mod order;
mod plan;
mod report;
mod run;

use order::MAX_GROUPS;
pub use order::{expand_order, GroupElement};
pub use plan::{resolve_group, TrialElement};
use report::NoGroupDisplay;
pub use report::{DetectReport, GroupReport, Verdict};
use run::DetectRun;

/// How many `bin/detect` run at once.
const DETECT_CONCURRENCY: usize = 4;

/// What detect chose; also on disk as `<layers>/group.toml` and `<layers>/plan.toml`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetectOutcome {
    pub group: Group,
    pub plan: ResolvedPlan,
}

impl DetectOutcome {
    /// Reads `<layers>/group.toml` and `<layers>/plan.toml` (a missing plan is empty).
    pub fn read(layers_dir: &Path) -> Result<DetectOutcome, DescriptorError> {
        Ok(DetectOutcome {
            group: Group::read(&layers_dir.join("group.toml"))?,
            plan: ResolvedPlan::read(&layers_dir.join("plan.toml"))?,
        })
    }

    /// Writes `<layers>/group.toml` and `<layers>/plan.toml`.
    pub fn write(&self, layers_dir: &Path) -> Result<(), DescriptorError> {
        fs::create_dir_all(layers_dir).map_err(|source| DescriptorError::Write {
            path: layers_dir.to_path_buf(),
            source,
        })?;
        write_toml(&layers_dir.join("group.toml"), &self.group)?;
        write_toml(&layers_dir.join("plan.toml"), &self.plan)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("detect: the order is empty")]
    EmptyOrder,
    #[error(
        "detect: the order names buildpack {id}{}, which is not among the buildpacks of the build",
        version_suffix(version)
    )]
    UnknownBuildpack { id: String, version: String },
    #[error("detect: the order names buildpack {id} without a version, and there are several ({versions})")]
    AmbiguousBuildpack { id: String, versions: String },
    #[error("detect: composite buildpack {id} nests too deeply (does its order include itself?)")]
    OrderTooDeep { id: String },
    #[error("detect: the order expands into more than {MAX_GROUPS} groups")]
    TooManyGroups,
    #[error("detect: {0}")]
    Descriptor(#[from] DescriptorError),
    #[error("detect: {0}")]
    Phase(#[from] PhaseError),
    #[error("detect: {0}")]
    Program(#[from] ProgramError),
    #[error("detect: {what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("{}", NoGroupDisplay(groups))]
    NoGroupPassed {
        /// Every group tried, with what each buildpack said.
        groups: Vec<GroupReport>,
        /// A buildpack errored (the lifecycle's exit code 21), rather than only failed (20).
        errored: bool,
    },
}

fn version_suffix(version: &str) -> String {
    if version.is_empty() {
        String::new()
    } else {
        format!("@{version}")
    }
}

/// Runs detect for `order` (order.toml's groups) and writes the chosen group and plan to
/// `<layers>/group.toml` and `<layers>/plan.toml`. Every line a `bin/detect` prints goes to
/// `logs` with [`Phase::Detect`] and the buildpack id.
pub async fn detect(
    ctx: &PhaseContext,
    order: &[OrderGroup],
    logs: &dyn LogSink,
) -> Result<DetectOutcome, DetectError> {
    let groups = expand_order(order, &ctx.buildpacks)?;
    if groups.is_empty() {
        return Err(DetectError::EmptyOrder);
    }
    remove_stale_outcome(&ctx.layers_dir)?;
    let scratch = scratch_dir(ctx, "kpackd-detect-").map_err(|source| DetectError::Io {
        what: "create a scratch directory".into(),
        source,
    })?;
    let detector = Detector {
        ctx,
        sandbox: phase_sandbox(ctx, scratch.path(), false)?,
        operator_env: OperatorEnv::load(&ctx.sandbox_root, scratch.path())?,
        base: base_env(ctx),
        scratch: scratch.path(),
        logs,
    };

    let mut runs: HashMap<usize, DetectRun> = HashMap::new();
    let mut reports = Vec::new();
    let mut errored = false;
    for group in &groups {
        detector.run_missing(group, &mut runs).await?;
        let elements: Vec<TrialElement> = group
            .iter()
            .map(|el| {
                let run = &runs[&el.buildpack];
                TrialElement {
                    buildpack: el.buildpack,
                    optional: el.optional,
                    verdict: run.verdict.clone(),
                    options: run
                        .plan
                        .as_ref()
                        .map(BuildPlan::options)
                        .unwrap_or_default(),
                }
            })
            .collect();
        detector.log_errored(&elements);
        match resolve_group(&elements, &ctx.buildpacks) {
            Ok(outcome) => {
                detector.log_passed(&outcome, group.len());
                outcome.write(&ctx.layers_dir)?;
                return Ok(outcome);
            }
            Err(reason) => {
                errored |= elements
                    .iter()
                    .any(|e| matches!(e.verdict, Verdict::Error(_)));
                reports.push(detector.report(group, &runs, reason));
            }
        }
    }
    Err(DetectError::NoGroupPassed {
        groups: reports,
        errored,
    })
}

/// A group.toml of an earlier build must not survive a failing detect.
fn remove_stale_outcome(layers_dir: &Path) -> Result<(), DetectError> {
    for stale in ["group.toml", "plan.toml"] {
        match fs::remove_file(layers_dir.join(stale)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(DetectError::Io {
                    what: format!("remove the old <layers>/{stale}"),
                    source: e,
                })
            }
            _ => {}
        }
    }
    Ok(())
}

/// What every `bin/detect` of one detect shares: the context, the sandbox, the
/// environment and the scratch directory its runs get directories in.
struct Detector<'a> {
    ctx: &'a PhaseContext,
    sandbox: PhaseSandbox,
    operator_env: OperatorEnv,
    base: Env,
    scratch: &'a Path,
    logs: &'a dyn LogSink,
}

impl Detector<'_> {
    /// Runs the `bin/detect` of the buildpacks of `group` that have not run yet (a
    /// buildpack's run is shared between groups), [`DETECT_CONCURRENCY`] at once.
    async fn run_missing(
        &self,
        group: &[GroupElement],
        runs: &mut HashMap<usize, DetectRun>,
    ) -> Result<(), DetectError> {
        let mut missing: Vec<usize> = group
            .iter()
            .map(|el| el.buildpack)
            .filter(|bp| !runs.contains_key(bp))
            .collect();
        missing.dedup();
        let results: Vec<_> = stream::iter(missing.iter().copied().map(|bp| {
            let run_dir = self.scratch.join(format!("run-{bp}"));
            self.run_detect(&self.ctx.buildpacks[bp], run_dir)
        }))
        .buffered(DETECT_CONCURRENCY)
        .collect()
        .await;
        for (bp, result) in missing.into_iter().zip(results) {
            runs.insert(bp, result?);
        }
        Ok(())
    }

    /// As the reference lifecycle, a buildpack that errored is said in the build log,
    /// also when a later group passes.
    fn log_errored(&self, elements: &[TrialElement]) {
        for element in elements {
            if let Verdict::Error(why) = &element.verdict {
                let bp = &self.ctx.buildpacks[element.buildpack];
                self.logs.line(
                    Phase::Detect,
                    None,
                    &format!("err:  {}@{} ({why})", bp.id(), bp.version()),
                );
            }
        }
    }

    fn log_passed(&self, outcome: &DetectOutcome, tried: usize) {
        tracing::debug!(group = ?outcome.group, "detect passed");
        self.logs.line(
            Phase::Detect,
            None,
            &format!(
                "{} of {tried} buildpacks participating",
                outcome.group.group.len(),
            ),
        );
        for bp in &outcome.group.group {
            self.logs
                .line(Phase::Detect, None, &format!("{} {}", bp.id, bp.version));
        }
    }

    /// What each buildpack of a group that failed said.
    fn report(
        &self,
        group: &[GroupElement],
        runs: &HashMap<usize, DetectRun>,
        reason: String,
    ) -> GroupReport {
        GroupReport {
            buildpacks: group
                .iter()
                .map(|el| {
                    let bp = &self.ctx.buildpacks[el.buildpack];
                    let run = &runs[&el.buildpack];
                    DetectReport {
                        id: bp.id().to_owned(),
                        version: bp.version().to_owned(),
                        optional: el.optional,
                        verdict: run.verdict.clone(),
                        output: run.output.clone(),
                    }
                })
                .collect(),
            reason,
        }
    }
}
