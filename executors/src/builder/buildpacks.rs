//! The buildpacks of a builder image, each as one layer: a directory buildpack written
//! by [`buildpack_layer`](super::layers::buildpack_layer) (or, when the image at the tag
//! has a layer of the same diffID, that layer), a buildpackage's (or builder's) layer reused as the very blob
//! it is. Each comes with its entry of the `io.buildpacks.buildpack.layers` label, read
//! from its `buildpack.toml` or from its image's label.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use cnb::buildpack::BuildpackDescriptor;
use cnb::labels::{self, BuildpackLayerInfo, BuildpackLayers, BUILDPACK_LAYERS};
use cnb::{BuildpackId, BuildpackVersion};
use imageref::{Digest, ImageRef};

use super::layers::buildpack_tree;
use super::{Fail, PublishBuildpack, PublishBuildpackSource, PublishError};
use crate::oci::layer::WrittenLayer;
use crate::oci::{media_type, Descriptor, ImageStore};

/// The largest `buildpack.toml` read: 1 MiB.
const MAX_DESCRIPTOR_SIZE: u64 = 1 << 20;

/// Where a layer of the builder comes from.
#[derive(Debug, Clone)]
pub enum LayerBlob {
    /// Written here, into a file.
    Written(WrittenLayer),
    /// A blob of another image, copied (or mounted) as it is.
    Copied { from: ImageRef },
}

/// One layer of the builder image: its diffID, its descriptor and where its blob is.
#[derive(Debug, Clone)]
pub struct BuilderLayer {
    pub diff_id: Digest,
    pub descriptor: Descriptor,
    pub blob: LayerBlob,
    /// What the history says made it.
    pub created_by: String,
}

impl BuilderLayer {
    pub fn written(layer: WrittenLayer, created_by: String) -> BuilderLayer {
        BuilderLayer {
            diff_id: layer.diff_id.clone(),
            descriptor: layer.descriptor(),
            blob: LayerBlob::Written(layer),
            created_by,
        }
    }
}

/// A buildpack ready to be a layer of the builder.
#[derive(Debug, Clone)]
pub struct ResolvedBuildpack {
    pub id: BuildpackId,
    pub version: BuildpackVersion,
    /// Its entry of `io.buildpacks.buildpack.layers`, `layerDiffID` set.
    pub info: BuildpackLayerInfo,
    pub layer: BuilderLayer,
}

/// The image already at the builder's tag (the last publish), whose layers a directory
/// buildpack reuses when its diffID is there: the layer's tar is hashed, not compressed
/// again. Only gzip layers are taken, as this writer compresses them.
#[derive(Debug, Clone, Default)]
pub struct Previous {
    /// Where its blobs are (pinned); `None` when there is no image at the tag.
    pub from: Option<ImageRef>,
    pub layers: HashMap<Digest, Descriptor>,
}

impl Previous {
    /// The image at `tag`, if it can be read; nothing otherwise (a first publish).
    pub async fn read(store: &ImageStore, tag: &ImageRef) -> Previous {
        let image = match store.image(tag).await {
            Ok(image) => image,
            Err(e) => {
                tracing::debug!(%tag, error = %e, "no previous builder image to reuse layers of");
                return Previous::default();
            }
        };
        if image.manifest.layers.len() != image.config.rootfs.diff_ids.len() {
            return Previous::default();
        }
        let layers = image
            .config
            .rootfs
            .diff_ids
            .iter()
            .cloned()
            .zip(image.manifest.layers.iter().cloned())
            .filter(|(_, d)| d.media_type == media_type::OCI_LAYER_GZIP)
            .collect();
        Previous {
            from: Some(image.pinned()),
            layers,
        }
    }

    fn layer(&self, diff_id: &Digest) -> Option<(ImageRef, Descriptor)> {
        Some((self.from.clone()?, self.layers.get(diff_id)?.clone()))
    }
}

/// Writes or finds the layer of `bp`; layer files go into `work`.
pub async fn resolve(
    store: &ImageStore,
    bp: &PublishBuildpack,
    previous: &Previous,
    work: &Path,
    fail: &Fail<'_>,
) -> Result<ResolvedBuildpack, PublishError> {
    let name = format!("{}@{}", bp.id, bp.version);
    let id =
        BuildpackId::parse(&bp.id).map_err(|e| fail.invalid(format!("buildpack {name}: {e}")))?;
    let version = BuildpackVersion::parse(&bp.version)
        .map_err(|e| fail.invalid(format!("buildpack {name}: {e}")))?;
    let named = Named { id, version, name };
    match &bp.source {
        PublishBuildpackSource::Directory(dir) => {
            from_directory(bp, named, dir, previous, work, fail).await
        }
        PublishBuildpackSource::Layer { image, diff_id } => {
            from_layer(store, named, image, diff_id, fail).await
        }
    }
}

/// A buildpack's id and version, parsed, and `id@version` for messages.
struct Named {
    id: BuildpackId,
    version: BuildpackVersion,
    name: String,
}

/// The layer of the buildpack directory `dir`: the previous builder's when it has the same
/// diffID, or written into `work`.
async fn from_directory(
    bp: &PublishBuildpack,
    Named { id, version, name }: Named,
    dir: &Path,
    previous: &Previous,
    work: &Path,
    fail: &Fail<'_>,
) -> Result<ResolvedBuildpack, PublishError> {
    let path = dir.join("buildpack.toml");
    let descriptor = descriptor_at(&path).map_err(|e| match e {
        DescriptorFailure::Io(e) => fail.io(format!("read {}", path.display()), e),
        DescriptorFailure::Invalid(message) => {
            fail.invalid(format!("{}: {message}", path.display()))
        }
    })?;
    if descriptor.buildpack.id != bp.id || descriptor.buildpack.version != bp.version {
        return Err(fail.invalid(format!(
            "buildpack {name}: {} describes {}@{}",
            dir.join("buildpack.toml").display(),
            descriptor.buildpack.id,
            descriptor.buildpack.version
        )));
    }
    let (dir, out) = (dir.to_path_buf(), work.to_path_buf());
    let (layer_id, layer_version) = (id.clone(), version.clone());
    let kept = previous.clone();
    let created_by = format!("kpackd: buildpack {name}");
    let layer = tokio::task::spawn_blocking(move || {
        let tree = buildpack_tree(&dir, &layer_id, &layer_version)?;
        let diff_id = tree.diff_id()?;
        if let Some((from, descriptor)) = kept.layer(&diff_id) {
            return Ok(BuilderLayer {
                diff_id,
                descriptor,
                blob: LayerBlob::Copied { from },
                created_by,
            });
        }
        Ok(BuilderLayer::written(tree.write(&out)?, created_by))
    })
    .await
    .expect("writing a layer does not panic")
    .map_err(|e| fail.image(format!("write the layer of buildpack {name}"), e))?;
    let info = info_of(&descriptor, layer.diff_id.to_string());
    Ok(ResolvedBuildpack {
        id,
        version,
        info,
        layer,
    })
}

/// The layer with `diff_id` of the buildpackage or builder image `image`, whose
/// buildpack layers label must name it.
async fn from_layer(
    store: &ImageStore,
    Named { id, version, name }: Named,
    image: &ImageRef,
    diff_id: &Digest,
    fail: &Fail<'_>,
) -> Result<ResolvedBuildpack, PublishError> {
    let found = store
        .image(image)
        .await
        .map_err(|e| fail.image(format!("read {image} for buildpack {name}"), e))?;
    let descriptor = found
        .layer_with_diff_id(diff_id)
        .ok_or_else(|| {
            fail.invalid(format!(
                "buildpack {name}: {image} has no layer with diffID {diff_id}"
            ))
        })?
        .clone();
    let layers: BuildpackLayers = labels::read(&found.config.labels(), BUILDPACK_LAYERS)
        .map_err(|e| fail.invalid(format!("buildpack {name} from {image}: {e}")))?
        .ok_or_else(|| {
            fail.invalid(format!(
                "buildpack {name}: {image} has no {BUILDPACK_LAYERS} label"
            ))
        })?;
    let info = layers
        .get(id.as_str())
        .and_then(|versions| versions.get(version.as_str()))
        .filter(|info| info.layer_diff_id == diff_id.to_string())
        .ok_or_else(|| {
            fail.invalid(format!(
                "buildpack {name}: the {BUILDPACK_LAYERS} label of {image} does not \
                 name it at diffID {diff_id}"
            ))
        })?
        .clone();
    Ok(ResolvedBuildpack {
        id,
        version,
        info,
        layer: BuilderLayer {
            diff_id: diff_id.clone(),
            descriptor,
            blob: LayerBlob::Copied {
                from: found.pinned(),
            },
            created_by: format!("kpackd: buildpack {name}"),
        },
    })
}

/// Why `buildpack.toml` could not be read.
enum DescriptorFailure {
    Io(std::io::Error),
    Invalid(String),
}

/// `buildpack.toml` at `path`, read (at most [`MAX_DESCRIPTOR_SIZE`]) and checked.
fn descriptor_at(path: &Path) -> Result<BuildpackDescriptor, DescriptorFailure> {
    let file = std::fs::File::open(path).map_err(DescriptorFailure::Io)?;
    let mut text = String::new();
    file.take(MAX_DESCRIPTOR_SIZE + 1)
        .read_to_string(&mut text)
        .map_err(DescriptorFailure::Io)?;
    if text.len() as u64 > MAX_DESCRIPTOR_SIZE {
        return Err(DescriptorFailure::Invalid(format!(
            "larger than {MAX_DESCRIPTOR_SIZE} bytes"
        )));
    }
    BuildpackDescriptor::parse(&text).map_err(|e| DescriptorFailure::Invalid(e.message()))
}

/// The `io.buildpacks.buildpack.layers` entry of a buildpack described by `descriptor`
/// whose layer has the diffID `diff_id`.
pub fn info_of(descriptor: &BuildpackDescriptor, diff_id: String) -> BuildpackLayerInfo {
    BuildpackLayerInfo {
        layer_diff_id: diff_id,
        api: descriptor.api.clone(),
        stacks: descriptor.stacks.clone(),
        targets: descriptor.targets.clone(),
        order: descriptor.order.clone(),
        homepage: descriptor.buildpack.homepage.clone(),
        name: descriptor.buildpack.name.clone(),
        extra: Default::default(),
    }
}
