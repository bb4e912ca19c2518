//! The SBOM files a buildpack writes next to its layers (buildpack spec,
//! "Software-Bill-of-Materials"): `launch.sbom.<ext>`, `build.sbom.<ext>` and
//! `<layer>.sbom.<ext>`, where `<ext>` names one of three media types. A buildpack must
//! declare the media types it writes in `buildpack.toml`'s `sbom-formats`; like the
//! reference lifecycle, a file of an undeclared or unknown type fails the build.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The SBOM media types of the buildpack spec and their file extensions.
pub const SBOM_FORMATS: [(&str, &str); 3] = [
    ("application/vnd.cyclonedx+json", "cdx.json"),
    ("application/spdx+json", "spdx.json"),
    ("application/vnd.syft+json", "syft.json"),
];

/// The SBOM file extensions of the buildpack spec.
pub const SBOM_EXTENSIONS: [&str; 3] = [SBOM_FORMATS[0].1, SBOM_FORMATS[1].1, SBOM_FORMATS[2].1];

/// An SBOM file a buildpack may not write.
#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error(
        "buildpack {buildpack}: SBOM file {}: undeclared SBOM media type `{media_type}` \
         (its buildpack.toml declares {})",
        file.display(),
        declared_list(declared)
    )]
    Undeclared {
        /// `id@version`.
        buildpack: String,
        /// Where the buildpack wrote it, as it sees the path (`/layers/<id>/…`).
        file: PathBuf,
        media_type: &'static str,
        declared: Vec<String>,
    },
    #[error(
        "buildpack {buildpack}: SBOM file {}: unsupported SBOM format (the extensions are \
         `cdx.json`, `spdx.json` and `syft.json`)",
        file.display()
    )]
    Unsupported { buildpack: String, file: PathBuf },
    #[error("buildpack {buildpack}: list its SBOM files: {source}")]
    Io {
        buildpack: String,
        #[source]
        source: io::Error,
    },
}

fn declared_list(declared: &[String]) -> String {
    if declared.is_empty() {
        return "no `sbom-formats`".into();
    }
    let quoted: Vec<String> = declared.iter().map(|d| format!("`{d}`")).collect();
    format!("`sbom-formats` = [{}]", quoted.join(", "))
}

/// The media type an SBOM file name stands for; `None` for an unknown extension.
fn media_type(file_name: &str) -> Option<&'static str> {
    SBOM_FORMATS
        .iter()
        .find(|(_, ext)| file_name.ends_with(&format!(".sbom.{ext}")))
        .map(|(media_type, _)| *media_type)
}

/// Whether `declared` (an entry of `sbom-formats`, parameters allowed) is `media_type`.
fn declares(declared: &str, media_type: &str) -> bool {
    let essence = declared.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case(media_type)
}

/// Checks every `*.sbom.*.json` file in a buildpack's layers directory `bp_layers` (seen
/// by the buildpack as `inside`) against its `sbom-formats`. Only names are looked at.
pub fn check_declared(
    buildpack: &str,
    bp_layers: &Path,
    inside: &Path,
    declared: &[String],
) -> Result<(), SbomError> {
    let io_err = |source| SbomError::Io {
        buildpack: buildpack.to_owned(),
        source,
    };
    let mut names: Vec<String> = Vec::new();
    for entry in fs::read_dir(bp_layers).map_err(io_err)? {
        let name = entry.map_err(io_err)?.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((_, rest)) = name.split_once(".sbom.") else {
            continue;
        };
        if rest.ends_with(".json") {
            names.push(name.to_owned());
        }
    }
    names.sort();
    for name in names {
        let file = inside.join(&name);
        let Some(media_type) = media_type(&name) else {
            return Err(SbomError::Unsupported {
                buildpack: buildpack.to_owned(),
                file,
            });
        };
        if !declared.iter().any(|d| declares(d, media_type)) {
            return Err(SbomError::Undeclared {
                buildpack: buildpack.to_owned(),
                file,
                media_type,
                declared: declared.to_vec(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_by_extension_and_declarations_with_parameters() {
        assert_eq!(
            media_type("launch.sbom.cdx.json"),
            Some("application/vnd.cyclonedx+json")
        );
        assert_eq!(
            media_type("node.sbom.spdx.json"),
            Some("application/spdx+json")
        );
        assert_eq!(media_type("node.sbom.other.json"), None);
        assert!(declares(
            "application/vnd.cyclonedx+json; version=1.4",
            "application/vnd.cyclonedx+json"
        ));
        assert!(!declares(
            "application/spdx+json",
            "application/vnd.syft+json"
        ));
    }

    #[test]
    fn undeclared_and_unknown_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inside = Path::new("/layers/test_bp");
        let declared = vec!["application/vnd.cyclonedx+json".to_owned()];
        for name in ["launch.sbom.cdx.json", "node.sbom.cdx.json", "node.toml"] {
            fs::write(dir.path().join(name), "{}").expect("write");
        }
        check_declared("test/bp@1", dir.path(), inside, &declared).expect("all declared");

        fs::write(dir.path().join("build.sbom.spdx.json"), "{}").expect("write");
        let err = check_declared("test/bp@1", dir.path(), inside, &declared)
            .expect_err("spdx is not declared");
        let message = err.to_string();
        assert!(message.contains("undeclared SBOM media type"), "{message}");
        assert!(message.contains("test/bp@1"), "{message}");
        assert!(
            message.contains("/layers/test_bp/build.sbom.spdx.json"),
            "{message}"
        );
        fs::remove_file(dir.path().join("build.sbom.spdx.json")).expect("rm");

        fs::write(dir.path().join("node.sbom.unknown.json"), "{}").expect("write");
        let err =
            check_declared("test/bp@1", dir.path(), inside, &declared).expect_err("unknown format");
        assert!(matches!(err, SbomError::Unsupported { .. }), "{err}");
    }
}
