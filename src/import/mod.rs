//! `kpackd import`: kpack resources (YAML), a pack `builder.toml` and `project.toml`
//! files, read into the tables of a kpack.toml. Each input is recognised by its
//! content; what has no equivalent in kpackd becomes a comment next to the table it
//! belongs to. No I/O happens here except looking at the directories the inputs name.

mod emit;
mod error;
mod kpack;
mod pack;
mod project;
mod resolve;
mod yaml;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

pub use error::InputError;

/// One file to import, already read.
#[derive(Debug, Clone)]
pub struct Input {
    /// How diagnostics name it: its path as given, or `-` for stdin.
    pub name: String,
    /// The absolute directory relative paths in it are relative to.
    pub dir: PathBuf,
    pub text: String,
}

/// Where the output goes: the directory of the kpack.toml it will be (relative paths
/// are written against it), and the names a kpack.toml being added to already has.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub dir: PathBuf,
    pub existing: Existing,
}

/// The table names of an existing kpack.toml, by section.
#[derive(Debug, Clone, Default)]
pub struct Existing {
    pub stacks: BTreeSet<String>,
    pub stores: BTreeSet<String>,
    pub builders: BTreeSet<String>,
    pub images: BTreeSet<String>,
}

impl Existing {
    /// The names of the kpack.toml `text` (which must be TOML; it need not be valid).
    pub fn of(text: &str) -> Result<Existing, toml::de::Error> {
        let table: toml::Table = toml::from_str(text)?;
        let names = |section: &str| -> BTreeSet<String> {
            table
                .get(section)
                .and_then(toml::Value::as_table)
                .map(|t| t.keys().cloned().collect())
                .unwrap_or_default()
        };
        Ok(Existing {
            stacks: names("stacks"),
            stores: names("stores"),
            builders: names("builders"),
            images: names("images"),
        })
    }
}

/// Reads every input and returns the kpack.toml text of the tables they amount to.
pub fn import(inputs: &[Input], target: &Target) -> Result<String, InputError> {
    let mut fleet = model::Fleet::default();
    for (index, input) in inputs.iter().enumerate() {
        read(input, index, target, &mut fleet)?;
    }
    resolve::resolve(&mut fleet, &target.existing);
    let sources: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
    Ok(emit::emit(&fleet, &sources))
}

/// Recognises `input` by its content and adds what it declares to `fleet`.
fn read(
    input: &Input,
    index: usize,
    target: &Target,
    fleet: &mut model::Fleet,
) -> Result<(), InputError> {
    let toml_result = toml::from_str::<toml::Table>(&input.text);
    if let Ok(table) = &toml_result {
        if project::is_project(table) {
            return project::read(input, index, table, target, fleet);
        }
        if pack::is_builder(table) {
            return pack::read(input, index, table, target, fleet);
        }
    }
    let looks_like_yaml = input
        .text
        .lines()
        .any(|l| l.starts_with("apiVersion:") || l.starts_with("kind:"));
    match (toml_result, looks_like_yaml) {
        (Err(e), false) => {
            let span = e.span().unwrap_or(0..0);
            Err(
                InputError::new(input, format!("{} is not valid TOML", input.name))
                    .at(span, e.message().to_string())
                    .help(HELP),
            )
        }
        (Ok(_), false) => Err(InputError::new(
            input,
            format!("{} is neither a builder.toml nor a project.toml", input.name),
        )
        .at(0..0, "no [[buildpacks]], [[order]], [stack], [build] image, [_], [io.buildpacks] or [project]")
        .help(HELP)),
        (_, true) => kpack::read(input, fleet),
    }
}

const HELP: &str =
    "kpackd import reads kpack resources (YAML), a pack builder.toml and project.toml files";

/// `path` (absolute) written relative to `base` (absolute), with `/` separators.
pub(crate) fn relative_to(path: &Path, base: &Path) -> String {
    let path = planner::normalize_path(path);
    let base = planner::normalize_path(base);
    let p: Vec<Component> = path.components().collect();
    let b: Vec<Component> = base.components().collect();
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = Vec::new();
    for _ in common..b.len() {
        parts.push("..".to_string());
    }
    for c in &p[common..] {
        parts.push(c.as_os_str().to_string_lossy().into_owned());
    }
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

/// A kpackd name (`planner::NAME_PATTERN`) close to `name`: lowercase, other characters
/// as `-`; `fallback` when nothing is left.
pub(crate) fn kpackd_name(name: &str, fallback: &str) -> String {
    let mut s = String::new();
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '-'
        };
        if !(c == '-' && (s.is_empty() || s.ends_with('-'))) {
            s.push(c);
        }
    }
    let s = s.trim_end_matches('-').to_string();
    if s.is_empty() {
        fallback.to_string()
    } else {
        s
    }
}

/// What the importers build: kpackd's tables before names and references are settled.
pub(crate) mod model {
    /// Where a table came from: a kind (`ClusterStack`, `builder.toml`…), its name there
    /// and, for namespaced kpack resources, its namespace. References match on it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Origin {
        pub kind: String,
        pub name: String,
        pub namespace: Option<String>,
    }

    impl Origin {
        pub fn new(kind: &str, name: &str, namespace: Option<&str>) -> Origin {
            Origin {
                kind: kind.to_string(),
                name: name.to_string(),
                namespace: namespace.map(str::to_string),
            }
        }

        /// How the comment above the table names it.
        pub fn describe(&self) -> String {
            match &self.namespace {
                Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
                None => format!("{} {}", self.kind, self.name),
            }
        }
    }

    /// One table: its settled name (empty until resolved), its origin, comments and keys.
    #[derive(Debug, Clone)]
    pub struct Table<T> {
        pub name: String,
        /// The name it would like: the origin's name, sanitised.
        pub wanted: String,
        pub origin: Origin,
        /// A line above the header; the origin's description when None.
        pub heading: Option<String>,
        pub spec: T,
        /// What could not be carried over, one line each.
        pub notes: Vec<String>,
    }

    impl<T> Table<T> {
        pub fn new(origin: Origin, wanted: String, spec: T) -> Table<T> {
            Table {
                name: String::new(),
                wanted,
                origin,
                heading: None,
                spec,
                notes: Vec::new(),
            }
        }
    }

    #[derive(Debug, Clone)]
    pub struct Stack {
        pub build_image: String,
        pub run_image: String,
        pub run_image_mirrors: Vec<String>,
        pub id: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum StoreEntry {
        /// A buildpack directory, relative to the output's directory.
        Directory(String),
        Image(String),
    }

    #[derive(Debug, Clone)]
    pub struct Store {
        pub buildpacks: Vec<StoreEntry>,
    }

    /// A reference to a table by origin; settled to a name by `resolve`.
    #[derive(Debug, Clone)]
    pub struct Ref {
        pub to: Origin,
        pub name: String,
    }

    impl Ref {
        pub fn new(to: Origin) -> Ref {
            Ref {
                to,
                name: String::new(),
            }
        }
    }

    #[derive(Debug, Clone)]
    pub struct GroupEntry {
        pub id: Option<String>,
        pub version: Option<String>,
        pub optional: bool,
        /// A Buildpack or ClusterBuildpack named by kind and name.
        pub buildpack: Option<Origin>,
    }

    // A fleet has a handful of builders: boxing the large variant would buy nothing.
    #[allow(clippy::large_enum_variant)]
    #[derive(Debug, Clone)]
    pub enum Builder {
        Assembled {
            stack: Ref,
            /// None: kpack builders whose every entry names a buildpack resource.
            store: Option<Ref>,
            order: Vec<Vec<GroupEntry>>,
            tag: Option<String>,
        },
        Image(String),
    }

    #[derive(Debug, Clone)]
    pub enum Source {
        Git {
            url: String,
            revision: Option<String>,
        },
        Blob {
            url: String,
            strip_components: Option<u32>,
        },
        /// Relative to the output's directory.
        Path(String),
        /// A source image (kpack's registry source).
        Image(String),
    }

    #[derive(Debug, Clone)]
    pub struct Image {
        pub tag: String,
        pub additional_tags: Vec<String>,
        /// None: whichever builder there is (a project.toml that names none).
        pub builder: Option<Ref>,
        /// None: an image without a source kpackd reads; written as comments.
        pub source: Option<Source>,
        pub sub_path: Option<String>,
        pub env: Vec<(String, String)>,
        pub default_process: Option<String>,
        /// `project-descriptor`: the source's descriptor when it is not `project.toml`.
        pub project_descriptor: Option<String>,
        pub cache_image: Option<String>,
        pub history: (Option<u32>, Option<u32>),
        /// A duration as kpack.toml writes it, such as `"20m"`.
        pub timeout: Option<String>,
    }

    /// A Buildpack or ClusterBuildpack: not a table, but an image for the stores of the
    /// builders that name it.
    #[derive(Debug, Clone)]
    pub struct BuildpackResource {
        pub origin: Origin,
        pub image: String,
    }

    #[derive(Debug, Clone, Default)]
    pub struct Fleet {
        /// Comments at the top: inputs or resources that became nothing.
        pub notes: Vec<String>,
        pub stacks: Vec<Table<Stack>>,
        pub stores: Vec<Table<Store>>,
        pub builders: Vec<Table<Builder>>,
        pub images: Vec<Table<Image>>,
        pub buildpacks: Vec<BuildpackResource>,
    }
}
