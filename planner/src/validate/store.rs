//! A `[stores.<name>]` table: buildpack directories and images, and what a store lacks.

use std::collections::HashMap;

use cnb::buildpack::{MAX_BUILDPACK_API, MIN_BUILDPACK_API};
use toml::Spanned;

use super::Validator;
use crate::buildpack::{self, DescriptorError};
use crate::config::{BuildpackEntry, StoreTable};
use crate::diagnostic::{list, Problem, Span};
use crate::model::{BuildpackSource, Store, StoreBuildpack};

impl Validator<'_> {
    pub(super) fn store(
        &mut self,
        name: &Spanned<String>,
        table: &Spanned<StoreTable>,
    ) -> Option<Store> {
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

    pub(super) fn buildpack_directory(&mut self, dir: &Spanned<String>) -> Option<BuildpackSource> {
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
}

/// What a store lacks for an order entry, and help: None when it has it (or when it has
/// image buildpacks, whose contents are only known once fetched).
pub(super) fn missing_buildpack(
    store: &Store,
    id: &str,
    version: Option<&str>,
) -> Option<(String, String)> {
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
