//! Registry access over oci-client: one client per registry host (plain HTTP for
//! loopback and insecure registries), credentials looked up once per host, every
//! call retried on transient failures and its errors mapped to [`OciError`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use imageref::{Digest, RegistryRef};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::{Client, Reference};

use super::blob::{file_stream, BlobStream};
use super::manifest::{media_type, RawManifest};
use super::{OciError, StoreSettings};

pub(crate) struct Registries {
    settings: Arc<StoreSettings>,
    clients: Mutex<HashMap<String, Client>>,
}

impl Registries {
    pub(crate) fn new(settings: Arc<StoreSettings>) -> Registries {
        Registries {
            settings,
            clients: Mutex::new(HashMap::new()),
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
        if let Some(c) = self
            .clients
            .lock()
            .expect("the client map is never left poisoned")
            .get(&r.registry)
        {
            return Ok(c.clone());
        }
        let credential = self.settings.credentials.lookup(&r.registry)?;
        let protocol = if self.is_insecure(&r.registry) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let client = Client::new(ClientConfig {
            protocol,
            // Blobs are streamed in one PUT: faster than chunked PATCHes, and every
            // blob kpackd pushes has a known size.
            use_monolithic_push: true,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            ..Default::default()
        });
        let oci_ref = to_oci(r);
        client
            .store_auth_if_needed(oci_ref.resolve_registry(), &credential.to_registry_auth())
            .await;
        tracing::debug!(registry = %r.registry, http = self.is_insecure(&r.registry), "registry client");
        Ok(self
            .clients
            .lock()
            .expect("the client map is never left poisoned")
            .entry(r.registry.clone())
            .or_insert(client)
            .clone())
    }

    /// Runs one registry call with retries, mapping its errors.
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
                    fut.await
                        .map_err(|e| OciError::from_client(e, &r.registry, shown))
                }
            })
            .await
    }

    /// Tag or digest → manifest digest, with a HEAD (a GET when the registry sends
    /// no `Docker-Content-Digest`).
    pub(crate) async fn manifest_digest(&self, r: &RegistryRef) -> Result<Digest, OciError> {
        let digest = self
            .call(r, "resolve", |c, o| async move {
                c.fetch_manifest_digest(&o, &oci_client::secrets::RegistryAuth::Anonymous)
                    .await
            })
            .await?;
        parse_digest(&digest, r)
    }

    pub(crate) async fn manifest(&self, r: &RegistryRef) -> Result<RawManifest, OciError> {
        let (bytes, digest) = self
            .call(r, "fetch manifest", |c, o| async move {
                c.pull_manifest_raw(
                    &o,
                    &oci_client::secrets::RegistryAuth::Anonymous,
                    media_type::MANIFESTS,
                )
                .await
            })
            .await?;
        let mut raw = RawManifest::from_bytes(bytes)?;
        let said = parse_digest(&digest, r)?;
        if said != raw.digest {
            return Err(OciError::DigestMismatch {
                what: format!("manifest {r}"),
                expected: said.to_string(),
                actual: raw.digest.to_string(),
            });
        }
        raw.digest = said;
        Ok(raw)
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

    /// A stream of the blob's bytes; oci-client checks the digest as it ends.
    pub(crate) async fn open_blob(
        &self,
        r: &RegistryRef,
        digest: &Digest,
    ) -> Result<BlobStream, OciError> {
        let d = digest.to_string();
        let sized = self
            .call(r, "pull blob", |c, o| {
                let d = d.clone();
                async move { c.pull_blob_stream(&o, d.as_str()).await }
            })
            .await?;
        Ok(Box::pin(sized.stream))
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
                client
                    .push_blob_stream(&oci_ref, stream, &d, Some(size))
                    .await
                    .map(drop)
                    .map_err(|e| OciError::from_client(e, &r.registry, &shown))
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
