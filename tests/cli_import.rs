//! `kpackd import` run as a user runs it: kpack YAML on stdout and from stdin, `--into`
//! keeping an existing kpack.toml's text, a diagnostic for a broken input, and an
//! imported pack builder.toml and project.toml that apply and build.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use support::{kpackd, layout_refs, stdout, write_buildpack, write_stack};

const STACK_AND_STORE: &str = r#"apiVersion: kpack.io/v1alpha2
kind: ClusterStack
metadata:
  name: base
spec:
  id: io.buildpacks.stacks.jammy
  buildImage:
    image: paketobuildpacks/build-jammy-base
  runImage:
    image: paketobuildpacks/run-jammy-base
---
apiVersion: kpack.io/v1alpha2
kind: ClusterStore
metadata:
  name: default
spec:
  sources:
  - image: gcr.io/paketo-buildpacks/go
"#;

const BUILDER_AND_IMAGE: &str = r#"apiVersion: kpack.io/v1alpha2
kind: ClusterBuilder
metadata:
  name: default
spec:
  tag: registry.example.com/builder
  stack:
    kind: ClusterStack
    name: base
  store:
    kind: ClusterStore
    name: default
  order:
  - group:
    - id: paketo-buildpacks/go
---
apiVersion: kpack.io/v1alpha2
kind: Image
metadata:
  name: app
spec:
  tag: registry.example.com/app
  serviceAccountName: builder
  builder:
    kind: ClusterBuilder
    name: default
  source:
    git:
      url: https://github.com/example/app
      revision: main
  build:
    buildTimeout: 20
"#;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn import_prints_a_kpack_toml_that_validates() {
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(dir.path().join("stack.yaml"), STACK_AND_STORE).expect("writing");
    std::fs::write(dir.path().join("builder.yaml"), BUILDER_AND_IMAGE).expect("writing");
    let out = kpackd(dir.path(), &["import", "stack.yaml", "builder.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for expected in [
        "[stacks.base]",
        "[stores.default]",
        "[builders.default]",
        "[images.app]",
        "# not carried over: spec.serviceAccountName `builder`",
        "timeout = \"20m\"",
    ] {
        assert!(text.contains(expected), "{expected} missing from\n{text}");
    }
    std::fs::write(dir.path().join("kpack.toml"), &text).expect("writing kpack.toml");
    let out = kpackd(dir.path(), &["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn import_reads_stdin() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kpackd"))
        .args(["import", "-"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kpackd starts");
    child
        .stdin
        .take()
        .expect("a stdin")
        .write_all(format!("{STACK_AND_STORE}---\n{BUILDER_AND_IMAGE}").as_bytes())
        .expect("writing stdin");
    let out = child.wait_with_output().expect("kpackd ends");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("# Imported by `kpackd import` from -"));
    assert!(stdout(&out).contains("[images.app]"));
}

#[test]
fn import_into_keeps_the_existing_text() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let original = "# our fleet\n[kpackd]\nconcurrency = 3   # two cores\n\n[stacks.base]\nbuild-image = \"example.com/build\"\nrun-image = \"example.com/run\"\n";
    std::fs::write(dir.path().join("kpack.toml"), original).expect("writing kpack.toml");
    std::fs::write(dir.path().join("stack.yaml"), STACK_AND_STORE).expect("writing");
    std::fs::write(dir.path().join("builder.yaml"), BUILDER_AND_IMAGE).expect("writing");
    let out = kpackd(
        dir.path(),
        &[
            "import",
            "--into",
            "kpack.toml",
            "stack.yaml",
            "builder.yaml",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "", "nothing on stdout with --into");
    let text = std::fs::read_to_string(dir.path().join("kpack.toml")).expect("reading");
    assert!(text.starts_with(original), "{text}");
    assert!(text.contains("[stacks.base-2]"), "{text}");
    assert!(text.contains("stack = \"base-2\""), "{text}");
    let out = kpackd(dir.path(), &["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_broken_input_is_a_diagnostic_with_its_place() {
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(
        dir.path().join("image.yaml"),
        "apiVersion: kpack.io/v1alpha2\nkind: Image\nmetadata:\n  name: app\nspec:\n  tag: registry.example.com/app\n  source:\n    git:\n      url: https://github.com/example/app\n",
    )
    .expect("writing");
    let out = kpackd(dir.path(), &["import", "image.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("Image default/app has no `spec.builder`"),
        "{err}"
    );
    assert!(err.contains("image.yaml:6:"), "{err}");
    assert_eq!(stdout(&out), "");
}

/// A pack builder.toml naming a directory buildpack and a project.toml for a tiny app,
/// imported into a kpack.toml, the stack pointed at a test stack, applied: the image is
/// built.
#[test]
fn an_imported_builder_and_project_apply_and_build() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let root = dir.path();
    write_stack(&root.join("work"), &root.join("stacks"));
    write_buildpack(
        &root.join("buildpacks"),
        "hello",
        "test/hello",
        "test -f greeting.txt",
        r#"echo "building with GREETING=$(cat "$CNB_PLATFORM_DIR/env/GREETING")"
layer="$CNB_LAYERS_DIR/greeter"
mkdir -p "$layer"
cp greeting.txt "$layer/"
printf '[types]\nlaunch = true\n' > "$layer.toml""#,
    );
    let builder_dir = root.join("builder");
    std::fs::create_dir_all(&builder_dir).expect("a builder dir");
    std::fs::write(
        builder_dir.join("builder.toml"),
        r#"[[buildpacks]]
  id = "test/hello"
  version = "0.1.0"
  uri = "../buildpacks/hello"

[[order]]
  [[order.group]]
    id = "test/hello"

[stack]
  id = "io.kpackd.test"
  build-image = "cnbs/sample-stack-build:jammy"
  run-image = "cnbs/sample-stack-run:jammy"

[lifecycle]
  version = "0.17.0"
"#,
    )
    .expect("writing builder.toml");
    let app = root.join("apps/hello");
    std::fs::create_dir_all(&app).expect("an app dir");
    std::fs::write(app.join("greeting.txt"), "hello").expect("an app file");
    std::fs::write(
        app.join("project.toml"),
        "[_]\nschema-version = \"0.2\"\nname = \"hello\"\n\n[[io.buildpacks.build.env]]\nname = \"GREETING\"\nvalue = \"hi\"\n",
    )
    .expect("writing project.toml");
    let original = "# kept as written\n[kpackd]\nstate-dir = \"state\"\n";
    std::fs::write(root.join("kpack.toml"), original).expect("writing kpack.toml");

    let out = kpackd(
        root,
        &[
            "import",
            "--into",
            "kpack.toml",
            "builder/builder.toml",
            "apps/hello/project.toml",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(root.join("kpack.toml")).expect("reading kpack.toml");
    assert!(text.starts_with(original), "{text}");
    assert!(text.contains("\"buildpacks/hello\""), "{text}");
    assert!(
        text.contains("source = { path = \"apps/hello\" }"),
        "{text}"
    );
    // The build reads the project's env from its project.toml: kpack.toml does not
    // repeat it (the log below shows it arrives).
    assert!(!text.contains("env ="), "{text}");
    assert!(text.contains("not carried over: lifecycle"), "{text}");
    // Point the stack at the test stack.
    let text = text
        .replace("cnbs/sample-stack-build:jammy", "oci:stacks:build")
        .replace("cnbs/sample-stack-run:jammy", "oci:stacks:run");
    std::fs::write(root.join("kpack.toml"), &text).expect("writing kpack.toml");

    let out = kpackd(root, &["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        layout_refs(&root.join("images")).contains(&"hello".to_string()),
        "the image is in the layout: {:?}",
        layout_refs(&root.join("images"))
    );
    let log = kpackd(root, &["logs", "hello"]);
    assert!(
        stdout(&log).contains("building with GREETING=hi"),
        "{}",
        stdout(&log)
    );
}
