//! The objects of one build: its Pod and two Secrets (the request, the registry
//! credentials), their names and labels.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, KeyToPath, LocalObjectReference, Pod, PodSecurityContext,
    PodSpec, ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource, SecurityContext,
    Toleration as K8sToleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::ByteString;
use sha2::{Digest as _, Sha256};

use super::{
    KubeSettings, PodBuild, PodFailure, BUILD_LABEL, IMAGE_ANNOTATION, IMAGE_LABEL, LINEAGE_LABEL,
};

/// Where the Pod reads its request (the request Secret's volume).
pub const REQUEST_PATH: &str = "/kpackd/request/request.json";
/// The directory of the Pod's docker config (`DOCKER_CONFIG`).
const DOCKER_CONFIG_DIR: &str = "/kpackd/docker";
/// The build entrypoint in a published builder image.
const ENTRYPOINT: &str = "/cnb/lifecycle/kpackd";
/// Where the entrypoint writes its result: the Pod's termination message.
const TERMINATION_LOG: &str = "/dev/termination-log";
/// The build container's name.
pub(super) const CONTAINER: &str = "build";
/// Object names stay within this, so that the Secrets' suffixes and a Pod's host name
/// (at most 63 characters) fit.
const NAME_LIMIT: usize = 54;

/// Where a build Pod runs and what it may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub requests: BTreeMap<String, String>,
    pub limits: BTreeMap<String, String>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
}

/// A Pod toleration, as the Kubernetes API spells it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Toleration {
    pub key: Option<String>,
    pub operator: Option<String>,
    pub value: Option<String>,
    pub effect: Option<String>,
    pub toleration_seconds: Option<i64>,
}

/// `kpackd-<image>-<number>`: the image's name made a DNS-1123 label (lower case,
/// letters, digits and `-`); when that changed it or it is too long, cut and followed by
/// a hash of the name, so that two images never share a name.
pub fn object_name(image: &str, number: u64) -> String {
    let suffix = format!("-{number}");
    let room = NAME_LIMIT - "kpackd-".len() - suffix.len();
    format!("kpackd-{}{suffix}", label_value(image, room))
}

/// `image` as a label value of at most `room` characters (see [`object_name`]).
fn label_value(image: &str, room: usize) -> String {
    let mut clean: String = image
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    clean = clean.trim_matches('-').to_string();
    if clean == image && !clean.is_empty() && clean.len() <= room {
        return clean;
    }
    let hash = hex::encode(&Sha256::digest(image.as_bytes())[..4]);
    clean.truncate(room.saturating_sub(hash.len() + 1));
    let clean = clean.trim_end_matches('-');
    if clean.is_empty() {
        hash
    } else {
        format!("{clean}-{hash}")
    }
}

/// The names of a build's Secrets: the request, the registry credentials.
pub(super) fn secret_names(pod: &str) -> [String; 2] {
    [format!("{pod}-request"), format!("{pod}-registry")]
}

fn metadata(name: &str, build: &PodBuild) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        labels: Some(BTreeMap::from([
            (
                IMAGE_LABEL.to_string(),
                label_value(&build.image, NAME_LIMIT),
            ),
            (BUILD_LABEL.to_string(), build.number.to_string()),
            (LINEAGE_LABEL.to_string(), build.lineage.clone()),
        ])),
        annotations: Some(BTreeMap::from([(
            IMAGE_ANNOTATION.to_string(),
            build.image.clone(),
        )])),
        ..ObjectMeta::default()
    }
}

/// The build Pod: the builder image's entrypoint as the builder's CNB user, with no
/// privileges, no service account token and the request and credentials mounted.
pub(super) fn pod(name: &str, build: &PodBuild, settings: &KubeSettings) -> Pod {
    let [request_secret, registry_secret] = secret_names(name);
    let (uid, gid) = (i64::from(build.user.0), i64::from(build.user.1));
    let placement = &build.placement;
    let container = container(build, settings);
    let mut pull_secrets: Vec<LocalObjectReference> = settings
        .image_pull_secrets
        .iter()
        .map(|name| LocalObjectReference { name: name.clone() })
        .collect();
    pull_secrets.push(LocalObjectReference {
        name: registry_secret.clone(),
    });
    Pod {
        metadata: metadata(name, build),
        spec: Some(PodSpec {
            containers: vec![container],
            restart_policy: Some("Never".to_string()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            service_account_name: settings.service_account.clone(),
            image_pull_secrets: Some(pull_secrets),
            active_deadline_seconds: Some(build.deadline.as_secs().max(1) as i64),
            node_selector: (!placement.node_selector.is_empty())
                .then(|| placement.node_selector.clone()),
            tolerations: (!placement.tolerations.is_empty()).then(|| {
                placement
                    .tolerations
                    .iter()
                    .map(|t| K8sToleration {
                        key: t.key.clone(),
                        operator: t.operator.clone(),
                        value: t.value.clone(),
                        effect: t.effect.clone(),
                        toleration_seconds: t.toleration_seconds,
                    })
                    .collect()
            }),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(uid),
                run_as_group: Some(gid),
                fs_group: Some(gid),
                seccomp_profile: Some(runtime_default()),
                ..PodSecurityContext::default()
            }),
            volumes: Some(vec![
                secret_volume("request", &request_secret, "request.json"),
                secret_volume("docker", &registry_secret, "config.json"),
            ]),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// The build container: the entrypoint as the builder's CNB user, with no privileges and
/// the resources the image's placement asks for.
fn container(build: &PodBuild, settings: &KubeSettings) -> Container {
    let (uid, gid) = (i64::from(build.user.0), i64::from(build.user.1));
    let mut command = vec![
        ENTRYPOINT.to_string(),
        "build".to_string(),
        "--request".to_string(),
        REQUEST_PATH.to_string(),
        "--result-file".to_string(),
        TERMINATION_LOG.to_string(),
    ];
    for registry in &settings.insecure_registries {
        command.push("--insecure-registry".to_string());
        command.push(registry.clone());
    }
    let quantities = |map: &BTreeMap<String, String>| {
        (!map.is_empty()).then(|| {
            map.iter()
                .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                .collect()
        })
    };
    let placement = &build.placement;
    let resources = ResourceRequirements {
        requests: quantities(&placement.requests),
        limits: quantities(&placement.limits),
        ..ResourceRequirements::default()
    };
    Container {
        name: CONTAINER.to_string(),
        image: Some(build.builder.to_string()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        command: Some(command),
        env: Some(vec![EnvVar {
            name: "DOCKER_CONFIG".to_string(),
            value: Some(DOCKER_CONFIG_DIR.to_string()),
            ..EnvVar::default()
        }]),
        volume_mounts: Some(vec![
            mount("request", "/kpackd/request"),
            mount("docker", DOCKER_CONFIG_DIR),
        ]),
        resources: Some(resources),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                ..Capabilities::default()
            }),
            run_as_non_root: Some(true),
            run_as_user: Some(uid),
            run_as_group: Some(gid),
            seccomp_profile: Some(runtime_default()),
            ..SecurityContext::default()
        }),
        termination_message_path: Some(TERMINATION_LOG.to_string()),
        termination_message_policy: Some("File".to_string()),
        ..Container::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_string(),
        ..SeccompProfile::default()
    }
}

fn mount(volume: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: volume.to_string(),
        mount_path: path.to_string(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// The Secret's one key as `file`, readable by the owner and the Pod's group only.
fn secret_volume(volume: &str, secret: &str, file: &str) -> Volume {
    let key = if volume == "docker" {
        ".dockerconfigjson"
    } else {
        "request.json"
    };
    Volume {
        name: volume.to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_string()),
            default_mode: Some(0o440),
            items: Some(vec![KeyToPath {
                key: key.to_string(),
                path: file.to_string(),
                ..KeyToPath::default()
            }]),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// A reference to `pod` as the owner of its Secrets: the cluster deletes them with it.
pub(super) fn owner(pod: &Pod) -> OwnerReference {
    OwnerReference {
        api_version: "v1".to_string(),
        kind: "Pod".to_string(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        ..OwnerReference::default()
    }
}

/// The Secret holding the build request (it may name credentials: a blob URL's token).
pub(super) fn request_secret(
    pod: &str,
    build: &PodBuild,
    owner: &OwnerReference,
) -> Result<Secret, PodFailure> {
    let request = serde_json::to_vec(&build.request)
        .map_err(|e| PodFailure::build(format!("write the build request: {e}")))?;
    Ok(secret(
        &secret_names(pod)[0],
        build,
        owner,
        "Opaque",
        "request.json",
        request,
    ))
}

/// The `kubernetes.io/dockerconfigjson` Secret with the build's registry credentials.
pub(super) fn registry_secret(
    pod: &str,
    build: &PodBuild,
    owner: &OwnerReference,
    docker_config: &[u8],
) -> Secret {
    secret(
        &secret_names(pod)[1],
        build,
        owner,
        "kubernetes.io/dockerconfigjson",
        ".dockerconfigjson",
        docker_config.to_vec(),
    )
}

fn secret(
    name: &str,
    build: &PodBuild,
    owner: &OwnerReference,
    type_: &str,
    key: &str,
    value: Vec<u8>,
) -> Secret {
    let mut metadata = metadata(name, build);
    metadata.owner_references = Some(vec![owner.clone()]);
    Secret {
        metadata,
        type_: Some(type_.to_string()),
        immutable: Some(true),
        data: Some(BTreeMap::from([(key.to_string(), ByteString(value))])),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels_and_distinct() {
        assert_eq!(object_name("web", 3), "kpackd-web-3");
        let upper = object_name("Web_App", 1);
        assert!(upper.starts_with("kpackd-web-app-"), "{upper}");
        assert_ne!(upper, object_name("web-app", 1));
        let long = object_name(&"x".repeat(300), 12345);
        assert!(long.len() <= NAME_LIMIT, "{long}");
        assert!(long.ends_with("-12345"));
        let odd = object_name("___", 1);
        assert!(odd.len() > "kpackd--1".len(), "{odd}");
        for name in [upper, long, odd] {
            assert!(name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
            assert!(!name.contains("--"), "{name}");
        }
    }
}
