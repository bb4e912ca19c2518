//! A build as `builds` and `status` show it: its reasons, ages and durations in short
//! form, and its JSON.

use std::time::{Duration, SystemTime};

use engine::state::Build;
use serde_json::{json, Value};

pub fn reasons(build: &Build) -> String {
    if build.reasons.is_empty() {
        return "-".to_string();
    }
    build
        .reasons
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// `12s ago`, `5m ago`, `3h ago`, `2d ago`.
pub fn age(at: SystemTime) -> String {
    match SystemTime::now().duration_since(at) {
        Ok(elapsed) => format!("{} ago", short_duration(elapsed)),
        Err(_) => "just now".to_string(),
    }
}

pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

pub fn time_json(at: Option<SystemTime>) -> Value {
    at.map_or(Value::Null, |t| {
        Value::String(humantime::format_rfc3339_millis(t).to_string())
    })
}

/// One build as `builds --json` and `status --json` show it.
pub fn build_json(build: &Build) -> Value {
    json!({
        "image": build.image,
        "number": build.number,
        "action": build.action,
        "status": build.status,
        "reasons": build.reasons,
        "details": build.details,
        "inputs": build.inputs,
        "tag": build.tag,
        "buildpacks_used": build.buildpacks_used,
        "rebasable": build.rebasable,
        "output": build.output,
        "failure": build.failure.as_ref().map(|f| json!({"step": f.step, "message": f.message, "kind": f.kind.as_str()})),
        "queued_at": time_json(Some(build.queued_at)),
        "started_at": time_json(build.started_at),
        "finished_at": time_json(build.finished_at),
        "log": build.log,
    })
}
