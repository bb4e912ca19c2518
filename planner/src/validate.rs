//! Checking a decoded kpack.toml and turning it into the [`Config`] model: names, image
//! references, paths, references between tables, buildpack ids, tags. Every problem is
//! collected, so one run reports them all.

use std::collections::BTreeMap;
use std::path::Path;

use toml::Spanned;

use crate::config::KpackToml;
use crate::decode::Decoded;
use crate::diagnostic::{did_you_mean, list, Problem};
use crate::model::{Builder, Image, Settings, Stack, Store};

mod builder;
mod image;
mod image_extras;
mod kubernetes;
mod publish;
mod settings;
mod source;
mod stack;
mod store;
mod tags;
mod values;

pub use values::{normalize_path, parse_duration};

/// What names of stacks, stores, builders and images look like.
pub const NAME_PATTERN: &str = "^[a-z0-9][a-z0-9-]*$";

/// A git source without `revision` builds the remote's default branch.
pub const DEFAULT_REVISION: &str = "HEAD";

/// The model parts of a valid file.
pub(crate) struct Validated {
    pub settings: Settings,
    pub stacks: BTreeMap<String, Stack>,
    pub stores: BTreeMap<String, Store>,
    pub builders: BTreeMap<String, Builder>,
    pub images: BTreeMap<String, Image>,
    pub kubernetes: kubernetes::Checked,
}

/// Checks `file` (decoded from `decoded`) with relative paths against `dir`, which
/// diagnostics show as `shown_dir` (the directory of kpack.toml as the user named it);
/// the problems found, if any, are added to `problems`.
pub(crate) fn validate(
    file: &KpackToml,
    decoded: &Decoded,
    dir: &Path,
    shown_dir: &Path,
    problems: &mut Vec<Problem>,
) -> Validated {
    let mut v = Validator {
        dir,
        shown_dir,
        decoded,
        problems,
    };
    let settings = v.settings(&file.kpackd);
    let stacks = v.section("stack", "stacks", &file.stacks, Validator::stack);
    let stores = v.section("store", "stores", &file.stores, Validator::store);
    let builders = v.section("builder", "builders", &file.builders, |v, name, table| {
        v.builder(name, table, file, &stores)
    });
    let mut images = v.section("image", "images", &file.images, |v, name, table| {
        v.image(name, table, file, &builders, &stores)
    });
    v.unique_tags(file);
    let kubernetes = v.kubernetes(file, &settings, &builders, &mut images);
    Validated {
        settings,
        stacks,
        stores,
        builders,
        images,
        kubernetes,
    }
}

struct Validator<'a> {
    dir: &'a Path,
    shown_dir: &'a Path,
    decoded: &'a Decoded,
    problems: &'a mut Vec<Problem>,
}

impl Validator<'_> {
    pub(super) fn report(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    /// Validates each entry of a section whose name is valid; entries with problems are
    /// left out of the result.
    pub(super) fn section<T, M>(
        &mut self,
        kind: &str,
        section: &str,
        entries: &BTreeMap<Spanned<String>, Spanned<T>>,
        mut each: impl FnMut(&mut Self, &Spanned<String>, &Spanned<T>) -> Option<M>,
    ) -> BTreeMap<String, M> {
        let mut models = BTreeMap::new();
        for (name, table) in entries {
            let name_ok = self.name(kind, section, name);
            if let Some(model) = each(self, name, table) {
                if name_ok {
                    models.insert(name.get_ref().clone(), model);
                }
            }
        }
        models
    }

    pub(super) fn name(&mut self, kind: &str, section: &str, name: &Spanned<String>) -> bool {
        if valid_name(name.get_ref()) {
            return true;
        }
        let suggestion = suggest_name(name.get_ref());
        let problem = Problem::new(format!("`{}` is not a valid {kind} name", name.get_ref()))
            .label(
                name.span(),
                "names are lowercase letters, digits and `-`, starting with a letter or digit",
            );
        self.report(match suggestion {
            Some(s) => problem.help(format!("rename it, for example to `[{section}.{s}]`")),
            None => problem,
        });
        false
    }

    /// Whether `name` is one of `existing`; a name that is not gets a problem, unless its
    /// table was already reported as broken.
    pub(super) fn reference(
        &mut self,
        kind: &str,
        section: &str,
        name: &Spanned<String>,
        existing: &[&str],
    ) -> bool {
        let n = name.get_ref().as_str();
        if existing.contains(&n) {
            return true;
        }
        if self.decoded.damaged(&[section, n]) {
            return false;
        }
        let label = match did_you_mean(n, existing.iter().copied()) {
            Some(guess) => format!("did you mean `{guess}`?"),
            None => format!("no {kind} has this name"),
        };
        let help = if existing.is_empty() {
            format!("there are no {section}; define one as `[{section}.{n}]`")
        } else {
            format!("the {section} are {}", list(existing))
        };
        self.report(
            Problem::new(format!("unknown {kind} `{n}`"))
                .label(name.span(), label)
                .help(help),
        );
        false
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A valid name close to an invalid one: lowercase, other characters as `-`.
fn suggest_name(name: &str) -> Option<String> {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_start_matches('-').to_string();
    valid_name(&s).then_some(s)
}
