//! One module per command; this one dispatches and maps outcomes to exit codes.

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// An error: invalid config, unreachable upstream, failed build, stale plan, locked state.
pub const EXIT_ERROR: u8 = 1;
/// `plan --detailed-exitcode` found changes.
pub const EXIT_CHANGES: u8 = 2;

/// How a command that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Finished, but something the user must know about failed (a blocked upstream, a
    /// failed build); the details were already printed.
    Failed,
    /// A plan with changes, under `--detailed-exitcode`.
    Changes,
}

impl Outcome {
    pub fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Success => ExitCode::SUCCESS,
            Outcome::Failed => ExitCode::from(EXIT_ERROR),
            Outcome::Changes => ExitCode::from(EXIT_CHANGES),
        }
    }
}

pub fn run(cli: Cli) -> miette::Result<Outcome> {
    match cli.command {
        Command::Validate { config } => validate::run(&config),
        Command::Schema => schema::run(),
        Command::Graph { config } => graph::run(&config),
    }
}

mod graph;
mod schema;
mod validate;
