//! Analyze, restore and the cache, as the reference lifecycle does them.
//!
//! - [`analyze`] reads the previous image's `io.buildpacks.lifecycle.metadata` label and
//!   its layers by diffID, so export can reuse launch layers without uploading them again.
//! - [`CacheDir`] is the directory cache of one image, `<state-dir>/cache/<image>/`: the
//!   `cache = true` layers as the tar+gzip blobs export writes, named by diffID, and their
//!   metadata, in the reference lifecycle's volume cache layout (`committed/`, `staging/`).
//! - [`restore`] puts back, before build, the layer metadata and contents the layer-types
//!   table says: metadata of launch layers from the image label, metadata and contents of
//!   cache layers from the cache (contents only when the image and cache agree).
//! - [`save`] commits the build's cache layers after a successful export.
//! - [`pull_image`] and [`push_image`] bring a cache image into the directory cache and
//!   write the directory cache as a cache image.

mod analyze;
mod dir;
mod image;
mod restore;
mod save;

use std::io;
use std::path::{Path, PathBuf};

pub use analyze::analyze;
pub use dir::{CacheDir, CacheMetadata};
pub use image::{pull_image, push_image};
pub use restore::{restore, RestoreReport};
pub use save::save;

use super::export::ExportError;
use crate::oci::OciError;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cache layer `{layer}` of buildpack {buildpack}: {reason}")]
    Layer {
        buildpack: String,
        layer: String,
        reason: String,
    },
    #[error(transparent)]
    Layers(#[from] ExportError),
    #[error("cache image {image}: {source}")]
    Image {
        image: String,
        #[source]
        source: OciError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}
