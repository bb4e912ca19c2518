//! What a builder image says about itself: its order (versions filled in, every
//! reference checked), the `io.buildpacks.*` labels, the `/cnb/*.toml` files and the
//! image config, all written the same way for the same inputs.

use std::collections::BTreeMap;

use cnb::buildpack::{ApiVersion, OrderGroup};
use cnb::labels::{
    BuilderBuildpack, BuilderLifecycle, BuilderMetadata, BuilderRunImage, BuilderStack,
    BuildpackLayers, CreatedBy, LifecycleApi, LifecycleApis, BUILDER_METADATA, BUILDPACK_LAYERS,
    BUILDPACK_ORDER, STACK_ID,
};
use serde::Serialize;

use super::buildpacks::{BuilderLayer, ResolvedBuildpack};
use super::normalised::Owner;
use super::PublishRequest;
use crate::lifecycle::descriptor::Order;
use crate::lifecycle::export::{rfc3339, NORMALISED_CREATED};
use crate::oci::ImageConfig;

/// The tool builder images name as their writer.
pub const CREATED_BY: &str = "kpackd";

/// `order` with every entry's version filled in (an entry without one names the only
/// version of its id the builder has) and checked: every buildpack an order or a
/// composite names must be one of `buildpacks`.
pub fn resolve_order(
    order: &[OrderGroup],
    buildpacks: &[ResolvedBuildpack],
) -> Result<Vec<OrderGroup>, String> {
    let mut resolved = order.to_vec();
    for entry in resolved.iter_mut().flat_map(|g| g.group.iter_mut()) {
        entry.version = version_of(&entry.id, &entry.version, buildpacks)?;
    }
    for bp in buildpacks {
        for entry in bp.info.order.iter().flat_map(|g| &g.group) {
            version_of(&entry.id, &entry.version, buildpacks)
                .map_err(|e| format!("composite buildpack {}@{}: {e}", bp.id, bp.version))?;
        }
    }
    Ok(resolved)
}

fn version_of(id: &str, version: &str, buildpacks: &[ResolvedBuildpack]) -> Result<String, String> {
    let mut versions = buildpacks
        .iter()
        .filter(|bp| bp.id.as_str() == id)
        .map(|bp| bp.version.as_str());
    if !version.is_empty() {
        return versions
            .find(|v| *v == version)
            .map(str::to_string)
            .ok_or_else(|| {
                format!("the order names {id}@{version}, which the builder does not have")
            });
    }
    let all: Vec<&str> = versions.collect();
    match all.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(format!(
            "the order names {id}, which the builder does not have"
        )),
        many => Err(format!(
            "the order names {id} without a version, and the builder has {}",
            many.join(", ")
        )),
    }
}

/// A lifecycle's version and APIs, for the builder metadata.
pub struct LifecycleInfo<'a> {
    pub version: &'a str,
    pub apis: &'a LifecycleApis,
}

/// The builder's labels: metadata, order, buildpack layers and stack id.
pub fn labels(
    req: &PublishRequest,
    buildpacks: &[ResolvedBuildpack],
    order: &[OrderGroup],
    lifecycle: Option<LifecycleInfo<'_>>,
) -> BTreeMap<String, String> {
    let run_image = BuilderRunImage {
        image: Some(req.run_image.to_string()),
        mirrors: req
            .run_image_mirrors
            .iter()
            .map(ToString::to_string)
            .collect(),
    };
    let metadata = BuilderMetadata {
        description: format!("kpackd builder {}", req.builder),
        buildpacks: buildpacks
            .iter()
            .map(|bp| BuilderBuildpack {
                id: bp.id.to_string(),
                version: bp.version.to_string(),
                homepage: bp.info.homepage.clone(),
            })
            .collect(),
        images: vec![run_image.clone()],
        stack: Some(BuilderStack {
            run_image: Some(run_image),
        }),
        lifecycle: lifecycle.map(|l| BuilderLifecycle {
            version: l.version.to_string(),
            api: Some(LifecycleApi {
                buildpack: oldest(&l.apis.buildpack.supported),
                platform: oldest(&l.apis.platform.supported),
            }),
            apis: Some(l.apis.clone()),
        }),
        created_by: Some(CreatedBy {
            name: CREATED_BY.into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }),
        extra: Default::default(),
    };
    let mut layers = BuildpackLayers::new();
    for bp in buildpacks {
        layers
            .entry(bp.id.clone())
            .or_default()
            .insert(bp.version.clone(), bp.info.clone());
    }
    let mut labels = BTreeMap::from([
        (BUILDER_METADATA.to_string(), json(&metadata)),
        (BUILDPACK_ORDER.to_string(), json(&order.to_vec())),
        (BUILDPACK_LAYERS.to_string(), json(&layers)),
    ]);
    if !req.stack_id.is_empty() {
        labels.insert(STACK_ID.to_string(), req.stack_id.clone());
    }
    labels
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("label values serialise")
}

fn toml_text<T: Serialize>(value: &T) -> String {
    toml::to_string(value).expect("the /cnb files serialise")
}

/// The oldest of some API versions (the legacy `lifecycle.api`).
fn oldest(versions: &[String]) -> String {
    versions
        .iter()
        .filter_map(|v| ApiVersion::parse(v).map(|parsed| (parsed, v)))
        .min()
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

#[derive(Serialize)]
struct RunToml {
    images: Vec<RunTomlImage>,
}

#[derive(Serialize)]
struct RunTomlImage {
    image: String,
    mirrors: Vec<String>,
}

#[derive(Serialize)]
struct StackToml {
    #[serde(rename = "run-image")]
    run_image: RunTomlImage,
}

/// `/cnb/order.toml`, `/cnb/run.toml` and (for platforms before 0.12) `/cnb/stack.toml`.
pub fn cnb_files(req: &PublishRequest, order: &[OrderGroup]) -> Vec<(&'static str, String)> {
    let run_image = || RunTomlImage {
        image: req.run_image.to_string(),
        mirrors: req
            .run_image_mirrors
            .iter()
            .map(ToString::to_string)
            .collect(),
    };
    vec![
        (
            "order.toml",
            toml_text(&Order {
                order: order.to_vec(),
            }),
        ),
        (
            "run.toml",
            toml_text(&RunToml {
                images: vec![run_image()],
            }),
        ),
        (
            "stack.toml",
            toml_text(&StackToml {
                run_image: run_image(),
            }),
        ),
    ]
}

/// The builder's config: the build image's (its env, CNB_* included), `User` the CNB
/// user, `created` fixed, the labels added, and a history entry per added layer when the
/// build image keeps a history (`rootfs` is set when pushing).
pub fn image_config(
    base: &ImageConfig,
    owner: Owner,
    labels: BTreeMap<String, String>,
    added: &[BuilderLayer],
) -> ImageConfig {
    let mut config = base.clone();
    let created = rfc3339(NORMALISED_CREATED);
    config.created = Some(created.clone());
    let mut runtime = config.config.take().unwrap_or_default();
    runtime.user = Some(format!("{}:{}", owner.uid, owner.gid));
    let mut all = runtime.labels.take().unwrap_or_default();
    all.extend(labels);
    runtime.labels = Some(all);
    config.config = Some(runtime);
    if !config.history.is_empty() {
        config.history.extend(
            added.iter().map(
                |layer| serde_json::json!({"created": created, "created_by": layer.created_by}),
            ),
        );
    }
    config
}
