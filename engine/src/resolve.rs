//! Upstream resolution: every distinct upstream the planned images depend on, resolved
//! once per plan, concurrently (bounded), each within a timeout.
//!
//! | upstream | resolved to |
//! |---|---|
//! | stack build / run image, buildpackage image, builder image | its (platform) manifest digest, labels and target |
//! | git source | its commit, and the tree id of each sub-path in use |
//! | path source | a sha256 over its files (honouring .gitignore) |
//! | blob source | the sha256 of the archive |
//! | directory buildpack | `id@version` from buildpack.toml + a sha256 over its files |
//!
//! A failed upstream is recorded in [`Observed::failures`] against what depends on it
//! (a stack's run or build image, a source, a builder's buildpacks); the planner blocks
//! exactly the images that need it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use executors::oci::{
    sha256_digest, CredentialSource, ImageConfig, ImageStore, Manifest, OciError, RawManifest,
    StoreSettings,
};
use executors::source::{blob, git, path};
use futures::StreamExt as _;
use imageref::Target;
use imageref::{Digest, ImageRef};
use planner::diff::{Observed, SourceVersion};
use planner::plan::{Upstream, UpstreamFailure};
use planner::{BuilderKind, BuildpackSource, Config, DirectoryBuildpack, Group, Image, Source};
use serde::{Deserialize, Serialize};

/// Upstreams resolved at once by default.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// How long one upstream may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Labels read from stack, buildpackage and builder images.
const BASE_ID_LABEL: &str = "io.buildpacks.base.id";
const STACK_ID_LABEL: &str = "io.buildpacks.stack.id";
const BUILDPACK_LAYERS_LABEL: &str = "io.buildpacks.buildpack.layers";
const BUILDER_METADATA_LABEL: &str = "io.buildpacks.builder.metadata";

/// The key under which a builder image's stack is observed: a builder image brings its
/// own build image (itself) and names its run image. Stack names cannot hold `:`.
pub fn builder_stack_key(builder: &str) -> String {
    format!("builder:{builder}")
}

/// Where upstreams are cached under the state directory (build caches live in
/// `cache/<image>`): `git/` (a bare repository per remote), `blobs/` (downloaded
/// archives), `oci/` (immutable manifests and configs, by digest).
pub const SOURCE_CACHE: &str = "sources";

/// How upstreams are resolved.
#[derive(Debug, Clone)]
pub struct ResolveOptions {
    /// Upstreams resolved at once.
    pub concurrency: usize,
    /// How long one upstream may take.
    pub timeout: Duration,
    /// Where git and blob caches live (`<state-dir>/sources`).
    pub cache_dir: PathBuf,
    /// Registries and OCI layouts.
    pub store: ImageStore,
}

impl ResolveOptions {
    /// The defaults for `config`, with caches under `state_dir`.
    pub fn new(config: &Config, state_dir: &Path) -> ResolveOptions {
        ResolveOptions {
            concurrency: DEFAULT_CONCURRENCY,
            timeout: DEFAULT_TIMEOUT,
            cache_dir: state_dir.join(SOURCE_CACHE),
            store: image_store(config),
        }
    }
}

/// The [`ImageStore`] kpack.toml's `[kpackd]` settings describe (insecure registries,
/// platform), with credentials from the docker config.
pub fn image_store(config: &Config) -> ImageStore {
    let settings = &config.settings;
    let platform = settings.platform.clone();
    let defaults = StoreSettings::default();
    let timeouts = settings.registry_timeouts;
    ImageStore::new(StoreSettings {
        insecure_registries: settings.insecure_registries.clone(),
        platform,
        credentials: CredentialSource::from_env(),
        connect_timeout: timeouts.connect.unwrap_or(defaults.connect_timeout),
        read_timeout: timeouts.read.unwrap_or(defaults.read_timeout),
        request_timeout: timeouts.request.unwrap_or(defaults.request_timeout),
        ..defaults
    })
}

/// Everything resolution found: the planner's [`Observed`], and what apply needs to
/// build exactly that (pinned references, commits, buildpack locations).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    pub observed: Observed,
    /// Stack (or [`builder_stack_key`]) → its pinned images.
    pub stacks: BTreeMap<String, StackPin>,
    /// Source identity → what to materialise.
    pub sources: BTreeMap<String, SourcePin>,
    /// Builder → `id@version` → where the buildpack is and its digest.
    pub buildpacks: BTreeMap<String, BTreeMap<String, BuildpackPin>>,
    /// Distinct upstreams resolved (each one remote call or local read, or two for
    /// image reads).
    pub upstreams: usize,
}

/// A stack, pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackPin {
    /// The build image, `repo@digest` (a layout reference as written).
    pub build_image: String,
    pub build_image_digest: String,
    pub run_image: String,
    pub run_image_digest: String,
    /// The stack id: kpack.toml's, else the run image's label.
    pub stack_id: String,
    /// The run image's platform.
    pub target: Target,
}

/// A source version, with what is needed to materialise it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SourcePin {
    Git {
        url: String,
        commit: String,
        sub_path: Option<String>,
        /// The sub-path's tree id.
        tree: Option<String>,
    },
    Path {
        path: PathBuf,
        sub_path: Option<String>,
        digest: String,
    },
    Blob {
        url: String,
        digest: String,
        /// The downloaded archive in the cache.
        archive: PathBuf,
        strip_components: u32,
        sub_path: Option<String>,
    },
}

/// Where a buildpack of a builder comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildpackPin {
    pub id: String,
    pub version: String,
    /// sha256 over a directory's files, or the layer diff id in an image.
    pub digest: String,
    pub location: BuildpackLocation,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum BuildpackLocation {
    Directory {
        path: PathBuf,
    },
    /// A buildpackage or builder image, pinned.
    Image {
        reference: String,
    },
}

/// What one image read found.
#[derive(Debug, Clone)]
struct ImageFacts {
    digest: String,
    pinned: String,
    labels: BTreeMap<String, String>,
    target: Target,
}

/// One distinct upstream.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Job {
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

#[derive(Debug, Clone)]
enum Output {
    Image(ImageFacts),
    Git {
        commit: String,
        trees: BTreeMap<String, String>,
    },
    Content(String),
    Blob(blob::BlobVersion),
}

/// Shared by the jobs of one resolution.
struct Context {
    store: ImageStore,
    cache_dir: PathBuf,
    images: BTreeMap<String, ImageRef>,
}

/// Sets the flag when dropped: a timed-out git job stops its fetch.
struct InterruptOnDrop(Arc<AtomicBool>);

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Resolves every upstream `images` depend on (their builders, stacks, stores and
/// sources), each distinct one once.
pub async fn resolve(config: &Config, images: &[&Image], options: &ResolveOptions) -> Resolution {
    let mut jobs: BTreeSet<Job> = BTreeSet::new();
    let mut refs: BTreeMap<String, ImageRef> = BTreeMap::new();
    let mut add_image = |jobs: &mut BTreeSet<Job>, r: &ImageRef| {
        let key = r.to_string();
        refs.insert(key.clone(), r.clone());
        jobs.insert(Job::Image(key));
    };
    let builders: BTreeSet<&str> = images.iter().map(|i| i.builder.as_str()).collect();
    let mut git: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for image in images {
        match &image.source {
            Source::Git {
                url,
                revision,
                sub_path,
            } => {
                let subs = git.entry((url.clone(), revision.clone())).or_default();
                if let Some(sub) = sub_path {
                    subs.insert(sub.clone());
                }
            }
            Source::Path { path, sub_path, .. } => {
                jobs.insert(Job::Path {
                    dir: path.clone(),
                    sub_path: sub_path.clone(),
                });
            }
            Source::Blob { url, .. } => {
                jobs.insert(Job::Blob { url: url.clone() });
            }
        }
    }
    for ((url, revision), sub_paths) in git {
        jobs.insert(Job::Git {
            url,
            revision,
            sub_paths,
        });
    }
    for name in &builders {
        let Some(builder) = config.builders.get(*name) else {
            continue;
        };
        match &builder.kind {
            BuilderKind::Assembled { stack, store, .. } => {
                if let Some(stack) = config.stacks.get(stack) {
                    add_image(&mut jobs, &stack.build_image);
                    add_image(&mut jobs, &stack.run_image);
                }
                if let Some(store) = config.stores.get(store) {
                    for bp in &store.buildpacks {
                        match &bp.source {
                            BuildpackSource::Directory(dir) => {
                                jobs.insert(Job::BuildpackDir(dir.path.clone()));
                            }
                            BuildpackSource::Image(r) => add_image(&mut jobs, r),
                        }
                    }
                }
            }
            BuilderKind::Image(r) => add_image(&mut jobs, r),
        }
    }
    let context = Arc::new(Context {
        store: options.store.clone(),
        cache_dir: options.cache_dir.clone(),
        images: refs,
    });
    let mut done = run_all(jobs, &context, options).await;

    // Second round: the run images builder images name.
    let mut run_images: BTreeSet<Job> = BTreeSet::new();
    let mut more_refs = BTreeMap::new();
    for name in &builders {
        if let Some(BuilderKind::Image(r)) = config.builders.get(*name).map(|b| &b.kind) {
            if let Some(Ok(Output::Image(facts))) = done.get(&Job::Image(r.to_string())) {
                if let Ok(Some(run)) = builder_run_image(facts) {
                    let key = run.to_string();
                    if !done.contains_key(&Job::Image(key.clone())) {
                        more_refs.insert(key.clone(), run);
                        run_images.insert(Job::Image(key));
                    }
                }
            }
        }
    }
    if !run_images.is_empty() {
        let context = Arc::new(Context {
            store: options.store.clone(),
            cache_dir: options.cache_dir.clone(),
            images: more_refs,
        });
        done.extend(run_all(run_images, &context, options).await);
    }
    assemble(config, images, &builders, &done)
}

/// Runs the jobs, `concurrency` at once, each within the timeout.
async fn run_all(
    jobs: BTreeSet<Job>,
    context: &Arc<Context>,
    options: &ResolveOptions,
) -> BTreeMap<Job, Result<Output, String>> {
    let timeout = options.timeout;
    futures::stream::iter(jobs)
        .map(|job| {
            let context = context.clone();
            async move {
                let result = match tokio::time::timeout(timeout, run(&job, &context)).await {
                    Ok(result) => result,
                    Err(_) => Err(format!(
                        "timed out after {}",
                        humantime::format_duration(timeout)
                    )),
                };
                if let Err(error) = &result {
                    tracing::debug!(upstream = ?job, %error, "upstream not resolved");
                }
                (job, result)
            }
        })
        .buffer_unordered(options.concurrency.max(1))
        .collect()
        .await
}

/// Resolves one upstream.
async fn run(job: &Job, context: &Arc<Context>) -> Result<Output, String> {
    match job {
        Job::Image(key) => {
            let r = context
                .images
                .get(key)
                .ok_or_else(|| format!("{key}: not a known reference"))?;
            read_image(&context.store, r, &context.cache_dir.join("oci")).await
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
                    git::resolve(&cache, &upstream, first.map(String::as_str), &interrupt)
                        .map_err(|e| chain(&e))?;
                let mut trees = BTreeMap::new();
                if let (Some(first), Some(tree)) = (first, version.tree) {
                    trees.insert(first.clone(), tree.to_string());
                }
                for sub in subs {
                    let tree =
                        git::sub_path_tree(&cache, &upstream.url, version.commit, sub, &interrupt)
                            .map_err(|e| chain(&e))?;
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
            blocking(move || {
                path::hash(&dir, sub_path.as_deref())
                    .map(Output::Content)
                    .map_err(|e| chain(&e))
            })
            .await
        }
        Job::Blob { url } => {
            let cache = context.cache_dir.join("blobs");
            let url = url.clone();
            blocking(move || {
                blob::fetch(&url, &cache)
                    .map(Output::Blob)
                    .map_err(|e| chain(&e))
            })
            .await
        }
        Job::BuildpackDir(dir) => {
            let dir = dir.clone();
            blocking(move || {
                path::hash(&dir, None)
                    .map(Output::Content)
                    .map_err(|e| chain(&e))
            })
            .await
        }
    }
}

/// Reads an image's (platform) manifest and config: one request for the manifest;
/// the platform manifest of an index and the config are immutable, and read from the
/// content-addressed cache when an earlier plan fetched them.
async fn read_image(store: &ImageStore, r: &ImageRef, cache: &Path) -> Result<Output, String> {
    let err = |e: OciError| chain(&e);
    let raw = store.manifest(r).await.map_err(err)?;
    let raw = match raw.parse().map_err(err)? {
        Manifest::Image(_) => raw,
        Manifest::Index(index) => {
            let platform = &store.settings().platform;
            let entry = index
                .for_platform(platform)
                .ok_or_else(|| format!("{r} has no manifest for {platform}"))?;
            match cached(cache, &entry.digest) {
                Some(bytes) => RawManifest::from_bytes(bytes).map_err(err)?,
                None => {
                    let child = store
                        .manifest_by_digest(r, &entry.digest)
                        .await
                        .map_err(err)?;
                    keep(cache, &child.digest, &child.bytes);
                    child
                }
            }
        }
    };
    let Manifest::Image(manifest) = raw.parse().map_err(err)? else {
        return Err(format!("{r}: an index inside an index is not supported"));
    };
    let config = match cached(cache, &manifest.config.digest) {
        Some(bytes) => bytes,
        None => {
            let bytes = store
                .read_blob(r, &manifest.config)
                .await
                .map_err(err)?
                .to_vec();
            keep(cache, &manifest.config.digest, &bytes);
            bytes
        }
    };
    let config: ImageConfig =
        serde_json::from_slice(&config).map_err(|e| format!("{r}: invalid image config: {e}"))?;
    let pinned = match r {
        ImageRef::Registry(reg) => reg.at_digest(raw.digest.clone()).to_string(),
        other => other.to_string(),
    };
    let platform = config.platform();
    Ok(Output::Image(ImageFacts {
        digest: raw.digest.to_string(),
        pinned,
        labels: config.labels(),
        target: Target {
            os: platform.os,
            arch: platform.architecture,
            variant: platform.variant,
        },
    }))
}

/// A blob of the OCI cache, when present and intact.
fn cached(cache: &Path, digest: &Digest) -> Option<Vec<u8>> {
    let bytes = std::fs::read(cache.join(digest.algorithm()).join(digest.hex())).ok()?;
    (sha256_digest(&bytes) == *digest).then_some(bytes)
}

/// Keeps an immutable blob in the OCI cache; a failure only costs a request later.
fn keep(cache: &Path, digest: &Digest, bytes: &[u8]) {
    let dir = cache.join(digest.algorithm());
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        let mut tmp = tempfile_in(&dir)?;
        std::io::Write::write_all(&mut tmp.0, bytes)?;
        std::fs::rename(&tmp.1, dir.join(digest.hex()))?;
        tmp.1 = PathBuf::new();
        Ok(())
    });
    if let Err(error) = written {
        tracing::debug!(%digest, %error, "could not cache a blob");
    }
}

/// A new file in `dir`, removed on drop unless its path is cleared.
fn tempfile_in(dir: &Path) -> std::io::Result<TempFile> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!(".tmp-{}-{n}", std::process::id()));
    let file = std::fs::File::create(&path)?;
    Ok(TempFile(file, path))
}

struct TempFile(std::fs::File, PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.1.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.1);
        }
    }
}

async fn blocking(
    f: impl FnOnce() -> Result<Output, String> + Send + 'static,
) -> Result<Output, String> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(format!("resolver task failed: {e}")))
}

/// An error with its causes: `could not list the refs of …: connection refused`.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Turns the jobs' outputs into the planner's view and apply's pins.
fn assemble(
    config: &Config,
    images: &[&Image],
    builders: &BTreeSet<&str>,
    done: &BTreeMap<Job, Result<Output, String>>,
) -> Resolution {
    let mut resolution = Resolution {
        upstreams: done.len(),
        ..Resolution::default()
    };
    let image_facts = |r: &ImageRef| facts_of(done, r);
    let mut failures = Vec::new();
    let fail = |failures: &mut Vec<UpstreamFailure>, upstream: Upstream, error: String| {
        failures.push(UpstreamFailure { upstream, error });
    };

    // Sources.
    for image in images {
        let identity = image.source.identity();
        if resolution.sources.contains_key(&identity) {
            continue;
        }
        let upstream = Upstream::Source {
            source: identity.clone(),
        };
        let found: Result<(SourceVersion, SourcePin), String> = match &image.source {
            Source::Git {
                url,
                revision,
                sub_path,
            } => {
                let job = done.iter().find(|(job, _)| {
                    matches!(job, Job::Git { url: u, revision: r, .. } if u == url && r == revision)
                });
                match job.map(|(_, result)| result) {
                    Some(Ok(Output::Git { commit, trees })) => match sub_path {
                        None => Ok((
                            SourceVersion::Commit(commit.clone()),
                            SourcePin::Git {
                                url: url.clone(),
                                commit: commit.clone(),
                                sub_path: None,
                                tree: None,
                            },
                        )),
                        Some(sub) => match trees.get(sub) {
                            Some(tree) => Ok((
                                SourceVersion::Tree(tree.clone()),
                                SourcePin::Git {
                                    url: url.clone(),
                                    commit: commit.clone(),
                                    sub_path: Some(sub.clone()),
                                    tree: Some(tree.clone()),
                                },
                            )),
                            None => Err(format!("sub-path `{sub}` not resolved")),
                        },
                    },
                    Some(Err(e)) => Err(e.clone()),
                    _ => Err("not resolved".to_string()),
                }
            }
            Source::Path { path, sub_path, .. } => match done.get(&Job::Path {
                dir: path.clone(),
                sub_path: sub_path.clone(),
            }) {
                Some(Ok(Output::Content(digest))) => Ok((
                    SourceVersion::Content(digest.clone()),
                    SourcePin::Path {
                        path: path.clone(),
                        sub_path: sub_path.clone(),
                        digest: digest.clone(),
                    },
                )),
                Some(Err(e)) => Err(e.clone()),
                _ => Err("not resolved".to_string()),
            },
            Source::Blob {
                url,
                strip_components,
                sub_path,
            } => match done.get(&Job::Blob { url: url.clone() }) {
                Some(Ok(Output::Blob(version))) => Ok((
                    SourceVersion::Content(version.digest.clone()),
                    SourcePin::Blob {
                        url: url.clone(),
                        digest: version.digest.clone(),
                        archive: version.archive.clone(),
                        strip_components: *strip_components,
                        sub_path: sub_path.clone(),
                    },
                )),
                Some(Err(e)) => Err(e.clone()),
                _ => Err("not resolved".to_string()),
            },
        };
        match found {
            Ok((version, pin)) => {
                resolution
                    .observed
                    .sources
                    .insert(identity.clone(), version);
                resolution.sources.insert(identity, pin);
            }
            Err(error) => fail(&mut failures, upstream, error),
        }
    }

    // Stacks and buildpacks, per builder in use.
    for name in builders {
        let Some(builder) = config.builders.get(*name) else {
            continue;
        };
        let buildpacks_upstream = Upstream::Buildpacks {
            builder: name.to_string(),
        };
        match &builder.kind {
            BuilderKind::Assembled {
                stack,
                store,
                order,
            } => {
                if let Some(stack_config) = config.stacks.get(stack) {
                    if !resolution.stacks.contains_key(stack) {
                        let build = image_facts(&stack_config.build_image);
                        let run = image_facts(&stack_config.run_image);
                        match &build {
                            Ok(facts) => {
                                resolution
                                    .observed
                                    .build_images
                                    .insert(stack.clone(), facts.digest.clone());
                            }
                            Err(e) => fail(
                                &mut failures,
                                Upstream::BuildImage {
                                    stack: stack.clone(),
                                },
                                e.clone(),
                            ),
                        }
                        let run = run.and_then(|run| {
                            stack_id(stack_config.id.as_deref(), run).map(|id| (run, id))
                        });
                        match &run {
                            Ok((facts, _)) => {
                                resolution
                                    .observed
                                    .run_images
                                    .insert(stack.clone(), facts.digest.clone());
                            }
                            Err(e) => fail(
                                &mut failures,
                                Upstream::RunImage {
                                    stack: stack.clone(),
                                },
                                e.clone(),
                            ),
                        }
                        if let (Ok(build), Ok((run, id))) = (build, run) {
                            resolution.stacks.insert(
                                stack.clone(),
                                StackPin {
                                    build_image: build.pinned.clone(),
                                    build_image_digest: build.digest.clone(),
                                    run_image: run.pinned.clone(),
                                    run_image_digest: run.digest.clone(),
                                    stack_id: id,
                                    target: run.target.clone(),
                                },
                            );
                        }
                    }
                }
                let Some(store) = config.stores.get(store) else {
                    continue;
                };
                match store_buildpacks(store, order, done) {
                    Ok(pins) => {
                        resolution.buildpacks.insert(name.to_string(), pins);
                    }
                    Err(error) => fail(&mut failures, buildpacks_upstream, error),
                }
            }
            BuilderKind::Image(r) => {
                let key = builder_stack_key(name);
                let facts = match image_facts(r) {
                    Ok(facts) => facts,
                    Err(error) => {
                        for upstream in [
                            Upstream::BuildImage { stack: key.clone() },
                            Upstream::RunImage { stack: key.clone() },
                            buildpacks_upstream,
                        ] {
                            fail(&mut failures, upstream, error.clone());
                        }
                        continue;
                    }
                };
                resolution
                    .observed
                    .build_images
                    .insert(key.clone(), facts.digest.clone());
                let run = builder_run_image(facts).and_then(|run| {
                    let run = run.ok_or_else(|| {
                        format!("builder image {r} names no run image in {BUILDER_METADATA_LABEL}")
                    })?;
                    let run_facts = image_facts(&run)?;
                    let id = stack_id(None, run_facts)
                        .or_else(|_| stack_id(None, facts))
                        .unwrap_or_default();
                    Ok((run_facts, id))
                });
                match run {
                    Ok((run, id)) => {
                        resolution
                            .observed
                            .run_images
                            .insert(key.clone(), run.digest.clone());
                        resolution.stacks.insert(
                            key.clone(),
                            StackPin {
                                build_image: facts.pinned.clone(),
                                build_image_digest: facts.digest.clone(),
                                run_image: run.pinned.clone(),
                                run_image_digest: run.digest.clone(),
                                stack_id: id,
                                target: run.target.clone(),
                            },
                        );
                    }
                    Err(error) => fail(&mut failures, Upstream::RunImage { stack: key }, error),
                }
                match image_buildpacks(facts) {
                    Ok(pins) => {
                        resolution.buildpacks.insert(name.to_string(), pins);
                    }
                    Err(error) => fail(&mut failures, buildpacks_upstream, error),
                }
            }
        }
    }
    failures.sort();
    failures.dedup();
    resolution.observed.failures = failures;
    resolution
}

/// What the read of image `r` found.
fn facts_of<'d>(
    done: &'d BTreeMap<Job, Result<Output, String>>,
    r: &ImageRef,
) -> Result<&'d ImageFacts, String> {
    match done.get(&Job::Image(r.to_string())) {
        Some(Ok(Output::Image(facts))) => Ok(facts),
        Some(Err(e)) => Err(format!("{r}: {e}")),
        _ => Err(format!("{r}: not resolved")),
    }
}

/// The stack id: kpack.toml's, checked against the run image's labels, or the labels'.
fn stack_id(declared: Option<&str>, run: &ImageFacts) -> Result<String, String> {
    let label = run
        .labels
        .get(BASE_ID_LABEL)
        .or_else(|| run.labels.get(STACK_ID_LABEL));
    match (declared, label) {
        (Some(declared), Some(label)) if declared != label => Err(format!(
            "the stack id in kpack.toml is `{declared}` but the run image's label says `{label}`"
        )),
        (Some(declared), _) => Ok(declared.to_string()),
        (None, Some(label)) => Ok(label.clone()),
        (None, None) => Err(format!(
            "the run image has no {BASE_ID_LABEL} (or {STACK_ID_LABEL}) label; set `id` in the stack"
        )),
    }
}

/// Every buildpack an image carries (`io.buildpacks.buildpack.layers`).
fn image_buildpacks(facts: &ImageFacts) -> Result<BTreeMap<String, BuildpackPin>, String> {
    let Some(label) = facts.labels.get(BUILDPACK_LAYERS_LABEL) else {
        return Err(format!(
            "{} has no {BUILDPACK_LAYERS_LABEL} label",
            facts.pinned
        ));
    };
    let layers: BTreeMap<String, BTreeMap<String, LayerInfo>> = serde_json::from_str(label)
        .map_err(|e| format!("{}: invalid {BUILDPACK_LAYERS_LABEL}: {e}", facts.pinned))?;
    let mut pins = BTreeMap::new();
    for (id, versions) in layers {
        for (version, info) in versions {
            pins.insert(
                format!("{id}@{version}"),
                BuildpackPin {
                    id: id.clone(),
                    version,
                    digest: info.layer_diff_id,
                    location: BuildpackLocation::Image {
                        reference: facts.pinned.clone(),
                    },
                },
            );
        }
    }
    Ok(pins)
}

#[derive(Deserialize)]
struct LayerInfo {
    #[serde(rename = "layerDiffID")]
    layer_diff_id: String,
}

/// The run image a builder image names in its metadata.
fn builder_run_image(facts: &ImageFacts) -> Result<Option<ImageRef>, String> {
    let Some(label) = facts.labels.get(BUILDER_METADATA_LABEL) else {
        return Ok(None);
    };
    let metadata: serde_json::Value = serde_json::from_str(label)
        .map_err(|e| format!("{}: invalid {BUILDER_METADATA_LABEL}: {e}", facts.pinned))?;
    let named = metadata
        .pointer("/images/0/image")
        .or_else(|| metadata.pointer("/stack/runImage/image"))
        .and_then(|v| v.as_str());
    named
        .map(|s| ImageRef::parse(s).map_err(|e| format!("run image `{s}`: {e}")))
        .transpose()
}

/// The buildpacks an assembled builder provides: those its order reaches in the store
/// (composites followed), and every buildpack of the store's images.
fn store_buildpacks(
    store: &planner::Store,
    order: &[Group],
    done: &BTreeMap<Job, Result<Output, String>>,
) -> Result<BTreeMap<String, BuildpackPin>, String> {
    fn reach<'s>(
        store: &'s planner::Store,
        groups: &[Group],
        queue: &mut Vec<&'s DirectoryBuildpack>,
    ) {
        for group in groups {
            for entry in &group.buildpacks {
                if let Some(bp) = store.resolve(&entry.id, entry.version.as_deref()) {
                    queue.push(bp);
                }
            }
        }
    }
    let mut pins = BTreeMap::new();
    for r in store.images() {
        pins.extend(image_buildpacks(facts_of(done, r)?)?);
    }
    let mut seen = BTreeSet::new();
    let mut queue: Vec<&DirectoryBuildpack> = Vec::new();
    reach(store, order, &mut queue);
    while let Some(bp) = queue.pop() {
        if !seen.insert(bp.path.clone()) {
            continue;
        }
        reach(store, &bp.order, &mut queue);
        let digest = match done.get(&Job::BuildpackDir(bp.path.clone())) {
            Some(Ok(Output::Content(digest))) => digest.clone(),
            Some(Err(e)) => return Err(format!("buildpack {}: {e}", bp.id_version())),
            _ => return Err(format!("buildpack {}: not resolved", bp.id_version())),
        };
        pins.insert(
            bp.id_version(),
            BuildpackPin {
                id: bp.id.clone(),
                version: bp.version.clone(),
                digest,
                location: BuildpackLocation::Directory {
                    path: bp.path.clone(),
                },
            },
        );
    }
    Ok(pins)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(labels: &[(&str, &str)]) -> ImageFacts {
        ImageFacts {
            digest: "sha256:aa".into(),
            pinned: "registry.test/stack@sha256:aa".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            target: Target {
                os: "linux".into(),
                arch: "amd64".into(),
                variant: None,
            },
        }
    }

    #[test]
    fn the_stack_id_comes_from_the_file_or_the_labels_and_must_agree() {
        let base = facts(&[(BASE_ID_LABEL, "io.test.base")]);
        let legacy = facts(&[(STACK_ID_LABEL, "io.test.legacy")]);
        assert_eq!(stack_id(None, &base).unwrap(), "io.test.base");
        assert_eq!(stack_id(None, &legacy).unwrap(), "io.test.legacy");
        assert_eq!(
            stack_id(Some("io.test.base"), &base).unwrap(),
            "io.test.base"
        );
        assert_eq!(stack_id(Some("mine"), &facts(&[])).unwrap(), "mine");
        let err = stack_id(Some("other"), &base).unwrap_err();
        assert!(
            err.contains("`other`") && err.contains("`io.test.base`"),
            "{err}"
        );
        assert!(stack_id(None, &facts(&[])).is_err());
    }

    #[test]
    fn image_buildpacks_are_read_from_the_layers_label() {
        let label = r#"{"tests/a":{"1.0.0":{"api":"0.10","layerDiffID":"sha256:a1"},
                        "2.0.0":{"api":"0.10","layerDiffID":"sha256:a2"}},
                        "tests/b":{"0.1.0":{"layerDiffID":"sha256:b1"}}}"#;
        let pins = image_buildpacks(&facts(&[(BUILDPACK_LAYERS_LABEL, label)])).unwrap();
        let digests: Vec<(&str, &str)> = pins
            .iter()
            .map(|(k, v)| (k.as_str(), v.digest.as_str()))
            .collect();
        assert_eq!(
            digests,
            [
                ("tests/a@1.0.0", "sha256:a1"),
                ("tests/a@2.0.0", "sha256:a2"),
                ("tests/b@0.1.0", "sha256:b1")
            ]
        );
        assert!(image_buildpacks(&facts(&[])).is_err());
        assert!(image_buildpacks(&facts(&[(BUILDPACK_LAYERS_LABEL, "nope")])).is_err());
    }

    #[test]
    fn a_builder_image_names_its_run_image() {
        let new = r#"{"images":[{"image":"registry.test/run:1"}],"stack":{"runImage":{"image":"old/run"}}}"#;
        let old = r#"{"stack":{"runImage":{"image":"registry.test/run:2"}}}"#;
        let run = |label| builder_run_image(&facts(&[(BUILDER_METADATA_LABEL, label)]));
        assert_eq!(
            run(new).unwrap().unwrap().to_string(),
            "registry.test/run:1"
        );
        assert_eq!(
            run(old).unwrap().unwrap().to_string(),
            "registry.test/run:2"
        );
        assert_eq!(run("{}").unwrap(), None);
        assert!(run("[").is_err());
    }

    #[test]
    fn error_chains_name_every_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("could not list the refs of x")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(
            chain(&e),
            "could not list the refs of x: connection refused"
        );
    }
}
