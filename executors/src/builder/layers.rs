//! The layers a builder image adds to its build image, each written by
//! [`NormalisedLayer`]: one per directory buildpack ([`buildpack_layer`], also what a
//! buildpackage of that directory holds), the CNB user's directories, the lifecycle, the
//! build entrypoint and the `/cnb/*.toml` files.

use std::path::Path;

use cnb::{BuildpackId, BuildpackVersion};

use super::normalised::{NormalisedLayer, Owner};
use crate::oci::layer::WrittenLayer;
use crate::oci::OciError;

/// Where buildpacks live in builder and buildpackage images.
pub const BUILDPACKS_DIR: &str = "cnb/buildpacks";
/// Where the lifecycle lives in builder and lifecycle images.
pub const LIFECYCLE_DIR: &str = "cnb/lifecycle";
/// kpackd's build entrypoint in a builder image.
pub const ENTRYPOINT_PATH: &str = "cnb/lifecycle/kpackd";

/// The directory of buildpack `id@version` in an image, relative to `/`.
pub fn buildpack_path(id: &BuildpackId, version: &BuildpackVersion) -> String {
    format!("{BUILDPACKS_DIR}/{}/{version}", id.dir_name())
}

/// The entries of the buildpack layer of the directory `dir` holding buildpack
/// `id@version`: `/cnb/buildpacks/<id with / as _>/<version>/…` with `cnb/`,
/// `cnb/buildpacks/` and `cnb/buildpacks/<id>/` as entries, normalised (root-owned,
/// fixed mtime, modes `0755`/`0644`, sorted). Blocking.
pub fn buildpack_tree(
    dir: &Path,
    id: &BuildpackId,
    version: &BuildpackVersion,
) -> Result<NormalisedLayer, OciError> {
    let mut layer = NormalisedLayer::new();
    layer.tree(&buildpack_path(id, version), dir)?;
    Ok(layer)
}

/// The buildpack layer of the directory `dir` holding buildpack `id@version`
/// ([`buildpack_tree`]), written into `out_dir`. The one function that writes it: a
/// builder and a buildpackage of the same directory hold the same bytes. Blocking.
pub fn buildpack_layer(
    dir: &Path,
    id: &BuildpackId,
    version: &BuildpackVersion,
    out_dir: &Path,
) -> Result<WrittenLayer, OciError> {
    buildpack_tree(dir, id, version)?.write(out_dir)
}

/// `/workspace`, `/layers` and `/platform`, owned by the CNB user so the builder can run
/// as that user. Blocking.
pub fn user_dirs_layer(owner: Owner, out_dir: &Path) -> Result<WrittenLayer, OciError> {
    NormalisedLayer::new()
        .dir("workspace", owner)
        .dir("layers", owner)
        .dir("platform", owner)
        .write(out_dir)
}

/// A lifecycle image's `/cnb/lifecycle` directory (unpacked at `dir`). Blocking.
pub fn lifecycle_layer(dir: &Path, out_dir: &Path) -> Result<WrittenLayer, OciError> {
    NormalisedLayer::new()
        .tree(LIFECYCLE_DIR, dir)?
        .write(out_dir)
}

/// kpackd's build entrypoint at `/cnb/lifecycle/kpackd`, mode `0755`. Blocking.
pub fn entrypoint_layer(entrypoint: &Path, out_dir: &Path) -> Result<WrittenLayer, OciError> {
    NormalisedLayer::new()
        .dir(LIFECYCLE_DIR, Owner::ROOT)
        .executable(ENTRYPOINT_PATH, entrypoint)?
        .write(out_dir)
}

/// The `/cnb/*.toml` files (`order.toml`, `run.toml`, `stack.toml`), by file name.
/// Blocking.
pub fn cnb_files_layer(files: &[(&str, String)], out_dir: &Path) -> Result<WrittenLayer, OciError> {
    let mut layer = NormalisedLayer::new();
    for (name, text) in files {
        layer.file(&format!("cnb/{name}"), text.as_bytes().to_vec(), false);
    }
    layer.write(out_dir)
}
