//! Why a rebase failed.

use crate::oci::OciError;

use super::{LIFECYCLE_LABEL, REBASABLE_LABEL};

/// Why a rebase failed. Messages read well after "failed to rebase: ".
#[derive(Debug, thiserror::Error)]
pub enum RebaseError {
    #[error("no tag to push the rebased image to")]
    NoTags,
    #[error("could not read the image {image}")]
    ReadImage {
        image: String,
        #[source]
        source: OciError,
    },
    #[error("{image} is an image index; rebase one platform's image at a time")]
    AppImageIsIndex { image: String },
    #[error("{image} has no usable label {LIFECYCLE_LABEL}: {reason} (was it built with Cloud Native Buildpacks?)")]
    MissingMetadata { image: String, reason: String },
    #[error("{image} is labelled {REBASABLE_LABEL}=false: its run image cannot be swapped safely (force to rebase anyway)")]
    NotRebasable { image: String },
    #[error("{image} is on stack `{image_stack}`, but the run image {run_image} is on stack `{run_image_stack}`")]
    StackMismatch {
        image: String,
        run_image: String,
        image_stack: String,
        run_image_stack: String,
    },
    #[error("{image}: {target} is `{image_value}`, but the run image {run_image} has `{run_image_value}` (force to rebase anyway)")]
    TargetMismatch {
        image: String,
        run_image: String,
        /// `os`, `architecture`, `variant` or a distro label.
        target: String,
        image_value: String,
        run_image_value: String,
    },
    #[error("the run image {run_image} has no manifest for the platform {platform} of {image} (the index has: {available})")]
    PlatformMissing {
        image: String,
        run_image: String,
        platform: String,
        available: String,
    },
    #[error("the run image {run_image} is not the one {image} was built on ({listed}) (force to rebase anyway)")]
    RunImageNotListed {
        image: String,
        run_image: String,
        listed: String,
    },
    #[error(
        "{image} has no layer with diffID {top_layer}, the run image top layer its metadata names"
    )]
    TopLayerNotFound { image: String, top_layer: String },
    #[error("the run image {run_image} has no layers")]
    EmptyRunImage { run_image: String },
    #[error("{image} lists {layers} layers but {diff_ids} diffIDs")]
    LayerCountMismatch {
        image: String,
        layers: usize,
        diff_ids: usize,
    },
    #[error("could not copy layer {layer} to {destination}")]
    CopyLayer {
        layer: String,
        destination: String,
        /// Boxed: the variant would be the error's largest by far.
        #[source]
        source: Box<OciError>,
    },
    #[error("could not write the rebased image to {destination}")]
    Write {
        destination: String,
        #[source]
        source: OciError,
    },
}
