//! The `io.buildpacks.*` labels of app, run, builder and buildpackage images: their keys
//! and one serde type per JSON label. Labels come from images kpackd pulls, so they are
//! untrusted: names that become paths are validated types ([`crate::names`]) and a bad
//! value fails deserialization with an error naming the label and the value.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::buildpack::{OrderGroup, StackSpec, TargetSpec};
use crate::names::{BuildpackId, BuildpackVersion, LayerName};

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
/// The base image's distribution version (target data).
pub const DISTRO_VERSION: &str = "io.buildpacks.base.distro.version";
/// Label prefixes that describe the base image; a rebase takes them from the new run
/// image.
pub const BASE_LABEL_PREFIXES: [&str; 2] = ["io.buildpacks.base.", "io.buildpacks.stack."];

/// A label that is not what its key promises.
#[derive(Debug, thiserror::Error)]
#[error("invalid label {label}: {source}")]
pub struct LabelError {
    /// The label's key.
    pub label: &'static str,
    /// Why its value does not decode.
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
    /// The app's layers (one per slice, then the rest).
    #[serde(default)]
    pub app: Vec<Sha>,
    /// The layer holding the SBOM files, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom: Option<Sha>,
    /// Each buildpack's layers, in the group's order.
    #[serde(default)]
    pub buildpacks: Vec<BuildpackLayersMetadata>,
    /// The `/layers/config` layer (the launcher's `metadata.toml`).
    #[serde(default)]
    pub config: Sha,
    /// The launcher's layer.
    #[serde(default)]
    pub launcher: Sha,
    /// The layer of the process-type links.
    #[serde(rename = "process-types", default)]
    pub process_types: Sha,
    /// The run image the app was built on.
    #[serde(rename = "runImage", default)]
    pub run_image: RunImageMetadata,
    /// The legacy form of the run image's name and mirrors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<StackMetadata>,
    /// Fields of other tools, kept as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A layer, by its diffID (`{"sha": "sha256:…"}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sha {
    /// The layer's diffID.
    #[serde(default)]
    pub sha: String,
}

/// One buildpack's layers in [`LayersMetadata`]; `key` is the buildpack id. The id and
/// the layer names become paths (`<layers>/<id>/<name>`), so both are validated: a label
/// naming a layer `..` or `a/b` does not deserialize. They serialise as the plain strings
/// they were.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildpackLayersMetadata {
    /// The buildpack's id.
    pub key: BuildpackId,
    /// The buildpack's version.
    #[serde(default)]
    pub version: String,
    /// Its layers, by name.
    #[serde(default)]
    pub layers: BTreeMap<LayerName, LayerMetadata>,
    /// What it kept in `store.toml` for its next build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreMetadata>,
}

/// A buildpack's `store.toml`: data it keeps from one build to the next.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreMetadata {
    /// The `[metadata]` table.
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// A layer as labels and cache metadata record it: its diffID, `[metadata]` and types.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerMetadata {
    /// The layer's diffID.
    #[serde(default)]
    pub sha: String,
    /// The `[metadata]` table of its `<layer>.toml`.
    #[serde(default)]
    pub data: Value,
    /// Whether later buildpacks of the build see it.
    #[serde(default)]
    pub build: bool,
    /// Whether it is in the app image.
    #[serde(default)]
    pub launch: bool,
    /// Whether it is kept in the build cache.
    #[serde(default)]
    pub cache: bool,
}

/// The run image an app image was built on: where a rebase cuts (`topLayer`), the
/// pinned image (`reference`) and its name and mirrors as the stack gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunImageMetadata {
    /// The diffID of the run image's top layer.
    #[serde(rename = "topLayer", default)]
    pub top_layer: String,
    /// The run image, pinned.
    #[serde(default)]
    pub reference: String,
    /// The run image as the stack names it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    /// Other places the run image can be pulled from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
}

/// The legacy `stack` part of [`LayersMetadata`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackMetadata {
    /// The run image's name and mirrors.
    #[serde(rename = "runImage", default)]
    pub run_image: RunImageRef,
}

/// A run image as a stack names it, and its mirrors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunImageRef {
    /// The run image's name.
    #[serde(default)]
    pub image: String,
    /// Other places it can be pulled from.
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
    /// The Buildpack API it implements.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub api: String,
    /// The stacks it supports (buildpacks of API < 0.10).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub stacks: Vec<StackSpec>,
    /// The targets it supports.
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
    /// The buildpack's homepage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
    /// The buildpack's name, for people.
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
    /// What the builder is for.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub description: String,
    /// The buildpacks the builder holds.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub buildpacks: Vec<BuilderBuildpack>,
    /// The run images, the first preferred.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub images: Vec<BuilderRunImage>,
    /// The legacy form of the run image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<BuilderStack>,
    /// The lifecycle the builder carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<BuilderLifecycle>,
    /// The tool that wrote the builder image.
    #[serde(rename = "createdBy", default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<CreatedBy>,
    /// Fields of other tools, kept as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A buildpack a builder carries, as its metadata lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuilderBuildpack {
    /// The buildpack's id.
    #[serde(default, deserialize_with = "null_as_default")]
    pub id: String,
    /// Its version.
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: String,
    /// Its homepage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
}

/// The lifecycle a builder carries: its version and the APIs it implements (`apis`),
/// and for older platforms the oldest of each (`api`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuilderLifecycle {
    /// The lifecycle's version.
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: String,
    /// The oldest APIs it implements, for older platforms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<LifecycleApi>,
    /// The APIs it implements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apis: Option<LifecycleApis>,
}

/// One Buildpack and one Platform API version (the legacy `lifecycle.api`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleApi {
    /// The Buildpack API version.
    #[serde(default, deserialize_with = "null_as_default")]
    pub buildpack: String,
    /// The Platform API version.
    #[serde(default, deserialize_with = "null_as_default")]
    pub platform: String,
}

/// The `io.buildpacks.lifecycle.apis` label of a lifecycle image, also `lifecycle.apis`
/// of the builder metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleApis {
    /// The Buildpack API versions.
    #[serde(default, deserialize_with = "null_as_default")]
    pub buildpack: ApiSet,
    /// The Platform API versions.
    #[serde(default, deserialize_with = "null_as_default")]
    pub platform: ApiSet,
}

/// The API versions a lifecycle supports, and those of them it deprecates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiSet {
    /// Versions still supported but deprecated.
    #[serde(default, deserialize_with = "null_as_default")]
    pub deprecated: Vec<String>,
    /// Versions supported.
    #[serde(default, deserialize_with = "null_as_default")]
    pub supported: Vec<String>,
}

/// The tool that wrote a builder image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedBy {
    /// The tool's name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    /// The tool's version.
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: String,
}

/// A run image a builder names, and its mirrors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BuilderRunImage {
    /// The run image's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Other places it can be pulled from.
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
    /// The run image.
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
