//! Git sources: a branch, tag or commit of a remote, resolved with one ls-refs call
//! (filtered to the revision, nothing cloned) and materialised from a depth-1 fetch into
//! a bare cache repository kept per remote URL.
//!
//! Transports are gix's: http(s) natively, `file://` (and a plain path to a repository)
//! by running `git upload-pack`, `ssh://` by running `ssh` — so those two need `git`
//! and `ssh` installed. Submodules are not supported: a submodule is written as an
//! empty directory, as a checkout without `--recurse-submodules` leaves it.
//!
//! Every function blocks (gix is a blocking client): call them from
//! `tokio::task::spawn_blocking`. Fetches stop early when the interrupt flag is set.
//! A cache repository is locked (a lock file beside it) while it is created or fetched
//! into, so builds of the same remote in several threads or processes are safe.
//!
//! How the engine keeps to one connection per upstream: resolve each distinct
//! [`GitUpstream`] once, passing a sub-path if any image on it has one (that resolve
//! fetches the commit on its single connection); then ask [`sub_path_tree`] for the
//! other images' sub-paths, which the cached commit answers without a connection.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::num::NonZeroU32;
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use gix::bstr::{BStr, ByteSlice as _};
use gix::objs::tree::EntryKind;
use gix::protocol::handshake::Ref;
use gix::remote::fetch::refmap::{Source, SpecIndex};
use gix::remote::fetch::{RefMap, Shallow, Status, Tags};
use gix::remote::Direction;
use sha2::{Digest as _, Sha256};

use super::app_dir::{confined_path, AppDir};
use super::EntryError;

pub use gix::ObjectId;

/// How many existing refs an error about a missing revision lists.
const REFS_LISTED: usize = 10;

/// What the planner observes for git sources: a remote and a revision (a branch, a tag,
/// a full ref name or a full commit id). Images sharing one are resolved once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GitUpstream {
    pub url: String,
    pub revision: String,
}

/// The observed version of a git source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GitVersion {
    pub commit: ObjectId,
    /// The tree id of the sub-path, when the source has one: commits that change
    /// nothing under it keep it.
    pub tree: Option<ObjectId>,
}

/// A git source that cannot be resolved or checked out.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("`{url}` is not a git URL")]
    InvalidUrl {
        url: String,
        #[source]
        source: gix::Error,
    },
    #[error("could not lock the git cache {}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not open the git cache {}", path.display())]
    Cache {
        path: PathBuf,
        #[source]
        source: gix::Error,
    },
    #[error("could not list the refs of {url}")]
    ListRefs {
        url: String,
        #[source]
        source: gix::Error,
    },
    #[error("{url} has no branch or tag `{revision}`; {}", describe_refs(existing))]
    MissingRevision {
        url: String,
        revision: String,
        existing: Vec<String>,
    },
    #[error("could not fetch {revision} from {url}")]
    Fetch {
        url: String,
        revision: String,
        #[source]
        source: gix::Error,
    },
    #[error("fetching {revision} from {url} was interrupted")]
    Interrupted { url: String, revision: String },
    #[error("could not read object {id} fetched from {url}")]
    Object {
        url: String,
        id: ObjectId,
        #[source]
        source: gix::Error,
    },
    #[error("sub-path `{sub_path}` must be relative and stay inside the repository")]
    InvalidSubPath { sub_path: String },
    #[error("commit {commit} has no directory `{sub_path}`")]
    MissingSubPath { commit: ObjectId, sub_path: String },
    #[error("commit {commit} has an entry `{entry}` that git refuses to check out")]
    ForbiddenEntry { commit: ObjectId, entry: String },
    #[error(transparent)]
    Entry(#[from] EntryError),
}

/// Resolves `upstream` to its current commit with at most one connection, and with a
/// `sub_path` also to the tree id of that directory (fetching the commit at depth 1 on
/// the same connection when the cache lacks it). A full commit id is taken as is: no
/// connection unless a sub-path needs objects the cache lacks.
pub fn resolve(
    cache: &Path,
    upstream: &GitUpstream,
    sub_path: Option<&str>,
    interrupt: &AtomicBool,
) -> Result<GitVersion, GitError> {
    let sub = sub_path.map(checked_sub_path).transpose()?;
    let remote = CachedRemote::open(cache, &upstream.url)?;
    let needs_objects = sub.is_some();
    let commit = match full_commit_id(&upstream.revision) {
        Some(commit) => {
            if needs_objects {
                remote.ensure_commit(commit, interrupt)?;
            }
            commit
        }
        None => remote.resolve_revision(&upstream.revision, needs_objects, interrupt)?,
    };
    let tree = sub
        .map(|sub| remote.tree_of(commit, Some(&sub)))
        .transpose()?;
    tracing::debug!(url = %upstream.url, revision = %upstream.revision, %commit, ?tree, "resolved git source");
    Ok(GitVersion { commit, tree })
}

/// The tree id of `sub_path` in `commit`: answered from the cache when it holds the
/// commit (as after a [`resolve`] with a sub-path), else after fetching the commit at
/// depth 1.
pub fn sub_path_tree(
    cache: &Path,
    url: &str,
    commit: ObjectId,
    sub_path: &str,
    interrupt: &AtomicBool,
) -> Result<ObjectId, GitError> {
    let sub = checked_sub_path(sub_path)?;
    let remote = CachedRemote::open(cache, url)?;
    remote.ensure_commit(commit, interrupt)?;
    remote.tree_of(commit, Some(&sub))
}

/// Writes the tree of `commit` (or of its `sub_path`) into `dest`, a fresh directory:
/// regular files with their executable bits and symbolic links, no `.git`. The commit is
/// fetched at depth 1 unless the cache holds it. A symbolic link that resolves outside
/// `dest` is refused, naming it.
pub fn checkout(
    cache: &Path,
    url: &str,
    commit: ObjectId,
    sub_path: Option<&str>,
    dest: &Path,
    interrupt: &AtomicBool,
) -> Result<(), GitError> {
    let sub = sub_path.map(checked_sub_path).transpose()?;
    let remote = CachedRemote::open(cache, url)?;
    remote.ensure_commit(commit, interrupt)?;
    let tree = remote.tree_of(commit, sub.as_deref())?;
    // Objects are only ever added to the cache, so reading needs no lock.
    let remote = remote.unlocked();
    remote.write_tree(commit, tree, dest)?;
    tracing::debug!(url, %commit, dest = %dest.display(), "checked out git source");
    Ok(())
}

/// Deletes `*.lock` files (`shallow.lock`, `packed-refs.lock`, `refs/**/*.lock`, …) in
/// the cache repository `dir`, outside `objects/`. Only called with the cache's lock held.
fn remove_stale_lock_files(dir: &Path) {
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if path != dir.join("objects") {
                    pending.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "lock") {
                match fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::warn!(path = %path.display(), "removed a stale git lock file")
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot remove a stale git lock file")
                    }
                }
            }
        }
    }
}

/// The bare cache repository of one remote, locked while this value holds `lock`.
struct CachedRemote {
    repo: gix::Repository,
    url: gix::Url,
    shown: String,
    lock: Option<fs::File>,
}

impl CachedRemote {
    /// Opens (creating if needed) the cache repository of `url` under `cache`, named
    /// after the sha256 of the URL, and locks it.
    fn open(cache: &Path, url: &str) -> Result<Self, GitError> {
        let parsed = remote_url(url)?;
        let key = hex::encode(Sha256::digest(parsed.to_bstring().as_bytes()));
        let dir = cache.join(format!("{key}.git"));
        let lock_path = cache.join(format!("{key}.lock"));
        let lock_error = |source| GitError::Lock {
            path: lock_path.clone(),
            source,
        };
        fs::create_dir_all(cache).map_err(lock_error)?;
        let lock = fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(lock_error)?;
        lock.lock().map_err(lock_error)?;
        // Holding the lock, nobody else writes the repository: a git lock file in it is
        // what a killed kpackd left, and would fail every later fetch.
        remove_stale_lock_files(&dir);
        let repo = if dir.join("HEAD").is_file() {
            gix::open(&dir)
        } else {
            gix::init_bare(&dir)
        }
        .map_err(|source| GitError::Cache {
            path: dir.clone(),
            source,
        })?;
        Ok(CachedRemote {
            repo,
            url: parsed,
            shown: url.into(),
            lock: Some(lock),
        })
    }

    fn unlocked(mut self) -> Self {
        self.lock = None;
        self
    }

    /// The commit `revision` names on the remote (a branch before a tag of the same
    /// name); with `fetch`, also makes sure the cache holds it — all on one connection.
    fn resolve_revision(
        &self,
        revision: &str,
        fetch: bool,
        interrupt: &AtomicBool,
    ) -> Result<ObjectId, GitError> {
        let specs = if revision == "HEAD" || revision.starts_with("refs/") {
            vec![revision.to_string()]
        } else {
            vec![
                format!("refs/heads/{revision}"),
                format!("refs/tags/{revision}"),
            ]
        };
        let found = self.exchange(&specs, revision, fetch, interrupt, first_explicit_commit)?;
        match found {
            Some(commit) => Ok(commit),
            None => Err(GitError::MissingRevision {
                url: self.shown.clone(),
                revision: revision.into(),
                existing: self.branches_and_tags(),
            }),
        }
    }

    /// Fetches `commit` at depth 1 unless the cache already holds it.
    fn ensure_commit(&self, commit: ObjectId, interrupt: &AtomicBool) -> Result<(), GitError> {
        if self.repo.has_object(commit) {
            return Ok(());
        }
        let revision = commit.to_string();
        self.exchange(
            std::slice::from_ref(&revision),
            &revision,
            true,
            interrupt,
            |_| Some(commit),
        )?;
        Ok(())
    }

    /// One connection: lists the refs `specs` name, lets `choose` pick a commit from
    /// them, and when `fetch` is set and the cache lacks that commit, receives it at
    /// depth 1 before hanging up.
    fn exchange(
        &self,
        specs: &[String],
        revision: &str,
        fetch: bool,
        interrupt: &AtomicBool,
        choose: impl FnOnce(&RefMap) -> Option<ObjectId>,
    ) -> Result<Option<ObjectId>, GitError> {
        let list_error = |source| GitError::ListRefs {
            url: self.shown.clone(),
            source,
        };
        let remote = self
            .repo
            .remote_at(self.url.clone())
            .and_then(|r| {
                r.with_fetch_tags(Tags::None)
                    .with_refspecs(specs.iter().map(String::as_str), Direction::Fetch)
            })
            .map_err(list_error)?;
        let prepare = remote
            .connect(Direction::Fetch)
            .and_then(|c| c.prepare_fetch(gix::progress::Discard, Default::default()))
            .map_err(list_error)?;
        let Some(commit) = choose(prepare.ref_map()) else {
            return Ok(None);
        };
        if !fetch || self.repo.has_object(commit) {
            return Ok(Some(commit));
        }
        tracing::debug!(url = %self.shown, revision, %commit, "fetching at depth 1");
        let outcome = prepare
            .with_shallow(Shallow::DepthAtRemote(NonZeroU32::MIN))
            .receive(gix::progress::Discard, interrupt);
        if interrupt.load(Ordering::Relaxed) {
            return Err(GitError::Interrupted {
                url: self.shown.clone(),
                revision: revision.into(),
            });
        }
        let outcome = outcome.map_err(|source| GitError::Fetch {
            url: self.shown.clone(),
            revision: revision.into(),
            source,
        })?;
        // No ref is written for a fetched commit, so gix leaves the pack's .keep file
        // for the caller; nothing here ever collects garbage, so it is not needed.
        if let Status::Change {
            write_pack_bundle, ..
        } = outcome.status
        {
            if let Some(keep) = write_pack_bundle.keep_path {
                let _ = fs::remove_file(keep);
            }
        }
        Ok(Some(commit))
    }

    /// The short names of the remote's branches and tags, sorted, for an error message.
    /// Best effort: this runs only when a revision was not found.
    fn branches_and_tags(&self) -> Vec<String> {
        let remote = self.repo.remote_at(self.url.clone()).and_then(|r| {
            r.with_fetch_tags(Tags::None).with_refspecs(
                ["refs/heads/*:refs/heads/*", "refs/tags/*:refs/tags/*"],
                Direction::Fetch,
            )
        });
        let listed = remote.and_then(|remote| {
            remote
                .connect(Direction::Fetch)
                .and_then(|c| c.ref_map(gix::progress::Discard, Default::default()))
        });
        match listed {
            Ok((map, _)) => {
                let mut names: Vec<String> = map
                    .remote_refs
                    .iter()
                    .filter_map(|r| {
                        let name = r.unpack().0;
                        name.strip_prefix(b"refs/heads/")
                            .or_else(|| name.strip_prefix(b"refs/tags/"))
                            .map(|short| short.to_str_lossy().into_owned())
                    })
                    .collect();
                names.sort();
                names.dedup();
                names
            }
            Err(err) => {
                tracing::debug!(url = %self.shown, "could not list refs: {err}");
                Vec::new()
            }
        }
    }

    /// The tree of `commit`, or of its `sub_path`, from the cache.
    fn tree_of(&self, commit: ObjectId, sub_path: Option<&Path>) -> Result<ObjectId, GitError> {
        let object_error = |id, source| GitError::Object {
            url: self.shown.clone(),
            id,
            source,
        };
        let mut tree = self
            .repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .map_err(|e| object_error(commit, e))?;
        let Some(sub) = sub_path else {
            return Ok(tree.id);
        };
        let root = tree.id;
        let entry = tree
            .peel_to_entry_by_path(sub)
            .map_err(|e| object_error(root, e))?;
        match entry {
            Some(entry) if entry.mode().is_tree() => Ok(entry.object_id()),
            _ => Err(GitError::MissingSubPath {
                commit,
                sub_path: sub.display().to_string(),
            }),
        }
    }

    /// Writes `tree` into `dest`. Trees are walked with an explicit stack, so a deeply
    /// nested hostile tree cannot exhaust the call stack; one blob is in memory at a time.
    fn write_tree(&self, commit: ObjectId, tree: ObjectId, dest: &Path) -> Result<(), GitError> {
        let object_error = |id, source| GitError::Object {
            url: self.shown.clone(),
            id,
            source,
        };
        let mut app = AppDir::create(dest)?;
        let mut pending = vec![(tree, PathBuf::new())];
        while let Some((id, dir)) = pending.pop() {
            let tree = self.repo.find_tree(id).map_err(|e| object_error(id, e))?;
            for entry in tree.iter() {
                let entry = entry.map_err(|e| object_error(id, e))?;
                let path = match checked_name(entry.filename()) {
                    Some(name) => dir.join(name),
                    None => {
                        return Err(GitError::ForbiddenEntry {
                            commit,
                            entry: dir
                                .join(entry.filename().to_str_lossy().as_ref())
                                .display()
                                .to_string(),
                        })
                    }
                };
                let oid = entry.object_id();
                match entry.mode().kind() {
                    EntryKind::Tree => {
                        app.dir(&path)?;
                        pending.push((oid, path));
                    }
                    kind @ (EntryKind::Blob | EntryKind::BlobExecutable) => {
                        let blob = self.repo.find_blob(oid).map_err(|e| object_error(oid, e))?;
                        let executable = kind == EntryKind::BlobExecutable;
                        app.file(&path, &mut blob.data.as_slice(), executable)?;
                    }
                    EntryKind::Link => {
                        let mut blob =
                            self.repo.find_blob(oid).map_err(|e| object_error(oid, e))?;
                        let target = OsString::from_vec(std::mem::take(&mut blob.data));
                        app.symlink(&path, PathBuf::from(target))?;
                    }
                    EntryKind::Commit => {
                        tracing::warn!(entry = %path.display(), "submodules are not supported; leaving an empty directory");
                        app.dir(&path)?;
                    }
                }
            }
        }
        app.finish()?;
        Ok(())
    }
}

/// The remote's URL as gix understands it; a plain or relative local path becomes an
/// absolute `file://` URL, so it has one cache repository whatever the working directory.
fn remote_url(url: &str) -> Result<gix::Url, GitError> {
    let invalid = |source| GitError::InvalidUrl {
        url: url.into(),
        source,
    };
    let mut parsed = gix::url::parse(url).map_err(invalid)?;
    if parsed.scheme == gix::url::Scheme::File {
        let path = Path::new(OsStr::from_bytes(parsed.path.as_slice()));
        let absolute = std::path::absolute(path).map_err(|e| invalid(gix::Error::from_error(e)))?;
        parsed.path = absolute.as_os_str().as_bytes().into();
        parsed.serialize_alternative_form = false;
    }
    Ok(parsed)
}

fn full_commit_id(revision: &str) -> Option<ObjectId> {
    (revision.len() == 40)
        .then(|| ObjectId::from_hex(revision.as_bytes()).ok())
        .flatten()
}

fn checked_sub_path(sub_path: &str) -> Result<PathBuf, GitError> {
    confined_path(Path::new(sub_path))
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| GitError::InvalidSubPath {
            sub_path: sub_path.into(),
        })
}

/// The commit of the mapping made by the earliest of the explicit refspecs, so a branch
/// wins over a tag of the same name; annotated tags are peeled.
fn first_explicit_commit(map: &RefMap) -> Option<ObjectId> {
    map.mappings
        .iter()
        .filter_map(|m| match m.spec_index {
            SpecIndex::ExplicitInRemote(index) => Some((index, &m.remote)),
            SpecIndex::Implicit(_) => None,
        })
        .min_by_key(|(index, _)| *index)
        .and_then(|(_, source)| match source {
            Source::ObjectId(id) => Some(*id),
            Source::Ref(
                Ref::Direct { object, .. }
                | Ref::Peeled { object, .. }
                | Ref::Symbolic { object, .. },
            ) => Some(*object),
            Source::Ref(Ref::Unborn { .. }) => None,
        })
}

/// A tree entry name as a path component, or `None` for names git refuses to check
/// out: empty, `.`, `..`, containing `/` or NUL, or `.git` in any case.
fn checked_name(name: &BStr) -> Option<&OsStr> {
    let bytes: &[u8] = name.as_ref();
    let refused = bytes.is_empty()
        || bytes == b"."
        || bytes == b".."
        || bytes.contains(&b'/')
        || bytes.contains(&0)
        || bytes.eq_ignore_ascii_case(b".git");
    (!refused).then(|| OsStr::from_bytes(bytes))
}

fn describe_refs(existing: &[String]) -> String {
    if existing.is_empty() {
        return "it has no branches or tags".into();
    }
    let mut out = String::from("it has ");
    out.push_str(&existing[..existing.len().min(REFS_LISTED)].join(", "));
    if existing.len() > REFS_LISTED {
        let _ = write!(out, " and {} more", existing.len() - REFS_LISTED);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kill during a fetch leaves gix's lock files behind; the next fetch clears them.
    #[test]
    fn lock_files_a_killed_fetch_left_do_not_block_the_next() {
        let mut remote = testkit::git::BareRepo::new();
        let first = remote.commit(&[("a.txt", "one")], "first");
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let never = AtomicBool::new(false);
        let first = ObjectId::from_hex(first.as_bytes()).unwrap();
        checkout(
            &cache,
            &remote.url(),
            first,
            None,
            &dir.path().join("one"),
            &never,
        )
        .unwrap();

        let repo = fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "git"))
            .expect("a cache repository");
        fs::write(repo.join("shallow.lock"), "").unwrap();
        fs::create_dir_all(repo.join("refs/heads")).unwrap();
        fs::write(repo.join("refs/heads/main.lock"), "").unwrap();

        let second = remote.commit(&[("a.txt", "two")], "second");
        let second = ObjectId::from_hex(second.as_bytes()).unwrap();
        let dest = dir.path().join("two");
        checkout(&cache, &remote.url(), second, None, &dest, &never).unwrap();
        assert_eq!(fs::read_to_string(dest.join("a.txt")).unwrap(), "two");
        assert!(!repo.join("shallow.lock").exists());
        assert!(!repo.join("refs/heads/main.lock").exists());
    }
}
