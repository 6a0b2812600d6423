//! [`PgCoordination`]: the registry's [`Coordination`] kept in PostgreSQL, for several
//! replicas on one bucket.
//!
//! - **Locks** are PostgreSQL advisory locks, held by a connection for as long as the guard
//!   lives: a repository's (shared or exclusive), an upload's, and the one GC lock. A replica
//!   that dies loses its connections, and the server releases their locks at once (a cut
//!   network: when TCP keepalive gives up). Locks come from a pool of their own, so an
//!   operation holding a lock that needs a connection for its next statement never waits on
//!   a pool full of other lock holders.
//! - **The touched set** is the `touches` table, written before `touch` returns, in the
//!   database's clock. A touch takes the shared advisory lock of each digest's stripe (the first
//!   byte of its hex) in its transaction; a sweep takes those stripes exclusively, reads which
//!   digests are protected, deletes the others from the bucket and only then commits. So a
//!   touch either commits before the sweep looks, or waits until the blob is gone and its
//!   existence check says so.
//! - **The in-flight gate** stays in each process (a read-write lock, as in `Local`); GC's
//!   `wait_inflight` also asks every live replica to wait out its own gate: it bumps
//!   `gc_state.gate_epoch` and notifies `berth_gate`; each replica's listener thread waits for
//!   its gate and records the epoch it passed. GC goes on once every replica whose listener
//!   is connected has passed it (a killed replica's connection, and its operations, are gone),
//!   and fails after twice [`LEASE`] rather than go on without one.
//! - **Generations** (`generations`): a change of a repository (or of the set of repositories,
//!   row '') takes the next value of one sequence under a barrier lock, so values commit in
//!   order, and is notified on `berth_changed`. Each replica's listener counts the changes it
//!   hears per repository, which is what `generation` answers: no query on a read. A writer
//!   answers only once every replica with a fresh heartbeat has recorded (`seen_seq`) that it
//!   heard the change, or has gone [`TRUST`] (plus a second) without a round trip to the
//!   database; a replica trusts what it cached only within [`TRUST`] of its last round trip
//!   (counted from when it was sent) and reads storage otherwise. So no replica serves a tag
//!   deleted or moved elsewhere once the change has been answered.
//!
//! Nothing here decides reachability or removes anything; it orders.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use berth_oci::{Digest, RepoName, UploadId};
use berth_registry::{Coordination, Held, RegistryError};
use postgres::fallible_iterator::FallibleIterator;
use sha2::Digest as _;

use crate::config::DbConfig;
use crate::error::DbError;
use crate::pool::{Conn, Db};

/// How often a replica renews its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long after its last round trip to the database (counted from when it was sent) a
/// replica trusts what it cached; then it reads storage until the next one.
pub const TRUST: Duration = Duration::from_secs(3);
/// A replica whose heartbeat is older than this is gone.
pub const LEASE: Duration = Duration::from_secs(15);

/// Advisory lock classes (the first key of PostgreSQL's two-key form): Berth's prefix and a
/// kind, so they cannot meet another application's locks.
const CLASS_REPO: i32 = 0x4265_7201;
const CLASS_UPLOAD: i32 = 0x4265_7202;
const CLASS_GC: i32 = 0x4265_7203;
const CLASS_TOUCH: i32 = 0x4265_7204;
/// Held while a change takes its generation and commits, so generations commit (and are
/// notified) in increasing order.
const CLASS_BARRIER: i32 = 0x4265_7205;

const PROTECTED: &str = "(t.at >= $2 OR (g.started_at IS NOT NULL AND t.at >= g.started_at))";

/// Coordination through PostgreSQL (see the module docs).
pub struct PgCoordination {
    me: uuid::Uuid,
    work: Db,
    locks: Db,
    /// The metadata index's pool (see `watch` and `index`).
    index: Db,
    gate: Arc<RwLock<()>>,
    stop: Arc<AtomicBool>,
    listener: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

/// What the listener thread and the request threads share.
#[derive(Debug, Default)]
struct Shared {
    /// Changes stored in the bucket whose generation could not be bumped (the database was
    /// unreachable): the listener bumps them once it can.
    pending: Mutex<BTreeSet<(String, bool)>>,
    /// How many times the listener lost its connection and got it back. Every generation this
    /// process reads is offset by it, so whatever it cached before an outage is forgotten
    /// (a change made elsewhere meanwhile may not have reached the database).
    reconnects: AtomicI64,
    /// Per repository ('' for the catalog), how many changes the listener has been notified of.
    local: Mutex<std::collections::HashMap<String, i64>>,
    /// Until when cached state may be trusted (see [`TRUST`]).
    trusted_until: Mutex<Option<Instant>>,
}

impl Shared {
    fn trust_from(&self, sent: Instant) {
        let mut t = self.trusted_until.lock().unwrap_or_else(|e| e.into_inner());
        let until = sent + TRUST;
        if t.is_none_or(|old| old < until) {
            *t = Some(until);
        }
    }

    fn distrust(&self) {
        *self.trusted_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn trusted(&self) -> bool {
        self.trusted_until.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|t| Instant::now() < t)
    }
}

impl std::fmt::Debug for PgCoordination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCoordination").field("replica", &self.me).field("db", &self.work).finish()
    }
}

fn unavailable(e: DbError) -> RegistryError {
    RegistryError::Unavailable { reason: e.to_string() }
}

fn pg(e: postgres::Error) -> RegistryError {
    unavailable(DbError::from(e))
}

/// The second key of an advisory lock for `s`.
fn key_of(s: &str) -> i32 {
    let h = sha2::Sha256::digest(s.as_bytes());
    i32::from_be_bytes([h[0], h[1], h[2], h[3]])
}

fn stripe_of(d: &Digest) -> i32 {
    i32::from_str_radix(&d.hex()[..2], 16).unwrap_or(0)
}

/// The connection this thread's advisory locks are held on, and how many it holds. A registry
/// operation runs on one thread and may nest locks (an upload's, then its repository's): they
/// share one connection, so an operation never waits for a second connection while holding
/// the first, and a pool full of lock holders cannot deadlock.
struct LockSlot {
    owner: usize,
    conn: Option<Conn>,
    depth: usize,
}

thread_local! {
    static LOCK_SLOT: std::cell::RefCell<Option<LockSlot>> = const { std::cell::RefCell::new(None) };
}

/// A session-level advisory lock: released when dropped (or when its connection dies).
struct AdvisoryLock {
    owner: usize,
    key: (i32, i32),
    shared: bool,
    /// Its own connection, when this thread's slot belongs to another coordination.
    own: Option<Conn>,
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        let sql =
            if self.shared { "SELECT pg_advisory_unlock_shared($1, $2)" } else { "SELECT pg_advisory_unlock($1, $2)" };
        if let Some(conn) = self.own.as_mut() {
            if let Err(e) = conn.execute(sql, &[&self.key.0, &self.key.1]) {
                tracing::warn!(error = %DbError::from(e), "releasing an advisory lock failed");
            }
            return;
        }
        LOCK_SLOT.with(|slot| {
            let mut slot = slot.borrow_mut();
            let Some(held) = slot.as_mut().filter(|h| h.owner == self.owner) else { return };
            if let Some(conn) = held.conn.as_mut()
                && let Err(e) = conn.execute(sql, &[&self.key.0, &self.key.1])
            {
                // The connection is gone, and the server released the lock with it.
                tracing::warn!(error = %DbError::from(e), "releasing an advisory lock failed");
            }
            held.depth -= 1;
            if held.depth == 0 {
                // The connection goes back to the pool.
                *slot = None;
            }
        });
    }
}

impl PgCoordination {
    /// Registers this process as a replica (`description` names it in the database) and
    /// starts its listener thread. The schema must be current ([`Db::open`] checks).
    pub fn start(config: &DbConfig, description: &str) -> crate::Result<PgCoordination> {
        // Three pools, so that no connection is ever held while waiting for another of the
        // same pool (which a full pool turns into a deadlock): locks hold theirs for as long as
        // the lock; work (touches, sweeps) holds one while a sweep deletes from the bucket; the
        // metadata index takes one for a statement, even inside a sweep (its deletes go through
        // the store it watches).
        let third = (config.max_open / 3).max(2);
        let work = Db::open(&config.clone().with_max_open(third))?;
        let locks = Db::connect(&config.clone().with_max_open(third))?;
        let index = Db::connect(&config.clone().with_max_open(third))?;
        let me = uuid::Uuid::new_v4();
        let gate = Arc::new(RwLock::new(()));
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared::default());
        // Listen before registering: a gate request made after the row exists must reach us.
        let mut listen = listener_config(config, me).connect(postgres::NoTls)?;
        listen.batch_execute(LISTEN)?;
        listen.batch_execute(&format!("LISTEN {}", stop_channel(me)))?;
        {
            let mut c = work.conn()?;
            c.execute("DELETE FROM replicas WHERE heartbeat_at < now() - interval '1 day'", &[])?;
            // Under the barrier: every change notified before this replica listened is
            // committed, and it has cached nothing, so it has seen them all.
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&CLASS_BARRIER])?;
            tx.execute(
                "INSERT INTO replicas (id, description, gate_epoch, seen_seq) \
                 SELECT $1, $2, gate_epoch, (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM generation_seq) \
                 FROM gc_state",
                &[&me, &description],
            )?;
            tx.commit()?;
        }
        let listener = {
            let (cfg, gate, stop, shared) = (config.clone(), gate.clone(), stop.clone(), shared.clone());
            std::thread::Builder::new()
                .name("berth-db-listener".into())
                .spawn(move || listen_loop(listen, &cfg, me, &gate, &stop, &shared))
                .map_err(|e| DbError::Config(format!("cannot start the listener thread: {e}")))?
        };
        let commit: String = work.conn()?.query_one("SHOW synchronous_commit", &[])?.get(0);
        if commit == "off" {
            // A crash of the server can then lose committed rows: touches, and rows of the
            // metadata index for links already in the bucket.
            tracing::warn!(
                db = %work.describe(),
                "synchronous_commit is off: a PostgreSQL crash can lose what Berth was told is stored; \
                 set it to on, and run `berth fsck --repair` after such a crash"
            );
        }
        tracing::info!(replica = %me, db = %work.describe(), "coordinating through PostgreSQL");
        Ok(PgCoordination { me, work, locks, index, gate, stop, listener: Some(listener), shared })
    }

    /// This replica's id in the `replicas` table.
    pub fn replica_id(&self) -> uuid::Uuid {
        self.me
    }

    /// A registry over `backend` coordinated through this database, with its metadata index:
    /// every write to `backend` is recorded in the index, which GC, accounting and the catalog
    /// read once it is ready.
    pub fn registry(
        self: Arc<Self>,
        backend: Arc<dyn berth_storage::Backend>,
        config: berth_registry::Config,
    ) -> berth_registry::Registry {
        let backend = Arc::new(crate::watch::Indexed::new(backend, self.index.clone()));
        let index = Arc::new(crate::index::PgIndex::new(self.index.clone()));
        berth_registry::Registry::with_coordination(backend, config, self).with_index(index)
    }

    fn conn(&self) -> Result<Conn, RegistryError> {
        self.work.conn().map_err(unavailable)
    }

    fn advisory(&self, key: (i32, i32), shared: bool) -> Result<Held<'_>, RegistryError> {
        let owner = self as *const PgCoordination as usize;
        let sql = if shared { "SELECT pg_advisory_lock_shared($1, $2)" } else { "SELECT pg_advisory_lock($1, $2)" };
        enum Slot {
            Free,
            Mine(Box<Conn>),
            Other,
        }
        // This thread's lock connection, if it holds locks of this coordination already.
        let state = LOCK_SLOT.with(|slot| match slot.borrow_mut().as_mut() {
            None => Slot::Free,
            Some(h) if h.owner == owner => h.conn.take().map_or(Slot::Other, |c| Slot::Mine(Box::new(c))),
            Some(_) => Slot::Other,
        });
        match state {
            Slot::Mine(mut conn) => {
                let locked = conn.execute(sql, &[&key.0, &key.1]);
                LOCK_SLOT.with(|slot| {
                    if let Some(held) = slot.borrow_mut().as_mut() {
                        held.conn = Some(*conn);
                        held.depth += usize::from(locked.is_ok());
                    }
                });
                locked.map_err(pg)?;
                Ok(Held::new(AdvisoryLock { owner, key, shared, own: None }))
            }
            Slot::Free => {
                let mut conn = self.locks.conn().map_err(unavailable)?;
                conn.execute(sql, &[&key.0, &key.1]).map_err(pg)?;
                LOCK_SLOT.with(|slot| *slot.borrow_mut() = Some(LockSlot { owner, conn: Some(conn), depth: 1 }));
                Ok(Held::new(AdvisoryLock { owner, key, shared, own: None }))
            }
            Slot::Other => {
                let mut conn = self.locks.conn().map_err(unavailable)?;
                conn.execute(sql, &[&key.0, &key.1]).map_err(pg)?;
                Ok(Held::new(AdvisoryLock { owner, key, shared, own: Some(conn) }))
            }
        }
    }
}

impl Drop for PgCoordination {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(mut c) = self.work.conn() {
            let _ = c.execute("DELETE FROM replicas WHERE id = $1", &[&self.me]);
            let _ = c.execute("SELECT pg_notify($1, '')", &[&stop_channel(self.me)]);
        }
        if let Some(t) = self.listener.take() {
            let _ = t.join();
        }
    }
}

const LISTEN: &str = "LISTEN berth_gate; LISTEN berth_changed";

/// The channel that wakes this replica's listener when it is to stop (instead of letting it
/// wait out a heartbeat, which every command that opens the database would pay on exit).
fn stop_channel(me: uuid::Uuid) -> String {
    format!("berth_stop_{}", me.simple())
}

/// The listener's connection names the replica: while it is open the replica is alive, and
/// the moment its process dies the server drops it (see `wait_inflight`).
fn listener_config(config: &DbConfig, me: uuid::Uuid) -> postgres::Config {
    let mut c = config.pg().clone();
    c.application_name(&listener_name(me));
    c
}

fn listener_name(me: uuid::Uuid) -> String {
    format!("berth {me}")
}

/// The listener: renews the heartbeat every [`HEARTBEAT`], and answers GC's gate requests by
/// waiting out this process's operations in flight. Reconnects when the server goes away.
fn listen_loop(
    mut client: postgres::Client,
    config: &DbConfig,
    me: uuid::Uuid,
    gate: &RwLock<()>,
    stop: &AtomicBool,
    shared: &Shared,
) {
    loop {
        if let Err(e) = serve_gate(&mut client, me, gate, stop, shared) {
            shared.distrust();
            if stop.load(Ordering::SeqCst) {
                return;
            }
            tracing::warn!(error = %DbError::from(e), "lost the PostgreSQL listener connection; reconnecting");
            client = loop {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(HEARTBEAT / 2);
                if let Ok(mut c) = listener_config(config, me).connect(postgres::NoTls)
                    && c.batch_execute(LISTEN).is_ok()
                    && c.batch_execute(&format!("LISTEN {}", stop_channel(me))).is_ok()
                {
                    break c;
                }
            };
            shared.reconnects.fetch_add(1, Ordering::SeqCst);
            tracing::info!("PostgreSQL listener connection back; cached tags and catalog forgotten");
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
    }
}

fn pass_gate(
    client: &mut postgres::Client,
    me: uuid::Uuid,
    gate: &RwLock<()>,
    epoch: i64,
    shared: &Shared,
) -> Result<(), postgres::Error> {
    drop(gate.write().unwrap_or_else(|e| e.into_inner()));
    beat(
        client,
        shared,
        "UPDATE replicas SET gate_epoch = GREATEST(gate_epoch, $2), heartbeat_at = now() WHERE id = $1",
        &[&me, &epoch],
    )?;
    Ok(())
}

/// Runs `sql`, which renews this replica's heartbeat, and trusts the cache from when it was
/// sent (see [`TRUST`]); returns when it was sent.
fn beat(
    client: &mut postgres::Client,
    shared: &Shared,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> Result<Instant, postgres::Error> {
    let sent = Instant::now();
    client.execute(sql, params)?;
    shared.trust_from(sent);
    Ok(sent)
}

/// Takes in the notifications that arrived: forgets what changed (`berth_changed`, payload
/// `<generation> <name>`), and returns the newest gate request and the newest generation.
fn take_notes(shared: &Shared, notes: Vec<postgres::Notification>) -> (Option<i64>, Option<i64>) {
    let (mut gate, mut seen) = (None, None);
    let mut local = shared.local.lock().unwrap_or_else(|e| e.into_inner());
    for note in notes {
        match note.channel() {
            "berth_gate" => gate = gate.max(note.payload().parse::<i64>().ok()),
            "berth_changed" => {
                if let Some((g, name)) = note.payload().split_once(' ')
                    && let Ok(g) = g.parse::<i64>()
                {
                    *local.entry(name.to_owned()).or_default() += 1;
                    seen = seen.max(Some(g));
                }
            }
            _ => {}
        }
    }
    (gate, seen)
}

fn serve_gate(
    client: &mut postgres::Client,
    me: uuid::Uuid,
    gate: &RwLock<()>,
    stop: &AtomicBool,
    shared: &Shared,
) -> Result<(), postgres::Error> {
    // Changes notified while this connection was down were never heard; what was cached
    // before is forgotten (the reconnect offset), so they count as seen, up to the newest
    // committed (under the barrier, none is between taking its generation and committing).
    {
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&CLASS_BARRIER])?;
        tx.execute(
            "UPDATE replicas SET seen_seq = GREATEST(seen_seq, \
             (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM generation_seq)) WHERE id = $1",
            &[&me],
        )?;
        tx.commit()?;
    }
    // A request made while this connection was down was never heard: pass the newest now.
    let epoch: i64 = client.query_one("SELECT gate_epoch FROM gc_state", &[])?.get(0);
    pass_gate(client, me, gate, epoch, shared)?;
    let mut last_beat = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let mut notes = Vec::new();
        {
            // Wait for the first note (at most a heartbeat), then take those already here:
            // a GC or a writer is waiting.
            let mut n = client.notifications();
            let first = n.timeout_iter(HEARTBEAT.min(TRUST / 3)).next()?;
            if let Some(note) = first {
                notes.push(note);
                let mut more = n.iter();
                while let Some(note) = more.next()? {
                    notes.push(note);
                }
            }
        }
        let (gate_request, seen) = take_notes(shared, notes);
        if let Some(g) = seen {
            last_beat = beat(
                client,
                shared,
                "UPDATE replicas SET seen_seq = GREATEST(seen_seq, $2), heartbeat_at = now() WHERE id = $1",
                &[&me, &g],
            )?;
        }
        if let Some(epoch) = gate_request {
            pass_gate(client, me, gate, epoch, shared)?;
            last_beat = Instant::now();
        }
        let pending: Vec<(String, bool)> =
            shared.pending.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
        for (name, exists) in pending {
            bump(client, &name, exists)?;
            shared.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&(name, exists));
        }
        if last_beat.elapsed() >= HEARTBEAT {
            // A replica deleted as dead (it stalled past a day) registers again.
            last_beat = beat(
                client,
                shared,
                "INSERT INTO replicas (id, description) VALUES ($1, 'replica') \
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
                &[&me],
            )?;
        }
    }
    Ok(())
}

impl Coordination for PgCoordination {
    fn lock_repo(&self, name: &RepoName) -> Result<Held<'_>, RegistryError> {
        self.advisory((CLASS_REPO, key_of(name.as_str())), false)
    }

    fn share_repo(&self, name: &RepoName) -> Result<Held<'_>, RegistryError> {
        self.advisory((CLASS_REPO, key_of(name.as_str())), true)
    }

    fn lock_upload(&self, id: &UploadId) -> Result<Held<'_>, RegistryError> {
        self.advisory((CLASS_UPLOAD, key_of(id.as_str())), false)
    }

    fn enter(&self) -> Result<Held<'_>, RegistryError> {
        Ok(Held::new(self.gate.read().unwrap_or_else(|e| e.into_inner())))
    }

    fn wait_inflight(&self) -> Result<(), RegistryError> {
        drop(self.gate.write().unwrap_or_else(|e| e.into_inner()));
        let epoch: i64 = {
            let mut c = self.conn()?;
            let mut tx = c.transaction().map_err(pg)?;
            let e: i64 = tx
                .query_one("UPDATE gc_state SET gate_epoch = gate_epoch + 1 RETURNING gate_epoch", &[])
                .map_err(pg)?
                .get(0);
            tx.execute("SELECT pg_notify('berth_gate', $1)", &[&e.to_string()]).map_err(pg)?;
            tx.commit().map_err(pg)?;
            e
        };
        let deadline = Instant::now() + LEASE * 2;
        loop {
            let waiting: Vec<String> = self
                .conn()?
                .query(
                    // Alive: its listener connected, however old its heartbeat (it does not
                    // beat while it waits out its gate). A killed replica's connection is gone
                    // at once, so GC does not wait for it.
                    "SELECT r.description FROM replicas r WHERE r.id <> $1 AND r.gate_epoch < $2 \
                     AND EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.application_name = 'berth ' || r.id::text)",
                    &[&self.me, &epoch],
                )
                .map_err(pg)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(RegistryError::Unavailable {
                    reason: format!("replicas {} did not finish their operations in flight for GC", waiting.join(", ")),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn lock_gc(&self) -> Result<Held<'_>, RegistryError> {
        self.advisory((CLASS_GC, 0), false)
    }

    fn touch(&self, digests: &mut dyn Iterator<Item = &Digest>) -> Result<(), RegistryError> {
        // Sorted and once each: upserts then lock rows in one order, and no command updates a
        // row twice.
        let set: BTreeSet<&Digest> = digests.collect();
        if set.is_empty() {
            return Ok(());
        }
        let stripes: BTreeSet<i32> = set.iter().map(|d| stripe_of(d)).collect();
        let names: Vec<String> = set.iter().map(|d| d.to_string()).collect();
        let mut c = self.conn()?;
        let mut tx = c.transaction().map_err(pg)?;
        for s in stripes {
            tx.execute("SELECT pg_advisory_xact_lock_shared($1, $2)", &[&CLASS_TOUCH, &s]).map_err(pg)?;
        }
        tx.execute(
            "INSERT INTO touches (digest, at) SELECT d, now() FROM unnest($1::text[]) AS d \
             ON CONFLICT (digest) DO UPDATE SET at = excluded.at",
            &[&names],
        )
        .map_err(pg)?;
        tx.commit().map_err(pg)
    }

    fn forget(&self, _: &[Digest]) {
        // A touch of a digest that does not exist protects nothing; the row goes with the
        // next GC's `gc_begin` once old.
    }

    fn gc_begin(&self, forget_before: SystemTime) -> Result<(), RegistryError> {
        let mut c = self.conn()?;
        c.execute("UPDATE gc_state SET started_at = now()", &[]).map_err(pg)?;
        c.execute("DELETE FROM touches WHERE at < $1", &[&forget_before]).map_err(pg)?;
        Ok(())
    }

    fn gc_end(&self) {
        match self.conn() {
            Ok(mut c) => {
                if let Err(e) = c.execute("UPDATE gc_state SET started_at = NULL", &[]) {
                    tracing::warn!(error = %DbError::from(e), "could not record the end of GC (later touches stay protected until the next GC)");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not record the end of GC"),
        }
    }

    fn protected(&self, d: &Digest, cutoff: SystemTime) -> Result<bool, RegistryError> {
        let row = self
            .conn()?
            .query_one(
                &format!("SELECT EXISTS (SELECT 1 FROM touches t, gc_state g WHERE t.digest = $1 AND {PROTECTED})"),
                &[&d.to_string(), &cutoff],
            )
            .map_err(pg)?;
        Ok(row.get(0))
    }

    fn recent(&self, cutoff: SystemTime) -> Result<HashSet<Digest>, RegistryError> {
        let rows = self
            .conn()?
            .query(
                "SELECT t.digest FROM touches t, gc_state g \
                 WHERE t.at >= $1 OR (g.started_at IS NOT NULL AND t.at >= g.started_at)",
                &[&cutoff],
            )
            .map_err(pg)?;
        Ok(rows.iter().filter_map(|r| r.get::<_, String>(0).parse().ok()).collect())
    }

    fn sweep(
        &self,
        digests: &[Digest],
        cutoff: SystemTime,
        delete: &mut dyn FnMut(&[Digest]),
    ) -> Result<Vec<Digest>, RegistryError> {
        let stripes: BTreeSet<i32> = digests.iter().map(stripe_of).collect();
        let names: Vec<String> = digests.iter().map(|d| d.to_string()).collect();
        let mut c = self.conn()?;
        let mut tx = c.transaction().map_err(pg)?;
        for s in stripes {
            tx.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&CLASS_TOUCH, &s]).map_err(pg)?;
        }
        let kept: HashSet<String> = tx
            .query(
                &format!("SELECT t.digest FROM touches t, gc_state g WHERE t.digest = ANY($1) AND {PROTECTED}"),
                &[&names, &cutoff],
            )
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let doomed: Vec<Digest> =
            digests.iter().zip(&names).filter(|(_, n)| !kept.contains(*n)).map(|(d, _)| d.clone()).collect();
        // Deleted while the stripes are held: no touch of these digests commits meanwhile.
        delete(&doomed);
        tx.commit().map_err(pg)?;
        Ok(doomed)
    }

    fn generation(&self, name: &RepoName) -> Result<Option<i64>, RegistryError> {
        self.generation_of(name.as_str())
    }

    fn changed(&self, name: &RepoName, exists: bool) -> Result<(), RegistryError> {
        self.changed_many(&[(name.clone(), exists)])
    }

    fn changed_many(&self, changes: &[(RepoName, bool)]) -> Result<(), RegistryError> {
        if changes.is_empty() {
            return Ok(());
        }
        let names: Vec<(&str, bool)> = changes.iter().map(|(n, e)| (n.as_str(), *e)).collect();
        let g = match self.conn().and_then(|mut c| bump_many(&mut c, &names).map_err(pg)) {
            Ok(g) => g,
            Err(e) => {
                // The changes are in the bucket: other replicas must hear of them once the
                // database answers again.
                let mut pending = self.shared.pending.lock().unwrap_or_else(|e| e.into_inner());
                pending.extend(names.iter().map(|&(n, e)| (n.to_owned(), e)));
                return Err(e);
            }
        };
        self.wait_seen(g)
    }

    fn catalog_generation(&self) -> Result<Option<i64>, RegistryError> {
        self.generation_of("")
    }
}

impl PgCoordination {
    fn generation_of(&self, name: &str) -> Result<Option<i64>, RegistryError> {
        if !self.shared.trusted() {
            return Err(RegistryError::Unavailable {
                reason: "not in touch with the database lately, so changes by other replicas may be unheard".into(),
            });
        }
        let g = self.shared.local.lock().unwrap_or_else(|e| e.into_inner()).get(name).copied().unwrap_or(0);
        Ok(Some(g.wrapping_add(self.shared.reconnects.load(Ordering::SeqCst) << 40)))
    }

    /// Returns once every live replica has processed the change notified with generation `g`,
    /// or can no longer trust its cache (its last round trip to the database is older than
    /// [`TRUST`], plus a second for the clocks' drift).
    fn wait_seen(&self, g: i64) -> Result<(), RegistryError> {
        let fence = format!("{} seconds", TRUST.as_secs() + 1);
        let began = Instant::now();
        loop {
            let waiting: i64 = self
                .conn()?
                .query_one(
                    "SELECT count(*) FROM replicas WHERE id <> $1 AND seen_seq < $2 \
                     AND heartbeat_at > now() - $3::text::interval",
                    &[&self.me, &g, &fence],
                )
                .map_err(pg)?
                .get(0);
            if waiting == 0 {
                return Ok(());
            }
            if began.elapsed() > LEASE {
                tracing::warn!(generation = g, replicas = waiting, "replicas heartbeat but do not take in changes");
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Gives `name` (a repository, or '' for the catalog) a new generation and notifies it on
/// `berth_changed`; when whether it exists changed, the catalog too. Generations are taken and
/// committed under the barrier lock, so they are notified in increasing order. Returns the
/// newest generation it notified.
fn bump(c: &mut postgres::Client, name: &str, exists: bool) -> Result<i64, postgres::Error> {
    bump_many(c, &[(name, exists)])
}

/// New generations for `changes`, in one transaction under the barrier; the newest.
fn bump_many(c: &mut postgres::Client, changes: &[(&str, bool)]) -> Result<i64, postgres::Error> {
    let mut tx = c.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&CLASS_BARRIER])?;
    let mut newest = 0;
    for &(name, exists) in changes {
        newest = newest.max(bump_in(&mut tx, name, exists)?);
    }
    tx.commit()?;
    Ok(newest)
}

fn bump_in(tx: &mut postgres::Transaction<'_>, name: &str, exists: bool) -> Result<i64, postgres::Error> {
    let row = tx.query_one(
        "WITH old AS (SELECT present FROM generations WHERE name = $1), \
         up AS (INSERT INTO generations (name, generation, present) \
                VALUES ($1, nextval('generation_seq'), $2) \
                ON CONFLICT (name) DO UPDATE SET generation = excluded.generation, present = excluded.present \
                RETURNING generation) \
         SELECT (SELECT present FROM old), (SELECT generation FROM up)",
        &[&name, &exists],
    )?;
    let (before, mut g): (Option<bool>, i64) = (row.get(0), row.get(1));
    tx.execute("SELECT pg_notify('berth_changed', $1)", &[&format!("{g} {name}")])?;
    if before != Some(exists) {
        g = tx
            .query_one(
                "INSERT INTO generations (name, generation, present) VALUES ('', nextval('generation_seq'), true) \
                 ON CONFLICT (name) DO UPDATE SET generation = excluded.generation RETURNING generation",
                &[],
            )?
            .get(0);
        tx.execute("SELECT pg_notify('berth_changed', $1)", &[&format!("{g} ")])?;
    }
    Ok(g)
}
