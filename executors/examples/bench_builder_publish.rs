//! Publishing a builder image, cold and warm, on a loopback registry: a build image with
//! one base layer of `BENCH_BASE_MIB` MiB (default 64), five directory buildpacks (one of
//! them composite) of `BENCH_BP_MIB` MiB each (default 8) and a small build entrypoint.
//!
//! - cold: the first publish into a fresh repository (the build image's layers are
//!   mounted from its repository, the buildpack layers written and uploaded);
//! - warm: the same publish again: the same digest, nothing uploaded.
//!
//! The peer, in the same run on the same registry: `skopeo copy` of the published builder
//! into a fresh repository (cold) and again (warm), when skopeo is installed.
//!
//! Run with `bench/builder-publish`. Figures go to stdout.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cnb::buildpack::{OrderEntry, OrderGroup};
use executors::builder::{publish, PublishBuildpack, PublishBuildpackSource, PublishRequest};
use executors::lifecycle::DiscardLogs;
use executors::oci::layer::LayerBuilder;
use executors::oci::{ContainerConfig, CredentialSource, ImageConfig, ImageStore, StoreSettings};
use imageref::ImageRef;
use testkit::registry::Registry;

const MIB: u64 = 1 << 20;
const BUILDPACKS: usize = 5;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn env_number(name: &str, default: u64) -> Result<u64, Error> {
    match std::env::var(name) {
        Ok(v) => Ok(v.parse().map_err(|e| format!("{name}={v}: {e}"))?),
        Err(_) => Ok(default),
    }
}

fn main() -> Result<(), Error> {
    let base_mib = env_number("BENCH_BASE_MIB", 64)?;
    let bp_mib = env_number("BENCH_BP_MIB", 8)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(base_mib, bp_mib))
}

/// Random-ish text: xorshift bytes mapped onto 64 symbols, in 1 MiB chunks.
fn write_data(path: &Path, bytes: u64, seed: u64) -> std::io::Result<()> {
    use std::io::Write;
    const SYMBOLS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 \n";
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
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

fn buildpack_dir(root: &Path, i: usize, mib: u64) -> Result<PathBuf, Error> {
    let id = format!("bench/bp{i}");
    let dir = root.join(format!("bp{i}"));
    std::fs::create_dir_all(dir.join("bin"))?;
    let order = if i == 0 {
        // The composite: an order over the others, no programs.
        (1..BUILDPACKS)
            .map(|j| format!("[[order.group]]\nid = \"bench/bp{j}\"\nversion = \"1.0.{j}\"\n"))
            .fold("[[order]]\n".to_string(), |all, entry| all + &entry)
    } else {
        std::fs::write(dir.join("bin/detect"), "#!/bin/sh\nexit 0\n")?;
        std::fs::write(dir.join("bin/build"), "#!/bin/sh\nexit 0\n")?;
        write_data(&dir.join("data/blob"), mib * MIB, i as u64 + 1)?;
        String::new()
    };
    std::fs::write(
        dir.join("buildpack.toml"),
        format!("api = \"0.10\"\n[buildpack]\nid = \"{id}\"\nversion = \"1.0.{i}\"\n{order}"),
    )?;
    Ok(dir)
}

fn seconds(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn human_bytes(n: u64) -> String {
    if n >= MIB {
        format!("{:.1} MiB", n as f64 / MIB as f64)
    } else {
        format!("{n} B")
    }
}

/// Requests the registry logged from index `from` on, and the POSTs among them that
/// began a blob upload (cross-repository mounts included).
fn requests_since(registry: &Registry, from: usize) -> (usize, usize) {
    let log = registry.requests();
    let new = &log[from.min(log.len())..];
    let uploads = new
        .iter()
        .filter(|r| r.method == "POST" && r.path.contains("/blobs/uploads/"))
        .count();
    (new.len(), uploads)
}

async fn bench(base_mib: u64, bp_mib: u64) -> Result<(), Error> {
    let registry = Registry::start();
    let store = ImageStore::new(StoreSettings {
        credentials: CredentialSource::anonymous(),
        ..StoreSettings::default()
    });
    let work = tempfile::tempdir()?;
    let root = work.path();

    println!("==> writing a build image of {base_mib} MiB and {BUILDPACKS} buildpacks");
    write_data(&root.join("base/data/base"), base_mib * MIB, 99)?;
    let base_dir = root.join("base/data");
    let out = root.to_path_buf();
    let base_layer = tokio::task::spawn_blocking(move || {
        LayerBuilder::new(0, 0)
            .add(Path::new("/opt/base"), &base_dir)?
            .write(&out)
    })
    .await??;
    let build_image = store
        .push_image(
            &ImageRef::parse(&format!("{}:1", registry.repo("bench/build")))?,
            ImageConfig {
                architecture: "amd64".into(),
                os: "linux".into(),
                config: Some(ContainerConfig {
                    env: Some(vec![
                        "PATH=/usr/bin:/bin".into(),
                        "CNB_USER_ID=1000".into(),
                        "CNB_GROUP_ID=1000".into(),
                    ]),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &[base_layer],
        )
        .await?;
    let mut buildpacks = Vec::new();
    for i in 0..BUILDPACKS {
        buildpacks.push(PublishBuildpack {
            id: format!("bench/bp{i}"),
            version: format!("1.0.{i}"),
            source: PublishBuildpackSource::Directory(buildpack_dir(root, i, bp_mib)?),
        });
    }
    let entrypoint = root.join("kpackd-entrypoint");
    std::fs::write(&entrypoint, "#!/bin/sh\nexit 0\n")?;
    let tag = ImageRef::parse(&format!("{}:latest", registry.repo("bench/builder")))?;
    let req = PublishRequest {
        builder: "bench".into(),
        tag: tag.clone(),
        build_image,
        run_image: ImageRef::parse("registry.example/bench/run:1")?,
        run_image_mirrors: Vec::new(),
        stack_id: "io.kpackd.bench".into(),
        buildpacks,
        order: vec![OrderGroup {
            group: vec![OrderEntry {
                id: "bench/bp0".into(),
                version: String::new(),
                optional: false,
            }],
        }],
        lifecycle_image: None,
        entrypoint: Some(entrypoint),
    };

    println!(
        "{:<22} {:>10} {:>9} {:>8} {:>12}",
        "", "wall", "requests", "uploads", "uploaded"
    );
    let mut digests = Vec::new();
    for run in ["kpackd cold", "kpackd warm"] {
        let from = registry.requests().len();
        let start = Instant::now();
        let result = publish(&store, &req, &DiscardLogs).await?;
        let took = start.elapsed();
        let (requests, uploads) = requests_since(&registry, from);
        println!(
            "{run:<22} {:>10} {requests:>9} {uploads:>8} {:>12}   ({} blobs sent)",
            seconds(took),
            human_bytes(result.bytes_uploaded),
            result.blobs_uploaded
        );
        digests.push(result.digest);
    }
    if digests[0] != digests[1] {
        return Err(format!("the warm publish gave {} after {}", digests[1], digests[0]).into());
    }
    println!("same digest both times: {}", digests[0]);

    if Command::new("skopeo").arg("--version").output().is_err() {
        println!("peer: skopeo is not installed, no peer measured");
        return Ok(());
    }
    let dest = format!("docker://{}:latest", registry.repo("bench/peer"));
    for run in ["skopeo copy cold", "skopeo copy warm"] {
        let from = registry.requests().len();
        let start = Instant::now();
        let out = Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
            ])
            .arg(format!("docker://{tag}"))
            .arg(&dest)
            .output()?;
        let took = start.elapsed();
        if !out.status.success() {
            return Err(format!("skopeo copy: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        let (requests, uploads) = requests_since(&registry, from);
        println!(
            "{run:<22} {:>10} {requests:>9} {uploads:>8} {:>12}",
            seconds(took),
            "-"
        );
    }
    println!(
        "(the peer copies the finished image within one registry: every blob mounted or \
         present; kpackd also writes the buildpack layers)"
    );
    Ok(())
}
