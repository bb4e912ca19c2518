//! The REST API over HTTP/1.1: discovery, then create, get, list, watch and delete of
//! namespaces, pods and secrets at the paths and with the JSON of the real API server,
//! and `pods/{name}/log`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response};
use serde_json::{json, Value};

use super::agent;
use super::node::{self, Node};
use super::objects::{admit, now, ApiError};
use super::select::{parse_query, FieldSelector, LabelSelector};
use super::store::{Change, Kind};
use super::update::{admit_update, changes, merge, Patch};
use super::{protobuf, table};

/// A request body larger than this is refused, as the real server's limit is about 3 MB.
const BODY_LIMIT: usize = 3 << 20;

pub(crate) type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A streamed body: each chunk sent on the channel, until the sender is dropped.
struct Channel(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for Channel {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    let mut text = serde_json::to_vec(value).unwrap_or_default();
    text.push(b'\n');
    Response::builder()
        .status(code)
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(text)).boxed())
        .expect("a response from a valid status and header")
}

fn error_response(error: &ApiError) -> Response<Body> {
    json_response(error.code, &error.status())
}

fn streaming(content_type: &str) -> (tokio::sync::mpsc::Sender<Bytes>, Response<Body>) {
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    let response = Response::builder()
        .status(200)
        .header("Content-Type", content_type)
        .header("Cache-Control", "no-cache, private")
        .body(Channel(receiver).boxed())
        .expect("a response from a valid status and header");
    (sender, response)
}

/// Answers one request.
pub(crate) async fn handle(
    node: Arc<Node>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = parse_query(request.uri().query());
    let accept = request
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = if matches!(method, Method::POST | Method::PUT | Method::PATCH) {
        match read_body(request.into_body()).await {
            Ok(body) => body,
            Err(error) => return Ok(error_response(&error)),
        }
    } else {
        Bytes::new()
    };
    let call = Call {
        node,
        method,
        query,
        accept,
        body,
        content_type,
    };
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    Ok(match route(&call, &segments).await {
        Ok(response) => response,
        Err(error) => error_response(&error),
    })
}

async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, BODY_LIMIT);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(ApiError {
            code: 413,
            reason: "RequestEntityTooLarge",
            message: "the request body is too large or could not be read".into(),
            details: None,
        }),
    }
}

/// One request, read.
struct Call {
    node: Arc<Node>,
    method: Method,
    query: HashMap<String, String>,
    accept: String,
    body: Bytes,
    /// JSON, protobuf (kubectl's typed generators) or a patch type.
    content_type: String,
}

async fn route(call: &Call, segments: &[&str]) -> Result<Response<Body>, ApiError> {
    let get = call.method == Method::GET;
    match segments {
        ["version"] if get => Ok(json_response(200, &version())),
        ["api"] if get => Ok(json_response(
            200,
            &json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
            }),
        )),
        ["apis"] if get => Ok(json_response(
            200,
            &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
        )),
        ["api", "v1"] if get => Ok(json_response(200, &resources())),
        ["openapi", "v2"] if get => Ok(openapi_v2()),
        ["openapi", "v3"] if get => Ok(json_response(
            200,
            &json!({"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=testkit"}}}),
        )),
        ["openapi", "v3", "api", "v1"] if get => Ok(json_response(200, &openapi_v1())),
        ["api", "v1", resource] => {
            let kind = kind_of(resource)?;
            match call.method {
                Method::GET => collection(call, kind, None).await,
                Method::POST if kind == Kind::Namespace => create(call, kind, ""),
                _ => Err(ApiError::method_not_allowed(call.method.as_str())),
            }
        }
        ["api", "v1", "namespaces", name] => match call.method {
            Method::GET => call
                .node
                .store
                .with(|o| o.get(Kind::Namespace, "", name))
                .map(|ns| object_response(call, Kind::Namespace, &ns)),
            Method::PUT | Method::PATCH => update(call, Kind::Namespace, "", name),
            Method::DELETE => delete(call, Kind::Namespace, "", name),
            _ => Err(ApiError::method_not_allowed(call.method.as_str())),
        },
        ["api", "v1", "namespaces", namespace, resource] => {
            let kind = kind_of(resource)
                .and_then(|k| k.namespaced().then_some(k).ok_or_else(ApiError::no_route))?;
            match call.method {
                Method::GET => collection(call, kind, Some(namespace)).await,
                Method::POST => create(call, kind, namespace),
                _ => Err(ApiError::method_not_allowed(call.method.as_str())),
            }
        }
        ["api", "v1", "namespaces", namespace, resource, name] => {
            let kind = kind_of(resource)
                .and_then(|k| k.namespaced().then_some(k).ok_or_else(ApiError::no_route))?;
            match call.method {
                Method::GET => call
                    .node
                    .store
                    .with(|o| o.get(kind, namespace, name))
                    .map(|object| object_response(call, kind, &object)),
                Method::DELETE => delete(call, kind, namespace, name),
                Method::PUT | Method::PATCH => update(call, kind, namespace, name),
                _ => Err(ApiError::method_not_allowed(call.method.as_str())),
            }
        }
        ["api", "v1", "namespaces", namespace, "pods", name, "status"] if get => call
            .node
            .store
            .with(|o| o.get(Kind::Pod, namespace, name))
            .map(|pod| json_response(200, &pod)),
        ["api", "v1", "namespaces", namespace, "pods", name, "log"] if get => {
            logs(call, namespace, name).await
        }
        _ => Err(ApiError::no_route()),
    }
}

fn kind_of(resource: &str) -> Result<Kind, ApiError> {
    Kind::from_resource(resource).ok_or_else(ApiError::no_route)
}

/// The server's version: a Kubernetes 1.32 for the clients that pick behaviour by it.
fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-kpackd-testkit",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// The APIResourceList of the core group, as far as this server serves it.
fn resources() -> Value {
    let verbs = json!(["create", "delete", "get", "list", "patch", "update", "watch"]);
    json!({
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {"name": "namespaces", "singularName": "namespace", "namespaced": false, "kind": "Namespace",
             "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"], "shortNames": ["ns"]},
            {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
             "verbs": verbs, "shortNames": ["po"], "categories": ["all"]},
            {"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]},
            {"name": "pods/status", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]},
            {"name": "secrets", "singularName": "secret", "namespaced": true, "kind": "Secret",
             "verbs": verbs},
        ],
    })
}

/// An OpenAPI v2 document with no definitions, in the protobuf encoding kubectl asks for:
/// a kubectl that validates on its side (older than 1.27, or when OpenAPI v3 is missing)
/// finds no schema for the kind and skips validation instead of failing to download one.
fn openapi_v2() -> Response<Body> {
    fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![number << 3 | 2, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }
    // Document { swagger = 1: "2.0", info = 2: Info { title = 1, version = 2 } }.
    let info = [field(1, b"Kubernetes"), field(2, b"v1.32.0")].concat();
    let document = [field(1, b"2.0"), field(2, &info)].concat();
    Response::builder()
        .status(200)
        .header(
            "Content-Type",
            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
        )
        .body(Full::new(Bytes::from(document)).boxed())
        .expect("a response from a valid status and header")
}

/// Just enough of the OpenAPI v3 document of the core group for kubectl to see that the
/// server validates fields itself (the `fieldValidation` parameter of each kind's
/// operations), so that it does not need the schemas to validate on its side.
fn openapi_v1() -> Value {
    let mut paths = serde_json::Map::new();
    for (kind, path) in [
        ("Namespace", "/api/v1/namespaces/{name}"),
        ("Pod", "/api/v1/namespaces/{namespace}/pods/{name}"),
        ("Secret", "/api/v1/namespaces/{namespace}/secrets/{name}"),
    ] {
        let operation = json!({
            "x-kubernetes-group-version-kind": {"group": "", "version": "v1", "kind": kind},
            "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}}],
            "responses": {},
        });
        paths.insert(path.to_string(), json!({"patch": operation}));
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
    })
}

fn object_response(call: &Call, kind: Kind, object: &Value) -> Response<Body> {
    if table::wanted(&call.accept) {
        let version = call.node.store.with(|o| o.resource_version());
        json_response(
            200,
            &table::table(kind, std::slice::from_ref(object), version),
        )
    } else {
        json_response(200, object)
    }
}

fn create(call: &Call, kind: Kind, namespace: &str) -> Result<Response<Body>, ApiError> {
    let object: Value = if call.content_type.contains("protobuf") {
        protobuf::decode(kind, &call.body).map_err(|message| ApiError {
            code: 415,
            reason: "UnsupportedMediaType",
            message,
            details: None,
        })?
    } else {
        serde_json::from_slice(&call.body)
            .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?
    };
    if let Some(sent) = object["metadata"]["namespace"].as_str() {
        if kind.namespaced() && !sent.is_empty() && sent != namespace {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    let object = admit(kind, object)?;
    if call.query.get("dryRun").is_some_and(|d| d == "All") {
        let mut object = object;
        if kind.namespaced() {
            object["metadata"]["namespace"] = json!(namespace);
        }
        object["metadata"]["creationTimestamp"] = json!(now());
        return Ok(json_response(201, &object));
    }
    let created = call.node.store.with(|o| {
        let created = o.create(kind, namespace, object)?;
        if kind == Kind::Pod {
            node::register(o, &created);
        }
        Ok::<_, ApiError>(created)
    })?;
    if kind == Kind::Pod {
        agent::spawn(call.node.clone(), created.clone());
    }
    Ok(json_response(201, &created))
}

/// A PUT replacing the object or a PATCH merging into it.
fn update(
    call: &Call,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let patch = match call.method {
        Method::PATCH => Some(Patch::from_content_type(&call.content_type)?),
        _ => None,
    };
    let body: Value = serde_json::from_slice(&call.body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    let dry_run = call.query.get("dryRun").is_some_and(|d| d == "All");
    let updated = call.node.store.with(|o| {
        let current = o.get(kind, namespace, name)?;
        let desired = match patch {
            Some(Patch::Merge | Patch::StrategicMerge) => {
                let mut desired = current.clone();
                merge(&mut desired, &body);
                desired
            }
            None => body,
        };
        let next = admit_update(kind, &current, desired)?;
        if dry_run || !changes(&current, &next) {
            return Ok(if dry_run { next } else { current });
        }
        let uid = current["metadata"]["uid"].as_str().unwrap_or_default();
        o.update(kind, namespace, name, uid, |object| *object = next)
            .ok_or_else(|| ApiError::not_found(kind, name))
    })?;
    Ok(json_response(200, &updated))
}

/// Deletes at once, but a pod whose agent is still at work: it is marked (its
/// `deletionTimestamp` set), its process killed, and it disappears when the agent is done.
fn delete(
    call: &Call,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let options: Value = serde_json::from_slice(&call.body).unwrap_or(Value::Null);
    let deleted = call.node.store.with(|o| {
        let object = o.get(kind, namespace, name)?;
        let uid = object["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Some(expected) = options["preconditions"]["uid"].as_str() {
            if expected != uid {
                return Err(ApiError {
                    code: 409,
                    reason: "Conflict",
                    message: format!(
                        "Precondition failed: UID in precondition: {expected}, UID in object meta: {uid}"
                    ),
                    details: None,
                });
            }
        }
        o.delete(kind, namespace, name, options["gracePeriodSeconds"].as_i64())
    })?;
    Ok(json_response(200, &deleted))
}

/// A list, or a watch when `watch` is true.
async fn collection(
    call: &Call,
    kind: Kind,
    namespace: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let labels = LabelSelector::parse(call.query.get("labelSelector").map_or("", |s| s))?;
    let fields = FieldSelector::parse(call.query.get("fieldSelector").map_or("", |s| s))?;
    let matching = move |object: &Value| labels.matches(object) && fields.matches(object);
    let watch = call
        .query
        .get("watch")
        .is_some_and(|w| w == "true" || w == "1");
    let from =
        match call.query.get("resourceVersion").map(String::as_str) {
            None | Some("" | "0") => None,
            Some(version) => Some(version.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("invalid resourceVersion {version:?}"))
            })?),
        };
    if watch {
        let timeout = call
            .query
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map(Duration::from_secs);
        let initial_events = call
            .query
            .get("sendInitialEvents")
            .is_some_and(|s| s == "true");
        let (sender, response) = streaming("application/json");
        let watch = Watch {
            node: call.node.clone(),
            kind,
            namespace: namespace.map(str::to_string),
            matching: Box::new(matching),
            table: table::wanted(&call.accept),
            sender,
        };
        tokio::spawn(watch.run(from, initial_events, timeout));
        return Ok(response);
    }
    if call.query.contains_key("continue") {
        return Err(ApiError::expired(0, 0));
    }
    let (objects, version) = call
        .node
        .store
        .with(|o| (o.list(kind, namespace), o.resource_version()));
    let exact = call
        .query
        .get("resourceVersionMatch")
        .is_some_and(|m| m == "Exact");
    if let (true, Some(requested)) = (exact, from) {
        if requested != version {
            return Err(ApiError::expired(requested, version));
        }
    }
    let items: Vec<Value> = objects.into_iter().filter(|o| matching(o)).collect();
    if table::wanted(&call.accept) {
        return Ok(json_response(200, &table::table(kind, &items, version)));
    }
    Ok(json_response(
        200,
        &json!({
            "kind": format!("{}List", kind.name()),
            "apiVersion": "v1",
            "metadata": {"resourceVersion": version.to_string()},
            "items": items,
        }),
    ))
}

/// One watch: newline-delimited events, from a resourceVersion on.
struct Watch {
    node: Arc<Node>,
    kind: Kind,
    namespace: Option<String>,
    matching: Box<dyn Fn(&Value) -> bool + Send + Sync>,
    /// Each object sent as a one-row Table (`kubectl get -w`).
    table: bool,
    sender: tokio::sync::mpsc::Sender<Bytes>,
}

impl Watch {
    async fn send(&self, kind: &str, object: &Value) -> bool {
        let object = match kind {
            "ADDED" | "MODIFIED" | "DELETED" if self.table => {
                let version = object["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                table::table(self.kind, std::slice::from_ref(object), version)
            }
            _ => object.clone(),
        };
        let mut line =
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        line.push(b'\n');
        self.sender.send(Bytes::from(line)).await.is_ok()
    }

    /// Sends the changes after `from` (with no `from`: every current object as ADDED
    /// first) until the timeout, the client hanging up, or the history running out under
    /// it (an ERROR event with a 410 Expired Status, as the real server sends).
    async fn run(self, from: Option<u64>, initial_events: bool, timeout: Option<Duration>) {
        let mut changed = self.node.store.subscribe();
        let namespace = self.namespace.as_deref();
        let mut cursor = match from {
            Some(version) if !initial_events => version,
            _ => {
                let (objects, version) = self
                    .node
                    .store
                    .with(|o| (o.list(self.kind, namespace), o.resource_version()));
                for object in objects.iter().filter(|o| (self.matching)(o)) {
                    if !self.send(Change::Added.as_str(), object).await {
                        return;
                    }
                }
                if initial_events {
                    let bookmark = json!({
                        "kind": self.kind.name(),
                        "apiVersion": "v1",
                        "metadata": {
                            "resourceVersion": version.to_string(),
                            "annotations": {"k8s.io/initial-events-end": "true"},
                        },
                    });
                    if !self.send("BOOKMARK", &bookmark).await {
                        return;
                    }
                }
                version
            }
        };
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            changed.borrow_and_update();
            let events = self
                .node
                .store
                .with(|o| o.events_after(cursor, self.kind, namespace));
            match events {
                Ok(events) => {
                    for event in events {
                        cursor = event.resource_version;
                        let now = (self.matching)(&event.object);
                        let before = event.previous.as_ref().map(|p| (self.matching)(p));
                        let seen = match (event.change, before, now) {
                            (Change::Modified, Some(false), true) => Some(Change::Added),
                            (Change::Modified, Some(true), false) => Some(Change::Deleted),
                            (Change::Modified, Some(false), false) => None,
                            (change, _, true) => Some(change),
                            (_, _, false) => None,
                        };
                        if let Some(change) = seen {
                            if !self.send(change.as_str(), &event.object).await {
                                return;
                            }
                        }
                    }
                }
                Err(expired) => {
                    let status = ApiError::expired(expired.requested, expired.oldest).status();
                    self.send("ERROR", &status).await;
                    return;
                }
            }
            let sleep = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                result = changed.changed() => if result.is_err() { return },
                () = sleep => return,
                () = self.sender.closed() => return,
            }
        }
    }
}

/// `pods/{name}/log`: what the container wrote, all of it or its last `tailLines`;
/// with `follow`, streamed until the container ends.
async fn logs(call: &Call, namespace: &str, name: &str) -> Result<Response<Body>, ApiError> {
    let (pod, log) = call.node.store.with(|o| {
        let pod = o.get(Kind::Pod, namespace, name)?;
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        let log = o.logs.get(uid).cloned();
        Ok::<_, ApiError>((pod, log))
    })?;
    let containers: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let container = match call.query.get("container") {
        Some(asked) if containers.contains(&asked.as_str()) => asked.clone(),
        Some(asked) => {
            return Err(ApiError::bad_request(format!(
                "container {asked} is not valid for pod {name}"
            )))
        }
        None if containers.len() == 1 => containers[0].to_string(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )))
        }
    };
    let state = &pod["status"]["containerStatuses"][0]["state"];
    let waiting = state["waiting"]["reason"]
        .as_str()
        .or_else(|| state.is_null().then_some("ContainerCreating"));
    if let Some(reason) = waiting {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"
        )));
    }
    let Some(log) = log else {
        return Err(ApiError::not_found(Kind::Pod, name));
    };
    let tail = call
        .query
        .get("tailLines")
        .and_then(|t| t.parse::<usize>().ok());
    let (written, _) = log.read_from(0);
    let start = tail.map_or(0, |lines| tail_start(&written, lines));
    let first = Bytes::copy_from_slice(&written[start..]);
    let follow = call
        .query
        .get("follow")
        .is_some_and(|f| f == "true" || f == "1");
    let (sender, response) = streaming("text/plain");
    let mut offset = written.len();
    tokio::spawn(async move {
        let mut changed = log.subscribe();
        if !first.is_empty() && sender.send(first).await.is_err() {
            return;
        }
        if !follow {
            return;
        }
        loop {
            changed.borrow_and_update();
            let (more, closed) = log.read_from(offset);
            offset += more.len();
            if !more.is_empty() && sender.send(Bytes::from(more)).await.is_err() {
                return;
            }
            if closed {
                return;
            }
            tokio::select! {
                result = changed.changed() => if result.is_err() { return },
                () = sender.closed() => return,
            }
        }
    });
    Ok(response)
}

/// Where the last `lines` lines of `log` begin.
fn tail_start(log: &[u8], lines: usize) -> usize {
    let body = log.strip_suffix(b"\n").unwrap_or(log);
    let mut seen = 0;
    for (i, byte) in body.iter().enumerate().rev() {
        if *byte == b'\n' {
            seen += 1;
            if seen == lines {
                return i + 1;
            }
        }
    }
    if lines == 0 {
        log.len()
    } else {
        0
    }
}
