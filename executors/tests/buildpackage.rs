//! A buildpackage image is untrusted: the id and version its
//! `io.buildpacks.buildpack.layers` label gives become a directory path, so a crafted
//! label must be refused, naming the image, the label and the value, before anything is
//! extracted or bound into a sandbox.

mod oci_support;

use std::path::Path;

use cnb::labels::{BuildpackLayers, BUILDPACK_LAYERS};
use executors::lifecycle::buildpackage::{materialise, BuildpackageError};
use executors::lifecycle::DiscardLogs;
use executors::oci::layer::LayerBuilder;
use imageref::Platform;
use oci_support::{config, parse, store, tree};

#[tokio::test]
async fn a_version_that_leaves_the_buildpack_directory_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let bp = work.path().join("bp");
    tree(
        &bp,
        &[(
            "buildpack.toml",
            "api = \"0.10\"\n[buildpack]\nid = \"tests/bp\"\nversion = \"0.1.0\"\n",
        )],
    );
    let layer = LayerBuilder::new(0, 0)
        .add(Path::new("cnb/buildpacks/tests_bp/0.1.0"), &bp)
        .unwrap()
        .write(work.path())
        .unwrap();
    let label = serde_json::json!({
        "tests/bp": {"../../dir": {"api": "0.10", "layerDiffID": layer.diff_id.to_string()}}
    })
    .to_string();
    let image = parse(&format!("oci:{}:bp", work.path().join("layout").display()));
    let store = store();
    let pinned = store
        .push_image(
            &image,
            config(&Platform::linux_amd64(), &[(BUILDPACK_LAYERS, &label)]),
            std::slice::from_ref(&layer),
        )
        .await
        .unwrap();

    // Reading the label refuses the version.
    let found = store.image(&pinned).await.unwrap();
    let err = cnb::labels::read::<BuildpackLayers>(&found.config.labels(), BUILDPACK_LAYERS)
        .unwrap_err()
        .to_string();
    assert!(err.contains(BUILDPACK_LAYERS), "{err}");
    assert!(err.contains("`../../dir`"), "{err}");

    // So does materialising the buildpack with the label's values, before extracting.
    let state = work.path().join("state");
    let err = materialise(
        &store,
        &pinned,
        "tests/bp",
        "../../dir",
        &layer.diff_id,
        &state,
        &DiscardLogs,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BuildpackageError::Name { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&pinned.to_string()), "{text}");
    assert!(text.contains(BUILDPACK_LAYERS), "{text}");
    assert!(text.contains("`../../dir`"), "{text}");
    assert!(!state.exists(), "nothing may be extracted");
}
