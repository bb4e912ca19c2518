//! The build request of kpackd's build entrypoint (`kpackd-entrypoint build`, the
//! `/cnb/lifecycle/kpackd` of a builder image), and what it answers: plain JSON documents,
//! so that whoever starts the builder image (a Kubernetes Pod, a CI job, kpackd itself)
//! writes the request and reads the result without linking kpackd.
//!
//! A request names everything one build needs that the builder image does not carry:
//! the app image's tags, the pinned run image, where the source comes from, the
//! environment, the cache and previous images, and the image's own settings. Buildpacks
//! and their order come from the builder image (`/cnb/buildpacks`, `/cnb/order.toml`), and
//! registry credentials from a docker config file, never from the request.

use std::collections::BTreeMap;

use imageref::{Digest, ImageRef, LayerCompression, Platform};
use serde::{Deserialize, Serialize};

use super::descriptor::OrderGroup;
use super::run::BuildResult;

/// The version of the request document this kpackd reads.
pub const REQUEST_VERSION: u32 = 1;

/// One build, as a JSON document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EntrypointRequest {
    /// [`REQUEST_VERSION`].
    pub version: u32,
    /// The image's name in kpack.toml (logs and the cache directory).
    pub image: String,
    /// Where the app image goes.
    #[serde(with = "image_ref")]
    pub tag: ImageRef,
    #[serde(default, with = "image_refs", skip_serializing_if = "Vec::is_empty")]
    pub additional_tags: Vec<ImageRef>,
    /// The builder image the entrypoint runs in (logs and errors name it).
    #[serde(with = "image_ref")]
    pub builder_image: ImageRef,
    /// The stack's run image, pinned by digest.
    #[serde(with = "image_ref")]
    pub run_image: ImageRef,
    pub source: RequestSource,
    /// Platform env (`<platform>/env/<NAME>`); `SOURCE_DATE_EPOCH` sets `created`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Keep `cache = true` layers in this image: pulled before restore, pushed after
    /// export.
    #[serde(
        default,
        with = "opt_image_ref",
        skip_serializing_if = "Option::is_none"
    )]
    pub cache_image: Option<ImageRef>,
    /// The last build's output, whose layers are reused; absent: the tag.
    #[serde(
        default,
        with = "opt_image_ref",
        skip_serializing_if = "Option::is_none"
    )]
    pub previous_image: Option<ImageRef>,
    /// The platform picked from image indexes and built for; absent: the entrypoint's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// The process type the image starts instead of the buildpacks' default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_process: Option<String>,
    /// `gzip` (the default) or `zstd`.
    #[serde(default, with = "compression")]
    pub layer_compression: LayerCompression,
    /// The image's own buildpack group (kpack.toml `buildpacks`): it replaces the
    /// builder's order and the project descriptor's group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buildpacks: Option<OrderGroup>,
    /// The project descriptor, relative to the app; absent: `project.toml` when there
    /// is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_descriptor: Option<String>,
    /// `io.buildpacks.project.metadata` (`{"source": {...}}`), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_metadata: Option<serde_json::Value>,
}

/// Where the app comes from, pinned: the entrypoint writes exactly this into the app
/// directory (which must be empty) before detect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RequestSource {
    /// A git remote at a full commit id, or a directory of it.
    #[serde(rename_all = "kebab-case")]
    Git {
        url: String,
        commit: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sub_path: Option<String>,
    },
    /// An archive (tar, tar.gz, zip) at a URL, which must have this digest.
    #[serde(rename_all = "kebab-case")]
    Blob {
        url: String,
        #[serde(with = "digest")]
        digest: Digest,
        #[serde(default)]
        strip_components: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sub_path: Option<String>,
    },
    /// A source image (its layers applied in order make the tree), pinned by digest, or a
    /// directory of it.
    #[serde(rename_all = "kebab-case")]
    Image {
        #[serde(with = "image_ref")]
        image: ImageRef,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sub_path: Option<String>,
    },
    /// The app is in the app directory already (put there by whoever started the
    /// container).
    Workspace,
}

/// What the entrypoint prints (one line on stdout) and writes to its result file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct EntrypointResult {
    /// The app image manifest's digest.
    #[serde(with = "digest")]
    pub digest: Digest,
    /// The tag pinned to the digest.
    #[serde(with = "image_ref")]
    pub image: ImageRef,
    /// The buildpacks that built it, in order.
    pub buildpacks: Vec<BuiltWith>,
    /// Process types, sorted.
    pub processes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_process: Option<String>,
    pub rebasable: bool,
    #[serde(with = "digest")]
    pub run_image_top_layer: Digest,
}

/// A buildpack of [`EntrypointResult::buildpacks`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuiltWith {
    pub id: String,
    pub version: String,
}

/// What the entrypoint writes to its result file when the build fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntrypointFailure {
    /// The error and its causes, one sentence.
    pub error: String,
}

impl From<&BuildResult> for EntrypointResult {
    fn from(r: &BuildResult) -> EntrypointResult {
        EntrypointResult {
            digest: r.digest.clone(),
            image: r.image.clone(),
            buildpacks: r
                .buildpacks
                .iter()
                .map(|(id, version)| BuiltWith {
                    id: id.clone(),
                    version: version.clone(),
                })
                .collect(),
            processes: r.processes.clone(),
            default_process: r.default_process.clone(),
            rebasable: r.rebasable,
            run_image_top_layer: r.run_image_top_layer.clone(),
        }
    }
}

/// An [`ImageRef`] as the string users write.
mod image_ref {
    use imageref::ImageRef;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(r: &ImageRef, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(r)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ImageRef, D::Error> {
        let text = String::deserialize(d)?;
        ImageRef::parse(&text).map_err(|e| D::Error::custom(format!("image {text:?}: {e}")))
    }
}

mod opt_image_ref {
    use imageref::ImageRef;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(r: &Option<ImageRef>, s: S) -> Result<S::Ok, S::Error> {
        match r {
            Some(r) => s.collect_str(r),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ImageRef>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super::image_ref")] ImageRef);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|Wrapped(r)| r))
    }
}

mod image_refs {
    use imageref::ImageRef;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(refs: &[ImageRef], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(refs.iter().map(ToString::to_string))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ImageRef>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super::image_ref")] ImageRef);
        Ok(Vec::<Wrapped>::deserialize(d)?
            .into_iter()
            .map(|Wrapped(r)| r)
            .collect())
    }
}

mod digest {
    use imageref::Digest;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(d)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(d)?;
        Digest::parse(&text).map_err(|e| D::Error::custom(format!("digest {text:?}: {e}")))
    }
}

mod compression {
    use imageref::LayerCompression;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(c: &LayerCompression, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match c {
            LayerCompression::Gzip => "gzip",
            LayerCompression::Zstd => "zstd",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LayerCompression, D::Error> {
        match String::deserialize(d)?.as_str() {
            "gzip" => Ok(LayerCompression::Gzip),
            "zstd" => Ok(LayerCompression::Zstd),
            other => Err(D::Error::custom(format!(
                "layer compression {other:?}: expected \"gzip\" or \"zstd\""
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_back_as_written() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let text = format!(
            r#"{{
  "version": 1,
  "image": "app",
  "tag": "registry.example/app:latest",
  "additional-tags": ["registry.example/app:1"],
  "builder-image": "registry.example/builder@{digest}",
  "run-image": "registry.example/run@{digest}",
  "source": {{"type": "git", "url": "https://git.example/app", "commit": "0123456789012345678901234567890123456789", "sub-path": "web"}},
  "env": {{"SOURCE_DATE_EPOCH": "0"}},
  "cache-image": "registry.example/app-cache",
  "platform": {{"os": "linux", "architecture": "arm64"}},
  "default-process": "web",
  "layer-compression": "zstd",
  "buildpacks": {{"group": [{{"id": "examples/hello"}}]}},
  "project-descriptor": "ci/project.toml",
  "project-metadata": {{"source": {{"type": "git"}}}}
}}"#
        );
        let request: EntrypointRequest = serde_json::from_str(&text).expect("parse");
        assert_eq!(request.layer_compression, LayerCompression::Zstd);
        assert_eq!(request.additional_tags.len(), 1);
        assert!(
            matches!(request.source, RequestSource::Git { ref sub_path, .. } if sub_path.as_deref() == Some("web"))
        );
        let again: EntrypointRequest =
            serde_json::from_str(&serde_json::to_string(&request).expect("write")).expect("read");
        assert_eq!(again, request);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        let base = r#""version": 1, "image": "app", "tag": "registry.example/app", "builder-image": "registry.example/builder", "run-image": "registry.example/run", "source": {"type": "workspace"}"#;
        assert!(serde_json::from_str::<EntrypointRequest>(&format!("{{{base}}}")).is_ok());
        let unknown = format!("{{{base}, \"network\": true}}");
        assert!(serde_json::from_str::<EntrypointRequest>(&unknown).is_err());
        let bad = format!("{{{base}, \"layer-compression\": \"xz\"}}");
        let err = serde_json::from_str::<EntrypointRequest>(&bad).unwrap_err();
        assert!(err.to_string().contains("\"xz\""), "{err}");
    }
}
