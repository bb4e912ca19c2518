//! One module per command; this one dispatches and maps outcomes to exit codes.

use std::process::ExitCode;

use crate::cli::{Cli, Command, ImageCommand};

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
        Command::Plan {
            config,
            json,
            out,
            detailed_exitcode,
            targets,
        } => plan::run(plan::Args {
            config,
            json,
            out,
            detailed_exitcode,
            targets,
            state_dir: cli.global.state_dir,
            color: crate::color::enabled(cli.global.color, &std::io::stdout()),
        }),
        Command::Status { config, json } => {
            status::run(&config, json, cli.global.state_dir.as_deref())
        }
        Command::Builds {
            image: _,
            builder: Some(builder),
            json,
        } => builds::run_publishes(
            Some(builder.as_str()).filter(|b| !b.is_empty()),
            json,
            cli.global.state_dir.as_deref(),
        ),
        Command::Builds {
            image,
            builder: None,
            json,
        } => builds::run(image.as_deref(), json, cli.global.state_dir.as_deref()),
        Command::Trigger { images, config } => {
            trigger::run(&images, &config, cli.global.state_dir.as_deref())
        }
        Command::Validate { config } => validate::run(&config),
        Command::Schema => schema::run(),
        Command::Apply {
            file,
            json,
            targets,
            concurrency,
            lock_timeout,
        } => apply::run(apply::Args {
            file,
            json,
            targets,
            concurrency: concurrency.map(|n| n as usize),
            lock_timeout,
            state_dir: cli.global.state_dir.clone(),
            verbose: cli.global.verbose > 0,
            color: crate::color::enabled(cli.global.color, &std::io::stdout()),
        }),
        Command::Logs {
            image,
            number,
            follow,
        } => logs::run(
            &shared::state_dir_without_config(cli.global.state_dir.as_deref())?,
            &image,
            number,
            follow,
        ),
        Command::Graph { config } => graph::run(&config),
        Command::Watch {
            config,
            listen,
            lock_timeout,
        } => watch::run(
            &config,
            listen,
            cli.global.state_dir.as_deref(),
            lock_timeout,
        ),
        Command::Inspect {
            reference,
            json,
            platform,
            registries,
        } => inspect::run(&reference, json, &platform, &registries),
        Command::Copy {
            source,
            destination,
            registries,
        } => copy::run(&source, &destination, &registries, cli.global.quiet),
        Command::Import { files, into } => import::run(&files, into.as_deref()),
        Command::Image {
            command:
                ImageCommand::Push {
                    reference,
                    binary,
                    revision,
                    registries,
                },
        } => image::push(&reference, binary, revision, &registries),
    }
}

mod apply;
mod builds;
mod copy;
mod graph;
mod image;
mod import;
mod inspect;
mod logs;
mod plan;
mod progress;
mod schema;
mod shared;
mod status;
mod trigger;
mod validate;
mod watch;
/// A writer lock that could not be taken: only a lock held by another kpackd gets the hint
/// to wait; anything else keeps its cause.
fn lock_error(e: engine::state::LockError) -> miette::Report {
    match e {
        engine::state::LockError::Locked { .. } => {
            miette::miette!(help = "wait for it, or pass --lock-timeout to wait", "{e}")
        }
        other => miette::Report::from_err(other),
    }
}
