//! Where kpackd finds its static build entrypoint, the binary a builder image carries at
//! `/cnb/lifecycle/kpackd`.

use std::path::PathBuf;

/// The environment variable naming the entrypoint binary explicitly.
pub const ENTRYPOINT_ENV: &str = "KPACKD_ENTRYPOINT";

/// The entrypoint's file name beside the `kpackd` executable.
pub const ENTRYPOINT_FILE: &str = "kpackd-entrypoint";

/// The static entrypoint: `$KPACKD_ENTRYPOINT` when set, else `kpackd-entrypoint` beside
/// the running executable; None when neither exists.
pub fn locate() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(ENTRYPOINT_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    let beside = exe.parent()?.join(ENTRYPOINT_FILE);
    beside.is_file().then_some(beside)
}
