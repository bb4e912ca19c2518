//! `buildpack.toml`, the buildpack descriptor (buildpack spec: "Buildpack Descriptor"),
//! parsed from its text and checked, with the place of each mistake: the lifecycle reads
//! it to run a buildpack, `kpackd validate` to report a bad one before any build.
//!
//! Unknown keys are ignored, as the reference lifecycle does.

use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::names::{BuildpackId, BuildpackVersion};

/// A Buildpack API version, `<major>.<minor>` (`"1"` means `1.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    /// The part before the dot.
    pub major: u32,
    /// The part after the dot; 0 when there is none.
    pub minor: u32,
}

impl ApiVersion {
    /// `<major>.<minor>`.
    pub const fn new(major: u32, minor: u32) -> ApiVersion {
        ApiVersion { major, minor }
    }

    /// Reads `<major>[.<minor>]`; None when either part is not a number.
    pub fn parse(text: &str) -> Option<ApiVersion> {
        let (major, minor) = match text.split_once('.') {
            Some((major, minor)) => (major, minor),
            None => (text, "0"),
        };
        Some(ApiVersion {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The oldest Buildpack API kpackd runs.
pub const MIN_BUILDPACK_API: ApiVersion = ApiVersion::new(0, 7);
/// The newest Buildpack API kpackd runs (the one the lifecycle implements).
pub const MAX_BUILDPACK_API: ApiVersion = ApiVersion::new(0, 12);

/// Whether kpackd runs buildpacks of Buildpack API `api`: 0.7 to 0.12, as the reference
/// lifecycle.
pub fn is_supported(api: ApiVersion) -> bool {
    (MIN_BUILDPACK_API..=MAX_BUILDPACK_API).contains(&api)
}

/// The stack id that, for old buildpacks, stands for Ubuntu 18.04 on amd64.
pub const BIONIC_STACK: &str = "io.buildpacks.stacks.bionic";

/// `buildpack.toml`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct BuildpackDescriptor {
    /// The Buildpack API the buildpack is written for (see [`ApiVersion`]).
    pub api: String,
    /// Who the buildpack is.
    pub buildpack: BuildpackInfo,
    /// Composite buildpacks only: the groups they stand for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub order: Vec<OrderGroup>,
    /// The platforms the buildpack runs on; none: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetSpec>,
    /// Deprecated (API < 0.10) form of targets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stacks: Vec<StackSpec>,
}

/// The `[buildpack]` table.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct BuildpackInfo {
    /// The buildpack's id, `<namespace>/<name>` as a rule.
    pub id: String,
    /// Its version.
    pub version: String,
    /// A name for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where to read about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
    /// `true`: the user's `<platform>/env/` is not put in the buildpack's environment.
    #[serde(default, rename = "clear-env")]
    pub clear_env: bool,
    /// The SBOM media types the buildpack writes (`application/vnd.cyclonedx+json`, …).
    #[serde(
        default,
        rename = "sbom-formats",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub sbom_formats: Vec<String>,
}

/// One `[[targets]]` entry of `buildpack.toml`; empty fields match anything.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct TargetSpec {
    /// The operating system: `linux`, …
    #[serde(default)]
    pub os: String,
    /// The CPU architecture: `amd64`, `arm64`, …
    #[serde(default)]
    pub arch: String,
    /// Written `variant` by the spec and `arch-variant` by the lifecycle; both are read.
    #[serde(default, alias = "arch-variant")]
    pub variant: String,
    /// The distributions the buildpack runs on; none: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distros: Vec<DistroSpec>,
}

/// One `[[targets.distros]]` entry: a distribution, as `/etc/os-release` names it
/// (`ID`, `VERSION_ID`); empty fields match anything.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct DistroSpec {
    /// The distribution: `ubuntu`, `debian`, …
    #[serde(default)]
    pub name: String,
    /// Its version: `22.04`, `12`, …
    #[serde(default)]
    pub version: String,
}

/// One `[[stacks]]` entry of an old (API < 0.10) `buildpack.toml`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct StackSpec {
    /// The stack id; `*` matches any stack.
    pub id: String,
    /// The mixins the buildpack needs on the stack.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mixins: Vec<String>,
}

/// A group of an order (`order.toml`, a composite buildpack's `[[order]]`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct OrderGroup {
    /// The buildpacks of the group, in the order they run.
    #[serde(default)]
    pub group: Vec<OrderEntry>,
}

/// A buildpack reference in an order group.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct OrderEntry {
    /// The buildpack's id.
    pub id: String,
    /// Empty: whichever version of `id` kpackd has (there must be exactly one).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Whether the group may pass detection without this buildpack.
    #[serde(default)]
    pub optional: bool,
}

/// Why a `buildpack.toml` text is not a usable descriptor.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorProblem {
    /// Not TOML, or not the shape of a descriptor (a missing `id`, a string for a table).
    #[error(transparent)]
    Syntax(Box<toml::de::Error>),
    /// Well-formed, but refused (an API kpackd does not run, a bad id); `span` is where,
    /// in the text, when it can be told.
    #[error("{message}")]
    Invalid {
        /// What is wrong.
        message: String,
        /// Where, as a byte range of the text.
        span: Option<Range<usize>>,
    },
}

impl DescriptorProblem {
    /// What is wrong, in one line (without the excerpt a syntax error displays).
    pub fn message(&self) -> String {
        match self {
            DescriptorProblem::Syntax(e) => e.message().trim_end().to_string(),
            DescriptorProblem::Invalid { message, .. } => message.clone(),
        }
    }

    /// Where in the text, if known.
    pub fn span(&self) -> Option<Range<usize>> {
        match self {
            DescriptorProblem::Syntax(e) => e.span(),
            DescriptorProblem::Invalid { span, .. } => span.clone(),
        }
    }
}

/// Where the checked values sit in the text, to point at them.
#[derive(Deserialize)]
struct Spans {
    api: Option<Spanned<toml::Value>>,
    buildpack: Option<Spanned<InfoSpans>>,
}

#[derive(Deserialize)]
struct InfoSpans {
    id: Option<Spanned<toml::Value>>,
    version: Option<Spanned<toml::Value>>,
}

/// The checked values of a descriptor.
#[derive(Clone, Copy)]
enum Field {
    Api,
    Id,
    Version,
}

impl BuildpackDescriptor {
    /// Parses the text of a `buildpack.toml` and checks its id, version and API.
    pub fn parse(text: &str) -> Result<BuildpackDescriptor, DescriptorProblem> {
        let descriptor: BuildpackDescriptor =
            toml::from_str(text).map_err(|e| DescriptorProblem::Syntax(Box::new(e)))?;
        descriptor.check().map_err(|(field, message)| {
            let spans: Option<Spans> = toml::from_str(text).ok();
            let span = spans.and_then(|s| match field {
                Field::Api => s.api.map(|v| v.span()),
                Field::Id | Field::Version => s.buildpack.map(|info| {
                    let info_span = info.span();
                    let info = info.into_inner();
                    let value = match field {
                        Field::Id => info.id,
                        _ => info.version,
                    };
                    value.map_or(info_span, |v| v.span())
                }),
            });
            DescriptorProblem::Invalid { message, span }
        })?;
        Ok(descriptor)
    }

    fn check(&self) -> Result<(), (Field, String)> {
        BuildpackId::parse(&self.buildpack.id).map_err(|e| (Field::Id, e.to_string()))?;
        BuildpackVersion::parse(&self.buildpack.version)
            .map_err(|e| (Field::Version, e.to_string()))?;
        let name = format!("{}@{}", self.buildpack.id, self.buildpack.version);
        let Some(api) = self.api_version() else {
            return Err((
                Field::Api,
                format!(
                    "buildpack `{name}`: api {:?} is not <major>.<minor>",
                    self.api
                ),
            ));
        };
        if !is_supported(api) {
            return Err((
                Field::Api,
                format!(
                    "buildpack `{name}` uses Buildpack API {api}; kpackd runs Buildpack API \
                     {MIN_BUILDPACK_API} to {MAX_BUILDPACK_API}"
                ),
            ));
        }
        Ok(())
    }

    /// The parsed `api`; `None` when malformed (rejected by [`BuildpackDescriptor::parse`]).
    pub fn api_version(&self) -> Option<ApiVersion> {
        ApiVersion::parse(&self.api)
    }

    /// A composite buildpack has an order and no programs.
    pub fn is_composite(&self) -> bool {
        !self.order.is_empty()
    }

    /// The targets this buildpack runs on, as the reference lifecycle infers them:
    /// `[[targets]]`; else from `[[stacks]]`, where `*` means anything and
    /// `io.buildpacks.stacks.bionic` means Ubuntu 18.04 on amd64, but only from Buildpack
    /// API 0.10 on or when it is the only stack (an older buildpack listing several
    /// stacks gets no target from them); else Linux, as `bin/build` is a Linux program.
    /// An empty list means "any target".
    pub fn effective_targets(&self) -> Vec<TargetSpec> {
        if !self.targets.is_empty() {
            return self.targets.clone();
        }
        if self.stacks.iter().any(|s| s.id == "*") {
            return Vec::new();
        }
        let bionic_is_a_target =
            self.api_version() >= Some(ApiVersion::new(0, 10)) || self.stacks.len() == 1;
        if bionic_is_a_target && self.stacks.iter().any(|s| s.id == BIONIC_STACK) {
            return vec![TargetSpec {
                os: "linux".into(),
                arch: "amd64".into(),
                variant: String::new(),
                distros: vec![DistroSpec {
                    name: "ubuntu".into(),
                    version: "18.04".into(),
                }],
            }];
        }
        vec![TargetSpec {
            os: "linux".into(),
            ..TargetSpec::default()
        }]
    }
}

#[cfg(test)]
mod tests;
