//! The OCI layer against a real registry on loopback: round trips, tags and digests,
//! indexes, skipping and mounting blobs, credentials and clear errors.

mod oci_support;

use std::sync::Arc;

use base64::Engine;
use executors::oci::{
    copy_image, unpack_image, BlobTransfer, CredentialSource, ImageIndex, Manifest, OciError,
    RawManifest, UnpackOptions,
};
use imageref::Platform;
use oci_support::*;
use testkit::registry::{Fault, FaultyProxy, Registry};

#[tokio::test]
async fn push_then_pull_round_trip() {
    let reg = Registry::shared();
    let work = tempfile::tempdir().unwrap();
    let store = store();
    let r = parse(&format!("{}:v1", reg.repo("roundtrip/app")));
    let pinned = push_small_image(&store, &r, work.path(), "round").await;

    assert_eq!(
        Some(store.resolve_digest(&r).await.unwrap()),
        pinned.digest().cloned()
    );
    let image = store.image(&r).await.unwrap();
    assert_eq!(image.manifest.layers.len(), 2);
    assert_eq!(image.config.labels()["test"], "round");
    assert_eq!(image.config.rootfs.diff_ids.len(), 2);

    let root = work.path().join("root");
    unpack_image(&store, &pinned, &root, &UnpackOptions { chown: false })
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("app/hello.txt")).unwrap(),
        "round"
    );
    assert!(root.join("app/base.txt").is_file());
}

#[tokio::test]
async fn pushing_again_uploads_nothing() {
    let reg = Registry::shared();
    let work = tempfile::tempdir().unwrap();
    let store = store();
    let r = parse(&format!("{}:v1", reg.repo("skip/app")));
    push_small_image(&store, &r, work.path(), "same").await;
    let before = reg.blob_uploads("skip/app");
    assert_eq!(before, 3, "two layers and a config");
    push_small_image(&store, &r, work.path(), "same").await;
    assert_eq!(reg.blob_uploads("skip/app"), before);
}

#[tokio::test]
async fn copy_within_a_registry_mounts_blobs() {
    let reg = Registry::shared();
    let work = tempfile::tempdir().unwrap();
    let store = store();
    let src = parse(&format!("{}:v1", reg.repo("mount/source")));
    let pinned = push_small_image(&store, &src, work.path(), "mount").await;
    let dst = parse(&format!("{}:copied", reg.repo("mount/target")));

    let report = copy_image(&store, &src, &dst, Arc::new(())).await.unwrap();
    assert_eq!(Some(&report.digest), pinned.digest());
    assert_eq!(report.blobs.len(), 3);
    assert!(report
        .blobs
        .iter()
        .all(|(_, how)| *how == BlobTransfer::Mounted));
    assert_eq!(reg.count("PATCH", "/v2/mount/target/"), 0);
    assert_eq!(reg.count("PUT", "/v2/mount/target/blobs/"), 0);
    assert_eq!(store.resolve_digest(&dst).await.unwrap(), report.digest);
}

#[tokio::test]
async fn an_index_yields_the_configured_platform() {
    let reg = Registry::shared();
    let work = tempfile::tempdir().unwrap();
    let arm = Platform::parse("linux/arm64").unwrap();
    let amd = Platform::linux_amd64();
    let repo = reg.repo("index/app");
    let store = store();
    let mut entries = Vec::new();
    for platform in [&amd, &arm] {
        let layer = layer(work.path(), &[("arch", &platform.architecture)]);
        let r = parse(&repo);
        let pinned = store
            .push_image(&r, config(platform, &[]), &[layer])
            .await
            .unwrap();
        let raw = store.manifest(&pinned).await.unwrap();
        let mut d = raw.descriptor();
        d.platform = Some(platform.clone());
        entries.push((d, pinned));
    }
    let index = RawManifest::from_manifest(&Manifest::Index(ImageIndex {
        schema_version: 2,
        media_type: Some(executors::oci::media_type::OCI_INDEX.into()),
        manifests: entries.iter().map(|(d, _)| d.clone()).collect(),
        annotations: None,
    }));
    let tagged = parse(&format!("{repo}:multi"));
    store.push_manifest(&tagged, &index).await.unwrap();

    let resolved = store.resolve(&tagged).await.unwrap();
    assert_eq!(resolved.digest, index.digest);
    assert_eq!(Some(&resolved.image), entries[0].1.digest());
    let arm_store = store_for(arm.clone(), CredentialSource::anonymous());
    let resolved = arm_store.resolve(&tagged).await.unwrap();
    assert_eq!(Some(&resolved.image), entries[1].1.digest());
    assert_eq!(resolved.platform, Some(arm.clone()));
    let image = arm_store.image(&tagged).await.unwrap();
    assert_eq!(image.config.architecture, "arm64");
    assert_eq!(image.index_digest, Some(index.digest.clone()));

    let s390 = store_for(
        Platform::parse("linux/s390x").unwrap(),
        CredentialSource::anonymous(),
    );
    let err = s390.image(&tagged).await.unwrap_err();
    assert!(matches!(err, OciError::PlatformNotFound { .. }), "{err}");
    assert!(err.to_string().contains("linux/arm64"), "{err}");

    // A copy takes the index whole: every platform, the same digest.
    let layout = parse(&format!(
        "oci:{}:multi",
        work.path().join("layout").display()
    ));
    let report = copy_image(&store, &tagged, &layout, Arc::new(()))
        .await
        .unwrap();
    assert_eq!(report.digest, index.digest);
    assert_eq!(report.blobs.len(), 4, "a config and a layer per platform");
    assert_eq!(store.resolve_digest(&layout).await.unwrap(), index.digest);
    let arm_copy = arm_store.image(&layout).await.unwrap();
    assert_eq!(Some(arm_copy.digest()), entries[1].1.digest());
}

#[tokio::test]
async fn credentials_come_from_a_docker_config() {
    let reg = Registry::start_with_auth("kpackd", "s3cret-pass");
    let work = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("kpackd:s3cret-pass");
    let config = work.path().join("config.json");
    std::fs::write(
        &config,
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr()),
    )
    .unwrap();
    let r = parse(&format!("{}:v1", reg.repo("private/app")));

    let store = store_for(
        Platform::linux_amd64(),
        CredentialSource::docker_config(&config),
    );
    let pinned = push_small_image(&store, &r, work.path(), "private").await;
    assert_eq!(
        store.resolve_digest(&r).await.unwrap(),
        pinned.digest().cloned().unwrap()
    );

    let err = oci_support::store().resolve_digest(&r).await.unwrap_err();
    assert!(matches!(err, OciError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("private/app"), "{err}");

    let wrong = work.path().join("wrong.json");
    std::fs::write(
        &wrong,
        format!(
            r#"{{"auths":{{"{}":{{"username":"kpackd","password":"nope"}}}}}}"#,
            reg.addr()
        ),
    )
    .unwrap();
    let err = store_for(
        Platform::linux_amd64(),
        CredentialSource::docker_config(&wrong),
    )
    .image(&r)
    .await
    .unwrap_err();
    assert!(matches!(err, OciError::Unauthorized { .. }), "{err}");
    assert!(!err.to_string().contains("nope"));
}

#[tokio::test]
async fn a_missing_tag_is_not_found() {
    let reg = Registry::shared();
    let store = store();
    let r = parse(&format!("{}:missing", reg.repo("errors/app")));
    let err = store.resolve(&r).await.unwrap_err();
    assert!(matches!(err, OciError::NotFound { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("errors/app:missing"), "{text}");
    assert!(text.to_lowercase().contains("unknown"), "{text}");
}

#[tokio::test]
async fn a_registry_that_is_down_is_named() {
    let port = testkit::free_port();
    let r = parse(&format!("127.0.0.1:{port}/down/app:v1"));
    let err = store().resolve_digest(&r).await.unwrap_err();
    assert!(matches!(err, OciError::Unreachable { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot reach registry 127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn copy_through_a_layout_keeps_the_digest() {
    let reg = Registry::shared();
    let work = tempfile::tempdir().unwrap();
    let store = store();
    let src = parse(&format!("{}:v1", reg.repo("via-layout/src")));
    let pinned = push_small_image(&store, &src, work.path(), "via").await;
    let layout = parse(&format!(
        "oci:{}:saved",
        work.path().join("layout").display()
    ));
    let there = copy_image(&store, &src, &layout, Arc::new(()))
        .await
        .unwrap();
    assert_eq!(Some(&there.digest), pinned.digest());
    let back = parse(&format!("{}:v1", reg.repo("via-layout/back")));
    let report = copy_image(&store, &layout, &back, Arc::new(()))
        .await
        .unwrap();
    assert_eq!(report.digest, there.digest);
    assert!(report
        .blobs
        .iter()
        .all(|(_, how)| *how == BlobTransfer::Uploaded));
    let again = copy_image(&store, &layout, &back, Arc::new(()))
        .await
        .unwrap();
    assert!(again
        .blobs
        .iter()
        .all(|(_, how)| *how == BlobTransfer::Existed));
}

/// A store that retries more than the default test store does.
fn patient_store() -> executors::oci::ImageStore {
    executors::oci::ImageStore::new(executors::oci::StoreSettings {
        insecure_registries: Vec::new(),
        platform: Platform::linux_amd64(),
        credentials: CredentialSource::anonymous(),
        retry: executors::oci::RetryPolicy {
            attempts: 4,
            initial_backoff: std::time::Duration::from_millis(10),
            max_backoff: std::time::Duration::from_millis(50),
        },
        parallel_blobs: 4,
        ..executors::oci::StoreSettings::default()
    })
}

#[tokio::test]
async fn transient_failures_are_retried() {
    let reg = Registry::shared();
    let work = tempfile::tempdir().unwrap();
    let direct = parse(&format!("{}:v1", reg.repo("flaky/app")));
    let pinned = push_small_image(&store(), &direct, work.path(), "flaky").await;
    let proxy = FaultyProxy::start(reg);
    proxy.add(Fault::error(
        503,
        "/v2/flaky/app/manifests/",
        2,
        "UNAVAILABLE",
        "try again later",
    ));

    let through = parse(&format!("{}:v1", proxy.repo("flaky/app")));
    let digest = patient_store().resolve_digest(&through).await.unwrap();
    assert_eq!(Some(&digest), pinned.digest());
    let faults = proxy.faults_given();
    assert_eq!(faults.len(), 2, "{faults:?}");
    assert!(faults.iter().all(|f| f.status == 503));
}

#[tokio::test]
async fn lasting_trouble_is_reported_with_the_registrys_message() {
    let reg = Registry::shared();
    let proxy = FaultyProxy::start(reg);
    proxy.add(Fault::error(
        503,
        "/v2/down-for-good/app/",
        1000,
        "UNAVAILABLE",
        "maintenance until noon",
    ));
    let through = parse(&format!("{}:v1", proxy.repo("down-for-good/app")));
    let err = store().resolve_digest(&through).await.unwrap_err();
    assert!(
        matches!(
            err,
            OciError::Registry {
                status: Some(503),
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("maintenance until noon"), "{text}");
    assert!(text.contains("down-for-good/app:v1"), "{text}");
    // Two attempts (the test store's bound), each a HEAD then a GET.
    assert_eq!(proxy.faults_given().len(), 4);
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    let reg = Registry::shared();
    let proxy = FaultyProxy::start(reg);
    proxy.add(Fault::error(
        403,
        "/v2/forbidden/app/",
        1000,
        "DENIED",
        "requested access to the resource is denied",
    ));
    let through = parse(&format!("{}:v1", proxy.repo("forbidden/app")));
    let err = patient_store().resolve_digest(&through).await.unwrap_err();
    assert!(matches!(err, OciError::Denied { .. }), "{err}");
    assert!(err.to_string().contains("resource is denied"), "{err}");
    // One attempt: the HEAD, then the GET oci-client falls back to.
    assert_eq!(proxy.faults_given().len(), 2);
}

#[tokio::test]
async fn a_declined_mount_falls_back_to_an_upload() {
    let reg = Registry::shared();
    let work = tempfile::tempdir().unwrap();
    let source = parse(&format!("{}:v1", reg.repo("decline/source")));
    let pinned = push_small_image(&store(), &source, work.path(), "decline").await;
    let proxy = FaultyProxy::start(reg);
    // What a registry does when it will not mount: it opens an upload session instead.
    proxy.add(Fault {
        method: Some("POST".into()),
        path_contains: "mount=".into(),
        times: 1000,
        status: 202,
        headers: vec![
            (
                "Location".into(),
                "/v2/decline/target/blobs/uploads/declined-by-test".into(),
            ),
            ("Docker-Upload-UUID".into(), "declined-by-test".into()),
        ],
        body: String::new(),
    });

    let src = parse(&format!("{}:v1", proxy.repo("decline/source")));
    let dst = parse(&format!("{}:v1", proxy.repo("decline/target")));
    let report = copy_image(&store(), &src, &dst, Arc::new(()))
        .await
        .unwrap();
    assert_eq!(Some(&report.digest), pinned.digest());
    assert_eq!(report.blobs.len(), 3);
    assert!(
        report
            .blobs
            .iter()
            .all(|(_, how)| *how == BlobTransfer::Uploaded),
        "{:?}",
        report.blobs
    );
    let declined = proxy.faults_given();
    assert_eq!(declined.len(), 3, "one mount tried per blob: {declined:?}");
    assert_eq!(reg.blob_uploads("decline/target"), 3);
    let image = store()
        .image(&parse(&format!("{}:v1", reg.repo("decline/target"))))
        .await
        .unwrap();
    assert_eq!(image.config.labels()["test"], "decline");
}

#[tokio::test]
async fn an_invalid_manifest_is_refused_with_the_registrys_message() {
    let reg = Registry::shared();
    let r = parse(&format!("{}:v1", reg.repo("invalid/app")));
    let missing = imageref::Digest::sha256(b"a blob nobody pushed");
    let manifest = RawManifest::from_manifest(&Manifest::Image(executors::oci::ImageManifest {
        schema_version: 2,
        media_type: Some(executors::oci::media_type::OCI_MANIFEST.into()),
        config: executors::oci::Descriptor::new(
            executors::oci::media_type::OCI_CONFIG,
            missing,
            20,
        ),
        layers: Vec::new(),
        annotations: None,
    }));
    let err = patient_store()
        .push_manifest(&r, &manifest)
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("invalid/app"), "{text}");
    assert!(text.to_lowercase().contains("blob unknown"), "{text}");
}

#[tokio::test]
async fn a_dropped_connection_is_retried() {
    let reg = Registry::shared();
    let work = tempfile::tempdir().unwrap();
    let direct = parse(&format!("{}:v1", reg.repo("hang-up/app")));
    push_small_image(&store(), &direct, work.path(), "hang-up").await;
    let proxy = FaultyProxy::start(reg);
    proxy.add(Fault::hang_up("/v2/hang-up/app/blobs/", 1));

    let through = parse(&format!("{}:v1", proxy.repo("hang-up/app")));
    let root = work.path().join("root");
    unpack_image(&store(), &through, &root, &UnpackOptions { chown: false })
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("app/hello.txt")).unwrap(),
        "hang-up"
    );
    assert_eq!(proxy.faults_given().len(), 1);
}

#[tokio::test]
async fn what_a_store_pushed_the_next_store_reads_from_its_pushed_cache() {
    let reg = Registry::shared();
    let work = tempfile::tempdir().unwrap();
    let kept = work.path().join("pushed");
    let r = parse(&format!("{}:v1", reg.repo("pushed/app")));
    let pinned = push_small_image(
        &store().with_pushed_cache(kept.clone()),
        &r,
        work.path(),
        "kept",
    )
    .await;
    let reads = |reg: &Registry| {
        (
            reg.count("GET", "/v2/pushed/app/manifests/"),
            reg.count("GET", "/v2/pushed/app/blobs/"),
        )
    };

    // A later process, as the next rebase: the manifest and config it pushed are read
    // from disk, the registry is not asked.
    let before = reads(reg);
    let image = store()
        .with_pushed_cache(kept.clone())
        .image(&pinned)
        .await
        .unwrap();
    assert_eq!(image.config.labels()["test"], "kept");
    assert_eq!(reads(reg), before);

    // Without the cache, both are read from the registry.
    store().image(&pinned).await.unwrap();
    let after = reads(reg);
    assert_eq!((after.0 - before.0, after.1 - before.1), (1, 1));

    // A kept file changed on disk is not believed: the registry is asked again.
    for entry in std::fs::read_dir(&kept).unwrap() {
        std::fs::write(entry.unwrap().path(), b"{}").unwrap();
    }
    let image = store()
        .with_pushed_cache(kept)
        .image(&pinned)
        .await
        .unwrap();
    assert_eq!(image.config.labels()["test"], "kept");
    let last = reads(reg);
    assert_eq!((last.0 - after.0, last.1 - after.1), (1, 1));
}
