//! Digests clients used recently, and the lock that makes GC's "is it still unused? then
//! delete it" one step against a push's "record that I use it, then check it exists".
//!
//! Every mount, upload completion, manifest PUT and restore records its digests here *before*
//! it checks that they exist (a blob HEAD/GET records its digest once it has found it). GC deletes a blob or a manifest only inside
//! [`Touched::sweep_many_if_untouched`], which holds the same lock while it checks and deletes.
//! So for any push racing a sweep, exactly one of two things happens: the sweep sees the touch
//! and keeps the blob, or the push finds the blob gone and is refused (`MANIFEST_BLOB_UNKNOWN`)
//! rather than accepted broken (DESIGN.md, "Garbage collection, online").
//!
//! Two memories: the time of each digest's last touch (GC keeps what was touched within its
//! grace period), and, while a GC runs, the set of everything touched since it began (kept
//! whatever the grace period, so `--grace 0s` still protects pushes in flight).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::SystemTime;

use berth_oci::Digest;

/// The state is split by digest into stripes, so GC threads sweeping different blobs do not
/// wait on each other; the argument above holds per digest, and one digest is always in one
/// stripe. A stripe is the first byte of the hex, which is also the blob folder
/// (`blobs/sha256/ab/`) a digest lives in: GC sweeps a folder under one stripe.
const STRIPES: usize = 256;

#[derive(Debug)]
pub(crate) struct Touched {
    stripes: Vec<Mutex<State>>,
}

impl Default for Touched {
    fn default() -> Self {
        Touched { stripes: (0..STRIPES).map(|_| Mutex::new(State::default())).collect() }
    }
}

#[derive(Debug, Default)]
struct State {
    at: HashMap<Digest, SystemTime>,
    during_gc: Option<HashSet<Digest>>,
}

impl Touched {
    fn stripe(&self, d: &Digest) -> std::sync::MutexGuard<'_, State> {
        self.stripes[Self::stripe_of(d)].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stripe_of(d: &Digest) -> usize {
        // The hex of a digest is already uniformly distributed.
        usize::from_str_radix(&d.hex()[..2], 16).unwrap_or(0) % STRIPES
    }

    /// Records that a client is using these digests now.
    pub(crate) fn touch<'a>(&self, digests: impl IntoIterator<Item = &'a Digest>) {
        let now = SystemTime::now();
        for d in digests {
            let mut s = self.stripe(d);
            s.at.insert(d.clone(), now);
            if let Some(set) = s.during_gc.as_mut() {
                set.insert(d.clone());
            }
        }
    }

    /// Forgets touches of digests that turned out not to exist (nothing to protect).
    pub(crate) fn forget<'a>(&self, digests: impl IntoIterator<Item = &'a Digest>) {
        for d in digests {
            let mut s = self.stripe(d);
            s.at.remove(d);
            if let Some(set) = s.during_gc.as_mut() {
                set.remove(d);
            }
        }
    }

    /// Starts recording for a GC; forgets touches older than `forget_before`.
    pub(crate) fn gc_begin(&self, forget_before: SystemTime) {
        for stripe in &self.stripes {
            let mut s = stripe.lock().unwrap_or_else(|e| e.into_inner());
            s.at.retain(|_, t| *t >= forget_before);
            s.during_gc = Some(HashSet::new());
        }
    }

    /// Stops recording for the GC.
    pub(crate) fn gc_end(&self) {
        for stripe in &self.stripes {
            stripe.lock().unwrap_or_else(|e| e.into_inner()).during_gc = None;
        }
    }

    /// Whether `d` was touched at or after `cutoff`, or since the running GC began.
    pub(crate) fn protected(&self, d: &Digest, cutoff: SystemTime) -> bool {
        Self::is_protected(&self.stripe(d), d, cutoff)
    }

    fn is_protected(s: &State, d: &Digest, cutoff: SystemTime) -> bool {
        s.during_gc.as_ref().is_some_and(|set| set.contains(d)) || s.at.get(d).is_some_and(|t| *t >= cutoff)
    }

    /// Digests touched at or after `cutoff`, or since the running GC began.
    pub(crate) fn recent(&self, cutoff: SystemTime) -> HashSet<Digest> {
        let mut out = HashSet::new();
        for stripe in &self.stripes {
            let s = stripe.lock().unwrap_or_else(|e| e.into_inner());
            out.extend(s.at.iter().filter(|(_, t)| **t >= cutoff).map(|(d, _)| d.clone()));
            if let Some(set) = &s.during_gc {
                out.extend(set.iter().cloned());
            }
        }
        out
    }

    /// Runs `delete` on those of `digests` that are not protected, holding their stripes'
    /// locks throughout (taken in stripe order, so two batches cannot deadlock; a touch holds
    /// one at a time); returns them and what `delete` returned. For stores that delete many
    /// keys in one request: `digests` should share a stripe (a blob folder), or every touch in
    /// the stripes it spans waits for the request.
    pub(crate) fn sweep_many_if_untouched<T>(
        &self,
        digests: &[Digest],
        cutoff: SystemTime,
        delete: impl FnOnce(&[Digest]) -> T,
    ) -> (Vec<Digest>, T) {
        let mut stripes: Vec<usize> = digests.iter().map(Self::stripe_of).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let guards: Vec<_> =
            stripes.iter().map(|&i| (i, self.stripes[i].lock().unwrap_or_else(|e| e.into_inner()))).collect();
        let state = |d: &Digest| {
            let i = Self::stripe_of(d);
            &guards[guards.binary_search_by_key(&i, |(j, _)| *j).expect("locked above")].1
        };
        let doomed: Vec<Digest> =
            digests.iter().filter(|d| !Self::is_protected(state(d), d, cutoff)).cloned().collect();
        let out = delete(&doomed);
        drop(guards);
        (doomed, out)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn i2_touches_during_gc_protect_whatever_the_grace() {
        let t = Touched::default();
        let d = Digest::sha256_of(b"x");
        let now = SystemTime::now();
        t.touch([&d]);
        assert!(t.protected(&d, now - Duration::from_secs(1)), "within grace");
        let future = now + Duration::from_secs(3600);
        assert!(!t.protected(&d, future), "grace 0 at a later time: not protected by age");
        t.gc_begin(now - Duration::from_secs(1));
        let one = std::slice::from_ref(&d);
        assert_eq!(t.sweep_many_if_untouched(one, future, |_| ()).0.len(), 1, "touched before the GC began");
        t.touch([&d]);
        assert!(t.sweep_many_if_untouched(one, future, |_| ()).0.is_empty(), "touched while the GC runs");
        t.gc_end();
        assert!(!t.protected(&d, future));
    }

    #[test]
    fn a_batch_sweeps_only_the_untouched() {
        let t = Touched::default();
        let digests: Vec<Digest> = (0..40u8).map(|i| Digest::sha256_of(&[i])).collect();
        let now = SystemTime::now();
        t.gc_begin(now);
        t.touch([&digests[3], &digests[17]]);
        let (swept, n) = t.sweep_many_if_untouched(&digests, now + Duration::from_secs(1), |d| d.len());
        assert_eq!(n, 38);
        assert!(!swept.contains(&digests[3]) && !swept.contains(&digests[17]));
        assert_eq!(swept.len(), 38);
        t.gc_end();
    }
}
