//! Registry access over reqwest, with our own bounds and our own authorization: one
//! connection pool per registry host (plain HTTP for loopback and insecure
//! registries), credentials looked up once per host, every call retried on transient
//! failures, bounded in time, and its errors mapped to [`OciError`]. Reads are here,
//! writes (uploads, mounts, manifest pushes) in [`upload`].
//!
//! Authorization follows the registry's own answers (see [`super::challenge`]): a
//! request goes unauthenticated until the registry's origin has answered a `401`;
//! from then on it carries what that challenge asks for, Basic credentials or a
//! Bearer token for the request's scope, cached process-wide until it expires. No
//! `GET /v2/` probe is ever sent.
//!
//! Registries are untrusted, so every read is bounded: a connect timeout, a read
//! timeout (silence between bytes), a deadline per request (per blob, one that grows
//! with its declared size), and a size cap ([`MAX_MANIFEST_SIZE`], or a blob's
//! declared size). Credentials and tokens go only to the registry's own origin (an
//! upload `Location` elsewhere gets none), and credentials go to a token service only
//! over HTTPS or on the registry's own host and port.

mod upload;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use imageref::{Digest, RegistryRef};
use oci_client::errors::OciDistributionError;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use super::auth::Credential;
use super::blob::{with_deadlines, BlobStream};
use super::challenge::{self, Challenge, Known, Origin, Token, TokenKey};
use super::error::error_chain;
use super::manifest::{media_type, RawManifest, MAX_MANIFEST_SIZE};
use super::store::BLOB_MIN_RATE;
use super::{OciError, StoreSettings};

/// The most of an error body kept for the message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The largest token service answer read.
const MAX_TOKEN_ANSWER: u64 = 1024 * 1024;

/// One registry host: our reqwest client, its origin, the credential for it.
struct Host {
    http: reqwest::Client,
    /// `scheme://host[:port]`.
    base: String,
    base_url: Url,
    /// What the process knows of the origin's authorization.
    origin: Arc<Origin>,
    credential: Credential,
}

/// What a request needs the registry to allow, as a token scope.
pub(crate) enum Access<'a> {
    Pull,
    Push,
    /// Push to the repository, and pull from `from` (a cross-repository mount).
    Mount {
        from: &'a str,
    },
}

impl Access<'_> {
    /// The token scopes, space-separated, for `repository`.
    fn scope(&self, repository: &str) -> String {
        match self {
            Access::Pull => format!("repository:{repository}:pull"),
            Access::Push => format!("repository:{repository}:pull,push"),
            Access::Mount { from } => {
                format!("repository:{repository}:pull,push repository:{from}:pull")
            }
        }
    }
}

pub(crate) struct Registries {
    settings: Arc<StoreSettings>,
    hosts: std::sync::Mutex<std::collections::HashMap<String, Arc<Host>>>,
}

impl Registries {
    pub(crate) fn new(settings: Arc<StoreSettings>) -> Registries {
        Registries {
            settings,
            hosts: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Whether `host` is spoken to over plain HTTP.
    fn is_insecure(&self, host: &str) -> bool {
        let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
        matches!(name, "localhost" | "127.0.0.1" | "[::1]")
            || self.settings.insecure_registries.iter().any(|r| r == host)
    }

    /// `r`'s registry host, made on first use (its credential looked up once).
    fn host(&self, r: &RegistryRef) -> Result<Arc<Host>, OciError> {
        if let Some(h) = self
            .hosts
            .lock()
            .expect("the host map is never left poisoned")
            .get(&r.registry)
        {
            return Ok(h.clone());
        }
        let credential = self.settings.credentials.lookup(&r.registry)?;
        let insecure = self.is_insecure(&r.registry);
        let base = format!(
            "{}://{}",
            if insecure { "http" } else { "https" },
            registry_host(&r.registry)
        );
        let base_url = Url::parse(&base).map_err(|e| OciError::Invalid {
            what: format!("registry {}", r.registry),
            reason: e.to_string(),
        })?;
        let s = &self.settings;
        let http = reqwest::Client::builder()
            .connect_timeout(s.connect_timeout)
            .read_timeout(s.read_timeout)
            .build()
            .map_err(|e| OciError::Unreachable {
                registry: r.registry.clone(),
                reason: error_chain(&e),
            })?;
        tracing::debug!(registry = %r.registry, http = insecure, "registry client");
        let host = Arc::new(Host {
            http,
            origin: challenge::origin(&base),
            base,
            base_url,
            credential,
        });
        Ok(self
            .hosts
            .lock()
            .expect("the host map is never left poisoned")
            .entry(r.registry.clone())
            .or_insert(host)
            .clone())
    }

    /// `fut` bounded by the request deadline.
    async fn bounded<T>(
        &self,
        r: &RegistryRef,
        what: &str,
        fut: impl Future<Output = T>,
    ) -> Result<T, OciError> {
        bounded_by(self.settings.request_timeout, r, what, fut).await
    }

    /// Sends the request `build` makes (made afresh for a second sending) to `url`,
    /// authorized as `r`'s registry asks, within `limit`, and returns the response
    /// whatever its status.
    ///
    /// While the origin's answer to an unauthenticated request is unknown, the first
    /// request goes alone and the others wait for it. A `401` with a challenge not
    /// known yet, or one to a Bearer token that may have expired, is answered once:
    /// the challenge is recorded for the whole process and the request sent again
    /// with what it asks for.
    #[allow(clippy::too_many_arguments)]
    async fn send<F, Fut>(
        &self,
        host: &Host,
        r: &RegistryRef,
        access: Access<'_>,
        what: &str,
        limit: Duration,
        url: &Url,
        build: F,
    ) -> Result<reqwest::Response, OciError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<reqwest::RequestBuilder, OciError>>,
    {
        let _gate = if host.origin.known() == Known::Unknown {
            let gate = host.origin.gate.lock().await;
            (host.origin.known() == Known::Unknown).then_some(gate)
        } else {
            None
        };
        let ours = challenge::same_origin(url, &host.base_url);
        let scope = access.scope(&r.repository);
        let known = host.origin.known();
        let authorization = match (&known, ours) {
            (Known::Challenged(c), true) => self.authorization(host, r, c, &scope, None).await?,
            _ => None,
        };
        let response = self
            .send_once(r, what, limit, &build, authorization.as_ref())
            .await?;
        if !ours {
            return Ok(response);
        }
        if response.status() != StatusCode::UNAUTHORIZED {
            if known == Known::Unknown {
                host.origin.learn(Known::Open);
            }
            return Ok(response);
        }
        let Some(asked) = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse)
        else {
            return Ok(response);
        };
        let again = match &known {
            Known::Challenged(c) if *c == asked => {
                matches!(asked, Challenge::Bearer { .. }) && authorization.is_some()
            }
            _ => true,
        };
        if !again {
            return Ok(response);
        }
        tracing::debug!(registry = %r.registry, challenge = ?asked, "registry asks for authorization");
        host.origin.learn(Known::Challenged(asked.clone()));
        drop(response);
        let fresh = self
            .authorization(host, r, &asked, &scope, authorization.as_ref())
            .await?;
        self.send_once(r, what, limit, &build, fresh.as_ref()).await
    }

    async fn send_once<F, Fut>(
        &self,
        r: &RegistryRef,
        what: &str,
        limit: Duration,
        build: &F,
        authorization: Option<&HeaderValue>,
    ) -> Result<reqwest::Response, OciError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<reqwest::RequestBuilder, OciError>>,
    {
        let mut request = build().await?;
        if let Some(a) = authorization {
            request = request.header(AUTHORIZATION, a.clone());
        }
        bounded_by(limit, r, what, request.send())
            .await?
            .map_err(|e| reqwest_error(e, r))
    }

    /// What `challenge` asks of a request for `scope`: Basic credentials, or a Bearer
    /// token (cached process-wide; `stale`, the token a registry just refused, is
    /// replaced), or nothing for an anonymous Basic challenge.
    ///
    /// Credentials go to a Bearer realm only over HTTPS, or when the realm is the
    /// registry's own host and port. A realm elsewhere over plain HTTP gets an
    /// anonymous token request instead (public images still pull; private ones fail
    /// with the registry's 401), and a warning says why: the credentials would cross
    /// the network in the clear to a host they do not belong to.
    async fn authorization(
        &self,
        host: &Host,
        r: &RegistryRef,
        challenge: &Challenge,
        scope: &str,
        stale: Option<&HeaderValue>,
    ) -> Result<Option<HeaderValue>, OciError> {
        let (realm, service) = match challenge {
            Challenge::Basic => {
                return host
                    .credential
                    .basic_pair()
                    .map(|(user, secret)| header_value(&challenge::basic(user, secret), r))
                    .transpose()
            }
            Challenge::Bearer { realm, service } => (realm, service),
        };
        let credential = match host.credential.basic_pair() {
            Some(_) if !challenge::realm_may_receive_credentials(realm, &host.base) => {
                if host.origin.first_warning() {
                    tracing::warn!(
                        registry = %r.registry,
                        %realm,
                        "the registry's token service is another host over plain HTTP: \
                         credentials withheld, asking for an anonymous token"
                    );
                }
                None
            }
            pair => pair,
        };
        let key = TokenKey {
            realm: realm.clone(),
            service: service.clone(),
            scope: scope.to_string(),
            credential: challenge::credential_key(credential),
        };
        let slot = challenge::slot(&key);
        let mut held = slot.lock().await;
        if let Some(token) = held.as_ref() {
            if token.until > Instant::now() && Some(&token.value) != stale {
                return Ok(Some(token.value.clone()));
            }
        }
        let token = self
            .fetch_token(host, r, realm, service.as_deref(), scope, credential)
            .await?;
        *held = Some(token.clone());
        Ok(Some(token.value))
    }

    /// One token request to `realm` for `scope`.
    async fn fetch_token(
        &self,
        host: &Host,
        r: &RegistryRef,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        credential: Option<(&str, &str)>,
    ) -> Result<Token, OciError> {
        let mut url = Url::parse(realm).map_err(|e| OciError::Invalid {
            what: format!("token service of {}", r.registry),
            reason: format!("realm `{realm}`: {e}"),
        })?;
        {
            let mut query = url.query_pairs_mut();
            for s in scope.split(' ') {
                query.append_pair("scope", s);
            }
            if let Some(service) = service {
                query.append_pair("service", service);
            }
        }
        let mut request = host.http.get(url.clone());
        if let Some((user, secret)) = credential {
            request = request.basic_auth(user, Some(secret));
        }
        let response = self
            .bounded(r, "authentication", request.send())
            .await?
            .map_err(|e| reqwest_error(e, r))?;
        if !response.status().is_success() {
            return Err(self.status_error(response, url.as_str(), r).await);
        }
        let deadline = tokio::time::Instant::now() + self.settings.request_timeout;
        let body = read_capped(
            response,
            MAX_TOKEN_ANSWER,
            self.settings.read_timeout,
            deadline,
            &format!("token answer for {r}"),
            r,
            false,
        )
        .await?;
        #[derive(Deserialize)]
        struct Answer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let invalid = |reason: String| OciError::Invalid {
            what: format!("token answer for {r}"),
            reason,
        };
        let answer: Answer =
            serde_json::from_slice(&body).map_err(|e| invalid(format!("not JSON: {e}")))?;
        let token = answer
            .token
            .filter(|t| !t.is_empty())
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid("no token in it".into()))?;
        Ok(Token {
            value: header_value(&format!("Bearer {token}"), r)?,
            until: Instant::now() + challenge::lifetime(answer.expires_in),
        })
    }

    /// An error for a response with an error status, with the registry's message
    /// (read up to [`MAX_ERROR_BODY`]).
    async fn status_error(
        &self,
        response: reqwest::Response,
        url: &str,
        r: &RegistryRef,
    ) -> OciError {
        let status = response.status();
        let deadline = tokio::time::Instant::now() + self.settings.request_timeout;
        let body = read_capped(
            response,
            MAX_ERROR_BODY as u64,
            self.settings.read_timeout,
            deadline,
            "error answer",
            r,
            true,
        )
        .await
        .unwrap_or_default();
        OciError::from_client(
            OciDistributionError::ServerError {
                code: status.as_u16(),
                url: url.to_string(),
                message: String::from_utf8_lossy(&body).into_owned(),
            },
            &r.registry,
            &r.to_string(),
        )
    }

    /// `/v2/<repository>/<path>` on `r`'s registry.
    fn url(&self, host: &Host, r: &RegistryRef, path: &str) -> Result<Url, OciError> {
        let url = format!("{}/v2/{}/{path}", host.base, r.repository);
        Url::parse(&url).map_err(|e| OciError::Invalid {
            what: format!("URL for {r}"),
            reason: format!("`{url}`: {e}"),
        })
    }

    /// Sends one read request for `path` under `r`'s repository (`manifests/…`,
    /// `blobs/…`) and returns the response once its headers are in and its status
    /// is a success; an error status becomes an [`OciError`] with the registry's
    /// message.
    async fn read_request(
        &self,
        r: &RegistryRef,
        method: reqwest::Method,
        path: &str,
        accept: &str,
    ) -> Result<reqwest::Response, OciError> {
        let host = self.host(r)?;
        let url = self.url(&host, r, path)?;
        let response = self
            .send(
                &host,
                r,
                Access::Pull,
                "request",
                self.settings.request_timeout,
                &url,
                || async {
                    Ok(host
                        .http
                        .request(method.clone(), url.clone())
                        .header(ACCEPT, accept))
                },
            )
            .await?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(self.status_error(response, url.as_str(), r).await)
    }

    /// Tag or digest → manifest digest, with a HEAD (a GET when the registry sends
    /// no `Docker-Content-Digest`).
    pub(crate) async fn manifest_digest(&self, r: &RegistryRef) -> Result<Digest, OciError> {
        let said = self
            .settings
            .retry
            .run("resolve", || async {
                let response = match self
                    .read_request(r, reqwest::Method::HEAD, &manifest_path(r), &accept())
                    .await
                {
                    Ok(response) => response,
                    // A HEAD's error has no body: a GET brings the registry's message
                    // (or, from a registry that only fails HEADs, the manifest).
                    Err(e) if answered(&e) => {
                        let (bytes, _) = self.fetch_manifest_once(r, MAX_MANIFEST_SIZE).await?;
                        return Ok(Some(RawManifest::from_bytes(bytes)?.digest));
                    }
                    Err(e) => return Err(e),
                };
                match response.headers().get("docker-content-digest") {
                    Some(v) => Ok(Some(parse_digest(v.to_str().unwrap_or_default(), r)?)),
                    None => Ok(None),
                }
            })
            .await?;
        match (said, &r.digest) {
            (Some(said), Some(pinned)) if &said != pinned => Err(OciError::DigestMismatch {
                what: format!("manifest {r}"),
                expected: pinned.to_string(),
                actual: said.to_string(),
            }),
            (Some(said), _) => Ok(said),
            (None, _) => Ok(self.manifest(r, None).await?.digest),
        }
    }

    /// The manifest `r` names, read up to [`MAX_MANIFEST_SIZE`] (or `declared`, the
    /// size a descriptor gave, when smaller) and checked against the digest `r` pins
    /// and the one the registry sent.
    pub(crate) async fn manifest(
        &self,
        r: &RegistryRef,
        declared: Option<u64>,
    ) -> Result<RawManifest, OciError> {
        let cap = declared.map_or(MAX_MANIFEST_SIZE, |d| d.min(MAX_MANIFEST_SIZE));
        let (bytes, header) = self
            .settings
            .retry
            .run("fetch manifest", || self.fetch_manifest_once(r, cap))
            .await?;
        let raw = RawManifest::from_bytes(bytes)?;
        let mismatch = |expected: &Digest| OciError::DigestMismatch {
            what: format!("manifest {r}"),
            expected: expected.to_string(),
            actual: raw.digest.to_string(),
        };
        if let Some(pinned) = &r.digest {
            if pinned != &raw.digest {
                return Err(mismatch(pinned));
            }
        }
        if let Some(said) = header {
            let said = parse_digest(&said, r)?;
            if said.algorithm() == raw.digest.algorithm() && said != raw.digest {
                return Err(mismatch(&said));
            }
        }
        Ok(raw)
    }

    /// One GET of `r`'s manifest, read up to `cap` bytes, with the digest the
    /// registry said it has.
    async fn fetch_manifest_once(
        &self,
        r: &RegistryRef,
        cap: u64,
    ) -> Result<(Bytes, Option<String>), OciError> {
        let response = self
            .read_request(r, reqwest::Method::GET, &manifest_path(r), &accept())
            .await?;
        let header = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let deadline = tokio::time::Instant::now() + self.settings.request_timeout;
        let bytes = read_capped(
            response,
            cap,
            self.settings.read_timeout,
            deadline,
            &format!("manifest {r}"),
            r,
            false,
        )
        .await?;
        Ok((bytes, header))
    }

    /// A stream of the blob's bytes, bounded in time: the read timeout between
    /// chunks, and a deadline of the request timeout plus `size` at
    /// [`BLOB_MIN_RATE`]. The caller checks its size and digest.
    pub(crate) async fn open_blob(
        &self,
        r: &RegistryRef,
        digest: &Digest,
        size: u64,
    ) -> Result<BlobStream, OciError> {
        let path = format!("blobs/{digest}");
        let response = self
            .settings
            .retry
            .run("pull blob", || {
                self.read_request(r, reqwest::Method::GET, &path, "*/*")
            })
            .await?;
        let deadline = tokio::time::Instant::now() + self.blob_deadline(size);
        Ok(with_deadlines(
            response.bytes_stream().map_err(body_error),
            self.settings.read_timeout,
            deadline,
            format!("blob {digest} of {r}"),
        ))
    }

    /// How long a transfer of a `size`-byte blob may take in all.
    fn blob_deadline(&self, size: u64) -> Duration {
        self.settings
            .request_timeout
            .saturating_add(Duration::from_secs(size / BLOB_MIN_RATE))
    }
}

fn parse_digest(s: &str, r: &RegistryRef) -> Result<Digest, OciError> {
    Digest::parse(s).map_err(|e| OciError::Invalid {
        what: format!("digest from registry for {r}"),
        reason: e.to_string(),
    })
}

/// `manifests/<digest or tag>` for `r`.
fn manifest_path(r: &RegistryRef) -> String {
    match (&r.digest, &r.tag) {
        (Some(d), _) => format!("manifests/{d}"),
        (None, Some(t)) => format!("manifests/{t}"),
        (None, None) => format!("manifests/{}", imageref::DEFAULT_TAG),
    }
}

/// The host that serves `registry`'s API (`docker.io` is served by `index.docker.io`).
fn registry_host(registry: &str) -> &str {
    match registry {
        "docker.io" => "index.docker.io",
        other => other,
    }
}

/// `fut` bounded by `limit`.
async fn bounded_by<T>(
    limit: Duration,
    r: &RegistryRef,
    what: &str,
    fut: impl Future<Output = T>,
) -> Result<T, OciError> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| OciError::TimedOut {
            reference: r.to_string(),
            what: what.to_string(),
            reason: format!("no answer within {limit:?}"),
        })
}

/// `text` as a header value that is never logged.
fn header_value(text: &str, r: &RegistryRef) -> Result<HeaderValue, OciError> {
    let mut value = HeaderValue::from_str(text).map_err(|_| OciError::Invalid {
        what: format!("authorization for {r}"),
        reason: "not a valid header value".into(),
    })?;
    value.set_sensitive(true);
    Ok(value)
}

fn accept() -> String {
    media_type::MANIFESTS.join(", ")
}

/// A reqwest failure on a request for `r`: a timeout says so; the rest is mapped as
/// oci-client's errors are.
fn reqwest_error(e: reqwest::Error, r: &RegistryRef) -> OciError {
    OciError::from_client(
        OciDistributionError::RequestError(e),
        &r.registry,
        &r.to_string(),
    )
}

/// A body read into memory, at most `cap` bytes: a `Content-Length` above it fails
/// before any byte is read, and a body that grows past it fails at the chunk that
/// crosses it, without reading on. `lossy` keeps what fitted instead (error bodies).
async fn read_capped(
    response: reqwest::Response,
    cap: u64,
    idle: Duration,
    deadline: tokio::time::Instant,
    what: &str,
    r: &RegistryRef,
    lossy: bool,
) -> Result<Bytes, OciError> {
    let too_big = |size: String| OciError::Invalid {
        what: what.to_string(),
        reason: format!("{size} bytes, more than the {cap} allowed"),
    };
    if let Some(len) = response.content_length() {
        if len > cap && !lossy {
            return Err(too_big(len.to_string()));
        }
    }
    let mut stream = with_deadlines(
        response.bytes_stream().map_err(body_error),
        idle,
        deadline,
        format!("{r}"),
    );
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| io_error(e, r))?;
        let room = (cap as usize).saturating_sub(out.len());
        if chunk.len() > room {
            if lossy {
                out.extend_from_slice(&chunk[..room]);
                break;
            }
            return Err(too_big(format!("more than {}", out.len() + chunk.len())));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// A failure reading a response body, as I/O: reqwest's read timeout (a body that
/// stalls) keeps its [`std::io::ErrorKind::TimedOut`] kind and says so.
fn body_error(e: reqwest::Error) -> std::io::Error {
    if e.is_timeout() {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("timed out: {}", error_chain(&e)),
        )
    } else {
        std::io::Error::other(e)
    }
}

/// An I/O failure while reading from `r`'s registry.
pub(crate) fn io_error(e: std::io::Error, r: &impl std::fmt::Display) -> OciError {
    let reason = error_chain(&e);
    if e.kind() == std::io::ErrorKind::TimedOut || reason.contains("timed out") {
        OciError::TimedOut {
            reference: r.to_string(),
            what: "read".into(),
            reason,
        }
    } else {
        OciError::Registry {
            reference: r.to_string(),
            status: None,
            message: reason,
        }
    }
}

/// Whether the registry answered `e` with a status (it did not time out, nor
/// stay out of reach).
fn answered(e: &OciError) -> bool {
    !matches!(e, OciError::TimedOut { .. } | OciError::Unreachable { .. })
}
