//! Blob uploads: sessions under `_uploads/<id>`, chunked or monolithic, and cross-repository
//! mounts.
//!
//! Bytes are streamed to the session's `data` file as they arrive and hashed on the way, so no
//! blob is ever held in memory and completion costs no second read. The running hash lives in
//! memory; after a restart, or if the file and the hash disagree, it is recomputed from the file,
//! so the file is the only truth. Completion verifies the digest, then renames the file into the
//! blob store: the blob appears whole or not at all.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use berth_oci::{Algorithm, Digest, DigestHasher, RepoName, UploadId};
use berth_storage::{BackendExt, layout};

use crate::error::{RegistryError, Result, storage};
use crate::graph::Change;
use crate::{Chunk, Registry};

/// In-memory state of the uploads this process is serving.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    map: Mutex<SessionMap>,
}

type SessionMap = HashMap<(RepoName, UploadId), Arc<Mutex<Session>>>;

/// The SHA-256 state over the first `offset` bytes of an upload's data file.
struct Session {
    hasher: Option<DigestHasher>,
    offset: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("offset", &self.offset).finish_non_exhaustive()
    }
}

impl Sessions {
    fn get(&self, name: &RepoName, id: &UploadId) -> Arc<Mutex<Session>> {
        let mut map = self.map.lock().expect("sessions lock");
        map.entry((name.clone(), id.clone()))
            .or_insert_with(|| Arc::new(Mutex::new(Session { hasher: None, offset: 0 })))
            .clone()
    }

    fn remove(&self, name: &RepoName, id: &UploadId) {
        self.map.lock().expect("sessions lock").remove(&(name.clone(), id.clone()));
    }
}

/// Bodies longer than this are hashed on a second thread while the first one writes: hashing
/// and writing each take about as long as the other, so on two cores this nearly halves the
/// time of a large upload. Small bodies are hashed inline, as a thread would cost more.
const PARALLEL_HASH_AFTER: u64 = 1 << 20;

/// Writes `body` to `w` and feeds it to `hasher`, refusing to write past `limit` bytes in all
/// (`SizeInvalid` as soon as a chunk would cross it); returns the hasher, the bytes written and
/// how the body ended. The hasher has seen exactly the bytes written, even when writing fails.
fn stream_into(
    w: &mut dyn berth_storage::ObjectWriter,
    hasher: DigestHasher,
    body: &mut dyn Iterator<Item = Chunk>,
    limit: Option<u64>,
) -> (DigestHasher, u64, Result<()>) {
    std::thread::scope(|scope| {
        let mut inline = Some(hasher);
        let mut pipe = None;
        let mut written = 0u64;
        let mut result = Ok(());
        for chunk in body {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    result = Err(RegistryError::Body(e));
                    break;
                }
            };
            if let Some(limit) = limit
                && w.size() + chunk.len() as u64 > limit
            {
                result = Err(too_large(limit));
                break;
            }
            if let Err(e) = w.write_all(&chunk) {
                result = Err(storage(e));
                break;
            }
            written += chunk.len() as u64;
            match (&mut inline, &pipe) {
                (Some(h), _) => {
                    h.update(&chunk);
                    if written >= PARALLEL_HASH_AFTER {
                        let mut h = inline.take().expect("checked");
                        let (tx, rx) = std::sync::mpsc::sync_channel::<bytes::Bytes>(8);
                        let handle = scope.spawn(move || {
                            for c in rx {
                                h.update(&c);
                            }
                            h
                        });
                        pipe = Some((tx, handle));
                    }
                }
                (None, Some((tx, _))) => {
                    // The hasher thread only stops when the sender is dropped below.
                    let _ = tx.send(chunk);
                }
                (None, None) => unreachable!("the hasher is inline or on its thread"),
            }
        }
        let hasher = match (inline, pipe) {
            (Some(h), _) => h,
            (None, Some((tx, handle))) => {
                drop(tx);
                handle.join().expect("hasher thread panicked")
            }
            (None, None) => unreachable!("the hasher is inline or on its thread"),
        };
        (hasher, written, result)
    })
}

fn too_large(limit: u64) -> RegistryError {
    RegistryError::SizeInvalid {
        reason: format!("the blob is larger than this registry accepts ({limit} bytes, berth.max_blob_bytes)"),
        too_large: true,
    }
}

/// A blob now in the store and linked into a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
}

impl Registry {
    /// Opens an upload session in `name`.
    pub fn upload_start(&self, name: &RepoName) -> Result<UploadId> {
        let id = UploadId::new_random(uuid::Uuid::new_v4().as_u128());
        let started = humantime::format_rfc3339_nanos(SystemTime::now()).to_string();
        self.store().put(&layout::upload_started(name, &id), started.as_bytes()).map_err(storage)?;
        Ok(id)
    }

    /// Bytes received so far.
    pub fn upload_status(&self, name: &RepoName, id: &UploadId) -> Result<u64> {
        self.check_upload(name, id)?;
        Ok(self.store().stat_opt(&layout::upload_data(name, id)).map_err(storage)?.map_or(0, |m| m.size))
    }

    /// Appends a chunk. With `start`, the chunk must begin exactly where the upload stands
    /// (else `RangeInvalid`, answered 416). Returns the new size.
    pub fn upload_append(
        &self,
        name: &RepoName,
        id: &UploadId,
        start: Option<u64>,
        body: &mut dyn Iterator<Item = Chunk>,
    ) -> Result<u64> {
        self.check_upload(name, id)?;
        // One append at a time, over every process serving the root (the in-memory session
        // only saves re-hashing; the stored data is the truth, see `append_locked`).
        let _upload = self.coord.lock_upload(id)?;
        let session = self.uploads.get(name, id);
        let mut s = session.lock().expect("session lock");
        let appended = self.append_locked(name, id, &mut s, start, body);
        drop(s);
        self.discard_if_hopeless(name, id, appended)
    }

    /// Finishes an upload with an optional last chunk (starting at `start`, if given); verifies
    /// `digest` and moves the data into the blob store. On a mismatch the upload is discarded
    /// and `DigestInvalid` returned.
    pub fn upload_complete(
        &self,
        name: &RepoName,
        id: &UploadId,
        digest: &Digest,
        start: Option<u64>,
        body: &mut dyn Iterator<Item = Chunk>,
    ) -> Result<BlobInfo> {
        self.check_upload(name, id)?;
        // One append at a time, over every process serving the root (the in-memory session
        // only saves re-hashing; the stored data is the truth, see `append_locked`).
        let _upload = self.coord.lock_upload(id)?;
        let session = self.uploads.get(name, id);
        let mut s = session.lock().expect("session lock");
        let size = match self.append_locked(name, id, &mut s, start, body) {
            Ok(size) => size,
            Err(e) => {
                drop(s);
                return self.discard_if_hopeless(name, id, Err(e));
            }
        };
        let data = layout::upload_data(name, id);
        let actual = match (digest.algorithm(), &s.hasher) {
            (Algorithm::Sha256, Some(h)) => h.clone().finish(),
            (alg, _) => self.hash_file(name, id, alg, size)?.0,
        };
        if &actual != digest {
            drop(s);
            self.discard_upload(name, id)?;
            return Err(RegistryError::DigestInvalid {
                reason: format!("the uploaded content has digest {actual}, not {digest}"),
            });
        }
        let committed = {
            let _inflight = self.inflight()?;
            // A cancel may have taken the session away since the check above.
            self.check_upload(name, id)
                .and_then(|()| {
                    if size == 0 {
                        // An empty blob has no data file yet; make one so it can be moved into place.
                        self.store().writer(&data).and_then(|w| w.commit()).map_err(storage)?;
                    }
                    self.commit_blob(name, digest, &data, size)
                })
                .and_then(|()| self.remove_upload_files(name, id))
        };
        drop(s);
        self.uploads.remove(name, id);
        if let Err(e) = committed {
            return self.discard_if_hopeless(name, id, Err(e));
        }
        Ok(BlobInfo { digest: digest.clone(), size })
    }

    /// Cancels an upload and deletes what it received.
    pub fn upload_cancel(&self, name: &RepoName, id: &UploadId) -> Result<()> {
        self.check_upload(name, id)?;
        self.discard_upload(name, id)
    }

    /// A monolithic upload: the whole blob in one body.
    pub fn blob_put(
        &self,
        name: &RepoName,
        digest: &Digest,
        body: &mut dyn Iterator<Item = Chunk>,
    ) -> Result<BlobInfo> {
        let id = self.upload_start(name)?;
        let result = self.upload_complete(name, &id, digest, None, body);
        if result.is_err() {
            let _ = self.discard_upload(name, &id);
        }
        result
    }

    /// Links a blob of repository `from` into `name` without copying it. Returns `false` (and
    /// changes nothing) when `from` does not hold the blob.
    pub fn blob_mount(&self, name: &RepoName, from: &RepoName, digest: &Digest) -> Result<bool> {
        let _inflight = self.inflight()?;
        self.touch([digest])?;
        let size = match self.blob_size(digest)? {
            Some(size) if self.layer_linked(from, digest)? => size,
            _ => return Ok(false),
        };
        let _share = self.repo_share(name)?;
        self.link_layer(name, digest)?;
        self.graph.note(Change::Blob { repo: name.clone(), digest: digest.clone(), size });
        Ok(true)
    }

    /// `BlobUploadUnknown` unless the session exists (it may never have started, or be
    /// finished, cancelled, or purged by GC as stale).
    fn check_upload(&self, name: &RepoName, id: &UploadId) -> Result<()> {
        if self.store().exists(&layout::upload_started(name, id)).map_err(storage)? {
            Ok(())
        } else {
            self.uploads.remove(name, id);
            Err(RegistryError::BlobUploadUnknown { id: id.to_string() })
        }
    }

    /// Passes `result` on; when it says the upload cannot go on (too large, or the disk is
    /// full), removes its data at once instead of leaving it until the client cancels.
    fn discard_if_hopeless<T>(&self, name: &RepoName, id: &UploadId, result: Result<T>) -> Result<T> {
        if let Err(RegistryError::SizeInvalid { too_large: true, .. } | RegistryError::StorageFull(_)) = &result
            && let Err(e) = self.discard_upload(name, id)
        {
            tracing::warn!(upload = %id, error = %e, "could not remove the data of a refused upload");
        }
        result
    }

    fn append_locked(
        &self,
        name: &RepoName,
        id: &UploadId,
        s: &mut Session,
        start: Option<u64>,
        body: &mut dyn Iterator<Item = Chunk>,
    ) -> Result<u64> {
        let data = layout::upload_data(name, id);
        self.check_upload(name, id)?;
        let mut w = self.store().writer(&data).map_err(storage)?;
        let size = w.size();
        if s.hasher.is_none() || s.offset != size {
            // Restarted, or a previous write failed midway: the file is the truth.
            let (_, h) = self.hash_file(name, id, Algorithm::Sha256, size)?;
            s.hasher = Some(h);
            s.offset = size;
        }
        if let Some(start) = start
            && start != size
        {
            return Err(RegistryError::RangeInvalid {
                reason: format!("the chunk starts at byte {start}, but the upload holds {size} bytes"),
                offset: size,
            });
        }
        let limit = self.config().max_blob_bytes;
        if let Some(limit) = limit
            && size > limit
        {
            return Err(too_large(limit));
        }
        let hasher = s.hasher.take().expect("set above");
        let (hasher, written, result) = stream_into(&mut *w, hasher, body, limit);
        s.hasher = Some(hasher);
        s.offset += written;
        result?;
        w.commit().map_err(storage)
    }

    /// Hashes the first `len` bytes of an upload's data; returns the digest and the hasher.
    fn hash_file(&self, name: &RepoName, id: &UploadId, alg: Algorithm, len: u64) -> Result<(Digest, DigestHasher)> {
        let key = layout::upload_data(name, id);
        let gone = || RegistryError::BlobUploadUnknown { id: id.to_string() };
        let mut h = DigestHasher::new(alg);
        if len > 0 {
            let (r, _) = match self.store().open(&key, 0) {
                Ok(x) => x,
                Err(e) if e.is_not_found() => return Err(gone()),
                Err(e) => return Err(storage(e)),
            };
            let mut r = r.take(len);
            let mut buf = vec![0u8; 1 << 20];
            let mut read = 0u64;
            loop {
                let n = r
                    .read(&mut buf)
                    .map_err(|e| storage(berth_storage::StorageError::Io { key: key.clone(), source: e }))?;
                if n == 0 {
                    break;
                }
                read += n as u64;
                h.update(&buf[..n]);
            }
            if read < len {
                // Shorter than it was a moment ago: a cancel took the session away.
                return Err(gone());
            }
        }
        Ok((h.clone().finish(), h))
    }

    /// Moves verified upload data into the blob store (unless already there) and links it.
    fn commit_blob(&self, name: &RepoName, digest: &Digest, data: &berth_storage::Key, size: u64) -> Result<()> {
        // Touch before looking: if GC removes an old copy after this, it saw the touch first;
        // if it removed it before, the check below finds it gone and renames ours in.
        self.touch([digest])?;
        if self.blob_size(digest)?.is_none() {
            self.store().rename(data, &layout::blob_data(digest)).map_err(storage)?;
        }
        let _share = self.repo_share(name)?;
        self.link_layer(name, digest)?;
        self.graph.note(Change::Blob { repo: name.clone(), digest: digest.clone(), size });
        Ok(())
    }

    /// Forgets the in-memory state of an upload that GC removed.
    pub(crate) fn forget_upload(&self, name: &RepoName, id: &UploadId) {
        self.uploads.remove(name, id);
    }

    fn discard_upload(&self, name: &RepoName, id: &UploadId) -> Result<()> {
        self.uploads.remove(name, id);
        self.remove_upload_files(name, id)
    }

    fn remove_upload_files(&self, name: &RepoName, id: &UploadId) -> Result<()> {
        self.store().delete_prefix(&layout::upload_dir(name, id)).map_err(storage)?;
        Ok(())
    }
}
