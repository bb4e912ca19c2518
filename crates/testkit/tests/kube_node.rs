//! The test node: pods that really run images from the loopback registry, and how they
//! end (completed, failed, out of time, evicted, unpullable).

mod kube_support;

use std::time::Duration;

use kube_support::{
    base64_encode, pod, processes_with, push_tiny_image, terminated, tiny_image, Cluster,
};
use serde_json::{json, Value};
use testkit::registry::Registry;

#[test]
fn a_pod_runs_with_its_env_secret_volume_and_termination_message() {
    let cluster = Cluster::start();
    let (status, _) = cluster.json(
        "POST",
        "/api/v1/namespaces/default/secrets",
        Some(&json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "request"},
            "stringData": {"build.json": "{\"app\":\"hello\"}"},
        })),
    );
    assert_eq!(status, 201);
    let (status, _) = cluster.json(
        "POST",
        "/api/v1/namespaces/default/secrets",
        Some(&json!({
            "metadata": {"name": "registry"},
            "type": "kubernetes.io/dockerconfigjson",
            "stringData": {".dockerconfigjson": "{\"auths\":{}}"},
        })),
    );
    assert_eq!(status, 201);
    let mut spec = pod(
        "build",
        "echo \"GREETING=$GREETING FROM_IMAGE=$FROM_IMAGE HOME_REF=$HOME_REF POD=$POD REQUEST=$REQUEST\"; \
         cat /request/build.json; echo; ls -l /request/build.json | cut -c1-10; id -u; id -g; pwd; \
         echo scratch > /scratch/file && cat /scratch/file; \
         ls -A /docker; ls -l /docker/config.json | cut -c1-10; cat /docker/config.json; echo; \
         printf 'sha256:1234' > /dev/termination-log",
    );
    spec["spec"]["containers"][0]["env"] = json!([
        {"name": "GREETING", "value": "hi"},
        {"name": "HOME_REF", "value": "$(GREETING)-there"},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "REQUEST", "valueFrom": {"secretKeyRef": {"name": "request", "key": "build.json"}}},
    ]);
    spec["spec"]["containers"][0]["volumeMounts"] = json!([
        {"name": "request", "mountPath": "/request", "readOnly": true},
        {"name": "scratch", "mountPath": "/scratch"},
        {"name": "docker", "mountPath": "/docker", "readOnly": true},
    ]);
    spec["spec"]["volumes"] = json!([
        {"name": "request", "secret": {"secretName": "request", "defaultMode": 0o440}},
        {"name": "scratch", "emptyDir": {}},
        {"name": "docker", "secret": {"secretName": "registry", "items": [
            {"key": ".dockerconfigjson", "path": "config.json", "mode": 0o400},
        ]}},
    ]);
    let created = cluster.create_pod(&spec);
    assert_eq!(created["status"]["phase"], "Pending");
    assert!(created["metadata"]["resourceVersion"].is_string());
    assert!(created["metadata"]["creationTimestamp"].is_string());

    let done = cluster.wait_phase("build", "Succeeded");
    let state = terminated(&done);
    assert_eq!(state["exitCode"], 0);
    assert_eq!(state["reason"], "Completed");
    assert_eq!(state["message"], "sha256:1234");
    assert!(state["startedAt"].is_string() && state["finishedAt"].is_string());
    let image_id = done["status"]["containerStatuses"][0]["imageID"]
        .as_str()
        .unwrap();
    assert!(
        tiny_image().ends_with(image_id.rsplit('@').next().unwrap()),
        "{image_id}"
    );

    let (status, log) = cluster.http("GET", "/api/v1/namespaces/default/pods/build/log", None);
    assert_eq!(status, 200);
    assert_eq!(
        log,
        "GREETING=hi FROM_IMAGE=yes HOME_REF=hi-there POD=build REQUEST={\"app\":\"hello\"}\n{\"app\":\"hello\"}\n-r--r-----\n1000\n1000\n/home/cnb\nscratch\nconfig.json\n-r--------\n{\"auths\":{}}\n"
    );
}

#[test]
fn the_image_entrypoint_and_cmd_run_when_the_pod_names_no_command() {
    let cluster = Cluster::start();
    let mut spec = pod("defaults", "");
    let container = spec["spec"]["containers"][0].as_object_mut().unwrap();
    container.remove("command");
    cluster.create_pod(&spec);
    cluster.wait_phase("defaults", "Succeeded");
    let (_, log) = cluster.http("GET", "/api/v1/namespaces/default/pods/defaults/log", None);
    assert_eq!(log, "default command\n");
}

#[test]
fn a_failing_container_fails_the_pod_with_its_exit_code() {
    let cluster = Cluster::start();
    cluster.create_pod(&pod("failing", "echo about to fail >&2; exit 3"));
    let failed = cluster.wait_phase("failing", "Failed");
    assert_eq!(terminated(&failed)["exitCode"], 3);
    assert_eq!(terminated(&failed)["reason"], "Error");
    let logs = cluster.kubectl(&["logs", "failing"]);
    assert_eq!(logs, "about to fail\n");
}

#[test]
fn an_image_that_cannot_be_pulled_leaves_the_pod_pending() {
    let cluster = Cluster::start();
    let mut spec = pod("unpullable", "true");
    spec["spec"]["containers"][0]["image"] = json!(format!(
        "{}:missing",
        Registry::shared().repo("kube/nothing-here")
    ));
    cluster.create_pod(&spec);
    let pending = cluster.wait_pod("unpullable", Duration::from_secs(120), |p| {
        let reason = &p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"];
        reason == "ErrImagePull" || reason == "ImagePullBackOff"
    });
    assert_eq!(pending["status"]["phase"], "Pending");
    let (status, error) = cluster.json(
        "GET",
        "/api/v1/namespaces/default/pods/unpullable/log",
        None,
    );
    assert_eq!(status, 400, "{error}");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("waiting to start"));
}

#[test]
fn the_active_deadline_kills_the_pod() {
    let cluster = Cluster::start();
    let mut spec = pod("slow", "echo working; exec sleep 600");
    spec["spec"]["activeDeadlineSeconds"] = json!(3);
    cluster.create_pod(&spec);
    let failed = cluster.wait_phase("slow", "Failed");
    assert_eq!(failed["status"]["reason"], "DeadlineExceeded");
    assert_eq!(terminated(&failed)["exitCode"], 137);
}

#[test]
fn an_evicted_pod_fails() {
    let cluster = Cluster::start();
    cluster.create_pod(&pod("evictee", "exec sleep 600"));
    cluster.wait_phase("evictee", "Running");
    assert!(cluster.server.evict("default", "evictee"));
    let failed = cluster.wait_phase("evictee", "Failed");
    assert_eq!(failed["status"]["reason"], "Evicted");
    assert!(failed["status"]["message"]
        .as_str()
        .unwrap()
        .contains("low on resource"));
}

#[test]
fn run_as_non_root_refuses_a_root_user() {
    let cluster = Cluster::start();
    let mut spec = pod("rooted", "true");
    spec["spec"]["securityContext"]["runAsUser"] = json!(0);
    cluster.create_pod(&spec);
    cluster.wait_pod("rooted", Duration::from_secs(120), |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            == "CreateContainerConfigError"
    });
}

#[test]
fn a_pull_secret_lets_the_node_pull_from_a_registry_with_auth() {
    let registry = Registry::start_with_auth("builder", "s3cret");
    let image = push_tiny_image(&registry, "kube/private");
    let cluster = Cluster::start();
    let auth = base64_encode(b"builder:s3cret");
    let config = json!({"auths": {registry.addr(): {"auth": auth}}}).to_string();
    let (status, created) = cluster.json(
        "POST",
        "/api/v1/namespaces/default/secrets",
        Some(&json!({
            "metadata": {"name": "registry"},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64_encode(config.as_bytes())},
        })),
    );
    assert_eq!(status, 201, "{created}");

    let mut with = pod("authenticated", "echo pulled");
    with["spec"]["containers"][0]["image"] = json!(image);
    with["spec"]["imagePullSecrets"] = json!([{"name": "registry"}]);
    cluster.create_pod(&with);
    // Pulled again, not taken from what the other pod pulled.
    let mut without = pod("anonymous", "echo pulled");
    without["spec"]["containers"][0]["image"] = json!(image);
    without["spec"]["containers"][0]["imagePullPolicy"] = json!("Always");
    cluster.create_pod(&without);

    cluster.wait_phase("authenticated", "Succeeded");
    let refused = cluster.wait_pod("anonymous", Duration::from_secs(120), |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImagePull"
    });
    assert_eq!(refused["status"]["phase"], "Pending");
}

#[test]
fn pulled_images_are_kept_as_the_pull_policy_says() {
    let cluster = Cluster::start();
    cluster.create_pod(&pod("first", "echo first"));
    cluster.wait_phase("first", "Succeeded");
    let mut cached = pod("cached", "echo cached");
    cached["spec"]["containers"][0]["imagePullPolicy"] = json!("Never");
    cluster.create_pod(&cached);
    let done = cluster.wait_phase("cached", "Succeeded");
    let first = cluster.pod("first").unwrap();
    assert_eq!(
        done["status"]["containerStatuses"][0]["imageID"],
        first["status"]["containerStatuses"][0]["imageID"]
    );

    let mut absent = pod("absent", "true");
    absent["spec"]["containers"][0]["image"] =
        json!(format!("{}:other", Registry::shared().repo("kube/tiny")));
    absent["spec"]["containers"][0]["imagePullPolicy"] = json!("Never");
    cluster.create_pod(&absent);
    let waiting = cluster.wait_pod("absent", Duration::from_secs(120), |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImageNeverPull"
    });
    assert_eq!(waiting["status"]["phase"], "Pending");
}

#[test]
fn pods_stopped_as_they_start_leave_no_process_behind() {
    let cluster = Cluster::start();
    let marker = format!("marker-{}", std::process::id());
    let names: Vec<String> = (0..6).map(|i| format!("racer-{i}")).collect();
    for name in &names {
        cluster.create_pod(&pod(name, &format!("exec sleep 600 # {marker}")));
    }
    for (i, name) in names.iter().enumerate() {
        cluster.wait_phase(name, "Running");
        if i % 2 == 0 {
            cluster.http(
                "DELETE",
                &format!("/api/v1/namespaces/default/pods/{name}"),
                None,
            );
        } else {
            assert!(cluster.server.evict("default", name));
        }
    }
    for (i, name) in names.iter().enumerate() {
        if i % 2 == 0 {
            cluster.wait_pod(name, Duration::from_secs(60), Value::is_null);
        } else {
            cluster.wait_phase(name, "Failed");
        }
    }
    assert_eq!(processes_with(&marker), Vec::<String>::new());
}
