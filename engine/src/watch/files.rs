//! Watching the configuration file and local paths. notify reports raw changes on its
//! own thread; they reach the watch loop as lists of paths over a channel, and the loop
//! classifies them with [`FileWatcher::classify`].

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use tokio::sync::mpsc;

use super::reconciler::{Cause, ConfigSummary};
use super::WatchError;

pub(crate) struct FileWatcher {
    debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
    /// What is being watched now, to unwatch what a new configuration drops.
    watched: BTreeSet<(PathBuf, bool)>,
    /// The configuration file, its directory canonicalised: how notify names it.
    config_file: PathBuf,
    local_paths: Vec<PathBuf>,
    ignored: Vec<PathBuf>,
    /// The state's doorbell, its directory canonicalised.
    doorbell: Option<PathBuf>,
}

impl FileWatcher {
    /// Changes are reported once things have been quiet for `debounce`.
    pub fn new(
        debounce: Duration,
    ) -> Result<(FileWatcher, mpsc::UnboundedReceiver<Vec<PathBuf>>), WatchError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let debouncer = new_debouncer(debounce, None, move |result: DebounceEventResult| {
            match result {
                Ok(events) => {
                    let paths: Vec<PathBuf> = events
                        .into_iter()
                        // Reading files (hashing a path source) must not wake anyone.
                        .filter(|e| !matches!(e.event.kind, EventKind::Access(_)))
                        .flat_map(|e| e.event.paths)
                        .collect();
                    if !paths.is_empty() {
                        // The loop is gone only when shutting down.
                        let _ = tx.send(paths);
                    }
                }
                Err(errors) => {
                    for error in errors {
                        tracing::warn!("watching files: {error}");
                    }
                }
            }
        })
        .map_err(WatchError::Notify)?;
        Ok((
            FileWatcher {
                debouncer,
                watched: BTreeSet::new(),
                config_file: PathBuf::new(),
                local_paths: Vec::new(),
                ignored: Vec::new(),
                doorbell: None,
            },
            rx,
        ))
    }

    /// Watches what `summary` names (and stops watching what it no longer does). A path
    /// that cannot be watched is reported and skipped: the rest still works.
    pub fn follow(&mut self, summary: &ConfigSummary) {
        let file_name = summary
            .config_file
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_default();
        // `kpack.toml` has the parent "", which is the working directory.
        let config_dir = match summary.config_file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => canonical(dir),
            _ => canonical(Path::new(".")),
        };
        self.config_file = config_dir.join(file_name);
        self.ignored = summary.ignored.iter().map(|p| canonical(p)).collect();
        self.local_paths = summary
            .local_paths
            .iter()
            .map(|p| canonical(p))
            .filter(|p| !self.is_ignored(p))
            .collect();

        // The directory, not the file: an atomic save replaces the file's inode.
        let mut wanted = BTreeSet::from([(config_dir, false)]);
        self.doorbell = summary.doorbell.as_ref().and_then(|bell| {
            let dir = canonical(bell.parent()?);
            let name = bell.file_name()?;
            wanted.insert((dir.clone(), false));
            Some(dir.join(name))
        });
        wanted.extend(self.local_paths.iter().map(|p| (p.clone(), true)));
        for (path, recursive) in self.watched.difference(&wanted) {
            if let Err(error) = self.debouncer.unwatch(path) {
                tracing::debug!(path = %path.display(), recursive, "unwatching: {error}");
            }
        }
        let mut watched = BTreeSet::new();
        for (path, recursive) in wanted {
            if self.watched.contains(&(path.clone(), recursive)) {
                watched.insert((path, recursive));
                continue;
            }
            let mode = if recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            match self.debouncer.watch(&path, mode) {
                Ok(()) => {
                    tracing::debug!(path = %path.display(), recursive, "watching");
                    watched.insert((path, recursive));
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), "cannot watch for changes: {error}");
                }
            }
        }
        self.watched = watched;
    }

    /// What changed paths mean: the configuration changed, a local path changed.
    pub fn classify(&self, paths: &[PathBuf]) -> Vec<Cause> {
        let mut causes = Vec::new();
        let mut roots = BTreeSet::new();
        for path in paths {
            if *path == self.config_file && !causes.contains(&Cause::ConfigChanged) {
                causes.push(Cause::ConfigChanged);
            }
            if self.doorbell.as_ref() == Some(path) && !causes.contains(&Cause::TriggersRecorded) {
                causes.push(Cause::TriggersRecorded);
            }
            if self.is_ignored(path) {
                continue;
            }
            for root in &self.local_paths {
                let Ok(inside) = path.strip_prefix(root) else {
                    continue;
                };
                // Sources never include `.git` (see executors' path source).
                let in_git = inside
                    .components()
                    .any(|c| matches!(c, Component::Normal(name) if name == ".git"));
                if !in_git {
                    roots.insert(root.clone());
                }
            }
        }
        causes.extend(roots.into_iter().map(Cause::PathChanged));
        causes
    }

    fn is_ignored(&self, path: &Path) -> bool {
        self.ignored.iter().any(|dir| path.starts_with(dir))
    }
}

/// The path as notify reports it: symlinks and `..` resolved. A path that does not
/// exist (yet) is kept as given, made absolute.
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}
