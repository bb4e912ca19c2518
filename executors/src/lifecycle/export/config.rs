//! The app image config.

use serde_json::json;

use super::labels::{LayersMetadata, BUILD_LABEL, LIFECYCLE_LABEL, PROJECT_LABEL};
use super::layers::ConfigMetadata;
use super::{ExportRequest, ImageLayer, PLATFORM_API, PROCESS_DIR};
use crate::lifecycle::descriptor::GroupBuildpack;
use crate::lifecycle::phase::{APP_DIR, LAYERS_DIR};
use crate::oci::ImageConfig;

/// The commit kpackd (and so its launcher) was built from, `unknown` when not built from a
/// git checkout; the build label names it as the launcher's source.
pub const LAUNCHER_COMMIT: &str = env!("KPACKD_GIT_COMMIT");

/// 1980-01-01T00:00:01Z, the `created` of every app image unless SOURCE_DATE_EPOCH says.
pub const NORMALISED_CREATED: u64 = crate::oci::layer::NORMALISED_MTIME;

/// The app image config: the run image's, with the CNB env, working dir, entrypoint,
/// labels, `created` and history for the `added` layers (`rootfs` is set when pushing).
pub(super) fn image_config(
    req: &ExportRequest<'_>,
    build_md: &ConfigMetadata,
    group: &[GroupBuildpack],
    metadata: &LayersMetadata,
    added: &[ImageLayer],
    entrypoint: String,
) -> ImageConfig {
    let mut config: ImageConfig = req.run_image.image.config.clone();
    let created = rfc3339(req.created.unwrap_or(NORMALISED_CREATED));
    config.created = Some(created.clone());
    let mut runtime = config.config.take().unwrap_or_default();

    runtime.env = Some(app_env(runtime.env.take().unwrap_or_default()));
    runtime.working_dir = Some(APP_DIR.into());
    runtime.entrypoint = Some(vec![entrypoint]);
    runtime.cmd = None;

    let mut labels = runtime.labels.take().unwrap_or_default();
    for label in &build_md.labels {
        labels.insert(label.key.clone(), label.value.clone());
    }
    labels.insert(
        LIFECYCLE_LABEL.into(),
        serde_json::to_string(metadata).expect("label metadata serialises"),
    );
    labels.insert(BUILD_LABEL.into(), build_label(build_md, group).to_string());
    labels.insert(
        PROJECT_LABEL.into(),
        req.project_metadata
            .cloned()
            .unwrap_or_else(|| json!({}))
            .to_string(),
    );
    if let Some(stack_id) = &req.run_image.stack_id {
        labels.insert(
            crate::lifecycle::stack::STACK_ID_LABEL.into(),
            stack_id.clone(),
        );
    }
    runtime.labels = Some(labels);
    config.config = Some(runtime);

    if !config.history.is_empty() {
        config.history.extend(
            added
                .iter()
                .map(|l| json!({"created": created, "created_by": l.created_by})),
        );
    }
    config
}

/// The run image's environment `env` with the CNB variables set and the CNB directories
/// first in `PATH` (each once, even when the run image lists them already).
fn app_env(mut env: Vec<String>) -> Vec<String> {
    let run_path = env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .to_string();
    let set = |env: &mut Vec<String>, name: &str, value: String| {
        let entry = format!("{name}={value}");
        match env
            .iter_mut()
            .find(|kv| kv.split_once('=').is_some_and(|(k, _)| k == name))
        {
            Some(kv) => *kv = entry,
            None => env.push(entry),
        }
    };
    set(&mut env, "CNB_LAYERS_DIR", LAYERS_DIR.into());
    set(&mut env, "CNB_APP_DIR", APP_DIR.into());
    set(&mut env, "CNB_PLATFORM_API", PLATFORM_API.into());
    set(&mut env, "CNB_DEPRECATION_MODE", "quiet".into());
    // A run image may list the CNB directories already: each appears once.
    let rest: Vec<&str> = run_path
        .split(':')
        .filter(|dir| *dir != PROCESS_DIR && *dir != "/cnb/lifecycle")
        .collect();
    set(
        &mut env,
        "PATH",
        format!("{PROCESS_DIR}:/cnb/lifecycle:{}", rest.join(":")),
    );
    env
}

/// The `io.buildpacks.build.metadata` label: the buildpacks, the launcher and its source,
/// the processes and the default process type.
fn build_label(build_md: &ConfigMetadata, group: &[GroupBuildpack]) -> serde_json::Value {
    json!({
        "bom": [],
        "buildpacks": group.iter().map(|g| {
            let mut b = json!({"id": g.id, "version": g.version});
            if let Some(h) = &g.homepage {
                b["homepage"] = json!(h);
            }
            b
        }).collect::<Vec<_>>(),
        "launcher": {
            "version": env!("CARGO_PKG_VERSION"),
            "source": {"git": {"repository": "kpackd", "commit": LAUNCHER_COMMIT}}
        },
        "processes": build_md.processes.iter().map(|p| {
            let mut v = json!({
                "type": p.kind,
                "command": p.command,
                "args": p.args,
                "direct": p.direct,
                "buildpackID": p.buildpack_id,
            });
            if let Some(dir) = &p.working_dir {
                v["working-dir"] = json!(dir);
            }
            if !p.exec_env.is_empty() {
                v["exec-env"] = json!(p.exec_env);
            }
            v
        }).collect::<Vec<_>>(),
        "buildpack-default-process-type": build_md.default_process.clone().unwrap_or_default(),
    })
}

/// `1980-01-01T00:00:01Z` from seconds since the epoch. RFC 3339 has four-digit years:
/// later times are written as the last second of 9999.
pub fn rfc3339(secs: u64) -> String {
    /// 10000-01-01T00:00:00Z.
    const YEAR_10000: u64 = 253_402_300_800;
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.min(YEAR_10000 - 1));
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_launcher_commit_is_the_commit_built_from() {
        let head = std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string());
        match head {
            Some(head) => assert_eq!(LAUNCHER_COMMIT, head),
            None => assert_eq!(LAUNCHER_COMMIT, "unknown"),
        }
    }

    #[test]
    fn created_dates() {
        assert_eq!(rfc3339(NORMALISED_CREATED), "1980-01-01T00:00:01Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_251_200), "2024-03-01T00:00:00Z");
        assert_eq!(rfc3339(315_532_801), "1980-01-01T00:00:01Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59Z");
    }
}
