//! kpackd's static build entrypoint in a builder image, started as a container runtime
//! starts one: the builder image `executors::builder::publish` writes, unpacked with
//! `umoci`, that root as `/` under bwrap
//! (`--unshare-all --share-net`, as the CNB user, `/proc`, `/dev`, a tmpfs `/tmp`), with
//! only the workspace, a docker config, the request and the termination log bound in. The
//! image it pushes to the registry (with credentials) has the same digest as a local build
//! of the same inputs with `build_image`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use base64::Engine as _;
use executors::builder::{publish, PublishBuildpack, PublishBuildpackSource, PublishRequest};
use executors::lifecycle::descriptor::{OrderEntry, OrderGroup};
use executors::lifecycle::request::{
    EntrypointFailure, EntrypointRequest, EntrypointResult, RequestSource, REQUEST_VERSION,
};
use executors::lifecycle::run::{build_image, BuildRequest};
use executors::lifecycle::DiscardLogs;
use executors::oci::layer::{LayerBuilder, WrittenLayer};
use executors::oci::{
    copy_image, ContainerConfig, CredentialSource, ImageConfig, ImageStore, StoreSettings,
};
use executors::source::git;
use imageref::ImageRef;
use testkit::git::BareRepo;
use testkit::registry::Registry;
use testkit::rootfs::{minimal_rootfs, CNB_GID, CNB_UID};

const SOURCE_DATE_EPOCH: &str = "1700000000";

fn write(path: &Path, content: &str, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

const BUILD: &str = r#"#!/bin/sh
set -e
layers="$1"
echo "hello buildpack: building in $PWD as $(id -u):$(id -g)"
mkdir -p "$layers/hello/bin"
printf '#!/bin/sh\necho "says $(cat /workspace/message.txt)"\n' > "$layers/hello/bin/hello"
chmod 755 "$layers/hello/bin/hello"
printf '[types]\nlaunch = true\n' > "$layers/hello.toml"
printf 'made by the build\n' > generated.txt
cat > "$layers/launch.toml" <<'EOF'
[[processes]]
type = "web"
command = ["hello"]
default = true
EOF
"#;

/// The hello buildpack in `dir`.
fn buildpack(dir: &Path) -> PathBuf {
    let bp = dir.join("hello-bp");
    write(
        &bp.join("buildpack.toml"),
        "api = \"0.12\"\n[buildpack]\nid = \"examples/hello\"\nversion = \"1.0.0\"\n\n[[targets]]\nos = \"linux\"\n",
        0o644,
    );
    write(
        &bp.join("bin/detect"),
        "#!/bin/sh\ntest -f message.txt || exit 100\n",
        0o755,
    );
    write(&bp.join("bin/build"), BUILD, 0o755);
    bp
}

/// A layer of everything in `root`, at `/`.
fn layer_of(root: &Path, work: &Path) -> WrittenLayer {
    let mut builder = LayerBuilder::new(0, 0);
    let mut names: Vec<_> = fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        builder
            .add(&Path::new("/").join(&name), &root.join(&name))
            .unwrap();
    }
    builder.write(work).unwrap()
}

/// The minimal stack's config: the CNB user, PATH and HOME, the stack id.
fn stack_config() -> ImageConfig {
    ImageConfig {
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
            labels: Some(BTreeMap::from([(
                "io.buildpacks.stack.id".to_string(),
                "io.kpackd.minimal".to_string(),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A builder image, unpacked by umoci, and everything around it: the registry with
/// credentials, the stack, the app's git remote, and the local build's result.
struct Fixture {
    dir: tempfile::TempDir,
    _registry: Registry,
    _daemon: testkit::git::GitDaemon,
    _git_repo: BareRepo,
    store: ImageStore,
    docker: PathBuf,
    rootfs: PathBuf,
    builder: ImageRef,
    stack: ImageRef,
    repo: String,
    url: String,
    commit: String,
    env: BTreeMap<String, String>,
    project_metadata: serde_json::Value,
    local: executors::lifecycle::run::BuildResult,
}

/// Pushes the stack, writes the builder image and unpacks it, and builds the app locally
/// with `build_image`.
async fn fixture() -> Fixture {
    testkit::require("bwrap", "bubblewrap");
    testkit::require("umoci", "umoci");
    let entrypoint = testkit::entrypoint();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();

    // A registry with credentials, in a docker config.
    let registry = Registry::start_with_auth("kpackd", "s3cret-pass");
    let docker = work.join("docker");
    let auth = base64::engine::general_purpose::STANDARD.encode("kpackd:s3cret-pass");
    write(
        &docker.join("config.json"),
        &format!(
            r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#,
            registry.addr()
        ),
        0o644,
    );
    let store = ImageStore::new(StoreSettings {
        credentials: CredentialSource::docker_config(docker.join("config.json")),
        ..StoreSettings::default()
    });

    // The stack (build and run image at once), with CA certificates as real stacks have
    // them (the entrypoint's HTTP clients load them even to speak plain HTTP).
    let root = work.join("stack-root");
    minimal_rootfs(&root, &[]).unwrap();
    fs::create_dir_all(root.join("etc/ssl/certs")).unwrap();
    fs::copy(
        "/etc/ssl/certs/ca-certificates.crt",
        root.join("etc/ssl/certs/ca-certificates.crt"),
    )
    .expect("the host's CA certificates (Debian package ca-certificates)");
    let stack_layer = layer_of(&root, work);
    let stack_ref = ImageRef::parse(&format!("{}:1", registry.repo("stack"))).unwrap();
    let stack = store
        .push_image(
            &stack_ref,
            stack_config(),
            std::slice::from_ref(&stack_layer),
        )
        .await
        .unwrap();
    // The builder image, published by kpackd with its entrypoint and no other lifecycle,
    // then copied into a layout for umoci.
    let bp = buildpack(work);
    let published = publish(
        &store,
        &PublishRequest {
            builder: "tests".into(),
            tag: ImageRef::parse(&format!("{}:latest", registry.repo("builder"))).unwrap(),
            build_image: stack.clone(),
            run_image: stack_ref.clone(),
            run_image_mirrors: vec![],
            stack_id: "io.kpackd.minimal".into(),
            buildpacks: vec![PublishBuildpack {
                id: "examples/hello".into(),
                version: "1.0.0".into(),
                source: PublishBuildpackSource::Directory(bp.clone()),
            }],
            order: vec![OrderGroup {
                group: vec![OrderEntry {
                    id: "examples/hello".into(),
                    version: "1.0.0".into(),
                    optional: false,
                }],
            }],
            lifecycle_image: None,
            entrypoint: Some(entrypoint),
        },
        &DiscardLogs,
    )
    .await
    .unwrap();
    let layout = work.join("layout");
    let builder = ImageRef::parse(&format!("oci:{}:builder", layout.display())).unwrap();
    copy_image(&store, &published.image, &builder, std::sync::Arc::new(()))
        .await
        .unwrap();
    // Unpacked as a container runtime would.
    let bundle = work.join("bundle");
    let status = Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:builder", layout.display()))
        .arg(&bundle)
        .status()
        .unwrap();
    assert!(status.success(), "umoci unpack failed");

    // The app, from git.
    let mut git_repo = BareRepo::new();
    let commit = git_repo.commit(&[("message.txt", "hi there")], "the app");
    let daemon = git_repo.serve_daemon();
    let url = daemon.url();
    let project_metadata = serde_json::json!({
        "source": {"type": "git", "version": {"commit": commit}, "metadata": {"repository": url}}
    });
    let env = BTreeMap::from([(
        "SOURCE_DATE_EPOCH".to_string(),
        SOURCE_DATE_EPOCH.to_string(),
    )]);

    // The local build.
    let app = work.join("app");
    let id = git::ObjectId::from_hex(commit.as_bytes()).unwrap();
    let (cache, checkout_to, from) = (work.join("git-cache"), app.clone(), url.clone());
    tokio::task::spawn_blocking(move || {
        git::checkout(
            &cache,
            &from,
            id,
            None,
            &checkout_to,
            &AtomicBool::new(false),
        )
    })
    .await
    .unwrap()
    .unwrap();
    let local_tag = ImageRef::parse(&format!("{}:latest", registry.repo("local/app"))).unwrap();
    let local = build_image(
        &store,
        &BuildRequest {
            image: "app".into(),
            tag: local_tag,
            additional_tags: vec![],
            build_image: stack.clone(),
            run_image: stack.clone(),
            buildpack_dirs: vec![bp],
            order: vec![OrderGroup {
                group: vec![OrderEntry {
                    id: "examples/hello".into(),
                    version: "1.0.0".into(),
                    optional: false,
                }],
            }],
            image_group: None,
            project_descriptor: None,
            app_dir: app,
            env: env.clone(),
            network: false,
            work_root: work.join("state").join("work"),
            stacks_dir: work.join("state").join("stacks"),
            cache_dir: work.join("state").join("cache").join("app"),
            previous_image: None,
            cache: false,
            cache_image: None,
            project_metadata: Some(project_metadata.clone()),
            default_process: None,
            layer_compression: Default::default(),
        },
        &DiscardLogs,
    )
    .await
    .unwrap();
    Fixture {
        rootfs: bundle.join("rootfs"),
        repo: registry.repo("pod/app"),
        dir,
        _registry: registry,
        _daemon: daemon,
        _git_repo: git_repo,
        store,
        docker,
        builder,
        stack,
        url,
        commit,
        env,
        project_metadata,
        local,
    }
}

/// What one run of the entrypoint gave.
struct Run {
    workspace: PathBuf,
    result: EntrypointResult,
    stderr: String,
}

/// Runs the entrypoint in the unpacked builder image as a container runtime would, to
/// build the fixture's app into `tag`: as the CNB user in a user namespace, or as root
/// (the host's, without a user namespace, so that it can switch users).
fn run_entrypoint(f: &Fixture, tag: &ImageRef, as_root: bool) -> Run {
    let source = RequestSource::Git {
        url: f.url.clone(),
        commit: f.commit.clone(),
        sub_path: None,
    };
    let name = if as_root { "as-root" } else { "as-cnb" };
    run_entrypoint_with(f, tag, as_root, source, name)
}

/// [`run_entrypoint`] with another source, in the work directory `name`.
fn run_entrypoint_with(
    f: &Fixture,
    tag: &ImageRef,
    as_root: bool,
    source: RequestSource,
    name: &str,
) -> Run {
    let work = f.dir.path().join(name);
    let request = EntrypointRequest {
        version: REQUEST_VERSION,
        image: "app".into(),
        tag: tag.clone(),
        additional_tags: vec![tag.with_tag("1")],
        builder_image: f.builder.clone(),
        run_image: f.stack.clone(),
        source,
        env: f.env.clone(),
        cache_image: None,
        previous_image: None,
        platform: None,
        default_process: None,
        layer_compression: Default::default(),
        buildpacks: None,
        project_descriptor: None,
        project_metadata: Some(f.project_metadata.clone()),
    };
    let request_file = work.join("request.json");
    let workspace = work.join("workspace");
    fs::create_dir_all(&workspace).unwrap();
    fs::write(&request_file, serde_json::to_vec(&request).unwrap()).unwrap();
    let termination_log = work.join("termination-log");
    fs::write(&termination_log, "").unwrap();

    let mut bwrap = Command::new("bwrap");
    if as_root {
        bwrap.args(["--unshare-pid", "--unshare-ipc", "--unshare-uts"]);
    } else {
        bwrap.args(["--unshare-all", "--share-net"]).args([
            "--uid",
            &CNB_UID.to_string(),
            "--gid",
            &CNB_GID.to_string(),
        ]);
    }
    let output = bwrap
        .arg("--die-with-parent")
        .arg("--bind")
        .arg(&f.rootfs)
        .arg("/")
        .args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"])
        .arg("--bind")
        .arg(&workspace)
        .arg("/workspace")
        .arg("--ro-bind")
        .arg(&f.docker)
        .arg("/kpackd/docker")
        .arg("--ro-bind")
        .arg(&request_file)
        .arg("/kpackd/request.json")
        .arg("--bind")
        .arg(&termination_log)
        .arg("/dev/termination-log")
        .arg("--clearenv")
        .args(["--setenv", "PATH", "/usr/bin:/bin"])
        .args(["--setenv", "CNB_USER_ID", &CNB_UID.to_string()])
        .args(["--setenv", "CNB_GROUP_ID", &CNB_GID.to_string()])
        .args(["--setenv", "HOME", "/home/cnb"])
        .args(["--setenv", "DOCKER_CONFIG", "/kpackd/docker"])
        .args(["--chdir", "/workspace", "--"])
        .args(["/cnb/lifecycle/kpackd", "build"])
        .args(["--request", "/kpackd/request.json"])
        .args(["--result-file", "/dev/termination-log"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "the entrypoint failed ({}):\n{stderr}",
        output.status
    );
    // One line of JSON on stdout, the same in the termination log.
    let line = stdout.trim_end();
    assert_eq!(line.lines().count(), 1, "{stdout}");
    let result: EntrypointResult = serde_json::from_str(line).unwrap();
    assert_eq!(fs::read_to_string(&termination_log).unwrap(), line);
    Run {
        workspace,
        result,
        stderr,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_builder_image_builds_the_same_image_as_a_local_build() {
    let f = fixture().await;
    let tag = ImageRef::parse(&format!("{}:latest", f.repo)).unwrap();
    let run = tokio::task::block_in_place(|| run_entrypoint(&f, &tag, false));
    let (result, stderr) = (&run.result, &run.stderr);

    // The lifecycle's phases and the buildpack's lines on stderr.
    for expected in [
        "===> DETECT",
        "===> BUILD",
        "===> EXPORT",
        &format!("[build] [examples/hello] hello buildpack: building in /workspace as {CNB_UID}:{CNB_GID}"),
    ] {
        assert!(stderr.contains(expected), "no {expected:?} in:\n{stderr}");
    }
    assert_eq!(
        result.digest, f.local.digest,
        "the builder image and the local build made different images:\n{stderr}"
    );
    assert_eq!(result.processes, vec!["web".to_string()]);
    assert_eq!(result.default_process.as_deref(), Some("web"));
    assert_eq!(result.buildpacks.len(), 1);
    assert_eq!(result.buildpacks[0].id, "examples/hello");
    assert!(result.rebasable);
    assert_eq!(result.run_image_top_layer, f.local.run_image_top_layer);
    for r in [&tag, &tag.with_tag("1")] {
        assert_eq!(&f.store.resolve_digest(r).await.unwrap(), &result.digest);
    }
    // The build wrote into the bound workspace.
    assert_eq!(
        fs::read_to_string(run.workspace.join("generated.txt")).unwrap(),
        "made by the build\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn started_as_root_it_builds_as_the_cnb_user() {
    if !rustix_is_root() {
        // Only root can start it as root without a user namespace.
        panic!("this test runs as root (scripts/test and CI do)");
    }
    let f = fixture().await;
    let tag = ImageRef::parse(&format!("{}:root", f.repo)).unwrap();
    let run = tokio::task::block_in_place(|| run_entrypoint(&f, &tag, true));
    assert!(
        run.stderr.contains(&format!(
            "[build] [examples/hello] hello buildpack: building in /workspace as {CNB_UID}:{CNB_GID}"
        )),
        "{}",
        run.stderr
    );
    assert_eq!(run.result.digest, f.local.digest, "{}", run.stderr);
    let generated = fs::symlink_metadata(run.workspace.join("generated.txt")).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&generated),
        CNB_UID,
        "the buildpack wrote as the CNB user"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_path_source_travels_as_a_source_image() {
    let f = fixture().await;
    // The app of the git commit, as a local directory pushed as a source image.
    let dir = f.dir.path().join("path-source");
    write(&dir.join("app/message.txt"), "hi there", 0o644);
    write(&dir.join("app/.gitignore"), "*.log\n", 0o644);
    write(&dir.join("app/debug.log"), "left out", 0o644);
    let to = ImageRef::parse(&format!("{}-source:1", f.repo)).unwrap();
    let pushed =
        executors::source::image::push_path(&f.store, &dir, Some("app"), &to, f.dir.path())
            .await
            .unwrap();
    assert!(pushed.image.digest().is_some(), "{}", pushed.image);

    let tag = ImageRef::parse(&format!("{}:from-image", f.repo)).unwrap();
    let source = RequestSource::Image {
        image: pushed.image.clone(),
        sub_path: None,
    };
    let run =
        tokio::task::block_in_place(|| run_entrypoint_with(&f, &tag, false, source, "from-image"));
    assert!(!run.workspace.join("debug.log").exists());
    assert!(run.workspace.join(".gitignore").is_file());
}

fn rustix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[test]
fn a_request_it_cannot_read_fails_with_the_error_in_the_result_file() {
    let entrypoint = testkit::entrypoint();
    let dir = tempfile::tempdir().unwrap();
    let request = dir.path().join("request.json");
    fs::write(
        &request,
        r#"{"version": 99, "image": "app", "tag": "registry.example/app", "builder-image": "registry.example/builder", "run-image": "registry.example/run", "source": {"type": "workspace"}}"#,
    )
    .unwrap();
    let result = dir.path().join("result");
    let output = Command::new(&entrypoint)
        .args(["build", "--request"])
        .arg(&request)
        .arg("--result-file")
        .arg(&result)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let failure: EntrypointFailure =
        serde_json::from_str(&fs::read_to_string(&result).unwrap()).unwrap();
    assert!(failure.error.contains("version 99"), "{failure:?}");

    let usage = Command::new(&entrypoint).arg("bogus").output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
}
