//! `kpackd watch`: keep the fleet current until stopped. The loop, file watching, polling
//! and HTTP live in `engine::watch`; this command wires them to a [`Reconciler`], turns
//! SIGINT/SIGTERM into a graceful shutdown, and maps the outcome to an exit code.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use engine::reconcile::PlanAndApply;
use engine::state::StateLock;
use engine::watch::{
    CancellationToken, ConfigSummary, ReconcileReport, Reconciler, TriggerError, Wake, Watch,
    WatchError, WatchOptions, WEBHOOK_SECRET_ENV,
};
use miette::{miette, IntoDiagnostic};

use super::progress::Progress;

use super::Outcome;

pub fn run(
    config: &Path,
    listen: SocketAddr,
    state_dir: Option<&Path>,
    lock_timeout: Option<std::time::Duration>,
) -> miette::Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .into_diagnostic()?;
    let options = WatchOptions {
        listen: Some(listen),
        webhook_secret: webhook_secret()?,
        ..WatchOptions::default()
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        // Binding first: a blank secret or a busy port is refused before the state lock.
        let watch = Watch::bind(options).await.into_diagnostic()?;
        let reconciler = Arc::new(reconciler(config, state_dir, lock_timeout)?);
        tokio::spawn(stop_on_signals(shutdown.clone()));
        match watch.run(reconciler, shutdown).await {
            Ok(()) => Ok(Outcome::Success),
            // Already rendered by the reconciler.
            Err(WatchError::Config(diagnostic)) => Err(miette!("{diagnostic}")),
            Err(error) => Err(error).into_diagnostic(),
        }
    })
}

/// The webhook secret from the environment: None when unset. A value that is not
/// UTF-8 is refused (a blank one is refused by [`Watch::bind`]): neither may silently
/// mean "no authentication".
fn webhook_secret() -> miette::Result<Option<String>> {
    match std::env::var(WEBHOOK_SECRET_ENV) {
        Ok(secret) => Ok(Some(secret)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(miette!("{WEBHOOK_SECRET_ENV} is not valid UTF-8"))
        }
    }
}

/// The first SIGINT or SIGTERM starts a graceful shutdown; a second one exits at once.
async fn stop_on_signals(shutdown: CancellationToken) {
    for _ in 0..2 {
        if let Err(error) = signal().await {
            tracing::error!("cannot listen for signals: {error}");
            return;
        }
        if shutdown.is_cancelled() {
            tracing::warn!("second signal: exiting now");
            std::process::exit(i32::from(super::EXIT_ERROR));
        }
        shutdown.cancel();
    }
}

async fn signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

/// The engine behind watch: takes the state lock for the daemon's life (a second writer
/// is refused at once, naming this one) and plans and applies with the last good
/// configuration whenever the loop wakes.
fn reconciler(
    config: &Path,
    state_dir: Option<&Path>,
    lock_timeout: Option<std::time::Duration>,
) -> miette::Result<Watched> {
    let loaded = super::shared::load_config(config)?;
    let dir = engine::planning::state_dir(&loaded, state_dir);
    let lock = StateLock::acquire(&dir, lock_timeout).map_err(super::lock_error)?;
    let observer = Arc::new(Progress::new(true));
    Ok(Watched {
        _lock: lock,
        inner: PlanAndApply::new(
            config.to_path_buf(),
            state_dir.map(Path::to_path_buf),
            None,
            observer,
        ),
    })
}

/// The reconciler, and the lock that makes it the state's only writer.
struct Watched {
    _lock: StateLock,
    inner: PlanAndApply,
}

impl Reconciler for Watched {
    async fn reload(&self) -> Result<ConfigSummary, String> {
        self.inner.reload().await
    }

    async fn reconcile(&self, wake: Wake, cancel: CancellationToken) -> ReconcileReport {
        self.inner.reconcile(wake, cancel).await
    }

    async fn trigger(&self, image: &str) -> Result<(), TriggerError> {
        self.inner.trigger(image).await
    }

    async fn status(&self) -> serde_json::Value {
        self.inner.status().await
    }
}
