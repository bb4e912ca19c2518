//! What the end-to-end tests of the `kpackd` binary share: a small real stack (a root
//! filesystem of the host's own programs, written as OCI images), shell buildpacks,
//! and a way to run the binary.

#![allow(dead_code)]

pub mod example;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use executors::oci::layer::{LayerBuilder, WrittenLayer};
use executors::oci::{ContainerConfig, ImageConfig, ImageStore, StoreSettings};
use imageref::ImageRef;

pub const STACK_ID: &str = "io.kpackd.test";

/// Writes a build image and a run image for the test stack into the OCI layout `layout`
/// (refs `build` and `run`), from one minimal root filesystem made in `work`.
pub fn write_stack(work: &Path, layout: &Path) -> WrittenLayer {
    testkit::require("bwrap", "bubblewrap");
    let rootfs = work.join("rootfs");
    testkit::rootfs::minimal_rootfs(&rootfs, &[]).expect("making a minimal root filesystem");
    let layers = work.join("layers");
    std::fs::create_dir_all(&layers).expect("making the layers dir");
    let mut builder = LayerBuilder::new(0, 0);
    for entry in std::fs::read_dir(&rootfs).expect("reading the rootfs") {
        let entry = entry.expect("reading the rootfs");
        builder
            .add(Path::new(&entry.file_name()), &entry.path())
            .expect("adding to the base layer");
    }
    let base = builder.write(&layers).expect("writing the base layer");
    runtime().block_on(async {
        let store = ImageStore::new(StoreSettings::default());
        for (name, extra) in [("build", true), ("run", false)] {
            let reference = ImageRef::parse(&format!("oci:{}:{name}", layout.display()))
                .expect("a layout reference");
            store
                .push_image(&reference, stack_config(extra), std::slice::from_ref(&base))
                .await
                .expect("writing a stack image");
        }
    });
    base
}

/// Adds one layer (a file `/etc/patch-level` with `level`) on top of the run image:
/// what a CVE fix to the run image looks like.
pub fn patch_run_image(work: &Path, layout: &Path, level: &str) {
    let dir = work.join(format!("patch-{level}"));
    std::fs::create_dir_all(dir.join("etc")).expect("making the patch dir");
    std::fs::write(dir.join("etc/patch-level"), level).expect("writing the patch");
    let mut builder = LayerBuilder::new(0, 0);
    builder
        .add(Path::new("etc/patch-level"), &dir.join("etc/patch-level"))
        .expect("adding the patch");
    let patch = builder.write(&dir).expect("writing the patch layer");
    runtime().block_on(async {
        let store = ImageStore::new(StoreSettings::default());
        let reference =
            ImageRef::parse(&format!("oci:{}:run", layout.display())).expect("a layout ref");
        let image = store
            .image(&reference)
            .await
            .expect("reading the run image");
        let mut layers = Vec::new();
        for (descriptor, diff_id) in image
            .manifest
            .layers
            .iter()
            .zip(image.config.rootfs.diff_ids.iter())
        {
            let path = layout
                .join("blobs")
                .join(descriptor.digest.algorithm())
                .join(descriptor.digest.hex());
            layers.push(executors::oci::layer::WrittenLayer {
                diff_id: diff_id.clone(),
                digest: descriptor.digest.clone(),
                size: descriptor.size,
                path,
            });
        }
        layers.push(patch);
        store
            .push_image(&reference, image.config.clone(), &layers)
            .await
            .expect("writing the patched run image");
    });
}

/// A kpack.toml of the test stack, one store with the directory buildpack
/// `buildpacks/<buildpack>` (id `id`), one builder, and one image `image` pushed to
/// `oci:out:<image>` whose table ends with `image_keys` (its source, and any more keys).
pub fn one_image_config(buildpack: &str, id: &str, image: &str, image_keys: &str) -> String {
    format!(
        r#"[kpackd]
state-dir = "state"

[stacks.test]
build-image = "oci:stacks:build"
run-image = "oci:stacks:run"

[stores.test]
buildpacks = ["buildpacks/{buildpack}"]

[builders.test]
stack = "test"
store = "test"
order = [{{ group = [{{ id = "{id}" }}] }}]

[images.{image}]
tag = "oci:out:{image}"
builder = "test"
{image_keys}
"#
    )
}

/// Writes a source image (kpack's registry source) with one layer holding the files of
/// the directory `dir` (made by the caller) to `layout` as `ref_name`.
pub fn write_source_image(dir: &Path, layout: &Path, ref_name: &str) {
    let mut builder = LayerBuilder::new(0, 0);
    for entry in std::fs::read_dir(dir).expect("reading the source dir") {
        let entry = entry.expect("reading the source dir");
        builder
            .add(Path::new(&entry.file_name()), &entry.path())
            .expect("adding to the source layer");
    }
    let blobs = dir.with_extension("layer");
    std::fs::create_dir_all(&blobs).expect("making the layer dir");
    let layer = builder.write(&blobs).expect("writing the source layer");
    let config: ImageConfig = serde_json::from_value(serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
    }))
    .expect("a valid image config");
    runtime().block_on(async {
        let store = ImageStore::new(StoreSettings::default());
        let reference = ImageRef::parse(&format!("oci:{}:{ref_name}", layout.display()))
            .expect("a layout reference");
        store
            .push_image(&reference, config, std::slice::from_ref(&layer))
            .await
            .expect("writing the source image");
    });
}

fn stack_config(build: bool) -> ImageConfig {
    let mut labels = BTreeMap::new();
    labels.insert("io.buildpacks.stack.id".to_string(), STACK_ID.to_string());
    labels.insert("io.buildpacks.base.id".to_string(), STACK_ID.to_string());
    let mut env = vec!["PATH=/usr/local/bin:/usr/bin:/bin".to_string()];
    if build {
        env.push("CNB_USER_ID=1000".into());
        env.push("CNB_GROUP_ID=1000".into());
        env.push(format!("CNB_STACK_ID={STACK_ID}"));
    }
    let config: ImageConfig = serde_json::from_value(serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
    }))
    .expect("a valid image config");
    ImageConfig {
        config: Some(ContainerConfig {
            user: Some("1000:1000".into()),
            env: Some(env),
            labels: Some(labels),
            ..serde_json::from_value(serde_json::json!({})).expect("an empty container config")
        }),
        ..config
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Writes a component buildpack `id` into `dir/<name>` with the given `detect` and
/// `build` scripts (POSIX sh bodies).
pub fn write_buildpack(dir: &Path, name: &str, id: &str, detect: &str, build: &str) -> PathBuf {
    let bp = dir.join(name);
    std::fs::create_dir_all(bp.join("bin")).expect("making the buildpack dir");
    std::fs::write(
        bp.join("buildpack.toml"),
        format!("api = \"0.10\"\n\n[buildpack]\nid = \"{id}\"\nversion = \"0.1.0\"\n\n[[targets]]\nos = \"linux\"\n"),
    )
    .expect("writing buildpack.toml");
    for (script, body) in [("detect", detect), ("build", build)] {
        let path = bp.join("bin").join(script);
        std::fs::write(&path, format!("#!/bin/sh\nset -eu\n{body}\n")).expect("writing a script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("making a script executable");
    }
    bp
}

/// Runs the kpackd binary in `dir` with its own state, returning its output.
pub fn kpackd(dir: &Path, args: &[&str]) -> Output {
    kpackd_with_env(dir, args, &[])
}

/// [`kpackd`] with these environment variables set too.
pub fn kpackd_with_env(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_kpackd"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("KPACKD_STATE_DIR")
        .envs(env.iter().copied())
        .output()
        .expect("running kpackd");
    eprintln!(
        "$ kpackd {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A `kpackd` process running in the background in `dir`, its stdout and stderr going
/// to files in `dir` (`<name>.out`, `<name>.err`). Killed (SIGKILL) when dropped if it
/// still runs.
pub struct Background {
    pub child: std::process::Child,
    pub name: String,
    pub dir: PathBuf,
    pub started: std::time::Instant,
}

/// Starts `kpackd args…` in `dir` without waiting for it; `name` names its output files.
pub fn spawn_kpackd(dir: &Path, name: &str, args: &[&str]) -> Background {
    let out = std::fs::File::create(dir.join(format!("{name}.out"))).expect("an output file");
    let err = std::fs::File::create(dir.join(format!("{name}.err"))).expect("an output file");
    let child = Command::new(env!("CARGO_BIN_EXE_kpackd"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("KPACKD_STATE_DIR")
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("starting kpackd");
    eprintln!("$ kpackd {} &  (pid {})", args.join(" "), child.id());
    Background {
        child,
        name: name.to_string(),
        dir: dir.to_path_buf(),
        started: std::time::Instant::now(),
    }
}

impl Background {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. "TERM", "INT", "KILL") with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// The exit status if the process ended within `timeout`.
    pub fn wait_timeout(
        &mut self,
        timeout: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for kpackd") {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.out", self.name))).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.err", self.name))).unwrap_or_default()
    }

    /// Both outputs, for assertion messages.
    pub fn output(&self) -> String {
        format!(
            "--- {} stdout\n{}--- {} stderr\n{}",
            self.name,
            self.stdout(),
            self.name,
            self.stderr()
        )
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `check` every 50 ms until it returns Some, or panics naming `what` after
/// `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: std::time::Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `kpackd builds --json` in `dir` (all images), quietly; None when it fails.
pub fn builds_json(dir: &Path) -> Option<Vec<serde_json::Value>> {
    let output = Command::new(env!("CARGO_BIN_EXE_kpackd"))
        .args(["builds", "--json"])
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("KPACKD_STATE_DIR")
        .output()
        .expect("running kpackd builds");
    if !output.status.success() {
        return None;
    }
    serde_json::from_slice::<Vec<serde_json::Value>>(&output.stdout).ok()
}

/// The pids of the host's processes whose command line is exactly `argv`.
pub fn processes_with_cmdline(argv: &[&str]) -> Vec<u32> {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted))
        .collect()
}

/// Every ref name of the OCI layout `layout` whose manifest (or index, recursively) is
/// missing a blob: the manifest itself, its config or a layer. Empty when the layout is
/// whole (or does not exist). Also returns how many refs were checked.
pub fn broken_refs(layout: &Path) -> (usize, Vec<String>) {
    let index = layout.join("index.json");
    let Ok(text) = std::fs::read(&index) else {
        return (0, Vec::new());
    };
    let index: serde_json::Value =
        serde_json::from_slice(&text).expect("the layout's index.json is JSON");
    let mut checked = 0;
    let mut broken = Vec::new();
    for descriptor in index["manifests"].as_array().cloned().unwrap_or_default() {
        let name = descriptor["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .unwrap_or("(no ref name)")
            .to_string();
        checked += 1;
        let mut missing = Vec::new();
        check_descriptor(layout, &descriptor, &mut missing);
        if !missing.is_empty() {
            broken.push(format!("{name}: missing {}", missing.join(", ")));
        }
    }
    (checked, broken)
}

fn blob_path(layout: &Path, digest: &str) -> Option<PathBuf> {
    let (algorithm, hex) = digest.split_once(':')?;
    Some(layout.join("blobs").join(algorithm).join(hex))
}

fn check_descriptor(layout: &Path, descriptor: &serde_json::Value, missing: &mut Vec<String>) {
    let digest = descriptor["digest"].as_str().unwrap_or("");
    let Some(path) = blob_path(layout, digest).filter(|p| p.is_file()) else {
        missing.push(format!("manifest {digest}"));
        return;
    };
    let manifest: serde_json::Value = match std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
    {
        Some(manifest) => manifest,
        None => {
            missing.push(format!("a readable manifest {digest}"));
            return;
        }
    };
    if let Some(children) = manifest["manifests"].as_array() {
        for child in children {
            check_descriptor(layout, child, missing);
        }
        return;
    }
    let blobs = std::iter::once(&manifest["config"])
        .chain(manifest["layers"].as_array().into_iter().flatten());
    for blob in blobs {
        let digest = blob["digest"].as_str().unwrap_or("");
        if !blob_path(layout, digest).is_some_and(|p| p.is_file()) {
            missing.push(format!(
                "blob {digest} of {}",
                &manifest_digest_short(descriptor)
            ));
        } else if let Some(size) = blob["size"].as_u64() {
            let on_disk = blob_path(layout, digest)
                .and_then(|p| std::fs::metadata(p).ok())
                .map_or(0, |m| m.len());
            if on_disk != size {
                missing.push(format!("blob {digest} whole ({on_disk} of {size} bytes)"));
            }
        }
    }
}

fn manifest_digest_short(descriptor: &serde_json::Value) -> String {
    descriptor["digest"]
        .as_str()
        .unwrap_or("")
        .chars()
        .take(19)
        .collect()
}

/// The ref names of the OCI layout `layout` (empty when it does not exist).
pub fn layout_refs(layout: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read(layout.join("index.json")) else {
        return Vec::new();
    };
    let index: serde_json::Value =
        serde_json::from_slice(&text).expect("the layout's index.json is JSON");
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .map(str::to_string)
        .collect()
}

/// A one-request HTTP/1.1 client over std: `method path` with `body` to `addr`;
/// returns the status code and the body. None when the connection fails.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .ok()?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, rest) = response.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Some((code, body))
}

fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    body
}

/// Adds one layer (a file `/etc/patch-level` with `level`) on top of the image `ref_name`
/// of the OCI layout `layout`, in place, with a history entry for the new layer: a patched
/// run image, for a stack whose run image is not named `run` (the example stack's
/// `bookworm-run`). Returns the patched image's manifest digest.
pub fn patch_image_in_layout(work: &Path, layout: &Path, ref_name: &str, level: &str) -> String {
    let dir = work.join(format!("patch-{ref_name}-{level}"));
    std::fs::create_dir_all(dir.join("etc")).expect("making the patch dir");
    std::fs::write(dir.join("etc/patch-level"), level).expect("writing the patch");
    let mut builder = LayerBuilder::new(0, 0);
    builder
        .add(Path::new("etc/patch-level"), &dir.join("etc/patch-level"))
        .expect("adding the patch");
    let patch = builder.write(&dir).expect("writing the patch layer");
    runtime().block_on(async {
        let store = ImageStore::new(StoreSettings::default());
        let reference =
            ImageRef::parse(&format!("oci:{}:{ref_name}", layout.display())).expect("a layout ref");
        let image = store
            .image(&reference)
            .await
            .unwrap_or_else(|e| panic!("reading {reference}: {e}"));
        let mut layers = Vec::new();
        for (descriptor, diff_id) in image
            .manifest
            .layers
            .iter()
            .zip(image.config.rootfs.diff_ids.iter())
        {
            layers.push(executors::oci::layer::WrittenLayer {
                diff_id: diff_id.clone(),
                digest: descriptor.digest.clone(),
                size: descriptor.size,
                path: layout
                    .join("blobs")
                    .join(descriptor.digest.algorithm())
                    .join(descriptor.digest.hex()),
            });
        }
        layers.push(patch);
        let mut config = image.config.clone();
        if !config.history.is_empty() {
            config.history.push(serde_json::json!({
                "created_by": format!("patch level {level} (a test's simulated security fix)"),
            }));
        }
        store
            .push_image(&reference, config, &layers)
            .await
            .expect("writing the patched image");
        store
            .image(&reference)
            .await
            .expect("reading the patched image")
            .digest()
            .to_string()
    })
}

/// The layer of the directory buildpack `bp` (id `id`, version 0.1.0) as images carry
/// it, `/cnb/buildpacks/<id with / as _>/0.1.0/`, and its `io.buildpacks.buildpack.layers`
/// label.
fn buildpack_layer(bp: &Path, id: &str, work: &Path) -> (WrittenLayer, String) {
    std::fs::create_dir_all(work).expect("making the work dir");
    let in_image = format!("cnb/buildpacks/{}/0.1.0", id.replace('/', "_"));
    let mut builder = LayerBuilder::new(0, 0);
    builder
        .add(Path::new(&in_image), bp)
        .expect("adding the buildpack");
    let layer = builder.write(work).expect("writing the buildpack layer");
    let label = serde_json::json!({
        id: {"0.1.0": {"api": "0.10", "layerDiffID": layer.diff_id.to_string(),
                       "targets": [{"os": "linux"}]}}
    });
    (layer, label.to_string())
}

fn push_to_layout(layout: &Path, ref_name: &str, config: ImageConfig, layers: &[WrittenLayer]) {
    runtime().block_on(async {
        let store = ImageStore::new(StoreSettings::default());
        let reference = ImageRef::parse(&format!("oci:{}:{ref_name}", layout.display()))
            .expect("a layout reference");
        store
            .push_image(&reference, config, layers)
            .await
            .expect("writing an image");
    });
}

/// Writes the directory buildpack `bp` (id `id`, version 0.1.0) as a buildpackage image
/// into the OCI layout `layout` under `ref_name`: one layer holding the buildpack, and
/// the labels a buildpackage carries.
pub fn write_buildpackage(bp: &Path, id: &str, layout: &Path, ref_name: &str, work: &Path) {
    let (layer, layers_label) = buildpack_layer(bp, id, work);
    let mut labels = BTreeMap::new();
    labels.insert("io.buildpacks.buildpack.layers".to_string(), layers_label);
    labels.insert(
        "io.buildpacks.buildpackage.metadata".to_string(),
        serde_json::json!({"id": id, "version": "0.1.0"}).to_string(),
    );
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: Some(ContainerConfig {
            labels: Some(labels),
            ..Default::default()
        }),
        ..Default::default()
    };
    push_to_layout(layout, ref_name, config, std::slice::from_ref(&layer));
}

/// Writes a CNB builder image into `layout` under `ref_name`: the test stack's build
/// image (`base`, its layer) with the buildpack `bp` added, its order (that one
/// buildpack) and its run image (`run_image`) in the builder labels.
pub fn write_builder(
    base: &WrittenLayer,
    bp: &Path,
    id: &str,
    run_image: &str,
    layout: &Path,
    ref_name: &str,
    work: &Path,
) {
    let (layer, layers_label) = buildpack_layer(bp, id, work);
    let mut config = stack_config(true);
    let labels = config
        .config
        .as_mut()
        .and_then(|c| c.labels.as_mut())
        .expect("the stack config has labels");
    labels.insert("io.buildpacks.buildpack.layers".to_string(), layers_label);
    labels.insert(
        "io.buildpacks.buildpack.order".to_string(),
        serde_json::json!([{"group": [{"id": id, "version": "0.1.0"}]}]).to_string(),
    );
    labels.insert(
        "io.buildpacks.builder.metadata".to_string(),
        serde_json::json!({"images": [{"image": run_image}],
                           "buildpacks": [{"id": id, "version": "0.1.0"}]})
        .to_string(),
    );
    push_to_layout(layout, ref_name, config, &[base.clone(), layer]);
}
