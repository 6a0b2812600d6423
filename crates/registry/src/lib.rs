//! The registry core: what it means to hold blobs, uploads, manifests, tags and repositories on
//! a [`Backend`], independent of any transport.
//!
//! [`Registry`] is the handle every shell (HTTP server, CLI) uses. Its methods take validated
//! `berth-oci` types and return [`RegistryError`]s in the distribution spec's vocabulary.
//! Everything here is synchronous; callers run it on blocking threads.
//!
//! Modules are declared in layer order, and a module names (`use crate::…`) only modules
//! declared before it; `tests::tidy` checks it:
//!
//! - foundations: `error`, `config`, `journal` (the record types and their formats), `graph`
//!   (the pure reachability graph and the one walk over what a manifest reaches), `touched`;
//! - the core: `links`, `blobs`, `uploads`, `catalog`, `manifests`, `cache`, `referrers`, whose
//!   mutators are crate-private;
//! - removal and accounting: `trash`, `scan`, `usage`, `delete` (the only public way to remove
//!   anything: every removal writes a trash entry and an audit line);
//! - `gc` (the only module that removes blob data), then `fsck`.
//!
//! Architecture invariants: this crate has no HTTP dependency and never builds a storage path
//! itself (it asks `berth_storage::layout`); a cache here may say a manifest's bytes are
//! known, but never that a blob exists — existence is always asked of the backend.

mod error;
mod config;
mod journal;
mod graph;
mod touched;
mod links;
mod blobs;
mod uploads;
mod catalog;
mod manifests;
mod cache;
mod referrers;
mod trash;
mod scan;
mod usage;
mod image;
mod delete;
mod gc;
mod fsck;

use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use berth_storage::{Backend, ObjectReader, StorageError};
pub use blobs::BlobReader;
pub use config::{Config, UntaggedPolicy, parse_duration};
pub use delete::{DeleteRequest, DeleteTarget, Deleted};
pub use error::{RegistryError, Result};
pub use fsck::{Finding, FsckOptions, FsckReport};
pub use gc::{GcOptions, GcProgress, GcReport, GcRun};
pub use image::{BlobInfo as ImageBlob, Child, ConfigSummary, ImageInfo};
pub use journal::{AuditAction, AuditRecord, DeleteKind, TrashEntry, TrashId};
pub use links::{Page, PushTimes};
pub use manifests::{PutManifest, StoredManifest};
pub use referrers::Referrer;
pub use trash::{RestoreTarget, Restored};
pub use uploads::BlobInfo;
pub use usage::{GraphStats, RepoSummary, RepoUsage, TagUsage, Usage};

/// A chunk of a request body, as the transport delivers it.
pub type Chunk = std::io::Result<bytes::Bytes>;

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
    graph: graph::GraphCache,
    push_times: links::PushTimesCache,
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
            graph: Default::default(),
            push_times: Default::default(),
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

    /// Threads for bulk walks over the store (see [`Backend::parallelism`]).
    fn workers(&self) -> usize {
        self.backend.parallelism()
    }
}

#[cfg(test)]
mod tests;
