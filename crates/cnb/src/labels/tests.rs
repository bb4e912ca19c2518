use super::*;

/// A label as export writes it: field order and skipped fields are part of the image
/// digest.
const EXPORTED: &str = r#"{"app":[{"sha":"sha256:a1"}],"buildpacks":[{"key":"example/node","version":"1.0.0","layers":{"deps":{"sha":"sha256:d1","data":{"k":"v"},"build":false,"launch":true,"cache":true}},"store":{"metadata":{"s":1}}}],"config":{"sha":"sha256:c1"},"launcher":{"sha":"sha256:l1"},"process-types":{"sha":"sha256:p1"},"runImage":{"topLayer":"sha256:t1","reference":"reg/run@sha256:r1","image":"reg/run:1"}}"#;

fn sample() -> LayersMetadata {
    LayersMetadata {
        app: vec![Sha {
            sha: "sha256:a1".into(),
        }],
        sbom: None,
        buildpacks: vec![BuildpackLayersMetadata {
            key: BuildpackId::parse("example/node").unwrap(),
            version: "1.0.0".into(),
            layers: BTreeMap::from([(
                LayerName::parse("deps").unwrap(),
                LayerMetadata {
                    sha: "sha256:d1".into(),
                    data: serde_json::json!({"k": "v"}),
                    build: false,
                    launch: true,
                    cache: true,
                },
            )]),
            store: Some(StoreMetadata {
                metadata: Map::from_iter([("s".to_string(), Value::from(1))]),
            }),
        }],
        config: Sha {
            sha: "sha256:c1".into(),
        },
        launcher: Sha {
            sha: "sha256:l1".into(),
        },
        process_types: Sha {
            sha: "sha256:p1".into(),
        },
        run_image: RunImageMetadata {
            top_layer: "sha256:t1".into(),
            reference: "reg/run@sha256:r1".into(),
            image: "reg/run:1".into(),
            mirrors: Vec::new(),
        },
        stack: None,
        extra: Map::new(),
    }
}

#[test]
fn lifecycle_metadata_serialises_as_export_writes_it() {
    assert_eq!(serde_json::to_string(&sample()).unwrap(), EXPORTED);
    let back: LayersMetadata = parse(LIFECYCLE_METADATA, EXPORTED).unwrap();
    assert_eq!(back, sample());
}

#[test]
fn unknown_fields_round_trip_unchanged() {
    let text = format!(
        "{},\"bom\":null,\"zz-other-tool\":{{\"x\":[1,2]}}}}",
        &EXPORTED[..EXPORTED.len() - 1]
    );
    let parsed: LayersMetadata = parse(LIFECYCLE_METADATA, &text).unwrap();
    assert_eq!(parsed.extra.len(), 2);
    assert_eq!(serde_json::to_string(&parsed).unwrap(), text);
}

#[test]
fn lifecycle_metadata_refuses_names_that_leave_their_directory() {
    for (key, layer) in [
        ("example/node", "../x"),
        ("example/node", ".."),
        ("example/node", "a/b"),
        ("example/node", ""),
        ("../x", "deps"),
        ("example/../x", "deps"),
        ("sbom", "deps"),
    ] {
        let text = serde_json::json!({
            "buildpacks": [{"key": key, "version": "1.0.0",
                            "layers": {layer: {"sha": "sha256:d1", "launch": true}}}]
        })
        .to_string();
        let err = parse::<LayersMetadata>(LIFECYCLE_METADATA, &text).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(LIFECYCLE_METADATA),
            "{key:?} {layer:?}: {message}"
        );
        assert!(
            message.contains("invalid layer name") || message.contains("invalid buildpack id"),
            "{key:?} {layer:?}: {message}"
        );
    }
    let back: LayersMetadata = parse(LIFECYCLE_METADATA, EXPORTED).unwrap();
    assert_eq!(
        back.buildpack("example/node").unwrap().layers["deps"].sha,
        "sha256:d1"
    );
}

#[test]
fn buildpack_layers_validate_names() {
    let good = r#"{"example/node":{"1.0.0":{"layerDiffID":"sha256:aa","api":"0.10"}}}"#;
    let layers: BuildpackLayers = parse(BUILDPACK_LAYERS, good).unwrap();
    let (id, versions) = layers.iter().next().unwrap();
    assert_eq!(id.dir_name(), "example_node");
    assert_eq!(versions.values().next().unwrap().layer_diff_id, "sha256:aa");

    let bad = r#"{"example/node":{"../../dir":{"layerDiffID":"sha256:aa"}}}"#;
    let err = parse::<BuildpackLayers>(BUILDPACK_LAYERS, bad).unwrap_err();
    let text = err.to_string();
    assert!(text.contains(BUILDPACK_LAYERS), "{text}");
    assert!(text.contains("`../../dir`"), "{text}");
    let bad_id = r#"{"../x":{"1.0.0":{"layerDiffID":"sha256:aa"}}}"#;
    assert!(parse::<BuildpackLayers>(BUILDPACK_LAYERS, bad_id).is_err());
}

#[test]
fn builder_run_image() {
    let m: BuilderMetadata = parse(
        BUILDER_METADATA,
        r#"{"images":[{"image":"reg/run:1"}],"stack":{"runImage":{"image":"reg/old"}}}"#,
    )
    .unwrap();
    assert_eq!(m.run_image(), Some("reg/run:1"));
    let m: BuilderMetadata = parse(
        BUILDER_METADATA,
        r#"{"stack":{"runImage":{"image":"reg/old"}},"description":"d"}"#,
    )
    .unwrap();
    assert_eq!(m.run_image(), Some("reg/old"));
    let m: BuilderMetadata = parse(BUILDER_METADATA, "{}").unwrap();
    assert_eq!(m.run_image(), None);
}

#[test]
fn stack_id_prefers_the_base_id() {
    let labels = BTreeMap::from([
        (STACK_ID.to_string(), "legacy".to_string()),
        (BASE_ID.to_string(), "base".to_string()),
    ]);
    assert_eq!(stack_id(&labels).map(String::as_str), Some("base"));
}

#[test]
fn builder_metadata_as_pack_writes_it() {
    // Go writes empty lists as `null`.
    let text = r#"{"description":"d","buildpacks":[{"id":"a/b","version":"1","homepage":"h"}],"stack":{"runImage":{"image":"reg/run","mirrors":null}},"images":null,"lifecycle":{"version":"0.20.1","api":{"buildpack":"0.7","platform":"0.12"},"apis":{"buildpack":{"deprecated":null,"supported":["0.7","0.12"]},"platform":{"deprecated":[],"supported":["0.12"]}}},"createdBy":{"name":"Pack CLI","version":"0.36"}}"#;
    let m: BuilderMetadata = parse(BUILDER_METADATA, text).unwrap();
    assert_eq!(m.description, "d");
    assert_eq!(m.buildpacks[0].homepage.as_deref(), Some("h"));
    assert_eq!(m.run_image(), Some("reg/run"));
    let lifecycle = m.lifecycle.as_ref().unwrap();
    assert_eq!(lifecycle.version, "0.20.1");
    let apis = lifecycle.apis.as_ref().unwrap();
    assert!(apis.buildpack.deprecated.is_empty());
    assert_eq!(apis.platform.supported, ["0.12"]);
    assert_eq!(m.created_by.as_ref().unwrap().name, "Pack CLI");
    assert!(m.extra.is_empty());
    let again: BuilderMetadata =
        parse(BUILDER_METADATA, &serde_json::to_string(&m).unwrap()).unwrap();
    assert_eq!(again, m);
}

#[test]
fn buildpack_layer_info_reads_what_pack_writes() {
    let text = r#"{"a/meta":{"1.0.0":{"api":"0.10","order":[{"group":[{"id":"a/x","version":"1"}]}],"layerDiffID":"sha256:aa","homepage":"h","name":"Meta","zz":1}},"a/x":{"1":{"api":"0.10","stacks":[{"id":"s","mixins":["m"]}],"targets":[{"os":"linux","arch":"amd64","distros":[{"name":"ubuntu","version":"22.04"}]}],"layerDiffID":"sha256:bb"}}}"#;
    let layers: BuildpackLayers = parse(BUILDPACK_LAYERS, text).unwrap();
    let meta = &layers["a/meta"]["1.0.0"];
    assert_eq!(meta.order[0].group[0].id, "a/x");
    assert_eq!(meta.name.as_deref(), Some("Meta"));
    assert_eq!(meta.extra["zz"], 1);
    let x = &layers["a/x"]["1"];
    assert_eq!(x.stacks[0].mixins, ["m"]);
    assert_eq!(x.targets[0].distros[0].version, "22.04");
    let again: BuildpackLayers =
        parse(BUILDPACK_LAYERS, &serde_json::to_string(&layers).unwrap()).unwrap();
    assert_eq!(again, layers);
}
