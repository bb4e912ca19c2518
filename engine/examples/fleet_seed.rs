//! Sets up a fleet for `bench/fleet-rebase`: N images on one stack in a registry, each
//! recorded in kpackd's state as built, as `kpackd apply` would have left them, so
//! that patching the run image makes the next plan a rebase of every image.
//!
//! Building a thousand images through buildpacks would measure builds, not rebases;
//! the images are assembled here instead, exactly as a build exports them where a
//! rebase looks: the run image's layers, then a small app layer of their own, a config
//! with the lifecycle metadata naming the run image and its top layer, pushed under
//! the image's tag, and recorded as that image's succeeded build with the plan's
//! inputs.
//!
//!   fleet_seed seed  DIR REGISTRY N [GIT REPOS]  # kpack.toml, run image v1, N images, the state
//!   fleet_seed patch DIR REGISTRY VERSION        # run image VERSION: the top layer replaced
//!
//! REGISTRY is `host:port[/namespace]`: every repository goes under it. Sources are
//! directories, one per image; with GIT (a URL prefix) and REPOS, image `i` builds
//! `GIT/repo<r>.git` (branch `main`), `r` going round 1..=REPOS (`bench/watch`).

use std::path::Path;
use std::sync::Arc;

use engine::layout::StateLayout;
use engine::planning::make_plan;
use engine::state::{BuildStatus, NewBuild, Outcome, State};
use executors::oci::layer::{LayerBuilder, WrittenLayer};
use executors::oci::{ContainerConfig, CredentialSource, ImageConfig, ImageStore, StoreSettings};
use futures::{StreamExt, TryStreamExt};
use imageref::ImageRef;
use planner::plan::Action;

type Error = Box<dyn std::error::Error + Send + Sync>;

const STACK: &str = "io.kpackd.bench.fleet";
const LIFECYCLE_LABEL: &str = "io.buildpacks.lifecycle.metadata";
/// Images assembled and pushed at once.
const PARALLEL: usize = 32;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["seed", dir, registry, n] => {
            runtime.block_on(seed(Path::new(dir), registry, n.parse()?, None))
        }
        ["seed", dir, registry, n, git, repos] => runtime.block_on(seed(
            Path::new(dir),
            registry,
            n.parse()?,
            Some((git, repos.parse()?)),
        )),
        ["patch", dir, registry, version] => runtime.block_on(async {
            let store = store();
            let layers = Path::new(dir).join("layers");
            let (pinned, _) = push_run_image(&store, registry, &layers, version.parse()?).await?;
            println!("{pinned}");
            Ok(())
        }),
        _ => Err(
            "usage: fleet_seed seed DIR REGISTRY N | fleet_seed patch DIR REGISTRY VERSION".into(),
        ),
    }
}

fn store() -> ImageStore {
    ImageStore::new(StoreSettings {
        credentials: CredentialSource::anonymous(),
        ..StoreSettings::default()
    })
}

fn run_tag(registry: &str) -> String {
    format!("{registry}/fleet/run:latest")
}

/// Writes one layer of `files` (in-image path, contents) under `dir`.
fn layer(dir: &Path, name: &str, files: &[(&str, Vec<u8>)]) -> Result<WrittenLayer, Error> {
    let src = dir.join(name);
    std::fs::create_dir_all(&src)?;
    let mut builder = LayerBuilder::new(0, 0);
    for (i, (in_image, bytes)) in files.iter().enumerate() {
        let on_disk = src.join(format!("f{i}"));
        std::fs::write(&on_disk, bytes)?;
        builder.add(Path::new(in_image), &on_disk)?;
    }
    Ok(builder.write(dir)?)
}

fn image_config(labels: Vec<(&str, String)>) -> ImageConfig {
    ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: Some(ContainerConfig {
            env: Some(vec!["PATH=/usr/bin:/bin".into()]),
            labels: Some(
                labels
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn base_labels(version: usize) -> Vec<(&'static str, String)> {
    vec![
        ("io.buildpacks.stack.id", STACK.to_string()),
        ("io.buildpacks.base.id", STACK.to_string()),
        ("io.buildpacks.base.released", format!("v{version}")),
    ]
}

/// Run image `version`: a base layer shared by every version (256 KiB of
/// pseudo-random bytes), and a release layer of its own on top, as a patch makes.
async fn push_run_image(
    store: &ImageStore,
    registry: &str,
    layers: &Path,
    version: usize,
) -> Result<(ImageRef, Vec<WrittenLayer>), Error> {
    std::fs::create_dir_all(layers)?;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let noise: Vec<u8> = (0..256 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect();
    let written = vec![
        layer(layers, "base", &[("/usr/lib/base.so", noise)])?,
        layer(
            layers,
            &format!("release-v{version}"),
            &[("/etc/stack-release", format!("v{version}\n").into_bytes())],
        )?,
    ];
    let tag = ImageRef::parse(&run_tag(registry))?;
    let pinned = store
        .push_image(&tag, image_config(base_labels(version)), &written)
        .await?;
    Ok((pinned, written))
}

async fn seed(
    dir: &Path,
    registry: &str,
    n: usize,
    git: Option<(&str, usize)>,
) -> Result<(), Error> {
    // Builds keep what they push in the state's pushed cache, where rebases read it.
    let store = store().with_pushed_cache(StateLayout::new(dir.join("state")).pushed_dir());
    let layers = dir.join("layers");
    let (run_v1, run_layers) = push_run_image(&store, registry, &layers, 1).await?;
    let build_tag = ImageRef::parse(&format!("{registry}/fleet/build:latest"))?;
    store
        .push_image(&build_tag, image_config(base_labels(1)), &[])
        .await?;

    let bp = dir.join("buildpacks/bench/bin");
    std::fs::create_dir_all(&bp)?;
    std::fs::write(
        dir.join("buildpacks/bench/buildpack.toml"),
        "api = \"0.10\"\n[buildpack]\nid = \"bench/bp\"\nversion = \"1.0.0\"\n",
    )?;
    for script in ["detect", "build"] {
        std::fs::write(bp.join(script), "#!/bin/sh\nexit 0\n")?;
    }
    let mut toml = format!(
        "[kpackd]\nstate-dir = \"state\"\n\n[stacks.fleet]\nbuild-image = \"{build_tag}\"\nrun-image = \"{}\"\n\n\
         [stores.main]\nbuildpacks = [\"buildpacks/bench\"]\n\n\
         [builders.default]\nstack = \"fleet\"\nstore = \"main\"\norder = [{{ group = [{{ id = \"bench/bp\" }}] }}]\n",
        run_tag(registry)
    );
    for i in 1..=n {
        let source = match git {
            Some((base, repos)) => format!(
                "{{ git = \"{base}/repo{}.git\", revision = \"main\" }}",
                (i - 1) % repos.max(1) + 1
            ),
            None => {
                let app = dir.join(format!("apps/app{i}"));
                std::fs::create_dir_all(&app)?;
                std::fs::write(app.join("main.txt"), format!("app {i}\n"))?;
                format!("{{ path = \"apps/app{i}\" }}")
            }
        };
        toml.push_str(&format!(
            "\n[images.app{i}]\ntag = \"{registry}/fleet/app{i}:latest\"\nbuilder = \"default\"\nsource = {source}\n"
        ));
    }
    let config_path = dir.join("kpack.toml");
    std::fs::write(&config_path, toml)?;
    let config = planner::load(&config_path).map_err(|e| format!("{e:?}"))?;
    let mut state = State::open(&dir.join("state"))?;
    let planned = make_plan(&config, &state, &[]).await?;
    let builds: Vec<_> = planned
        .plan
        .changes
        .iter()
        .filter(|c| c.action == Action::Build)
        .cloned()
        .collect();
    if builds.len() != n {
        return Err(format!("the plan builds {} images, not {n}", builds.len()).into());
    }

    let top = run_layers.last().ok_or("no run layers")?.diff_id.clone();
    let metadata = serde_json::json!({
        "runImage": {
            "topLayer": top.to_string(),
            "reference": run_v1.to_string(),
            "image": run_tag(registry),
        },
        "buildpacks": [{"key": "bench/bp", "version": "1.0.0"}],
    })
    .to_string();
    let run_layers = Arc::new(run_layers);
    let pushed: Vec<(String, imageref::Digest)> =
        futures::stream::iter(builds.iter().map(|change| {
            let (store, layers, run_layers, metadata) = (
                store.clone(),
                layers.clone(),
                run_layers.clone(),
                metadata.clone(),
            );
            let name = change.image.clone();
            let tag = config.images[&name].tag.clone();
            async move {
                let app = tokio::task::spawn_blocking({
                    let (layers, name) = (layers.clone(), name.clone());
                    move || {
                        layer(
                            &layers,
                            &name,
                            &[("/workspace/main.txt", format!("{name}\n").into_bytes())],
                        )
                    }
                })
                .await??;
                let mut labels = base_labels(1);
                labels.push((LIFECYCLE_LABEL, metadata));
                let all: Vec<WrittenLayer> = run_layers.iter().cloned().chain([app]).collect();
                let pinned = store.push_image(&tag, image_config(labels), &all).await?;
                let digest = pinned.digest().ok_or("pushed without a digest")?.clone();
                Ok::<_, Error>((name, digest))
            }
        }))
        .buffer_unordered(PARALLEL)
        .try_collect()
        .await?;
    let outputs: std::collections::HashMap<String, imageref::Digest> = pushed.into_iter().collect();
    for change in &builds {
        let inputs = change.inputs.as_ref().ok_or("a build without inputs")?;
        let tag = config.images[&change.image].tag.to_string();
        let build = state.begin_build(&NewBuild {
            image: &change.image,
            action: change.action,
            reasons: &change.reasons,
            details: &change.details,
            inputs,
            tag: &tag,
        })?;
        for step in [
            BuildStatus::ResolvingSource,
            BuildStatus::Preparing,
            BuildStatus::Detecting,
            BuildStatus::Building,
            BuildStatus::Exporting,
        ] {
            state.transition(build.id, step)?;
        }
        state.finish(
            build.id,
            Outcome::Succeeded {
                output: outputs[&change.image].clone(),
                buildpacks_used: inputs.buildpacks.clone(),
                rebasable: true,
            },
        )?;
    }
    println!("{n} images on {run_v1}");
    Ok(())
}
