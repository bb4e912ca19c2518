//! The `io.buildpacks.*` labels of app, run, builder and buildpackage images: their keys
//! and one serde type per JSON label. Labels come from images kpackd pulls, so they are
//! untrusted: names that become paths are validated types ([`crate::names`]) and a bad
//! value fails deserialization with an error naming the label and the value.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::buildpack::{OrderGroup, StackSpec, TargetSpec};
use crate::names::{BuildpackId, BuildpackVersion};

/// What the lifecycle recorded of an app image's layers ([`LayersMetadata`]).
pub const LIFECYCLE_METADATA: &str = "io.buildpacks.lifecycle.metadata";
/// The buildpacks, processes and launcher of an app image (JSON).
pub const BUILD_METADATA: &str = "io.buildpacks.build.metadata";
/// Where an app image's source came from (`{"source": {...}}`).
pub const PROJECT_METADATA: &str = "io.buildpacks.project.metadata";
/// A builder image's description, stack, lifecycle and run images ([`BuilderMetadata`]).
pub const BUILDER_METADATA: &str = "io.buildpacks.builder.metadata";
/// The layer of every buildpack a buildpackage or builder image carries
/// ([`BuildpackLayers`]).
pub const BUILDPACK_LAYERS: &str = "io.buildpacks.buildpack.layers";
/// A builder image's order (the groups of `order.toml`, as JSON).
pub const BUILDPACK_ORDER: &str = "io.buildpacks.buildpack.order";
/// The buildpack a buildpackage image is (id, version, stacks).
pub const BUILDPACKAGE_METADATA: &str = "io.buildpacks.buildpackage.metadata";
/// The cache image's metadata: [`LayersMetadata`] without the image-only parts.
pub const CACHE_METADATA: &str = "io.buildpacks.lifecycle.cache.metadata";
/// A lifecycle image's version (`0.20.1`).
pub const LIFECYCLE_VERSION: &str = "io.buildpacks.lifecycle.version";
/// The Buildpack and Platform APIs a lifecycle image implements ([`LifecycleApis`]).
pub const LIFECYCLE_APIS: &str = "io.buildpacks.lifecycle.apis";
/// `"false"` on an app image that must not be rebased.
pub const REBASABLE: &str = "io.buildpacks.rebasable";
/// The base (stack) id of run, build and app images.
pub const BASE_ID: &str = "io.buildpacks.base.id";
/// The legacy stack id, read when [`BASE_ID`] is absent.
pub const STACK_ID: &str = "io.buildpacks.stack.id";
/// The base image's distribution (target data).
pub const DISTRO_NAME: &str = "io.buildpacks.base.distro.name";
pub const DISTRO_VERSION: &str = "io.buildpacks.base.distro.version";
/// Label prefixes that describe the base image; a rebase takes them from the new run
/// image.
pub const BASE_LABEL_PREFIXES: [&str; 2] = ["io.buildpacks.base.", "io.buildpacks.stack."];

/// A label that is not what its key promises.
#[derive(Debug, thiserror::Error)]
#[error("invalid label {label}: {source}")]
pub struct LabelError {
    pub label: &'static str,
    #[source]
    pub source: serde_json::Error,
}

/// The JSON label `key` of `labels` as a `T`; `None` when the label is not set.
pub fn read<T: DeserializeOwned>(
    labels: &BTreeMap<String, String>,
    key: &'static str,
) -> Result<Option<T>, LabelError> {
    labels.get(key).map(|text| parse(key, text)).transpose()
}

/// The text of JSON label `key` as a `T`.
pub fn parse<T: DeserializeOwned>(key: &'static str, text: &str) -> Result<T, LabelError> {
    serde_json::from_str(text).map_err(|source| LabelError { label: key, source })
}

/// The stack (base) id: [`BASE_ID`], or the legacy [`STACK_ID`].
pub fn stack_id(labels: &BTreeMap<String, String>) -> Option<&String> {
    labels.get(BASE_ID).or_else(|| labels.get(STACK_ID))
}

// ---------------------------------------------------------------------------------------
// io.buildpacks.lifecycle.metadata

/// The `io.buildpacks.lifecycle.metadata` label (the lifecycle's LayersMetadata), also the
/// shape of the cache metadata (without the image-only parts). Fields kpackd does not
/// know are kept in `extra`, so an image other tools built keeps them through a rewrite.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LayersMetadata {
    #[serde(default)]
    pub app: Vec<Sha>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom: Option<Sha>,
    #[serde(default)]
    pub buildpacks: Vec<BuildpackLayersMetadata>,
    #[serde(default)]
    pub config: Sha,
    #[serde(default)]
    pub launcher: Sha,
    #[serde(rename = "process-types", default)]
    pub process_types: Sha,
    #[serde(rename = "runImage", default)]
    pub run_image: RunImageMetadata,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<StackMetadata>,
    /// Fields of other tools, kept as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sha {
    #[serde(default)]
    pub sha: String,
}

/// One buildpack's layers in [`LayersMetadata`]; `key` is the buildpack id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildpackLayersMetadata {
    pub key: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub layers: BTreeMap<String, LayerMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreMetadata>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreMetadata {
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// A layer as labels and cache metadata record it: its diffID, `[metadata]` and types.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerMetadata {
    #[serde(default)]
    pub sha: String,
    #[serde(default)]
    pub data: Value,
    #[serde(default)]
    pub build: bool,
    #[serde(default)]
    pub launch: bool,
    #[serde(default)]
    pub cache: bool,
}

/// The run image an app image was built on: where a rebase cuts (`topLayer`), the
/// pinned image (`reference`) and its name and mirrors as the stack gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunImageMetadata {
    #[serde(rename = "topLayer", default)]
    pub top_layer: String,
    #[serde(default)]
    pub reference: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
}

/// The legacy `stack` part of [`LayersMetadata`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackMetadata {
    #[serde(rename = "runImage", default)]
    pub run_image: RunImageRef,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunImageRef {
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
}

impl LayersMetadata {
    /// The layers a buildpack had, by id.
    pub fn buildpack(&self, id: &str) -> Option<&BuildpackLayersMetadata> {
        self.buildpacks.iter().find(|b| b.key == id)
    }
}

// ---------------------------------------------------------------------------------------
// io.buildpacks.buildpack.layers

/// The `io.buildpacks.buildpack.layers` label of buildpackage and builder images: for
/// each buildpack id and version, the layer holding `/cnb/buildpacks/<id>/<version>/`.
/// Ids and versions become paths, so both are validated.
pub type BuildpackLayers = BTreeMap<BuildpackId, BTreeMap<BuildpackVersion, BuildpackLayerInfo>>;

/// One buildpack's entry in [`BuildpackLayers`]: its layer, and what the lifecycle and
/// pack read of its `buildpack.toml` (api, stacks or targets, a composite's order).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildpackLayerInfo {
    /// The diffID of the layer holding the buildpack.
    #[serde(rename = "layerDiffID")]
    pub layer_diff_id: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub api: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub stacks: Vec<StackSpec>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub targets: Vec<TargetSpec>,
    /// A composite buildpack's groups.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub order: Vec<OrderGroup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Fields of other tools, kept as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Go tools write an empty list as `null`: read it as the default value.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

// ---------------------------------------------------------------------------------------
// io.buildpacks.builder.metadata

/// The `io.buildpacks.builder.metadata` label: the builder's description, buildpacks,
/// run images (current `images`, legacy `stack.runImage`), lifecycle and the tool that
/// wrote it. Fields kpackd does not know are kept in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BuilderMetadata {
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub description: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub buildpacks: Vec<BuilderBuildpack>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub images: Vec<BuilderRunImage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<BuilderStack>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<BuilderLifecycle>,
    #[serde(rename = "createdBy", default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<CreatedBy>,
    /// Fields of other tools, kept as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A buildpack a builder carries, as its metadata lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuilderBuildpack {
    #[serde(default, deserialize_with = "null_as_default")]
    pub id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
}

/// The lifecycle a builder carries: its version and the APIs it implements (`apis`),
/// and for older platforms the oldest of each (`api`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuilderLifecycle {
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<LifecycleApi>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apis: Option<LifecycleApis>,
}

/// One Buildpack and one Platform API version (the legacy `lifecycle.api`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleApi {
    #[serde(default, deserialize_with = "null_as_default")]
    pub buildpack: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub platform: String,
}

/// The `io.buildpacks.lifecycle.apis` label of a lifecycle image, also `lifecycle.apis`
/// of the builder metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleApis {
    #[serde(default, deserialize_with = "null_as_default")]
    pub buildpack: ApiSet,
    #[serde(default, deserialize_with = "null_as_default")]
    pub platform: ApiSet,
}

/// The API versions a lifecycle supports, and those of them it deprecates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiSet {
    #[serde(default, deserialize_with = "null_as_default")]
    pub deprecated: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub supported: Vec<String>,
}

/// The tool that wrote a builder image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedBy {
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: String,
}

/// A run image a builder names, and its mirrors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BuilderRunImage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub mirrors: Vec<String>,
}

/// The legacy `stack` part of [`BuilderMetadata`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BuilderStack {
    #[serde(rename = "runImage", default, skip_serializing_if = "Option::is_none")]
    pub run_image: Option<BuilderRunImage>,
}

impl BuilderMetadata {
    /// The run image the builder names first (`images[0]`, else `stack.runImage`).
    pub fn run_image(&self) -> Option<&str> {
        self.images
            .first()
            .and_then(|i| i.image.as_deref())
            .or_else(|| self.stack.as_ref()?.run_image.as_ref()?.image.as_deref())
    }
}

#[cfg(test)]
mod tests;
