use super::*;

fn parse(text: &str) -> Result<ProjectDescriptor, ProjectError> {
    ProjectDescriptor::parse("project.toml", text)
}

fn invalid(text: &str) -> (usize, String) {
    match parse(text) {
        Err(ProjectError::Invalid { line, message, .. }) => (line, message),
        other => panic!("expected an invalid descriptor, got {other:?}"),
    }
}

// The project-descriptor extension, schema 0.2: `[io.buildpacks]` with include/exclude,
// `[[io.buildpacks.group]]` (with `script` for an inline buildpack) and
// `[[io.buildpacks.build.env]]`.
#[test]
fn schema_0_2() {
    let d = parse(
        r#"
[_]
schema-version = "0.2"
id = "io.buildpacks.my-app"

[_.metadata]
cdn = "https://cdn.example.com"

[io.buildpacks]
builder = "cnbs/sample-builder:bionic"
exclude = ["README.md", "spec/"]

[[io.buildpacks.group]]
id = "examples/java"
version = "1.0"

[[io.buildpacks.group]]
id = "examples/post-build"
  [io.buildpacks.group.script]
  api = "0.10"
  inline = "./post-build.sh"

[[io.buildpacks.pre.group]]
id = "examples/first"

[[io.buildpacks.build.env]]
name = "JAVA_OPTS"
value = "-Xmx1g"

[io.other-tool]
anything = true
"#,
    )
    .expect("a valid descriptor");
    assert_eq!(
        d.files,
        FileSelection::Exclude(vec!["README.md".into(), "spec/".into()])
    );
    assert_eq!(d.env, vec![("JAVA_OPTS".into(), "-Xmx1g".into())]);
    assert_eq!(
        d.group,
        vec![
            GroupEntry::Buildpack {
                id: "examples/java".into(),
                version: Some("1.0".into())
            },
            GroupEntry::Inline(InlineBuildpack {
                id: "examples/post-build".into(),
                api: "0.10".into(),
                shell: "/bin/sh".into(),
                inline: "./post-build.sh".into(),
            }),
        ]
    );
    assert_eq!(
        d.pre,
        vec![GroupEntry::Buildpack {
            id: "examples/first".into(),
            version: None
        }]
    );
    assert!(d.post.is_empty());
}

// Schema 0.1 (no schema version): `[project]` and `[build]`, with `[[build.buildpacks]]`
// and `[[build.env]]`.
#[test]
fn schema_0_1() {
    let d = parse(
        r#"
[project]
id = "io.buildpacks.bash-script"
name = "Bash Script"

[build]
include = ["app.sh", "lib/"]

[[build.buildpacks]]
id = "samples/hello"
  [build.buildpacks.script]
  api = "0.8"
  shell = "/bin/bash"
  inline = "echo hello"

[[build.env]]
name = "GREETING"
value = "hi"
"#,
    )
    .expect("a valid descriptor");
    assert_eq!(
        d.files,
        FileSelection::Include(vec!["app.sh".into(), "lib/".into()])
    );
    assert_eq!(d.env, vec![("GREETING".into(), "hi".into())]);
    assert_eq!(
        d.group,
        vec![GroupEntry::Inline(InlineBuildpack {
            id: "samples/hello".into(),
            api: "0.8".into(),
            shell: "/bin/bash".into(),
            inline: "echo hello".into(),
        })]
    );
}

#[test]
fn an_empty_descriptor_changes_nothing() {
    assert!(parse("[_]\nschema-version = \"0.2\"\n").unwrap().is_empty());
    assert!(parse("[project]\nname = \"x\"\n").unwrap().is_empty());
}

#[test]
fn include_and_exclude_together_are_an_error() {
    let (line, message) = invalid(
        "[_]\nschema-version = \"0.2\"\n[io.buildpacks]\ninclude = [\"a\"]\nexclude = [\"b\"]\n",
    );
    assert_eq!(line, 5);
    assert!(
        message.contains("`include` and `exclude` are both set"),
        "{message}"
    );
    let (line, _) = invalid("[build]\ninclude = [\"a\"]\nexclude = [\"b\"]\n");
    assert_eq!(line, 3);
}

#[test]
fn mistakes_name_their_line() {
    // Malformed TOML.
    let (line, _) = invalid("[_]\nschema-version = \"0.2\"\n[io.buildpacks\n");
    assert_eq!(line, 3);
    // A wrong type.
    let (line, message) = invalid("[build]\nexclude = \"README.md\"\n");
    assert_eq!(line, 2);
    assert!(message.contains("sequence"), "{message}");
    // A uri is not supported.
    let (line, message) = invalid(
        "[project]\nname = \"a\"\n\n[[build.buildpacks]]\nuri = \"bash-script-buildpack/\"\n",
    );
    assert_eq!(line, 4);
    assert!(
        message.contains("uri \"bash-script-buildpack/\" is not supported"),
        "{message}"
    );
    // An entry without id, and one with both version and script.
    let (_, message) = invalid("[[build.buildpacks]]\nversion = \"1\"\n");
    assert!(message.contains("no `id`"), "{message}");
    let (_, message) = invalid(
        "[[build.buildpacks]]\nid = \"a\"\nversion = \"1\"\n[build.buildpacks.script]\napi = \"0.8\"\ninline = \"true\"\n",
    );
    assert!(message.contains("both `version` and `script`"), "{message}");
    // A script without inline.
    let (line, message) =
        invalid("[[build.buildpacks]]\nid = \"a\"\n[build.buildpacks.script]\napi = \"0.8\"\n");
    assert!(message.contains("inline"), "{message}");
    assert!(line >= 1);
    // An env name a buildpack cannot read from a file.
    let (line, message) =
        invalid("[_]\nschema-version = \"0.2\"\n[[io.buildpacks.build.env]]\nname = \"A-B\"\nvalue = \"1\"\n");
    assert_eq!(line, 3);
    assert!(message.contains("\"A-B\""), "{message}");
    // Unknown schema versions, and 0.2 tables in a 0.1 file.
    let (line, message) = invalid("[_]\nschema-version = \"0.3\"\n");
    assert_eq!(line, 2);
    assert!(message.contains("0.3"), "{message}");
    let (_, message) = invalid("[io.buildpacks]\nexclude = [\"a\"]\n");
    assert!(
        message.contains("schema-version = \\\"0.2\\\"") || message.contains("schema 0.2"),
        "{message}"
    );
}

fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            if entry.file_type().unwrap().is_dir() {
                out.push(format!("{rel}/"));
                walk(root, &path, out);
            } else {
                out.push(rel);
            }
        }
    }
    walk(root, root, &mut out);
    out.sort();
    out
}

fn app() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in [
        "README.md",
        "app.sh",
        "project.toml",
        "cmd/main.go",
        "cmd/README.md",
        "spec/a_spec.rb",
        "lib/x.go",
        "docs/guide/intro.txt",
    ] {
        let path = dir.path().join(file);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, file).unwrap();
    }
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
    dir
}

#[test]
fn exclude_removes_matches_and_everything_below_matching_directories() {
    let dir = app();
    FileSelection::Exclude(vec![
        "/README.md".into(),
        "spec/".into(),
        "*.go".into(),
        "link".into(),
    ])
    .apply(dir.path())
    .unwrap();
    assert_eq!(
        tree(dir.path()),
        [
            "app.sh",
            "cmd/",
            "cmd/README.md",
            "docs/",
            "docs/guide/",
            "docs/guide/intro.txt",
            "lib/",
            "project.toml",
        ]
    );
}

#[test]
fn include_keeps_only_matches_and_their_directories() {
    let dir = app();
    FileSelection::Include(vec!["cmd/".into(), "*.go".into(), "app.sh".into()])
        .apply(dir.path())
        .unwrap();
    assert_eq!(
        tree(dir.path()),
        [
            "app.sh",
            "cmd/",
            "cmd/README.md",
            "cmd/main.go",
            "lib/",
            "lib/x.go"
        ]
    );
}

#[test]
fn load_reads_the_default_or_the_named_descriptor() {
    let dir = app();
    fs::write(
        dir.path().join("project.toml"),
        "[build]\nexclude = [\"README.md\"]\n",
    )
    .unwrap();
    let found = ProjectDescriptor::load(dir.path(), None).unwrap().unwrap();
    assert_eq!(
        found.files,
        FileSelection::Exclude(vec!["README.md".into()])
    );
    let empty = tempfile::tempdir().unwrap();
    assert!(ProjectDescriptor::load(empty.path(), None)
        .unwrap()
        .is_none());
    assert!(matches!(
        ProjectDescriptor::load(empty.path(), Some("ci/project.toml")),
        Err(ProjectError::Missing { .. })
    ));
    // Never through a link, nor out of the app directory.
    assert!(matches!(
        ProjectDescriptor::load(dir.path(), Some("link")),
        Err(ProjectError::Missing { .. })
    ));
    assert!(matches!(
        ProjectDescriptor::load(dir.path(), Some("../x")),
        Err(ProjectError::Missing { .. })
    ));
}
