//! The detect phase: expand the order into groups, run each buildpack's `bin/detect` in
//! the sandbox, resolve the build plan, and keep the first group that passes.
//!
//! How to call it (run.rs):
//! ```text
//! let ctx = PhaseContext {
//!     sandbox_root, uid, gid,                 // the unpacked build image and its CNB user
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
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use futures::stream::{self, StreamExt};

use super::descriptor::{
    write_toml, ApiVersion, BuildPlan, DescriptorError, Group, GroupBuildpack, OrderEntry,
    OrderGroup, PlanSections, Provider, Require, ResolvedEntry, ResolvedPlan,
};
use super::phase::context::{refuse_symlink, scratch_dir};
use super::phase::env::{base_env, buildpack_env, OperatorEnv};
use super::phase::program::run_program;
use super::phase::sandbox::{phase_sandbox, PhaseSandbox};
use super::phase::{BuildpackDir, Env, PhaseContext, PhaseError, ProgramError};
use super::{LogSink, Phase};

/// Orders that expand into more groups than this are refused.
const MAX_GROUPS: usize = 10_000;
/// How many `bin/detect` run at once.
const DETECT_CONCURRENCY: usize = 4;
/// Plan trials tried per group at most.
const MAX_TRIALS: usize = 100_000;

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

/// What happened to one group during detect.
#[derive(Debug, Clone)]
pub struct GroupReport {
    pub buildpacks: Vec<DetectReport>,
    /// Why the group failed.
    pub reason: String,
}

/// What one buildpack's `bin/detect` said.
#[derive(Debug, Clone)]
pub struct DetectReport {
    pub id: String,
    pub version: String,
    pub optional: bool,
    pub verdict: Verdict,
    /// The last lines of its output.
    pub output: Vec<String>,
}

/// The result of a `bin/detect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Exit 0.
    Pass,
    /// Exit 100.
    Fail,
    /// Any other exit, a signal, or an unusable plan.
    Error(String),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Pass => f.write_str("pass"),
            Verdict::Fail => f.write_str("fail (exit 100)"),
            Verdict::Error(why) => write!(f, "error ({why})"),
        }
    }
}

struct NoGroupDisplay<'a>(&'a [GroupReport]);

impl fmt::Display for NoGroupDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "detect: no buildpack group passed")?;
        for (i, group) in self.0.iter().enumerate() {
            let members: Vec<String> = group
                .buildpacks
                .iter()
                .map(|b| {
                    format!(
                        "{}@{}{}",
                        b.id,
                        b.version,
                        if b.optional { " (optional)" } else { "" }
                    )
                })
                .collect();
            write!(
                f,
                "\n  group {}: {}: {}",
                i + 1,
                members.join(", "),
                group.reason
            )?;
            for bp in &group.buildpacks {
                write!(f, "\n    {}@{}: {}", bp.id, bp.version, bp.verdict)?;
                for line in &bp.output {
                    write!(f, "\n      | {line}")?;
                }
            }
        }
        Ok(())
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
    // A group.toml of an earlier build must not survive a failing detect.
    for stale in ["group.toml", "plan.toml"] {
        match fs::remove_file(ctx.layers_dir.join(stale)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(DetectError::Io {
                    what: format!("remove the old <layers>/{stale}"),
                    source: e,
                })
            }
            _ => {}
        }
    }
    let scratch = scratch_dir(ctx, "kpackd-detect-").map_err(|source| DetectError::Io {
        what: "create a scratch directory".into(),
        source,
    })?;
    let sandbox = phase_sandbox(ctx, scratch.path(), false)?;
    let operator_env = OperatorEnv::load(&ctx.sandbox_root, scratch.path())?;
    let base = base_env(ctx);

    let mut runs: HashMap<usize, DetectRun> = HashMap::new();
    let mut reports = Vec::new();
    let mut errored = false;
    for group in &groups {
        let mut missing: Vec<usize> = group
            .iter()
            .map(|el| el.buildpack)
            .filter(|bp| !runs.contains_key(bp))
            .collect();
        missing.dedup();
        let results: Vec<_> = stream::iter(missing.iter().copied().map(|bp| {
            let run_dir = scratch.path().join(format!("run-{bp}"));
            run_detect(
                ctx,
                &sandbox,
                &ctx.buildpacks[bp],
                &base,
                &operator_env,
                run_dir,
                logs,
            )
        }))
        .buffered(DETECT_CONCURRENCY)
        .collect()
        .await;
        for (bp, result) in missing.into_iter().zip(results) {
            runs.insert(bp, result?);
        }

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
        // As the reference lifecycle, a buildpack that errored is said in the build log,
        // also when a later group passes.
        for element in &elements {
            if let Verdict::Error(why) = &element.verdict {
                let bp = &ctx.buildpacks[element.buildpack];
                logs.line(
                    Phase::Detect,
                    None,
                    &format!("err:  {}@{} ({why})", bp.id(), bp.version()),
                );
            }
        }
        match resolve_group(&elements, &ctx.buildpacks) {
            Ok(outcome) => {
                tracing::debug!(group = ?outcome.group, "detect passed");
                logs.line(
                    Phase::Detect,
                    None,
                    &format!(
                        "{} of {} buildpacks participating",
                        outcome.group.group.len(),
                        group.len()
                    ),
                );
                for bp in &outcome.group.group {
                    logs.line(Phase::Detect, None, &format!("{} {}", bp.id, bp.version));
                }
                outcome.write(&ctx.layers_dir)?;
                return Ok(outcome);
            }
            Err(reason) => {
                errored |= elements
                    .iter()
                    .any(|e| matches!(e.verdict, Verdict::Error(_)));
                reports.push(GroupReport {
                    buildpacks: group
                        .iter()
                        .map(|el| {
                            let bp = &ctx.buildpacks[el.buildpack];
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
                })
            }
        }
    }
    Err(DetectError::NoGroupPassed {
        groups: reports,
        errored,
    })
}

/// One element of an expanded group: a component buildpack (index into the context's
/// buildpacks) and whether it is optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupElement {
    pub buildpack: usize,
    pub optional: bool,
}

/// Expands an order into the groups of component buildpacks to try, in order: composite
/// buildpacks are replaced by each group of their order in turn (depth-first, left to
/// right); an optional composite also yields the group without it, after the others. A
/// buildpack id already in a group is not added again. Optional component buildpacks stay
/// in the group marked optional: detect drops them when they fail or their plan is unmet.
pub fn expand_order(
    order: &[OrderGroup],
    buildpacks: &[BuildpackDir],
) -> Result<Vec<Vec<GroupElement>>, DetectError> {
    let mut groups = Vec::new();
    for group in order {
        for expanded in expand_group(&group.group, buildpacks, 0)? {
            if !groups.contains(&expanded) {
                groups.push(expanded);
            }
            if groups.len() > MAX_GROUPS {
                return Err(DetectError::TooManyGroups);
            }
        }
    }
    Ok(groups)
}

fn expand_group(
    entries: &[OrderEntry],
    buildpacks: &[BuildpackDir],
    depth: usize,
) -> Result<Vec<Vec<GroupElement>>, DetectError> {
    let mut groups: Vec<Vec<GroupElement>> = vec![Vec::new()];
    for entry in entries {
        let index = find_buildpack(entry, buildpacks)?;
        let bp = &buildpacks[index];
        let alternatives: Vec<Vec<GroupElement>> = if bp.descriptor.is_composite() {
            if depth > 16 {
                return Err(DetectError::OrderTooDeep {
                    id: bp.id().to_owned(),
                });
            }
            let mut alternatives = Vec::new();
            for sub in &bp.descriptor.order {
                alternatives.extend(expand_group(&sub.group, buildpacks, depth + 1)?);
            }
            if entry.optional {
                alternatives.push(Vec::new());
            }
            alternatives
        } else {
            vec![vec![GroupElement {
                buildpack: index,
                optional: entry.optional,
            }]]
        };
        let mut next = Vec::with_capacity(groups.len() * alternatives.len());
        for prefix in &groups {
            for alternative in &alternatives {
                let mut group = prefix.clone();
                for el in alternative {
                    let id = buildpacks[el.buildpack].id();
                    if !group.iter().any(|g| buildpacks[g.buildpack].id() == id) {
                        group.push(*el);
                    }
                }
                next.push(group);
            }
            if next.len() > MAX_GROUPS {
                return Err(DetectError::TooManyGroups);
            }
        }
        groups = next;
    }
    Ok(groups)
}

fn find_buildpack(entry: &OrderEntry, buildpacks: &[BuildpackDir]) -> Result<usize, DetectError> {
    let mut candidates = buildpacks
        .iter()
        .enumerate()
        .filter(|(_, bp)| bp.id() == entry.id);
    if !entry.version.is_empty() {
        return candidates
            .find(|(_, bp)| bp.version() == entry.version)
            .map(|(i, _)| i)
            .ok_or_else(|| DetectError::UnknownBuildpack {
                id: entry.id.clone(),
                version: entry.version.clone(),
            });
    }
    let all: Vec<(usize, &BuildpackDir)> = candidates.collect();
    match all.as_slice() {
        [] => Err(DetectError::UnknownBuildpack {
            id: entry.id.clone(),
            version: String::new(),
        }),
        [(i, _)] => Ok(*i),
        many => Err(DetectError::AmbiguousBuildpack {
            id: entry.id.clone(),
            versions: many
                .iter()
                .map(|(_, bp)| bp.version())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// A group element with its detect result, for plan resolution.
#[derive(Debug, Clone)]
pub struct TrialElement {
    pub buildpack: usize,
    pub optional: bool,
    pub verdict: Verdict,
    /// The plan alternatives (top-level sections, then each `[[or]]`); empty = one empty.
    pub options: Vec<PlanSections>,
}

/// Decides a group: every non-optional element must pass, optional ones that did not pass
/// are dropped, then the build plan is resolved over every combination of alternatives
/// (first element outermost); the first trial that resolves gives the group and plan.
/// `Err` says why the group failed.
pub fn resolve_group(
    elements: &[TrialElement],
    buildpacks: &[BuildpackDir],
) -> Result<DetectOutcome, String> {
    let name = |el: &TrialElement| {
        let bp = &buildpacks[el.buildpack];
        format!("{}@{}", bp.id(), bp.version())
    };
    let mut passed: Vec<&TrialElement> = Vec::new();
    for el in elements {
        match (&el.verdict, el.optional) {
            (Verdict::Pass, _) => passed.push(el),
            (_, true) => {}
            (verdict, false) => return Err(format!("{} did not pass: {verdict}", name(el))),
        }
    }
    if passed.is_empty() {
        return Err("no buildpack passed".into());
    }
    let options: Vec<Vec<PlanSections>> = passed
        .iter()
        .map(|el| {
            if el.options.is_empty() {
                vec![PlanSections::default()]
            } else {
                el.options.clone()
            }
        })
        .collect();
    let trials: usize = options
        .iter()
        .try_fold(1usize, |acc, o| acc.checked_mul(o.len()))
        .unwrap_or(usize::MAX);
    let mut choice = vec![0usize; passed.len()];
    let mut first_failure = None;
    for _ in 0..trials.min(MAX_TRIALS) {
        match run_trial(&passed, &options, &choice, buildpacks) {
            Ok(outcome) => return Ok(outcome),
            Err(reason) => {
                first_failure.get_or_insert(reason);
            }
        }
        // Next combination: the last element varies fastest.
        for i in (0..choice.len()).rev() {
            choice[i] += 1;
            if choice[i] < options[i].len() {
                break;
            }
            choice[i] = 0;
        }
    }
    Err(first_failure.unwrap_or_else(|| "no plan trial resolved".into()))
}

/// One plan trial with option `choice[i]` for element `i`.
fn run_trial(
    elements: &[&TrialElement],
    options: &[Vec<PlanSections>],
    choice: &[usize],
    buildpacks: &[BuildpackDir],
) -> Result<DetectOutcome, String> {
    let mut alive: Vec<usize> = (0..elements.len()).collect();
    loop {
        // Dependency name → (providers, requires); names in order of first require.
        let mut entries: Vec<(String, Vec<usize>, Vec<Require>)> = Vec::new();
        let mut pending: Vec<(String, Vec<usize>)> = Vec::new();
        let mut unmet: Vec<(usize, String)> = Vec::new();
        for &i in &alive {
            let sections = &options[i][choice[i]];
            for provide in &sections.provides {
                match pending.iter_mut().find(|(n, _)| *n == provide.name) {
                    Some((_, els)) if els.contains(&i) => {}
                    Some((_, els)) => els.push(i),
                    None => pending.push((provide.name.clone(), vec![i])),
                }
            }
            for require in &sections.requires {
                let pending_for = pending
                    .iter_mut()
                    .find(|(n, _)| *n == require.name)
                    .map(|(_, els)| std::mem::take(els))
                    .unwrap_or_default();
                let entry = entries.iter_mut().find(|(n, _, _)| *n == require.name);
                match entry {
                    None if pending_for.is_empty() => unmet.push((
                        i,
                        format!(
                            "requires {:?}, which no earlier buildpack provides",
                            require.name
                        ),
                    )),
                    None => {
                        entries.push((require.name.clone(), pending_for, vec![require.clone()]))
                    }
                    Some((_, providers, requires)) => {
                        for p in pending_for {
                            if !providers.contains(&p) {
                                providers.push(p);
                            }
                        }
                        requires.push(require.clone());
                    }
                }
            }
        }
        for (name, els) in &pending {
            for &i in els {
                unmet.push((
                    i,
                    format!("provides {name:?}, which no later buildpack requires"),
                ));
            }
        }
        if unmet.is_empty() {
            if alive.is_empty() {
                return Err("every optional buildpack was dropped for an unmet plan".into());
            }
            let group = alive
                .iter()
                .map(|&i| {
                    let bp = &buildpacks[elements[i].buildpack];
                    GroupBuildpack {
                        id: bp.id().to_owned(),
                        version: bp.version().to_owned(),
                        api: bp.descriptor.api.clone(),
                        homepage: bp.descriptor.buildpack.homepage.clone(),
                    }
                })
                .collect();
            let entries = entries
                .into_iter()
                .map(|(_, providers, requires)| ResolvedEntry {
                    providers: providers
                        .into_iter()
                        .map(|i| {
                            let bp = &buildpacks[elements[i].buildpack];
                            Provider {
                                id: bp.id().to_owned(),
                                version: bp.version().to_owned(),
                                extension: false,
                            }
                        })
                        .collect(),
                    requires,
                })
                .collect();
            return Ok(DetectOutcome {
                group: Group { group },
                plan: ResolvedPlan { entries },
            });
        }
        let mut dropped = Vec::new();
        for (i, reason) in unmet {
            let el = elements[i];
            let droppable = el.optional && choice[i] + 1 == options[i].len();
            if !droppable {
                let bp = &buildpacks[el.buildpack];
                return Err(format!("{}@{} {reason}", bp.id(), bp.version()));
            }
            dropped.push(i);
        }
        alive.retain(|i| !dropped.contains(i));
    }
}

/// The result of one buildpack's `bin/detect`.
#[derive(Debug, Clone)]
struct DetectRun {
    verdict: Verdict,
    plan: Option<BuildPlan>,
    output: Vec<String>,
}

async fn run_detect(
    ctx: &PhaseContext,
    sandbox: &PhaseSandbox,
    bp: &BuildpackDir,
    base: &Env,
    operator_env: &OperatorEnv,
    run_dir: PathBuf,
    logs: &dyn LogSink,
) -> Result<DetectRun, DetectError> {
    let id = bp.id();
    if !ctx.target.satisfies(&bp.descriptor.effective_targets()) {
        return Ok(DetectRun {
            verdict: Verdict::Error(format!(
                "no target of the buildpack matches {:?}",
                ctx.target
            )),
            plan: None,
            output: Vec::new(),
        });
    }
    if !bp.path.join("bin/detect").is_file() {
        return Ok(DetectRun {
            verdict: Verdict::Error("the buildpack has no bin/detect".into()),
            plan: None,
            output: Vec::new(),
        });
    }
    let io_err = |what: &str| {
        let what = format!("{what} for {id}");
        move |source| DetectError::Io { what, source }
    };
    fs::create_dir_all(&run_dir).map_err(io_err("create the run directory"))?;
    let plan_host = run_dir.join("plan.toml");
    fs::write(&plan_host, b"").map_err(io_err("create the plan file"))?;
    ctx.hand_over(&run_dir)
        .and_then(|()| ctx.hand_over(&plan_host))
        .map_err(io_err("give the run directory to the CNB user"))?;
    let (sandbox, tmp) = sandbox.with_run_dir(&run_dir);
    let plan_path = tmp.join("plan.toml").to_string_lossy().into_owned();

    let mut env = buildpack_env(ctx, bp, base, operator_env).map_err(io_err("read env files"))?;
    if bp.api() >= ApiVersion::new(0, 8) {
        env.insert("CNB_BUILD_PLAN_PATH".into(), plan_path.clone());
    }
    let program = ctx.buildpack_dir_inside(bp).join("bin/detect");
    let args = [
        ctx.platform_dir_inside().to_string_lossy().into_owned(),
        plan_path,
    ];
    let run = run_program(&sandbox, &program, &args, &env, Phase::Detect, id, logs).await?;
    let verdict = match run.code {
        Some(0) => Verdict::Pass,
        Some(100) => Verdict::Fail,
        Some(code) => Verdict::Error(format!("exit {code}")),
        None => Verdict::Error("killed by a signal".into()),
    };
    let (verdict, plan) = match verdict {
        Verdict::Pass => match refuse_symlink(&plan_host)
            .map_err(|e| e.to_string())
            .and_then(|()| BuildPlan::read(&plan_host).map_err(|e| e.to_string()))
        {
            Ok(plan) => (Verdict::Pass, Some(plan)),
            Err(e) => (Verdict::Error(e), None),
        },
        other => (other, None),
    };
    tracing::debug!(buildpack = id, %verdict, "detect ran");
    Ok(DetectRun {
        verdict,
        plan,
        output: run.tail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::descriptor::{BuildpackDescriptor, BuildpackInfo, Provide};

    fn bp(id: &str, order: &[&[(&str, bool)]]) -> BuildpackDir {
        BuildpackDir {
            path: PathBuf::from("/nonexistent").join(id),
            descriptor: BuildpackDescriptor {
                api: "0.10".into(),
                buildpack: BuildpackInfo {
                    id: id.into(),
                    version: "1".into(),
                    ..BuildpackInfo::default()
                },
                order: order
                    .iter()
                    .map(|g| OrderGroup {
                        group: g
                            .iter()
                            .map(|(id, optional)| entry(id, *optional))
                            .collect(),
                    })
                    .collect(),
                ..BuildpackDescriptor::default()
            },
        }
    }

    fn entry(id: &str, optional: bool) -> OrderEntry {
        OrderEntry {
            id: id.into(),
            version: String::new(),
            optional,
        }
    }

    fn ids(groups: &[Vec<GroupElement>], bps: &[BuildpackDir]) -> Vec<String> {
        groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|e| {
                        let id = bps[e.buildpack].id().to_owned();
                        if e.optional {
                            format!("{id}?")
                        } else {
                            id
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect()
    }

    #[test]
    fn order_expansion_matches_the_spec() {
        let bps = vec![
            bp("A", &[]),
            bp("B", &[]),
            bp("C", &[]),
            bp("D", &[]),
            bp("E", &[]),
            bp("F", &[]),
            bp("G", &[]),
            bp("H", &[]),
            bp(
                "O",
                &[&[("A", false), ("B", false)], &[("C", false), ("D", false)]],
            ),
            bp(
                "P",
                &[&[("E", false), ("F", false)], &[("G", false), ("H", false)]],
            ),
            bp("N", &[&[("O", false), ("A", true)]]),
        ];
        let order = |entries: &[(&str, bool)]| {
            vec![OrderGroup {
                group: entries.iter().map(|(id, o)| entry(id, *o)).collect(),
            }]
        };
        let groups = expand_order(&order(&[("E", false), ("O", false), ("F", false)]), &bps)
            .expect("expand");
        assert_eq!(ids(&groups, &bps), ["E,A,B,F", "E,C,D,F"]);
        let groups = expand_order(&order(&[("O", false), ("P", false)]), &bps).expect("expand");
        assert_eq!(
            ids(&groups, &bps),
            ["A,B,E,F", "A,B,G,H", "C,D,E,F", "C,D,G,H"]
        );
        // An optional composite: its groups, then the group without it.
        let groups = expand_order(&order(&[("E", false), ("O", true)]), &bps).expect("expand");
        assert_eq!(ids(&groups, &bps), ["E,A,B", "E,C,D", "E"]);
        // Nested composites; an id already in the group is not added twice.
        let groups = expand_order(&order(&[("N", false), ("B", true)]), &bps).expect("expand");
        assert_eq!(ids(&groups, &bps), ["A,B", "C,D,A?,B?"]);
        let err = expand_order(&order(&[("Z", false)]), &bps).expect_err("unknown");
        assert!(err.to_string().contains("Z"), "{err}");
    }

    fn provides(names: &[&str]) -> Vec<Provide> {
        names
            .iter()
            .map(|n| Provide { name: (*n).into() })
            .collect()
    }

    fn requires(names: &[&str]) -> Vec<Require> {
        names
            .iter()
            .map(|n| Require {
                name: (*n).into(),
                metadata: Table::new(),
                version: None,
            })
            .collect()
    }

    use crate::lifecycle::descriptor::Table;

    fn el(i: usize, optional: bool, options: &[(&[&str], &[&str])]) -> TrialElement {
        TrialElement {
            buildpack: i,
            optional,
            verdict: Verdict::Pass,
            options: options
                .iter()
                .map(|(p, r)| PlanSections {
                    provides: provides(p),
                    requires: requires(r),
                })
                .collect(),
        }
    }

    fn group_ids(outcome: &DetectOutcome) -> Vec<&str> {
        outcome.group.group.iter().map(|g| g.id.as_str()).collect()
    }

    #[test]
    fn plan_resolution() {
        let bps = vec![bp("a", &[]), bp("b", &[]), bp("c", &[])];

        // b provides what c requires.
        let outcome = resolve_group(
            &[
                el(1, false, &[(&["node"], &[])]),
                el(2, false, &[(&[], &["node"])]),
            ],
            &bps,
        )
        .expect("resolves");
        assert_eq!(group_ids(&outcome), ["b", "c"]);
        assert_eq!(outcome.plan.entries.len(), 1);
        assert_eq!(outcome.plan.entries[0].providers[0].id, "b");
        assert_eq!(outcome.plan.entries[0].name(), "node");

        // A require with no earlier provider fails the trial; an unrequired provide too.
        let err = resolve_group(&[el(0, false, &[(&[], &["x"])])], &bps).expect_err("unmet");
        assert!(err.contains("requires \"x\""), "{err}");
        let err = resolve_group(&[el(0, false, &[(&["x"], &[])])], &bps).expect_err("unmet");
        assert!(err.contains("provides \"x\""), "{err}");
        // Order matters: providing after the require does not count.
        assert!(resolve_group(
            &[
                el(0, false, &[(&[], &["x"])]),
                el(1, false, &[(&["x"], &[])])
            ],
            &bps
        )
        .is_err());

        // `or`: the first alternative is unmet, the second resolves.
        let outcome = resolve_group(
            &[
                el(0, false, &[(&["x"], &[]), (&["y"], &[])]),
                el(1, false, &[(&[], &["y"])]),
            ],
            &bps,
        )
        .expect("or resolves");
        assert_eq!(outcome.plan.entries[0].name(), "y");

        // An optional buildpack whose plan is unmet is dropped, with its requires.
        let outcome = resolve_group(
            &[
                el(0, false, &[(&["x"], &["x"])]),
                el(1, true, &[(&[], &["nothing"])]),
                el(2, true, &[(&[], &["x"])]),
            ],
            &bps,
        )
        .expect("optional dropped");
        assert_eq!(group_ids(&outcome), ["a", "c"]);
        assert_eq!(outcome.plan.entries[0].requires.len(), 2);

        // Optional elements that failed detect are dropped; required ones fail the group.
        let mut failed = el(1, true, &[]);
        failed.verdict = Verdict::Fail;
        let outcome = resolve_group(&[el(0, false, &[]), failed.clone()], &bps).expect("passes");
        assert_eq!(group_ids(&outcome), ["a"]);
        failed.optional = false;
        let err = resolve_group(&[el(0, false, &[]), failed], &bps).expect_err("fails");
        assert!(err.contains("b@1 did not pass"), "{err}");
    }
}
