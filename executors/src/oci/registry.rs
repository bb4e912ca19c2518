//! Registry access: reads (manifests, HEADs, blob downloads) over reqwest with our
//! own bounds, writes (uploads, mounts, manifest pushes) over oci-client. One
//! connection pool per registry host (plain HTTP for loopback and insecure
//! registries), credentials looked up and vetted once per host, every call retried
//! on transient failures, bounded in time, and its errors mapped to [`OciError`].
//!
//! Registries are untrusted, so every read is bounded: a connect timeout, a read
//! timeout (silence between bytes), a deadline per request (per blob, one that grows
//! with its declared size), and a size cap ([`MAX_MANIFEST_SIZE`], or a blob's
//! declared size).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use imageref::{Digest, RegistryRef};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};

use super::blob::{file_stream, with_deadlines, BlobStream};
use super::error::error_chain;
use super::manifest::{media_type, RawManifest, MAX_MANIFEST_SIZE};
use super::store::BLOB_MIN_RATE;
use super::{OciError, StoreSettings};

/// How long a registry token is reused for our own reads. Registries issue tokens
/// for at least 60 s (the distribution spec's default when `expires_in` is absent).
const TOKEN_REUSE: Duration = Duration::from_secs(50);

/// The most of an error body kept for the message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// One registry host: its oci-client, our own reqwest client, the vetted credential.
struct Host {
    client: Client,
    http: reqwest::Client,
    /// `scheme://host[:port]`, as oci-client resolves the registry.
    base: String,
    auth: RegistryAuth,
    /// `repository` → the `Authorization` value for pulls, and when it was made.
    tokens: Mutex<HashMap<String, (Option<HeaderValue>, Instant)>>,
}

pub(crate) struct Registries {
    settings: Arc<StoreSettings>,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
}

impl Registries {
    pub(crate) fn new(settings: Arc<StoreSettings>) -> Registries {
        Registries {
            settings,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `host` is spoken to over plain HTTP.
    fn is_insecure(&self, host: &str) -> bool {
        let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
        matches!(name, "localhost" | "127.0.0.1" | "[::1]")
            || self.settings.insecure_registries.iter().any(|r| r == host)
    }

    /// The client for `r`'s registry, made (and given its credentials) on first use.
    async fn client(&self, r: &RegistryRef) -> Result<Client, OciError> {
        Ok(self.host(r).await?.client.clone())
    }

    /// `r`'s registry host, made on first use: its credential is looked up and vetted
    /// (see [`vet_credential`]) once.
    async fn host(&self, r: &RegistryRef) -> Result<Arc<Host>, OciError> {
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
        let oci_ref = to_oci(r);
        let base = format!(
            "{}://{}",
            if insecure { "http" } else { "https" },
            oci_ref.resolve_registry()
        );
        let s = &self.settings;
        let http = reqwest::Client::builder()
            .connect_timeout(s.connect_timeout)
            .read_timeout(s.read_timeout)
            .build()
            .map_err(|e| OciError::Unreachable {
                registry: r.registry.clone(),
                reason: error_chain(&e),
            })?;
        let auth = credential.to_registry_auth();
        let auth = match auth {
            RegistryAuth::Anonymous => auth,
            auth => self.vet_credential(&http, &base, r, auth).await?,
        };
        let client = Client::new(ClientConfig {
            protocol: if insecure {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            // Blobs are streamed in one PUT: faster than chunked PATCHes, and every
            // blob kpackd pushes has a known size.
            use_monolithic_push: true,
            connect_timeout: Some(s.connect_timeout),
            read_timeout: Some(s.read_timeout),
            ..Default::default()
        });
        client
            .store_auth_if_needed(oci_ref.resolve_registry(), &auth)
            .await;
        tracing::debug!(registry = %r.registry, http = insecure, "registry client");
        let host = Arc::new(Host {
            client,
            http,
            base,
            auth,
            tokens: Mutex::new(HashMap::new()),
        });
        Ok(self
            .hosts
            .lock()
            .expect("the host map is never left poisoned")
            .entry(r.registry.clone())
            .or_insert(host)
            .clone())
    }

    /// Decides whether the registry's credentials may go where its token service
    /// is: they are sent to a Bearer realm only over HTTPS, or when the realm is the
    /// registry's own host and port. A realm elsewhere over plain HTTP gets an
    /// anonymous token request instead (public images still pull; private ones fail
    /// with the registry's 401), and a warning says why: the credentials would cross
    /// the network in the clear to a host they do not belong to.
    ///
    /// The challenge is read once, here. A registry that answers differently later
    /// gains nothing it could not get anyway by asking for Basic auth itself; what
    /// this stops is an honest registry's (or a tampered-with plain-HTTP) challenge
    /// sending the credentials to a third host in the clear.
    async fn vet_credential(
        &self,
        http: &reqwest::Client,
        base: &str,
        r: &RegistryRef,
        auth: RegistryAuth,
    ) -> Result<RegistryAuth, OciError> {
        let probe = http.get(format!("{base}/v2/")).send();
        let response = self
            .bounded(r, "authentication probe", probe)
            .await?
            .map_err(|e| reqwest_error(e, r))?;
        let realm = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_realm);
        drop(response);
        match realm {
            Some(realm) if !realm_may_receive_credentials(&realm, base) => {
                tracing::warn!(
                    registry = %r.registry,
                    %realm,
                    "the registry's token service is another host over plain HTTP: \
                     credentials withheld, asking for an anonymous token"
                );
                Ok(RegistryAuth::Anonymous)
            }
            _ => Ok(auth),
        }
    }

    /// `fut` bounded by the request deadline.
    async fn bounded<T>(
        &self,
        r: &RegistryRef,
        what: &str,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, OciError> {
        let limit = self.settings.request_timeout;
        tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| OciError::TimedOut {
                reference: r.to_string(),
                what: what.to_string(),
                reason: format!("no answer within {limit:?}"),
            })
    }

    /// The `Authorization` value for pulls from `r`'s repository: a Bearer token
    /// (from oci-client's token dance with the vetted credential), else Basic
    /// credentials for a registry that wants them, else none.
    async fn authorization(
        &self,
        host: &Host,
        r: &RegistryRef,
    ) -> Result<Option<HeaderValue>, OciError> {
        let oci_ref = to_oci(r);
        let key = oci_ref.repository().to_string();
        if let Some((value, made)) = host
            .tokens
            .lock()
            .expect("the token map is never left poisoned")
            .get(&key)
        {
            if made.elapsed() < TOKEN_REUSE {
                return Ok(value.clone());
            }
        }
        let token = self
            .bounded(
                r,
                "authentication",
                host.client
                    .auth(&oci_ref, &host.auth, RegistryOperation::Pull),
            )
            .await?
            .map_err(|e| OciError::from_client(e, &r.registry, &r.to_string()))?;
        let value = match (token, &host.auth) {
            (Some(token), _) => Some(format!("Bearer {token}")),
            (None, RegistryAuth::Basic(user, pass)) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
            )),
            (None, _) => None,
        };
        let value = match value {
            Some(v) => {
                let mut v = HeaderValue::from_str(&v).map_err(|_| OciError::Invalid {
                    what: format!("token for {r}"),
                    reason: "not a valid header value".into(),
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        host.tokens
            .lock()
            .expect("the token map is never left poisoned")
            .insert(key, (value.clone(), Instant::now()));
        Ok(value)
    }

    /// Sends one read request for `path` under `r`'s repository (`manifests/…`,
    /// `blobs/…`) and returns the response once its headers are in and its status
    /// is a success; an error status becomes an [`OciError`] with the registry's
    /// message (read up to [`MAX_ERROR_BODY`]).
    async fn read_request(
        &self,
        r: &RegistryRef,
        method: reqwest::Method,
        path: &str,
        accept: &str,
    ) -> Result<reqwest::Response, OciError> {
        let host = self.host(r).await?;
        let authorization = self.authorization(&host, r).await?;
        let url = format!("{}/v2/{}/{path}", host.base, to_oci(r).repository());
        let mut request = host.http.request(method, &url).header(ACCEPT, accept);
        if let Some(a) = authorization {
            request = request.header(AUTHORIZATION, a);
        }
        let response = self
            .bounded(r, "request", request.send())
            .await?
            .map_err(|e| reqwest_error(e, r))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if status == reqwest::StatusCode::UNAUTHORIZED {
            // A token may have expired early: the next attempt asks afresh.
            host.tokens
                .lock()
                .expect("the token map is never left poisoned")
                .remove(to_oci(r).repository());
        }
        let deadline = tokio::time::Instant::now() + self.settings.request_timeout;
        let body = read_capped(
            response,
            MAX_ERROR_BODY as u64,
            self.settings.read_timeout,
            deadline,
            r,
            true,
        )
        .await
        .unwrap_or_default();
        Err(OciError::from_client(
            OciDistributionError::ServerError {
                code: status.as_u16(),
                url,
                message: String::from_utf8_lossy(&body).into_owned(),
            },
            &r.registry,
            &r.to_string(),
        ))
    }

    /// Runs one oci-client call with retries and the request deadline, mapping its
    /// errors.
    async fn call<T, F, Fut>(&self, r: &RegistryRef, what: &str, op: F) -> Result<T, OciError>
    where
        F: Fn(Client, Reference) -> Fut,
        Fut: std::future::Future<Output = Result<T, OciDistributionError>>,
    {
        let client = self.client(r).await?;
        let oci_ref = to_oci(r);
        let shown = r.to_string();
        self.settings
            .retry
            .run(what, || {
                let fut = op(client.clone(), oci_ref.clone());
                let shown = &shown;
                async move {
                    self.bounded(r, what, fut)
                        .await?
                        .map_err(|e| OciError::from_client(e, &r.registry, shown))
                }
            })
            .await
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
            r,
            false,
        )
        .await?;
        Ok((bytes, header))
    }

    pub(crate) async fn blob_exists(
        &self,
        r: &RegistryRef,
        digest: &Digest,
    ) -> Result<bool, OciError> {
        let d = digest.to_string();
        self.call(r, "check blob", |c, o| {
            let d = d.clone();
            async move { c.blob_exists(&o, &d).await }
        })
        .await
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

    /// Tries a cross-repository mount from `source` (same registry); `false` when the
    /// registry declined (202: it opened an upload session instead).
    pub(crate) async fn mount_blob(
        &self,
        target: &RegistryRef,
        source: &RegistryRef,
        digest: &Digest,
    ) -> Result<bool, OciError> {
        let d = digest.to_string();
        let from = to_oci(source);
        let result = self
            .call(target, "mount blob", |c, o| {
                let (d, from) = (d.clone(), from.clone());
                async move {
                    match c.mount_blob(&o, &from, &d).await {
                        Err(OciDistributionError::SpecViolationError(_)) => Ok(false),
                        other => other.map(|()| true),
                    }
                }
            })
            .await?;
        tracing::debug!(%target, %source, %digest, mounted = result, "cross-repository mount");
        Ok(result)
    }

    /// Pushes a blob from a stream that `open` makes afresh for every attempt.
    pub(crate) async fn push_blob<F, Fut, S>(
        &self,
        r: &RegistryRef,
        digest: &Digest,
        size: u64,
        open: F,
    ) -> Result<(), OciError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<S, OciError>>,
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let client = self.client(r).await?;
        let oci_ref = to_oci(r);
        let shown = r.to_string();
        let d = digest.to_string();
        self.settings
            .retry
            .run("push blob", || async {
                let stream = open().await?.map_err(OciDistributionError::IoError);
                let push = client.push_blob_stream(&oci_ref, stream, &d, Some(size));
                match tokio::time::timeout(self.blob_deadline(size), push).await {
                    Ok(result) => result
                        .map(drop)
                        .map_err(|e| OciError::from_client(e, &r.registry, &shown)),
                    Err(_) => Err(OciError::TimedOut {
                        reference: shown.clone(),
                        what: "push blob".into(),
                        reason: format!("not finished within {:?}", self.blob_deadline(size)),
                    }),
                }
            })
            .await
    }

    pub(crate) async fn push_blob_file(
        &self,
        r: &RegistryRef,
        digest: &Digest,
        size: u64,
        path: &Path,
    ) -> Result<(), OciError> {
        self.push_blob(r, digest, size, || file_stream(path)).await
    }

    pub(crate) async fn push_blob_bytes(
        &self,
        r: &RegistryRef,
        digest: &Digest,
        bytes: Bytes,
    ) -> Result<(), OciError> {
        let size = bytes.len() as u64;
        self.push_blob(r, digest, size, || {
            let bytes = bytes.clone();
            async move { Ok(futures::stream::iter([Ok(bytes)])) }
        })
        .await
    }

    /// Puts a manifest with its exact bytes under `r`'s tag or digest.
    pub(crate) async fn push_manifest(
        &self,
        r: &RegistryRef,
        manifest: &RawManifest,
    ) -> Result<(), OciError> {
        let content_type: reqwest::header::HeaderValue =
            manifest.media_type.parse().map_err(|_| OciError::Invalid {
                what: format!("manifest {}", manifest.digest),
                reason: format!("media type `{}` is not a header value", manifest.media_type),
            })?;
        let bytes = manifest.bytes.clone();
        self.call(r, "push manifest", |c, o| {
            let (bytes, content_type) = (bytes.clone(), content_type.clone());
            async move { c.push_manifest_raw(&o, bytes, content_type).await }
        })
        .await
        .map(drop)
    }
}

fn to_oci(r: &RegistryRef) -> Reference {
    match &r.digest {
        Some(d) => Reference::with_digest(r.registry.clone(), r.repository.clone(), d.to_string()),
        None => Reference::with_tag(
            r.registry.clone(),
            r.repository.clone(),
            r.tag
                .clone()
                .unwrap_or_else(|| imageref::DEFAULT_TAG.to_string()),
        ),
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
    let o = to_oci(r);
    format!(
        "manifests/{}",
        o.digest().or(o.tag()).unwrap_or(imageref::DEFAULT_TAG)
    )
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
    r: &RegistryRef,
    lossy: bool,
) -> Result<Bytes, OciError> {
    let too_big = |size: String| OciError::Invalid {
        what: format!("manifest {r}"),
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

/// The `realm` of a `Bearer` challenge, if the header is one.
fn bearer_realm(challenge: &str) -> Option<String> {
    let (scheme, params) = challenge.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let at = params.to_ascii_lowercase().find("realm=")?;
    let value = params[at + "realm=".len()..].trim_start();
    let value = match value.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next()?,
        None => value.split(',').next()?.trim(),
    };
    Some(value.to_string())
}

/// Whether credentials may be sent to the token `realm` of the registry at `base`
/// (`scheme://host[:port]`): over HTTPS, or to the registry's own host and port.
fn realm_may_receive_credentials(realm: &str, base: &str) -> bool {
    let (Ok(realm), Ok(base)) = (reqwest::Url::parse(realm), reqwest::Url::parse(base)) else {
        return false;
    };
    realm.scheme() == "https"
        || (realm.host_str() == base.host_str()
            && realm.port_or_known_default() == base.port_or_known_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realms() {
        assert_eq!(
            bearer_realm(r#"Bearer realm="http://other:1/token",service="reg""#).as_deref(),
            Some("http://other:1/token")
        );
        assert_eq!(bearer_realm(r#"Basic realm="x""#), None);
        let base = "http://127.0.0.1:5000";
        assert!(realm_may_receive_credentials(
            "https://auth.example/token",
            base
        ));
        assert!(realm_may_receive_credentials(
            "http://127.0.0.1:5000/token",
            base
        ));
        assert!(!realm_may_receive_credentials(
            "http://127.0.0.1:5001/token",
            base
        ));
        assert!(!realm_may_receive_credentials("http://other/token", base));
        assert!(!realm_may_receive_credentials("not a url", base));
    }
}
