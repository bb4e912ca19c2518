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
//!
//! # What a client can hold
//!
//! Connections are capped and must send their headers, and then their body, within
//! [`HttpLimits`]; see [`super::limits`].
//!
//! # Browsers
//!
//! No web page is a client of these endpoints, so `POST` requests that a browser could
//! send on a page's behalf are refused, secret or not: any `Origin` header (403; browsers
//! send one on every `POST` a page makes, and a DNS-rebinding page would even show the
//! server's own host in it), and a `Content-Type` other than `application/json` (415;
//! an HTML form can only send `application/x-www-form-urlencoded`, `multipart/form-data`
//! or `text/plain`). Webhooks, `curl -X POST` (no body, no `Content-Type`) and scripts
//! sending JSON pass.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, ORIGIN};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::limits::{Connections, HttpLimits};
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
    pub limits: HttpLimits,
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
    let connections = Connections::new(endpoints.limits.max_connections);
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(endpoints.limits.header_timeout);
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
        let Some(ticket) = connections.admit() else {
            tracing::warn!(%peer, "every connection is busy with a request; closing a new one");
            continue;
        };
        let ticket = Arc::new(ticket);
        let endpoints = endpoints.clone();
        let for_service = ticket.clone();
        let service = hyper::service::service_fn(move |request| {
            let endpoints = endpoints.clone();
            let handling = for_service.handling();
            async move {
                let reply = endpoints.handle(request).await;
                drop(handling);
                Ok::<_, Infallible>(reply)
            }
        });
        let connection = graceful.watch(http1.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            tokio::select! {
                ended = connection => if let Err(error) = ended {
                    tracing::debug!(%peer, "http connection: {error}");
                },
                () = ticket.evicted() => tracing::debug!(%peer, "closed an idle connection"),
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
        if let Err(refusal) = not_from_a_browser(&parts.headers) {
            tracing::warn!(path = %parts.uri.path(), "refused a request a browser could send: {refusal}");
            return refusal.reply();
        }
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY as u64) {
            return too_large();
        }
        let reading = Limited::new(body, MAX_BODY).collect();
        let body = match tokio::time::timeout(self.limits.body_timeout, reading).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
            Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, &format!("reading the body: {e}")),
            Err(_) => {
                return error(
                    StatusCode::REQUEST_TIMEOUT,
                    &format!(
                        "the body did not arrive within {:?}",
                        self.limits.body_timeout
                    ),
                )
            }
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

/// Why a `POST` looks like it came from a web page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum BrowserRefusal {
    #[error("it carries an Origin header ({0}); no web page may call kpackd")]
    Origin(String),
    #[error("its Content-Type is {0:?}; send application/json, or no body")]
    ContentType(String),
}

impl BrowserRefusal {
    fn reply(&self) -> Reply {
        let status = match self {
            BrowserRefusal::Origin(_) => StatusCode::FORBIDDEN,
            BrowserRefusal::ContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        };
        error(status, &self.to_string())
    }
}

/// Refuses what a browser sends for a page: any `Origin`, and a `Content-Type` other
/// than JSON (`application/json`, parameters allowed). No `Content-Type` passes.
fn not_from_a_browser(headers: &HeaderMap) -> Result<(), BrowserRefusal> {
    if let Some(origin) = headers.get(ORIGIN) {
        let origin = String::from_utf8_lossy(origin.as_bytes()).into_owned();
        return Err(BrowserRefusal::Origin(origin));
    }
    for value in headers.get_all(CONTENT_TYPE) {
        let text = String::from_utf8_lossy(value.as_bytes());
        let essence = text.split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(BrowserRefusal::ContentType(text.into_owned()));
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn what_a_browser_sends_is_refused() {
        assert_eq!(not_from_a_browser(&headers(&[])), Ok(()));
        for json in ["application/json", "Application/JSON; charset=utf-8"] {
            assert_eq!(
                not_from_a_browser(&headers(&[("content-type", json)])),
                Ok(())
            );
        }
        for form in [
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/plain",
        ] {
            assert!(matches!(
                not_from_a_browser(&headers(&[("content-type", form)])),
                Err(BrowserRefusal::ContentType(_))
            ));
        }
        for origin in ["http://evil.example", "null", "http://127.0.0.1:8080"] {
            let sent = headers(&[("content-type", "application/json"), ("origin", origin)]);
            assert_eq!(
                not_from_a_browser(&sent),
                Err(BrowserRefusal::Origin(origin.to_string()))
            );
        }
    }
}
