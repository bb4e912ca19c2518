//! The test API server through the real `kubectl` and plain HTTP: objects, errors,
//! selectors, watches, updates, deletion.

mod kube_support;

use std::time::{Duration, Instant};

use kube_support::{pod, terminated, tiny_image, watch_events, Cluster};
use serde_json::{json, Value};

#[test]
fn kubectl_creates_gets_follows_and_deletes() {
    let cluster = Cluster::start();
    let version = cluster.kubectl(&["version", "-o", "json"]);
    assert!(version.contains("v1.32.0"), "{version}");

    let secret =
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: greeting\nstringData:\n  word: hello\n";
    let created = cluster.kubectl_stdin(&["create", "-f", "-"], Some(secret));
    assert_eq!(created.trim(), "secret/greeting created");
    let secret: Value =
        serde_json::from_str(&cluster.kubectl(&["get", "secret", "greeting", "-o", "json"]))
            .unwrap();
    assert_eq!(secret["data"]["word"], "aGVsbG8=");
    assert_eq!(secret["type"], "Opaque");

    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: counter
  labels:
    kpackd.dev/image: counter
    kpackd.dev/lineage: abc
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: {}
    command: ["/bin/sh", "-c", "for i in 1 2 3; do echo line $i; sleep 0.5; done"]
"#,
        tiny_image()
    );
    let manifest_path = cluster.dir.path().join("pod.yaml");
    std::fs::write(&manifest_path, &manifest).unwrap();
    let applied = cluster.kubectl(&["apply", "-f", manifest_path.to_str().unwrap()]);
    assert!(applied.contains("pod/counter created"), "{applied}");

    let selected = cluster.kubectl(&[
        "get",
        "pods",
        "-l",
        "kpackd.dev/image=counter,kpackd.dev/lineage",
        "-o",
        "name",
    ]);
    assert_eq!(selected.trim(), "pod/counter");
    let none = cluster.kubectl(&["get", "pods", "-l", "kpackd.dev/image=other", "-o", "name"]);
    assert_eq!(none.trim(), "");
    let table = cluster.kubectl(&["get", "pods"]);
    assert!(
        table.contains("NAME") && table.contains("counter"),
        "{table}"
    );

    // kubectl's typed generators send protobuf.
    let created = cluster.kubectl(&["create", "namespace", "builds"]);
    assert_eq!(created.trim(), "namespace/builds created");
    cluster.kubectl(&[
        "create",
        "secret",
        "docker-registry",
        "registry",
        "-n",
        "builds",
        "--docker-server=127.0.0.1:5000",
        "--docker-username=builder",
        "--docker-password=s3cret",
    ]);
    cluster.kubectl(&[
        "create",
        "secret",
        "generic",
        "plain",
        "-n",
        "builds",
        "--from-literal=k=v",
    ]);
    let secrets: Value =
        serde_json::from_str(&cluster.kubectl(&["get", "secrets", "-n", "builds", "-o", "json"]))
            .unwrap();
    let types: Vec<&str> = secrets["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Opaque", "kubernetes.io/dockerconfigjson"]);
    assert_eq!(secrets["items"][0]["data"]["k"], "dg==");

    let got: Value =
        serde_json::from_str(&cluster.kubectl(&["get", "pod", "counter", "-o", "json"])).unwrap();
    assert_eq!(got["metadata"]["labels"]["kpackd.dev/lineage"], "abc");
    assert!(got["metadata"]["uid"]
        .as_str()
        .is_some_and(|u| u.len() == 36));
    assert!(
        got["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );

    // Applying a changed manifest patches the pod.
    std::fs::write(
        &manifest_path,
        manifest.replace("lineage: abc", "lineage: def"),
    )
    .unwrap();
    let applied = cluster.kubectl(&["apply", "-f", manifest_path.to_str().unwrap()]);
    assert!(applied.contains("pod/counter configured"), "{applied}");
    let relabelled = cluster.kubectl(&[
        "get",
        "pod",
        "counter",
        "-o",
        "jsonpath={.metadata.labels.kpackd\\.dev/lineage}",
    ]);
    assert_eq!(relabelled, "def");

    cluster.wait_pod("counter", Duration::from_secs(120), |p| {
        p["status"]["phase"] == "Running" || p["status"]["phase"] == "Succeeded"
    });
    let logs = cluster.kubectl(&["logs", "-f", "counter", "-c", "main"]);
    assert_eq!(logs, "line 1\nline 2\nline 3\n");
    let done = cluster.wait_phase("counter", "Succeeded");
    assert_eq!(terminated(&done)["reason"], "Completed");

    let deleted = cluster.kubectl(&["delete", "pod", "counter"]);
    assert!(deleted.contains("pod \"counter\" deleted"), "{deleted}");
    let missing = cluster.kubectl_with(&["get", "pod", "counter"], None);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("NotFound") && stderr.contains("\"counter\" not found"),
        "{stderr}"
    );
}

#[test]
fn kubectl_delete_kills_a_running_pod_and_waits_for_it_to_go() {
    let cluster = Cluster::start();
    cluster.create_pod(&pod("sleeper", "echo started; exec sleep 600"));
    cluster.wait_phase("sleeper", "Running");
    let started = Instant::now();
    cluster.kubectl(&["delete", "pod", "sleeper", "--timeout=30s"]);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(cluster.pod("sleeper").is_none());
}

#[test]
fn a_watch_from_a_resource_version_sees_added_modified_and_deleted() {
    let cluster = Cluster::start();
    let (_, list) = cluster.json("GET", "/api/v1/namespaces/default/pods", None);
    let from = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    cluster.create_pod(&pod("watched", "echo hi"));
    cluster.wait_phase("watched", "Succeeded");
    let (status, _) = cluster.http("DELETE", "/api/v1/namespaces/default/pods/watched", None);
    assert_eq!(status, 200);
    cluster.wait_pod("watched", Duration::from_secs(30), Value::is_null);

    let events = watch_events(
        &cluster,
        &format!("/api/v1/namespaces/default/pods?watch=true&resourceVersion={from}&timeoutSeconds=1&labelSelector=kpackd.dev%2Fimage%3Dwatched"),
    );
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"ADDED"));
    assert_eq!(kinds.last(), Some(&"DELETED"));
    assert!(kinds[1..kinds.len() - 1].iter().all(|k| *k == "MODIFIED"));
    let phases: Vec<&str> = events
        .iter()
        .filter_map(|(_, o)| o["status"]["phase"].as_str())
        .collect();
    assert!(
        phases.contains(&"Running") && phases.contains(&"Succeeded"),
        "{phases:?}"
    );
    let versions: Vec<u64> = events
        .iter()
        .map(|(_, o)| {
            o["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");

    // A watch that is open when the change happens.
    let now = cluster.server.resource_version();
    let path = format!(
        "/api/v1/namespaces/default/secrets?watch=1&resourceVersion={now}&timeoutSeconds=3"
    );
    let watcher = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| watch_events(&cluster, &path));
        std::thread::sleep(Duration::from_millis(500));
        let (status, _) = cluster.json(
            "POST",
            "/api/v1/namespaces/default/secrets",
            Some(&json!({"metadata": {"name": "live"}, "data": {"a": "Yg=="}})),
        );
        assert_eq!(status, 201);
        watcher.join().unwrap()
    });
    assert_eq!(watcher.len(), 1);
    assert_eq!(watcher[0].0, "ADDED");
    assert_eq!(watcher[0].1["metadata"]["name"], "live");
}

#[test]
fn an_expired_resource_version_is_gone() {
    let cluster = Cluster::start();
    cluster.json(
        "POST",
        "/api/v1/namespaces/default/secrets",
        Some(&json!({"metadata": {"name": "old"}})),
    );
    cluster.server.compact();
    let events = watch_events(
        &cluster,
        "/api/v1/namespaces/default/secrets?watch=true&resourceVersion=1",
    );
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "ERROR");
    assert_eq!(events[0].1["kind"], "Status");
    assert_eq!(events[0].1["code"], 410);
    assert_eq!(events[0].1["reason"], "Expired");

    let (status, gone) = cluster.json(
        "GET",
        "/api/v1/namespaces/default/secrets?resourceVersion=1&resourceVersionMatch=Exact",
        None,
    );
    assert_eq!(status, 410);
    assert_eq!(gone["code"], 410);

    // From the current resourceVersion on, nothing is missing.
    let now = cluster.server.resource_version();
    let events = watch_events(
        &cluster,
        &format!(
            "/api/v1/namespaces/default/secrets?watch=true&resourceVersion={now}&timeoutSeconds=1"
        ),
    );
    assert!(events.is_empty());
}

#[test]
fn errors_are_status_objects() {
    let cluster = Cluster::start();
    let (status, missing) = cluster.json("GET", "/api/v1/namespaces/default/pods/nope", None);
    assert_eq!(status, 404);
    assert_eq!(missing["kind"], "Status");
    assert_eq!(missing["reason"], "NotFound");
    assert_eq!(missing["details"]["name"], "nope");

    let (status, invalid) = cluster.json(
        "POST",
        "/api/v1/namespaces/default/pods",
        Some(&json!({"metadata": {"name": "empty"}, "spec": {}})),
    );
    assert_eq!(status, 422);
    assert_eq!(invalid["reason"], "Invalid");
    assert_eq!(invalid["details"]["causes"][0]["field"], "spec.containers");

    let secret = json!({"metadata": {"name": "twice"}, "stringData": {"a": "b"}});
    let (status, _) = cluster.json("POST", "/api/v1/namespaces/default/secrets", Some(&secret));
    assert_eq!(status, 201);
    let (status, conflict) =
        cluster.json("POST", "/api/v1/namespaces/default/secrets", Some(&secret));
    assert_eq!(status, 409);
    assert_eq!(conflict["reason"], "AlreadyExists");

    let (status, _) = cluster.json(
        "POST",
        "/api/v1/namespaces/elsewhere/secrets",
        Some(&secret),
    );
    assert_eq!(status, 404);
    let (status, _) = cluster.json(
        "POST",
        "/api/v1/namespaces",
        Some(&json!({"metadata": {"name": "elsewhere"}})),
    );
    assert_eq!(status, 201);
    let (status, _) = cluster.json(
        "POST",
        "/api/v1/namespaces/elsewhere/secrets",
        Some(&secret),
    );
    assert_eq!(status, 201);

    let (status, deleted) =
        cluster.json("DELETE", "/api/v1/namespaces/default/secrets/twice", None);
    assert_eq!(status, 200);
    assert_eq!(deleted["metadata"]["name"], "twice");
    let (status, _) = cluster.json("DELETE", "/api/v1/namespaces/default/secrets/twice", None);
    assert_eq!(status, 404);
}

#[test]
fn updates_check_the_resource_version_and_what_may_change() {
    let cluster = Cluster::start();
    cluster.create_pod(&pod("labelled", "exec sleep 600"));
    let labelled = cluster.kubectl(&["label", "pod", "labelled", "kpackd.dev/lineage=l1"]);
    assert!(labelled.contains("pod/labelled labeled"), "{labelled}");
    cluster.kubectl(&["annotate", "pod", "labelled", "note=kept"]);
    let pod = cluster.pod("labelled").unwrap();
    assert_eq!(pod["metadata"]["labels"]["kpackd.dev/lineage"], "l1");
    assert_eq!(pod["metadata"]["annotations"]["note"], "kept");

    let mut stale = pod.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    let (status, conflict) = cluster.json(
        "PUT",
        "/api/v1/namespaces/default/pods/labelled",
        Some(&stale),
    );
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["reason"], "Conflict");

    let mut respecced = cluster.pod("labelled").unwrap();
    respecced["spec"]["restartPolicy"] = json!("Always");
    let (status, invalid) = cluster.json(
        "PUT",
        "/api/v1/namespaces/default/pods/labelled",
        Some(&respecced),
    );
    assert_eq!(status, 422, "{invalid}");

    let (status, _) = cluster.json(
        "POST",
        "/api/v1/namespaces/default/secrets",
        Some(&json!({"metadata": {"name": "s"}, "stringData": {"a": "1"}})),
    );
    assert_eq!(status, 201);
    let patch = r#"{"stringData":{"b":"2"}}"#;
    cluster.kubectl(&["patch", "secret", "s", "--type=merge", "-p", patch]);
    let secret: Value =
        serde_json::from_str(&cluster.kubectl(&["get", "secret", "s", "-o", "json"])).unwrap();
    assert_eq!(secret["data"], json!({"a": "MQ==", "b": "Mg=="}));
    cluster.kubectl(&["delete", "pod", "labelled"]);
}

#[test]
fn deleting_an_owner_deletes_what_it_owns() {
    let cluster = Cluster::start();
    let owner = cluster.create_pod(&pod("owner", "exec sleep 600"));
    let (status, _) = cluster.json(
        "POST",
        "/api/v1/namespaces/default/secrets",
        Some(&json!({
            "metadata": {"name": "owned", "ownerReferences": [{
                "apiVersion": "v1", "kind": "Pod", "name": "owner",
                "uid": owner["metadata"]["uid"], "controller": true,
            }]},
            "stringData": {"request": "{}"},
        })),
    );
    assert_eq!(status, 201);
    cluster.wait_phase("owner", "Running");
    cluster.kubectl(&["delete", "pod", "owner"]);
    let (status, _) = cluster.http("GET", "/api/v1/namespaces/default/secrets/owned", None);
    assert_eq!(status, 404);
}

#[test]
fn deleting_a_namespace_deletes_what_is_in_it() {
    let cluster = Cluster::start();
    cluster.kubectl(&["create", "namespace", "scratch"]);
    cluster.kubectl(&[
        "create",
        "secret",
        "generic",
        "s",
        "-n",
        "scratch",
        "--from-literal=a=b",
    ]);
    let mut sleeper = pod("sleeper", "exec sleep 600");
    sleeper["metadata"]["namespace"] = json!("scratch");
    let (status, _) = cluster.json("POST", "/api/v1/namespaces/scratch/pods", Some(&sleeper));
    assert_eq!(status, 201);
    let deleted = cluster.kubectl(&["delete", "namespace", "scratch", "--timeout=60s"]);
    assert!(
        deleted.contains("namespace \"scratch\" deleted"),
        "{deleted}"
    );
    for path in [
        "/api/v1/namespaces/scratch",
        "/api/v1/namespaces/scratch/pods/sleeper",
        "/api/v1/namespaces/scratch/secrets/s",
    ] {
        let (status, _) = cluster.http("GET", path, None);
        assert_eq!(status, 404, "{path}");
    }
}

#[test]
fn a_watch_with_a_selector_sees_objects_enter_and_leave_it() {
    let cluster = Cluster::start();
    let from = cluster.server.resource_version();
    let secret =
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: moving\n  labels:\n    tier: a\n";
    cluster.kubectl_stdin(&["create", "-f", "-"], Some(secret));
    cluster.kubectl(&["label", "--overwrite", "secret", "moving", "tier=b"]);
    cluster.kubectl(&["label", "--overwrite", "secret", "moving", "tier=a"]);
    cluster.kubectl(&["create", "secret", "generic", "unlabelled"]);
    cluster.kubectl(&["delete", "secret", "moving"]);
    let events = watch_events(
        &cluster,
        &format!("/api/v1/namespaces/default/secrets?watch=1&labelSelector=tier%3Da&resourceVersion={from}&timeoutSeconds=1"),
    );
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|(kind, o)| {
            (
                kind.as_str(),
                o["metadata"]["labels"]["tier"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("ADDED", "a"),
            ("DELETED", "b"),
            ("ADDED", "a"),
            ("DELETED", "a")
        ]
    );
}
