//! The durable outbox of notifications: every record (an event, opaque here: one line of
//! bytes without a newline) is stored under the root before the request that caused it is
//! answered, and stays until every endpoint has taken it (or the outbox overflows). The server
//! decides what the records say and delivers them; this module only keeps them.
//!
//! Layout, under `berth/notifications/<owner>/` (`owner`: this machine and port, so a restart
//! finds its predecessor's events):
//!
//! - `segments/<seq>.<count>.jsonl`: one batch of events, one JSON event per line, in the order
//!   they happened; `seq` is zero-padded and gapless, so a listing is the order of delivery;
//! - `cursors/<endpoint>.json`: the next event that endpoint takes (`segment`, `index`).
//!
//! Writes are batched: the writer takes every event recorded while the previous batch was
//! being stored and stores them as one segment, so concurrent requests share one durable write.
//! Past `max_events` events held, the oldest segments are removed; what an endpoint had not
//! taken of them is counted as dropped for it and logged. This module owns those keys and
//! must never touch anything else in the root.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use berth_storage::{Backend, BackendExt, StorageError, layout};
use serde::{Deserialize, Serialize};

/// The next event an endpoint takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cursor {
    pub segment: u64,
    pub index: u32,
}

/// Where an endpoint stands, and the records from there to the end of that segment.
pub type Batch = (Cursor, Vec<Vec<u8>>);

/// Per endpoint counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub delivered: AtomicU64,
    pub failures: AtomicU64,
    pub dropped: AtomicU64,
}

#[derive(Debug)]
struct State {
    /// Held segments: sequence number → how many events it holds.
    segments: BTreeMap<u64, u32>,
    next_seq: u64,
    cursors: BTreeMap<String, Cursor>,
    /// The cursors as last stored.
    stored: BTreeMap<String, Cursor>,
}

/// The outbox of one process.
pub struct Outbox {
    store: Arc<dyn Backend>,
    owner: String,
    max_events: u64,
    state: Mutex<State>,
    grown: Condvar,
    counters: BTreeMap<String, Counters>,
}

fn segment_name(seq: u64, count: u32) -> String {
    format!("{seq:020}.{count}.jsonl")
}

fn parse_segment(name: &str) -> Option<(u64, u32)> {
    let (seq, rest) = name.split_once('.')?;
    let count = rest.strip_suffix(".jsonl")?;
    Some((seq.parse().ok()?, count.parse().ok()?))
}

impl Outbox {
    /// Opens (or starts) the outbox of `owner` for `endpoints` (both already safe as key
    /// segments: `[A-Za-z0-9._-]`).
    pub fn open(
        store: Arc<dyn Backend>,
        owner: &str,
        endpoints: &[String],
        max_events: u64,
    ) -> Result<Outbox, StorageError> {
        let segments_dir = layout::notification_segments(owner)?;
        let mut segments = BTreeMap::new();
        for name in store.list_all(&segments_dir)? {
            match parse_segment(&name) {
                Some((seq, count)) => {
                    segments.insert(seq, count);
                }
                None => tracing::warn!(key = %segments_dir.as_str(), name, "not an outbox segment; left alone"),
            }
        }
        // Every cursor stored, of endpoints configured or not: numbers they passed are never
        // used again, even when every segment was taken and removed (else new events would get
        // numbers behind the cursors and never be sent).
        let mut stored = BTreeMap::new();
        for file in store.list_all(&layout::notification_cursors(owner)?)? {
            let Some(e) = file.strip_suffix(".json") else { continue };
            let c = match store.get(&layout::notification_cursor(owner, e)?) {
                Ok(bytes) => serde_json::from_slice::<Cursor>(&bytes).ok(),
                Err(StorageError::NotFound { .. }) => None,
                Err(err) => return Err(err),
            };
            if let Some(c) = c {
                stored.insert(e.to_owned(), c);
            }
        }
        let passed = stored.values().map(|c| if c.index > 0 { c.segment + 1 } else { c.segment }).max().unwrap_or(0);
        let next_seq = segments.keys().next_back().map_or(0, |s| s + 1).max(passed);
        let first = segments.keys().next().copied().unwrap_or(next_seq);
        let mut cursors = BTreeMap::new();
        for e in endpoints {
            // A new endpoint starts with what is held; one whose events were dropped, after them.
            let c = match stored.get(e) {
                Some(c) if c.segment >= first => *c,
                _ => Cursor { segment: first, index: 0 },
            };
            cursors.insert(e.clone(), c);
        }
        let counters = endpoints.iter().map(|e| (e.clone(), Counters::default())).collect();
        let outbox = Outbox {
            store,
            owner: owner.to_owned(),
            max_events,
            state: Mutex::new(State {
                segments,
                next_seq,
                stored: stored.into_iter().filter(|(e, _)| endpoints.contains(e)).collect(),
                cursors,
            }),
            grown: Condvar::new(),
            counters,
        };
        outbox.forget_taken()?;
        Ok(outbox)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counters of `endpoint`.
    pub fn counters(&self, endpoint: &str) -> Option<&Counters> {
        self.counters.get(endpoint)
    }

    /// Events held that `endpoint` has not taken yet.
    pub fn pending(&self, endpoint: &str) -> u64 {
        let s = self.lock();
        let Some(c) = s.cursors.get(endpoint) else { return 0 };
        s.segments
            .range(c.segment..)
            .map(|(&seq, &n)| if seq == c.segment { n.saturating_sub(c.index) } else { n } as u64)
            .sum()
    }

    /// Stores `records` (each one line, without a newline) as one segment, durably before
    /// returning, then drops the oldest segments past the bound.
    pub fn append(&self, records: &[Vec<u8>]) -> Result<(), StorageError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut body = Vec::new();
        for r in records {
            debug_assert!(!r.contains(&b'\n'), "a record is one line");
            body.extend_from_slice(r);
            body.push(b'\n');
        }
        // One writer thread appends, so the sequence number cannot be taken twice.
        let seq = self.lock().next_seq;
        let count = records.len() as u32;
        self.store.put(&layout::notification_segment(&self.owner, &segment_name(seq, count))?, &body)?;
        {
            let mut s = self.lock();
            s.segments.insert(seq, count);
            s.next_seq = seq + 1;
        }
        self.bound();
        self.grown.notify_all();
        Ok(())
    }

    /// Removes the oldest segments while more than `max_events` events are held.
    fn bound(&self) {
        loop {
            let (seq, count) = {
                let s = self.lock();
                let held: u64 = s.segments.values().map(|&n| n as u64).sum();
                if held <= self.max_events || s.segments.len() <= 1 {
                    return;
                }
                let (&seq, &count) = s.segments.iter().next().expect("more than one");
                (seq, count)
            };
            if let Err(e) = self.remove_segment(seq, count) {
                tracing::error!(error = %e, "could not drop an outbox segment past the bound");
                return;
            }
            self.lose_segment(
                seq,
                count,
                "notification outbox full: dropped the oldest events this endpoint had not taken",
            );
        }
    }

    /// Forgets segment `seq` (gone from the store), moving every cursor in it past it and
    /// counting, for each endpoint, what it had not taken.
    fn lose_segment(&self, seq: u64, count: u32, why: &str) {
        let mut s = self.lock();
        s.segments.remove(&seq);
        for (endpoint, c) in s.cursors.iter_mut() {
            if c.segment > seq {
                continue;
            }
            let lost = count.saturating_sub(c.index) as u64;
            *c = Cursor { segment: seq + 1, index: 0 };
            if let Some(k) = self.counters.get(endpoint) {
                k.dropped.fetch_add(lost, Ordering::Relaxed);
            }
            tracing::warn!(endpoint = %endpoint, events = lost, segment = seq, bound = self.max_events, "{why}");
        }
    }

    fn remove_segment(&self, seq: u64, count: u32) -> Result<(), StorageError> {
        self.store.delete(&layout::notification_segment(&self.owner, &segment_name(seq, count))?).map(|_| ())
    }

    /// Waits until `endpoint` has an event to take, or `timeout` passes; returns its cursor
    /// and the rest of the segment from there.
    pub fn next(&self, endpoint: &str, timeout: std::time::Duration) -> Result<Option<Batch>, StorageError> {
        let (cursor, count) = {
            let mut s = self.lock();
            let ready = |s: &State| {
                let c = *s.cursors.get(endpoint)?;
                let (&seq, &n) = s.segments.range(c.segment..).next()?;
                Some((if seq == c.segment { c } else { Cursor { segment: seq, index: 0 } }, n))
            };
            if ready(&s).is_none() {
                s = self.grown.wait_timeout(s, timeout).unwrap_or_else(|e| e.into_inner()).0;
            }
            match ready(&s) {
                Some(r) => r,
                None => return Ok(None),
            }
        };
        let bytes =
            match self.store.get(&layout::notification_segment(&self.owner, &segment_name(cursor.segment, count))?) {
                Ok(b) => b,
                Err(StorageError::NotFound { .. }) => {
                    // Dropped past the bound meanwhile (the cursor has moved on), or removed
                    // behind Berth's back: either way it cannot be sent; say so once.
                    if self.lock().segments.contains_key(&cursor.segment) {
                        self.lose_segment(
                            cursor.segment,
                            count,
                            "a notification outbox segment is missing from the store; its events are lost",
                        );
                    }
                    return Ok(Some((cursor, Vec::new())));
                }
                Err(e) => return Err(e),
            };
        let events = bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .skip(cursor.index as usize)
            .map(<[u8]>::to_vec)
            .collect();
        Ok(Some((cursor, events)))
    }

    /// Records, in memory, that `endpoint` took everything before `next`, and removes the
    /// segments every endpoint has passed. [`Outbox::store_cursor`] makes it last: until then a
    /// restart sends those events again (listeners dedupe by id), which is what lets a busy
    /// endpoint take many events per durable write instead of one.
    pub fn advance(&self, endpoint: &str, next: Cursor) -> Result<(), StorageError> {
        {
            let mut s = self.lock();
            // A whole segment taken: on to the next one.
            let next = match s.segments.get(&next.segment) {
                Some(&n) if next.index >= n => Cursor { segment: next.segment + 1, index: 0 },
                _ => next,
            };
            match s.cursors.get_mut(endpoint) {
                // The bound may have moved it further meanwhile.
                Some(c) if *c < next => *c = next,
                _ => return Ok(()),
            }
        }
        self.forget_taken()
    }

    /// Stores where `endpoint` stands, if it moved since last stored: a restart resumes there.
    pub fn store_cursor(&self, endpoint: &str) -> Result<(), StorageError> {
        let now = {
            let s = self.lock();
            match s.cursors.get(endpoint) {
                Some(c) if s.stored.get(endpoint) != Some(c) => *c,
                _ => return Ok(()),
            }
        };
        let body = serde_json::to_vec(&now).expect("cursors serialise");
        self.store.put(&layout::notification_cursor(&self.owner, endpoint)?, &body)?;
        self.lock().stored.insert(endpoint.to_owned(), now);
        Ok(())
    }

    /// Stores every endpoint's cursor (at a clean stop).
    pub fn store_cursors(&self) -> Result<(), StorageError> {
        let endpoints: Vec<String> = self.lock().cursors.keys().cloned().collect();
        endpoints.iter().try_for_each(|e| self.store_cursor(e))
    }

    /// Removes the segments every endpoint has passed.
    fn forget_taken(&self) -> Result<(), StorageError> {
        let taken: Vec<(u64, u32)> = {
            let s = self.lock();
            let Some(min) = s.cursors.values().map(|c| c.segment).min() else { return Ok(()) };
            s.segments.range(..min).map(|(&k, &v)| (k, v)).collect()
        };
        for (seq, count) in taken {
            self.remove_segment(seq, count)?;
            self.lock().segments.remove(&seq);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: usize) -> Vec<u8> {
        n.to_string().into_bytes()
    }

    fn open(dir: &std::path::Path, endpoints: &[&str], max: u64) -> Outbox {
        let store: Arc<dyn Backend> = Arc::new(berth_storage::FsBackend::open(dir, Default::default()).unwrap());
        let names: Vec<String> = endpoints.iter().map(|s| s.to_string()).collect();
        Outbox::open(store, "me", &names, max).unwrap()
    }

    fn take_all(o: &Outbox, endpoint: &str) -> Vec<String> {
        let mut out = Vec::new();
        while let Some((c, events)) = o.next(endpoint, std::time::Duration::from_millis(1)).unwrap() {
            for (i, e) in events.iter().enumerate() {
                out.push(String::from_utf8(e.clone()).unwrap());
                o.advance(endpoint, Cursor { segment: c.segment, index: c.index + i as u32 + 1 }).unwrap();
            }
            if events.is_empty() {
                o.advance(endpoint, Cursor { segment: c.segment + 1, index: 0 }).unwrap();
            }
        }
        out
    }

    #[test]
    fn events_survive_a_reopen_in_order_and_go_once_every_endpoint_took_them() {
        let dir = tempfile::tempdir().unwrap();
        let o = open(dir.path(), &["a", "b"], 1000);
        o.append(&[ev(0), ev(1)]).unwrap();
        o.append(&[ev(2)]).unwrap();
        assert_eq!(take_all(&o, "a"), ["0", "1", "2"]);
        // b takes one, then the process stops.
        let (c, _) = o.next("b", std::time::Duration::ZERO).unwrap().unwrap();
        o.advance("b", Cursor { segment: c.segment, index: 1 }).unwrap();
        o.store_cursors().unwrap();
        drop(o);
        let o = open(dir.path(), &["a", "b"], 1000);
        assert_eq!(o.pending("b"), 2);
        assert_eq!(take_all(&o, "b"), ["1", "2"], "resumed where it stopped");
        assert!(take_all(&o, "a").is_empty(), "a took them before the stop");
        // Progress not stored is taken again after a restart (at least once).
        o.append(&[ev(3)]).unwrap();
        assert_eq!(take_all(&o, "a"), ["3"]);
        drop(o);
        let o = open(dir.path(), &["a", "b"], 1000);
        assert_eq!(take_all(&o, "a"), ["3"], "a's cursor was not stored: sent again");
        // b's progress since the first reopen was not stored either, but it only covered
        // segments every endpoint had passed, which are gone: b goes on with what is new.
        assert_eq!(take_all(&o, "b"), ["3"]);
        o.store_cursors().unwrap();
        let left = std::fs::read_dir(dir.path().join("berth/notifications/me/segments")).unwrap().count();
        assert_eq!(left, 0, "segments every endpoint took are removed");
    }

    #[test]
    fn after_everything_was_taken_a_restart_numbers_new_events_after_the_cursors() {
        let dir = tempfile::tempdir().unwrap();
        let o = open(dir.path(), &["a"], 1000);
        o.append(&[ev(0)]).unwrap();
        o.append(&[ev(1)]).unwrap();
        assert_eq!(take_all(&o, "a"), ["0", "1"]);
        o.store_cursors().unwrap();
        drop(o);
        // Every segment is gone; a command on the stopped root, then the server, add events.
        let o = open(dir.path(), &["a"], 1000);
        o.append(&[ev(2)]).unwrap();
        drop(o);
        let o = open(dir.path(), &["a"], 1000);
        assert_eq!(o.pending("a"), 1);
        o.append(&[ev(3)]).unwrap();
        assert_eq!(take_all(&o, "a"), ["2", "3"]);
    }

    #[test]
    fn a_segment_removed_behind_its_back_is_counted_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let o = open(dir.path(), &["a"], 1000);
        o.append(&[ev(0)]).unwrap();
        o.append(&[ev(1)]).unwrap();
        let segs = dir.path().join("berth/notifications/me/segments");
        let first = std::fs::read_dir(&segs).unwrap().map(|e| e.unwrap().path()).min().unwrap();
        std::fs::remove_file(first).unwrap();
        assert_eq!(take_all(&o, "a"), ["1"]);
        assert_eq!(o.counters("a").unwrap().dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn past_the_bound_the_oldest_go_and_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let o = open(dir.path(), &["down", "up"], 4);
        for i in 0..6 {
            o.append(&[ev(i)]).unwrap();
            take_all(&o, "up");
        }
        assert_eq!(o.counters("down").unwrap().dropped.load(Ordering::Relaxed), 2);
        assert_eq!(o.counters("up").unwrap().dropped.load(Ordering::Relaxed), 0, "up had taken them");
        assert_eq!(take_all(&o, "down"), ["2", "3", "4", "5"]);
    }
}
