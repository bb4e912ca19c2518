//! Builds as Kubernetes Pods: one Pod of the published builder image per build, running
//! its build entrypoint (`/cnb/lifecycle/kpackd build`, see [`crate::lifecycle::request`])
//! with the request and the registry credentials mounted from two Secrets.
//!
//! - [`Cluster::connect`]: a client from the kubeconfig (its current context, or the one
//!   named) or, without a kubeconfig, the Pod's in-cluster account.
//! - [`Cluster::build`]: creates the Pod, then its Secrets (owned by the Pod, so the
//!   cluster deletes them with it; the Pod waits for its Secret volumes), follows the Pod
//!   ([`follow`]) with its log streamed into the build's [`LogSink`], reads the result from
//!   its termination message, and deletes the Pod and its Secrets. Dropping the future
//!   deletes them too ([`Cleanup`]); [`Cluster::settle`] waits for those deletes.
//! - [`Cluster::build_pods`]: the Pods of one state (its lineage label), for recovery
//!   after kpackd was killed: [`Cluster::follow_existing`] follows one to its end,
//!   [`Cluster::delete_build`] removes one.
//!
//! Every object carries the labels `kpackd.dev/image`, `kpackd.dev/build` (the build's
//! number) and `kpackd.dev/lineage` (the state's lineage): two states sharing a namespace
//! never touch each other's Pods.

mod follow;
mod spec;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use tokio_util::task::TaskTracker;

use crate::lifecycle::request::{EntrypointRequest, EntrypointResult};
use crate::lifecycle::LogSink;
use crate::oci::{error_chain, Credential, CredentialSource};
use imageref::ImageRef;

pub use follow::translate_line;
pub use spec::{object_name, Placement, Toleration, REQUEST_PATH};

/// The label naming the image a build Pod builds (its name, made a label value).
pub const IMAGE_LABEL: &str = "kpackd.dev/image";
/// The label holding the build's number.
pub const BUILD_LABEL: &str = "kpackd.dev/build";
/// The label holding the state's lineage.
pub const LINEAGE_LABEL: &str = "kpackd.dev/lineage";
/// The annotation holding the image's name exactly as kpack.toml writes it.
pub const IMAGE_ANNOTATION: &str = "kpackd.dev/image";

/// Where the cluster is and what every build Pod gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSettings {
    pub namespace: String,
    /// The kubeconfig context; None: the current one, or in-cluster without kubeconfig.
    pub context: Option<String>,
    /// The Pods' `serviceAccountName`; its token is never mounted.
    pub service_account: Option<String>,
    /// Secrets the kubelet pulls the builder image with, besides the build's own.
    pub image_pull_secrets: Vec<String>,
    /// Registries the entrypoint speaks plain HTTP to (`--insecure-registry`).
    pub insecure_registries: Vec<String>,
    /// How long a Pod may fail to pull its image, or stay unscheduled or waiting for its
    /// container to be created, before the build fails.
    pub start_grace: Duration,
}

impl KubeSettings {
    /// The settings for `namespace`, with the default bounds.
    pub fn new(namespace: impl Into<String>) -> KubeSettings {
        KubeSettings {
            namespace: namespace.into(),
            context: None,
            service_account: None,
            image_pull_secrets: Vec::new(),
            insecure_registries: Vec::new(),
            start_grace: DEFAULT_START_GRACE,
        }
    }
}

/// How long a Pod may wait to start (image pull errors, unschedulable) by default.
pub const DEFAULT_START_GRACE: Duration = Duration::from_secs(60);

/// One build, as a Pod runs it.
#[derive(Debug, Clone)]
pub struct PodBuild {
    /// The image's name in kpack.toml.
    pub image: String,
    /// The build's number.
    pub number: u64,
    /// The state's lineage.
    pub lineage: String,
    /// The builder image, pinned by digest: the Pod's container image.
    pub builder: ImageRef,
    /// The builder's CNB user and group (`CNB_USER_ID`, `CNB_GROUP_ID`).
    pub user: (u32, u32),
    /// What the entrypoint builds.
    pub request: EntrypointRequest,
    /// Registries the build reads or writes: their credentials go into its docker config.
    pub registries: Vec<String>,
    pub placement: Placement,
    /// The Pod's `activeDeadlineSeconds`.
    pub deadline: Duration,
}

/// Whose fault a failed Pod is, as the engine records it (see [`PodFailure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCause {
    /// The build's own: the entrypoint reported an error, the container failed or was
    /// killed for its memory, its configuration was refused. The same inputs fail the
    /// same way.
    Build,
    /// The cluster's or the network's: the API server, eviction, the deadline, an image
    /// that cannot be pulled, a Pod that cannot be scheduled or was deleted by someone
    /// else. Trying again may succeed.
    Infrastructure,
}

/// Why a build Pod did not give a result: the message (the Kubernetes reason and its
/// message when there is one) and whose fault it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PodFailure {
    pub message: String,
    pub cause: FailureCause,
}

impl PodFailure {
    pub(crate) fn build(message: impl Into<String>) -> PodFailure {
        PodFailure {
            message: message.into(),
            cause: FailureCause::Build,
        }
    }

    pub(crate) fn infrastructure(message: impl Into<String>) -> PodFailure {
        PodFailure {
            message: message.into(),
            cause: FailureCause::Infrastructure,
        }
    }

    pub(crate) fn api(what: &str, error: &kube::Error) -> PodFailure {
        PodFailure::infrastructure(format!("{what}: {}", error_chain(error)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("read the kubeconfig: {0}")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error("no kubeconfig, and not in a cluster: {0}")]
    InCluster(#[source] kube::config::InClusterError),
    #[error("make the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// A build Pod of this state, found by its labels.
#[derive(Debug, Clone)]
pub struct BuildPod {
    /// The Pod's name.
    pub name: String,
    pub image: String,
    pub number: u64,
}

/// The cluster builds run on.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    settings: KubeSettings,
    cleanup: TaskTracker,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A client for the cluster `settings` name: the kubeconfig (`KUBECONFIG`, else
    /// `~/.kube/config`) with its current context or `settings.context`; without a
    /// kubeconfig (and no context asked for), the in-cluster service account.
    pub async fn connect(settings: KubeSettings) -> Result<Cluster, ConnectError> {
        let options = kube::config::KubeConfigOptions {
            context: settings.context.clone(),
            ..Default::default()
        };
        let config = match kube::Config::from_kubeconfig(&options).await {
            Ok(config) => config,
            Err(error) if settings.context.is_none() && !kubeconfig_exists() => {
                tracing::debug!(%error, "no kubeconfig; using the in-cluster account");
                kube::Config::incluster().map_err(ConnectError::InCluster)?
            }
            Err(error) => return Err(ConnectError::Kubeconfig(error)),
        };
        let client = Client::try_from(config).map_err(ConnectError::Client)?;
        Ok(Cluster {
            client,
            settings,
            cleanup: TaskTracker::new(),
        })
    }

    pub fn settings(&self) -> &KubeSettings {
        &self.settings
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }

    /// Runs `build` as a Pod to its end; its log lines go to `logs` as the entrypoint
    /// prints them, its phases (`===> BUILD`) as [`LogSink::phase_started`]. The Pod and
    /// its Secrets are deleted when it ends, and when this future is dropped.
    pub async fn build(
        &self,
        build: &PodBuild,
        credentials: &CredentialSource,
        logs: &dyn LogSink,
    ) -> Result<EntrypointResult, PodFailure> {
        let name = object_name(&build.image, build.number);
        let docker_config = docker_config(credentials, &build.registries)?;
        let pod = spec::pod(&name, build, &self.settings);
        let guard = Cleanup::new(self, &name);
        let created = match self.pods().create(&PostParams::default(), &pod).await {
            Ok(created) => created,
            Err(kube::Error::Api(status)) if status.code == 409 => {
                // Left by a kpackd that died before it could record the build as
                // started: a build of the same number is this build.
                tracing::warn!(pod = %name, "a build Pod of this number exists; replacing it");
                self.delete_objects(&name).await;
                self.wait_gone(&name).await?;
                self.pods()
                    .create(&PostParams::default(), &pod)
                    .await
                    .map_err(|e| PodFailure::api(&format!("create the Pod {name}"), &e))?
            }
            Err(e) => return Err(PodFailure::api(&format!("create the Pod {name}"), &e)),
        };
        let owner = spec::owner(&created);
        let secrets = [
            spec::request_secret(&name, build, &owner)?,
            spec::registry_secret(&name, build, &owner, &docker_config),
        ];
        for secret in &secrets {
            let secret_name = secret.metadata.name.as_deref().unwrap_or_default();
            self.secrets()
                .create(&PostParams::default(), secret)
                .await
                .map_err(|e| PodFailure::api(&format!("create the Secret {secret_name}"), &e))?;
        }
        let outcome = follow::follow(self, &name, logs).await;
        self.delete_objects(&name).await;
        guard.disarm();
        outcome
    }

    /// Follows the existing build Pod `name` (found by [`Cluster::build_pods`]) to its
    /// end, as [`Cluster::build`] does, and deletes it.
    pub async fn follow_existing(
        &self,
        name: &str,
        logs: &dyn LogSink,
    ) -> Result<EntrypointResult, PodFailure> {
        let guard = Cleanup::new(self, name);
        let outcome = follow::follow(self, name, logs).await;
        self.delete_objects(name).await;
        guard.disarm();
        outcome
    }

    /// The build Pods of the state with `lineage`.
    pub async fn build_pods(&self, lineage: &str) -> Result<Vec<BuildPod>, PodFailure> {
        let selector = format!("{LINEAGE_LABEL}={lineage}");
        let list = self
            .pods()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| PodFailure::api("list the build Pods", &e))?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|pod| {
                let metadata = pod.metadata;
                let name = metadata.name?;
                let number = metadata.labels?.get(BUILD_LABEL)?.parse().ok()?;
                let image = metadata.annotations?.get(IMAGE_ANNOTATION)?.clone();
                Some(BuildPod {
                    name,
                    image,
                    number,
                })
            })
            .collect())
    }

    /// Deletes the build Pod `name` and its Secrets.
    pub async fn delete_build(&self, name: &str) {
        self.delete_objects(name).await;
    }

    /// Waits until every delete started by a dropped build has been sent.
    pub async fn settle(&self) {
        self.cleanup.close();
        self.cleanup.wait().await;
        self.cleanup.reopen();
    }

    /// Deletes the Pod and its Secrets (a real cluster would delete the Secrets with
    /// the Pod, later); one already gone is fine.
    async fn delete_objects(&self, name: &str) {
        delete_objects(self.pods(), self.secrets(), name).await;
    }

    /// Waits until the Pod `name` is gone (a replaced Pod's delete takes its grace period).
    async fn wait_gone(&self, name: &str) -> Result<(), PodFailure> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            match self.pods().get_opt(name).await {
                Ok(None) => return Ok(()),
                Ok(Some(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Ok(Some(_)) => {
                    return Err(PodFailure::infrastructure(format!(
                        "the Pod {name} was not deleted within two minutes"
                    )))
                }
                Err(e) => return Err(PodFailure::api(&format!("read the Pod {name}"), &e)),
            }
        }
    }
}

async fn delete_objects(pods: Api<Pod>, secrets: Api<Secret>, name: &str) {
    let params = DeleteParams::background();
    let report = |what: String, result: Result<(), kube::Error>| match result {
        Ok(()) => {}
        Err(kube::Error::Api(status)) if status.is_not_found() => {}
        Err(error) => tracing::warn!(error = %error_chain(&error), "cannot delete {what}"),
    };
    report(
        format!("the Pod {name}"),
        pods.delete(name, &params).await.map(|_| ()),
    );
    for secret in spec::secret_names(name) {
        report(
            format!("the Secret {secret}"),
            secrets.delete(&secret, &params).await.map(|_| ()),
        );
    }
}

/// Deletes a build's Pod and Secrets when dropped before [`Cleanup::disarm`]: a canceled
/// or timed-out build leaves nothing running. The delete runs as its own task, which
/// [`Cluster::settle`] waits for.
struct Cleanup {
    armed: Option<(Api<Pod>, Api<Secret>, String, TaskTracker)>,
}

impl Cleanup {
    fn new(cluster: &Cluster, name: &str) -> Cleanup {
        Cleanup {
            armed: Some((
                cluster.pods(),
                cluster.secrets(),
                name.to_string(),
                cluster.cleanup.clone(),
            )),
        }
    }

    fn disarm(mut self) {
        self.armed = None;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Some((pods, secrets, name, tracker)) = self.armed.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                tracing::info!(pod = %name, "build stopped; deleting its Pod");
                tracker.spawn_on(
                    async move { delete_objects(pods, secrets, &name).await },
                    &handle,
                );
            }
            Err(_) => tracing::warn!(pod = %name, "no runtime to delete the build Pod with"),
        }
    }
}

/// Whether a kubeconfig file is where the client looks for one.
fn kubeconfig_exists() -> bool {
    match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        Some(paths) => std::env::split_paths(&paths).any(|p| p.is_file()),
        None => std::env::var_os("HOME")
            .is_some_and(|home| std::path::Path::new(&home).join(".kube/config").is_file()),
    }
}

/// A docker `config.json` with kpackd's credentials for `registries` (anonymous ones
/// left out).
fn docker_config(
    credentials: &CredentialSource,
    registries: &[String],
) -> Result<Vec<u8>, PodFailure> {
    use base64::Engine;
    let mut auths = BTreeMap::new();
    for registry in registries {
        let credential = credentials.lookup(registry).map_err(|e| {
            PodFailure::build(format!(
                "the credentials for {registry}: {}",
                error_chain(&e)
            ))
        })?;
        let entry = match credential {
            Credential::Anonymous => continue,
            Credential::Basic { username, password } => serde_json::json!({
                "auth": base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}")),
            }),
            Credential::IdentityToken { username, token } => serde_json::json!({
                "username": username,
                "identitytoken": token,
            }),
        };
        auths.insert(registry.clone(), entry);
    }
    Ok(serde_json::to_vec(&serde_json::json!({ "auths": auths }))
        .expect("a docker config serialises"))
}
