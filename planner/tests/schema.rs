//! The JSON Schema of kpack.toml: the checked-in copy is what the planner's types
//! generate, every example config passes it, and every example config names it in a
//! `#:schema` directive (relative to the file) so that Taplo-based editors check keys.

use std::path::{Path, PathBuf};

const CHECKED_IN: &str = "schema/kpack.schema.json";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("planner/ is inside the workspace")
        .to_path_buf()
}

/// What `kpackd schema` prints.
fn generated() -> String {
    let mut text = serde_json::to_string_pretty(&planner::schema()).expect("a schema is JSON");
    text.push('\n');
    text
}

/// The root kpack.toml, every kpack.toml under examples/, and the valid fixtures.
fn example_configs() -> Vec<PathBuf> {
    let root = workspace();
    let mut configs = vec![root.join("kpack.toml")];
    let mut dirs = vec![root.join("examples")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("examples/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.file_name().is_some_and(|n| n == "kpack.toml") {
                configs.push(path);
            }
        }
    }
    let valid = testkit::fixtures::valid();
    for entry in std::fs::read_dir(&valid).expect("the valid fixtures exist") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            configs.push(path);
        }
    }
    configs.sort();
    configs
}

fn as_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("the config is readable");
    let value: toml::Value =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{} is not TOML: {e}", path.display()));
    serde_json::to_value(value).expect("TOML values are JSON values")
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&planner::schema()).expect("the schema is a valid JSON Schema")
}

#[test]
fn the_checked_in_schema_is_current() {
    let path = workspace().join(CHECKED_IN);
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    if checked_in != generated() {
        if std::env::var_os("KPACKD_UPDATE_SCHEMA").is_some() {
            std::fs::write(&path, generated()).expect("writing the schema");
            return;
        }
        panic!(
            "{CHECKED_IN} is out of date: run `cargo run -- schema > {CHECKED_IN}` \
             (or this test with KPACKD_UPDATE_SCHEMA=1)"
        );
    }
}

#[test]
fn every_example_config_passes_the_schema() {
    let validator = validator();
    let configs = example_configs();
    assert!(configs.len() >= 3, "{configs:?}");
    for path in configs {
        let json = as_json(&path);
        let errors: Vec<String> = validator
            .iter_errors(&json)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
    }
}

#[test]
fn the_schema_catches_mistakes_too() {
    let validator = validator();
    let invalid = testkit::fixtures::invalid();
    for name in [
        "unknown-key.toml",
        "wrong-type.toml",
        "source-two-kinds.toml",
    ] {
        let json = as_json(&invalid.join(name));
        assert!(!validator.is_valid(&json), "{name} passes the schema");
    }
}

#[test]
fn every_example_config_names_the_schema() {
    let schema = workspace()
        .join(CHECKED_IN)
        .canonicalize()
        .expect("the schema exists");
    for path in example_configs() {
        let text = std::fs::read_to_string(&path).expect("the config is readable");
        let first = text.lines().next().unwrap_or_default();
        let Some(relative) = first.strip_prefix("#:schema ") else {
            panic!(
                "{} does not start with `#:schema <path to {CHECKED_IN}>`",
                path.display()
            );
        };
        let named = path
            .parent()
            .expect("a file has a directory")
            .join(relative.trim());
        assert_eq!(
            named.canonicalize().ok().as_ref(),
            Some(&schema),
            "{}: `#:schema {relative}` does not lead to {CHECKED_IN}",
            path.display()
        );
    }
}
