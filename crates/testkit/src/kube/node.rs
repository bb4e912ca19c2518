//! What the API server and the node agent share: the node itself, each pod's log, and
//! the switch that tells a pod's thread to stop.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

use serde_json::Value;

use super::runtime::ImageConfig;
use super::store::{Objects, Store};

/// A log keeps at most this much; the rest of what a container writes is dropped.
const LOG_LIMIT: usize = 16 << 20;

/// The node: the objects it reports to, where it keeps pods' files, and the images it
/// has pulled.
pub(crate) struct Node {
    pub(crate) store: Arc<Store>,
    pub(crate) work: PathBuf,
    pub(crate) images: Mutex<HashMap<String, Arc<PulledImage>>>,
}

impl Node {
    pub(crate) fn new(store: Arc<Store>, work: PathBuf) -> Node {
        Node {
            store,
            work,
            images: Mutex::new(HashMap::new()),
        }
    }

    /// The image pulled for `reference` before, if any.
    pub(crate) fn image(&self, reference: &str) -> Option<Arc<PulledImage>> {
        let images = self.images.lock().unwrap_or_else(|e| e.into_inner());
        images.get(reference).cloned()
    }

    pub(crate) fn keep_image(&self, reference: &str, image: Arc<PulledImage>) {
        let mut images = self.images.lock().unwrap_or_else(|e| e.into_inner());
        images.insert(reference.to_string(), image);
    }
}

/// An image in an OCI layout of the node's, as the kubelet keeps pulled images.
pub(crate) struct PulledImage {
    pub(crate) layout: PathBuf,
    pub(crate) config: ImageConfig,
    /// `repository@sha256:…`, the container status's `imageID`.
    pub(crate) id: String,
    /// Held while the layout is unpacked, one pod at a time.
    pub(crate) unpacking: Mutex<()>,
}

/// What the output of a pod's container is kept in, for `pods/log`.
pub(crate) struct Log {
    state: Mutex<(Vec<u8>, bool)>,
    changed: tokio::sync::watch::Sender<()>,
}

impl Log {
    pub(crate) fn new() -> Log {
        Log {
            state: Mutex::new((Vec::new(), false)),
            changed: tokio::sync::watch::channel(()).0,
        }
    }

    pub(crate) fn append(&self, data: &[u8]) {
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let room = LOG_LIMIT.saturating_sub(state.0.len());
            state.0.extend_from_slice(&data[..data.len().min(room)]);
        }
        self.changed.send_replace(());
    }

    /// No more output will come: the container ended or never started.
    pub(crate) fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.changed.send_replace(());
    }

    /// What was written from `offset` on, and whether that is all there will be.
    pub(crate) fn read_from(&self, offset: usize) -> (Vec<u8>, bool) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (state.0.get(offset..).unwrap_or_default().to_vec(), state.1)
    }

    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.changed.subscribe()
    }
}

/// Why the agent stops a pod before its container ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    Deleted,
    Evicted(String),
}

/// What the API server and the agent share about a pod while the agent works on it.
pub(crate) struct PodRuntime {
    pub(crate) stop: Mutex<Option<Stop>>,
    pub(crate) wake: Condvar,
}

impl PodRuntime {
    /// Asks the agent to stop the pod; the first reason given wins.
    pub(crate) fn stop(&self, why: Stop) {
        let mut stop = self.stop.lock().unwrap_or_else(|e| e.into_inner());
        stop.get_or_insert(why);
        self.wake.notify_all();
    }
}

/// Registers the new pod with the node, under the store's lock, so that a delete that
/// comes before its thread starts finds it.
pub(crate) fn register(objects: &mut Objects, pod: &Value) {
    let uid = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    objects.running.insert(
        uid.clone(),
        Arc::new(PodRuntime {
            stop: Mutex::new(None),
            wake: Condvar::new(),
        }),
    );
    objects.logs.insert(uid, Arc::new(Log::new()));
}
