//! The kpack.toml file format: one serde type per table, exactly as written. Values that
//! an error may point at keep their source span; the doc comments become the JSON
//! Schema descriptions editors show. Validation turns these into the [`crate::Config`].

use std::collections::BTreeMap;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use crate::{Executor, Reason};

mod kubernetes;

pub use kubernetes::{
    KubernetesTable, PodTable, Quantity, ResourcesTable, TaintEffect, TolerationOperator,
    TolerationTable,
};

/// kpack.toml: the stacks, stores, builders and images of one fleet.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(
    title = "kpack.toml",
    description = "The fleet of images kpackd keeps built and current",
    transform = name_keys
)]
pub struct KpackToml {
    /// Engine settings; every key is optional.
    #[serde(default)]
    pub kpackd: SettingsTable,
    /// Build and run base images (kpack's ClusterStack), by name.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, StackTable>")]
    pub stacks: BTreeMap<Spanned<String>, Spanned<StackTable>>,
    /// Sets of buildpacks (kpack's ClusterStore), by name.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, StoreTable>")]
    pub stores: BTreeMap<Spanned<String>, Spanned<StoreTable>>,
    /// A stack, a store and a detection order, or a CNB builder image (kpack's
    /// ClusterBuilder), by name.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, BuilderTable>")]
    pub builders: BTreeMap<Spanned<String>, Spanned<BuilderTable>>,
    /// The images to keep built: a source, a builder and a tag (kpack's Image), by name.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, ImageTable>")]
    pub images: BTreeMap<Spanned<String>, Spanned<ImageTable>>,
    /// The cluster builds run on as Pods, with `executor = "kubernetes"` under
    /// `[kpackd]`, and the defaults of every build Pod.
    #[schemars(with = "Option<KubernetesTable>")]
    pub kubernetes: Option<Spanned<KubernetesTable>>,
}

/// Tells editors what the names of stacks, stores, builders and images look like.
fn name_keys(schema: &mut Schema) {
    let Some(properties) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) else {
        return;
    };
    for section in ["stacks", "stores", "builders", "images"] {
        if let Some(section) = properties.get_mut(section).and_then(|s| s.as_object_mut()) {
            section.insert(
                "propertyNames".into(),
                serde_json::json!({ "pattern": crate::validate::NAME_PATTERN }),
            );
        }
    }
}

/// `[kpackd]`: engine settings.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SettingsTable {
    /// Where SQLite state, caches, unpacked stacks and build logs live, relative to this
    /// file. Default: `.kpackd`.
    #[schemars(with = "Option<String>")]
    pub state_dir: Option<Spanned<String>>,
    /// How many builds run at once. Default: 2.
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub concurrency: Option<Spanned<u32>>,
    /// How many rebases run at once, besides the builds: a rebase only reads and
    /// writes manifests and configs, so many fit beside a build. Default: 32.
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub rebase_concurrency: Option<Spanned<u32>>,
    /// Watch mode: how often git remotes and registries are polled, such as `"30s"`,
    /// `"1m"`, `"1h30m"`. Default: `"1m"`.
    #[schemars(with = "Option<String>")]
    pub poll_interval: Option<Spanned<String>>,
    /// Registries (`host[:port]`) spoken to over plain HTTP; `localhost` and `127.0.0.1`
    /// always are.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub insecure_registries: Vec<Spanned<String>>,
    /// Which manifest to pick from a multi-platform image index, `os/arch[/variant]`.
    /// Default: the platform kpackd runs on.
    #[schemars(with = "Option<String>")]
    pub platform: Option<Spanned<String>>,
    /// How long opening a connection to a registry may take, such as `"10s"`.
    /// Default: `"10s"`.
    #[schemars(with = "Option<String>")]
    pub registry_connect_timeout: Option<Spanned<String>>,
    /// How long a registry may stay silent, waiting for an answer or between the
    /// bytes of a download. Default: `"30s"`.
    #[schemars(with = "Option<String>")]
    pub registry_read_timeout: Option<Spanned<String>>,
    /// How long a whole registry request for a manifest, config or token may take;
    /// a layer download gets this plus one second per 256 KiB of its size.
    /// Default: `"2m"`.
    #[schemars(with = "Option<String>")]
    pub registry_request_timeout: Option<Spanned<String>>,
    /// Where builds run: `local` (sandboxes on this machine) or `kubernetes` (Pods on
    /// the cluster `[kubernetes]` describes; every image's builder must then be
    /// published with a `tag`). Rebases run in kpackd either way. Default: `local`.
    #[schemars(with = "Option<Executor>")]
    pub executor: Option<Spanned<Executor>>,
}

/// `[stacks.<name>]`: the build image buildpacks run in and the run image apps ship on.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StackTable {
    /// The image buildpacks run in: a registry reference or `oci:<dir>[:<ref-name>]`.
    #[schemars(with = "String")]
    pub build_image: Spanned<String>,
    /// The image built apps are layered on; a new digest here means a rebase.
    #[schemars(with = "String")]
    pub run_image: Spanned<String>,
    /// Other locations of the same run image.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub run_image_mirrors: Vec<Spanned<String>>,
    /// The stack id; when absent it is read from the images' `io.buildpacks.base.id`
    /// label, and when given it must match that label.
    #[schemars(with = "Option<String>")]
    pub id: Option<Spanned<String>>,
}

/// `[stores.<name>]`: the buildpacks builders may choose from.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StoreTable {
    /// Directories holding a `buildpack.toml` (relative to this file), or
    /// `{ image = "<ref>" }` for a buildpackage image.
    #[schemars(with = "Vec<BuildpackEntry>")]
    pub buildpacks: Vec<Spanned<BuildpackEntry>>,
}

/// One buildpack of a store: `"path/to/dir"` or `{ image = "<ref>" }`.
#[derive(Debug)]
pub enum BuildpackEntry {
    /// A directory holding `buildpack.toml`, component or composite.
    Directory(String),
    /// A buildpackage image.
    Image(Spanned<String>),
}

/// `[builders.<name>]`: either `stack`, `store` and `order`, or a `builder` image.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BuilderTable {
    /// The stack (a name under `[stacks]`) the builder builds on.
    #[schemars(with = "Option<String>")]
    pub stack: Option<Spanned<String>>,
    /// The store (a name under `[stores]`) the order's buildpacks come from.
    #[schemars(with = "Option<String>")]
    pub store: Option<Spanned<String>>,
    /// Groups of buildpacks, tried in order: the first group that passes detection
    /// builds the image.
    #[schemars(with = "Option<Vec<OrderGroup>>")]
    pub order: Option<Spanned<Vec<Spanned<OrderGroup>>>>,
    /// A CNB builder image to use instead of `stack`, `store` and `order`.
    #[schemars(with = "Option<String>")]
    pub builder: Option<Spanned<String>>,
    /// Where to publish this builder as a CNB builder image (an assembled builder
    /// only): `kpackd apply` writes and pushes it whenever its stack, buildpacks or
    /// configuration change.
    #[schemars(with = "Option<String>")]
    pub tag: Option<Spanned<String>>,
    /// The CNB lifecycle the published builder carries besides kpackd's own build
    /// entrypoint: `{ image = "REF" }`, an image whose `/cnb/lifecycle` is added to the
    /// builder image. Needs `tag`.
    #[schemars(with = "Option<LifecycleTable>")]
    pub lifecycle: Option<Spanned<LifecycleTable>>,
}

/// `lifecycle = { image = "REF" }`: where a published builder's lifecycle comes from.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LifecycleTable {
    /// An image holding `/cnb/lifecycle` (a lifecycle image, or a builder image):
    /// pinned by digest at plan time.
    #[schemars(with = "String")]
    pub image: Spanned<String>,
}

/// `{ group = [...] }`: buildpacks that detect and build together.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OrderGroup {
    /// The buildpacks of the group, in the order they run.
    #[schemars(with = "Vec<GroupEntry>")]
    pub group: Vec<Spanned<GroupEntry>>,
}

/// `{ id = "...", version = "...", optional = true }`: one buildpack of a group.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GroupEntry {
    /// A buildpack id the builder's store provides.
    #[schemars(with = "String")]
    pub id: Spanned<String>,
    /// That exact version; when absent, the highest version the store holds.
    #[schemars(with = "Option<String>")]
    pub version: Option<Spanned<String>>,
    /// The group still passes detection when this buildpack does not. Default: false.
    #[serde(default)]
    pub optional: bool,
}

/// `[images.<name>]`: an image kpackd keeps built from a source with a builder.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ImageTable {
    /// Where the image is pushed: a registry reference or `oci:<dir>[:<ref-name>]`.
    #[schemars(with = "String")]
    pub tag: Spanned<String>,
    /// More references the same image is pushed to.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub additional_tags: Vec<Spanned<String>>,
    /// The builder (a name under `[builders]`) that builds the image.
    #[schemars(with = "String")]
    pub builder: Spanned<String>,
    /// Where the app's source comes from: exactly one of `git`, `path` or `blob`.
    #[schemars(with = "SourceTable")]
    pub source: Spanned<SourceTable>,
    /// Build-time environment for buildpacks (the CNB platform `env` directory).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub env: BTreeMap<Spanned<String>, Spanned<String>>,
    /// The process type the image starts by default, such as `web`.
    #[schemars(with = "Option<String>")]
    pub default_process: Option<Spanned<String>>,
    /// The build cache: `{ dir = true }` (the default, under the state directory),
    /// `{ image = "<ref>" }`, or `false`.
    #[schemars(with = "Option<CacheSetting>")]
    pub cache: Option<Spanned<CacheSetting>>,
    /// How many builds (with their logs) are kept.
    pub history: Option<HistoryTable>,
    /// Whether buildpacks may reach the network during the build. Default: true.
    pub network: Option<bool>,
    /// How the image's layers are compressed: `gzip` (the default; every runtime reads
    /// it) or `zstd` (smaller and faster to write; needs containerd 1.5+, Podman or CRI-O,
    /// or Docker Engine 23+).
    pub layer_compression: Option<CompressionSetting>,
    /// Which upstream changes make kpackd rebuild or rebase the image. Default: all.
    #[schemars(with = "Option<Vec<Reason>>")]
    pub rebuild_on: Option<Vec<Spanned<Reason>>>,
    /// How long one build may run before it is stopped and fails (a failure outside
    /// the build, so it is retried): a duration such as "30m". Default: "1h".
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
    /// The buildpacks to build with instead of the builder's order: one group of
    /// `"id"` or `"id@version"`, from the builder's buildpacks. It also replaces the
    /// group of the app's project descriptor.
    #[schemars(with = "Option<Vec<String>>", length(min = 1))]
    pub buildpacks: Option<Spanned<Vec<Spanned<String>>>>,
    /// The app's project descriptor, relative to the source's directory (its
    /// `sub-path`, when there is one). Default: `project.toml`, when there is one.
    #[schemars(with = "Option<String>")]
    pub project_descriptor: Option<Spanned<String>>,
    /// With `executor = "kubernetes"`: the resources, node selector and tolerations of
    /// this image's build Pod, each replacing the `[kubernetes]` default's.
    #[schemars(with = "Option<PodTable>")]
    pub kubernetes: Option<Spanned<PodTable>>,
}

// As written in kpack.toml; the model holds an `imageref::LayerCompression`.
/// `layer-compression = "gzip" | "zstd"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "LayerCompression")]
pub enum CompressionSetting {
    /// `application/vnd.oci.image.layer.v1.tar+gzip`.
    Gzip,
    /// `application/vnd.oci.image.layer.v1.tar+zstd`.
    Zstd,
}

impl From<CompressionSetting> for imageref::LayerCompression {
    fn from(setting: CompressionSetting) -> imageref::LayerCompression {
        match setting {
            CompressionSetting::Gzip => imageref::LayerCompression::Gzip,
            CompressionSetting::Zstd => imageref::LayerCompression::Zstd,
        }
    }
}

/// `source = { ... }`: exactly one of `git`, `path`, `blob` or `image`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(extend("oneOf" = [
    { "required": ["git"] },
    { "required": ["path"] },
    { "required": ["blob"] },
    { "required": ["image"] },
]))]
pub struct SourceTable {
    /// A git repository URL (`https://`, `http://`, `git://`, `ssh://`, `file://` or
    /// `user@host:path`).
    #[schemars(with = "Option<String>")]
    pub git: Option<Spanned<String>>,
    /// With `git`: the branch, tag or full commit id to build. Default: the remote's
    /// `HEAD`.
    #[schemars(with = "Option<String>")]
    pub revision: Option<Spanned<String>>,
    /// A local directory, relative to this file; `.gitignore` is honoured.
    #[schemars(with = "Option<String>")]
    pub path: Option<Spanned<String>>,
    /// The URL of a tar (optionally gzipped) or zip archive.
    #[schemars(with = "Option<String>")]
    pub blob: Option<Spanned<String>>,
    /// A source image (kpack's registry source): an image whose layers, applied in
    /// order, are the app. Pinned by digest at plan time; a new digest is a `COMMIT`.
    #[schemars(with = "Option<String>")]
    pub image: Option<Spanned<String>>,
    /// The directory within the source that holds the app.
    #[schemars(with = "Option<String>")]
    pub sub_path: Option<Spanned<String>>,
    /// With `blob`: how many leading path components to strip from the archive.
    #[schemars(with = "Option<u32>")]
    pub strip_components: Option<Spanned<u32>>,
}

/// `cache = { dir = true }`, `{ image = "<ref>" }` or `false`.
#[derive(Debug)]
pub enum CacheSetting {
    /// A local directory under the state directory.
    Dir,
    /// A cache image in a registry or an OCI layout.
    Image(Spanned<String>),
    /// No cache: every build starts cold.
    Disabled,
}

/// `history = { success = 10, failed = 10 }`: how many builds are kept per image.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HistoryTable {
    /// Successful builds kept. Default: 10.
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub success: Option<Spanned<u32>>,
    /// Failed builds kept. Default: 10.
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub failed: Option<Spanned<u32>>,
}

/// The keys of the table forms below are decoded one by one, so that an unknown key is
/// reported like serde reports one (and gets the same "did you mean" hint).
fn next_key_of<'de, A: MapAccess<'de>>(
    map: &mut A,
    known: &'static [&'static str],
) -> Result<Option<String>, A::Error> {
    match map.next_key::<String>()? {
        Some(key) if !known.contains(&key.as_str()) => Err(de::Error::unknown_field(&key, known)),
        other => Ok(other),
    }
}

impl<'de> Deserialize<'de> for BuildpackEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = BuildpackEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a buildpack directory or `{ image = \"<ref>\" }`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(BuildpackEntry::Directory(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut image = None;
                while next_key_of(&mut map, &["image"])?.is_some() {
                    image = Some(map.next_value::<Spanned<String>>()?);
                }
                image
                    .map(BuildpackEntry::Image)
                    .ok_or_else(|| de::Error::missing_field("image"))
            }
        }
        deserializer.deserialize_any(EntryVisitor)
    }
}

impl JsonSchema for BuildpackEntry {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "BuildpackEntry".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A buildpack directory (holding `buildpack.toml`, relative to this file), or `{ image = \"<ref>\" }` for a buildpackage image.",
            "anyOf": [
                { "type": "string", "description": "A directory holding `buildpack.toml`." },
                {
                    "type": "object",
                    "properties": {
                        "image": { "type": "string", "description": "A buildpackage image: a registry reference or `oci:<dir>[:<ref-name>]`." }
                    },
                    "required": ["image"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for CacheSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CacheVisitor;
        impl<'de> Visitor<'de> for CacheVisitor {
            type Value = CacheSetting;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`{ dir = true }`, `{ image = \"<ref>\" }` or `false`")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                match v {
                    false => Ok(CacheSetting::Disabled),
                    true => Err(de::Error::invalid_value(de::Unexpected::Bool(v), &self)),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut setting = None;
                while let Some(key) = next_key_of(&mut map, &["dir", "image"])? {
                    if setting.is_some() {
                        return Err(de::Error::custom(
                            "a cache is either `{ dir = true }` or `{ image = \"<ref>\" }`, not both",
                        ));
                    }
                    setting = Some(if key == "dir" {
                        if !map.next_value::<bool>()? {
                            return Err(de::Error::custom(
                                "`dir = false` is not a cache; write `cache = false` for none",
                            ));
                        }
                        CacheSetting::Dir
                    } else {
                        CacheSetting::Image(map.next_value()?)
                    });
                }
                setting.ok_or_else(|| de::Error::invalid_length(0, &self))
            }
        }
        deserializer.deserialize_any(CacheVisitor)
    }
}

impl JsonSchema for CacheSetting {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CacheSetting".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "The build cache: `{ dir = true }` (the default), `{ image = \"<ref>\" }`, or `false` for none.",
            "anyOf": [
                { "const": false, "description": "No cache: every build starts cold." },
                {
                    "type": "object",
                    "properties": { "dir": { "const": true, "description": "A local directory under the state directory." } },
                    "required": ["dir"],
                    "additionalProperties": false
                },
                {
                    "type": "object",
                    "properties": { "image": { "type": "string", "description": "A cache image: a registry reference or `oci:<dir>[:<ref-name>]`." } },
                    "required": ["image"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

/// The JSON Schema of kpack.toml (draft-07, which editors' TOML plugins understand).
pub fn schema() -> serde_json::Value {
    let mut settings = schemars::generate::SchemaSettings::draft07();
    settings
        .transforms
        .push(Box::new(schemars::transform::RecursiveTransform(no_null)));
    let schema = settings
        .into_generator()
        .into_root_schema_for::<KpackToml>();
    serde_json::to_value(schema).expect("a JSON Schema is plain JSON")
}

/// TOML has no null: an optional key is one that is left out, so `null` is taken out of
/// the types serde's `Option` gives.
fn no_null(schema: &mut Schema) {
    let is_null =
        |v: &serde_json::Value| v == "null" || v == &serde_json::json!({ "type": "null" });
    if let Some(types) = schema.get_mut("type").and_then(|t| t.as_array_mut()) {
        types.retain(|t| !is_null(t));
        if let [only] = types.as_slice() {
            let only = only.clone();
            schema.insert("type".into(), only);
        }
    }
    if let Some(any_of) = schema.get_mut("anyOf").and_then(|a| a.as_array_mut()) {
        any_of.retain(|s| !is_null(s));
        if let [only] = any_of.as_slice() {
            let only = only.clone();
            schema.remove("anyOf");
            if let Some(only) = only.as_object() {
                for (key, value) in only {
                    schema.insert(key.clone(), value.clone());
                }
            }
        }
    }
}
