//! An image's own buildpacks (`buildpacks = ["id", "id@version"]`, one group replacing the
//! builder's order) and its `project-descriptor`: parsed, checked against the builder's
//! store with diagnostics that point at the entry, and part of the CONFIG hash only when
//! set.

use planner::{BuildpackRef, ConfigError};

const BASE: &str = r#"
[stacks.base]
build-image = "registry.example.com/stacks/base-build"
run-image = "registry.example.com/stacks/base-run"

[stores.fixtures]
buildpacks = ["buildpacks/runtime", "buildpacks/runtime-0.2", "buildpacks/app"]

[builders.default]
stack = "base"
store = "fixtures"
order = [{ group = [{ id = "fixture/runtime" }, { id = "fixture/app" }] }]

[builders.image]
builder = "registry.example.com/builders/any"

[images.hello]
tag = "oci:out/images:hello"
builder = "default"
source = { path = "apps/hello" }
"#;

fn parse(extra: &str) -> Result<planner::Config, ConfigError> {
    planner::parse(
        &testkit::fixtures::valid().join("inline.toml"),
        &format!("{BASE}{extra}"),
    )
}

fn problems(extra: &str) -> Vec<(String, String)> {
    let text = format!("{BASE}{extra}");
    match parse(extra) {
        Ok(_) => panic!("should be invalid:\n{extra}"),
        Err(e) => e
            .problems()
            .iter()
            .map(|p| {
                let span = p.span().expect("every problem points into the file");
                (p.message().to_string(), text[span.clone()].to_string())
            })
            .collect(),
    }
}

#[test]
fn buildpacks_parse_into_one_group() {
    let config = parse("buildpacks = [\"fixture/app\", \"fixture/runtime@0.1.0\"]\nproject-descriptor = \"./ci/project.toml\"\n")
        .expect("valid");
    let image = &config.images["hello"];
    assert_eq!(
        image.buildpacks,
        [
            BuildpackRef {
                id: "fixture/app".into(),
                version: None,
                optional: false
            },
            BuildpackRef {
                id: "fixture/runtime".into(),
                version: Some("0.1.0".into()),
                optional: false
            },
        ]
    );
    assert_eq!(image.project_descriptor.as_deref(), Some("ci/project.toml"));
    let hashed = image.config();
    assert_eq!(hashed.buildpacks, ["fixture/app", "fixture/runtime@0.1.0"]);
}

#[test]
fn a_change_of_buildpacks_is_a_config_change_and_their_absence_hashes_as_before() {
    let plain = parse("").expect("valid");
    let json = serde_json::to_string(&plain.images["hello"].config()).unwrap();
    assert!(
        !json.contains("buildpacks") && !json.contains("project-descriptor"),
        "an image without the keys hashes as it always did: {json}"
    );
    let with = parse("buildpacks = [\"fixture/app\"]\n").expect("valid");
    let other = parse("buildpacks = [\"fixture/runtime\"]\n").expect("valid");
    let named = parse("project-descriptor = \"ci/project.toml\"\n").expect("valid");
    let digests = [
        plain.images["hello"].config().digest(),
        with.images["hello"].config().digest(),
        other.images["hello"].config().digest(),
        named.images["hello"].config().digest(),
    ];
    for (i, a) in digests.iter().enumerate() {
        for b in &digests[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

#[test]
fn unknown_buildpacks_point_at_their_entry() {
    assert_eq!(
        problems("buildpacks = [\"fixture/ap\", \"fixture/runtime@9.9.9\"]\n"),
        [
            (
                "store `fixtures` has no buildpack `fixture/ap`".to_string(),
                "\"fixture/ap\"".to_string()
            ),
            (
                "store `fixtures` has no buildpack `fixture/runtime` version 9.9.9".to_string(),
                "\"fixture/runtime@9.9.9\"".to_string()
            ),
        ]
    );
}

#[test]
fn malformed_lists_and_paths_are_refused() {
    assert_eq!(
        problems("buildpacks = []\n"),
        [(
            "the `buildpacks` of image `hello` are empty".to_string(),
            "[]".to_string()
        )]
    );
    assert_eq!(
        problems("buildpacks = [\"@1.0\", \"fixture/app\", \"fixture/app@1.0.0\", \"fixture/runtime@\"]\n"),
        [
            ("invalid buildpack `@1.0`".to_string(), "\"@1.0\"".to_string()),
            (
                "image `hello` names buildpack `fixture/app` twice".to_string(),
                "\"fixture/app@1.0.0\"".to_string()
            ),
            (
                "invalid buildpack `fixture/runtime@`".to_string(),
                "\"fixture/runtime@\"".to_string()
            ),
        ]
    );
    for bad in ["../project.toml", "/etc/project.toml", "", "ci/"] {
        let found = problems(&format!("project-descriptor = {bad:?}\n"));
        assert_eq!(found.len(), 1, "{bad}: {found:?}");
        assert_eq!(found[0].0, format!("invalid project descriptor `{bad}`"));
    }
}

#[test]
fn a_builder_image_s_buildpacks_are_checked_by_the_build() {
    let config = parse("\n[images.other]\ntag = \"oci:out/images:other\"\nbuilder = \"image\"\nsource = { path = \"apps/hello\" }\nbuildpacks = [\"anything/at-all\"]\n")
        .expect("valid: a builder image's buildpacks are known only once it is fetched");
    assert_eq!(config.images["other"].buildpacks[0].id, "anything/at-all");
}
