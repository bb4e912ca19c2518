//! The Plan as data: what `kpackd plan` decided for every image, the inputs it pinned,
//! and the state it was computed against. It serialises to the stable JSON of
//! `kpackd plan --json` (saved with `--out`, applied later).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use imageref::{Digest, Target};

use crate::diff::FailureKind;
use crate::Reason;

mod builder;

pub use builder::{BuilderAction, BuilderChange, PublishInputs};

/// The version of the plan's JSON form; bumped only by incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

/// Everything `kpackd apply` will do, decided once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: u32,
    /// The state the plan was made against: apply refuses it when either moved.
    pub lineage: String,
    pub serial: u64,
    /// The configuration file, as the user named it.
    pub config: String,
    /// One change per image: every desired image, then every image to forget, by name.
    pub changes: Vec<Change>,
    pub summary: Summary,
    /// Upstreams that could not be resolved, each reported once.
    pub errors: Vec<UpstreamFailure>,
    /// Upstream changes that cause no work now, for the reader's information.
    pub notes: Vec<Note>,
    /// Images whose last build failed and that this plan does not build again, so that
    /// a plan never reads as up to date while a build is failing. Absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failing: Vec<Failing>,
    /// One change per builder kpackd publishes (an assembled builder with a `tag`), by
    /// name. Absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub builders: Vec<BuilderChange>,
}

/// An image whose last build failed, left as it is by the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failing {
    pub image: String,
    /// The number of the failed build (`kpackd logs IMAGE BUILD`).
    pub build: u64,
    /// The step it failed in.
    pub step: String,
    pub error: String,
    /// `build` (the build's own failure: built again when an input changes) or
    /// `infrastructure` (outside the build, and retried
    /// [`RETRY_LIMIT`](crate::diff::RETRY_LIMIT) times already).
    pub kind: FailureKind,
    /// How many retries failed before it.
    pub retries: u32,
}

/// What happens to one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub image: String,
    pub action: Action,
    /// What fired, in the order of [`Reason::ALL`]; empty unless building or rebasing.
    pub reasons: Vec<Reason>,
    pub details: Vec<Detail>,
    /// What the build or rebase is made from; absent for `forget` and `blocked`.
    pub inputs: Option<Inputs>,
    /// The number of the build this change follows; absent before the first build.
    pub last_build: Option<u64>,
    /// Why a `blocked` image cannot be planned.
    pub blocked_by: Vec<UpstreamFailure>,
}

/// What a change does; the symbol is what the human plan prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Build,
    Rebase,
    Noop,
    Forget,
    Blocked,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Build => "build",
            Action::Rebase => "rebase",
            Action::Noop => "noop",
            Action::Forget => "forget",
            Action::Blocked => "blocked",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One fired reason, with what changed. `old`/`new` are absent when the reason is not
/// a change of value (a first build, a trigger, an image that cannot be rebased).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detail {
    pub reason: Reason,
    /// What changed, as the human plan names it: `source commit`, `run image`, …
    pub what: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// The pinned inputs of a build or rebase: digests and versions, never tags, so apply
/// builds exactly what was planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "InputsJson", try_from = "InputsJson")]
pub struct Inputs {
    /// The source version: a commit id, a tree id (sub-path), or a content hash.
    pub source: String,
    /// The manifest digest of the run image.
    pub run_image: Digest,
    /// The manifest digest of the build image.
    pub build_image: Digest,
    /// `id@version` → content digest, every buildpack the builder provides.
    pub buildpacks: BTreeMap<String, Digest>,
    /// The image configuration hash (see CONFIG).
    pub config: String,
    pub builder: String,
    pub stack: StackKey,
    pub stack_id: String,
    pub target: Target,
    /// For a rebase: the digest of the image whose run image layers are replaced.
    pub last_image: Option<Digest>,
    /// The image's own group (kpack.toml `buildpacks`), `id` or `id@version` each;
    /// empty: the builder's order.
    pub image_buildpacks: Vec<String>,
}

/// The JSON form of [`Inputs`]: `buildpacks` is the list of `id@version` that readers
/// of the plan expect; the digests travel beside it.
#[derive(Serialize, Deserialize)]
struct InputsJson {
    source: String,
    run_image: Digest,
    build_image: Digest,
    buildpacks: Vec<String>,
    buildpack_digests: BTreeMap<String, Digest>,
    config: String,
    builder: String,
    stack: StackKey,
    stack_id: String,
    target: Target,
    last_image: Option<Digest>,
    /// Absent when the image has no group of its own, as in plans before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    image_buildpacks: Vec<String>,
}

impl From<Inputs> for InputsJson {
    fn from(inputs: Inputs) -> InputsJson {
        InputsJson {
            source: inputs.source,
            run_image: inputs.run_image,
            build_image: inputs.build_image,
            buildpacks: inputs.buildpacks.keys().cloned().collect(),
            buildpack_digests: inputs.buildpacks,
            config: inputs.config,
            builder: inputs.builder,
            stack: inputs.stack,
            stack_id: inputs.stack_id,
            target: inputs.target,
            last_image: inputs.last_image,
            image_buildpacks: inputs.image_buildpacks,
        }
    }
}

impl TryFrom<InputsJson> for Inputs {
    type Error = String;

    fn try_from(json: InputsJson) -> Result<Inputs, String> {
        if let Some(missing) = json
            .buildpacks
            .iter()
            .find(|id| !json.buildpack_digests.contains_key(*id))
        {
            return Err(format!(
                "buildpack {missing} has no entry in buildpack_digests"
            ));
        }
        if json.buildpacks.len() != json.buildpack_digests.len() {
            return Err("buildpacks and buildpack_digests name different buildpacks".into());
        }
        Ok(Inputs {
            source: json.source,
            run_image: json.run_image,
            build_image: json.build_image,
            buildpacks: json.buildpack_digests,
            config: json.config,
            builder: json.builder,
            stack: json.stack,
            stack_id: json.stack_id,
            target: json.target,
            last_image: json.last_image,
            image_buildpacks: json.image_buildpacks,
        })
    }
}

/// Which stack a build uses: a stack of kpack.toml, by its name, or the stack a builder
/// image brings (itself as the build image, the run image it names), `builder:<name>`.
/// Stack names cannot hold `:`, so the two never meet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StackKey(String);

impl StackKey {
    /// The stack of kpack.toml named `name`.
    pub fn stack(name: &str) -> StackKey {
        StackKey(name.to_string())
    }

    /// The stack of the builder image of builder `name`.
    pub fn builder(name: &str) -> StackKey {
        StackKey(format!("builder:{name}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StackKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Something the engine resolves once per plan.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Upstream {
    RunImage {
        stack: StackKey,
    },
    BuildImage {
        stack: StackKey,
    },
    /// A source, by its identity (location, revision, sub-path).
    Source {
        source: String,
    },
    /// The buildpacks a builder provides: its store's directories and images, or its
    /// builder image.
    Buildpacks {
        builder: String,
    },
    /// The `lifecycle` image of a published builder.
    LifecycleImage {
        builder: String,
    },
    /// kpackd's build entrypoint, which published builders carry.
    Entrypoint,
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Upstream::RunImage { stack } => write!(f, "run image of stack \"{stack}\""),
            Upstream::BuildImage { stack } => write!(f, "build image of stack \"{stack}\""),
            Upstream::Source { source } => write!(f, "source {source}"),
            Upstream::Buildpacks { builder } => {
                write!(f, "buildpacks of builder \"{builder}\"")
            }
            Upstream::LifecycleImage { builder } => {
                write!(f, "lifecycle image of builder \"{builder}\"")
            }
            Upstream::Entrypoint => f.write_str("kpackd's build entrypoint"),
        }
    }
}

/// An upstream that could not be resolved, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UpstreamFailure {
    pub upstream: Upstream,
    pub error: String,
}

impl fmt::Display for UpstreamFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.upstream, self.error)
    }
}

/// A stack's build image moved under images that are not rebuilt now: their next
/// build uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub stack: StackKey,
    pub what: String,
    pub old: Digest,
    pub new: Digest,
    pub images: Vec<String>,
}

/// How many changes of each action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub build: usize,
    pub rebase: usize,
    pub noop: usize,
    pub forget: usize,
    pub blocked: usize,
}

impl Summary {
    pub fn of(changes: &[Change]) -> Summary {
        let mut summary = Summary::default();
        for change in changes {
            *match change.action {
                Action::Build => &mut summary.build,
                Action::Rebase => &mut summary.rebase,
                Action::Noop => &mut summary.noop,
                Action::Forget => &mut summary.forget,
                Action::Blocked => &mut summary.blocked,
            } += 1;
        }
        summary
    }
}

impl Plan {
    /// Whether applying the plan would do anything.
    pub fn has_changes(&self) -> bool {
        self.changes
            .iter()
            .any(|c| matches!(c.action, Action::Build | Action::Rebase | Action::Forget))
            || self.publishes() > 0
    }

    /// How many builders the plan publishes.
    pub fn publishes(&self) -> usize {
        self.builders
            .iter()
            .filter(|b| b.action == BuilderAction::Publish)
            .count()
    }
}

#[cfg(test)]
mod tests;
