//! The labels export writes and analyze reads back: `io.buildpacks.lifecycle.metadata`
//! (its types are `cnb::labels`'; the cache metadata has the same shape without the
//! image-only parts), how export fills it in, and the names of the other
//! `io.buildpacks.*` labels.

use std::collections::BTreeMap;

pub use cnb::labels::{
    BuildpackLayersMetadata, LayerMetadata, LayersMetadata, RunImageMetadata, RunImageRef, Sha,
    StackMetadata, StoreMetadata,
};
use cnb::BuildpackId;
use imageref::{Digest, ImageRef};
use serde_json::{json, Value};

use super::ExportError;
use crate::lifecycle::descriptor::LayerMetadata as LayerToml;
use crate::oci::Image;

pub use cnb::labels::{
    BUILD_METADATA as BUILD_LABEL, LIFECYCLE_METADATA as LIFECYCLE_LABEL,
    PROJECT_METADATA as PROJECT_LABEL, REBASABLE as REBASABLE_LABEL,
};

/// The label entry of buildpack `id` at `version`, with no layers yet. The id names a
/// directory of the layers dir, so it must be a valid buildpack id.
pub fn buildpack_entry(id: &str, version: &str) -> Result<BuildpackLayersMetadata, ExportError> {
    let key = BuildpackId::parse(id).map_err(|e| ExportError::BuildpackId {
        id: id.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(BuildpackLayersMetadata {
        key,
        version: version.to_owned(),
        layers: BTreeMap::new(),
        store: None,
    })
}

/// What the label records of a layer with this diffID and `<layer>.toml`.
pub fn layer_metadata(diff_id: &Digest, toml: &LayerToml) -> LayerMetadata {
    LayerMetadata {
        sha: diff_id.to_string(),
        data: table_json(&toml.metadata),
        build: toml.types.build,
        launch: toml.types.launch,
        cache: toml.types.cache,
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
    use cnb::names::LayerName;

    #[test]
    fn lifecycle_label_shape() {
        let mut md = LayersMetadata::default();
        md.app.push(Sha {
            sha: "sha256:aa".into(),
        });
        let mut bp = buildpack_entry("a/b", "1").unwrap();
        bp.layers.insert(
            LayerName::parse("deps").unwrap(),
            LayerMetadata {
                sha: "sha256:bb".into(),
                data: json!({"k": "v"}),
                launch: true,
                ..Default::default()
            },
        );
        md.buildpacks.push(bp);
        md.run_image.top_layer = "sha256:cc".into();
        let v = serde_json::to_value(&md).unwrap();
        assert_eq!(v["buildpacks"][0]["key"], "a/b");
        assert_eq!(v["buildpacks"][0]["layers"]["deps"]["data"]["k"], "v");
        assert_eq!(v["runImage"]["topLayer"], "sha256:cc");
        assert!(v.get("process-types").is_some());
        assert!(v.get("sbom").is_none());
        let back: LayersMetadata = serde_json::from_value(v).unwrap();
        assert_eq!(back, md);
    }

    #[test]
    fn a_buildpack_id_that_is_not_one_has_no_label_entry() {
        for bad in ["", "..", "a/../b", "a b"] {
            assert!(
                matches!(
                    buildpack_entry(bad, "1"),
                    Err(ExportError::BuildpackId { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
