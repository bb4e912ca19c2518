//! Values that many tables hold: counts, durations, image references and directories.

use std::num::NonZeroU32;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use imageref::{ImageRef, LayoutRef};
use toml::Spanned;

use super::Validator;
use crate::diagnostic::Problem;

impl Validator<'_> {
    pub(super) fn at_least_one(
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
    pub(super) fn timeout(
        &mut self,
        key: &str,
        value: &Option<Spanned<String>>,
    ) -> Option<Duration> {
        self.duration(key, value.as_ref()?)
    }

    pub(super) fn duration(&mut self, key: &str, value: &Spanned<String>) -> Option<Duration> {
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

    pub(super) fn image_ref(&mut self, value: &Spanned<String>) -> Option<ImageRef> {
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
    pub(super) fn output_ref(&mut self, value: &Spanned<String>) -> Option<ImageRef> {
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
    pub(super) fn directory(&mut self, what: &str, value: &Spanned<String>) -> Option<PathBuf> {
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
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be longer than zero".to_string()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// `dir/path`, without `.` and with `..` taken back where possible.
pub(super) fn resolve(dir: &Path, path: &str) -> PathBuf {
    normalize_path(&dir.join(path))
}

/// `path` without `.` components and with each `..` taken back over a name before it,
/// lexically (no file system access); `.` when nothing is left.
pub fn normalize_path(path: &Path) -> PathBuf {
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

pub(super) fn resolve_ref(dir: &Path, r: ImageRef) -> ImageRef {
    match r.resolve_relative_to(dir) {
        ImageRef::Layout(l) => ImageRef::Layout(LayoutRef {
            dir: normalize_path(&l.dir),
            name: l.name,
        }),
        registry => registry,
    }
}
