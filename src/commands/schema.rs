//! `kpackd schema`.

use super::Outcome;

pub fn run() -> miette::Result<Outcome> {
    Ok(Outcome::Success)
}
