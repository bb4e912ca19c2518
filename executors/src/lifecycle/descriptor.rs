//! The TOML files of the buildpack contract, as kpackd reads and writes them:
//! `buildpack.toml`, `order.toml`, the Build Plan a `bin/detect` writes, the resolved
//! `plan.toml` and `group.toml`, the Buildpack Plan a `bin/build` reads, and what a
//! `bin/build` leaves in its layers directory (`launch.toml`, `build.toml`, `store.toml`,
//! `<layer>.toml`).
//!
//! Every reader takes the file's path so that its errors name it. Unknown keys are ignored,
//! as the reference lifecycle does.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A free-form TOML table (`[metadata]` and the like).
pub type Table = toml::Table;

/// A buildpack contract file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    #[error("read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("parse {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

impl DescriptorError {
    fn invalid(path: &Path, reason: impl Into<String>) -> DescriptorError {
        DescriptorError::Invalid {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// Reads and parses a TOML file; `Ok(None)` when it does not exist.
fn read_toml_opt<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<Option<T>, DescriptorError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(DescriptorError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    parse_toml(path, &text).map(Some)
}

fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, DescriptorError> {
    let text = fs::read_to_string(path).map_err(|source| DescriptorError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_toml(path, &text)
}

fn parse_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, DescriptorError> {
    toml::from_str(text).map_err(|e| DescriptorError::Parse {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}

/// Serializes `value` as TOML into `path` (written whole to a new file, then renamed into
/// place, so that a symlink at either path is replaced, never followed).
pub fn write_toml<T: Serialize>(path: &Path, value: &T) -> Result<(), DescriptorError> {
    let text = toml::to_string(value).map_err(|e| DescriptorError::Write {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    })?;
    let tmp = path.with_extension("toml.tmp");
    let write = || -> io::Result<()> {
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        io::Write::write_all(&mut file, text.as_bytes())?;
        fs::rename(&tmp, path)
    };
    write().map_err(|source| DescriptorError::Write {
        path: path.to_path_buf(),
        source,
    })
}

use cnb::buildpack::DescriptorProblem;
pub use cnb::buildpack::{
    ApiVersion, BuildpackDescriptor, BuildpackInfo, DistroSpec, OrderEntry, OrderGroup, StackSpec,
    TargetSpec, MAX_BUILDPACK_API, MIN_BUILDPACK_API,
};

/// Reads `<dir>/buildpack.toml` and checks the id, version and API (see
/// [`BuildpackDescriptor::parse`]).
pub fn read_buildpack_toml(dir: &Path) -> Result<BuildpackDescriptor, DescriptorError> {
    let path = dir.join("buildpack.toml");
    let text = fs::read_to_string(&path).map_err(|source| DescriptorError::Read {
        path: path.clone(),
        source,
    })?;
    BuildpackDescriptor::parse(&text).map_err(|problem| match problem {
        DescriptorProblem::Syntax(source) => DescriptorError::Parse { path, source },
        DescriptorProblem::Invalid { message, .. } => DescriptorError::Invalid {
            path,
            reason: message,
        },
    })
}

/// `order.toml` (and the `[[order]]` of a composite buildpack).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Order {
    #[serde(default)]
    pub order: Vec<OrderGroup>,
}

impl Order {
    pub fn read(path: &Path) -> Result<Order, DescriptorError> {
        read_toml(path)
    }
}

/// The Build Plan a `bin/detect` writes to `$CNB_BUILD_PLAN_PATH`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct BuildPlan {
    #[serde(default)]
    pub provides: Vec<Provide>,
    #[serde(default)]
    pub requires: Vec<Require>,
    #[serde(default)]
    pub or: Vec<PlanSections>,
}

/// One alternative `(provides, requires)` pair of a Build Plan.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct PlanSections {
    #[serde(default)]
    pub provides: Vec<Provide>,
    #[serde(default)]
    pub requires: Vec<Require>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Provide {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Require {
    pub name: String,
    #[serde(default, skip_serializing_if = "Table::is_empty")]
    pub metadata: Table,
    /// Rejected: a version belongs in `metadata.version`.
    #[serde(default, skip_serializing)]
    pub version: Option<toml::Value>,
}

impl BuildPlan {
    /// Reads the plan a `bin/detect` wrote; an empty or missing file is an empty plan.
    pub fn read(path: &Path) -> Result<BuildPlan, DescriptorError> {
        let plan: BuildPlan = read_toml_opt(path)?.unwrap_or_default();
        let all_requires = plan
            .requires
            .iter()
            .chain(plan.or.iter().flat_map(|o| o.requires.iter()));
        for require in all_requires {
            if require.version.is_some() {
                return Err(DescriptorError::invalid(
                    path,
                    format!(
                        "requires {:?} has a top-level `version`: put it in `metadata.version`",
                        require.name
                    ),
                ));
            }
        }
        Ok(plan)
    }

    /// The alternatives in trial order: the top-level sections, then each `[[or]]`.
    pub fn options(&self) -> Vec<PlanSections> {
        std::iter::once(PlanSections {
            provides: self.provides.clone(),
            requires: self.requires.clone(),
        })
        .chain(self.or.iter().cloned())
        .collect()
    }
}

/// `<layers>/group.toml`: the buildpacks detect chose, in build order.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Group {
    #[serde(default)]
    pub group: Vec<GroupBuildpack>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct GroupBuildpack {
    pub id: String,
    pub version: String,
    pub api: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
}

impl Group {
    pub fn read(path: &Path) -> Result<Group, DescriptorError> {
        read_toml(path)
    }
}

/// `<layers>/plan.toml`: the resolved build plan.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct ResolvedPlan {
    #[serde(default)]
    pub entries: Vec<ResolvedEntry>,
}

/// One dependency: who provides it and every requirement of it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ResolvedEntry {
    pub providers: Vec<Provider>,
    pub requires: Vec<Require>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Provider {
    pub id: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub extension: bool,
}

impl ResolvedEntry {
    /// The dependency name (every requirement of an entry has the same).
    pub fn name(&self) -> &str {
        self.requires.first().map_or("", |r| r.name.as_str())
    }
}

impl ResolvedPlan {
    pub fn read(path: &Path) -> Result<ResolvedPlan, DescriptorError> {
        Ok(read_toml_opt(path)?.unwrap_or_default())
    }

    /// The Buildpack Plan of buildpack `id`: every requirement of every entry it provides.
    pub fn buildpack_plan(&self, id: &str) -> BuildpackPlan {
        let entries = self
            .entries
            .iter()
            .filter(|e| e.providers.iter().any(|p| p.id == id))
            .flat_map(|e| e.requires.iter())
            .map(|r| BuildpackPlanEntry {
                name: r.name.clone(),
                metadata: r.metadata.clone(),
            })
            .collect();
        BuildpackPlan { entries }
    }
}

/// The Buildpack Plan (`$CNB_BP_PLAN_PATH`) given to a `bin/build`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct BuildpackPlan {
    #[serde(default)]
    pub entries: Vec<BuildpackPlanEntry>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct BuildpackPlanEntry {
    pub name: String,
    #[serde(default, skip_serializing_if = "Table::is_empty")]
    pub metadata: Table,
}

/// `launch.toml` of one buildpack, normalised to the API ≥ 0.9 form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Launch {
    pub labels: Vec<Label>,
    pub processes: Vec<Process>,
    pub slices: Vec<Slice>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Label {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Slice {
    #[serde(default)]
    pub paths: Vec<String>,
}

/// A process type, as `<layers>/config/metadata.toml` records it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Process {
    #[serde(rename = "type")]
    pub kind: String,
    /// The executable and the arguments always passed to it.
    pub command: Vec<String>,
    /// Arguments the user may replace.
    #[serde(default)]
    pub args: Vec<String>,
    /// `false` only for API < 0.9 shell processes.
    #[serde(default)]
    pub direct: bool,
    /// Marked `default = true` by its buildpack (not written to metadata.toml).
    #[serde(skip)]
    pub default: bool,
    #[serde(
        default,
        rename = "working-dir",
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    #[serde(default, rename = "exec-env", skip_serializing_if = "Vec::is_empty")]
    pub exec_env: Vec<String>,
    #[serde(default, rename = "buildpack-id")]
    pub buildpack_id: String,
}

#[derive(Deserialize)]
struct RawLaunch {
    #[serde(default)]
    labels: Vec<Label>,
    #[serde(default)]
    processes: Vec<RawProcess>,
    #[serde(default)]
    slices: Vec<Slice>,
}

#[derive(Deserialize)]
struct RawProcess {
    #[serde(rename = "type")]
    kind: String,
    command: Option<toml::Value>,
    #[serde(default)]
    args: Vec<String>,
    direct: Option<bool>,
    #[serde(default)]
    default: bool,
    #[serde(default, rename = "working-dir")]
    working_dir: Option<String>,
    #[serde(default, rename = "exec-env")]
    exec_env: Vec<String>,
}

impl Launch {
    /// Reads `launch.toml` written by buildpack `buildpack_id` of Buildpack API `api`;
    /// `Ok(None)` when there is none.
    pub fn read(
        path: &Path,
        api: ApiVersion,
        buildpack_id: &str,
    ) -> Result<Option<Launch>, DescriptorError> {
        let Some(raw) = read_toml_opt::<RawLaunch>(path)? else {
            return Ok(None);
        };
        let mut processes: Vec<Process> = Vec::new();
        for raw_process in raw.processes {
            let process = normalise_process(path, api, buildpack_id, raw_process)?;
            if processes.iter().any(|p| p.kind == process.kind) {
                return Err(DescriptorError::invalid(
                    path,
                    format!("process type {:?} is defined twice", process.kind),
                ));
            }
            processes.push(process);
        }
        if processes.iter().filter(|p| p.default).count() > 1 {
            return Err(DescriptorError::invalid(
                path,
                "more than one process has `default = true`",
            ));
        }
        let mut labels: Vec<Label> = Vec::new();
        for label in raw.labels {
            if labels.iter().any(|l| l.key == label.key) {
                return Err(DescriptorError::invalid(
                    path,
                    format!("label {:?} is defined twice", label.key),
                ));
            }
            labels.push(label);
        }
        Ok(Some(Launch {
            labels,
            processes,
            slices: raw.slices,
        }))
    }
}

fn normalise_process(
    path: &Path,
    api: ApiVersion,
    buildpack_id: &str,
    raw: RawProcess,
) -> Result<Process, DescriptorError> {
    let kind = raw.kind;
    // The spec allows letters, digits, `.`, `_`, `-`; like the reference lifecycle, only
    // what would break paths and shells is refused.
    if kind.is_empty() || kind.contains(['/', '>', '<', ':', '|', '&', '\\']) {
        return Err(DescriptorError::invalid(
            path,
            format!("process type {kind:?} must be non-empty without any of / > < : | & \\"),
        ));
    }
    let context =
        |reason: &str| DescriptorError::invalid(path, format!("process {kind:?}: {reason}"));
    let (command, direct) = if api < ApiVersion::new(0, 9) {
        match raw.command {
            Some(toml::Value::String(command)) if !command.is_empty() => {
                (vec![command], raw.direct.unwrap_or(false))
            }
            _ => {
                return Err(context(&format!(
                    "`command` must be a non-empty string for buildpack API {api}"
                )))
            }
        }
    } else {
        if raw.direct.is_some() {
            return Err(context(&format!(
                "`direct` is not allowed from buildpack API 0.9 on (this is {api})"
            )));
        }
        let command = match raw.command {
            Some(toml::Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    toml::Value::String(s) => Ok(s),
                    _ => Err(context("`command` must be an array of strings")),
                })
                .collect::<Result<Vec<String>, _>>()?,
            _ => {
                return Err(context(&format!(
                    "`command` must be an array of strings for buildpack API {api}"
                )))
            }
        };
        if command.first().is_none_or(String::is_empty) {
            return Err(context("`command` must name an executable"));
        }
        (command, true)
    };
    Ok(Process {
        kind,
        command,
        args: raw.args,
        direct,
        default: raw.default,
        working_dir: raw.working_dir,
        exec_env: raw.exec_env,
        buildpack_id: buildpack_id.to_owned(),
    })
}

/// `build.toml`: the Buildpack Plan entries the buildpack did not meet.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct BuildToml {
    #[serde(default)]
    pub unmet: Vec<Unmet>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Unmet {
    pub name: String,
}

impl BuildToml {
    pub fn read(path: &Path) -> Result<Option<BuildToml>, DescriptorError> {
        read_toml_opt(path)
    }
}

/// `store.toml`: metadata kept from build to build.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Store {
    #[serde(default)]
    pub metadata: Table,
}

impl Store {
    pub fn read(path: &Path) -> Result<Option<Store>, DescriptorError> {
        read_toml_opt(path)
    }
}

/// The `[types]` of a layer.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct LayerTypes {
    #[serde(default)]
    pub launch: bool,
    #[serde(default)]
    pub build: bool,
    #[serde(default)]
    pub cache: bool,
}

impl LayerTypes {
    pub fn any(self) -> bool {
        self.launch || self.build || self.cache
    }
}

/// `<layer>.toml`: the layer's types and free-form metadata.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct LayerMetadata {
    #[serde(default)]
    pub types: LayerTypes,
    #[serde(default)]
    pub metadata: Table,
}

impl LayerMetadata {
    /// Reads `<layer>.toml`. From Buildpack API 0.6 on (all kpackd runs) the types belong
    /// in `[types]`: top-level `launch`/`build`/`cache` keys are an error.
    pub fn read(path: &Path) -> Result<LayerMetadata, DescriptorError> {
        let table: Table = read_toml(path)?;
        for key in ["launch", "build", "cache"] {
            if table.contains_key(key) {
                return Err(DescriptorError::invalid(
                    path,
                    format!("top-level `{key}` is not allowed: put it in [types]"),
                ));
            }
        }
        table.try_into().map_err(|e| DescriptorError::Parse {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }
}

/// A buildpack id as a directory name: every `/` becomes `_`.
pub fn escape_id(id: &str) -> String {
    id.replace('/', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn buildpack_toml_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "buildpack.toml",
            "api = \"0.8\"\n[buildpack]\nid = \"x\"\nversion = \"1\"\n[[stacks]]\nid = \"*\"\n",
        );
        let d = read_buildpack_toml(dir.path()).expect("parse");
        assert!(d.effective_targets().is_empty());

        write(
            dir.path(),
            "buildpack.toml",
            "api = \"0.5\"\n[buildpack]\nid = \"x\"\nversion = \"1\"\n",
        );
        let err = read_buildpack_toml(dir.path()).expect_err("too old");
        assert!(err.to_string().contains("buildpack.toml"), "{err}");
        assert!(err.to_string().contains("Buildpack API 0.5"), "{err}");

        write(
            dir.path(),
            "buildpack.toml",
            "api = \"0.10\"\n[buildpack]\n",
        );
        let err = read_buildpack_toml(dir.path()).expect_err("no id");
        assert!(matches!(err, DescriptorError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("buildpack.toml"), "{err}");
    }

    #[test]
    fn launch_toml_both_command_forms() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(
            dir.path(),
            "launch.toml",
            r#"
[[processes]]
type = "web"
command = "bundle exec rackup"
args = ["-p", "8080"]
default = true
[[processes]]
type = "worker"
command = "worker"
direct = true
working-dir = "/workspace/sub"
[[labels]]
key = "k"
value = "v"
[[slices]]
paths = ["static/*"]
"#,
        );
        let launch = Launch::read(&path, ApiVersion::new(0, 8), "bp")
            .expect("parse")
            .expect("exists");
        assert_eq!(launch.processes[0].command, ["bundle exec rackup"]);
        assert!(!launch.processes[0].direct);
        assert!(launch.processes[0].default);
        assert!(launch.processes[1].direct);
        assert_eq!(
            launch.processes[1].working_dir.as_deref(),
            Some("/workspace/sub")
        );
        assert_eq!(launch.labels[0].value, "v");
        assert_eq!(launch.slices[0].paths, ["static/*"]);
        let err = Launch::read(&path, ApiVersion::new(0, 10), "bp").expect_err("string command");
        assert!(err.to_string().contains("launch.toml"), "{err}");

        let path = write(
            dir.path(),
            "launch.toml",
            "[[processes]]\ntype = \"web\"\ncommand = [\"node\", \"server.js\"]\nargs = [\"8080\"]\n",
        );
        let launch = Launch::read(&path, ApiVersion::new(0, 12), "bp")
            .expect("parse")
            .expect("exists");
        assert_eq!(launch.processes[0].command, ["node", "server.js"]);
        assert!(launch.processes[0].direct);
        assert_eq!(launch.processes[0].buildpack_id, "bp");
        assert_eq!(
            Launch::read(&dir.path().join("none"), ApiVersion::new(0, 12), "bp").expect("ok"),
            None
        );
    }

    #[test]
    fn layer_metadata_types_and_rejects_top_level_types() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(
            dir.path(),
            "dep.toml",
            "[types]\nlaunch = true\ncache = true\n[metadata]\nversion = \"1.2\"\n",
        );
        let meta = LayerMetadata::read(&path).expect("parse");
        assert_eq!(
            meta.types,
            LayerTypes {
                launch: true,
                build: false,
                cache: true
            }
        );
        assert_eq!(meta.metadata["version"].as_str(), Some("1.2"));
        let path = write(dir.path(), "old.toml", "launch = true\n");
        let err = LayerMetadata::read(&path).expect_err("top-level types");
        assert!(err.to_string().contains("old.toml"), "{err}");
    }

    #[test]
    fn build_plan_rejects_top_level_version_and_lists_options() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(
            dir.path(),
            "plan.toml",
            "[[provides]]\nname = \"a\"\n[[or]]\n[[or.requires]]\nname = \"b\"\n[or.requires.metadata]\nv = 1\n",
        );
        let plan = BuildPlan::read(&path).expect("parse");
        let options = plan.options();
        assert_eq!(options.len(), 2);
        assert_eq!(options[1].requires[0].metadata["v"].as_integer(), Some(1));
        let path = write(
            dir.path(),
            "bad.toml",
            "[[requires]]\nname = \"a\"\nversion = \"1\"\n",
        );
        assert!(BuildPlan::read(&path).is_err());
        assert_eq!(
            BuildPlan::read(&dir.path().join("missing")).expect("ok"),
            BuildPlan::default()
        );
    }

    #[test]
    fn resolved_plan_round_trip_and_buildpack_plan() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plan = ResolvedPlan {
            entries: vec![ResolvedEntry {
                providers: vec![Provider {
                    id: "a".into(),
                    version: "1".into(),
                    extension: false,
                }],
                requires: vec![Require {
                    name: "node".into(),
                    metadata: toml::toml! { version = "18" },
                    version: None,
                }],
            }],
        };
        let path = dir.path().join("plan.toml");
        write_toml(&path, &plan).expect("write");
        let text = fs::read_to_string(&path).expect("read");
        assert!(text.contains("[[entries.providers]]"), "{text}");
        assert_eq!(ResolvedPlan::read(&path).expect("read"), plan);
        assert_eq!(plan.buildpack_plan("a").entries[0].name, "node");
        assert!(plan.buildpack_plan("b").entries.is_empty());
    }
}
