//! Builds as Kubernetes Pods (`[kpackd] executor = "kubernetes"`): a build job writes
//! the build request the plan pins and hands it to [`executors::kubernetes::Cluster`],
//! which runs the image's published builder as a Pod. Rebases stay in-process.
//!
//! The request pins what a local build would use: the source (a git commit, a blob
//! digest, a source image digest; a path source is pushed as a source image to
//! `source-repository` first), the run image, the builder image at the digest of its
//! last successful publish, and the image's settings. `max-pods` Pods run at once.
//!
//! A failed Pod's kind (see [`super::job::kind_of`] for local builds): the entrypoint's
//! own error, a container that exits or is killed for its memory, a container the
//! cluster refuses to create are the build's; eviction, the deadline, an image that
//! cannot be pulled, a Pod that cannot be scheduled or is deleted by someone else, and
//! the API server's errors are the infrastructure's, tried again.

use std::time::Duration;

use executors::kubernetes::{Cluster, FailureCause, KubeSettings, PodBuild, PodFailure};
use executors::lifecycle::request::{EntrypointRequest, RequestSource, REQUEST_VERSION};
use executors::lifecycle::Phase;
use imageref::ImageRef;
use planner::{Config, Executor};

use super::job::{
    at_digest, extra_tags, image_group, pinned, Job, JobContext, JobFailure, JobSink, Success,
};
use super::source::project_metadata;
use crate::resolve::SourcePin;
use crate::state::{BuildStatus, FailureKind};

/// How much longer than the image's `timeout` kpackd waits for a Pod, which may wait to be
/// scheduled and pulled before its deadline starts, and which the deadline stops.
pub const POD_MARGIN: Duration = Duration::from_secs(180);

/// The cluster of an apply, and what bounds its Pods.
#[derive(Debug)]
pub struct Kube {
    pub cluster: Cluster,
    /// The state's lineage: every Pod's label.
    pub lineage: String,
    /// `max-pods`: the apply's build lane runs no more builds at once.
    pub max_pods: usize,
    pub settings: planner::Kubernetes,
}

#[derive(Debug, thiserror::Error)]
#[error("connect to the Kubernetes cluster: {0}")]
pub struct KubeError(#[from] executors::kubernetes::ConnectError);

impl Kube {
    /// The cluster `config` builds on, or None when its executor is local.
    pub async fn connect(config: &Config, lineage: &str) -> Result<Option<Kube>, KubeError> {
        if config.settings.executor != Executor::Kubernetes {
            return Ok(None);
        }
        let settings = config.kubernetes.clone().unwrap_or_default();
        let mut kube = KubeSettings::new(settings.namespace.clone());
        kube.context = settings.context.clone();
        kube.service_account = settings.service_account.clone();
        kube.image_pull_secrets = settings.image_pull_secrets.clone();
        kube.insecure_registries = config.settings.insecure_registries.clone();
        let cluster = Cluster::connect(kube).await?;
        let max_pods = settings.max_pods.max(1);
        Ok(Some(Kube {
            cluster,
            lineage: lineage.to_string(),
            max_pods,
            settings,
        }))
    }
}

impl From<PodFailure> for JobFailure {
    fn from(failure: PodFailure) -> JobFailure {
        JobFailure {
            message: failure.message,
            kind: match failure.cause {
                FailureCause::Build => FailureKind::Build,
                FailureCause::Infrastructure => FailureKind::Infrastructure,
            },
        }
    }
}

/// Builds `job` as a Pod of `kube`'s cluster.
pub(super) async fn build(
    job: &Job,
    previous: Option<&imageref::Digest>,
    ctx: &JobContext,
    kube: &Kube,
    sink: &JobSink,
) -> Result<Success, JobFailure> {
    let planned = &ctx.planned;
    let image = job.planned_image(planned)?;
    let pins = planned.pins(&job.image);
    let (Some(source), Some(stack)) = (pins.source, pins.stack) else {
        return Err(JobFailure::build(format!(
            "the plan pins no source or stack for \"{}\"",
            job.image
        )));
    };
    let builder = job.builder_image.clone().ok_or_else(|| {
        JobFailure::build(format!(
            "builder \"{}\" has no published builder image to build in (a Pod runs the builder's published image)",
            image.builder
        ))
    })?;
    sink.moved(BuildStatus::ResolvingSource);
    sink.log.note(
        Phase::Prepare,
        &format!(
            "source {} at {}",
            image.source.location(),
            job.inputs.source
        ),
    );
    let request_source = request_source(job, ctx, kube, source).await?;
    let run_image = pinned(&ctx.store, &stack.run_image, &stack.run_image_digest).await?;
    // The builder image's user is its stack's build image's (it is made from it); read
    // there, the builder image is only ever pulled by the cluster.
    let build_image = pinned(&ctx.store, &stack.build_image, &stack.build_image_digest).await?;
    let user = builder_user(ctx, &build_image).await?;
    let additional_tags = extra_tags(image, job.number);
    let previous_image = previous.map(|digest| at_digest(&image.tag, digest));
    let cache_image = match &image.cache {
        planner::Cache::Image(cache) => Some(cache.clone()),
        _ => None,
    };
    let request = EntrypointRequest {
        version: REQUEST_VERSION,
        image: job.image.clone(),
        tag: image.tag.clone(),
        additional_tags: additional_tags.clone(),
        builder_image: builder.clone(),
        run_image,
        source: request_source,
        env: image.env.clone(),
        cache_image,
        previous_image,
        platform: Some(planned.config.settings.platform.clone()),
        default_process: image.default_process.clone(),
        layer_compression: image.layer_compression,
        buildpacks: image_group(image),
        project_descriptor: image.project_descriptor.clone(),
        project_metadata: Some(project_metadata(source)),
    };
    let registries = registries_of(&request);
    let placement = kube.settings.placement_for(&image.kubernetes);
    let pod_build = PodBuild {
        image: job.image.clone(),
        number: job.number,
        lineage: kube.lineage.clone(),
        builder,
        user,
        request,
        registries,
        placement: placement_of(&placement),
        deadline: job.timeout,
    };
    sink.moved(BuildStatus::Preparing);
    sink.log.note(
        Phase::Prepare,
        &format!(
            "building in Pod {} (namespace {})",
            executors::kubernetes::object_name(&job.image, job.number),
            kube.cluster.settings().namespace
        ),
    );
    let result = kube
        .cluster
        .build(&pod_build, &ctx.store.settings().credentials, sink)
        .await?;
    Ok(super::recover::success(
        &result,
        &job.inputs,
        &image.tag,
        &additional_tags,
    ))
}

/// The registries `request` reads or writes, each once, sorted: the Pod gets credentials
/// for these only.
fn registries_of(request: &EntrypointRequest) -> Vec<String> {
    let mut registries: Vec<String> = [&request.tag, &request.run_image, &request.builder_image]
        .into_iter()
        .chain(&request.additional_tags)
        .chain(request.cache_image.as_ref())
        .chain(match &request.source {
            RequestSource::Image { image, .. } => Some(image),
            _ => None,
        })
        .filter_map(|r| r.as_registry().map(|r| r.registry.clone()))
        .collect();
    registries.sort();
    registries.dedup();
    registries
}

/// The request's source: what the plan pinned; a path source pushed as a source image.
async fn request_source(
    job: &Job,
    ctx: &JobContext,
    kube: &Kube,
    source: &SourcePin,
) -> Result<RequestSource, JobFailure> {
    Ok(match source.clone() {
        SourcePin::Git {
            url,
            commit,
            sub_path,
            ..
        } => RequestSource::Git {
            url,
            commit,
            sub_path,
        },
        SourcePin::Blob {
            url,
            digest,
            strip_components,
            sub_path,
            ..
        } => RequestSource::Blob {
            digest: imageref::Digest::parse(&digest).map_err(|e| {
                JobFailure::build(format!("the planned digest {digest:?} of {url}: {e}"))
            })?,
            url,
            strip_components,
            sub_path,
        },
        SourcePin::Image {
            reference,
            digest,
            sub_path,
        } => {
            let image = match &reference {
                ImageRef::Registry(r) => ImageRef::Registry(r.at_digest(digest)),
                ImageRef::Layout(_) => {
                    return Err(JobFailure::build(format!(
                        "source image {reference} is in an OCI layout, which a Pod cannot read"
                    )))
                }
            };
            RequestSource::Image { image, sub_path }
        }
        SourcePin::Path { path, sub_path, .. } => {
            let repository = kube.settings.source_repository.as_ref().ok_or_else(|| {
                JobFailure::build(
                    "a path source needs `[kubernetes] source-repository` to reach a Pod",
                )
            })?;
            let to = repository.with_tag(&source_tag(&job.image, job.number));
            let work = ctx.layout.build_work_dir(&job.image, job.number);
            std::fs::create_dir_all(&work).map_err(|e| {
                JobFailure::infrastructure(format!("create {}: {e}", work.display()))
            })?;
            let pushed = executors::source::image::push_path(
                &ctx.store,
                &path,
                sub_path.as_deref(),
                &to,
                &work,
            )
            .await;
            let _ = std::fs::remove_dir_all(&work);
            let pushed = pushed.map_err(|e| JobFailure::from_error(&e))?;
            RequestSource::Image {
                image: pushed.image,
                sub_path: None,
            }
        }
    })
}

/// The tag a path source is pushed under: `<image>-<number>`, as a tag may spell it.
fn source_tag(image: &str, number: u64) -> String {
    let clean: String = image
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    format!("{}-{number}", clean.trim_start_matches(['.', '-']))
}

/// The builder's CNB user and group: `CNB_USER_ID`, `CNB_GROUP_ID` of the build image
/// `builder` it was made from.
async fn builder_user(ctx: &JobContext, builder: &ImageRef) -> Result<(u32, u32), JobFailure> {
    let image = ctx.store.image(builder).await.map_err(|e| {
        JobFailure::from_error(&e).context(format_args!("read the build image {builder}"))
    })?;
    let env = image
        .config
        .config
        .as_ref()
        .and_then(|c| c.env.clone())
        .unwrap_or_default();
    let id = |name: &str| -> Result<u32, JobFailure> {
        let value = env
            .iter()
            .find_map(|e| e.strip_prefix(name)?.strip_prefix('='))
            .ok_or_else(|| {
                JobFailure::build(format!("the build image {builder} does not set {name}"))
            })?;
        value.trim().parse().map_err(|_| {
            JobFailure::build(format!(
                "the build image {builder}: {name}={value:?} is not a numeric id"
            ))
        })
    };
    let (uid, gid) = (id("CNB_USER_ID")?, id("CNB_GROUP_ID")?);
    if uid == 0 {
        return Err(JobFailure::build(format!(
            "the build image {builder} builds as root (CNB_USER_ID=0); a build Pod runs as non-root"
        )));
    }
    Ok((uid, gid))
}

/// The executors' placement from kpack.toml's.
fn placement_of(placement: &planner::PodPlacement) -> executors::kubernetes::Placement {
    let resources = placement.resources.clone().unwrap_or_default();
    executors::kubernetes::Placement {
        requests: resources.requests,
        limits: resources.limits,
        node_selector: placement.node_selector.clone().unwrap_or_default(),
        tolerations: placement
            .tolerations
            .iter()
            .flatten()
            .map(|t| executors::kubernetes::Toleration {
                key: t.key.clone(),
                operator: t.operator.clone(),
                value: t.value.clone(),
                effect: t.effect.clone(),
                toleration_seconds: t.toleration_seconds,
            })
            .collect(),
    }
}
