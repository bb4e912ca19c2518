//! Why an image needs work: the reasons kpack names, shared by `rebuild-on` in
//! kpack.toml and by the plan.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An upstream change that can make an image be rebuilt or rebased.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Reason {
    /// No build yet, or the image's configuration (env, source location, builder,
    /// default process, network) changed.
    Config,
    /// The source changed: a new git commit, an edited directory, a new blob.
    Commit,
    /// A buildpack used by the last build changed or left the builder.
    Buildpack,
    /// The stack's run image changed (a rebase when nothing else changed).
    Stack,
    /// `kpackd trigger` asked for a rebuild.
    Trigger,
    /// The last build failed for a cause outside the build itself (the network, a
    /// registry, the disk, its timeout): it is tried again, at most 3 times in a row.
    Retry,
}

impl Reason {
    /// Every reason, in the order plans list them.
    pub const ALL: [Reason; 6] = [
        Reason::Config,
        Reason::Commit,
        Reason::Buildpack,
        Reason::Stack,
        Reason::Trigger,
        Reason::Retry,
    ];

    /// The upper-case name used in kpack.toml, plans and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Config => "CONFIG",
            Reason::Commit => "COMMIT",
            Reason::Buildpack => "BUILDPACK",
            Reason::Stack => "STACK",
            Reason::Trigger => "TRIGGER",
            Reason::Retry => "RETRY",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
