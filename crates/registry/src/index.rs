//! The metadata index: what a root's links say (repositories, tags, manifests, layer links,
//! uploads, blobs), kept in a database beside the store so that GC's mark, accounting and the
//! catalog read it instead of listing the store.
//!
//! [`MetaIndex`] is the read side and the reconciliation with the store; the write side is not
//! here. An implementation keeps the index in step by watching the store's writes themselves
//! (`berth-db` wraps the [`Backend`](berth_storage::Backend)), so no mutation path of the
//! registry can forget it. It follows one rule, on which GC's safety rests:
//!
//! **The index never lacks a link the store has.** A link's row is written before the link,
//! and removed after it. The index may hold a link the store no longer has (a crash between
//! the two steps): GC then keeps a little too much, until `fsck --repair` or `berth db import`
//! reconcile. Blob rows are written after the data (they carry its size); a blob the index
//! lacks is never swept through the index (a leak, found by reconciling), never a break.
//!
//! An index is only read once it was filled from the store ([`MetaIndex::ready`]); until then
//! everything lists the store as it does without a database. It never decides what is
//! reachable (that is `graph`'s walk), and never removes anything from the store.

use std::fmt::Debug;
use std::time::{Duration, SystemTime};

use berth_oci::{Digest, RepoName, Tag, UploadId};

use crate::error::Result;

/// One repository as the index holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedRepo {
    /// Its name.
    pub name: RepoName,
    /// Its tags and where they point.
    pub tags: Vec<(Tag, Digest)>,
    /// Its manifests (revision links), each with how long ago its link was written (a tag
    /// moving off a manifest rewrites it: GC's untagged policy counts from there).
    pub revisions: Vec<(Digest, Duration)>,
    /// Its layer links.
    pub layers: Vec<Digest>,
    /// Its uploads in progress.
    pub uploads: Vec<UploadId>,
}

/// What a manifest references (immutable: a function of its digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedManifest {
    /// The manifest's digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Config and layer blobs.
    pub blobs: Vec<Digest>,
    /// An index's child manifests.
    pub children: Vec<Digest>,
    /// The manifest it refers to.
    pub subject: Option<Digest>,
}

/// A blob in the blob store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedBlob {
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// How long ago its data was written.
    pub age: Duration,
}

/// What the store holds, read by listing it: what an index is reconciled with.
#[derive(Debug, Default)]
pub struct StoreSnapshot {
    /// Every repository folder and its links; revision ages from the links' times.
    pub repos: Vec<IndexedRepo>,
    /// Every blob with data.
    pub blobs: Vec<IndexedBlob>,
    /// What each manifest the links name references, where it could be read.
    pub manifests: Vec<IndexedManifest>,
}

/// How far an index was from the store, per kind of row: rows the store has and the index
/// lacked (`missing`), rows the index had and the store lacks (`extra`), tags pointing
/// elsewhere (`changed`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct IndexDiff {
    /// By kind (`tags`, `revisions`, `layers`, `uploads`, `blobs`): (missing, extra, changed).
    pub kinds: Vec<(String, u64, u64, u64)>,
    /// How many of each kind the listing of the store found.
    pub listed: Vec<(String, u64)>,
    /// A process without the database had written to the root since the last reconciliation
    /// (the index was not read meanwhile).
    pub stale: bool,
}

impl IndexDiff {
    /// Rows the store has that the index lacked: what could let GC through the index remove
    /// something in use (links) or never collect something (blobs).
    pub fn missing(&self) -> u64 {
        self.kinds.iter().map(|k| k.1 + k.3).sum()
    }

    /// Every difference.
    pub fn total(&self) -> u64 {
        self.kinds.iter().map(|k| k.1 + k.2 + k.3).sum()
    }
}

/// An index of a root's links kept beside the store (see the module docs).
pub trait MetaIndex: Send + Sync + Debug {
    /// Whether the index was filled from the store and may stand in for listing it.
    fn ready(&self) -> Result<bool>;
    /// Every repository with a row of any kind, sorted by name.
    fn repos(&self) -> Result<Vec<IndexedRepo>>;
    /// Repositories holding a tag or a manifest, sorted (the catalog).
    fn repository_names(&self) -> Result<Vec<String>>;
    /// Which of `names` hold a tag or a manifest (in the order given).
    fn holding(&self, names: &[RepoName]) -> Result<Vec<bool>>;
    /// Every manifest whose references the index knows.
    fn manifests(&self) -> Result<Vec<IndexedManifest>>;
    /// Records what manifests reference (read from the store where the index lacked them).
    fn add_manifests(&self, manifests: &[IndexedManifest]) -> Result<()>;
    /// Every blob with data.
    fn blobs(&self) -> Result<Vec<IndexedBlob>>;
    /// The database's clock now: what a snapshot of the store taken from here on is measured
    /// against by [`reconcile`](MetaIndex::reconcile).
    fn now(&self) -> Result<SystemTime>;
    /// Makes the index agree with `store`, listed from `since` on (see [`MetaIndex::now`]);
    /// with `apply` false, only counts. Rows missing from the index are added. Rows the store
    /// lacks are removed only if written well before `since` (a row is written just before its
    /// link: a younger one may be a write the listing missed). Marks the index ready once
    /// applied, and not ready when a count found it lacking links the store has.
    fn reconcile(&self, store: &StoreSnapshot, since: SystemTime, apply: bool) -> Result<IndexDiff>;
}
