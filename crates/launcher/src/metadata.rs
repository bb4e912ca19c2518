//! `<layers>/config/metadata.toml` as the exporter writes it (platform spec, "metadata.toml"):
//! the buildpacks in build order, which the launch environment is layered in, and the
//! processes the launcher can start.

use std::fs;
use std::io;
use std::path::Path;

use crate::error::Error;
use crate::toml::{self, Table, Value};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// `buildpack-default-process-type`: started when the launcher is given nothing to run.
    pub default_process: Option<String>,
    pub buildpacks: Vec<Buildpack>,
    pub processes: Vec<Process>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buildpack {
    pub id: String,
    /// The buildpack API version, `"<major>.<minor>"`.
    pub api: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub process_type: String,
    /// The command and its always-provided arguments; a single shell string for buildpack
    /// APIs before 0.9.
    pub command: Vec<String>,
    /// Default arguments, which user-provided arguments replace (API 0.9 on) or extend.
    pub args: Vec<String>,
    pub direct: bool,
    pub working_dir: Option<String>,
    pub buildpack_id: String,
    /// Execution environments the process is eligible for; empty means all.
    pub exec_env: Vec<String>,
}

impl Metadata {
    /// Reads the file; an image without one (no buildpack contributed anything) has no
    /// processes and no layers, and can still run a command given by the user.
    pub fn read(path: &Path) -> Result<Metadata, Error> {
        match fs::read_to_string(path) {
            Ok(text) => {
                Metadata::parse(&text).map_err(|e| Error(format!("{}: {e}", path.display())))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Metadata::default()),
            Err(e) => Err(Error(format!("cannot read {}: {e}", path.display()))),
        }
    }

    pub fn parse(text: &str) -> Result<Metadata, String> {
        let doc = toml::parse(text)?;
        let default_process =
            optional_string(&doc, "buildpack-default-process-type")?.filter(|t| !t.is_empty());
        let buildpacks = tables(&doc, "buildpacks")?
            .into_iter()
            .map(|bp| {
                Ok(Buildpack {
                    id: required_string(bp, "id", "buildpacks")?,
                    api: optional_string(bp, "api")?.unwrap_or_default(),
                })
            })
            .collect::<Result<_, String>>()?;
        let processes = tables(&doc, "processes")?
            .into_iter()
            .map(|p| {
                let command = match p.get("command") {
                    Some(Value::String(command)) => vec![command.clone()],
                    Some(_) => strings(p, "command")?,
                    None => Vec::new(),
                };
                Ok(Process {
                    process_type: required_string(p, "type", "processes")?,
                    command,
                    args: strings(p, "args")?,
                    direct: match p.get("direct") {
                        None => false,
                        Some(Value::Bool(direct)) => *direct,
                        Some(_) => return Err("`direct` of a process is not a boolean".to_owned()),
                    },
                    working_dir: optional_string(p, "working-dir")?.filter(|d| !d.is_empty()),
                    buildpack_id: optional_string(p, "buildpack-id")?.unwrap_or_default(),
                    exec_env: strings(p, "exec-env")?,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Metadata {
            default_process,
            buildpacks,
            processes,
        })
    }

    pub fn buildpack(&self, id: &str) -> Option<&Buildpack> {
        self.buildpacks.iter().find(|bp| bp.id == id)
    }
}

impl Buildpack {
    /// The buildpack's directory name under `<layers>`: its ID with `/` replaced by `_`.
    pub fn dir_name(&self) -> String {
        self.id.replace('/', "_")
    }

    /// Whether the buildpack speaks API `major.minor` or later; an unreadable version counts
    /// as current.
    pub fn api_at_least(&self, major: u32, minor: u32) -> bool {
        let mut parts = self.api.splitn(2, '.').map(|p| p.parse::<u32>());
        match (parts.next(), parts.next()) {
            (Some(Ok(ma)), Some(Ok(mi))) => (ma, mi) >= (major, minor),
            (Some(Ok(ma)), None) => (ma, 0) >= (major, minor),
            _ => true,
        }
    }
}

fn tables<'d>(doc: &'d Table, key: &str) -> Result<Vec<&'d Table>, String> {
    match doc.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::Table(table) => Ok(table),
                _ => Err(format!("`{key}` is not an array of tables")),
            })
            .collect(),
        Some(_) => Err(format!("`{key}` is not an array of tables")),
    }
}

fn optional_string(table: &Table, key: &str) -> Result<Option<String>, String> {
    match table.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("`{key}` is not a string")),
    }
}

fn required_string(table: &Table, key: &str, within: &str) -> Result<String, String> {
    optional_string(table, key)?.ok_or_else(|| format!("an entry of `{within}` has no `{key}`"))
}

fn strings(table: &Table, key: &str) -> Result<Vec<String>, String> {
    match table.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("`{key}` is not an array of strings"))
            })
            .collect(),
        Some(_) => Err(format!("`{key}` is not an array of strings")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_exporter_writes() {
        let metadata = Metadata::parse(
            r#"
buildpack-default-process-type = "web"

[[buildpacks]]
id = "examples/node"
version = "1.0.0"
api = "0.12"

[[buildpacks]]
id = "legacy"
version = "0.1"
api = "0.8"

[[processes]]
type = "web"
command = ["node", "server.js"]
args = ["--port", "8080"]
direct = true
buildpack-id = "examples/node"
working-dir = "/workspace/app"

[[processes]]
type = "worker"
command = "run-worker $QUEUE"
direct = false
buildpack-id = "legacy"
exec-env = ["production"]

[[slices]]
paths = ["static/*"]
"#,
        )
        .expect("parse");
        assert_eq!(metadata.default_process.as_deref(), Some("web"));
        assert_eq!(metadata.buildpacks.len(), 2);
        assert_eq!(metadata.buildpacks[0].dir_name(), "examples_node");
        assert!(metadata.buildpacks[0].api_at_least(0, 9));
        assert!(!metadata.buildpacks[1].api_at_least(0, 9));
        assert_eq!(
            metadata.processes[0],
            Process {
                process_type: "web".into(),
                command: vec!["node".into(), "server.js".into()],
                args: vec!["--port".into(), "8080".into()],
                direct: true,
                working_dir: Some("/workspace/app".into()),
                buildpack_id: "examples/node".into(),
                exec_env: vec![],
            }
        );
        assert_eq!(metadata.processes[1].command, vec!["run-worker $QUEUE"]);
        assert!(!metadata.processes[1].direct);
        assert_eq!(metadata.processes[1].exec_env, vec!["production"]);
    }

    #[test]
    fn rejects_malformed_metadata() {
        for text in [
            "[[processes]]\ncommand = [\"x\"]\n",
            "[[processes]]\ntype = \"web\"\ndirect = \"yes\"\n",
            "[[processes]]\ntype = \"web\"\nargs = [1]\n",
            "processes = \"web\"\n",
            "[[buildpacks]]\napi = \"0.12\"\n",
        ] {
            assert!(Metadata::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn missing_file_is_empty_metadata() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            Metadata::read(&dir.path().join("metadata.toml")),
            Ok(Metadata::default())
        );
    }
}
