//! A project descriptor, `project.toml` (schema 0.2 `[_]`/`[io.buildpacks]`, and 0.1
//! `[project]`/`[build]`): an image built from the project's directory.

use toml::{Table, Value};

use super::error::InputError;
use super::model::{Builder, Fleet, Image, Origin, Ref, Source, Table as T};
use super::pack::summary;
use super::{kpackd_name, relative_to, Input, Target};

/// The descriptor builds read when an image names none.
const DEFAULT_DESCRIPTOR: &str = "project.toml";

/// Descriptive keys of the project itself: they do not change a build.
const DESCRIPTIVE: [&str; 9] = [
    "schema-version",
    "id",
    "name",
    "version",
    "authors",
    "licenses",
    "documentation-url",
    "source-url",
    "metadata",
];

pub fn is_project(table: &Table) -> bool {
    table.contains_key("_")
        || table.contains_key("project")
        || table
            .get("io")
            .and_then(|io| io.get("buildpacks"))
            .is_some()
        || (table.contains_key("build") && !super::pack::is_builder(table))
}

/// Reads the project.toml `input` into an image named after the project.
pub fn read(
    input: &Input,
    index: usize,
    table: &Table,
    target: &Target,
    fleet: &mut Fleet,
) -> Result<(), InputError> {
    let about = table
        .get("_")
        .or_else(|| table.get("project"))
        .and_then(Value::as_table);
    // 0.2 keeps the build under [io.buildpacks], 0.1 under [build].
    let (build, prefix) = match table.get("io").and_then(|io| io.get("buildpacks")) {
        Some(b) => (b.as_table(), "io.buildpacks"),
        None => (table.get("build").and_then(Value::as_table), "build"),
    };
    let dir_name = input
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let project_name = about
        .and_then(|a| a.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .filter(|n| !kpackd_name(n, "").is_empty())
        .unwrap_or(dir_name);
    let wanted = kpackd_name(&project_name, "app");
    let origin = Origin::new("project.toml", &index.to_string(), None);
    // The build reads `project.toml` from the directory; another name is named.
    let project_descriptor = std::path::Path::new(&input.name)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| input.name != "-" && n != DEFAULT_DESCRIPTOR);
    let mut notes = Vec::new();
    let builder = build_table(input, index, build, prefix, fleet, &mut notes);
    for (key, value) in table {
        if !["_", "project", "io", "build", "metadata"].contains(&key.as_str()) {
            notes.push(format!(
                "{key} {}: not known to kpackd import",
                summary(value)
            ));
        }
    }
    for (key, value) in about.into_iter().flatten() {
        if !DESCRIPTIVE.contains(&key.as_str()) {
            notes.push(format!(
                "{key} {}: not known to kpackd import",
                summary(value)
            ));
        }
    }
    let image = Image {
        tag: format!("oci:images:{wanted}"),
        additional_tags: Vec::new(),
        builder,
        source: Some(Source::Path(relative_to(&input.dir, &target.dir))),
        sub_path: None,
        env: Vec::new(),
        default_process: None,
        project_descriptor,
        cache_image: None,
        timeout: None,
        history: (None, None),
    };
    let mut table = T::new(origin, wanted, image);
    table.heading = Some(format!(
        "{}; `tag` is an OCI layout beside kpack.toml: change it to a registry tag to push there",
        input.name
    ));
    table.notes = notes;
    fleet.images.push(table);
    Ok(())
}

/// Notes on the keys of the build table `build` (`prefix` is where it is) that the build
/// cannot honour; a `builder` becomes a builder table of `fleet`, referred to by what this
/// returns.
fn build_table(
    input: &Input,
    index: usize,
    build: Option<&Table>,
    prefix: &str,
    fleet: &mut Fleet,
    notes: &mut Vec<String>,
) -> Option<Ref> {
    let mut builder = None;
    // The build reads the descriptor from the source: include/exclude, the build env and
    // the groups apply there. Only what it cannot do is noted here.
    let mut entries: Vec<(String, &Value)> = Vec::new();
    for (key, value) in build.into_iter().flatten() {
        match (prefix, key.as_str(), value.as_table()) {
            ("io.buildpacks", "build", Some(inner)) => {
                entries.extend(inner.iter().map(|(k, v)| (format!("build.{k}"), v)));
            }
            _ => entries.push((key.clone(), value)),
        }
    }
    for (key, value) in entries {
        match key.as_str() {
            "env" | "build.env" => {
                for var in value.as_array().into_iter().flatten() {
                    let name = var.get("name").and_then(Value::as_str).unwrap_or_default();
                    if !valid_env_name(name) {
                        notes.push(format!("{prefix}.{key} `{name}`: not a name kpackd accepts (letters, digits and `_`, not starting with a digit); the build fails until it is renamed"));
                    }
                }
            }
            "include" => {}
            "exclude" if build.is_some_and(|b| b.contains_key("include")) => notes.push(format!(
                "{prefix}.include and {prefix}.exclude are both set: the build fails until one is removed"
            )),
            "exclude" => {}
            "builder" => {
                if let Some(image) = value.as_str() {
                    let origin = Origin::new("project.toml builder", &index.to_string(), None);
                    let mut table = T::new(origin.clone(), builder_name(image), Builder::Image(image.to_string()));
                    table.heading = Some(format!("{prefix}.builder of {}", input.name));
                    fleet.builders.push(table);
                    builder = Some(Ref::new(origin));
                }
            }
            "group" | "buildpacks" => notes.extend(uri_notes(&format!("{prefix}.{key}"), value)),
            "pre" | "post" => notes.extend(uri_notes(
                &format!("{prefix}.{key}.group"),
                value.get("group").unwrap_or(&Value::Array(Vec::new())),
            )),
            _ => notes.push(format!("{prefix}.{key} {}: not known to kpackd import", summary(value))),
        }
    }
    builder
}

/// A builder's name from its image reference: the repository's last part.
fn builder_name(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let repo = last.split(':').next().unwrap_or(last);
    kpackd_name(repo, "builder")
}

fn valid_env_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A note for each buildpack of a group given by `uri`, which builds do not fetch.
fn uri_notes(at: &str, group: &Value) -> Vec<String> {
    group
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|bp| bp.get("uri").and_then(Value::as_str))
        .map(|uri| {
            format!("{at} uri {uri:?}: kpackd builds take buildpacks from the builder, by `id`, or inline (`script`); add it to a store and name it by id, or the build fails")
        })
        .collect()
}
