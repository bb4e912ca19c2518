//! The project descriptor (`project.toml`) of an app: which of its files reach the
//! build (`include` / `exclude`), the build's environment, and an explicit group of
//! buildpacks (ids from the builder, or inline scripts).
//!
//! Both forms of the project-descriptor extension are read: schema 0.2 (`[_]
//! schema-version = "0.2"`, `[io.buildpacks]`) and 0.1 (no schema version, `[build]`).
//! Everything in the file comes from the source and is untrusted: mistakes are errors
//! that name the file and the line.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use serde::Deserialize;
use toml::Spanned;

/// The file a source's descriptor is read from when the image names none.
pub const DEFAULT_PROJECT_DESCRIPTOR: &str = "project.toml";

/// What a project descriptor asks of a build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectDescriptor {
    /// Which files of the app reach the build.
    pub files: FileSelection,
    /// Build-time environment, in the file's order.
    pub env: Vec<(String, String)>,
    /// The group to build with instead of the builder's order; empty: the order.
    pub group: Vec<GroupEntry>,
    /// Buildpacks put before every group of the order.
    pub pre: Vec<GroupEntry>,
    /// Buildpacks put after every group of the order.
    pub post: Vec<GroupEntry>,
}

/// `include` or `exclude`: gitignore-style patterns, relative to the app directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FileSelection {
    #[default]
    All,
    /// Only files matching one of these (or under a matching directory) are kept.
    Include(Vec<String>),
    /// Files matching one of these (or under a matching directory) are removed.
    Exclude(Vec<String>),
}

/// One buildpack of a descriptor's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEntry {
    /// A buildpack the builder provides; no version: the one it has.
    Buildpack { id: String, version: Option<String> },
    /// A buildpack made from a script in the descriptor.
    Inline(InlineBuildpack),
}

/// `[io.buildpacks.group.script]`: a buildpack whose `bin/build` is `inline`, run with
/// `shell`, and whose detection always passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineBuildpack {
    pub id: String,
    /// The Buildpack API the script is written against.
    pub api: String,
    /// Default `/bin/sh`.
    pub shell: String,
    pub inline: String,
}

/// The version inline buildpacks are given (they have none of their own).
pub const INLINE_VERSION: &str = "0.0.0";

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("the project descriptor {path} is not in the source")]
    Missing { path: String },
    #[error("read the project descriptor {path}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: String,
        line: usize,
        message: String,
    },
    #[error("apply the project descriptor's file selection to {path}")]
    Select {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write the inline buildpack {id}")]
    Inline {
        id: String,
        #[source]
        source: io::Error,
    },
    #[error("the project descriptor's pattern {pattern:?} is invalid")]
    Pattern {
        pattern: String,
        #[source]
        source: ignore::Error,
    },
}

impl ProjectDescriptor {
    /// Reads the descriptor of the app in `app_dir`: `named` (relative to the app
    /// directory) must exist; without a name, `project.toml` is read if it is there.
    /// `Ok(None)`: no descriptor.
    pub fn load(app_dir: &Path, named: Option<&str>) -> Result<Option<Self>, ProjectError> {
        let relative = named.unwrap_or(DEFAULT_PROJECT_DESCRIPTOR);
        let shown = relative.to_string();
        let Some(path) = super::app_dir::confined_path(Path::new(relative))
            .filter(|p| !p.as_os_str().is_empty())
        else {
            return Err(ProjectError::Missing { path: shown });
        };
        let path = app_dir.join(path);
        // The source is untrusted: the descriptor must be a regular file, not a link
        // that could lead out of the app directory.
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => return Err(ProjectError::Missing { path: shown }),
            Err(e) if e.kind() == io::ErrorKind::NotFound && named.is_none() => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ProjectError::Missing { path: shown })
            }
            Err(source) => {
                return Err(ProjectError::Read {
                    path: shown,
                    source,
                })
            }
        }
        let text = fs::read_to_string(&path).map_err(|source| ProjectError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&shown, &text).map(Some)
    }

    /// Parses `text`, the descriptor `path` (which names it in errors).
    pub fn parse(path: &str, text: &str) -> Result<Self, ProjectError> {
        let invalid = |span: Option<std::ops::Range<usize>>, message: String| {
            let start = span.map_or(0, |s| s.start).min(text.len());
            ProjectError::Invalid {
                path: path.to_string(),
                line: text[..start].matches('\n').count() + 1,
                message,
            }
        };
        let raw: RawDescriptor =
            toml::from_str(text).map_err(|e| invalid(e.span(), e.message().to_string()))?;
        let schema = raw
            .project_table
            .as_ref()
            .and_then(|t| t.schema_version.as_ref());
        let build = match schema.map(|v| v.get_ref().as_str()) {
            Some("0.2") => raw
                .io
                .and_then(|io| io.buildpacks)
                .map(Spanned::into_inner)
                .unwrap_or_default(),
            None | Some("0.1") => {
                if let Some(io) = raw.io.as_ref().and_then(|io| io.buildpacks.as_ref()) {
                    return Err(invalid(
                        Some(io.span()),
                        "[io.buildpacks] is schema 0.2: add `[_]` with `schema-version = \"0.2\"`"
                            .to_string(),
                    ));
                }
                raw.build.unwrap_or_default()
            }
            Some(other) => {
                return Err(invalid(
                    schema.map(Spanned::span),
                    format!("schema-version {other:?} is not supported (0.1 and 0.2 are)"),
                ))
            }
        };
        let files = match (build.include, build.exclude) {
            (Some(_), Some(exclude)) => {
                return Err(invalid(
                    Some(exclude.span()),
                    "`include` and `exclude` are both set; a descriptor may have only one"
                        .to_string(),
                ))
            }
            (Some(include), None) => FileSelection::Include(include.into_inner()),
            (None, Some(exclude)) => FileSelection::Exclude(exclude.into_inner()),
            (None, None) => FileSelection::All,
        };
        let mut env = Vec::new();
        for var in build.env.into_iter().chain(build.build.env) {
            let name = var.get_ref().name.clone();
            if !valid_env_name(&name) {
                return Err(invalid(
                    Some(var.span()),
                    format!("build env name {name:?} is not letters, digits and `_`, not starting with a digit"),
                ));
            }
            env.push((name, var.into_inner().value));
        }
        let entries = |list: Vec<Spanned<RawEntry>>| -> Result<Vec<GroupEntry>, ProjectError> {
            list.into_iter()
                .map(|entry| {
                    let span = entry.span();
                    entry
                        .into_inner()
                        .resolve()
                        .map_err(|m| invalid(Some(span), m))
                })
                .collect()
        };
        Ok(ProjectDescriptor {
            files,
            env,
            group: entries(build.group.into_iter().chain(build.buildpacks).collect())?,
            pre: entries(build.pre.group)?,
            post: entries(build.post.group)?,
        })
    }

    /// Whether the descriptor changes anything about a build.
    pub fn is_empty(&self) -> bool {
        *self == ProjectDescriptor::default()
    }
}

impl FileSelection {
    /// Removes from `app_dir` every file the selection leaves out (and directories
    /// left empty by `include`). Links are removed or kept, never followed.
    pub fn apply(&self, app_dir: &Path) -> Result<(), ProjectError> {
        let (patterns, include) = match self {
            FileSelection::All => return Ok(()),
            FileSelection::Include(p) => (p, true),
            FileSelection::Exclude(p) => (p, false),
        };
        let mut builder = GitignoreBuilder::new(app_dir);
        for pattern in patterns {
            builder
                .add_line(None, pattern)
                .map_err(|source| ProjectError::Pattern {
                    pattern: pattern.clone(),
                    source,
                })?;
        }
        let matcher = builder.build().map_err(|source| ProjectError::Pattern {
            pattern: patterns.join(", "),
            source,
        })?;
        select(&matcher, app_dir, include)
    }
}

/// Walks `dir` top-down. With `include`, a match keeps the entry (and all below it);
/// without, a match removes it — gitignore's rule that nothing below an excluded
/// directory comes back.
fn select(matcher: &Gitignore, dir: &Path, include: bool) -> Result<(), ProjectError> {
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ProjectError::Select { path, source }
    };
    for entry in fs::read_dir(dir).map_err(failed(dir))? {
        let entry = entry.map_err(failed(dir))?;
        let path = entry.path();
        let is_dir = entry.file_type().map_err(failed(&path))?.is_dir();
        let matched = matcher.matched(&path, is_dir).is_ignore();
        let remove = match (include, matched, is_dir) {
            (true, true, _) => false,
            (true, false, true) => {
                select(matcher, &path, include)?;
                fs::read_dir(&path).map_err(failed(&path))?.next().is_none()
            }
            (true, false, false) => true,
            (false, true, _) => true,
            (false, false, true) => {
                select(matcher, &path, include)?;
                false
            }
            (false, false, false) => false,
        };
        if remove {
            let removed = if is_dir {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(failed(&path))?;
        }
    }
    Ok(())
}

/// An id that is also a safe directory name once `/` is replaced.
fn valid_inline_id(id: &str) -> bool {
    id.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '-' | '_'))
        && id.split('/').all(|part| !part.chars().all(|c| c == '.'))
}

fn valid_env_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The whole file; tables of other tools (any reverse domain) are allowed and ignored.
#[derive(Deserialize)]
struct RawDescriptor {
    #[serde(rename = "_")]
    project_table: Option<RawProject>,
    /// 0.1's form of the build settings.
    build: Option<RawBuild>,
    io: Option<RawIo>,
}

#[derive(Deserialize)]
struct RawProject {
    #[serde(rename = "schema-version")]
    schema_version: Option<Spanned<String>>,
}

#[derive(Deserialize)]
struct RawIo {
    buildpacks: Option<Spanned<RawBuild>>,
}

/// `[io.buildpacks]` (0.2) and `[build]` (0.1) share their keys, except where a group and
/// the env are written: 0.2's `group` and `build.env`, 0.1's `buildpacks` and `env`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct RawBuild {
    include: Option<Spanned<Vec<String>>>,
    exclude: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    group: Vec<Spanned<RawEntry>>,
    #[serde(default)]
    buildpacks: Vec<Spanned<RawEntry>>,
    #[serde(default)]
    env: Vec<Spanned<RawEnv>>,
    #[serde(default)]
    build: RawBuildEnv,
    #[serde(default)]
    pre: RawGroup,
    #[serde(default)]
    post: RawGroup,
}

#[derive(Deserialize, Default)]
struct RawBuildEnv {
    #[serde(default)]
    env: Vec<Spanned<RawEnv>>,
}

#[derive(Deserialize, Default)]
struct RawGroup {
    #[serde(default)]
    group: Vec<Spanned<RawEntry>>,
}

#[derive(Deserialize)]
struct RawEnv {
    name: String,
    value: String,
}

#[derive(Deserialize)]
struct RawEntry {
    id: Option<String>,
    version: Option<String>,
    uri: Option<String>,
    script: Option<RawScript>,
}

#[derive(Deserialize)]
struct RawScript {
    api: String,
    inline: String,
    shell: Option<String>,
}

impl RawEntry {
    fn resolve(self) -> Result<GroupEntry, String> {
        if let Some(uri) = self.uri {
            return Err(format!(
                "buildpack uri {uri:?} is not supported: name a buildpack of the builder by `id` (and `version`), or write it inline with `script`"
            ));
        }
        let Some(id) = self.id.filter(|id| !id.is_empty()) else {
            return Err("a buildpack of the group has no `id`".to_string());
        };
        match (self.script, self.version) {
            (Some(_), Some(_)) => Err(format!(
                "buildpack {id} has both `version` and `script`; an entry has one of them"
            )),
            (Some(_), None) if !valid_inline_id(&id) => Err(format!(
                "inline buildpack id {id:?} must use only letters, digits, `.`, `/`, `-` and `_`, and not be only dots"
            )),
            (Some(script), None) => Ok(GroupEntry::Inline(InlineBuildpack {
                id,
                api: script.api,
                shell: script
                    .shell
                    .filter(|s| !s.trim().is_empty())
                    .unwrap_or_else(|| "/bin/sh".to_string()),
                inline: script.inline,
            })),
            (None, version) => Ok(GroupEntry::Buildpack { id, version }),
        }
    }
}

#[cfg(test)]
mod tests;
