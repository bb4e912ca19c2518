//! Export from a hand-made layers directory (no buildpacks run) into an OCI layout and a
//! real registry: layers, config and labels as the reference lifecycle writes them,
//! reproducible digests, and launch layers reused rather than uploaded again.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use executors::lifecycle::cache::analyze;
use executors::lifecycle::export::{export, ExportRequest, LayersMetadata, PreviousImage};
use executors::lifecycle::stack::{run_image, RunImage};
use executors::lifecycle::DiscardLogs;
use executors::oci::layer::LayerBuilder;
use executors::oci::{
    unpack_image, ContainerConfig, CredentialSource, ImageConfig, ImageStore, StoreSettings,
    UnpackOptions,
};
use imageref::ImageRef;
use serde_json::Value;
use testkit::registry::Registry;

const UID: u32 = 1000;
const GID: u32 = 1000;

fn store() -> ImageStore {
    ImageStore::new(StoreSettings {
        credentials: CredentialSource::anonymous(),
        ..StoreSettings::default()
    })
}

fn parse(s: &str) -> ImageRef {
    ImageRef::parse(s).unwrap()
}

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn write_exec(path: &Path, content: &str) {
    write(path, content);
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A one-layer run image with the labels a stack's run image carries.
async fn push_run_image(store: &ImageStore, r: &ImageRef, work: &Path) -> ImageRef {
    let files = work.join("run-files");
    write(
        &files.join("etc/os-release"),
        "ID=testos\nVERSION_ID=\"1\"\n",
    );
    let layer = LayerBuilder::new(0, 0)
        .add(Path::new("/etc"), &files.join("etc"))
        .unwrap()
        .write(work)
        .unwrap();
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: Some(ContainerConfig {
            env: Some(vec!["PATH=/usr/bin:/bin".into(), "RUN_IMAGE=yes".into()]),
            user: Some("1000:1000".into()),
            cmd: Some(vec!["/bin/sh".into()]),
            labels: Some(
                [
                    ("io.buildpacks.base.distro.name", "testos"),
                    ("io.buildpacks.base.distro.version", "1"),
                    ("io.buildpacks.stack.id", "io.kpackd.test"),
                    ("io.buildpacks.rebasable", "true"),
                ]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    store.push_image(r, config, &[layer]).await.unwrap()
}

const METADATA_TOML: &str = r#"buildpack-default-process-type = "web"

[[buildpacks]]
id = "examples/node"
version = "1.0.0"
api = "0.12"

[[buildpacks]]
id = "examples/tools"
version = "2.0.0"
api = "0.12"

[[processes]]
type = "web"
command = ["node", "index.js"]
args = ["--port", "8080"]
direct = true
buildpack-id = "examples/node"

[[processes]]
type = "worker"
command = ["node", "worker.js"]
args = []
direct = true
buildpack-id = "examples/tools"
working-dir = "/workspace/jobs"

[[slices]]
paths = ["static/*"]

[[labels]]
key = "org.example.team"
value = "platform"
"#;

/// The layers dir and app dir a build of two buildpacks would leave.
struct Built {
    _dir: tempfile::TempDir,
    layers: PathBuf,
    app: PathBuf,
    work: PathBuf,
}

fn built() -> Built {
    let dir = tempfile::tempdir().unwrap();
    let layers = dir.path().join("layers");
    write(
        &layers.join("group.toml"),
        "[[group]]\nid = \"examples/node\"\nversion = \"1.0.0\"\napi = \"0.12\"\n\n\
         [[group]]\nid = \"examples/tools\"\nversion = \"2.0.0\"\napi = \"0.12\"\n",
    );
    write(&layers.join("config/metadata.toml"), METADATA_TOML);
    let node = layers.join("examples_node");
    write(
        &node.join("deps.toml"),
        "[types]\nlaunch = true\ncache = true\n[metadata]\nversion = \"18\"\n",
    );
    write_exec(&node.join("deps/bin/node"), "#!/bin/sh\necho node \"$@\"\n");
    write(&node.join("deps/env.launch/NODE_ENV.default"), "production");
    write(
        &node.join("runtime.toml"),
        "[types]\nlaunch = true\n[metadata]\nlevel = 3\n",
    );
    write(&node.join("runtime/lib/runtime.txt"), "runtime v1");
    write(&node.join("scratch.toml"), "[types]\nbuild = true\n");
    write(&node.join("scratch/big.txt"), "not exported");
    write(
        &node.join("launch.toml"),
        "[[processes]]\ntype = \"web\"\ncommand = [\"node\"]\n",
    );
    write(&node.join("store.toml"), "[metadata]\nbuilds = 1\n");
    let tools = layers.join("examples_tools");
    write(&tools.join("a-tool.toml"), "[types]\nlaunch = true\n");
    write_exec(&tools.join("a-tool/bin/tool"), "#!/bin/sh\necho tool\n");

    let app = dir.path().join("app");
    write(&app.join("index.js"), "console.log('hi')\n");
    write(&app.join("static/a.css"), "a{}\n");
    write(&app.join("static/b.css"), "b{}\n");
    write(&app.join("jobs/worker.js"), "work()\n");
    let work = dir.path().join("work");
    fs::create_dir_all(&work).unwrap();
    Built {
        _dir: dir,
        layers,
        app,
        work,
    }
}

fn request<'a>(
    b: &'a Built,
    run: &'a RunImage,
    previous: &'a PreviousImage,
    tag: &'a ImageRef,
    work: &'a Path,
) -> ExportRequest<'a> {
    ExportRequest {
        layers_dir: &b.layers,
        app_dir: &b.app,
        work_dir: work,
        run_image: run,
        run_image_name: "registry.example/stacks/run:1".into(),
        previous,
        uid: UID,
        gid: GID,
        tag,
        additional_tags: &[],
        project_metadata: None,
        created: None,
        default_process: None,
        layer_compression: Default::default(),
    }
}

fn fresh_work(b: &Built, name: &str) -> PathBuf {
    let w = b.work.join(name);
    fs::create_dir_all(&w).unwrap();
    w
}

fn label(config: &ImageConfig, key: &str) -> Value {
    serde_json::from_str(&config.labels()[key]).unwrap()
}

#[tokio::test]
async fn export_to_a_layout_writes_what_the_lifecycle_writes() {
    let store = store();
    let b = built();
    let layout = b.work.join("layout");
    let run_ref = push_run_image(
        &store,
        &parse(&format!("oci:{}:run", layout.display())),
        &b.work,
    )
    .await;
    let run = run_image(&store, &run_ref).await.unwrap();
    let previous = PreviousImage::default();
    let tag = parse(&format!("oci:{}:app", layout.display()));
    let work = fresh_work(&b, "one");
    let report = export(
        &store,
        &request(&b, &run, &previous, &tag, &work),
        &DiscardLogs,
    )
    .await
    .unwrap();

    let image = store.image(&tag).await.unwrap();
    assert_eq!(image.digest(), &report.digest);
    let diff_ids = &image.config.rootfs.diff_ids;
    // run, node/deps, node/runtime, tools/a-tool, slice, rest of app, launcher, config,
    // process types.
    assert_eq!(
        image.manifest.layers.len(),
        9,
        "{:#?}",
        image.manifest.layers
    );
    assert_eq!(diff_ids.len(), 9);
    assert_eq!(diff_ids[0], run.top_layer);

    let cfg = image.config.config.clone().unwrap();
    assert_eq!(
        cfg.entrypoint.as_deref(),
        Some(&["/cnb/process/web".to_string()][..])
    );
    assert_eq!(cfg.working_dir.as_deref(), Some("/workspace"));
    assert_eq!(cfg.cmd, None);
    let env = cfg.env.clone().unwrap();
    for expected in [
        "CNB_LAYERS_DIR=/layers",
        "CNB_APP_DIR=/workspace",
        "CNB_PLATFORM_API=0.12",
        "PATH=/cnb/process:/cnb/lifecycle:/usr/bin:/bin",
        "RUN_IMAGE=yes",
    ] {
        assert!(env.contains(&expected.to_string()), "{expected} in {env:?}");
    }
    assert_eq!(
        image.config.created.as_deref(),
        Some("1980-01-01T00:00:01Z")
    );
    assert_eq!(
        (image.config.os.as_str(), image.config.architecture.as_str()),
        ("linux", "amd64")
    );

    let labels = image.config.labels();
    assert_eq!(labels["io.buildpacks.base.distro.name"], "testos");
    assert_eq!(labels["io.buildpacks.stack.id"], "io.kpackd.test");
    assert_eq!(labels["io.buildpacks.rebasable"], "true");
    assert_eq!(labels["org.example.team"], "platform");
    assert_eq!(labels["io.buildpacks.project.metadata"], "{}");

    let md: LayersMetadata =
        serde_json::from_str(&labels["io.buildpacks.lifecycle.metadata"]).unwrap();
    assert_eq!(md.run_image.top_layer, run.top_layer.to_string());
    assert_eq!(md.run_image.image, "registry.example/stacks/run:1");
    // The run image by digest, in the form a rebase writes too (platform spec,
    // `io.buildpacks.lifecycle.metadata`: `runImage.reference` uniquely identifies it).
    assert_eq!(
        md.run_image.reference,
        format!("oci:{}:run@{}", layout.display(), run.image.digest())
    );
    let node = md.buildpack("examples/node").unwrap();
    assert_eq!(node.version, "1.0.0");
    assert_eq!(node.layers.len(), 2, "the build-only layer is not exported");
    let deps = &node.layers["deps"];
    assert_eq!(deps.sha, diff_ids[1].to_string());
    assert_eq!(deps.data["version"], "18");
    assert!(deps.launch && deps.cache && !deps.build);
    assert_eq!(node.layers["runtime"].sha, diff_ids[2].to_string());
    assert_eq!(node.store.as_ref().unwrap().metadata["builds"], 1);
    assert_eq!(
        md.buildpack("examples/tools").unwrap().layers["a-tool"].sha,
        diff_ids[3].to_string()
    );
    assert_eq!(md.app.len(), 2);
    assert_eq!(md.app[0].sha, diff_ids[4].to_string());
    assert_eq!(md.app[1].sha, diff_ids[5].to_string());
    assert_eq!(md.launcher.sha, diff_ids[6].to_string());
    assert_eq!(md.config.sha, diff_ids[7].to_string());
    assert_eq!(md.process_types.sha, diff_ids[8].to_string());
    let raw = label(&image.config, "io.buildpacks.lifecycle.metadata");
    assert_eq!(
        raw["stack"]["runImage"]["image"],
        "registry.example/stacks/run:1"
    );

    let build = label(&image.config, "io.buildpacks.build.metadata");
    assert_eq!(build["buildpack-default-process-type"], "web");
    assert_eq!(build["buildpacks"][1]["id"], "examples/tools");
    assert_eq!(build["processes"][0]["type"], "web");
    assert_eq!(build["processes"][0]["command"][1], "index.js");
    assert_eq!(build["processes"][0]["buildpackID"], "examples/node");
    assert_eq!(build["processes"][1]["working-dir"], "/workspace/jobs");
    assert!(build["launcher"]["version"].is_string());
    // The launcher's source: the commit kpackd was built from (never empty).
    let commit = &build["launcher"]["source"]["git"]["commit"];
    assert_eq!(commit, executors::lifecycle::export::LAUNCHER_COMMIT);
    assert!(commit
        .as_str()
        .is_some_and(|c| c.len() == 40 || c == "unknown"));

    assert_eq!(report.processes, ["web", "worker"]);
    assert_eq!(report.default_process.as_deref(), Some("web"));
    assert!(report.rebasable);
    assert_eq!(
        report.buildpacks,
        [
            ("examples/node".to_string(), "1.0.0".to_string()),
            ("examples/tools".to_string(), "2.0.0".to_string())
        ]
    );

    // What the image holds, unpacked.
    let root = b.work.join("root");
    unpack_image(&store, &tag, &root, &UnpackOptions { chown: false })
        .await
        .unwrap();
    assert_eq!(
        fs::read_to_string(root.join("workspace/index.js")).unwrap(),
        "console.log('hi')\n"
    );
    assert!(root.join("workspace/static/a.css").is_file());
    assert!(root.join("workspace/jobs/worker.js").is_file());
    assert!(root.join("layers/examples_node/deps/bin/node").is_file());
    assert!(!root.join("layers/examples_node/scratch").exists());
    assert!(root.join("layers/config/metadata.toml").is_file());
    assert!(root.join("etc/os-release").is_file());
    let launcher = fs::metadata(root.join("cnb/lifecycle/launcher")).unwrap();
    assert_eq!(launcher.len(), executors::launcher_binary().len() as u64);
    assert_eq!(launcher.permissions().mode() & 0o777, 0o755);
    for process in ["web", "worker"] {
        assert_eq!(
            fs::read_link(root.join("cnb/process").join(process)).unwrap(),
            Path::new("/cnb/lifecycle/launcher")
        );
    }
}

#[tokio::test]
async fn same_inputs_give_the_same_digest() {
    let store = store();
    let b = built();
    let layout = b.work.join("layout");
    let run_ref = push_run_image(
        &store,
        &parse(&format!("oci:{}:run", layout.display())),
        &b.work,
    )
    .await;
    let run = run_image(&store, &run_ref).await.unwrap();
    let previous = PreviousImage::default();
    let first_tag = parse(&format!("oci:{}:first", layout.display()));
    let other_layout = b.work.join("other-layout");
    let second_tag = parse(&format!("oci:{}:second", other_layout.display()));
    let first = export(
        &store,
        &request(&b, &run, &previous, &first_tag, &fresh_work(&b, "a")),
        &DiscardLogs,
    )
    .await
    .unwrap();
    let second = export(
        &store,
        &request(&b, &run, &previous, &second_tag, &fresh_work(&b, "b")),
        &DiscardLogs,
    )
    .await
    .unwrap();
    assert_eq!(first.digest, second.digest);

    let work_c = fresh_work(&b, "c");
    let mut dated = request(&b, &run, &previous, &second_tag, &work_c);
    dated.created = Some(1_700_000_000);
    let third = export(&store, &dated, &DiscardLogs).await.unwrap();
    assert_ne!(third.digest, first.digest);
    let image = store.image(&second_tag).await.unwrap();
    assert_eq!(
        image.config.created.as_deref(),
        Some("2023-11-14T22:13:20Z")
    );
}

#[tokio::test]
async fn second_export_to_a_registry_uploads_only_what_changed() {
    let reg = Registry::shared();
    let store = store();
    let b = built();
    let run_ref = push_run_image(
        &store,
        &parse(&format!("{}:1", reg.repo("export/run"))),
        &b.work,
    )
    .await;
    let run = run_image(&store, &run_ref).await.unwrap();
    let tag = parse(&format!("{}:latest", reg.repo("export/app")));

    let previous = analyze(&store, Some(&tag), &DiscardLogs).await;
    assert!(previous.reference.is_none());
    let first = export(
        &store,
        &request(&b, &run, &previous, &tag, &fresh_work(&b, "one")),
        &DiscardLogs,
    )
    .await
    .unwrap();
    let after_first = reg.blob_uploads("export/app");
    // The run image's layer is mounted from export/run, never sent nor read; its config
    // is not read either: this store pushed it, and kept it.
    assert_eq!(
        reg.count("GET", "/v2/export/run/blobs/"),
        0,
        "no blob of the run image is read"
    );
    assert_eq!(
        first.blobs_uploaded, 9,
        "8 new layers and the config: {first:?}"
    );

    // The app changes; no launch layer does.
    write(&b.app.join("index.js"), "console.log('changed')\n");
    let previous = analyze(&store, Some(&tag), &DiscardLogs).await;
    assert_eq!(previous.metadata.buildpacks.len(), 2);
    let second = export(
        &store,
        &request(&b, &run, &previous, &tag, &fresh_work(&b, "two")),
        &DiscardLogs,
    )
    .await
    .unwrap();
    assert_ne!(second.digest, first.digest);
    assert_eq!(
        reg.blob_uploads("export/app") - after_first,
        2,
        "only the changed app layer and the config"
    );
    assert_eq!(second.blobs_uploaded, 2);

    // A launch layer left as `<layer>.toml` only is reused from the previous image: the
    // same image results, and nothing is sent.
    fs::remove_dir_all(b.layers.join("examples_node/runtime")).unwrap();
    let previous = analyze(&store, Some(&tag), &DiscardLogs).await;
    let before = reg.blob_uploads("export/app");
    let third = export(
        &store,
        &request(&b, &run, &previous, &tag, &fresh_work(&b, "three")),
        &DiscardLogs,
    )
    .await
    .unwrap();
    assert_eq!(third.digest, second.digest);
    assert_eq!(reg.blob_uploads("export/app"), before);
    assert_eq!(third.blobs_uploaded, 0);

    // Additional tags name the same manifest.
    let extra = parse(&format!("{}:extra", reg.repo("export/app")));
    let work_four = fresh_work(&b, "four");
    let mut tagged = request(&b, &run, &previous, &tag, &work_four);
    let extras = [extra.clone()];
    tagged.additional_tags = &extras;
    let fourth = export(&store, &tagged, &DiscardLogs).await.unwrap();
    assert_eq!(store.resolve_digest(&extra).await.unwrap(), fourth.digest);
}

#[tokio::test]
async fn a_launch_layer_without_dir_or_previous_image_is_an_error() {
    let store = store();
    let b = built();
    let layout = b.work.join("layout");
    let run_ref = push_run_image(
        &store,
        &parse(&format!("oci:{}:run", layout.display())),
        &b.work,
    )
    .await;
    let run = run_image(&store, &run_ref).await.unwrap();
    fs::remove_dir_all(b.layers.join("examples_node/runtime")).unwrap();
    let previous = PreviousImage::default();
    let tag = parse(&format!("oci:{}:app", layout.display()));
    let err = export(
        &store,
        &request(&b, &run, &previous, &tag, &fresh_work(&b, "x")),
        &DiscardLogs,
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("runtime") && text.contains("cannot reuse"),
        "{text}"
    );
    assert!(
        store.resolve_digest(&tag).await.is_err(),
        "nothing was tagged"
    );

    fs::remove_dir_all(b.layers.join("examples_node/deps")).unwrap();
    write(&b.layers.join("examples_node/runtime/x"), "x");
    let err = export(
        &store,
        &request(&b, &run, &previous, &tag, &fresh_work(&b, "y")),
        &DiscardLogs,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("cache=true"), "{err}");
}

#[tokio::test]
async fn the_image_can_start_another_process() {
    let store = store();
    let b = built();
    let layout = b.work.join("layout");
    let run_ref = push_run_image(
        &store,
        &parse(&format!("oci:{}:run", layout.display())),
        &b.work,
    )
    .await;
    let run = run_image(&store, &run_ref).await.unwrap();
    let previous = PreviousImage::default();
    let tag = parse(&format!("oci:{}:app", layout.display()));
    let work = fresh_work(&b, "worker");
    let mut req = request(&b, &run, &previous, &tag, &work);
    req.default_process = Some("worker");
    let report = export(&store, &req, &DiscardLogs).await.unwrap();
    assert_eq!(report.default_process.as_deref(), Some("worker"));
    let image = store.image(&tag).await.unwrap();
    assert_eq!(
        image.config.config.unwrap().entrypoint.unwrap(),
        ["/cnb/process/worker"]
    );

    let work = fresh_work(&b, "unknown");
    let mut req = request(&b, &run, &previous, &tag, &work);
    req.default_process = Some("cron");
    let err = export(&store, &req, &DiscardLogs).await.unwrap_err();
    assert!(err.to_string().contains("`cron`"), "{err}");
}

#[tokio::test]
async fn cache_and_restore_follow_the_layer_types_table() {
    use executors::lifecycle::cache::{restore, save, CacheDir};
    use executors::lifecycle::descriptor::Group;

    let store = store();
    let b = built();
    let node = b.layers.join("examples_node");
    write(
        &node.join("cacheonly.toml"),
        "[types]\ncache = true\n[metadata]\nkept = \"yes\"\n",
    );
    write(&node.join("cacheonly/file"), "cached contents");
    write(
        &node.join("stale.toml"),
        "[types]\nlaunch = true\ncache = true\n",
    );
    write(&node.join("stale/x"), "as exported");
    let layout = b.work.join("layout");
    let run_ref = push_run_image(
        &store,
        &parse(&format!("oci:{}:run", layout.display())),
        &b.work,
    )
    .await;
    let run = run_image(&store, &run_ref).await.unwrap();
    let tag = parse(&format!("oci:{}:app", layout.display()));
    let none = PreviousImage::default();
    let work = fresh_work(&b, "export");
    export(&store, &request(&b, &run, &none, &tag, &work), &DiscardLogs)
        .await
        .unwrap();

    // The cache gets a `stale` that differs from the image's.
    write(&node.join("stale/x"), "changed after export");
    let group = Group::read(&b.layers.join("group.toml")).unwrap().group;
    let cache = CacheDir::at(b.work.join("cache"));
    let saved = save(
        &cache,
        &b.layers,
        &fresh_work(&b, "save"),
        &group,
        &Default::default(),
        (UID, GID),
        &DiscardLogs,
    )
    .await
    .unwrap();
    let cached: Vec<_> = saved.buildpacks[0].layers.keys().cloned().collect();
    assert_eq!(cached, ["cacheonly", "deps", "stale"]);

    let previous = analyze(&store, Some(&tag), &DiscardLogs).await;
    let fresh = b.work.join("layers-2");
    let report = restore(
        &fresh,
        &fresh_work(&b, "restore"),
        &group,
        &previous,
        &cache,
        &DiscardLogs,
    )
    .await
    .unwrap();
    let node = fresh.join("examples_node");
    assert_eq!(
        report.contents,
        ["examples_node/cacheonly", "examples_node/deps"]
    );
    // launch+cache: metadata (no [types]) and contents.
    let deps = fs::read_to_string(node.join("deps.toml")).unwrap();
    assert!(
        deps.contains("version = \"18\"") && !deps.contains("types"),
        "{deps}"
    );
    assert!(node.join("deps/bin/node").is_file());
    assert_eq!(
        fs::metadata(node.join("deps/bin/node"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    // cache only: metadata and contents.
    assert!(fs::read_to_string(node.join("cacheonly.toml"))
        .unwrap()
        .contains("kept = \"yes\""));
    assert_eq!(
        fs::read_to_string(node.join("cacheonly/file")).unwrap(),
        "cached contents"
    );
    // launch only: metadata from the image label, no contents.
    assert!(fs::read_to_string(node.join("runtime.toml"))
        .unwrap()
        .contains("level = 3"));
    assert!(!node.join("runtime").exists());
    assert!(fresh.join("examples_tools/a-tool.toml").is_file());
    // build only: nothing. Image and cache disagree: nothing.
    assert!(!node.join("scratch.toml").exists());
    assert!(!node.join("stale.toml").exists() && !node.join("stale").exists());
    assert!(fs::read_to_string(node.join("store.toml"))
        .unwrap()
        .contains("builds = 1"));

    // A corrupt cached blob is skipped, metadata and all.
    let diff_id = imageref::Digest::parse(&saved.buildpacks[0].layers["cacheonly"].sha).unwrap();
    let blob = cache.layer_path(&diff_id);
    let other = cache
        .layer_path(&imageref::Digest::parse(&saved.buildpacks[0].layers["deps"].sha).unwrap());
    fs::copy(other, &blob).unwrap();
    let again = b.work.join("layers-3");
    let report = restore(
        &again,
        &fresh_work(&b, "restore-2"),
        &group,
        &previous,
        &cache,
        &DiscardLogs,
    )
    .await
    .unwrap();
    assert_eq!(report.contents, ["examples_node/deps"]);
    assert!(!again.join("examples_node/cacheonly.toml").exists());
    assert!(!again.join("examples_node/cacheonly").exists());
}
