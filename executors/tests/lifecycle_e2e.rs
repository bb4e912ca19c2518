//! A whole build with `build_image`: a shell buildpack on a minimal stack (one image from
//! the host's own programs, used as build and run image, in an OCI layout), then the app
//! image unpacked — by kpackd and, separately, by `umoci` — and its default process run
//! through the launcher inside bwrap. A second build restores the cache layer and gives
//! the same image.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use executors::lifecycle::descriptor::{OrderEntry, OrderGroup};
use executors::lifecycle::run::{build_image, BuildRequest};
use executors::lifecycle::{LogSink, Phase};
use executors::oci::layer::LayerBuilder;
use executors::oci::{
    unpack_image, ContainerConfig, CredentialSource, ImageConfig, ImageStore, StoreSettings,
    UnpackOptions,
};
use executors::sandbox::Sandbox;
use imageref::ImageRef;
use testkit::rootfs::{minimal_rootfs, CNB_GID, CNB_UID};

#[derive(Default)]
struct Lines(Mutex<Vec<(Phase, Option<String>, String)>>);

impl LogSink for Lines {
    fn line(&self, phase: Phase, buildpack: Option<&str>, line: &str) {
        self.0
            .lock()
            .unwrap()
            .push((phase, buildpack.map(str::to_string), line.to_string()));
    }
}

impl Lines {
    fn text(&self) -> String {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(p, bp, l)| {
                format!(
                    "[{p}] {}{l}\n",
                    bp.as_deref().map(|b| format!("{b}: ")).unwrap_or_default()
                )
            })
            .collect()
    }
}

fn write(path: &Path, content: &str, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// The minimal root as a one-layer stack image (build and run image at once).
async fn push_stack(store: &ImageStore, r: &ImageRef, work: &Path) -> ImageRef {
    let root = work.join("stack-root");
    minimal_rootfs(&root, &[]).unwrap();
    let mut builder = LayerBuilder::new(0, 0);
    let mut names: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        builder
            .add(&Path::new("/").join(&name), &root.join(&name))
            .unwrap();
    }
    let layer = builder.write(work).unwrap();
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: Some(ContainerConfig {
            env: Some(vec![
                "PATH=/usr/bin:/bin".into(),
                format!("CNB_USER_ID={CNB_UID}"),
                format!("CNB_GROUP_ID={CNB_GID}"),
                "HOME=/home/cnb".into(),
            ]),
            user: Some(format!("{CNB_UID}:{CNB_GID}")),
            labels: Some(BTreeMap::from([
                (
                    "io.buildpacks.stack.id".to_string(),
                    "io.kpackd.minimal".to_string(),
                ),
                (
                    "io.buildpacks.base.id".to_string(),
                    "io.kpackd.minimal".to_string(),
                ),
            ])),
            ..Default::default()
        }),
        ..Default::default()
    };
    store.push_image(r, config, &[layer]).await.unwrap()
}

const BUILD: &str = r#"#!/bin/sh
set -e
layers="$1"
echo "hello buildpack: building in $PWD as $(id -u):$(id -g)"
echo "plan: $(cat "$3" | tr '\n' ' ')"
mkdir -p "$layers/hello/bin" "$layers/hello/env.launch"
cat > "$layers/hello/bin/hello" <<'EOF'
#!/bin/sh
echo "$GREETING says $(cat /workspace/message.txt) from $PWD with $*"
EOF
chmod 755 "$layers/hello/bin/hello"
printf 'the hello buildpack' > "$layers/hello/env.launch/GREETING.override"
printf '[types]\nlaunch = true\n[metadata]\nversion = "1"\n' > "$layers/hello.toml"
if [ -f "$layers/deps/made-by" ]; then
  echo "cache restored: $(cat "$layers/deps/made-by")"
else
  mkdir -p "$layers/deps"
  echo "build one" > "$layers/deps/made-by"
fi
printf '[types]\nbuild = true\ncache = true\n' > "$layers/deps.toml"
cat > "$layers/launch.toml" <<'EOF'
[[processes]]
type = "web"
command = ["hello"]
args = ["default-args"]
default = true
EOF
"#;

fn buildpack(dir: &Path) -> PathBuf {
    let bp = dir.join("hello-bp");
    write(
        &bp.join("buildpack.toml"),
        "api = \"0.12\"\n[buildpack]\nid = \"examples/hello\"\nversion = \"1.0.0\"\n\n[[targets]]\nos = \"linux\"\n",
        0o644,
    );
    write(
        &bp.join("bin/detect"),
        "#!/bin/sh\ntest -f message.txt || exit 100\nprintf '[[provides]]\\nname = \"hello\"\\n[[requires]]\\nname = \"hello\"\\n' > \"$2\"\n",
        0o755,
    );
    write(&bp.join("bin/build"), BUILD, 0o755);
    bp
}

/// A request to build `app` with the hello buildpack (in `buildpacks`) on `stack` into
/// `tag`, state under `work/state`, cache on; tests change what they need.
fn hello_request(
    image: &str,
    work: &Path,
    stack: &ImageRef,
    buildpacks: PathBuf,
    app: &Path,
    tag: &ImageRef,
) -> BuildRequest {
    let dirs = in_state(image, &work.join("state"));
    BuildRequest {
        image: image.into(),
        tag: tag.clone(),
        additional_tags: vec![],
        build_image: stack.clone(),
        run_image: stack.clone(),
        buildpack_dirs: vec![buildpacks],
        order: vec![OrderGroup {
            group: vec![OrderEntry {
                id: "examples/hello".into(),
                version: String::new(),
                optional: false,
            }],
        }],
        app_dir: app.to_path_buf(),
        env: BTreeMap::new(),
        network: false,
        work_root: dirs.work_root,
        stacks_dir: dirs.stacks_dir,
        cache_dir: dirs.cache_dir,
        previous_image: None,
        cache: true,
        cache_image: None,
        project_metadata: None,
        image_group: None,
        project_descriptor: None,
        default_process: None,
        layer_compression: Default::default(),
    }
}

/// The directories of a build of `image` in the state directory `state`, where kpackd
/// keeps them.
struct StateDirs {
    work_root: PathBuf,
    stacks_dir: PathBuf,
    cache_dir: PathBuf,
}

fn in_state(image: &str, state: &Path) -> StateDirs {
    StateDirs {
        work_root: state.join("work"),
        stacks_dir: state.join("stacks"),
        cache_dir: state.join("cache").join(image),
    }
}

/// Runs `program` of the unpacked app image `root` as a container runtime would: the
/// image's Env and WorkingDir, as the CNB user.
async fn run_in(root: &Path, config: &ImageConfig, program: &str) -> String {
    let runtime = config.config.clone().unwrap();
    let env: BTreeMap<String, String> = runtime
        .env
        .unwrap()
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let out = Sandbox::new(root, CNB_UID, CNB_GID)
        .command(
            Path::new(program),
            &[],
            &env,
            Path::new(runtime.working_dir.as_deref().unwrap()),
        )
        .unwrap()
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn build_run_and_rebuild_from_cache() {
    testkit::require("bwrap", "bubblewrap");
    testkit::require("umoci", "umoci");
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let store = ImageStore::new(StoreSettings {
        credentials: CredentialSource::anonymous(),
        ..StoreSettings::default()
    });
    let layout = work.join("layout");
    let stack = push_stack(
        &store,
        &ImageRef::parse(&format!("oci:{}:stack", layout.display())).unwrap(),
        work,
    )
    .await;
    let app = work.join("app");
    write(&app.join("message.txt"), "hi there", 0o644);
    let tag = ImageRef::parse(&format!("oci:{}:app", layout.display())).unwrap();
    let req = BuildRequest {
        env: BTreeMap::from([("GREETING_STYLE".to_string(), "loud".to_string())]),
        ..hello_request("hello", work, &stack, buildpack(work), &app, &tag)
    };

    let logs = Lines::default();
    let first = build_image(&store, &req, &logs)
        .await
        .unwrap_or_else(|e| panic!("build failed: {e}\n{}", logs.text()));
    let text = logs.text();
    assert!(
        text.contains("hello buildpack: building in /workspace as 1000:1000"),
        "{text}"
    );
    assert!(!text.contains("cache restored"), "{text}");
    assert_eq!(
        first.buildpacks,
        [("examples/hello".to_string(), "1.0.0".to_string())]
    );
    assert_eq!(first.processes, ["web"]);
    assert_eq!(first.default_process.as_deref(), Some("web"));
    assert_eq!(first.cache_layers_restored, 0);
    assert!(
        fs::read_dir(work.join("state/work"))
            .unwrap()
            .next()
            .is_none(),
        "work dirs cleaned"
    );
    assert!(work
        .join("state/stacks")
        .join(stack_digest(&store, &stack).await)
        .join("rootfs/bin")
        .exists());

    // kpackd's unpack, then the default process through the launcher in bwrap.
    let image = store.image(&tag).await.unwrap();
    assert_eq!(image.digest(), &first.digest);
    let root = work.join("unpacked");
    unpack_image(&store, &tag, &root, &UnpackOptions { chown: false })
        .await
        .unwrap();
    let config = image.config.clone();
    assert_eq!(
        config.config.as_ref().unwrap().entrypoint.as_deref(),
        Some(&["/cnb/process/web".to_string()][..])
    );
    let out = run_in(&root, &config, "/cnb/process/web").await;
    assert_eq!(
        out,
        "the hello buildpack says hi there from /workspace with default-args\n"
    );
    // The bare launcher chooses no process (it needs a command, as the reference
    // launcher does): executors/tests/launcher.rs covers it.

    // umoci's unpack of the same image.
    let bundle = work.join("bundle");
    let status = Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:app", layout.display()))
        .arg(&bundle)
        .status()
        .unwrap();
    assert!(status.success(), "umoci unpack failed");
    let out = run_in(&bundle.join("rootfs"), &config, "/cnb/process/web").await;
    assert_eq!(
        out,
        "the hello buildpack says hi there from /workspace with default-args\n"
    );

    // Second build: the cache layer comes back, the image is the same.
    let logs = Lines::default();
    let second = build_image(&store, &req, &logs)
        .await
        .unwrap_or_else(|e| panic!("second build failed: {e}\n{}", logs.text()));
    let text = logs.text();
    assert!(text.contains("cache restored: build one"), "{text}");
    assert_eq!(second.cache_layers_restored, 1);
    assert_eq!(second.digest, first.digest, "same inputs, same image");
    assert_eq!(
        second.layers_uploaded, 0,
        "nothing new to write: {second:?}"
    );
}

async fn stack_digest(store: &ImageStore, r: &ImageRef) -> String {
    store.image(r).await.unwrap().digest().hex().to_string()
}

#[tokio::test]
async fn rebuild_to_a_registry_sends_only_the_changed_app_layer() {
    testkit::require("bwrap", "bubblewrap");
    let reg = testkit::registry::Registry::shared();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let store = ImageStore::new(StoreSettings {
        credentials: CredentialSource::anonymous(),
        ..StoreSettings::default()
    });
    let stack = push_stack(
        &store,
        &ImageRef::parse(&format!("{}:1", reg.repo("e2e/stack"))).unwrap(),
        work,
    )
    .await;
    let app = work.join("app");
    write(&app.join("message.txt"), "first", 0o644);
    let tag = ImageRef::parse(&format!("{}:latest", reg.repo("e2e/app"))).unwrap();
    let req = BuildRequest {
        additional_tags: vec![ImageRef::parse(&format!("{}:b1", reg.repo("e2e/app"))).unwrap()],
        project_metadata: Some(
            serde_json::json!({"source": {"type": "git", "version": {"commit": "abc"}}}),
        ),
        default_process: Some("web".into()),
        ..hello_request("e2e-app", work, &stack, buildpack(work), &app, &tag)
    };
    let logs = Lines::default();
    let first = build_image(&store, &req, &logs)
        .await
        .unwrap_or_else(|e| panic!("build failed: {e}\n{}", logs.text()));
    let uploads = reg.blob_uploads("e2e/app");
    assert_eq!(
        store.resolve_digest(&req.additional_tags[0]).await.unwrap(),
        first.digest
    );
    let image = store.image(&tag).await.unwrap();
    assert_eq!(
        image.config.labels()["io.buildpacks.project.metadata"],
        r#"{"source":{"type":"git","version":{"commit":"abc"}}}"#
    );

    write(&app.join("message.txt"), "second", 0o644);
    let logs = Lines::default();
    let second = build_image(&store, &req, &logs)
        .await
        .unwrap_or_else(|e| panic!("second build failed: {e}\n{}", logs.text()));
    assert!(logs.text().contains("cache restored: build one"));
    assert_ne!(second.digest, first.digest);
    assert_eq!(
        reg.blob_uploads("e2e/app") - uploads,
        2,
        "the app layer and the config; the buildpack's layer is reused"
    );
    assert_eq!(second.layers_uploaded, 2, "{second:?}");
}

#[tokio::test]
async fn concurrent_builds_unpack_a_stack_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::new(StoreSettings {
        credentials: CredentialSource::anonymous(),
        ..StoreSettings::default()
    });
    let layout = dir.path().join("layout");
    let stack = push_stack(
        &store,
        &ImageRef::parse(&format!("oci:{}:stack", layout.display())).unwrap(),
        dir.path(),
    )
    .await;
    let state = dir.path().join("state");
    let stacks_dir = state.join("stacks");
    let logs = Lines::default();
    let (a, b) = tokio::join!(
        executors::lifecycle::stack::prepare(&store, &stack, &stacks_dir, &logs),
        executors::lifecycle::stack::prepare(&store, &stack, &stacks_dir, &logs),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.rootfs, b.rootfs);
    assert_eq!((a.uid, a.gid), (CNB_UID, CNB_GID));
    assert_eq!(a.path, "/usr/bin:/bin");
    assert_eq!(a.stack_id.as_deref(), Some("io.kpackd.minimal"));
    assert_eq!(a.target.os, "linux");
    for mount_point in ["cnb/buildpacks", "layers", "platform", "workspace"] {
        assert!(a.rootfs.join(mount_point).is_dir(), "{mount_point}");
    }
    assert_eq!(
        logs.text().matches("Unpacking build image").count(),
        1,
        "{}",
        logs.text()
    );
    let stacks: Vec<_> = fs::read_dir(state.join("stacks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert_eq!(stacks.len(), 1, "no temp dirs left: {stacks:?}");
}

#[tokio::test]
async fn a_failing_build_pushes_nothing_and_cleans_up() {
    testkit::require("bwrap", "bubblewrap");
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let store = ImageStore::new(StoreSettings {
        credentials: CredentialSource::anonymous(),
        ..StoreSettings::default()
    });
    let layout = work.join("layout");
    let stack = push_stack(
        &store,
        &ImageRef::parse(&format!("oci:{}:stack", layout.display())).unwrap(),
        work,
    )
    .await;
    let bp = buildpack(work);
    write(
        &bp.join("bin/build"),
        "#!/bin/sh\necho 'about to fail'\nexit 3\n",
        0o755,
    );
    let app = work.join("app");
    write(&app.join("message.txt"), "hi", 0o644);
    let tag = ImageRef::parse(&format!("oci:{}:app", layout.display())).unwrap();
    let req = hello_request("failing", work, &stack, bp, &app, &tag);
    let logs = Lines::default();
    let err = build_image(&store, &req, &logs).await.unwrap_err();
    assert!(
        matches!(err, executors::lifecycle::run::LifecycleError::Build(_)),
        "{err}"
    );
    assert!(logs.text().contains("about to fail"), "{}", logs.text());
    assert!(store.resolve_digest(&tag).await.is_err(), "no image tagged");
    assert!(fs::read_dir(work.join("state/work"))
        .unwrap()
        .next()
        .is_none());
}

/// `cache = { image = "<ref>" }`: the cache layers go to a cache image, and a build on
/// another machine (a fresh state directory) restores them from it.
#[tokio::test]
async fn a_cache_image_carries_the_cache_to_a_fresh_state_directory() {
    testkit::require("bwrap", "bubblewrap");
    let reg = testkit::registry::Registry::shared();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let store = ImageStore::new(StoreSettings {
        credentials: CredentialSource::anonymous(),
        ..StoreSettings::default()
    });
    let stack = push_stack(
        &store,
        &ImageRef::parse(&format!("{}:1", reg.repo("cache-image/stack"))).unwrap(),
        work,
    )
    .await;
    let app = work.join("app");
    write(&app.join("message.txt"), "first", 0o644);
    let cache_ref = ImageRef::parse(&format!("{}:cache", reg.repo("cache-image/app"))).unwrap();
    let tag = ImageRef::parse(&format!("{}:latest", reg.repo("cache-image/app"))).unwrap();
    let mut req = BuildRequest {
        cache_image: Some(cache_ref.clone()),
        default_process: Some("web".into()),
        ..hello_request("cached-app", work, &stack, buildpack(work), &app, &tag)
    };
    let dirs = in_state("cached-app", &work.join("machine-a"));
    (req.work_root, req.stacks_dir, req.cache_dir) =
        (dirs.work_root, dirs.stacks_dir, dirs.cache_dir);
    let logs = Lines::default();
    build_image(&store, &req, &logs)
        .await
        .unwrap_or_else(|e| panic!("build failed: {e}\n{}", logs.text()));
    assert!(logs.text().contains("No cache image at"), "{}", logs.text());
    assert!(!logs.text().contains("cache restored"), "{}", logs.text());
    let cache_image = store.image(&cache_ref).await.unwrap();
    let label = &cache_image.config.labels()["io.buildpacks.lifecycle.cache.metadata"];
    let metadata: serde_json::Value = serde_json::from_str(label).unwrap();
    let cached = &metadata["buildpacks"][0];
    assert_eq!(cached["key"], "examples/hello");
    let sha = cached["layers"]["deps"]["sha"].as_str().unwrap_or_default();
    assert_eq!(
        cache_image.config.rootfs.diff_ids,
        vec![imageref::Digest::parse(sha).unwrap()],
        "one layer, the cached one: {label}"
    );

    // Another machine: an empty state directory. The cache comes from the image.
    let dirs = in_state("cached-app", &work.join("machine-b"));
    (req.work_root, req.stacks_dir, req.cache_dir) =
        (dirs.work_root, dirs.stacks_dir, dirs.cache_dir);
    write(&app.join("message.txt"), "second", 0o644);
    let logs = Lines::default();
    let second = build_image(&store, &req, &logs)
        .await
        .unwrap_or_else(|e| panic!("second build failed: {e}\n{}", logs.text()));
    assert!(
        logs.text().contains("1 layers, 1 downloaded"),
        "{}",
        logs.text()
    );
    assert!(logs.text().contains("cache restored"), "{}", logs.text());
    assert!(second.cache_layers_restored >= 1, "{second:?}");

    // Again on that machine: the local copy is current, nothing is downloaded, and the
    // unchanged cache layer is not uploaded again.
    let uploads = reg.blob_uploads("cache-image/app");
    write(&app.join("message.txt"), "third", 0o644);
    let logs = Lines::default();
    build_image(&store, &req, &logs)
        .await
        .unwrap_or_else(|e| panic!("third build failed: {e}\n{}", logs.text()));
    assert!(
        logs.text().contains("1 layers, 0 downloaded"),
        "{}",
        logs.text()
    );
    assert_eq!(
        reg.blob_uploads("cache-image/app") - uploads,
        2,
        "the app image's changed app layer and config; the cache image is unchanged"
    );
}

/// The app of the project-descriptor case: like the buildpacks samples' `bash-script`
/// app, whose project.toml excludes its README and its buildpack's sources, sets build
/// env and builds with an inline buildpack.
fn bash_script_app(app: &Path, descriptor: &str) {
    write(
        &app.join("app.sh"),
        "#!/bin/sh\necho \"bash-script app, built with $(cat /workspace/built-with)\"\n",
        0o755,
    );
    write(&app.join("README.md"), "# Bash Script\n", 0o644);
    write(
        &app.join("bash-script-buildpack/bin/build"),
        "#!/bin/sh\nexit 1\n",
        0o755,
    );
    write(&app.join("project.toml"), descriptor, 0o644);
}

/// Project descriptor extension (schema 0.1 `[build]`): `exclude` keeps files out of
/// `/workspace` before the build, `[[build.env]]` is platform env (the image's env wins),
/// and `[[build.buildpacks]]` with `script` is an inline buildpack that replaces the
/// builder's order.
#[tokio::test]
async fn project_descriptor_excludes_files_sets_env_and_runs_an_inline_buildpack() {
    testkit::require("bwrap", "bubblewrap");
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let store = ImageStore::new(StoreSettings {
        credentials: CredentialSource::anonymous(),
        ..StoreSettings::default()
    });
    let layout = work.join("layout");
    let stack = push_stack(
        &store,
        &ImageRef::parse(&format!("oci:{}:stack", layout.display())).unwrap(),
        work,
    )
    .await;
    let app = work.join("app");
    bash_script_app(
        &app,
        r#"[project]
id = "io.buildpacks.bash-script"
name = "Bash Script"

[build]
exclude = ["README.md", "bash-script-buildpack"]

[[build.env]]
name = "GREETING"
value = "hello from project.toml"

[[build.env]]
name = "AUDIENCE"
value = "project.toml"

[[build.buildpacks]]
id = "samples/bash-script"
  [build.buildpacks.script]
  api = "0.10"
  inline = """
set -e
echo "inline buildpack: GREETING=$GREETING AUDIENCE=$AUDIENCE"
echo "workspace: $(ls -A /workspace | tr '\n' ' ')"
echo "inline buildpack" > /workspace/built-with
cat > "$CNB_LAYERS_DIR/launch.toml" <<'TOML'
[[processes]]
type = "web"
command = ["/workspace/app.sh"]
default = true
TOML
"""
"#,
    );
    let tag = ImageRef::parse(&format!("oci:{}:bash-script", layout.display())).unwrap();
    let req = BuildRequest {
        env: BTreeMap::from([("AUDIENCE".to_string(), "kpack.toml".to_string())]),
        ..hello_request("bash-script", work, &stack, buildpack(work), &app, &tag)
    };
    let logs = Lines::default();
    let built = build_image(&store, &req, &logs)
        .await
        .unwrap_or_else(|e| panic!("build failed: {e}\n{}", logs.text()));
    let text = logs.text();
    assert!(
        text.contains("inline buildpack: GREETING=hello from project.toml AUDIENCE=kpack.toml"),
        "{text}"
    );
    assert!(
        text.contains("workspace: app.sh project.toml \n"),
        "README.md and the buildpack's sources never reach /workspace: {text}"
    );
    assert_eq!(
        built.buildpacks,
        [("samples/bash-script".to_string(), "0.0.0".to_string())]
    );

    let image = store.image(&tag).await.unwrap();
    let root = work.join("unpacked");
    unpack_image(&store, &tag, &root, &UnpackOptions { chown: false })
        .await
        .unwrap();
    let workspace = root.join("workspace");
    assert!(workspace.join("app.sh").is_file());
    assert!(!workspace.join("README.md").exists());
    assert!(!workspace.join("bash-script-buildpack").exists());
    let out = run_in(&root, &image.config, "/cnb/process/web").await;
    assert_eq!(out, "bash-script app, built with inline buildpack\n");
}

/// The image's own group (kpack.toml `buildpacks`) wins over the descriptor's; a
/// malformed descriptor fails the build naming its file and line.
#[tokio::test]
async fn image_buildpacks_win_and_malformed_descriptors_name_the_line() {
    testkit::require("bwrap", "bubblewrap");
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let store = ImageStore::new(StoreSettings {
        credentials: CredentialSource::anonymous(),
        ..StoreSettings::default()
    });
    let layout = work.join("layout");
    let stack = push_stack(
        &store,
        &ImageRef::parse(&format!("oci:{}:stack", layout.display())).unwrap(),
        work,
    )
    .await;
    let app = work.join("app");
    write(&app.join("message.txt"), "hi", 0o644);
    write(
        &app.join("ci/project.toml"),
        "[_]\nschema-version = \"0.2\"\n\n[[io.buildpacks.group]]\nid = \"samples/never\"\n  [io.buildpacks.group.script]\n  api = \"0.10\"\n  inline = \"exit 1\"\n",
        0o644,
    );
    let tag = ImageRef::parse(&format!("oci:{}:group", layout.display())).unwrap();
    let req = BuildRequest {
        order: Vec::new(),
        image_group: Some(OrderGroup {
            group: vec![OrderEntry {
                id: "examples/hello".into(),
                version: "1.0.0".into(),
                optional: false,
            }],
        }),
        project_descriptor: Some("ci/project.toml".into()),
        ..hello_request("group", work, &stack, buildpack(work), &app, &tag)
    };
    let logs = Lines::default();
    let built = build_image(&store, &req, &logs)
        .await
        .unwrap_or_else(|e| panic!("build failed: {e}\n{}", logs.text()));
    assert_eq!(
        built.buildpacks,
        [("examples/hello".to_string(), "1.0.0".to_string())]
    );
    assert!(
        logs.text()
            .contains("The image's buildpacks replace the group of ci/project.toml"),
        "{}",
        logs.text()
    );

    write(
        &app.join("project.toml"),
        "[_]\nschema-version = \"0.2\"\n[io.buildpacks]\nexclude = README.md\n",
        0o644,
    );
    let req = BuildRequest {
        project_descriptor: None,
        ..req
    };
    let logs = Lines::default();
    let error = build_image(&store, &req, &logs)
        .await
        .expect_err("a malformed project.toml fails the build")
        .to_string();
    assert!(
        error.starts_with("project descriptor: project.toml:4: "),
        "{error}"
    );
}
