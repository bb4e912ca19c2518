//! `kpackd status [CONFIG]`: each image of kpack.toml (and each the state still holds):
//! its tag, the digest it was last built to, its last build, why, and how long ago.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use engine::planning;
use engine::state::{Build, BuildStatus, State};
use miette::{IntoDiagnostic, WrapErr};
use serde_json::{json, Value};

use super::shared::closed_pipe_is_fine;
use super::Outcome;
use crate::render::builds::{age, build_json, reasons, time_json};
use crate::render::{short, table};

pub fn run(config: &Path, json: bool, state_dir: Option<&Path>) -> miette::Result<Outcome> {
    let config = planner::load(config)?;
    let dir = planning::state_dir(&config, state_dir);
    let state = State::open(&dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("open the state in {}", dir.display()))?;
    let builds = state.builds(None).into_diagnostic()?;
    let recorded = state.recorded().into_diagnostic()?;
    let mut by_image: BTreeMap<&str, Vec<&Build>> = BTreeMap::new();
    for build in &builds {
        by_image.entry(&build.image).or_default().push(build);
    }
    let mut names: Vec<&str> = config.images.keys().map(String::as_str).collect();
    names.extend(recorded.images.keys().map(String::as_str));
    names.sort_unstable();
    names.dedup();

    let mut entries = Vec::new();
    for name in names {
        let history = by_image.get(name).map(Vec::as_slice).unwrap_or_default();
        let last = history.last().copied();
        let last_success = history
            .iter()
            .rev()
            .find(|b| b.status == BuildStatus::Succeeded)
            .copied();
        let tag = config
            .images
            .get(name)
            .map(|i| i.tag.to_string())
            .or_else(|| last.map(|b| b.tag.clone()));
        let triggers = recorded.images.get(name).map_or(0, |r| r.pending_triggers);
        entries.push(Entry {
            name,
            in_config: config.images.contains_key(name),
            tag,
            last,
            last_success,
            triggers,
        });
    }

    let mut stdout = std::io::stdout().lock();
    let written = if json {
        let images: Vec<Value> = entries.iter().map(Entry::json).collect();
        let value = json!({
            "lineage": state.lineage(),
            "serial": state.serial().into_diagnostic()?,
            "images": images,
        });
        serde_json::to_writer_pretty(&mut stdout, &value)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(stdout))
    } else {
        let rows: Vec<Vec<String>> = entries.iter().map(Entry::row).collect();
        write!(
            stdout,
            "{}",
            table(
                &[
                    "IMAGE",
                    "TAG",
                    "DIGEST",
                    "LAST BUILD",
                    "STATUS",
                    "REASONS",
                    "AGE"
                ],
                &rows
            )
        )
    };
    closed_pipe_is_fine(written)
        .into_diagnostic()
        .wrap_err("write the status")?;
    Ok(Outcome::Success)
}

struct Entry<'a> {
    name: &'a str,
    in_config: bool,
    tag: Option<String>,
    last: Option<&'a Build>,
    last_success: Option<&'a Build>,
    triggers: u32,
}

impl Entry<'_> {
    fn row(&self) -> Vec<String> {
        let dash = || "-".to_string();
        let mut status = self.last.map_or_else(
            || "never built".to_string(),
            |b| match &b.failure {
                Some(f) => format!("{} ({})", b.status, f.step),
                None => b.status.to_string(),
            },
        );
        if self.triggers > 0 {
            status.push_str(", triggered");
        }
        if !self.in_config {
            status.push_str(", not in kpack.toml");
        }
        vec![
            self.name.to_string(),
            self.tag.clone().unwrap_or_else(dash),
            self.last_success
                .and_then(|b| b.output.as_ref())
                .map_or_else(dash, |d| short(&d.to_string())),
            self.last
                .map_or_else(dash, |b| format!("#{} {}", b.number, b.action)),
            status,
            self.last.map_or_else(dash, reasons),
            self.last
                .map_or_else(dash, |b| age(b.finished_at.unwrap_or(b.queued_at))),
        ]
    }

    fn json(&self) -> Value {
        json!({
            "image": self.name,
            "in_config": self.in_config,
            "tag": self.tag,
            "digest": self.last_success.and_then(|b| b.output.clone()),
            "built_at": time_json(self.last_success.and_then(|b| b.finished_at)),
            "pending_triggers": self.triggers,
            "last_build": self.last.map(build_json),
        })
    }
}
