//! The planner: kpack.toml, its validation, the dependency graph, and the diff that makes a Plan.
//!
//! [`load`] reads a kpack.toml into a validated [`Config`], or a [`ConfigError`] that
//! holds every mistake of the file as a diagnostic; [`Graph`] orders its parts.

#![forbid(unsafe_code)]

pub mod buildpack;
pub mod config;
mod decode;
mod diagnostic;
pub mod diff;
pub mod graph;
mod model;
pub mod plan;
mod reason;
mod validate;

use std::path::Path;
use std::sync::Arc;

pub use buildpack::{BuildpackRef, DirectoryBuildpack, Group};
pub use config::schema;
pub use diagnostic::{did_you_mean, ConfigError, ConfigWarnings, InvalidConfig, Problem, Span};
pub use graph::{Cycle, Graph, Node, NodeKind};
pub use model::{
    Builder, BuilderKind, BuildpackSource, Cache, Config, Executor, History, Image, ImageConfig,
    ImageSpans, Kubernetes, PodPlacement, RegistryTimeouts, Resources, Settings, Source, Stack,
    StackSpans, Store, StoreBuildpack, Toleration, DEFAULT_MAX_PODS, DEFAULT_NAMESPACE,
};
pub use reason::Reason;
pub use validate::{normalize_path, parse_duration, DEFAULT_REVISION, NAME_PATTERN};

/// Reads and validates the kpack.toml at `path`; relative paths in it are resolved
/// against its directory.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Validates `text` as the contents of the kpack.toml at `path` (which names the file
/// in diagnostics and whose directory relative paths are resolved against).
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let text: Arc<str> = Arc::from(text);
    let name = path.display().to_string();
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = std::path::absolute(parent.unwrap_or(Path::new("."))).map_err(|source| {
        ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let invalid = |mut problems: Vec<Problem>| {
        problems.sort_by_key(|p| p.span().map(|s| s.start));
        ConfigError::Invalid(InvalidConfig::new(&name, text.clone(), problems))
    };
    let decoded = decode::decode(&text);
    let mut problems = decoded.problems.clone();
    let Some(file) = &decoded.file else {
        return Err(invalid(problems));
    };
    let shown_dir = parent.unwrap_or(Path::new(""));
    let valid = validate::validate(file, &decoded, &dir, shown_dir, &mut problems);
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    let config = Config {
        path: path.to_path_buf(),
        dir,
        settings: valid.settings,
        stacks: valid.stacks,
        stores: valid.stores,
        builders: valid.builders,
        images: valid.images,
        kubernetes: valid.kubernetes.kubernetes,
        warnings: valid.kubernetes.warnings,
        text: text.clone(),
    };
    // Defensive: the format cannot express a cycle today, but the engine relies on an
    // order existing.
    if let Err(cycle) = Graph::build(&config).topological_order() {
        let span = config.span_of(&cycle.0[0]).unwrap_or(0..0);
        return Err(invalid(vec![Problem::new(cycle.to_string())
            .label(span, "part of the cycle")
            .help("break the cycle by removing one of these references")]));
    }
    Ok(config)
}
