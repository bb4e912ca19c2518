//! The API server's memory: every object as the JSON the API returns, one global
//! resourceVersion counter, and the history of changes that watches replay.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::node::{Log, PodRuntime, Stop};
use super::objects::{now, ApiError};

/// How many changes the history keeps; a watch from before the oldest is told 410.
const HISTORY: usize = 10_000;

/// The kinds of object the server stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    Namespace,
    Pod,
    Secret,
}

impl Kind {
    pub(crate) fn from_resource(resource: &str) -> Option<Kind> {
        match resource {
            "namespaces" => Some(Kind::Namespace),
            "pods" => Some(Kind::Pod),
            "secrets" => Some(Kind::Secret),
            _ => None,
        }
    }

    /// `Pod`, as in the object's `kind`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::Secret => "Secret",
        }
    }

    /// `pods`, as in the URL path and in Status details.
    pub(crate) fn resource(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Pod => "pods",
            Kind::Secret => "secrets",
        }
    }

    pub(crate) fn namespaced(self) -> bool {
        self != Kind::Namespace
    }
}

/// `ADDED`, `MODIFIED` or `DELETED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Added,
    Modified,
    Deleted,
}

impl Change {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Change::Added => "ADDED",
            Change::Modified => "MODIFIED",
            Change::Deleted => "DELETED",
        }
    }
}

/// One change, as a watch sends it.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) resource_version: u64,
    pub(crate) change: Change,
    pub(crate) kind: Kind,
    pub(crate) namespace: String,
    pub(crate) object: Value,
    /// What a MODIFIED object was before, so that a watch with a selector can tell an
    /// object that starts or stops matching (ADDED or DELETED to it).
    pub(crate) previous: Option<Value>,
}

/// A watch asked for changes the history no longer has.
#[derive(Debug)]
pub(crate) struct Expired {
    pub(crate) requested: u64,
    pub(crate) oldest: u64,
}

/// The objects, behind one lock; [`Store::with`] wakes watches after a change.
pub(crate) struct Store {
    inner: Mutex<Objects>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl Store {
    pub(crate) fn new() -> Store {
        let mut objects = Objects {
            resource_version: 0,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            compacted: 0,
            running: HashMap::new(),
            logs: HashMap::new(),
        };
        for namespace in ["default", "kube-system", "kube-public"] {
            let admitted =
                super::objects::admit(Kind::Namespace, json!({"metadata": {"name": namespace}}))
                    .and_then(|ns| objects.create(Kind::Namespace, "", ns));
            admitted.expect("a fresh store takes the built-in namespaces");
        }
        let (changed, _) = tokio::sync::watch::channel(objects.resource_version);
        Store {
            inner: Mutex::new(objects),
            changed,
        }
    }

    /// Runs `f` on the objects under the lock, then wakes the watches if anything changed.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Objects) -> R) -> R {
        let (result, version) = {
            let mut objects = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let result = f(&mut objects);
            (result, objects.resource_version)
        };
        self.changed.send_if_modified(|seen| {
            let newer = *seen != version;
            *seen = version;
            newer
        });
        result
    }

    /// A receiver that changes whenever an object does.
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Every object and what the node agent keeps per pod.
pub(crate) struct Objects {
    resource_version: u64,
    objects: BTreeMap<(Kind, String, String), Value>,
    history: VecDeque<Event>,
    /// Changes up to this resourceVersion are gone from the history.
    compacted: u64,
    /// Pods whose agent is still at work, by uid.
    pub(crate) running: HashMap<String, Arc<PodRuntime>>,
    /// The log of every pod that exists, by uid.
    pub(crate) logs: HashMap<String, Arc<Log>>,
}

impl Objects {
    pub(crate) fn resource_version(&self) -> u64 {
        self.resource_version
    }

    fn record(
        &mut self,
        change: Change,
        kind: Kind,
        namespace: &str,
        object: Value,
        previous: Option<Value>,
    ) {
        self.history.push_back(Event {
            resource_version: self.resource_version,
            change,
            kind,
            namespace: namespace.to_string(),
            object,
            previous,
        });
        while self.history.len() > HISTORY {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.resource_version;
            }
        }
    }

    fn next_version(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    /// Stores a new object (already validated and defaulted): assigns its uid,
    /// resourceVersion and creationTimestamp. 409 when the name is taken, 404 when the
    /// namespace does not exist.
    pub(crate) fn create(
        &mut self,
        kind: Kind,
        namespace: &str,
        mut object: Value,
    ) -> Result<Value, ApiError> {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if kind.namespaced() {
            self.check_namespace(namespace)?;
        }
        let key = (kind, namespace.to_string(), name.clone());
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(kind, &name));
        }
        let version = self.next_version();
        let metadata = &mut object["metadata"];
        metadata["uid"] = json!(new_uid());
        metadata["resourceVersion"] = json!(version);
        metadata["creationTimestamp"] = json!(now());
        if kind.namespaced() {
            metadata["namespace"] = json!(namespace);
        }
        self.objects.insert(key, object.clone());
        self.record(Change::Added, kind, namespace, object.clone(), None);
        Ok(object)
    }

    pub(crate) fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&(kind, namespace.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| ApiError::not_found(kind, name))
    }

    /// The objects of `kind`, in `namespace` or in all of them, by namespace and name.
    pub(crate) fn list(&self, kind: Kind, namespace: Option<&str>) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((k, ns, _), _)| *k == kind && namespace.is_none_or(|n| n == ns))
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// Changes `kind` in `namespace` (all when None) with resourceVersion after `after`,
    /// oldest first.
    pub(crate) fn events_after(
        &self,
        after: u64,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<Vec<Event>, Expired> {
        if after < self.compacted {
            return Err(Expired {
                requested: after,
                oldest: self.compacted + 1,
            });
        }
        Ok(self
            .history
            .iter()
            .filter(|e| {
                e.resource_version > after
                    && e.kind == kind
                    && namespace.is_none_or(|n| n == e.namespace)
            })
            .cloned()
            .collect())
    }

    /// Changes the object `name` of `kind` if its uid is still `uid` (a pod deleted and
    /// created again under the same name is another pod), with a new resourceVersion.
    pub(crate) fn update(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        uid: &str,
        f: impl FnOnce(&mut Value),
    ) -> Option<Value> {
        let key = (kind, namespace.to_string(), name.to_string());
        let previous = self.objects.get(&key)?.clone();
        if previous["metadata"]["uid"] != uid {
            return None;
        }
        let mut object = previous.clone();
        f(&mut object);
        object["metadata"]["resourceVersion"] = json!(self.next_version());
        self.objects.insert(key, object.clone());
        self.record(
            Change::Modified,
            kind,
            namespace,
            object.clone(),
            Some(previous),
        );
        Some(object)
    }

    /// Deletes the object as the API server does. A pod whose agent is still at work is
    /// only marked (its `deletionTimestamp` set) and its process told to stop; it goes when
    /// the agent is done. A namespace is marked Terminating, everything in it deleted, and
    /// it goes when it is empty. Anything else goes at once.
    pub(crate) fn delete(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        grace: Option<i64>,
    ) -> Result<Value, ApiError> {
        let object = self.get(kind, namespace, name)?;
        let uid = object["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if !object["metadata"]["deletionTimestamp"].is_null() {
            return Ok(object);
        }
        let runtime = self.running.get(&uid).cloned();
        match (kind, runtime) {
            (Kind::Pod, Some(runtime)) => {
                let grace = grace
                    .or_else(|| object["spec"]["terminationGracePeriodSeconds"].as_i64())
                    .unwrap_or(30);
                let marked = self.update(kind, namespace, name, &uid, |pod| {
                    pod["metadata"]["deletionTimestamp"] = json!(now());
                    pod["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                });
                runtime.stop(Stop::Deleted);
                Ok(marked.unwrap_or(object))
            }
            (Kind::Namespace, _) => {
                let marked = self.update(kind, namespace, name, &uid, |ns| {
                    ns["metadata"]["deletionTimestamp"] = json!(now());
                    ns["status"]["phase"] = json!("Terminating");
                });
                let contents: Vec<(Kind, String)> = self
                    .objects
                    .keys()
                    .filter(|(k, ns, _)| *k != Kind::Namespace && ns == name)
                    .map(|(k, _, n)| (*k, n.clone()))
                    .collect();
                for (kind, object) in contents {
                    let _ = self.delete(kind, name, &object, None);
                }
                self.finish_namespace(name);
                Ok(marked.unwrap_or(object))
            }
            _ => Ok(self.remove(kind, namespace, name).unwrap_or(object)),
        }
    }

    /// Whether objects may be created in `namespace`: 404 when it does not exist, 403 while
    /// it terminates.
    pub(crate) fn check_namespace(&self, namespace: &str) -> Result<(), ApiError> {
        let ns = self.get(Kind::Namespace, "", namespace)?;
        if ns["metadata"]["deletionTimestamp"].is_null() {
            Ok(())
        } else {
            Err(ApiError {
                code: 403,
                reason: "Forbidden",
                message: format!(
                    "unable to create new content in namespace {namespace} because it is being terminated"
                ),
                details: None,
            })
        }
    }

    /// Removes a terminating namespace once nothing is left in it.
    fn finish_namespace(&mut self, namespace: &str) {
        let terminating = self
            .get(Kind::Namespace, "", namespace)
            .is_ok_and(|ns| !ns["metadata"]["deletionTimestamp"].is_null());
        let empty = !self
            .objects
            .keys()
            .any(|(k, ns, _)| *k != Kind::Namespace && ns == namespace);
        if terminating && empty {
            self.remove(Kind::Namespace, "", namespace);
        }
    }

    /// Removes the object; the DELETED change carries a new resourceVersion. Then the
    /// objects it owned are deleted too, as the garbage collector does with the
    /// dependents named by their `ownerReferences`, and its namespace goes if it was
    /// waiting for that.
    pub(crate) fn remove(&mut self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        let mut object = self
            .objects
            .remove(&(kind, namespace.to_string(), name.to_string()))?;
        object["metadata"]["resourceVersion"] = json!(self.next_version());
        let uid = object["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.logs.remove(&uid);
        self.record(Change::Deleted, kind, namespace, object.clone(), None);
        let dependents: Vec<(Kind, String, String)> = self
            .objects
            .iter()
            .filter(|(_, object)| {
                object["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid.as_str()))
            })
            .map(|((kind, namespace, name), _)| (*kind, namespace.clone(), name.clone()))
            .collect();
        for (kind, namespace, name) in dependents {
            let _ = self.delete(kind, &namespace, &name, Some(0));
        }
        if kind.namespaced() {
            self.finish_namespace(namespace);
        }
        Some(object)
    }

    /// Forgets the history up to now, as etcd's compaction does: a watch from any
    /// resourceVersion before the current one is told 410 Gone.
    pub(crate) fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.resource_version;
    }
}

/// A random version 4 UUID, from the kernel.
fn new_uid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| {
            use std::sync::atomic::{AtomicU64, Ordering};
            static NEXT: AtomicU64 = AtomicU64::new(1);
            format!(
                "00000000-0000-4000-8000-{:012x}",
                NEXT.fetch_add(1, Ordering::SeqCst)
            )
        })
}
