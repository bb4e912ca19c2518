//! Shared helpers of the OCI tests: stores, file trees and small images.

#![allow(dead_code)] // each test binary uses its own share of these

use std::path::Path;
use std::time::Duration;

use executors::oci::layer::{LayerBuilder, WrittenLayer};
use executors::oci::{
    ContainerConfig, CredentialSource, ImageConfig, ImageStore, RetryPolicy, StoreSettings,
};
use imageref::ImageRef;
use imageref::Platform;

/// A store with no credentials and quick retries, choosing `platform`.
pub fn store_for(platform: Platform, credentials: CredentialSource) -> ImageStore {
    ImageStore::new(StoreSettings {
        insecure_registries: Vec::new(),
        platform,
        credentials,
        retry: RetryPolicy {
            attempts: 2,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
        },
        parallel_blobs: 4,
        ..StoreSettings::default()
    })
}

pub fn store() -> ImageStore {
    store_for(Platform::linux_amd64(), CredentialSource::anonymous())
}

pub fn parse(s: &str) -> ImageRef {
    ImageRef::parse(s).unwrap()
}

/// Writes `files` (path, content) under `dir`.
pub fn tree(dir: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
}

/// One layer holding `files` under `/app`.
pub fn layer(work: &Path, files: &[(&str, &str)]) -> WrittenLayer {
    let src = tempfile::tempdir_in(work).unwrap();
    tree(src.path(), files);
    LayerBuilder::new(1000, 1000)
        .add(Path::new("/app"), src.path())
        .unwrap()
        .write(work)
        .unwrap()
}

pub fn config(platform: &Platform, labels: &[(&str, &str)]) -> ImageConfig {
    ImageConfig {
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        config: Some(ContainerConfig {
            env: Some(vec!["PATH=/usr/bin:/bin".into()]),
            user: Some("1000:1000".into()),
            working_dir: Some("/app".into()),
            entrypoint: Some(vec!["/app/run".into()]),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Pushes a two-layer linux/amd64 image whose files say `tag`; returns `r` pinned.
pub async fn push_small_image(
    store: &ImageStore,
    r: &ImageRef,
    work: &Path,
    tag: &str,
) -> ImageRef {
    let layers = [
        layer(work, &[("base.txt", "base layer")]),
        layer(
            work,
            &[("hello.txt", tag), ("sub/run", "#!/bin/sh\necho hi\n")],
        ),
    ];
    store
        .push_image(
            r,
            config(&Platform::linux_amd64(), &[("test", tag)]),
            &layers,
        )
        .await
        .unwrap()
}
