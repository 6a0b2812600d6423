//! The exclusive lock on a storage root: held by `berth serve`, and by a command that changes a
//! root directly, so the two never work on one root at once.
//!
//! On the filesystem it is an advisory `flock` on `<root>/berth/root.lock`, released when the
//! holder drops it or dies. On an object store it is a lease: the object `berth/root.lease`
//! names the holder and when the lease ends; the holder renews it every [`RENEW`] and removes it
//! when dropped, and a holder that died leaves a lease that ends within [`LEASE`]. Object stores
//! such as Garage ignore conditional writes, so two processes starting in the same second could
//! both write it; each reads it back a moment later and only the one whose name stayed goes on.
//! A lease also names the holder's process (boot id, pid namespace, pid, start time): a holder
//! on this same machine whose process is gone (`kill -9`, a crash) is known dead at once, so a
//! restart need not wait the lease out. (Several replicas are coordinated through PostgreSQL,
//! not through this.)

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::backend::Backend;
use crate::ext::BackendExt;
use crate::key::Key;
use crate::layout;

/// How long a lease lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(60);
/// How often the holder renews it.
pub const RENEW: Duration = Duration::from_secs(20);
/// How long a new holder waits before reading its lease back.
const SETTLE: Duration = Duration::from_millis(500);

/// A held root lock; released when dropped.
#[derive(Debug)]
pub struct RootLock {
    _held: Held,
}

#[derive(Debug)]
enum Held {
    /// Held while the file is open.
    File { _file: File },
    /// Held while the lease is renewed.
    Lease { _lease: Lease },
}

/// A renewed lease: the renewing thread, and how to stop it.
#[derive(Debug)]
struct Lease {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let (flag, cv) = &*self.stop;
        *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// A lease object's text: when it ends (Unix seconds), the holder, and the holder's process.
fn lease_text(holder: &str, until: u64) -> String {
    format!("{until}\n{holder}\n{}\n", Process::me().map(|p| p.to_string()).unwrap_or_default())
}

fn parse_lease(text: &str) -> Option<(u64, String)> {
    let mut lines = text.lines();
    let until = lines.next()?.trim().parse().ok()?;
    Some((until, lines.next()?.trim().to_owned()))
}

/// Whether the lease's holder is a process of this machine (same boot, same pid namespace)
/// that no longer runs.
fn holder_is_gone(text: &str) -> bool {
    let Some(holder) = text.lines().nth(2).and_then(Process::parse) else { return false };
    match Process::me() {
        Some(me) if me.boot == holder.boot && me.pid_ns == holder.pid_ns => {
            Process::start_of(holder.pid).is_none_or(|start| start != holder.start)
        }
        _ => false,
    }
}

/// A process, named so that another process can tell whether it still runs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Process {
    /// `/proc/sys/kernel/random/boot_id`: this machine, this boot.
    boot: String,
    /// The pid namespace (`/proc/self/ns/pid`): pids mean the same only within one.
    pid_ns: String,
    pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat`): a reused pid starts later.
    start: u64,
}

impl Process {
    fn me() -> Option<Process> {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?.trim().to_owned();
        let pid_ns = std::fs::read_link("/proc/self/ns/pid").ok()?.to_string_lossy().into_owned();
        let pid = std::process::id();
        Some(Process { boot, pid_ns, pid, start: Process::start_of(pid)? })
    }

    fn start_of(pid: u32) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name, in parentheses, may hold spaces; fields count after it.
        stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
    }

    fn parse(line: &str) -> Option<Process> {
        let mut f = line.split_whitespace();
        let (boot, pid_ns, pid, start) = (f.next()?, f.next()?, f.next()?, f.next()?);
        Some(Process { boot: boot.into(), pid_ns: pid_ns.into(), pid: pid.parse().ok()?, start: start.parse().ok()? })
    }
}

impl std::fmt::Display for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {} {}", self.boot, self.pid_ns, self.pid, self.start)
    }
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
                Ok(Ok(RootLock { _held: Held::File { _file: file } }))
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

impl RootLock {
    /// Takes the lease on the object store `store` for `holder` (see the module docs);
    /// `Ok(Err(who))` while someone else's lease lasts.
    pub fn lease(store: Arc<dyn Backend>, holder: &str) -> io::Result<Result<RootLock, String>> {
        let key = Key::new(layout::LEASE).map_err(io::Error::other)?;
        // Unique even for two processes with one pid on two machines.
        let me = format!(
            "{holder} [{:x}]",
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos()
        );
        let current = |store: &dyn Backend| -> io::Result<Option<(u64, String)>> {
            let text = store.get_opt(&key).map_err(io::Error::other)?;
            Ok(text.and_then(|t| parse_lease(&String::from_utf8_lossy(&t))))
        };
        if let Some(text) = store.get_opt(&key).map_err(io::Error::other)? {
            let text = String::from_utf8_lossy(&text);
            if let Some((until, who)) = parse_lease(&text)
                && until > unix_now()
                && !holder_is_gone(&text)
            {
                return Ok(Err(who));
            }
        }
        store.put(&key, lease_text(&me, unix_now() + LEASE.as_secs()).as_bytes()).map_err(io::Error::other)?;
        std::thread::sleep(SETTLE);
        match current(&*store)? {
            Some((_, who)) if who == me => {}
            Some((_, who)) => return Ok(Err(who)),
            None => return Err(io::Error::other("the root lease vanished as it was taken")),
        }
        let lease = Lease::renewed(store, key, me, true)?;
        Ok(Ok(RootLock { _held: Held::Lease { _lease: lease } }))
    }

    /// Who holds the root's lease on an object store, while it lasts and its holder runs.
    pub fn lease_holder(store: &dyn Backend) -> io::Result<Option<String>> {
        let key = Key::new(layout::LEASE).map_err(io::Error::other)?;
        let Some(text) = store.get_opt(&key).map_err(io::Error::other)? else { return Ok(None) };
        let text = String::from_utf8_lossy(&text);
        Ok(parse_lease(&text).filter(|(until, _)| *until > unix_now() && !holder_is_gone(&text)).map(|(_, who)| who))
    }

    /// Who holds the replicas' lease (see [`ReplicasLease`]), while it lasts.
    pub fn replicas_holder(store: &dyn Backend) -> io::Result<Option<String>> {
        let key = Key::new(layout::REPLICAS_LEASE).map_err(io::Error::other)?;
        let Some(text) = store.get_opt(&key).map_err(io::Error::other)? else { return Ok(None) };
        Ok(parse_lease(&String::from_utf8_lossy(&text)).filter(|(until, _)| *until > unix_now()).map(|(_, who)| who))
    }
}

/// The lease replicas coordinated through a database hold together: each renews it while it
/// runs, none holds it alone, and none removes it (another may still run); it ends within
/// [`LEASE`] of the last one stopping. While it lasts, [`RootLock`]s are refused, so a process
/// without the database never serves or changes the root beside the replicas.
#[derive(Debug)]
pub struct ReplicasLease {
    _lease: Lease,
}

impl ReplicasLease {
    /// Writes and renews the lease naming `holder` (the replicas and their database).
    pub fn hold(store: Arc<dyn Backend>, holder: &str) -> io::Result<ReplicasLease> {
        let key = Key::new(layout::REPLICAS_LEASE).map_err(io::Error::other)?;
        store.put(&key, lease_text(holder, unix_now() + LEASE.as_secs()).as_bytes()).map_err(io::Error::other)?;
        Ok(ReplicasLease { _lease: Lease::renewed(store, key, holder.to_owned(), false)? })
    }
}

impl Lease {
    /// Renews `key` naming `holder` every [`RENEW`] until dropped; then removes it if `remove`.
    fn renewed(store: Arc<dyn Backend>, key: Key, holder: String, remove: bool) -> io::Result<Lease> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new().name("berth-lease".into()).spawn(move || {
            let (flag, cv) = &*stop2;
            let mut stopped = flag.lock().unwrap_or_else(|e| e.into_inner());
            while !*stopped {
                let (guard, _) = cv.wait_timeout(stopped, RENEW).unwrap_or_else(|e| e.into_inner());
                stopped = guard;
                if *stopped {
                    break;
                }
                if let Err(e) = store.put(&key, lease_text(&holder, unix_now() + LEASE.as_secs()).as_bytes()) {
                    eprintln!("berth: renewing the lease {key} failed (will retry): {e}");
                }
            }
            if remove {
                let _ = store.delete(&key);
            }
        })?;
        Ok(Lease { stop, thread: Some(thread) })
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

    #[test]
    fn a_lease_refuses_a_second_holder_until_released_or_ended() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Backend> =
            Arc::new(crate::FsBackend::open(dir.path(), crate::FsOptions { fsync: false }).unwrap());
        let first = RootLock::lease(store.clone(), "berth serve (pid 1)").unwrap().unwrap();
        let who = RootLock::lease(store.clone(), "me").unwrap().unwrap_err();
        assert!(who.starts_with("berth serve (pid 1)"), "{who}");
        drop(first);
        assert!(!store.exists(&Key::new(layout::LEASE).unwrap()).unwrap(), "released");
        // A holder that died leaves a lease that has ended: it is taken over.
        let key = Key::new(layout::LEASE).unwrap();
        store.put(&key, lease_text("dead (pid 9)", unix_now() - 1).as_bytes()).unwrap();
        assert!(RootLock::lease(store.clone(), "me").unwrap().is_ok());
    }

    #[test]
    fn a_lease_of_a_process_of_this_machine_that_is_gone_is_taken_over_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Backend> =
            Arc::new(crate::FsBackend::open(dir.path(), crate::FsOptions { fsync: false }).unwrap());
        let key = Key::new(layout::LEASE).unwrap();
        let me = Process::me().expect("Linux /proc");
        let lease = |p: &Process| format!("{}\nberth serve (pid {})\n{p}\n", unix_now() + 60, p.pid);
        // A live process (this one) and one on another boot keep their leases.
        store.put(&key, lease(&me).as_bytes()).unwrap();
        assert!(RootLock::lease(store.clone(), "me").unwrap().is_err(), "alive");
        let elsewhere = Process { boot: "another-machine".into(), pid: 4_000_000, ..me.clone() };
        store.put(&key, lease(&elsewhere).as_bytes()).unwrap();
        assert!(RootLock::lease(store.clone(), "me").unwrap().is_err(), "another machine: cannot tell");
        // A child that has exited, and a reused pid (a later start), are gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let child_pid = child.id();
        child.wait().unwrap();
        let exited = Process { pid: child_pid, ..me.clone() };
        store.put(&key, lease(&exited).as_bytes()).unwrap();
        drop(RootLock::lease(store.clone(), "me").unwrap().expect("exited holder"));
        let reused = Process { start: me.start.saturating_sub(1), ..me.clone() };
        store.put(&key, lease(&reused).as_bytes()).unwrap();
        drop(RootLock::lease(store.clone(), "me").unwrap().expect("pid reused"));
        // An old lease without the process line is honoured until it ends.
        store.put(&key, format!("{}\nold holder\n", unix_now() + 60).as_bytes()).unwrap();
        assert!(RootLock::lease(store.clone(), "me").unwrap().is_err());
    }

    #[test]
    fn replicas_and_a_process_without_the_database_keep_each_other_off_a_root() {
        use crate::factory::StorageConfig;
        let dir = tempfile::tempdir().unwrap();
        let root = StorageConfig::Filesystem { root: dir.path().to_owned(), fsync: false };
        let alone = root.lock("berth serve (alone)").unwrap().unwrap();
        let refused = root.replicas_lease("replicas of db").unwrap().unwrap_err();
        assert_eq!(refused, "berth serve (alone)");
        drop(alone);
        let lease = root.replicas_lease("replicas of db").unwrap().unwrap();
        let second = root.replicas_lease("replicas of db").unwrap().unwrap();
        assert_eq!(root.lock("berth serve (alone)").unwrap().unwrap_err(), "replicas of db");
        drop((lease, second));
        // Stopping does not end it (another replica may run); it lasts out its term.
        assert!(root.lock("berth serve (alone)").unwrap().is_err());
    }

    #[test]
    fn a_process_without_the_database_marks_an_indexed_root_stale() {
        use crate::factory::StorageConfig;
        let dir = tempfile::tempdir().unwrap();
        let root = StorageConfig::Filesystem { root: dir.path().to_owned(), fsync: false };
        let stale = dir.path().join(layout::index_stale().as_str());
        drop(root.lock("berth serve (alone)").unwrap().unwrap());
        assert!(!stale.exists(), "a root no index was filled from is left alone");
        let marker = dir.path().join(layout::index_marker().as_str());
        std::fs::create_dir_all(marker.parent().unwrap()).unwrap();
        std::fs::write(&marker, b"indexed").unwrap();
        drop(root.lock("berth serve (alone)").unwrap().unwrap());
        assert_eq!(std::fs::read_to_string(&stale).unwrap(), "berth serve (alone)");
    }
}
