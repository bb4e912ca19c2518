//! One publish of a builder image, run as its own task: it turns the plan's pins into
//! an [`executors::builder::PublishRequest`], calls
//! [`executors::builder::publish`] and reports the end to the dispatcher. Like a build,
//! it never touches the state.

use std::path::PathBuf;
use std::sync::Arc;

use executors::builder::{PublishBuildpack, PublishBuildpackSource, PublishRequest};
use executors::lifecycle::{LogSink, Phase};
use imageref::Digest;
use planner::plan::StackKey;
use planner::BuilderKind;
use tokio::sync::mpsc::UnboundedSender;

use super::job::{order_groups, pinned, Event, JobContext, JobFailure};
use crate::logs::BuildLog;
use crate::resolve::{BuildpackLocation, BuildpackPin};
use crate::state::PublishId;

/// How long one publish may run, as long as a build does by default.
pub const PUBLISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60 * 60);

/// A publish as the dispatcher hands it to a task.
#[derive(Debug, Clone)]
pub struct PublishJob {
    pub id: PublishId,
    pub builder: String,
    pub number: u64,
    pub log: PathBuf,
}

/// What a successful publish pushed.
#[derive(Debug, Clone)]
pub struct Published {
    /// The builder image's manifest digest.
    pub digest: Digest,
    /// The tag pushed.
    pub tag: String,
}

/// Runs `job` to its end, reporting to `events`.
pub async fn run(job: PublishJob, ctx: Arc<JobContext>, events: UnboundedSender<Event>) {
    let result = match BuildLog::create(&job.log, &job.builder, job.number) {
        Ok(log) => {
            log.note(
                Phase::Export,
                &format!("publishing builder {}", job.builder),
            );
            // Dropping the work on time-out stops it, as for a build's `timeout`: the
            // builder's images wait for the publish, so it must end.
            let result =
                match tokio::time::timeout(PUBLISH_TIMEOUT, publish(&job, &ctx, &log)).await {
                    Ok(result) => result,
                    Err(_) => Err(JobFailure::infrastructure(format!(
                        "timed out after {}",
                        humantime::format_duration(PUBLISH_TIMEOUT)
                    ))),
                };
            match &result {
                Ok(done) => log.note(
                    Phase::Export,
                    &format!("pushed {} at {}", done.tag, done.digest),
                ),
                Err(failure) => log.failure(&failure.message),
            }
            result
        }
        Err(e) => Err(JobFailure::infrastructure(format!(
            "create the publish log {}: {e}",
            job.log.display()
        ))),
    };
    let _ = events.send(Event::Published { id: job.id, result });
}

async fn publish(
    job: &PublishJob,
    ctx: &JobContext,
    logs: &dyn LogSink,
) -> Result<Published, JobFailure> {
    let request = request(job, ctx).await?;
    let result = executors::builder::publish(&ctx.store, &request, logs)
        .await
        .map_err(|e| JobFailure::from_error(&e))?;
    Ok(Published {
        digest: result.digest,
        tag: request.tag.to_string(),
    })
}

/// The request the plan pinned for the builder.
async fn request(job: &PublishJob, ctx: &JobContext) -> Result<PublishRequest, JobFailure> {
    // The plan names what it pinned: a lookup that fails is kpackd's own inconsistency, and
    // fails the same way when tried again (a build failure, not an infrastructure one).
    let planned = &ctx.planned;
    let config = &planned.config;
    let builder = config.builders.get(&job.builder).ok_or_else(|| {
        JobFailure::build(format!(
            "builder \"{}\" is not in {}",
            job.builder,
            config.path.display()
        ))
    })?;
    let change = planned
        .plan
        .builders
        .iter()
        .find(|c| c.builder == job.builder)
        .ok_or_else(|| {
            JobFailure::build(format!("builder \"{}\" is not in the plan", job.builder))
        })?;
    let inputs = change.inputs.as_ref().ok_or_else(|| {
        JobFailure::build(format!("builder \"{}\" has no pinned inputs", job.builder))
    })?;
    let (BuilderKind::Assembled { stack, order, .. }, Some(tag)) = (&builder.kind, &builder.tag)
    else {
        return Err(JobFailure::build(format!(
            "builder \"{}\" is not an assembled builder with a tag",
            job.builder
        )));
    };
    let stack_config = config.stacks.get(stack).ok_or_else(|| {
        JobFailure::build(format!(
            "stack \"{stack}\" is not in {}",
            config.path.display()
        ))
    })?;
    let pin = planned
        .resolution
        .stacks
        .get(&StackKey::stack(stack))
        .ok_or_else(|| JobFailure::build(format!("stack \"{stack}\" was not resolved")))?;
    let build_image = pinned(&ctx.store, &pin.build_image, &inputs.build_image).await?;
    let pins = planned
        .resolution
        .buildpacks
        .get(&job.builder)
        .ok_or_else(|| {
            JobFailure::build(format!(
                "the buildpacks of builder \"{}\" were not resolved",
                job.builder
            ))
        })?;
    let buildpacks = pins.values().map(publish_buildpack).collect();
    let lifecycle_image = match planned.resolution.lifecycles.get(&job.builder) {
        Some(lifecycle) => Some(pinned(&ctx.store, &lifecycle.reference, &lifecycle.digest).await?),
        None => None,
    };
    Ok(PublishRequest {
        builder: job.builder.clone(),
        tag: tag.clone(),
        build_image,
        run_image: stack_config.run_image.clone(),
        run_image_mirrors: stack_config.run_image_mirrors.clone(),
        stack_id: inputs.stack_id.clone(),
        buildpacks,
        order: order_groups(order),
        lifecycle_image,
        entrypoint: planned
            .resolution
            .entrypoint
            .as_ref()
            .map(|e| e.path.clone()),
    })
}

/// One buildpack's layer source, from its pin.
fn publish_buildpack(pin: &BuildpackPin) -> PublishBuildpack {
    let source = match &pin.location {
        BuildpackLocation::Directory { path } => PublishBuildpackSource::Directory(path.clone()),
        BuildpackLocation::Image { reference } => PublishBuildpackSource::Layer {
            image: reference.clone(),
            diff_id: pin.digest.clone(),
        },
    };
    PublishBuildpack {
        id: pin.id.clone(),
        version: pin.version.clone(),
        source,
    }
}
