//! `kpackd status [CONFIG]`: each image of kpack.toml (and each the state still holds):
//! its tag, the digest it was last built to, its last build, why, and how long ago; then
//! each builder kpackd publishes, the same way.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use engine::planning;
use engine::state::{Build, BuildStatus, Publish, PublishStatus, State};
use miette::{IntoDiagnostic, WrapErr};
use planner::diff::Recorded;
use serde_json::{json, Value};

use super::shared::closed_pipe_is_fine;
use super::Outcome;
use crate::render::builds::{age, build_json, reasons, time_json};
use crate::render::publishes::{publish_json, publish_reasons};
use crate::render::{short, table};

pub fn run(config: &Path, json: bool, state_dir: Option<&Path>) -> miette::Result<Outcome> {
    let config = planner::load(config)?;
    let dir = planning::state_dir(&config, state_dir);
    let state = State::open(&dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("open the state in {}", dir.display()))?;
    let builds = state.builds(None).into_diagnostic()?;
    let recorded = state.recorded().into_diagnostic()?;
    let entries = image_entries(&config, &builds, &recorded);
    let builders = builder_entries(&config, state.publishes(None).into_diagnostic()?);
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let written = if json {
        let images: Vec<Value> = entries.iter().map(Entry::json).collect();
        let mut value = json!({
            "lineage": state.lineage(),
            "serial": state.serial().into_diagnostic()?,
            "images": images,
        });
        if !builders.is_empty() {
            value["builders"] = builders.iter().map(BuilderEntry::json).collect();
        }
        serde_json::to_writer_pretty(&mut stdout, &value)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(stdout))
    } else {
        write_tables(&mut stdout, &entries, &builders)
    };
    closed_pipe_is_fine(written.and_then(|()| stdout.flush()))
        .into_diagnostic()
        .wrap_err("write the status")?;
    Ok(Outcome::Success)
}

/// One entry per image of `config` or of the state, by name.
fn image_entries<'a>(
    config: &'a planner::Config,
    builds: &'a [Build],
    recorded: &'a Recorded,
) -> Vec<Entry<'a>> {
    let mut by_image: BTreeMap<&str, Vec<&Build>> = BTreeMap::new();
    for build in builds {
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

    entries
}

/// The table of images, then the table of builders when kpackd publishes any.
fn write_tables(
    stdout: &mut impl Write,
    entries: &[Entry<'_>],
    builders: &[BuilderEntry],
) -> std::io::Result<()> {
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
    .and_then(|()| {
        if builders.is_empty() {
            return Ok(());
        }
        let rows: Vec<Vec<String>> = builders.iter().map(BuilderEntry::row).collect();
        write!(
            stdout,
            "\n{}",
            table(
                &[
                    "BUILDER",
                    "TAG",
                    "DIGEST",
                    "LAST PUBLISH",
                    "STATUS",
                    "REASONS",
                    "AGE"
                ],
                &rows
            )
        )
    })
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

/// A builder kpackd publishes, or one whose publishes the state still holds.
struct BuilderEntry {
    name: String,
    in_config: bool,
    tag: Option<String>,
    last: Option<Publish>,
    last_success: Option<Publish>,
}

/// One entry per published builder of kpack.toml and per builder with publishes.
fn builder_entries(config: &planner::Config, publishes: Vec<Publish>) -> Vec<BuilderEntry> {
    let mut by_builder: BTreeMap<String, Vec<Publish>> = BTreeMap::new();
    for publish in publishes {
        by_builder
            .entry(publish.builder.clone())
            .or_default()
            .push(publish);
    }
    for builder in config.builders.values().filter(|b| b.publishes()) {
        by_builder.entry(builder.name.clone()).or_default();
    }
    by_builder
        .into_iter()
        .map(|(name, history)| {
            let published = config.builders.get(&name).filter(|b| b.publishes());
            let last_success = history
                .iter()
                .rev()
                .find(|p| p.status == PublishStatus::Succeeded)
                .cloned();
            let last = history.last().cloned();
            BuilderEntry {
                in_config: published.is_some(),
                tag: published
                    .and_then(|b| b.tag.as_ref())
                    .map(ToString::to_string)
                    .or_else(|| last.as_ref().map(|p| p.tag.clone())),
                name,
                last,
                last_success,
            }
        })
        .collect()
}

impl BuilderEntry {
    fn row(&self) -> Vec<String> {
        let dash = || "-".to_string();
        let mut status = self
            .last
            .as_ref()
            .map_or_else(|| "never published".to_string(), |p| p.status.to_string());
        if !self.in_config {
            status.push_str(", not published by kpack.toml");
        }
        vec![
            self.name.clone(),
            self.tag.clone().unwrap_or_else(dash),
            self.last_success
                .as_ref()
                .and_then(|p| p.digest.as_ref())
                .map_or_else(dash, |d| short(&d.to_string())),
            self.last
                .as_ref()
                .map_or_else(dash, |p| format!("#{} publish", p.number)),
            status,
            self.last.as_ref().map_or_else(dash, publish_reasons),
            self.last
                .as_ref()
                .map_or_else(dash, |p| age(p.finished_at.unwrap_or(p.queued_at))),
        ]
    }

    fn json(&self) -> Value {
        json!({
            "builder": self.name,
            "in_config": self.in_config,
            "tag": self.tag,
            "digest": self.last_success.as_ref().and_then(|p| p.digest.clone()),
            "published_at": time_json(self.last_success.as_ref().and_then(|p| p.finished_at)),
            "last_publish": self.last.as_ref().map(publish_json),
        })
    }
}
