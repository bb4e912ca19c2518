//! The validated configuration the engine works from: names resolved, references
//! parsed into [`ImageRef`]s, relative paths made absolute, defaults applied. Spans stay
//! available so that later errors (an unreachable run image, a stack id that does not
//! match) can point into kpack.toml too.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use imageref::{ImageRef, LayerCompression, Platform};
use serde::{Deserialize, Serialize};

use crate::buildpack::{compare_versions, BuildpackRef, DirectoryBuildpack, Group};
use crate::diagnostic::{ConfigError, ConfigWarnings, InvalidConfig, Problem, Span};
use crate::graph::{Node, NodeKind};
use crate::Reason;

/// A loaded, valid kpack.toml.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file as the user named it.
    pub path: PathBuf,
    /// The directory relative paths were resolved against (absolute).
    pub dir: PathBuf,
    pub settings: Settings,
    pub stacks: BTreeMap<String, Stack>,
    pub stores: BTreeMap<String, Store>,
    pub builders: BTreeMap<String, Builder>,
    pub images: BTreeMap<String, Image>,
    /// `[kubernetes]`: Some whenever the executor is [`Executor::Kubernetes`] (the
    /// defaults when the table is left out), and whenever the table is written.
    pub kubernetes: Option<Kubernetes>,
    /// What is allowed but probably not meant, such as a `[kubernetes]` table that the
    /// local executor ignores; [`Config::warnings`] renders them.
    pub(crate) warnings: Vec<Problem>,
    pub(crate) text: Arc<str>,
}

/// `[kpackd]`, with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Absolute; default `<dir>/.kpackd`.
    pub state_dir: PathBuf,
    /// Builds at once; default 2.
    pub concurrency: NonZeroU32,
    /// Rebases at once, besides the builds; default 32.
    pub rebase_concurrency: NonZeroU32,
    /// Watch mode polling; default one minute.
    pub poll_interval: Duration,
    /// `host[:port]` spoken to over plain HTTP (besides localhost and 127.0.0.1).
    pub insecure_registries: Vec<String>,
    /// Which manifest to pick from an image index; default the host's.
    pub platform: Platform,
    /// Registry deadlines as written; None leaves the registry client's default.
    pub registry_timeouts: RegistryTimeouts,
    /// Where builds run; default [`Executor::Local`].
    pub executor: Executor,
}

/// `[kpackd] executor`: where builds run. Rebases run in kpackd whatever it is.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Executor {
    /// In bubblewrap sandboxes on the machine that runs kpackd.
    #[default]
    Local,
    /// As Pods on the Kubernetes cluster `[kubernetes]` describes, each running the
    /// build entrypoint of the image's published builder.
    Kubernetes,
}

/// `[kubernetes]`: the cluster builds run on, with the defaults of every build Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kubernetes {
    /// The namespace of the build Pods and their Secrets; default `default`.
    pub namespace: String,
    /// The kubeconfig context; None: the current context, or in-cluster when there is
    /// no kubeconfig.
    pub context: Option<String>,
    /// The build Pods' `serviceAccountName` (its token is never mounted).
    pub service_account: Option<String>,
    /// Secrets the kubelet pulls builder images with.
    pub image_pull_secrets: Vec<String>,
    /// The repository path sources are pushed to as source images, so that Pods can
    /// read them (required when an image has a path source). A registry repository,
    /// without tag or digest.
    pub source_repository: Option<ImageRef>,
    /// Build Pods at once; default 4, at least 1.
    pub max_pods: usize,
    /// The placement of every build Pod, unless its image says otherwise.
    pub pod: PodPlacement,
}

impl Default for Kubernetes {
    /// What `executor = "kubernetes"` means without a `[kubernetes]` table.
    fn default() -> Kubernetes {
        Kubernetes {
            namespace: DEFAULT_NAMESPACE.to_string(),
            context: None,
            service_account: None,
            image_pull_secrets: Vec::new(),
            source_repository: None,
            max_pods: DEFAULT_MAX_PODS,
            pod: PodPlacement::default(),
        }
    }
}

/// Where a build Pod runs and what it may use: `resources`, `node-selector` and
/// `tolerations`, each None when not written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodPlacement {
    pub resources: Option<Resources>,
    pub node_selector: Option<BTreeMap<String, String>>,
    pub tolerations: Option<Vec<Toleration>>,
}

/// A container's resource requests and limits, by resource name (`cpu`, `memory`, …);
/// the quantities as written (`"500m"`, `"2Gi"`), valid Kubernetes quantities.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub requests: BTreeMap<String, String>,
    pub limits: BTreeMap<String, String>,
}

/// A Pod toleration, as the Kubernetes API spells its values: `operator` is `Exists`
/// or `Equal`, `effect` is `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toleration {
    pub key: Option<String>,
    pub operator: Option<String>,
    pub value: Option<String>,
    pub effect: Option<String>,
    pub toleration_seconds: Option<i64>,
}

/// Build Pods at once when `max-pods` is not written.
pub const DEFAULT_MAX_PODS: usize = 4;
/// The namespace of build Pods when `namespace` is not written.
pub const DEFAULT_NAMESPACE: &str = "default";

impl Kubernetes {
    /// The placement of an image's build Pod: each field the image sets (in
    /// `[images.<name>.kubernetes]`) replaces the default's, whole.
    pub fn placement_for(&self, image: &PodPlacement) -> PodPlacement {
        PodPlacement {
            resources: image
                .resources
                .clone()
                .or_else(|| self.pod.resources.clone()),
            node_selector: image
                .node_selector
                .clone()
                .or_else(|| self.pod.node_selector.clone()),
            tolerations: image
                .tolerations
                .clone()
                .or_else(|| self.pod.tolerations.clone()),
        }
    }
}

/// `registry-connect-timeout`, `registry-read-timeout`, `registry-request-timeout`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistryTimeouts {
    pub connect: Option<Duration>,
    pub read: Option<Duration>,
    pub request: Option<Duration>,
}

/// `[stacks.<name>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    pub name: String,
    pub build_image: ImageRef,
    pub run_image: ImageRef,
    pub run_image_mirrors: Vec<ImageRef>,
    /// The id the user insists on; None means "whatever the images' labels say".
    pub id: Option<String>,
    pub spans: StackSpans,
}

/// Where a stack's values are written in kpack.toml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackSpans {
    pub name: Span,
    pub build_image: Span,
    pub run_image: Span,
    pub id: Option<Span>,
}

/// `[stores.<name>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    pub name: String,
    pub buildpacks: Vec<StoreBuildpack>,
    pub span: Span,
}

/// One buildpack of a store, with where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreBuildpack {
    pub source: BuildpackSource,
    pub span: Span,
}

/// Where a store's buildpack comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildpackSource {
    /// A directory, with what its buildpack.toml declares.
    Directory(DirectoryBuildpack),
    /// A buildpackage image; what it holds is only known once it is fetched.
    Image(ImageRef),
}

impl Store {
    /// The directory buildpack an order entry means: `version` exactly, or the highest
    /// version of `id` when None.
    pub fn resolve(&self, id: &str, version: Option<&str>) -> Option<&DirectoryBuildpack> {
        self.directories()
            .filter(|bp| bp.id == id && version.is_none_or(|v| bp.version == v))
            .max_by(|a, b| compare_versions(&a.version, &b.version))
    }

    pub fn directories(&self) -> impl Iterator<Item = &DirectoryBuildpack> {
        self.buildpacks.iter().filter_map(|bp| match &bp.source {
            BuildpackSource::Directory(dir) => Some(dir),
            BuildpackSource::Image(_) => None,
        })
    }

    pub fn images(&self) -> impl Iterator<Item = &ImageRef> {
        self.buildpacks.iter().filter_map(|bp| match &bp.source {
            BuildpackSource::Image(image) => Some(image),
            BuildpackSource::Directory(_) => None,
        })
    }
}

/// `[builders.<name>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Builder {
    pub name: String,
    pub kind: BuilderKind,
    /// Where to publish the builder as a CNB builder image, if anywhere (an assembled
    /// builder only).
    pub tag: Option<ImageRef>,
    /// The image whose `/cnb/lifecycle` the published builder carries (`lifecycle =
    /// { image = … }`); only with a tag.
    pub lifecycle: Option<ImageRef>,
    pub span: Span,
}

impl Builder {
    /// Whether kpackd publishes this builder: an assembled builder with a tag.
    pub fn publishes(&self) -> bool {
        self.tag.is_some() && matches!(self.kind, BuilderKind::Assembled { .. })
    }
}

/// How a builder is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuilderKind {
    /// From a stack and a store, with a detection order.
    Assembled {
        stack: String,
        store: String,
        order: Vec<Group>,
    },
    /// A ready-made CNB builder image.
    Image(ImageRef),
}

/// `[images.<name>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    pub tag: ImageRef,
    pub additional_tags: Vec<ImageRef>,
    pub builder: String,
    pub source: Source,
    pub env: BTreeMap<String, String>,
    pub default_process: Option<String>,
    pub cache: Cache,
    pub history: History,
    pub network: bool,
    /// How the image's layers are compressed.
    pub layer_compression: LayerCompression,
    /// The reasons that may make this image be rebuilt or rebased (default: all).
    pub rebuild_on: BTreeSet<Reason>,
    /// How long one build or rebase may run.
    pub timeout: Duration,
    /// The image's own group (`buildpacks`), replacing the builder's order; empty: the
    /// order.
    pub buildpacks: Vec<BuildpackRef>,
    /// The project descriptor named in kpack.toml, relative to the app's directory;
    /// None: `project.toml` when the source has one.
    pub project_descriptor: Option<String>,
    /// `[images.<name>.kubernetes]`: what the image's build Pod sets instead of the
    /// `[kubernetes]` defaults (see [`Kubernetes::placement_for`]). Not part of
    /// [`ImageConfig`]: where a build runs does not change what it makes.
    pub kubernetes: PodPlacement,
    pub spans: ImageSpans,
}

/// Where an image's values are written in kpack.toml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpans {
    pub name: Span,
    pub tag: Span,
    pub builder: Span,
    pub source: Span,
}

/// Where an image's source comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Git {
        url: String,
        /// A branch, a tag, a full commit id, or `HEAD` (the default).
        revision: String,
        sub_path: Option<String>,
    },
    Path {
        /// Absolute.
        path: PathBuf,
        /// As written in kpack.toml, relative to its directory: what identifies the
        /// source wherever the checkout lives.
        written: String,
        sub_path: Option<String>,
    },
    Blob {
        url: String,
        strip_components: u32,
        sub_path: Option<String>,
    },
    /// An image whose layers hold the app (kpack's registry source).
    Image {
        reference: ImageRef,
        /// The reference as written, which identifies the source.
        written: String,
        sub_path: Option<String>,
    },
}

impl Source {
    pub fn sub_path(&self) -> Option<&str> {
        match self {
            Source::Git { sub_path, .. }
            | Source::Path { sub_path, .. }
            | Source::Blob { sub_path, .. }
            | Source::Image { sub_path, .. } => sub_path.as_deref(),
        }
    }

    /// What identifies the source as an upstream: its location, a git revision after
    /// `#`, a sub-path after `//`. Images with the same identity share one lookup.
    pub fn identity(&self) -> String {
        let mut id = self.location().to_string();
        if let Source::Git { revision, .. } = self {
            id.push('#');
            id.push_str(revision);
        }
        if let Some(sub_path) = self.sub_path() {
            id.push_str("//");
            id.push_str(sub_path);
        }
        id
    }

    /// The source as people name it: a URL, or the path as written.
    pub fn location(&self) -> &str {
        match self {
            Source::Git { url, .. } | Source::Blob { url, .. } => url,
            Source::Path { written, .. } | Source::Image { written, .. } => written,
        }
    }
}

/// The build cache of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cache {
    /// A directory under the state directory.
    Dir,
    Image(ImageRef),
    Disabled,
}

/// How many builds are kept per image, by outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    pub success: NonZeroU32,
    pub failed: NonZeroU32,
}

impl Default for History {
    fn default() -> History {
        let ten = NonZeroU32::new(10).expect("10 is not zero");
        History {
            success: ten,
            failed: ten,
        }
    }
}

/// The parts of an image's table whose change is the CONFIG reason, in a canonical form:
/// the same configuration always serialises (and hashes) the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ImageConfig {
    pub env: BTreeMap<String, String>,
    /// `git`, `path` or `blob`.
    pub source_kind: String,
    /// The URL, or the path as written.
    pub source: String,
    pub sub_path: Option<String>,
    pub builder: String,
    pub default_process: Option<String>,
    pub network: bool,
    /// The image's own group, `id` or `id@version` each; absent when it has none, so
    /// that the hash of a configuration without one is what it always was.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buildpacks: Vec<String>,
    /// `project-descriptor`, when named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_descriptor: Option<String>,
    /// `zstd` when the layers are zstd-compressed; absent for gzip, so that images that
    /// never set it keep the configuration (and hash) they had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_compression: Option<String>,
}

impl ImageConfig {
    /// `sha256:<hex>` of the canonical JSON form.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).expect("plain strings and maps serialise");
        imageref::Digest::sha256(&json).to_string()
    }
}

impl Image {
    /// What the CONFIG reason compares between builds.
    pub fn config(&self) -> ImageConfig {
        let source_kind = match &self.source {
            Source::Git { .. } => "git",
            Source::Path { .. } => "path",
            Source::Blob { .. } => "blob",
            Source::Image { .. } => "image",
        };
        ImageConfig {
            env: self.env.clone(),
            source_kind: source_kind.to_string(),
            source: self.source.location().to_string(),
            sub_path: self.source.sub_path().map(str::to_string),
            builder: self.builder.clone(),
            default_process: self.default_process.clone(),
            network: self.network,
            buildpacks: self
                .buildpacks
                .iter()
                .map(BuildpackRef::to_string)
                .collect(),
            project_descriptor: self.project_descriptor.clone(),
            layer_compression: match self.layer_compression {
                LayerCompression::Gzip => None,
                LayerCompression::Zstd => Some("zstd".to_string()),
            },
        }
    }

    /// The tag and the additional tags, in that order.
    pub fn tags(&self) -> impl Iterator<Item = &ImageRef> {
        std::iter::once(&self.tag).chain(&self.additional_tags)
    }
}

impl Config {
    /// The builder an image names (valid configurations name existing builders).
    pub fn builder_of(&self, image: &Image) -> &Builder {
        self.builders
            .get(&image.builder)
            .expect("validation checked that every image names an existing builder")
    }

    /// The stack a builder is assembled on; None for a builder image.
    pub fn stack_of(&self, builder: &Builder) -> Option<&Stack> {
        match &builder.kind {
            BuilderKind::Assembled { stack, .. } => self.stacks.get(stack),
            BuilderKind::Image(_) => None,
        }
    }

    /// The store a builder's buildpacks come from; None for a builder image.
    pub fn store_of(&self, builder: &Builder) -> Option<&Store> {
        match &builder.kind {
            BuilderKind::Assembled { store, .. } => self.stores.get(store),
            BuilderKind::Image(_) => None,
        }
    }

    /// Where a node of the graph is written in kpack.toml (a source: at the first
    /// image built from it).
    pub fn span_of(&self, node: &Node) -> Option<Span> {
        match node.kind {
            NodeKind::Stack => self.stacks.get(&node.name).map(|s| s.spans.name.clone()),
            NodeKind::Store => self.stores.get(&node.name).map(|s| s.span.clone()),
            NodeKind::Builder => self.builders.get(&node.name).map(|b| b.span.clone()),
            NodeKind::Image => self.images.get(&node.name).map(|i| i.spans.name.clone()),
            NodeKind::Source => self
                .images
                .values()
                .find(|i| Node::source(&i.source) == *node)
                .map(|i| i.spans.source.clone()),
        }
    }

    /// The warnings about this file, rendered like its errors; None when there are none.
    pub fn warnings(&self) -> Option<ConfigWarnings> {
        (!self.warnings.is_empty()).then(|| {
            ConfigWarnings::new(
                &self.path.display().to_string(),
                self.text.clone(),
                self.warnings.clone(),
            )
        })
    }

    /// An error about this file found after loading it (an unreachable run image, a
    /// stack id that does not match the labels), rendered like the validation errors.
    pub fn error(&self, problems: Vec<Problem>) -> ConfigError {
        ConfigError::Invalid(InvalidConfig::new(
            &self.path.display().to_string(),
            self.text.clone(),
            problems,
        ))
    }
}
