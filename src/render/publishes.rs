//! Publishes of builder images as `builds` and `status` show them: a table and JSON.

use engine::state::Publish;
use serde_json::{json, Value};

use super::builds::{age, short_duration, time_json};
use super::{short, table};

/// One publish as `builds --builder --json` and `status --json` show it.
pub fn publish_json(publish: &Publish) -> Value {
    json!({
        "builder": publish.builder,
        "number": publish.number,
        "action": "publish",
        "status": publish.status,
        "reasons": publish.reasons,
        "details": publish.details,
        "inputs": publish.inputs,
        "tag": publish.tag,
        "digest": publish.digest,
        "failure": publish.failure,
        "queued_at": time_json(Some(publish.queued_at)),
        "started_at": time_json(publish.started_at),
        "finished_at": time_json(publish.finished_at),
        "log": publish.log,
    })
}

/// The reasons of a publish, comma-separated.
pub fn publish_reasons(publish: &Publish) -> String {
    if publish.reasons.is_empty() {
        return "-".to_string();
    }
    publish
        .reasons
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The publish history, a row per publish.
pub fn publishes_table(publishes: &[Publish]) -> String {
    let rows: Vec<Vec<String>> = publishes
        .iter()
        .map(|p| {
            vec![
                p.builder.clone(),
                format!("#{}", p.number),
                p.status.to_string(),
                publish_reasons(p),
                age(p.queued_at),
                p.finished_at
                    .zip(p.started_at.or(Some(p.queued_at)))
                    .and_then(|(end, start)| end.duration_since(start).ok())
                    .map_or_else(|| "-".to_string(), short_duration),
                p.digest
                    .as_ref()
                    .map_or_else(|| "-".to_string(), |d| short(&d.to_string())),
            ]
        })
        .collect();
    table(
        &[
            "BUILDER", "PUBLISH", "STATUS", "REASONS", "QUEUED", "TOOK", "DIGEST",
        ],
        &rows,
    )
}
