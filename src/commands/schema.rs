//! `kpackd schema`: the JSON Schema of kpack.toml, for editors and CI.

use std::io::Write;

use miette::IntoDiagnostic;

use super::Outcome;

pub fn run() -> miette::Result<Outcome> {
    let schema = serde_json::to_string_pretty(&planner::schema()).into_diagnostic()?;
    writeln!(std::io::stdout(), "{schema}").into_diagnostic()?;
    Ok(Outcome::Success)
}
