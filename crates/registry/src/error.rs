//! `RegistryError`: what can go wrong in the registry core, in the distribution spec's words.
//!
//! Each variant corresponds to one spec error code (the server maps them in one place).
//! Storage failures are converted where their meaning is known — a missing link is
//! `ManifestUnknown` in `manifests` and `BlobUnknown` in `blobs` — and otherwise wrapped as
//! [`RegistryError::Storage`], which is never the client's fault.

use berth_oci::{Digest, ParseError, RepoName};
use berth_storage::StorageError;

/// A failed registry operation.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Client input that failed validation (name, tag, digest, upload id, manifest).
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The blob is not known in this repository.
    #[error("blob {digest} is not known in this repository")]
    BlobUnknown {
        /// The digest asked for.
        digest: Digest,
    },
    /// The upload cannot continue as asked.
    #[error("{reason}")]
    BlobUploadInvalid {
        /// Why.
        reason: String,
    },
    /// The upload session does not exist (never did, finished, or cancelled).
    #[error("upload {id} is not known")]
    BlobUploadUnknown {
        /// The upload id.
        id: String,
    },
    /// Content does not match the digest it was sent under.
    #[error("{reason}")]
    DigestInvalid {
        /// Why, naming both digests.
        reason: String,
    },
    /// A manifest references content that is not in the repository.
    #[error("the manifest references content that is not in this repository: {}", list(.digests))]
    ManifestBlobUnknown {
        /// Every missing digest.
        digests: Vec<Digest>,
    },
    /// The manifest is not acceptable (structure, media type).
    #[error("{reason}")]
    ManifestInvalid {
        /// Why.
        reason: String,
    },
    /// No manifest under this tag or digest in this repository.
    #[error("manifest {reference} is not known in {name}")]
    ManifestUnknown {
        /// The repository.
        name: RepoName,
        /// The tag or digest asked for.
        reference: String,
    },
    /// The repository does not exist.
    #[error("repository {name} is not known")]
    NameUnknown {
        /// The repository.
        name: RepoName,
    },
    /// A size is out of bounds (manifest too large, length mismatch).
    #[error("{reason}")]
    SizeInvalid {
        /// Why.
        reason: String,
        /// Whether the body was too large (413) rather than inconsistent (400).
        too_large: bool,
    },
    /// A chunk's `Content-Range` does not continue the upload where it stands.
    #[error("{reason}")]
    RangeInvalid {
        /// Why, with the current offset.
        reason: String,
        /// Bytes received so far, for the `Range` header of the answer.
        offset: u64,
    },
    /// A requested byte range of a blob lies outside it.
    #[error("range not satisfiable: the blob has {size} bytes")]
    RangeNotSatisfiable {
        /// The blob's size, for `Content-Range: bytes */<size>`.
        size: u64,
    },
    /// The operation is switched off or not implemented.
    #[error("{what}")]
    Unsupported {
        /// What.
        what: String,
    },
    /// The operation is refused because it would break something (and may be forced).
    #[error("{reason}")]
    Denied {
        /// Why.
        reason: String,
    },
    /// The operation would break an image that stays (and may be forced).
    #[error("{reason}")]
    InUse {
        /// What would break.
        reason: String,
    },
    /// The operation would overwrite something changed since (and may be forced).
    #[error("{reason}")]
    Conflict {
        /// What would be overwritten.
        reason: String,
    },
    /// No such trash entry.
    #[error("no trash entry {id}")]
    TrashUnknown {
        /// The id or description asked for.
        id: String,
    },
    /// A restore cannot bring the content back whole; nothing was changed.
    #[error("cannot restore {id}: content is gone from the blob store: {}", list(.missing))]
    RestoreIncomplete {
        /// The entry.
        id: String,
        /// Every digest that is gone.
        missing: Vec<Digest>,
    },
    /// A record of Berth's own is unreadable.
    #[error("{what} is unreadable: {reason}")]
    Corrupt {
        /// Which record.
        what: String,
        /// Why.
        reason: String,
    },
    /// Storage failed underneath; not the client's fault.
    #[error("storage failure")]
    Storage(#[source] StorageError),
    /// The store is out of space; what the operation wrote was removed again. Over once space
    /// is freed (deletes and GC), with no restart.
    #[error("the registry's storage is full; try again once space has been freed")]
    StorageFull(#[source] StorageError),
    /// The processes serving the root could not coordinate (their database is unreachable):
    /// the operation stopped before any change another process could trip over; retry.
    #[error("the registry cannot reach its coordination database: {reason}")]
    Unavailable {
        /// What failed.
        reason: String,
    },
    /// Reading the request body failed midway.
    #[error("reading the request body failed: {0}")]
    Body(#[source] std::io::Error),
}

fn list(digests: &[Digest]) -> String {
    digests.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
}

/// Result of a registry operation.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Wraps a storage failure whose meaning is "the store broke" (or is full), never "not found".
pub(crate) fn storage(e: StorageError) -> RegistryError {
    match e {
        StorageError::Unavailable { reason, .. } => RegistryError::Unavailable { reason },
        e if e.is_out_of_space() => RegistryError::StorageFull(e),
        e => RegistryError::Storage(e),
    }
}
