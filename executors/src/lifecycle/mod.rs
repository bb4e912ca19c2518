//! The Cloud Native Buildpacks lifecycle, daemonless: detect and build run the
//! buildpacks' programs in the stack's build image (see [`crate::sandbox`]); export writes
//! the app image from the layers they made onto the run image.
//!
//! Phases communicate through the layers directory exactly as the CNB platform spec
//! lays it out (`group.toml`, `plan.toml`, `<buildpack>/<layer>.toml`, `launch.toml`,
//! …), so each phase can be tested on its own.

pub mod build;
pub mod buildpackage;
pub mod cache;
pub mod descriptor;
pub mod detect;
pub mod export;
pub mod phase;
pub mod project;
pub mod request;
pub mod run;
pub mod sbom;
pub mod stack;

/// The lifecycle phase a log line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    Prepare,
    Detect,
    Analyze,
    Restore,
    Build,
    Export,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Prepare => "prepare",
            Phase::Detect => "detect",
            Phase::Analyze => "analyze",
            Phase::Restore => "restore",
            Phase::Build => "build",
            Phase::Export => "export",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a build's log lines go: the terminal under `-v`, and the build's log file for
/// `kpackd logs`. Implementations must be cheap and must not block for long.
pub trait LogSink: Send + Sync {
    /// One line of output (without its newline) of `phase`; `buildpack` is the
    /// buildpack id when a buildpack's program printed it.
    fn line(&self, phase: Phase, buildpack: Option<&str>, line: &str);

    /// A phase begins: the build orchestrator ([`run::build_image`]) calls this once
    /// per phase, in order, before any of the phase's lines, so callers can record the
    /// build's progress (detecting → building → exporting).
    fn phase_started(&self, _phase: Phase) {}
}

/// A [`LogSink`] that drops everything (tests, benchmarks).
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardLogs;

impl LogSink for DiscardLogs {
    fn line(&self, _phase: Phase, _buildpack: Option<&str>, _line: &str) {}
}
