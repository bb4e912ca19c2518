//! Checking a decoded kpack.toml and turning it into the [`Config`] model: names, image
//! references, paths, references between tables, buildpack ids, tags. Every problem is
//! collected, so one run reports them all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use cnb::buildpack::{MAX_BUILDPACK_API, MIN_BUILDPACK_API};
use imageref::{ImageRef, LayoutRef, Platform};
use toml::Spanned;

use crate::buildpack::{self, BuildpackRef, DescriptorError, Group};
use crate::config::{
    BuilderTable, BuildpackEntry, CacheSetting, GroupEntry, ImageTable, KpackToml, OrderGroup,
    SettingsTable, SourceTable, StackTable, StoreTable,
};
use crate::decode::Decoded;
use crate::diagnostic::{did_you_mean, list, Problem, Span};
use crate::model::{
    Builder, BuilderKind, BuildpackSource, Cache, History, Image, ImageSpans, PodPlacement,
    RegistryTimeouts, Settings, Source, Stack, StackSpans, Store, StoreBuildpack,
};
use crate::Reason;

/// What names of stacks, stores, builders and images look like.
pub const NAME_PATTERN: &str = "^[a-z0-9][a-z0-9-]*$";

const DEFAULT_STATE_DIR: &str = ".kpackd";
const DEFAULT_CONCURRENCY: u32 = 2;
/// Rebases at once: each is 7 small requests, so a remote registry's latency bounds
/// them; 32 overlaps those round trips, and keeps a registry from seeing more than 32
/// small requests in flight from one apply (bench/fleet-rebase sweeps the limit).
const DEFAULT_REBASE_CONCURRENCY: u32 = 32;
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);
/// How long one build may run unless the image says otherwise (`timeout`).
const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(60 * 60);
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

mod image_extras;
mod kubernetes;
mod publish;

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
    fn report(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    /// Validates each entry of a section whose name is valid; entries with problems are
    /// left out of the result.
    fn section<T, M>(
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

    fn name(&mut self, kind: &str, section: &str, name: &Spanned<String>) -> bool {
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

    fn settings(&mut self, table: &SettingsTable) -> Settings {
        let state_dir = match &table.state_dir {
            Some(dir) if dir.get_ref().is_empty() => {
                self.report(
                    Problem::new("`state-dir` is empty")
                        .label(dir.span(), "expected a directory")
                        .help(format!(
                            "leave it out for the default, `{DEFAULT_STATE_DIR}`"
                        )),
                );
                None
            }
            Some(dir) => Some(resolve(self.dir, dir.get_ref())),
            None => None,
        }
        .unwrap_or_else(|| resolve(self.dir, DEFAULT_STATE_DIR));
        let concurrency = table
            .concurrency
            .as_ref()
            .map_or(NonZeroU32::new(DEFAULT_CONCURRENCY), |c| {
                self.at_least_one(
                    c,
                    "`concurrency` must be at least 1",
                    "no builds could run",
                    &format!("leave `concurrency` out for the default, {DEFAULT_CONCURRENCY}"),
                )
            })
            .unwrap_or(NonZeroU32::MIN);
        let rebase_concurrency = table
            .rebase_concurrency
            .as_ref()
            .map_or(NonZeroU32::new(DEFAULT_REBASE_CONCURRENCY), |c| {
                self.at_least_one(
                    c,
                    "`rebase-concurrency` must be at least 1",
                    "no rebases could run",
                    &format!(
                        "leave `rebase-concurrency` out for the default, {DEFAULT_REBASE_CONCURRENCY}"
                    ),
                )
            })
            .unwrap_or(NonZeroU32::MIN);
        let poll_interval = table
            .poll_interval
            .as_ref()
            .and_then(|p| self.duration("poll-interval", p))
            .unwrap_or(DEFAULT_POLL_INTERVAL);
        let insecure_registries = table
            .insecure_registries
            .iter()
            .filter_map(|r| self.registry_host(r))
            .collect();
        let platform = table
            .platform
            .as_ref()
            .and_then(|p| {
                let parsed = Platform::parse(p.get_ref());
                if parsed.is_none() {
                    self.report(
                        Problem::new(format!("invalid platform `{}`", p.get_ref()))
                            .label(p.span(), "expected `os/architecture[/variant]`")
                            .help("for example `linux/amd64` or `linux/arm64/v8`"),
                    );
                }
                parsed
            })
            .unwrap_or_else(Platform::host);
        let registry_timeouts = RegistryTimeouts {
            connect: self.timeout("registry-connect-timeout", &table.registry_connect_timeout),
            read: self.timeout("registry-read-timeout", &table.registry_read_timeout),
            request: self.timeout("registry-request-timeout", &table.registry_request_timeout),
        };
        Settings {
            state_dir,
            concurrency,
            rebase_concurrency,
            poll_interval,
            insecure_registries,
            platform,
            registry_timeouts,
            executor: table
                .executor
                .as_ref()
                .map(|e| *e.get_ref())
                .unwrap_or_default(),
        }
    }

    fn at_least_one(
        &mut self,
        value: &Spanned<u32>,
        message: &str,
        why: &str,
        help: &str,
    ) -> Option<NonZeroU32> {
        let n = NonZeroU32::new(*value.get_ref());
        if n.is_none() {
            self.report(Problem::new(message).label(value.span(), why).help(help));
        }
        n
    }

    /// A registry timeout, when written (durations are above zero).
    fn timeout(&mut self, key: &str, value: &Option<Spanned<String>>) -> Option<Duration> {
        self.duration(key, value.as_ref()?)
    }

    fn duration(&mut self, key: &str, value: &Spanned<String>) -> Option<Duration> {
        match parse_duration(value.get_ref()) {
            Ok(d) => Some(d),
            Err(why) => {
                self.report(
                    Problem::new(format!(
                        "invalid duration `{}` for `{key}`",
                        value.get_ref()
                    ))
                    .label(value.span(), why)
                    .help("write a duration such as \"30s\", \"1m\" or \"1h30m\""),
                );
                None
            }
        }
    }

    fn registry_host(&mut self, host: &Spanned<String>) -> Option<String> {
        let h = host.get_ref();
        let (name, port) = h.rsplit_once(':').unwrap_or((h, ""));
        let valid = !name.is_empty()
            && name
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            && port.chars().all(|c| c.is_ascii_digit());
        if valid {
            return Some(h.clone());
        }
        let problem = Problem::new(format!("invalid registry `{h}`"))
            .label(host.span(), "expected `host[:port]`");
        self.report(match h.split_once("://") {
            Some((_, rest)) => problem.help(format!(
                "name the host only, without a scheme: `{}`",
                rest.trim_end_matches('/')
            )),
            None => problem.help("for example `registry.internal:5000`"),
        });
        None
    }

    fn image_ref(&mut self, value: &Spanned<String>) -> Option<ImageRef> {
        match ImageRef::parse(value.get_ref()) {
            Ok(r) => Some(resolve_ref(self.dir, r)),
            Err(e) => {
                self.report(
                    Problem::new(format!("invalid image reference `{}`", value.get_ref()))
                        .label(value.span(), e.to_string())
                        .help("write `host[:port]/repository[:tag]` or `oci:<dir>[:<ref-name>]`"),
                );
                None
            }
        }
    }

    /// A reference kpackd pushes to: it cannot be pinned to a digest.
    fn output_ref(&mut self, value: &Spanned<String>) -> Option<ImageRef> {
        let r = self.image_ref(value)?;
        if r.digest().is_none() {
            return Some(r);
        }
        self.report(
            Problem::new("a tag cannot pin a digest")
                .label(value.span(), "kpackd pushes here: a tag, not a digest")
                .help("remove the `@sha256:…` part"),
        );
        None
    }

    /// A relative path that must name an existing directory.
    fn directory(&mut self, what: &str, value: &Spanned<String>) -> Option<PathBuf> {
        let path = resolve(self.dir, value.get_ref());
        let problem = if !path.exists() {
            Problem::new(format!("{what} `{}` does not exist", value.get_ref()))
                .label(value.span(), "no such directory")
        } else if !path.is_dir() {
            Problem::new(format!("{what} `{}` is not a directory", value.get_ref()))
                .label(value.span(), "expected a directory")
        } else {
            return Some(path);
        };
        self.report(
            problem.help("relative paths are resolved against the directory of kpack.toml"),
        );
        None
    }

    /// Whether `name` is one of `existing`; a name that is not gets a problem, unless its
    /// table was already reported as broken.
    fn reference(
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

    fn stack(&mut self, name: &Spanned<String>, table: &Spanned<StackTable>) -> Option<Stack> {
        let t = table.get_ref();
        let build_image = self.image_ref(&t.build_image);
        let run_image = self.image_ref(&t.run_image);
        let mirrors: Vec<Option<ImageRef>> = t
            .run_image_mirrors
            .iter()
            .map(|m| self.image_ref(m))
            .collect();
        let id = match &t.id {
            Some(id) if id.get_ref().trim().is_empty() => {
                self.report(
                    Problem::new(format!("the id of stack `{}` is empty", name.get_ref()))
                        .label(id.span(), "expected a stack id")
                        .help("leave `id` out to take it from the images' labels"),
                );
                return None;
            }
            other => other.as_ref().map(|id| id.get_ref().clone()),
        };
        Some(Stack {
            name: name.get_ref().clone(),
            build_image: build_image?,
            run_image: run_image?,
            run_image_mirrors: mirrors.into_iter().collect::<Option<_>>()?,
            id,
            spans: StackSpans {
                name: name.span(),
                build_image: t.build_image.span(),
                run_image: t.run_image.span(),
                id: t.id.as_ref().map(Spanned::span),
            },
        })
    }

    fn store(&mut self, name: &Spanned<String>, table: &Spanned<StoreTable>) -> Option<Store> {
        let mut buildpacks = Vec::new();
        let mut complete = true;
        // id@version → where it was first seen.
        let mut seen: HashMap<String, Span> = HashMap::new();
        for entry in &table.get_ref().buildpacks {
            let source = match entry.get_ref() {
                BuildpackEntry::Directory(dir) => {
                    self.buildpack_directory(&Spanned::new(entry.span(), dir.clone()))
                }
                BuildpackEntry::Image(image) => self.image_ref(image).map(BuildpackSource::Image),
            };
            let Some(source) = source else {
                complete = false;
                continue;
            };
            if let BuildpackSource::Directory(bp) = &source {
                if let Some(first) = seen.get(&bp.id_version()) {
                    self.report(
                        Problem::new(format!(
                            "store `{}` holds buildpack `{}` twice",
                            name.get_ref(),
                            bp.id_version()
                        ))
                        .label(entry.span(), "the same id and version again")
                        .label(first.clone(), "first here")
                        .help(
                            "a store may hold several versions of a buildpack, but each only once",
                        ),
                    );
                    complete = false;
                    continue;
                }
                seen.insert(bp.id_version(), entry.span());
            }
            buildpacks.push(StoreBuildpack {
                source,
                span: entry.span(),
            });
        }
        let store = Store {
            name: name.get_ref().clone(),
            buildpacks,
            span: name.span(),
        };
        // A composite's groups must be resolvable from the same store.
        for bp in &store.buildpacks {
            let BuildpackSource::Directory(composite) = &bp.source else {
                continue;
            };
            for entry in composite.order.iter().flat_map(|g| &g.buildpacks) {
                if let Some((what, help)) =
                    missing_buildpack(&store, &entry.id, entry.version.as_deref())
                {
                    self.report(
                        Problem::new(format!(
                            "composite buildpack `{}` needs {what}",
                            composite.id_version()
                        ))
                        .label(bp.span.clone(), "its buildpack.toml names it in its order")
                        .help(help),
                    );
                    complete = false;
                }
            }
        }
        complete.then_some(store)
    }

    fn buildpack_directory(&mut self, dir: &Spanned<String>) -> Option<BuildpackSource> {
        let path = self.directory("buildpack directory", dir)?;
        let e = match buildpack::read(&path) {
            Ok(bp) => return Some(BuildpackSource::Directory(bp)),
            Err(e) => e,
        };
        let help = match e {
            DescriptorError::Missing => {
                "a buildpack directory holds `buildpack.toml` with `[buildpack] id` and `version`"
            }
            DescriptorError::Read(_) | DescriptorError::Invalid { .. } => "fix its buildpack.toml",
        };
        let label = match e {
            DescriptorError::Invalid { .. } => "its buildpack.toml is invalid (below)".to_string(),
            _ => e.to_string(),
        };
        let mut problem = Problem::new(format!("`{}` is not a buildpack", dir.get_ref()))
            .label(dir.span(), label)
            .help(help);
        if let DescriptorError::Invalid { text, problem: bad } = &e {
            let shown = self.shown_dir.join(dir.get_ref()).join("buildpack.toml");
            let mut cause =
                Problem::in_file(bad.message(), &shown.display().to_string(), text.clone()).help(
                    format!(
                    "a buildpack.toml has `api` (kpackd runs Buildpack API {MIN_BUILDPACK_API} to \
                     {MAX_BUILDPACK_API}) and a `[buildpack]` table with `id` and `version`"
                ),
                );
            if let Some(span) = bad.span() {
                cause = cause.label(span, "here");
            }
            problem = problem.cause(cause);
        }
        self.report(problem);
        None
    }

    fn builder(
        &mut self,
        name: &Spanned<String>,
        table: &Spanned<BuilderTable>,
        file: &KpackToml,
        stores: &BTreeMap<String, Store>,
    ) -> Option<Builder> {
        let t = table.get_ref();
        let n = name.get_ref();
        let tag = match &t.tag {
            Some(tag) => Some(self.output_ref(tag)?),
            None => None,
        };
        let parts: Vec<(&str, Span)> = [
            ("stack", t.stack.as_ref().map(Spanned::span)),
            ("store", t.store.as_ref().map(Spanned::span)),
            ("order", t.order.as_ref().map(Spanned::span)),
        ]
        .into_iter()
        .filter_map(|(key, span)| span.map(|s| (key, s)))
        .collect();
        let damaged = self.decoded.damaged(&["builders", n]);
        let kind = match (&t.builder, parts.first()) {
            (Some(image), Some((key, span))) => {
                self.report(
                    Problem::new(format!(
                        "builder `{n}` names both a `builder` image and a `{key}`"
                    ))
                    .label(image.span(), "a ready-made builder image")
                    .label(
                        span.clone(),
                        format!("`{key}` is for a builder kpackd assembles"),
                    )
                    .help("keep either `builder`, or `stack`, `store` and `order`"),
                );
                return None;
            }
            (Some(image), None) => {
                let r = self.image_ref(image);
                if !self.publishing_parts_of_image(n, image, t) {
                    return None;
                }
                BuilderKind::Image(r?)
            }
            (None, None) => {
                if !damaged {
                    self.report(
                        Problem::new(format!(
                            "builder `{n}` has neither a `builder` image nor a `stack`"
                        ))
                        .label(table.span(), "this builder is empty")
                        .help("give it `stack`, `store` and `order`, or `builder = \"<image>\"`"),
                    );
                }
                return None;
            }
            (None, Some(_)) => {
                let missing: Vec<&str> = ["stack", "store", "order"]
                    .into_iter()
                    .filter(|key| !parts.iter().any(|(k, _)| k == key))
                    .collect();
                if !missing.is_empty() {
                    if !damaged {
                        self.report(
                            Problem::new(format!("builder `{n}` has no {}", list(&missing)))
                                .label(table.span(), format!("needs {} too", list(&missing)))
                                .help(
                                    "a builder kpackd assembles needs `stack`, `store` and `order`",
                                ),
                        );
                    }
                    return None;
                }
                let (Some(stack), Some(store), Some(order)) = (&t.stack, &t.store, &t.order) else {
                    unreachable!("none of stack, store and order is missing");
                };
                let stack_names: Vec<&str> =
                    file.stacks.keys().map(|k| k.get_ref().as_str()).collect();
                let store_names: Vec<&str> =
                    file.stores.keys().map(|k| k.get_ref().as_str()).collect();
                let stack_ok = self.reference("stack", "stacks", stack, &stack_names);
                let store_ok = self.reference("store", "stores", store, &store_names);
                let order = self.order(n, order, stores.get(store.get_ref()));
                if !(stack_ok && store_ok) {
                    return None;
                }
                BuilderKind::Assembled {
                    stack: stack.get_ref().clone(),
                    store: store.get_ref().clone(),
                    order: order?,
                }
            }
        };
        let lifecycle = self.lifecycle(n, t, tag.is_some())?;
        Some(Builder {
            name: n.clone(),
            kind,
            tag,
            lifecycle,
            span: name.span(),
        })
    }

    /// A builder's order; its buildpacks are checked against `store` when that is valid.
    fn order(
        &mut self,
        builder: &str,
        order: &Spanned<Vec<Spanned<OrderGroup>>>,
        store: Option<&Store>,
    ) -> Option<Vec<Group>> {
        if order.get_ref().is_empty() {
            self.report(
                Problem::new(format!("the order of builder `{builder}` is empty"))
                    .label(order.span(), "no groups")
                    .help("add a group, such as `{ group = [ { id = \"<buildpack id>\" } ] }`"),
            );
            return None;
        }
        let mut groups = Vec::new();
        let mut complete = true;
        for group in order.get_ref() {
            if group.get_ref().group.is_empty() {
                self.report(
                    Problem::new(format!("builder `{builder}` has an empty group"))
                        .label(group.span(), "no buildpacks")
                        .help("a group names at least one buildpack id"),
                );
                complete = false;
                continue;
            }
            let mut buildpacks = Vec::new();
            for entry in &group.get_ref().group {
                complete &= self.order_entry(entry.get_ref(), store);
                let GroupEntry {
                    id,
                    version,
                    optional,
                } = entry.get_ref();
                buildpacks.push(BuildpackRef {
                    id: id.get_ref().clone(),
                    version: version.as_ref().map(|v| v.get_ref().clone()),
                    optional: *optional,
                });
            }
            groups.push(Group { buildpacks });
        }
        complete.then_some(groups)
    }

    fn order_entry(&mut self, entry: &GroupEntry, store: Option<&Store>) -> bool {
        let Some(store) = store else {
            // The store is missing or broken, and that was reported.
            return true;
        };
        let version = entry.version.as_ref().map(|v| v.get_ref().as_str());
        let Some((what, help)) = missing_buildpack(store, entry.id.get_ref(), version) else {
            return true;
        };
        let span = match (&entry.version, store.resolve(entry.id.get_ref(), None)) {
            (Some(v), Some(_)) => v.span(),
            _ => entry.id.span(),
        };
        let ids: Vec<&str> = store.directories().map(|bp| bp.id.as_str()).collect();
        let label = match did_you_mean(entry.id.get_ref(), ids) {
            Some(guess) if store.resolve(entry.id.get_ref(), None).is_none() => {
                format!("did you mean `{guess}`?")
            }
            _ => format!("not in store `{}`", store.name),
        };
        self.report(
            Problem::new(format!("store `{}` has no {what}", store.name))
                .label(span, label)
                .help(help),
        );
        false
    }

    fn image(
        &mut self,
        name: &Spanned<String>,
        table: &Spanned<ImageTable>,
        file: &KpackToml,
        builders: &BTreeMap<String, Builder>,
        stores: &BTreeMap<String, Store>,
    ) -> Option<Image> {
        let t = table.get_ref();
        let n = name.get_ref();
        let tag = self.output_ref(&t.tag);
        let additional_tags: Vec<Option<ImageRef>> = t
            .additional_tags
            .iter()
            .map(|tag| self.output_ref(tag))
            .collect();
        let builder_names: Vec<&str> = file.builders.keys().map(|k| k.get_ref().as_str()).collect();
        let builder_ok = self.reference("builder", "builders", &t.builder, &builder_names);
        let source = self.source(n, &t.source);
        let env: Option<BTreeMap<String, String>> = t
            .env
            .iter()
            .map(|(key, value)| {
                self.env_name(key)
                    .then(|| (key.get_ref().clone(), value.get_ref().clone()))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .collect();
        let default_process = match &t.default_process {
            Some(p) if !valid_process_type(p.get_ref()) => {
                self.report(
                    Problem::new(format!("invalid process type `{}`", p.get_ref()))
                        .label(p.span(), "letters, digits, `.`, `_` and `-` only")
                        .help("name a process type the buildpacks define, such as `web`"),
                );
                return None;
            }
            other => other.as_ref().map(|p| p.get_ref().clone()),
        };
        let cache = match t.cache.as_ref().map(Spanned::get_ref) {
            None | Some(CacheSetting::Dir) => Some(Cache::Dir),
            Some(CacheSetting::Disabled) => Some(Cache::Disabled),
            Some(CacheSetting::Image(image)) => self.output_ref(image).map(Cache::Image),
        };
        let history = match &t.history {
            None => Some(History::default()),
            Some(h) => {
                let defaults = History::default();
                let mut count = |value: &Option<Spanned<u32>>, outcome: &str, default| match value {
                    None => Some(default),
                    Some(v) => self.at_least_one(
                        v,
                        &format!("`history.{outcome}` must be at least 1"),
                        "the build in progress could not be kept",
                        &format!(
                            "leave `{outcome}` out for the default, {}",
                            History::default().success
                        ),
                    ),
                };
                let success = count(&h.success, "success", defaults.success);
                let failed = count(&h.failed, "failed", defaults.failed);
                success
                    .zip(failed)
                    .map(|(success, failed)| History { success, failed })
            }
        };
        let rebuild_on = match &t.rebuild_on {
            None => Reason::ALL.into_iter().collect(),
            Some(reasons) => reasons
                .iter()
                .map(|r| *r.get_ref())
                .collect::<BTreeSet<_>>(),
        };
        let timeout = t
            .timeout
            .as_ref()
            .and_then(|d| self.duration("timeout", d))
            .unwrap_or(DEFAULT_BUILD_TIMEOUT);
        let store = builders
            .get(t.builder.get_ref())
            .and_then(|b| match &b.kind {
                BuilderKind::Assembled { store, .. } => stores.get(store),
                BuilderKind::Image(_) => None,
            });
        let buildpacks = match &t.buildpacks {
            Some(list) => self.image_buildpacks(n, list, store),
            None => Some(Vec::new()),
        };
        let project_descriptor = match &t.project_descriptor {
            Some(p) => Some(Some(self.project_descriptor(p)?)),
            None => Some(None),
        };
        if !builder_ok {
            return None;
        }
        Some(Image {
            name: n.clone(),
            tag: tag?,
            additional_tags: additional_tags.into_iter().collect::<Option<_>>()?,
            builder: t.builder.get_ref().clone(),
            source: source?,
            env: env?,
            default_process,
            cache: cache?,
            history: history?,
            network: t.network.unwrap_or(true),
            layer_compression: t.layer_compression.map(Into::into).unwrap_or_default(),
            rebuild_on,
            timeout,
            buildpacks: buildpacks?,
            project_descriptor: project_descriptor?,
            // Set by `Validator::kubernetes`, after every image.
            kubernetes: PodPlacement::default(),
            spans: ImageSpans {
                name: name.span(),
                tag: t.tag.span(),
                builder: t.builder.span(),
                source: t.source.span(),
            },
        })
    }

    fn env_name(&mut self, key: &Spanned<String>) -> bool {
        let k = key.get_ref();
        let valid = k
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            self.report(
                Problem::new(format!("invalid environment variable name `{k}`"))
                    .label(
                        key.span(),
                        "letters, digits and `_`, not starting with a digit",
                    )
                    .help("buildpacks read each variable from a file of that name"),
            );
        }
        valid
    }

    fn source(&mut self, image: &str, source: &Spanned<SourceTable>) -> Option<Source> {
        let s = source.get_ref();
        let kinds: Vec<(&str, &Spanned<String>)> = [
            ("git", &s.git),
            ("path", &s.path),
            ("blob", &s.blob),
            ("image", &s.image),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.as_ref().map(|v| (key, v)))
        .collect();
        let mut ok = true;
        if let Some(revision) = &s.revision {
            if s.git.is_none() {
                self.report(
                    Problem::new("`revision` is only for a `git` source")
                        .label(revision.span(), "a revision of what?")
                        .help("remove `revision`, or build from `git = \"<url>\"`"),
                );
                ok = false;
            }
        }
        if let Some(strip) = &s.strip_components {
            if s.blob.is_none() {
                self.report(
                    Problem::new("`strip-components` is only for a `blob` source")
                        .label(strip.span(), "only archives have components to strip")
                        .help("remove `strip-components`, or build from `blob = \"<url>\"`"),
                );
                ok = false;
            }
        }
        let sub_path = match &s.sub_path {
            Some(sub) => Some(self.sub_path(sub)?),
            None => None,
        };
        let (kind, location) = match kinds.as_slice() {
            [] => {
                if !self.decoded.damaged(&["images", image, "source"]) {
                    self.report(
                        Problem::new(format!("the source of image `{image}` names no `git`, `path`, `blob` or `image`"))
                            .label(source.span(), "no source")
                            .help("write `{ git = \"<url>\" }`, `{ path = \"<dir>\" }`, `{ blob = \"<url>\" }` or `{ image = \"<ref>\" }`"),
                    );
                }
                return None;
            }
            [one] => *one,
            [(first, first_value), (second, second_value), ..] => {
                self.report(
                    Problem::new(format!(
                        "the source of image `{image}` names both `{first}` and `{second}`"
                    ))
                    .label(second_value.span(), format!("`{second}` here"))
                    .label(first_value.span(), format!("and `{first}` here"))
                    .help("an image has one source; keep one of them"),
                );
                return None;
            }
        };
        let url = location.get_ref();
        let source = match kind {
            "git" => {
                if !is_git_url(url) {
                    self.report(
                        Problem::new(format!("`{url}` is not a git URL"))
                            .label(location.span(), "expected a git URL")
                            .help("write `https://…`, `ssh://…`, `git://…`, `file:///…` or `user@host:path`; for a local directory use `path`"),
                    );
                    return None;
                }
                Source::Git {
                    url: url.clone(),
                    revision: s
                        .revision
                        .as_ref()
                        .map_or(DEFAULT_REVISION.to_string(), |r| r.get_ref().clone()),
                    sub_path,
                }
            }
            "blob" => {
                if !["https://", "http://", "file://"]
                    .iter()
                    .any(|p| url.starts_with(p))
                {
                    self.report(
                        Problem::new(format!("`{url}` is not a blob URL"))
                            .label(
                                location.span(),
                                "expected an `https://`, `http://` or `file://` URL",
                            )
                            .help("for a local directory use `path`"),
                    );
                    return None;
                }
                Source::Blob {
                    url: url.clone(),
                    strip_components: s.strip_components.as_ref().map_or(0, |n| *n.get_ref()),
                    sub_path,
                }
            }
            "image" => {
                let reference = self.image_ref(location)?;
                Source::Image {
                    written: url.clone(),
                    reference,
                    sub_path,
                }
            }
            _ => {
                let path = self.directory("source path", location)?;
                if let (Some(sub), Some(sub_span)) = (&sub_path, &s.sub_path) {
                    if !path.join(sub).is_dir() {
                        self.report(
                            Problem::new(format!("`{sub}` is not a directory in `{url}`"))
                                .label(sub_span.span(), "no such directory in the source")
                                .help("`sub-path` is relative to the source's directory"),
                        );
                        return None;
                    }
                }
                Source::Path {
                    path,
                    written: normalize(Path::new(url)).display().to_string(),
                    sub_path,
                }
            }
        };
        ok.then_some(source)
    }

    fn sub_path(&mut self, sub: &Spanned<String>) -> Option<String> {
        let path = Path::new(sub.get_ref());
        let inside = !sub.get_ref().is_empty()
            && path
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if inside {
            return Some(normalize(path).display().to_string());
        }
        self.report(
            Problem::new(format!("invalid sub-path `{}`", sub.get_ref()))
                .label(
                    sub.span(),
                    "must be a relative path inside the source, without `..`",
                )
                .help("leave `sub-path` out to build the whole source"),
        );
        None
    }

    /// Two images (or builders) pushing to one tag would overwrite each other's work.
    fn unique_tags(&mut self, file: &KpackToml) {
        let builder_tags = file.builders.iter().filter_map(|(name, b)| {
            let tag = b.get_ref().tag.as_ref()?;
            Some((format!("builder `{}`", name.get_ref()), tag))
        });
        let image_tags = file.images.iter().flat_map(|(name, i)| {
            let i = i.get_ref();
            std::iter::once(&i.tag)
                .chain(&i.additional_tags)
                .map(move |tag| (format!("image `{}`", name.get_ref()), tag))
        });
        let mut tags: Vec<(String, &Spanned<String>)> = builder_tags.chain(image_tags).collect();
        tags.sort_by_key(|(_, tag)| tag.span().start);
        let mut first: HashMap<String, (String, Span)> = HashMap::new();
        for (owner, tag) in tags {
            let Ok(parsed) = ImageRef::parse(tag.get_ref()) else {
                continue;
            };
            let key = tag_key(&resolve_ref(self.dir, parsed));
            match first.get(&key) {
                None => {
                    first.insert(key, (owner, tag.span()));
                }
                Some((first_owner, first_span)) => {
                    let message = if *first_owner == owner {
                        format!("{owner} pushes to `{}` twice", tag.get_ref())
                    } else {
                        format!(
                            "{owner} pushes to `{}`, as {first_owner} does",
                            tag.get_ref()
                        )
                    };
                    self.report(
                        Problem::new(message)
                            .label(tag.span(), "the same tag again")
                            .label(first_span.clone(), "first here")
                            .help("give each image a tag of its own: one push would overwrite the other"),
                    );
                }
            }
        }
    }
}

/// A tag with the defaults filled in, so that equal tags compare equal.
fn tag_key(tag: &ImageRef) -> String {
    match tag {
        ImageRef::Registry(r) => format!(
            "{}/{}:{}",
            r.registry,
            r.repository,
            r.tag_or_default().unwrap_or_default()
        ),
        ImageRef::Layout(l) => format!(
            "oci:{}:{}",
            l.dir.display(),
            l.name.as_deref().unwrap_or("")
        ),
    }
}

/// What a store lacks for an order entry, and help: None when it has it (or when it has
/// image buildpacks, whose contents are only known once fetched).
fn missing_buildpack(store: &Store, id: &str, version: Option<&str>) -> Option<(String, String)> {
    if store.resolve(id, version).is_some() || store.images().next().is_some() {
        return None;
    }
    let versions: Vec<&str> = store
        .directories()
        .filter(|bp| bp.id == id)
        .map(|bp| bp.version.as_str())
        .collect();
    if let (Some(version), false) = (version, versions.is_empty()) {
        return Some((
            format!("buildpack `{id}` version {version}"),
            format!(
                "store `{}` has `{id}` version{} {}",
                store.name,
                if versions.len() == 1 { "" } else { "s" },
                list(versions)
            ),
        ));
    }
    let mut ids: Vec<&str> = store.directories().map(|bp| bp.id.as_str()).collect();
    ids.dedup();
    let help = if ids.is_empty() {
        format!("store `{}` holds no buildpack directories", store.name)
    } else {
        format!("store `{}` provides {}", store.name, list(ids))
    };
    Some((format!("buildpack `{id}`"), help))
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

fn valid_process_type(p: &str) -> bool {
    !p.is_empty()
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be longer than zero".to_string()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

fn is_git_url(url: &str) -> bool {
    let with_scheme = ["https://", "http://", "git://", "ssh://", "file://"]
        .iter()
        .any(|scheme| {
            url.strip_prefix(scheme)
                .is_some_and(|rest| !rest.is_empty())
        });
    // scp-like `user@host:path`, as git itself accepts it.
    let scp_like = url.split_once(':').is_some_and(|(user_host, path)| {
        user_host
            .split_once('@')
            .is_some_and(|(user, host)| !user.is_empty() && !host.is_empty() && !host.contains('/'))
            && !path.is_empty()
    });
    with_scheme || scp_like
}

/// `dir/path`, without `.` and with `..` taken back where possible.
fn resolve(dir: &Path, path: &str) -> PathBuf {
    normalize(&dir.join(path))
}

fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

fn resolve_ref(dir: &Path, r: ImageRef) -> ImageRef {
    match r.resolve_relative_to(dir) {
        ImageRef::Layout(l) => ImageRef::Layout(LayoutRef {
            dir: normalize(&l.dir),
            name: l.name,
        }),
        registry => registry,
    }
}
