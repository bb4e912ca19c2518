//! `kpackd apply`: executes a [`Plan`] — forgets the images gone from kpack.toml, then
//! runs every build and rebase with bounded concurrency, recording every step. Builds
//! and rebases have limits of their own: a rebase only moves manifests and configs, so
//! a stack patch rebases many images at once beside the builds.
//!
//! The shape is a dispatcher and its jobs. The [`Dispatcher`] alone owns the state and
//! the run: it queues the planned builds, starts jobs while there is room, and handles
//! one event at a time — a job's step, a job's end, or cancellation. Jobs ([`job`]) do
//! the work through the executors and report over a channel; they never write the
//! state, so every transition is persisted in order, by one writer, as one SQLite
//! transaction. Images do not depend on each other, so a failed build never stops the
//! others.
//!
//! Cancellation (Ctrl-C, SIGTERM): no new job starts, running jobs are dropped (their
//! sandboxed processes die with them), and every build not ended is recorded
//! `canceled`. A process killed outright leaves builds in a running status; the next
//! writer marks them `interrupted` ([`State::mark_interrupted`]) and plans them again.

pub mod job;
pub mod pod;
pub mod publish;
pub mod recover;
mod source;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use executors::oci::ImageStore;
use imageref::Digest;
use planner::plan::{Action, BuilderAction, BuilderChange, Change};
use planner::Reason;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::logs::delete_logs;
use crate::planning::Planned;
use crate::state::{
    Build, BuildId, BuildStatus, NewBuild, NewPublish, Outcome, Publish, PublishId, PublishOutcome,
    PublishStatus, State, StateError,
};
use job::{Event, Job, JobContext, JobKind, Success};
use publish::PublishJob;

/// The order of a build's steps: a job may report a later step without the ones
/// between (a phase with nothing to do), and the dispatcher records each one it passed.
pub(crate) const BUILD_STEPS: [BuildStatus; 5] = [
    BuildStatus::ResolvingSource,
    BuildStatus::Preparing,
    BuildStatus::Detecting,
    BuildStatus::Building,
    BuildStatus::Exporting,
];

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("image \"{image}\" is in the plan but not in {config}")]
    UnknownImage { image: String, config: String },
    #[error(transparent)]
    Kubernetes(#[from] pod::KubeError),
}

/// How apply runs.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Builds at once (with the Kubernetes executor, `max-pods` instead).
    pub concurrency: usize,
    /// Rebases at once, besides the builds.
    pub rebase_concurrency: usize,
}

/// What an observer of the run is told (progress bars, plain lines, the watch daemon).
pub trait Observer: Send + Sync {
    /// A build or rebase moved to `status` (queued included).
    fn moved(&self, build: &Build);
    /// An image's state was dropped.
    fn forgotten(&self, _image: &str) {}
    /// A running build printed `line` (its latest, not every line: see `kpackd logs`).
    fn said(&self, _image: &str, _number: u64, _line: &str) {}
    /// A publish of a builder image moved to `status` (queued included).
    fn publish_moved(&self, _publish: &Publish) {}
}

/// An observer that says nothing.
#[derive(Debug, Default)]
pub struct Silent;

impl Observer for Silent {
    fn moved(&self, _build: &Build) {}
}

/// The outcome of an apply, one result per image the plan touched.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    pub results: Vec<ImageResult>,
    /// Whether the run was canceled.
    pub canceled: bool,
    /// One result per builder published; absent when none was.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub publishes: Vec<PublishResult>,
}

impl ApplyReport {
    /// Whether anything failed or was canceled (a failed publish included).
    pub fn failed(&self) -> bool {
        self.canceled
            || self.results.iter().any(|r| !r.status.is_success())
            || self
                .publishes
                .iter()
                .any(|p| p.status != PublishStatus::Succeeded)
    }
}

/// What happened to one builder the plan published.
#[derive(Debug, Clone, Serialize)]
pub struct PublishResult {
    pub builder: String,
    /// The publish's number (`kpackd builds --builder NAME`).
    pub publish: u64,
    pub status: PublishStatus,
    pub reasons: Vec<Reason>,
    /// The builder image's manifest digest.
    pub digest: Option<Digest>,
    pub tag: String,
    /// Why it failed.
    pub failure: Option<String>,
    pub log: PathBuf,
    pub duration_ms: Option<u64>,
}

/// What happened to one image.
#[derive(Debug, Clone, Serialize)]
pub struct ImageResult {
    pub image: String,
    pub action: Action,
    /// The build's number; absent for `forget`.
    pub build: Option<u64>,
    pub status: ResultStatus,
    pub reasons: Vec<Reason>,
    /// The manifest digest of the image made.
    pub digest: Option<Digest>,
    /// Every tag pushed.
    pub tags: Vec<String>,
    /// The step a failed build failed in, and why.
    pub failure: Option<FailureReport>,
    pub log: Option<PathBuf>,
    pub duration_ms: Option<u64>,
}

/// How an image came out of an apply: the status its build or rebase ended in
/// (`succeeded`, `failed` or `canceled`), or `forgotten`. Serialises as that name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultStatus {
    Ended(BuildStatus),
    Forgotten,
}

impl ResultStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultStatus::Ended(status) => status.as_str(),
            ResultStatus::Forgotten => "forgotten",
        }
    }

    /// Whether the image got what the plan asked: built, rebased or forgotten.
    pub fn is_success(self) -> bool {
        matches!(
            self,
            ResultStatus::Ended(BuildStatus::Succeeded) | ResultStatus::Forgotten
        )
    }
}

impl PartialEq<BuildStatus> for ResultStatus {
    fn eq(&self, other: &BuildStatus) -> bool {
        *self == ResultStatus::Ended(*other)
    }
}

impl std::fmt::Display for ResultStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ResultStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FailureReport {
    pub step: BuildStatus,
    pub message: String,
}

/// Executes `plan` against `state`: the caller holds the state lock and has checked
/// that the plan is current. Returns when every job ended or, after `cancel`, when
/// every running job was stopped.
pub async fn apply(
    planned: Arc<Planned>,
    state: &mut State,
    store: ImageStore,
    options: &ApplyOptions,
    observer: &dyn Observer,
    cancel: CancellationToken,
) -> Result<ApplyReport, ApplyError> {
    let kubernetes = pod::Kube::connect(&planned.config, state.lineage()).await?;
    let mut options = options.clone();
    if let Some(kube) = &kubernetes {
        options.concurrency = kube.max_pods;
    }
    let context = Arc::new(JobContext {
        layout: state.layout(),
        planned: planned.clone(),
        store,
        kubernetes,
    });
    let mut dispatcher = Dispatcher::new(state, context.clone(), &options, observer);
    for change in &planned.plan.builders {
        if change.action == BuilderAction::Publish {
            dispatcher.queue_publish(change)?;
        }
    }
    for change in &planned.plan.changes {
        match change.action {
            Action::Forget => dispatcher.forget(change)?,
            Action::Build | Action::Rebase => dispatcher.queue(change)?,
            Action::Noop | Action::Blocked => {}
        }
    }
    let report = dispatcher.run(cancel).await;
    // Pods of builds stopped by cancellation are being deleted: wait for that.
    if let Some(kube) = &context.kubernetes {
        kube.cluster.settle().await;
    }
    report
}

struct Dispatcher<'a> {
    state: &'a mut State,
    context: Arc<JobContext>,
    observer: &'a dyn Observer,
    /// Builds, then rebases, waiting to start, in plan order.
    builds: Lane,
    rebases: Lane,
    running: HashMap<BuildId, Running>,
    /// Publishes waiting, as many at once as builds; their builders' images wait for
    /// them (`publishing` holds the builders queued or running).
    publishes: VecDeque<PublishJob>,
    publish_limit: usize,
    running_publishes: HashMap<PublishId, Instant>,
    publishing: BTreeSet<String>,
    publish_results: BTreeMap<String, PublishResult>,
    tasks: JoinSet<()>,
    events: mpsc::UnboundedSender<Event>,
    inbox: mpsc::UnboundedReceiver<Event>,
    results: BTreeMap<String, ImageResult>,
}

struct Running {
    image: String,
    number: u64,
    started: Instant,
    rebase: bool,
}

/// Jobs of one kind waiting, and how many of them may run at once.
struct Lane {
    queue: VecDeque<Job>,
    limit: usize,
    running: usize,
}

impl Lane {
    fn new(limit: usize) -> Lane {
        Lane {
            queue: VecDeque::new(),
            limit: limit.max(1),
            running: 0,
        }
    }

    /// The first job `ready` accepts, if there is room for it (counted as running).
    fn next(&mut self, ready: impl Fn(&Job) -> bool) -> Option<Job> {
        if self.running >= self.limit {
            return None;
        }
        let position = self.queue.iter().position(ready)?;
        let job = self.queue.remove(position)?;
        self.running += 1;
        Some(job)
    }
}

impl<'a> Dispatcher<'a> {
    fn new(
        state: &'a mut State,
        context: Arc<JobContext>,
        options: &ApplyOptions,
        observer: &'a dyn Observer,
    ) -> Dispatcher<'a> {
        let (events, inbox) = mpsc::unbounded_channel();
        Dispatcher {
            state,
            context,
            observer,
            builds: Lane::new(options.concurrency),
            rebases: Lane::new(options.rebase_concurrency),
            running: HashMap::new(),
            publishes: VecDeque::new(),
            publish_limit: options.concurrency.max(1),
            running_publishes: HashMap::new(),
            publishing: BTreeSet::new(),
            publish_results: BTreeMap::new(),
            tasks: JoinSet::new(),
            events,
            inbox,
            results: BTreeMap::new(),
        }
    }

    fn forget(&mut self, change: &Change) -> Result<(), ApplyError> {
        let logs = self.state.forget(&change.image)?;
        delete_logs(&logs);
        self.observer.forgotten(&change.image);
        self.results.insert(
            change.image.clone(),
            ImageResult {
                image: change.image.clone(),
                action: Action::Forget,
                build: None,
                status: ResultStatus::Forgotten,
                reasons: Vec::new(),
                digest: None,
                tags: Vec::new(),
                failure: None,
                log: None,
                duration_ms: None,
            },
        );
        Ok(())
    }

    /// Records the change as a queued build and puts it in line.
    fn queue(&mut self, change: &Change) -> Result<(), ApplyError> {
        let config = &self.context.planned.config;
        let image = config
            .images
            .get(&change.image)
            .ok_or_else(|| ApplyError::UnknownImage {
                image: change.image.clone(),
                config: config.path.display().to_string(),
            })?;
        let Some(inputs) = &change.inputs else {
            return Ok(());
        };
        let kind = match change.action {
            Action::Rebase => JobKind::Rebase {
                buildpacks_used: self.last_success(&change.image)?.map_or_else(
                    || inputs.buildpacks.clone(),
                    |b| b.buildpacks_used.unwrap_or_default(),
                ),
            },
            _ => JobKind::Build {
                previous: self.last_success(&change.image)?.and_then(|b| b.output),
            },
        };
        let tag = image.tag.to_string();
        let build = self.state.begin_build(&NewBuild {
            image: &change.image,
            action: change.action,
            reasons: &change.reasons,
            details: &change.details,
            inputs,
            tag: &tag,
        })?;
        self.observer.moved(&build);
        let lane = match kind {
            JobKind::Rebase { .. } => &mut self.rebases,
            JobKind::Build { .. } => &mut self.builds,
        };
        lane.queue.push_back(Job {
            id: build.id,
            image: change.image.clone(),
            number: build.number,
            kind,
            inputs: inputs.clone(),
            log: build.log.clone(),
            timeout: image.timeout,
            builder_image: None,
        });
        Ok(())
    }

    /// Records the change as a queued publish and puts it in line; the images built
    /// with the builder wait for it.
    fn queue_publish(&mut self, change: &BuilderChange) -> Result<(), ApplyError> {
        let Some(inputs) = &change.inputs else {
            return Ok(());
        };
        let publish = self.state.begin_publish(&NewPublish {
            builder: &change.builder,
            reasons: &change.reasons,
            details: &change.details,
            inputs,
            tag: &change.tag,
        })?;
        self.observer.publish_moved(&publish);
        self.publishing.insert(change.builder.clone());
        self.publishes.push_back(PublishJob {
            id: publish.id,
            builder: change.builder.clone(),
            number: publish.number,
            log: publish.log.clone(),
        });
        Ok(())
    }

    /// Whether a build or rebase may start: its image's builder is not being published.
    fn ready(context: &JobContext, publishing: &BTreeSet<String>, job: &Job) -> bool {
        context
            .planned
            .config
            .images
            .get(&job.image)
            .is_none_or(|image| !publishing.contains(&image.builder))
    }

    fn last_success(&self, image: &str) -> Result<Option<Build>, ApplyError> {
        Ok(self.state.last_succeeded(image)?)
    }

    async fn run(mut self, cancel: CancellationToken) -> Result<ApplyReport, ApplyError> {
        loop {
            while !cancel.is_cancelled() {
                if self.running_publishes.len() < self.publish_limit {
                    if let Some(job) = self.publishes.pop_front() {
                        self.start_publish(job)?;
                        continue;
                    }
                }
                let (context, publishing) = (&self.context, &self.publishing);
                let ready = |job: &Job| Self::ready(context, publishing, job);
                let Some(job) = self.builds.next(ready).or_else(|| self.rebases.next(ready)) else {
                    break;
                };
                self.start(job)?;
            }
            if self.running.is_empty() && self.running_publishes.is_empty() {
                break;
            }
            tokio::select! {
                Some(event) = self.inbox.recv() => self.handle(event)?,
                () = cancel.cancelled() => {
                    self.cancel_all().await?;
                    break;
                }
            }
        }
        let canceled = cancel.is_cancelled();
        if canceled {
            self.cancel_all().await?;
        }
        Ok(ApplyReport {
            results: self.results.into_values().collect(),
            canceled,
            publishes: self.publish_results.into_values().collect(),
        })
    }

    fn start_publish(&mut self, job: PublishJob) -> Result<(), ApplyError> {
        tracing::debug!(builder = %job.builder, number = job.number, "publishing");
        let publish = self.state.start_publish(job.id)?;
        self.observer.publish_moved(&publish);
        self.running_publishes.insert(job.id, Instant::now());
        self.tasks
            .spawn(publish::run(job, self.context.clone(), self.events.clone()));
        Ok(())
    }

    /// Records the end of a publish; its builder's images may start.
    fn end_publish(
        &mut self,
        id: PublishId,
        outcome: PublishOutcome,
        took: Option<Duration>,
    ) -> Result<(), ApplyError> {
        let publish = self.state.finish_publish(id, outcome)?;
        self.observer.publish_moved(&publish);
        self.running_publishes.remove(&id);
        self.publishing.remove(&publish.builder);
        if let Some(failure) = &publish.failure {
            tracing::warn!(builder = %publish.builder, number = publish.number, "publish failed: {failure}");
        }
        self.publish_results.insert(
            publish.builder.clone(),
            PublishResult {
                builder: publish.builder.clone(),
                publish: publish.number,
                status: publish.status,
                reasons: publish.reasons.clone(),
                digest: publish.digest.clone(),
                tag: publish.tag.clone(),
                failure: publish.failure.clone(),
                log: publish.log.clone(),
                duration_ms: took.map(|d| d.as_millis() as u64),
            },
        );
        Ok(())
    }

    fn start(&mut self, mut job: Job) -> Result<(), ApplyError> {
        tracing::debug!(image = %job.image, number = job.number, "starting");
        if self.context.kubernetes.is_some() && matches!(job.kind, JobKind::Build { .. }) {
            job.builder_image = self.published_builder(&job.image)?;
        }
        self.running.insert(
            job.id,
            Running {
                image: job.image.clone(),
                number: job.number,
                started: Instant::now(),
                rebase: matches!(job.kind, JobKind::Rebase { .. }),
            },
        );
        self.tasks
            .spawn(job::run(job, self.context.clone(), self.events.clone()));
        Ok(())
    }

    /// The published image of `image`'s builder: its tag at the digest of its last
    /// successful publish (this apply's publishes end before the builder's images start).
    fn published_builder(&self, image: &str) -> Result<Option<imageref::ImageRef>, ApplyError> {
        let config = &self.context.planned.config;
        let Some(builder) = config.images.get(image).map(|i| &i.builder) else {
            return Ok(None);
        };
        let Some(imageref::ImageRef::Registry(tag)) =
            config.builders.get(builder).and_then(|b| b.tag.as_ref())
        else {
            return Ok(None);
        };
        let digest = self
            .state
            .publishes(Some(builder))?
            .into_iter()
            .rev()
            .find(|p| p.status == PublishStatus::Succeeded)
            .and_then(|p| p.digest);
        Ok(digest.map(|d| imageref::ImageRef::Registry(tag.at_digest(d))))
    }

    fn handle(&mut self, event: Event) -> Result<(), ApplyError> {
        match event {
            Event::Moved { id, status } => {
                self.advance(id, status)?;
            }
            Event::Said { id, latest } => {
                let line = latest.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let (Some(running), Some(line)) = (self.running.get(&id), line) {
                    self.observer.said(&running.image, running.number, &line);
                }
            }
            Event::Published { id, result } => {
                let took = self.running_publishes.get(&id).map(Instant::elapsed);
                let outcome = match result {
                    Ok(published) => PublishOutcome::Succeeded {
                        digest: published.digest,
                    },
                    // Whose fault it was (`failure.kind`) is not recorded for a
                    // publish: a failed publish is planned again whatever the cause,
                    // so nothing would read it yet.
                    Err(failure) => PublishOutcome::Failed {
                        message: failure.message,
                    },
                };
                self.end_publish(id, outcome, took)?;
            }
            Event::Finished { id, result } => {
                let outcome = match result {
                    Ok(success) => {
                        let current = self.current(id)?;
                        if current.action == Action::Build {
                            self.advance(id, BuildStatus::Exporting)?;
                        }
                        let tags = success.tags.clone();
                        (self.finish(id, succeeded(success))?, tags)
                    }
                    Err(failure) => {
                        let outcome = Outcome::Failed {
                            message: failure.message,
                            kind: failure.kind,
                        };
                        (self.finish(id, outcome)?, Vec::new())
                    }
                };
                let (build, tags) = outcome;
                let started = self.running.remove(&id).map(|r| {
                    let lane = if r.rebase {
                        &mut self.rebases
                    } else {
                        &mut self.builds
                    };
                    lane.running = lane.running.saturating_sub(1);
                    r.started
                });
                self.record(&build, tags, started.map(|s| s.elapsed()));
                self.prune(&build.image)?;
            }
        }
        Ok(())
    }

    fn current(&self, id: BuildId) -> Result<Build, ApplyError> {
        Ok(self.state.build(id)?)
    }

    /// Records every step from the build's status up to `to`; a step already passed
    /// is ignored (phases report themselves, a job may report a step twice).
    fn advance(&mut self, id: BuildId, to: BuildStatus) -> Result<(), ApplyError> {
        let build = self.current(id)?;
        if build.status == to || build.status.is_end() {
            return Ok(());
        }
        if build.action == Action::Rebase {
            if build.status.can_transition_to(to, build.action) {
                let build = self.state.transition(id, to)?;
                self.observer.moved(&build);
            }
            return Ok(());
        }
        let from = BUILD_STEPS.iter().position(|s| *s == build.status);
        let Some(target) = BUILD_STEPS.iter().position(|s| *s == to) else {
            return Ok(());
        };
        let first = from.map_or(0, |i| i + 1);
        if first > target {
            return Ok(());
        }
        for step in &BUILD_STEPS[first..=target] {
            let build = self.state.transition(id, *step)?;
            self.observer.moved(&build);
        }
        Ok(())
    }

    fn finish(&mut self, id: BuildId, outcome: Outcome) -> Result<Build, ApplyError> {
        let build = self.state.finish(id, outcome)?;
        self.observer.moved(&build);
        Ok(build)
    }

    fn record(&mut self, build: &Build, tags: Vec<String>, took: Option<Duration>) {
        self.results.insert(
            build.image.clone(),
            ImageResult {
                image: build.image.clone(),
                action: build.action,
                build: Some(build.number),
                status: ResultStatus::Ended(build.status),
                reasons: build.reasons.clone(),
                digest: build.output.clone(),
                tags,
                failure: build.failure.as_ref().map(|f| FailureReport {
                    step: f.step,
                    message: f.message.clone(),
                }),
                log: Some(build.log.clone()),
                duration_ms: took.map(|d| d.as_millis() as u64),
            },
        );
    }

    fn prune(&mut self, image: &str) -> Result<(), ApplyError> {
        if let Some(config) = self.context.planned.config.images.get(image) {
            let dropped =
                self.state
                    .prune_history(image, config.history.success, config.history.failed)?;
            delete_logs(&dropped);
        }
        Ok(())
    }

    /// Stops every running job and records every build not ended as canceled.
    async fn cancel_all(&mut self) -> Result<(), ApplyError> {
        self.tasks.shutdown().await;
        // Steps reported before the jobs stopped are still worth recording.
        while let Ok(event) = self.inbox.try_recv() {
            match event {
                Event::Moved { id, status } => self.advance(id, status)?,
                // A publish that ended before the jobs stopped ended as it said.
                published @ Event::Published { .. } => self.handle(published)?,
                Event::Said { .. } | Event::Finished { .. } => {}
            }
        }
        let running: Vec<(BuildId, Running)> = self.running.drain().collect();
        for (id, run) in running {
            let build = self.finish(id, Outcome::Canceled)?;
            self.record(&build, Vec::new(), Some(run.started.elapsed()));
            tracing::warn!(image = %run.image, number = build.number, "build canceled");
        }
        let publishes: Vec<(PublishId, Option<Duration>)> = self
            .running_publishes
            .iter()
            .map(|(id, started)| (*id, Some(started.elapsed())))
            .chain(self.publishes.drain(..).map(|job| (job.id, None)))
            .collect();
        for (id, took) in publishes {
            self.end_publish(id, PublishOutcome::Canceled, took)?;
        }
        let queued: Vec<Job> = self
            .builds
            .queue
            .drain(..)
            .chain(self.rebases.queue.drain(..))
            .collect();
        for job in queued {
            let build = self.state.finish(job.id, Outcome::Canceled)?;
            self.observer.moved(&build);
            self.record(&build, Vec::new(), None);
        }
        Ok(())
    }
}

fn succeeded(success: Success) -> Outcome {
    Outcome::Succeeded {
        output: success.output,
        buildpacks_used: success.buildpacks_used,
        rebasable: success.rebasable,
    }
}
