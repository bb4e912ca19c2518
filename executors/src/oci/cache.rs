//! Content-addressed reads kept in memory: manifests named by digest and small
//! blobs (configs), per repository. What a digest names never changes, so a hit is
//! as good as a read; a fleet rebased onto one run image reads it once, not once per
//! image. Bounded in bytes, least recently used first out.
//!
//! With a directory, what kpackd itself pushed (manifests and configs) is also kept on
//! disk, so that the next process reads it there instead of from the registry: a
//! rebase reads back the image the last build or rebase pushed. A file is used only when
//! its bytes hash to the digest it is named by, so a file changed on disk is a miss, not
//! a wrong answer. Only pushes write the directory, and it is bounded in bytes, oldest
//! files out first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use imageref::Digest;

/// Bytes kept at most.
const BUDGET: usize = 4 * 1024 * 1024;
/// The largest item kept: bigger ones are rare and would crowd out the rest.
const MAX_ITEM: usize = 256 * 1024;

/// Bytes the directory keeps at most; pruning brings it down to three quarters.
const DISK_BUDGET: u64 = 64 * 1024 * 1024;

/// `registry/repository` and a digest.
type Key = (String, Digest);

#[derive(Default)]
pub(crate) struct ReadCache {
    inner: Mutex<Inner>,
    /// Where pushed manifests and configs are kept across processes, if anywhere.
    disk: Option<PathBuf>,
    /// The directory's size in bytes as this process last knew it: read from the
    /// directory at the first push, then counted, so that it is listed again only
    /// when it outgrows its budget.
    disk_bytes: Arc<Mutex<Option<u64>>>,
    /// The directory's budget: [`DISK_BUDGET`].
    disk_budget: u64,
}

#[derive(Default)]
struct Inner {
    items: HashMap<Key, (Bytes, u64)>,
    bytes: usize,
    clock: u64,
}

impl ReadCache {
    /// A cache that also keeps what is pushed in `dir`.
    pub(crate) fn with_disk(dir: PathBuf) -> ReadCache {
        ReadCache {
            disk: Some(dir),
            disk_budget: DISK_BUDGET,
            ..ReadCache::default()
        }
    }

    /// The bytes `digest` names in `repository`: from memory, or from a file of the
    /// directory whose bytes hash to `digest`.
    pub(crate) async fn lookup(&self, repository: &str, digest: &Digest) -> Option<Bytes> {
        if let Some(bytes) = self.get(repository, digest) {
            return Some(bytes);
        }
        let path = self.disk_path(repository, digest)?;
        let expected = digest.clone();
        // One trip to the blocking pool: stat, read, check and (on a mismatch) remove.
        let read = tokio::task::spawn_blocking(move || {
            let meta = std::fs::symlink_metadata(&path).ok()?;
            if !meta.is_file() || meta.len() > MAX_ITEM as u64 {
                return None;
            }
            let mut bytes = Vec::with_capacity(meta.len() as usize);
            let file = std::fs::File::open(&path).ok()?;
            std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_ITEM as u64), &mut bytes)
                .ok()?;
            let bytes = Bytes::from(bytes);
            if Digest::sha256(&bytes) != expected {
                tracing::debug!(path = %path.display(), "a kept object does not match its digest; ignored");
                let _ = std::fs::remove_file(&path);
                return None;
            }
            Some(bytes)
        });
        let bytes = read.await.ok()??;
        self.put(repository, digest, &bytes);
        Some(bytes)
    }

    /// Keeps `bytes`, which kpackd pushed to `repository` as `digest`, in memory and on
    /// disk. A failure to write is only logged: the cache saves requests, nothing else.
    pub(crate) async fn keep_pushed(&self, repository: &str, digest: &Digest, bytes: &Bytes) {
        self.put(repository, digest, bytes);
        let (Some(dir), Some(path)) = (self.disk.clone(), self.disk_path(repository, digest))
        else {
            return;
        };
        if bytes.len() > MAX_ITEM {
            return;
        }
        let bytes = bytes.clone();
        let disk_bytes = Arc::clone(&self.disk_bytes);
        let budget = self.disk_budget;
        // One trip to the blocking pool: whether it is kept already, the write, the count.
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if std::fs::exists(&path)? {
                return Ok(());
            }
            std::fs::create_dir_all(&dir)?;
            let mut file = tempfile::NamedTempFile::new_in(&dir)?;
            std::io::Write::write_all(&mut file, &bytes)?;
            file.persist(&path).map_err(|e| e.error)?;
            let mut known = disk_bytes
                .lock()
                .expect("the directory's size is never left poisoned");
            *known = Some(match *known {
                Some(total) if total + bytes.len() as u64 <= budget => total + bytes.len() as u64,
                _ => prune_dir(&dir, budget)?,
            });
            Ok(())
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%error, "cannot keep a pushed object"),
            Err(error) => tracing::debug!(%error, "keeping a pushed object failed"),
        }
    }

    /// `<dir>/<repository's hash>-<digest hex>`, for sha256 digests only.
    fn disk_path(&self, repository: &str, digest: &Digest) -> Option<PathBuf> {
        let dir = self.disk.as_ref()?;
        if digest.algorithm() != "sha256" {
            return None;
        }
        let repository = Digest::sha256(repository.as_bytes());
        Some(dir.join(format!("{}-{}", &repository.hex()[..16], digest.hex())))
    }

    pub(crate) fn get(&self, repository: &str, digest: &Digest) -> Option<Bytes> {
        let mut inner = self
            .inner
            .lock()
            .expect("the read cache is never left poisoned");
        inner.clock += 1;
        let now = inner.clock;
        let (bytes, used) = inner
            .items
            .get_mut(&(repository.to_string(), digest.clone()))?;
        *used = now;
        Some(bytes.clone())
    }

    /// Keeps `bytes`, which the caller checked hash to `digest`.
    pub(crate) fn put(&self, repository: &str, digest: &Digest, bytes: &Bytes) {
        if bytes.len() > MAX_ITEM {
            return;
        }
        let mut inner = self
            .inner
            .lock()
            .expect("the read cache is never left poisoned");
        inner.clock += 1;
        let now = inner.clock;
        let key = (repository.to_string(), digest.clone());
        if let Some((_, used)) = inner.items.get_mut(&key) {
            *used = now;
            return;
        }
        while inner.bytes + bytes.len() > BUDGET {
            let Some(oldest) = inner
                .items
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((gone, _)) = inner.items.remove(&oldest) {
                inner.bytes -= gone.len();
            }
        }
        inner.bytes += bytes.len();
        inner.items.insert(key, (bytes.clone(), now));
    }
}

/// Deletes the oldest files of `dir` while it holds more than `budget` bytes, down to
/// three quarters of it. Returns the bytes it holds then.
fn prune_dir(dir: &Path, budget: u64) -> std::io::Result<u64> {
    let mut files = Vec::new();
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_file() {
            total += meta.len();
            files.push((meta.modified()?, meta.len(), entry.path()));
        }
    }
    if total <= budget {
        return Ok(total);
    }
    files.sort();
    for (_, len, path) in files {
        if total <= budget / 4 * 3 {
            break;
        }
        std::fs::remove_file(path)?;
        total -= len;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::parse(&format!("sha256:{}", hex::encode([n; 32]))).unwrap()
    }

    #[test]
    fn least_recently_used_goes_first_and_the_budget_holds() {
        let cache = ReadCache::default();
        let item = Bytes::from(vec![0u8; MAX_ITEM]);
        let fits = BUDGET / MAX_ITEM;
        for n in 0..fits as u8 {
            cache.put("r/a", &digest(n), &item);
        }
        assert!(cache.get("r/a", &digest(0)).is_some());
        cache.put("r/a", &digest(200), &item);
        assert!(cache.get("r/a", &digest(0)).is_some(), "used last, kept");
        assert!(
            cache.get("r/a", &digest(1)).is_none(),
            "least recently used"
        );
        assert!(cache.get("r/b", &digest(0)).is_none(), "another repository");
        assert!(cache.inner.lock().unwrap().bytes <= BUDGET);
        cache.put("r/a", &digest(201), &Bytes::from(vec![0u8; MAX_ITEM + 1]));
        assert!(cache.get("r/a", &digest(201)).is_none(), "too big to keep");
    }

    #[tokio::test]
    async fn what_was_pushed_is_read_back_by_the_next_process_unless_changed() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = Bytes::from_static(b"{\"schemaVersion\":2}");
        let digest = Digest::sha256(&bytes);
        ReadCache::with_disk(dir.path().to_path_buf())
            .keep_pushed("r/a", &digest, &bytes)
            .await;

        let next = ReadCache::with_disk(dir.path().to_path_buf());
        assert_eq!(next.lookup("r/a", &digest).await, Some(bytes.clone()));
        let other = ReadCache::with_disk(dir.path().to_path_buf());
        assert_eq!(
            other.lookup("r/b", &digest).await,
            None,
            "another repository"
        );

        let file = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::write(&file, b"{\"schemaVersion\":3}").unwrap();
        let changed = ReadCache::with_disk(dir.path().to_path_buf());
        assert_eq!(
            changed.lookup("r/a", &digest).await,
            None,
            "changed on disk"
        );
        assert!(
            !file.exists(),
            "a file that does not match its name is removed"
        );

        let memory_only = ReadCache::default();
        memory_only.keep_pushed("r/a", &digest, &bytes).await;
        assert_eq!(memory_only.lookup("r/a", &digest).await, Some(bytes));
    }

    #[test]
    fn the_directory_is_pruned_oldest_first_to_three_quarters_of_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        for n in 0..8u8 {
            std::fs::write(dir.path().join(format!("f{n}")), vec![n; 100]).unwrap();
            let file = std::fs::File::options()
                .write(true)
                .open(dir.path().join(format!("f{n}")))
                .unwrap();
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000 + u64::from(n));
            file.set_modified(at).unwrap();
        }
        assert_eq!(prune_dir(dir.path(), 800).unwrap(), 800);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            8,
            "within budget"
        );
        assert_eq!(prune_dir(dir.path(), 700).unwrap(), 500);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["f3", "f4", "f5", "f6", "f7"],
            "oldest out, down to 525 bytes"
        );
    }

    #[tokio::test]
    async fn the_directory_is_listed_at_the_first_push_then_only_when_over_budget() {
        let dir = tempfile::tempdir().unwrap();
        for n in 0..8u8 {
            let path = dir.path().join(format!("old{n}"));
            std::fs::write(&path, vec![n; 100]).unwrap();
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000 + u64::from(n));
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(at)
                .unwrap();
        }
        let cache = ReadCache {
            disk_budget: 1_000,
            ..ReadCache::with_disk(dir.path().to_path_buf())
        };
        let count = || std::fs::read_dir(dir.path()).unwrap().count();
        let push = |n: u8| {
            let bytes = Bytes::from(vec![n; 100]);
            let digest = Digest::sha256(&bytes);
            let cache = &cache;
            async move { cache.keep_pushed("r/a", &digest, &bytes).await }
        };

        push(100).await;
        assert_eq!(count(), 9, "900 bytes: within budget at the first look");
        assert_eq!(*cache.disk_bytes.lock().unwrap(), Some(900));
        push(101).await;
        assert_eq!(*cache.disk_bytes.lock().unwrap(), Some(1_000), "counted");
        std::fs::write(dir.path().join("not-listed"), vec![0; 100]).unwrap();
        assert_eq!(
            count(),
            11,
            "another writer is not seen until the next look"
        );
        push(102).await;
        assert!(!dir.path().join("old0").exists(), "over budget: pruned");
        assert!(count() <= 7, "down to three quarters: {} files", count());
        let known = cache.disk_bytes.lock().unwrap().unwrap();
        assert!(known <= 750, "{known}");
    }
}
