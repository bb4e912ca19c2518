//! The build phase: each buildpack of the detected group runs its `bin/build` in the
//! sandbox, in group order, with its Buildpack Plan, its own layers directory
//! `<layers>/<escaped id>` and the environment earlier buildpacks' build layers made.
//!
//! How to call it (run.rs), after [`super::detect::detect`] with the same context (or with
//! a [`DetectOutcome`] read back by [`DetectOutcome::read`] from the layers dir):
//! ```text
//! let output: BuildOutput = build(&ctx, &outcome, &logs).await?;
//! ```
//! Afterwards the layers dir is in the lifecycle's on-disk form, which export reads:
//! `<layers>/<bp>/launch.toml`, `build.toml`, `store.toml`, `<layer>.toml` and `<layer>/`
//! (layers with no type set are renamed `<layer>.ignore/`), and
//! `<layers>/config/metadata.toml` (buildpacks, processes, default process, slices,
//! labels). [`BuildOutput`] carries the same, parsed. Dropping the future kills the running
//! `bin/build`. A failing buildpack gives [`BuildError::BuildpackFailed`] with the last
//! lines it printed; every line also went to the [`LogSink`] as it came.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::descriptor::{
    escape_id, write_toml, ApiVersion, BuildToml, BuildpackPlan, DescriptorError, GroupBuildpack,
    Label, Launch, LayerMetadata, LayerTypes, Process, ResolvedPlan, Slice, Store, Table,
};
use super::detect::DetectOutcome;
use super::phase::context::{refuse_symlink, scratch_dir};
use super::phase::env::{base_env, buildpack_env, OperatorEnv};
use super::phase::program::run_program;
use super::phase::sandbox::{phase_sandbox, PhaseSandbox};
use super::phase::{BuildpackDir, Env, PhaseContext, PhaseError, ProgramError};
use super::sbom::{self, SbomError, SBOM_EXTENSIONS};
use super::{LogSink, Phase};

/// What the buildpacks made, for export.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BuildOutput {
    /// Every process type, a later buildpack's replacing an earlier one's; sorted by type.
    pub processes: Vec<Process>,
    /// The type of the last process marked `default = true` (unless a later buildpack
    /// redefined that type without `default`).
    pub default_process: Option<String>,
    /// Image labels; for a key set by several buildpacks, the last one's value.
    pub labels: Vec<Label>,
    /// Slices of the app directory, in buildpack order.
    pub slices: Vec<Slice>,
    /// The buildpacks in group order, with their layers.
    pub buildpacks: Vec<BuiltBuildpack>,
}

/// One buildpack after its `bin/build`.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltBuildpack {
    pub id: String,
    pub version: String,
    pub api: String,
    pub homepage: Option<String>,
    /// `<layers>/<escaped id>` on the host.
    pub layers_dir: PathBuf,
    /// Its layers with at least one type set, sorted by name.
    pub layers: Vec<Layer>,
    /// `store.toml`, when it wrote one.
    pub store: Option<Store>,
    /// The Buildpack Plan entry names it listed in `build.toml` as unmet.
    pub unmet: Vec<String>,
}

/// A layer a buildpack left, from `<layer>.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub name: String,
    /// `<layers>/<escaped id>/<name>` on the host; it may not exist (see `has_dir`).
    pub path: PathBuf,
    pub types: LayerTypes,
    pub metadata: Table,
    /// `false`: only `<layer>.toml` exists, which for a launch layer means "reuse the
    /// previous image's layer".
    pub has_dir: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("build: the group names buildpack {id}@{version}, which is not among the component buildpacks of the build")]
    UnknownBuildpack { id: String, version: String },
    #[error("{}", FailedDisplay { id, version, why, output })]
    BuildpackFailed {
        id: String,
        version: String,
        /// What went wrong: its exit code, a signal, or no `bin/build`.
        why: String,
        /// The last lines it printed.
        output: Vec<String>,
    },
    #[error("build: buildpack {id} lists {name:?} as unmet in {}, but its Buildpack Plan has no such entry", path.display())]
    UnmetNotInPlan {
        id: String,
        name: String,
        path: PathBuf,
    },
    #[error("build: buildpack {id}: {source}")]
    Descriptor {
        id: String,
        #[source]
        source: DescriptorError,
    },
    #[error("build: {0}")]
    Sbom(#[from] SbomError),
    #[error("build: {0}")]
    Phase(#[from] PhaseError),
    #[error("build: buildpack {id}: {source}")]
    Program {
        id: String,
        #[source]
        source: ProgramError,
    },
    #[error("build: {what}: {source}")]
    Io { what: String, source: io::Error },
}

struct FailedDisplay<'a> {
    id: &'a str,
    version: &'a str,
    why: &'a str,
    output: &'a [String],
}

impl fmt::Display for FailedDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "build: buildpack {}@{} failed: {}",
            self.id, self.version, self.why
        )?;
        if !self.output.is_empty() {
            write!(f, "; its last output:")?;
            for line in self.output {
                write!(f, "\n  | {line}")?;
            }
        }
        Ok(())
    }
}

/// `<layers>/config/metadata.toml` as the lifecycle's builder writes it.
#[derive(Serialize)]
struct ConfigMetadata<'a> {
    #[serde(
        rename = "buildpack-default-process-type",
        skip_serializing_if = "Option::is_none"
    )]
    default_process: Option<&'a str>,
    buildpacks: Vec<&'a GroupBuildpack>,
    processes: &'a [Process],
    slices: &'a [Slice],
    labels: &'a [Label],
}

/// Runs `bin/build` of every buildpack of `outcome`'s group, in order. Each line a
/// buildpack prints goes to `logs` with [`Phase::Build`] and its id.
pub async fn build(
    ctx: &PhaseContext,
    outcome: &DetectOutcome,
    logs: &dyn LogSink,
) -> Result<BuildOutput, BuildError> {
    let scratch =
        scratch_dir(ctx, "kpackd-build-").map_err(io_err("create a scratch directory"))?;
    let sandbox = phase_sandbox(ctx, scratch.path(), true)?;
    let operator_env = OperatorEnv::load(&ctx.sandbox_root, scratch.path())?;
    match fs::remove_dir_all(ctx.layers_dir.join("sbom")) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(io_err("remove <layers>/sbom")(e));
        }
        _ => {}
    }

    let group = GroupRun {
        ctx,
        sandbox: &sandbox,
        scratch: scratch.path(),
        operator_env: &operator_env,
        logs,
    };
    let mut carried = Carried {
        env: base_env(ctx),
        plan: outcome.plan.clone(),
    };
    let mut output = BuildOutput::default();
    for (index, member) in outcome.group.group.iter().enumerate() {
        let bp = component(ctx, member)?;
        let (built, launch) = group.buildpack(index, bp, &mut carried).await?;
        if let Some(launch) = launch {
            merge_launch(&mut output, launch);
        }
        output.buildpacks.push(built);
    }
    output.processes.sort_by(|a, b| a.kind.cmp(&b.kind));
    write_config_metadata(ctx, outcome, &output)?;
    Ok(output)
}

/// The error of the I/O step `what`.
fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> BuildError {
    move |source| BuildError::Io {
        what: what.to_owned(),
        source,
    }
}

/// The component buildpack the group names as `member`.
fn component<'a>(
    ctx: &'a PhaseContext,
    member: &GroupBuildpack,
) -> Result<&'a BuildpackDir, BuildError> {
    ctx.buildpacks
        .iter()
        .find(|bp| {
            bp.id() == member.id && bp.version() == member.version && !bp.descriptor.is_composite()
        })
        .ok_or_else(|| BuildError::UnknownBuildpack {
            id: member.id.clone(),
            version: member.version.clone(),
        })
}

/// What every buildpack of one build shares.
struct GroupRun<'a> {
    ctx: &'a PhaseContext,
    sandbox: &'a PhaseSandbox,
    /// Where run directories and copies of env files go; buildpacks never see it whole.
    scratch: &'a Path,
    operator_env: &'a OperatorEnv,
    logs: &'a dyn LogSink,
}

/// What one buildpack hands the next: the environment its build layers made and the plan
/// entries nobody met yet.
struct Carried {
    env: Env,
    plan: ResolvedPlan,
}

impl GroupRun<'_> {
    /// Runs the `index`th buildpack of the group, `bp`, and reads what it left.
    async fn buildpack(
        &self,
        index: usize,
        bp: &BuildpackDir,
        carried: &mut Carried,
    ) -> Result<(BuiltBuildpack, Option<Launch>), BuildError> {
        let ctx = self.ctx;
        let id = bp.id();
        let api = bp.api();
        let descriptor_err = |source| BuildError::Descriptor {
            id: id.to_owned(),
            source,
        };
        let escaped = escape_id(id);
        let layers_dir = ctx.layers_dir.join(&escaped);
        let layers_inside = ctx.layers_dir_inside().join(&escaped);
        fs::create_dir_all(&layers_dir).map_err(io_err("create a buildpack's layers directory"))?;
        let bp_plan = carried.plan.buildpack_plan(id);
        self.run_bin_build(
            index,
            bp,
            &layers_dir,
            &layers_inside,
            &bp_plan,
            &carried.env,
        )
        .await?;

        // What it left. /layers is writable by every buildpack: whatever kpackd reads or
        // writes there on the host must not be a symlink, which could lead anywhere.
        real_dir(&ctx.layers_dir, &[&escaped]).map_err(io_err("check the layers directory"))?;
        let layers = read_layers(&layers_dir).map_err(|e| match e {
            LayersError::Descriptor(source) => descriptor_err(source),
            LayersError::Io(what, source) => BuildError::Io { what, source },
        })?;
        for file in ["launch.toml", "build.toml", "store.toml"] {
            refuse_symlink(&layers_dir.join(file)).map_err(io_err("read the buildpack's files"))?;
        }
        let launch =
            Launch::read(&layers_dir.join("launch.toml"), api, id).map_err(descriptor_err)?;
        let build_toml_path = layers_dir.join("build.toml");
        let build_toml = BuildToml::read(&build_toml_path).map_err(descriptor_err)?;
        let store = Store::read(&layers_dir.join("store.toml")).map_err(descriptor_err)?;
        let unmet: Vec<String> = build_toml
            .map(|b| b.unmet.into_iter().map(|u| u.name).collect())
            .unwrap_or_default();
        drop_met(&mut carried.plan, id, &bp_plan, &unmet, build_toml_path)?;

        // Its build layers change the environment of later buildpacks.
        for layer in layers.iter().filter(|l| l.types.build && l.has_dir) {
            // Not under its run directory, where the buildpack could have put symlinks.
            let copy = self
                .scratch
                .join(format!("env-copy-{index}"))
                .join(&layer.name);
            apply_build_layer(
                &mut carried.env,
                &layer.path,
                &layers_inside.join(&layer.name),
                &copy,
            )
            .map_err(io_err("apply a build layer's env files"))?;
        }

        sbom::check_declared(
            &format!("{id}@{}", bp.version()),
            &layers_dir,
            &layers_inside,
            &bp.descriptor.buildpack.sbom_formats,
        )?;
        collect_sboms(&ctx.layers_dir, &escaped, &layers_dir, &layers)
            .map_err(io_err("collect the buildpack's SBOM files"))?;
        let built = BuiltBuildpack {
            id: id.to_owned(),
            version: bp.version().to_owned(),
            api: bp.descriptor.api.clone(),
            homepage: bp.descriptor.buildpack.homepage.clone(),
            layers_dir,
            layers,
            store,
            unmet,
        };
        Ok((built, launch))
    }

    /// Runs `bp`'s `bin/build` with its Buildpack Plan `bp_plan`, in a run directory of
    /// its own that is its `/tmp`; fails unless it exits 0.
    async fn run_bin_build(
        &self,
        index: usize,
        bp: &BuildpackDir,
        layers_dir: &Path,
        layers_inside: &Path,
        bp_plan: &BuildpackPlan,
        build_env: &Env,
    ) -> Result<(), BuildError> {
        let ctx = self.ctx;
        let id = bp.id();
        let failed = |why: String, output: Vec<String>| BuildError::BuildpackFailed {
            id: id.to_owned(),
            version: bp.version().to_owned(),
            why,
            output,
        };
        let run_dir = self.scratch.join(format!("run-{index}"));
        fs::create_dir_all(&run_dir).map_err(io_err("create a run directory"))?;
        write_toml(&run_dir.join("plan.toml"), bp_plan).map_err(|source| {
            BuildError::Descriptor {
                id: id.to_owned(),
                source,
            }
        })?;
        for path in [&run_dir, &run_dir.join("plan.toml"), layers_dir] {
            ctx.hand_over(path)
                .map_err(io_err("give the run directory to the CNB user"))?;
        }
        let (sandbox, tmp) = self.sandbox.with_run_dir(&run_dir);
        let plan_path = tmp.join("plan.toml").to_string_lossy().into_owned();

        let mut env = buildpack_env(ctx, bp, build_env, self.operator_env)
            .map_err(io_err("read env files"))?;
        if bp.api() >= ApiVersion::new(0, 8) {
            env.insert(
                "CNB_LAYERS_DIR".into(),
                layers_inside.to_string_lossy().into_owned(),
            );
            env.insert("CNB_BP_PLAN_PATH".into(), plan_path.clone());
        }
        if !bp.path.join("bin/build").is_file() {
            return Err(failed("it has no bin/build".into(), Vec::new()));
        }
        let args = [
            layers_inside.to_string_lossy().into_owned(),
            ctx.platform_dir_inside().to_string_lossy().into_owned(),
            plan_path,
        ];
        let program = ctx.buildpack_dir_inside(bp).join("bin/build");
        tracing::debug!(buildpack = id, "build");
        self.logs.line(
            Phase::Build,
            None,
            &format!("Running the build of {id} {}", bp.version()),
        );
        let run = run_program(&sandbox, &program, &args, &env, Phase::Build, id, self.logs)
            .await
            .map_err(|source| BuildError::Program {
                id: id.to_owned(),
                source,
            })?;
        match run.code {
            Some(0) => Ok(()),
            Some(code) => Err(failed(format!("exit {code}"), run.tail)),
            None => Err(failed("killed by a signal".into(), run.tail)),
        }
    }
}

/// Removes from `plan`, for later buildpacks, the entries of `bp_plan` (buildpack `id`'s)
/// that it met: all but those it lists as `unmet` in `build_toml`.
fn drop_met(
    plan: &mut ResolvedPlan,
    id: &str,
    bp_plan: &BuildpackPlan,
    unmet: &[String],
    build_toml: PathBuf,
) -> Result<(), BuildError> {
    if let Some(name) = unmet
        .iter()
        .find(|name| !bp_plan.entries.iter().any(|e| &e.name == *name))
    {
        return Err(BuildError::UnmetNotInPlan {
            id: id.to_owned(),
            name: name.clone(),
            path: build_toml,
        });
    }
    let met: BTreeSet<&str> = bp_plan
        .entries
        .iter()
        .map(|e| e.name.as_str())
        .filter(|name| !unmet.iter().any(|u| u == name))
        .collect();
    plan.entries.retain(|e| !met.contains(e.name()));
    Ok(())
}

/// Writes `<layers>/config/metadata.toml`, which export reads.
fn write_config_metadata(
    ctx: &PhaseContext,
    outcome: &DetectOutcome,
    output: &BuildOutput,
) -> Result<(), BuildError> {
    let config_dir =
        real_dir(&ctx.layers_dir, &["config"]).map_err(io_err("create <layers>/config"))?;
    let metadata = ConfigMetadata {
        default_process: output.default_process.as_deref(),
        buildpacks: outcome.group.group.iter().collect(),
        processes: &output.processes,
        slices: &output.slices,
        labels: &output.labels,
    };
    write_toml(&config_dir.join("metadata.toml"), &metadata).map_err(|source| {
        BuildError::Descriptor {
            id: "(all)".into(),
            source,
        }
    })
}

/// Adds one buildpack's `launch.toml` to the output, as the lifecycle merges them.
fn merge_launch(output: &mut BuildOutput, launch: Launch) {
    for process in launch.processes {
        if process.default {
            output.default_process = Some(process.kind.clone());
        } else if output.default_process.as_deref() == Some(process.kind.as_str()) {
            tracing::warn!(
                process = %process.kind,
                buildpack = %process.buildpack_id,
                "a later buildpack redefines the default process type without `default = true`: the image has no default process"
            );
            output.default_process = None;
        }
        match output.processes.iter_mut().find(|p| p.kind == process.kind) {
            Some(existing) => *existing = process,
            None => output.processes.push(process),
        }
    }
    for label in launch.labels {
        match output.labels.iter_mut().find(|l| l.key == label.key) {
            Some(existing) => *existing = label,
            None => output.labels.push(label),
        }
    }
    output.slices.extend(launch.slices);
}

/// Prepends the layer's `bin/`, `lib/`, `include/`, `pkgconfig/` (those that exist) to
/// their path variables as the sandbox sees them, then applies `env/` and `env.build/`.
/// The env files are first copied to `copy` (regular files only: a symlink the buildpack
/// made would lead to host files).
fn apply_build_layer(env: &mut Env, host: &Path, inside: &Path, copy: &Path) -> io::Result<()> {
    const PATHS: [(&str, &[&str]); 4] = [
        ("bin", &["PATH"]),
        ("lib", &["LD_LIBRARY_PATH", "LIBRARY_PATH"]),
        ("include", &["CPATH"]),
        ("pkgconfig", &["PKG_CONFIG_PATH"]),
    ];
    for (subdir, vars) in PATHS {
        if !host.join(subdir).is_dir() {
            continue;
        }
        let dir = inside.join(subdir).to_string_lossy().into_owned();
        for var in vars {
            let value = match env.get(*var) {
                Some(old) if !old.is_empty() => format!("{dir}:{old}"),
                _ => dir.clone(),
            };
            env.insert((*var).to_owned(), value);
        }
    }
    for sub in ["env", "env.build"] {
        let from = host.join(sub);
        if !fs::symlink_metadata(&from).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        let to = copy.join(sub);
        fs::create_dir_all(&to)?;
        for entry in fs::read_dir(&from)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            if entry.metadata()?.len() > MAX_ENV_FILE_BYTES {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "env file {} is larger than {MAX_ENV_FILE_BYTES} bytes",
                        entry.path().display()
                    ),
                ));
            }
            fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    launcher::env::apply_layer_env_files(env, copy, launcher::env::Phase::Build, None)
}

/// `base` joined with `parts`, each created as a directory when missing; fails when one
/// exists as something else, a symlink in particular (`base` itself is trusted).
fn real_dir(base: &Path, parts: &[&str]) -> io::Result<PathBuf> {
    let mut path = base.to_path_buf();
    for part in parts {
        path.push(part);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not a directory (a symlink?)", path.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&path)?,
            Err(e) => return Err(e),
        }
    }
    Ok(path)
}

/// Copies a buildpack's SBOM files where export and the cache look for them:
/// `launch.sbom.<ext>` and `build.sbom.<ext>` to `<layers>/sbom/{launch,build}/<bp>/`,
/// `<layer>.sbom.<ext>` to `<layers>/sbom/<kind>/<bp>/<layer>/` for `launch` (launch
/// layers), `build` (build layers not for launch) and `cache` (cached layers). Symlinks are
/// not followed.
fn collect_sboms(
    layers_root: &Path,
    escaped: &str,
    bp_layers: &Path,
    layers: &[Layer],
) -> io::Result<()> {
    let copy = |from: &Path, kind: &str, layer: Option<&str>, ext: &str| -> io::Result<()> {
        if !fs::symlink_metadata(from).is_ok_and(|m| m.is_file()) {
            return Ok(());
        }
        let mut parts = vec!["sbom", kind, escaped];
        parts.extend(layer);
        let dir = real_dir(layers_root, &parts)?;
        let to = dir.join(format!("sbom.{ext}"));
        match fs::remove_file(&to) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs::copy(from, to).map(|_| ())
    };
    for ext in SBOM_EXTENSIONS {
        for kind in ["launch", "build"] {
            copy(
                &bp_layers.join(format!("{kind}.sbom.{ext}")),
                kind,
                None,
                ext,
            )?;
        }
        for layer in layers {
            let from = bp_layers.join(format!("{}.sbom.{ext}", layer.name));
            let types = layer.types;
            let kinds = [
                ("launch", types.launch),
                ("build", types.build && !types.launch),
                ("cache", types.cache),
            ];
            for (kind, wanted) in kinds {
                if wanted {
                    copy(&from, kind, Some(&layer.name), ext)?;
                }
            }
        }
    }
    Ok(())
}

/// Env files larger than this are refused.
const MAX_ENV_FILE_BYTES: u64 = 1024 * 1024;

enum LayersError {
    Descriptor(DescriptorError),
    Io(String, io::Error),
}

/// Reads every `<layer>.toml` in a buildpack's layers dir (sorted by name); layers with no
/// type set are left out and their directory renamed `<layer>.ignore`.
fn read_layers(dir: &Path) -> Result<Vec<Layer>, LayersError> {
    let io_err = |source| LayersError::Io(format!("read {}", dir.display()), source);
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".toml")) else {
            continue;
        };
        if ["launch", "build", "store"].contains(&name) || name.is_empty() {
            continue;
        }
        if entry.file_type().map_err(io_err)?.is_file() {
            names.push(name.to_owned());
        }
    }
    names.sort();
    let mut layers = Vec::new();
    for name in names {
        let meta = LayerMetadata::read(&dir.join(format!("{name}.toml")))
            .map_err(LayersError::Descriptor)?;
        let path = dir.join(&name);
        let has_dir = fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        if !meta.types.any() {
            if has_dir {
                let ignored = dir.join(format!("{name}.ignore"));
                let _ = fs::remove_dir_all(&ignored);
                fs::rename(&path, &ignored).map_err(|e| {
                    LayersError::Io(
                        format!("rename {} to {}", path.display(), ignored.display()),
                        e,
                    )
                })?;
            }
            tracing::debug!(layer = %path.display(), "layer has no type set: ignored");
            continue;
        }
        layers.push(Layer {
            name,
            path,
            types: meta.types,
            metadata: meta.metadata,
            has_dir,
        });
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::descriptor::ApiVersion;

    fn process(kind: &str, default: bool, bp: &str) -> Process {
        Process {
            kind: kind.into(),
            command: vec!["cmd".into()],
            args: Vec::new(),
            direct: true,
            default,
            working_dir: None,
            exec_env: Vec::new(),
            buildpack_id: bp.into(),
        }
    }

    #[test]
    fn launch_merging() {
        let mut output = BuildOutput::default();
        merge_launch(
            &mut output,
            Launch {
                labels: vec![Label {
                    key: "k".into(),
                    value: "a".into(),
                }],
                processes: vec![process("web", true, "a"), process("worker", false, "a")],
                slices: vec![Slice {
                    paths: vec!["a/*".into()],
                }],
            },
        );
        assert_eq!(output.default_process.as_deref(), Some("web"));
        merge_launch(
            &mut output,
            Launch {
                labels: vec![Label {
                    key: "k".into(),
                    value: "b".into(),
                }],
                processes: vec![process("web", false, "b")],
                slices: vec![Slice {
                    paths: vec!["b/*".into()],
                }],
            },
        );
        assert_eq!(output.default_process, None);
        assert_eq!(output.processes[0].buildpack_id, "b");
        assert_eq!(output.labels.len(), 1);
        assert_eq!(output.labels[0].value, "b");
        assert_eq!(output.slices.len(), 2);
    }

    #[test]
    fn all_false_layers_are_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        fs::create_dir(d.join("keep")).expect("mkdir");
        fs::write(d.join("keep.toml"), "[types]\nbuild = true\n").expect("write");
        fs::create_dir(d.join("drop")).expect("mkdir");
        fs::write(d.join("drop.toml"), "[metadata]\nx = 1\n").expect("write");
        fs::write(d.join("reuse.toml"), "[types]\nlaunch = true\n").expect("write");
        fs::write(d.join("launch.toml"), "").expect("write");
        let Ok(layers) = read_layers(d) else {
            panic!("read layers")
        };
        let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["keep", "reuse"]);
        assert!(!layers[1].has_dir);
        assert!(d.join("drop.ignore").is_dir());
        assert!(!d.join("drop").exists());
        let _ = ApiVersion::new(0, 9);
    }

    #[test]
    fn build_layer_paths_use_sandbox_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("bin")).expect("mkdir");
        fs::create_dir_all(dir.path().join("env.build")).expect("mkdir");
        fs::write(dir.path().join("env.build/FOO.default"), "bar").expect("write");
        let mut env = Env::new();
        env.insert("PATH".into(), "/usr/bin".into());
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("env.build/HOST"))
            .expect("symlink");
        let copy = dir.path().join("copy");
        apply_build_layer(&mut env, dir.path(), Path::new("/layers/bp/dep"), &copy).expect("apply");
        assert!(
            !env.contains_key("HOST"),
            "symlinked env files are not followed"
        );
        assert_eq!(env["PATH"], "/layers/bp/dep/bin:/usr/bin");
        assert_eq!(env["FOO"], "bar");
        assert!(!env.contains_key("LD_LIBRARY_PATH"));
    }
}
