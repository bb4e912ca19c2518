//! The app directory a source is materialised into, and the rule that nothing lands
//! outside it: entry paths must stay inside, and symbolic links must resolve inside —
//! checked against every link in the source before any link is created.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};

/// How many links one target may pass through before it counts as a loop (Linux's
/// limit for path resolution).
const MAX_LINK_HOPS: usize = 40;

/// An entry of a source that cannot be written into the app directory.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("entry `{entry}` has a path outside the app directory")]
    PathEscapes { entry: String },
    #[error(
        "entry `{entry}` is a symbolic link to `{target}`, which points outside the app directory"
    )]
    LinkEscapes { entry: String, target: String },
    #[error("entry `{entry}` is a symbolic link to `{target}`, which never resolves (a loop)")]
    LinkLoops { entry: String, target: String },
    #[error("entry `{entry}` lies under the symbolic link `{link}`")]
    UnderLink { entry: String, link: String },
    #[error(
        "entry `{entry}` is a hard link to `{target}`, which is not part of what is extracted"
    )]
    HardLinkMissing { entry: String, target: String },
    #[error("could not write entry `{entry}`")]
    Write {
        entry: String,
        #[source]
        source: io::Error,
    },
}

/// The relative, normal form of an entry path: `.` components dropped; `None` when it
/// is absolute or has a `..` component. An empty result names the directory itself.
pub(crate) fn confined_path(raw: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// A fresh app directory being filled. Directories, files and hard links are written
/// as they come; symbolic links are only collected, and [`AppDir::finish`] creates them
/// once all are known — so no entry is ever written through a link, and a link is
/// judged by where it resolves through every other link of the source.
pub(crate) struct AppDir {
    root: PathBuf,
    links: BTreeMap<PathBuf, PathBuf>,
}

impl AppDir {
    /// Starts filling `root`, creating it if needed.
    pub(crate) fn create(root: &Path) -> Result<Self, EntryError> {
        fs::create_dir_all(root).map_err(|source| EntryError::Write {
            entry: ".".into(),
            source,
        })?;
        Ok(AppDir {
            root: root.to_path_buf(),
            links: BTreeMap::new(),
        })
    }

    pub(crate) fn dir(&mut self, entry: &Path) -> Result<(), EntryError> {
        let at = self.place(entry)?;
        fs::create_dir_all(&at).map_err(|source| write_error(entry, source))
    }

    /// Writes a regular file from `contents`, mode 755 when `executable`, else 644.
    pub(crate) fn file(
        &mut self,
        entry: &Path,
        contents: &mut impl Read,
        executable: bool,
    ) -> Result<(), EntryError> {
        let at = self.place(entry)?;
        let written = (|| {
            create_parent(&at)?;
            let mut file = fs::File::create(&at)?;
            io::copy(contents, &mut file)?;
            let mode = if executable { 0o755 } else { 0o644 };
            file.set_permissions(fs::Permissions::from_mode(mode))
        })();
        written.map_err(|source| write_error(entry, source))
    }

    /// Writes a regular file as a copy of `source` (in the kernel where the file system
    /// can), mode 755 when `executable`, else 644.
    pub(crate) fn copy_file(
        &mut self,
        entry: &Path,
        source: &Path,
        executable: bool,
    ) -> Result<(), EntryError> {
        let at = self.place(entry)?;
        let written = (|| {
            create_parent(&at)?;
            fs::copy(source, &at)?;
            let mode = if executable { 0o755 } else { 0o644 };
            fs::set_permissions(&at, fs::Permissions::from_mode(mode))
        })();
        written.map_err(|source| write_error(entry, source))
    }

    /// Makes `entry` a hard link to the regular file `file` outside the directory (a
    /// copy of it where a link cannot be made, as across file systems).
    pub(crate) fn link_file(&mut self, entry: &Path, file: &Path) -> Result<(), EntryError> {
        let at = self.place(entry)?;
        let linked = create_parent(&at).and_then(|()| {
            fs::hard_link(file, &at).or_else(|e| {
                tracing::debug!(file = %file.display(), "copying, not linking: {e}");
                fs::copy(file, &at).map(drop)
            })
        });
        linked.map_err(|source| write_error(entry, source))
    }

    /// Makes `entry` a hard link to the already written regular file `existing`.
    pub(crate) fn hard_link(&mut self, entry: &Path, existing: &Path) -> Result<(), EntryError> {
        let at = self.place(entry)?;
        let original = self.place(existing)?;
        if !original.is_file() {
            return Err(EntryError::HardLinkMissing {
                entry: shown(entry),
                target: shown(existing),
            });
        }
        let linked = create_parent(&at).and_then(|()| fs::hard_link(&original, &at));
        linked.map_err(|source| write_error(entry, source))
    }

    /// Records a symbolic link; it is checked and created by [`AppDir::finish`].
    pub(crate) fn symlink(&mut self, entry: &Path, target: PathBuf) -> Result<(), EntryError> {
        let relative = confined_path(entry).ok_or_else(|| escapes(entry))?;
        self.links.insert(relative, target);
        Ok(())
    }

    /// Checks every recorded link, then creates them. A link whose target resolves
    /// outside the directory, loops, or that sits below another link is refused,
    /// naming it; nothing of the refused link is created.
    pub(crate) fn finish(self) -> Result<(), EntryError> {
        for (entry, target) in &self.links {
            if let Some(link) = entry
                .ancestors()
                .skip(1)
                .find(|a| self.links.contains_key(*a))
            {
                return Err(EntryError::UnderLink {
                    entry: shown(entry),
                    link: shown(link),
                });
            }
            match resolve(&self.links, entry, target) {
                Resolution::Inside => {}
                Resolution::Outside => {
                    return Err(EntryError::LinkEscapes {
                        entry: shown(entry),
                        target: shown(target),
                    })
                }
                Resolution::Loop => {
                    return Err(EntryError::LinkLoops {
                        entry: shown(entry),
                        target: shown(target),
                    })
                }
            }
        }
        for (entry, target) in &self.links {
            let at = self.root.join(entry);
            let created = create_parent(&at).and_then(|()| std::os::unix::fs::symlink(target, &at));
            created.map_err(|source| write_error(entry, source))?;
        }
        Ok(())
    }

    fn place(&self, entry: &Path) -> Result<PathBuf, EntryError> {
        let relative = confined_path(entry).ok_or_else(|| escapes(entry))?;
        Ok(self.root.join(relative))
    }
}

enum Resolution {
    Inside,
    Outside,
    Loop,
}

/// Resolves the link at `entry` the way the kernel would, but over the source's own
/// links instead of the file system, with the app directory as the boundary: a `..`
/// above it, or an absolute target anywhere on the way, is outside. Names that are no
/// link are taken as directories, which can only make the check stricter.
fn resolve(links: &BTreeMap<PathBuf, PathBuf>, entry: &Path, target: &Path) -> Resolution {
    let mut at: Vec<OsString> = entry
        .parent()
        .map(|p| p.iter().map(ToOwned::to_owned).collect())
        .unwrap_or_default();
    let mut pending: Vec<Component<'_>> = target.components().rev().collect();
    let mut hops = 0;
    while let Some(component) = pending.pop() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if at.pop().is_none() {
                    return Resolution::Outside;
                }
            }
            Component::RootDir | Component::Prefix(_) => return Resolution::Outside,
            Component::Normal(name) => {
                at.push(name.to_owned());
                let here: PathBuf = at.iter().collect();
                if let Some(next) = links.get(&here) {
                    hops += 1;
                    if hops > MAX_LINK_HOPS {
                        return Resolution::Loop;
                    }
                    at.pop();
                    pending.extend(next.components().rev());
                }
            }
        }
    }
    Resolution::Inside
}

fn create_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) => fs::create_dir_all(parent),
        None => Ok(()),
    }
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

fn escapes(entry: &Path) -> EntryError {
    EntryError::PathEscapes {
        entry: shown(entry),
    }
}

fn write_error(entry: &Path, source: io::Error) -> EntryError {
    EntryError::Write {
        entry: shown(entry),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(pairs: &[(&str, &str)]) -> BTreeMap<PathBuf, PathBuf> {
        pairs
            .iter()
            .map(|(e, t)| (PathBuf::from(e), PathBuf::from(t)))
            .collect()
    }

    fn inside(pairs: &[(&str, &str)], entry: &str) -> bool {
        let map = links(pairs);
        let target = &map[Path::new(entry)];
        matches!(resolve(&map, Path::new(entry), target), Resolution::Inside)
    }

    #[test]
    fn plain_relative_links_stay_inside() {
        assert!(inside(&[("a/b", "../c")], "a/b"));
        assert!(inside(&[("a", "./x/y")], "a"));
        assert!(inside(&[("a", "missing/file")], "a"));
    }

    #[test]
    fn parent_above_the_root_or_absolute_is_outside() {
        assert!(!inside(&[("a", "..")], "a"));
        assert!(!inside(&[("a/b", "../../etc")], "a/b"));
        assert!(!inside(&[("a", "/etc/passwd")], "a"));
    }

    #[test]
    fn parent_after_a_link_follows_the_link_first() {
        // x/l points at the root; x/l/.. is therefore the root's parent, not x.
        let pairs = [("x/l", ".."), ("m", "x/l/..")];
        assert!(inside(&pairs, "x/l"));
        assert!(!inside(&pairs, "m"));
    }

    #[test]
    fn loops_are_caught() {
        let map = links(&[("a", "b"), ("b", "a")]);
        assert!(matches!(
            resolve(&map, Path::new("a"), Path::new("b")),
            Resolution::Loop
        ));
    }

    #[test]
    fn confined_path_refuses_escapes() {
        assert_eq!(
            confined_path(Path::new("./a/./b")),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(confined_path(Path::new("a/../b")), None);
        assert_eq!(confined_path(Path::new("/a")), None);
    }
}
