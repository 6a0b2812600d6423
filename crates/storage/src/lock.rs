//! The exclusive lock on a storage root: held by `berth serve`, and by a command that changes a
//! root directly, so the two never work on one root at once.
//!
//! On the filesystem it is an advisory `flock` on `<root>/berth/root.lock`, released when the
//! holder drops it or dies. It is not a method of the backend: a backend stores keys, and who
//! may write a root is decided before one is opened (an object store will use a lease).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use crate::layout;

/// A held root lock; released when dropped.
#[derive(Debug)]
pub struct RootLock {
    _file: File,
}

impl RootLock {
    /// Takes the lock of the filesystem root `root` for `holder` (a one-line description, such
    /// as `berth serve (pid 7, http://127.0.0.1:5000)`, written into the lock file for whoever
    /// is refused next). `Ok(Err(who))` when someone else holds it.
    pub fn try_acquire(root: &Path, holder: &str) -> io::Result<Result<RootLock, String>> {
        let path = root.join(layout::LOCK_FILE);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0)?;
                file.write_all(holder.as_bytes())?;
                Ok(Ok(RootLock { _file: file }))
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut who = String::new();
                let _ = file.read_to_string(&mut who);
                Ok(Err(if who.trim().is_empty() { "another process".to_owned() } else { who.trim().to_owned() }))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_told_who_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = RootLock::try_acquire(dir.path(), "berth serve (pid 1)").unwrap().unwrap();
        assert_eq!(RootLock::try_acquire(dir.path(), "me").unwrap().unwrap_err(), "berth serve (pid 1)");
        drop(first);
        assert!(RootLock::try_acquire(dir.path(), "me").unwrap().is_ok());
    }
}
