//! The kpack.toml fixtures, kept beside the planner that reads them
//! (`planner/tests/fixtures`): `valid/` holds configurations with the buildpacks and apps
//! they name, `invalid/` configurations with mistakes that diagnostics must point at. The
//! engine's and the command line's tests read them through here.

use std::path::{Path, PathBuf};

/// `planner/tests/fixtures`, absolute.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("crates/testkit is two levels inside the workspace")
        .join("planner/tests/fixtures")
}

/// The valid configurations, and what they name.
pub fn valid() -> PathBuf {
    dir().join("valid")
}

/// The invalid configurations.
pub fn invalid() -> PathBuf {
    dir().join("invalid")
}

/// The `.toml` files directly in `dir`, sorted.
pub fn tomls(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}
