//! kpack resources (kpack.io/v1alpha2, YAML): ClusterStack, ClusterStore, ClusterBuilder,
//! Builder, Buildpack, ClusterBuildpack, ClusterLifecycle and Image, one or many
//! documents, and `kind: List` as `kubectl get -o yaml` prints it. Only `spec` is read.

use super::error::InputError;
use super::model::{
    Builder, BuildpackResource, Fleet, GroupEntry, Image, Origin, Ref, Source, Stack, Store,
    StoreEntry, Table,
};
use super::yaml::{self, Node, Value};
use super::{kpackd_name, Input};

const SERVICE_ACCOUNT: &str = "kpackd has no service accounts: registry credentials come from the docker config, git credentials from the machine's ssh setup (see docs/credentials.md)";
const POD: &str = "kpackd builds on this machine in a bubblewrap sandbox, not in a Kubernetes pod";
const LIFECYCLE: &str = "kpackd runs its own lifecycle, so there is no lifecycle image to choose";

pub fn read(input: &Input, fleet: &mut Fleet) -> Result<(), InputError> {
    for doc in yaml::documents(input)? {
        resource(input, &doc, fleet)?;
    }
    Ok(())
}

/// Reads one resource (or each item of a List) into `fleet`.
fn resource(input: &Input, node: &Node, fleet: &mut Fleet) -> Result<(), InputError> {
    if !matches!(node.value, Value::Map(_)) {
        return Err(
            InputError::new(input, "expected a Kubernetes resource")
                .at(node.span.clone(), "not a mapping")
                .help("each YAML document holds one resource with `apiVersion`, `kind`, `metadata` and `spec`"),
        );
    }
    let kind = string(input, node, "kind", "")?.ok_or_else(|| {
        InputError::new(input, "a resource without `kind`")
            .at(node.span.clone(), "no `kind` here")
            .help("kpack resources have `apiVersion: kpack.io/v1alpha2` and a `kind`")
    })?;
    let api = string(input, node, "apiVersion", "")?.unwrap_or_default();
    if kind == "List" || kind.ends_with("List") {
        if let Some(items) = node.get("items") {
            for item in sequence(input, items, "items")? {
                resource(input, item, fleet)?;
            }
        }
        return Ok(());
    }
    let metadata = node.get("metadata");
    let name = metadata
        .map(|m| string(input, m, "name", "metadata."))
        .transpose()?
        .flatten()
        .ok_or_else(|| {
            InputError::new(input, format!("a {kind} without `metadata.name`"))
                .at(node.span.clone(), "no name")
        })?;
    let namespace = metadata
        .map(|m| string(input, m, "namespace", "metadata."))
        .transpose()?
        .flatten();
    if !api.starts_with("kpack.io/") {
        fleet.notes.push(format!(
            "{kind} {name} ({api}): not a kpack resource, skipped"
        ));
        return Ok(());
    }
    let empty = Node {
        span: node.span.clone(),
        value: Value::Map(Vec::new()),
    };
    let spec = node.get("spec").unwrap_or(&empty);
    let namespace = namespace.unwrap_or_else(|| "default".to_string());
    match kind.as_str() {
        "ClusterStack" => cluster_stack(input, &name, spec, fleet),
        "ClusterStore" => cluster_store(input, &name, spec, fleet),
        "ClusterBuilder" => builder(input, &kind, &name, None, spec, fleet),
        "Builder" => builder(input, &kind, &name, Some(&namespace), spec, fleet),
        "Buildpack" | "ClusterBuildpack" => {
            let ns = (kind == "Buildpack").then_some(namespace.as_str());
            let origin = Origin::new(&kind, &name, ns);
            let image = required(input, spec, "image", "spec.", &origin)?;
            for (key, value) in unknown(spec, &["image", "source"]) {
                let reason = match key {
                    "serviceAccountName" | "serviceAccountRef" => SERVICE_ACCOUNT,
                    _ => "not known to kpackd import",
                };
                fleet.notes.push(format!(
                    "{}: spec.{key} {}: {reason}",
                    origin.describe(),
                    value.summary()
                ));
            }
            fleet.buildpacks.push(BuildpackResource { origin, image });
            Ok(())
        }
        "ClusterLifecycle" => {
            let image = string(input, spec, "image", "spec.")?.unwrap_or_default();
            fleet.notes.push(format!(
                "ClusterLifecycle {name} (`{image}`): not carried over: {LIFECYCLE}"
            ));
            Ok(())
        }
        "Image" => image(input, &name, &namespace, spec, fleet),
        other => {
            let reason = match other {
                "Build" => "a one-shot build; kpackd keeps images built from `[images]` and records builds itself",
                "SourceResolver" => "kpack makes these itself; kpackd resolves sources itself",
                _ => "not a kind kpackd import reads",
            };
            fleet
                .notes
                .push(format!("{other} {name}: skipped: {reason}"));
            Ok(())
        }
    }
}

fn cluster_stack(
    input: &Input,
    name: &str,
    spec: &Node,
    fleet: &mut Fleet,
) -> Result<(), InputError> {
    let origin = Origin::new("ClusterStack", name, None);
    let image_of = |key: &str| -> Result<String, InputError> {
        let part = spec
            .get(key)
            .ok_or_else(|| missing(input, spec, &format!("spec.{key}.image"), &origin))?;
        required(input, part, "image", &format!("spec.{key}."), &origin)
    };
    let stack = Stack {
        build_image: image_of("buildImage")?,
        run_image: image_of("runImage")?,
        run_image_mirrors: Vec::new(),
        id: string(input, spec, "id", "spec.")?,
    };
    let mut table = Table::new(origin, kpackd_name(name, "stack"), stack);
    for (key, value) in unknown(spec, &["id", "buildImage", "runImage"]) {
        let reason = match key {
            "serviceAccountRef" | "serviceAccountName" => SERVICE_ACCOUNT,
            _ => "not known to kpackd import",
        };
        table
            .notes
            .push(format!("spec.{key} {}: {reason}", value.summary()));
    }
    fleet.stacks.push(table);
    Ok(())
}

fn cluster_store(
    input: &Input,
    name: &str,
    spec: &Node,
    fleet: &mut Fleet,
) -> Result<(), InputError> {
    let origin = Origin::new("ClusterStore", name, None);
    let mut buildpacks = Vec::new();
    if let Some(sources) = spec.get("sources") {
        for source in sequence(input, sources, "spec.sources")? {
            let image = required(input, source, "image", "spec.sources[].", &origin)?;
            buildpacks.push(StoreEntry::Image(image));
        }
    }
    let mut table = Table::new(origin, kpackd_name(name, "store"), Store { buildpacks });
    for (key, value) in unknown(spec, &["sources"]) {
        let reason = match key {
            "serviceAccountRef" | "serviceAccountName" => SERVICE_ACCOUNT,
            _ => "not known to kpackd import",
        };
        table
            .notes
            .push(format!("spec.{key} {}: {reason}", value.summary()));
    }
    fleet.stores.push(table);
    Ok(())
}

/// A ClusterBuilder (`namespace` None) or a Builder.
fn builder(
    input: &Input,
    kind: &str,
    name: &str,
    namespace: Option<&str>,
    spec: &Node,
    fleet: &mut Fleet,
) -> Result<(), InputError> {
    let origin = Origin::new(kind, name, namespace);
    let mut notes = Vec::new();
    let reference = |key: &str, default_kind: &str| -> Result<Option<Origin>, InputError> {
        let Some(part) = spec.get(key) else {
            return Ok(None);
        };
        let name = required(input, part, "name", &format!("spec.{key}."), &origin)?;
        let kind = string(input, part, "kind", &format!("spec.{key}."))?
            .unwrap_or_else(|| default_kind.to_string());
        Ok(Some(Origin::new(&kind, &name, None)))
    };
    let stack = reference("stack", "ClusterStack")?
        .ok_or_else(|| missing(input, spec, "spec.stack", &origin))?;
    let store = reference("store", "ClusterStore")?;
    let mut order = Vec::new();
    if let Some(groups) = spec.get("order") {
        for group in sequence(input, groups, "spec.order")? {
            let mut entries = Vec::new();
            let Some(members) = group.get("group") else {
                return Err(missing(input, group, "spec.order[].group", &origin));
            };
            for entry in sequence(input, members, "spec.order[].group")? {
                entries.push(group_entry(input, entry, namespace, &mut notes)?);
            }
            order.push(entries);
        }
    }
    if order.is_empty() {
        return Err(missing(input, spec, "spec.order", &origin));
    }
    for (key, value) in unknown(spec, &["tag", "stack", "store", "order"]) {
        let reason = match key {
            "serviceAccountRef" | "serviceAccountName" => SERVICE_ACCOUNT,
            "lifecycle" => LIFECYCLE,
            "additionalLabels" => "kpackd does not label the builders it assembles",
            _ => "not known to kpackd import",
        };
        notes.push(format!("spec.{key} {}: {reason}", value.summary()));
    }
    let spec = Builder::Assembled {
        stack: Ref::new(stack),
        store: store.map(Ref::new),
        order,
        tag: string(input, spec, "tag", "spec.")?,
    };
    let mut table = Table::new(origin, kpackd_name(name, "builder"), spec);
    table.notes = notes;
    fleet.builders.push(table);
    Ok(())
}

/// One entry of a builder's order group: a buildpack by `id`, or a (Cluster)Buildpack by
/// `kind` and `name`, a Buildpack being in the builder's `namespace`.
fn group_entry(
    input: &Input,
    entry: &Node,
    namespace: Option<&str>,
    notes: &mut Vec<String>,
) -> Result<GroupEntry, InputError> {
    let path = "spec.order[].group[].";
    let optional = match string(input, entry, "optional", path)?.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(InputError::new(input, "`optional` is true or false").at(
                entry
                    .get("optional")
                    .map_or(entry.span.clone(), |n| n.span.clone()),
                "not a boolean",
            ))
        }
    };
    let buildpack = match string(input, entry, "name", path)? {
        Some(bp_name) => {
            let bp_kind = string(input, entry, "kind", path)?
                .unwrap_or_else(|| "ClusterBuildpack".to_string());
            let bp_namespace = (bp_kind == "Buildpack").then_some(namespace).flatten();
            Some(Origin::new(&bp_kind, &bp_name, bp_namespace))
        }
        None => None,
    };
    let id = string(input, entry, "id", path)?;
    if id.is_none() && buildpack.is_none() {
        return Err(
            InputError::new(input, "a group entry with neither `id` nor `name`")
                .at(entry.span.clone(), "which buildpack?"),
        );
    }
    for (key, value) in unknown(
        entry,
        &["id", "version", "optional", "name", "kind", "namespace"],
    ) {
        notes.push(format!(
            "{path}{key} {}: not known to kpackd import",
            value.summary()
        ));
    }
    Ok(GroupEntry {
        id,
        version: string(input, entry, "version", path)?,
        optional,
        buildpack,
    })
}

/// An Image. Its function is long because each of kpack's Image fields needs a line of
/// its own: mapped, or a comment saying why not.
fn image(
    input: &Input,
    name: &str,
    namespace: &str,
    spec: &Node,
    fleet: &mut Fleet,
) -> Result<(), InputError> {
    let origin = Origin::new("Image", name, Some(namespace));
    let mut notes = Vec::new();
    let tag = required(input, spec, "tag", "spec.", &origin)?;
    let mut additional_tags = Vec::new();
    if let Some(tags) = spec.get("additionalTags") {
        for tag in sequence(input, tags, "spec.additionalTags")? {
            additional_tags.push(scalar(input, tag, "spec.additionalTags[]")?);
        }
    }
    let builder_node = spec
        .get("builder")
        .ok_or_else(|| missing(input, spec, "spec.builder", &origin))?;
    let builder_name = required(input, builder_node, "name", "spec.builder.", &origin)?;
    let builder_kind = string(input, builder_node, "kind", "spec.builder.")?
        .unwrap_or_else(|| "ClusterBuilder".to_string());
    let builder_ns = (builder_kind == "Builder").then_some(namespace);
    let builder = Ref::new(Origin::new(&builder_kind, &builder_name, builder_ns));

    let source_node = spec
        .get("source")
        .ok_or_else(|| missing(input, spec, "spec.source", &origin))?;
    let sub_path = string(input, source_node, "subPath", "spec.source.")?;
    let source;
    if let Some(git) = source_node.get("git") {
        source = Some(Source::Git {
            url: required(input, git, "url", "spec.source.git.", &origin)?,
            revision: string(input, git, "revision", "spec.source.git.")?,
        });
        if string(input, git, "initializeSubmodules", "")?.as_deref() == Some("true") {
            notes.push("spec.source.git.initializeSubmodules `true`: kpackd does not fetch submodules; each is an empty directory".to_string());
        }
        for (key, value) in unknown(git, &["url", "revision", "initializeSubmodules"]) {
            notes.push(format!(
                "spec.source.git.{key} {}: not known to kpackd import",
                value.summary()
            ));
        }
    } else if let Some(blob) = source_node.get("blob") {
        let strip = match string(input, blob, "stripComponents", "spec.source.blob.")? {
            None => None,
            Some(n) => Some(n.parse::<u32>().map_err(|_| {
                InputError::new(input, "`stripComponents` is a number").at(
                    blob.get("stripComponents")
                        .map_or(blob.span.clone(), |n| n.span.clone()),
                    "not a number",
                )
            })?),
        };
        source = Some(Source::Blob {
            url: required(input, blob, "url", "spec.source.blob.", &origin)?,
            strip_components: strip.filter(|n| *n > 0),
        });
        for (key, value) in unknown(blob, &["url", "stripComponents"]) {
            let reason = match key {
                "auth" => {
                    "kpackd fetches blobs without kpack's auth helpers (see docs/credentials.md)"
                }
                _ => "not known to kpackd import",
            };
            notes.push(format!(
                "spec.source.blob.{key} {}: {reason}",
                value.summary()
            ));
        }
    } else if let Some(registry) = source_node.get("registry") {
        source = Some(Source::Image(required(
            input,
            registry,
            "image",
            "spec.source.registry.",
            &origin,
        )?));
        for (key, value) in unknown(registry, &["image"]) {
            let reason = match key {
                "imagePullSecrets" => "kpackd reads registry credentials from the docker config (see docs/credentials.md)",
                _ => "not known to kpackd import",
            };
            notes.push(format!(
                "spec.source.registry.{key} {}: {reason}",
                value.summary()
            ));
        }
    } else {
        return Err(missing(
            input,
            source_node,
            "spec.source.git, .blob or .registry",
            &origin,
        ));
    }

    let mut env = Vec::new();
    let mut cache_image = None;
    let mut timeout = None;
    if let Some(build) = spec.get("build") {
        if let Some(vars) = build.get("env") {
            for var in sequence(input, vars, "spec.build.env")? {
                let var_name = required(input, var, "name", "spec.build.env[].", &origin)?;
                if var.get("valueFrom").is_some() {
                    notes.push(format!("spec.build.env {var_name} (valueFrom): kpackd's env values are literal strings; it reads no secrets or config maps"));
                    continue;
                }
                let value = string(input, var, "value", "spec.build.env[].")?.unwrap_or_default();
                if valid_env_name(&var_name) {
                    env.push((var_name, value));
                } else {
                    notes.push(format!("spec.build.env {var_name}: not a name kpackd accepts (letters, digits and `_`, not starting with a digit)"));
                }
            }
        }
        // kpack's `buildTimeout` is in minutes.
        if let Some(minutes) = string(input, build, "buildTimeout", "spec.build.")? {
            match minutes.parse::<u32>() {
                Ok(n) if n > 0 => timeout = Some(format!("{n}m")),
                _ => notes.push(format!(
                    "spec.build.buildTimeout `{minutes}`: not a number of minutes; kpackd's default `timeout` is 1h"
                )),
            }
        }
        for (key, value) in unknown(build, &["env", "buildTimeout"]) {
            let reason = match key {
                "resources" | "tolerations" | "nodeSelector" | "affinity" | "runtimeClassName"
                | "schedulerName" | "priorityClassName" => POD,
                "creationTime" => "kpackd has no setting for the image's creation time",
                "services" | "cnbBindings" => "kpackd has no service bindings",
                _ => "not known to kpackd import",
            };
            notes.push(format!("spec.build.{key} {}: {reason}", value.summary()));
        }
    }
    if let Some(cache) = spec.get("cache") {
        if let Some(registry) = cache.get("registry") {
            cache_image = string(input, registry, "tag", "spec.cache.registry.")?;
        }
        if let Some(volume) = cache.get("volume") {
            notes.push(format!("spec.cache.volume {}: kpackd keeps the build cache in a directory under its state directory by default (`cache = {{ dir = true }}`)", volume.summary()));
        }
    }
    let limit = |key: &str| -> Result<Option<u32>, InputError> {
        match string(input, spec, key, "spec.")? {
            None => Ok(None),
            Some(n) => n.parse::<u32>().map(|n| Some(n.max(1))).map_err(|_| {
                InputError::new(input, format!("`{key}` is a number")).at(
                    spec.get(key).map_or(spec.span.clone(), |n| n.span.clone()),
                    "not a number",
                )
            }),
        }
    };
    let history = (
        limit("successBuildHistoryLimit")?,
        limit("failedBuildHistoryLimit")?,
    );
    let default_process = string(input, spec, "defaultProcess", "spec.")?;
    let mut project_descriptor = string(input, spec, "projectDescriptorPath", "spec.")?
        .filter(|p| !p.is_empty() && p != "project.toml");
    if let Some(path) = project_descriptor.take_if(|p| !inside_the_source(p)) {
        notes.push(format!(
            "spec.projectDescriptorPath {path:?}: not a relative path inside the source; kpackd reads the source's project.toml instead"
        ));
    }
    let known = [
        "projectDescriptorPath",
        "tag",
        "additionalTags",
        "builder",
        "source",
        "build",
        "cache",
        "successBuildHistoryLimit",
        "failedBuildHistoryLimit",
        "defaultProcess",
    ];
    for (key, value) in unknown(spec, &known) {
        let reason = match key {
            "serviceAccountName" => SERVICE_ACCOUNT,
            "imageTaggingStrategy" if value.str() == Some("None") => continue,
            "imageTaggingStrategy" => {
                "kpackd pushes no build-number tags, only `tag` and `additional-tags`"
            }
            "cosign" => "kpackd does not sign images",
            "notary" => "kpackd does not sign images",
            _ => "not known to kpackd import",
        };
        notes.push(format!("spec.{key} {}: {reason}", value.summary()));
    }
    let spec = Image {
        tag,
        additional_tags,
        builder: Some(builder),
        source,
        sub_path,
        env,
        default_process,
        project_descriptor,
        cache_image,
        history,
        timeout,
    };
    let mut table = Table::new(origin, kpackd_name(name, "image"), spec);
    table.notes = notes;
    fleet.images.push(table);
    Ok(())
}

/// A relative path without `..`, as `project-descriptor` takes.
fn inside_the_source(path: &str) -> bool {
    let path = std::path::Path::new(path);
    path.components().all(|c| {
        matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    }) && path
        .components()
        .any(|c| matches!(c, std::path::Component::Normal(_)))
}

fn valid_env_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The keys of mapping `node` not in `known`, with their values.
fn unknown<'a>(node: &'a Node, known: &[&str]) -> Vec<(&'a str, &'a Node)> {
    match &node.value {
        Value::Map(entries) => entries
            .iter()
            .filter(|(k, _)| !known.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v))
            .collect(),
        _ => Vec::new(),
    }
}

/// The scalar at `key` of `node`; an error when it is a collection.
fn string(input: &Input, node: &Node, key: &str, path: &str) -> Result<Option<String>, InputError> {
    match node.get(key) {
        None => Ok(None),
        Some(value) if value.is_null() => Ok(None),
        Some(value) => scalar(input, value, &format!("{path}{key}")).map(Some),
    }
}

fn scalar(input: &Input, node: &Node, path: &str) -> Result<String, InputError> {
    node.str().map(str::to_string).ok_or_else(|| {
        InputError::new(input, format!("`{path}` should be a string"))
            .at(node.span.clone(), "a collection, not a string")
    })
}

fn sequence<'a>(input: &Input, node: &'a Node, path: &str) -> Result<&'a [Node], InputError> {
    match &node.value {
        Value::Seq(items) => Ok(items),
        Value::Null => Ok(&[]),
        _ => Err(InputError::new(input, format!("`{path}` should be a list"))
            .at(node.span.clone(), "not a list")),
    }
}

/// The scalar at `key`, which `origin` needs.
fn required(
    input: &Input,
    node: &Node,
    key: &str,
    path: &str,
    origin: &Origin,
) -> Result<String, InputError> {
    string(input, node, key, path)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing(input, node, &format!("{path}{key}"), origin))
}

fn missing(input: &Input, node: &Node, path: &str, origin: &Origin) -> InputError {
    InputError::new(input, format!("{} has no `{path}`", origin.describe()))
        .at(node.span.clone(), format!("`{path}` is missing"))
}
