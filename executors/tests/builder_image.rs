//! Builder images kpackd publishes, on a real loopback registry: other tools (skopeo,
//! umoci) read them, their labels have the shapes the platform and distribution specs
//! (and pack and the reference lifecycle) read, they are reproducible, and kpackd reads
//! its own builders back.

mod oci_support;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use cnb::buildpack::{OrderEntry, OrderGroup};
use cnb::labels::{
    self, BuilderMetadata, BuildpackLayers, BUILDER_METADATA, BUILDPACK_LAYERS, BUILDPACK_ORDER,
    LIFECYCLE_APIS, LIFECYCLE_VERSION, STACK_ID,
};
use cnb::{BuildpackId, BuildpackVersion};
use executors::builder::layers::buildpack_layer;
use executors::builder::{
    publish, PublishBuildpack, PublishBuildpackSource, PublishRequest, PublishResult,
};
use executors::lifecycle::buildpackage::materialise;
use executors::lifecycle::DiscardLogs;
use executors::oci::layer::LayerBuilder;
use executors::oci::{ContainerConfig, ImageConfig, ImageStore};
use imageref::{Digest, ImageRef};
use oci_support::{parse, store, tree};
use testkit::registry::Registry;

const CNB_UID: u32 = 1001;
const CNB_GID: u32 = 1002;
const RUN_IMAGE: &str = "registry.example/stacks/run:1";
const RUN_MIRROR: &str = "mirror.example/stacks/run:1";

/// Runs a tool; its output, or a failure naming the command and its stderr.
fn run(program: &str, package: &str, args: &[&str]) -> String {
    testkit::require(program, package);
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn descriptor(id: &str, version: &str, extra: &str) -> String {
    format!(
        "api = \"0.10\"\n[buildpack]\nid = \"{id}\"\nversion = \"{version}\"\n\
         homepage = \"https://example.com/{id}\"\n{extra}"
    )
}

/// A directory buildpack with `bin/detect` and `bin/build`.
fn dir_buildpack(root: &Path, id: &str, version: &str) -> PathBuf {
    let dir = root.join(id.replace('/', "_"));
    tree(
        &dir,
        &[
            (
                "buildpack.toml",
                &descriptor(
                    id,
                    version,
                    "[[targets]]\nos = \"linux\"\narch = \"amd64\"\n",
                ),
            ),
            ("bin/detect", "#!/bin/sh\nexit 0\n"),
            ("bin/build", "#!/bin/sh\necho built\n"),
        ],
    );
    for program in ["bin/detect", "bin/build"] {
        std::fs::set_permissions(dir.join(program), std::fs::Permissions::from_mode(0o700))
            .unwrap();
    }
    dir
}

/// Everything a publish needs, made once per test in its own repositories.
struct Fixture {
    store: ImageStore,
    work: tempfile::TempDir,
    req: PublishRequest,
    /// The buildpackage image holding `tests/c@3.0.0`, and that layer's digest there.
    package: ImageRef,
    package_layer: imageref::Digest,
    /// The directory buildpacks, by id.
    dirs: BTreeMap<String, PathBuf>,
}

async fn fixture(reg: &Registry, name: &str) -> Fixture {
    let store = store();
    let work = tempfile::tempdir().unwrap();
    let root = work.path();

    // The build image: one layer, CNB user in its env, a history.
    let base_layer = {
        let src = root.join("base");
        tree(&src, &[("etc/os-release", "ID=test\nVERSION_ID=1\n")]);
        LayerBuilder::new(0, 0)
            .add(Path::new("/etc"), &src.join("etc"))
            .unwrap()
            .write(root)
            .unwrap()
    };
    let build_config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: Some(ContainerConfig {
            env: Some(vec![
                "PATH=/usr/bin:/bin".into(),
                format!("CNB_USER_ID={CNB_UID}"),
                format!("CNB_GROUP_ID={CNB_GID}"),
                "CNB_STACK_ID=tests.stack".into(),
            ]),
            user: Some("0:0".into()),
            labels: Some(BTreeMap::from([(
                "io.buildpacks.base.id".to_string(),
                "tests.stack".to_string(),
            )])),
            ..Default::default()
        }),
        history: vec![serde_json::json!({"created_by": "base layer"})],
        ..Default::default()
    };
    let build_image = store
        .push_image(
            &parse(&format!("{}:1", reg.repo(&format!("{name}/build")))),
            build_config,
            &[base_layer],
        )
        .await
        .unwrap();

    // A buildpackage written by another tool (LayerBuilder keeps host modes; the blob
    // must be reused as it is).
    let c_dir = dir_buildpack(&root.join("bp"), "tests/c", "3.0.0");
    let c_layer = LayerBuilder::new(0, 0)
        .add(Path::new("/cnb/buildpacks/tests_c/3.0.0"), &c_dir)
        .unwrap()
        .write(root)
        .unwrap();
    let layers_label = serde_json::json!({
        "tests/c": {"3.0.0": {
            "api": "0.10",
            "targets": [{"os": "linux", "arch": "amd64"}],
            "layerDiffID": c_layer.diff_id.to_string(),
            "homepage": "https://example.com/tests/c",
        }}
    })
    .to_string();
    let package = store
        .push_image(
            &parse(&format!("{}:1", reg.repo(&format!("{name}/package")))),
            oci_support::config(
                &imageref::Platform::linux_amd64(),
                &[(BUILDPACK_LAYERS, &layers_label)],
            ),
            std::slice::from_ref(&c_layer),
        )
        .await
        .unwrap();

    // The lifecycle image: a base layer, then /cnb/lifecycle.
    let lifecycle_src = root.join("lifecycle");
    tree(
        &lifecycle_src,
        &[
            ("cnb/lifecycle/lifecycle", "#!/bin/sh\necho lifecycle\n"),
            ("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
        ],
    );
    std::os::unix::fs::symlink("lifecycle", lifecycle_src.join("cnb/lifecycle/launcher")).unwrap();
    let lifecycle_layers = [
        LayerBuilder::new(0, 0)
            .add(Path::new("/etc"), &lifecycle_src.join("etc"))
            .unwrap()
            .write(root)
            .unwrap(),
        LayerBuilder::new(0, 0)
            .add(Path::new("/cnb"), &lifecycle_src.join("cnb"))
            .unwrap()
            .write(root)
            .unwrap(),
    ];
    let apis = r#"{"buildpack":{"deprecated":[],"supported":["0.7","0.8","0.9","0.10","0.11","0.12"]},"platform":{"deprecated":null,"supported":["0.12","0.13"]}}"#;
    let lifecycle_image = store
        .push_image(
            &parse(&format!("{}:1", reg.repo(&format!("{name}/lifecycle")))),
            oci_support::config(
                &imageref::Platform::linux_amd64(),
                &[(LIFECYCLE_VERSION, "0.20.1"), (LIFECYCLE_APIS, apis)],
            ),
            &lifecycle_layers,
        )
        .await
        .unwrap();

    let entrypoint = root.join("kpackd-entrypoint");
    std::fs::write(
        &entrypoint,
        "#!/bin/sh\nexec /cnb/lifecycle/lifecycle \"$@\"\n",
    )
    .unwrap();

    let mut dirs = BTreeMap::new();
    for (id, version) in [("tests/a", "1.0.0"), ("tests/b", "2.0.0")] {
        dirs.insert(id.to_string(), dir_buildpack(&root.join("bp"), id, version));
    }
    let meta = root.join("bp/tests_meta");
    tree(
        &meta,
        &[(
            "buildpack.toml",
            &descriptor(
                "tests/meta",
                "0.1.0",
                "[[order]]\n[[order.group]]\nid = \"tests/a\"\nversion = \"1.0.0\"\n\
                 [[order.group]]\nid = \"tests/b\"\nversion = \"2.0.0\"\noptional = true\n",
            ),
        )],
    );
    dirs.insert("tests/meta".into(), meta);

    let bp = |id: &str, version: &str, source| PublishBuildpack {
        id: id.into(),
        version: version.into(),
        source,
    };
    let req = PublishRequest {
        builder: "tests".into(),
        tag: parse(&format!("{}:latest", reg.repo(&format!("{name}/builder")))),
        build_image,
        run_image: parse(RUN_IMAGE),
        run_image_mirrors: vec![parse(RUN_MIRROR)],
        stack_id: "tests.stack".into(),
        buildpacks: vec![
            bp(
                "tests/meta",
                "0.1.0",
                PublishBuildpackSource::Directory(dirs["tests/meta"].clone()),
            ),
            bp(
                "tests/b",
                "2.0.0",
                PublishBuildpackSource::Directory(dirs["tests/b"].clone()),
            ),
            bp(
                "tests/a",
                "1.0.0",
                PublishBuildpackSource::Directory(dirs["tests/a"].clone()),
            ),
            bp(
                "tests/c",
                "3.0.0",
                PublishBuildpackSource::Layer {
                    image: package.clone(),
                    diff_id: c_layer.diff_id.clone(),
                },
            ),
        ],
        order: vec![
            OrderGroup {
                group: vec![OrderEntry {
                    id: "tests/meta".into(),
                    version: String::new(),
                    optional: false,
                }],
            },
            OrderGroup {
                group: vec![
                    OrderEntry {
                        id: "tests/c".into(),
                        version: "3.0.0".into(),
                        optional: false,
                    },
                    OrderEntry {
                        id: "tests/a".into(),
                        version: String::new(),
                        optional: true,
                    },
                ],
            },
        ],
        lifecycle_image: Some(lifecycle_image),
        entrypoint: Some(entrypoint),
    };
    Fixture {
        store,
        work,
        req,
        package,
        package_layer: c_layer.digest,
        dirs,
    }
}

async fn publish_ok(f: &Fixture) -> PublishResult {
    publish(&f.store, &f.req, &DiscardLogs).await.unwrap()
}

async fn labels_of(f: &Fixture, image: &ImageRef) -> BTreeMap<String, String> {
    f.store.image(image).await.unwrap().config.labels()
}

#[tokio::test]
async fn skopeo_and_umoci_read_the_builder_and_its_files_are_in_place() {
    let reg = Registry::shared();
    let f = fixture(reg, "builder-tools").await;
    let published = publish_ok(&f).await;
    let tag = f.req.tag.to_string();

    let inspected: serde_json::Value = serde_json::from_str(&run(
        "skopeo",
        "skopeo",
        &["inspect", "--tls-verify=false", &format!("docker://{tag}")],
    ))
    .unwrap();
    assert_eq!(inspected["Digest"], published.digest.to_string());
    // Build image, 4 buildpacks, user dirs, lifecycle, entrypoint, /cnb files.
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 9);
    assert_eq!(inspected["Labels"][STACK_ID], "tests.stack");

    let layout = f.work.path().join("layout");
    run(
        "skopeo",
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{tag}"),
            &format!("oci:{}:builder", layout.display()),
        ],
    );
    let bundle = f.work.path().join("bundle");
    let mut args = vec!["unpack"];
    let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    if !root {
        args.push("--rootless");
    }
    let image_arg = format!("{}:builder", layout.display());
    let bundle_arg = bundle.display().to_string();
    args.extend(["--image", &image_arg, &bundle_arg]);
    run("umoci", "umoci", &args);
    let rootfs = bundle.join("rootfs");

    for (dir, id, version) in [
        ("tests_a/1.0.0", "tests/a", "1.0.0"),
        ("tests_b/2.0.0", "tests/b", "2.0.0"),
        ("tests_c/3.0.0", "tests/c", "3.0.0"),
        ("tests_meta/0.1.0", "tests/meta", "0.1.0"),
    ] {
        let toml = std::fs::read_to_string(
            rootfs
                .join("cnb/buildpacks")
                .join(dir)
                .join("buildpack.toml"),
        )
        .unwrap_or_else(|e| panic!("{dir}: {e}"));
        assert!(toml.contains(&format!("id = \"{id}\"")), "{toml}");
        assert!(toml.contains(&format!("version = \"{version}\"")), "{toml}");
    }
    let build = rootfs.join("cnb/buildpacks/tests_a/1.0.0/bin/build");
    assert_eq!(
        std::fs::metadata(&build).unwrap().permissions().mode() & 0o777,
        0o755,
        "directory buildpacks get normalised modes"
    );
    let order = std::fs::read_to_string(rootfs.join("cnb/order.toml")).unwrap();
    let order: toml::Value = toml::from_str(&order).unwrap();
    let groups = order["order"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0]["group"][0]["id"].as_str(), Some("tests/meta"));
    assert_eq!(groups[0]["group"][0]["version"].as_str(), Some("0.1.0"));
    assert_eq!(groups[1]["group"][1]["version"].as_str(), Some("1.0.0"));
    assert_eq!(groups[1]["group"][1]["optional"].as_bool(), Some(true));

    let run_toml: toml::Value =
        toml::from_str(&std::fs::read_to_string(rootfs.join("cnb/run.toml")).unwrap()).unwrap();
    assert_eq!(run_toml["images"][0]["image"].as_str(), Some(RUN_IMAGE));
    assert_eq!(
        run_toml["images"][0]["mirrors"][0].as_str(),
        Some(RUN_MIRROR)
    );
    let stack_toml: toml::Value =
        toml::from_str(&std::fs::read_to_string(rootfs.join("cnb/stack.toml")).unwrap()).unwrap();
    assert_eq!(stack_toml["run-image"]["image"].as_str(), Some(RUN_IMAGE));
    assert_eq!(
        stack_toml["run-image"]["mirrors"][0].as_str(),
        Some(RUN_MIRROR)
    );

    let entrypoint = rootfs.join("cnb/lifecycle/kpackd");
    assert_eq!(
        std::fs::metadata(&entrypoint).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("cnb/lifecycle/lifecycle")).unwrap(),
        "#!/bin/sh\necho lifecycle\n"
    );
    assert_eq!(
        std::fs::read_link(rootfs.join("cnb/lifecycle/launcher")).unwrap(),
        Path::new("lifecycle")
    );
    assert!(
        !rootfs.join("etc/passwd").exists(),
        "only /cnb/lifecycle is taken from the lifecycle image"
    );
    assert!(
        rootfs.join("etc/os-release").is_file(),
        "the build image is the base"
    );
    for dir in ["workspace", "layers", "platform"] {
        let meta = std::fs::metadata(rootfs.join(dir)).unwrap();
        assert!(meta.is_dir(), "{dir}");
        if root {
            assert_eq!((meta.uid(), meta.gid()), (CNB_UID, CNB_GID), "{dir}");
        }
    }

    let config: serde_json::Value = serde_json::from_str(&run(
        "skopeo",
        "skopeo",
        &[
            "inspect",
            "--config",
            "--tls-verify=false",
            &format!("docker://{tag}"),
        ],
    ))
    .unwrap();
    assert_eq!(config["config"]["User"], format!("{CNB_UID}:{CNB_GID}"));
    let env: Vec<&str> = config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&format!("CNB_USER_ID={CNB_UID}").as_str()),
        "{env:?}"
    );
    assert!(env.contains(&"CNB_STACK_ID=tests.stack"), "{env:?}");
    assert_eq!(config["created"], "1980-01-01T00:00:01Z");
    assert_eq!(
        config["history"].as_array().unwrap().len(),
        9,
        "a history entry per layer"
    );
}

#[tokio::test]
async fn labels_have_the_shapes_pack_and_the_lifecycle_read() {
    let reg = Registry::shared();
    let f = fixture(reg, "builder-labels").await;
    let published = publish_ok(&f).await;
    let labels = labels_of(&f, &published.image).await;

    let metadata: serde_json::Value = serde_json::from_str(&labels[BUILDER_METADATA]).unwrap();
    assert_eq!(metadata["description"], "kpackd builder tests");
    assert_eq!(metadata["images"][0]["image"], RUN_IMAGE);
    assert_eq!(metadata["images"][0]["mirrors"][0], RUN_MIRROR);
    assert_eq!(metadata["stack"]["runImage"]["image"], RUN_IMAGE);
    assert_eq!(metadata["stack"]["runImage"]["mirrors"][0], RUN_MIRROR);
    assert_eq!(metadata["createdBy"]["name"], "kpackd");
    assert!(metadata["createdBy"]["version"].is_string());
    assert_eq!(metadata["lifecycle"]["version"], "0.20.1");
    assert_eq!(metadata["lifecycle"]["api"]["buildpack"], "0.7");
    assert_eq!(metadata["lifecycle"]["api"]["platform"], "0.12");
    assert_eq!(
        metadata["lifecycle"]["apis"]["buildpack"]["supported"][5],
        "0.12"
    );
    assert_eq!(
        metadata["lifecycle"]["apis"]["platform"]["deprecated"],
        serde_json::json!([])
    );
    let ids: Vec<(&str, &str)> = metadata["buildpacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["id"].as_str().unwrap(), b["version"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ids,
        [
            ("tests/a", "1.0.0"),
            ("tests/b", "2.0.0"),
            ("tests/c", "3.0.0"),
            ("tests/meta", "0.1.0")
        ]
    );
    assert_eq!(
        metadata["buildpacks"][0]["homepage"],
        "https://example.com/tests/a"
    );

    let order: serde_json::Value = serde_json::from_str(&labels[BUILDPACK_ORDER]).unwrap();
    assert_eq!(order[0]["group"][0]["id"], "tests/meta");
    assert_eq!(order[0]["group"][0]["version"], "0.1.0");
    assert_eq!(order[1]["group"][0]["id"], "tests/c");
    assert_eq!(order[1]["group"][1]["optional"], true);

    let layers: serde_json::Value = serde_json::from_str(&labels[BUILDPACK_LAYERS]).unwrap();
    let a = &layers["tests/a"]["1.0.0"];
    assert_eq!(a["api"], "0.10");
    assert_eq!(a["targets"][0]["os"], "linux");
    assert_eq!(a["targets"][0]["arch"], "amd64");
    assert_eq!(a["homepage"], "https://example.com/tests/a");
    assert!(a["layerDiffID"].as_str().unwrap().starts_with("sha256:"));
    let meta = &layers["tests/meta"]["0.1.0"];
    assert_eq!(meta["order"][0]["group"][0]["id"], "tests/a");
    assert_eq!(meta["order"][0]["group"][1]["optional"], true);
    assert!(meta.get("targets").is_none(), "{meta}");
    assert_eq!(layers["tests/c"]["3.0.0"]["api"], "0.10");
    assert_eq!(labels[STACK_ID], "tests.stack");
    assert_eq!(
        labels["io.buildpacks.base.id"], "tests.stack",
        "base labels kept"
    );

    // Every diffID the label names is a layer of the image.
    let image = f.store.image(&published.image).await.unwrap();
    for versions in layers.as_object().unwrap().values() {
        for info in versions.as_object().unwrap().values() {
            let diff_id = info["layerDiffID"].as_str().unwrap();
            assert!(
                image
                    .config
                    .rootfs
                    .diff_ids
                    .iter()
                    .any(|d| d.to_string() == diff_id),
                "{diff_id}"
            );
        }
    }
}

#[tokio::test]
async fn publishing_again_gives_the_same_digest_and_uploads_nothing() {
    let reg = Registry::shared();
    let f = fixture(reg, "builder-twice").await;
    let first = publish_ok(&f).await;
    assert!(
        first.blobs_uploaded > 0 && first.bytes_uploaded > 0,
        "{first:?}"
    );
    let repository = "builder-twice/builder";
    let uploads = reg.blob_uploads(repository);
    let second = publish_ok(&f).await;
    assert_eq!(second.digest, first.digest);
    assert_eq!((second.blobs_uploaded, second.bytes_uploaded), (0, 0));
    assert_eq!(
        reg.blob_uploads(repository),
        uploads,
        "no blob upload begun"
    );

    // The buildpackage's layer is the very blob of the buildpackage.
    let image = f.store.image(&first.image).await.unwrap();
    assert!(
        image
            .manifest
            .layers
            .iter()
            .any(|l| l.digest == f.package_layer),
        "the buildpackage's blob {} is reused",
        f.package_layer
    );
    let package = f.store.image(&f.package).await.unwrap();
    assert_eq!(package.manifest.layers[0].digest, f.package_layer);

    // A directory buildpack's layer is what `buildpack_layer` writes, byte for byte.
    let labels = labels_of(&f, &first.image).await;
    let layers: BuildpackLayers = labels::read(&labels, BUILDPACK_LAYERS).unwrap().unwrap();
    let out = tempfile::tempdir().unwrap();
    let written = buildpack_layer(
        &f.dirs["tests/a"],
        &BuildpackId::parse("tests/a").unwrap(),
        &BuildpackVersion::parse("1.0.0").unwrap(),
        out.path(),
    )
    .unwrap();
    assert_eq!(
        layers["tests/a"]["1.0.0"].layer_diff_id,
        written.diff_id.to_string()
    );
    assert!(image
        .manifest
        .layers
        .iter()
        .any(|l| l.digest == written.digest));

    // A changed buildpack: a new digest, and only its layer and the config are sent.
    std::fs::write(
        f.dirs["tests/b"].join("bin/build"),
        "#!/bin/sh\necho changed\n",
    )
    .unwrap();
    let changed = publish_ok(&f).await;
    assert_ne!(changed.digest, first.digest);
    assert_eq!(changed.blobs_uploaded, 2, "{changed:?}");
    let changed_labels = labels_of(&f, &changed.image).await;
    let changed_layers: BuildpackLayers = labels::read(&changed_labels, BUILDPACK_LAYERS)
        .unwrap()
        .unwrap();
    assert_ne!(
        changed_layers["tests/b"]["2.0.0"].layer_diff_id,
        layers["tests/b"]["2.0.0"].layer_diff_id
    );
    assert_eq!(
        changed_layers["tests/a"]["1.0.0"].layer_diff_id,
        layers["tests/a"]["1.0.0"].layer_diff_id
    );
    std::fs::write(
        f.dirs["tests/b"].join("bin/build"),
        "#!/bin/sh\necho built\n",
    )
    .unwrap();
    assert_eq!(
        publish_ok(&f).await.digest,
        first.digest,
        "back to the first"
    );

    // An OCI layout as the destination gives the same image.
    let mut req = f.req.clone();
    req.tag = parse(&format!(
        "oci:{}:builder",
        f.work.path().join("out").display()
    ));
    let in_layout = publish(&f.store, &req, &DiscardLogs).await.unwrap();
    assert_eq!(in_layout.digest, first.digest);
}

#[tokio::test]
async fn kpackd_reads_its_own_builder_back() {
    let reg = Registry::shared();
    let f = fixture(reg, "builder-readback").await;
    let published = publish_ok(&f).await;
    let labels = labels_of(&f, &published.image).await;

    let metadata: BuilderMetadata = labels::read(&labels, BUILDER_METADATA).unwrap().unwrap();
    assert_eq!(metadata.run_image(), Some(RUN_IMAGE));
    let order: Vec<OrderGroup> = serde_json::from_str(&labels[BUILDPACK_ORDER]).unwrap();
    assert_eq!(order.len(), 2);
    let layers: BuildpackLayers = labels::read(&labels, BUILDPACK_LAYERS).unwrap().unwrap();
    let state = f.work.path().join("state");
    let mut found = 0;
    for (id, versions) in &layers {
        for (version, info) in versions {
            let dir = materialise(
                &f.store,
                &published.image,
                id,
                version,
                &Digest::parse(&info.layer_diff_id).unwrap(),
                &state.join("buildpacks"),
                &DiscardLogs,
            )
            .await
            .unwrap_or_else(|e| panic!("{id}@{version}: {e}"));
            let toml = std::fs::read_to_string(dir.join("buildpack.toml")).unwrap();
            assert!(toml.contains(&format!("id = \"{id}\"")), "{toml}");
            found += 1;
        }
    }
    assert_eq!(found, 4);
}

#[tokio::test]
async fn an_order_naming_a_missing_buildpack_is_refused() {
    let reg = Registry::shared();
    let mut f = fixture(reg, "builder-missing").await;
    f.req.order[1].group[0].id = "tests/nope".into();
    let err = publish(&f.store, &f.req, &DiscardLogs)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("tests/nope"), "{err}");
    assert!(err.contains("builder tests"), "{err}");
}

#[tokio::test]
async fn a_lifecycle_image_without_a_lifecycle_directory_or_labels_is_refused() {
    let reg = Registry::shared();
    let mut f = fixture(reg, "builder-hostile").await;
    let root = f.work.path();
    // `/cnb/lifecycle` is a symlink out of the image.
    let src = root.join("hostile");
    std::fs::create_dir_all(src.join("cnb")).unwrap();
    std::os::unix::fs::symlink("/etc", src.join("cnb/lifecycle")).unwrap();
    let layer = LayerBuilder::new(0, 0)
        .add(Path::new("/cnb"), &src.join("cnb"))
        .unwrap()
        .write(root)
        .unwrap();
    let apis = r#"{"buildpack":{"supported":["0.10"]},"platform":{"supported":["0.12"]}}"#;
    let platform = imageref::Platform::linux_amd64();
    let push = |labels: Vec<(&'static str, &'static str)>, tag: &'static str| {
        let (store, layer) = (f.store.clone(), layer.clone());
        let r = parse(&format!("{}:{tag}", reg.repo("builder-hostile/lifecycle")));
        let config = oci_support::config(&platform, &labels);
        async move { store.push_image(&r, config, &[layer]).await.unwrap() }
    };
    f.req.lifecycle_image = Some(
        push(
            vec![(LIFECYCLE_VERSION, "0.20.1"), (LIFECYCLE_APIS, apis)],
            "link",
        )
        .await,
    );
    let err = publish(&f.store, &f.req, &DiscardLogs)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no /cnb/lifecycle directory"), "{err}");

    f.req.lifecycle_image = Some(push(vec![(LIFECYCLE_APIS, apis)], "unlabelled").await);
    let err = publish(&f.store, &f.req, &DiscardLogs)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(LIFECYCLE_VERSION), "{err}");

    f.req.lifecycle_image = Some(
        push(
            vec![
                (LIFECYCLE_VERSION, "0.20.1\u{1b}[2J"),
                (LIFECYCLE_APIS, apis),
            ],
            "escape",
        )
        .await,
    );
    let err = publish(&f.store, &f.req, &DiscardLogs)
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains('\u{1b}'), "{err}");
}
