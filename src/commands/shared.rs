//! What several commands share: the state directory of commands that take no CONFIG,
//! writing to a closed pipe, and the image store, references and runtime of the
//! commands that talk to registries directly.

use std::io::Write;
use std::path::{Path, PathBuf};

use executors::oci::{ImageStore, StoreSettings};
use imageref::{ImageRef, Platform};
use miette::{Context, IntoDiagnostic};

use crate::cli::RegistryArgs;

/// The state directory of commands that take no CONFIG: `--state-dir`, else the one
/// `./kpack.toml` names, else `./.kpackd`.
pub fn state_dir_without_config(cli: Option<&Path>) -> miette::Result<PathBuf> {
    if let Some(dir) = cli {
        return Ok(dir.to_path_buf());
    }
    let default = Path::new("kpack.toml");
    if default.is_file() {
        return Ok(planner::load(default)?.settings.state_dir);
    }
    Ok(PathBuf::from(".kpackd"))
}

/// Loads kpack.toml, showing its warnings (settings it ignores) on stderr like errors.
pub fn load_config(path: &Path) -> miette::Result<planner::Config> {
    let config = planner::load(path)?;
    if let Some(warnings) = config.warnings() {
        let _ = writeln!(anstream::stderr(), "{:?}", miette::Report::new(warnings));
    }
    Ok(config)
}

/// A reader that stopped reading (`kpackd plan | head`) is not an error.
pub fn closed_pipe_is_fine(written: std::io::Result<()>) -> std::io::Result<()> {
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// An image reference from the command line, with a diagnostic that says what is wrong.
pub fn parse_ref(reference: &str) -> miette::Result<ImageRef> {
    ImageRef::parse(reference).map_err(|e| {
        miette::miette!(
            help = "write `host[:port]/repository[:tag][@sha256:…]` or `oci:<dir>[:<ref-name>]`",
            "invalid image reference `{reference}`: {e}"
        )
    })
}

/// The store the OCI commands use: docker config credentials, the given insecure
/// registries and platform.
pub fn image_store(registries: &RegistryArgs, platform: Platform) -> ImageStore {
    let defaults = StoreSettings::default();
    ImageStore::new(StoreSettings {
        insecure_registries: registries.insecure_registries.clone(),
        platform,
        connect_timeout: (registries.registry_connect_timeout).unwrap_or(defaults.connect_timeout),
        read_timeout: (registries.registry_read_timeout).unwrap_or(defaults.read_timeout),
        request_timeout: (registries.registry_request_timeout).unwrap_or(defaults.request_timeout),
        ..defaults
    })
}

/// A runtime for one command's registry and file I/O.
pub fn runtime() -> miette::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .into_diagnostic()
        .wrap_err("failed to start the async runtime")
}
