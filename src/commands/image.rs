//! `kpackd image push`: kpackd's own image, the static binary and CA certificates on an
//! empty base, pushed to a registry or an OCI layout.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use executors::kpackd_image::{self, KpackdImage};
use imageref::Platform;
use miette::{Context, IntoDiagnostic};

use super::shared::{image_store, parse_ref, runtime};
use super::Outcome;
use crate::cli::RegistryArgs;

/// The source revision this kpackd was built from, when the build said
/// (`KPACKD_REVISION`, which scripts/build-static sets).
const BUILT_REVISION: Option<&str> = option_env!("KPACKD_REVISION");

pub fn push(
    reference: &str,
    binary: Option<PathBuf>,
    revision: Option<String>,
    registries: &RegistryArgs,
) -> miette::Result<Outcome> {
    let dest = parse_ref(reference)?;
    let binary = match binary {
        Some(path) => path,
        None => std::env::current_exe()
            .into_diagnostic()
            .wrap_err("failed to find this kpackd's executable")?,
    };
    let image = KpackdImage {
        binary,
        ca_certificates: Path::new(kpackd_image::CA_CERTIFICATES).to_path_buf(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        revision: revision.or_else(|| BUILT_REVISION.map(str::to_string)),
    };
    // The platform only picks from indexes when reading; pushing never reads one.
    let store = image_store(registries, Platform::host());
    let (digest, pushed) = runtime()?
        .block_on(kpackd_image::push(&store, &dest, &image))
        .into_diagnostic()
        .wrap_err_with(|| format!("failed to push kpackd's image to {dest}"))?;
    tracing::info!(%digest, "kpackd's image pushed");
    // A registry reference is printed pinned to the digest, a layout as named.
    writeln!(std::io::stdout(), "{pushed}").into_diagnostic()?;
    Ok(Outcome::Success)
}
