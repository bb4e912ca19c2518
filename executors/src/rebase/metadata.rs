//! The app image's lifecycle metadata label, read and rewritten in place.

use std::collections::BTreeMap;

use imageref::{Digest, ImageRef};
use serde_json::{Map, Value};

use super::{RebaseError, LIFECYCLE_LABEL};

/// The app image's `io.buildpacks.lifecycle.metadata`, kept whole as JSON so that a
/// rebase changes only what it must.
#[derive(Debug, Clone)]
pub(super) struct LifecycleMetadata {
    json: Map<String, Value>,
    /// The key holding the run image: `runImage`, or `run-image` as older tools wrote.
    run_image_key: &'static str,
    pub(super) top_layer: String,
    pub(super) reference: String,
}

impl LifecycleMetadata {
    pub(super) fn read(
        image: &ImageRef,
        labels: &BTreeMap<String, String>,
    ) -> Result<Self, RebaseError> {
        let missing = |reason: &str| RebaseError::MissingMetadata {
            image: image.to_string(),
            reason: reason.to_string(),
        };
        let text = labels
            .get(LIFECYCLE_LABEL)
            .ok_or_else(|| missing("the label is not set"))?;
        let json: Map<String, Value> =
            serde_json::from_str(text).map_err(|e| missing(&format!("not a JSON object ({e})")))?;
        let (run_image_key, run_image) = ["runImage", "run-image"]
            .into_iter()
            .find_map(|k| Some((k, json.get(k)?.as_object()?)))
            .ok_or_else(|| missing("it has no runImage"))?;
        let field = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| run_image.get(*n)?.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let top_layer = field(&["topLayer", "top-layer"]);
        if top_layer.is_empty() {
            return Err(missing("it has no runImage.topLayer"));
        }
        let reference = field(&["reference"]);
        Ok(LifecycleMetadata {
            run_image_key,
            top_layer,
            reference,
            json,
        })
    }

    fn run_image(&mut self) -> &mut Map<String, Value> {
        self.json
            .get_mut(self.run_image_key)
            .and_then(Value::as_object_mut)
            .expect("read() found runImage to be an object")
    }

    /// The run image names the metadata lists: `runImage.image` and its mirrors, or
    /// the legacy `stack.runImage`'s.
    pub(super) fn listed(&self) -> Vec<String> {
        let names = |v: Option<&Value>| -> Vec<String> {
            let Some(v) = v else { return Vec::new() };
            v.get("image")
                .and_then(Value::as_str)
                .into_iter()
                .chain(
                    v.get("mirrors")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str),
                )
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        let current = names(self.json.get(self.run_image_key));
        if !current.is_empty() {
            return current;
        }
        names(
            self.json
                .get("stack")
                .and_then(|s| s.get("runImage").or_else(|| s.get("run-image"))),
        )
    }

    /// Whether `run_image` is one the metadata names (by repository, ignoring tag and
    /// digest). Metadata naming none accepts any.
    pub(super) fn names(&self, run_image: &ImageRef) -> bool {
        let listed = self.listed();
        listed.is_empty()
            || listed.iter().any(|name| {
                ImageRef::parse(name).is_ok_and(|listed| listed.same_location(run_image))
            })
    }

    /// With force, a run image the metadata does not name becomes the one it names.
    pub(super) fn rename_run_image(&mut self, name: &str) {
        let run_image = self.run_image();
        run_image.insert("image".into(), Value::String(name.to_string()));
        run_image.remove("mirrors");
        if let Some(stack) = self.json.get_mut("stack").and_then(Value::as_object_mut) {
            stack.insert(
                "runImage".into(),
                Value::Object(Map::from_iter([(
                    "image".to_string(),
                    Value::String(name.to_string()),
                )])),
            );
        }
    }

    pub(super) fn point_at(&mut self, reference: &str, top_layer: &Digest) {
        let dashed = self.run_image_key == "run-image";
        let run_image = self.run_image();
        let top_key = if dashed { "top-layer" } else { "topLayer" };
        run_image.insert(top_key.into(), Value::String(top_layer.to_string()));
        run_image.insert("reference".into(), Value::String(reference.to_string()));
    }

    pub(super) fn to_json(&self) -> String {
        serde_json::to_string(&self.json).expect("a JSON object serialises")
    }
}

/// The run image's name for metadata: `registry/repo[:tag]`, or the layout reference.
pub(super) fn run_image_name(run_image: &ImageRef) -> String {
    match run_image {
        ImageRef::Registry(r) => {
            let mut name = format!("{}/{}", r.registry, r.repository);
            if let Some(tag) = &r.tag {
                name.push(':');
                name.push_str(tag);
            }
            name
        }
        layout => layout.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_metadata_shapes_are_read_and_written_back_alike() {
        let image = ImageRef::parse("example.com/app@sha256:0000000000000000000000000000000000000000000000000000000000000000").unwrap();
        let labels = BTreeMap::from([(
            LIFECYCLE_LABEL.to_string(),
            r#"{"run-image":{"top-layer":"sha256:aa","reference":"r"},"stack":{"runImage":{"image":"example.com/run:1"}}}"#.to_string(),
        )]);
        let mut m = LifecycleMetadata::read(&image, &labels).unwrap();
        assert_eq!(m.top_layer, "sha256:aa");
        assert_eq!(m.listed(), ["example.com/run:1"]);
        assert!(m.names(&ImageRef::parse("example.com/run:2").unwrap()));
        assert!(!m.names(&ImageRef::parse("example.com/other:1").unwrap()));
        m.point_at("example.com/run@sha256:bb", &Digest::sha256(b"x"));
        let back: Value = serde_json::from_str(&m.to_json()).unwrap();
        assert_eq!(
            back["run-image"]["top-layer"],
            Digest::sha256(b"x").to_string()
        );
        assert_eq!(back["run-image"]["reference"], "example.com/run@sha256:bb");

        let none = BTreeMap::new();
        assert!(matches!(
            LifecycleMetadata::read(&image, &none),
            Err(RebaseError::MissingMetadata { .. })
        ));
    }
}
