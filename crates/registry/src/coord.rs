//! What the processes serving one root must agree on: the locks on repositories, the in-flight
//! gate, one GC at a time, the touched set, and whether what a process remembers of a
//! repository is still current.
//!
//! [`Coordination`] is the contract; [`Local`] keeps it in this process's memory, which is
//! right while one process holds the root (the root lock or lease sees to that). Several
//! replicas on one bucket use an implementation that keeps it in PostgreSQL (`berth-db`).
//! The registry asks this module and never assumes which one it has.
//!
//! The contract, for any implementation:
//! - a touch is recorded (visible to every process's GC) before `touch` returns; a sweep runs
//!   its delete only if none of its digests is protected, and no touch of them completes while
//!   it runs (so a push either sees the blob gone or the sweep sees the touch);
//! - `wait_inflight` returns only once every operation that entered the gate before it was
//!   called, in any process, has left it;
//! - `generation(repo)` changes (to a value it never had) whenever any process calls
//!   `changed(repo)`; a value read after `changed` returned differs from every value read
//!   before it began.
//!
//! It must never decide what is reachable or remove anything itself: it only orders.

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::{Mutex, RwLock};
use std::time::SystemTime;

use berth_oci::{Digest, RepoName, UploadId};

use crate::error::Result;
use crate::touched::Touched;

/// A held lock or gate; released when dropped.
pub struct Held<'a>(#[allow(dead_code)] Box<dyn Release + 'a>);

/// Anything that releases on drop.
pub trait Release {}
impl<T> Release for T {}

impl<'a> Held<'a> {
    /// Wraps a guard.
    pub fn new(guard: impl Release + 'a) -> Held<'a> {
        Held(Box::new(guard))
    }
}

impl Debug for Held<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Held")
    }
}

/// Locks, the gate, the touched set and change generations (see the module docs).
pub trait Coordination: Send + Sync + Debug {
    /// A repository's tags and manifests, exclusively (push, delete, restore).
    fn lock_repo(&self, name: &RepoName) -> Result<Held<'_>>;
    /// A repository, shared: creating a layer link or a referrer entry.
    fn share_repo(&self, name: &RepoName) -> Result<Held<'_>>;
    /// One upload session: its appends and its completion are one at a time.
    fn lock_upload(&self, id: &UploadId) -> Result<Held<'_>>;
    /// Entered by every operation from its first touch until its links are written.
    fn enter(&self) -> Result<Held<'_>>;
    /// Returns once every operation in the gate when it was called has left it.
    fn wait_inflight(&self) -> Result<()>;
    /// One GC at a time, over every process; waits for a running one.
    fn lock_gc(&self) -> Result<Held<'_>>;

    /// Records that a client uses these digests now.
    fn touch(&self, digests: &mut dyn Iterator<Item = &Digest>) -> Result<()>;
    /// Forgets touches of digests that turned out not to exist.
    fn forget(&self, digests: &[Digest]);
    /// Starts recording everything touched for a GC; touches older than `forget_before` may
    /// be forgotten.
    fn gc_begin(&self, forget_before: SystemTime) -> Result<()>;
    /// Stops recording.
    fn gc_end(&self);
    /// Whether `d` was touched at or after `cutoff`, or since the running GC began.
    fn protected(&self, d: &Digest, cutoff: SystemTime) -> Result<bool>;
    /// Every digest touched at or after `cutoff` or since the running GC began.
    fn recent(&self, cutoff: SystemTime) -> Result<HashSet<Digest>>;
    /// Runs `delete` on those of `digests` that are not protected, no touch of them completing
    /// meanwhile; returns them. `digests` should share a blob folder (one lock stripe).
    fn sweep(&self, digests: &[Digest], cutoff: SystemTime, delete: &mut dyn FnMut(&[Digest])) -> Result<Vec<Digest>>;

    /// A value that changes whenever `changed(name)` is called anywhere; `None` when only this
    /// process changes the root (its own caches then need no check).
    fn generation(&self, name: &RepoName) -> Result<Option<i64>>;
    /// Says that `name`'s tags or manifests changed (after the change is stored), and whether
    /// the repository exists now.
    fn changed(&self, name: &RepoName, exists: bool) -> Result<()>;
    /// `changed` for many repositories at once (a GC's), in one round where the
    /// implementation can.
    fn changed_many(&self, changes: &[(RepoName, bool)]) -> Result<()> {
        changes.iter().try_for_each(|(name, exists)| self.changed(name, *exists))
    }
    /// Like `generation`, for the set of repositories.
    fn catalog_generation(&self) -> Result<Option<i64>>;
}

/// Repository lock stripes of [`Local`]. Never hold two at once.
const REPO_LOCK_STRIPES: usize = 64;

/// Coordination within one process: striped read-write locks for repositories, a gate, the
/// in-memory [`Touched`] set; uploads are ordered by their sessions, and generations are not
/// needed.
#[derive(Debug)]
pub struct Local {
    repos: Vec<RwLock<()>>,
    touched: Touched,
    gc: Mutex<()>,
    inflight: RwLock<()>,
}

impl Default for Local {
    fn default() -> Self {
        Local {
            repos: (0..REPO_LOCK_STRIPES).map(|_| RwLock::new(())).collect(),
            touched: Touched::default(),
            gc: Mutex::new(()),
            inflight: RwLock::new(()),
        }
    }
}

fn stripe_of(s: &str, n: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish() as usize % n
}

impl Coordination for Local {
    fn lock_repo(&self, name: &RepoName) -> Result<Held<'_>> {
        // A panic while holding a stripe leaves nothing half-done in memory worth refusing over.
        let stripe = &self.repos[stripe_of(name.as_str(), REPO_LOCK_STRIPES)];
        Ok(Held::new(stripe.write().unwrap_or_else(|e| e.into_inner())))
    }

    fn share_repo(&self, name: &RepoName) -> Result<Held<'_>> {
        let stripe = &self.repos[stripe_of(name.as_str(), REPO_LOCK_STRIPES)];
        Ok(Held::new(stripe.read().unwrap_or_else(|e| e.into_inner())))
    }

    fn lock_upload(&self, _: &UploadId) -> Result<Held<'_>> {
        // In one process an upload's in-memory session mutex already orders its appends; a
        // striped lock here would make unrelated uploads wait on each other's streams.
        Ok(Held::new(()))
    }

    fn enter(&self) -> Result<Held<'_>> {
        Ok(Held::new(self.inflight.read().unwrap_or_else(|e| e.into_inner())))
    }

    fn wait_inflight(&self) -> Result<()> {
        drop(self.inflight.write().unwrap_or_else(|e| e.into_inner()));
        Ok(())
    }

    fn lock_gc(&self) -> Result<Held<'_>> {
        Ok(Held::new(self.gc.lock().unwrap_or_else(|e| e.into_inner())))
    }

    fn touch(&self, digests: &mut dyn Iterator<Item = &Digest>) -> Result<()> {
        self.touched.touch(digests);
        Ok(())
    }

    fn forget(&self, digests: &[Digest]) {
        self.touched.forget(digests);
    }

    fn gc_begin(&self, forget_before: SystemTime) -> Result<()> {
        self.touched.gc_begin(forget_before);
        Ok(())
    }

    fn gc_end(&self) {
        self.touched.gc_end();
    }

    fn protected(&self, d: &Digest, cutoff: SystemTime) -> Result<bool> {
        Ok(self.touched.protected(d, cutoff))
    }

    fn recent(&self, cutoff: SystemTime) -> Result<HashSet<Digest>> {
        Ok(self.touched.recent(cutoff))
    }

    fn sweep(&self, digests: &[Digest], cutoff: SystemTime, delete: &mut dyn FnMut(&[Digest])) -> Result<Vec<Digest>> {
        Ok(self.touched.sweep_many_if_untouched(digests, cutoff, |d| delete(d)).0)
    }

    fn generation(&self, _: &RepoName) -> Result<Option<i64>> {
        Ok(None)
    }

    fn changed(&self, _: &RepoName, _: bool) -> Result<()> {
        Ok(())
    }

    fn catalog_generation(&self) -> Result<Option<i64>> {
        Ok(None)
    }
}
