//! The generic parts of an image summary: its layers and runtime config. What its
//! labels mean to Cloud Native Buildpacks is read elsewhere (`crate::inspect`).

use serde::Serialize;

use super::Image;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerInfo {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    pub env: Vec<String>,
    pub user: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
}

impl LayerInfo {
    /// The image's layers, in order, with their diffIDs where the config lists them.
    pub fn of(image: &Image) -> Vec<LayerInfo> {
        let diff_ids = &image.config.rootfs.diff_ids;
        image
            .manifest
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| LayerInfo {
                digest: l.digest.to_string(),
                size: l.size,
                media_type: l.media_type.clone(),
                diff_id: diff_ids.get(i).map(ToString::to_string),
            })
            .collect()
    }
}

impl RuntimeConfig {
    /// The image config's runtime part, empty fields for what it does not set.
    pub fn of(image: &Image) -> RuntimeConfig {
        let config = image.config.config.clone().unwrap_or_default();
        RuntimeConfig {
            env: config.env.unwrap_or_default(),
            user: config.user.unwrap_or_default(),
            entrypoint: config.entrypoint.unwrap_or_default(),
            cmd: config.cmd.unwrap_or_default(),
            working_dir: config.working_dir.unwrap_or_default(),
        }
    }
}
