//! YAML documents as a small tree of nodes that keep their place in the text, so that
//! a mistake can be pointed at. Scalars keep their text: a kpack field decides what
//! type it wants (`version: 1.0` is the string `1.0`, not a float).

use std::ops::Range;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

use super::error::InputError;
use super::Input;

/// A YAML node and where it is (byte offsets).
#[derive(Debug, Clone)]
pub struct Node {
    pub span: Range<usize>,
    pub value: Value,
}

#[derive(Debug, Clone)]
pub enum Value {
    Null,
    /// A scalar's text: a string's contents, or a number's or boolean's spelling.
    Scalar(String),
    Seq(Vec<Node>),
    /// Keys that are not scalars are dropped; kpack resources have none.
    Map(Vec<(String, Node)>),
}

impl Node {
    pub fn str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// A one-line rendering of the value for a comment: scalars as they are, collections
    /// summarised.
    pub fn summary(&self) -> String {
        match &self.value {
            Value::Null => "null".to_string(),
            Value::Scalar(s) => {
                let one_line: String = s
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                if one_line.chars().count() > 60 {
                    let cut: String = one_line.chars().take(57).collect();
                    format!("`{cut}…`")
                } else {
                    format!("`{one_line}`")
                }
            }
            Value::Seq(items) => format!(
                "({} item{})",
                items.len(),
                if items.len() == 1 { "" } else { "s" }
            ),
            Value::Map(_) => "(a mapping)".to_string(),
        }
    }
}

/// Every document of `input` (documents that are empty are left out).
pub fn documents(input: &Input) -> Result<Vec<Node>, InputError> {
    let offsets = Offsets::new(&input.text);
    let docs = MarkedYaml::load_from_str(&input.text).map_err(|e| {
        // One character to point at, the last one when the error is at the end.
        let at = offsets.byte(e.marker().index());
        let len = input.text.len();
        let start = if at >= len { len.saturating_sub(1) } else { at };
        let end = input.text[start..]
            .chars()
            .next()
            .map_or(start, |c| start + c.len_utf8());
        InputError::new(input, format!("{} is not valid YAML", input.name))
            .at(start..end, e.info().to_string())
    })?;
    Ok(docs
        .iter()
        .map(|doc| convert(doc, &input.text, &offsets))
        .filter(|node| !node.is_null())
        .collect())
}

fn convert(yaml: &MarkedYaml<'_>, text: &str, offsets: &Offsets) -> Node {
    let span = offsets.byte(yaml.span.start.index())..offsets.byte(yaml.span.end.index());
    let raw = || {
        text.get(span.clone())
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let value = match &yaml.data {
        YamlData::Value(Scalar::Null) => Value::Null,
        YamlData::Value(Scalar::String(s)) => Value::Scalar(s.to_string()),
        YamlData::Value(_) => Value::Scalar(raw()),
        YamlData::Representation(s, _, _) => Value::Scalar(s.to_string()),
        YamlData::Sequence(items) => {
            Value::Seq(items.iter().map(|i| convert(i, text, offsets)).collect())
        }
        YamlData::Mapping(map) => Value::Map(
            map.iter()
                .filter_map(|(k, v)| {
                    let key = convert(k, text, offsets);
                    let key = key.str()?.to_string();
                    Some((key, convert(v, text, offsets)))
                })
                .collect(),
        ),
        YamlData::Tagged(_, inner) => return convert(inner, text, offsets),
        YamlData::Alias(_) | YamlData::BadValue => Value::Null,
    };
    Node { span, value }
}

/// Character index → byte offset (the parser counts characters).
struct Offsets {
    /// The byte offset of each character; empty when the text is ASCII.
    bytes: Vec<usize>,
    len: usize,
}

impl Offsets {
    fn new(text: &str) -> Offsets {
        let bytes = if text.is_ascii() {
            Vec::new()
        } else {
            text.char_indices().map(|(i, _)| i).collect()
        };
        Offsets {
            bytes,
            len: text.len(),
        }
    }

    fn byte(&self, index: usize) -> usize {
        if self.bytes.is_empty() {
            index.min(self.len)
        } else {
            self.bytes.get(index).copied().unwrap_or(self.len)
        }
    }
}
