//! After kpackd was killed (`kill -9`, a lost node) while builds ran as Pods: the next
//! writer finds the Pods of its state by their lineage label, before it marks unfinished
//! builds `interrupted` and plans. A Pod of a build the state still has running is
//! followed to its end (at once when it has ended) and its result recorded, so work
//! that succeeded is not done again; any other Pod of the state (a build that ended, or
//! that the state does not know) is deleted. Pods of other states are never touched.

use std::collections::BTreeMap;

use executors::kubernetes::BuildPod;
use executors::lifecycle::request::EntrypointResult;
use futures::future::join_all;
use imageref::ImageRef;
use planner::plan::{Action, Inputs};
use planner::Config;

use super::job::{JobFailure, Success};
use super::pod::{Kube, KubeError};
use super::BUILD_STEPS;
use crate::logs::BuildLog;
use crate::state::{Build, BuildStatus, Outcome, State, StateError};

#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error(transparent)]
    Connect(#[from] KubeError),
    #[error("find the build Pods: {0}")]
    List(#[source] executors::kubernetes::PodFailure),
    #[error(transparent)]
    State(#[from] StateError),
}

/// The builds whose Pods outlived a kpackd, recorded as they ended.
pub async fn recover(config: &Config, state: &mut State) -> Result<Vec<Build>, RecoverError> {
    let Some(kube) = Kube::connect(config, state.lineage()).await? else {
        return Ok(Vec::new());
    };
    let pods = kube
        .cluster
        .build_pods(&kube.lineage)
        .await
        .map_err(RecoverError::List)?;
    if pods.is_empty() {
        return Ok(Vec::new());
    }
    let running: BTreeMap<(String, u64), Build> = state
        .builds(None)?
        .into_iter()
        .filter(|b| !b.status.is_end() && b.action == Action::Build)
        .map(|b| ((b.image.clone(), b.number), b))
        .collect();
    let (followed, orphans): (Vec<BuildPod>, Vec<BuildPod>) = pods
        .into_iter()
        .partition(|pod| running.contains_key(&(pod.image.clone(), pod.number)));
    for orphan in &orphans {
        tracing::warn!(pod = %orphan.name, image = %orphan.image, number = orphan.number, "deleting a build Pod of no running build");
        kube.cluster.delete_build(&orphan.name).await;
    }
    let outcomes = join_all(followed.iter().map(|pod| {
        let build = &running[&(pod.image.clone(), pod.number)];
        follow(&kube, pod, build)
    }))
    .await;
    let mut recorded = Vec::new();
    for (pod, outcome) in followed.iter().zip(outcomes) {
        let build = &running[&(pod.image.clone(), pod.number)];
        let outcome = match outcome {
            Ok(result) => {
                advance(state, build, BuildStatus::Exporting)?;
                let tag = ImageRef::parse(&build.tag).ok();
                let success = tag.map_or_else(
                    || success_without_tag(&result, &build.inputs),
                    |tag| success(&result, &build.inputs, &tag, &[]),
                );
                Outcome::Succeeded {
                    output: success.output,
                    buildpacks_used: success.buildpacks_used,
                    rebasable: success.rebasable,
                }
            }
            Err(failure) => Outcome::Failed {
                message: failure.message,
                kind: failure.kind,
            },
        };
        let ended = state.finish(build.id, outcome)?;
        tracing::info!(image = %ended.image, number = ended.number, status = %ended.status, "recorded a build from its Pod");
        recorded.push(ended);
    }
    kube.cluster.settle().await;
    Ok(recorded)
}

/// Follows `pod` to its end, its log appended to the build's.
async fn follow(
    kube: &Kube,
    pod: &BuildPod,
    build: &Build,
) -> Result<EntrypointResult, JobFailure> {
    let log = BuildLog::create(&build.log, &build.image, build.number).map_err(|e| {
        JobFailure::infrastructure(format!("open the build log {}: {e}", build.log.display()))
    })?;
    log.note(
        executors::lifecycle::Phase::Prepare,
        &format!("kpackd restarted; following Pod {}", pod.name),
    );
    let outcome = kube
        .cluster
        .follow_existing(&pod.name, &log)
        .await
        .map_err(JobFailure::from);
    if let Err(failure) = &outcome {
        log.failure(&failure.message);
    }
    outcome
}

/// Records every step of a build from its status up to `to`.
fn advance(state: &mut State, build: &Build, to: BuildStatus) -> Result<(), StateError> {
    let from = BUILD_STEPS.iter().position(|s| *s == build.status);
    let Some(target) = BUILD_STEPS.iter().position(|s| *s == to) else {
        return Ok(());
    };
    for step in &BUILD_STEPS[from.map_or(0, |i| i + 1)..=target] {
        state.transition(build.id, *step)?;
    }
    Ok(())
}

/// What a Pod's result means for the state: its digest, and the buildpacks it used
/// that the plan pinned (an inline buildpack of a project descriptor is part of the
/// source), as a local build records them.
pub(super) fn success(
    result: &EntrypointResult,
    inputs: &Inputs,
    tag: &ImageRef,
    additional_tags: &[ImageRef],
) -> Success {
    let mut tags = vec![tag.to_string()];
    tags.extend(additional_tags.iter().map(ToString::to_string));
    Success {
        tags,
        ..success_without_tag(result, inputs)
    }
}

fn success_without_tag(result: &EntrypointResult, inputs: &Inputs) -> Success {
    let buildpacks_used = result
        .buildpacks
        .iter()
        .filter_map(|bp| {
            let key = format!("{}@{}", bp.id, bp.version);
            let digest = inputs.buildpacks.get(&key)?.clone();
            Some((key, digest))
        })
        .collect();
    Success {
        output: result.digest.clone(),
        buildpacks_used,
        rebasable: result.rebasable,
        tags: Vec::new(),
    }
}
