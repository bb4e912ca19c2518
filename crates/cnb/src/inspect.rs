//! What an image's CNB labels say, for `kpackd inspect`: its stack, buildpacks, run
//! image, processes, source and builder metadata. Malformed parts are left out rather
//! than failing an inspection.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::labels::{
    BUILDER_METADATA as BUILDER_LABEL, BUILD_METADATA as BUILD_LABEL,
    LIFECYCLE_METADATA as LIFECYCLE_LABEL, PROJECT_METADATA as PROJECT_LABEL,
    REBASABLE as REBASABLE_LABEL,
};

/// What the CNB labels say; each part is absent when its label is.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CnbMetadata {
    /// The stack (base) id: `io.buildpacks.base.id`, or the legacy
    /// `io.buildpacks.stack.id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack_id: Option<String>,
    /// `io.buildpacks.rebasable`, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebasable: Option<bool>,
    /// The buildpacks that built the image, in order.
    pub buildpacks: Vec<BuildpackInfo>,
    /// The run image the app was built on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_image: Option<RunImageInfo>,
    /// The processes the image can start.
    pub processes: Vec<ProcessInfo>,
    /// The process type the image starts by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_process: Option<String>,
    /// The launcher's version and source, as the lifecycle metadata records them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launcher: Option<Value>,
    /// Where the app came from (`io.buildpacks.project.metadata`'s `source`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Value>,
    /// For a CNB builder image, what `io.buildpacks.builder.metadata` says (description,
    /// stack, lifecycle, buildpacks, created by).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builder: Option<Value>,
}

/// A buildpack that built the image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildpackInfo {
    /// Its id.
    pub id: String,
    /// Its version.
    #[serde(default)]
    pub version: String,
    /// Where to read about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
}

/// The run image an app image was built on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunImageInfo {
    /// The diffID of the run image's top layer: where a rebase cuts.
    #[serde(default)]
    pub top_layer: String,
    /// The run image the app was built on, pinned (`repo@sha256:…`).
    #[serde(default)]
    pub reference: String,
    /// The run image as the stack names it, and its mirrors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Other places the run image can be pulled from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
}

/// A process the image can start.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessInfo {
    /// The process type: `web`, `worker`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The command.
    pub command: Vec<String>,
    /// Its arguments, which the user may override.
    pub args: Vec<String>,
    /// Whether the image starts it by default.
    pub default: bool,
}

impl CnbMetadata {
    /// Reads the CNB labels; malformed parts are left out rather than failing an
    /// inspection.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Option<CnbMetadata> {
        let json = |key: &str| -> Option<Value> {
            let text = labels.get(key)?;
            serde_json::from_str(text)
                .inspect_err(|e| tracing::warn!(label = key, error = %e, "label is not JSON"))
                .ok()
        };
        let lifecycle = json(LIFECYCLE_LABEL);
        let build = json(BUILD_LABEL);
        let project = json(PROJECT_LABEL);
        let builder = json(BUILDER_LABEL);
        let stack_id = crate::labels::stack_id(labels).cloned();
        let rebasable = labels.get(REBASABLE_LABEL).map(|v| v != "false");
        if lifecycle.is_none()
            && build.is_none()
            && project.is_none()
            && builder.is_none()
            && stack_id.is_none()
        {
            return None;
        }
        let field = |v: &Option<Value>, key: &str| v.as_ref().and_then(|v| v.get(key)).cloned();
        let buildpacks = field(&build, "buildpacks")
            .and_then(|v| serde_json::from_value(v).ok())
            .or_else(|| {
                // The lifecycle label names a buildpack's id `key`.
                field(&lifecycle, "buildpacks").and_then(|v| {
                    let list: Vec<Value> = serde_json::from_value(v).ok()?;
                    list.into_iter()
                        .map(|b| {
                            Some(BuildpackInfo {
                                id: b.get("key")?.as_str()?.to_string(),
                                version: b
                                    .get("version")
                                    .and_then(Value::as_str)
                                    .unwrap_or_default()
                                    .to_string(),
                                homepage: None,
                            })
                        })
                        .collect()
                })
            })
            .unwrap_or_default();
        let processes = field(&build, "processes")
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(process)
            .collect();
        Some(CnbMetadata {
            stack_id,
            rebasable,
            buildpacks,
            run_image: field(&lifecycle, "runImage").and_then(|v| serde_json::from_value(v).ok()),
            processes,
            default_process: field(&build, "buildpack-default-process-type")
                .and_then(|v| v.as_str().map(str::to_string)),
            launcher: field(&build, "launcher"),
            source: project.and_then(|p| p.get("source").cloned()),
            builder,
        })
    }
}

/// A process from the build label; `command` is a string in older platform APIs and
/// a list in newer ones.
fn process(v: &Value) -> Option<ProcessInfo> {
    let strings = |v: Option<&Value>| -> Vec<String> {
        match v {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    };
    Some(ProcessInfo {
        kind: v.get("type")?.as_str()?.to_string(),
        command: strings(v.get("command")),
        args: strings(v.get("args")),
        default: v.get("default").and_then(Value::as_bool).unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::{BASE_ID as BASE_ID_LABEL, STACK_ID as LEGACY_STACK_ID_LABEL};

    #[test]
    fn reads_cnb_labels() {
        let labels = BTreeMap::from([
            (
                LIFECYCLE_LABEL.to_string(),
                r#"{"buildpacks":[{"key":"example/node","version":"1.0.0"}],"runImage":{"topLayer":"sha256:aa","reference":"reg/run@sha256:bb"}}"#.to_string(),
            ),
            (
                BUILD_LABEL.to_string(),
                r#"{"processes":[{"type":"web","command":["node","app.js"],"args":["--port"],"default":true},{"type":"worker","command":"run"}],"launcher":{"version":"0.1.0"},"buildpack-default-process-type":"web"}"#.to_string(),
            ),
            (BASE_ID_LABEL.to_string(), "io.kpackd.stacks.test".to_string()),
            (
                PROJECT_LABEL.to_string(),
                r#"{"source":{"type":"git","version":{"commit":"abc"}}}"#.to_string(),
            ),
        ]);
        let cnb = CnbMetadata::from_labels(&labels).unwrap();
        assert_eq!(cnb.buildpacks[0].id, "example/node");
        assert_eq!(cnb.run_image.unwrap().top_layer, "sha256:aa");
        assert_eq!(cnb.processes[0].command, ["node", "app.js"]);
        assert_eq!(cnb.processes[1].command, ["run"]);
        assert_eq!(cnb.source.unwrap()["version"]["commit"], "abc");
        assert_eq!(cnb.default_process.as_deref(), Some("web"));
        assert_eq!(cnb.stack_id.as_deref(), Some("io.kpackd.stacks.test"));
        assert_eq!(cnb.rebasable, None);
        assert!(CnbMetadata::from_labels(&BTreeMap::new()).is_none());

        let builder = BTreeMap::from([
            (
                LEGACY_STACK_ID_LABEL.to_string(),
                "io.buildpacks.stacks.jammy".to_string(),
            ),
            (
                BUILDER_LABEL.to_string(),
                r#"{"description":"a builder","createdBy":{"name":"kpackd"}}"#.to_string(),
            ),
            (REBASABLE_LABEL.to_string(), "false".to_string()),
        ]);
        let cnb = CnbMetadata::from_labels(&builder).unwrap();
        assert_eq!(cnb.stack_id.as_deref(), Some("io.buildpacks.stacks.jammy"));
        assert_eq!(cnb.builder.unwrap()["description"], "a builder");
        assert_eq!(cnb.rebasable, Some(false));
    }
}
