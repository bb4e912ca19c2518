//! Updates: a replacing PUT or a merge PATCH of an existing object, checked as the API
//! server does: the resourceVersion precondition (409 Conflict), what may not change
//! (a pod's spec but its image and deadline, a secret's type, an immutable secret's data;
//! 422 Invalid), and the fields a client cannot set (uid, creationTimestamp, status).

use serde_json::{json, Value};

use super::objects::{admit, ApiError};
use super::store::Kind;

/// How a PATCH body says what to change.
pub(crate) enum Patch {
    /// `application/merge-patch+json`, RFC 7386.
    Merge,
    /// `application/strategic-merge-patch+json`: read as a merge patch, which it is for
    /// every map; its lists replace the old ones whole.
    StrategicMerge,
}

impl Patch {
    /// The patch type of a `Content-Type`; Err for JSON patch and server-side apply.
    pub(crate) fn from_content_type(content_type: &str) -> Result<Patch, ApiError> {
        match content_type.split(';').next().unwrap_or_default().trim() {
            "application/merge-patch+json" => Ok(Patch::Merge),
            "application/strategic-merge-patch+json" => Ok(Patch::StrategicMerge),
            other => Err(ApiError {
                code: 415,
                reason: "UnsupportedMediaType",
                message: format!(
                    "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json (not {other:?})"
                ),
                details: None,
            }),
        }
    }
}

/// Applies an RFC 7386 merge patch: objects merge key by key, `null` removes, anything
/// else replaces.
pub(crate) fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(changes) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(fields) = target {
        for (key, change) in changes {
            if change.is_null() {
                fields.remove(key);
            } else {
                merge(fields.entry(key.clone()).or_insert(Value::Null), change);
            }
        }
    }
}

/// The object to store for `desired` replacing `current`.
pub(crate) fn admit_update(kind: Kind, current: &Value, desired: Value) -> Result<Value, ApiError> {
    let name = current["metadata"]["name"].as_str().unwrap_or_default();
    let current_version = &current["metadata"]["resourceVersion"];
    match desired["metadata"]["resourceVersion"].as_str() {
        Some(version) if !version.is_empty() && current_version != version => {
            return Err(ApiError {
                code: 409,
                reason: "Conflict",
                message: format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    kind.resource()
                ),
                details: Some(json!({"name": name, "kind": kind.resource()})),
            });
        }
        _ => {}
    }
    match desired["metadata"]["name"].as_str() {
        Some(sent) if sent != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({sent}) does not match the name on the URL ({name})"
            )))
        }
        _ => {}
    }
    let mut next = admit(kind, desired)?;
    for field in [
        "name",
        "uid",
        "namespace",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "resourceVersion",
    ] {
        match current["metadata"].get(field) {
            Some(value) => next["metadata"][field] = value.clone(),
            None => {
                if let Some(metadata) = next["metadata"].as_object_mut() {
                    metadata.remove(field);
                }
            }
        }
    }
    match kind {
        Kind::Pod => {
            next["status"] = current["status"].clone();
            let mut changed = next["spec"].clone();
            let mut before = current["spec"].clone();
            for spec in [&mut changed, &mut before] {
                if let Some(s) = spec.as_object_mut() {
                    s.remove("activeDeadlineSeconds");
                }
                for container in spec["containers"].as_array_mut().into_iter().flatten() {
                    if let Some(c) = container.as_object_mut() {
                        c.remove("image");
                    }
                }
            }
            if changed != before {
                return Err(forbidden(
                    kind,
                    name,
                    "spec",
                    "pod updates may not change fields other than `spec.containers[*].image` or `spec.activeDeadlineSeconds`",
                ));
            }
        }
        Kind::Secret => {
            if next["type"] != current["type"] {
                return Err(forbidden(kind, name, "type", "field is immutable"));
            }
            if current["immutable"] == true && next["data"] != current["data"] {
                return Err(forbidden(
                    kind,
                    name,
                    "data",
                    "field is immutable when `immutable` is set",
                ));
            }
        }
        Kind::Namespace => next["status"] = current["status"].clone(),
    }
    Ok(next)
}

fn forbidden(kind: Kind, name: &str, field: &str, why: &str) -> ApiError {
    ApiError {
        code: 422,
        reason: "Invalid",
        message: format!(
            "{} \"{name}\" is invalid: {field}: Forbidden: {why}",
            kind.name()
        ),
        details: Some(json!({
            "name": name,
            "kind": kind.name(),
            "causes": [{"reason": "FieldValueForbidden", "message": format!("Forbidden: {why}"), "field": field}],
        })),
    }
}

/// Whether two versions of an object differ in more than their resourceVersion: an
/// update that changes nothing keeps the object as it is, resourceVersion included.
pub(crate) fn changes(current: &Value, next: &Value) -> bool {
    let mut a = current.clone();
    let mut b = next.clone();
    for object in [&mut a, &mut b] {
        if let Some(metadata) = object["metadata"].as_object_mut() {
            metadata.remove("resourceVersion");
        }
    }
    a != b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patches_merge_maps_and_remove_nulls() {
        let mut object = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "list": [1, 2]});
        merge(
            &mut object,
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}, "list": [3]}),
        );
        assert_eq!(
            object,
            json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "list": [3]})
        );
    }

    #[test]
    fn updates_keep_what_clients_cannot_change() {
        let current = admit(
            Kind::Secret,
            json!({"metadata": {"name": "s"}, "data": {"a": "Yg=="}}),
        )
        .unwrap();
        let mut current = current;
        current["metadata"]["uid"] = json!("u");
        current["metadata"]["resourceVersion"] = json!("5");
        let mut desired = current.clone();
        desired["metadata"]["uid"] = json!("forged");
        desired["data"]["b"] = json!("Yw==");
        let next = admit_update(Kind::Secret, &current, desired.clone()).unwrap();
        assert_eq!(next["metadata"]["uid"], "u");
        assert_eq!(next["data"]["b"], "Yw==");

        desired["metadata"]["resourceVersion"] = json!("4");
        assert_eq!(
            admit_update(Kind::Secret, &current, desired)
                .unwrap_err()
                .code,
            409
        );
        let mut retyped = current.clone();
        retyped["type"] = json!("kubernetes.io/tls");
        assert_eq!(
            admit_update(Kind::Secret, &current, retyped)
                .unwrap_err()
                .code,
            422
        );
    }
}
