use super::*;

fn descriptor(api: &str, stacks: &[&str]) -> BuildpackDescriptor {
    let mut text = format!("api = \"{api}\"\n[buildpack]\nid = \"test/bp\"\nversion = \"1.0.0\"\n");
    for stack in stacks {
        text.push_str(&format!("[[stacks]]\nid = \"{stack}\"\n"));
    }
    BuildpackDescriptor::parse(&text).expect("a valid descriptor")
}

fn linux() -> Vec<TargetSpec> {
    vec![TargetSpec {
        os: "linux".into(),
        ..TargetSpec::default()
    }]
}

fn bionic() -> Vec<TargetSpec> {
    vec![TargetSpec {
        os: "linux".into(),
        arch: "amd64".into(),
        variant: String::new(),
        distros: vec![DistroSpec {
            name: "ubuntu".into(),
            version: "18.04".into(),
        }],
    }]
}

#[test]
fn reads_order_targets_stacks_and_sbom_formats() {
    let d = BuildpackDescriptor::parse(
        r#"
api = "0.10"
[buildpack]
id = "example/composite"
version = "1.0.0"
name = "Composite"
sbom-formats = ["application/vnd.cyclonedx+json"]
[[order]]
[[order.group]]
id = "a"
version = "1"
[[order.group]]
id = "b"
optional = true
[[targets]]
os = "linux"
arch-variant = "v8"
[[targets.distros]]
name = "ubuntu"
version = "22.04"
[metadata]
free = "form"
"#,
    )
    .expect("parse");
    assert_eq!(d.api_version(), Some(ApiVersion::new(0, 10)));
    assert!(d.is_composite());
    assert!(d.order[0].group[1].optional);
    assert_eq!(d.order[0].group[1].version, "");
    assert_eq!(d.targets[0].variant, "v8");
    assert_eq!(d.targets[0].distros[0].version, "22.04");
    assert_eq!(d.buildpack.sbom_formats, ["application/vnd.cyclonedx+json"]);
    assert_eq!(d.effective_targets(), d.targets);
}

/// Buildpack spec, "Deprecations: buildpack.toml (TOML) `stacks` Array", as the reference
/// lifecycle reads it: bionic stands for Ubuntu 18.04 only from Buildpack API 0.10 on or
/// as the only stack; otherwise stack ids are ignored and Linux is inferred.
#[test]
fn stacks_become_targets_as_the_reference_lifecycle_infers_them() {
    let bionic_id = "io.buildpacks.stacks.bionic";
    let jammy_id = "io.buildpacks.stacks.jammy";
    assert_eq!(
        descriptor("0.9", &[bionic_id, jammy_id]).effective_targets(),
        linux()
    );
    assert_eq!(
        descriptor("0.7", &[jammy_id, bionic_id]).effective_targets(),
        linux()
    );
    assert_eq!(
        descriptor("0.9", &[bionic_id]).effective_targets(),
        bionic()
    );
    assert_eq!(
        descriptor("0.10", &[bionic_id, jammy_id]).effective_targets(),
        bionic()
    );
    assert_eq!(descriptor("0.9", &[jammy_id]).effective_targets(), linux());
    assert!(descriptor("0.8", &["*"]).effective_targets().is_empty());
    assert!(descriptor("0.9", &[bionic_id, "*"])
        .effective_targets()
        .is_empty());
    assert_eq!(descriptor("0.12", &[]).effective_targets(), linux());
}

/// Buildpack spec, "Buildpack API Compatibility": an unsupported API is an error.
#[test]
fn buildpack_api_bounds_are_those_of_the_reference_lifecycle() {
    for ok in ["0.7", "0.9", "0.12"] {
        assert_eq!(descriptor(ok, &[]).api, ok);
    }
    for (bad, expected) in [
        (
            "0.6",
            "uses Buildpack API 0.6; kpackd runs Buildpack API 0.7 to 0.12",
        ),
        (
            "0.99",
            "uses Buildpack API 0.99; kpackd runs Buildpack API 0.7 to 0.12",
        ),
        ("1", "uses Buildpack API 1.0;"),
        ("zero", "api \"zero\" is not <major>.<minor>"),
    ] {
        let text = format!("api = \"{bad}\"\n[buildpack]\nid = \"test/bp\"\nversion = \"1.0.0\"\n");
        let problem = BuildpackDescriptor::parse(&text).expect_err(bad);
        let message = problem.to_string();
        assert!(message.contains("buildpack `test/bp@1.0.0`"), "{message}");
        assert!(message.contains(expected), "{message}");
        let span = problem.span().expect("points at the api");
        assert_eq!(&text[span], format!("\"{bad}\""));
    }
}

#[test]
fn problems_point_at_the_value_or_the_table() {
    let text = "api = \"0.10\"\n[buildpack]\nid = \"app\"\nversion = \"1\"\n";
    let problem = BuildpackDescriptor::parse(text).expect_err("reserved id");
    assert!(problem.message().contains("reserved"), "{problem}");
    assert_eq!(&text[problem.span().expect("span")], "\"app\"");

    let text = "api = \"0.10\"\n[buildpack]\nid = \"a\"\nversion = \"../x\"\n";
    let problem = BuildpackDescriptor::parse(text).expect_err("version with a slash");
    assert_eq!(&text[problem.span().expect("span")], "\"../x\"");

    let text = "api = \"0.10\"\n[buildpack]\nid = \"a\"\n";
    let problem = BuildpackDescriptor::parse(text).expect_err("no version");
    assert!(matches!(problem, DescriptorProblem::Syntax(_)));
    assert!(
        problem.message().contains("version"),
        "{}",
        problem.message()
    );
    assert!(problem.span().is_some());

    let problem = BuildpackDescriptor::parse("api = [\n").expect_err("not TOML");
    assert!(problem.span().is_some());
}
