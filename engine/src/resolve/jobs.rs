//! The distinct upstreams of one resolution ([`Job`]s) and how each is resolved:
//! concurrently (bounded), each within a timeout.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use executors::oci::{ImageConfig, ImageStore, Manifest, RawManifest};
use executors::source::{blob, git, path};
use futures::StreamExt as _;
use imageref::{Digest, ImageRef, Target};

use super::blob_cache::BlobCache;
use super::ResolveError;

/// What one image read found.
#[derive(Debug, Clone)]
pub(crate) struct ImageFacts {
    pub(crate) digest: Digest,
    /// The image by digest (in a layout: the reference as written).
    pub(crate) pinned: ImageRef,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) target: Target,
}

/// One distinct upstream.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Job {
    /// An image, by its reference as written.
    Image(String),
    Git {
        url: String,
        revision: String,
        sub_paths: BTreeSet<String>,
    },
    Path {
        dir: PathBuf,
        sub_path: Option<String>,
    },
    Blob {
        url: String,
    },
    BuildpackDir(PathBuf),
}

/// What a job found.
#[derive(Debug, Clone)]
pub(crate) enum Output {
    Image(Box<ImageFacts>),
    Git {
        commit: String,
        trees: BTreeMap<String, String>,
    },
    Content(String),
    Blob(blob::BlobVersion),
}

/// Every job run, with what it found.
pub(crate) type Done = BTreeMap<Job, Result<Output, ResolveError>>;

/// Shared by the jobs of one resolution.
pub(crate) struct Context {
    pub(crate) store: ImageStore,
    /// `<state-dir>/sources`.
    pub(crate) cache_dir: PathBuf,
    /// The references of the [`Job::Image`]s, by their text.
    pub(crate) images: BTreeMap<String, ImageRef>,
}

/// Sets the flag when dropped: a timed-out git job stops its fetch.
struct InterruptOnDrop(Arc<AtomicBool>);

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs the jobs, `concurrency` at once, each within `timeout`.
pub(crate) async fn run_all(
    jobs: BTreeSet<Job>,
    context: &Arc<Context>,
    concurrency: usize,
    timeout: std::time::Duration,
) -> Done {
    futures::stream::iter(jobs)
        .map(|job| {
            let context = context.clone();
            async move {
                let result = match tokio::time::timeout(timeout, run(&job, &context)).await {
                    Ok(result) => result,
                    Err(_) => Err(ResolveError::TimedOut(timeout)),
                };
                if let Err(error) = &result {
                    let error = error.message();
                    tracing::debug!(upstream = ?job, %error, "upstream not resolved");
                }
                (job, result)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
}

/// Resolves one upstream.
async fn run(job: &Job, context: &Arc<Context>) -> Result<Output, ResolveError> {
    match job {
        Job::Image(key) => {
            let r = context
                .images
                .get(key)
                .ok_or_else(|| ResolveError::UnknownReference {
                    reference: key.clone(),
                })?;
            let cache = BlobCache::new(context.cache_dir.join("oci"));
            read_image(&context.store, r, &cache).await
        }
        Job::Git {
            url,
            revision,
            sub_paths,
        } => {
            let cache = context.cache_dir.join("git");
            let upstream = git::GitUpstream {
                url: url.clone(),
                revision: revision.clone(),
            };
            let sub_paths = sub_paths.clone();
            let interrupt = Arc::new(AtomicBool::new(false));
            let _guard = InterruptOnDrop(interrupt.clone());
            blocking(move || {
                let mut subs = sub_paths.iter();
                let first = subs.next();
                let version =
                    git::resolve(&cache, &upstream, first.map(String::as_str), &interrupt)?;
                let mut trees = BTreeMap::new();
                if let (Some(first), Some(tree)) = (first, version.tree) {
                    trees.insert(first.clone(), tree.to_string());
                }
                for sub in subs {
                    let tree =
                        git::sub_path_tree(&cache, &upstream.url, version.commit, sub, &interrupt)?;
                    trees.insert(sub.clone(), tree.to_string());
                }
                Ok(Output::Git {
                    commit: version.commit.to_string(),
                    trees,
                })
            })
            .await
        }
        Job::Path { dir, sub_path } => {
            let (dir, sub_path) = (dir.clone(), sub_path.clone());
            let stat_cache = path::stat_cache_file(&context.cache_dir, &dir, sub_path.as_deref());
            blocking(move || {
                let version = path::hash_cached(&dir, sub_path.as_deref(), &stat_cache)?;
                Ok(Output::Content(version))
            })
            .await
        }
        Job::Blob { url } => {
            let cache = context.cache_dir.join("blobs");
            let url = url.clone();
            blocking(move || Ok(Output::Blob(blob::fetch(&url, &cache)?))).await
        }
        Job::BuildpackDir(dir) => {
            let dir = dir.clone();
            let stat_cache = path::stat_cache_file(&context.cache_dir, &dir, None);
            blocking(move || Ok(Output::Content(path::hash_cached(&dir, None, &stat_cache)?))).await
        }
    }
}

/// Reads an image's (platform) manifest and config: one request for the manifest;
/// the platform manifest of an index and the config are immutable, and read from the
/// content-addressed cache when an earlier plan fetched them.
async fn read_image(
    store: &ImageStore,
    r: &ImageRef,
    cache: &BlobCache,
) -> Result<Output, ResolveError> {
    let raw = store.manifest(r).await?;
    let raw = match raw.parse()? {
        Manifest::Image(_) => raw,
        Manifest::Index(index) => {
            let platform = &store.settings().platform;
            let entry =
                index
                    .for_platform(platform)
                    .ok_or_else(|| ResolveError::NoPlatformManifest {
                        reference: r.to_string(),
                        platform: platform.to_string(),
                    })?;
            match cache.get(&entry.digest) {
                Some(bytes) => RawManifest::from_bytes(bytes)?,
                None => {
                    let child = store.manifest_by_digest(r, &entry.digest).await?;
                    cache.put(&child.digest, &child.bytes);
                    child
                }
            }
        }
    };
    let Manifest::Image(manifest) = raw.parse()? else {
        return Err(ResolveError::NestedIndex {
            reference: r.to_string(),
        });
    };
    let config = match cache.get(&manifest.config.digest) {
        Some(bytes) => bytes,
        None => {
            let bytes = store.read_blob(r, &manifest.config).await?.to_vec();
            cache.put(&manifest.config.digest, &bytes);
            bytes
        }
    };
    let config: ImageConfig =
        serde_json::from_slice(&config).map_err(|e| ResolveError::InvalidConfig {
            reference: r.to_string(),
            source: Arc::new(e),
        })?;
    let pinned = match r {
        ImageRef::Registry(reg) => ImageRef::Registry(reg.at_digest(raw.digest.clone())),
        other => other.clone(),
    };
    let platform = config.platform();
    Ok(Output::Image(Box::new(ImageFacts {
        digest: raw.digest.clone(),
        pinned,
        labels: config.labels(),
        target: Target {
            os: platform.os,
            arch: platform.architecture,
            variant: platform.variant,
        },
    })))
}

/// Runs `f` on the blocking pool.
async fn blocking(
    f: impl FnOnce() -> Result<Output, ResolveError> + Send + 'static,
) -> Result<Output, ResolveError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(ResolveError::TaskFailed(Arc::new(e))))
}
