//! The keys of an image that concern its build's buildpacks and project descriptor:
//! `buildpacks` (one group replacing the builder's order) and `project-descriptor`.

use std::path::{Component, Path};

use toml::Spanned;

use super::store::missing_buildpack;
use super::values::normalize_path;
use super::Validator;
use crate::buildpack::BuildpackRef;
use crate::diagnostic::did_you_mean;
use crate::model::Store;
use crate::Problem;

impl Validator<'_> {
    /// An image's `buildpacks`, checked against the builder's store when the builder is
    /// assembled and its store valid (a builder image's buildpacks are only known once
    /// it is fetched: the build checks them).
    pub(super) fn image_buildpacks(
        &mut self,
        image: &str,
        list: &Spanned<Vec<Spanned<String>>>,
        store: Option<&Store>,
    ) -> Option<Vec<BuildpackRef>> {
        if list.get_ref().is_empty() {
            self.report(
                Problem::new(format!("the `buildpacks` of image `{image}` are empty"))
                    .label(list.span(), "no buildpacks")
                    .help("name at least one buildpack id, or leave `buildpacks` out to use the builder's order"),
            );
            return None;
        }
        let mut group: Vec<BuildpackRef> = Vec::new();
        let mut complete = true;
        for entry in list.get_ref() {
            let parsed = BuildpackRef::parse(entry.get_ref());
            if parsed.id.is_empty() || parsed.version.as_deref() == Some("") {
                self.report(
                    Problem::new(format!("invalid buildpack `{}`", entry.get_ref()))
                        .label(entry.span(), "expected `id` or `id@version`")
                        .help("write a buildpack id, such as `examples/node`, optionally with `@<version>`"),
                );
                complete = false;
                continue;
            }
            if group.iter().any(|bp| bp.id == parsed.id) {
                self.report(
                    Problem::new(format!(
                        "image `{image}` names buildpack `{}` twice",
                        parsed.id
                    ))
                    .label(entry.span(), "named again here")
                    .help("a group holds a buildpack once; keep one of them"),
                );
                complete = false;
                continue;
            }
            if let Some(store) = store {
                complete &= self.known_buildpack(entry, &parsed, store);
            }
            group.push(parsed);
        }
        complete.then_some(group)
    }

    fn known_buildpack(
        &mut self,
        entry: &Spanned<String>,
        parsed: &BuildpackRef,
        store: &Store,
    ) -> bool {
        let Some((what, help)) = missing_buildpack(store, &parsed.id, parsed.version.as_deref())
        else {
            return true;
        };
        let ids: Vec<&str> = store.directories().map(|bp| bp.id.as_str()).collect();
        let label = match did_you_mean(&parsed.id, ids) {
            Some(guess) if store.resolve(&parsed.id, None).is_none() => {
                format!("did you mean `{guess}`?")
            }
            _ => format!("not in store `{}`", store.name),
        };
        self.report(
            Problem::new(format!("store `{}` has no {what}", store.name))
                .label(entry.span(), label)
                .help(help),
        );
        false
    }

    /// `project-descriptor`: a relative file path inside the app's directory.
    pub(super) fn project_descriptor(&mut self, value: &Spanned<String>) -> Option<String> {
        let path = Path::new(value.get_ref());
        let inside = !value.get_ref().is_empty()
            && !value.get_ref().ends_with('/')
            && path
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
            && path.components().any(|c| matches!(c, Component::Normal(_)));
        if inside {
            return Some(normalize_path(path).display().to_string());
        }
        self.report(
            Problem::new(format!("invalid project descriptor `{}`", value.get_ref()))
                .label(
                    value.span(),
                    "must be a relative file path inside the source, without `..`",
                )
                .help("the path is relative to the source's directory (its `sub-path`, when there is one); leave it out for `project.toml`"),
        );
        None
    }
}
