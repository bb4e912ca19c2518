//! Command-line arguments, as clap parses them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "kpackd",
    version,
    about = "Keep a fleet of container images built and current from one file",
    long_about = "kpackd keeps a fleet of container images built and current from one file, \
                  kpack.toml: it rebuilds an image when its source or a buildpack changes, \
                  and rebases it when its stack's run image is patched."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Where state, caches and build logs live (overrides `state-dir` in kpack.toml)
    #[arg(long, global = true, env = "KPACKD_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// More log output (-v: info, -vv: debug, -vvv: trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// When to use colours
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check kpack.toml; diagnostics on stderr
    Validate {
        /// The configuration file
        #[arg(default_value = "kpack.toml")]
        config: PathBuf,
    },
    /// Print the JSON Schema of kpack.toml
    Schema,
    /// Print the dependency graph of kpack.toml as Graphviz DOT
    Graph {
        /// The configuration file
        #[arg(default_value = "kpack.toml")]
        config: PathBuf,
    },
}
