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
//! - foundations: `error`, `config`, `retention` (what a retention policy keeps, as a pure
//!   function of tags' push and pull times), `journal` (the record types and their formats), `graph`
//!   (the pure reachability graph and the one walk over what a manifest reaches), `touched`,
//!   `coord` (locks, the in-flight gate, the touched set and change generations, in this
//!   process or shared by several), `index` (the contract of a metadata index kept beside the
//!   store, which GC, accounting and the catalog read instead of listing it);
//! - the core: `links`, `blobs`, `uploads`, `catalog`, `manifests`, `cache`, `referrers`, whose
//!   mutators are crate-private, and `pulls` (when tags and manifests were last pulled);
//! - removal and accounting: `trash`, `scan`, `usage`, `delete` (the only public way to remove
//!   anything: every removal writes a trash entry and an audit line), `retain` (a retention
//!   run, carried out through `delete`);
//! - `gc` (the only module that removes blob data), `reindex` (the metadata index filled and
//!   checked from the store), then `fsck`;
//! - apart: `outbox`, the durable queue of notifications (opaque records, in order, with a
//!   cursor per endpoint), which names nothing else in the crate.
//!
//! Architecture invariants: this crate has no HTTP dependency and never builds a storage path
//! itself (it asks `berth_storage::layout`); a cache here may say a manifest's bytes are
//! known, but never that a blob exists — existence is always asked of the backend.

mod error;
mod config;
mod retention;
mod journal;
mod graph;
mod touched;
mod coord;
mod index;
mod links;
mod blobs;
mod uploads;
mod catalog;
mod manifests;
mod cache;
mod referrers;
mod pulls;
mod trash;
mod scan;
mod usage;
mod image;
mod delete;
mod retain;
mod gc;
mod reindex;
mod fsck;
mod outbox;

use std::sync::Arc;

pub use berth_storage::{Backend, ObjectReader, StorageError};
pub use blobs::BlobReader;
pub use config::{Config, UntaggedPolicy, parse_duration};
pub use coord::{Coordination, Held, Local, Release};
pub use delete::{DeleteRequest, DeleteTarget, Deleted, SeenManifest, SeenTag};
pub use error::{RegistryError, Result};
pub use fsck::{Finding, FsckOptions, FsckReport};
pub use gc::{GcOptions, GcProgress, GcReport, GcRun};
pub use image::{BlobInfo as ImageBlob, Child, ConfigSummary, ImageInfo};
pub use index::{IndexDiff, IndexedBlob, IndexedManifest, IndexedRepo, MetaIndex, StoreSnapshot};
pub use journal::{AuditAction, AuditRecord, DeleteKind, TrashEntry, TrashId};
pub use links::{Page, PushTimes};
pub use manifests::{PutManifest, StoredManifest};
pub use outbox::{Counters as OutboxCounters, Cursor as OutboxCursor, Outbox};
pub use pulls::PullTimes;
pub use referrers::Referrer;
pub use reindex::ReindexProgress;
pub use retain::RetainedRepo;
pub use retention::{Fate, KeepRule, Retention, RetentionPolicy, TagFacts, judge_tags, policy_for};
pub use trash::{RestoreTarget, Restored};
pub use uploads::BlobInfo;
pub use usage::{GraphStats, RepoSummary, RepoUsage, TagUsage, Usage};

/// A chunk of a request body, as the transport delivers it.
pub type Chunk = std::io::Result<bytes::Bytes>;

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
    pulls: pulls::Pulls,
    /// Locks, the in-flight gate and the touched set (see `coord`). Changes of a repository's
    /// tags and manifests (a manifest push, a delete, a restore) hold its lock exclusively, so
    /// a delete never interleaves with a push re-pointing the tag it removes. Creating a layer
    /// link (an upload's completion, a mount) holds it shared, for that one write: a repository
    /// delete then comes either first (the link lands in a fresh repository) or after (the link
    /// goes into its trash entry), and never meets a file appearing in a folder it is removing.
    /// Upload sessions are left alone by deletes. Never hold two repositories at once. Every
    /// operation is in the gate from its first touch until its links are written; GC waits it
    /// out once, after it starts recording touches, so no push that touched before the GC began
    /// is still between its check and its writes when GC scans.
    coord: Arc<dyn Coordination>,
    /// The metadata index, with a database (see `index`); read only once it is ready.
    index: Option<Arc<dyn MetaIndex>>,
}

impl Registry {
    /// A registry over `backend`, the only process serving it.
    pub fn new(backend: Arc<dyn Backend>, config: Config) -> Registry {
        Registry::with_coordination(backend, config, Arc::new(Local::default()))
    }

    /// A registry over `backend`, coordinated with other processes by `coord`.
    pub fn with_coordination(backend: Arc<dyn Backend>, config: Config, coord: Arc<dyn Coordination>) -> Registry {
        Registry {
            backend,
            config,
            uploads: Default::default(),
            manifests: Default::default(),
            catalog: Default::default(),
            graph: Default::default(),
            push_times: Default::default(),
            pulls: Default::default(),
            coord,
            index: None,
        }
    }

    /// The same registry, reading `index` (once it is ready) instead of listing the store.
    /// The store must be the one the index watches.
    pub fn with_index(mut self, index: Arc<dyn MetaIndex>) -> Registry {
        self.index = Some(index);
        self
    }

    /// The metadata index, if there is one and it is ready. An index that cannot say is not
    /// used: listing the store is slower, never wrong.
    fn ready_index(&self) -> Option<&dyn MetaIndex> {
        let index = self.index.as_deref()?;
        // Ready in the database, and no process without the database wrote since (it marks
        // the root when it takes it).
        let stale = || berth_storage::BackendExt::exists(self.store(), &berth_storage::layout::index_stale());
        match (index.ready(), stale()) {
            (Ok(true), Ok(false)) => Some(index),
            (Ok(true), Ok(true)) => {
                tracing::warn!(
                    "a process without the database wrote to the root since the metadata index was last reconciled; listing storage until `berth db import` or `berth fsck --repair`"
                );
                None
            }
            (Ok(false), _) => None,
            (Err(e), _) => {
                tracing::warn!(error = %e, "cannot tell whether the metadata index is current; listing storage");
                None
            }
            (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot tell whether the metadata index is current; listing storage");
                None
            }
        }
    }

    fn inflight(&self) -> Result<Held<'_>> {
        self.coord.enter()
    }

    /// The repository, exclusively: for changes of tags and manifests.
    fn repo_lock(&self, name: &berth_oci::RepoName) -> Result<Held<'_>> {
        self.coord.lock_repo(name)
    }

    /// The repository, shared: for creating the files of an upload or a mount.
    fn repo_share(&self, name: &berth_oci::RepoName) -> Result<Held<'_>> {
        self.coord.share_repo(name)
    }

    /// Records that a client uses these digests now (see `coord`).
    fn touch<'a>(&self, digests: impl IntoIterator<Item = &'a berth_oci::Digest>) -> Result<()> {
        self.coord.touch(&mut digests.into_iter())
    }

    /// Runs `delete` unless `d` is protected (see [`Coordination::sweep`]); returns what it
    /// returned, or `None` when it kept `d`.
    fn sweep_one<T>(
        &self,
        d: &berth_oci::Digest,
        cutoff: std::time::SystemTime,
        delete: impl FnOnce() -> T,
    ) -> Result<Option<T>> {
        let mut delete = Some(delete);
        let mut out = None;
        self.coord.sweep(std::slice::from_ref(d), cutoff, &mut |doomed| {
            if !doomed.is_empty()
                && let Some(f) = delete.take()
            {
                out = Some(f());
            }
        })?;
        Ok(out)
    }

    /// Runs `delete` once on those of `digests` that are not protected; returns them and what
    /// it returned.
    fn sweep_many<T>(
        &self,
        digests: &[berth_oci::Digest],
        cutoff: std::time::SystemTime,
        delete: impl FnOnce(&[berth_oci::Digest]) -> T,
    ) -> Result<(Vec<berth_oci::Digest>, T)> {
        let mut delete = Some(delete);
        let mut out = None;
        let swept = self.coord.sweep(digests, cutoff, &mut |doomed| {
            if let Some(f) = delete.take() {
                out = Some(f(doomed));
            }
        })?;
        let out = out.unwrap_or_else(|| unreachable!("Coordination::sweep runs delete once"));
        Ok((swept, out))
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
