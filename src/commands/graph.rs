//! `kpackd graph`: the dependency graph of kpack.toml as Graphviz DOT.

use std::io::Write;
use std::path::Path;

use miette::IntoDiagnostic;

use super::Outcome;

pub fn run(config: &Path) -> miette::Result<Outcome> {
    let loaded = planner::load(config)?;
    let dot = planner::Graph::build(&loaded).to_dot();
    std::io::stdout()
        .write_all(dot.as_bytes())
        .into_diagnostic()?;
    Ok(Outcome::Success)
}
