//! The one place a backend is chosen and opened from configuration, used by `berth serve` and
//! by the management commands alike. The filesystem is the embedded default; the object-store
//! backend will be a second arm of [`StorageConfig`].

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::backend::Backend;
use crate::fs::{FsBackend, FsOptions};
use crate::lock::RootLock;

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
}

impl StorageConfig {
    /// Opens the backend (creating an empty filesystem root if needed).
    pub fn open(&self) -> io::Result<Arc<dyn Backend>> {
        match self {
            StorageConfig::Filesystem { root, fsync } => {
                Ok(Arc::new(FsBackend::open(root, FsOptions { fsync: *fsync })?))
            }
        }
    }

    /// Takes the root's exclusive lock for `holder` (see [`RootLock`]); `Ok(Err(who))` when
    /// someone else holds it.
    pub fn lock(&self, holder: &str) -> io::Result<Result<RootLock, String>> {
        match self {
            StorageConfig::Filesystem { root, .. } => RootLock::try_acquire(root, holder),
        }
    }

    /// Whether a registry root is already there (so a command given a wrong path says so
    /// instead of creating an empty root).
    pub fn holds_a_root(&self) -> bool {
        match self {
            StorageConfig::Filesystem { root, .. } => {
                root.join("docker/registry/v2").is_dir() || root.join("berth").is_dir()
            }
        }
    }

    /// Where it is, for messages and logs.
    pub fn describe(&self) -> String {
        match self {
            StorageConfig::Filesystem { root, .. } => root.display().to_string(),
        }
    }
}
