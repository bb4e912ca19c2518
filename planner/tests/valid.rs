//! Valid configurations load into the model the engine works from: references parsed,
//! paths resolved against the file's directory, defaults applied.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use imageref::{ImageRef, LayerCompression};
use planner::{BuilderKind, BuildpackSource, Cache, Config, Graph, Reason, Source};

fn fixtures() -> PathBuf {
    testkit::fixtures::valid()
}

fn load(name: &str) -> Config {
    let path = Path::new("tests/fixtures/valid").join(name);
    match planner::load(&path) {
        Ok(config) => config,
        Err(e) => panic!("{name} should be valid: {:?}", miette::Report::new(e)),
    }
}

#[test]
fn minimal_gets_defaults() {
    let config = load("minimal.toml");
    let s = &config.settings;
    assert_eq!(s.state_dir, fixtures().join(".kpackd"));
    assert_eq!(s.concurrency.get(), 2);
    assert_eq!(s.poll_interval, Duration::from_secs(60));
    assert_eq!(s.platform, imageref::Platform::host());
    assert!(s.insecure_registries.is_empty());

    let image = &config.images["hello"];
    assert_eq!(
        image.tag,
        ImageRef::parse(&format!("oci:{}/out/images:hello", fixtures().display())).unwrap()
    );
    assert_eq!(image.cache, Cache::Dir);
    assert_eq!(image.history.success.get(), 10);
    assert_eq!(image.history.failed.get(), 10);
    assert!(image.network);
    assert_eq!(image.rebuild_on, Reason::ALL.into_iter().collect());
    assert_eq!(
        image.source,
        Source::Path {
            path: fixtures().join("apps/hello"),
            written: "apps/hello".into(),
            sub_path: None
        }
    );
    let builder = config.builder_of(image);
    let store = config.store_of(builder).expect("an assembled builder");
    assert_eq!(
        store.resolve("fixture/app", None).map(|bp| bp.id_version()),
        Some("fixture/app@1.0.0".to_string())
    );
    assert_eq!(
        config.stack_of(builder).map(|s| s.name.as_str()),
        Some("base")
    );
}

#[test]
fn full_keeps_every_key() {
    let config = load("full.toml");
    let s = &config.settings;
    assert_eq!(s.state_dir, fixtures().join("state"));
    assert_eq!(s.concurrency.get(), 4);
    assert_eq!(s.poll_interval, Duration::from_secs(5400));
    assert_eq!(s.insecure_registries, ["registry.internal:5000"]);
    assert_eq!(s.platform.to_string(), "linux/arm64/v8");

    let bookworm = &config.stacks["bookworm"];
    assert!(bookworm.run_image.digest().is_some());
    assert_eq!(bookworm.run_image_mirrors.len(), 1);
    assert_eq!(bookworm.id.as_deref(), Some("io.kpackd.stacks.bookworm"));
    assert_eq!(config.stacks["local"].id, None);

    let fixtures_store = &config.stores["fixtures"];
    assert_eq!(
        fixtures_store
            .resolve("fixture/runtime", None)
            .map(|bp| bp.version.as_str()),
        Some("0.2.0"),
        "without a version, the highest"
    );
    assert_eq!(
        fixtures_store
            .resolve("fixture/runtime", Some("0.1.0"))
            .map(|bp| bp.version.as_str()),
        Some("0.1.0")
    );
    let meta = fixtures_store
        .resolve("fixture/meta", None)
        .expect("the composite");
    assert_eq!(meta.order[0].buildpacks.len(), 2);
    assert!(matches!(
        config.stores["mixed"].buildpacks[1].source,
        BuildpackSource::Image(_)
    ));

    let default = &config.builders["default"];
    assert!(default.tag.is_some());
    assert!(default.publishes());
    assert!(default.lifecycle.is_none());
    let BuilderKind::Assembled { order, .. } = &default.kind else {
        panic!("default is assembled");
    };
    assert!(order[1].buildpacks[1].optional);
    assert!(matches!(
        config.builders["paketo"].kind,
        BuilderKind::Image(_)
    ));

    let hello = &config.images["hello"];
    assert_eq!(hello.additional_tags.len(), 1);
    assert_eq!(
        hello.source,
        Source::Git {
            url: "https://github.com/example/hello.git".into(),
            revision: "main".into(),
            sub_path: Some("app".into())
        }
    );
    assert_eq!(hello.env["BP_GZIP_LEVEL"], "9");
    assert_eq!(hello.default_process.as_deref(), Some("web"));
    assert_eq!(
        (hello.history.success.get(), hello.history.failed.get()),
        (5, 2)
    );
    assert!(!hello.network);

    let site = &config.images["site"];
    assert!(matches!(site.cache, Cache::Image(_)));
    assert_eq!(site.rebuild_on, BTreeSet::from([Reason::Commit]));

    let archive = &config.images["archive"];
    assert_eq!(archive.cache, Cache::Disabled);
    assert_eq!(
        (archive.history.success.get(), archive.history.failed.get()),
        (10, 1)
    );
    assert!(matches!(
        archive.source,
        Source::Blob {
            strip_components: 1,
            ..
        }
    ));
}

#[test]
fn image_config_hash_follows_the_config_reason() {
    let config = load("full.toml");
    let hello = &config.images["hello"];
    let digest = hello.config().digest();
    assert!(digest.starts_with("sha256:") && digest.len() == 71);
    assert_eq!(digest, load("full.toml").images["hello"].config().digest());

    let mut changed = hello.clone();
    changed.env.insert("NEW".into(), "1".into());
    assert_ne!(changed.config().digest(), digest, "env is part of it");
    let mut changed = hello.clone();
    changed.builder = "paketo".into();
    assert_ne!(
        changed.config().digest(),
        digest,
        "the builder is part of it"
    );
    let mut unchanged = hello.clone();
    unchanged.history.success = unchanged.history.failed;
    unchanged.rebuild_on.clear();
    assert_eq!(
        unchanged.config().digest(),
        digest,
        "history and rebuild-on are not"
    );
}

#[test]
fn graph_orders_the_fleet() {
    let config = load("full.toml");
    let graph = Graph::build(&config);
    let order: Vec<String> = graph
        .topological_order()
        .expect("no cycle")
        .iter()
        .map(|n| n.to_string())
        .collect();
    let position = |name: &str| order.iter().position(|n| n == name).expect(name);
    assert!(position("stack `bookworm`") < position("builder `default`"));
    assert!(position("store `mixed`") < position("builder `node`"));
    assert!(position("builder `default`") < position("image `hello`"));
    let dot = graph.to_dot();
    assert!(
        dot.contains("\"builder:paketo\" -> \"image:archive\";"),
        "{dot}"
    );
    assert!(
        dot.contains(
            "\"source:https://github.com/example/hello.git#main//app\" -> \"image:hello\";"
        ),
        "{dot}"
    );
}

#[test]
fn layer_compression_is_gzip_by_default_and_zstd_is_a_config_change() {
    let full = std::fs::read_to_string(fixtures().join("full.toml")).unwrap();
    let zstd = full.replacen(
        "network = false",
        "network = false\nlayer-compression = \"zstd\"",
        1,
    );
    assert_ne!(zstd, full, "the fixture has `network = false` in an image");
    // The fixture's relative paths resolve against its directory: write it next to it.
    let path = fixtures().join(format!(".layer-compression-{}.toml", std::process::id()));
    std::fs::write(&path, &zstd).unwrap();
    let loaded = planner::load(&path);
    std::fs::remove_file(&path).unwrap();
    let zstd_config = loaded.unwrap_or_else(|e| panic!("{:?}", miette::Report::new(e)));

    let gzip_config = load("full.toml");
    let gzip = &gzip_config.images["hello"];
    assert_eq!(gzip.layer_compression, LayerCompression::Gzip);
    let json = serde_json::to_string(&gzip.config()).unwrap();
    assert!(
        !json.contains("layer-compression"),
        "gzip leaves the configuration (and its hash) as it was: {json}"
    );
    let zstd = &zstd_config.images["hello"];
    assert_eq!(zstd.layer_compression, LayerCompression::Zstd);
    assert_ne!(zstd.config().digest(), gzip.config().digest());
}

#[test]
fn a_published_builder_may_name_a_lifecycle_image() {
    let path = fixtures().join("full.toml");
    let full = std::fs::read_to_string(&path).unwrap();
    let text = full.replacen(
        "tag = \"registry.example.com/builders/default\"",
        "tag = \"registry.example.com/builders/default\"\nlifecycle = { image = \"registry.example.com/buildpacks/lifecycle:0.20\" }",
        1,
    );
    assert_ne!(text, full, "the fixture publishes builder `default`");
    let config = planner::parse(&path, &text).expect("valid");
    let default = &config.builders["default"];
    assert!(default.publishes());
    assert_eq!(
        default
            .lifecycle
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("registry.example.com/buildpacks/lifecycle:0.20")
    );
    assert!(config.builders["node"].lifecycle.is_none());
    assert!(!config.builders["node"].publishes());
}
