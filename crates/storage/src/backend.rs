//! The storage contract every backend implements.

use std::fmt;
use std::io::Read;
use std::time::SystemTime;

use crate::Result;
use crate::key::Key;

/// What [`Backend::stat`] knows about an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Size in bytes.
    pub size: u64,
    /// Last modification time.
    pub modified: SystemTime,
}

/// An open object, positioned at the offset asked for.
pub enum ObjectReader {
    /// A local file (the filesystem backend), so that a server may hand it to the kernel
    /// (`sendfile(2)`) instead of copying it through user space.
    File(std::fs::File),
    /// Any other byte stream.
    Stream(Box<dyn Read + Send>),
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            ObjectReader::File(f) => f.read(buf),
            ObjectReader::Stream(s) => s.read(buf),
        }
    }
}

impl fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectReader::File(file) => f.debug_tuple("File").field(file).finish(),
            ObjectReader::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// A key/bytes store.
///
/// # Contract
///
/// Written so that both a filesystem and an object store (S3: no appends, no rename, no
/// folders, listings by prefix in pages) can keep it; the conformance suite checks it on both.
///
/// - **Atomic writes.** [`put`](Backend::put), [`put_if_absent`](Backend::put_if_absent) and
///   [`rename`](Backend::rename) make an object appear whole or not at all; no reader ever sees
///   a partial object at its final key, even after a crash. A successful return means the data
///   is durable.
/// - **Put-if-absent** never overwrites what it can see, and reports whether it wrote. It is
///   atomic against a concurrent writer only on the filesystem (object stores such as Garage
///   ignore conditional writes), so it is used only for content-addressed keys, where two
///   writers write the same bytes.
/// - **Staged objects.** [`writer`](Backend::writer) appends to an object; appends survive a
///   restart (a later writer continues at the end). A staged object reads back (`get`, `open`,
///   `stat`) as everything appended, lists under its own name, and [`rename`](Backend::rename)
///   moves it into place whole. It is meant for upload staging areas and append-only logs,
///   never for keys a reader trusts before the rename.
/// - **Listing** returns the names of the immediate children of a prefix, sorted bytewise,
///   after `start_after`, at most `limit`; a prefix with nothing below it lists as empty.
///   Folders exist only as the prefixes of objects: [`prune_empty`](Backend::prune_empty) and
///   [`remove_empty_folder`](Backend::remove_empty_folder) tidy stores that have them.
/// - **Deleting** a missing key is not an error; it returns `false`.
/// - **Keys** are [`Key`]s, so they cannot name anything outside the store.
/// - No temporary object is left behind by a successful or failed call.
pub trait Backend: Send + Sync + fmt::Debug {
    /// Reads a whole object. Meant for small objects: links and manifests.
    fn get(&self, key: &Key) -> Result<Vec<u8>>;

    /// Opens an object for streaming from `offset`; returns the reader and the object's size.
    fn open(&self, key: &Key, offset: u64) -> Result<(ObjectReader, u64)>;

    /// Size and modification time of an object.
    fn stat(&self, key: &Key) -> Result<Meta>;

    /// Writes an object atomically, replacing any previous one.
    fn put(&self, key: &Key, data: &[u8]) -> Result<()>;

    /// Writes an object atomically unless one exists; returns whether it wrote.
    fn put_if_absent(&self, key: &Key, data: &[u8]) -> Result<bool>;

    /// Opens a staged object for appending, creating it empty if absent.
    fn writer(&self, key: &Key) -> Result<Box<dyn ObjectWriter>>;

    /// Moves a (staged) object to `to` atomically, replacing what is there; returns its size
    /// (known on the way, and a request of its own on an object store if asked for after).
    fn rename(&self, from: &Key, to: &Key) -> Result<u64>;

    /// Deletes one object; returns whether it existed.
    fn delete(&self, key: &Key) -> Result<bool>;

    /// Deletes every object below `prefix` (and `prefix` itself); returns whether any existed.
    fn delete_prefix(&self, prefix: &Key) -> Result<bool>;

    /// Lists child names below `prefix` (see the contract).
    fn list(&self, prefix: &Key, start_after: Option<&str>, limit: usize) -> Result<Vec<String>>;

    /// Removes empty folders below `prefix`, and `prefix` itself if it ends up empty. Stores
    /// without folders do nothing. Must not remove a folder that gains an object meanwhile.
    fn prune_empty(&self, prefix: &Key) -> Result<()>;

    /// Removes the folder `prefix` if, and only if, it holds nothing (not recursive); returns
    /// whether it removed it. Stores without folders do nothing and return `false`.
    fn remove_empty_folder(&self, prefix: &Key) -> Result<bool>;

    /// Deletes plain objects (never staged ones) in as few requests as the store allows; a
    /// missing key is not an error. For bulk removal (GC), where the per-key answer of
    /// [`delete`](Backend::delete) would cost a request of its own on an object store.
    fn delete_objects(&self, keys: &[Key]) -> Result<()> {
        for k in keys {
            self.delete(k)?;
        }
        Ok(())
    }

    /// Every object below `prefix`, at any depth, as its key relative to `prefix` with its
    /// meta, in key order, when the store can list that way in one paged listing (an object
    /// store). `None` on stores where a recursive walk costs a call per folder and a stat per
    /// file (a filesystem): callers then list and stat only what they need.
    fn list_objects(&self, prefix: &Key) -> Result<Option<Vec<(String, Meta)>>> {
        let _ = prefix;
        Ok(None)
    }

    /// Whether the store has folders that must be removed once emptied (a filesystem). Without
    /// folders, removing an object's last file leaves nothing behind to tidy.
    fn has_folders(&self) -> bool {
        true
    }

    /// How many calls a bulk walk (GC, accounting) should keep in flight. A filesystem is
    /// limited by the disk and the CPU; an object store by the round trip of each request.
    fn parallelism(&self) -> usize {
        8
    }

    /// Requests sent to the store since it was opened, when the store counts them (object
    /// stores bill and throttle by request).
    fn requests(&self) -> Option<u64> {
        None
    }

    /// A URL from which anyone may GET `key` for `valid`, without credentials, when the store
    /// can make one (an object store's presigned URL); `None` otherwise. It does not check that
    /// the object exists.
    fn presigned_get(&self, key: &Key, valid: std::time::Duration) -> Option<String> {
        let _ = (key, valid);
        None
    }
}

/// Appends to a staged object.
pub trait ObjectWriter: Send {
    /// Appends bytes.
    fn write_all(&mut self, buf: &[u8]) -> Result<()>;

    /// The object's size so far.
    fn size(&self) -> u64;

    /// Makes everything written durable.
    fn commit(self: Box<Self>) -> Result<u64>;
}
