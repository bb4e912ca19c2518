//! The manifests in examples/kubernetes/ are Kubernetes objects: every document of every
//! file reads as its kind's `k8s-openapi` type with no field left over (those types
//! ignore unknown fields, so each document is read, written back and compared with what
//! was written: a misspelt field is missing from the copy), and the ConfigMap's
//! kpack.toml is valid.

use std::path::{Path, PathBuf};

use k8s_openapi::api::{apps, core, rbac};
use saphyr::{LoadableYamlNode, Scalar, Yaml};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

fn manifests() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/kubernetes exists")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every document of a YAML text, as JSON values.
fn documents(text: &str) -> Vec<Value> {
    Yaml::load_from_str(text)
        .expect("valid YAML")
        .iter()
        .filter(|doc| !matches!(doc, Yaml::Value(Scalar::Null)))
        .map(json)
        .collect()
}

fn json(yaml: &Yaml) -> Value {
    match yaml {
        Yaml::Value(Scalar::Null) => Value::Null,
        Yaml::Value(Scalar::Boolean(b)) => Value::Bool(*b),
        Yaml::Value(Scalar::Integer(i)) => Value::from(*i),
        Yaml::Value(Scalar::FloatingPoint(f)) => Value::from(f.into_inner()),
        Yaml::Value(Scalar::String(s)) => Value::String(s.to_string()),
        Yaml::Sequence(items) => Value::Array(items.iter().map(json).collect()),
        Yaml::Mapping(map) => Value::Object(
            map.iter()
                .map(|(key, value)| {
                    let key = match json(key) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, json(value))
                })
                .collect(),
        ),
        other => panic!("unsupported YAML node {other:?}"),
    }
}

/// Reads `document` as a `T` and writes it back: the fields of `document` the copy
/// lacks or changed are those `T` does not know, or were written wrong.
fn unknown_fields<T: DeserializeOwned + Serialize>(
    document: &Value,
) -> Result<Vec<String>, String> {
    let object: T = serde_json::from_value(document.clone()).map_err(|e| e.to_string())?;
    let copy = serde_json::to_value(&object).expect("a Kubernetes object serialises");
    let mut differences = Vec::new();
    compare(document, &copy, String::new(), &mut differences);
    Ok(differences)
}

fn compare(written: &Value, read: &Value, path: String, out: &mut Vec<String>) {
    match (written, read) {
        (Value::Object(written), Value::Object(read)) => {
            for (key, value) in written {
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match read.get(key) {
                    Some(read) => compare(value, read, here, out),
                    None => out.push(here),
                }
            }
        }
        (Value::Array(written), Value::Array(read)) if written.len() == read.len() => {
            for (i, (w, r)) in written.iter().zip(read).enumerate() {
                compare(w, r, format!("{path}[{i}]"), out);
            }
        }
        (w, r) if w == r => {}
        _ => out.push(path),
    }
}

/// The fields of a manifest document that its kind does not have; Err when it is not a
/// kind these examples use, or does not read as one.
fn check(document: &Value) -> Result<Vec<String>, String> {
    let api_version = document["apiVersion"].as_str().unwrap_or_default();
    let kind = document["kind"].as_str().unwrap_or_default();
    match (api_version, kind) {
        ("v1", "Namespace") => unknown_fields::<core::v1::Namespace>(document),
        ("v1", "ServiceAccount") => unknown_fields::<core::v1::ServiceAccount>(document),
        ("v1", "ConfigMap") => unknown_fields::<core::v1::ConfigMap>(document),
        ("v1", "Service") => unknown_fields::<core::v1::Service>(document),
        ("v1", "PersistentVolumeClaim") => {
            unknown_fields::<core::v1::PersistentVolumeClaim>(document)
        }
        ("apps/v1", "Deployment") => unknown_fields::<apps::v1::Deployment>(document),
        ("rbac.authorization.k8s.io/v1", "Role") => unknown_fields::<rbac::v1::Role>(document),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            unknown_fields::<rbac::v1::RoleBinding>(document)
        }
        other => Err(format!("unexpected apiVersion and kind {other:?}")),
    }
}

fn all_documents() -> Vec<(PathBuf, Value)> {
    manifests()
        .into_iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(&path).expect("a readable manifest");
            documents(&text)
                .into_iter()
                .map(move |doc| (path.clone(), doc))
        })
        .collect()
}

#[test]
fn every_manifest_is_a_kubernetes_object_with_no_unknown_field() {
    let documents = all_documents();
    for (path, document) in &documents {
        match check(document) {
            Ok(unknown) => assert!(
                unknown.is_empty(),
                "{}: {} has unknown or mistyped fields {unknown:?}",
                path.display(),
                document["kind"]
            ),
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
    let mut kinds: Vec<&str> = documents
        .iter()
        .filter_map(|(_, d)| d["kind"].as_str())
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "Deployment",
            "Namespace",
            "PersistentVolumeClaim",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
    );
}

#[test]
fn a_misspelt_field_is_caught() {
    let typo = documents(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: kpackd\nspec:\n  replica: 1\n  selector:\n    matchLabels: { app: kpackd }\n  template:\n    metadata:\n      labels: { app: kpackd }\n    spec:\n      containers:\n        - name: kpackd\n          image: kpackd\n          imagePullPolicy: Always\n          securityContext: { runAsNonRot: true }\n",
    );
    assert_eq!(
        check(&typo[0]),
        Ok(vec![
            "spec.replica".to_string(),
            "spec.template.spec.containers[0].securityContext.runAsNonRot".to_string(),
        ])
    );
    let wrong_type =
        documents("apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  ports: 80\n");
    assert!(check(&wrong_type[0]).is_err());
}

#[test]
fn the_deployment_runs_one_writer_as_non_root() {
    let documents = all_documents();
    let (_, deployment) = documents
        .iter()
        .find(|(_, d)| d["kind"] == "Deployment")
        .expect("a Deployment");
    let deployment: apps::v1::Deployment =
        serde_json::from_value(deployment.clone()).expect("a Deployment");
    let spec = deployment.spec;
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(
        spec.strategy.and_then(|s| s.type_).as_deref(),
        Some("Recreate")
    );
    let pod = spec.template.spec.expect("a pod spec");
    let security = pod.security_context.expect("a pod security context");
    assert_eq!(security.run_as_non_root, Some(true));
    let container = &pod.containers[0];
    assert_eq!(
        container.args.as_deref().map(|a| &a[..2]),
        Some(&["watch".to_string(), "/config/kpack.toml".to_string()][..])
    );
    let container_security = container
        .security_context
        .as_ref()
        .expect("a security context");
    assert_eq!(container_security.allow_privilege_escalation, Some(false));
}

#[test]
fn the_config_maps_kpack_toml_is_valid() {
    let documents = all_documents();
    let (_, config_map) = documents
        .iter()
        .find(|(_, d)| d["kind"] == "ConfigMap")
        .expect("a ConfigMap");
    let text = config_map["data"]["kpack.toml"]
        .as_str()
        .expect("a kpack.toml key");
    let config = match planner::parse(Path::new("/config/kpack.toml"), text) {
        Ok(config) => config,
        Err(e) => panic!("{:?}", miette::Report::new(e)),
    };
    assert_eq!(config.settings.executor, planner::Executor::Kubernetes);
    assert!(config.warnings().is_none());
    let kubernetes = config.kubernetes.expect("[kubernetes]");
    // The namespace and service account the other manifests make.
    let named = |kind: &str| -> Vec<String> {
        documents
            .iter()
            .filter(|(_, d)| d["kind"] == kind)
            .filter_map(|(_, d)| d["metadata"]["name"].as_str().map(str::to_string))
            .collect()
    };
    assert!(named("Namespace").contains(&kubernetes.namespace));
    let account = kubernetes.service_account.expect("a build service account");
    assert!(named("ServiceAccount").contains(&account));
}
