//! The rebase executor against a real registry on loopback and OCI layouts: app images
//! made here (a run image's layers, the launcher, an app), rebased onto a new run image
//! pushed under the same tag, then checked layer by layer, label by label, request by
//! request — and run.

mod oci_support;

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use executors::oci::layer::{LayerBuilder, WrittenLayer};
use executors::oci::{
    media_type, unpack_image, ContainerConfig, CredentialSource, Descriptor, ImageConfig,
    ImageIndex, ImageStore, Manifest, RawManifest, UnpackOptions,
};
use executors::rebase::{rebase, RebaseError, RebaseRequest, LIFECYCLE_LABEL};
use executors::sandbox::{prepare_mount_points, Sandbox};
use imageref::ImageRef;
use imageref::Platform;
use oci_support::{parse, store, store_for};
use serde_json::{json, Value};
use testkit::registry::Registry;
use testkit::rootfs::{minimal_rootfs, CNB_GID, CNB_UID};

const STACK: &str = "io.kpackd.test.stack";

/// A file, script or symlink in a layer: (path in the image, content or link target,
/// mode; 0 for a symlink).
type Entry<'a> = (&'a str, &'a [u8], u32);

/// One layer holding `entries`, written in `work`.
fn layer(work: &Path, uid: u64, entries: &[Entry]) -> WrittenLayer {
    let src = tempfile::tempdir_in(work).expect("a temp dir for layer sources");
    let mut builder = LayerBuilder::new(uid, uid);
    for (i, (in_image, content, mode)) in entries.iter().enumerate() {
        let on_disk = src.path().join(i.to_string());
        if *mode == 0 {
            symlink(
                std::str::from_utf8(content).expect("a UTF-8 link"),
                &on_disk,
            )
            .expect("symlink");
        } else {
            std::fs::write(&on_disk, content).expect("write a layer file");
            std::fs::set_permissions(&on_disk, std::fs::Permissions::from_mode(*mode))
                .expect("chmod");
        }
        builder.add(Path::new(in_image), &on_disk).expect("add");
    }
    builder.write(work).expect("write the layer")
}

/// A minimal root filesystem (bash, coreutils and their libraries) as one layer, made
/// once per test binary.
fn rootfs_layer() -> &'static WrittenLayer {
    static LAYER: OnceLock<(tempfile::TempDir, WrittenLayer)> = OnceLock::new();
    &LAYER
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let root = dir.path().join("root");
            minimal_rootfs(&root, &[]).expect("a minimal rootfs");
            let mut builder = LayerBuilder::new(0, 0);
            for entry in std::fs::read_dir(&root).expect("read the rootfs") {
                let entry = entry.expect("a rootfs entry");
                builder
                    .add(&Path::new("/").join(entry.file_name()), &entry.path())
                    .expect("add");
            }
            let layer = builder.write(dir.path()).expect("write the rootfs layer");
            (dir, layer)
        })
        .1
}

/// Which root a run image has: a real one that runs programs, or a few files.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Base {
    Runnable,
    Tiny,
}

struct Scenario {
    work: tempfile::TempDir,
    store: ImageStore,
    base: Base,
    /// The run image's tag (or layout name) and the app image's.
    run: ImageRef,
    app: ImageRef,
    run_v1: ImageRef,
    app_v1: ImageRef,
    /// The app image's layers above the run image, as pushed.
    app_layers: Vec<Descriptor>,
}

fn history(created_by: &[&str]) -> Vec<Value> {
    created_by
        .iter()
        .map(|by| match by.strip_prefix("empty:") {
            Some(by) => json!({"created_by": by, "empty_layer": true}),
            None => json!({"created_by": by}),
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A run image config: the stack id, base labels, PATH and the CNB user.
fn run_config(version: &str, history_entries: &[&str]) -> ImageConfig {
    let mut l = labels(&[
        ("io.buildpacks.stack.id", STACK),
        ("io.buildpacks.base.distro.name", "debian"),
        ("io.buildpacks.base.distro.version", "12"),
        ("io.buildpacks.base.released", version),
    ]);
    if version == "v1" {
        l.insert(
            "io.buildpacks.base.maintainer".into(),
            "old maintainer".into(),
        );
    }
    ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: Some(ContainerConfig {
            env: Some(vec!["PATH=/usr/bin:/bin".into()]),
            user: Some(format!("{CNB_UID}:{CNB_GID}")),
            labels: Some(l),
            ..Default::default()
        }),
        history: history(history_entries),
        ..Default::default()
    }
}

impl Scenario {
    /// Pushes run image v1 under `run` and an app image built on it under `app`;
    /// `tweak` edits the app's labels and lifecycle metadata before the push.
    async fn new(
        base: Base,
        run: ImageRef,
        app: ImageRef,
        tweak: impl FnOnce(&mut BTreeMap<String, String>, &mut Value),
    ) -> Scenario {
        let work = tempfile::tempdir().expect("tempdir");
        let store = store();
        let mut run_layers = base_layers(work.path(), base);
        run_layers.push(layer(
            work.path(),
            0,
            &[("/etc/stack-release", b"stack v1\n", 0o644)],
        ));
        let run_config = run_config("v1", &["base", "release v1", "empty:CMD bash"]);
        let run_v1 = store
            .push_image(&run, run_config.clone(), &run_layers)
            .await
            .expect("push run image v1");

        let app_layers = vec![
            layer(
                work.path(),
                0,
                &[
                    (
                        "/cnb/lifecycle/launcher",
                        executors::launcher_binary(),
                        0o755,
                    ),
                    ("/cnb/process/web", b"/cnb/lifecycle/launcher", 0),
                ],
            ),
            layer(
                work.path(),
                u64::from(CNB_UID),
                &[
                    ("/layers/config/metadata.toml", METADATA.as_bytes(), 0o644),
                    ("/workspace/show", SHOW.as_bytes(), 0o755),
                ],
            ),
        ];
        let mut metadata = json!({
            "buildpacks": [{"key": "examples/show", "version": "1.0.0"}],
            "runImage": {
                "topLayer": run_layers.last().expect("a run layer").diff_id.to_string(),
                "reference": run_v1.to_string(),
                "image": run.to_string(),
            },
            "stack": {"runImage": {"image": run.to_string()}},
        });
        let mut app_labels = run_config.labels();
        tweak(&mut app_labels, &mut metadata);
        if !metadata.is_null() {
            app_labels.insert(LIFECYCLE_LABEL.into(), metadata.to_string());
        }
        let mut app_history = run_config.history.clone();
        app_history.extend(history(&["launcher", "app", "empty:LABEL"]));
        let config = ImageConfig {
            config: Some(ContainerConfig {
                env: Some(vec![
                    "PATH=/cnb/process:/cnb/lifecycle:/usr/bin:/bin".into(),
                    "CNB_LAYERS_DIR=/layers".into(),
                    "CNB_APP_DIR=/workspace".into(),
                    "HOME=/home/cnb".into(),
                ]),
                user: Some(format!("{CNB_UID}:{CNB_GID}")),
                entrypoint: Some(vec!["/cnb/process/web".into()]),
                working_dir: Some("/workspace".into()),
                labels: Some(app_labels),
                ..Default::default()
            }),
            history: app_history,
            created: Some("1980-01-01T00:00:01Z".into()),
            ..run_config
        };
        let all_layers: Vec<WrittenLayer> =
            run_layers.into_iter().chain(app_layers.clone()).collect();
        let app_v1 = store
            .push_image(&app, config, &all_layers)
            .await
            .expect("push the app image");
        Scenario {
            work,
            store,
            base,
            run,
            app,
            run_v1,
            app_v1,
            app_layers: app_layers.iter().map(WrittenLayer::descriptor).collect(),
        }
    }

    /// Pushes run image v2 under the same tag: a new release layer and one layer more.
    /// `tweak` edits its config. Returns it pinned, and its layers.
    async fn push_run_v2(
        &self,
        tweak: impl FnOnce(&mut ImageConfig),
    ) -> (ImageRef, Vec<Descriptor>) {
        self.push_run_v2_to(&self.run, tweak).await
    }

    async fn push_run_v2_to(
        &self,
        target: &ImageRef,
        tweak: impl FnOnce(&mut ImageConfig),
    ) -> (ImageRef, Vec<Descriptor>) {
        let work = self.work.path();
        let mut layers = base_layers(work, self.base);
        layers.push(layer(
            work,
            0,
            &[("/etc/stack-release", b"stack v2\n", 0o644)],
        ));
        layers.push(layer(
            work,
            0,
            &[("/etc/patched", b"libc patched\n", 0o644)],
        ));
        let mut config = run_config("v2", &["empty:ENV", "base", "release v2", "patch"]);
        tweak(&mut config);
        let pinned = self
            .store
            .push_image(target, config, &layers)
            .await
            .expect("push run image v2");
        (
            pinned,
            layers.iter().map(WrittenLayer::descriptor).collect(),
        )
    }

    fn request(&self, run_image: &ImageRef) -> RebaseRequest {
        RebaseRequest {
            image: self.app_v1.clone(),
            run_image: run_image.clone(),
            tags: vec![self.app.clone()],
            expected_stack_id: Some(STACK.into()),
            force: false,
        }
    }

    /// Rebases onto a new run image that `tweak` spoils, expects a refusal, and checks
    /// the app tag was left alone.
    async fn refused(&self, tweak: impl FnOnce(&mut ImageConfig)) -> RebaseError {
        let (run_v2, _) = self.push_run_v2(tweak).await;
        self.refused_with(self.request(&run_v2)).await
    }

    async fn refused_with(&self, req: RebaseRequest) -> RebaseError {
        let err = rebase(&self.store, &req)
            .await
            .expect_err("the rebase must be refused");
        assert_eq!(
            Some(self.store.resolve_digest(&self.app).await.unwrap()),
            self.app_v1.digest().cloned(),
            "a refused rebase leaves the tag alone"
        );
        err
    }
}

fn base_layers(work: &Path, base: Base) -> Vec<WrittenLayer> {
    match base {
        Base::Runnable => vec![rootfs_layer().clone()],
        Base::Tiny => vec![layer(work, 0, &[("/etc/base", b"tiny base\n", 0o644)])],
    }
}

const METADATA: &str = r#"buildpack-default-process-type = "web"

[[buildpacks]]
id = "examples/show"
version = "1.0.0"
api = "0.12"

[[processes]]
type = "web"
command = ["/workspace/show"]
args = []
direct = true
buildpack-id = "examples/show"
"#;

/// Says which run image it runs on.
const SHOW: &str =
    "#!/bin/bash\ncat /etc/stack-release\ncat /etc/patched 2>/dev/null || echo unpatched\n";

fn registry_ref(reg: &Registry, repo_and_tag: &str) -> ImageRef {
    parse(&format!("{}/{repo_and_tag}", reg.addr()))
}

/// Unpacks `image` and runs its entrypoint in the sandbox as the image config says.
async fn run_image(store: &ImageStore, image: &ImageRef, root: &Path) -> String {
    testkit::require("bwrap", "bubblewrap");
    let unpacked = unpack_image(store, image, root, &UnpackOptions { chown: false })
        .await
        .expect("unpack");
    prepare_mount_points(root, &[]).expect("mount points");
    let config = unpacked.config.config.expect("a runtime config");
    let env: BTreeMap<String, String> = config
        .env
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let entrypoint = config.entrypoint.expect("an entrypoint");
    let output = Sandbox::new(root, CNB_UID, CNB_GID)
        .command(
            Path::new(&entrypoint[0]),
            &entrypoint[1..],
            &env,
            &PathBuf::from(config.working_dir.expect("a working dir")),
        )
        .expect("a sandbox command")
        .output()
        .await
        .expect("run bwrap");
    assert!(
        output.status.success(),
        "{}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn created_by(config: &ImageConfig) -> Vec<String> {
    config
        .history
        .iter()
        .map(|h| h["created_by"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn rebase_swaps_the_run_layers_keeps_the_app_layers_and_still_runs() {
    let reg = Registry::shared();
    let s = Scenario::new(
        Base::Runnable,
        registry_ref(reg, "rebase-main/run:latest"),
        registry_ref(reg, "rebase-main/app:latest"),
        |_, _| {},
    )
    .await;
    let before_output = run_image(&s.store, &s.app_v1, &s.work.path().join("before")).await;
    assert_eq!(before_output, "stack v1\nunpatched\n");

    let (run_v2, run_v2_layers) = s.push_run_v2(|_| {}).await;
    let extra_tag = registry_ref(reg, "rebase-main/app:extra");
    let mut req = s.request(&run_v2);
    req.tags.push(extra_tag.clone());
    let log_start = reg.requests().len();
    let result = rebase(&s.store, &req).await.expect("rebase");
    let log = reg.requests()[log_start..].to_vec();

    // Layers: the new run image's, then the app's, digests unchanged.
    let image = s.store.image(&s.app).await.expect("read the rebased image");
    assert_eq!(image.digest(), &result.digest);
    let expected: Vec<Descriptor> = run_v2_layers.iter().chain(&s.app_layers).cloned().collect();
    assert_eq!(image.manifest.layers, expected);
    let run_v2_image = s.store.image(&run_v2).await.expect("read run v2");
    let old_app = s.store.image(&s.app_v1).await.expect("read the old app");
    assert_eq!(
        image.config.rootfs.diff_ids,
        run_v2_image
            .config
            .rootfs
            .diff_ids
            .iter()
            .chain(&old_app.config.rootfs.diff_ids[2..])
            .cloned()
            .collect::<Vec<_>>()
    );
    assert_eq!(
        created_by(&image.config),
        [
            "ENV",
            "base",
            "release v2",
            "patch",
            "launcher",
            "app",
            "LABEL"
        ]
    );
    assert_eq!(image.config.config, {
        // Everything but the labels is the old app's runtime config.
        let mut c = old_app.config.config.clone().unwrap();
        c.labels = image.config.config.as_ref().unwrap().labels.clone();
        Some(c)
    });
    assert_eq!(image.config.created, old_app.config.created);

    // Labels: metadata points at the new run image, base labels are the new ones.
    let labels = image.config.labels();
    let metadata: Value = serde_json::from_str(&labels[LIFECYCLE_LABEL]).unwrap();
    let new_top = run_v2_image
        .config
        .rootfs
        .diff_ids
        .last()
        .unwrap()
        .to_string();
    assert_eq!(metadata["runImage"]["topLayer"], new_top);
    assert_eq!(metadata["runImage"]["reference"], run_v2.to_string());
    assert_eq!(metadata["runImage"]["image"], s.run.to_string());
    assert_eq!(metadata["buildpacks"][0]["key"], "examples/show");
    assert_eq!(labels["io.buildpacks.base.released"], "v2");
    assert_eq!(labels["io.buildpacks.stack.id"], STACK);
    assert!(!labels.contains_key("io.buildpacks.base.maintainer"));

    // The result, as the engine records it.
    assert_eq!(result.previous_digest, *s.app_v1.digest().unwrap());
    assert_eq!(result.old_run_image.reference, s.run_v1.to_string());
    assert_eq!(
        result.old_run_image.top_layer,
        old_app.config.rootfs.diff_ids[1]
    );
    assert_eq!(result.new_run_image.reference, run_v2.to_string());
    assert_eq!(result.new_run_image.top_layer.to_string(), new_top);
    assert_eq!(Some(&result.new_run_image_digest), run_v2.digest());
    assert_eq!(
        (
            result.old_base_layers,
            result.new_base_layers,
            result.app_layers
        ),
        (2, 3, 2)
    );
    assert_eq!(result.image.digest(), Some(&result.digest));
    // The rootfs layer is shared by both run images; the other two are mounted.
    assert_eq!((result.layers.existed, result.layers.mounted), (1, 2));
    assert_eq!(result.layers.uploaded, 0);
    assert!(
        result.bytes_uploaded < 64 * 1024,
        "{} bytes uploaded",
        result.bytes_uploaded
    );
    assert_eq!(
        s.store.resolve_digest(&extra_tag).await.unwrap(),
        result.digest
    );

    // The registry saw only a config and manifests written, and no layer read.
    let app_requests: Vec<_> = log
        .iter()
        .filter(|r| r.path.starts_with("/v2/rebase-main/app/"))
        .collect();
    let count = |method: &str, pred: &dyn Fn(&str) -> bool| {
        app_requests
            .iter()
            .filter(|r| r.method == method && pred(&r.path))
            .count()
    };
    assert_eq!(count("PATCH", &|_| true), 0, "{app_requests:#?}");
    assert_eq!(
        count("PUT", &|p| p.contains("/blobs/uploads/")),
        1,
        "only the config is uploaded: {app_requests:#?}"
    );
    assert_eq!(
        count("POST", &|p| p.contains("/blobs/uploads/")
            && !p.contains("mount=")),
        1,
        "{app_requests:#?}"
    );
    assert_eq!(
        count("POST", &|p| p.contains("mount=")),
        2,
        "{app_requests:#?}"
    );
    // One PUT per tag: the registry keeps a tagged manifest by its digest too.
    assert_eq!(count("PUT", &|p| p.contains("/manifests/")), 2);
    assert_eq!(
        count("HEAD", &|p| p.contains("/blobs/")),
        0,
        "the shared layer is known from the app image, the new ones mounted at once: {app_requests:#?}"
    );
    assert!(
        log.iter().all(|r| r.path != "/v2/"),
        "no authentication probe: {log:#?}"
    );
    for layer in run_v2_layers.iter().chain(&s.app_layers) {
        let blob = format!("/blobs/{}", layer.digest);
        assert_eq!(count("GET", &|p| p.ends_with(&blob)), 0, "{blob} was read");
    }

    // And it runs on the new run image.
    let after_output = run_image(&s.store, &result.image, &s.work.path().join("after")).await;
    assert_eq!(after_output, "stack v2\nlibc patched\n");
}

#[tokio::test]
async fn an_image_labelled_not_rebasable_is_refused_unless_forced() {
    let reg = Registry::shared();
    let s = Scenario::new(
        Base::Tiny,
        registry_ref(reg, "rebase-refuse-rebasable/run:latest"),
        registry_ref(reg, "rebase-refuse-rebasable/app:latest"),
        |labels, _| {
            labels.insert("io.buildpacks.rebasable".into(), "false".into());
        },
    )
    .await;
    let err = s.refused(|_| {}).await;
    assert!(matches!(err, RebaseError::NotRebasable { .. }), "{err:?}");
    assert!(err.to_string().contains("io.buildpacks.rebasable=false"));

    let run_v2 = s.store.resolve_digest(&s.run).await.unwrap();
    let mut req = s.request(&ImageRef::Registry(
        s.run.as_registry().unwrap().at_digest(run_v2),
    ));
    req.force = true;
    let result = rebase(&s.store, &req).await.expect("a forced rebase");
    assert_eq!(result.new_base_layers, 3);
}

#[tokio::test]
async fn a_run_image_of_another_architecture_is_refused() {
    let reg = Registry::shared();
    let s = Scenario::new(
        Base::Tiny,
        registry_ref(reg, "rebase-refuse-arch/run:latest"),
        registry_ref(reg, "rebase-refuse-arch/app:latest"),
        |_, _| {},
    )
    .await;
    let err = s.refused(|c| c.architecture = "arm64".into()).await;
    match &err {
        RebaseError::TargetMismatch {
            target,
            image_value,
            run_image_value,
            ..
        } => assert_eq!(
            (
                target.as_str(),
                image_value.as_str(),
                run_image_value.as_str()
            ),
            ("architecture", "amd64", "arm64")
        ),
        other => panic!("expected a target mismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn a_top_layer_missing_from_the_image_is_refused() {
    let reg = Registry::shared();
    let s = Scenario::new(
        Base::Tiny,
        registry_ref(reg, "rebase-refuse-top/run:latest"),
        registry_ref(reg, "rebase-refuse-top/app:latest"),
        |_, metadata| {
            metadata["runImage"]["topLayer"] =
                json!("sha256:1111111111111111111111111111111111111111111111111111111111111111");
        },
    )
    .await;
    let err = s.refused(|_| {}).await;
    assert!(
        matches!(err, RebaseError::TopLayerNotFound { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_run_image_of_another_stack_is_refused() {
    let reg = Registry::shared();
    let s = Scenario::new(
        Base::Tiny,
        registry_ref(reg, "rebase-refuse-stack/run:latest"),
        registry_ref(reg, "rebase-refuse-stack/app:latest"),
        |_, _| {},
    )
    .await;
    let err = s
        .refused(|c| {
            let labels = c.config.as_mut().unwrap().labels.as_mut().unwrap();
            labels.insert("io.buildpacks.stack.id".into(), "io.other.stack".into());
        })
        .await;
    assert!(matches!(err, RebaseError::StackMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("io.other.stack"), "{err}");

    // Not even by force.
    let run_v2 = s.store.resolve_digest(&s.run).await.unwrap();
    let run_v2 = ImageRef::Registry(s.run.as_registry().unwrap().at_digest(run_v2));
    let mut req = s.request(&run_v2);
    req.force = true;
    let err = s.refused_with(req).await;
    assert!(matches!(err, RebaseError::StackMismatch { .. }), "{err:?}");

    // Nor onto the image's own stack when the request expects another one.
    let mut req = s.request(&s.run_v1);
    req.expected_stack_id = Some("io.expected.stack".into());
    let err = s.refused_with(req).await;
    assert!(err.to_string().contains("io.expected.stack"), "{err}");
}

#[tokio::test]
async fn an_image_without_lifecycle_metadata_is_refused() {
    let reg = Registry::shared();
    let s = Scenario::new(
        Base::Tiny,
        registry_ref(reg, "rebase-refuse-metadata/run:latest"),
        registry_ref(reg, "rebase-refuse-metadata/app:latest"),
        |_, metadata| *metadata = Value::Null,
    )
    .await;
    let err = s.refused(|_| {}).await;
    assert!(
        matches!(err, RebaseError::MissingMetadata { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_run_image_the_metadata_does_not_name_needs_force() {
    let reg = Registry::shared();
    let s = Scenario::new(
        Base::Tiny,
        registry_ref(reg, "rebase-rename/run:latest"),
        registry_ref(reg, "rebase-rename/app:latest"),
        |_, _| {},
    )
    .await;
    let (run_v2, _) = s.push_run_v2(|_| {}).await;
    // The same run image copied to another repository.
    let elsewhere = registry_ref(reg, "rebase-rename/mirror:latest");
    let copied = executors::oci::copy_image(&s.store, &run_v2, &elsewhere, std::sync::Arc::new(()))
        .await
        .expect("copy the run image");
    let err = s.refused_with(s.request(&copied.destination)).await;
    assert!(
        matches!(err, RebaseError::RunImageNotListed { .. }),
        "{err:?}"
    );

    let mut req = s.request(&copied.destination);
    req.force = true;
    rebase(&s.store, &req).await.expect("a forced rebase");
    let labels = s.store.image(&s.app).await.unwrap().config.labels();
    let metadata: Value = serde_json::from_str(&labels[LIFECYCLE_LABEL]).unwrap();
    // Named as given, without the digest.
    let name = reg.repo("rebase-rename/mirror");
    assert_eq!(metadata["runImage"]["image"], name);
    assert!(metadata["runImage"].get("mirrors").is_none());
    assert_eq!(metadata["stack"]["runImage"]["image"], name);
}

#[tokio::test]
async fn rebase_in_oci_layouts_copies_the_run_layers_into_the_app_layout() {
    let dir = tempfile::tempdir().unwrap();
    let run = parse(&format!("oci:{}:run", dir.path().join("runs").display()));
    let app = parse(&format!("oci:{}:app", dir.path().join("apps").display()));
    let s = Scenario::new(Base::Tiny, run, app.clone(), |_, _| {}).await;
    let (run_v2, run_v2_layers) = s.push_run_v2(|_| {}).await;
    let run_v2_digest = s.store.resolve_digest(&run_v2).await.unwrap();

    let extra = parse(&format!(
        "oci:{}:app-extra",
        dir.path().join("apps").display()
    ));
    let mut req = s.request(&run_v2);
    req.tags.push(extra.clone());
    let result = rebase(&s.store, &req).await.expect("rebase in layouts");

    assert_eq!(s.store.resolve_digest(&app).await.unwrap(), result.digest);
    assert_eq!(s.store.resolve_digest(&extra).await.unwrap(), result.digest);
    assert_eq!(result.new_run_image_digest, run_v2_digest);
    // The same form export writes: the layout reference by digest.
    assert_eq!(
        result.new_run_image.reference,
        format!("{run_v2}@{run_v2_digest}")
    );
    for layer in &run_v2_layers {
        let blob = dir
            .path()
            .join("apps/blobs")
            .join(layer.digest.algorithm())
            .join(layer.digest.hex());
        assert!(blob.is_file(), "{} is in the app layout", layer.digest);
    }
    let image = s.store.image(&app).await.unwrap();
    let expected: Vec<Descriptor> = run_v2_layers.iter().chain(&s.app_layers).cloned().collect();
    assert_eq!(image.manifest.layers, expected);

    let root = dir.path().join("root");
    unpack_image(&s.store, &app, &root, &UnpackOptions { chown: false })
        .await
        .expect("unpack");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/stack-release")).unwrap(),
        "stack v2\n"
    );
    assert!(root.join("etc/patched").is_file());
    assert!(root.join("cnb/lifecycle/launcher").is_file());
}

#[tokio::test]
async fn a_run_image_index_yields_the_entry_of_the_app_image_platform() {
    let reg = Registry::shared();
    let s = Scenario::new(
        Base::Tiny,
        registry_ref(reg, "rebase-index/run:latest"),
        registry_ref(reg, "rebase-index/app:latest"),
        |_, _| {},
    )
    .await;
    let mut entries = Vec::new();
    for arch in ["arm64", "amd64"] {
        let target = registry_ref(reg, &format!("rebase-index/run:v2-{arch}"));
        let (pinned, _) = s
            .push_run_v2_to(&target, |c| c.architecture = arch.into())
            .await;
        let mut descriptor = s.store.manifest(&pinned).await.unwrap().descriptor();
        descriptor.platform = Platform::parse(&format!("linux/{arch}"));
        entries.push((descriptor, pinned));
    }
    let index = RawManifest::from_manifest(&Manifest::Index(ImageIndex {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.into()),
        manifests: entries.iter().map(|(d, _)| d.clone()).collect(),
        annotations: None,
    }));
    let run_index = s.store.push_manifest(&s.run, &index).await.unwrap();

    // A store whose own platform is arm64 still puts the amd64 app on the amd64 entry.
    let arm_store = store_for(
        Platform::parse("linux/arm64").unwrap(),
        CredentialSource::anonymous(),
    );
    let result = rebase(&arm_store, &s.request(&run_index))
        .await
        .expect("rebase onto an index");
    let amd = entries[1].1.digest().unwrap();
    assert_eq!(&result.new_run_image_digest, amd);
    assert!(result.new_run_image.reference.ends_with(&amd.to_string()));
    let image = s.store.image(&s.app).await.unwrap();
    assert_eq!(image.config.architecture, "amd64");
}

#[tokio::test]
async fn a_run_image_in_a_layout_is_streamed_to_the_registry() {
    let reg = Registry::shared();
    let dir = tempfile::tempdir().unwrap();
    let run = parse(&format!("oci:{}:run", dir.path().join("runs").display()));
    let s = Scenario::new(
        Base::Tiny,
        run,
        registry_ref(reg, "rebase-stream/app:latest"),
        |_, _| {},
    )
    .await;
    let (run_v2, run_v2_layers) = s.push_run_v2(|_| {}).await;
    let result = rebase(&s.store, &s.request(&run_v2))
        .await
        .expect("rebase from a layout");
    // The tiny base layer is the same in both run images; the other two travel.
    assert_eq!(
        (
            result.layers.existed,
            result.layers.mounted,
            result.layers.uploaded
        ),
        (1, 0, 2)
    );
    let streamed: u64 = run_v2_layers[1..].iter().map(|l| l.size).sum();
    assert!(result.bytes_uploaded > streamed);
    let image = s.store.image(&s.app).await.unwrap();
    let expected: Vec<Descriptor> = run_v2_layers.iter().chain(&s.app_layers).cloned().collect();
    assert_eq!(image.manifest.layers, expected);
}
