//! Planning against real upstreams: bare git repositories over `file://` and
//! `git daemon`, stack images in OCI layouts and in a loopback registry, directory
//! buildpacks and path sources on disk, and a real state database.

use std::collections::BTreeMap;
use std::path::Path;

use engine::planning::{make_plan, PlanError, PlanFile, Planned};
use engine::resolve::SourcePin;
use engine::state::{BuildStatus, NewBuild, Outcome, State};
use executors::oci::{ContainerConfig, ImageConfig, ImageStore, StoreSettings};
use imageref::ImageRef;
use planner::diff::SourceVersion;
use planner::plan::{Action, StackKey, Summary, Upstream};
use planner::Reason;
use testkit::git::BareRepo;
use testkit::registry::Registry;

const STACK_ID: &str = "io.kpackd.tests.stack";
/// The layer diffID the buildpackage and builder images' labels name.
const FEED: &str = "sha256:feed000000000000000000000000000000000000000000000000000000000000";

/// A kpack.toml in a temp dir, with its stack images, buildpack and app sources.
struct Fleet {
    dir: tempfile::TempDir,
    repo: BareRepo,
    build_image: String,
    run_image: String,
}

fn store() -> ImageStore {
    ImageStore::new(StoreSettings::default())
}

/// Pushes an empty linux/amd64 image whose labels name the stack and `marker` (so each
/// marker is a different digest); returns the digest.
async fn push_stack_image(reference: &str, marker: &str) -> String {
    let r = ImageRef::parse(reference).unwrap();
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: Some(ContainerConfig {
            labels: Some(BTreeMap::from([
                ("io.buildpacks.base.id".to_string(), STACK_ID.to_string()),
                ("marker".to_string(), marker.to_string()),
            ])),
            ..Default::default()
        }),
        ..Default::default()
    };
    store().push_image(&r, config, &[]).await.unwrap();
    store().resolve_digest(&r).await.unwrap().to_string()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

impl Fleet {
    /// Stacks in an OCI layout beside kpack.toml.
    async fn new() -> Fleet {
        Fleet::with_stack("oci:stacks:build", "oci:stacks:run").await
    }

    async fn with_stack(build_image: &str, run_image: &str) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let mut repo = BareRepo::new();
        repo.commit(
            &[("README.md", "hello\n"), ("app/main.py", "print('hi')\n")],
            "first",
        );
        let fleet = Fleet {
            dir,
            repo,
            build_image: build_image.to_string(),
            run_image: run_image.to_string(),
        };
        push_stack_image(&fleet.absolute(build_image), "build-1").await;
        push_stack_image(&fleet.absolute(run_image), "run-1").await;
        write(
            &fleet.path("buildpacks/hello/buildpack.toml"),
            "api = \"0.10\"\n[buildpack]\nid = \"tests/hello\"\nversion = \"0.1.0\"\n",
        );
        write(&fleet.path("buildpacks/hello/bin/detect"), "#!/bin/sh\n");
        write(&fleet.path("buildpacks/hello/bin/build"), "#!/bin/sh\n");
        write(&fleet.path("src/index.html"), "<h1>hi</h1>\n");
        fleet.write_config(&[]);
        fleet
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }

    /// A layout reference made absolute against the fleet's directory.
    fn absolute(&self, reference: &str) -> String {
        match reference.strip_prefix("oci:") {
            Some(rest) => format!("oci:{}/{rest}", self.dir.path().display()),
            None => reference.to_string(),
        }
    }

    /// kpack.toml: images `whole` (git), `app` (git, sub-path `app`), `local` (path),
    /// and `extra` tables appended.
    fn write_config(&self, extra: &[&str]) {
        let url = self.repo.url();
        let mut text = format!(
            r#"[kpackd]
state-dir = "state"

[stacks.base]
build-image = "{build}"
run-image = "{run}"

[stores.main]
buildpacks = ["buildpacks/hello"]

[builders.default]
stack = "base"
store = "main"
order = [{{ group = [{{ id = "tests/hello" }}] }}]

[images.whole]
tag = "oci:out:whole"
builder = "default"
source = {{ git = "{url}", revision = "main" }}

[images.app]
tag = "oci:out:app"
builder = "default"
source = {{ git = "{url}", revision = "main", sub-path = "app" }}

[images.local]
tag = "oci:out:local"
builder = "default"
source = {{ path = "src" }}
"#,
            build = self.build_image,
            run = self.run_image,
        );
        for table in extra {
            text.push('\n');
            text.push_str(table);
        }
        write(&self.path("kpack.toml"), &text);
    }

    fn config(&self) -> planner::Config {
        planner::load(&self.path("kpack.toml")).unwrap()
    }

    fn state(&self) -> State {
        State::open(&self.path("state")).unwrap()
    }

    async fn plan(&self) -> Planned {
        let state = self.state();
        make_plan(&self.config(), &state, &[]).await.unwrap()
    }
}

fn change<'p>(planned: &'p Planned, image: &str) -> &'p planner::plan::Change {
    planned
        .plan
        .changes
        .iter()
        .find(|c| c.image == image)
        .unwrap_or_else(|| panic!("no change for {image}: {:#?}", planned.plan))
}

/// Records every build and rebase of the plan as succeeded, as apply would.
fn apply_all(state: &mut State, planned: &Planned) {
    for change in &planned.plan.changes {
        let Some(inputs) = &change.inputs else {
            continue;
        };
        let build = state
            .begin_build(&NewBuild {
                image: &change.image,
                action: change.action,
                reasons: &change.reasons,
                details: &change.details,
                inputs,
                tag: "oci:out:x",
            })
            .unwrap();
        let steps: &[BuildStatus] = match change.action {
            Action::Rebase => &[BuildStatus::Rebasing],
            _ => &[
                BuildStatus::ResolvingSource,
                BuildStatus::Preparing,
                BuildStatus::Detecting,
                BuildStatus::Building,
                BuildStatus::Exporting,
            ],
        };
        for step in steps {
            state.transition(build.id, *step).unwrap();
        }
        state
            .finish(
                build.id,
                Outcome::Succeeded {
                    output: imageref::Digest::parse(&format!("sha256:{:064x}", build.number))
                        .unwrap(),
                    buildpacks_used: inputs.buildpacks.clone(),
                    rebasable: true,
                },
            )
            .unwrap();
    }
}

async fn build_everything(fleet: &Fleet) {
    let planned = fleet.plan().await;
    apply_all(&mut fleet.state(), &planned);
    let again = fleet.plan().await;
    assert!(!again.plan.has_changes(), "{:#?}", again.plan.changes);
}

#[tokio::test]
async fn a_fresh_state_builds_everything_for_its_first_build() {
    let fleet = Fleet::new().await;
    let planned = fleet.plan().await;
    let plan = &planned.plan;
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    assert_eq!(plan.summary.build, 3, "{:#?}", plan.changes);
    for change in &plan.changes {
        assert_eq!(change.action, Action::Build);
        assert_eq!(change.reasons, [Reason::Config]);
        assert_eq!(change.details[0].what, "first build");
        let inputs = change.inputs.as_ref().unwrap();
        assert_eq!(inputs.stack_id, STACK_ID);
        assert_eq!(inputs.target.to_string(), "linux/amd64");
        assert!(inputs.run_image.to_string().starts_with("sha256:"));
        assert_eq!(
            inputs.buildpacks.keys().collect::<Vec<_>>(),
            ["tests/hello@0.1.0"]
        );
    }
    // The sub-path source is versioned by its tree, the whole repository by its commit.
    let whole = &planned.resolution.observed.sources;
    assert!(whole.values().any(|v| matches!(v, SourceVersion::Tree(_))));
    let app = planned.pins("app");
    assert!(matches!(
        app.source,
        Some(SourcePin::Git { sub_path: Some(s), tree: Some(_), .. }) if s == "app"
    ));
    assert!(app
        .stack
        .unwrap()
        .run_image_digest
        .to_string()
        .starts_with("sha256:"));
    assert_eq!(plan.lineage, fleet.state().lineage());
    // Built for the first time: no build to follow, nothing else to do.
    assert!(plan.changes.iter().all(|c| c.last_build.is_none()));
    assert_eq!(
        plan.summary,
        Summary {
            build: 3,
            ..Summary::default()
        }
    );
}

#[tokio::test]
async fn a_new_commit_is_commit_but_not_for_a_sub_path_it_does_not_touch() {
    let mut fleet = Fleet::new().await;
    build_everything(&fleet).await;
    let before = fleet.plan().await;
    let old = change(&before, "whole").last_build;
    assert!(old.is_some());

    let commit = fleet
        .repo
        .commit(&[("README.md", "hello again\n")], "docs only");
    let planned = fleet.plan().await;
    let whole = change(&planned, "whole");
    assert_eq!(whole.action, Action::Build);
    assert_eq!(whole.reasons, [Reason::Commit]);
    assert_eq!(whole.details[0].what, "source commit");
    assert_eq!(whole.details[0].new.as_deref(), Some(commit.as_str()));
    assert_eq!(change(&planned, "app").action, Action::Noop);
    assert_eq!(change(&planned, "local").action, Action::Noop);
    // The change shows as `source commit: OLD → NEW`.
    assert!(whole.details[0].old.is_some(), "{:#?}", whole.details);

    fleet
        .repo
        .commit(&[("app/main.py", "print('bye')\n")], "app change");
    let planned = fleet.plan().await;
    let app = change(&planned, "app");
    assert_eq!(
        (app.action, app.reasons.as_slice()),
        (Action::Build, &[Reason::Commit][..])
    );
    assert_eq!(app.details[0].what, "source tree");
}

#[tokio::test]
async fn an_edited_path_source_or_buildpack_is_a_change() {
    let fleet = Fleet::new().await;
    build_everything(&fleet).await;
    write(&fleet.path("src/index.html"), "<h1>changed</h1>\n");
    let planned = fleet.plan().await;
    let local = change(&planned, "local");
    assert_eq!(local.reasons, [Reason::Commit]);
    assert_eq!(local.details[0].what, "source content");

    // Ignored files are no change.
    write(&fleet.path("src/.gitignore"), "*.log\n");
    apply_all(&mut fleet.state(), &fleet.plan().await);
    write(&fleet.path("src/debug.log"), "noise\n");
    assert_eq!(change(&fleet.plan().await, "local").action, Action::Noop);

    write(
        &fleet.path("buildpacks/hello/bin/build"),
        "#!/bin/sh\necho v2\n",
    );
    let planned = fleet.plan().await;
    for image in ["whole", "app", "local"] {
        let c = change(&planned, image);
        assert_eq!(c.reasons, [Reason::Buildpack], "{image}");
        assert_eq!(c.details[0].what, "buildpack tests/hello@0.1.0");
    }
}

#[tokio::test]
async fn a_new_run_image_in_a_layout_is_a_rebase() {
    let fleet = Fleet::new().await;
    build_everything(&fleet).await;
    let new = push_stack_image(&fleet.absolute("oci:stacks:run"), "run-2").await;
    let planned = fleet.plan().await;
    assert_eq!(
        planned.plan.summary.rebase, 3,
        "{:#?}",
        planned.plan.changes
    );
    let whole = change(&planned, "whole");
    assert_eq!(whole.reasons, [Reason::Stack]);
    assert_eq!(whole.details[0].new.as_deref(), Some(new.as_str()));
    let inputs = whole.inputs.as_ref().unwrap();
    assert_eq!(inputs.run_image.to_string(), new);
    assert!(inputs.last_image.is_some());

    // A build image change alone is a note, no work.
    apply_all(&mut fleet.state(), &planned);
    push_stack_image(&fleet.absolute("oci:stacks:build"), "build-2").await;
    let planned = fleet.plan().await;
    assert!(!planned.plan.has_changes());
    assert_eq!(planned.plan.notes.len(), 1, "{:?}", planned.plan.notes);
}

#[tokio::test]
async fn a_new_run_image_in_a_registry_is_a_rebase() {
    let registry = Registry::shared();
    let build = format!("{}:latest", registry.repo("planning/stack-build"));
    let run = format!("{}:latest", registry.repo("planning/stack-run"));
    let fleet = Fleet::with_stack(&build, &run).await;
    build_everything(&fleet).await;

    // One request per stack image and plan: configs come from the cache after the first.
    let before = registry.requests();
    fleet.plan().await;
    let during: Vec<_> = registry.requests()[before.len()..]
        .iter()
        .filter(|r| r.path.contains("/planning/"))
        .cloned()
        .collect();
    assert_eq!(during.len(), 2, "{during:#?}");
    assert!(
        during.iter().all(|r| r.path.contains("/manifests/")),
        "{during:#?}"
    );

    let new = push_stack_image(&run, "run-2").await;
    let planned = fleet.plan().await;
    assert_eq!(
        planned.plan.summary.rebase, 3,
        "{:#?}",
        planned.plan.changes
    );
    assert_eq!(
        change(&planned, "app")
            .inputs
            .as_ref()
            .unwrap()
            .run_image
            .to_string(),
        new
    );
    let pinned = planned.pins("app").stack.unwrap().run_image.to_string();
    assert!(pinned.ends_with(&format!("@{new}")), "{pinned}");
}

#[tokio::test]
async fn a_missing_branch_blocks_only_its_images() {
    let fleet = Fleet::new().await;
    let url = fleet.repo.url();
    fleet.write_config(&[&format!(
        "[images.broken]\ntag = \"oci:out:broken\"\nbuilder = \"default\"\n\
         source = {{ git = \"{url}\", revision = \"no-such-branch\" }}\n"
    )]);
    let planned = fleet.plan().await;
    let broken = change(&planned, "broken");
    assert_eq!(broken.action, Action::Blocked);
    assert!(matches!(
        &broken.blocked_by[0].upstream,
        Upstream::Source { source } if source.ends_with("#no-such-branch")
    ));
    let error = &broken.blocked_by[0].error;
    assert!(error.contains("no-such-branch"), "{error}");
    assert!(error.contains("main"), "the refs that exist: {error}");
    assert_eq!(planned.plan.errors.len(), 1);
    assert_eq!(planned.plan.summary.build, 3);
    assert_eq!(planned.plan.summary.blocked, 1);
}

#[tokio::test]
async fn an_unreachable_remote_blocks_only_its_images_and_a_daemon_remote_resolves() {
    let fleet = Fleet::new().await;
    let daemon = fleet.repo.serve_daemon();
    let port = testkit::free_port();
    fleet.write_config(&[
        &format!(
            "[images.served]\ntag = \"oci:out:served\"\nbuilder = \"default\"\n\
             source = {{ git = \"{}\", revision = \"main\" }}\n",
            daemon.url()
        ),
        &format!(
            "[images.served-app]\ntag = \"oci:out:served-app\"\nbuilder = \"default\"\n\
             source = {{ git = \"{}\", revision = \"main\", sub-path = \"app\" }}\n",
            daemon.url()
        ),
        &format!(
            "[images.gone]\ntag = \"oci:out:gone\"\nbuilder = \"default\"\n\
             source = {{ git = \"git://127.0.0.1:{port}/repo.git\", revision = \"main\" }}\n"
        ),
    ]);
    let planned = fleet.plan().await;
    assert_eq!(change(&planned, "gone").action, Action::Blocked);
    let served = change(&planned, "served");
    assert_eq!(served.action, Action::Build);
    assert_eq!(
        served.inputs.as_ref().unwrap().source,
        change(&planned, "whole").inputs.as_ref().unwrap().source
    );
    assert_eq!(
        change(&planned, "served-app")
            .inputs
            .as_ref()
            .unwrap()
            .source,
        change(&planned, "app").inputs.as_ref().unwrap().source,
        "the same tree"
    );
    assert_eq!(
        daemon.upload_pack_requests(),
        1,
        "one connection for the remote, sub-path included"
    );
    fleet.plan().await;
    assert_eq!(daemon.upload_pack_requests(), 2, "one per plan");
}

#[tokio::test]
async fn a_trigger_is_trigger_and_images_gone_from_the_file_are_forgotten() {
    let fleet = Fleet::new().await;
    build_everything(&fleet).await;
    fleet.state().add_trigger("local").unwrap();
    let planned = fleet.plan().await;
    let local = change(&planned, "local");
    assert_eq!(
        (local.action, local.reasons.as_slice()),
        (Action::Build, &[Reason::Trigger][..])
    );

    let mut state = fleet.state();
    state.add_trigger("ghost").unwrap();
    let planned = fleet.plan().await;
    assert_eq!(change(&planned, "ghost").action, Action::Forget);
}

#[tokio::test]
async fn targets_narrow_the_plan_and_unknown_ones_are_named() {
    let fleet = Fleet::new().await;
    let state = fleet.state();
    let planned = make_plan(&fleet.config(), &state, &["app".to_string()])
        .await
        .unwrap();
    assert_eq!(
        planned
            .plan
            .changes
            .iter()
            .map(|c| c.image.as_str())
            .collect::<Vec<_>>(),
        ["app"]
    );
    let err = make_plan(&fleet.config(), &state, &["nope".to_string()])
        .await
        .unwrap_err();
    assert!(matches!(err, PlanError::UnknownTarget { .. }));
    assert_eq!(
        err.to_string(),
        "no image named `nope` in kpack.toml; the images are: app, local, whole"
    );
}

#[tokio::test]
async fn a_saved_plan_reads_back_and_goes_stale_when_the_state_moves() {
    let fleet = Fleet::new().await;
    let planned = fleet.plan().await;
    let file = planned.plan_file().unwrap();
    let path = fleet.path("plan.json");
    file.write(&path).unwrap();
    let read = PlanFile::read(&path).unwrap();
    assert_eq!(read, file);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(json["format_version"], 1);
    assert!(json["resolution"]["stacks"]["base"]["run_image_digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    let mut state = fleet.state();
    read.check_current(&state).unwrap();
    read.check_config(&fleet.config()).unwrap();
    state.add_trigger("app").unwrap();
    assert!(matches!(
        read.check_current(&state),
        Err(PlanError::Stale { .. })
    ));
}

/// Pushes an empty image carrying `labels`; returns its digest.
async fn push_labelled(reference: &str, labels: &[(&str, &str)]) -> String {
    let r = ImageRef::parse(reference).unwrap();
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: Some(ContainerConfig {
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    store().push_image(&r, config, &[]).await.unwrap();
    store().resolve_digest(&r).await.unwrap().to_string()
}

#[tokio::test]
async fn builder_images_and_buildpackage_images_are_resolved_from_their_labels() {
    let fleet = Fleet::new().await;
    let layers =
        format!(r#"{{"tests/packaged":{{"2.0.0":{{"api":"0.10","layerDiffID":"{FEED}"}}}}}}"#);
    push_labelled(
        &fleet.absolute("oci:packages:node"),
        &[("io.buildpacks.buildpack.layers", &layers)],
    )
    .await;
    let run = fleet.absolute("oci:stacks:run");
    let metadata = format!(r#"{{"images":[{{"image":"{run}"}}]}}"#);
    let builder = push_labelled(
        &fleet.absolute("oci:builders:paketo"),
        &[
            ("io.buildpacks.buildpack.layers", &layers),
            ("io.buildpacks.builder.metadata", &metadata),
            ("io.buildpacks.base.id", STACK_ID),
        ],
    )
    .await;
    let text = std::fs::read_to_string(fleet.path("kpack.toml"))
        .unwrap()
        .replace(
            "buildpacks = [\"buildpacks/hello\"]",
            "buildpacks = [\"buildpacks/hello\", { image = \"oci:packages:node\" }]",
        );
    write(&fleet.path("kpack.toml"), &text);
    let mut extra = std::fs::read_to_string(fleet.path("kpack.toml")).unwrap();
    extra.push_str(
        "\n[builders.ready]\nbuilder = \"oci:builders:paketo\"\n\n\
         [images.prebuilt]\ntag = \"oci:out:prebuilt\"\nbuilder = \"ready\"\n\
         source = { path = \"src\" }\n",
    );
    write(&fleet.path("kpack.toml"), &extra);

    let planned = fleet.plan().await;
    assert!(planned.plan.errors.is_empty(), "{:?}", planned.plan.errors);
    let local = change(&planned, "local").inputs.as_ref().unwrap();
    assert_eq!(
        local.buildpacks.keys().collect::<Vec<_>>(),
        ["tests/hello@0.1.0", "tests/packaged@2.0.0"]
    );
    assert_eq!(local.buildpacks["tests/packaged@2.0.0"].to_string(), FEED);
    let prebuilt = change(&planned, "prebuilt").inputs.as_ref().unwrap();
    assert_eq!(prebuilt.stack.as_str(), "builder:ready");
    assert_eq!(prebuilt.build_image.to_string(), builder);
    assert_eq!(prebuilt.run_image, local.run_image);
    assert_eq!(prebuilt.stack_id, STACK_ID);
    assert_eq!(
        prebuilt.buildpacks.keys().collect::<Vec<_>>(),
        ["tests/packaged@2.0.0"]
    );
}

#[tokio::test]
async fn an_upstream_that_never_answers_times_out_and_blocks_its_images() {
    // A registry that accepts connections and never says a word.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let fleet = Fleet::new().await;
    let text = std::fs::read_to_string(fleet.path("kpack.toml"))
        .unwrap()
        .replace("oci:stacks:run", &format!("{addr}/silent/run:latest"));
    write(&fleet.path("kpack.toml"), &text);
    let config = fleet.config();
    let state = fleet.state();
    let mut options = engine::resolve::ResolveOptions::new(&config, state.dir());
    options.timeout = std::time::Duration::from_secs(1);
    let started = std::time::Instant::now();
    let planned = engine::planning::plan_with(&config, state.recorded().unwrap(), &[], &options)
        .await
        .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(planned.plan.summary.blocked, 3);
    let error = &planned.plan.errors[0];
    assert_eq!(
        error.upstream,
        Upstream::RunImage {
            stack: StackKey::stack("base")
        }
    );
    assert!(error.error.contains("timed out after 1s"), "{error}");
}
