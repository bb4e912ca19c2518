//! Platforms: which operating system and CPU an image is for.
//!
//! [`Platform`] is the OCI shape (image index entries, image configs, `[kpackd] platform`);
//! [`Target`] is the shape the plan records per image (`os`, `arch`, `variant`), kept
//! separate because the plan JSON is a stable interface with its own field names.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An operating system and CPU architecture, written `os/arch[/variant]`, serialised with
/// the field names of the OCI image index and image config.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    /// The CPU architecture as Go names it: `amd64`, `arm64`, …
    pub architecture: String,
    /// The operating system as Go names it: `linux`, `windows`, …
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    /// The operating system's version, for the systems that need one (Windows).
    pub os_version: Option<String>,
    /// The CPU variant: `v8` of `arm64`, `v7` of `arm`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// `linux/amd64`.
    pub fn linux_amd64() -> Platform {
        Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            os_version: None,
            variant: None,
        }
    }

    /// The platform this program runs on, named as OCI names it.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            architecture: architecture.to_string(),
            os: std::env::consts::OS.to_string(),
            os_version: None,
            variant: None,
        }
    }

    /// Parses `os/arch[/variant]`, e.g. `linux/arm64/v8`. Each part is non-empty and made
    /// of lowercase ASCII letters, digits and `_`.
    pub fn parse(s: &str) -> Option<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let part_ok = |p: &&str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(part_ok) {
            return None;
        }
        Some(Platform {
            architecture: parts[1].to_string(),
            os: parts[0].to_string(),
            os_version: None,
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }

    /// Whether an index entry for `candidate` serves this (wanted) platform: os and
    /// architecture equal, and the variant too when this one names a variant.
    pub fn matches(&self, candidate: &Platform) -> bool {
        self.os == candidate.os
            && self.architecture == candidate.architecture
            && (self.variant.is_none() || self.variant == candidate.variant)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// The platform an image is built for, as the plan records it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Target {
    /// The operating system: `linux`, …
    pub os: String,
    /// The CPU architecture: `amd64`, `arm64`, …
    pub arch: String,
    /// The CPU variant, if the architecture has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl From<Platform> for Target {
    fn from(p: Platform) -> Target {
        Target {
            os: p.os,
            arch: p.architecture,
            variant: p.variant,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        match &self.variant {
            Some(variant) => write!(f, "/{variant}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_os_arch_variant() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(p.os, "linux");
        assert_eq!(p.architecture, "arm64");
        assert_eq!(p.variant.as_deref(), Some("v8"));
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!(Target::from(p).to_string(), "linux/arm64/v8");
        for bad in [
            "linux",
            "linux/",
            "/amd64",
            "linux/amd64/v8/x",
            "Linux/amd64",
        ] {
            assert!(Platform::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_wanted_platform_without_variant_matches_any_variant() {
        let wanted = Platform::parse("linux/arm64").unwrap();
        assert!(wanted.matches(&Platform::parse("linux/arm64/v8").unwrap()));
        assert!(!Platform::parse("linux/arm64/v7")
            .unwrap()
            .matches(&Platform::parse("linux/arm64/v8").unwrap()));
    }

    #[test]
    fn serialises_with_oci_and_plan_field_names() {
        let p = Platform::parse("linux/amd64").unwrap();
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"architecture":"amd64","os":"linux"}"#
        );
        assert_eq!(
            serde_json::to_string(&Target::from(p)).unwrap(),
            r#"{"os":"linux","arch":"amd64"}"#
        );
    }
}
