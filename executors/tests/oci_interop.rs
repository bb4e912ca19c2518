//! What kpackd writes, other tools read, and the other way round: an OCI layout written
//! by kpackd is inspected and copied by skopeo and unpacked by umoci; layouts written by
//! skopeo and by umoci are read and unpacked by kpackd.

mod oci_support;

use std::path::Path;
use std::process::Command;

use executors::oci::{unpack_image, UnpackOptions};
use oci_support::*;
use testkit::registry::Registry;

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

fn display(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test]
async fn skopeo_and_umoci_read_what_kpackd_writes() {
    let reg = Registry::shared();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let r = parse(&format!("oci:{}:app", display(&layout)));
    let store = store();
    let pinned = push_small_image(&store, &r, work.path(), "interop").await;
    let digest = store.resolve_digest(&pinned).await.unwrap();

    let inspected: serde_json::Value = serde_json::from_str(&run(
        "skopeo",
        "skopeo",
        &["inspect", &format!("oci:{}:app", display(&layout))],
    ))
    .unwrap();
    assert_eq!(inspected["Digest"], digest.to_string());
    assert_eq!(inspected["Labels"]["test"], "interop");
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 2);

    let copied = format!("{}:v1", reg.repo("interop/from-kpackd"));
    run(
        "skopeo",
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:app", display(&layout)),
            &format!("docker://{copied}"),
        ],
    );
    assert_eq!(
        store.resolve_digest(&parse(&copied)).await.unwrap(),
        digest,
        "skopeo copied the image unchanged"
    );

    let bundle = work.path().join("bundle");
    run(
        "umoci",
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:app", display(&layout)),
            &display(&bundle),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/app/hello.txt")).unwrap(),
        "interop"
    );
    assert!(bundle.join("rootfs/app/base.txt").is_file());
}

#[tokio::test]
async fn kpackd_reads_what_skopeo_writes() {
    let reg = Registry::shared();
    let work = tempfile::tempdir().unwrap();
    let store = store();
    let source = parse(&format!("{}:v1", reg.repo("interop/for-skopeo")));
    let pinned = push_small_image(&store, &source, work.path(), "from-skopeo").await;
    let layout = work.path().join("skopeo-layout");
    run(
        "skopeo",
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{source}"),
            &format!("oci:{}:copied", display(&layout)),
        ],
    );
    let r = parse(&format!("oci:{}:copied", display(&layout)));
    assert_eq!(
        Some(&store.resolve_digest(&r).await.unwrap()),
        pinned.digest()
    );
    let root = work.path().join("root");
    let image = unpack_image(&store, &r, &root, &UnpackOptions { chown: false })
        .await
        .unwrap();
    assert_eq!(image.config.labels()["test"], "from-skopeo");
    assert_eq!(
        std::fs::read_to_string(root.join("app/hello.txt")).unwrap(),
        "from-skopeo"
    );
}

#[tokio::test]
async fn kpackd_reads_what_umoci_writes() {
    let work = tempfile::tempdir().unwrap();
    let layout = display(&work.path().join("umoci-layout"));
    let image = format!("{layout}:base");
    let bundle = work.path().join("bundle");
    run("umoci", "umoci", &["init", "--layout", &layout]);
    run("umoci", "umoci", &["new", "--image", &image]);
    run(
        "umoci",
        "umoci",
        &["unpack", "--image", &image, &display(&bundle)],
    );
    tree(
        &bundle.join("rootfs"),
        &[("etc/motd", "made by umoci\n"), ("srv/data/x", "x")],
    );
    std::os::unix::fs::symlink("/srv/data", bundle.join("rootfs/data")).unwrap();
    run(
        "umoci",
        "umoci",
        &["repack", "--image", &image, &display(&bundle)],
    );
    run(
        "umoci",
        "umoci",
        &[
            "config",
            "--image",
            &image,
            "--config.label",
            "made-by=umoci",
        ],
    );

    let store = store();
    let r = parse(&format!("oci:{layout}:base"));
    let root = work.path().join("root");
    let read = unpack_image(&store, &r, &root, &UnpackOptions { chown: false })
        .await
        .unwrap();
    assert_eq!(read.config.labels()["made-by"], "umoci");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/motd")).unwrap(),
        "made by umoci\n"
    );
    assert_eq!(
        std::fs::read_link(root.join("data")).unwrap(),
        Path::new("/srv/data")
    );
}

#[tokio::test]
async fn kpackd_reads_docker_schema_2_images() {
    let reg = Registry::shared();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let store = store();
    let r = parse(&format!("oci:{}:app", display(&layout)));
    push_small_image(&store, &r, work.path(), "docker-format").await;
    let docker = format!("{}:v2s2", reg.repo("interop/docker-format"));
    run(
        "skopeo",
        "skopeo",
        &[
            "copy",
            "--format",
            "v2s2",
            "--dest-tls-verify=false",
            &format!("oci:{}:app", display(&layout)),
            &format!("docker://{docker}"),
        ],
    );
    let image = store.image(&parse(&docker)).await.unwrap();
    assert_eq!(
        image.raw_manifest.media_type,
        executors::oci::media_type::DOCKER_MANIFEST
    );
    assert_eq!(image.config.labels()["test"], "docker-format");
    let root = work.path().join("root");
    unpack_image(
        &store,
        &parse(&docker),
        &root,
        &UnpackOptions { chown: false },
    )
    .await
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("app/hello.txt")).unwrap(),
        "docker-format"
    );
}

#[tokio::test]
async fn umoci_unpacks_links_as_kpackd_wrote_them() {
    use std::os::unix::fs::MetadataExt;
    let work = tempfile::tempdir().unwrap();
    let tree_dir = work.path().join("tree");
    tree(
        &tree_dir,
        &[("bin/tool", "#!/bin/sh\n"), ("etc/conf", "x=1\n")],
    );
    std::os::unix::fs::symlink("../bin/tool", tree_dir.join("etc/tool-link")).unwrap();
    std::fs::hard_link(tree_dir.join("bin/tool"), tree_dir.join("bin/tool-again")).unwrap();
    let layer = executors::oci::layer::LayerBuilder::new(1000, 1000)
        .add(Path::new("/opt/app"), &tree_dir)
        .unwrap()
        .write(work.path())
        .unwrap();
    let layout = work.path().join("layout");
    let r = parse(&format!("oci:{}:links", display(&layout)));
    store()
        .push_image(
            &r,
            config(&imageref::Platform::linux_amd64(), &[]),
            &[layer],
        )
        .await
        .unwrap();

    let bundle = work.path().join("bundle");
    run(
        "umoci",
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:links", display(&layout)),
            &display(&bundle),
        ],
    );
    let app = bundle.join("rootfs/opt/app");
    assert_eq!(
        std::fs::read_link(app.join("etc/tool-link")).unwrap(),
        Path::new("../bin/tool")
    );
    let a = std::fs::metadata(app.join("bin/tool")).unwrap();
    let b = std::fs::metadata(app.join("bin/tool-again")).unwrap();
    assert_eq!(a.ino(), b.ino(), "the hard link is a hard link");
    assert_eq!((a.uid(), a.gid()), (1000, 1000));
}
