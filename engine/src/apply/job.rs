//! One build or rebase, run as its own task: it does the work through the executors and
//! reports each step to the dispatcher as an [`Event`]; it never touches the state.
//!
//! Cancellation is dropping the task: every process a build started (detect and build
//! programs in the sandbox) is killed with it, and the work directory is removed by
//! [`WorkDir`]'s drop.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use executors::lifecycle::descriptor::{OrderEntry, OrderGroup};
use executors::lifecycle::run::{build_image, BuildRequest};
use executors::lifecycle::{LogSink, Phase};
use executors::oci::{ImageStore, OciError};
use executors::rebase::{rebase, RebaseRequest};
use imageref::{Digest, ImageRef};
use planner::plan::Inputs;
use planner::{BuilderKind, Image};
use tokio::sync::mpsc::UnboundedSender;

use super::source::{project_metadata, WorkDir};
use crate::layout::StateLayout;
use crate::logs::BuildLog;
use crate::planning::Planned;
use crate::resolve::{BuildpackLocation, BuildpackPin};
use crate::state::{BuildId, BuildStatus, FailureKind};

/// What a job tells the dispatcher.
#[derive(Debug)]
pub enum Event {
    /// The build moved to its next step.
    Moved { id: BuildId, status: BuildStatus },
    /// The build printed a line: `latest` holds its newest line not yet shown, for
    /// progress displays (the log has every line). One event is pending at a time; lines
    /// printed meanwhile replace the held one, so a chatty build cannot flood the
    /// dispatcher and the newest line always shows.
    Said {
        id: BuildId,
        latest: Arc<std::sync::Mutex<Option<String>>>,
    },
    /// The job ended.
    Finished {
        id: BuildId,
        result: Result<Success, JobFailure>,
    },
    /// A publish ended: what it pushed, or why it failed.
    Published {
        id: crate::state::PublishId,
        result: Result<super::publish::Published, JobFailure>,
    },
}

/// Why a job failed: the message the log and the state keep, and whose fault it was,
/// which decides whether it is tried again (reason `RETRY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure {
    pub message: String,
    pub kind: FailureKind,
}

impl JobFailure {
    /// The build's own failure: the same inputs fail the same way.
    pub fn build(message: impl Into<String>) -> JobFailure {
        JobFailure {
            message: message.into(),
            kind: FailureKind::Build,
        }
    }

    /// A failure outside the build: trying again may succeed.
    pub fn infrastructure(message: impl Into<String>) -> JobFailure {
        JobFailure {
            message: message.into(),
            kind: FailureKind::Infrastructure,
        }
    }

    /// `error` with its causes, of the kind its causes say (see [`kind_of`]).
    pub fn from_error(error: &(dyn std::error::Error + 'static)) -> JobFailure {
        JobFailure {
            message: error_chain(error),
            kind: kind_of(error),
        }
    }

    /// The message with `context` in front.
    pub(super) fn context(mut self, context: impl std::fmt::Display) -> JobFailure {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

/// Whose fault an error is. Outside the build when a cause in its chain is the
/// network, a registry or the disk: an [`OciError`] about reaching, answering or
/// storing (not about what an image holds), or any I/O error, which covers the
/// sandbox's own machinery too. Anything else (a buildpack that failed, no group that
/// passed detection, an invalid buildpack, label or layer) is the build's own.
pub fn kind_of(error: &(dyn std::error::Error + 'static)) -> FailureKind {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(oci) = error.downcast_ref::<OciError>() {
            return match oci {
                OciError::Unreachable { .. }
                | OciError::TimedOut { .. }
                | OciError::Registry { .. }
                | OciError::NotFound { .. }
                | OciError::Unauthorized { .. }
                | OciError::Denied { .. }
                | OciError::DigestMismatch { .. }
                | OciError::Layout { .. }
                | OciError::Io { .. } => FailureKind::Infrastructure,
                OciError::Invalid { .. }
                | OciError::PlatformNotFound { .. }
                | OciError::Credentials { .. }
                | OciError::UnsafeEntry { .. }
                | OciError::Unsupported(_) => FailureKind::Build,
            };
        }
        if error.is::<std::io::Error>() {
            return FailureKind::Infrastructure;
        }
        next = error.source();
    }
    FailureKind::Build
}

/// What a successful build or rebase made.
#[derive(Debug, Clone)]
pub struct Success {
    /// The manifest digest of the image pushed.
    pub output: Digest,
    /// `id@version` → content digest of the buildpacks used.
    pub buildpacks_used: BTreeMap<String, Digest>,
    pub rebasable: bool,
    /// Every tag the image was pushed to.
    pub tags: Vec<String>,
}

/// Everything a job needs, shared by all jobs of one apply.
#[derive(Debug)]
pub struct JobContext {
    pub planned: Arc<Planned>,
    pub store: ImageStore,
    pub layout: StateLayout,
    /// The cluster builds run on as Pods (`executor = "kubernetes"`); None: locally.
    pub kubernetes: Option<super::pod::Kube>,
}

/// A build or rebase as the dispatcher hands it to a task.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: BuildId,
    pub image: String,
    pub number: u64,
    pub kind: JobKind,
    pub inputs: Inputs,
    pub log: PathBuf,
    /// How long the job may run (the image's `timeout`).
    pub timeout: std::time::Duration,
    /// The builder image a Pod builds in: the builder's published tag at the digest of
    /// its last successful publish (Kubernetes builds only).
    pub builder_image: Option<ImageRef>,
}

impl Job {
    /// The job's image in the configuration the plan was made from.
    pub(super) fn planned_image<'p>(&self, planned: &'p Planned) -> Result<&'p Image, JobFailure> {
        planned.image(&self.image).ok_or_else(|| {
            JobFailure::build(format!(
                "image \"{}\" is not in the plan's configuration",
                self.image
            ))
        })
    }
}

#[derive(Debug, Clone)]
pub enum JobKind {
    /// With the image made by the last successful build, for layer reuse.
    Build { previous: Option<Digest> },
    /// With the buildpacks the rebased build used (a rebase does not change them).
    Rebase {
        buildpacks_used: BTreeMap<String, Digest>,
    },
}

/// Runs `job` to its end, reporting to `events`.
pub async fn run(job: Job, ctx: Arc<JobContext>, events: UnboundedSender<Event>) {
    let log = match BuildLog::create(&job.log, &job.image, job.number) {
        Ok(log) => log,
        Err(e) => {
            let message = format!("create the build log {}: {e}", job.log.display());
            let _ = events.send(Event::Finished {
                id: job.id,
                result: Err(JobFailure::infrastructure(message)),
            });
            return;
        }
    };
    let sink = JobSink {
        id: job.id,
        log,
        events: events.clone(),
        latest: Arc::default(),
    };
    let work = async {
        match &job.kind {
            JobKind::Build { previous } => build(&job, previous.as_ref(), &ctx, &sink).await,
            JobKind::Rebase { buildpacks_used } => {
                rebase_job(&job, buildpacks_used.clone(), &ctx, &sink).await
            }
        }
    };
    // Dropping the work on time-out stops it as cancellation does: its processes are
    // killed and its work directory removed (or its Pod deleted). A Pod's own deadline
    // is the timeout; kpackd gives it the time to be scheduled and pulled besides.
    let limit = match (&ctx.kubernetes, &job.kind) {
        (Some(_), JobKind::Build { .. }) => job.timeout + super::pod::POD_MARGIN,
        _ => job.timeout,
    };
    let result = match tokio::time::timeout(limit, work).await {
        Ok(result) => result,
        Err(_) => Err(JobFailure::infrastructure(format!(
            "timed out after {} (the image's `timeout`)",
            humantime::format_duration(job.timeout)
        ))),
    };
    if let Err(failure) = &result {
        sink.log.failure(&failure.message);
    }
    let _ = events.send(Event::Finished { id: job.id, result });
}

/// The build's log, forwarding phase starts to the dispatcher as steps.
pub(super) struct JobSink {
    pub(super) id: BuildId,
    pub(super) log: BuildLog,
    pub(super) events: UnboundedSender<Event>,
    /// The newest line not yet taken by the dispatcher (see [`Event::Said`]).
    latest: Arc<std::sync::Mutex<Option<String>>>,
}

impl JobSink {
    /// The build moved to `status`.
    pub(super) fn moved(&self, status: BuildStatus) {
        let _ = self.events.send(Event::Moved {
            id: self.id,
            status,
        });
    }
}

impl LogSink for JobSink {
    fn line(&self, phase: Phase, buildpack: Option<&str>, line: &str) {
        self.log.line(phase, buildpack, line);
        if line.trim().is_empty() {
            return;
        }
        let line = match buildpack {
            Some(id) => format!("[{id}] {}", line.trim()),
            None => line.trim().to_string(),
        };
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        if latest.replace(line).is_none() {
            let _ = self.events.send(Event::Said {
                id: self.id,
                latest: self.latest.clone(),
            });
        }
    }

    fn phase_started(&self, phase: Phase) {
        self.log.phase_started(phase);
        let status = match phase {
            Phase::Detect => BuildStatus::Detecting,
            Phase::Build => BuildStatus::Building,
            Phase::Export => BuildStatus::Exporting,
            Phase::Prepare => BuildStatus::Preparing,
            Phase::Analyze | Phase::Restore => return,
        };
        self.moved(status);
    }
}

/// Builds `job` (as a Pod under the Kubernetes executor), `previous` being the image's
/// last output, whose layers export may reuse.
async fn build(
    job: &Job,
    previous: Option<&Digest>,
    ctx: &JobContext,
    sink: &JobSink,
) -> Result<Success, JobFailure> {
    if let Some(kube) = &ctx.kubernetes {
        return super::pod::build(job, previous, ctx, kube, sink).await;
    }
    let planned = &ctx.planned;
    let image = job.planned_image(planned)?;
    let pins = planned.pins(&job.image);
    let (Some(source), Some(stack), Some(buildpacks)) = (pins.source, pins.stack, pins.buildpacks)
    else {
        return Err(JobFailure::build(format!(
            "the plan pins no source, stack or buildpacks for \"{}\"",
            job.image
        )));
    };
    // The order: the builder's own, or the builder image's label (read below).
    let assembled = assembled_order(planned, image)?;
    sink.moved(BuildStatus::ResolvingSource);
    let mut work = WorkDir::new(ctx.layout.build_work_dir(&job.image, job.number));
    let app_dir = work.app_dir();
    sink.log.note(
        Phase::Prepare,
        &format!(
            "source {} at {}",
            image.source.location(),
            job.inputs.source
        ),
    );
    work.materialise(ctx, &job.image, source).await?;
    sink.moved(BuildStatus::Preparing);

    let build_ref = pinned(&ctx.store, &stack.build_image, &stack.build_image_digest).await?;
    let run_ref = pinned(&ctx.store, &stack.run_image, &stack.run_image_digest).await?;
    let order = match assembled {
        Some(order) => order,
        None => builder_order(&ctx.store, &build_ref).await?,
    };
    let buildpack_dirs = buildpack_dirs(ctx, buildpacks, sink).await?;
    let request = BuildRequest {
        image: job.image.clone(),
        tag: image.tag.clone(),
        additional_tags: extra_tags(image, job.number),
        build_image: build_ref,
        run_image: run_ref,
        buildpack_dirs,
        order,
        image_group: image_group(image),
        project_descriptor: image.project_descriptor.clone(),
        app_dir,
        env: image.env.clone(),
        network: image.network,
        default_process: image.default_process.clone(),
        cache: !matches!(image.cache, planner::Cache::Disabled),
        cache_image: match &image.cache {
            planner::Cache::Image(cache) => Some(cache.clone()),
            _ => None,
        },
        work_root: ctx.layout.work_root(),
        stacks_dir: ctx.layout.stacks_dir(),
        cache_dir: ctx.layout.image_cache_dir(&job.image),
        previous_image: previous.map(|digest| at_digest(&image.tag, digest)),
        project_metadata: Some(project_metadata(source)),
        layer_compression: image.layer_compression,
    };
    let result = build_image(&ctx.store, &request, sink).await;
    work.ended = true;
    let result = result.map_err(|e| JobFailure::from_error(&e))?;
    // Only what the builder provided: an inline buildpack of the project descriptor is
    // part of the source, and changes with it.
    let buildpacks_used = result
        .buildpacks
        .iter()
        .filter_map(|(id, version)| {
            let key = format!("{id}@{version}");
            let digest = job.inputs.buildpacks.get(&key)?.clone();
            Some((key, digest))
        })
        .collect();
    let mut tags = vec![image.tag.to_string()];
    tags.extend(request.additional_tags.iter().map(ToString::to_string));
    Ok(Success {
        output: result.digest,
        buildpacks_used,
        rebasable: result.rebasable,
        tags,
    })
}

/// The order groups of `image`'s builder when kpackd assembles it; `None` for a builder
/// image, whose order is its label.
fn assembled_order(
    planned: &Planned,
    image: &Image,
) -> Result<Option<Vec<OrderGroup>>, JobFailure> {
    match planned.config.builders.get(&image.builder).map(|b| &b.kind) {
        Some(BuilderKind::Assembled { order, .. }) => Ok(Some(order_groups(order))),
        Some(BuilderKind::Image(_)) => Ok(None),
        None => Err(JobFailure::build(format!(
            "builder \"{}\" is not in the configuration",
            image.builder
        ))),
    }
}

/// The directory of every pinned buildpack: those from buildpackage and builder images are
/// unpacked first.
async fn buildpack_dirs(
    ctx: &JobContext,
    buildpacks: &BTreeMap<String, BuildpackPin>,
    sink: &JobSink,
) -> Result<Vec<PathBuf>, JobFailure> {
    let mut dirs = Vec::new();
    for pin in buildpacks.values() {
        match &pin.location {
            BuildpackLocation::Directory { path } => dirs.push(path.clone()),
            BuildpackLocation::Image { reference } => {
                let dir = executors::lifecycle::buildpackage::materialise(
                    &ctx.store,
                    reference,
                    &pin.id,
                    &pin.version,
                    &pin.digest,
                    &ctx.layout.buildpacks_dir(),
                    sink,
                )
                .await
                .map_err(|e| JobFailure::from_error(&e))?;
                dirs.push(dir);
            }
        }
    }
    Ok(dirs)
}

async fn rebase_job(
    job: &Job,
    buildpacks_used: BTreeMap<String, Digest>,
    ctx: &JobContext,
    sink: &JobSink,
) -> Result<Success, JobFailure> {
    let planned = &ctx.planned;
    let image = job.planned_image(planned)?;
    let stack = planned.pins(&job.image).stack.ok_or_else(|| {
        JobFailure::build(format!("the plan pins no stack for \"{}\"", job.image))
    })?;
    sink.moved(BuildStatus::Rebasing);
    let last = job
        .inputs
        .last_image
        .as_ref()
        .ok_or_else(|| JobFailure::build("the plan names no image to rebase"))?;
    let current = at_digest(&image.tag, last);
    let new_run_image = pinned(&ctx.store, &stack.run_image, &stack.run_image_digest).await?;
    let mut tags = vec![image.tag.clone()];
    tags.extend(extra_tags(image, job.number));
    sink.log.note(
        Phase::Export,
        &format!(
            "rebasing {} onto run image {}",
            image.tag, stack.run_image_digest
        ),
    );
    let request = RebaseRequest {
        image: current,
        run_image: new_run_image,
        tags: tags.clone(),
        expected_stack_id: Some(stack.stack_id.clone()),
        force: false,
    };
    let result = rebase(&ctx.store, &request)
        .await
        .map_err(|e| JobFailure::from_error(&e))?;
    sink.log.note(
        Phase::Export,
        &format!(
            "rebased: {} (run image top layer {} → {}; {} app layers kept, {} bytes uploaded)",
            result.digest,
            result.old_run_image.top_layer,
            result.new_run_image.top_layer,
            result.app_layers,
            result.bytes_uploaded
        ),
    );
    Ok(Success {
        output: result.digest,
        buildpacks_used,
        rebasable: true,
        tags: tags.iter().map(ToString::to_string).collect(),
    })
}

/// The image's additional tags and its build-number tag, kpack's `b<N>.<yyyymmdd>.<hhmmss>`
/// (UTC); in an OCI layout the ref name is `<name>.b<N>.<yyyymmdd>.<hhmmss>`.
pub fn extra_tags(image: &Image, number: u64) -> Vec<ImageRef> {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    // 2026-11-24T10:45:00Z → 20261124.104500
    let digits: String = stamp.chars().filter(char::is_ascii_digit).collect();
    let build_tag = format!("b{number}.{}.{}", &digits[..8], &digits[8..14]);
    let numbered = match &image.tag {
        ImageRef::Registry(_) => image.tag.with_tag(&build_tag),
        ImageRef::Layout(layout) => {
            let name = layout.name.as_deref().unwrap_or(&image.name);
            image.tag.with_tag(&format!("{name}.{build_tag}"))
        }
    };
    let mut tags = image.additional_tags.clone();
    tags.push(numbered);
    tags
}

/// The image the plan pinned: a registry reference by digest as is; an image in a
/// layout (where a ref name is all there is) checked to still be the planned digest.
pub(super) async fn pinned(
    store: &ImageStore,
    reference: &ImageRef,
    planned: &Digest,
) -> Result<ImageRef, JobFailure> {
    if let ImageRef::Layout(_) = reference {
        let now = store
            .resolve(reference)
            .await
            .map_err(|e| JobFailure::from_error(&e))?;
        if now.image != *planned && now.digest != *planned {
            return Err(JobFailure::build(format!(
                "{reference} is {} now, not {planned} as planned: plan again",
                now.digest
            )));
        }
    }
    Ok(reference.clone())
}

/// The image at `tag` with `digest`: a previous build's output, or the image to rebase.
pub(super) fn at_digest(tag: &ImageRef, digest: &Digest) -> ImageRef {
    match tag {
        ImageRef::Registry(r) => ImageRef::Registry(r.at_digest(digest.clone())),
        ImageRef::Layout(_) => tag.clone(),
    }
}

/// An error and its causes on one line each, as logs and the summary show them.
pub use executors::oci::error_chain;

/// The lifecycle's order from the builder's order in kpack.toml.
pub(super) fn order_groups(order: &[planner::Group]) -> Vec<OrderGroup> {
    order
        .iter()
        .map(|group| OrderGroup {
            group: group
                .buildpacks
                .iter()
                .map(|bp| OrderEntry {
                    id: bp.id.clone(),
                    version: bp.version.clone().unwrap_or_default(),
                    optional: bp.optional,
                })
                .collect(),
        })
        .collect()
}

/// The image's own group (kpack.toml `buildpacks`), in the lifecycle's form.
pub(super) fn image_group(image: &Image) -> Option<OrderGroup> {
    if image.buildpacks.is_empty() {
        return None;
    }
    Some(
        order_groups(&[planner::Group {
            buildpacks: image.buildpacks.clone(),
        }])
        .remove(0),
    )
}

/// The label a builder image keeps its order in (platform spec: builder image).
const BUILDER_ORDER_LABEL: &str = cnb::labels::BUILDPACK_ORDER;

/// The order of the builder image `builder`, from its `io.buildpacks.buildpack.order`
/// label (the shape of `order.toml`'s groups, as JSON).
async fn builder_order(
    store: &executors::oci::ImageStore,
    builder: &ImageRef,
) -> Result<Vec<OrderGroup>, JobFailure> {
    let image = store.image(builder).await.map_err(|e| {
        JobFailure::from_error(&e).context(format_args!("read the builder image {builder}"))
    })?;
    let label = image
        .config
        .labels()
        .get(BUILDER_ORDER_LABEL)
        .cloned()
        .ok_or_else(|| {
            JobFailure::build(format!(
                "the builder image {builder} has no {BUILDER_ORDER_LABEL} label"
            ))
        })?;
    serde_json::from_str(&label).map_err(|e| {
        JobFailure::build(format!(
            "the builder image {builder}: invalid {BUILDER_ORDER_LABEL}: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_the_builds_own_unless_a_cause_is_the_network_a_registry_or_the_disk() {
        #[derive(Debug, thiserror::Error)]
        #[error("export")]
        struct Wrapper(#[source] Box<dyn std::error::Error + Send + Sync>);
        let wrap = |e: Box<dyn std::error::Error + Send + Sync>| Wrapper(e);

        let unreachable = OciError::Unreachable {
            registry: "registry.example".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(
            kind_of(&wrap(Box::new(unreachable))),
            FailureKind::Infrastructure
        );
        let server = OciError::Registry {
            reference: "r".into(),
            status: Some(503),
            message: "busy".into(),
        };
        assert_eq!(kind_of(&server), FailureKind::Infrastructure);
        let disk = std::io::Error::from_raw_os_error(28);
        assert_eq!(kind_of(&wrap(Box::new(disk))), FailureKind::Infrastructure);

        let invalid = OciError::Invalid {
            what: "manifest".into(),
            reason: "not JSON".into(),
        };
        assert_eq!(kind_of(&wrap(Box::new(invalid))), FailureKind::Build);
        let failed = executors::lifecycle::build::BuildError::UnknownBuildpack {
            id: "a".into(),
            version: "1".into(),
        };
        assert_eq!(kind_of(&failed), FailureKind::Build);
    }

    #[test]
    fn error_chains_name_every_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("could not list the refs of x")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(
            error_chain(&e),
            "could not list the refs of x: connection refused"
        );
    }
}
