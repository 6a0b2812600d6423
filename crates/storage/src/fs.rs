//! The filesystem backend: a [`Backend`] on a local directory.
//!
//! Atomicity comes from the classic protocol: write a temporary file under `<root>/berth/tmp`,
//! fsync it, `rename` (replace) or `link` (put-if-absent) it into place, fsync the folder.
//! Temporary files live outside Distribution's tree so neither registry ever lists them, and
//! they are on the same filesystem as the root so the final step is a rename, not a copy.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::backend::{Backend, Meta, ObjectReader, ObjectWriter};
use crate::error::StorageError;
use crate::key::Key;
use crate::{Result, layout};

/// How the filesystem backend trades durability for speed.
#[derive(Debug, Clone, Copy)]
pub struct FsOptions {
    /// fsync files and folders before a write is acknowledged. Turning it off is only for
    /// throwaway roots (some tests); a crash may then lose acknowledged writes.
    pub fsync: bool,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions { fsync: true }
    }
}

/// A [`Backend`] storing each key as a file below a root folder.
#[derive(Debug)]
pub struct FsBackend {
    root: PathBuf,
    tmp: PathBuf,
    opts: FsOptions,
    counter: AtomicU64,
}

/// Temporary files older than this are leftovers of a crash and are removed at start.
/// Generous, because another process (a CLI next to a server) may be using the same root.
const STALE_TEMP: Duration = Duration::from_secs(3600);

impl FsBackend {
    /// Opens (creating if needed) a root folder.
    pub fn open(root: impl Into<PathBuf>, opts: FsOptions) -> io::Result<FsBackend> {
        let root = root.into();
        let tmp = root.join(layout::TMP_DIR);
        fs::create_dir_all(&tmp)?;
        let backend = FsBackend { root, tmp, opts, counter: AtomicU64::new(0) };
        backend.remove_stale_temps();
        Ok(backend)
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &Key) -> PathBuf {
        // Safe: a Key has no empty, `.` or `..` segment and no leading `/`.
        self.root.join(key.as_str())
    }

    fn remove_stale_temps(&self) {
        let Ok(entries) = fs::read_dir(&self.tmp) else { return };
        let now = SystemTime::now();
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| now.duration_since(t).unwrap_or_default() > STALE_TEMP)
                .unwrap_or(false);
            if old {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    fn write_temp(&self, key: &Key, data: &[u8]) -> Result<TempFile> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let path = self.tmp.join(format!("{}-{}-{n}", std::process::id(), nanos()));
        let temp = TempFile(Some(path));
        let io = |e| StorageError::Io { key: key.clone(), source: e };
        let mut f = OpenOptions::new().write(true).create_new(true).open(temp.path()).map_err(io)?;
        f.write_all(data).map_err(io)?;
        if self.opts.fsync {
            f.sync_all().map_err(io)?;
        }
        Ok(temp)
    }

    fn sync_dir(&self, dir: &Path, key: &Key) -> Result<()> {
        if self.opts.fsync {
            File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StorageError::Io { key: key.clone(), source: e })?;
        }
        Ok(())
    }

    /// Creates `dir` and its missing ancestors; returns the folders it made, outermost first.
    /// Their entries are made durable by [`FsBackend::sync_made`] once something is in them
    /// (until then a concurrent prune may remove them, and the caller tries again).
    fn create_dirs(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        if dir.is_dir() {
            return Ok(Vec::new());
        }
        let mut missing = Vec::new();
        let mut d = dir;
        while !d.is_dir() {
            missing.push(d.to_owned());
            match d.parent() {
                Some(p) if p.starts_with(&self.root) => d = p,
                _ => break,
            }
        }
        fs::create_dir_all(dir)?;
        missing.reverse();
        Ok(missing)
    }

    /// With fsync on, makes each folder in `made` durable in its parent: a file is only as
    /// durable as the path that leads to it.
    fn sync_made(&self, made: &[PathBuf]) -> io::Result<()> {
        if self.opts.fsync {
            for m in made {
                if let Some(p) = m.parent() {
                    File::open(p)?.sync_all()?;
                }
            }
        }
        Ok(())
    }

    /// Runs `op` (a rename or link into `target`), creating the parent folders first. Retries
    /// when a concurrent [`Backend::prune_empty`] removed a parent in between: the folders are
    /// made and filled at once, and made durable only when the file holds them.
    fn move_into_place(&self, key: &Key, target: &Path, op: impl Fn() -> io::Result<()>) -> Result<()> {
        let parent = target.parent().expect("keys are below the root");
        let io = |e| StorageError::Io { key: key.clone(), source: e };
        let mut attempts = 0;
        loop {
            match self.create_dirs(parent).and_then(|made| op().map(|()| made)) {
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < RACE_ATTEMPTS => {
                    attempts += 1;
                    std::thread::yield_now();
                }
                other => {
                    let made = other.map_err(io)?;
                    self.sync_made(&made).map_err(io)?;
                    return self.sync_dir(parent, key);
                }
            }
        }
    }
}

/// How often a write tries again when a concurrent prune removed a folder it had just made.
/// A prune removes only empty folders, and the window between making a folder and filling it
/// is a few system calls, so this is reached only under a prune running in a tight loop.
const RACE_ATTEMPTS: u32 = 100;

fn nanos() -> u128 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

fn map_io(key: &Key, e: io::Error) -> StorageError {
    // A folder where an object was expected is, to a key/bytes store, no object at all.
    if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::IsADirectory | io::ErrorKind::NotADirectory) {
        StorageError::NotFound { key: key.clone() }
    } else {
        StorageError::Io { key: key.clone(), source: e }
    }
}

/// A temporary file removed on drop unless it was moved into place.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn path(&self) -> &Path {
        self.0.as_deref().expect("path is present until drop")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

impl Backend for FsBackend {
    fn get(&self, key: &Key) -> Result<Vec<u8>> {
        fs::read(self.path(key)).map_err(|e| map_io(key, e))
    }

    fn open(&self, key: &Key, offset: u64) -> Result<(ObjectReader, u64)> {
        let mut f = File::open(self.path(key)).map_err(|e| map_io(key, e))?;
        let meta = f.metadata().map_err(|e| map_io(key, e))?;
        if !meta.is_file() {
            return Err(StorageError::NotFound { key: key.clone() });
        }
        if offset > 0 {
            f.seek(SeekFrom::Start(offset)).map_err(|e| map_io(key, e))?;
        }
        Ok((ObjectReader::File(f), meta.len()))
    }

    fn stat(&self, key: &Key) -> Result<Meta> {
        let m = fs::metadata(self.path(key)).map_err(|e| map_io(key, e))?;
        if !m.is_file() {
            return Err(StorageError::NotFound { key: key.clone() });
        }
        Ok(Meta { size: m.len(), modified: m.modified().map_err(|e| map_io(key, e))? })
    }

    fn put(&self, key: &Key, data: &[u8]) -> Result<()> {
        let mut temp = self.write_temp(key, data)?;
        let target = self.path(key);
        self.move_into_place(key, &target, || fs::rename(temp.path(), &target))?;
        temp.0 = None;
        Ok(())
    }

    fn put_if_absent(&self, key: &Key, data: &[u8]) -> Result<bool> {
        let target = self.path(key);
        if target.exists() {
            return Ok(false);
        }
        let temp = self.write_temp(key, data)?;
        // link(2) fails with EEXIST instead of replacing, which makes the check atomic.
        match self.move_into_place(key, &target, || fs::hard_link(temp.path(), &target)) {
            Ok(()) => Ok(true),
            Err(StorageError::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn writer(&self, key: &Key) -> Result<Box<dyn ObjectWriter>> {
        let path = self.path(key);
        let io = |e| map_io(key, e);
        let parent = path.parent().expect("keys are below the root");
        let mut attempts = 0;
        let file = loop {
            let opened = self.create_dirs(parent).and_then(|made| {
                let f = OpenOptions::new().append(true).create(true).open(&path)?;
                Ok((f, made))
            });
            match opened {
                // A concurrent prune removed a folder just created: make it again.
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < RACE_ATTEMPTS => {
                    attempts += 1;
                    std::thread::yield_now();
                }
                other => {
                    let (f, made) = other.map_err(io)?;
                    self.sync_made(&made).map_err(io)?;
                    break f;
                }
            }
        };
        let size = file.metadata().map_err(io)?.len();
        Ok(Box::new(FsWriter { file, size, flushed: size, key: key.clone(), fsync: self.opts.fsync }))
    }

    fn rename(&self, from: &Key, to: &Key) -> Result<u64> {
        let src = self.path(from);
        let size = match fs::metadata(&src) {
            Ok(m) if m.is_file() => m.len(),
            _ => return Err(StorageError::NotFound { key: from.clone() }),
        };
        let target = self.path(to);
        self.move_into_place(to, &target, || fs::rename(&src, &target))?;
        Ok(size)
    }

    fn delete(&self, key: &Key) -> Result<bool> {
        match fs::remove_file(self.path(key)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StorageError::Io { key: key.clone(), source: e }),
        }
    }

    fn delete_prefix(&self, prefix: &Key) -> Result<bool> {
        let path = self.path(prefix);
        let mut attempts = 0;
        loop {
            let res = match fs::symlink_metadata(&path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(attempts > 0),
                Err(e) => Err(e),
                Ok(m) if m.is_dir() => fs::remove_dir_all(&path),
                Ok(_) => fs::remove_file(&path),
            };
            match res {
                Ok(()) => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
                // Something created a file inside while the walk passed it: go again.
                Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty && attempts < 5 => attempts += 1,
                Err(e) => return Err(StorageError::Io { key: prefix.clone(), source: e }),
            }
        }
    }

    fn list(&self, prefix: &Key, start_after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let entries = match fs::read_dir(self.path(prefix)) {
            Ok(e) => e,
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                return Ok(vec![]);
            }
            Err(e) => return Err(StorageError::Io { key: prefix.clone(), source: e }),
        };
        let mut names = Vec::new();
        for e in entries {
            let e = e.map_err(|e| StorageError::Io { key: prefix.clone(), source: e })?;
            // Names that are not UTF-8 cannot be keys; nothing Berth or Distribution writes has one.
            if let Ok(name) = e.file_name().into_string()
                && start_after.is_none_or(|s| name.as_str() > s)
            {
                names.push(name);
            }
        }
        names.sort_unstable();
        names.truncate(limit);
        Ok(names)
    }

    fn prune_empty(&self, prefix: &Key) -> Result<()> {
        fn prune(dir: &Path) -> io::Result<()> {
            let entries = match fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => return Ok(()),
                Err(e) => return Err(e),
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    prune(&e.path())?;
                }
            }
            // rmdir(2) refuses a folder that is not empty, so a folder that gained an entry
            // meanwhile survives; that is the whole concurrency story here.
            match fs::remove_dir(dir) {
                Ok(()) => Ok(()),
                Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty) => Ok(()),
                Err(e) => Err(e),
            }
        }
        prune(&self.path(prefix)).map_err(|e| StorageError::Io { key: prefix.clone(), source: e })
    }

    fn remove_empty_folder(&self, prefix: &Key) -> Result<bool> {
        match fs::remove_dir(self.path(prefix)) {
            Ok(()) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(StorageError::Io { key: prefix.clone(), source: e }),
        }
    }
}

/// Start writeback every this many bytes, so the fsync at commit waits only for the tail.
const WRITEBACK_STEP: u64 = 8 << 20;

struct FsWriter {
    file: File,
    size: u64,
    /// Bytes already handed to the kernel for writeback.
    flushed: u64,
    key: Key,
    fsync: bool,
}

impl FsWriter {
    /// Asks the kernel to start writing back what has been written so far, without waiting.
    /// Without it, a 1 GiB upload lands in the page cache at memory speed and the final fsync
    /// then waits for the whole gigabyte; with it, the disk writes while the network delivers.
    fn start_writeback(&mut self) {
        use std::os::fd::AsRawFd;
        let (start, len) = (self.flushed, self.size - self.flushed);
        // SAFETY: a plain syscall on a file descriptor this struct owns; it reads no memory.
        // Failure only means no head start, so its result is ignored; commit still fsyncs.
        unsafe {
            libc::sync_file_range(self.file.as_raw_fd(), start as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
        }
        self.flushed = self.size;
    }
}

impl ObjectWriter for FsWriter {
    fn write_all(&mut self, buf: &[u8]) -> Result<()> {
        self.file.write_all(buf).map_err(|e| StorageError::Io { key: self.key.clone(), source: e })?;
        self.size += buf.len() as u64;
        if self.fsync && self.size - self.flushed >= WRITEBACK_STEP {
            self.start_writeback();
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn commit(self: Box<Self>) -> Result<u64> {
        if self.fsync {
            self.file.sync_data().map_err(|e| StorageError::Io { key: self.key.clone(), source: e })?;
        }
        Ok(self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    #[test]
    fn conformance_with_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let b = FsBackend::open(dir.path(), FsOptions { fsync: true }).unwrap();
        conformance::run_all(&b);
        conformance::assert_no_temp_files(dir.path());
    }

    #[test]
    fn conformance_without_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let b = FsBackend::open(dir.path(), FsOptions { fsync: false }).unwrap();
        conformance::run_all(&b);
        conformance::assert_no_temp_files(dir.path());
    }

    /// Writes into deep folders while another thread prunes empty folders above them (GC and
    /// repository deletes do): every write lands, none fails because its folder vanished
    /// between being made and being written in.
    #[test]
    fn writes_survive_concurrent_pruning_of_their_folders() {
        let dir = tempfile::tempdir().unwrap();
        let b = FsBackend::open(dir.path(), FsOptions { fsync: true }).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    b.prune_empty(&Key::new("repo").unwrap()).unwrap();
                }
            });
            let writes = || -> Result<()> {
                for i in 0..400 {
                    let key = Key::new(format!("repo/a{}/b/c/d{i}", i % 7))?;
                    b.put(&key, b"x")?;
                    let w = Key::new(format!("repo/w{}/e/f{i}", i % 5))?;
                    drop(b.writer(&w)?);
                    // Empty again, so the pruner has folders to remove.
                    b.delete(&key)?;
                    b.delete(&w)?;
                }
                Ok(())
            };
            let result = writes();
            stop.store(true, Ordering::Relaxed);
            result.unwrap();
        });
    }

    #[test]
    fn stale_temp_files_are_removed_at_open_and_fresh_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join(layout::TMP_DIR);
        fs::create_dir_all(&tmp).unwrap();
        let old = tmp.join("old");
        let fresh = tmp.join("fresh");
        fs::write(&old, b"x").unwrap();
        fs::write(&fresh, b"x").unwrap();
        let past = SystemTime::now() - Duration::from_secs(2 * 3600);
        File::options().write(true).open(&old).unwrap().set_modified(past).unwrap();
        FsBackend::open(dir.path(), FsOptions::default()).unwrap();
        assert!(!old.exists());
        assert!(fresh.exists(), "another process may still be writing it");
    }
}
