//! Rebase: puts an app image on a patched run image without rebuilding it. The layers
//! up to the run image's top layer are swapped for the new run image's, every layer
//! above stays as it is (same digests, never downloaded nor uploaded again), and only a
//! new config and manifest are written.
//!
//! The flow, as the CNB rebaser does it (platform spec, `rebaser`):
//! 1. read the app image and the new run image (for an index, the entry matching the
//!    app image's platform);
//! 2. check the preconditions — lifecycle metadata present, `io.buildpacks.rebasable`
//!    not `"false"`, same stack id, same target (os, architecture, variant, distro),
//!    run image named in the metadata — all but the stack id waived by `force`;
//! 3. build the new config (diffIDs, history, os/architecture, labels) and manifest;
//! 4. for each distinct destination, make the new run image's layers present (a
//!    cross-repository mount on the same registry, a stream otherwise), and the app
//!    layers when the destination is not where the app image lives; then the config,
//!    then the manifest under the primary tag and every additional tag, in order.
//!
//! Nothing is written before every check has passed, so a refused rebase leaves the
//! destination untouched.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use imageref::{Digest, ImageRef};
use serde_json::{Map, Value};

use crate::lifecycle::export::run_image_reference;
use crate::oci::{
    BlobTransfer, Descriptor, Image, ImageConfig, ImageManifest, ImageStore, Manifest, OciError,
    RawManifest,
};

/// Labels that describe the base image; a rebase takes them from the new run image.
use cnb::labels::BASE_LABEL_PREFIXES;
/// The label holding the lifecycle's metadata, with `runImage.topLayer`; `"false"` in
/// the rebasable label on an image that must not be rebased; the legacy stack id, on
/// run images and the app images built on them.
pub use cnb::labels::{
    LIFECYCLE_METADATA as LIFECYCLE_LABEL, REBASABLE as REBASABLE_LABEL, STACK_ID as STACK_ID_LABEL,
};
const DISTRO_LABELS: [&str; 2] = [cnb::labels::DISTRO_NAME, cnb::labels::DISTRO_VERSION];
/// Manifest annotations naming the base image, updated when present.
const BASE_DIGEST_ANNOTATION: &str = "org.opencontainers.image.base.digest";
const BASE_NAME_ANNOTATION: &str = "org.opencontainers.image.base.name";

/// One rebase to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebaseRequest {
    /// The app image as it is now, best pinned by digest.
    pub image: ImageRef,
    /// The new run image, best pinned by digest.
    pub run_image: ImageRef,
    /// Where the result goes: the primary tag first, then additional tags.
    pub tags: Vec<ImageRef>,
    /// The stack id the new run image must declare (`io.buildpacks.stack.id`), if known.
    pub expected_stack_id: Option<String>,
    /// Rebase although the image is not rebasable, the target differs or the run image
    /// is not the one the metadata names (the CNB rebaser's `-force`). A stack id
    /// mismatch and a missing top layer are refused even so.
    pub force: bool,
}

/// A run image as an app image's metadata records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunImageRecord {
    /// `repo@sha256:…` (as the label says, possibly empty for the old one).
    pub reference: String,
    /// The diffID of its top layer.
    pub top_layer: Digest,
}

/// How many layers reached a destination, and how.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerTransfers {
    pub existed: usize,
    pub mounted: usize,
    pub uploaded: usize,
}

impl LayerTransfers {
    fn add(&mut self, how: BlobTransfer) {
        match how {
            BlobTransfer::Existed => self.existed += 1,
            BlobTransfer::Mounted => self.mounted += 1,
            BlobTransfer::Uploaded => self.uploaded += 1,
        }
    }
}

/// What a rebase did: plain data for the build record (reason STACK, old → new run
/// image, output digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebaseResult {
    /// The primary tag pinned to the new manifest.
    pub image: ImageRef,
    /// The new manifest's digest.
    pub digest: Digest,
    /// The manifest digest of the image rebased.
    pub previous_digest: Digest,
    /// Every tag written, in order.
    pub tags: Vec<ImageRef>,
    pub old_run_image: RunImageRecord,
    pub new_run_image: RunImageRecord,
    /// The manifest digest of the new run image (for an index, its chosen entry).
    pub new_run_image_digest: Digest,
    /// Run image layers taken out, and put in.
    pub old_base_layers: usize,
    pub new_base_layers: usize,
    /// Layers above the run image, kept as they were.
    pub app_layers: usize,
    /// Layers made present at the destinations, summed over destinations.
    pub layers: LayerTransfers,
    /// Bytes sent: layer bytes streamed, plus every config and manifest written (an
    /// upper bound for those: a config the destination has is not sent again).
    pub bytes_uploaded: u64,
}

/// Why a rebase failed. Messages read well after "failed to rebase: ".
#[derive(Debug, thiserror::Error)]
pub enum RebaseError {
    #[error("no tag to push the rebased image to")]
    NoTags,
    #[error("could not read the image {image}")]
    ReadImage {
        image: String,
        #[source]
        source: OciError,
    },
    #[error("{image} is an image index; rebase one platform's image at a time")]
    AppImageIsIndex { image: String },
    #[error("{image} has no usable label {LIFECYCLE_LABEL}: {reason} (was it built with Cloud Native Buildpacks?)")]
    MissingMetadata { image: String, reason: String },
    #[error("{image} is labelled {REBASABLE_LABEL}=false: its run image cannot be swapped safely (force to rebase anyway)")]
    NotRebasable { image: String },
    #[error("{image} is on stack `{image_stack}`, but the run image {run_image} is on stack `{run_image_stack}`")]
    StackMismatch {
        image: String,
        run_image: String,
        image_stack: String,
        run_image_stack: String,
    },
    #[error("{image}: {target} is `{image_value}`, but the run image {run_image} has `{run_image_value}` (force to rebase anyway)")]
    TargetMismatch {
        image: String,
        run_image: String,
        /// `os`, `architecture`, `variant` or a distro label.
        target: String,
        image_value: String,
        run_image_value: String,
    },
    #[error("the run image {run_image} has no manifest for the platform {platform} of {image} (the index has: {available})")]
    PlatformMissing {
        image: String,
        run_image: String,
        platform: String,
        available: String,
    },
    #[error("the run image {run_image} is not the one {image} was built on ({listed}) (force to rebase anyway)")]
    RunImageNotListed {
        image: String,
        run_image: String,
        listed: String,
    },
    #[error(
        "{image} has no layer with diffID {top_layer}, the run image top layer its metadata names"
    )]
    TopLayerNotFound { image: String, top_layer: String },
    #[error("the run image {run_image} has no layers")]
    EmptyRunImage { run_image: String },
    #[error("{image} lists {layers} layers but {diff_ids} diffIDs")]
    LayerCountMismatch {
        image: String,
        layers: usize,
        diff_ids: usize,
    },
    #[error("could not copy layer {layer} to {destination}")]
    CopyLayer {
        layer: String,
        destination: String,
        /// Boxed: the variant would be the error's largest by far.
        #[source]
        source: Box<OciError>,
    },
    #[error("could not write the rebased image to {destination}")]
    Write {
        destination: String,
        #[source]
        source: OciError,
    },
}

/// Rebases `req.image` onto `req.run_image` and pushes the result under `req.tags`.
pub async fn rebase(store: &ImageStore, req: &RebaseRequest) -> Result<RebaseResult, RebaseError> {
    if req.tags.is_empty() {
        return Err(RebaseError::NoTags);
    }
    let app = store
        .image(&req.image)
        .await
        .map_err(|source| RebaseError::ReadImage {
            image: req.image.to_string(),
            source,
        })?;
    if app.index_digest.is_some() {
        return Err(RebaseError::AppImageIsIndex {
            image: req.image.to_string(),
        });
    }
    let run = run_image_for(store, req, &app).await?;
    let rebased = Rebased::new(req, &app, &run)?;
    tracing::debug!(
        image = %req.image,
        run_image = %req.run_image,
        old_top_layer = %rebased.old_run_image.top_layer,
        new_top_layer = %rebased.new_run_image.top_layer,
        "rebase planned"
    );

    let sent = Arc::new(AtomicU64::new(0));
    let mut layers = LayerTransfers::default();
    let mut prepared: Vec<&ImageRef> = Vec::new();
    let mut pinned = Vec::with_capacity(req.tags.len());
    for tag in &req.tags {
        if !prepared.iter().any(|p| p.same_location(tag)) {
            for how in rebased
                .copy_layers(store, req, &app, &run, tag, &sent)
                .await?
            {
                layers.add(how);
            }
            let write_err = |source| RebaseError::Write {
                destination: tag.to_string(),
                source,
            };
            // The config is new: it names the new run image.
            store
                .upload_blob_bytes(
                    tag,
                    &rebased.manifest.config.media_type,
                    rebased.config.clone(),
                )
                .await
                .map_err(write_err)?;
            sent.fetch_add(rebased.config.len() as u64, Ordering::Relaxed);
            prepared.push(tag);
        }
        let written = store
            .push_manifest(tag, &rebased.raw_manifest)
            .await
            .map_err(|source| RebaseError::Write {
                destination: tag.to_string(),
                source,
            })?;
        sent.fetch_add(rebased.raw_manifest.bytes.len() as u64, Ordering::Relaxed);
        pinned.push(written);
    }

    let result = RebaseResult {
        image: pinned[0].clone(),
        digest: rebased.raw_manifest.digest.clone(),
        previous_digest: app.digest().clone(),
        tags: req.tags.clone(),
        old_run_image: rebased.old_run_image,
        new_run_image: rebased.new_run_image,
        new_run_image_digest: run.digest().clone(),
        old_base_layers: rebased.old_base_layers,
        new_base_layers: run.manifest.layers.len(),
        app_layers: rebased.app_layers,
        layers,
        bytes_uploaded: sent.load(Ordering::Relaxed),
    };
    tracing::info!(
        image = %result.image,
        previous = %result.previous_digest,
        run_image = %result.new_run_image.reference,
        app_layers = result.app_layers,
        mounted = result.layers.mounted,
        uploaded = result.layers.uploaded,
        bytes_uploaded = result.bytes_uploaded,
        "rebased"
    );
    Ok(result)
}

/// The new run image, for an index the entry of the app image's platform (not the
/// store's configured one: an arm64 app is rebased onto the arm64 run image).
async fn run_image_for(
    store: &ImageStore,
    req: &RebaseRequest,
    app: &Image,
) -> Result<Image, RebaseError> {
    let read_err = |source| RebaseError::ReadImage {
        image: req.run_image.to_string(),
        source,
    };
    let top = store.manifest(&req.run_image).await.map_err(read_err)?;
    let (index_digest, raw_manifest, manifest) = match top.parse().map_err(read_err)? {
        Manifest::Image(m) => (None, top, m),
        Manifest::Index(index) => {
            let platform = app.config.platform();
            let entry =
                index
                    .for_platform(&platform)
                    .ok_or_else(|| RebaseError::PlatformMissing {
                        image: req.image.to_string(),
                        run_image: req.run_image.to_string(),
                        platform: platform.to_string(),
                        available: index
                            .manifests
                            .iter()
                            .filter_map(|d| d.platform.as_ref().map(ToString::to_string))
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?;
            let child = store
                .manifest_by_digest(&req.run_image, &entry.digest)
                .await
                .map_err(read_err)?;
            match child.parse().map_err(read_err)? {
                Manifest::Image(m) => (Some(top.digest), child, m),
                Manifest::Index(_) => {
                    return Err(read_err(OciError::Unsupported(format!(
                        "{}: an index inside an index is not supported",
                        req.run_image
                    ))))
                }
            }
        }
    };
    let raw_config = store
        .read_blob(&req.run_image, &manifest.config)
        .await
        .map_err(read_err)?;
    let config = serde_json::from_slice(&raw_config).map_err(|e| {
        read_err(OciError::Invalid {
            what: format!("image config of {}", req.run_image),
            reason: e.to_string(),
        })
    })?;
    Ok(Image {
        source: req.run_image.clone(),
        index_digest,
        raw_manifest,
        manifest,
        raw_config,
        config,
    })
}

/// The rebased image, ready to push: its config and manifest bytes, and what it was
/// made from.
#[derive(Debug)]
struct Rebased {
    config: Bytes,
    manifest: ImageManifest,
    raw_manifest: RawManifest,
    old_run_image: RunImageRecord,
    new_run_image: RunImageRecord,
    old_base_layers: usize,
    app_layers: usize,
}

impl Rebased {
    /// Checks the preconditions and builds the new config and manifest. Touches no
    /// store.
    fn new(req: &RebaseRequest, app: &Image, run: &Image) -> Result<Rebased, RebaseError> {
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
        let old_run_image = RunImageRecord {
            reference: metadata.reference.clone(),
            top_layer: diff_ids[top].clone(),
        };
        let new_reference = run_image_reference(run);
        metadata.point_at(&new_reference, &new_top);

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
        config.rootfs.diff_ids = run_diff_ids
            .iter()
            .chain(&diff_ids[top + 1..])
            .cloned()
            .collect();
        config.history = rebased_history(&app.config, top, &run.config);
        let mut new_labels = synced_labels(&labels, &run_labels);
        new_labels.insert(LIFECYCLE_LABEL.to_string(), metadata.to_json());
        config.config.get_or_insert_with(Default::default).labels = Some(new_labels);
        let config = Bytes::from(serde_json::to_vec(&config).expect("an image config serialises"));

        let mut annotations = app.manifest.annotations.clone();
        if let Some(a) = annotations.as_mut() {
            if a.contains_key(BASE_DIGEST_ANNOTATION) {
                a.insert(BASE_DIGEST_ANNOTATION.into(), run.digest().to_string());
            }
            if a.contains_key(BASE_NAME_ANNOTATION) {
                a.insert(BASE_NAME_ANNOTATION.into(), run_name);
            }
        }
        let manifest = ImageManifest {
            schema_version: app.manifest.schema_version,
            media_type: app.manifest.media_type.clone(),
            config: Descriptor::new(
                app.manifest.config.media_type.clone(),
                Digest::sha256(&config),
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
        };
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
    async fn copy_layers(
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

/// The app image's `io.buildpacks.lifecycle.metadata`, kept whole as JSON so that a
/// rebase changes only what it must.
#[derive(Debug, Clone)]
struct LifecycleMetadata {
    json: Map<String, Value>,
    /// The key holding the run image: `runImage`, or `run-image` as older tools wrote.
    run_image_key: &'static str,
    top_layer: String,
    reference: String,
}

impl LifecycleMetadata {
    fn read(image: &ImageRef, labels: &BTreeMap<String, String>) -> Result<Self, RebaseError> {
        let missing = |reason: &str| RebaseError::MissingMetadata {
            image: image.to_string(),
            reason: reason.to_string(),
        };
        let text = labels
            .get(LIFECYCLE_LABEL)
            .ok_or_else(|| missing("the label is not set"))?;
        let json: Map<String, Value> =
            serde_json::from_str(text).map_err(|e| missing(&format!("not a JSON object ({e})")))?;
        let (run_image_key, run_image) = ["runImage", "run-image"]
            .into_iter()
            .find_map(|k| Some((k, json.get(k)?.as_object()?)))
            .ok_or_else(|| missing("it has no runImage"))?;
        let field = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| run_image.get(*n)?.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let top_layer = field(&["topLayer", "top-layer"]);
        if top_layer.is_empty() {
            return Err(missing("it has no runImage.topLayer"));
        }
        let reference = field(&["reference"]);
        Ok(LifecycleMetadata {
            run_image_key,
            top_layer,
            reference,
            json,
        })
    }

    fn run_image(&mut self) -> &mut Map<String, Value> {
        self.json
            .get_mut(self.run_image_key)
            .and_then(Value::as_object_mut)
            .expect("read() found runImage to be an object")
    }

    /// The run image names the metadata lists: `runImage.image` and its mirrors, or
    /// the legacy `stack.runImage`'s.
    fn listed(&self) -> Vec<String> {
        let names = |v: Option<&Value>| -> Vec<String> {
            let Some(v) = v else { return Vec::new() };
            v.get("image")
                .and_then(Value::as_str)
                .into_iter()
                .chain(
                    v.get("mirrors")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str),
                )
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        let current = names(self.json.get(self.run_image_key));
        if !current.is_empty() {
            return current;
        }
        names(
            self.json
                .get("stack")
                .and_then(|s| s.get("runImage").or_else(|| s.get("run-image"))),
        )
    }

    /// Whether `run_image` is one the metadata names (by repository, ignoring tag and
    /// digest). Metadata naming none accepts any.
    fn names(&self, run_image: &ImageRef) -> bool {
        let listed = self.listed();
        listed.is_empty()
            || listed.iter().any(|name| {
                ImageRef::parse(name).is_ok_and(|listed| listed.same_location(run_image))
            })
    }

    /// With force, a run image the metadata does not name becomes the one it names.
    fn rename_run_image(&mut self, name: &str) {
        let run_image = self.run_image();
        run_image.insert("image".into(), Value::String(name.to_string()));
        run_image.remove("mirrors");
        if let Some(stack) = self.json.get_mut("stack").and_then(Value::as_object_mut) {
            stack.insert(
                "runImage".into(),
                Value::Object(Map::from_iter([(
                    "image".to_string(),
                    Value::String(name.to_string()),
                )])),
            );
        }
    }

    fn point_at(&mut self, reference: &str, top_layer: &Digest) {
        let dashed = self.run_image_key == "run-image";
        let run_image = self.run_image();
        let top_key = if dashed { "top-layer" } else { "topLayer" };
        run_image.insert(top_key.into(), Value::String(top_layer.to_string()));
        run_image.insert("reference".into(), Value::String(reference.to_string()));
    }

    fn to_json(&self) -> String {
        serde_json::to_string(&self.json).expect("a JSON object serialises")
    }
}

/// The stack id must not change: against the request's expectation, and between the
/// app image and the new run image when both declare one.
fn check_stack(
    req: &RebaseRequest,
    labels: &BTreeMap<String, String>,
    run_labels: &BTreeMap<String, String>,
) -> Result<(), RebaseError> {
    let run_stack = run_labels.get(STACK_ID_LABEL).filter(|s| !s.is_empty());
    let mismatch = |image_stack: &str| RebaseError::StackMismatch {
        image: req.image.to_string(),
        run_image: req.run_image.to_string(),
        image_stack: image_stack.to_string(),
        run_image_stack: run_stack.map_or("(none)", String::as_str).to_string(),
    };
    if let Some(expected) = &req.expected_stack_id {
        if run_stack != Some(expected) {
            return Err(mismatch(expected));
        }
    }
    match (
        labels.get(STACK_ID_LABEL).filter(|s| !s.is_empty()),
        run_stack,
    ) {
        (Some(app_stack), Some(run_stack)) if app_stack != run_stack => Err(mismatch(app_stack)),
        _ => Ok(()),
    }
}

/// Target data must match: os and architecture always, the variant and the distro
/// where the new run image sets them.
fn check_target(
    req: &RebaseRequest,
    config: &ImageConfig,
    labels: &BTreeMap<String, String>,
    run_config: &ImageConfig,
    run_labels: &BTreeMap<String, String>,
) -> Result<(), RebaseError> {
    let mut pairs: Vec<(&str, Option<&str>, Option<&str>)> = vec![
        ("os", Some(&config.os), Some(&run_config.os)),
        (
            "architecture",
            Some(&config.architecture),
            Some(&run_config.architecture),
        ),
        (
            "variant",
            config.variant.as_deref(),
            run_config.variant.as_deref(),
        ),
    ];
    for label in DISTRO_LABELS {
        pairs.push((
            label,
            labels.get(label).map(String::as_str),
            run_labels.get(label).map(String::as_str),
        ));
    }
    for (target, image_value, run_value) in pairs {
        let Some(run_value) = run_value else { continue };
        if image_value != Some(run_value) {
            return Err(RebaseError::TargetMismatch {
                image: req.image.to_string(),
                run_image: req.run_image.to_string(),
                target: target.to_string(),
                image_value: image_value.unwrap_or("(none)").to_string(),
                run_image_value: run_value.to_string(),
            });
        }
    }
    Ok(())
}

/// The app image's labels with the base's (`io.buildpacks.base.*`,
/// `io.buildpacks.stack.*`) replaced by the new run image's.
fn synced_labels(
    labels: &BTreeMap<String, String>,
    run_labels: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let is_base = |k: &String| BASE_LABEL_PREFIXES.iter().any(|p| k.starts_with(p));
    labels
        .iter()
        .filter(|(k, _)| !is_base(k))
        .chain(run_labels.iter().filter(|(k, _)| is_base(k)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The new base's history, then the app's history above the old top layer. History
/// entries go with layers: each non-empty entry, with the `empty_layer` entries after
/// it, belongs to its layer (entries before the first layer to the first). A side whose
/// history does not match its layers contributes one blank entry per layer; when
/// neither matches, the history is left out.
fn rebased_history(app: &ImageConfig, top: usize, run: &ImageConfig) -> Vec<Value> {
    let app_groups = history_by_layer(&app.history, app.rootfs.diff_ids.len());
    let run_groups = history_by_layer(&run.history, run.rootfs.diff_ids.len());
    if app_groups.is_none() && run_groups.is_none() {
        return Vec::new();
    }
    let blank = |n: usize| vec![vec![Value::Object(Map::new())]; n];
    let app_groups = app_groups.unwrap_or_else(|| blank(app.rootfs.diff_ids.len()));
    let run_groups = run_groups.unwrap_or_else(|| blank(run.rootfs.diff_ids.len()));
    run_groups
        .into_iter()
        .chain(app_groups.into_iter().skip(top + 1))
        .flatten()
        .collect()
}

/// History entries grouped by the layer they belong to, when the history has exactly
/// one non-empty entry per layer.
fn history_by_layer(history: &[Value], layers: usize) -> Option<Vec<Vec<Value>>> {
    let is_empty = |h: &Value| {
        h.get("empty_layer")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    if layers == 0 || history.iter().filter(|h| !is_empty(h)).count() != layers {
        return None;
    }
    let mut groups: Vec<Vec<Value>> = Vec::with_capacity(layers);
    let mut leading = Vec::new();
    for entry in history {
        match groups.last_mut() {
            Some(group) if is_empty(entry) => group.push(entry.clone()),
            None if is_empty(entry) => leading.push(entry.clone()),
            _ => {
                let mut group = std::mem::take(&mut leading);
                group.push(entry.clone());
                groups.push(group);
            }
        }
    }
    Some(groups)
}

/// The run image's name for metadata: `registry/repo[:tag]`, or the layout reference.
fn run_image_name(run_image: &ImageRef) -> String {
    match run_image {
        ImageRef::Registry(r) => {
            let mut name = format!("{}/{}", r.registry, r.repository);
            if let Some(tag) = &r.tag {
                name.push(':');
                name.push_str(tag);
            }
            name
        }
        layout => layout.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn history(entries: &[(&str, bool)]) -> Vec<Value> {
        entries
            .iter()
            .map(|(by, empty)| json!({"created_by": by, "empty_layer": empty}))
            .collect()
    }

    fn created_by(history: &[Value]) -> Vec<&str> {
        history
            .iter()
            .map(|h| h["created_by"].as_str().unwrap_or("{}"))
            .collect()
    }

    fn config(history: Vec<Value>, layers: usize) -> ImageConfig {
        ImageConfig {
            history,
            rootfs: crate::oci::RootFs {
                kind: "layers".into(),
                diff_ids: (0..layers)
                    .map(|i| Digest::sha256(i.to_string().as_bytes()))
                    .collect(),
            },
            ..Default::default()
        }
    }

    #[test]
    fn history_swaps_the_base_part() {
        let app = config(
            history(&[
                ("old base", false),
                ("CMD old", true),
                ("launcher", false),
                ("app", false),
                ("LABEL", true),
            ]),
            3,
        );
        let run = config(
            history(&[("ENV", true), ("new base", false), ("patch", false)]),
            2,
        );
        assert_eq!(
            created_by(&rebased_history(&app, 0, &run)),
            ["ENV", "new base", "patch", "launcher", "app", "LABEL"]
        );
    }

    #[test]
    fn history_that_does_not_match_the_layers_is_padded_or_left_out() {
        let app = config(Vec::new(), 3);
        let run = config(history(&[("new base", false)]), 1);
        assert_eq!(
            created_by(&rebased_history(&app, 0, &run)),
            ["new base", "{}", "{}"]
        );
        assert!(rebased_history(&app, 0, &config(Vec::new(), 1)).is_empty());
    }

    #[test]
    fn base_labels_come_from_the_new_run_image() {
        let labels = BTreeMap::from([
            (
                "io.buildpacks.base.maintainer".to_string(),
                "old".to_string(),
            ),
            ("io.buildpacks.stack.id".to_string(), "s".to_string()),
            ("app".to_string(), "kept".to_string()),
        ]);
        let run = BTreeMap::from([
            ("io.buildpacks.base.released".to_string(), "new".to_string()),
            ("io.buildpacks.stack.id".to_string(), "s".to_string()),
            ("other".to_string(), "not copied".to_string()),
        ]);
        let synced = synced_labels(&labels, &run);
        assert_eq!(
            synced.keys().collect::<Vec<_>>(),
            [
                "app",
                "io.buildpacks.base.released",
                "io.buildpacks.stack.id"
            ]
        );
    }

    #[test]
    fn older_metadata_shapes_are_read_and_written_back_alike() {
        let image = ImageRef::parse("example.com/app@sha256:0000000000000000000000000000000000000000000000000000000000000000").unwrap();
        let labels = BTreeMap::from([(
            LIFECYCLE_LABEL.to_string(),
            r#"{"run-image":{"top-layer":"sha256:aa","reference":"r"},"stack":{"runImage":{"image":"example.com/run:1"}}}"#.to_string(),
        )]);
        let mut m = LifecycleMetadata::read(&image, &labels).unwrap();
        assert_eq!(m.top_layer, "sha256:aa");
        assert_eq!(m.listed(), ["example.com/run:1"]);
        assert!(m.names(&ImageRef::parse("example.com/run:2").unwrap()));
        assert!(!m.names(&ImageRef::parse("example.com/other:1").unwrap()));
        m.point_at("example.com/run@sha256:bb", &Digest::sha256(b"x"));
        let back: Value = serde_json::from_str(&m.to_json()).unwrap();
        assert_eq!(
            back["run-image"]["top-layer"],
            Digest::sha256(b"x").to_string()
        );
        assert_eq!(back["run-image"]["reference"], "example.com/run@sha256:bb");

        let none = BTreeMap::new();
        assert!(matches!(
            LifecycleMetadata::read(&image, &none),
            Err(RebaseError::MissingMetadata { .. })
        ));
    }
}
