//! A container's environment as the kubelet makes it: the image's variables, `HOSTNAME`,
//! then the container's `env` with `$(NAME)` references expanded and `valueFrom` read
//! from the pod's own fields or from a Secret.

use base64::Engine;
use serde_json::Value;

use super::runtime::ImageConfig;

/// The container's environment: the image's, `HOSTNAME`, then the container's own `env`
/// in order (`$(NAME)` references to earlier ones expanded). `secret` looks a Secret of
/// the pod's namespace up. Err: why the container cannot be configured, as the kubelet's
/// `CreateContainerConfigError` message says it.
pub(crate) fn environment(
    config: &ImageConfig,
    pod: &Value,
    container: &Value,
    secret: impl Fn(&str) -> Option<Value>,
) -> Result<Vec<(String, String)>, String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, name: String, value: String| {
        env.retain(|(n, _)| *n != name);
        env.push((name, value));
    };
    for entry in &config.env {
        let (name, value) = entry.split_once('=').unwrap_or((entry, ""));
        set(&mut env, name.to_string(), value.to_string());
    }
    let hostname = pod["metadata"]["name"].as_str().unwrap_or_default();
    set(&mut env, "HOSTNAME".into(), hostname.to_string());
    for var in container["env"].as_array().into_iter().flatten() {
        let Some(name) = var["name"].as_str() else {
            continue;
        };
        let from = &var["valueFrom"];
        let value = if from.is_object() {
            match value_from(pod, from, &secret)? {
                Some(value) => value,
                None => continue,
            }
        } else {
            expand(var["value"].as_str().unwrap_or_default(), &env)
        };
        set(&mut env, name.to_string(), value);
    }
    Ok(env)
}

/// The value of a `valueFrom`: a `fieldRef` to the pod's own fields or a `secretKeyRef`.
/// None: an optional reference to nothing, which leaves the variable unset.
fn value_from(
    pod: &Value,
    from: &Value,
    secret: impl Fn(&str) -> Option<Value>,
) -> Result<Option<String>, String> {
    if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
        let metadata = &pod["metadata"];
        let keyed = |field: &str| {
            path.strip_prefix(field)
                .and_then(|rest| rest.strip_prefix("['"))
                .and_then(|rest| rest.strip_suffix("']"))
        };
        let value = match path {
            "metadata.name" | "metadata.namespace" | "metadata.uid" => {
                metadata[&path["metadata.".len()..]].clone()
            }
            "spec.nodeName" => pod["spec"]["nodeName"].clone(),
            "status.hostIP" | "status.podIP" => Value::from("127.0.0.1"),
            _ => match (keyed("metadata.labels"), keyed("metadata.annotations")) {
                (Some(key), _) => metadata["labels"][key].clone(),
                (_, Some(key)) => metadata["annotations"][key].clone(),
                _ => return Err(format!("unsupported fieldRef fieldPath {path}")),
            },
        };
        return Ok(Some(value.as_str().unwrap_or_default().to_string()));
    }
    let reference = &from["secretKeyRef"];
    if !reference.is_object() {
        return Err(
            "only fieldRef and secretKeyRef are supported in valueFrom by this node".into(),
        );
    }
    let name = reference["name"].as_str().unwrap_or_default();
    let key = reference["key"].as_str().unwrap_or_default();
    let optional = reference["optional"] == true;
    let Some(found) = secret(name) else {
        return if optional {
            Ok(None)
        } else {
            Err(format!("secret \"{name}\" not found"))
        };
    };
    match found["data"][key].as_str() {
        Some(encoded) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| format!("secret {name} key {key}: {e}"))?;
            Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
        }
        None if optional => Ok(None),
        None => Err(format!("couldn't find key {key} in Secret {name}")),
    }
}

/// Expands `$(NAME)` to the variable's value as Kubernetes does; `$$` is a literal `$`
/// and a reference to an unknown name stays as written.
pub(crate) fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after.strip_prefix('(').and_then(|a| a.split_once(')')) {
            match env.iter().rev().find(|(n, _)| n == name) {
                Some((_, value)) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn value_from_reads_the_pod_and_its_secrets() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns", "labels": {"a/b": "c"}}});
        let container = json!({"env": [
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "LABEL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['a/b']"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "t"}}},
            {"name": "GONE", "valueFrom": {"secretKeyRef": {"name": "x", "key": "t", "optional": true}}},
            {"name": "BOTH", "value": "$(NAME)-$(TOKEN)"},
        ]});
        let secret = |name: &str| (name == "s").then(|| json!({"data": {"t": "c2VjcmV0"}}));
        let env = environment(&ImageConfig::default(), &pod, &container, secret).unwrap();
        let get = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("NAME"), Some("p"));
        assert_eq!(get("HOSTNAME"), Some("p"));
        assert_eq!(get("LABEL"), Some("c"));
        assert_eq!(get("TOKEN"), Some("secret"));
        assert_eq!(get("GONE"), None);
        assert_eq!(get("BOTH"), Some("p-secret"));

        let missing = json!({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "y", "key": "t"}}}]});
        let error = environment(&ImageConfig::default(), &pod, &missing, |_| None).unwrap_err();
        assert_eq!(error, "secret \"y\" not found");
    }

    #[test]
    fn references_expand_as_kubernetes_does() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("cost $5", &env), "cost $5");
    }
}
