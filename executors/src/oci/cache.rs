//! Content-addressed reads kept in memory: manifests named by digest and small
//! blobs (configs), per repository. What a digest names never changes, so a hit is
//! as good as a read; a fleet rebased onto one run image reads it once, not once per
//! image. Bounded in bytes, least recently used first out.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use imageref::Digest;

/// Bytes kept at most.
const BUDGET: usize = 4 * 1024 * 1024;
/// The largest item kept: bigger ones are rare and would crowd out the rest.
const MAX_ITEM: usize = 256 * 1024;

/// `registry/repository` and a digest.
type Key = (String, Digest);

#[derive(Default)]
pub(crate) struct ReadCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    items: HashMap<Key, (Bytes, u64)>,
    bytes: usize,
    clock: u64,
}

impl ReadCache {
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
}
