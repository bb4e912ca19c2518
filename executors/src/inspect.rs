//! What `kpackd inspect` shows of an image: digest, platform, layers, runtime config
//! and, for an image built with Cloud Native Buildpacks, the metadata its labels carry
//! ([`cnb::inspect::CnbMetadata`]).

use std::collections::BTreeMap;

use serde::Serialize;

pub use cnb::inspect::{BuildpackInfo, CnbMetadata, ProcessInfo, RunImageInfo};

use crate::oci::{Image, LayerInfo, RuntimeConfig};

/// A summary of one image, stable as JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    pub reference: String,
    /// The image manifest's digest.
    pub digest: String,
    /// The index it was chosen from, when the reference named one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    pub media_type: String,
    pub platform: String,
    pub layers: Vec<LayerInfo>,
    pub config: RuntimeConfig,
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnb: Option<CnbMetadata>,
}

impl Inspection {
    pub fn of(image: &Image) -> Inspection {
        let labels = image.config.labels();
        Inspection {
            reference: image.source.to_string(),
            digest: image.digest().to_string(),
            index_digest: image.index_digest.as_ref().map(ToString::to_string),
            media_type: image.raw_manifest.media_type.clone(),
            platform: image.config.platform().to_string(),
            layers: LayerInfo::of(image),
            config: RuntimeConfig::of(image),
            cnb: CnbMetadata::from_labels(&labels),
            labels,
        }
    }
}
