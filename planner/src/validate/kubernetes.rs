//! `[kubernetes]`, `[images.<name>.kubernetes]`, and what `executor = "kubernetes"` asks
//! of the rest of the file: every image's builder is published (its Pod runs the
//! builder image's entrypoint), path sources have a `source-repository` to be pushed
//! to, and what a Pod reads or writes is in a registry.

mod names;
mod quantity;

use std::collections::{BTreeMap, BTreeSet};

use imageref::ImageRef;
use toml::Spanned;

use super::Validator;
use crate::config::{
    KpackToml, KubernetesTable, PodTable, Quantity, ResourcesTable, TolerationOperator,
    TolerationTable,
};
use crate::diagnostic::{did_you_mean, Problem, Span};
use crate::model::{
    Builder, BuilderKind, Cache, Executor, Image, Kubernetes, PodPlacement, Resources, Settings,
    Source, Toleration, DEFAULT_MAX_PODS, DEFAULT_NAMESPACE,
};

/// The resource names a container may ask for without a domain prefix (others, such as
/// `nvidia.com/gpu`, are extended resources).
const STANDARD_RESOURCES: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

/// What the Kubernetes checks found: the model, and the warnings (errors are reported
/// like every other problem).
pub(crate) struct Checked {
    pub kubernetes: Option<Kubernetes>,
    pub warnings: Vec<Problem>,
}

impl Validator<'_> {
    /// Checks `[kubernetes]` and each image's `kubernetes` table (whose placement it
    /// puts on the image in `images`), and, with the Kubernetes executor, that every
    /// image can be built in a Pod.
    pub(super) fn kubernetes(
        &mut self,
        file: &KpackToml,
        settings: &Settings,
        builders: &BTreeMap<String, Builder>,
        images: &mut BTreeMap<String, Image>,
    ) -> Checked {
        let on_kubernetes = settings.executor == Executor::Kubernetes;
        let mut warnings = Vec::new();
        let kubernetes = match &file.kubernetes {
            Some(table) => {
                if !on_kubernetes {
                    warnings.push(unused("`[kubernetes]`", table.span()));
                }
                self.kubernetes_table(table)
            }
            None => on_kubernetes.then(Kubernetes::default),
        };
        for (name, table) in &file.images {
            let Some(pod) = &table.get_ref().kubernetes else {
                continue;
            };
            if !on_kubernetes {
                let what = format!("`[images.{}.kubernetes]`", name.get_ref());
                warnings.push(unused(&what, pod.span()));
            }
            let placement = self.pod_table(pod.get_ref());
            if let (Some(image), Some(placement)) = (images.get_mut(name.get_ref()), placement) {
                image.kubernetes = placement;
            }
        }
        if on_kubernetes {
            let executor = file.kpackd.executor.as_ref().map_or(0..0, Spanned::span);
            self.published_builders(builders, images, &executor);
            // Written, even if wrong (which is reported already).
            let has_source_repository = file
                .kubernetes
                .as_ref()
                .is_some_and(|k| k.get_ref().source_repository.is_some());
            for image in images.values() {
                self.buildable_in_a_pod(image, has_source_repository, &executor);
            }
        }
        Checked {
            kubernetes,
            warnings,
        }
    }

    fn kubernetes_table(&mut self, table: &Spanned<KubernetesTable>) -> Option<Kubernetes> {
        let t = table.get_ref();
        let namespace = match &t.namespace {
            Some(ns) => self.checked_name(ns, "namespace", names::dns1123_label),
            None => Some(DEFAULT_NAMESPACE.to_string()),
        };
        let context = match &t.context {
            Some(context) if context.get_ref().is_empty() => {
                self.report(
                    Problem::new("`context` is empty")
                        .label(context.span(), "expected a kubeconfig context")
                        .help("leave `context` out for the kubeconfig's current context"),
                );
                None
            }
            other => Some(other.as_ref().map(|c| c.get_ref().clone())),
        };
        let service_account = match &t.service_account {
            Some(account) => self
                .checked_name(account, "service account", names::dns1123_subdomain)
                .map(Some),
            None => Some(None),
        };
        let image_pull_secrets: Option<Vec<String>> = t
            .image_pull_secrets
            .iter()
            .map(|secret| self.checked_name(secret, "Secret", names::dns1123_subdomain))
            .collect::<Vec<_>>()
            .into_iter()
            .collect();
        let source_repository = match &t.source_repository {
            Some(repository) => self.source_repository(repository).map(Some),
            None => Some(None),
        };
        let max_pods = match &t.max_pods {
            Some(n) => self
                .at_least_one(
                    n,
                    "`max-pods` must be at least 1",
                    "no build could run",
                    &format!("leave `max-pods` out for the default, {DEFAULT_MAX_PODS}"),
                )
                .and_then(|n| usize::try_from(n.get()).ok()),
            None => Some(DEFAULT_MAX_PODS),
        };
        let pod = self.placement(
            t.resources.as_ref(),
            t.node_selector.as_ref(),
            t.tolerations.as_deref(),
        );
        Some(Kubernetes {
            namespace: namespace?,
            context: context?,
            service_account: service_account?,
            image_pull_secrets: image_pull_secrets?,
            source_repository: source_repository?,
            max_pods: max_pods?,
            pod: pod?,
        })
    }

    fn pod_table(&mut self, table: &PodTable) -> Option<PodPlacement> {
        self.placement(
            table.resources.as_ref(),
            table.node_selector.as_ref(),
            table.tolerations.as_deref(),
        )
    }

    fn placement(
        &mut self,
        resources: Option<&Spanned<ResourcesTable>>,
        node_selector: Option<&BTreeMap<Spanned<String>, Spanned<String>>>,
        tolerations: Option<&[Spanned<TolerationTable>]>,
    ) -> Option<PodPlacement> {
        let resources = match resources {
            Some(r) => self.resources(r.get_ref()).map(Some),
            None => Some(None),
        };
        let node_selector = match node_selector {
            Some(selector) => self.node_selector(selector).map(Some),
            None => Some(None),
        };
        let tolerations = match tolerations {
            Some(list) => list
                .iter()
                .map(|t| self.toleration(t))
                .collect::<Vec<_>>()
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .map(Some),
            None => Some(None),
        };
        Some(PodPlacement {
            resources: resources?,
            node_selector: node_selector?,
            tolerations: tolerations?,
        })
    }

    /// A name the API server checks with `check`; `what` names it in the diagnostic.
    fn checked_name(
        &mut self,
        name: &Spanned<String>,
        what: &str,
        check: fn(&str) -> Result<(), String>,
    ) -> Option<String> {
        match check(name.get_ref()) {
            Ok(()) => Some(name.get_ref().clone()),
            Err(why) => {
                self.report(
                    Problem::new(format!("invalid {what} name `{}`", name.get_ref()))
                        .label(name.span(), why)
                        .help(format!(
                            "a {what} name is lowercase letters, digits and `-`{}, such as `kpackd-builds`",
                            if what == "namespace" { "" } else { " (and `.`)" }
                        )),
                );
                None
            }
        }
    }

    /// `source-repository`: a registry repository, without tag or digest.
    fn source_repository(&mut self, value: &Spanned<String>) -> Option<ImageRef> {
        let reference = self.image_ref(value)?;
        let why = match &reference {
            ImageRef::Layout(_) => "an OCI layout on this machine, which build Pods cannot read",
            ImageRef::Registry(r) if r.tag.is_some() || r.digest.is_some() => {
                "kpackd names each source image itself: no tag or digest here"
            }
            ImageRef::Registry(_) => return Some(reference),
        };
        self.report(
            Problem::new(format!("invalid `source-repository` `{}`", value.get_ref()))
                .label(value.span(), why)
                .help("name a registry repository, such as `registry.example/kpackd/sources`"),
        );
        None
    }

    fn resources(&mut self, table: &ResourcesTable) -> Option<Resources> {
        let mut values = BTreeMap::new();
        let mut fine = true;
        for (kind, entries) in [("requests", &table.requests), ("limits", &table.limits)] {
            for (name, quantity) in entries {
                let name_ok = self.resource_name(name);
                match self.quantity(kind, name, quantity) {
                    Some(value) if name_ok => {
                        values.insert((kind, name.get_ref().clone()), (value, quantity.span()));
                    }
                    _ => fine = false,
                }
            }
        }
        for ((kind, name), (request, span)) in &values {
            let limit = values.get(&("limits", name.clone()));
            if let (true, Some((limit, limit_span))) = (*kind == "requests", limit) {
                if request > limit {
                    fine = false;
                    self.report(
                        Problem::new(format!("the `{name}` request is above its limit"))
                            .label(span.clone(), "requested here")
                            .label(limit_span.clone(), "the limit")
                            .help("a request must be at most the limit: lower the request or raise the limit"),
                    );
                }
            }
        }
        let written = |entries: &BTreeMap<Spanned<String>, Spanned<Quantity>>| {
            entries
                .iter()
                .map(|(name, quantity)| (name.get_ref().clone(), quantity.get_ref().0.clone()))
                .collect()
        };
        fine.then(|| Resources {
            requests: written(&table.requests),
            limits: written(&table.limits),
        })
    }

    fn resource_name(&mut self, name: &Spanned<String>) -> bool {
        let n = name.get_ref();
        let why = match names::qualified_name(n) {
            Err(why) => why,
            Ok(()) if n.contains('/') => return true,
            Ok(()) if STANDARD_RESOURCES.contains(&n.as_str()) || n.starts_with("hugepages-") => {
                return true;
            }
            Ok(()) => match did_you_mean(n, STANDARD_RESOURCES) {
                Some(guess) => format!("did you mean `{guess}`?"),
                None => "not a resource a container can ask for".to_string(),
            },
        };
        self.report(
            Problem::new(format!("unknown resource `{n}`"))
                .label(name.span(), why)
                .help("a container asks for `cpu`, `memory`, `ephemeral-storage`, `hugepages-<size>`, or an extended resource named with its domain, such as `nvidia.com/gpu`"),
        );
        false
    }

    /// The value of a request or limit in billionths, when it is a quantity above 0.
    fn quantity(
        &mut self,
        kind: &str,
        name: &Spanned<String>,
        quantity: &Spanned<Quantity>,
    ) -> Option<i128> {
        let text = &quantity.get_ref().0;
        let why = match quantity::parse(text) {
            Ok(value) if value >= 0 => return Some(value),
            Ok(_) => "a resource cannot be negative".to_string(),
            Err(why) => why,
        };
        let help = match text.strip_suffix(['B', 'b']) {
            Some(number) if quantity::parse(number).is_ok() => format!(
                "quantities have no `B`: write `{number}i` (powers of 1024) or `{number}` (powers of 1000)"
            ),
            _ => "write a number with an optional suffix, such as `500m`, `1.5`, `512Mi`, `2Gi` or `1e3`"
                .to_string(),
        };
        self.report(
            Problem::new(format!(
                "invalid quantity `{text}` for `{kind}.{}`",
                name.get_ref()
            ))
            .label(quantity.span(), why)
            .help(help),
        );
        None
    }

    fn node_selector(
        &mut self,
        selector: &BTreeMap<Spanned<String>, Spanned<String>>,
    ) -> Option<BTreeMap<String, String>> {
        let mut fine = true;
        for (key, value) in selector {
            if let Err(why) = names::qualified_name(key.get_ref()) {
                fine = false;
                self.report(
                    Problem::new(format!("invalid node label `{}`", key.get_ref()))
                        .label(key.span(), why)
                        .help("a label key is `[prefix/]name`, such as `kubernetes.io/arch` or `disktype`"),
                );
            }
            if let Err(why) = names::label_value(value.get_ref()) {
                fine = false;
                self.report(
                    Problem::new(format!(
                        "invalid value `{}` for node label `{}`",
                        value.get_ref(),
                        key.get_ref()
                    ))
                    .label(value.span(), why)
                    .help("a label value is at most 63 letters, digits, `-`, `_` and `.`, such as `amd64`"),
                );
            }
        }
        fine.then(|| {
            selector
                .iter()
                .map(|(k, v)| (k.get_ref().clone(), v.get_ref().clone()))
                .collect()
        })
    }

    /// One toleration, checked as the API server checks it.
    fn toleration(&mut self, toleration: &Spanned<TolerationTable>) -> Option<Toleration> {
        let t = toleration.get_ref();
        let operator = t.operator.as_ref().map(|o| *o.get_ref());
        let key = t.key.as_ref().filter(|k| !k.get_ref().is_empty());
        let value = t.value.as_ref().filter(|v| !v.get_ref().is_empty());
        let mut problems = Vec::new();
        if let Some(key) = key {
            if let Err(why) = names::qualified_name(key.get_ref()) {
                problems.push(
                    Problem::new(format!("invalid toleration key `{}`", key.get_ref()))
                        .label(key.span(), why)
                        .help("a taint key is `[prefix/]name`, such as `builds` or `example.com/dedicated`"),
                );
            }
        } else if operator != Some(TolerationOperator::Exists) {
            problems.push(
                Problem::new("a toleration without a `key` must have `operator = \"Exists\"`")
                    .label(toleration.span(), "no `key`")
                    .help("add `operator = \"Exists\"` to tolerate every taint, or name the taint's `key`"),
            );
        }
        match (operator, value) {
            (Some(TolerationOperator::Exists), Some(value)) => problems.push(
                Problem::new("a toleration with `operator = \"Exists\"` has a `value`")
                    .label(value.span(), "`Exists` matches any value")
                    .help("remove `value`, or use `operator = \"Equal\"`"),
            ),
            (_, Some(value)) => {
                if let Err(why) = names::label_value(value.get_ref()) {
                    problems.push(
                        Problem::new(format!("invalid toleration value `{}`", value.get_ref()))
                            .label(value.span(), why)
                            .help("a taint value is at most 63 letters, digits, `-`, `_` and `.`"),
                    );
                }
            }
            _ => {}
        }
        if let Some(seconds) = &t.toleration_seconds {
            if t.effect.map(|e| e.as_str()) != Some("NoExecute") {
                problems.push(
                    Problem::new("`toleration-seconds` needs `effect = \"NoExecute\"`")
                        .label(
                            seconds.span(),
                            "only a NoExecute taint evicts a running Pod",
                        )
                        .help("add `effect = \"NoExecute\"`, or remove `toleration-seconds`"),
                );
            }
        }
        let fine = problems.is_empty();
        for problem in problems {
            self.report(problem);
        }
        fine.then(|| Toleration {
            key: t.key.as_ref().map(|k| k.get_ref().clone()),
            operator: operator.map(|o| o.as_str().to_string()),
            value: t.value.as_ref().map(|v| v.get_ref().clone()),
            effect: t.effect.map(|e| e.as_str().to_string()),
            toleration_seconds: t.toleration_seconds.as_ref().map(|s| *s.get_ref()),
        })
    }

    /// With the Kubernetes executor, a Pod runs the build entrypoint of the image's
    /// builder image, pulled from a registry: every builder images use must be one
    /// kpackd publishes to a registry. Reported once per builder.
    fn published_builders(
        &mut self,
        builders: &BTreeMap<String, Builder>,
        images: &BTreeMap<String, Image>,
        executor: &Span,
    ) {
        let used: BTreeSet<&str> = images.values().map(|i| i.builder.as_str()).collect();
        for builder in used.into_iter().filter_map(|name| builders.get(name)) {
            let first_image = images
                .values()
                .find(|i| i.builder == builder.name)
                .map(|i| i.spans.builder.clone());
            let (message, label, help) = match (&builder.kind, &builder.tag) {
                (BuilderKind::Image(_), _) => (
                    format!("builder `{}` is a ready-made builder image, which build Pods cannot run", builder.name),
                    "a ready-made builder image has no kpackd build entrypoint",
                    "with `executor = \"kubernetes\"`, assemble the builder from `stack`, `store` and `order` and publish it with `tag`".to_string(),
                ),
                (BuilderKind::Assembled { .. }, None) => (
                    format!("builder `{}` has no `tag`", builder.name),
                    "not published: there is no builder image for a Pod to run",
                    format!("add `tag = \"<registry>/<repository>\"` to `[builders.{}]`: build Pods run the published builder image", builder.name),
                ),
                (BuilderKind::Assembled { .. }, Some(ImageRef::Layout(_))) => (
                    format!("builder `{}` is published to an OCI layout", builder.name),
                    "published on this machine, where the cluster cannot pull it",
                    format!("publish `[builders.{}]` to a registry the cluster pulls from", builder.name),
                ),
                (BuilderKind::Assembled { .. }, Some(ImageRef::Registry(_))) => continue,
            };
            let mut problem = Problem::new(message).label(builder.span.clone(), label);
            if let Some(used_at) = first_image {
                problem = problem.label(used_at, "used by this image");
            }
            self.report(
                problem
                    .label(executor.clone(), "builds run in Pods")
                    .help(help),
            );
        }
    }

    /// What a Pod reads and writes for `image` is reachable from the cluster.
    fn buildable_in_a_pod(&mut self, image: &Image, has_source_repository: bool, executor: &Span) {
        if matches!(image.source, Source::Path { .. }) && !has_source_repository {
            self.report(
                Problem::new(format!(
                    "image `{}` has a path source, and `[kubernetes]` no `source-repository`",
                    image.name
                ))
                .label(image.spans.source.clone(), "a directory on this machine")
                .label(executor.clone(), "builds run in Pods")
                .help("add `source-repository = \"<registry>/<repository>\"` to `[kubernetes]`: kpackd pushes the directory there as a source image for the Pod to read"),
            );
        }
        let local = |r: &ImageRef| matches!(r, ImageRef::Layout(_));
        let source_image = match &image.source {
            Source::Image { reference, .. } => Some(reference),
            _ => None,
        };
        let cache_image = match &image.cache {
            Cache::Image(reference) => Some(reference),
            _ => None,
        };
        let layouts = [
            ("tag", image.tags().any(local), image.spans.tag.clone()),
            (
                "source image",
                source_image.is_some_and(local),
                image.spans.source.clone(),
            ),
            (
                "cache image",
                cache_image.is_some_and(local),
                image.spans.name.clone(),
            ),
        ];
        for (what, is_layout, span) in layouts {
            if is_layout {
                self.report(
                    Problem::new(format!(
                        "image `{}` has an OCI layout as its {what}, which build Pods cannot reach",
                        image.name
                    ))
                    .label(span, "an OCI layout on this machine")
                    .label(executor.clone(), "builds run in Pods")
                    .help("with `executor = \"kubernetes\"`, images, sources and caches are in registries the cluster reaches"),
                );
            }
        }
    }
}

/// A warning: the Kubernetes settings in `what` do nothing with the local executor.
fn unused(what: &str, span: Span) -> Problem {
    Problem::new(format!("{what} is ignored: builds run locally"))
        .label(span, "used only with `executor = \"kubernetes\"`")
        .help("set `executor = \"kubernetes\"` under `[kpackd]` to build in Pods, or remove the table")
        .warning()
}
