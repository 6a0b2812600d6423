//! Blobs as a repository sees them: content in the shared blob store, visible in a repository
//! only through that repository's `_layers` link.
//!
//! Never removes blob data (only GC may); never trusts a cache to say a blob exists.

use berth_oci::{Digest, RepoName};
use berth_storage::{BackendExt, ObjectReader, layout};

use crate::Registry;
use crate::error::{RegistryError, Result, storage};

/// An open blob, positioned at the requested offset.
#[derive(Debug)]
pub struct BlobReader {
    /// The bytes from the offset on.
    pub reader: ObjectReader,
    /// The blob's whole size.
    pub size: u64,
}

impl Registry {
    /// The size of a blob linked into `name`; `BlobUnknown` when it is not linked there or its
    /// data is gone.
    pub fn blob_stat(&self, name: &RepoName, digest: &Digest) -> Result<u64> {
        if !self.layer_linked(name, digest)? {
            return Err(RegistryError::BlobUnknown { digest: digest.clone() });
        }
        let size = self.blob_size(digest)?.ok_or_else(|| RegistryError::BlobUnknown { digest: digest.clone() })?;
        // A client told a blob exists is likely to name it in a manifest next: keep it for the
        // grace period. Only blobs that exist are recorded, so random HEADs cost no memory.
        self.touch_read(digest);
        Ok(size)
    }

    /// Opens a blob linked into `name` at `offset`.
    pub fn blob_open(&self, name: &RepoName, digest: &Digest, offset: u64) -> Result<BlobReader> {
        if !self.layer_linked(name, digest)? {
            return Err(RegistryError::BlobUnknown { digest: digest.clone() });
        }
        match self.store().open(&layout::blob_data(digest), offset) {
            Ok((reader, size)) => {
                self.touch_read(digest);
                Ok(BlobReader { reader, size })
            }
            Err(e) if e.is_not_found() => Err(RegistryError::BlobUnknown { digest: digest.clone() }),
            Err(e) => Err(storage(e)),
        }
    }

    /// A URL the client may fetch the blob from directly (an object store's presigned URL,
    /// valid for `valid`), once the repository is known to hold it; `None` when the store
    /// cannot make one.
    pub fn blob_redirect(
        &self,
        name: &RepoName,
        digest: &Digest,
        valid: std::time::Duration,
    ) -> Result<Option<String>> {
        if !self.layer_linked(name, digest)? {
            return Err(RegistryError::BlobUnknown { digest: digest.clone() });
        }
        let key = layout::blob_data(digest);
        let Some(url) = self.store().presigned_get(&key, valid) else { return Ok(None) };
        if self.blob_size(digest)?.is_none() {
            return Err(RegistryError::BlobUnknown { digest: digest.clone() });
        }
        self.touch_read(digest);
        Ok(Some(url))
    }

    /// The size of the blob data, if present in the shared store.
    pub(crate) fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        Ok(self.store().stat_opt(&layout::blob_data(digest)).map_err(storage)?.map(|m| m.size))
    }
}

impl Registry {
    /// Records a read of `digest` (a HEAD or GET found it). When the touch cannot be recorded
    /// (the coordination database is down) the read is still answered: a touch on read only
    /// spares a client that pushes a manifest naming the blob soon after, and that push
    /// touches (and checks) again itself.
    fn touch_read(&self, digest: &Digest) {
        if let Err(e) = self.touch([digest]) {
            tracing::warn!(%digest, error = %e, "could not record a blob read");
        }
    }
}
