//! `kpackd watch`: the long-running reconciler. It decides when to reconcile and why;
//! what a reconcile does (plan, then apply) is behind the [`Reconciler`] trait.
//!
//! # Flow
//!
//! One loop ([`Watch::run`]) owns the schedule. Everything else talks to it over
//! channels: notify's thread sends changed paths, HTTP handlers send commands, the poll
//! schedule is a timer inside the loop, and each reload or reconcile runs as its own
//! task whose end the loop awaits.
//!
//! 1. At start the configuration is loaded ([`Reconciler::reload`]); an invalid one ends
//!    `watch` with its diagnostic. A reconcile with [`Wake::startup`] follows.
//! 2. A change of the configuration file (its directory is watched, so an editor's
//!    write-then-rename counts) reloads it, then reconciles. An invalid edit is logged
//!    as an error with its diagnostic and counted; the last good configuration keeps
//!    running and no reconcile happens for that edit.
//! 3. A change under a local path (path sources, directory buildpacks, OCI layout
//!    inputs) reconciles; changes under the state dir, OCI layout outputs and `.git`
//!    do not count.
//! 4. Each distinct upstream is polled every `poll-interval`, ±10% jitter, its wait
//!    doubling after each failure (up to 15 minutes or the interval). `POST /hooks/git`
//!    polls the named repository (or every git upstream) at once.
//! 5. `POST /images/<name>/trigger` marks the image and reconciles.
//!
//! # Guarantees
//!
//! - One reload or reconcile at a time. Causes that arrive meanwhile are merged into one
//!   [`Wake`], and exactly one more reconcile runs after the current one: a burst of
//!   events costs at most two reconciles.
//! - An upstream is never polled twice at once, and a webhook that arrives while its
//!   upstream is being resolved still leads to one more poll afterwards.
//! - On shutdown (the token given to [`Watch::run`] fires) HTTP stops accepting, no new
//!   reconcile starts, and the running one — which sees the same token — gets a grace
//!   period to finish or cancel before it is dropped.
//!
//! # Assumptions
//!
//! The reconciler keeps its last good configuration when `reload` fails, and is the
//! only writer of the state while watch runs (the caller holds the state lock).

mod daemon;
mod files;
mod http;
mod limits;
mod metrics;
mod poll;
mod reconciler;
mod summary;
mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

pub use http::MAX_BODY;
pub use limits::HttpLimits;
pub use poll::{backoff, jitter, MAX_BACKOFF};
pub use reconciler::{
    BuildOutcome, BuildReport, Cause, ConfigSummary, ReconcileReport, Reconciler, TriggerError,
    Upstream, UpstreamError, Wake,
};
pub use tokio_util::sync::CancellationToken;
pub use webhook::github_signature;

/// The default `--listen`: loopback only, since the endpoints have no authentication
/// beyond the optional webhook secret.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The environment variable holding the webhook secret.
pub const WEBHOOK_SECRET_ENV: &str = "KPACKD_WEBHOOK_SECRET";

/// How watch mode runs.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Where to serve HTTP; None serves nothing.
    pub listen: Option<SocketAddr>,
    /// When set, `POST` requests must carry it (see [`WEBHOOK_SECRET_ENV`]); an empty
    /// or blank one is refused by [`Watch::bind`].
    pub webhook_secret: Option<String>,
    /// What one HTTP client can hold: connections, header and body timeouts.
    pub http: HttpLimits,
    /// How long file changes must be quiet before they count.
    pub debounce: Duration,
    /// How long a running reconcile gets to end after shutdown starts.
    pub grace: Duration,
}

impl Default for WatchOptions {
    fn default() -> WatchOptions {
        WatchOptions {
            listen: None,
            webhook_secret: None,
            http: HttpLimits::default(),
            debounce: Duration::from_millis(200),
            grace: Duration::from_secs(30),
        }
    }
}

/// Why watch mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The configuration is invalid at start; the text is its rendered diagnostic.
    #[error("{0}")]
    Config(String),
    /// A webhook secret that is empty or only whitespace: most likely a templating or
    /// secret-store mistake, and running without authentication would hide it.
    #[error(
        "{WEBHOOK_SECRET_ENV} is set but blank; set it to the secret, or unset it to serve \
         the endpoints without authentication"
    )]
    BlankSecret,
    #[error("failed to listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to start watching files")]
    Notify(#[source] notify::Error),
}

/// Watch mode, bound to its HTTP address but not started.
#[derive(Debug)]
pub struct Watch {
    listener: Option<TcpListener>,
    options: WatchOptions,
}

impl Watch {
    /// Binds the HTTP listener now, so that a busy port is an error before anything runs.
    /// A blank webhook secret is refused here too.
    pub async fn bind(options: WatchOptions) -> Result<Watch, WatchError> {
        if options
            .webhook_secret
            .as_deref()
            .is_some_and(|secret| secret.trim().is_empty())
        {
            return Err(WatchError::BlankSecret);
        }
        let listener = match options.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| WatchError::Listen { addr, source })?,
            ),
            None => None,
        };
        Ok(Watch { listener, options })
    }

    /// The address HTTP is served on (the real port when asked for port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Runs until `shutdown` fires; see the module documentation for the flow.
    pub async fn run<R: Reconciler>(
        self,
        reconciler: Arc<R>,
        shutdown: CancellationToken,
    ) -> Result<(), WatchError> {
        daemon::run(self.listener, self.options, reconciler, shutdown).await
    }
}
