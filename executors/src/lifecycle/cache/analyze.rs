//! Analyze: what the previous image offers for reuse.

use imageref::ImageRef;

use crate::lifecycle::export::{LayersMetadata, PreviousImage, LIFECYCLE_LABEL};
use crate::lifecycle::{LogSink, Phase};
use crate::oci::{ImageStore, OciError};

/// Reads the previous image (the last build's output): its lifecycle label and its layers
/// by diffID. A missing, unreadable or unlabelled image gives empty metadata, as in the
/// reference analyzer.
pub async fn analyze(
    store: &ImageStore,
    previous: Option<&ImageRef>,
    logs: &dyn LogSink,
) -> PreviousImage {
    let Some(r) = previous else {
        return PreviousImage::default();
    };
    let image = match store.image(r).await {
        Ok(image) => image,
        // A layout that does not exist yet has no previous image either.
        Err(OciError::NotFound { .. } | OciError::Layout { .. }) => {
            logs.line(Phase::Analyze, None, &format!("No previous image at {r}"));
            return PreviousImage::default();
        }
        Err(e) => {
            tracing::warn!(image = %r, error = %e, "previous image unreadable; building without it");
            logs.line(
                Phase::Analyze,
                None,
                &format!("Previous image {r} unreadable, not reusing its layers: {e}"),
            );
            return PreviousImage::default();
        }
    };
    let metadata: LayersMetadata = image
        .config
        .labels()
        .get(LIFECYCLE_LABEL)
        .and_then(|text| {
            serde_json::from_str(text)
                .inspect_err(
                    |e| tracing::warn!(image = %r, error = %e, "previous image label unreadable"),
                )
                .ok()
        })
        .unwrap_or_default();
    let layers = image
        .config
        .rootfs
        .diff_ids
        .iter()
        .cloned()
        .zip(image.manifest.layers.iter().cloned())
        .collect();
    logs.line(
        Phase::Analyze,
        None,
        &format!("Previous image {r} ({})", image.digest()),
    );
    PreviousImage {
        reference: Some(image.pinned()),
        metadata,
        layers,
    }
}
