//! The request's source, written into the app directory before detect: a git commit, an
//! archive at a URL, or a source image, exactly as kpackd materialises them for a local
//! build (the same functions), so that the app layer is the same.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use executors::lifecycle::request::RequestSource;
use executors::oci::{unpack_image, ImageStore, OciError, UnpackOptions};
use executors::source::{blob, git};

/// The mode of the app directory: what a directory made under umask 022 (as kpackd's
/// own work directories are) has, whatever the container runtime's mount has.
const APP_DIR_MODE: u32 = 0o755;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the app directory {} is not empty: the request's source goes into an empty one", dir.display())]
    NotEmpty { dir: PathBuf },
    #[error("git source: {0}")]
    Git(#[from] git::GitError),
    #[error("git source: commit `{commit}` is not a full commit id")]
    Commit { commit: String },
    #[error("blob source: {0}")]
    Blob(#[from] blob::BlobError),
    #[error("blob source: {url} is {actual}, not {expected} as requested")]
    BlobDigest {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("source image {image}: {source}")]
    Image {
        image: String,
        #[source]
        source: OciError,
    },
    #[error("source image {image}: sub-path `{sub_path}` is not a directory in the image")]
    SubPath { image: String, sub_path: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> SourceError {
    let what = what.into();
    move |source| SourceError::Io { what, source }
}

/// Writes `source` into `app_dir` (which must exist and, unless the source is the
/// workspace itself, be empty); downloads are kept under `cache`.
pub async fn materialise(
    store: &ImageStore,
    source: &RequestSource,
    app_dir: &Path,
    cache: &Path,
) -> Result<(), SourceError> {
    if matches!(source, RequestSource::Workspace) {
        return Ok(());
    }
    let mut entries =
        fs::read_dir(app_dir).map_err(io_err(format!("read {}", app_dir.display())))?;
    if entries.next().is_some() {
        return Err(SourceError::NotEmpty {
            dir: app_dir.to_path_buf(),
        });
    }
    fs::set_permissions(app_dir, fs::Permissions::from_mode(APP_DIR_MODE))
        .map_err(io_err(format!("set the mode of {}", app_dir.display())))?;
    let (app_dir, cache) = (app_dir.to_path_buf(), cache.to_path_buf());
    match source.clone() {
        RequestSource::Git {
            url,
            commit,
            sub_path,
        } => {
            let id = git::ObjectId::from_hex(commit.as_bytes())
                .map_err(|_| SourceError::Commit { commit })?;
            blocking(move || {
                git::checkout(
                    &cache.join("git"),
                    &url,
                    id,
                    sub_path.as_deref(),
                    &app_dir,
                    &AtomicBool::new(false),
                )
                .map_err(SourceError::from)
            })
            .await
        }
        RequestSource::Blob {
            url,
            digest,
            strip_components,
            sub_path,
        } => {
            blocking(move || {
                let version = blob::fetch(&url, &cache.join("blobs"))?;
                if version.digest != digest.to_string() {
                    return Err(SourceError::BlobDigest {
                        url,
                        expected: digest.to_string(),
                        actual: version.digest,
                    });
                }
                blob::extract(
                    &version.archive,
                    strip_components as usize,
                    sub_path.as_deref(),
                    &app_dir,
                )?;
                Ok(())
            })
            .await
        }
        RequestSource::Image { image, sub_path } => {
            source_image(store, &image, sub_path.as_deref(), &app_dir).await
        }
        RequestSource::Workspace => Ok(()),
    }
}

async fn blocking(
    f: impl FnOnce() -> Result<(), SourceError> + Send + 'static,
) -> Result<(), SourceError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SourceError::Io {
            what: "write the source".into(),
            source: io::Error::other(e),
        })?
}

/// Applies the layers of the source image in a scratch directory inside `app_dir` (the
/// same file system, which a container's app directory mount may be the only one of),
/// then moves its `sub_path`'s entries up into `app_dir`. The image is untrusted: its
/// layers go through the unpacker, and the sub-path must be a directory in it.
async fn source_image(
    store: &ImageStore,
    image: &imageref::ImageRef,
    sub_path: Option<&str>,
    app_dir: &Path,
) -> Result<(), SourceError> {
    let scratch = tempfile::Builder::new()
        .prefix(".kpackd-source-")
        .tempdir_in(app_dir)
        .map_err(io_err(format!(
            "create a directory in {}",
            app_dir.display()
        )))?;
    let root = scratch.path().join("root");
    unpack_image(store, image, &root, &UnpackOptions { chown: false })
        .await
        .map_err(|source| SourceError::Image {
            image: image.to_string(),
            source,
        })?;
    let mut dir = root.clone();
    for part in sub_path.into_iter().flat_map(|s| s.split('/')) {
        if part.is_empty() || part == "." {
            continue;
        }
        dir.push(part);
        if part == ".." || !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            return Err(SourceError::SubPath {
                image: image.to_string(),
                sub_path: sub_path.unwrap_or_default().to_owned(),
            });
        }
    }
    let mode = fs::symlink_metadata(&dir)
        .map_err(io_err(format!("read {}", dir.display())))?
        .permissions()
        .mode();
    for entry in fs::read_dir(&dir).map_err(io_err(format!("read {}", dir.display())))? {
        let entry = entry.map_err(io_err(format!("read {}", dir.display())))?;
        let to = app_dir.join(entry.file_name());
        fs::rename(entry.path(), &to).map_err(io_err(format!("move into {}", to.display())))?;
    }
    fs::set_permissions(app_dir, fs::Permissions::from_mode(mode & 0o7777))
        .map_err(io_err(format!("set the mode of {}", app_dir.display())))?;
    scratch
        .close()
        .map_err(io_err("remove the source image's scratch directory"))
}
