//! Names that come from buildpacks and image labels (untrusted) and end up as file
//! names: each type is checked when it is made, so a value that could escape a directory
//! (`..`, `/`, NUL) or break the CNB rules never gets past deserialization.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A name that does not follow its rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} `{value}`: {reason}")]
pub struct NameError {
    /// What the name is of: `buildpack id`, `buildpack version`, `layer name`, `process type`.
    pub kind: &'static str,
    /// The value refused, with control characters escaped.
    pub value: String,
    /// Why it is refused.
    pub reason: &'static str,
}

impl NameError {
    fn new(kind: &'static str, value: &str, reason: &'static str) -> NameError {
        NameError {
            kind,
            value: value.escape_debug().to_string(),
            reason,
        }
    }
}

/// Ids the buildpack spec reserves: they name directories of the layers directory.
const RESERVED_IDS: [&str; 4] = ["app", "config", "generated", "sbom"];

/// The checks every name that becomes one path component shares.
fn check_component(kind: &'static str, value: &str) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::new(kind, value, "it is empty"));
    }
    if value == "." || value == ".." {
        return Err(NameError::new(
            kind,
            value,
            "it names a directory, not an entry",
        ));
    }
    if value.contains('/') {
        return Err(NameError::new(kind, value, "it contains `/`"));
    }
    if value.contains('\0') {
        return Err(NameError::new(kind, value, "it contains a NUL character"));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The name, checked.
            pub fn parse(value: &str) -> Result<$name, NameError> {
                let check: fn(&str) -> Result<(), NameError> = $check;
                check(value)?;
                Ok($name(value.to_string()))
            }

            /// The name as written.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// What the name is of, as errors say it.
            pub const KIND: &'static str = $kind;
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        // `Ord` is the inner string's, so maps keyed by the name can be looked up by `&str`.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        // A checked name is one path component, safe to join under a directory.
        impl AsRef<std::path::Path> for $name {
            fn as_ref(&self) -> &std::path::Path {
                std::path::Path::new(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<$name, NameError> {
                $name::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<$name, D::Error> {
                let value = String::deserialize(deserializer)?;
                $name::parse(&value).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// A buildpack id (buildpack spec, `buildpack.toml`): letters, digits, `.`, `/`, `-`
    /// and `_`; not one of the reserved `app`, `config`, `generated`, `sbom`; no empty,
    /// `.` or `..` segment between its slashes.
    BuildpackId,
    "buildpack id",
    |value| {
        const KIND: &str = "buildpack id";
        if value.is_empty() {
            return Err(NameError::new(KIND, value, "it is empty"));
        }
        if !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '-' | '_'))
        {
            return Err(NameError::new(
                KIND,
                value,
                "only letters, digits, `.`, `/`, `-` and `_` are allowed",
            ));
        }
        if RESERVED_IDS.contains(&value) {
            return Err(NameError::new(KIND, value, "the id is reserved"));
        }
        if value
            .split('/')
            .any(|segment| segment.is_empty() || segment == "." || segment == "..")
        {
            return Err(NameError::new(
                KIND,
                value,
                "a segment between slashes is empty, `.` or `..`",
            ));
        }
        Ok(())
    }
);

impl BuildpackId {
    /// The directory the buildpack's files live in (`/cnb/buildpacks/<dir>/<version>`,
    /// `<layers>/<dir>`): the id with `/` written as `_`, as the lifecycle does.
    pub fn dir_name(&self) -> String {
        escape_id(&self.0)
    }
}

/// A buildpack id as a directory name: `/` written as `_`, as the lifecycle does.
pub fn escape_id(id: &str) -> String {
    id.replace('/', "_")
}

name_type!(
    /// A buildpack version as image labels carry it: one path component (not empty,
    /// `.`, `..`, no `/`, no NUL). Its semver form is not enforced: buildpacks in the
    /// wild do not all follow it.
    BuildpackVersion,
    "buildpack version",
    |value| check_component("buildpack version", value)
);

name_type!(
    /// The name of a buildpack's layer (`<layers>/<id>/<name>`): one path component.
    LayerName,
    "layer name",
    |value| check_component("layer name", value)
);

name_type!(
    /// A process type (buildpack spec, `launch.toml`): letters, digits, `.`, `-` and `_`,
    /// and not `.` or `..` (it names `/cnb/process/<type>`).
    ProcessType,
    "process type",
    |value| {
        const KIND: &str = "process type";
        check_component(KIND, value)?;
        if !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(NameError::new(
                KIND,
                value,
                "only letters, digits, `.`, `-` and `_` are allowed",
            ));
        }
        Ok(())
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildpack_ids() {
        for ok in [
            "example/node",
            "io.buildpacks.ruby",
            "paketo-buildpacks/node_engine",
            "a",
        ] {
            assert_eq!(BuildpackId::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "app",
            "config",
            "sbom",
            "generated",
            "/abs",
            "trailing/",
            "a//b",
            "a/../b",
            "..",
            ".",
            "a b",
            "a\0b",
            "a:b",
        ] {
            assert!(BuildpackId::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            BuildpackId::parse("example/node").unwrap().dir_name(),
            "example_node"
        );
    }

    #[test]
    fn components() {
        assert!(BuildpackVersion::parse("1.2.3").is_ok());
        assert!(BuildpackVersion::parse("1.2.3-rc.1+build").is_ok());
        for bad in ["", ".", "..", "../../dir", "a/b", "a\0"] {
            assert!(BuildpackVersion::parse(bad).is_err(), "{bad:?} accepted");
            assert!(LayerName::parse(bad).is_err(), "{bad:?} accepted");
            assert!(ProcessType::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(LayerName::parse("node_modules").is_ok());
        assert!(ProcessType::parse("web.1-x_y").is_ok());
        assert!(ProcessType::parse("web server").is_err());
    }

    #[test]
    fn errors_name_the_value() {
        let err = serde_json::from_str::<BuildpackVersion>(r#""../../dir""#).unwrap_err();
        assert!(err.to_string().contains("`../../dir`"), "{err}");
        assert!(err.to_string().contains("buildpack version"), "{err}");
    }
}
