//! The `kpackd` command line: argument parsing, rendering and exit codes. Everything
//! else lives in the `planner`, `engine` and `executors` crates.

mod cli;
mod commands;
mod import;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, ColorChoice};

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
    let color = setup_color(cli.global.color);
    setup_tracing(cli.global.verbose, cli.global.quiet, color);
    match commands::run(cli) {
        Ok(outcome) => outcome.exit_code(),
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::from(commands::EXIT_ERROR)
        }
    }
}

/// Sets colours for every output (anstream, miette) and says whether stderr gets them.
fn setup_color(choice: ColorChoice) -> bool {
    let anstream_choice = match choice {
        ColorChoice::Auto => anstream::ColorChoice::Auto,
        ColorChoice::Always => anstream::ColorChoice::Always,
        ColorChoice::Never => anstream::ColorChoice::Never,
    };
    anstream_choice.write_global();
    let color = match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::IsTerminal::is_terminal(&std::io::stderr())
        }
    };
    // The hook can only be installed once per process, and this is the only place.
    let _ = miette::set_hook(Box::new(move |_| {
        Box::new(
            miette::MietteHandlerOpts::new()
                .color(color)
                .unicode(color)
                .terminal_links(false)
                .build(),
        )
    }));
    color
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
