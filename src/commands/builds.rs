//! `kpackd builds [IMAGE]`: the build history the state records, oldest first per image.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use engine::state::{Build, State};
use miette::{miette, IntoDiagnostic, WrapErr};
use serde_json::{json, Value};

use super::Outcome;

pub fn run(image: Option<&str>, json: bool, state_dir: Option<&Path>) -> miette::Result<Outcome> {
    let dir = super::logs_state_dir(state_dir)?;
    let state = State::open(&dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("open the state in {}", dir.display()))?;
    if let Some(image) = image {
        let known = state.images().into_diagnostic()?;
        if !known.iter().any(|k| k == image) {
            let listed = if known.is_empty() {
                "the state records no images yet".to_string()
            } else {
                format!("the state records: {}", known.join(", "))
            };
            return Err(miette!(
                help = listed,
                "no builds recorded for image `{image}`"
            ));
        }
    }
    let builds = state.builds(image).into_diagnostic()?;
    let mut stdout = std::io::stdout().lock();
    let written = if json {
        let list: Vec<Value> = builds.iter().map(build_json).collect();
        serde_json::to_writer_pretty(&mut stdout, &list)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(stdout))
    } else {
        write!(stdout, "{}", table(&builds))
    };
    super::plan::closed_pipe_is_fine(written)
        .into_diagnostic()
        .wrap_err("write the build history")?;
    Ok(Outcome::Success)
}

fn table(builds: &[Build]) -> String {
    if builds.is_empty() {
        return "No builds recorded.\n".to_string();
    }
    let rows: Vec<Vec<String>> = builds
        .iter()
        .map(|b| {
            vec![
                b.image.clone(),
                format!("#{}", b.number),
                b.action.to_string(),
                match &b.failure {
                    Some(f) => format!("{} ({})", b.status, f.step),
                    None => b.status.to_string(),
                },
                reasons(b),
                age(b.queued_at),
                b.finished_at
                    .zip(b.started_at.or(Some(b.queued_at)))
                    .and_then(|(end, start)| end.duration_since(start).ok())
                    .map_or_else(|| "-".to_string(), short_duration),
                b.output
                    .as_deref()
                    .map_or_else(|| "-".to_string(), planner::plan::short),
            ]
        })
        .collect();
    super::status::render_table(
        &[
            "IMAGE", "BUILD", "ACTION", "STATUS", "REASONS", "QUEUED", "TOOK", "DIGEST",
        ],
        &rows,
    )
}

pub(super) fn reasons(build: &Build) -> String {
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
pub(super) fn age(at: SystemTime) -> String {
    match SystemTime::now().duration_since(at) {
        Ok(elapsed) => format!("{} ago", short_duration(elapsed)),
        Err(_) => "just now".to_string(),
    }
}

pub(super) fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

pub(super) fn time_json(at: Option<SystemTime>) -> Value {
    at.map_or(Value::Null, |t| {
        Value::String(humantime::format_rfc3339_millis(t).to_string())
    })
}

/// One build as `builds --json` and `status --json` show it.
pub(super) fn build_json(build: &Build) -> Value {
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
        "failure": build.failure.as_ref().map(|f| json!({"step": f.step, "message": f.message})),
        "queued_at": time_json(Some(build.queued_at)),
        "started_at": time_json(build.started_at),
        "finished_at": time_json(build.finished_at),
        "log": build.log,
    })
}
