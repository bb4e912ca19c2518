//! `kpackd builds [IMAGE]`: the build history the state records, oldest first per image;
//! `kpackd builds --builder [NAME]`: the publishes of builder images.

use std::io::Write;
use std::path::Path;

use engine::state::{Build, State};
use miette::{miette, IntoDiagnostic, WrapErr};
use serde_json::Value;

use super::shared::{closed_pipe_is_fine, state_dir_without_config};
use super::Outcome;
use crate::render::builds::{age, build_json, reasons, short_duration};
use crate::render::publishes::{publish_json, publishes_table};
use crate::render::{self, short};

pub fn run(image: Option<&str>, json: bool, state_dir: Option<&Path>) -> miette::Result<Outcome> {
    let dir = state_dir_without_config(state_dir)?;
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
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let written = if json {
        let list: Vec<Value> = builds.iter().map(build_json).collect();
        serde_json::to_writer_pretty(&mut stdout, &list)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(stdout))
    } else {
        // All builds: the publishes of builder images follow, when there are any.
        let publishes = match image {
            None => state.publishes(None).into_diagnostic()?,
            Some(_) => Vec::new(),
        };
        write!(stdout, "{}", table(&builds)).and_then(|()| {
            if publishes.is_empty() {
                Ok(())
            } else {
                write!(stdout, "\n{}", publishes_table(&publishes))
            }
        })
    };
    closed_pipe_is_fine(written.and_then(|()| stdout.flush()))
        .into_diagnostic()
        .wrap_err("write the build history")?;
    Ok(Outcome::Success)
}

/// `kpackd builds --builder [NAME]`: the publishes of one builder, or of all.
pub fn run_publishes(
    builder: Option<&str>,
    json: bool,
    state_dir: Option<&Path>,
) -> miette::Result<Outcome> {
    let dir = state_dir_without_config(state_dir)?;
    let state = State::open(&dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("open the state in {}", dir.display()))?;
    let publishes = state.publishes(builder).into_diagnostic()?;
    if let (Some(builder), true) = (builder, publishes.is_empty()) {
        return Err(miette!(
            help = "a builder is published when it has a `tag` and `kpackd apply` ran",
            "no publishes recorded for builder `{builder}`"
        ));
    }
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let written = if json {
        let list: Vec<Value> = publishes.iter().map(publish_json).collect();
        serde_json::to_writer_pretty(&mut stdout, &list)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(stdout))
    } else if publishes.is_empty() {
        writeln!(stdout, "No publishes recorded.")
    } else {
        write!(stdout, "{}", publishes_table(&publishes))
    };
    closed_pipe_is_fine(written.and_then(|()| stdout.flush()))
        .into_diagnostic()
        .wrap_err("write the publish history")?;
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
                    .as_ref()
                    .map_or_else(|| "-".to_string(), |d| short(&d.to_string())),
            ]
        })
        .collect();
    render::table(
        &[
            "IMAGE", "BUILD", "ACTION", "STATUS", "REASONS", "QUEUED", "TOOK", "DIGEST",
        ],
        &rows,
    )
}
