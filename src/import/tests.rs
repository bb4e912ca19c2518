//! Each kind of input, written as kpack's and pack's documentation shows it, imported;
//! the output is compared with its snapshot and checked by the real validator.

use std::path::Path;

use super::{import, Existing, Input, Target};

/// Imports `inputs` (name, text) read from `dir` into a kpack.toml in `dir` that holds
/// `existing`, checks that the two together validate there, and returns what was added.
fn imported(dir: &Path, inputs: &[(&str, &str)], existing: &str) -> String {
    let inputs: Vec<Input> = inputs
        .iter()
        .map(|(name, text)| Input {
            name: name.to_string(),
            dir: dir
                .join(name)
                .parent()
                .expect("a file in a directory")
                .to_path_buf(),
            text: text.to_string(),
        })
        .collect();
    let target = Target {
        dir: dir.to_path_buf(),
        existing: Existing::of(existing).expect("the existing text is TOML"),
    };
    let text = import(&inputs, &target).expect("the inputs import");
    if let Err(e) = planner::parse(&dir.join("kpack.toml"), &format!("{existing}{text}")) {
        panic!("{text}\ndoes not validate: {:?}", miette::Report::new(e));
    }
    text
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temp dir")
}

/// kpack's tutorial: a store, a stack, a builder and an image, plus the fields that
/// have no equivalent.
const TUTORIAL: &str = r#"
apiVersion: kpack.io/v1alpha2
kind: ClusterStore
metadata:
  name: default
spec:
  sources:
  - image: gcr.io/paketo-buildpacks/java
  - image: gcr.io/paketo-buildpacks/nodejs
---
apiVersion: kpack.io/v1alpha2
kind: ClusterStack
metadata:
  name: base
spec:
  id: "io.buildpacks.stacks.jammy"
  buildImage:
    image: "paketobuildpacks/build-jammy-base"
  runImage:
    image: "paketobuildpacks/run-jammy-base"
---
apiVersion: kpack.io/v1alpha2
kind: ClusterLifecycle
metadata:
  name: default-lifecycle
spec:
  image: buildpacksio/lifecycle:0.17.0
---
apiVersion: kpack.io/v1alpha2
kind: ClusterBuildpack
metadata:
  name: python
spec:
  image: gcr.io/paketo-buildpacks/python
---
apiVersion: kpack.io/v1alpha2
kind: ClusterBuilder
metadata:
  name: my-builder
spec:
  serviceAccountRef:
    name: default
    namespace: default
  tag: my-registry.example.com/builder
  lifecycle:
    name: default-lifecycle
  stack:
    name: base
    kind: ClusterStack
  store:
    name: default
    kind: ClusterStore
  order:
  - group:
    - id: paketo-buildpacks/java
  - group:
    - id: paketo-buildpacks/nodejs
      version: 1.0
    - id: paketo-buildpacks/procfile
      optional: true
  - group:
    - kind: ClusterBuildpack
      name: python
---
apiVersion: kpack.io/v1alpha2
kind: Image
metadata:
  name: tutorial-image
  namespace: default
spec:
  tag: my-registry.example.com/tutorial
  additionalTags:
  - my-registry.example.com/tutorial:stable
  serviceAccountName: tutorial-service-account
  builder:
    name: my-builder
    kind: ClusterBuilder
  source:
    git:
      url: https://github.com/spring-projects/spring-petclinic
      revision: 82cb521d636b282340378d80a6307a08e3d4a4c4
    subPath: app
  cache:
    volume:
      size: "1.5Gi"
  successBuildHistoryLimit: 5
  failedBuildHistoryLimit: 20
  imageTaggingStrategy: BuildNumber
  defaultProcess: web
  projectDescriptorPath: path/to/project.toml
  build:
    env:
    - name: BP_JAVA_VERSION
      value: "17"
    - name: SECRET
      valueFrom:
        secretKeyRef:
          name: s
          key: k
    resources:
      limits:
        cpu: 500m
    nodeSelector:
      disktype: ssd
---
apiVersion: kpack.io/v1alpha2
kind: Image
metadata:
  name: blob-image
spec:
  tag: my-registry.example.com/blob
  builder:
    name: my-builder
    kind: ClusterBuilder
  source:
    blob:
      url: https://example.com/app.tar.gz
      stripComponents: 1
  cache:
    registry:
      tag: my-registry.example.com/cache/blob
"#;

#[test]
fn import_kpack_tutorial() {
    let dir = tempdir();
    let text = imported(dir.path(), &[("tutorial.yaml", TUTORIAL)], "");
    insta::assert_snapshot!("kpack_tutorial", text);
}

/// `kubectl get clusterstacks,builders,images -A -o yaml`: a List with status and
/// server fields, Builders of one name in two namespaces, a registry source, a missing
/// builder and a resource that is not kpack's.
const KUBECTL_LIST: &str = r#"
apiVersion: v1
items:
- apiVersion: kpack.io/v1alpha2
  kind: ClusterStack
  metadata:
    creationTimestamp: "2024-01-01T00:00:00Z"
    generation: 1
    name: Base.Stack
    resourceVersion: "123"
    uid: 0b3a9f1e-0000-0000-0000-000000000000
  spec:
    buildImage:
      image: paketobuildpacks/build-jammy-base
    runImage:
      image: paketobuildpacks/run-jammy-base
  status:
    buildImage:
      latestImage: index.docker.io/paketobuildpacks/build-jammy-base@sha256:0000
    conditions:
    - status: "True"
      type: Ready
- apiVersion: kpack.io/v1alpha2
  kind: Builder
  metadata:
    name: builder
    namespace: team-a
  spec:
    tag: registry.example.com/team-a/builder
    stack:
      kind: ClusterStack
      name: Base.Stack
    store:
      kind: ClusterStore
      name: default
    order:
    - group:
      - id: paketo-buildpacks/go
- apiVersion: kpack.io/v1alpha2
  kind: Builder
  metadata:
    name: builder
    namespace: team-b
  spec:
    tag: registry.example.com/team-b/builder
    stack:
      kind: ClusterStack
      name: Base.Stack
    order:
    - group:
      - kind: Buildpack
        name: ruby
- apiVersion: kpack.io/v1alpha2
  kind: Buildpack
  metadata:
    name: ruby
    namespace: team-b
  spec:
    image: gcr.io/paketo-buildpacks/ruby
    serviceAccountName: default
- apiVersion: kpack.io/v1alpha2
  kind: Image
  metadata:
    name: api
    namespace: team-a
  spec:
    tag: registry.example.com/team-a/api
    builder:
      kind: Builder
      name: builder
    source:
      git:
        url: git@github.com:example/api.git
        revision: main
    imageTaggingStrategy: None
  status:
    latestImage: registry.example.com/team-a/api@sha256:1111
- apiVersion: kpack.io/v1alpha2
  kind: Image
  metadata:
    name: uploaded
    namespace: team-a
  spec:
    tag: registry.example.com/team-a/uploaded
    builder:
      kind: Builder
      name: builder
    source:
      registry:
        image: registry.example.com/team-a/uploaded-source
- apiVersion: kpack.io/v1alpha2
  kind: Image
  metadata:
    name: orphan
    namespace: team-b
  spec:
    tag: registry.example.com/team-b/orphan
    builder:
      kind: ClusterBuilder
      name: shared
    source:
      git:
        url: https://github.com/example/orphan
        revision: main
- apiVersion: v1
  kind: ConfigMap
  metadata:
    name: kp-config
    namespace: kpack
  data:
    default.repository: registry.example.com/kp
kind: List
metadata:
  resourceVersion: ""
"#;

#[test]
fn import_kubectl_list() {
    let dir = tempdir();
    let text = imported(dir.path(), &[("all.yaml", KUBECTL_LIST)], "");
    insta::assert_snapshot!("kubectl_list", text);
}

/// Writes a component buildpack `id` into `dir`.
fn buildpack(dir: &Path, id: &str) {
    std::fs::create_dir_all(dir.join("bin")).expect("a buildpack dir");
    std::fs::write(
        dir.join("buildpack.toml"),
        format!("api = \"0.10\"\n\n[buildpack]\nid = \"{id}\"\nversion = \"0.0.1\"\n"),
    )
    .expect("writing buildpack.toml");
}

/// The pack samples' builder.toml, with `[stack]`.
const BUILDER_STACK: &str = r#"
description = "Ubuntu jammy base image with buildpacks for Java, Kotlin and Ruby"

[[buildpacks]]
  id = "samples/java-maven"
  version = "0.0.1"
  uri = "../../buildpacks/java-maven"

[[buildpacks]]
  id = "samples/kotlin-gradle"
  version = "0.0.1"
  uri = "../../buildpacks/kotlin-gradle/"

[[buildpacks]]
  uri = "docker://cnbs/sample-package:hello-universe"

[[buildpacks]]
  id = "samples/ruby-bundler"
  uri = "urn:cnb:registry:samples/ruby-bundler"

[[order]]
  [[order.group]]
    id = "samples/java-maven"
    version = "0.0.1"

[[order]]
  [[order.group]]
    id = "samples/kotlin-gradle"
    version = "0.0.1"

[[order]]
  [[order.group]]
    id = "samples/hello-universe"
    optional = true

[stack]
  id = "io.buildpacks.samples.stacks.jammy"
  build-image = "cnbs/sample-stack-build:jammy"
  run-image = "cnbs/sample-stack-run:jammy"
  run-image-mirrors = ["mirror.example.com/cnbs/sample-stack-run:jammy"]

[lifecycle]
  version = "0.17.0"
"#;

#[test]
fn import_pack_builder_with_stack() {
    let dir = tempdir();
    buildpack(
        &dir.path().join("buildpacks/java-maven"),
        "samples/java-maven",
    );
    buildpack(
        &dir.path().join("buildpacks/kotlin-gradle"),
        "samples/kotlin-gradle",
    );
    std::fs::create_dir_all(dir.path().join("builders/jammy")).expect("a builder dir");
    let text = imported(
        dir.path(),
        &[("builders/jammy/builder.toml", BUILDER_STACK)],
        "",
    );
    insta::assert_snapshot!("pack_builder_stack", text);
}

/// The newer builder.toml: `[build] image` and `[[run.images]]`, targets and env.
const BUILDER_BUILD_RUN: &str = r#"
[[buildpacks]]
  uri = "docker://cnbs/sample-package:hello-universe"

[[buildpacks]]
  id = "samples/bash"
  uri = "bash-buildpack"

[[order]]
  [[order.group]]
    id = "samples/hello-universe"

[build]
  image = "cnbs/sample-base-build:noble"
  [[build.env]]
    name = "BP_LOG_LEVEL"
    value = "debug"

[[run.images]]
  image = "cnbs/sample-base-run:noble"
  mirrors = ["mirror.example.com/cnbs/sample-base-run:noble"]

[[run.images]]
  image = "cnbs/sample-base-run:noble-tiny"

[[targets]]
  os = "linux"
  arch = "arm64"
"#;

#[test]
fn import_pack_builder_with_build_and_run_images() {
    let dir = tempdir();
    buildpack(&dir.path().join("noble/bash-buildpack"), "samples/bash");
    let text = imported(dir.path(), &[("noble/builder.toml", BUILDER_BUILD_RUN)], "");
    insta::assert_snapshot!("pack_builder_build_run", text);
}

/// Project descriptor 0.2, naming a builder image, and 0.1 naming none.
const PROJECT_V02: &str = r#"
[_]
schema-version = "0.2"
id = "io.buildpacks.my-app"
name = "My App"
version = "1.0.2"

[io.buildpacks]
builder = "cnbs/sample-builder:jammy"
exclude = ["/README.md", "bin/"]

[[io.buildpacks.group]]
id = "samples/java-maven"
version = "0.0.1"

[[io.buildpacks.build.env]]
name = "JAVA_OPTS"
value = "-Xmx1g"

[[io.buildpacks.build.env]]
name = "1BAD"
value = "x"
"#;

const PROJECT_V01: &str = r#"
[project]
id = "io.buildpacks.bash-script"
name = "Bash Script"
version = "1.0.0"

[build]
include = ["hello.sh"]

[[build.buildpacks]]
id = "samples/bash"

[[build.env]]
name = "GREETING"
value = "hello"
"#;

#[test]
fn import_project_descriptors() {
    let dir = tempdir();
    std::fs::create_dir_all(dir.path().join("apps/my-app")).expect("an app dir");
    std::fs::create_dir_all(dir.path().join("apps/bash")).expect("an app dir");
    let v02 = imported(dir.path(), &[("apps/my-app/project.toml", PROJECT_V02)], "");
    insta::assert_snapshot!("project_v02", v02);
    let v01 = imported(
        &dir.path().join("apps"),
        &[("bash/project.toml", PROJECT_V01)],
        "[builders.default]\nbuilder = \"cnbs/sample-builder:jammy\"\n",
    );
    insta::assert_snapshot!("project_v01", v01);
}

/// Builds read the descriptor from the source: a descriptor not named `project.toml` is
/// named by `project-descriptor`; what builds cannot do (a buildpack by `uri`) is noted.
#[test]
fn a_project_descriptor_by_another_name_is_named_and_uris_are_noted() {
    let dir = tempdir();
    std::fs::create_dir_all(dir.path().join("app")).expect("an app dir");
    let text = imported(
        dir.path(),
        &[(
            "app/ci.toml",
            "[_]\nschema-version = \"0.2\"\n[io.buildpacks]\nbuilder = \"cnbs/sample-builder:jammy\"\n\n[[io.buildpacks.group]]\nuri = \"bash-script-buildpack/\"\n\n[[io.buildpacks.build.env]]\nname = \"A\"\nvalue = \"1\"\n",
        )],
        "",
    );
    assert!(text.contains("project-descriptor = \"ci.toml\""), "{text}");
    assert!(text.contains("uri \"bash-script-buildpack/\""), "{text}");
    assert!(
        !text.contains("env ="),
        "the build reads the env itself: {text}"
    );
}

#[test]
fn a_project_without_builder_gets_a_placeholder_that_validates() {
    let dir = tempdir();
    std::fs::create_dir_all(dir.path().join("app")).expect("an app dir");
    let text = imported(
        dir.path(),
        &[("app/project.toml", "[_]\nschema-version = \"0.2\"\n")],
        "",
    );
    assert!(text.contains("[builders.builder]"), "{text}");
    assert!(text.contains("placeholder"), "{text}");
    assert!(text.contains("path = \"app\""), "{text}");
}

#[test]
fn names_already_in_the_kpack_toml_are_not_reused() {
    let dir = tempdir();
    let existing = "[stacks.base]\nbuild-image = \"example.com/build\"\nrun-image = \"example.com/run\"\n\n[stores.default]\nbuildpacks = [{ image = \"example.com/bp\" }]\n";
    let text = imported(dir.path(), &[("tutorial.yaml", TUTORIAL)], existing);
    assert!(text.contains("[stacks.base-2]"), "{text}");
    assert!(text.contains("stack = \"base-2\""), "{text}");
    assert!(text.contains("[stores.default-2]"), "{text}");
    assert!(
        text.contains("named `base-2`: the kpack.toml already has a `base`"),
        "{text}"
    );
}

#[test]
fn references_to_tables_already_in_the_kpack_toml_need_no_placeholder() {
    let dir = tempdir();
    let image = r#"
apiVersion: kpack.io/v1alpha2
kind: Image
metadata:
  name: app
spec:
  tag: registry.example.com/app
  builder:
    kind: ClusterBuilder
    name: default
  source:
    git:
      url: https://github.com/example/app
"#;
    let mut existing = Existing::default();
    existing.builders.insert("default".to_string());
    let inputs = [Input {
        name: "image.yaml".to_string(),
        dir: dir.path().to_path_buf(),
        text: image.to_string(),
    }];
    let target = Target {
        dir: dir.path().to_path_buf(),
        existing,
    };
    let text = import(&inputs, &target).expect("imports");
    assert!(text.contains("builder = \"default\""), "{text}");
    assert!(!text.contains("[builders."), "{text}");
}

fn error_of(name: &str, text: &str) -> String {
    let inputs = [Input {
        name: name.to_string(),
        dir: std::env::temp_dir(),
        text: text.to_string(),
    }];
    let e = import(&inputs, &Target::default()).expect_err("the input is wrong");
    let handler =
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor());
    let mut out = String::new();
    handler
        .render_report(&mut out, &e)
        .expect("rendering the report");
    out
}

#[test]
fn mistakes_point_at_their_place() {
    let yaml = error_of(
        "bad.yaml",
        "apiVersion: kpack.io/v1alpha2\nkind: ClusterStack\nmetadata:\n  name: x\nspec:\n  id: [a\n",
    );
    assert!(yaml.contains("bad.yaml is not valid YAML"), "{yaml}");
    assert!(yaml.contains("bad.yaml:6:"), "{yaml}");
    let missing = error_of(
        "stack.yaml",
        "apiVersion: kpack.io/v1alpha2\nkind: ClusterStack\nmetadata:\n  name: x\nspec:\n  buildImage:\n    image: a\n",
    );
    assert!(
        missing.contains("ClusterStack x has no `spec.runImage.image`"),
        "{missing}"
    );
    assert!(missing.contains("stack.yaml:6:"), "{missing}");
    let toml = error_of("builder.toml", "[stack\nid = 1\n");
    assert!(toml.contains("builder.toml is not valid TOML"), "{toml}");
    assert!(toml.contains("builder.toml:1:"), "{toml}");
    let neither = error_of("x.toml", "a = 1\n");
    assert!(
        neither.contains("neither a builder.toml nor a project.toml"),
        "{neither}"
    );
}
