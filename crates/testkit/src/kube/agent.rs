//! The node agent, a small kubelet: each pod gets its own thread, which mounts its
//! volumes, pulls its image, runs its first container in a sandbox and reports every step
//! in the pod's status, as the kubelet would.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::env::{environment, expand};
use super::node::{Log, Node, PodRuntime, PulledImage, Stop};
use super::objects::now;
use super::runtime::{self, Container, ImageConfig, Mount};
use super::store::{Kind, Store};

/// The termination message is cut to this, as the kubelet does.
const MESSAGE_LIMIT: usize = 4096;
/// The first wait after a failed pull; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// Starts the pod's thread.
pub(crate) fn spawn(node: Arc<Node>, pod: Value) {
    let name = format!(
        "pod {}",
        pod["metadata"]["name"].as_str().unwrap_or_default()
    );
    let (node_again, pod_again) = (node.clone(), pod.clone());
    let started =
        std::thread::Builder::new()
            .name(name)
            .spawn(move || match Agent::new(&node, &pod) {
                Ok(agent) => agent.run(),
                Err(message) => abandon(&node, &pod, &message),
            });
    if let Err(e) = started {
        abandon(
            &node_again,
            &pod_again,
            &format!("starting the pod's thread: {e}"),
        );
    }
}

/// The node cannot run the pod at all: it fails, and a delete removes it at once.
fn abandon(node: &Node, pod: &Value, message: &str) {
    tracing::warn!("the test node cannot run a pod: {message}");
    let metadata = &pod["metadata"];
    let (namespace, name, uid) = (
        metadata["namespace"].as_str().unwrap_or_default(),
        metadata["name"].as_str().unwrap_or_default(),
        metadata["uid"].as_str().unwrap_or_default(),
    );
    node.store.with(|o| {
        if let Some(log) = o.logs.get(uid) {
            log.close();
        }
        o.running.remove(uid);
        o.update(Kind::Pod, namespace, name, uid, |pod| {
            pod["status"]["phase"] = json!("Failed");
            pod["status"]["reason"] = json!("NodeError");
            pod["status"]["message"] = json!(message);
        });
    });
}

/// Why the pod's process ended early.
#[derive(Debug)]
enum Interrupt {
    Stopped(Stop),
    Deadline,
}

/// How the container ended on its own, and the termination message it left.
struct Exit {
    status: ExitStatus,
    message: Vec<u8>,
}

struct Agent {
    node: Arc<Node>,
    store: Arc<Store>,
    runtime: Arc<PodRuntime>,
    log: Arc<Log>,
    namespace: String,
    name: String,
    uid: String,
    pod: Value,
    deadline: Option<Instant>,
    work: tempfile::TempDir,
    /// When the container started, once it has.
    started_at: Option<String>,
    image_id: String,
}

impl Agent {
    fn new(node: &Arc<Node>, pod: &Value) -> Result<Agent, String> {
        let metadata = &pod["metadata"];
        let field = |name: &str| {
            metadata[name]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("the pod has no metadata.{name}"))
        };
        let (namespace, name, uid) = (field("namespace")?, field("name")?, field("uid")?);
        let (runtime, log) = node
            .store
            .with(|o| Some((o.running.get(&uid)?.clone(), o.logs.get(&uid)?.clone())))
            .ok_or("the pod was not registered with the node")?;
        let deadline = pod["spec"]["activeDeadlineSeconds"]
            .as_u64()
            .map(|s| Instant::now() + Duration::from_secs(s));
        let work = tempfile::tempdir_in(&node.work)
            .map_err(|e| format!("no work directory for pod {name}: {e}"))?;
        Ok(Agent {
            node: node.clone(),
            store: node.store.clone(),
            runtime,
            log,
            namespace,
            name,
            uid,
            pod: pod.clone(),
            deadline,
            work,
            started_at: None,
            image_id: String::new(),
        })
    }

    fn run(mut self) {
        self.set_status(|status| {
            let t = now();
            status["startTime"] = json!(t);
            status["hostIP"] = json!("127.0.0.1");
            status["hostIPs"] = json!([{"ip": "127.0.0.1"}]);
            status["podIP"] = json!("127.0.0.1");
            status["podIPs"] = json!([{"ip": "127.0.0.1"}]);
            status["conditions"] = conditions(false, None);
        });
        self.waiting("ContainerCreating", None);
        let outcome = self.lifecycle();
        self.log.close();
        match outcome {
            Ok(exit) => self.report_exit(exit),
            Err(Interrupt::Stopped(Stop::Deleted)) => {}
            Err(Interrupt::Stopped(Stop::Evicted(message))) => {
                self.report_failure("Evicted", &message)
            }
            Err(Interrupt::Deadline) => self.report_failure(
                "DeadlineExceeded",
                "Pod was active on the node longer than the specified deadline",
            ),
        }
        let (namespace, name, uid) = (&self.namespace, &self.name, &self.uid);
        self.store.with(|o| {
            o.running.remove(uid);
            let deleting = o.get(Kind::Pod, namespace, name).is_ok_and(|p| {
                p["metadata"]["uid"] == uid.as_str()
                    && !p["metadata"]["deletionTimestamp"].is_null()
            });
            if deleting {
                o.remove(Kind::Pod, namespace, name);
            }
        });
    }

    /// Volumes, image, sandbox, process: everything from accepting the pod to its
    /// container's end.
    fn lifecycle(&mut self) -> Result<Exit, Interrupt> {
        let container = self.pod["spec"]["containers"][0].clone();
        let mounts = self.volumes(&container)?;
        let image = self.pull(&container)?;
        let config = &image.config;
        let bundle = self.work.path().join("bundle");
        let unpacked = {
            let _one_at_a_time = image.unpacking.lock().unwrap_or_else(|e| e.into_inner());
            self.tool(runtime::unpack_command(&image.layout, &bundle))?
        };
        if let Err(message) = unpacked {
            let message = format!("unpacking the image: {message}");
            self.waiting("CreateContainerError", Some(&message));
            return Err(self.park());
        }
        let termination = self.work.path().join("termination-log");
        let sandbox = match self.sandbox(&container, config, &bundle, mounts, &termination) {
            Ok(sandbox) => sandbox,
            Err((reason, message)) => {
                self.waiting(reason, Some(&message));
                return Err(self.park());
            }
        };
        let status = self.execute(sandbox.command())?;
        let mut message = std::fs::read(&termination).unwrap_or_default();
        message.truncate(MESSAGE_LIMIT);
        Ok(Exit { status, message })
    }

    /// The sandbox the container runs in: its user, mounts (the termination message file
    /// among them), environment, working directory and command line. Err: the waiting
    /// reason and message of a container that cannot be created.
    fn sandbox(
        &self,
        container: &Value,
        config: &ImageConfig,
        bundle: &std::path::Path,
        mut mounts: Vec<Mount>,
        termination: &std::path::Path,
    ) -> Result<Container, (&'static str, String)> {
        let rootfs = bundle.join("rootfs");
        let (image_uid, image_gid) = runtime::image_user(bundle).unwrap_or((0, 0));
        let security = |field: &str| {
            let own = &container["securityContext"][field];
            if own.is_null() {
                self.pod["spec"]["securityContext"][field].clone()
            } else {
                own.clone()
            }
        };
        let uid = security("runAsUser")
            .as_u64()
            .map_or(image_uid, |u| u as u32);
        let gid = security("runAsGroup")
            .as_u64()
            .map_or(image_gid, |g| g as u32);
        if security("runAsNonRoot") == true && uid == 0 {
            return Err((
                "CreateContainerConfigError",
                "container has runAsNonRoot and image will run as root".into(),
            ));
        }

        let termination_path = container["terminationMessagePath"]
            .as_str()
            .unwrap_or("/dev/termination-log")
            .to_string();
        let created = |reason| move |e: String| (reason, e);
        std::fs::write(termination, b"")
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(termination, std::fs::Permissions::from_mode(0o666))
            })
            .map_err(|e| ("CreateContainerError", e.to_string()))?;
        runtime::mount_point(&rootfs, &termination_path, true)
            .map_err(created("CreateContainerError"))?;
        for mount in &mounts {
            runtime::mount_point(&rootfs, &mount.target, false)
                .map_err(created("CreateContainerError"))?;
        }
        mounts.push(Mount {
            source: termination.to_path_buf(),
            target: termination_path,
            writable: true,
        });

        let secret = |name: &str| {
            self.store
                .with(|o| o.get(Kind::Secret, &self.namespace, name))
                .ok()
        };
        let env = environment(config, &self.pod, container, secret)
            .map_err(|message| ("CreateContainerConfigError", message))?;
        let argv = command_line(container, config, &env);
        if argv.is_empty() {
            return Err(("CreateContainerError", "no command specified".into()));
        }
        let working_dir = match container["workingDir"].as_str() {
            Some(dir) if !dir.is_empty() => dir.to_string(),
            _ if !config.working_dir.is_empty() => config.working_dir.clone(),
            _ => "/".to_string(),
        };
        Ok(Container {
            rootfs,
            read_only_root: container["securityContext"]["readOnlyRootFilesystem"] == true,
            uid,
            gid,
            hostname: self.name.clone(),
            working_dir,
            env,
            mounts,
            argv,
        })
    }

    /// Writes the pod's volumes; waits (as the kubelet retries) while a Secret it needs
    /// does not exist yet.
    fn volumes(&self, container: &Value) -> Result<Vec<Mount>, Interrupt> {
        let mut mounts = Vec::new();
        let volumes = self.pod["spec"]["volumes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let name = mount["name"].as_str().unwrap_or_default();
            let Some(volume) = volumes.iter().find(|v| v["name"] == name) else {
                continue;
            };
            let source = self.work.path().join("volumes").join(name);
            if volume.get("emptyDir").is_some() {
                if let Err(e) = std::fs::create_dir_all(&source) {
                    let message = format!("MountVolume.SetUp failed for volume \"{name}\": {e}");
                    self.waiting("ContainerCreating", Some(&message));
                    return Err(self.park());
                }
            } else if let Some(secret_name) = volume["secret"]["secretName"].as_str() {
                loop {
                    let secret = self
                        .store
                        .with(|o| o.get(Kind::Secret, &self.namespace, secret_name));
                    let written = match secret {
                        Ok(secret) => {
                            runtime::write_secret_volume(&source, &volume["secret"], &secret)
                        }
                        Err(_) if volume["secret"]["optional"] == true => {
                            std::fs::create_dir_all(&source).map_err(|e| e.to_string())
                        }
                        Err(e) => Err(e.message),
                    };
                    match written {
                        Ok(()) => break,
                        Err(message) => {
                            self.waiting(
                                "ContainerCreating",
                                Some(&format!(
                                    "MountVolume.SetUp failed for volume \"{name}\": {message}"
                                )),
                            );
                            self.pause(Duration::from_millis(500))?;
                        }
                    }
                }
            }
            mounts.push(Mount {
                source,
                target: mount["mountPath"].as_str().unwrap_or_default().to_string(),
                writable: mount["readOnly"] != true && volume.get("emptyDir").is_some(),
            });
        }
        Ok(mounts)
    }

    /// The container's image, pulled as its `imagePullPolicy` says: Always pulls, Never
    /// takes the node's copy or waits with `ErrImageNeverPull`, IfNotPresent pulls when the
    /// node has no copy. A pull that fails is retried with back-off (the pod stays Pending,
    /// waiting with `ErrImagePull`, then `ImagePullBackOff`).
    fn pull(&mut self, container: &Value) -> Result<Arc<PulledImage>, Interrupt> {
        let image = container["image"].as_str().unwrap_or_default().to_string();
        let policy = container["imagePullPolicy"]
            .as_str()
            .unwrap_or("IfNotPresent");
        if policy != "Always" {
            if let Some(pulled) = self.node.image(&image) {
                self.image_id = pulled.id.clone();
                return Ok(pulled);
            }
        }
        if policy == "Never" {
            let message =
                format!("Container image \"{image}\" is not present with pull policy of Never");
            self.waiting("ErrImageNeverPull", Some(&message));
            return Err(self.park());
        }
        let authfile = self.work.path().join("auth.json");
        let mut have_auth = false;
        for secret in self.pod["spec"]["imagePullSecrets"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = secret["name"].as_str().unwrap_or_default();
            if let Ok(secret) = self
                .store
                .with(|o| o.get(Kind::Secret, &self.namespace, name))
            {
                if runtime::write_authfile(&secret, &authfile).unwrap_or(false) {
                    have_auth = true;
                    break;
                }
            }
        }
        let images = self.node.work.join("images");
        let mut backoff = FIRST_BACKOFF;
        loop {
            let made =
                std::fs::create_dir_all(&images).and_then(|()| tempfile::tempdir_in(&images));
            let failure = match made {
                Ok(dir) => {
                    let layout = dir.keep();
                    let command =
                        runtime::pull_command(&image, &layout, have_auth.then_some(&*authfile));
                    match self.tool(command)? {
                        Ok(()) => match ImageConfig::read(&layout) {
                            Ok(config) => {
                                let pulled = Arc::new(PulledImage {
                                    id: image_id(&image, &config.manifest_digest),
                                    layout,
                                    config,
                                    unpacking: Mutex::new(()),
                                });
                                self.node.keep_image(&image, pulled.clone());
                                self.image_id = pulled.id.clone();
                                return Ok(pulled);
                            }
                            Err(e) => format!("reading the pulled image: {e}"),
                        },
                        Err(message) => {
                            let _ = std::fs::remove_dir_all(&layout);
                            message
                        }
                    }
                }
                Err(e) => format!("no directory to pull into: {e}"),
            };
            self.waiting(
                "ErrImagePull",
                Some(&format!("failed to pull image \"{image}\": {failure}")),
            );
            self.pause(Duration::from_secs(1))?;
            self.waiting(
                "ImagePullBackOff",
                Some(&format!("Back-off pulling image \"{image}\"")),
            );
            self.pause(backoff)?;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Runs a tool (skopeo, umoci) to its end: Ok(Err(its stderr)) when it fails.
    fn tool(&self, mut command: Command) -> Result<Result<(), String>, Interrupt> {
        let output = self.work.path().join("tool-output");
        let file = std::fs::File::create(&output).map_err(|e| e.to_string());
        let spawned = file.and_then(|file| {
            let err = file.try_clone().map_err(|e| e.to_string())?;
            command
                .stdin(Stdio::null())
                .stdout(file)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("starting {:?}: {e}", command.get_program()))
        });
        let child = match spawned {
            Ok(child) => child,
            Err(message) => return Ok(Err(message)),
        };
        let status = self.wait(child)?;
        if status.success() {
            Ok(Ok(()))
        } else {
            let text = std::fs::read_to_string(&output).unwrap_or_default();
            Ok(Err(text.trim().to_string()))
        }
    }

    /// Runs the container: its output goes to the pod's log; Running is reported once it
    /// has started.
    fn execute(&mut self, mut command: Command) -> Result<ExitStatus, Interrupt> {
        let (mut reader, writer) = match std::io::pipe() {
            Ok(pipe) => pipe,
            Err(e) => return Ok(self.start_error(&e.to_string())),
        };
        let spawned = writer.try_clone().and_then(|out| {
            command
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(writer)
                .spawn()
        });
        // The command holds the pipe's write end: drop it so that the reader sees the end.
        drop(command);
        let child = match spawned {
            Ok(child) => child,
            Err(e) => return Ok(self.start_error(&format!("starting bwrap: {e}"))),
        };
        let log = self.log.clone();
        let (read_all, output_ended) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let _done = read_all;
            let mut buffer = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                log.append(&buffer[..n]);
            }
        });
        let started = now();
        self.started_at = Some(started.clone());
        let image_id = self.image_id.clone();
        self.set_status(|status| {
            status["phase"] = json!("Running");
            status["conditions"] = conditions(true, None);
        });
        self.container_state(json!({"running": {"startedAt": started}}), true, &image_id);
        let result = self.wait(child);
        // The output ends when the last process of the sandbox does; a bound in case one
        // escaped it.
        let _ = output_ended.recv_timeout(Duration::from_secs(10));
        result
    }

    /// An exit status standing for a process that could not be started.
    fn start_error(&self, message: &str) -> ExitStatus {
        self.log.append(format!("{message}\n").as_bytes());
        ExitStatus::from_raw(128 << 8)
    }

    /// Waits for `child`; kills it when the pod is stopped or reaches its deadline.
    fn wait(&self, mut child: Child) -> Result<ExitStatus, Interrupt> {
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) => {}
                Err(_) => return Ok(child.wait().unwrap_or(ExitStatus::from_raw(128 << 8))),
            }
            if let Err(interrupt) = self.pause(Duration::from_millis(50)) {
                runtime::kill_tree(&mut child);
                return Err(interrupt);
            }
        }
    }

    /// Sleeps `duration`, or less when the pod is stopped or reaches its deadline.
    fn pause(&self, duration: Duration) -> Result<(), Interrupt> {
        let until = Instant::now() + duration;
        let mut stop = self.runtime.stop.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(why) = stop.clone() {
                return Err(Interrupt::Stopped(why));
            }
            let now = Instant::now();
            if self.deadline.is_some_and(|d| now >= d) {
                return Err(Interrupt::Deadline);
            }
            if now >= until {
                return Ok(());
            }
            let wake = self.deadline.map_or(until, |d| d.min(until));
            stop = self
                .runtime
                .wake
                .wait_timeout(stop, wake.saturating_duration_since(now))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits until the pod is stopped or reaches its deadline: the container cannot start.
    fn park(&self) -> Interrupt {
        loop {
            if let Err(interrupt) = self.pause(Duration::from_secs(3600)) {
                return interrupt;
            }
        }
    }

    fn set_status(&self, f: impl FnOnce(&mut Value)) {
        self.store.with(|o| {
            o.update(Kind::Pod, &self.namespace, &self.name, &self.uid, |pod| {
                f(&mut pod["status"])
            })
        });
    }

    /// Sets the container's status to `state`.
    fn container_state(&self, state: Value, ready: bool, image_id: &str) {
        let container = &self.pod["spec"]["containers"][0];
        let status = json!({
            "name": container["name"],
            "image": container["image"],
            "imageID": image_id,
            "containerID": if self.started_at.is_some() {
                json!(format!("bwrap://{}", self.uid))
            } else {
                Value::Null
            },
            "ready": ready,
            "started": state.get("running").is_some(),
            "restartCount": 0,
            "state": state,
            "lastState": {},
        });
        let status = match status {
            Value::Object(mut map) => {
                map.retain(|_, v| !v.is_null());
                Value::Object(map)
            }
            other => other,
        };
        self.set_status(|s| s["containerStatuses"] = json!([status]));
    }

    fn waiting(&self, reason: &str, message: Option<&str>) {
        let mut waiting = json!({"reason": reason});
        if let Some(message) = message {
            waiting["message"] = json!(message);
        }
        let image_id = self.image_id.clone();
        self.container_state(json!({"waiting": waiting}), false, &image_id);
    }

    fn terminated(&self, exit_code: i32, reason: &str, message: &str) {
        let mut terminated = json!({
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": self.started_at,
            "finishedAt": now(),
            "containerID": format!("bwrap://{}", self.uid),
        });
        if !message.is_empty() {
            terminated["message"] = json!(message);
        }
        let image_id = self.image_id.clone();
        self.container_state(json!({"terminated": terminated}), false, &image_id);
    }

    fn report_exit(&self, exit: Exit) {
        let code = exit
            .status
            .code()
            .or_else(|| exit.status.signal().map(|s| 128 + s))
            .unwrap_or(128);
        let mut message = String::from_utf8_lossy(&exit.message).into_owned();
        let container = &self.pod["spec"]["containers"][0];
        if message.is_empty()
            && code != 0
            && container["terminationMessagePolicy"] == "FallbackToLogsOnError"
        {
            message = self.log_tail();
        }
        self.terminated(
            code,
            if code == 0 { "Completed" } else { "Error" },
            &message,
        );
        self.set_status(|status| {
            status["phase"] = json!(if code == 0 { "Succeeded" } else { "Failed" });
            status["conditions"] = conditions(false, Some("PodCompleted"));
        });
    }

    /// The last 80 lines of the log, at most 2048 bytes, as the kubelet's fallback message.
    fn log_tail(&self) -> String {
        let (log, _) = self.log.read_from(0);
        let text = String::from_utf8_lossy(&log);
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(80)..].join("\n");
        let cut = tail.len().saturating_sub(2048);
        let start = (cut..=tail.len())
            .find(|i| tail.is_char_boundary(*i))
            .unwrap_or(0);
        tail[start..].to_string()
    }

    /// The pod failed from outside: evicted or out of time.
    fn report_failure(&self, reason: &str, message: &str) {
        if self.started_at.is_some() {
            self.terminated(137, "Error", "");
        }
        self.set_status(|status| {
            status["phase"] = json!("Failed");
            status["reason"] = json!(reason);
            status["message"] = json!(message);
            status["conditions"] = conditions(false, Some("PodFailed"));
        });
    }
}

/// The pod's conditions: scheduled and initialized, ready or not.
fn conditions(ready: bool, reason: Option<&str>) -> Value {
    let t = now();
    let ready_status = if ready { "True" } else { "False" };
    let condition = |kind: &str, status: &str| {
        let mut c =
            json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": t});
        if let (Some(reason), "False") = (reason, status) {
            c["reason"] = json!(reason);
        }
        c
    };
    json!([
        condition("Initialized", "True"),
        condition("Ready", ready_status),
        condition("ContainersReady", ready_status),
        condition("PodScheduled", "True"),
    ])
}

/// `repository@sha256:…` of a pulled image reference, the container status's `imageID`.
fn image_id(image: &str, manifest_digest: &str) -> String {
    let repository = image.split('@').next().unwrap_or(image);
    let repository = match repository.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => repository,
    };
    format!("{repository}@{manifest_digest}")
}

/// What the container runs, as Kubernetes decides it: `command` replaces the image's
/// entrypoint (and drops its cmd), `args` replace the image's cmd; `$(NAME)` references
/// to the environment are expanded in both.
fn command_line(container: &Value, config: &ImageConfig, env: &[(String, String)]) -> Vec<String> {
    let expanded = |items: &Value| -> Vec<String> {
        items
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|s| expand(s, env))
            .collect()
    };
    let given = |field: &str| container.get(field).is_some_and(|v| !v.is_null());
    let mut argv = if given("command") {
        expanded(&container["command"])
    } else {
        config.entrypoint.clone()
    };
    if given("args") {
        argv.extend(expanded(&container["args"]));
    } else if !given("command") {
        argv.extend(config.cmd.iter().cloned());
    }
    argv
}
