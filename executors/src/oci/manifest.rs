//! The OCI and Docker schema 2 documents kpackd reads and writes: descriptors, image
//! manifests, indexes (manifest lists), image configs and platforms. Both media type
//! families parse into the same types; unknown config fields survive a round trip.

use std::collections::BTreeMap;

use bytes::Bytes;
use imageref::{Digest, Platform};
use serde::{Deserialize, Serialize};

use super::OciError;

/// Media types kpackd knows by name.
pub mod media_type {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

    /// Every manifest media type kpackd accepts from a registry.
    pub const MANIFESTS: &[&str] = &[
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        DOCKER_MANIFEST_LIST,
    ];

    /// Whether a manifest of this media type lists other manifests.
    pub fn is_index(media_type: &str) -> bool {
        media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
    }
}

/// The largest manifest or image config kpackd reads: 4 MiB, the limit the
/// distribution spec suggests registries enforce for manifests, and far above any
/// real one (a 100-layer manifest is ~20 KiB, a CNB config with its metadata labels
/// well under 1 MiB).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// The largest blob size a manifest may declare: 1 TiB. No layer a build or a stack
/// is made of comes near it, and a bigger claim (or a negative one, which a `u64`
/// does not parse) marks a manifest as hostile or corrupt before anything trusts it.
pub const MAX_BLOB_SIZE: u64 = 1 << 40;

/// The OCI annotation that names an image in a layout's `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// A content descriptor: what a manifest says about a blob it refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

impl Descriptor {
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            platform: None,
            annotations: None,
            urls: None,
        }
    }

    /// The value of the layout ref-name annotation, if any.
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations
            .as_ref()
            .and_then(|a| a.get(REF_NAME_ANNOTATION))
            .map(String::as_str)
    }
}

/// A single-platform image manifest (OCI or Docker schema 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl ImageIndex {
    /// The entry for `platform`, if the index has one.
    pub fn for_platform(&self, platform: &Platform) -> Option<&Descriptor> {
        self.manifests.iter().find(|d| {
            !media_type::is_index(&d.media_type)
                && d.platform.as_ref().is_some_and(|p| platform.matches(p))
        })
    }
}

/// A parsed manifest of either kind.
// Manifests are parsed one at a time and never kept in bulk, so the size difference
// between the variants costs nothing worth a box at every match.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    Image(ImageManifest),
    Index(ImageIndex),
}

/// A manifest exactly as stored: its bytes are what its digest is computed over, so
/// they are what gets pushed again (never a re-serialisation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawManifest {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: Digest,
}

impl RawManifest {
    /// Wraps freshly made bytes; the media type is taken from the document's
    /// `mediaType` field, or guessed from its shape when absent.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Result<RawManifest, OciError> {
        let bytes = bytes.into();
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Shape {
            media_type: Option<String>,
            manifests: Option<serde_json::Value>,
        }
        let shape: Shape = serde_json::from_slice(&bytes).map_err(|e| OciError::Invalid {
            what: "manifest".into(),
            reason: e.to_string(),
        })?;
        let media_type = shape.media_type.unwrap_or_else(|| {
            if shape.manifests.is_some() {
                media_type::OCI_INDEX
            } else {
                media_type::OCI_MANIFEST
            }
            .to_string()
        });
        let digest = Digest::sha256(&bytes);
        Ok(RawManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// Serialises a manifest into new bytes.
    pub fn from_manifest(manifest: &Manifest) -> RawManifest {
        let (bytes, media_type) = match manifest {
            Manifest::Image(m) => (
                serde_json::to_vec(m),
                m.media_type.as_deref().unwrap_or(media_type::OCI_MANIFEST),
            ),
            Manifest::Index(i) => (
                serde_json::to_vec(i),
                i.media_type.as_deref().unwrap_or(media_type::OCI_INDEX),
            ),
        };
        let bytes = Bytes::from(bytes.expect("manifests serialise to JSON"));
        RawManifest {
            digest: Digest::sha256(&bytes),
            bytes,
            media_type: media_type.to_string(),
        }
    }

    /// Parses the manifest and checks the sizes it declares: a layer at most
    /// [`MAX_BLOB_SIZE`], a config or a child manifest at most [`MAX_MANIFEST_SIZE`].
    pub fn parse(&self) -> Result<Manifest, OciError> {
        let invalid = |reason: String| OciError::Invalid {
            what: format!("manifest {}", self.digest),
            reason,
        };
        let manifest = if media_type::is_index(&self.media_type) {
            serde_json::from_slice(&self.bytes).map(Manifest::Index)
        } else {
            serde_json::from_slice(&self.bytes).map(Manifest::Image)
        }
        .map_err(|e| invalid(e.to_string()))?;
        let too_big = |what: &str, d: &Descriptor, max: u64| {
            invalid(format!(
                "{what} {} declares {} bytes, more than the {max} allowed",
                d.digest, d.size
            ))
        };
        match &manifest {
            Manifest::Image(m) => {
                if m.config.size > MAX_MANIFEST_SIZE {
                    return Err(too_big("config", &m.config, MAX_MANIFEST_SIZE));
                }
                if let Some(l) = m.layers.iter().find(|l| l.size > MAX_BLOB_SIZE) {
                    return Err(too_big("layer", l, MAX_BLOB_SIZE));
                }
            }
            Manifest::Index(i) => {
                if let Some(m) = i.manifests.iter().find(|m| m.size > MAX_MANIFEST_SIZE) {
                    return Err(too_big("manifest", m, MAX_MANIFEST_SIZE));
                }
            }
        }
        Ok(manifest)
    }

    /// A descriptor of this manifest, for an index or a layout's `index.json`.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            self.media_type.clone(),
            self.digest.clone(),
            self.bytes.len() as u64,
        )
    }
}

/// An image configuration. Fields kpackd does not model are kept in `other`, so a
/// config read, changed and written again loses nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<serde_json::Value>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl ImageConfig {
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            os_version: None,
            variant: self.variant.clone(),
        }
    }

    /// The image labels (empty when there are none).
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default()
    }
}

/// The runtime part of an image config (`config` in the JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// The layer diffIDs of an image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_unknown_fields() {
        let json = r#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1"],"StopSignal":"SIGTERM"},"rootfs":{"type":"layers","diff_ids":[]},"author":"me"}"#;
        let c: ImageConfig = serde_json::from_str(json).unwrap();
        assert_eq!(c.other["author"], "me");
        let back = serde_json::to_value(&c).unwrap();
        assert_eq!(back["config"]["StopSignal"], "SIGTERM");
        assert_eq!(back["config"]["Env"][0], "A=1");
    }

    #[test]
    fn platforms() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!(Platform::parse("linux/arm64").unwrap().matches(&p));
        assert!(!p.matches(&Platform::parse("linux/arm64").unwrap()));
        assert!(Platform::parse("linux").is_none());
    }

    #[test]
    fn declared_sizes_are_bounded() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let manifest = |layer: &str| {
            RawManifest::from_bytes(format!(
                r#"{{"schemaVersion":2,"config":{{"mediaType":"c","digest":"{digest}","size":10}},
                    "layers":[{{"mediaType":"l","digest":"{digest}","size":{layer}}}]}}"#
            ))
            .unwrap()
            .parse()
        };
        assert!(manifest("1099511627776").is_ok());
        for bad in ["999999999999999999", "-1", "18446744073709551616", "1e3"] {
            assert!(manifest(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn media_type_guessed_from_shape() {
        let m = RawManifest::from_bytes(r#"{"schemaVersion":2,"manifests":[]}"#).unwrap();
        assert_eq!(m.media_type, media_type::OCI_INDEX);
        assert!(matches!(m.parse().unwrap(), Manifest::Index(_)));
    }
}
