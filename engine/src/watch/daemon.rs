//! The watch loop: the one place that owns the schedule. It merges causes into the
//! pending [`Wake`], runs one reload or reconcile at a time as a task, and starts the
//! next when that task ends.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::files::FileWatcher;
use super::http::{self, Command, Endpoints};
use super::metrics::Metrics;
use super::poll::PollSchedule;
use super::reconciler::{Cause, ConfigSummary, ReconcileReport, Reconciler, Upstream, Wake};
use super::webhook;
use super::{WatchError, WatchOptions};

pub(crate) async fn run<R: Reconciler>(
    listener: Option<TcpListener>,
    options: WatchOptions,
    reconciler: Arc<R>,
    shutdown: CancellationToken,
) -> Result<(), WatchError> {
    let summary = reconciler.reload().await.map_err(WatchError::Config)?;
    let (files, mut changed_paths) = FileWatcher::new(options.debounce)?;
    let (commands, mut command_rx) = mpsc::channel(64);
    let server = listener.map(|listener| {
        let endpoints = Arc::new(Endpoints {
            reconciler: reconciler.clone(),
            commands,
            secret: options.webhook_secret.clone(),
            limits: options.http,
        });
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving webhooks, triggers, status and metrics");
        }
        tokio::spawn(http::serve(listener, endpoints, shutdown.clone()))
    });

    let mut daemon = Daemon {
        schedule: PollSchedule::new(summary.poll_interval),
        reconciler,
        files,
        metrics: Metrics::default(),
        pending: Wake::from(Cause::Startup),
        running: None,
        summary: None,
        reload_error: None,
        cancel: shutdown.clone(),
    };
    daemon.follow(summary);

    loop {
        daemon.start_next();
        let next_poll = daemon.schedule.next_due();
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            ended = ended(&mut daemon.running) => daemon.on_ended(ended),
            Some(command) = command_rx.recv() => daemon.on_command(command),
            Some(paths) = changed_paths.recv() => daemon.on_paths(&paths),
            () = sleep_until(next_poll) => daemon.on_poll_due(),
        }
    }

    tracing::info!("shutting down");
    if let Some(running) = daemon.running.take() {
        let grace = options.grace;
        tracing::info!(wake = %running.wake, "waiting up to {grace:?} for the running reconcile to end");
        let mut handle = running.handle;
        if tokio::time::timeout(grace, &mut handle).await.is_err() {
            tracing::warn!("the running reconcile did not end within {grace:?}; dropping it");
            handle.abort();
        }
    }
    if let Some(server) = server {
        // The server stops on the same token; a panic there is not worth failing exit for.
        let _ = server.await;
    }
    drop(daemon);
    tracing::debug!("stopped");
    Ok(())
}

struct Daemon<R> {
    reconciler: Arc<R>,
    files: FileWatcher,
    schedule: PollSchedule,
    metrics: Metrics,
    /// Causes not yet answered by a reconcile that has started.
    pending: Wake,
    running: Option<Running>,
    /// The last good configuration's summary.
    summary: Option<ConfigSummary>,
    /// The diagnostic of the last rejected edit, until a good one.
    reload_error: Option<String>,
    cancel: CancellationToken,
}

struct Running {
    wake: Wake,
    /// Reloading the configuration, before reconciling.
    reloading: bool,
    handle: JoinHandle<Ended>,
}

enum Ended {
    Reloaded(Result<ConfigSummary, String>),
    Reconciled(ReconcileReport),
}

impl<R: Reconciler> Daemon<R> {
    /// Starts a reload (when the configuration changed) or a reconcile for the pending
    /// causes, unless one runs already.
    fn start_next(&mut self) {
        if self.running.is_some() || self.pending.is_empty() {
            return;
        }
        let wake = std::mem::take(&mut self.pending);
        if wake.config_changed {
            tracing::debug!("reloading the configuration");
            let reconciler = self.reconciler.clone();
            let handle = tokio::spawn(async move { Ended::Reloaded(reconciler.reload().await) });
            self.running = Some(Running {
                wake,
                reloading: true,
                handle,
            });
        } else {
            self.start_reconcile(wake);
        }
    }

    /// Reconciles `wake` now; its `config_changed` means "reloaded just before".
    fn start_reconcile(&mut self, wake: Wake) {
        tracing::info!(wake = %wake, "reconciling");
        let reconciler = self.reconciler.clone();
        let cancel = self.cancel.clone();
        let for_task = wake.clone();
        let handle =
            tokio::spawn(
                async move { Ended::Reconciled(reconciler.reconcile(for_task, cancel).await) },
            );
        self.running = Some(Running {
            wake,
            reloading: false,
            handle,
        });
    }

    fn on_ended(&mut self, ended: Result<Ended, JoinError>) {
        let Some(Running {
            mut wake,
            reloading,
            ..
        }) = self.running.take()
        else {
            return;
        };
        match ended {
            Ok(Ended::Reloaded(Ok(summary))) => {
                tracing::info!(config = %summary.config_file.display(), "configuration reloaded");
                self.reload_error = None;
                self.follow(summary);
                wake.polls.retain(|u| self.schedule.contains(u));
                self.start_reconcile(wake);
            }
            Ok(Ended::Reloaded(Err(diagnostic))) => {
                tracing::error!(
                    "the configuration is invalid; the last good one keeps running\n{diagnostic}"
                );
                self.metrics.record_reload_error();
                self.reload_error = Some(diagnostic);
                wake.config_changed = false;
                if !wake.is_empty() {
                    self.start_reconcile(wake);
                }
            }
            Ok(Ended::Reconciled(report)) => self.reconciled(&wake, report),
            Err(error) => {
                let action = if reloading { "reload" } else { "reconcile" };
                tracing::error!(wake = %wake, "the {action} task ended abnormally: {error}");
                let report = ReconcileReport {
                    error: Some(error.to_string()),
                    ..ReconcileReport::default()
                };
                self.reconciled(&wake, report);
            }
        }
    }

    fn reconciled(&mut self, wake: &Wake, report: ReconcileReport) {
        if let Some(error) = &report.error {
            tracing::error!(wake = %wake, "reconcile failed: {error}");
        }
        for failure in &report.upstream_errors {
            tracing::warn!(upstream = %failure.upstream, "polling failed: {}", failure.message);
        }
        let failed: BTreeSet<Upstream> = report
            .upstream_errors
            .iter()
            .map(|e| e.upstream.clone())
            .collect();
        self.schedule.finished(&wake.polls, &failed);
        self.metrics.record_reconcile(&report);
        tracing::info!(builds = report.builds.len(), "reconciled");
    }

    /// Watches what a good configuration names.
    fn follow(&mut self, summary: ConfigSummary) {
        self.files.follow(&summary);
        self.schedule
            .set_upstreams(&summary.upstreams, summary.poll_interval);
        self.summary = Some(summary);
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Wake(cause) => self.pending.add(cause),
            Command::Hook { urls, reply } => {
                let known = self.schedule.upstreams().map(|(u, _)| u);
                let polled: Vec<Upstream> = match &urls {
                    Some(urls) => webhook::matching(urls, known),
                    None => known
                        .filter(|u| matches!(u, Upstream::Git(_)))
                        .cloned()
                        .collect(),
                };
                for upstream in &polled {
                    self.poll(upstream.clone());
                }
                // The handler may have given up waiting; nothing to do then.
                let _ = reply.send(polled);
            }
            Command::Metrics { reply } => {
                let _ = reply.send(self.metrics.render(self.reconciler.queue_length()));
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
        }
    }

    fn on_paths(&mut self, paths: &[PathBuf]) {
        for cause in self.files.classify(paths) {
            tracing::debug!(?cause, "file change");
            self.pending.add(cause);
        }
    }

    fn on_poll_due(&mut self) {
        for upstream in self.schedule.take_due(Instant::now()) {
            self.pending.add(Cause::Poll(upstream));
        }
    }

    /// Polls `upstream` at the next reconcile, even if one that polls it runs now: the
    /// change a webhook announces may have landed after that one looked.
    fn poll(&mut self, upstream: Upstream) {
        self.schedule.take_now(&upstream);
        self.pending.add(Cause::Poll(upstream));
    }

    fn status(&self) -> serde_json::Value {
        let now = Instant::now();
        let upstreams: Vec<serde_json::Value> = self
            .schedule
            .upstreams()
            .map(|(upstream, entry)| {
                let kind = match upstream {
                    Upstream::Git(_) => "git",
                    Upstream::Registry(_) => "registry",
                };
                json!({
                    "upstream": upstream.to_string(),
                    "kind": kind,
                    "polling": entry.in_flight,
                    "next_poll_in_seconds": entry.due.saturating_duration_since(now).as_secs_f64(),
                    "failures": entry.failures,
                })
            })
            .collect();
        let wake = |w: &Wake| (!w.is_empty()).then(|| w.to_string());
        json!({
            "config": self.summary.as_ref().map(|s| s.config_file.display().to_string()),
            "config_error": self.reload_error,
            "running": self.running.as_ref().map(|r| r.wake.to_string()),
            "pending": wake(&self.pending),
            "poll_interval_seconds": self.summary.as_ref().map(|s| s.poll_interval.as_secs_f64()),
            "upstreams": upstreams,
            "watched_paths": self.summary.as_ref().map(|s| s.local_paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>()),
        })
    }
}

/// Resolves when the running task ends; never when nothing runs.
async fn ended(running: &mut Option<Running>) -> Result<Ended, JoinError> {
    match running {
        Some(running) => (&mut running.handle).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}
