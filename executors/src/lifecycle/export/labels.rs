//! The labels export writes and analyze reads back: `io.buildpacks.lifecycle.metadata`
//! (lc:platform/files LayersMetadata, also the shape of the cache metadata without the
//! image-only parts) and the names of the other `io.buildpacks.*` labels.

use std::collections::BTreeMap;

use cnb::names::LayerName;
use imageref::{Digest, ImageRef};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::lifecycle::descriptor::LayerMetadata as LayerToml;
use crate::oci::Image;

pub const LIFECYCLE_LABEL: &str = "io.buildpacks.lifecycle.metadata";
pub const BUILD_LABEL: &str = "io.buildpacks.build.metadata";
pub const PROJECT_LABEL: &str = "io.buildpacks.project.metadata";
pub const REBASABLE_LABEL: &str = "io.buildpacks.rebasable";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LayersMetadata {
    #[serde(default)]
    pub app: Vec<Sha>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom: Option<Sha>,
    #[serde(default)]
    pub buildpacks: Vec<BuildpackLayers>,
    #[serde(default)]
    pub config: Sha,
    #[serde(default)]
    pub launcher: Sha,
    #[serde(rename = "process-types", default)]
    pub process_types: Sha,
    #[serde(rename = "runImage", default)]
    pub run_image: RunImageMetadata,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<StackMetadata>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sha {
    #[serde(default)]
    pub sha: String,
}

/// One buildpack's layers; `key` is the buildpack id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildpackLayers {
    pub key: String,
    #[serde(default)]
    pub version: String,
    /// By layer name: a checked path component, since restore makes files of it. A label
    /// or cache metadata naming a layer `..` or `a/b` does not deserialize, and is then
    /// treated as unreadable (nothing is reused from it).
    #[serde(default)]
    pub layers: BTreeMap<LayerName, LayerMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreMetadata>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreMetadata {
    #[serde(default)]
    pub metadata: serde_json::Map<String, Value>,
}

/// A layer as labels and cache metadata record it: its diffID, `[metadata]` and types.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerMetadata {
    #[serde(default)]
    pub sha: String,
    #[serde(default)]
    pub data: Value,
    #[serde(default)]
    pub build: bool,
    #[serde(default)]
    pub launch: bool,
    #[serde(default)]
    pub cache: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunImageMetadata {
    #[serde(rename = "topLayer", default)]
    pub top_layer: String,
    #[serde(default)]
    pub reference: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackMetadata {
    #[serde(rename = "runImage", default)]
    pub run_image: RunImageRef,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunImageRef {
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
}

impl LayerMetadata {
    /// What the label records of a layer with this diffID and `<layer>.toml`.
    pub fn new(diff_id: &Digest, toml: &LayerToml) -> LayerMetadata {
        LayerMetadata {
            sha: diff_id.to_string(),
            data: table_json(&toml.metadata),
            build: toml.types.build,
            launch: toml.types.launch,
            cache: toml.types.cache,
        }
    }
}

impl LayersMetadata {
    /// The layers a buildpack had, by id.
    pub fn buildpack(&self, id: &str) -> Option<&BuildpackLayers> {
        self.buildpacks.iter().find(|b| b.key == id)
    }
}

/// What `runImage.reference` records of a run image (platform spec: "MUST uniquely
/// identify the run image"): its location by digest, as the reference lifecycle writes
/// it: `registry/repo@sha256:…` for a registry, `oci:<dir>[:<name>]@sha256:…` for a
/// layout (the lifecycle's `<path>@<digest>`). Export and rebase both write this form.
pub fn run_image_reference(run_image: &Image) -> String {
    match &run_image.source {
        ImageRef::Registry(r) => r.at_digest(run_image.digest().clone()).to_string(),
        layout => format!("{layout}@{}", run_image.digest()),
    }
}

/// A TOML table as label JSON.
pub fn table_json(table: &toml::Table) -> Value {
    serde_json::to_value(table).unwrap_or_else(|_| json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_label_shape() {
        let mut md = LayersMetadata::default();
        md.app.push(Sha {
            sha: "sha256:aa".into(),
        });
        md.buildpacks.push(BuildpackLayers {
            key: "a/b".into(),
            version: "1".into(),
            layers: BTreeMap::from([(
                LayerName::parse("deps").unwrap(),
                LayerMetadata {
                    sha: "sha256:bb".into(),
                    data: json!({"k": "v"}),
                    launch: true,
                    ..Default::default()
                },
            )]),
            store: None,
        });
        md.run_image.top_layer = "sha256:cc".into();
        let v = serde_json::to_value(&md).unwrap();
        assert_eq!(v["buildpacks"][0]["layers"]["deps"]["data"]["k"], "v");
        assert_eq!(v["runImage"]["topLayer"], "sha256:cc");
        assert!(v.get("process-types").is_some());
        assert!(v.get("sbom").is_none());
        let back: LayersMetadata = serde_json::from_value(v).unwrap();
        assert_eq!(back, md);
    }

    #[test]
    fn layer_names_that_leave_the_layers_directory_do_not_deserialize() {
        // A previous image's label or a cache image's metadata naming a layer like this
        // made restore write and delete outside the layers directory.
        for bad in ["..", ".", "../../../tmp/x", "a/b", ""] {
            let label = serde_json::json!({
                "buildpacks": [{"key": "a/b", "version": "1",
                                "layers": {bad: {"sha": "sha256:bb", "cache": true}}}]
            });
            let err = serde_json::from_value::<LayersMetadata>(label).unwrap_err();
            assert!(
                err.to_string().contains("invalid layer name"),
                "{bad:?}: {err}"
            );
        }
    }
}
