//! The life of one build or rebase: its statuses and which moves between them are
//! allowed. The state store refuses any other move, so a record never tells an
//! impossible story (a failed build that then succeeds, a rebase that ran `detect`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::SystemTime;

use imageref::Digest;
pub use planner::diff::FailureKind;
use planner::plan::{Action, Detail, Inputs};
use planner::Reason;
use serde::{Deserialize, Serialize};

/// Where a build is. A build goes `queued → resolving-source → detecting → building →
/// exporting → succeeded`, a rebase `queued → rebasing → succeeded`; either may end
/// `failed`, `canceled` or `interrupted` from any status that is not an end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BuildStatus {
    Queued,
    ResolvingSource,
    /// Unpacking the stack's build image and the buildpacks from images.
    Preparing,
    Detecting,
    Building,
    Exporting,
    Rebasing,
    Succeeded,
    Failed,
    /// Stopped by SIGINT or SIGTERM.
    Canceled,
    /// Found running at start-up: the process that ran it died.
    Interrupted,
}

impl BuildStatus {
    pub const ALL: [BuildStatus; 11] = [
        BuildStatus::Queued,
        BuildStatus::ResolvingSource,
        BuildStatus::Preparing,
        BuildStatus::Detecting,
        BuildStatus::Building,
        BuildStatus::Exporting,
        BuildStatus::Rebasing,
        BuildStatus::Succeeded,
        BuildStatus::Failed,
        BuildStatus::Canceled,
        BuildStatus::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Queued => "queued",
            BuildStatus::ResolvingSource => "resolving-source",
            BuildStatus::Preparing => "preparing",
            BuildStatus::Detecting => "detecting",
            BuildStatus::Building => "building",
            BuildStatus::Exporting => "exporting",
            BuildStatus::Rebasing => "rebasing",
            BuildStatus::Succeeded => "succeeded",
            BuildStatus::Failed => "failed",
            BuildStatus::Canceled => "canceled",
            BuildStatus::Interrupted => "interrupted",
        }
    }

    /// Whether the build is over; an ended build never changes again.
    pub fn is_end(self) -> bool {
        matches!(
            self,
            BuildStatus::Succeeded
                | BuildStatus::Failed
                | BuildStatus::Canceled
                | BuildStatus::Interrupted
        )
    }

    /// Whether the build ran to completion: the rebuild rules compare with such builds
    /// only, so canceled and interrupted builds are planned again.
    pub fn is_completed(self) -> bool {
        matches!(self, BuildStatus::Succeeded | BuildStatus::Failed)
    }

    /// Whether a build of this `action` may move from `self` to `next`.
    pub fn can_transition_to(self, next: BuildStatus, action: Action) -> bool {
        use BuildStatus::*;
        match (self, next) {
            (from, Failed | Canceled | Interrupted) => !from.is_end(),
            (Queued, ResolvingSource) | (Exporting, Succeeded) => action == Action::Build,
            (ResolvingSource, Preparing)
            | (Preparing, Detecting)
            | (Detecting, Building)
            | (Building, Exporting) => action == Action::Build,
            (Queued, Rebasing) | (Rebasing, Succeeded) => action == Action::Rebase,
            _ => false,
        }
    }
}

impl fmt::Display for BuildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is not one of [`BuildStatus`]'s.
#[derive(Debug, thiserror::Error)]
#[error("unknown build status `{0}`")]
pub struct UnknownStatus(pub String);

impl FromStr for BuildStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<BuildStatus, UnknownStatus> {
        BuildStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

/// The state store's row number of a build: stable for the build's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BuildId(pub(super) i64);

/// One build or rebase as the state records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    pub id: BuildId,
    pub image: String,
    /// 1, 2, 3… per image.
    pub number: u64,
    /// `build` or `rebase`.
    pub action: Action,
    pub status: BuildStatus,
    pub reasons: Vec<Reason>,
    pub details: Vec<Detail>,
    pub inputs: Inputs,
    /// Where the image is pushed.
    pub tag: String,
    /// After a success: the buildpacks detection chose, `id@version` → digest.
    pub buildpacks_used: Option<BTreeMap<String, Digest>>,
    /// After a success: whether the image may be rebased.
    pub rebasable: Option<bool>,
    /// After a success: the manifest digest of the image made.
    pub output: Option<Digest>,
    pub failure: Option<Failure>,
    pub queued_at: SystemTime,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    /// The build's log file.
    pub log: PathBuf,
}

/// Where and why a build failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The status the build was in when it failed.
    pub step: BuildStatus,
    pub message: String,
    /// Whose fault it was; failures recorded before kpackd told them apart read as
    /// the build's own.
    pub kind: FailureKind,
}

/// A build or rebase about to be queued, as planned.
#[derive(Debug, Clone)]
pub struct NewBuild<'a> {
    pub image: &'a str,
    /// `build` or `rebase`.
    pub action: Action,
    pub reasons: &'a [Reason],
    pub details: &'a [Detail],
    pub inputs: &'a Inputs,
    pub tag: &'a str,
}

/// How a build ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Succeeded {
        output: Digest,
        buildpacks_used: BTreeMap<String, Digest>,
        rebasable: bool,
    },
    Failed {
        message: String,
        kind: FailureKind,
    },
    Canceled,
}

impl Outcome {
    pub fn status(&self) -> BuildStatus {
        match self {
            Outcome::Succeeded { .. } => BuildStatus::Succeeded,
            Outcome::Failed { .. } => BuildStatus::Failed,
            Outcome::Canceled => BuildStatus::Canceled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BuildStatus::*;
    use super::*;

    #[test]
    fn a_build_walks_its_steps_in_order() {
        let steps = [
            Queued,
            ResolvingSource,
            Preparing,
            Detecting,
            Building,
            Exporting,
            Succeeded,
        ];
        for pair in steps.windows(2) {
            assert!(
                pair[0].can_transition_to(pair[1], Action::Build),
                "{pair:?}"
            );
            assert!(
                !pair[0].can_transition_to(pair[1], Action::Rebase),
                "{pair:?}"
            );
        }
        assert!(!Queued.can_transition_to(Building, Action::Build));
        assert!(!Detecting.can_transition_to(ResolvingSource, Action::Build));
        assert!(!ResolvingSource.can_transition_to(Detecting, Action::Build));
    }

    #[test]
    fn a_rebase_only_rebases() {
        assert!(Queued.can_transition_to(Rebasing, Action::Rebase));
        assert!(Rebasing.can_transition_to(Succeeded, Action::Rebase));
        assert!(!Queued.can_transition_to(Rebasing, Action::Build));
        assert!(!Queued.can_transition_to(ResolvingSource, Action::Rebase));
    }

    #[test]
    fn any_running_status_may_fail_but_an_end_is_final() {
        for from in BuildStatus::ALL {
            for to in [Failed, Canceled, Interrupted] {
                assert_eq!(from.can_transition_to(to, Action::Build), !from.is_end());
            }
            if from.is_end() {
                for to in BuildStatus::ALL {
                    assert!(!from.can_transition_to(to, Action::Build));
                    assert!(!from.can_transition_to(to, Action::Rebase));
                }
            }
        }
    }

    #[test]
    fn names_read_back() {
        for status in BuildStatus::ALL {
            assert_eq!(status.as_str().parse::<BuildStatus>().unwrap(), status);
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::json!(status.as_str())
            );
        }
    }
}
