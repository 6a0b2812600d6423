//! The registry core: what it means to hold blobs, uploads, manifests, tags and repositories on
//! a [`Backend`], independent of any transport.
//!
//! [`Registry`] is the handle every shell (HTTP server, CLI) uses. Its methods take validated
//! `berth-oci` types and return [`RegistryError`]s in the distribution spec's vocabulary.
//! Everything here is synchronous; callers run it on blocking threads.
//!
//! Modules are declared in layer order; each uses only those before it:
//! `touched` (digests clients used recently) → `blobs`, `uploads`, `manifests`, `tags`,
//! `catalog`, `referrers` (the core, whose mutators are crate-private) → `journal`, `trash`,
//! `usage`, `delete` (the only public way to remove anything: every removal writes a trash entry
//! and an audit line) → `gc` (the only module that removes blob data) → `fsck`.
//!
//! Architecture invariants: this crate has no HTTP dependency and never builds a storage path
//! itself (it asks `berth_storage::layout`); a cache here may say a manifest's bytes are
//! known, but never that a blob exists — existence is always asked of the backend.

mod blobs;
mod cache;
mod catalog;
mod delete;
mod error;
mod fsck;
mod gc;
mod journal;
mod manifests;
mod referrers;
mod tags;
mod touched;
mod trash;
mod uploads;
mod usage;

use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

pub use berth_storage::{Backend, ObjectReader, StorageError};
pub use blobs::BlobReader;
pub use catalog::Page;
pub use delete::{DeleteRequest, DeleteTarget, Deleted};
pub use error::{RegistryError, Result};
pub use fsck::{Finding, FsckOptions, FsckReport};
pub use gc::{GcOptions, GcProgress, GcReport, UntaggedPolicy};
pub use manifests::{PutManifest, StoredManifest};
pub use referrers::Referrer;
pub use trash::{DeleteKind, RestoreTarget, Restored, TrashEntry, TrashId};
pub use uploads::BlobInfo;
pub use usage::{Graph, RepoUsage, TagUsage, Usage};

/// A chunk of a request body, as the transport delivers it.
pub type Chunk = std::io::Result<bytes::Bytes>;

/// Limits and switches of the registry core.
#[derive(Debug, Clone)]
pub struct Config {
    /// The largest manifest accepted, in bytes.
    pub max_manifest_bytes: usize,
    /// The largest blob accepted, in bytes (`None`: no limit but the disk).
    pub max_blob_bytes: Option<u64>,
    /// How long a trash entry protects and can restore what it names; zero turns the trash
    /// off (deletes are final, nothing can be restored).
    pub trash_retention: Duration,
    /// What GC does with untagged manifests; accounting counts the same way.
    pub untagged: gc::UntaggedPolicy,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_manifest_bytes: 4 << 20,
            max_blob_bytes: None,
            trash_retention: Duration::from_secs(7 * 24 * 3600),
            untagged: gc::UntaggedPolicy::OlderThan(Duration::from_secs(24 * 3600)),
        }
    }
}

/// Each repository hashes to one of these lock stripes. Changes of its tags and manifests (a
/// manifest push, a delete, a restore) hold the stripe exclusively, so a delete never
/// interleaves with a push re-pointing the tag it removes. Creating a layer link (an upload's
/// completion, a mount) holds it shared, for that one write: a repository delete then comes
/// either first (the link lands in a fresh repository) or after (the link goes into its trash
/// entry), and never meets a file appearing in a folder it is removing. Upload sessions are
/// left alone by deletes, so they need no lock. Never hold two stripes at once.
const REPO_LOCK_STRIPES: usize = 64;

/// The registry: one storage root and the in-memory state that serves it.
#[derive(Debug)]
pub struct Registry {
    backend: Arc<dyn Backend>,
    config: Config,
    uploads: uploads::Sessions,
    manifests: cache::ManifestCache,
    catalog: catalog::CatalogCache,
    usage: usage::UsageCache,
    repo_locks: Vec<RwLock<()>>,
    touched: touched::Touched,
    gc_lock: Mutex<()>,
    /// Held (shared) by every operation from its first touch until its links are written;
    /// GC takes it exclusively once, after it starts recording touches, so no push that
    /// touched before the GC began is still between its check and its writes when GC scans.
    inflight: RwLock<()>,
}

impl Registry {
    /// A registry over `backend`.
    pub fn new(backend: Arc<dyn Backend>, config: Config) -> Registry {
        Registry {
            backend,
            config,
            uploads: Default::default(),
            manifests: Default::default(),
            catalog: Default::default(),
            usage: Default::default(),
            repo_locks: (0..REPO_LOCK_STRIPES).map(|_| RwLock::new(())).collect(),
            touched: Default::default(),
            gc_lock: Mutex::new(()),
            inflight: RwLock::new(()),
        }
    }

    fn inflight(&self) -> RwLockReadGuard<'_, ()> {
        self.inflight.read().unwrap_or_else(|e| e.into_inner())
    }

    fn repo_stripe(&self, name: &berth_oci::RepoName) -> &RwLock<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut h);
        &self.repo_locks[h.finish() as usize % REPO_LOCK_STRIPES]
    }

    /// The repository's stripe, exclusively: for changes of tags and manifests.
    fn repo_lock(&self, name: &berth_oci::RepoName) -> RwLockWriteGuard<'_, ()> {
        // A panic while holding a stripe leaves nothing half-done in memory worth refusing over.
        self.repo_stripe(name).write().unwrap_or_else(|e| e.into_inner())
    }

    /// The repository's stripe, shared: for creating the files of an upload or a mount.
    fn repo_share(&self, name: &berth_oci::RepoName) -> RwLockReadGuard<'_, ()> {
        self.repo_stripe(name).read().unwrap_or_else(|e| e.into_inner())
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn store(&self) -> &dyn Backend {
        &*self.backend
    }
}

#[cfg(test)]
mod tests;
