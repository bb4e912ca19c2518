//! Arbitrary bytes as the value of every JSON `io.buildpacks.*` label kpackd reads, and
//! as the names that labels carry. Nothing may panic; a label that parses serializes and
//! parses back to the same value; a name that parses is exactly its input and, where it
//! becomes a path component, holds no `/`, NUL, and is not `.` or `..`.

#![no_main]

use std::collections::BTreeMap;
use std::fmt::Debug;

use cnb::inspect::CnbMetadata;
use cnb::labels::{self, BuilderMetadata, BuildpackLayers, LayersMetadata};
use cnb::{BuildpackId, BuildpackVersion, LayerName, ProcessType};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Parses `text` as label `key`; what parses must survive a round trip: written and
/// read back, it writes the same JSON again. (Equality with the first parse is too
/// strong: serde_json reads a number beyond 64 bits, or with a fraction, as the
/// nearest f64, so the first write may already round it.)
fn label<T>(key: &'static str, text: &str) -> Option<T>
where
    T: DeserializeOwned + Serialize + PartialEq + Debug,
{
    let value: T = labels::parse(key, text).ok()?;
    let json = serde_json::to_string(&value).expect("a parsed label serializes");
    let again: T = labels::parse(key, &json)
        .unwrap_or_else(|e| panic!("{key}: {json} does not parse back: {e}"));
    let json_again = serde_json::to_string(&again).expect("a parsed label serializes");
    assert_eq!(json_again, json, "{key}: round trip through {json}");
    Some(value)
}

/// A name that becomes a single path component.
fn component(s: &str) {
    assert!(!s.is_empty() && s != "." && s != "..", "{s:?} accepted");
    assert!(!s.contains(['/', '\0']), "{s:?} accepted");
}

fn names(s: &str) {
    if let Ok(id) = BuildpackId::parse(s) {
        assert_eq!(id.as_str(), s);
        assert!(!s.contains('\0'));
        assert!(s
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != ".."));
        component(&id.dir_name());
        let json = serde_json::to_string(&id).expect("serializes");
        assert_eq!(
            serde_json::from_str::<BuildpackId>(&json).expect("parses back"),
            id
        );
    }
    if let Ok(v) = BuildpackVersion::parse(s) {
        assert_eq!(v.as_str(), s);
        component(&v);
    }
    if let Ok(n) = LayerName::parse(s) {
        assert_eq!(n.as_str(), s);
        component(&n);
    }
    if let Ok(t) = ProcessType::parse(s) {
        assert_eq!(t.as_str(), s);
        component(&t);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    names(text);
    label::<LayersMetadata>(labels::LIFECYCLE_METADATA, text);
    label::<LayersMetadata>(labels::CACHE_METADATA, text);
    label::<BuilderMetadata>(labels::BUILDER_METADATA, text);
    if let Some(layers) = label::<BuildpackLayers>(labels::BUILDPACK_LAYERS, text) {
        for (id, versions) in &layers {
            component(&id.dir_name());
            for version in versions.keys() {
                component(version);
            }
        }
    }
    // `inspect` reads the same text through its lenient reader.
    let mut all = BTreeMap::new();
    for key in [
        labels::LIFECYCLE_METADATA,
        labels::BUILD_METADATA,
        labels::PROJECT_METADATA,
        labels::BUILDER_METADATA,
    ] {
        all.insert(key.to_string(), text.to_string());
    }
    all.insert(labels::REBASABLE.to_string(), text.to_string());
    if let Some(metadata) = CnbMetadata::from_labels(&all) {
        serde_json::to_string(&metadata).expect("inspect output serializes");
    }
});
