//! `kpackd validate`, `kpackd schema` and `kpackd graph`, run as a user runs them: exit
//! codes, diagnostics that name the line and column, a schema equal to the checked-in
//! one, and a graph Graphviz renders.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs kpackd in the workspace root without colours.
fn kpackd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kpackd"))
        .args(args)
        .current_dir(workspace())
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .output()
        .expect("kpackd runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn invalid_fixtures() -> Vec<PathBuf> {
    testkit::fixtures::tomls(&testkit::fixtures::invalid())
}

/// Whether `text` holds `<file>:<line>:<column>`.
fn has_location(text: &str, file: &str) -> bool {
    text.match_indices(&format!("{file}:")).any(|(i, m)| {
        let rest = &text[i + m.len()..];
        let mut numbers = rest.splitn(3, ':');
        let line = numbers.next().unwrap_or_default();
        let column: String = numbers
            .next()
            .unwrap_or_default()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        !line.is_empty() && line.chars().all(|c| c.is_ascii_digit()) && !column.is_empty()
    })
}

#[test]
fn the_example_fleet_is_valid() {
    for args in [&["validate", "kpack.toml"][..], &["validate"][..]] {
        let out = kpackd(args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("kpack.toml is valid"),
            "{}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn every_invalid_fixture_exits_1_naming_line_and_column() {
    let fixtures = invalid_fixtures();
    assert!(fixtures.len() >= 30, "only {} fixtures", fixtures.len());
    for path in fixtures {
        let shown = path
            .strip_prefix(workspace())
            .expect("fixtures are in the workspace")
            .display()
            .to_string();
        let out = kpackd(&["validate", &shown]);
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{shown}:\n{text}");
        assert!(!text.contains("panicked"), "{shown}:\n{text}");
        assert!(
            has_location(&text, &shown),
            "{shown}: no file:line:col in\n{text}"
        );
        assert!(text.contains(" | "), "{shown}: no source line in\n{text}");
    }
}

#[test]
fn five_mistakes_are_reported_in_one_run() {
    let out = kpackd(&[
        "validate",
        "planner/tests/fixtures/invalid/five-mistakes.toml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(text.contains("has 5 errors"), "{text}");
    let located = text
        .matches("planner/tests/fixtures/invalid/five-mistakes.toml:")
        .count();
    assert_eq!(located, 5, "{text}");
    assert!(text.contains("did you mean `run-image`?"), "{text}");
    assert!(text.contains("help:"), "{text}");
}

#[test]
fn a_missing_file_is_an_error() {
    let out = kpackd(&["validate", "no-such-kpack.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("failed to read no-such-kpack.toml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn schema_prints_the_checked_in_schema() {
    let out = kpackd(&["schema"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let checked_in = std::fs::read(workspace().join("schema/kpack.schema.json")).unwrap();
    assert!(
        out.stdout == checked_in,
        "`kpackd schema` differs from schema/kpack.schema.json: \
         run `cargo run -- schema > schema/kpack.schema.json`"
    );
}

#[test]
fn graph_renders_with_graphviz() {
    let out = kpackd(&["graph", "kpack.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dot = String::from_utf8(out.stdout).unwrap();
    assert!(dot.starts_with("digraph"), "{dot}");
    for node in ["stack:", "store:", "builder:", "image:", "source:"] {
        assert!(dot.contains(node), "no {node} node in\n{dot}");
    }

    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("dot").is_file()));
    assert!(found, "`dot` is not installed: apt-get install -y graphviz");
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dot.as_bytes())
        .unwrap();
    let svg = child.wait_with_output().unwrap();
    assert!(
        svg.status.success(),
        "{}",
        String::from_utf8_lossy(&svg.stderr)
    );
    let svg = String::from_utf8(svg.stdout).unwrap();
    assert!(svg.contains("<svg"), "{svg}");
    assert!(svg.contains("hello"), "the image names are drawn");
}

#[test]
fn graph_of_an_invalid_config_fails() {
    let out = kpackd(&[
        "graph",
        "planner/tests/fixtures/invalid/unknown-builder.toml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
}

/// A mistake on the command line is an error (1), so that it never reads as
/// `plan --detailed-exitcode`'s "changes" (2); help and version succeed.
#[test]
fn command_line_mistakes_exit_1_and_help_exits_0() {
    for args in [
        &["plan", "--detailed-exitcode", "--bogus"][..],
        &["apply", "--concurrency", "0"],
        &["--color", "bogus", "status"],
        &[],
    ] {
        let out = kpackd(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "kpackd {args:?}: {}",
            stderr(&out)
        );
        assert!(!stderr(&out).is_empty(), "kpackd {args:?} says why");
    }
    assert_eq!(kpackd(&["--help"]).status.code(), Some(0));
    assert_eq!(kpackd(&["plan", "--help"]).status.code(), Some(0));
    assert_eq!(kpackd(&["--version"]).status.code(), Some(0));
}

/// `--color never` reaches the log lines too, whatever the environment says.
#[test]
fn color_never_leaves_log_lines_plain() {
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(
        dir.path().join("kpack.toml"),
        "[kpackd]\nstate-dir = \"state\"\n",
    )
    .expect("writing kpack.toml");
    let plan = |color: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_kpackd"))
            .args(["--color", color, "-v", "plan"])
            .current_dir(dir.path())
            .env_remove("NO_COLOR")
            .env_remove("RUST_LOG")
            .output()
            .expect("kpackd runs");
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let text = stderr(&out);
        assert!(text.contains("planned"), "an info line: {text:?}");
        text
    };
    let never = plan("never");
    assert!(!never.contains('\u{1b}'), "{never:?}");
    let always = plan("always");
    assert!(
        always.contains('\u{1b}'),
        "--color always colours the log lines: {always:?}"
    );
}

#[test]
fn kubernetes_settings_the_local_executor_ignores_are_a_warning() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("kpack.toml");
    std::fs::write(&config, "[kubernetes]\nnamespace = \"builds\"\n").expect("write");
    let out = kpackd(&["validate", config.to_str().expect("a UTF-8 path")]);
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("has 1 warning"), "{text}");
    assert!(
        text.contains("`[kubernetes]` is ignored: builds run locally"),
        "{text}"
    );
    assert!(has_location(&text, "kpack.toml"), "{text}");
    assert!(text.contains("is valid"), "{text}");
}
