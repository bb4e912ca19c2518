//! What the detect and build phases share: the [`PhaseContext`] of a build and the
//! sandbox paths ([`context`]), the phase's sandbox ([`sandbox`]), the environment of
//! buildpack programs ([`env`]) and running one program with its output going to the logs
//! ([`program`]).
//!
//! Inside the sandbox: the app is `/workspace` and the layers `/layers` (both read-only
//! during detect, writable during build), the platform dir `/platform` (read-only), each
//! buildpack `/cnb/buildpacks/<escaped id>/<version>` (read-only), `/tmp` a scratch
//! directory of the run holding the plan file, and `$HOME` a fresh writable directory.
//! Scratch directories are made next to the layers dir and removed at the end of the phase.
//! The root must be writable by kpackd's user once, to create the mount points
//! (`/workspace`, `/layers`, `/platform`, `/cnb/buildpacks`); they are created when missing.
//!
//! That is [`Isolation::Bubblewrap`]. When kpackd runs inside the build image (a
//! container, [`Isolation::Container`]: the context's sandbox root is `/`), programs run
//! directly as the CNB user and see every directory at its real path; each run's plan file
//! is in its own scratch directory instead of a private `/tmp`.

pub mod context;
pub mod env;
pub mod program;
pub mod sandbox;

use std::io;

use crate::sandbox::SandboxError;

pub use context::{
    BuildpackDir, Isolation, PhaseContext, Target, APP_DIR, BUILDPACKS_DIR, CONTAINER_ROOT,
    LAYERS_DIR, PLATFORM_DIR,
};
pub use env::Env;
pub use program::{ProgramError, OUTPUT_TAIL_LINES};

/// A phase could not set up its sandbox or the buildpacks' environment.
#[derive(Debug, thiserror::Error)]
pub enum PhaseError {
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
}
