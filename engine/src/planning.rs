//! Making a plan: kpack.toml + the recorded state + the upstreams resolved now → a
//! [`Plan`], and the plan file `kpackd plan --out` writes and `kpackd apply PLANFILE`
//! reads.
//!
//! # For apply
//!
//! ```text
//! let config = planner::load(path)?;
//! let dir = planning::state_dir(&config, cli_state_dir);
//! let state = State::open(&dir)?;                        // and StateLock::acquire(&dir, ..)
//! let planned = planning::make_plan(&config, &state, &targets).await?;
//! //   or, from a saved plan: let file = PlanFile::read(p)?; file.check_current(&state)?;
//! //   file.check_config(&config)?; let planned = file.into_planned(config);
//! for change in &planned.plan.changes {                  // Action::Build | Rebase | Forget
//!     let image = planned.image(&change.image);          // &planner::Image: tag(s), cache, history…
//!     let inputs = change.inputs.as_ref();               // pinned digests, id@version → digest
//!     let pins = planned.pins(&change.image);            // ImagePins: where to get exactly those
//!     //   pins.source: SourcePin::Git { url, commit, sub_path, .. } | Path { .. } | Blob { archive, .. }
//!     //   pins.stack: StackPin { build_image (repo@digest), run_image (repo@digest), stack_id, target }
//!     //   pins.buildpacks: id@version → BuildpackPin { digest, location: Directory { path } | Image { reference } }
//!     // state.begin_build(&NewBuild { image, action, reasons, details, inputs, tag })
//!     //   → state.transition(id, ResolvingSource…) → state.finish(id, Outcome::…)
//! }
//! ```
//!
//! A rebase's `inputs.last_image` is the digest of the image whose run image layers are
//! replaced; its `inputs.run_image` the new run image digest (`pins.stack.run_image`).
//! Builds are keyed by the image name; the lineage and serial in [`Plan`] are the
//! state's when the plan was made.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};

use imageref::Digest;
use planner::diff::{Desired, DesiredBuilder, Recorded};
use planner::plan::Plan;
use planner::{Builder, Config, Image};
use serde::{Deserialize, Serialize};

use crate::desired::{desired, desired_builders, stack_of};
use crate::resolve::{resolve, BuildpackPin, Resolution, ResolveOptions, SourcePin, StackPin};
use crate::state::{State, StateError};

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PlanError {
    #[error("no image named `{name}` in kpack.toml{}", known_names(known))]
    #[diagnostic(help("an image name is a key of an [images.<name>] table"))]
    UnknownTarget { name: String, known: Vec<String> },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("read the plan file {}", path.display())]
    ReadPlan {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a kpackd plan file: {message}", path.display())]
    InvalidPlan { path: PathBuf, message: String },
    #[error("write the plan file {}", path.display())]
    WritePlan {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[diagnostic(help("a saved plan applies only to the state it was made against"))]
    #[error(
        "the plan is stale: it was made against state {plan_lineage} at serial {plan_serial}, \
         the state is now {state_lineage} at serial {state_serial}; run `kpackd plan` again"
    )]
    Stale {
        plan_lineage: String,
        plan_serial: u64,
        state_lineage: String,
        state_serial: u64,
    },
    #[error("the plan is stale: {} changed since the plan was made; run `kpackd plan` again", path.display())]
    ConfigChanged { path: PathBuf },
}

fn known_names(known: &[String]) -> String {
    if known.is_empty() {
        "; it declares no images".to_string()
    } else {
        format!("; the images are: {}", known.join(", "))
    }
}

/// The state directory: the global `--state-dir` when given, else kpack.toml's.
pub fn state_dir(config: &Config, cli: Option<&Path>) -> PathBuf {
    cli.map_or_else(|| config.settings.state_dir.clone(), Path::to_path_buf)
}

/// The images a plan covers: all, or the named ones (each must exist).
pub fn select<'c>(config: &'c Config, targets: &[String]) -> Result<Vec<&'c Image>, PlanError> {
    if targets.is_empty() {
        return Ok(config.images.values().collect());
    }
    let mut chosen = BTreeSet::new();
    for name in targets {
        if !config.images.contains_key(name) {
            return Err(PlanError::UnknownTarget {
                name: name.clone(),
                known: config.images.keys().cloned().collect(),
            });
        }
        chosen.insert(name.as_str());
    }
    Ok(config
        .images
        .values()
        .filter(|i| chosen.contains(i.name.as_str()))
        .collect())
}

/// The builders a plan publishes: every assembled builder with a `tag`, or, for a plan
/// of named images, those their images are built with.
pub fn published<'c>(
    config: &'c Config,
    images: &[&Image],
    targets: &[String],
) -> Vec<&'c Builder> {
    config
        .builders
        .values()
        .filter(|b| b.publishes())
        .filter(|b| targets.is_empty() || images.iter().any(|i| i.builder == b.name))
        .collect()
}

/// A plan and everything needed to carry it out.
#[derive(Debug, Clone)]
pub struct Planned {
    pub config: Config,
    pub plan: Plan,
    /// The images planned (`--target` narrows them).
    pub targets: Vec<String>,
    /// What the rules were given, per planned image.
    pub desired: Vec<Desired>,
    /// What the publishing rules were given, per published builder.
    pub desired_builders: Vec<DesiredBuilder>,
    /// What every upstream was resolved to.
    pub resolution: Resolution,
}

/// What one image's build is made from, pinned.
#[derive(Debug, Clone, Copy)]
pub struct ImagePins<'p> {
    pub source: Option<&'p SourcePin>,
    pub stack: Option<&'p StackPin>,
    pub buildpacks: Option<&'p std::collections::BTreeMap<String, BuildpackPin>>,
}

impl Planned {
    /// The kpack.toml table of an image in the plan (None for an image to forget).
    pub fn image(&self, name: &str) -> Option<&Image> {
        self.config.images.get(name)
    }

    pub fn desired(&self, name: &str) -> Option<&Desired> {
        self.desired.iter().find(|d| d.image == name)
    }

    /// Where to get exactly what the plan pinned for an image.
    pub fn pins(&self, name: &str) -> ImagePins<'_> {
        let image = self.image(name);
        ImagePins {
            source: image.and_then(|i| self.resolution.sources.get(&i.source.identity())),
            stack: image.and_then(|i| self.resolution.stacks.get(&stack_of(&self.config, i))),
            buildpacks: image.and_then(|i| self.resolution.buildpacks.get(&i.builder)),
        }
    }

    /// The plan as `--out` saves it.
    pub fn plan_file(&self) -> Result<PlanFile, PlanError> {
        Ok(PlanFile {
            plan: self.plan.clone(),
            config_path: std::path::absolute(&self.config.path).map_err(|source| {
                PlanError::ReadPlan {
                    path: self.config.path.clone(),
                    source,
                }
            })?,
            config_sha256: config_digest(&self.config.path)?,
            targets: self.targets.clone(),
            desired: self.desired.clone(),
            desired_builders: self.desired_builders.clone(),
            resolution: self.resolution.clone(),
        })
    }
}

/// Plans `targets` (all images when empty) of `config` against `state`: reads what the
/// state recorded (at once, before the future is first polled), resolves every upstream
/// (caches under the state's directory), and applies the rules. The future does not
/// borrow `state`, and is `Send`.
pub fn make_plan<'a>(
    config: &'a Config,
    state: &State,
    targets: &'a [String],
) -> impl Future<Output = Result<Planned, PlanError>> + Send + 'a {
    // A writer has marked dead builds `interrupted` already; a reader (`plan`) sees
    // them as the next writer will.
    let read = state.recorded_for_reader();
    let options = ResolveOptions::new(config, state.dir());
    async move { plan_with(config, read?, targets, &options).await }
}

/// [`make_plan`] with the state already read and resolution options of the caller's
/// choosing. The future is `Send`.
pub async fn plan_with(
    config: &Config,
    mut recorded: Recorded,
    targets: &[String],
    options: &ResolveOptions,
) -> Result<Planned, PlanError> {
    let images = select(config, targets)?;
    if !targets.is_empty() {
        // A targeted plan neither forgets nor mentions the other images.
        recorded
            .images
            .retain(|name, _| images.iter().any(|i| &i.name == name));
    }
    let published = published(config, &images, targets);
    let resolution = resolve(config, &images, &published, options).await;
    let desired = desired(config, &images, &resolution);
    let desired_builders = desired_builders(config, &published, &resolution);
    let mut plan = planner::diff::diff(&desired, &resolution.observed, &recorded);
    plan.builders =
        planner::diff::diff_builders(&desired_builders, &resolution.observed, &recorded.builders);
    plan.config = config.path.display().to_string();
    tracing::info!(
        images = images.len(),
        upstreams = resolution.upstreams,
        failed = resolution.observed.failures.len(),
        "planned"
    );
    Ok(Planned {
        config: config.clone(),
        plan,
        targets: images.iter().map(|i| i.name.clone()).collect(),
        desired,
        desired_builders,
        resolution,
    })
}

/// `sha256:<hex>` of the kpack.toml file.
fn config_digest(path: &Path) -> Result<String, PlanError> {
    let bytes = std::fs::read(path).map_err(|source| PlanError::ReadPlan {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Digest::sha256(&bytes).to_string())
}

/// A saved plan: the JSON plan of `kpackd plan --json` plus what apply needs to carry it
/// out exactly: the configuration it was made from and every pinned upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanFile {
    #[serde(flatten)]
    pub plan: Plan,
    /// kpack.toml, absolute.
    pub config_path: PathBuf,
    /// `sha256:<hex>` of kpack.toml when the plan was made.
    pub config_sha256: String,
    /// The images planned.
    pub targets: Vec<String>,
    pub desired: Vec<Desired>,
    /// Absent in plans saved before builders were published.
    #[serde(default)]
    pub desired_builders: Vec<DesiredBuilder>,
    pub resolution: Resolution,
}

impl PlanFile {
    pub fn read(path: &Path) -> Result<PlanFile, PlanError> {
        let text = std::fs::read_to_string(path).map_err(|source| PlanError::ReadPlan {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| PlanError::InvalidPlan {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Writes the file (mode 0600: it names registries and paths).
    pub fn write(&self, path: &Path) -> Result<(), PlanError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let write_err = |source| PlanError::WritePlan {
            path: path.to_path_buf(),
            source,
        };
        let json = serde_json::to_vec_pretty(self).map_err(|e| write_err(e.into()))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(write_err)?;
        file.write_all(&json).map_err(write_err)?;
        file.write_all(b"\n").map_err(write_err)
    }

    /// Refuses the plan when the state's lineage or serial moved since it was made.
    pub fn check_current(&self, state: &State) -> Result<(), PlanError> {
        let serial = state.serial()?;
        if self.plan.lineage != state.lineage() || self.plan.serial != serial {
            return Err(PlanError::Stale {
                plan_lineage: self.plan.lineage.clone(),
                plan_serial: self.plan.serial,
                state_lineage: state.lineage().to_string(),
                state_serial: serial,
            });
        }
        Ok(())
    }

    /// Refuses the plan when kpack.toml changed since it was made.
    pub fn check_config(&self, config: &Config) -> Result<(), PlanError> {
        if config_digest(&config.path)? != self.config_sha256 {
            return Err(PlanError::ConfigChanged {
                path: config.path.clone(),
            });
        }
        Ok(())
    }

    /// The plan with the configuration it was made from (loaded by the caller from
    /// [`PlanFile::config_path`]).
    pub fn into_planned(self, config: Config) -> Planned {
        Planned {
            config,
            plan: self.plan,
            targets: self.targets,
            desired: self.desired,
            desired_builders: self.desired_builders,
            resolution: self.resolution,
        }
    }
}
