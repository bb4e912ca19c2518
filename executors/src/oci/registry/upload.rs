//! Writes to a registry: blob checks, cross-repository mounts, blob uploads (one
//! `POST` for the session, one streamed `PUT` with the digest), and manifest pushes
//! with their exact bytes.

use std::future::Future;
use std::path::Path;

use bytes::Bytes;
use futures::Stream;
use imageref::{Digest, RegistryRef};
use reqwest::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{StatusCode, Url};

use super::super::blob::file_stream;
use super::super::manifest::RawManifest;
use super::{Access, Registries};
use crate::oci::OciError;

impl Registries {
    /// Whether `r`'s repository has the blob (one HEAD).
    pub(crate) async fn blob_exists(
        &self,
        r: &RegistryRef,
        digest: &Digest,
    ) -> Result<bool, OciError> {
        let host = self.host(r)?;
        let url = self.url(&host, r, &format!("blobs/{digest}"))?;
        let limit = self.settings.request_timeout;
        self.settings
            .retry
            .run("check blob", || async {
                let response = self
                    .send(
                        &host,
                        r,
                        Access::Pull,
                        "check blob",
                        limit,
                        &url,
                        || async { Ok(host.http.head(url.clone())) },
                    )
                    .await?;
                match response.status() {
                    s if s.is_success() => Ok(true),
                    StatusCode::NOT_FOUND => Ok(false),
                    _ => Err(self.status_error(response, url.as_str(), r).await),
                }
            })
            .await
    }

    /// Tries a cross-repository mount from `source` (same registry); `false` when the
    /// registry declined (202: it opened an upload session instead).
    pub(crate) async fn mount_blob(
        &self,
        target: &RegistryRef,
        source: &RegistryRef,
        digest: &Digest,
    ) -> Result<bool, OciError> {
        let host = self.host(target)?;
        let mut url = self.url(&host, target, "blobs/uploads/")?;
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", &source.repository);
        let limit = self.settings.request_timeout;
        let access = || Access::Mount {
            from: &source.repository,
        };
        let mounted = self
            .settings
            .retry
            .run("mount blob", || async {
                let response = self
                    .send(
                        &host,
                        target,
                        access(),
                        "mount blob",
                        limit,
                        &url,
                        || async { Ok(host.http.post(url.clone()).header(CONTENT_LENGTH, 0)) },
                    )
                    .await?;
                match response.status() {
                    StatusCode::CREATED => Ok(true),
                    StatusCode::ACCEPTED => Ok(false),
                    _ => Err(self.status_error(response, url.as_str(), target).await),
                }
            })
            .await?;
        tracing::debug!(%target, %source, %digest, mounted, "cross-repository mount");
        Ok(mounted)
    }

    /// Pushes a blob from a stream that `open` makes afresh for every attempt: a
    /// `POST` opens the upload, one `PUT` sends every byte with the digest (faster
    /// than chunked `PATCH`es, and every blob kpackd pushes has a known size).
    pub(crate) async fn push_blob<F, Fut, S>(
        &self,
        r: &RegistryRef,
        digest: &Digest,
        size: u64,
        open: F,
    ) -> Result<(), OciError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<S, OciError>>,
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let host = self.host(r)?;
        let start = self.url(&host, r, "blobs/uploads/")?;
        let request_limit = self.settings.request_timeout;
        let blob_limit = self.blob_deadline(size);
        self.settings
            .retry
            .run("push blob", || async {
                let response = self
                    .send(
                        &host,
                        r,
                        Access::Push,
                        "push blob",
                        request_limit,
                        &start,
                        || async { Ok(host.http.post(start.clone()).header(CONTENT_LENGTH, 0)) },
                    )
                    .await?;
                if response.status() != StatusCode::ACCEPTED {
                    return Err(self.status_error(response, start.as_str(), r).await);
                }
                let mut url = location(&host.base_url, &response, r)?;
                url.query_pairs_mut()
                    .append_pair("digest", &digest.to_string());
                let response = self
                    .send(
                        &host,
                        r,
                        Access::Push,
                        "push blob",
                        blob_limit,
                        &url,
                        || async {
                            Ok(host
                                .http
                                .put(url.clone())
                                .header(CONTENT_LENGTH, size)
                                .header(CONTENT_TYPE, "application/octet-stream")
                                .body(reqwest::Body::wrap_stream(open().await?)))
                        },
                    )
                    .await?;
                if !response.status().is_success() {
                    return Err(self.status_error(response, url.as_str(), r).await);
                }
                Ok(())
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
            async move { Ok(futures::stream::iter([Ok::<_, std::io::Error>(bytes)])) }
        })
        .await
    }

    /// Puts a manifest with its exact bytes under `r`'s tag or digest.
    pub(crate) async fn push_manifest(
        &self,
        r: &RegistryRef,
        manifest: &RawManifest,
    ) -> Result<(), OciError> {
        let content_type =
            HeaderValue::from_str(&manifest.media_type).map_err(|_| OciError::Invalid {
                what: format!("manifest {}", manifest.digest),
                reason: format!("media type `{}` is not a header value", manifest.media_type),
            })?;
        let host = self.host(r)?;
        let url = self.url(&host, r, &super::manifest_path(r))?;
        let limit = self.settings.request_timeout;
        self.settings
            .retry
            .run("push manifest", || async {
                let response = self
                    .send(
                        &host,
                        r,
                        Access::Push,
                        "push manifest",
                        limit,
                        &url,
                        || async {
                            Ok(host
                                .http
                                .put(url.clone())
                                .header(CONTENT_TYPE, content_type.clone())
                                .body(manifest.bytes.clone()))
                        },
                    )
                    .await?;
                if !response.status().is_success() {
                    return Err(self.status_error(response, url.as_str(), r).await);
                }
                Ok(())
            })
            .await
    }
}

/// The upload URL in a response's `Location` (relative to the registry, or absolute).
fn location(base: &Url, response: &reqwest::Response, r: &RegistryRef) -> Result<Url, OciError> {
    let invalid = |reason: String| OciError::Invalid {
        what: format!("upload location from {}", r.registry),
        reason,
    };
    let value = response
        .headers()
        .get(LOCATION)
        .ok_or_else(|| invalid("the registry sent none".into()))?
        .to_str()
        .map_err(|_| invalid("not text".into()))?;
    base.join(value)
        .map_err(|e| invalid(format!("`{value}`: {e}")))
}
