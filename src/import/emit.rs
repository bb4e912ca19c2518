//! Writes the settled tables as kpack.toml text: a comment above each table saying
//! where it came from, its keys, then one comment per thing that was not carried over.

use std::fmt::Write as _;

use super::model::{Builder, Fleet, Image, Source, Stack, Store, StoreEntry, Table};

pub fn emit(fleet: &Fleet, sources: &[&str]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Imported by `kpackd import` from {}",
        sources.join(", ")
    );
    for note in &fleet.notes {
        comment(&mut out, note);
    }
    for t in &fleet.stacks {
        table(&mut out, "stacks", t, stack);
    }
    for t in &fleet.stores {
        table(&mut out, "stores", t, store);
    }
    for t in &fleet.builders {
        table(&mut out, "builders", t, builder);
    }
    for t in &fleet.images {
        if t.spec.source.is_none() {
            // Not buildable by kpackd: the whole table as comments.
            let mut inner = String::new();
            table(&mut inner, "images", t, image);
            out.push('\n');
            for line in inner.lines().filter(|l| !l.is_empty()) {
                if line.starts_with('#') {
                    let _ = writeln!(out, "{line}");
                } else {
                    let _ = writeln!(out, "# {line}");
                }
            }
            continue;
        }
        table(&mut out, "images", t, image);
    }
    out
}

fn table<T>(out: &mut String, section: &str, t: &Table<T>, keys: fn(&mut String, &T)) {
    out.push('\n');
    match &t.heading {
        Some(heading) => comment(out, heading),
        None => comment(out, &t.origin.describe()),
    }
    let _ = writeln!(out, "[{section}.{}]", t.name);
    keys(out, &t.spec);
    for note in &t.notes {
        comment(out, &format!("not carried over: {note}"));
    }
}

/// `# text`, on as many lines as `text` has.
fn comment(out: &mut String, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "# {line}");
    }
}

fn stack(out: &mut String, s: &Stack) {
    key(out, "build-image", &quote(&s.build_image));
    key(out, "run-image", &quote(&s.run_image));
    if !s.run_image_mirrors.is_empty() {
        key(out, "run-image-mirrors", &array(&s.run_image_mirrors));
    }
    if let Some(id) = &s.id {
        key(out, "id", &quote(id));
    }
}

fn store(out: &mut String, s: &Store) {
    out.push_str("buildpacks = [\n");
    for entry in &s.buildpacks {
        let value = match entry {
            StoreEntry::Directory(dir) => quote(dir),
            StoreEntry::Image(image) => format!("{{ image = {} }}", quote(image)),
        };
        let _ = writeln!(out, "  {value},");
    }
    out.push_str("]\n");
}

fn builder(out: &mut String, b: &Builder) {
    match b {
        Builder::Image(image) => key(out, "builder", &quote(image)),
        Builder::Assembled {
            stack,
            store,
            order,
            tag,
        } => {
            key(out, "stack", &quote(&stack.name));
            if let Some(store) = store {
                key(out, "store", &quote(&store.name));
            }
            out.push_str("order = [\n");
            for group in order {
                let entries: Vec<String> = group
                    .iter()
                    .map(|e| {
                        let mut fields = vec![format!(
                            "id = {}",
                            quote(e.id.as_deref().unwrap_or_default())
                        )];
                        if let Some(v) = &e.version {
                            fields.push(format!("version = {}", quote(v)));
                        }
                        if e.optional {
                            fields.push("optional = true".to_string());
                        }
                        format!("{{ {} }}", fields.join(", "))
                    })
                    .collect();
                let _ = writeln!(out, "  {{ group = [{}] }},", entries.join(", "));
            }
            out.push_str("]\n");
            if let Some(tag) = tag {
                key(out, "tag", &quote(tag));
            }
        }
    }
}

fn image(out: &mut String, i: &Image) {
    key(out, "tag", &quote(&i.tag));
    if !i.additional_tags.is_empty() {
        key(out, "additional-tags", &array(&i.additional_tags));
    }
    if let Some(builder) = &i.builder {
        key(out, "builder", &quote(&builder.name));
    }
    let mut fields = match &i.source {
        Some(Source::Git { url, revision }) => {
            let mut f = vec![format!("git = {}", quote(url))];
            if let Some(r) = revision {
                f.push(format!("revision = {}", quote(r)));
            }
            f
        }
        Some(Source::Blob {
            url,
            strip_components,
        }) => {
            let mut f = vec![format!("blob = {}", quote(url))];
            if let Some(n) = strip_components {
                f.push(format!("strip-components = {n}"));
            }
            f
        }
        Some(Source::Path(path)) => vec![format!("path = {}", quote(path))],
        Some(Source::Image(image)) => vec![format!("image = {}", quote(image))],
        None => Vec::new(),
    };
    if let (Some(sub), false) = (&i.sub_path, fields.is_empty()) {
        fields.push(format!("sub-path = {}", quote(sub)));
    }
    if !fields.is_empty() {
        key(out, "source", &format!("{{ {} }}", fields.join(", ")));
    }
    if !i.env.is_empty() {
        let pairs: Vec<String> = i
            .env
            .iter()
            .map(|(k, v)| format!("{k} = {}", quote(v)))
            .collect();
        key(out, "env", &format!("{{ {} }}", pairs.join(", ")));
    }
    if let Some(p) = &i.default_process {
        key(out, "default-process", &quote(p));
    }
    if let Some(p) = &i.project_descriptor {
        key(out, "project-descriptor", &quote(p));
    }
    if let Some(cache) = &i.cache_image {
        key(out, "cache", &format!("{{ image = {} }}", quote(cache)));
    }
    if let Some(timeout) = &i.timeout {
        key(out, "timeout", &quote(timeout));
    }
    match i.history {
        (None, None) => {}
        (success, failed) => {
            let mut f = Vec::new();
            if let Some(n) = success {
                f.push(format!("success = {n}"));
            }
            if let Some(n) = failed {
                f.push(format!("failed = {n}"));
            }
            key(out, "history", &format!("{{ {} }}", f.join(", ")));
        }
    }
}

fn key(out: &mut String, key: &str, value: &str) {
    let _ = writeln!(out, "{key} = {value}");
}

fn array(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// A TOML basic string.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
