//! The `source` of an image: one of `git`, `path`, `blob` or `image`, and its options.

use std::path::{Component, Path};

use toml::Spanned;

use super::values::normalize_path;
use super::{Validator, DEFAULT_REVISION};
use crate::config::SourceTable;
use crate::diagnostic::Problem;
use crate::model::Source;

impl Validator<'_> {
    /// An image's `source`: exactly one of `git`, `path`, `blob` or `image`, with the
    /// options of that kind.
    pub(super) fn source(&mut self, image: &str, source: &Spanned<SourceTable>) -> Option<Source> {
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
        let ok = self.source_options(s);
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
        let source = self.source_location(kind, location, s, sub_path)?;
        ok.then_some(source)
    }

    /// Options that only one kind of source takes: whether they are on that kind.
    fn source_options(&mut self, s: &SourceTable) -> bool {
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
        ok
    }

    /// The source of `kind` at `location`, checked for that kind.
    fn source_location(
        &mut self,
        kind: &str,
        location: &Spanned<String>,
        s: &SourceTable,
        sub_path: Option<String>,
    ) -> Option<Source> {
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
                    written: normalize_path(Path::new(url)).display().to_string(),
                    sub_path,
                }
            }
        };
        Some(source)
    }

    pub(super) fn sub_path(&mut self, sub: &Spanned<String>) -> Option<String> {
        let path = Path::new(sub.get_ref());
        let inside = !sub.get_ref().is_empty()
            && path
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if inside {
            return Some(normalize_path(path).display().to_string());
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
}

pub(super) fn is_git_url(url: &str) -> bool {
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
