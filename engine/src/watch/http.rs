//! The HTTP endpoints of watch mode. Handlers hold no state of their own: they ask the
//! watch loop over its command channel, or the [`Reconciler`] directly for `trigger`
//! and `status`.
//!
//! | route | answer |
//! |---|---|
//! | `POST /hooks/git` | 202 with the upstreams to be polled (GitHub/GitLab push, or empty body: all) |
//! | `POST /images/<name>/trigger` | 202, or 404 for an unknown image |
//! | `GET /status` | the reconciler's status JSON, with a `watch` member added |
//! | `GET /healthz` | 200 `ok` |
//! | `GET /metrics` | Prometheus text |

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::reconciler::{Cause, Reconciler, TriggerError, Upstream};
use super::webhook;

/// Requests with a larger body are refused (413).
pub const MAX_BODY: usize = 1024 * 1024;

/// How long open connections get to finish once shutdown starts.
const DRAIN: Duration = Duration::from_secs(5);

/// What HTTP handlers ask of the watch loop.
#[derive(Debug)]
pub(crate) enum Command {
    Wake(Cause),
    /// Poll the git upstreams that are one of these repositories (None: all of them);
    /// the reply lists those that will be.
    Hook {
        urls: Option<Vec<String>>,
        reply: oneshot::Sender<Vec<Upstream>>,
    },
    Metrics {
        reply: oneshot::Sender<String>,
    },
    Status {
        reply: oneshot::Sender<serde_json::Value>,
    },
}

pub(crate) struct Endpoints<R> {
    pub reconciler: Arc<R>,
    pub commands: mpsc::Sender<Command>,
    /// KPACKD_WEBHOOK_SECRET: when set, POST requests must prove they know it.
    pub secret: Option<String>,
}

type Reply = Response<Full<Bytes>>;

/// Serves until `shutdown` fires, then stops accepting and lets open connections finish
/// for a few seconds.
pub(crate) async fn serve<R: Reconciler>(
    listener: TcpListener,
    endpoints: Arc<Endpoints<R>>,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!("accepting a connection: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let endpoints = endpoints.clone();
        let service = hyper::service::service_fn(move |request| {
            let endpoints = endpoints.clone();
            async move { Ok::<_, Infallible>(endpoints.handle(request).await) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, "http connection: {error}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("http connections still open after {DRAIN:?}; closing them");
    }
}

impl<R: Reconciler> Endpoints<R> {
    async fn handle(&self, request: Request<Incoming>) -> Reply {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        tracing::debug!(%method, %path, "http request");
        if let Some(image) = trigger_image(&path) {
            return match method {
                Method::POST => {
                    let image = image.to_string();
                    self.post(request, Route::Trigger(image)).await
                }
                _ => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            };
        }
        match (method, path.as_str()) {
            (Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
            (Method::GET, "/metrics") => self.metrics().await,
            (Method::GET, "/status") => self.status().await,
            (Method::POST, "/hooks/git") => self.post(request, Route::Hook).await,
            (_, "/healthz" | "/metrics" | "/status" | "/hooks/git") => {
                error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => error(StatusCode::NOT_FOUND, "not found"),
        }
    }

    async fn post(&self, request: Request<Incoming>, route: Route) -> Reply {
        let (parts, body) = request.into_parts();
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY as u64) {
            return too_large();
        }
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("reading the body: {e}")),
        };
        if let Some(secret) = &self.secret {
            if !webhook::authorized(secret, &parts.headers, &body) {
                tracing::warn!(path = %parts.uri.path(), "refused a request without the webhook secret");
                return error(StatusCode::UNAUTHORIZED, "missing or wrong signature");
            }
        }
        match route {
            Route::Hook => {
                let event = parts.headers.get("x-github-event");
                if event.is_some_and(|e| e == "ping") {
                    return json_reply(StatusCode::OK, &json!({ "polled": [] }));
                }
                self.hook(&body).await
            }
            Route::Trigger(image) => self.trigger(image).await,
        }
    }

    async fn hook(&self, body: &[u8]) -> Reply {
        let urls = match webhook::repository_urls(body) {
            Ok(urls) => urls,
            Err(message) => return error(StatusCode::BAD_REQUEST, &message),
        };
        let (reply, answer) = oneshot::channel();
        let Some(polled) = self
            .ask(
                Command::Hook {
                    urls: urls.clone(),
                    reply,
                },
                answer,
            )
            .await
        else {
            return shutting_down();
        };
        if polled.is_empty() {
            tracing::info!(repositories = ?urls, "webhook names no git upstream of the configuration");
        }
        let polled: Vec<String> = polled.iter().map(Upstream::to_string).collect();
        json_reply(StatusCode::ACCEPTED, &json!({ "polled": polled }))
    }

    async fn trigger(&self, image: String) -> Reply {
        match self.reconciler.trigger(&image).await {
            Ok(()) => {
                if self
                    .commands
                    .send(Command::Wake(Cause::Trigger(image.clone())))
                    .await
                    .is_err()
                {
                    return shutting_down();
                }
                json_reply(StatusCode::ACCEPTED, &json!({ "triggered": image }))
            }
            Err(e @ TriggerError::UnknownImage(_)) => error(StatusCode::NOT_FOUND, &e.to_string()),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    }

    async fn metrics(&self) -> Reply {
        let (reply, answer) = oneshot::channel();
        match self.ask(Command::Metrics { reply }, answer).await {
            Some(body) => Response::builder()
                .status(StatusCode::OK)
                .header(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
                .body(Full::new(Bytes::from(body)))
                .unwrap_or_else(|_| internal()),
            None => shutting_down(),
        }
    }

    async fn status(&self) -> Reply {
        let (reply, answer) = oneshot::channel();
        let Some(watch) = self.ask(Command::Status { reply }, answer).await else {
            return shutting_down();
        };
        let mut status = self.reconciler.status().await;
        match status.as_object_mut() {
            Some(object) => {
                object.insert("watch".to_string(), watch);
            }
            None => status = json!({ "watch": watch, "engine": status }),
        }
        json_reply(StatusCode::OK, &status)
    }

    /// Sends `command` to the loop and waits for its answer; None once the loop is gone.
    async fn ask<T>(&self, command: Command, answer: oneshot::Receiver<T>) -> Option<T> {
        self.commands.send(command).await.ok()?;
        answer.await.ok()
    }
}

enum Route {
    Hook,
    Trigger(String),
}

/// `<name>` of `/images/<name>/trigger`.
fn trigger_image(path: &str) -> Option<&str> {
    let name = path.strip_prefix("/images/")?.strip_suffix("/trigger")?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

fn json_reply(status: StatusCode, value: &serde_json::Value) -> Reply {
    let mut body = value.to_string();
    body.push('\n');
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| internal())
}

fn text(status: StatusCode, body: &'static str) -> Reply {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap_or_else(|_| internal())
}

fn error(status: StatusCode, message: &str) -> Reply {
    json_reply(status, &json!({ "error": message }))
}

fn too_large() -> Reply {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the body is larger than {MAX_BODY} bytes"),
    )
}

fn shutting_down() -> Reply {
    error(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
}

/// A response whose headers would not build; all ours are static and valid.
fn internal() -> Reply {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}
