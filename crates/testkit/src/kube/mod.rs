//! A Kubernetes API server and node for tests, on loopback, with nothing installed.
//!
//! [`ApiServer::start`] serves on `http://127.0.0.1:PORT` ([`ApiServer::url`]); point a
//! client at it with the kubeconfig [`ApiServer::write_kubeconfig`] writes (kube-rs:
//! `KUBECONFIG`, kubectl: `--kubeconfig`). Pods run images from a registry such as
//! [`crate::registry::Registry`]; [`ApiServer::evict`] and [`ApiServer::compact`] make
//! happen what a node or etcd would do on its own.
//!
//! # What is real
//! - The REST API a client such as kube-rs or kubectl uses for pods and secrets: the real
//!   paths, JSON, status codes and `Status` errors (404 NotFound, 409 AlreadyExists, 422
//!   Invalid with causes, 410 Expired), discovery (`/api`, `/api/v1`, `/apis`,
//!   `/version`), server-side Tables for `kubectl get`, label and field selectors, one
//!   global resourceVersion, watches from a resourceVersion (an object that starts or
//!   stops matching the selectors is ADDED or DELETED to the watch), `pods/{name}/log` with
//!   `follow`.
//! - What runs: each pod's first container is pulled from its registry with `skopeo`
//!   (with the pod's `imagePullSecrets` as the auth file), unpacked with `umoci` and run
//!   with `bwrap` as the kubelet would run it: the image's entrypoint and cmd or the
//!   container's command and args (`$(VAR)` expanded), its env (values, `fieldRef`s to
//!   the pod's metadata, `secretKeyRef`s), working directory and user
//!   (`runAsUser`/`runAsGroup`, else the image's `User`; `runAsNonRoot` enforced), Secret
//!   and emptyDir volumes, the termination message file, its own pid, mount, ipc and uts
//!   namespaces on the host's network. Its output is the pod's log; the pod's status goes
//!   Pending → Running → Succeeded/Failed with the container states, reasons and
//!   termination message a kubelet reports. `activeDeadlineSeconds` kills it
//!   (DeadlineExceeded), delete kills it before the pod disappears, [`ApiServer::evict`]
//!   kills it (Evicted).
//!
//! # What is simplified
//! - Plain HTTP, no authentication or authorization, one node, everything in memory.
//! - Only namespaces, pods and secrets exist (create, get, list, watch, update, delete).
//!   Deleting a namespace deletes what is in it; deleting an object deletes the objects
//!   whose `ownerReferences` name it, at once. Updates are a PUT or a merge PATCH (a
//!   strategic merge patch is read as one: its lists replace whole); JSON patch and
//!   server-side apply are answered 415.
//! - OpenAPI has no schemas: v3 only says that the server validates fields itself, v2
//!   (for older kubectl) is an empty document, so kubectl skips its own validation.
//! - Answers are JSON. Bodies are JSON, or protobuf for the secrets and namespaces that
//!   kubectl's typed generators send (`kubectl create secret generic|docker-registry`,
//!   `kubectl create namespace`); a protobuf pod is answered 415 (kubectl sends pods as
//!   JSON).
//! - Lists are never paginated; a list at an exact older resourceVersion is answered 410.
//!   A watch from before the history kept (10 000 changes, or everything before
//!   [`ApiServer::compact`]) gets an ERROR event with a 410 Expired Status, as the real
//!   server sends, not an HTTP 410.
//! - Only the first container runs; no init containers, probes, restarts
//!   (`restartPolicy` is treated as Never), resource limits, services or DNS. The grace
//!   period is not waited for: a deleted pod's process is killed at once. Pulled images
//!   are kept by reference for the server's life, as the kubelet keeps them
//!   (`imagePullPolicy` Always pulls again, IfNotPresent does not, Never never does).
//! - Status updates come from the agent in the same process, not through `pods/status`.
//! - No `exec`, `attach`, `port-forward` or events; watches send no bookmarks but the
//!   one that ends `sendInitialEvents`.

mod agent;
mod api;
mod env;
mod node;
mod objects;
mod protobuf;
mod runtime;
mod select;
mod store;
mod table;
mod update;

use std::path::Path;
use std::sync::Arc;

use hyper_util::rt::TokioIo;

use node::{Node, Stop};
use store::{Kind, Store};

/// A running test API server and its node; both stop when it is dropped, killing every
/// pod's process.
pub struct ApiServer {
    url: String,
    node: Arc<Node>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _work: tempfile::TempDir,
}

impl ApiServer {
    /// Starts the server on a free loopback port, with the namespaces `default`,
    /// `kube-system` and `kube-public`. Panics naming the Debian package when one of the
    /// node's tools (skopeo, umoci, bwrap) is missing.
    pub fn start() -> ApiServer {
        crate::require("skopeo", "skopeo");
        crate::require("umoci", "umoci");
        crate::require("bwrap", "bubblewrap");
        let work = tempfile::tempdir().expect("a temp dir for the node");
        let node = Arc::new(Node::new(Arc::new(Store::new()), work.path().to_path_buf()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let url = format!(
            "http://{}",
            listener.local_addr().expect("the listener's address")
        );
        let (shutdown, stopped) = tokio::sync::oneshot::channel();
        let serving = node.clone();
        let thread = std::thread::Builder::new()
            .name("kube api server".into())
            .spawn(move || serve(listener, serving, stopped))
            .expect("starting the API server thread");
        ApiServer {
            url,
            node,
            shutdown: Some(shutdown),
            thread: Some(thread),
            _work: work,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Writes a kubeconfig for this server (context `testkit`, namespace `default`) to
    /// `path`, for `KUBECONFIG` or `kubectl --kubeconfig`.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: testkit\n  cluster:\n    server: {}\n\
                 users:\n- name: testkit\n  user: {{}}\ncontexts:\n- name: testkit\n  context:\n    \
                 cluster: testkit\n    user: testkit\n    namespace: default\ncurrent-context: testkit\n",
                self.url
            ),
        )
    }

    /// Evicts the pod, as the kubelet does under node pressure: its process is killed and
    /// it ends Failed with reason `Evicted`. False when no such pod is running.
    pub fn evict(&self, namespace: &str, name: &str) -> bool {
        let runtime = self.node.store.with(|o| {
            let pod = o.get(Kind::Pod, namespace, name).ok()?;
            o.running.get(pod["metadata"]["uid"].as_str()?).cloned()
        });
        match runtime {
            Some(runtime) => {
                runtime.stop(Stop::Evicted(
                    "The node was low on resource: memory. Evicted by the test.".into(),
                ));
                true
            }
            None => false,
        }
    }

    /// Forgets the history of changes, as etcd's compaction does: a watch from any
    /// resourceVersion before the current one gets 410 Expired.
    pub fn compact(&self) {
        self.node.store.with(|o| o.compact());
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.node.store.with(|o| o.resource_version())
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let running: Vec<_> = self
            .node
            .store
            .with(|o| o.running.values().cloned().collect());
        for runtime in running {
            runtime.stop(Stop::Deleted);
        }
        // The pods' threads use the work directory until their processes are gone.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self.node.store.with(|o| o.running.is_empty())
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The server's own runtime: accepts connections until told to stop.
fn serve(
    listener: std::net::TcpListener,
    node: Arc<Node>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::warn!("no runtime: {e}");
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!("cannot listen: {e}");
                return;
            }
        };
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = &mut stopped => return,
            };
            let Ok((stream, _)) = accepted else { continue };
            let node = node.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request| api::handle(node.clone(), request));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    runtime.shutdown_background();
}
