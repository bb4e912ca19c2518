//! Arbitrary text through the launcher's own TOML reader, against the `toml` crate: the
//! reader must never panic, and where both accept a document they must read the same
//! tables, keys, strings, booleans and arrays. The reader keeps numbers and dates as their
//! text, so for those only the kind is compared.

#![no_main]

use launcher::toml::{self as reader, Value};
use libfuzzer_sys::fuzz_target;

fn same(ours: &Value, theirs: &toml::Value) -> bool {
    match (ours, theirs) {
        (Value::String(a), toml::Value::String(b)) => a == b,
        (Value::Bool(a), toml::Value::Boolean(b)) => a == b,
        (Value::Array(a), toml::Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
        }
        (Value::Table(a), toml::Value::Table(b)) => same_table(a, b),
        (
            Value::Other(_),
            toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Datetime(_),
        ) => true,
        _ => false,
    }
}

fn same_table(ours: &reader::Table, theirs: &toml::Table) -> bool {
    ours.len() == theirs.len()
        && ours
            .iter()
            .all(|(k, v)| theirs.get(k).is_some_and(|t| same(v, t)))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ours = reader::parse(text);
    if let (Ok(ours), Ok(theirs)) = (ours, text.parse::<toml::Table>()) {
        assert!(
            same_table(&ours, &theirs),
            "the readers differ on {text:?}:\nlauncher: {ours:?}\ntoml: {theirs:?}"
        );
    }
});
