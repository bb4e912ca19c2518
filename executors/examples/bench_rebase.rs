//! Rebase against a full rebuild of the same image, side by side on one loopback
//! registry: an app image with 1 GiB of app layers (random-ish, text-like data that
//! gzip shrinks a little) on a small run image. The rebuild builds every app layer
//! (tar, hash, gzip, hash) and uploads it to a fresh repository, as a build that reuses
//! nothing would; the rebase swaps the run image for a patched one several times, each
//! onto a new run image version, and the median is reported.
//!
//! Run with `bench/rebase` (a release build). `BENCH_APP_MIB` changes the app size,
//! `BENCH_REBASES` the number of rebases. Figures go to stdout.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use executors::oci::layer::{LayerBuilder, WrittenLayer};
use executors::oci::{ContainerConfig, CredentialSource, ImageConfig, ImageStore, StoreSettings};
use executors::rebase::{rebase, RebaseRequest, RebaseResult, LIFECYCLE_LABEL};
use imageref::ImageRef;
use testkit::registry::Registry;

const MIB: u64 = 1 << 20;
const APP_LAYERS: u64 = 8;
const FILES_PER_LAYER: u64 = 4;
const RUN_IMAGE_MIB: u64 = 8;
const STACK: &str = "io.kpackd.bench";

type Error = Box<dyn std::error::Error + Send + Sync>;

fn env_number(name: &str, default: u64) -> Result<u64, Error> {
    match std::env::var(name) {
        Ok(v) => Ok(v.parse().map_err(|e| format!("{name}={v}: {e}"))?),
        Err(_) => Ok(default),
    }
}

fn main() -> Result<(), Error> {
    let app_mib = env_number("BENCH_APP_MIB", 1024)?;
    let rebases = env_number("BENCH_REBASES", 5)?.max(1) as usize;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(app_mib, rebases))
}

/// Random-ish text: xorshift bytes mapped onto 64 symbols, written in 1 MiB chunks so
/// memory stays flat whatever the size.
fn write_data(path: &Path, bytes: u64, seed: u64) -> std::io::Result<()> {
    use std::io::Write;
    const SYMBOLS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 \n";
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut chunk = vec![0u8; MIB as usize];
    let mut left = bytes;
    while left > 0 {
        for b in chunk.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = SYMBOLS[(state >> 58) as usize];
        }
        let n = left.min(MIB) as usize;
        out.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    out.flush()
}

/// Writes one layer of `files` (in-image path, on-disk path) on a blocking thread.
async fn build_layer(files: Vec<(PathBuf, PathBuf)>, out: PathBuf) -> Result<WrittenLayer, Error> {
    Ok(tokio::task::spawn_blocking(move || {
        let mut builder = LayerBuilder::new(1000, 1000);
        for (in_image, on_disk) in &files {
            builder.add(in_image, on_disk)?;
        }
        builder.write(&out)
    })
    .await??)
}

fn run_config(version: usize) -> ImageConfig {
    ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: Some(ContainerConfig {
            env: Some(vec!["PATH=/usr/bin:/bin".into()]),
            user: Some("1000:1000".into()),
            labels: Some(
                [
                    ("io.buildpacks.stack.id", STACK.to_string()),
                    ("io.buildpacks.base.released", format!("v{version}")),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Pushes run image version `version` under `tag`: a shared base layer, a release
/// file, and for versions after the first a patch layer of its own.
async fn push_run_image(
    store: &ImageStore,
    tag: &ImageRef,
    base: &WrittenLayer,
    work: &Path,
    version: usize,
) -> Result<(ImageRef, Vec<WrittenLayer>), Error> {
    let dir = work.join(format!("run-v{version}"));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("release"), format!("v{version}\n"))?;
    let mut layers = vec![
        base.clone(),
        build_layer(
            vec![("/etc/stack-release".into(), dir.join("release"))],
            work.to_path_buf(),
        )
        .await?,
    ];
    if version > 1 {
        write_data(&dir.join("patch"), 64 * 1024, 1000 + version as u64)?;
        layers.push(
            build_layer(
                vec![("/usr/lib/patched.so".into(), dir.join("patch"))],
                work.to_path_buf(),
            )
            .await?,
        );
    }
    let pinned = store.push_image(tag, run_config(version), &layers).await?;
    Ok((pinned, layers))
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= MIB => format!("{:.1} MiB", n as f64 / MIB as f64),
        n if n >= 1024 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

async fn bench(app_mib: u64, rebases: usize) -> Result<(), Error> {
    let registry = Registry::start();
    let store = ImageStore::new(StoreSettings {
        credentials: CredentialSource::anonymous(),
        ..StoreSettings::default()
    });
    let work = tempfile::tempdir()?;
    let layers_dir = work.path().join("layers");
    std::fs::create_dir_all(&layers_dir)?;
    let repo = |name: &str| ImageRef::parse(&registry.repo(name));
    let run_tag = repo("bench/run:latest")?;
    let app_tag = repo("bench/app:latest")?;

    // The data: APP_LAYERS directories of FILES_PER_LAYER files.
    let file_size = app_mib * MIB / (APP_LAYERS * FILES_PER_LAYER);
    let data = work.path().join("data");
    let mut layer_files = Vec::new();
    for l in 0..APP_LAYERS {
        let dir = data.join(format!("layer-{l}"));
        std::fs::create_dir_all(&dir)?;
        for f in 0..FILES_PER_LAYER {
            write_data(&dir.join(format!("file-{f}")), file_size, l * 100 + f)?;
        }
        layer_files.push(vec![(PathBuf::from(format!("/layers/app/layer-{l}")), dir)]);
    }
    std::fs::create_dir_all(data.join("base"))?;
    write_data(&data.join("base/libc.so"), RUN_IMAGE_MIB * MIB, 7)?;
    let base = build_layer(
        vec![("/usr/lib/libc.so".into(), data.join("base/libc.so"))],
        layers_dir.clone(),
    )
    .await?;
    let (run_v1, run_v1_layers) = push_run_image(&store, &run_tag, &base, &layers_dir, 1).await?;

    // The full rebuild: every app layer built and uploaded to a fresh repository; the
    // run image layers mounted, as an exporter would.
    let log_start = registry.requests().len();
    let started = Instant::now();
    let mut app_layers = Vec::new();
    for files in &layer_files {
        app_layers.push(build_layer(files.clone(), layers_dir.clone()).await?);
    }
    let built = started.elapsed();
    for layer in &run_v1_layers {
        store
            .copy_blob(
                &run_tag,
                &app_tag,
                &layer.descriptor(),
                std::sync::Arc::new(|_: u64| {}),
            )
            .await?;
    }
    let top_layer = run_v1_layers.last().ok_or("no run layers")?.diff_id.clone();
    let mut config = run_config(1);
    let labels = config
        .config
        .as_mut()
        .and_then(|c| c.labels.as_mut())
        .ok_or("a run config has labels")?;
    labels.insert(
        LIFECYCLE_LABEL.into(),
        serde_json::json!({
            "runImage": {"topLayer": top_layer.to_string(), "reference": run_v1.to_string(), "image": run_tag.to_string()},
        })
        .to_string(),
    );
    let all_layers: Vec<WrittenLayer> = run_v1_layers.iter().chain(&app_layers).cloned().collect();
    let mut app = store.push_image(&app_tag, config, &all_layers).await?;
    let rebuild = started.elapsed();
    let rebuild_requests = registry.requests().len() - log_start;
    let app_gzip: u64 = app_layers.iter().map(|l| l.size).sum();
    let rebuild_bytes = app_gzip + 2 * 1024; // plus a config and a manifest, about

    // The rebases: each onto a new run image version pushed under the same tag.
    let mut runs: Vec<(Duration, usize, RebaseResult)> = Vec::new();
    let mut last_requests = std::collections::BTreeMap::new();
    for version in 2..2 + rebases {
        let (run, _) = push_run_image(&store, &run_tag, &base, &layers_dir, version).await?;
        let log_start = registry.requests().len();
        let started = Instant::now();
        let result = rebase(
            &store,
            &RebaseRequest {
                image: app.clone(),
                run_image: run,
                tags: vec![app_tag.clone()],
                expected_stack_id: Some(STACK.into()),
                force: false,
            },
        )
        .await?;
        let took = started.elapsed();
        let log = registry.requests();
        last_requests.clear();
        for r in &log[log_start..] {
            let kind = if r.path == "/v2/" {
                "/v2/ (auth probe)"
            } else if r.path.contains("/manifests/") {
                "manifest"
            } else if r.path.contains("mount=") {
                "mount"
            } else if r.path.contains("/blobs/") {
                "blob"
            } else {
                "other"
            };
            *last_requests
                .entry(format!("{} {kind}", r.method))
                .or_insert(0) += 1;
        }
        let requests = log.len() - log_start;
        app = result.image.clone();
        runs.push((took, requests, result));
    }
    runs.sort_by_key(|(took, _, _)| *took);
    let (median, median_requests, median_result) = &runs[runs.len() / 2];
    let slowest = runs.last().map(|r| r.0).unwrap_or_default();
    let most_bytes = runs.iter().map(|r| r.2.bytes_uploaded).max().unwrap_or(0);
    let ratio = rebuild.as_secs_f64() / median.as_secs_f64().max(1e-9);

    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    println!(
        "kpackd rebase bench: {} of app data in {APP_LAYERS} layers ({} gzipped), {RUN_IMAGE_MIB} MiB run image, docker-registry on loopback",
        human_bytes(app_mib * MIB),
        human_bytes(app_gzip),
    );
    println!(
        "rebase: {rebases} runs, each onto a new run image version (+1 layer of 64 KiB); layers kept {}, mounted {}, uploaded {}",
        median_result.app_layers, median_result.layers.mounted, median_result.layers.uploaded
    );
    println!();
    println!(
        "{:<16} {:>16} {:>16} {:>12}   target",
        "", "rebase (median)", "full rebuild", "ratio"
    );
    println!(
        "{:<16} {:>16} {:>16} {:>11.0}x   rebase < 1 s: {} (slowest {}); >= 100x faster: {}",
        "wall time",
        seconds(*median),
        seconds(rebuild),
        ratio,
        verdict(*median < Duration::from_secs(1) && slowest < Duration::from_secs(1)),
        seconds(slowest),
        verdict(ratio >= 100.0),
    );
    println!(
        "{:<16} {:>16} {:>16} {:>11.0}x   < 64 KiB: {} (most {})",
        "bytes uploaded",
        human_bytes(median_result.bytes_uploaded),
        human_bytes(rebuild_bytes),
        rebuild_bytes as f64 / median_result.bytes_uploaded.max(1) as f64,
        verdict(most_bytes < 64 * 1024),
        human_bytes(most_bytes),
    );
    println!(
        "{:<16} {:>16} {:>16} {:>11.0}x",
        "requests",
        median_requests,
        rebuild_requests,
        rebuild_requests as f64 / (*median_requests).max(1) as f64,
    );
    println!(
        "(last rebase's requests: {})",
        last_requests
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "(rebuild: {} building layers, {} uploading)",
        seconds(built),
        seconds(rebuild - built)
    );
    Ok(())
}
