//! What the API server does to an object on its way in: validation (422 Invalid with the
//! offending fields, as the real one words them) and defaulting; and the `Status` objects
//! errors are answered with.

use base64::Engine;
use serde_json::{json, Value};

use super::store::Kind;

/// The node every pod is scheduled to.
pub(crate) const NODE_NAME: &str = "kpackd-testkit-node";

/// An error answered as a `Status` object.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    pub(crate) details: Option<Value>,
}

impl ApiError {
    pub(crate) fn not_found(kind: Kind, name: &str) -> ApiError {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("{} \"{name}\" not found", kind.resource()),
            details: Some(json!({"name": name, "kind": kind.resource()})),
        }
    }

    pub(crate) fn already_exists(kind: Kind, name: &str) -> ApiError {
        ApiError {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{} \"{name}\" already exists", kind.resource()),
            details: Some(json!({"name": name, "kind": kind.resource()})),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
            details: None,
        }
    }

    /// 404 for a path that names no resource.
    pub(crate) fn no_route() -> ApiError {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: "the server could not find the requested resource".into(),
            details: None,
        }
    }

    pub(crate) fn method_not_allowed(method: &str) -> ApiError {
        ApiError {
            code: 405,
            reason: "MethodNotAllowed",
            message: format!(
                "the server does not allow this method on the requested resource ({method})"
            ),
            details: None,
        }
    }

    /// 410 Expired: the resourceVersion is older than the history goes.
    pub(crate) fn expired(requested: u64, oldest: u64) -> ApiError {
        ApiError {
            code: 410,
            reason: "Expired",
            message: format!("too old resource version: {requested} ({oldest})"),
            details: None,
        }
    }

    /// 422 Invalid, one cause per `(field, cause reason, message)`.
    fn invalid(kind: Kind, name: &str, causes: &[(String, &str, String)]) -> ApiError {
        let summary: Vec<String> = causes
            .iter()
            .map(|(field, _, message)| format!("{field}: {message}"))
            .collect();
        let message = match summary.as_slice() {
            [one] => format!("{} \"{name}\" is invalid: {one}", kind.name()),
            many => format!(
                "{} \"{name}\" is invalid: [{}]",
                kind.name(),
                many.join(", ")
            ),
        };
        ApiError {
            code: 422,
            reason: "Invalid",
            message,
            details: Some(json!({
                "name": name,
                "kind": kind.name(),
                "causes": causes.iter().map(|(field, reason, message)| json!({
                    "reason": reason, "message": message, "field": field,
                })).collect::<Vec<_>>(),
            })),
        }
    }

    /// The `Status` object.
    pub(crate) fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

/// Now, as the API writes times: `2026-01-02T03:04:05Z`.
pub(crate) fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Collects validation failures.
#[derive(Default)]
struct Causes(Vec<(String, &'static str, String)>);

impl Causes {
    fn required(&mut self, field: impl Into<String>) {
        self.0
            .push((field.into(), "FieldValueRequired", "Required value".into()));
    }

    fn invalid(&mut self, field: impl Into<String>, value: &Value, why: &str) {
        self.0.push((
            field.into(),
            "FieldValueInvalid",
            format!("Invalid value: {value}: {why}"),
        ));
    }

    fn unsupported(&mut self, field: impl Into<String>, value: &Value, supported: &[&str]) {
        let supported: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        self.0.push((
            field.into(),
            "FieldValueNotSupported",
            format!(
                "Unsupported value: {value}: supported values: {}",
                supported.join(", ")
            ),
        ));
    }

    fn duplicate(&mut self, field: impl Into<String>, value: &Value) {
        self.0.push((
            field.into(),
            "FieldValueDuplicate",
            format!("Duplicate value: {value}"),
        ));
    }
}

/// Checks the new object and fills in what the API server defaults; the name comes from
/// `generateName` when there is none. The namespace is the request's.
pub(crate) fn admit(kind: Kind, mut object: Value) -> Result<Value, ApiError> {
    if !object.is_object() {
        return Err(ApiError::bad_request("the body is not a JSON object"));
    }
    if let Some(sent) = object.get("kind").and_then(Value::as_str) {
        if sent != kind.name() {
            return Err(ApiError::bad_request(format!(
                "the kind of the body ({sent}) is not {}",
                kind.name()
            )));
        }
    }
    object["kind"] = json!(kind.name());
    object["apiVersion"] = json!("v1");
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    let metadata = &mut object["metadata"];
    if metadata["name"].as_str().unwrap_or_default().is_empty() {
        if let Some(prefix) = metadata["generateName"].as_str() {
            metadata["name"] = json!(format!("{prefix}{}", random_suffix()));
        }
    }
    for field in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
    ] {
        if let Some(m) = metadata.as_object_mut() {
            m.remove(field);
        }
    }
    let name = metadata["name"].as_str().unwrap_or_default().to_string();
    let mut causes = Causes::default();
    if name.is_empty() {
        causes.0.push((
            "metadata.name".into(),
            "FieldValueRequired",
            "Required value: name or generateName is required".into(),
        ));
    } else if !is_subdomain(&name) || (kind == Kind::Namespace && !is_label(&name)) {
        causes.invalid(
            "metadata.name",
            &json!(name),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        );
    }
    check_labels(&object["metadata"]["labels"], &mut causes);
    match kind {
        Kind::Pod => admit_pod(&mut object, &mut causes),
        Kind::Secret => admit_secret(&mut object, &mut causes),
        Kind::Namespace => {
            object["spec"] = json!({"finalizers": ["kubernetes"]});
            object["status"] = json!({"phase": "Active"});
        }
    }
    if causes.0.is_empty() {
        Ok(object)
    } else {
        Err(ApiError::invalid(kind, &name, &causes.0))
    }
}

fn check_labels(labels: &Value, causes: &mut Causes) {
    let Some(labels) = labels.as_object() else {
        return;
    };
    for (key, value) in labels {
        let name = key.rsplit('/').next().unwrap_or_default();
        if name.is_empty() || name.len() > 63 || !is_label_value(name) {
            causes.invalid(
                "metadata.labels",
                &json!(key),
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            );
        }
        match value.as_str() {
            Some(v) if v.len() <= 63 && (v.is_empty() || is_label_value(v)) => {}
            _ => causes.invalid(
                "metadata.labels",
                value,
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            ),
        }
    }
}

fn admit_pod(pod: &mut Value, causes: &mut Causes) {
    let spec = &mut pod["spec"];
    if !spec.is_object() {
        *spec = json!({});
    }
    let volumes: Vec<String> = spec["volumes"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .filter_map(|v| v["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for (i, volume) in spec["volumes"].as_array().into_iter().flatten().enumerate() {
        let field = format!("spec.volumes[{i}]");
        if volume["name"].as_str().is_none_or(str::is_empty) {
            causes.required(format!("{field}.name"));
        }
        let sources = ["secret", "emptyDir"]
            .iter()
            .filter(|s| volume.get(**s).is_some())
            .count();
        if sources != 1 {
            causes.required(format!(
                "{field}: must specify exactly one of secret or emptyDir (the volume types this server supports)"
            ));
        }
        if volume.get("secret").is_some()
            && volume["secret"]["secretName"]
                .as_str()
                .is_none_or(str::is_empty)
        {
            causes.required(format!("{field}.secret.secretName"));
        }
    }
    let mut seen = Vec::new();
    match spec["containers"].as_array_mut() {
        Some(containers) if !containers.is_empty() => {
            for (i, container) in containers.iter_mut().enumerate() {
                admit_container(i, container, &volumes, &mut seen, causes);
            }
        }
        _ => causes.required("spec.containers"),
    }
    if let Some(policy) = spec.get("restartPolicy") {
        if !matches!(policy.as_str(), Some("Always" | "OnFailure" | "Never")) {
            causes.unsupported(
                "spec.restartPolicy",
                policy,
                &["Always", "OnFailure", "Never"],
            );
        }
    }
    if let Some(deadline) = spec.get("activeDeadlineSeconds") {
        if deadline.as_i64().is_none_or(|d| d <= 0) {
            causes.invalid(
                "spec.activeDeadlineSeconds",
                deadline,
                "must be between 1 and 2147483647, inclusive",
            );
        }
    }
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "securityContext", json!({}));
    default(spec, "nodeName", json!(NODE_NAME));
    pod["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
}

/// Checks and defaults the `i`th container; `seen` collects container names.
fn admit_container(
    i: usize,
    container: &mut Value,
    volumes: &[String],
    seen: &mut Vec<String>,
    causes: &mut Causes,
) {
    let field = format!("spec.containers[{i}]");
    match container["name"].as_str() {
        None | Some("") => causes.required(format!("{field}.name")),
        Some(name) if !is_label(name) => causes.invalid(
            format!("{field}.name"),
            &json!(name),
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'",
        ),
        Some(name) if seen.iter().any(|s| s == name) => {
            causes.duplicate(format!("{field}.name"), &json!(name))
        }
        Some(name) => seen.push(name.to_string()),
    }
    if container["image"].as_str().is_none_or(str::is_empty) {
        causes.required(format!("{field}.image"));
    }
    for (j, mount) in container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let mount_field = format!("{field}.volumeMounts[{j}]");
        let name = mount["name"].as_str().unwrap_or_default();
        if !volumes.iter().any(|v| v == name) {
            causes.0.push((
                format!("{mount_field}.name"),
                "FieldValueNotFound",
                format!("Not found: \"{name}\""),
            ));
        }
        if !mount["mountPath"]
            .as_str()
            .is_some_and(|p| p.starts_with('/'))
        {
            causes.required(format!("{mount_field}.mountPath"));
        }
    }
    default(
        container,
        "terminationMessagePath",
        json!("/dev/termination-log"),
    );
    default(container, "terminationMessagePolicy", json!("File"));
    let latest = container["image"]
        .as_str()
        .is_some_and(|i| !i.contains('@') && tag_of(i).is_none_or(|t| t == "latest"));
    default(
        container,
        "imagePullPolicy",
        json!(if latest { "Always" } else { "IfNotPresent" }),
    );
    default(container, "resources", json!({}));
}

/// The tag of an image reference without a digest, if it has one.
fn tag_of(image: &str) -> Option<&str> {
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split_once(':').map(|(_, tag)| tag)
}

fn admit_secret(secret: &mut Value, causes: &mut Causes) {
    if secret["type"].as_str().is_none_or(str::is_empty) {
        secret["type"] = json!("Opaque");
    }
    if !secret["data"].is_object() {
        secret["data"] = json!({});
    }
    if let Some(strings) = secret.as_object_mut().and_then(|s| s.remove("stringData")) {
        for (key, value) in strings.as_object().into_iter().flatten() {
            let text = value.as_str().unwrap_or_default();
            secret["data"][key] = json!(base64::engine::general_purpose::STANDARD.encode(text));
        }
    }
    let data = secret["data"].as_object().cloned().unwrap_or_default();
    for (key, value) in &data {
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            causes.invalid(
                format!("data[{key}]"),
                &json!(key),
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            );
        }
        let decoded = value
            .as_str()
            .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok());
        if decoded.is_none() {
            causes.invalid(format!("data[{key}]"), value, "not valid base64");
        }
    }
    if secret["type"] == "kubernetes.io/dockerconfigjson" {
        let config = data
            .get(".dockerconfigjson")
            .and_then(Value::as_str)
            .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok());
        match config {
            None => causes.required("data[.dockerconfigjson]"),
            Some(bytes) if serde_json::from_slice::<Value>(&bytes).is_err() => causes.invalid(
                "data[.dockerconfigjson]",
                &json!("<secret contents redacted>"),
                "not valid JSON",
            ),
            Some(_) => {}
        }
    }
}

fn default(object: &mut Value, field: &str, value: Value) {
    if let Some(map) = object.as_object_mut() {
        map.entry(field.to_string()).or_insert(value);
    }
}

/// An RFC 1123 label: lowercase alphanumerics and '-', at most 63, alphanumeric at the ends.
fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An RFC 1123 subdomain: labels joined by '.', at most 253.
fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

/// Alphanumerics, '-', '_' and '.', alphanumeric at the ends.
fn is_label_value(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Five characters for `generateName`, as the API server picks them.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let uid = std::fs::read("/proc/sys/kernel/random/uuid").unwrap_or_default();
    let mut seed = uid.iter().fold(std::process::id() as u64, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(*b as u64)
    });
    (0..5)
        .map(|_| {
            let c = ALPHABET[(seed % ALPHABET.len() as u64) as usize] as char;
            seed /= ALPHABET.len() as u64;
            c
        })
        .collect()
}
