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

mod assemble;
mod blob_cache;
mod error;
mod jobs;
mod publish;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use executors::oci::{CredentialSource, ImageStore, StoreSettings};
use imageref::{Digest, ImageRef, Target};
use planner::diff::Observed;
use planner::plan::{StackKey, Upstream, UpstreamFailure};
use planner::{Builder, BuilderKind, BuildpackSource, Config, Image, Source};
use serde::{Deserialize, Serialize};

use crate::layout::StateLayout;
pub use error::ResolveError;
use jobs::{Context, Job, Output};
pub use publish::{EntrypointPin, LifecyclePin};

/// Upstreams resolved at once by default.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// How long one upstream may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How upstreams are resolved.
#[derive(Debug, Clone)]
pub struct ResolveOptions {
    /// Upstreams resolved at once.
    pub concurrency: usize,
    /// How long one upstream may take.
    pub timeout: Duration,
    /// Where upstreams are cached ([`StateLayout::sources_dir`]): `git/` (a bare
    /// repository per remote), `blobs/` (downloaded archives), `oci/` (immutable
    /// manifests and configs, by digest).
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
            cache_dir: StateLayout::new(state_dir).sources_dir(),
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
    /// Stack → its pinned images.
    pub stacks: BTreeMap<StackKey, StackPin>,
    /// Source identity → what to materialise.
    pub sources: BTreeMap<String, SourcePin>,
    /// Builder → `id@version` → where the buildpack is and its digest.
    pub buildpacks: BTreeMap<String, BTreeMap<String, BuildpackPin>>,
    /// Distinct upstreams resolved (each one remote call or local read, or two for
    /// image reads).
    pub upstreams: usize,
    /// Published builder → its lifecycle image, pinned.
    #[serde(default)]
    pub lifecycles: BTreeMap<String, LifecyclePin>,
    /// kpackd's build entrypoint, when builders are published and it was found.
    #[serde(default)]
    pub entrypoint: Option<EntrypointPin>,
}

/// A stack, pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackPin {
    /// The build image, `repo@digest` (a layout reference as written).
    pub build_image: ImageRef,
    pub build_image_digest: Digest,
    pub run_image: ImageRef,
    pub run_image_digest: Digest,
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
    /// A source image at the digest the plan pinned.
    Image {
        /// The image by digest (in a layout: the reference as written).
        reference: ImageRef,
        digest: Digest,
        sub_path: Option<String>,
    },
}

/// Where a buildpack of a builder comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildpackPin {
    pub id: String,
    pub version: String,
    /// sha256 over a directory's files, or the layer diff id in an image.
    pub digest: Digest,
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
        reference: ImageRef,
    },
}

/// Resolves every upstream `images` depend on (their builders, stacks, stores and
/// sources), and those of the builders in `published` (their stacks, stores and
/// lifecycle images, and kpackd's build entrypoint), each distinct one once.
pub async fn resolve(
    config: &Config,
    images: &[&Image],
    published: &[&Builder],
    options: &ResolveOptions,
) -> Resolution {
    let mut builders: BTreeSet<&str> = images.iter().map(|i| i.builder.as_str()).collect();
    builders.extend(published.iter().map(|b| b.name.as_str()));
    let (mut jobs, mut refs) = upstreams(config, images, &builders);
    for lifecycle in published.iter().filter_map(|b| b.lifecycle.as_ref()) {
        let key = lifecycle.to_string();
        refs.insert(key.clone(), lifecycle.clone());
        jobs.insert(Job::Image(key));
    }
    let mut done = run_round(jobs, refs, options).await;
    // Second round: the run images builder images name.
    let (run_images, refs) = builder_run_images(config, &builders, &done);
    if !run_images.is_empty() {
        done.extend(run_round(run_images, refs, options).await);
    }
    let mut resolution = assemble::assemble(config, images, &builders, &done);
    if !published.is_empty() {
        publish::lifecycles(&mut resolution, published, &done);
        match publish::entrypoint().await {
            Ok(entrypoint) => resolution.entrypoint = entrypoint,
            Err(error) => resolution.observed.failures.push(UpstreamFailure {
                upstream: Upstream::Entrypoint,
                error,
            }),
        }
    }
    resolution
}

/// Runs one round of jobs, with the image references they read.
async fn run_round(
    jobs: BTreeSet<Job>,
    images: BTreeMap<String, ImageRef>,
    options: &ResolveOptions,
) -> jobs::Done {
    let context = Arc::new(Context {
        store: options.store.clone(),
        cache_dir: options.cache_dir.clone(),
        images,
    });
    jobs::run_all(jobs, &context, options.concurrency, options.timeout).await
}

/// The distinct upstreams of `images` and their `builders` (each builder's stack and
/// store, or its image), with the references of the images among them.
fn upstreams(
    config: &Config,
    images: &[&Image],
    builders: &BTreeSet<&str>,
) -> (BTreeSet<Job>, BTreeMap<String, ImageRef>) {
    let mut jobs: BTreeSet<Job> = BTreeSet::new();
    let mut refs: BTreeMap<String, ImageRef> = BTreeMap::new();
    let mut add_image = |jobs: &mut BTreeSet<Job>, r: &ImageRef| {
        let key = r.to_string();
        refs.insert(key.clone(), r.clone());
        jobs.insert(Job::Image(key));
    };
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
            Source::Image { reference, .. } => add_image(&mut jobs, reference),
        }
    }
    for ((url, revision), sub_paths) in git {
        jobs.insert(Job::Git {
            url,
            revision,
            sub_paths,
        });
    }
    for name in builders {
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
    (jobs, refs)
}

/// The run images the builder images among `builders` name, not read yet.
fn builder_run_images(
    config: &Config,
    builders: &BTreeSet<&str>,
    done: &jobs::Done,
) -> (BTreeSet<Job>, BTreeMap<String, ImageRef>) {
    let mut run_images: BTreeSet<Job> = BTreeSet::new();
    let mut refs = BTreeMap::new();
    for name in builders {
        if let Some(BuilderKind::Image(r)) = config.builders.get(*name).map(|b| &b.kind) {
            if let Some(Ok(Output::Image(facts))) = done.get(&Job::Image(r.to_string())) {
                if let Ok(Some(run)) = assemble::builder_run_image(facts) {
                    let key = run.to_string();
                    if !done.contains_key(&Job::Image(key.clone())) {
                        refs.insert(key.clone(), run);
                        run_images.insert(Job::Image(key));
                    }
                }
            }
        }
    }
    (run_images, refs)
}
