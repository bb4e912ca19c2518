//! Why an upstream could not be resolved. The plan records an error as its message with
//! every cause ([`crate::apply::job::error_chain`]).

use std::sync::Arc;
use std::time::Duration;

use executors::oci::OciError;
use executors::source::{blob::BlobError, git::GitError, path::PathError};

/// An upstream that could not be resolved. Cheap to clone: one failed upstream blocks
/// everything that depends on it, and each dependent records the same error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Oci(Arc<OciError>),
    #[error(transparent)]
    Git(Arc<GitError>),
    #[error(transparent)]
    Path(Arc<PathError>),
    #[error(transparent)]
    Blob(Arc<BlobError>),
    #[error("{reference} has no manifest for {platform}")]
    NoPlatformManifest { reference: String, platform: String },
    #[error("{reference}: an index inside an index is not supported")]
    NestedIndex { reference: String },
    #[error("{reference}: invalid image config")]
    InvalidConfig {
        reference: String,
        #[source]
        source: Arc<serde_json::Error>,
    },
    #[error("{reference}: not a known reference")]
    UnknownReference { reference: String },
    #[error("timed out after {}", humantime::format_duration(*.0))]
    TimedOut(Duration),
    #[error("resolver task failed")]
    TaskFailed(#[source] Arc<tokio::task::JoinError>),
    /// A job that was never run, or whose output is not of the kind asked for.
    #[error("not resolved")]
    NotResolved,
    #[error("sub-path `{0}` not resolved")]
    SubPathNotResolved(String),
    /// An image's read failed.
    #[error("{reference}")]
    Image {
        reference: String,
        #[source]
        source: Box<ResolveError>,
    },
    /// A directory buildpack's hash failed.
    #[error("buildpack {id_version}")]
    Buildpack {
        id_version: String,
        #[source]
        source: Box<ResolveError>,
    },
    #[error("the stack id in kpack.toml is `{declared}` but the run image's label says `{label}`")]
    StackIdMismatch { declared: String, label: String },
    #[error("the run image has no {base} (or {legacy}) label; set `id` in the stack")]
    NoStackId {
        base: &'static str,
        legacy: &'static str,
    },
    #[error("{reference} has no {label} label")]
    MissingLabel {
        reference: String,
        label: &'static str,
    },
    #[error("{reference}: invalid {label}")]
    InvalidLabel {
        reference: String,
        label: &'static str,
        #[source]
        source: Arc<serde_json::Error>,
    },
    #[error("builder image {builder} names no run image in {label}")]
    NoRunImage {
        builder: String,
        label: &'static str,
    },
    /// A digest an upstream named is not one.
    #[error("{what}")]
    InvalidDigest {
        what: String,
        #[source]
        source: imageref::ParseError,
    },
    #[error("run image `{name}`")]
    InvalidRunImage {
        name: String,
        #[source]
        source: imageref::ParseError,
    },
}

impl From<OciError> for ResolveError {
    fn from(error: OciError) -> Self {
        ResolveError::Oci(Arc::new(error))
    }
}

impl From<GitError> for ResolveError {
    fn from(error: GitError) -> Self {
        ResolveError::Git(Arc::new(error))
    }
}

impl From<PathError> for ResolveError {
    fn from(error: PathError) -> Self {
        ResolveError::Path(Arc::new(error))
    }
}

impl From<BlobError> for ResolveError {
    fn from(error: BlobError) -> Self {
        ResolveError::Blob(Arc::new(error))
    }
}

impl ResolveError {
    /// The message the plan records: this error and every cause.
    pub fn message(&self) -> String {
        crate::apply::job::error_chain(self)
    }
}
