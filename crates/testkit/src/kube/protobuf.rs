//! Reading the protobuf bodies that kubectl's typed generators send (`kubectl create
//! secret generic|docker-registry`, `kubectl create namespace`): the `k8s\0` envelope
//! around a `runtime.Unknown`, and the Secret and Namespace messages with the
//! ObjectMeta fields a client sets on create. Other kinds are refused.

use base64::Engine;
use serde_json::{json, Map, Value};

use super::store::Kind;

/// The magic number before every Kubernetes protobuf body.
const MAGIC: &[u8] = b"k8s\0";

/// One field of a protobuf message.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// A fixed-width value, which none of the fields read here are.
    Fixed,
}

/// The fields of one message, in order.
fn fields(mut buf: &[u8]) -> Option<Vec<(u64, Wire<'_>)>> {
    let mut fields = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let wire = match key & 7 {
            0 => Wire::Varint(varint(&mut buf)?),
            1 => {
                buf = buf.get(8..)?;
                Wire::Fixed
            }
            2 => {
                let len = usize::try_from(varint(&mut buf)?).ok()?;
                let bytes = buf.get(..len)?;
                buf = &buf[len..];
                Wire::Bytes(bytes)
            }
            5 => {
                buf = buf.get(4..)?;
                Wire::Fixed
            }
            _ => return None,
        };
        fields.push((key >> 3, wire));
    }
    Some(fields)
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn text(bytes: &[u8]) -> Option<Value> {
    std::str::from_utf8(bytes).ok().map(|s| json!(s))
}

/// A `map<string, string>` (or `map<string, bytes>`, base64-encoded as in JSON) entry.
fn map_entry(bytes: &[u8], binary: bool, into: &mut Map<String, Value>) -> Option<()> {
    let (mut key, mut value) = (String::new(), Value::String(String::new()));
    for (number, wire) in fields(bytes)? {
        match (number, wire) {
            (1, Wire::Bytes(k)) => key = std::str::from_utf8(k).ok()?.to_string(),
            (2, Wire::Bytes(v)) if binary => {
                value = json!(base64::engine::general_purpose::STANDARD.encode(v))
            }
            (2, Wire::Bytes(v)) => value = text(v)?,
            _ => {}
        }
    }
    into.insert(key, value);
    Some(())
}

/// ObjectMeta: name, generateName, namespace, labels, annotations, finalizers.
fn metadata(bytes: &[u8]) -> Option<Value> {
    let mut meta = Map::new();
    let (mut labels, mut annotations, mut finalizers) = (Map::new(), Map::new(), Vec::new());
    for (number, wire) in fields(bytes)? {
        let Wire::Bytes(b) = wire else { continue };
        match number {
            1 => drop(meta.insert("name".into(), text(b)?)),
            2 => drop(meta.insert("generateName".into(), text(b)?)),
            3 => drop(meta.insert("namespace".into(), text(b)?)),
            11 => map_entry(b, false, &mut labels)?,
            12 => map_entry(b, false, &mut annotations)?,
            14 => finalizers.push(text(b)?),
            _ => {}
        }
    }
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    if !finalizers.is_empty() {
        meta.insert("finalizers".into(), Value::Array(finalizers));
    }
    Some(Value::Object(meta))
}

/// The JSON of a protobuf-encoded `kind` object, or why it cannot be read.
pub(crate) fn decode(kind: Kind, body: &[u8]) -> Result<Value, String> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or("the protobuf body does not start with the k8s magic number")?;
    let raw = fields(envelope)
        .and_then(|fields| {
            fields
                .into_iter()
                .find_map(|(number, wire)| match (number, wire) {
                    (2, Wire::Bytes(raw)) => Some(raw),
                    _ => None,
                })
        })
        .ok_or("the protobuf envelope has no object")?;
    let object = match kind {
        Kind::Secret => secret(raw),
        Kind::Namespace => namespace(raw),
        Kind::Pod => {
            return Err(
                "pods are read as JSON only (kubectl create -f and apply -f send JSON)".into(),
            )
        }
    };
    object.ok_or_else(|| format!("the protobuf {} is malformed", kind.name()))
}

fn secret(raw: &[u8]) -> Option<Value> {
    let mut secret = json!({"apiVersion": "v1", "kind": "Secret"});
    let (mut data, mut strings) = (Map::new(), Map::new());
    for (number, wire) in fields(raw)? {
        match (number, wire) {
            (1, Wire::Bytes(b)) => secret["metadata"] = metadata(b)?,
            (2, Wire::Bytes(b)) => map_entry(b, true, &mut data)?,
            (3, Wire::Bytes(b)) => secret["type"] = text(b)?,
            (4, Wire::Bytes(b)) => map_entry(b, false, &mut strings)?,
            (5, Wire::Varint(v)) => secret["immutable"] = json!(v != 0),
            _ => {}
        }
    }
    secret["data"] = Value::Object(data);
    if !strings.is_empty() {
        secret["stringData"] = Value::Object(strings);
    }
    Some(secret)
}

fn namespace(raw: &[u8]) -> Option<Value> {
    let mut namespace = json!({"apiVersion": "v1", "kind": "Namespace"});
    for (number, wire) in fields(raw)? {
        if let (1, Wire::Bytes(b)) = (number, wire) {
            namespace["metadata"] = metadata(b)?;
        }
    }
    Some(namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![number << 3 | 2, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn reads_a_secret_as_kubectl_encodes_it() {
        let meta = [
            field(1, b"creds"),
            field(11, &[field(1, b"app"), field(2, b"web")].concat()),
        ]
        .concat();
        let secret = [
            field(1, &meta),
            field(2, &[field(1, b"token"), field(2, b"\x00\xffhi")].concat()),
            field(3, b"Opaque"),
        ]
        .concat();
        let envelope = [
            MAGIC.to_vec(),
            field(1, &[field(1, b"v1"), field(2, b"Secret")].concat()),
            field(2, &secret),
        ]
        .concat();
        let decoded = decode(Kind::Secret, &envelope).unwrap();
        assert_eq!(decoded["metadata"]["name"], "creds");
        assert_eq!(decoded["metadata"]["labels"]["app"], "web");
        assert_eq!(decoded["data"]["token"], "AP9oaQ==");
        assert_eq!(decoded["type"], "Opaque");
        assert!(decode(Kind::Secret, b"k8s\0\x12\x05ab").is_err());
        assert!(decode(Kind::Pod, &envelope).is_err());
    }
}
