//! What `kpackd watch` does when it wakes: the [`Reconciler`] that plans with the last
//! good kpack.toml and applies the plan, like `kpackd apply`, and answers triggers and
//! status requests from the HTTP endpoints.
//!
//! Every reconcile resolves every upstream afresh (each distinct one once), so a wake
//! for one upstream also catches changes of the others; that is what a plan costs
//! anyway. The state is this process's alone (the caller holds the state lock): the
//! reconcile's connection lives behind a mutex, and triggers and status use their own
//! short-lived connections, which SQLite's WAL lets read and write beside it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use planner::Config;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::apply::{self, ApplyOptions, Observer, ResultStatus};
use crate::layout::StateLayout;
use crate::planning;
use crate::resolve::{image_store, ResolveOptions};
use crate::state::{BuildStatus, State};
use crate::watch::{
    BuildOutcome, BuildReport, ConfigSummary, ReconcileReport, Reconciler, TriggerError, Upstream,
    UpstreamError,
};

/// Plans and applies kpack.toml whenever watch mode asks.
pub struct PlanAndApply {
    config_path: PathBuf,
    /// `--state-dir`, which overrides kpack.toml's.
    state_dir_override: Option<PathBuf>,
    /// The last configuration that loaded, and the state it uses.
    current: Mutex<Option<Loaded>>,
    /// How each build's progress is shown.
    observer: Arc<dyn Observer>,
    /// `--concurrency`, which overrides kpack.toml's.
    concurrency: Option<usize>,
}

struct Loaded {
    config: Config,
    state: State,
    /// Whether the build Pods a stopped kpackd left were looked for (once per state).
    recovered: bool,
}

impl Loaded {
    /// Settles the build Pods a stopped kpackd left, once per state.
    async fn recover(&mut self) -> Result<(), crate::apply::recover::RecoverError> {
        if self.recovered {
            return Ok(());
        }
        let recorded = crate::apply::recover::recover(&self.config, &mut self.state).await?;
        self.recovered = true;
        for build in recorded {
            tracing::warn!(image = %build.image, number = build.number, status = %build.status, "a build ran on in its Pod while kpackd was stopped");
        }
        Ok(())
    }
}

/// A round that ended before applying, because of `e`.
fn failed(e: &dyn std::error::Error) -> ReconcileReport {
    ReconcileReport {
        error: Some(crate::apply::job::error_chain(e)),
        ..ReconcileReport::default()
    }
}

/// What the round's builds came to, for the watch log and metrics.
fn build_reports(results: &[apply::ImageResult]) -> Vec<BuildReport> {
    results
        .iter()
        .filter(|r| r.build.is_some())
        .map(|r| BuildReport {
            image: r.image.clone(),
            outcome: match r.status {
                ResultStatus::Ended(BuildStatus::Succeeded) => BuildOutcome::Succeeded,
                ResultStatus::Ended(BuildStatus::Canceled) => BuildOutcome::Canceled,
                _ => BuildOutcome::Failed,
            },
            reasons: r.reasons.iter().map(|r| r.to_string()).collect(),
            duration: Duration::from_millis(r.duration_ms.unwrap_or(0)),
        })
        .collect()
}

impl PlanAndApply {
    pub fn new(
        config_path: PathBuf,
        state_dir_override: Option<PathBuf>,
        concurrency: Option<usize>,
        observer: Arc<dyn Observer>,
    ) -> PlanAndApply {
        PlanAndApply {
            config_path,
            state_dir_override,
            current: Mutex::new(None),
            observer,
            concurrency,
        }
    }

    fn state_dir(&self, config: &Config) -> PathBuf {
        planning::state_dir(config, self.state_dir_override.as_deref())
    }

    /// The state dir of the last good configuration.
    async fn current_state_dir(&self) -> Option<PathBuf> {
        let current = self.current.lock().await;
        current.as_ref().map(|l| l.state.dir().to_path_buf())
    }
}

impl Reconciler for PlanAndApply {
    async fn reload(&self) -> Result<ConfigSummary, String> {
        let path = self.config_path.clone();
        let loaded = tokio::task::spawn_blocking(move || planner::load(&path))
            .await
            .map_err(|e| format!("the config task failed: {e}"))?;
        let config = match loaded {
            Ok(config) => config,
            Err(error) => return Err(render(&error)),
        };
        let dir = self.state_dir(&config);
        let summary = ConfigSummary::from_config(&config, dir.clone());
        let mut current = self.current.lock().await;
        let state = match current.take() {
            Some(loaded) if loaded.state.dir() == dir => (loaded.state, loaded.recovered),
            _ => (
                State::open(&dir)
                    .map_err(|e| format!("open the state in {}: {e}", dir.display()))?,
                false,
            ),
        };
        let (state, recovered) = state;
        *current = Some(Loaded {
            config,
            state,
            recovered,
        });
        Ok(summary)
    }

    /// Plans against what the state recorded and applies the plan, with retries not yet
    /// due postponed; the first call for a state first settles the Pods a stopped kpackd
    /// left.
    async fn reconcile(
        &self,
        wake: crate::watch::Wake,
        cancel: CancellationToken,
    ) -> ReconcileReport {
        let mut current = self.current.lock().await;
        let Some(loaded) = current.as_mut() else {
            return ReconcileReport {
                error: Some("no valid configuration loaded".into()),
                ..ReconcileReport::default()
            };
        };
        tracing::info!(why = %wake, "reconciling");
        if let Err(e) = loaded.recover().await {
            return failed(&e);
        }
        // Planned from what the state recorded, read first: the plan's future must be
        // `Send`, and a state connection cannot be shared across threads.
        let recorded = match loaded.state.recorded() {
            Ok(recorded) => recorded,
            Err(e) => return failed(&e),
        };
        let options = ResolveOptions::new(&loaded.config, loaded.state.dir());
        let retries = retries_not_due(&recorded, now_seconds());
        let planned = match planning::plan_with(&loaded.config, recorded, &[], &options).await {
            Ok(mut planned) => {
                postpone(&mut planned.plan, &retries);
                planned
            }
            Err(e) => return failed(&e),
        };
        let upstream_errors = planned
            .plan
            .errors
            .iter()
            .map(|failure| UpstreamError {
                upstream: upstream_of(&loaded.config, &failure.upstream),
                message: failure.error.clone(),
            })
            .collect();
        if !planned.plan.has_changes() {
            return ReconcileReport {
                upstream_errors,
                ..ReconcileReport::default()
            };
        }
        let options = ApplyOptions {
            concurrency: self
                .concurrency
                .unwrap_or(loaded.config.settings.concurrency.get() as usize),
            rebase_concurrency: loaded.config.settings.rebase_concurrency.get() as usize,
        };
        let store = image_store(&loaded.config)
            .with_pushed_cache(StateLayout::new(loaded.state.dir()).pushed_dir());
        let planned = Arc::new(planned);
        let result = apply::apply(
            planned,
            &mut loaded.state,
            store,
            &options,
            self.observer.as_ref(),
            cancel,
        )
        .await;
        match result {
            Ok(report) => ReconcileReport {
                builds: build_reports(&report.results),
                upstream_errors,
                error: None,
            },
            Err(e) => ReconcileReport {
                upstream_errors,
                error: Some(crate::apply::job::error_chain(&e)),
                ..ReconcileReport::default()
            },
        }
    }

    async fn trigger(&self, image: &str) -> Result<(), TriggerError> {
        let dir = {
            let current = self.current.lock().await;
            let Some(loaded) = current.as_ref() else {
                return Err(TriggerError::Other("no valid configuration loaded".into()));
            };
            if !loaded.config.images.contains_key(image) {
                return Err(TriggerError::UnknownImage(image.to_string()));
            }
            loaded.state.dir().to_path_buf()
        };
        let image = image.to_string();
        tokio::task::spawn_blocking(move || {
            let mut state = State::open(&dir).map_err(|e| TriggerError::Other(e.to_string()))?;
            state
                .add_trigger(&image)
                .map_err(|e| TriggerError::Other(e.to_string()))
        })
        .await
        .map_err(|e| TriggerError::Other(e.to_string()))?
    }

    async fn status(&self) -> serde_json::Value {
        let Some(dir) = self.current_state_dir().await else {
            return serde_json::json!({"error": "no valid configuration loaded"});
        };
        tokio::task::spawn_blocking(move || status_json(&dir))
            .await
            .unwrap_or_else(|e| serde_json::json!({"error": e.to_string()}))
    }
}

/// Each image's latest build and latest success, as `GET /status` serves it.
fn status_json(dir: &Path) -> serde_json::Value {
    let state = match State::open(dir) {
        Ok(state) => state,
        Err(e) => return serde_json::json!({"error": e.to_string()}),
    };
    let builds = match state.builds(None) {
        Ok(builds) => builds,
        Err(e) => return serde_json::json!({"error": e.to_string()}),
    };
    let mut images = serde_json::Map::new();
    for build in &builds {
        let entry = images
            .entry(build.image.clone())
            .or_insert_with(|| serde_json::json!({}));
        entry["last_build"] = serde_json::json!({
            "number": build.number,
            "action": build.action,
            "status": build.status,
            "reasons": build.reasons,
            "digest": build.output,
        });
        if build.status == BuildStatus::Succeeded {
            entry["digest"] = serde_json::json!(build.output);
            entry["tag"] = serde_json::json!(build.tag);
        }
    }
    let mut status = serde_json::json!({
        "lineage": state.lineage(),
        "serial": state.serial().ok(),
        "images": images,
    });
    // Published builders, the same way; absent when nothing was published.
    let publishes = match state.publishes(None) {
        Ok(publishes) => publishes,
        Err(e) => return serde_json::json!({"error": e.to_string()}),
    };
    let mut builders = serde_json::Map::new();
    for publish in &publishes {
        let entry = builders
            .entry(publish.builder.clone())
            .or_insert_with(|| serde_json::json!({}));
        entry["last_publish"] = serde_json::json!({
            "number": publish.number,
            "status": publish.status,
            "reasons": publish.reasons,
            "digest": publish.digest,
        });
        if publish.status == crate::state::PublishStatus::Succeeded {
            entry["digest"] = serde_json::json!(publish.digest);
            entry["tag"] = serde_json::json!(publish.tag);
        }
    }
    if !builders.is_empty() {
        status["builders"] = serde_json::Value::Object(builders);
    }
    status
}

/// The images whose last build failed outside the build and whose retry is not due
/// yet, with when it is.
fn retries_not_due(recorded: &planner::diff::Recorded, now: i64) -> Vec<(String, i64)> {
    recorded
        .images
        .iter()
        .filter_map(|(image, record)| {
            let failure = record.last_build.as_ref()?.failure.as_ref()?;
            failure.retry()?;
            let due = failure.retry_due();
            (due > now).then(|| (image.clone(), due - now))
        })
        .collect()
}

/// Leaves retries that are not due for a later round: a change made only of `RETRY`
/// becomes no change. Watch polls at least every `poll-interval`, so a retry runs in
/// the first round after it is due.
fn postpone(plan: &mut planner::plan::Plan, retries: &[(String, i64)]) {
    use planner::plan::{Action, Summary};
    use planner::Reason;
    for change in &mut plan.changes {
        let Some((_, wait)) = retries.iter().find(|(image, _)| *image == change.image) else {
            continue;
        };
        if change.reasons == [Reason::Retry] {
            tracing::info!(image = %change.image, "retry due in {wait} s");
            change.action = Action::Noop;
            change.reasons.clear();
            change.details.clear();
            change.inputs = None;
        }
    }
    plan.summary = Summary::of(&plan.changes);
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The watch-mode upstream behind a planner upstream, for poll backoff.
fn upstream_of(config: &Config, upstream: &planner::plan::Upstream) -> Upstream {
    use planner::plan::Upstream as Planned;
    match upstream {
        Planned::RunImage { stack } => config.stacks.get(stack.as_str()).map_or_else(
            || Upstream::Registry(stack.to_string()),
            |s| Upstream::Registry(s.run_image.to_string()),
        ),
        Planned::BuildImage { stack } => config.stacks.get(stack.as_str()).map_or_else(
            || Upstream::Registry(stack.to_string()),
            |s| Upstream::Registry(s.build_image.to_string()),
        ),
        Planned::Source { source } => {
            let url = config
                .images
                .values()
                .find(|i| &i.source.identity() == source)
                .map_or(source.as_str(), |i| i.source.location());
            Upstream::Git(url.to_string())
        }
        Planned::Buildpacks { builder } => Upstream::Registry(builder.clone()),
        Planned::LifecycleImage { builder } => config
            .builders
            .get(builder)
            .and_then(|b| b.lifecycle.as_ref())
            .map_or_else(
                || Upstream::Registry(builder.clone()),
                |r| Upstream::Registry(r.to_string()),
            ),
        Planned::Entrypoint => Upstream::Registry("kpackd-entrypoint".to_string()),
    }
}

/// A configuration error as `kpackd validate` shows it off a terminal (plain ASCII), for
/// the watch log and `GET /status`.
fn render(error: &planner::ConfigError) -> String {
    let mut text = String::new();
    let handler = miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::ascii());
    if handler.render_report(&mut text, error).is_err() {
        return error.to_string();
    }
    text
}

#[cfg(test)]
mod tests {
    use planner::plan::{Action, Change, Plan, Summary};
    use planner::Reason;

    use super::postpone;

    fn change(image: &str, reasons: &[Reason]) -> Change {
        Change {
            image: image.into(),
            action: Action::Build,
            reasons: reasons.to_vec(),
            details: Vec::new(),
            inputs: None,
            last_build: Some(1),
            blocked_by: Vec::new(),
        }
    }

    #[test]
    fn a_retry_not_due_waits_unless_something_else_builds_the_image() {
        let changes = vec![
            change("waits", &[Reason::Retry]),
            change("commit", &[Reason::Commit, Reason::Retry]),
            change("due", &[Reason::Retry]),
        ];
        let mut plan = Plan {
            format_version: 1,
            lineage: String::new(),
            serial: 0,
            config: String::new(),
            summary: Summary::of(&changes),
            changes,
            errors: Vec::new(),
            notes: Vec::new(),
            failing: Vec::new(),
            builders: Vec::new(),
        };
        postpone(
            &mut plan,
            &[("waits".to_string(), 60), ("commit".to_string(), 60)],
        );
        let actions: Vec<Action> = plan.changes.iter().map(|c| c.action).collect();
        assert_eq!(actions, [Action::Noop, Action::Build, Action::Build]);
        assert_eq!((plan.summary.build, plan.summary.noop), (2, 1));
    }
}
