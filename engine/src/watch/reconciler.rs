//! The seam between the watch loop and the rest of the engine: the loop decides *when*
//! and *why* to reconcile, a [`Reconciler`] decides *what* that means (plan + apply).

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// What the watch loop asks of the rest of the engine.
///
/// The loop calls at most one of `reload`/`reconcile` at a time, never two reconciles at
/// once; `trigger` and `status` are called from HTTP handlers whenever a request comes
/// in, possibly while a reconcile runs, so an implementation synchronises its own state.
pub trait Reconciler: Send + Sync + 'static {
    /// Loads (or reloads) the configuration. An invalid file returns its diagnostic
    /// rendered as text; the loop reports it and the last good configuration keeps
    /// running, so an implementation must not drop its last good configuration then.
    fn reload(&self) -> impl Future<Output = Result<ConfigSummary, String>> + Send;

    /// Plans and applies with the last good configuration. The upstreams in
    /// [`Wake::polls`] must be resolved afresh; the others may come from the last
    /// observation (a startup or config change may resolve everything). When `cancel`
    /// fires (SIGTERM), running builds are canceled cleanly and the call returns soon.
    fn reconcile(
        &self,
        wake: Wake,
        cancel: CancellationToken,
    ) -> impl Future<Output = ReconcileReport> + Send;

    /// Marks `image` for rebuild (reason TRIGGER) at the next reconcile, which the loop
    /// starts right after. Err (an unknown image, say) is shown to the HTTP caller.
    fn trigger(&self, image: &str) -> impl Future<Output = Result<(), TriggerError>> + Send;

    /// The fleet's status as JSON, served at `GET /status`.
    fn status(&self) -> impl Future<Output = serde_json::Value> + Send;

    /// Builds and rebases planned but not started yet, right now (`kpackd_queue_length`).
    fn queue_length(&self) -> usize {
        0
    }
}

/// Why a trigger was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    #[error("no image named {0:?} in the configuration")]
    UnknownImage(String),
    #[error("{0}")]
    Other(String),
}

/// What a valid configuration asks the watch loop to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSummary {
    /// The configuration file itself; its directory is watched so that an editor's
    /// atomic save (write a temporary file, rename it over) is seen.
    pub config_file: PathBuf,
    /// Local path sources and directory buildpacks, watched recursively.
    pub local_paths: BTreeSet<PathBuf>,
    /// Directories whose changes never count: the state dir, OCI layout outputs.
    pub ignored: BTreeSet<PathBuf>,
    /// Every distinct remote thing to poll, each once however many images use it.
    pub upstreams: BTreeSet<Upstream>,
    /// `poll-interval`.
    pub poll_interval: Duration,
    /// The state's doorbell ([`crate::state::DOORBELL_FILE`]): written when a trigger is
    /// recorded from outside (`kpackd trigger`), it wakes the loop.
    pub doorbell: Option<PathBuf>,
}

/// One distinct remote thing that can change without kpackd hearing about it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Upstream {
    /// A git remote, by URL as written: one `ls-refs` answers for every revision.
    Git(String),
    /// A tag in a registry (a stack's build or run image, a buildpackage, a builder
    /// image), as `host/repository:tag`.
    Registry(String),
}

impl Upstream {
    pub fn location(&self) -> &str {
        match self {
            Upstream::Git(url) | Upstream::Registry(url) => url,
        }
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.location())
    }
}

/// One reason to reconcile, as it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    Startup,
    ConfigChanged,
    /// Something under this local path changed.
    PathChanged(PathBuf),
    /// This upstream is due (poll interval) or a webhook named it.
    Poll(Upstream),
    /// `POST /images/<name>/trigger`.
    Trigger(String),
    /// Triggers were recorded in the state from outside (`kpackd trigger`).
    TriggersRecorded,
}

/// Why a reconcile runs: every cause that arrived since the previous one started,
/// merged. A reconcile answers for all of them at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wake {
    pub startup: bool,
    /// The configuration was reloaded successfully just before this reconcile.
    pub config_changed: bool,
    pub paths_changed: BTreeSet<PathBuf>,
    /// Upstreams to resolve afresh.
    pub polls: BTreeSet<Upstream>,
    pub triggers: BTreeSet<String>,
    pub triggers_recorded: bool,
}

impl Wake {
    pub fn add(&mut self, cause: Cause) {
        match cause {
            Cause::Startup => self.startup = true,
            Cause::ConfigChanged => self.config_changed = true,
            Cause::PathChanged(path) => {
                self.paths_changed.insert(path);
            }
            Cause::Poll(upstream) => {
                self.polls.insert(upstream);
            }
            Cause::Trigger(image) => {
                self.triggers.insert(image);
            }
            Cause::TriggersRecorded => self.triggers_recorded = true,
        }
    }

    pub fn merge(&mut self, other: Wake) {
        self.startup |= other.startup;
        self.config_changed |= other.config_changed;
        self.paths_changed.extend(other.paths_changed);
        self.polls.extend(other.polls);
        self.triggers.extend(other.triggers);
        self.triggers_recorded |= other.triggers_recorded;
    }

    pub fn is_empty(&self) -> bool {
        *self == Wake::default()
    }
}

impl From<Cause> for Wake {
    fn from(cause: Cause) -> Wake {
        let mut wake = Wake::default();
        wake.add(cause);
        wake
    }
}

impl fmt::Display for Wake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.startup {
            parts.push("startup".to_string());
        }
        if self.config_changed {
            parts.push("config changed".to_string());
        }
        parts.extend(
            self.paths_changed
                .iter()
                .map(|p| format!("{} changed", p.display())),
        );
        parts.extend(self.polls.iter().map(|u| format!("poll {u}")));
        parts.extend(self.triggers.iter().map(|i| format!("trigger {i}")));
        if self.triggers_recorded {
            parts.push("kpackd trigger".to_string());
        }
        f.write_str(&parts.join(", "))
    }
}

/// What one reconcile did, for metrics, logs and poll backoff.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReconcileReport {
    /// One entry per build or rebase that ran (noops are not listed).
    pub builds: Vec<BuildReport>,
    /// Upstreams that could not be resolved; each is polled again later with backoff.
    pub upstream_errors: Vec<UpstreamError>,
    /// The reconcile as a whole failed (the state could not be opened, say).
    pub error: Option<String>,
}

/// One build or rebase and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildReport {
    pub image: String,
    pub outcome: BuildOutcome,
    /// Upper-case reason names (`COMMIT`, `STACK`, …), in the plan's order.
    pub reasons: Vec<String>,
    pub duration: Duration,
}

/// How a build or rebase ended, as the `outcome` label of `kpackd_builds_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BuildOutcome {
    Succeeded,
    Failed,
    Canceled,
}

impl BuildOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildOutcome::Succeeded => "succeeded",
            BuildOutcome::Failed => "failed",
            BuildOutcome::Canceled => "canceled",
        }
    }
}

/// An upstream that could not be resolved, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError {
    pub upstream: Upstream,
    pub message: String,
}
