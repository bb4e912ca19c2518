//! Resolving a group's build plan: which buildpacks stay, and what each provides to whom.

use super::{DetectOutcome, Verdict};
use crate::lifecycle::descriptor::{
    Group, GroupBuildpack, PlanSections, Provider, Require, ResolvedEntry, ResolvedPlan,
};
use crate::lifecycle::phase::BuildpackDir;

/// Plan trials tried per group at most.
const MAX_TRIALS: usize = 100_000;

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
        let chosen = alive.iter().map(|&i| (i, &options[i][choice[i]]));
        let (entries, unmet) = match_plan(chosen);
        if unmet.is_empty() {
            if alive.is_empty() {
                return Err("every optional buildpack was dropped for an unmet plan".into());
            }
            return Ok(outcome(&alive, entries, elements, buildpacks));
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

/// A dependency of the plan: its name, the elements providing it and its requires.
type PlanEntry = (String, Vec<usize>, Vec<Require>);

/// Matches the provides and requires of the elements' chosen sections, in order: the
/// plan entries (names in order of first require) and each element's unmet provide or
/// require, with why.
fn match_plan<'a>(
    chosen: impl Iterator<Item = (usize, &'a PlanSections)>,
) -> (Vec<PlanEntry>, Vec<(usize, String)>) {
    let mut entries: Vec<PlanEntry> = Vec::new();
    let mut pending: Vec<(String, Vec<usize>)> = Vec::new();
    let mut unmet: Vec<(usize, String)> = Vec::new();
    for (i, sections) in chosen {
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
                None => entries.push((require.name.clone(), pending_for, vec![require.clone()])),
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
    (entries, unmet)
}

/// The group of the `alive` elements and the plan of `entries`.
fn outcome(
    alive: &[usize],
    entries: Vec<PlanEntry>,
    elements: &[&TrialElement],
    buildpacks: &[BuildpackDir],
) -> DetectOutcome {
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
    DetectOutcome {
        group: Group { group },
        plan: ResolvedPlan { entries },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::descriptor::{Provide, Table};
    use crate::lifecycle::detect::order::tests::bp;

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
