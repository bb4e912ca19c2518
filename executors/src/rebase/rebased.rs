//! The rebased image: its new config and manifest, and copying its layers where it goes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use imageref::{Digest, ImageRef};

use crate::lifecycle::export::run_image_reference;
use crate::oci::{
    BlobTransfer, Descriptor, Image, ImageManifest, ImageStore, Manifest, RawManifest,
};

use super::checks::{check_stack, check_target};
use super::config::{rebased_history, synced_labels};
use super::metadata::{run_image_name, LifecycleMetadata};
use super::{
    RebaseError, RebaseRequest, RunImageRecord, BASE_DIGEST_ANNOTATION, BASE_NAME_ANNOTATION,
    LIFECYCLE_LABEL, REBASABLE_LABEL,
};

/// The rebased image, ready to push: its config and manifest bytes, and what it was
/// made from.
#[derive(Debug)]
pub(super) struct Rebased {
    pub(super) config: Bytes,
    pub(super) manifest: ImageManifest,
    pub(super) raw_manifest: RawManifest,
    pub(super) old_run_image: RunImageRecord,
    pub(super) new_run_image: RunImageRecord,
    pub(super) old_base_layers: usize,
    pub(super) app_layers: usize,
}

impl Rebased {
    /// Checks the preconditions and builds the new config and manifest. Touches no
    /// store.
    pub(super) fn new(
        req: &RebaseRequest,
        app: &Image,
        run: &Image,
    ) -> Result<Rebased, RebaseError> {
        let labels = app.config.labels();
        let run_labels = run.config.labels();
        let mut metadata = LifecycleMetadata::read(&req.image, &labels)?;
        if labels.get(REBASABLE_LABEL).map(String::as_str) == Some("false") && !req.force {
            return Err(RebaseError::NotRebasable {
                image: req.image.to_string(),
            });
        }
        check_stack(req, &labels, &run_labels)?;
        if !req.force {
            check_target(req, &app.config, &labels, &run.config, &run_labels)?;
        }
        let run_name = run_image_name(&req.run_image);
        if !metadata.names(&req.run_image) {
            if !req.force {
                return Err(RebaseError::RunImageNotListed {
                    image: req.image.to_string(),
                    run_image: req.run_image.to_string(),
                    listed: metadata.listed().join(", "),
                });
            }
            metadata.rename_run_image(&run_name);
        }

        let (top, new_top) = swap_point(req, app, run, &metadata)?;
        let diff_ids = &app.config.rootfs.diff_ids;
        let old_run_image = RunImageRecord {
            reference: metadata.reference.clone(),
            top_layer: diff_ids[top].clone(),
        };
        let new_reference = run_image_reference(run);
        metadata.point_at(&new_reference, &new_top);

        let mut new_labels = synced_labels(&labels, &run_labels);
        new_labels.insert(LIFECYCLE_LABEL.to_string(), metadata.to_json());
        let config = rebased_config(app, run, top, new_labels);
        let manifest = rebased_manifest(app, run, top, &config, run_name);
        let raw_manifest = match &app.manifest.media_type {
            Some(_) => RawManifest::from_manifest(&Manifest::Image(manifest.clone())),
            // A Docker manifest without `mediaType` is not guessed as OCI: keep the
            // media type the app image was served with.
            None => RawManifest {
                media_type: app.raw_manifest.media_type.clone(),
                ..RawManifest::from_manifest(&Manifest::Image(manifest.clone()))
            },
        };
        Ok(Rebased {
            config,
            manifest,
            raw_manifest,
            old_run_image,
            new_run_image: RunImageRecord {
                reference: new_reference,
                top_layer: new_top,
            },
            old_base_layers: top + 1,
            app_layers: diff_ids.len() - top - 1,
        })
    }

    /// Makes the layers present at `destination`: the new run image's from where it
    /// lives, the app layers from the app image's repository. When `destination` is
    /// that repository, every layer the app image refers to is there already (the
    /// app layers, and the run layers the two run images share): those are counted
    /// as present without a request, and the other run layers are new there.
    pub(super) async fn copy_layers(
        &self,
        store: &ImageStore,
        req: &RebaseRequest,
        app: &Image,
        run: &Image,
        destination: &ImageRef,
        sent: &Arc<AtomicU64>,
    ) -> Result<Vec<BlobTransfer>, RebaseError> {
        let base = run.manifest.layers.len();
        let app_in_place = req.image.same_location(destination);
        let present = |layer: &Descriptor| {
            app_in_place && app.manifest.layers.iter().any(|l| l.digest == layer.digest)
        };
        let mut transfers = Vec::new();
        let copies = self
            .manifest
            .layers
            .iter()
            .enumerate()
            .filter_map(|(i, layer)| {
                if i < base && present(layer) {
                    transfers.push(BlobTransfer::Existed);
                    None
                } else if i < base {
                    // In the app image's repository, a run layer the app image does
                    // not refer to is new: it is mounted (or sent) without asking.
                    Some((run.source.clone(), layer.clone(), app_in_place))
                } else if app_in_place {
                    None
                } else {
                    Some((req.image.clone(), layer.clone(), false))
                }
            })
            // Owned items: a stream of borrowed ones makes the future lose `Send`
            // (rustc's higher-ranked lifetime limits), and the engine spawns it.
            .collect::<Vec<_>>();
        let on_bytes: Arc<dyn Fn(u64) + Send + Sync> = {
            let sent = sent.clone();
            Arc::new(move |n| {
                sent.fetch_add(n, Ordering::Relaxed);
            })
        };
        futures::stream::iter(copies)
            .map(|(from, layer, new)| {
                let on_bytes = on_bytes.clone();
                async move {
                    let copy = if new {
                        store
                            .copy_new_blob(&from, destination, &layer, on_bytes)
                            .await
                    } else {
                        store.copy_blob(&from, destination, &layer, on_bytes).await
                    };
                    copy.map_err(|source| RebaseError::CopyLayer {
                        layer: layer.digest.to_string(),
                        destination: destination.to_string(),
                        source: Box::new(source),
                    })
                }
            })
            .buffer_unordered(store.settings().parallel_blobs.max(1))
            .try_for_each(|how| {
                transfers.push(how);
                futures::future::ready(Ok(()))
            })
            .await?;
        Ok(transfers)
    }
}

/// Where the run image ends in the app image (the index of the layer whose diffID the
/// metadata names as the run image's top layer), and the new run image's top layer.
fn swap_point(
    req: &RebaseRequest,
    app: &Image,
    run: &Image,
    metadata: &LifecycleMetadata,
) -> Result<(usize, Digest), RebaseError> {
    let diff_ids = &app.config.rootfs.diff_ids;
    if diff_ids.len() != app.manifest.layers.len() {
        return Err(RebaseError::LayerCountMismatch {
            image: req.image.to_string(),
            layers: app.manifest.layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    let run_diff_ids = &run.config.rootfs.diff_ids;
    if run_diff_ids.len() != run.manifest.layers.len() {
        return Err(RebaseError::LayerCountMismatch {
            image: req.run_image.to_string(),
            layers: run.manifest.layers.len(),
            diff_ids: run_diff_ids.len(),
        });
    }
    let top = diff_ids
        .iter()
        .position(|d| d.to_string() == metadata.top_layer)
        .ok_or_else(|| RebaseError::TopLayerNotFound {
            image: req.image.to_string(),
            top_layer: metadata.top_layer.clone(),
        })?;
    let new_top = run_diff_ids
        .last()
        .ok_or_else(|| RebaseError::EmptyRunImage {
            run_image: req.run_image.to_string(),
        })?
        .clone();
    Ok((top, new_top))
}

/// The app image's config on the new run image: its platform, the new base's diffIDs
/// and history below the app's layers, and `labels`.
fn rebased_config(
    app: &Image,
    run: &Image,
    top: usize,
    labels: std::collections::BTreeMap<String, String>,
) -> Bytes {
    let mut config = app.config.clone();
    config.architecture = run.config.architecture.clone();
    config.os = run.config.os.clone();
    if run.config.variant.is_some() {
        config.variant = run.config.variant.clone();
    }
    for key in ["os.version", "os.features"] {
        match run.config.other.get(key) {
            Some(v) => config.other.insert(key.to_string(), v.clone()),
            None => config.other.remove(key),
        };
    }
    config.rootfs.diff_ids = run
        .config
        .rootfs
        .diff_ids
        .iter()
        .chain(&app.config.rootfs.diff_ids[top + 1..])
        .cloned()
        .collect();
    config.history = rebased_history(&app.config, top, &run.config);
    config.config.get_or_insert_with(Default::default).labels = Some(labels);
    Bytes::from(serde_json::to_vec(&config).expect("an image config serialises"))
}

/// The app image's manifest with the new run image's layers below the app's, pointing
/// at `config`; the base annotations, where present, name the new run image.
fn rebased_manifest(
    app: &Image,
    run: &Image,
    top: usize,
    config: &Bytes,
    run_name: String,
) -> ImageManifest {
    let mut annotations = app.manifest.annotations.clone();
    if let Some(a) = annotations.as_mut() {
        if a.contains_key(BASE_DIGEST_ANNOTATION) {
            a.insert(BASE_DIGEST_ANNOTATION.into(), run.digest().to_string());
        }
        if a.contains_key(BASE_NAME_ANNOTATION) {
            a.insert(BASE_NAME_ANNOTATION.into(), run_name);
        }
    }
    ImageManifest {
        schema_version: app.manifest.schema_version,
        media_type: app.manifest.media_type.clone(),
        config: Descriptor::new(
            app.manifest.config.media_type.clone(),
            Digest::sha256(config),
            config.len() as u64,
        ),
        layers: run
            .manifest
            .layers
            .iter()
            .chain(&app.manifest.layers[top + 1..])
            .cloned()
            .collect(),
        annotations,
    }
}
