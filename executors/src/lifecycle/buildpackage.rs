//! Buildpacks that come in images: buildpackages (`{ image = "…" }` in a store) and
//! builder images. Each buildpack is one layer of its image, holding
//! `/cnb/buildpacks/<id with / as _>/<version>/`, and the image's
//! `io.buildpacks.buildpack.layers` label names that layer by diffID (the planner pins
//! it). [`materialise`] extracts that one layer, once per diffID, under
//! `<state-dir>/buildpacks/`, and returns the buildpack's directory: from there it is a
//! directory buildpack like any other.

use std::fs;
use std::path::{Path, PathBuf};

use cnb::labels::BUILDPACK_LAYERS;
use cnb::{BuildpackId, BuildpackVersion, NameError};
use imageref::{Digest, ImageRef};

use super::stack::lock_file;
use super::{LogSink, Phase};
use crate::oci::{self, blocking_reader, ImageStore, OciError, UnpackOptions};

#[derive(Debug, thiserror::Error)]
pub enum BuildpackageError {
    /// The id or version the image's label gives would not name a directory of the
    /// buildpackage (`..`, `/`, …): refused before any path is made of it.
    #[error("buildpack from {image}: invalid label {label}: {source}")]
    Name {
        image: String,
        label: &'static str,
        #[source]
        source: NameError,
    },
    #[error("buildpack {id}@{version} from {image}: {source}")]
    Image {
        id: String,
        version: String,
        image: String,
        #[source]
        source: OciError,
    },
    #[error("buildpack {id}@{version}: {image} has no layer with diffID {diff_id}")]
    NoLayer {
        id: String,
        version: String,
        image: String,
        diff_id: String,
    },
    #[error("buildpack {id}@{version}: its layer in {image} holds no {expected}")]
    NotInLayer {
        id: String,
        version: String,
        image: String,
        expected: String,
    },
    #[error("buildpack {id}@{version}: {what} {}: {source}", path.display())]
    Io {
        id: String,
        version: String,
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The directory of buildpack `id@version`, whose layer in `image` has the diffID
/// `diff_id`: extracted into `<buildpacks_dir>/<diffID hex>/` unless a build before
/// did (safe against concurrent builds), then found at `cnb/buildpacks/<id>/<version>`.
/// `id` and `version` come from the image's `io.buildpacks.buildpack.layers` label, so
/// they are checked before they become a path.
pub async fn materialise(
    store: &ImageStore,
    image: &ImageRef,
    id: &str,
    version: &str,
    diff_id: &Digest,
    buildpacks_dir: &Path,
    logs: &dyn LogSink,
) -> Result<PathBuf, BuildpackageError> {
    let io = |what: &'static str, path: &Path| {
        let (id, version, path) = (id.to_string(), version.to_string(), path.to_path_buf());
        move |source| BuildpackageError::Io {
            id,
            version,
            what,
            path,
            source,
        }
    };
    let no_layer = || BuildpackageError::NoLayer {
        id: id.into(),
        version: version.into(),
        image: image.to_string(),
        diff_id: diff_id.to_string(),
    };
    let bad_name = |source| BuildpackageError::Name {
        image: image.to_string(),
        label: BUILDPACK_LAYERS,
        source,
    };
    let checked_id = BuildpackId::parse(id).map_err(bad_name)?;
    let checked_version = BuildpackVersion::parse(version).map_err(bad_name)?;
    let cache = buildpacks_dir;
    let root = cache.join(diff_id.hex());
    let dir = root
        .join("cnb/buildpacks")
        .join(checked_id.dir_name())
        .join(checked_version.as_str());
    if !root.is_dir() {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(cache)
            .map_err(io("create", cache))?;
        let lock_path = cache.join(format!("{}.lock", diff_id.hex()));
        let _lock = lock_file(&lock_path)
            .await
            .map_err(|e| io("lock", &lock_path)(std::io::Error::other(e.to_string())))?;
        if !root.is_dir() {
            logs.line(
                Phase::Prepare,
                None,
                &format!("Extracting buildpack {id}@{version} from {image}"),
            );
            extract(store, image, diff_id, cache, &root)
                .await
                .map_err(|e| match e {
                    Extract::NoLayer => no_layer(),
                    Extract::Oci(source) => BuildpackageError::Image {
                        id: id.into(),
                        version: version.into(),
                        image: image.to_string(),
                        source,
                    },
                    Extract::Io(path, source) => io("extract into", &path)(source),
                })?;
        }
    }
    if !dir.join("buildpack.toml").is_file() {
        return Err(BuildpackageError::NotInLayer {
            id: id.into(),
            version: version.into(),
            image: image.to_string(),
            expected: format!(
                "/cnb/buildpacks/{}/{version}/buildpack.toml",
                checked_id.dir_name()
            ),
        });
    }
    Ok(dir)
}

enum Extract {
    NoLayer,
    Oci(OciError),
    Io(PathBuf, std::io::Error),
}

/// Unpacks the layer with diffID `diff_id` of `image` into a temporary directory beside
/// `root`, then renames it to `root`: a half-extracted buildpack is never seen.
async fn extract(
    store: &ImageStore,
    image: &ImageRef,
    diff_id: &Digest,
    cache: &Path,
    root: &Path,
) -> Result<(), Extract> {
    let found = store.image(image).await.map_err(Extract::Oci)?;
    let blob = found.layer_with_diff_id(diff_id).ok_or(Extract::NoLayer)?;
    let temp = tempfile::Builder::new()
        .prefix(".extract-")
        .tempdir_in(cache)
        .map_err(|e| Extract::Io(cache.to_path_buf(), e))?;
    let reader = blocking_reader(
        store
            .open_blob(&found.pinned(), blob)
            .await
            .map_err(Extract::Oci)?,
    );
    let target = temp.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        oci::unpack_layer(reader, &target, &UnpackOptions { chown: false })
    })
    .await
    .expect("unpacking a layer does not panic")
    .map_err(Extract::Oci)?;
    fs::rename(temp.path(), root).map_err(|e| Extract::Io(root.to_path_buf(), e))?;
    Ok(())
}
