//! [`ImageStore`]: one handle for images in registries and in OCI layouts alike.
//! Every method takes an [`ImageRef`] and does the same thing for both kinds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use imageref::{Digest, ImageRef, LayoutRef, RegistryRef};

use imageref::Platform;

use super::blob::{limited, verified, BlobStream};
use super::cache::ReadCache;
use super::layer::WrittenLayer;
use super::layout::Layout;
use super::manifest::{
    media_type, Descriptor, ImageConfig, ImageManifest, Manifest, RawManifest, RootFs,
    MAX_MANIFEST_SIZE,
};
use super::registry::{io_error, Registries};
use super::{CredentialSource, OciError, RetryPolicy};

/// How an [`ImageStore`] reaches registries and picks platforms.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `host[:port]`s spoken to over plain HTTP, besides loopback (always plain).
    pub insecure_registries: Vec<String>,
    /// The platform chosen from an image index.
    pub platform: Platform,
    pub credentials: CredentialSource,
    pub retry: RetryPolicy,
    /// Blobs transferred at once by [`copy_image`](super::copy_image).
    pub parallel_blobs: usize,
    /// Longest wait for a registry connection to open (TCP and TLS).
    pub connect_timeout: Duration,
    /// Longest silence while waiting for an answer or for the next bytes of a body.
    pub read_timeout: Duration,
    /// Deadline of a whole request for a manifest, a config, a HEAD or a token. A
    /// blob gets this plus its declared size at [`BLOB_MIN_RATE`].
    pub request_timeout: Duration,
}

/// The slowest transfer rate a blob's deadline allows for (bytes per second): a
/// blob of `size` bytes gets `request_timeout + size / BLOB_MIN_RATE`. A stall is
/// caught sooner by `read_timeout`; this bound stops a server that trickles a byte
/// now and then. 256 KiB/s gives a 1 GiB layer over an hour.
pub const BLOB_MIN_RATE: u64 = 256 * 1024;

/// A registry that has not connected in 10 s is down or unreachable.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// 30 s without a byte: far longer than a healthy registry (or its storage backend
/// behind a redirect) pauses, short enough that a stalled connection fails promptly.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Manifests and configs are at most 4 MiB: 2 min allows for them at ~35 KiB/s.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            insecure_registries: Vec::new(),
            platform: Platform::linux_amd64(),
            credentials: CredentialSource::from_env(),
            retry: RetryPolicy::default(),
            parallel_blobs: 4,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// What a reference points at, pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The digest of the manifest the reference names (an index, or an image).
    pub digest: Digest,
    pub media_type: String,
    /// The image manifest for the configured platform: `digest` itself unless the
    /// reference names an index.
    pub image: Digest,
    /// The platform the index entry declared, when there was an index.
    pub platform: Option<Platform>,
}

/// A single-platform image: its manifest and config, read and checked.
#[derive(Debug, Clone)]
pub struct Image {
    /// Where it was read from, as given.
    pub source: ImageRef,
    /// The index the image was chosen from, if the reference named one.
    pub index_digest: Option<Digest>,
    pub raw_manifest: RawManifest,
    pub manifest: ImageManifest,
    pub raw_config: Bytes,
    pub config: ImageConfig,
}

impl Image {
    /// The image manifest's digest.
    pub fn digest(&self) -> &Digest {
        &self.raw_manifest.digest
    }

    /// `repo@digest` for a registry image; the layout reference otherwise.
    pub fn pinned(&self) -> ImageRef {
        match &self.source {
            ImageRef::Registry(r) => ImageRef::Registry(r.at_digest(self.digest().clone())),
            layout => layout.clone(),
        }
    }

    /// The descriptor of the layer whose uncompressed digest is `diff_id`, when the image
    /// has one.
    pub fn layer_with_diff_id(&self, diff_id: &Digest) -> Option<&Descriptor> {
        let index = self
            .config
            .rootfs
            .diff_ids
            .iter()
            .position(|d| d == diff_id)?;
        self.manifest.layers.get(index)
    }
}

/// How a blob reached its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlobTransfer {
    /// The destination had it already.
    Existed,
    /// Mounted from another repository of the same registry.
    Mounted,
    /// Bytes sent.
    Uploaded,
}

/// Images in registries and OCI layouts, behind one API. Cheap to clone; clones share
/// registry connections and tokens.
#[derive(Clone)]
pub struct ImageStore {
    settings: Arc<StoreSettings>,
    registries: Arc<Registries>,
    /// Manifests read by digest and configs, from registries.
    cache: Arc<ReadCache>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ImageStore {
    pub fn new(settings: StoreSettings) -> ImageStore {
        let settings = Arc::new(settings);
        ImageStore {
            registries: Arc::new(Registries::new(settings.clone())),
            settings,
            cache: Arc::default(),
        }
    }

    pub fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    /// This store, keeping the manifests and configs it pushes to registries in `dir`
    /// too, where later processes read them instead of asking the registry (see
    /// `oci::cache`). Clones made before do not share it.
    pub fn with_pushed_cache(mut self, dir: PathBuf) -> ImageStore {
        self.cache = Arc::new(ReadCache::with_disk(dir));
        self
    }

    /// The digest of the manifest `r` names (index or image), as cheaply as the
    /// registry allows: one HEAD.
    pub async fn resolve_digest(&self, r: &ImageRef) -> Result<Digest, OciError> {
        match r {
            ImageRef::Registry(r) => self.registries.manifest_digest(r).await,
            ImageRef::Layout(l) => Ok(open_layout(l)?.find(l.name.as_deref())?.digest),
        }
    }

    /// The digest `r` names and, for an index, the configured platform's manifest
    /// digest (one GET; the platform's manifest itself is not fetched).
    pub async fn resolve(&self, r: &ImageRef) -> Result<Resolved, OciError> {
        let raw = self.manifest(r).await?;
        let (image, platform) = match raw.parse()? {
            Manifest::Image(_) => (raw.digest.clone(), None),
            Manifest::Index(index) => {
                let entry = self.platform_entry(r, &index)?;
                (entry.digest.clone(), entry.platform.clone())
            }
        };
        Ok(Resolved {
            digest: raw.digest,
            media_type: raw.media_type,
            image,
            platform,
        })
    }

    /// The manifest `r` names, exactly as stored.
    pub async fn manifest(&self, r: &ImageRef) -> Result<RawManifest, OciError> {
        match r {
            ImageRef::Registry(reg) => self.registry_manifest(reg).await,
            ImageRef::Layout(l) => {
                let layout = open_layout(l)?;
                let entry = layout.find(l.name.as_deref())?;
                self.manifest_by_digest(r, &entry.digest).await
            }
        }
    }

    /// A manifest in `r`'s repository or layout by digest (an index's child).
    pub async fn manifest_by_digest(
        &self,
        r: &ImageRef,
        digest: &Digest,
    ) -> Result<RawManifest, OciError> {
        match r {
            ImageRef::Registry(reg) => self.registry_manifest(&reg.at_digest(digest.clone())).await,
            ImageRef::Layout(l) => {
                let bytes = open_layout(l)?.read_blob(digest).await?;
                RawManifest::from_bytes(bytes)
            }
        }
    }

    /// A manifest from a registry; one named by digest from the cache when it is
    /// there, and kept in it once read.
    async fn registry_manifest(&self, r: &RegistryRef) -> Result<RawManifest, OciError> {
        let Some(digest) = &r.digest else {
            return self.registries.manifest(r, None).await;
        };
        let repository = cache_key(r);
        if let Some(bytes) = self.cache.lookup(&repository, digest).await {
            return RawManifest::from_bytes(bytes);
        }
        let raw = self.registries.manifest(r, None).await?;
        self.cache.put(&repository, &raw.digest, &raw.bytes);
        Ok(raw)
    }

    /// The image `r` names, for the configured platform when `r` names an index:
    /// manifest and config.
    pub async fn image(&self, r: &ImageRef) -> Result<Image, OciError> {
        let raw = self.manifest(r).await?;
        let (index_digest, raw_manifest) = match raw.parse()? {
            Manifest::Image(_) => (None, raw),
            Manifest::Index(index) => {
                let entry = self.platform_entry(r, &index)?;
                let child = self.manifest_by_digest(r, &entry.digest).await?;
                (Some(raw.digest), child)
            }
        };
        let manifest = match raw_manifest.parse()? {
            Manifest::Image(m) => m,
            Manifest::Index(_) => {
                return Err(OciError::Unsupported(format!(
                    "{r}: an index inside an index is not supported"
                )))
            }
        };
        let raw_config = self.read_blob(r, &manifest.config).await?;
        let config = serde_json::from_slice(&raw_config).map_err(|e| OciError::Invalid {
            what: format!("image config of {r}"),
            reason: e.to_string(),
        })?;
        Ok(Image {
            source: r.clone(),
            index_digest,
            raw_manifest,
            manifest,
            raw_config,
            config,
        })
    }

    fn platform_entry<'i>(
        &self,
        r: &ImageRef,
        index: &'i super::ImageIndex,
    ) -> Result<&'i Descriptor, OciError> {
        index
            .for_platform(&self.settings.platform)
            .ok_or_else(|| OciError::PlatformNotFound {
                reference: r.to_string(),
                platform: self.settings.platform.to_string(),
                available: index
                    .manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref().map(Platform::to_string))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    pub async fn blob_exists(&self, r: &ImageRef, digest: &Digest) -> Result<bool, OciError> {
        match r {
            ImageRef::Registry(reg) => self.registries.blob_exists(reg, digest).await,
            // A layout not made yet holds no blobs: it is made by the first write.
            ImageRef::Layout(l) if Layout::exists(&l.dir) => Ok(open_layout(l)?.has_blob(digest)),
            ImageRef::Layout(_) => Ok(false),
        }
    }

    /// A small blob (a config), whole and checked: at most [`MAX_MANIFEST_SIZE`],
    /// and exactly its declared size. Layers go through [`open_blob`](Self::open_blob).
    pub async fn read_blob(&self, r: &ImageRef, blob: &Descriptor) -> Result<Bytes, OciError> {
        if blob.size > MAX_MANIFEST_SIZE {
            return Err(OciError::Invalid {
                what: format!("blob {} of {r}", blob.digest),
                reason: format!(
                    "declared as {} bytes, more than the {MAX_MANIFEST_SIZE} read into memory",
                    blob.size
                ),
            });
        }
        let cached = match r {
            ImageRef::Registry(reg) => Some(cache_key(reg)),
            ImageRef::Layout(_) => None,
        };
        if let Some(key) = &cached {
            if let Some(bytes) = self.cache.lookup(key, &blob.digest).await {
                return Ok(bytes);
            }
        }
        let mut stream = self.open_blob(r, blob).await?;
        let mut out = Vec::with_capacity(blob.size as usize);
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.map_err(|e| io_error(e, r))?);
        }
        // The stream ended, so its bytes hashed to the digest.
        let bytes = Bytes::from(out);
        if let Some(key) = cached {
            self.cache.put(&key, &blob.digest, &bytes);
        }
        Ok(bytes)
    }

    /// A blob's bytes as a stream, checked against its declared size as they come
    /// (a blob that runs over fails at once) and against its digest when it ends.
    pub async fn open_blob(&self, r: &ImageRef, blob: &Descriptor) -> Result<BlobStream, OciError> {
        let stream = match r {
            ImageRef::Registry(reg) => verified(
                self.registries
                    .open_blob(reg, &blob.digest, blob.size)
                    .await?,
                blob.digest.clone(),
            ),
            ImageRef::Layout(l) => open_layout(l)?.open_blob(&blob.digest).await?,
        };
        Ok(limited(
            stream,
            blob.size,
            format!("blob {} of {r}", blob.digest),
        ))
    }

    /// Pushes a blob that sits in a file (a layer just written), unless the
    /// destination has it.
    pub async fn push_blob_file(
        &self,
        r: &ImageRef,
        blob: &Descriptor,
        path: &Path,
    ) -> Result<BlobTransfer, OciError> {
        if self.blob_exists(r, &blob.digest).await? {
            return Ok(BlobTransfer::Existed);
        }
        match r {
            ImageRef::Registry(reg) => {
                self.registries
                    .push_blob_file(reg, &blob.digest, blob.size, path)
                    .await?
            }
            ImageRef::Layout(l) => {
                open_or_create_layout(l)?
                    .add_blob_file(&blob.digest, path)
                    .await?
            }
        }
        Ok(BlobTransfer::Uploaded)
    }

    /// Pushes a small blob (a config) from memory, unless the destination has it; says
    /// which it was.
    pub async fn push_blob_bytes(
        &self,
        r: &ImageRef,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<(Descriptor, BlobTransfer), OciError> {
        let descriptor = Descriptor::new(media_type, Digest::sha256(&bytes), bytes.len() as u64);
        let existed = self.blob_exists(r, &descriptor.digest).await?;
        if !existed {
            match r {
                ImageRef::Registry(reg) => {
                    self.registries
                        .push_blob_bytes(reg, &descriptor.digest, bytes.clone())
                        .await?;
                }
                ImageRef::Layout(l) => {
                    open_or_create_layout(l)?
                        .write_blob_bytes(bytes.clone())
                        .await?;
                }
            }
        }
        // Kept whether or not the registry had it: the next rebase reads it either way.
        if let ImageRef::Registry(reg) = r {
            self.keep_pushed(reg, &descriptor.digest, &bytes).await;
        }
        let transfer = if existed {
            BlobTransfer::Existed
        } else {
            BlobTransfer::Uploaded
        };
        Ok((descriptor, transfer))
    }

    /// Keeps what was pushed to `reg` as `digest` for later reads (`oci::cache`).
    async fn keep_pushed(&self, reg: &RegistryRef, digest: &Digest, bytes: &Bytes) {
        self.cache.keep_pushed(&cache_key(reg), digest, bytes).await;
    }

    /// Pushes a small blob just made (a rebased image's config) without asking first
    /// whether the destination has it: for a new blob that question costs a request
    /// for nothing, and pushing a blob the destination has is harmless.
    pub async fn upload_blob_bytes(
        &self,
        r: &ImageRef,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Descriptor, OciError> {
        let descriptor = Descriptor::new(media_type, Digest::sha256(&bytes), bytes.len() as u64);
        match r {
            ImageRef::Registry(reg) => {
                self.registries
                    .push_blob_bytes(reg, &descriptor.digest, bytes.clone())
                    .await?;
                self.keep_pushed(reg, &descriptor.digest, &bytes).await;
            }
            ImageRef::Layout(_) => return Ok(self.push_blob_bytes(r, media_type, bytes).await?.0),
        }
        Ok(descriptor)
    }

    /// Copies one blob from `from` to `to`: nothing when `to` has it, a
    /// cross-repository mount when both are repositories of one registry, else a
    /// stream of its bytes (`on_bytes` sees each chunk's length). Retried whole on
    /// transient failures.
    pub async fn copy_blob(
        &self,
        from: &ImageRef,
        to: &ImageRef,
        blob: &Descriptor,
        on_bytes: Arc<dyn Fn(u64) + Send + Sync>,
    ) -> Result<BlobTransfer, OciError> {
        if self.blob_exists(to, &blob.digest).await? {
            return Ok(BlobTransfer::Existed);
        }
        self.copy_new_blob(from, to, blob, on_bytes).await
    }

    /// [`copy_blob`](Self::copy_blob) for a blob `to` is not expected to have (a run
    /// layer newer than the app image being rebased), without asking first: a mount
    /// answers alike for a blob that was there after all, and a stream sends it again.
    pub async fn copy_new_blob(
        &self,
        from: &ImageRef,
        to: &ImageRef,
        blob: &Descriptor,
        on_bytes: Arc<dyn Fn(u64) + Send + Sync>,
    ) -> Result<BlobTransfer, OciError> {
        if let (ImageRef::Registry(src), ImageRef::Registry(dst)) = (from, to) {
            if src.registry == dst.registry
                && src.repository != dst.repository
                && self.registries.mount_blob(dst, src, &blob.digest).await?
            {
                return Ok(BlobTransfer::Mounted);
            }
        }
        let open = || {
            let on_bytes = on_bytes.clone();
            async move {
                let stream = self.open_blob(from, blob).await?;
                Ok(stream.inspect(move |chunk| {
                    if let Ok(c) = chunk {
                        on_bytes(c.len() as u64)
                    }
                }))
            }
        };
        match to {
            ImageRef::Registry(dst) => {
                self.registries
                    .push_blob(dst, &blob.digest, blob.size, open)
                    .await?
            }
            ImageRef::Layout(l) => {
                let layout = open_or_create_layout(l)?;
                self.settings
                    .retry
                    .run("copy blob", || async {
                        layout.write_blob(&blob.digest, open().await?).await
                    })
                    .await?;
            }
        }
        Ok(BlobTransfer::Uploaded)
    }

    /// Pushes a manifest under `r`: to a registry under `r`'s tag if it has one (the
    /// registry keeps it by digest too), else by digest; to a layout as a blob, then
    /// as `r`'s `index.json` entry. Every blob it refers to must be there already.
    /// Returns `r` pinned to the digest.
    pub async fn push_manifest(
        &self,
        r: &ImageRef,
        manifest: &RawManifest,
    ) -> Result<ImageRef, OciError> {
        match r {
            ImageRef::Registry(reg) => {
                if reg.tag.is_some() || reg.digest.is_none() {
                    let tagged = RegistryRef {
                        digest: None,
                        ..reg.clone()
                    };
                    self.registries.push_manifest(&tagged, manifest).await?;
                    self.keep_pushed(reg, &manifest.digest, &manifest.bytes)
                        .await;
                } else {
                    self.push_manifest_by_digest(r, manifest).await?;
                }
                Ok(ImageRef::Registry(reg.at_digest(manifest.digest.clone())))
            }
            ImageRef::Layout(l) => {
                self.push_manifest_by_digest(r, manifest).await?;
                let layout = open_or_create_layout(l)?;
                let name = l.name.clone();
                let descriptor = manifest.descriptor();
                tokio::task::spawn_blocking(move || layout.set_ref(name.as_deref(), descriptor))
                    .await
                    .expect("setting a layout ref does not panic")?;
                Ok(r.clone())
            }
        }
    }

    /// Writes a single-platform image from layers just written to disk: the layers
    /// (several at a time, skipping those present), the config with `rootfs` set to
    /// the layers' diffIDs, then the manifest under `r`. Returns `r` pinned.
    pub async fn push_image(
        &self,
        r: &ImageRef,
        mut config: ImageConfig,
        layers: &[WrittenLayer],
    ) -> Result<ImageRef, OciError> {
        // Owned items: a stream over borrowed ones makes the future not Send (rustc's
        // higher-ranked lifetime inference), and builds run on spawned tasks.
        futures::stream::iter(layers.to_vec())
            .map(|l| async move { self.push_blob_file(r, &l.descriptor(), &l.path).await })
            .buffer_unordered(self.settings.parallel_blobs.max(1))
            .try_collect::<Vec<_>>()
            .await?;
        config.rootfs = RootFs {
            kind: "layers".into(),
            diff_ids: layers.iter().map(|l| l.diff_id.clone()).collect(),
        };
        let config_bytes = Bytes::from(serde_json::to_vec(&config).expect("a config serialises"));
        let (config, _) = self
            .push_blob_bytes(r, media_type::OCI_CONFIG, config_bytes)
            .await?;
        let manifest = RawManifest::from_manifest(&Manifest::Image(ImageManifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.into()),
            config,
            layers: layers.iter().map(WrittenLayer::descriptor).collect(),
            annotations: None,
        }));
        self.push_manifest(r, &manifest).await
    }

    /// Pushes a manifest that no tag or layout entry names (an index's child).
    pub async fn push_manifest_by_digest(
        &self,
        r: &ImageRef,
        manifest: &RawManifest,
    ) -> Result<(), OciError> {
        match r {
            ImageRef::Registry(reg) => {
                self.registries
                    .push_manifest(&reg.at_digest(manifest.digest.clone()), manifest)
                    .await?;
                self.keep_pushed(reg, &manifest.digest, &manifest.bytes)
                    .await;
                Ok(())
            }
            ImageRef::Layout(l) => open_or_create_layout(l)?
                .write_blob_bytes(manifest.bytes.clone())
                .await
                .map(drop),
        }
    }
}

/// `registry/repository`: where a cached read came from.
fn cache_key(r: &RegistryRef) -> String {
    format!("{}/{}", r.registry, r.repository)
}

fn open_layout(l: &LayoutRef) -> Result<Layout, OciError> {
    Layout::open(&l.dir)
}

fn open_or_create_layout(l: &LayoutRef) -> Result<Layout, OciError> {
    Layout::open_or_create(&l.dir)
}
