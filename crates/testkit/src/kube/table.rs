//! Server-side printing: the `Table` kubectl asks for (`Accept: …;as=Table;…`) to print
//! `kubectl get` without knowing the kinds, with the columns the real server gives pods.

use std::time::SystemTime;

use serde_json::{json, Value};

use super::store::Kind;

/// Whether the client asked for a Table.
pub(crate) fn wanted(accept: &str) -> bool {
    accept.contains("as=Table")
}

/// The Table of `objects`, listed at `resource_version`.
pub(crate) fn table(kind: Kind, objects: &[Value], resource_version: u64) -> Value {
    let column = |name: &str, kind: &str, format: &str, description: &str| json!({"name": name, "type": kind, "format": format, "description": description, "priority": 0});
    let mut columns = vec![column(
        "Name",
        "string",
        "name",
        "Name must be unique within a namespace.",
    )];
    match kind {
        Kind::Pod => {
            columns.push(column(
                "Ready",
                "string",
                "",
                "The aggregate readiness state of this pod for accepting traffic.",
            ));
            columns.push(column(
                "Status",
                "string",
                "",
                "The aggregate status of the containers in this pod.",
            ));
            columns.push(column(
                "Restarts",
                "string",
                "",
                "The number of times the containers in this pod have been restarted.",
            ));
        }
        Kind::Secret => {
            columns.push(column("Type", "string", "", "The type of the secret"));
            columns.push(column(
                "Data",
                "string",
                "",
                "The number of entries in the data",
            ));
        }
        Kind::Namespace => {
            columns.push(column(
                "Status",
                "string",
                "",
                "The status of the namespace",
            ));
        }
    }
    columns.push(column(
        "Age",
        "string",
        "",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    ));
    let rows: Vec<Value> = objects.iter().map(|o| row(kind, o)).collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version.to_string()},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

fn row(kind: Kind, object: &Value) -> Value {
    let mut cells = vec![object["metadata"]["name"].clone()];
    match kind {
        Kind::Pod => {
            let statuses = object["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let total = object["spec"]["containers"].as_array().map_or(0, Vec::len);
            let ready = statuses.iter().filter(|s| s["ready"] == true).count();
            cells.push(json!(format!("{ready}/{total}")));
            cells.push(json!(pod_status(object)));
            cells.push(json!("0"));
        }
        Kind::Secret => {
            cells.push(object["type"].clone());
            cells.push(json!(object["data"].as_object().map_or(0, |d| d.len())));
        }
        Kind::Namespace => cells.push(object["status"]["phase"].clone()),
    }
    cells.push(json!(age(object["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap_or_default())));
    json!({
        "cells": cells,
        "object": {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object["metadata"],
        },
    })
}

/// What kubectl shows as a pod's STATUS: Terminating, the pod's reason, the container's
/// waiting or terminated reason, else the phase.
fn pod_status(pod: &Value) -> String {
    if !pod["metadata"]["deletionTimestamp"].is_null() {
        return "Terminating".into();
    }
    if let Some(reason) = pod["status"]["reason"].as_str() {
        return reason.into();
    }
    let state = &pod["status"]["containerStatuses"][0]["state"];
    state["waiting"]["reason"]
        .as_str()
        .or_else(|| state["terminated"]["reason"].as_str())
        .or_else(|| pod["status"]["phase"].as_str())
        .unwrap_or("Unknown")
        .to_string()
}

/// `12s`, `5m3s`, `2h`, `3d`, as kubectl prints ages.
fn age(created: &str) -> String {
    let Ok(created) = humantime::parse_rfc3339(created) else {
        return "<unknown>".into();
    };
    let seconds = SystemTime::now()
        .duration_since(created)
        .map_or(0, |d| d.as_secs());
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}
