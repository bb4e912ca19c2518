//! The Kubernetes tables of kpack.toml: `[kubernetes]` and `[images.<name>.kubernetes]`,
//! as written. Validation (in `validate::kubernetes`) turns them into
//! [`crate::Kubernetes`] and [`crate::PodPlacement`].

use std::collections::BTreeMap;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// `[kubernetes]`: the cluster builds run on with `executor = "kubernetes"`, and the
/// defaults of every build Pod.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KubernetesTable {
    /// The namespace build Pods and their Secrets are created in. Default: `default`.
    #[schemars(with = "Option<String>")]
    pub namespace: Option<Spanned<String>>,
    /// The kubeconfig context to use. Default: the kubeconfig's current context, or the
    /// cluster kpackd runs in when there is no kubeconfig.
    #[schemars(with = "Option<String>")]
    pub context: Option<Spanned<String>>,
    /// The service account build Pods run as (its token is never mounted).
    /// Default: the namespace's `default`.
    #[schemars(with = "Option<String>")]
    pub service_account: Option<Spanned<String>>,
    /// Secrets (of type `kubernetes.io/dockerconfigjson`) the cluster pulls builder
    /// images with.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub image_pull_secrets: Vec<Spanned<String>>,
    /// The registry repository (no tag) that `path` sources are pushed to as source
    /// images, for build Pods to read. Required when an image has a `path` source.
    #[schemars(with = "Option<String>")]
    pub source_repository: Option<Spanned<String>>,
    /// How many build Pods run at once. Default: 4.
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub max_pods: Option<Spanned<u32>>,
    /// The resource requests and limits of every build Pod.
    #[schemars(with = "Option<ResourcesTable>")]
    pub resources: Option<Spanned<ResourcesTable>>,
    /// The node labels a build Pod's node must have.
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub node_selector: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    /// The taints build Pods tolerate.
    #[schemars(with = "Option<Vec<TolerationTable>>")]
    pub tolerations: Option<Vec<Spanned<TolerationTable>>>,
}

/// `[images.<name>.kubernetes]`: what this image's build Pod sets instead of the
/// `[kubernetes]` defaults; each key written replaces the default's, whole.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PodTable {
    /// The build Pod's resource requests and limits, instead of the defaults'.
    #[schemars(with = "Option<ResourcesTable>")]
    pub resources: Option<Spanned<ResourcesTable>>,
    /// The node labels the build Pod's node must have, instead of the defaults'.
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub node_selector: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    /// The taints the build Pod tolerates, instead of the defaults'.
    #[schemars(with = "Option<Vec<TolerationTable>>")]
    pub tolerations: Option<Vec<Spanned<TolerationTable>>>,
}

/// `resources = { requests = { … }, limits = { … } }`: quantities by resource name.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ResourcesTable {
    /// What the scheduler reserves, such as `{ cpu = "1", memory = "2Gi" }`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Quantity>")]
    pub requests: BTreeMap<Spanned<String>, Spanned<Quantity>>,
    /// What the build may use at most, such as `{ memory = "4Gi" }`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Quantity>")]
    pub limits: BTreeMap<Spanned<String>, Spanned<Quantity>>,
}

/// `{ key = "…", operator = "Equal", value = "…", effect = "NoSchedule" }`: a taint
/// build Pods tolerate.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TolerationTable {
    /// The taint's key; empty or absent (with `operator = "Exists"`) matches every taint.
    #[schemars(with = "Option<String>")]
    pub key: Option<Spanned<String>>,
    /// `Equal` (the default: the taint's value is `value`) or `Exists` (any value).
    #[schemars(with = "Option<TolerationOperator>")]
    pub operator: Option<Spanned<TolerationOperator>>,
    /// The taint's value, with `operator = "Equal"`.
    #[schemars(with = "Option<String>")]
    pub value: Option<Spanned<String>>,
    /// The taint effect tolerated; absent: every effect.
    pub effect: Option<TaintEffect>,
    /// With `effect = "NoExecute"`: how long the Pod stays on a node after the taint
    /// appears. Absent: for ever.
    #[schemars(with = "Option<i64>")]
    pub toleration_seconds: Option<Spanned<i64>>,
}

/// A toleration's `operator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum TolerationOperator {
    /// Any value of the key.
    Exists,
    /// The value `value`.
    Equal,
}

/// A toleration's `effect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

impl TolerationOperator {
    pub fn as_str(self) -> &'static str {
        match self {
            TolerationOperator::Exists => "Exists",
            TolerationOperator::Equal => "Equal",
        }
    }
}

impl TaintEffect {
    pub fn as_str(self) -> &'static str {
        match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        }
    }
}

/// A resource quantity as written: a string such as `"500m"` or `"2Gi"`, or a number
/// (`cpu = 2`), kept as the text Kubernetes will be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity(pub String);

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct QuantityVisitor;
        impl Visitor<'_> for QuantityVisitor {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a quantity such as \"500m\", \"2Gi\" or 2")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Quantity, E> {
                // Display writes the shortest text that reads back as `v`: 1.5, 0.25.
                Ok(Quantity(v.to_string()))
            }
        }
        deserializer.deserialize_any(QuantityVisitor)
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantity".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A Kubernetes quantity: a number with an optional suffix, such as `\"500m\"`, `\"1.5\"`, `\"2Gi\"`, `\"1e3\"` or `2`.",
            "type": ["string", "number"]
        })
    }
}
