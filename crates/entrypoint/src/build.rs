//! One build from a request: read it, find the builder image's buildpacks and order,
//! write the source into the app directory, and run the lifecycle in the container
//! ([`executors::lifecycle::run::build_image_in_container`]).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use executors::lifecycle::cache::CacheDir;
use executors::lifecycle::descriptor::{DescriptorError, Order};
use executors::lifecycle::phase::{Target, APP_DIR, BUILDPACKS_DIR};
use executors::lifecycle::request::{EntrypointRequest, EntrypointResult, REQUEST_VERSION};
use executors::lifecycle::run::{build_image_in_container, BuildRequest, LifecycleError};
use executors::lifecycle::stack::{BuildRoot, StackError};
use executors::lifecycle::{LogSink, Phase};
use executors::oci::{CredentialSource, ImageStore, StoreSettings};
use imageref::Platform;

use crate::source::{self, SourceError};

/// The builder image's order.
const ORDER_TOML: &str = "/cnb/order.toml";

/// How the entrypoint was started.
#[derive(Debug)]
pub struct Options {
    /// The request file; None: stdin.
    pub request: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub insecure_registries: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EntrypointError {
    #[error("read the request from {from}: {source}")]
    ReadRequest {
        from: String,
        #[source]
        source: io::Error,
    },
    #[error("the request is not valid: {0}")]
    Request(#[from] serde_json::Error),
    #[error("the request is version {found}; this entrypoint reads version {expected}")]
    Version { found: u32, expected: u32 },
    #[error("the builder image: {0}")]
    Root(#[from] StackError),
    #[error("the builder image's buildpacks: {0}")]
    Buildpacks(#[from] DescriptorError),
    #[error("the builder image's buildpacks in {}: {source}", dir.display())]
    BuildpacksDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the state directory: {0}")]
    State(#[source] io::Error),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Build(#[from] LifecycleError),
}

/// Runs the build `options` name.
pub async fn run(options: &Options) -> Result<EntrypointResult, EntrypointError> {
    let request = read_request(options.request.as_deref())?;
    let platform = request.platform.clone().unwrap_or_else(Platform::host);
    let store = ImageStore::new(StoreSettings {
        insecure_registries: options.insecure_registries.clone(),
        platform: platform.clone(),
        credentials: CredentialSource::from_env(),
        ..StoreSettings::default()
    });
    let root = BuildRoot::running(
        &request.builder_image.to_string(),
        std::env::vars().collect::<BTreeMap<_, _>>(),
        Target {
            os: platform.os.clone(),
            arch: platform.architecture.clone(),
            arch_variant: platform.variant.clone(),
            distro_name: None,
            distro_version: None,
        },
    )?;
    let (_temp, state_dir) = match &options.state_dir {
        Some(dir) => {
            fs::create_dir_all(dir).map_err(EntrypointError::State)?;
            (None, dir.clone())
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("kpackd-")
                .tempdir()
                .map_err(EntrypointError::State)?;
            let dir = temp.path().to_path_buf();
            (Some(temp), dir)
        }
    };
    let logs = StderrLogs;
    logs.phase_started(Phase::Prepare);
    let app_dir = PathBuf::from(APP_DIR);
    logs.line(
        Phase::Prepare,
        None,
        &format!("Writing the source into {APP_DIR}"),
    );
    source::materialise(
        &store,
        &request.source,
        &app_dir,
        &state_dir.join("sources"),
    )
    .await?;
    let order = Order::read(Path::new(ORDER_TOML))?.order;
    let buildpack_dirs = builder_buildpacks(Path::new(BUILDPACKS_DIR))?;

    let build = BuildRequest {
        image: request.image.clone(),
        tag: request.tag.clone(),
        additional_tags: request.additional_tags.clone(),
        build_image: request.builder_image.clone(),
        run_image: request.run_image.clone(),
        buildpack_dirs,
        order,
        image_group: request.buildpacks.clone(),
        project_descriptor: request.project_descriptor.clone(),
        app_dir,
        env: request.env.clone(),
        network: true,
        work_root: state_dir.join("work"),
        stacks_dir: state_dir.join("stacks"),
        cache_dir: CacheDir::for_image(&state_dir.join("cache"), &request.image)
            .dir()
            .to_path_buf(),
        previous_image: request.previous_image.clone(),
        cache: request.cache_image.is_some(),
        cache_image: request.cache_image.clone(),
        project_metadata: request.project_metadata.clone(),
        default_process: request.default_process.clone(),
        layer_compression: request.layer_compression,
    };
    let result = build_image_in_container(&store, &build, &root, &logs).await?;
    Ok(EntrypointResult::from(&result))
}

fn read_request(path: Option<&Path>) -> Result<EntrypointRequest, EntrypointError> {
    let mut text = String::new();
    let read = match path {
        Some(path) => fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text)),
        None => io::stdin().lock().read_to_string(&mut text),
    };
    read.map_err(|source| EntrypointError::ReadRequest {
        from: path.map_or_else(|| "stdin".into(), |p| p.display().to_string()),
        source,
    })?;
    let request: EntrypointRequest = serde_json::from_str(&text)?;
    if request.version != REQUEST_VERSION {
        return Err(EntrypointError::Version {
            found: request.version,
            expected: REQUEST_VERSION,
        });
    }
    Ok(request)
}

/// Every `<dir>/<escaped id>/<version>` holding a `buildpack.toml`, sorted.
fn builder_buildpacks(dir: &Path) -> Result<Vec<PathBuf>, EntrypointError> {
    let read = |dir: &Path| -> Result<Vec<PathBuf>, EntrypointError> {
        let entries = fs::read_dir(dir).map_err(|source| EntrypointError::BuildpacksDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| EntrypointError::BuildpacksDir {
                dir: dir.to_path_buf(),
                source,
            })?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                paths.push(entry.path());
            }
        }
        paths.sort();
        Ok(paths)
    };
    let mut found = Vec::new();
    for id_dir in read(dir)? {
        for version_dir in read(&id_dir)? {
            if version_dir.join("buildpack.toml").is_file() {
                found.push(version_dir);
            }
        }
    }
    Ok(found)
}

/// The lifecycle's lines on stderr, as kpackd's build logs write them.
struct StderrLogs;

impl LogSink for StderrLogs {
    fn line(&self, phase: Phase, buildpack: Option<&str>, line: &str) {
        let mut stderr = io::stderr().lock();
        let _ = match buildpack {
            Some(bp) => writeln!(stderr, "[{phase}] [{bp}] {line}"),
            None => writeln!(stderr, "[{phase}] {line}"),
        };
    }

    fn phase_started(&self, phase: Phase) {
        let _ = writeln!(
            io::stderr().lock(),
            "===> {}",
            phase.as_str().to_uppercase()
        );
    }
}
