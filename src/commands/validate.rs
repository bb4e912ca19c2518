//! `kpackd validate`: check kpack.toml and say what it declares.

use std::io::Write;
use std::path::Path;

use super::Outcome;

pub fn run(config: &Path) -> miette::Result<Outcome> {
    let loaded = super::shared::load_config(config)?;
    let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let summary = [
        count(loaded.stacks.len(), "stack"),
        count(loaded.stores.len(), "store"),
        count(loaded.builders.len(), "builder"),
        count(loaded.images.len(), "image"),
    ]
    .join(", ");
    // The verdict goes to stderr with the diagnostics it replaces; stdout stays empty.
    let _ = writeln!(
        anstream::stderr(),
        "{} is valid: {summary}",
        config.display()
    );
    Ok(Outcome::Success)
}
