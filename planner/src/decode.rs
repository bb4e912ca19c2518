//! Decoding kpack.toml text into [`KpackToml`], reporting every mistake serde finds
//! rather than only the first: after each error the offending key (or array element) is
//! taken out of the parsed document and decoding runs again.

use std::fmt;

use serde::de::IntoDeserializer;
use serde::Deserialize;
use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

use crate::config::KpackToml;
use crate::diagnostic::{did_you_mean, list, Problem, Span};

/// Enough to report every key of a file that is mistaken, without looping forever.
const MAX_ERRORS: usize = 100;

/// A file as decoded: what could be read, the mistakes, and what had to be dropped.
pub(crate) struct Decoded {
    /// None after a TOML syntax error.
    pub file: Option<KpackToml>,
    pub problems: Vec<Problem>,
    /// Where mistaken values were taken out of the document.
    damage: Vec<Path>,
}

impl Decoded {
    /// Whether anything at or under `path` (such as `["images", "hello"]`) was dropped,
    /// or the entry itself was: checks across its keys would then report follow-on
    /// errors of a mistake already reported.
    pub fn damaged(&self, path: &[&str]) -> bool {
        self.damage.iter().any(|removed| {
            removed
                .0
                .iter()
                .zip(path)
                .all(|(step, key)| matches!(step, Step::Key(k) if k == key))
        })
    }
}

/// One step into a TOML document: a key, or an index into an array.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Where a value sits in the document, written the way TOML names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Path(Vec<Step>);

impl Path {
    fn parent(&self) -> Path {
        Path(self.0[..self.0.len().saturating_sub(1)].to_vec())
    }

    fn child(&self, key: &str) -> Path {
        let mut steps = self.0.clone();
        steps.push(Step::Key(key.to_string()));
        Path(steps)
    }

    /// "in `stacks.bookworm`", or "at the top level".
    fn place(&self) -> String {
        if self.0.is_empty() {
            "at the top level".to_string()
        } else {
            format!("in `{self}`")
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            match step {
                Step::Index(index) => write!(f, "[{index}]")?,
                Step::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !key.is_empty()
                        && key
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                    if bare {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Parses and decodes `text`, collecting every problem.
pub(crate) fn decode(text: &str) -> Decoded {
    let original = match DeTable::parse(text) {
        Ok(document) => document,
        Err(e) => {
            return Decoded {
                file: None,
                problems: vec![syntax_problem(&e, text)],
                damage: Vec::new(),
            }
        }
    };
    let mut document = original.clone();
    let mut problems = Vec::new();
    let mut damage: Vec<Path> = Vec::new();
    loop {
        let error = match KpackToml::deserialize(document.clone().into_deserializer()) {
            Ok(file) => {
                return Decoded {
                    file: Some(file),
                    problems,
                    damage,
                }
            }
            Err(error) => error,
        };
        let Some(span) = error.span() else {
            problems.push(Problem::new(error.message().to_string()));
            break;
        };
        let Some(removed) = locate(document.get_ref(), &span) else {
            problems.push(Problem::new(error.message().to_string()).label(span, ""));
            break;
        };
        // Named as in the file: earlier removals may have shifted array indices.
        let path = locate(original.get_ref(), &span).unwrap_or_else(|| removed.clone());
        let message = Message::parse(error.message());
        match &message {
            // Already reported: its value was wrong, or it was misspelt.
            Message::MissingKey(key) if damage.contains(&path.child(key)) => {}
            Message::UnknownKey { key, expected } => {
                // A visitor's error spans the table rather than the key.
                let (table, span) = match path.0.last() {
                    Some(Step::Key(last)) if last == key => (path.parent(), span),
                    _ => {
                        let at_key = key_span(original.get_ref(), &path.0, key);
                        (path.clone(), at_key.unwrap_or(span))
                    }
                };
                if let Some(guess) = did_you_mean(key, expected.iter().map(String::as_str)) {
                    damage.push(table.child(guess));
                }
                problems.push(unknown_key(key, expected, &table, span));
            }
            _ => problems.push(serde_problem(&message, &path, span.clone(), text)),
        }
        remove(document.get_mut(), &removed.0);
        damage.push(path);
        if problems.len() >= MAX_ERRORS {
            break;
        }
    }
    Decoded {
        file: None,
        problems,
        damage,
    }
}

/// The key (or array element) an error at `span` is about: one whose key or value is
/// exactly `span`, else the innermost whose key or value holds it.
fn locate(table: &DeTable<'_>, span: &Span) -> Option<Path> {
    locate_in_table(table, span, true).or_else(|| locate_in_table(table, span, false))
}

fn locate_in_table(table: &DeTable<'_>, span: &Span, exact: bool) -> Option<Path> {
    table.iter().find_map(|(key, value)| {
        let here = Path(vec![Step::Key(key.get_ref().to_string())]);
        if exact && (key.span() == *span || value.span() == *span) {
            return Some(here);
        }
        let found = locate_in_value(value, span, here, exact);
        match found {
            None if !exact && contains(&key.span(), span) => {
                Some(Path(vec![Step::Key(key.get_ref().to_string())]))
            }
            found => found,
        }
    })
}

fn locate_in_value(
    value: &Spanned<DeValue<'_>>,
    span: &Span,
    here: Path,
    exact: bool,
) -> Option<Path> {
    // Tables written as `[header]` have the header as their span, not their keys, so
    // every nested table is searched, not only those whose span holds `span`.
    let nested = match value.get_ref() {
        DeValue::Table(table) => locate_in_table(table, span, exact),
        DeValue::Array(array) => array.iter().enumerate().find_map(|(i, item)| {
            let at = Path(vec![Step::Index(i)]);
            if exact && item.span() == *span {
                return Some(at);
            }
            locate_in_value(item, span, at, exact)
        }),
        _ => None,
    };
    match nested {
        Some(inner) => Some(Path([here.0, inner.0].concat())),
        None => (!exact && contains(&value.span(), span)).then_some(here),
    }
}

/// The span of `key` in the table at `path`, if there is one.
fn key_span(table: &DeTable<'_>, path: &[Step], key: &str) -> Option<Span> {
    let mut value: Option<&DeValue<'_>> = None;
    let mut current = table;
    for step in path {
        let next = match (step, value) {
            (Step::Key(k), _) => current.get(k.as_str()),
            (Step::Index(i), Some(DeValue::Array(array))) => array.get(*i),
            _ => None,
        }?;
        value = Some(next.get_ref());
        if let DeValue::Table(t) = next.get_ref() {
            current = t;
        }
    }
    current
        .iter()
        .find(|(k, _)| k.get_ref() == key)
        .map(|(k, _)| k.span())
}

fn contains(outer: &Span, inner: &Span) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

fn remove(table: &mut DeTable<'_>, path: &[Step]) {
    let Some((Step::Key(key), rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        table.remove(key.as_str());
    } else if let Some(value) = table.get_mut(key.as_str()) {
        remove_in_value(value.get_mut(), rest);
    }
}

fn remove_in_value(value: &mut DeValue<'_>, path: &[Step]) {
    match (value, path.split_first()) {
        (DeValue::Table(table), Some(_)) => remove(table, path),
        (DeValue::Array(array), Some((Step::Index(index), rest))) => {
            if rest.is_empty() {
                // DeArray cannot remove in place; rebuild it without the element.
                let mut kept = DeArray::new();
                for (i, item) in array.iter().enumerate() {
                    if i != *index {
                        kept.push(item.clone());
                    }
                }
                *array = kept;
            } else if let Some(item) = array.get_mut(*index) {
                remove_in_value(item.get_mut(), rest);
            }
        }
        _ => {}
    }
}

/// A serde error message, taken apart so that it can be said better.
#[derive(Debug, PartialEq, Eq)]
enum Message {
    UnknownKey {
        key: String,
        expected: Vec<String>,
    },
    UnknownValue {
        value: String,
        expected: Vec<String>,
    },
    MissingKey(String),
    /// "invalid type: …" / "invalid value: …": what was found and what was expected.
    Mismatch {
        found: String,
        expected: String,
    },
    Other(String),
}

impl Message {
    fn parse(message: &str) -> Message {
        let quoted = || -> Vec<String> {
            message
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect()
        };
        if message.starts_with("unknown field `") {
            let mut names = quoted();
            let key = names.remove(0);
            return Message::UnknownKey {
                key,
                expected: names,
            };
        }
        if message.starts_with("unknown variant `") {
            let mut names = quoted();
            let value = names.remove(0);
            return Message::UnknownValue {
                value,
                expected: names,
            };
        }
        if let Some(rest) = message.strip_prefix("missing field `") {
            return Message::MissingKey(rest.trim_end_matches('`').to_string());
        }
        let mismatch = message
            .strip_prefix("invalid type: ")
            .or_else(|| message.strip_prefix("invalid value: "))
            .and_then(|rest| rest.split_once(", expected "));
        if let Some((found, expected)) = mismatch {
            let expected = match expected {
                "u32" | "u64" | "usize" => "a whole number, 0 or more",
                "a boolean" => "`true` or `false`",
                other if other.starts_with("struct ") => "a table",
                other => other,
            };
            return Message::Mismatch {
                found: found.to_string(),
                expected: expected.to_string(),
            };
        }
        Message::Other(message.to_string())
    }
}

fn serde_problem(message: &Message, path: &Path, span: Span, text: &str) -> Problem {
    match message {
        Message::UnknownKey { key, expected } => unknown_key(key, expected, path, span),
        Message::UnknownValue { value, expected } => {
            let problem = Problem::new(format!("unknown value `{value}` for `{path}`"));
            let problem = match did_you_mean(value, expected.iter().map(String::as_str)) {
                Some(guess) => problem.label(span, format!("did you mean `{guess}`?")),
                None => problem.label(span, "unknown value"),
            };
            problem.help(format!("the values are {}", list(expected)))
        }
        Message::MissingKey(key) => {
            let what = if path.0.is_empty() {
                "the file".to_string()
            } else {
                format!("`{path}`")
            };
            Problem::new(format!("{what} has no `{key}`"))
                .label(span, format!("`{key}` is required here"))
                .help(format!("add `{key} = …` to {what}"))
        }
        Message::Mismatch { found, expected } => {
            let found = found.replace("map", "table").replace("sequence", "array");
            let quoted = found.starts_with("string")
                && ["number", "`true`"].iter().any(|w| expected.contains(w));
            let help = if quoted {
                format!("`{path}` takes {expected}: write it without quotes")
            } else {
                format!("`{path}` takes {expected}")
            };
            Problem::new(format!("wrong value for `{path}`: {found}"))
                .label(span, format!("expected {expected}"))
                .help(help)
        }
        Message::Other(message) => {
            let at = &text[span.clone()];
            let what = if at.is_empty() {
                format!("`{path}`")
            } else {
                format!("`{path}` = {at}")
            };
            Problem::new(format!("invalid {what}")).label(span, message.clone())
        }
    }
}

/// `key` is not one of `expected` in the table at `table`.
fn unknown_key(key: &str, expected: &[String], table: &Path, span: Span) -> Problem {
    let place = table.place();
    let problem = Problem::new(format!("unknown key `{key}` {place}"));
    match did_you_mean(key, expected.iter().map(String::as_str)) {
        Some(guess) => problem
            .label(span, format!("did you mean `{guess}`?"))
            .help(format!("the keys {place} are {}", list(expected))),
        None if expected.is_empty() => problem
            .label(span, "unknown key")
            .help(format!("there are no keys {place}")),
        None => problem
            .label(span, "unknown key")
            .help(format!("the keys {place} are {}", list(expected))),
    }
}

/// A TOML syntax error, with help for the mistakes people make most.
fn syntax_problem(error: &toml::de::Error, text: &str) -> Problem {
    let message = error.message().trim();
    let span = error.span().unwrap_or(0..0);
    let line_start = text[..span.start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("").trim_start();
    let (title, label, help) = match message {
        "duplicate key" if line.starts_with('[') => (
            format!("table `{}` is defined twice", line.trim_end()),
            "defined again here".to_string(),
            Some("a table may be defined only once; merge the two into one"),
        ),
        "duplicate key" => (
            format!("duplicate key `{}`", &text[span.clone()]),
            "set again here".to_string(),
            Some("a key may be set only once in a table; remove one of them"),
        ),
        m if m.starts_with("invalid basic string") || m.starts_with("invalid literal string") => (
            "unclosed string".to_string(),
            "the string is not closed on its line".to_string(),
            Some("close the string with a matching quote on the same line; use `\"\"\"` for a string over several lines"),
        ),
        m if m.starts_with("key with no value") => (
            "a key without `=` and a value".to_string(),
            "expected `=` here".to_string(),
            Some("write `key = value`"),
        ),
        m if m.starts_with("unclosed inline table") => (
            "unclosed inline table".to_string(),
            "expected `}` here".to_string(),
            Some("close the inline table with `}`"),
        ),
        m => (
            "invalid TOML".to_string(),
            m.to_string(),
            None,
        ),
    };
    let problem = Problem::new(title).label(span, label);
    match help {
        Some(help) => problem.help(help),
        None => problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        assert_eq!(
            Message::parse("unknown field `run-imag`, expected one of `run-image`, `id`"),
            Message::UnknownKey {
                key: "run-imag".into(),
                expected: vec!["run-image".into(), "id".into()]
            }
        );
        assert_eq!(
            Message::parse("unknown field `x`, there are no fields"),
            Message::UnknownKey {
                key: "x".into(),
                expected: vec![]
            }
        );
        assert_eq!(
            Message::parse("unknown variant `COMIT`, expected `CONFIG` or `COMMIT`"),
            Message::UnknownValue {
                value: "COMIT".into(),
                expected: vec!["CONFIG".into(), "COMMIT".into()]
            }
        );
        assert_eq!(
            Message::parse("missing field `tag`"),
            Message::MissingKey("tag".into())
        );
        assert_eq!(
            Message::parse("invalid value: integer `-1`, expected u32"),
            Message::Mismatch {
                found: "integer `-1`".into(),
                expected: "a whole number, 0 or more".into()
            }
        );
    }

    #[test]
    fn paths_read_like_toml() {
        let path = Path(vec![
            Step::Key("builders".into()),
            Step::Key("default".into()),
            Step::Key("order".into()),
            Step::Index(0),
            Step::Key("group".into()),
            Step::Index(1),
        ]);
        assert_eq!(path.to_string(), "builders.default.order[0].group[1]");
        assert_eq!(
            Path(vec![Step::Key("env".into()), Step::Key("A B".into())]).to_string(),
            "env.\"A B\""
        );
        assert_eq!(Path::default().place(), "at the top level");
    }

    #[test]
    fn every_mistake_is_reported_once() {
        let text = r#"
[stacks.a]
build-image = "x"
run-imag = "y"
colour = 3

[images.b]
tag = 5
builder = "d"
source = { path = "." }
rebuild-on = ["COMIT"]
"#;
        let decoded = decode(text);
        let mut messages: Vec<&str> = decoded.problems.iter().map(|p| p.message()).collect();
        messages.sort();
        // No "has no `run-image`" (the typo was reported) nor "has no `tag`" (its wrong
        // value was).
        assert_eq!(
            messages,
            [
                "unknown key `colour` in `stacks.a`",
                "unknown key `run-imag` in `stacks.a`",
                "unknown value `COMIT` for `images.b.rebuild-on[0]`",
                "wrong value for `images.b.tag`: integer `5`",
            ]
        );
        assert!(decoded.damaged(&["stacks", "a"]));
        assert!(decoded.damaged(&["images", "b"]));
        assert!(!decoded.damaged(&["images", "c"]));
    }
}
