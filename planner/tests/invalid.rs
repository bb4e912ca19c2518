//! Every broken configuration under tests/fixtures/invalid/ is refused with diagnostics
//! that point at the mistake; each rendering is pinned by a snapshot.

use std::path::{Path, PathBuf};

use miette::{GraphicalReportHandler, GraphicalTheme};

/// Relative to the crate, so that the snapshots name it the same on every machine.
const FIXTURES: &str = "tests/fixtures/invalid";

fn fixtures() -> Vec<PathBuf> {
    testkit::fixtures::tomls(Path::new(FIXTURES))
}

/// The diagnostics as a terminal without colours, 100 columns wide, would show them.
fn render(path: &Path) -> (String, planner::ConfigError) {
    let Err(error) = planner::load(path) else {
        panic!("{} should be invalid", path.display())
    };
    let mut out = String::new();
    GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .render_report(&mut out, &error)
        .expect("rendering to a String");
    (out, error)
}

#[test]
fn each_mistake_has_a_pinned_diagnostic() {
    let files = fixtures();
    assert!(files.len() >= 30, "only {} invalid fixtures", files.len());
    for path in files {
        let (rendered, error) = render(&path);
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a UTF-8 file name");
        assert!(!error.problems().is_empty(), "{name}: no problems");
        for problem in error.problems() {
            assert!(
                problem.span().is_some(),
                "{name}: `{problem}` points nowhere"
            );
            assert!(
                miette::Diagnostic::help(problem).is_some(),
                "{name}: `{problem}` gives no help"
            );
        }
        insta::assert_snapshot!(name, rendered);
    }
}

#[test]
fn five_mistakes_are_reported_in_one_run() {
    let (_, error) = render(&Path::new(FIXTURES).join("five-mistakes.toml"));
    let messages: Vec<&str> = error.problems().iter().map(|p| p.message()).collect();
    assert_eq!(messages.len(), 5, "{messages:#?}");
}
