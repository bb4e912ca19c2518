//! Command-line arguments, as clap parses them.

use std::net::SocketAddr;
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
    /// Show what apply would do: which images to build, rebuild, rebase or forget, and why
    Plan {
        /// The configuration file
        #[arg(default_value = "kpack.toml")]
        config: PathBuf,
        /// One JSON object on stdout (format_version 1)
        #[arg(long)]
        json: bool,
        /// Save the plan, with every pinned digest, for `kpackd apply FILE`
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Exit 0 when there is nothing to do, 2 when there are changes, 1 on errors
        #[arg(long)]
        detailed_exitcode: bool,
        /// Plan only this image (repeatable)
        #[arg(long = "target", value_name = "IMAGE")]
        targets: Vec<String>,
    },
    /// Plan, then build, rebase and forget as planned (or carry out a saved plan)
    Apply {
        /// kpack.toml, or a plan saved by `kpackd plan --out`
        #[arg(default_value = "kpack.toml", value_name = "CONFIG | PLANFILE")]
        file: PathBuf,
        /// One JSON object on stdout at the end: a result per image
        #[arg(long)]
        json: bool,
        /// Only these images (repeatable)
        #[arg(long = "target", value_name = "IMAGE")]
        targets: Vec<String>,
        /// Builds at once (default: `concurrency` in kpack.toml)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        concurrency: Option<u32>,
        /// Wait this long for another apply or watch to release the state (e.g. `5m`)
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        lock_timeout: Option<std::time::Duration>,
    },
    /// Keep the fleet current: reload on edits, poll upstreams, serve webhooks
    Watch {
        /// The configuration file
        #[arg(default_value = "kpack.toml")]
        config: PathBuf,
        /// Where to serve webhooks, triggers, status and metrics (loopback by default)
        #[arg(long, value_name = "ADDR", default_value = engine::watch::DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Wait this long for another apply or watch to release the state (e.g. `5m`)
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        lock_timeout: Option<std::time::Duration>,
    },
    /// Each image: tag, digest, last build, reasons, age
    Status {
        /// The configuration file
        #[arg(default_value = "kpack.toml")]
        config: PathBuf,
        /// One JSON object on stdout
        #[arg(long)]
        json: bool,
    },
    /// Build history, of one image or all (and publishes of builder images)
    Builds {
        /// Only this image's builds
        image: Option<String>,
        /// Publishes of builder images instead: this builder's, or every builder's
        /// when no name follows
        #[arg(long, value_name = "BUILDER", num_args = 0..=1, default_missing_value = "", conflicts_with = "image")]
        builder: Option<String>,
        /// A JSON array on stdout
        #[arg(long)]
        json: bool,
    },
    /// Print a build's log; with --follow, until the build ends
    Logs {
        /// The image
        image: String,
        /// The build number (default: the latest build)
        #[arg(long = "build", value_name = "N")]
        number: Option<u64>,
        /// Keep printing new lines until the build ends
        #[arg(short, long)]
        follow: bool,
    },
    /// Mark images for a rebuild (TRIGGER) at the next apply
    Trigger {
        /// The images, by name
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
        /// The configuration file naming the images
        #[arg(long, default_value = "kpack.toml")]
        config: PathBuf,
    },
    /// Show an image: digest, platform, layers, config, labels and CNB metadata
    Inspect {
        /// A registry reference (`host[:port]/repo[:tag][@digest]`, `docker://…`) or an OCI
        /// image layout, `oci:<dir>[:<ref-name>]`
        reference: String,
        /// One JSON object on stdout
        #[arg(long)]
        json: bool,
        /// The platform to pick from a multi-platform image, `os/arch[/variant]`
        #[arg(long, default_value = "linux/amd64", value_name = "PLATFORM")]
        platform: String,
        #[command(flatten)]
        registries: RegistryArgs,
    },
    /// Copy an image, every platform of it, between registries and OCI image layouts
    Copy {
        /// Where the image is: a registry reference or `oci:<dir>[:<ref-name>]`
        source: String,
        /// Where it goes: a registry reference or `oci:<dir>[:<ref-name>]` (made if missing)
        destination: String,
        #[command(flatten)]
        registries: RegistryArgs,
    },
    /// kpackd's own image, to run kpackd in a cluster
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Print the dependency graph of kpack.toml as Graphviz DOT
    Graph {
        /// The configuration file
        #[arg(default_value = "kpack.toml")]
        config: PathBuf,
    },
    /// Print the JSON Schema of kpack.toml
    Schema,
    /// Turn kpack resources, a pack builder.toml or project.toml files into kpack.toml tables
    #[command(
        long_about = "Reads what kpack and pack users already have and prints the \
                  equivalent kpack.toml tables: kpack resources in YAML (ClusterStack, \
                  ClusterStore, ClusterBuilder, Builder, Buildpack, ClusterBuildpack, \
                  ClusterLifecycle, Image; several documents or a `kind: List`), a pack \
                  builder.toml, and project.toml files. Each file is recognised by its \
                  content. What has no equivalent in kpackd becomes a comment saying why. \
                  Relative paths are written against the current directory, or against \
                  the directory of the --into file."
    )]
    Import {
        /// The files to read; `-` reads stdin
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Add the tables to this kpack.toml (its text and comments are kept as they
        /// are) instead of printing them
        #[arg(long, value_name = "FILE")]
        into: Option<PathBuf>,
    },
}

/// `kpackd image …`.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Push kpackd's image: the static kpackd binary at /kpackd and the host's CA
    /// certificates, nothing else; run as 65532:65532
    Push {
        /// Where to push: a registry reference or `oci:<dir>[:<ref-name>]`
        reference: String,
        /// The static kpackd to put in the image (scripts/build-static builds one)
        /// [default: this kpackd]
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        /// The source revision the binary was built from, for the
        /// `org.opencontainers.image.revision` label [default: the one this kpackd was
        /// built with, if any]
        #[arg(long, value_name = "REVISION")]
        revision: Option<String>,
        #[command(flatten)]
        registries: RegistryArgs,
    },
}

/// How registries are reached by the commands that talk to them directly.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// A registry (`host[:port]`) spoken to over plain HTTP; localhost and 127.0.0.1
    /// always are. Repeatable
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// How long opening a registry connection may take [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = planner::parse_duration)]
    pub registry_connect_timeout: Option<std::time::Duration>,
    /// How long a registry may stay silent before it is given up on [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = planner::parse_duration)]
    pub registry_read_timeout: Option<std::time::Duration>,
    /// How long a request for a manifest or config may take in all; a layer gets this
    /// plus 1s per 256 KiB [default: 2m]
    #[arg(long, value_name = "DURATION", value_parser = planner::parse_duration)]
    pub registry_request_timeout: Option<std::time::Duration>,
}
