//! Storage failures, each naming the key it concerns.

use crate::key::Key;

/// A storage operation that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No object at this key.
    #[error("{key}: not found")]
    NotFound {
        /// The key.
        key: Key,
    },
    /// The key does not satisfy [`Key`]'s rules.
    #[error("invalid storage key {key:?}: {reason}")]
    InvalidKey {
        /// The rejected key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// The underlying store failed.
    #[error("{key}: {source}")]
    Io {
        /// The key.
        key: Key,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Something the store cannot work without is unreachable (the database that indexes it):
    /// nothing was changed that a retry would not redo.
    #[error("{key}: {reason}")]
    Unavailable {
        /// The key.
        key: Key,
        /// What failed.
        reason: String,
    },
}

impl StorageError {
    /// Whether this says the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }

    /// Whether the store ran out of space (a full disk or a quota): not a fault of the
    /// request, and over once space is freed.
    pub fn is_out_of_space(&self) -> bool {
        matches!(self, StorageError::Io { source, .. }
            if matches!(source.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded))
    }
}
