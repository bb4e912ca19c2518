//! `kpackd-entrypoint`: kpackd's build entrypoint, carried by builder images at
//! `/cnb/lifecycle/kpackd`. Started as a container of the builder image (a Kubernetes Pod,
//! a CI job), it builds one app image from a request (see
//! [`executors::lifecycle::request`]) with the same lifecycle code as a local kpackd
//! build: the buildpacks of `/cnb/buildpacks` in the order of `/cnb/order.toml`, the app
//! in `/workspace`, layers in `/layers`, platform in `/platform`; the container is the
//! sandbox.
//!
//! `kpackd-entrypoint build --request FILE` (`-` or no `--request`: stdin) prints one line
//! of JSON ([`EntrypointResult`]) on stdout, the lifecycle's lines on stderr
//! (`===> DETECT`, then `[detect] [<buildpack>] <line>`), and writes the result, or the
//! error ([`EntrypointFailure`]), to `--result-file` when given (a Pod's termination
//! message path). Registry credentials come from the docker config
//! (`$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`).

#![forbid(unsafe_code)]

mod build;
mod source;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use executors::lifecycle::request::{EntrypointFailure, EntrypointResult};

/// Exit codes: the build failed (1), the command line was wrong (2).
const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
/// Kubernetes keeps at most 4096 bytes of a termination message.
const MAX_FAILURE_BYTES: usize = 3072;

#[derive(Debug, Parser)]
#[command(
    name = "kpackd-entrypoint",
    version,
    about = "Build one app image inside a builder image with kpackd's lifecycle"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the app image a request describes and push it.
    Build(BuildArgs),
}

#[derive(Debug, clap::Args)]
struct BuildArgs {
    /// The request (JSON); `-` reads stdin, which is also the default.
    #[arg(long, value_name = "FILE")]
    request: Option<PathBuf>,
    /// Also write the result (or the error) here, e.g. /dev/termination-log.
    #[arg(long, value_name = "FILE")]
    result_file: Option<PathBuf>,
    /// Working state (downloads, the cache directory, scratch); default: a fresh
    /// directory in $TMPDIR.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// A registry (`host[:port]`) spoken to over plain HTTP; loopback always is.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure_registries: Vec<String>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    setup_tracing();
    let Command::Build(args) = cli.command;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return fail(
                args.result_file.as_deref(),
                &format!("start the runtime: {e}"),
            )
        }
    };
    let outcome = runtime.block_on(build::run(&build::Options {
        request: args.request.filter(|p| p.as_os_str() != "-"),
        state_dir: args.state_dir,
        insecure_registries: args.insecure_registries,
    }));
    match outcome {
        Ok(result) => succeed(args.result_file.as_deref(), &result),
        Err(e) => fail(args.result_file.as_deref(), &chain(&e)),
    }
}

fn succeed(result_file: Option<&std::path::Path>, result: &EntrypointResult) -> ExitCode {
    let line = serde_json::to_string(result).expect("a result serialises");
    if let Some(path) = result_file {
        if let Err(e) = std::fs::write(path, &line) {
            eprintln!("error: write the result to {}: {e}", path.display());
            return ExitCode::from(EXIT_FAILED);
        }
    }
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::from(EXIT_FAILED);
    }
    ExitCode::SUCCESS
}

fn fail(result_file: Option<&std::path::Path>, error: &str) -> ExitCode {
    eprintln!("error: {error}");
    if let Some(path) = result_file {
        let mut error = error.to_owned();
        if error.len() > MAX_FAILURE_BYTES {
            let mut cut = MAX_FAILURE_BYTES;
            while !error.is_char_boundary(cut) {
                cut -= 1;
            }
            error.truncate(cut);
            error.push('…');
        }
        let failure = EntrypointFailure { error };
        let text = serde_json::to_string(&failure).expect("a failure serialises");
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("error: write the result to {}: {e}", path.display());
        }
    }
    ExitCode::from(EXIT_FAILED)
}

/// An error and its causes, `: `-separated.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn setup_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
}
