//! The `kpackd` command line: argument parsing, rendering and exit codes. Everything
//! else lives in the `planner`, `engine` and `executors` crates.

#![forbid(unsafe_code)]

mod cli;
mod color;
mod commands;
mod import;
mod render;

use std::process::ExitCode;

use clap::Parser;

use cli::Cli;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // A usage mistake is an error (1), never `plan --detailed-exitcode`'s 2
            // ("changes"); --help and --version succeed.
            return if e.use_stderr() {
                ExitCode::from(commands::EXIT_ERROR)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let color = color::setup(cli.global.color);
    setup_tracing(cli.global.verbose, cli.global.quiet, color);
    match commands::run(cli) {
        Ok(outcome) => outcome.exit_code(),
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::from(commands::EXIT_ERROR)
        }
    }
}

fn setup_tracing(verbose: u8, quiet: bool, color: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info,kpackd=info,engine=info,executors=info,planner=info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color)
        .with_target(false)
        .init();
}
