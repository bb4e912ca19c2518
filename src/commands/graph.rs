//! `kpackd graph`.

use std::path::Path;

use super::Outcome;

pub fn run(_config: &Path) -> miette::Result<Outcome> {
    Ok(Outcome::Success)
}
