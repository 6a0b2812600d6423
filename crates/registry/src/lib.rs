//! The registry core: what it means to hold blobs, uploads, manifests, tags and repositories on
//! a [`Backend`], independent of any transport.
//!
//! [`Registry`] is the handle every shell (HTTP server, CLI) uses. Its methods take validated
//! `berth-oci` types and return [`RegistryError`]s in the distribution spec's vocabulary.
//! Everything here is synchronous; callers run it on blocking threads.
//!
//! Modules are declared in layer order; each uses only those before it:
//! `blobs`, `uploads`, `manifests`, `tags`, `catalog`, `referrers` (the core).
//!
//! Architecture invariants: this crate has no HTTP dependency and never builds a storage path
//! itself (it asks `berth_storage::layout`); a cache here may say a manifest's bytes are
//! known, but never that a blob exists — existence is always asked of the backend.

mod blobs;
mod cache;
mod catalog;
mod error;
mod manifests;
mod referrers;
mod tags;
mod uploads;

use std::sync::Arc;

pub use berth_storage::{Backend, StorageError};
pub use blobs::BlobReader;
pub use catalog::Page;
pub use error::{RegistryError, Result};
pub use manifests::{PutManifest, StoredManifest};
pub use referrers::Referrer;
pub use uploads::BlobInfo;

/// A chunk of a request body, as the transport delivers it.
pub type Chunk = std::io::Result<bytes::Bytes>;

/// Limits and switches of the registry core.
#[derive(Debug, Clone)]
pub struct Config {
    /// The largest manifest accepted, in bytes.
    pub max_manifest_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { max_manifest_bytes: 4 << 20 }
    }
}

/// The registry: one storage root and the in-memory state that serves it.
#[derive(Debug)]
pub struct Registry {
    backend: Arc<dyn Backend>,
    config: Config,
    uploads: uploads::Sessions,
    manifests: cache::ManifestCache,
    catalog: catalog::CatalogCache,
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
        }
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
