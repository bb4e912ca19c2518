//! The rebased image config's labels and history: the new base's, then the app's.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::oci::ImageConfig;

use super::BASE_LABEL_PREFIXES;

/// The app image's labels with the base's (`io.buildpacks.base.*`,
/// `io.buildpacks.stack.*`) replaced by the new run image's.
pub(super) fn synced_labels(
    labels: &BTreeMap<String, String>,
    run_labels: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let is_base = |k: &String| BASE_LABEL_PREFIXES.iter().any(|p| k.starts_with(p));
    labels
        .iter()
        .filter(|(k, _)| !is_base(k))
        .chain(run_labels.iter().filter(|(k, _)| is_base(k)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The new base's history, then the app's history above the old top layer. History
/// entries go with layers: each non-empty entry, with the `empty_layer` entries after
/// it, belongs to its layer (entries before the first layer to the first). A side whose
/// history does not match its layers contributes one blank entry per layer; when
/// neither matches, the history is left out.
pub(super) fn rebased_history(app: &ImageConfig, top: usize, run: &ImageConfig) -> Vec<Value> {
    let app_groups = history_by_layer(&app.history, app.rootfs.diff_ids.len());
    let run_groups = history_by_layer(&run.history, run.rootfs.diff_ids.len());
    if app_groups.is_none() && run_groups.is_none() {
        return Vec::new();
    }
    let blank = |n: usize| vec![vec![Value::Object(Map::new())]; n];
    let app_groups = app_groups.unwrap_or_else(|| blank(app.rootfs.diff_ids.len()));
    let run_groups = run_groups.unwrap_or_else(|| blank(run.rootfs.diff_ids.len()));
    run_groups
        .into_iter()
        .chain(app_groups.into_iter().skip(top + 1))
        .flatten()
        .collect()
}

/// History entries grouped by the layer they belong to, when the history has exactly
/// one non-empty entry per layer.
pub(super) fn history_by_layer(history: &[Value], layers: usize) -> Option<Vec<Vec<Value>>> {
    let is_empty = |h: &Value| {
        h.get("empty_layer")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    if layers == 0 || history.iter().filter(|h| !is_empty(h)).count() != layers {
        return None;
    }
    let mut groups: Vec<Vec<Value>> = Vec::with_capacity(layers);
    let mut leading = Vec::new();
    for entry in history {
        match groups.last_mut() {
            Some(group) if is_empty(entry) => group.push(entry.clone()),
            None if is_empty(entry) => leading.push(entry.clone()),
            _ => {
                let mut group = std::mem::take(&mut leading);
                group.push(entry.clone());
                groups.push(group);
            }
        }
    }
    Some(groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use imageref::Digest;
    use serde_json::json;

    fn history(entries: &[(&str, bool)]) -> Vec<Value> {
        entries
            .iter()
            .map(|(by, empty)| json!({"created_by": by, "empty_layer": empty}))
            .collect()
    }

    fn created_by(history: &[Value]) -> Vec<&str> {
        history
            .iter()
            .map(|h| h["created_by"].as_str().unwrap_or("{}"))
            .collect()
    }

    fn config(history: Vec<Value>, layers: usize) -> ImageConfig {
        ImageConfig {
            history,
            rootfs: crate::oci::RootFs {
                kind: "layers".into(),
                diff_ids: (0..layers)
                    .map(|i| Digest::sha256(i.to_string().as_bytes()))
                    .collect(),
            },
            ..Default::default()
        }
    }

    #[test]
    fn history_swaps_the_base_part() {
        let app = config(
            history(&[
                ("old base", false),
                ("CMD old", true),
                ("launcher", false),
                ("app", false),
                ("LABEL", true),
            ]),
            3,
        );
        let run = config(
            history(&[("ENV", true), ("new base", false), ("patch", false)]),
            2,
        );
        assert_eq!(
            created_by(&rebased_history(&app, 0, &run)),
            ["ENV", "new base", "patch", "launcher", "app", "LABEL"]
        );
    }

    #[test]
    fn history_that_does_not_match_the_layers_is_padded_or_left_out() {
        let app = config(Vec::new(), 3);
        let run = config(history(&[("new base", false)]), 1);
        assert_eq!(
            created_by(&rebased_history(&app, 0, &run)),
            ["new base", "{}", "{}"]
        );
        assert!(rebased_history(&app, 0, &config(Vec::new(), 1)).is_empty());
    }

    #[test]
    fn base_labels_come_from_the_new_run_image() {
        let labels = BTreeMap::from([
            (
                "io.buildpacks.base.maintainer".to_string(),
                "old".to_string(),
            ),
            ("io.buildpacks.stack.id".to_string(), "s".to_string()),
            ("app".to_string(), "kept".to_string()),
        ]);
        let run = BTreeMap::from([
            ("io.buildpacks.base.released".to_string(), "new".to_string()),
            ("io.buildpacks.stack.id".to_string(), "s".to_string()),
            ("other".to_string(), "not copied".to_string()),
        ]);
        let synced = synced_labels(&labels, &run);
        assert_eq!(
            synced.keys().collect::<Vec<_>>(),
            [
                "app",
                "io.buildpacks.base.released",
                "io.buildpacks.stack.id"
            ]
        );
    }
}
