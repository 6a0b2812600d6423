//! Where Berth's bytes live: a key/bytes [`Backend`] contract with its conveniences
//! ([`BackendExt`]), the filesystem backend [`FsBackend`], the object-store backend
//! [`S3Backend`] (an S3 bucket in Distribution's `s3` driver layout), the factory that opens a backend from
//! configuration ([`StorageConfig`]), the root lock ([`RootLock`]), and [`layout`], the one
//! module that knows CNCF Distribution's on-disk layout.
//!
//! The trait is deliberately not a filesystem interface. It speaks of keys and whole objects
//! with a written contract (see [`Backend`]) that an object store implements too; the
//! registry's meaning (manifests, tags, links) is built once above it, in `berth-registry`.
//! The trait is synchronous: the filesystem is, and callers run it on blocking threads.
//!
//! Architecture invariant: nothing here knows HTTP, manifests or tags beyond the key names that
//! [`layout`] builds from validated `berth-oci` types, and no key can leave the root ([`Key`]).
#![warn(missing_docs)]

mod backend;
mod error;
mod ext;
mod factory;
mod fs;
mod key;
pub mod layout;
mod lock;
mod s3;

#[cfg(any(test, feature = "conformance"))]
pub mod testservers;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use backend::{Backend, Meta, ObjectReader, ObjectWriter};
pub use error::StorageError;
pub use ext::BackendExt;
pub use factory::StorageConfig;
pub use fs::{FsBackend, FsOptions};
pub use key::Key;
pub use lock::{ReplicasLease, RootLock};
pub use s3::{S3Backend, S3Options};

/// Result of a storage operation.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
