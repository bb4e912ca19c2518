//! A pack `builder.toml`: its buildpacks become a store, its `[stack]` (or `[build]` and
//! `[[run.images]]`) a stack, and its `[[order]]` a builder on the two.

use std::path::Path;

use toml::{Table, Value};

use super::error::InputError;
use super::model::{Builder, Fleet, GroupEntry, Origin, Ref, Stack, Store, StoreEntry, Table as T};
use super::{kpackd_name, relative_to, Input, Target};

/// Whether `table` is a builder.toml.
pub fn is_builder(table: &Table) -> bool {
    ["buildpacks", "order", "stack", "run", "lifecycle"]
        .iter()
        .any(|k| table.contains_key(*k))
        || table
            .get("build")
            .and_then(Value::as_table)
            .is_some_and(|b| b.contains_key("image"))
}

/// Reads the builder.toml `input`; its stack, store and builder are named after its
/// directory.
pub fn read(
    input: &Input,
    index: usize,
    table: &Table,
    target: &Target,
    fleet: &mut Fleet,
) -> Result<(), InputError> {
    let dir_name = input
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|_| input.name != "-")
        .unwrap_or_else(|| "builder".to_string());
    let wanted = kpackd_name(&dir_name, "builder");
    let origin = Origin::new("builder.toml", &index.to_string(), None);
    let (stack, stack_notes) = stack(input, table)?;
    let (store, store_notes) = store(input, table, target);
    let order = order(input, table)?;
    let builder_notes = builder_notes(table);
    let mut stack_table = T::new(origin.clone(), wanted.clone(), stack);
    stack_table.heading = Some(format!("[stack] of {}", input.name));
    stack_table.notes = stack_notes;
    let mut store_table = T::new(origin.clone(), wanted.clone(), store);
    store_table.heading = Some(format!("[[buildpacks]] of {}", input.name));
    store_table.notes = store_notes;
    let builder = Builder::Assembled {
        stack: Ref::new(origin.clone()),
        store: Some(Ref::new(origin.clone())),
        order,
        tag: None,
    };
    let mut builder_table = T::new(origin, wanted, builder);
    builder_table.heading = Some(format!("[[order]] of {}", input.name));
    builder_table.notes = builder_notes;
    fleet.stacks.push(stack_table);
    fleet.stores.push(store_table);
    fleet.builders.push(builder_table);
    Ok(())
}

/// The store of `[[buildpacks]]`, with notes on those it cannot carry over.
fn store(input: &Input, table: &Table, target: &Target) -> (Store, Vec<String>) {
    let mut store = Store {
        buildpacks: Vec::new(),
    };
    let mut store_notes = Vec::new();
    for bp in array(table, "buildpacks") {
        let Some(bp) = bp.as_table() else { continue };
        let id = str_of(bp, "id").unwrap_or("?");
        let uri = str_of(bp, "uri").or_else(|| str_of(bp, "image"));
        let Some(uri) = uri else {
            store_notes.push(format!("buildpacks {id}: no `uri`, not carried over"));
            continue;
        };
        match buildpack_entry(uri, &input.dir, &target.dir) {
            Ok(entry) => {
                if !store.buildpacks.contains(&entry) {
                    store.buildpacks.push(entry);
                }
            }
            Err(reason) => store_notes.push(format!("buildpacks {id} `{uri}`: {reason}")),
        }
    }
    (store, store_notes)
}

/// The groups of `[[order]]`; a builder.toml without one is an error.
fn order(input: &Input, table: &Table) -> Result<Vec<Vec<GroupEntry>>, InputError> {
    let mut order = Vec::new();
    for group in array(table, "order") {
        let mut entries = Vec::new();
        for entry in group
            .get("group")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(id) = entry.get("id").and_then(Value::as_str) else {
                return Err(
                    InputError::new(input, "an `[[order.group]]` entry without `id`")
                        .help("each group entry names a buildpack id"),
                );
            };
            entries.push(GroupEntry {
                id: Some(id.to_string()),
                version: entry
                    .get("version")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                optional: entry
                    .get("optional")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                buildpack: None,
            });
        }
        if !entries.is_empty() {
            order.push(entries);
        }
    }
    if order.is_empty() {
        return Err(
            InputError::new(input, format!("{} has no `[[order]]`", input.name)).help(
                "a builder.toml lists the groups of buildpacks to detect with, under [[order]]",
            ),
        );
    }
    Ok(order)
}

/// Notes on the builder.toml keys a kpackd builder has no place for.
fn builder_notes(table: &Table) -> Vec<String> {
    let mut builder_notes = Vec::new();
    for (key, value) in table {
        let reason = match key.as_str() {
            "buildpacks" | "order" | "stack" | "run" | "description" => continue,
            "build" => {
                let build = value.as_table();
                for (k, v) in build.into_iter().flatten() {
                    match k.as_str() {
                        "image" => {}
                        "env" => builder_notes.push(format!("build.env {}: kpackd has no builder-wide env; give each image its `env`", summary(v))),
                        _ => builder_notes.push(format!("build.{k} {}: not known to kpackd import", summary(v))),
                    }
                }
                continue;
            }
            "lifecycle" => "kpackd runs its own lifecycle; none is needed",
            "targets" => "kpackd builds for one platform, `platform` in [kpackd] (the machine's own by default)",
            "extensions" | "order-extensions" => "kpackd does not run image extensions",
            "system" => "kpackd has no system buildpacks; put them in the order's groups",
            _ => "not known to kpackd import",
        };
        builder_notes.push(format!("{key} {}: {reason}", summary(value)));
    }
    builder_notes
}

/// The stack of `[stack]`, or of `[build] image` and `[[run.images]]`, with notes.
fn stack(input: &Input, table: &Table) -> Result<(Stack, Vec<String>), InputError> {
    let mut notes = Vec::new();
    if let Some(stack) = table.get("stack").and_then(Value::as_table) {
        let get = |k: &str| str_of(stack, k).map(str::to_string);
        let (Some(build_image), Some(run_image)) = (get("build-image"), get("run-image")) else {
            return Err(InputError::new(
                input,
                "`[stack]` needs `build-image` and `run-image`",
            ));
        };
        for (k, v) in stack {
            if !["id", "build-image", "run-image", "run-image-mirrors"].contains(&k.as_str()) {
                notes.push(format!(
                    "stack.{k} {}: not known to kpackd import",
                    summary(v)
                ));
            }
        }
        return Ok((
            Stack {
                build_image,
                run_image,
                run_image_mirrors: strings(stack.get("run-image-mirrors")),
                id: get("id"),
            },
            notes,
        ));
    }
    let build_image = table
        .get("build")
        .and_then(|b| b.get("image"))
        .and_then(Value::as_str);
    let run_images = table
        .get("run")
        .and_then(|r| r.get("images"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let first_run = run_images
        .first()
        .and_then(|r| r.get("image"))
        .and_then(Value::as_str);
    let (Some(build_image), Some(run_image)) = (build_image, first_run) else {
        return Err(InputError::new(input, format!("{} names no build and run image", input.name))
            .help("write `[stack]` with `build-image` and `run-image`, or `[build] image` and `[[run.images]] image`"));
    };
    for other in run_images.iter().skip(1) {
        notes.push(format!(
            "run.images {}: kpackd stacks have one run image (and its mirrors)",
            summary(other.get("image").unwrap_or(other))
        ));
    }
    Ok((
        Stack {
            build_image: build_image.to_string(),
            run_image: run_image.to_string(),
            run_image_mirrors: strings(run_images.first().and_then(|r| r.get("mirrors"))),
            id: None,
        },
        notes,
    ))
}

/// A store entry for a buildpack `uri`, or why there is none.
fn buildpack_entry(uri: &str, input_dir: &Path, output_dir: &Path) -> Result<StoreEntry, String> {
    if let Some(image) = uri.strip_prefix("docker://") {
        return Ok(StoreEntry::Image(image.trim_start_matches('/').to_string()));
    }
    if uri.starts_with("urn:cnb:registry:") {
        return Err("kpackd does not read the buildpack registry; name the buildpackage image instead, `{ image = \"<ref>\" }`".to_string());
    }
    if uri.starts_with("urn:cnb:builder:") {
        return Err(
            "a buildpack from the builder pack runs on; kpackd has no such builder".to_string(),
        );
    }
    if uri.starts_with("https://") || uri.starts_with("http://") {
        return Err("kpackd does not download buildpack archives; unpack it into a directory, or use its buildpackage image".to_string());
    }
    let path = uri.strip_prefix("file://").unwrap_or(uri);
    let looks_like_path = path.starts_with('.') || path.starts_with('/') || !path.contains(':');
    if looks_like_path {
        let full = planner::normalize_path(&input_dir.join(path));
        let written = relative_to(&full, output_dir);
        if full.is_dir() {
            if !full.join("buildpack.toml").is_file() {
                return Err(format!("`{written}` holds no buildpack.toml"));
            }
            return Ok(StoreEntry::Directory(written));
        }
        if full.is_file() {
            return Err(
                "kpackd takes buildpack directories, not archives; unpack it into a directory"
                    .to_string(),
            );
        }
        if path.starts_with('.') || path.starts_with('/') || uri.starts_with("file://") {
            return Err(format!("`{written}` does not exist"));
        }
    }
    Ok(StoreEntry::Image(uri.to_string()))
}

fn array<'a>(table: &'a Table, key: &str) -> impl Iterator<Item = &'a Value> {
    table
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn str_of<'a>(table: &'a Table, key: &str) -> Option<&'a str> {
    table.get(key).and_then(Value::as_str)
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// A value, short, for a comment.
pub(crate) fn summary(value: &Value) -> String {
    match value {
        Value::String(s) => format!("`{}`", s.replace(['\n', '\r'], " ")),
        Value::Array(items) => format!(
            "({} item{})",
            items.len(),
            if items.len() == 1 { "" } else { "s" }
        ),
        Value::Table(_) => "(a table)".to_string(),
        other => format!("`{other}`"),
    }
}
