//! The builders of a plan: each builder kpackd publishes (an assembled builder with a
//! `tag`) is planned like an image, with the pinned inputs its builder image is made
//! from. In the plan's JSON they are the top-level `builders` list, apart from the
//! images' `changes`.

use std::collections::BTreeMap;
use std::fmt;

use imageref::Digest;
use serde::{Deserialize, Serialize};

use super::{Detail, StackKey, UpstreamFailure};
use crate::Reason;

/// What happens to one published builder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuilderChange {
    pub builder: String,
    pub action: BuilderAction,
    /// Where the builder image is pushed.
    pub tag: String,
    /// What fired, in the order of [`Reason::ALL`]; empty unless publishing.
    pub reasons: Vec<Reason>,
    pub details: Vec<Detail>,
    /// What the builder image is made from; absent when blocked.
    pub inputs: Option<PublishInputs>,
    /// The number of the last successful publish; absent before the first.
    pub last_publish: Option<u64>,
    /// Why a `blocked` builder cannot be planned.
    pub blocked_by: Vec<UpstreamFailure>,
}

/// What a builder's change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuilderAction {
    /// Write the builder image and push it to its tag.
    Publish,
    Noop,
    Blocked,
}

impl BuilderAction {
    pub fn as_str(self) -> &'static str {
        match self {
            BuilderAction::Publish => "publish",
            BuilderAction::Noop => "noop",
            BuilderAction::Blocked => "blocked",
        }
    }
}

impl fmt::Display for BuilderAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The pinned inputs of a builder image: the same inputs give the same image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishInputs {
    /// Where it is pushed.
    pub tag: String,
    pub stack: StackKey,
    pub stack_id: String,
    /// The manifest digest of the stack's build image: the builder's base.
    pub build_image: Digest,
    /// The run image as users name it (no digest), and its mirrors.
    pub run_image: String,
    pub run_image_mirrors: Vec<String>,
    /// The builder's order, each group as `id`, `id@version`, with `?` after an
    /// optional buildpack.
    pub order: Vec<Vec<String>>,
    /// `id@version` → content digest, every buildpack the builder image carries.
    pub buildpacks: BTreeMap<String, Digest>,
    /// The manifest digest of the `lifecycle` image, when the builder names one.
    pub lifecycle_image: Option<Digest>,
    /// The sha256 of kpackd's build entrypoint the image carries, when there is one.
    pub entrypoint: Option<Digest>,
}
