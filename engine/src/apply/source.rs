//! A build's source, written into its work directory: exactly the version the plan
//! pinned, whatever its kind (git, path, blob or image), and what the image records of it.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use executors::oci::ImageStore;
use executors::source;
use imageref::ImageRef;

use super::job::{pinned, JobContext, JobFailure};
use crate::resolve::SourcePin;

/// A build's work directory, removed when dropped, also when the job is canceled. When
/// its app directory links the files of a path source's mirror, the drop keeps the
/// mirror's record: the files the build left intact, if the build's programs all ended
/// (see `source::mirror`).
pub(super) struct WorkDir {
    pub(super) dir: PathBuf,
    /// The mirror the app directory links, if any.
    pub(super) mirror: Option<PathBuf>,
    /// Whether every program the build ran has ended (the build returned, whatever its
    /// result): only then can the mirror's files be judged. A canceled build's programs
    /// are killed, not waited for.
    pub(super) ended: bool,
}

impl WorkDir {
    pub(super) fn new(dir: PathBuf) -> WorkDir {
        WorkDir {
            dir,
            mirror: None,
            ended: false,
        }
    }

    pub(super) fn app_dir(&self) -> PathBuf {
        self.dir.join("app")
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let intact = match &self.mirror {
            Some(mirror) if self.ended => Some(source::mirror::intact(&self.app_dir(), mirror)),
            _ => None,
        };
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), %error, "cannot remove a build's work directory");
            }
        }
        if let Some(intact) = intact {
            tracing::debug!(
                files = intact.len(),
                "mirror files left intact by the build"
            );
            intact.save();
        }
    }
}

impl WorkDir {
    /// Writes exactly the planned version of `image`'s source into the app directory,
    /// making the work directory first (readable by its owner only). A path source goes
    /// through the image's mirror, which this work directory then links.
    pub(super) async fn materialise(
        &mut self,
        ctx: &JobContext,
        image: &str,
        pin: &SourcePin,
    ) -> Result<(), JobFailure> {
        let work = &self.dir;
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(work)
            .map_err(|e| JobFailure::infrastructure(format!("create {}: {e}", work.display())))?;
        let cache = ctx.layout.sources_dir();
        let app_dir = self.app_dir();
        match pin.clone() {
            SourcePin::Git {
                url,
                commit,
                sub_path,
                ..
            } => {
                blocking(move || {
                    let commit =
                        source::git::ObjectId::from_hex(commit.as_bytes()).map_err(|e| {
                            JobFailure::build(format!("planned commit `{commit}`: {e}"))
                        })?;
                    source::git::checkout(
                        &cache.join("git"),
                        &url,
                        commit,
                        sub_path.as_deref(),
                        &app_dir,
                        &AtomicBool::new(false),
                    )
                    .map_err(|e| JobFailure::from_error(&e))
                })
                .await
            }
            SourcePin::Path {
                path,
                sub_path,
                digest,
            } => {
                let mirror = source::mirror::mirror_dir(&cache, image, &path, sub_path.as_deref());
                self.mirror = Some(mirror.clone());
                blocking(move || {
                    copy_path_source(
                        &path,
                        sub_path.as_deref(),
                        &digest,
                        &cache,
                        &app_dir,
                        &mirror,
                    )
                })
                .await
            }
            SourcePin::Blob {
                url,
                digest,
                archive,
                strip_components,
                sub_path,
            } => {
                blocking(move || {
                    let archive = blob_archive(&url, &digest, archive, &cache)?;
                    source::blob::extract(
                        &archive,
                        strip_components as usize,
                        sub_path.as_deref(),
                        &app_dir,
                    )
                    .map_err(|e| JobFailure::from_error(&e))
                })
                .await
            }
            SourcePin::Image {
                reference,
                digest,
                sub_path,
            } => {
                let image = pinned(&ctx.store, &reference, &digest).await?;
                source_image(&ctx.store, &image, sub_path.as_deref(), work, &app_dir).await
            }
        }
    }
}

/// Copies the path source `path` (or its `sub_path`) to `app_dir`, through `mirror`.
/// The copy's version comes from the same read as the copy itself, or, for
/// files whose stat the plan's hashing recorded, from the stat cache; a version other than
/// the `planned` one is built as it is now, with a warning.
fn copy_path_source(
    path: &Path,
    sub_path: Option<&str>,
    planned: &str,
    cache: &Path,
    app_dir: &Path,
    mirror: &Path,
) -> Result<(), JobFailure> {
    let stat_cache = source::path::stat_cache_file(cache, path, sub_path);
    let now = source::path::copy_mirrored(path, sub_path, app_dir, &stat_cache, mirror)
        .map_err(|e| JobFailure::from_error(&e))?;
    if now != planned {
        tracing::warn!(
            path = %path.display(),
            %planned,
            %now,
            "the source directory changed since the plan; building it as it is now"
        );
    }
    Ok(())
}

/// The archive of the blob source `url`: the one the plan fetched, or fetched again into
/// the cache, which must still have the `planned` digest.
fn blob_archive(
    url: &str,
    planned: &str,
    archive: PathBuf,
    cache: &Path,
) -> Result<PathBuf, JobFailure> {
    if archive.is_file() {
        return Ok(archive);
    }
    let version =
        source::blob::fetch(url, &cache.join("blobs")).map_err(|e| JobFailure::from_error(&e))?;
    if version.digest != planned {
        return Err(JobFailure::build(format!(
            "{url} is {} now, not {planned} as planned: plan again",
            version.digest
        )));
    }
    Ok(version.archive)
}

/// Runs `f`, which blocks on files, processes or the network, on the blocking pool.
async fn blocking(
    f: impl FnOnce() -> Result<(), JobFailure> + Send + 'static,
) -> Result<(), JobFailure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| JobFailure::infrastructure(format!("the source task failed: {e}")))?
}

/// Applies the layers of the source image `image` in a scratch directory under `work`
/// and makes it, or its `sub_path`, the app directory. The image is untrusted: its
/// layers go through the unpacker (nothing lands outside the scratch directory), and
/// the sub-path must be a directory in it, not a symlink out of it.
async fn source_image(
    store: &ImageStore,
    image: &ImageRef,
    sub_path: Option<&str>,
    work: &Path,
    app_dir: &Path,
) -> Result<(), JobFailure> {
    let scratch = work.join("source-image");
    let options = executors::oci::UnpackOptions { chown: false };
    executors::oci::unpack_image(store, image, &scratch, &options)
        .await
        .map_err(|e| JobFailure::from_error(&e).context(format_args!("source image {image}")))?;
    let mut dir = scratch.clone();
    for part in sub_path.into_iter().flat_map(|s| s.split('/')) {
        if part.is_empty() || part == "." {
            continue;
        }
        dir.push(part);
        let is_dir = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir());
        if !is_dir {
            return Err(JobFailure::build(format!(
                "source image {image}: sub-path `{}` is not a directory in the image",
                sub_path.unwrap_or_default()
            )));
        }
    }
    std::fs::rename(&dir, app_dir).map_err(|e| {
        JobFailure::infrastructure(format!(
            "move {} to {}: {e}",
            dir.display(),
            app_dir.display()
        ))
    })
}

/// `io.buildpacks.project.metadata`: where the source came from, as the reference
/// lifecycle records it for git sources (`type`, `version.commit`, `metadata.repository`).
pub(super) fn project_metadata(pin: &SourcePin) -> serde_json::Value {
    match pin {
        SourcePin::Git { url, commit, .. } => serde_json::json!({
            "source": {
                "type": "git",
                "version": {"commit": commit},
                "metadata": {"repository": url},
            }
        }),
        SourcePin::Path { path, digest, .. } => serde_json::json!({
            "source": {
                "type": "path",
                "version": {"digest": digest},
                "metadata": {"path": path},
            }
        }),
        SourcePin::Blob { url, digest, .. } => serde_json::json!({
            "source": {
                "type": "blob",
                "version": {"digest": digest},
                "metadata": {"url": url},
            }
        }),
        SourcePin::Image {
            reference, digest, ..
        } => serde_json::json!({
            "source": {
                "type": "image",
                "version": {"digest": digest},
                "metadata": {"image": reference},
            }
        }),
    }
}
