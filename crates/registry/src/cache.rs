//! A bounded in-memory cache of manifest bytes, keyed by digest.
//!
//! Content-addressed entries never go stale: the bytes under a digest cannot change. Whether a
//! repository still holds a manifest is always asked of the store, never of this cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_oci::Digest;

use crate::manifests::StoredManifest;

/// Memory the cache may use; past it the cache starts over. An entry costs its bytes plus
/// the parsed form (estimated at three times the bytes), so this holds tens of thousands of
/// manifests.
const BUDGET: usize = 64 << 20;

fn cost(m: &StoredManifest) -> usize {
    m.bytes.len() * 4 + 256
}

#[derive(Debug, Default)]
pub(crate) struct ManifestCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Digest, Arc<StoredManifest>>,
    bytes: usize,
}

impl ManifestCache {
    pub(crate) fn get(&self, d: &Digest) -> Option<Arc<StoredManifest>> {
        self.inner.lock().expect("cache lock").map.get(d).cloned()
    }

    /// Forgets a digest whose blob GC removed, so nothing can be served from memory that the
    /// store no longer holds.
    pub(crate) fn remove(&self, d: &Digest) {
        let mut inner = self.inner.lock().expect("cache lock");
        if let Some(old) = inner.map.remove(d) {
            inner.bytes -= cost(&old);
        }
    }

    pub(crate) fn insert(&self, m: Arc<StoredManifest>) {
        let mut inner = self.inner.lock().expect("cache lock");
        if inner.bytes + cost(&m) > BUDGET {
            // Dropping everything is crude but O(1) amortised and cannot thrash a hot set
            // that fits the budget.
            inner.map.clear();
            inner.bytes = 0;
        }
        inner.bytes += cost(&m);
        if let Some(old) = inner.map.insert(m.digest.clone(), m) {
            inner.bytes -= cost(&old);
        }
    }
}
