//! When each tag and manifest was last pulled: what retention's `pulledwithin` and
//! `mostrecentlypulledcount` read, and what listings show.
//!
//! A pull is recorded in memory only ([`Registry::record_pull`], a map insert); the server
//! writes what was recorded every little while and when it stops ([`Registry::flush_pulls`]),
//! one small object per repository that was pulled (`berth/pulls/<name>/_pulls.json`), merged
//! with what is stored (the later time wins), under the repository's lock so that replicas
//! flushing the same repository do not lose each other's times. A crash loses at most the
//! pulls since the last flush. Readers see the stored times merged with this process's
//! unflushed ones.
//!
//! Derived, advisory data: nothing here decides what is kept except through retention, and a
//! lost time only makes a tag look less recently pulled than it was.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::SystemTime;

use berth_oci::{Digest, RepoName, Tag};
use berth_storage::{BackendExt, layout};

use crate::Registry;
use crate::error::{Result, storage};

/// Last pull times of one repository's tags and manifests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullTimes {
    /// By tag.
    pub tags: BTreeMap<Tag, SystemTime>,
    /// By manifest digest (pulled by tag or by digest).
    pub manifests: BTreeMap<Digest, SystemTime>,
}

impl PullTimes {
    fn merge(&mut self, other: &PullTimes) {
        for (t, at) in &other.tags {
            let e = self.tags.entry(t.clone()).or_insert(*at);
            *e = (*e).max(*at);
        }
        for (d, at) in &other.manifests {
            let e = self.manifests.entry(d.clone()).or_insert(*at);
            *e = (*e).max(*at);
        }
    }

    fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.manifests.is_empty()
    }
}

/// The stored form: RFC 3339 times by tag and by digest.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Stored {
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    manifests: BTreeMap<String, String>,
}

fn decode(bytes: &[u8]) -> PullTimes {
    let Ok(s) = serde_json::from_slice::<Stored>(bytes) else {
        // A torn or foreign file: the times start over, nothing else depends on them.
        tracing::warn!("unreadable pull times; starting them over");
        return PullTimes::default();
    };
    let at = |v: &String| humantime::parse_rfc3339_weak(v).ok();
    PullTimes {
        tags: s.tags.iter().filter_map(|(k, v)| Some((k.parse().ok()?, at(v)?))).collect(),
        manifests: s.manifests.iter().filter_map(|(k, v)| Some((k.parse().ok()?, at(v)?))).collect(),
    }
}

fn encode(p: &PullTimes) -> Vec<u8> {
    let at = |t: &SystemTime| humantime::format_rfc3339_millis(*t).to_string();
    let s = Stored {
        tags: p.tags.iter().map(|(k, v)| (k.to_string(), at(v))).collect(),
        manifests: p.manifests.iter().map(|(k, v)| (k.to_string(), at(v))).collect(),
    };
    serde_json::to_vec(&s).expect("pull times serialize")
}

/// Pulls recorded since the last flush, by repository.
#[derive(Debug, Default)]
pub(crate) struct Pulls {
    pending: Mutex<HashMap<RepoName, PullTimes>>,
}

impl Registry {
    /// Records that `digest` was pulled from `name` now, by `tag` if it was asked for by tag.
    /// In memory only: [`Registry::flush_pulls`] stores it.
    pub fn record_pull(&self, name: &RepoName, tag: Option<&Tag>, digest: &Digest) {
        let now = SystemTime::now();
        let mut pending = self.pulls.pending.lock().unwrap_or_else(|e| e.into_inner());
        let p = pending.entry(name.clone()).or_default();
        if let Some(t) = tag {
            p.tags.insert(t.clone(), now);
        }
        p.manifests.insert(digest.clone(), now);
    }

    /// When `name`'s tags and manifests were last pulled (stored, and recorded here since).
    pub fn pull_times(&self, name: &RepoName) -> Result<PullTimes> {
        let mut times = match self.store().get_opt(&layout::pull_times(name)).map_err(storage)? {
            Some(bytes) => decode(&bytes),
            None => PullTimes::default(),
        };
        if let Some(p) = self.pulls.pending.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
            times.merge(p);
        }
        Ok(times)
    }

    /// Stores the pulls recorded since the last flush; returns how many repositories it wrote.
    /// What could not be stored is kept for the next flush.
    pub fn flush_pulls(&self) -> Result<usize> {
        let pending = std::mem::take(&mut *self.pulls.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let mut written = 0;
        let mut failed = None;
        for (name, times) in pending {
            if times.is_empty() {
                continue;
            }
            let stored = || -> Result<()> {
                let _lock = self.repo_lock(&name)?;
                let key = layout::pull_times(&name);
                let mut merged = match self.store().get_opt(&key).map_err(storage)? {
                    Some(bytes) => decode(&bytes),
                    None => PullTimes::default(),
                };
                merged.merge(&times);
                self.store().put(&key, &encode(&merged)).map_err(storage)
            };
            match stored() {
                Ok(()) => written += 1,
                Err(e) => {
                    let mut again = self.pulls.pending.lock().unwrap_or_else(|e| e.into_inner());
                    again.entry(name).or_default().merge(&times);
                    failed = Some(e);
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(written),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_times_round_trip_and_merging_keeps_the_later() {
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_800_000_000_123);
        let t1 = t0 + std::time::Duration::from_secs(60);
        let mut a = PullTimes::default();
        a.tags.insert("v1".parse().unwrap(), t0);
        a.manifests.insert(Digest::sha256_of(b"m"), t1);
        assert_eq!(decode(&encode(&a)), a);
        let mut b = PullTimes::default();
        b.tags.insert("v1".parse().unwrap(), t1);
        b.manifests.insert(Digest::sha256_of(b"m"), t0);
        a.merge(&b);
        assert_eq!(a.tags[&"v1".parse::<Tag>().unwrap()], t1);
        assert_eq!(a.manifests[&Digest::sha256_of(b"m")], t1);
        assert_eq!(decode(b"not json"), PullTimes::default());
    }
}
