//! The Kubernetes settings of kpack.toml: `[kpackd] executor`, `[kubernetes]` and
//! `[images.<name>.kubernetes]` load into the model (their mistakes are among the
//! invalid fixtures), an image's placement replaces the defaults field by field, and
//! settings the local executor ignores are warned about.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use miette::{GraphicalReportHandler, GraphicalTheme};
use planner::{Config, Executor, PodPlacement, Resources, Toleration};

fn fixtures() -> PathBuf {
    testkit::fixtures::valid()
}

fn load(name: &str) -> Config {
    match planner::load(&Path::new("tests/fixtures/valid").join(name)) {
        Ok(config) => config,
        Err(e) => panic!("{name} should be valid: {:?}", miette::Report::new(e)),
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn every_kubernetes_key_loads() {
    let config = load("kubernetes.toml");
    assert_eq!(config.settings.executor, Executor::Kubernetes);
    let k = config.kubernetes.as_ref().expect("[kubernetes] is written");
    assert_eq!(k.namespace, "builds");
    assert_eq!(k.context.as_deref(), Some("prod"));
    assert_eq!(k.service_account.as_deref(), Some("kpackd-build"));
    assert_eq!(k.image_pull_secrets, ["regcred"]);
    assert_eq!(
        k.source_repository.as_ref().map(ToString::to_string),
        Some("registry.example.com/kpackd/sources".to_string())
    );
    assert_eq!(k.max_pods, 8);
    assert_eq!(
        k.pod.resources,
        Some(Resources {
            requests: map(&[("cpu", "1"), ("memory", "2Gi")]),
            limits: map(&[("memory", "4Gi")]),
        })
    );
    assert_eq!(
        k.pod.node_selector,
        Some(map(&[("kubernetes.io/arch", "amd64")]))
    );
    assert_eq!(
        k.pod.tolerations,
        Some(vec![
            Toleration {
                key: Some("builds".into()),
                operator: Some("Equal".into()),
                value: Some("true".into()),
                effect: Some("NoSchedule".into()),
                toleration_seconds: None,
            },
            Toleration {
                key: None,
                operator: Some("Exists".into()),
                value: None,
                effect: Some("NoExecute".into()),
                toleration_seconds: Some(300),
            },
        ])
    );
    assert!(config.warnings().is_none());
    assert_eq!(config.images["hello"].kubernetes, PodPlacement::default());
    assert_eq!(
        config.images["web"].kubernetes,
        PodPlacement {
            // A number is kept as the quantity it writes.
            resources: Some(Resources {
                requests: BTreeMap::new(),
                limits: map(&[("cpu", "2.5"), ("memory", "8Gi")]),
            }),
            node_selector: Some(BTreeMap::new()),
            tolerations: None,
        }
    );
}

#[test]
fn an_images_placement_replaces_the_defaults_field_by_field() {
    let config = load("kubernetes.toml");
    let k = config.kubernetes.as_ref().expect("[kubernetes] is written");
    assert_eq!(k.placement_for(&config.images["hello"].kubernetes), k.pod);
    let web = k.placement_for(&config.images["web"].kubernetes);
    // `resources` is replaced whole: the default requests do not carry over.
    assert_eq!(web.resources, config.images["web"].kubernetes.resources);
    // An empty node selector replaces the default one: any node will do.
    assert_eq!(web.node_selector, Some(BTreeMap::new()));
    assert_eq!(web.tolerations, k.pod.tolerations);
}

#[test]
fn without_kubernetes_keys_nothing_changes() {
    let config = load("minimal.toml");
    assert_eq!(config.settings.executor, Executor::Local);
    assert!(config.kubernetes.is_none());
    assert!(config.warnings().is_none());
    assert_eq!(config.images["hello"].kubernetes, PodPlacement::default());
    // Where a build runs is not part of what it makes.
    let full = load("kubernetes.toml");
    let mut without = full.images["web"].clone();
    without.kubernetes = PodPlacement::default();
    assert_eq!(full.images["web"].config(), without.config());
}

#[test]
fn the_kubernetes_executor_alone_takes_the_defaults() {
    let text = "[kpackd]\nexecutor = \"kubernetes\"\n";
    let config = planner::parse(&fixtures().join("kpack.toml"), text).expect("valid");
    let k = config.kubernetes.expect("the defaults");
    assert_eq!(k.namespace, planner::DEFAULT_NAMESPACE);
    assert_eq!(k.max_pods, planner::DEFAULT_MAX_PODS);
    assert_eq!(k.context, None);
    assert_eq!(k.source_repository, None);
    assert_eq!(k.pod, PodPlacement::default());
}

#[test]
fn kubernetes_settings_without_the_kubernetes_executor_are_warned_about() {
    let text = r#"[kpackd]
concurrency = 2

[kubernetes]
namespace = "builds"

[stacks.base]
build-image = "registry.example.com/stacks/base-build"
run-image = "registry.example.com/stacks/base-run"

[builders.default]
builder = "registry.example.com/builders/default"

[images.hello]
tag = "registry.example.com/apps/hello"
builder = "default"
source = { git = "https://git.example.com/hello.git" }

[images.hello.kubernetes]
resources = { limits = { memory = "4Gi" } }
"#;
    let config = planner::parse(Path::new("kpack.toml"), text).expect("warnings only");
    assert_eq!(config.settings.executor, Executor::Local);
    // Validated and kept, though unused.
    assert_eq!(
        config.kubernetes.as_ref().map(|k| k.namespace.as_str()),
        Some("builds")
    );
    let warnings = config.warnings().expect("two warnings");
    assert_eq!(warnings.warnings().len(), 2);
    assert!(warnings.warnings().iter().all(planner::Problem::is_warning));
    let mut rendered = String::new();
    GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .render_report(&mut rendered, &warnings)
        .expect("rendering to a String");
    insta::assert_snapshot!(rendered);
}
