//! The one place a backend is chosen and opened from configuration, used by `berth serve` and
//! by the management commands alike: the filesystem (the embedded default) or an S3 bucket.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::backend::Backend;
use crate::ext::BackendExt;
use crate::fs::{FsBackend, FsOptions};
use crate::key::Key;
use crate::layout;
use crate::lock::{ReplicasLease, RootLock};
use crate::s3::{S3Backend, S3Options};

/// Which backend, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageConfig {
    /// A folder on a local filesystem.
    Filesystem {
        /// The root folder.
        root: PathBuf,
        /// fsync every write before acknowledging it.
        fsync: bool,
    },
    /// An S3 bucket, in the layout of Distribution's `s3` driver.
    S3(Box<S3Options>),
}

impl StorageConfig {
    /// Opens the backend (creating an empty filesystem root if needed; checking that a bucket
    /// answers and takes the credentials).
    pub fn open(&self) -> io::Result<Arc<dyn Backend>> {
        match self {
            StorageConfig::Filesystem { root, fsync } => {
                Ok(Arc::new(FsBackend::open(root, FsOptions { fsync: *fsync })?))
            }
            StorageConfig::S3(o) => {
                let b = S3Backend::open(o)?;
                b.check()?;
                Ok(Arc::new(b))
            }
        }
    }

    /// Takes the root's exclusive lock for `holder` (see [`RootLock`]); `Ok(Err(who))` when
    /// someone else holds it.
    pub fn lock(&self, holder: &str) -> io::Result<Result<RootLock, String>> {
        // Replicas that coordinate through a database take no root lock; their lease stands
        // for them. Looked at once the lock is held: a replica writes its lease before it
        // looks at the lock, so of two starting at once, at least one sees the other.
        let lock = match self.lock_root(holder)? {
            Ok(lock) => lock,
            Err(who) => return Ok(Err(who)),
        };
        let store = self.open()?;
        if let Some(replicas) = RootLock::replicas_holder(&*store)? {
            drop(lock);
            return Ok(Err(replicas));
        }
        // Replicas keep a metadata index of this root in their database; what this process
        // writes will not be in it, so it is not to be trusted until reconciled.
        if store.exists(&layout::index_marker()).map_err(io::Error::other)? {
            store.put(&layout::index_stale(), holder.as_bytes()).map_err(io::Error::other)?;
        }
        Ok(Ok(lock))
    }

    fn lock_root(&self, holder: &str) -> io::Result<Result<RootLock, String>> {
        match self {
            StorageConfig::Filesystem { root, .. } => RootLock::try_acquire(root, holder),
            // The bucket is checked when the backend is opened; the lease needs no second check.
            StorageConfig::S3(o) => RootLock::lease(Arc::new(S3Backend::open(o)?), holder),
        }
    }

    /// For a replica coordinated through a database: holds the replicas' lease naming `holder`
    /// (see [`ReplicasLease`]), which keeps processes without the database out from now on;
    /// then refuses (`Ok(Err(who))`) if one of them holds the root already.
    pub fn replicas_lease(&self, holder: &str) -> io::Result<Result<ReplicasLease, String>> {
        const PROBE: &str = "a replica checking the root lock";
        let store = self.open()?;
        let lease = ReplicasLease::hold(store.clone(), holder)?;
        match self {
            StorageConfig::Filesystem { .. } => match self.lock_root(PROBE)? {
                Ok(lock) => drop(lock),
                // Another replica starting at the same moment.
                Err(who) if who.starts_with(PROBE) => {}
                Err(who) => return Ok(Err(who)),
            },
            // Reading the root's lease is enough: a process without the database takes it
            // before it looks at this one (see `lock`). Taking it would cost its settling
            // time on every start of a replica or a command.
            StorageConfig::S3(_) => {
                if let Some(who) = RootLock::lease_holder(&*store)? {
                    return Ok(Err(who));
                }
            }
        }
        Ok(Ok(lease))
    }

    /// Whether a registry root is already there (so a command given a wrong path says so
    /// instead of creating an empty root).
    pub fn holds_a_root(&self) -> bool {
        match self {
            StorageConfig::Filesystem { root, .. } => {
                root.join("docker/registry/v2").is_dir() || root.join("berth").is_dir()
            }
            StorageConfig::S3(_) => self.open().is_ok_and(|b| {
                ["docker/registry/v2", "berth"]
                    .iter()
                    .any(|p| Key::new(*p).is_ok_and(|k| b.any_below(&k).unwrap_or(false)))
            }),
        }
    }

    /// For an object store, whether it honours conditional writes (for the log at start:
    /// Berth never relies on them); `None` for the filesystem.
    pub fn probe_conditional_writes(&self) -> Option<io::Result<bool>> {
        match self {
            StorageConfig::Filesystem { .. } => None,
            StorageConfig::S3(o) => Some(S3Backend::open(o).and_then(|b| b.conditional_writes())),
        }
    }

    /// Where it is, for messages and logs.
    pub fn describe(&self) -> String {
        match self {
            StorageConfig::Filesystem { root, .. } => root.display().to_string(),
            StorageConfig::S3(o) => o.describe(),
        }
    }
}
