//! Directory buildpacks as a store holds them: what their `buildpack.toml` declares (id,
//! version, and a composite's order), and which version an order entry without one means.
//! The descriptor is parsed and checked by the same code the lifecycle runs
//! ([`cnb::buildpack`]).

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cnb::buildpack::{BuildpackDescriptor, DescriptorProblem};
use serde::{Deserialize, Serialize};

/// A buildpack directory of a store, as its `buildpack.toml` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryBuildpack {
    /// The directory, resolved against kpack.toml's directory.
    pub path: PathBuf,
    pub id: String,
    pub version: String,
    /// A composite buildpack's order; empty for a component buildpack.
    pub order: Vec<Group>,
}

impl DirectoryBuildpack {
    /// `id@version`, as plans and build metadata name a buildpack.
    pub fn id_version(&self) -> String {
        format!("{}@{}", self.id, self.version)
    }
}

/// Buildpacks that detect and build together; one group of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    #[serde(rename = "group")]
    pub buildpacks: Vec<BuildpackRef>,
}

/// A buildpack named in a group: an id, optionally an exact version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildpackRef {
    pub id: String,
    /// That exact version; None means the highest version the store holds.
    pub version: Option<String>,
    #[serde(default)]
    pub optional: bool,
}

impl BuildpackRef {
    /// `"id"` or `"id@version"`, as an image's `buildpacks` names a buildpack.
    pub fn parse(text: &str) -> BuildpackRef {
        let (id, version) = match text.rsplit_once('@') {
            Some((id, version)) => (id, Some(version.to_string())),
            None => (text, None),
        };
        BuildpackRef {
            id: id.to_string(),
            version,
            optional: false,
        }
    }
}

impl std::fmt::Display for BuildpackRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            Some(version) => write!(f, "{}@{version}", self.id),
            None => f.write_str(&self.id),
        }
    }
}

/// Why a buildpack directory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    #[error("it holds no buildpack.toml")]
    Missing,
    #[error("its buildpack.toml cannot be read: {0}")]
    Read(std::io::Error),
    /// Not a descriptor kpackd runs: `problem` says what and where in `text`.
    #[error("its buildpack.toml is invalid: {}", problem.message())]
    Invalid {
        text: Arc<str>,
        problem: DescriptorProblem,
    },
}

/// Reads `<dir>/buildpack.toml` and checks it as the lifecycle will (its id, version and
/// Buildpack API), so that a bad one is reported before any build.
pub fn read(dir: &Path) -> Result<DirectoryBuildpack, DescriptorError> {
    let path = dir.join("buildpack.toml");
    let text: Arc<str> = match std::fs::read_to_string(&path) {
        Ok(text) => text.into(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(DescriptorError::Missing),
        Err(e) => return Err(DescriptorError::Read(e)),
    };
    let descriptor = match BuildpackDescriptor::parse(&text) {
        Ok(descriptor) => descriptor,
        Err(problem) => return Err(DescriptorError::Invalid { text, problem }),
    };
    let order = descriptor
        .order
        .into_iter()
        .map(|group| Group {
            buildpacks: group
                .group
                .into_iter()
                .map(|entry| BuildpackRef {
                    id: entry.id,
                    version: Some(entry.version).filter(|v| !v.is_empty()),
                    optional: entry.optional,
                })
                .collect(),
        })
        .collect();
    Ok(DirectoryBuildpack {
        path: dir.to_path_buf(),
        id: descriptor.buildpack.id,
        version: descriptor.buildpack.version,
        order,
    })
}

/// Orders buildpack versions the way semver does for the versions buildpacks use:
/// numeric components compare as numbers, and a pre-release sorts before its release.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (a_core, a_pre) = split_version(a);
    let (b_core, b_pre) = split_version(b);
    compare_parts(a_core, b_core).then_with(|| match (a_pre, b_pre) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => compare_parts(x, y),
    })
}

/// The release part and the pre-release part of a version; build metadata is ignored.
fn split_version(v: &str) -> (&str, Option<&str>) {
    let v = v.split('+').next().unwrap_or(v);
    match v.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (v, None),
    }
}

/// Dot-separated parts, numbers compared as numbers; more parts sort later.
fn compare_parts(a: &str, b: &str) -> Ordering {
    let mut a_parts = a.split('.');
    let mut b_parts = b.split('.');
    loop {
        match (a_parts.next(), b_parts.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let order = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(x), Ok(y)) => x.cmp(&y),
                    _ => x.cmp(y),
                };
                if order.is_ne() {
                    return order;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(compare_versions("0.10.0", "0.9.3"), Ordering::Greater);
        assert_eq!(compare_versions("1.0.0-rc1", "1.0.0"), Ordering::Less);
        assert_eq!(compare_versions("1.0", "1.0.0"), Ordering::Less);
        assert_eq!(compare_versions("2.1.0", "2.1.0+build"), Ordering::Equal);
        assert_eq!(
            compare_versions("1.0.0-rc.2", "1.0.0-rc.10"),
            Ordering::Less
        );
    }

    #[test]
    fn reads_component_and_composite_descriptors() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("buildpack.toml"),
            r#"api = "0.10"
[buildpack]
id = "examples/meta"
version = "1.2.3"
name = "Meta"
[[order]]
[[order.group]]
id = "examples/a"
[[order.group]]
id = "examples/b"
version = "0.1.0"
optional = true
"#,
        )
        .expect("write buildpack.toml");
        let bp = read(dir.path()).expect("a valid descriptor");
        assert_eq!(bp.id_version(), "examples/meta@1.2.3");
        assert_eq!(bp.order.len(), 1);
        assert_eq!(
            bp.order[0].buildpacks[1],
            BuildpackRef {
                id: "examples/b".into(),
                version: Some("0.1.0".into()),
                optional: true
            }
        );
        let empty = tempfile::tempdir().expect("temp dir");
        assert!(matches!(read(empty.path()), Err(DescriptorError::Missing)));
    }

    #[test]
    fn refuses_what_the_lifecycle_refuses_and_says_where() {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = "api = \"0.99\"\n[buildpack]\nid = \"examples/a\"\nversion = \"1\"\n";
        std::fs::write(dir.path().join("buildpack.toml"), text).expect("write buildpack.toml");
        let Err(DescriptorError::Invalid {
            text: read_text,
            problem,
        }) = read(dir.path())
        else {
            panic!("API 0.99 accepted");
        };
        assert!(
            problem.message().contains("Buildpack API 0.99"),
            "{problem}"
        );
        assert_eq!(&read_text[problem.span().expect("a span")], "\"0.99\"");
    }
}
