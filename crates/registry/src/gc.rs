//! Garbage collection, online: mark what the roots reach, sweep the rest, while the registry
//! keeps serving. The only module that removes blob data.
//!
//! A run has five phases, each a function below: [`scan`](Registry::gc_scan) reads the root
//! afresh into a [`Graph`]; [`mark`](Registry::gc_mark) walks from the roots; then
//! [`sweep_manifests`](Registry::gc_sweep_manifests), [`sweep_blobs`](Registry::gc_sweep_blobs)
//! and [`tidy`](Registry::gc_tidy) remove what nothing reaches.
//!
//! **Roots** (invariant I2): every tag; every trash entry (what it holds stays until it
//! expires); untagged manifests the policy keeps ([`UntaggedPolicy`], measured from when a
//! manifest was pushed or last lost a tag); manifests and blobs clients touched within the grace
//! period or since this GC began. From each root, mark reaches the manifest, its blobs, an
//! index's children and the referrers of anything reached (in the same repository), through
//! `graph::walk`, the same walk accounting uses: the two cannot disagree about what stays.
//!
//! **Sweep**, in order: revision links of unreached manifests; blob data that nothing reached
//! and that is older than the grace period; uploads older than their maximum age; and the
//! folders of repositories left with nothing (their layer links with them). Layer links in
//! repositories that keep content stay, even when their blob is gone: harmless, and cheaper to
//! leave than to remove one by one (`fsck --repair` tidies them); so do the entries of tags'
//! histories that name removed manifests when the run read a metadata index (a listing of
//! each changed repository's tags would cost more than the rest of the run). Each manifest and blob is
//! removed inside `Coordination::sweep`, which closes the race with a push (see
//! `touched`).
//!
//! Why a grace period on top of the touched set: a client checks a blob exists (HEAD) and may
//! send the manifest naming it minutes later. The touched set only covers touches since this GC
//! began; the grace period (default 1 hour) covers a push that began before. A push slower than
//! the grace period loses its race and is refused with `MANIFEST_BLOB_UNKNOWN`, never accepted
//! broken (`manifests::check_complete` runs after the touch).
//!
//! What this module deliberately does not do: hold any lock that a pull or a push waits on for
//! longer than one file delete; trust the in-memory accounting graph (it scans the links
//! afresh; only manifest bytes, immutable by digest, may come from the cache); delete a folder
//! that is not empty.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use berth_oci::{Algorithm, Digest, RepoName};
use berth_storage::{BackendExt, Key, Meta, layout};

use crate::Registry;
use crate::config::UntaggedPolicy;
use crate::error::{RegistryError, Result, storage};
use crate::graph::{Change, Graph, Id, Reached, Subjects};
use crate::scan::{RepoLinks, ScanOptions, Scanned, par_map};

/// Keys per delete request on a store without folders (S3's `DeleteObjects` takes 1,000).
const DELETE_BATCH: usize = 1000;

/// How a GC run behaves.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Unreferenced blobs younger than this, or touched within it, are kept.
    pub grace: Duration,
    /// Untagged manifests.
    pub untagged: UntaggedPolicy,
    /// Uploads started longer ago than this are removed.
    pub upload_max_age: Duration,
    /// Report what would go; change nothing.
    pub dry_run: bool,
    /// Who asked for the run (`None`: the schedule, or nobody signed in), for the history.
    pub who: Option<String>,
    /// List the store even when a metadata index could be read instead: finds blobs the
    /// index never learnt (written by a process that died before it could record them).
    pub listing: bool,
    /// Do nothing if a run (by any process serving the root) finished this recently: for
    /// schedules kept by several replicas, checked once this run holds the GC lock.
    pub unless_ran_within: Option<Duration>,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            grace: Duration::from_secs(3600),
            untagged: UntaggedPolicy::OlderThan(Duration::from_secs(24 * 3600)),
            upload_max_age: Duration::from_secs(7 * 24 * 3600),
            dry_run: false,
            who: None,
            listing: false,
            unless_ran_within: None,
        }
    }
}

/// One line of the GC history: a run that was not a dry run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GcRun {
    /// When it finished (RFC 3339, UTC).
    pub time: String,
    /// Who asked for it.
    pub who: Option<String>,
    /// How long it took, in seconds.
    pub seconds: f64,
    /// Blobs removed.
    pub blobs: u64,
    /// Their bytes.
    pub bytes_freed: u64,
    /// Untagged manifests removed.
    pub manifests: usize,
    /// Repositories left empty and removed.
    pub repositories: usize,
    /// Stale uploads removed.
    pub uploads: u64,
}

/// Where a GC run is, for progress displays.
#[derive(Debug, Clone, Copy)]
pub enum GcProgress {
    /// Reading the links of repositories.
    Scan { done: usize, total: usize },
    /// Reading blob folders and removing what nothing reaches.
    Sweep { done: usize },
}

/// What a GC run removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Blobs removed from the blob store.
    pub blobs: u64,
    /// Their bytes.
    pub bytes_freed: u64,
    /// Untagged manifests removed from repositories.
    pub manifests: Vec<(RepoName, Digest)>,
    /// Repositories left empty, whose folders were removed.
    pub repositories: Vec<RepoName>,
    /// Stale uploads removed.
    pub uploads: u64,
    /// Layer links removed with the repositories left empty.
    pub layer_links: u64,
    /// Blobs something reaches.
    pub blobs_in_use: u64,
    /// Blobs nothing reaches that were kept because they are recent or were touched.
    pub blobs_kept_recent: u64,
    /// How long it took.
    pub duration: Duration,
    /// Requests the run sent to the store, when the store counts them (an object store).
    pub store_requests: Option<u64>,
    /// Nothing was done: a run finished within `GcOptions::unless_ran_within`.
    pub skipped: bool,
}

/// A blob as its folder was listed: its data's meta when the listing carried it (`Some(None)`:
/// a folder without data), `None` when it must be asked for.
pub(crate) type Listed = (Digest, Option<Option<Meta>>);

/// Blobs for one worker of the sweep: one folder of the store, or what the index listed of it.
enum Group {
    Folder(Algorithm, Key),
    Listed(Vec<Listed>),
}

/// The instants a run measures against.
struct Clock {
    now: SystemTime,
    /// Touches and blobs at or after this are recent (the grace period).
    cutoff: SystemTime,
}

/// What mark decided, by the position of each repository in `Scanned::repos`.
struct Marks {
    /// By id: reached from a root.
    reached: Vec<bool>,
    /// Manifests each repository keeps.
    keep: Vec<HashSet<Id>>,
    /// Layer links each repository still needs: what its kept manifests and trash entries use.
    needed: Vec<HashSet<Id>>,
    /// Digests clients touched within the grace period or during the run.
    recent: HashSet<Digest>,
}

/// A run after mark: what the sweeping phases work from.
struct Run<'a> {
    s: Scanned,
    m: Marks,
    opts: &'a GcOptions,
    clock: Clock,
}

impl Marks {
    fn reached(&self, g: &Graph, d: &Digest) -> bool {
        g.id(d).is_some_and(|id| self.reached[id as usize])
    }
}

impl Registry {
    /// Runs one GC. Waits for a GC already running to finish first (one at a time).
    pub fn gc(&self, opts: &GcOptions, progress: &(dyn Fn(GcProgress) + Sync)) -> Result<GcReport> {
        let _one = self.coord.lock_gc()?;
        if let Some(within) = opts.unless_ran_within
            && let Some(last) = self.gc_history(1)?.first()
            && humantime::parse_rfc3339_weak(&last.time)
                .is_ok_and(|t| SystemTime::now().duration_since(t).is_ok_and(|ago| ago < within))
        {
            return Ok(GcReport { skipped: true, dry_run: opts.dry_run, ..Default::default() });
        }
        let started = Instant::now();
        let requests_before = self.store().requests();
        let now = SystemTime::now();
        let clock = Clock { now, cutoff: now.checked_sub(opts.grace).unwrap_or(SystemTime::UNIX_EPOCH) };
        self.coord.gc_begin(clock.cutoff.min(now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)))?;
        struct End<'a>(&'a Registry, bool);
        impl Drop for End<'_> {
            fn drop(&mut self) {
                self.0.coord.gc_end();
                if self.1 {
                    // Whatever happened, the accounting graph is rebuilt from storage next time.
                    self.0.graph.note(Change::Invalidate);
                }
            }
        }
        let _end = End(self, !opts.dry_run);
        // Wait out every operation that touched before recording began (see `inflight`).
        self.coord.wait_inflight()?;
        let mut report = GcReport { dry_run: opts.dry_run, ..Default::default() };

        let s = self.gc_scan(opts, progress)?;
        tracing::debug!(elapsed = ?started.elapsed(), "GC scanned");
        let m = self.gc_mark(&s, opts, &clock)?;
        tracing::debug!(elapsed = ?started.elapsed(), "GC marked");
        report.blobs_in_use = m.reached.iter().filter(|&&r| r).count() as u64;
        let run = Run { s, m, opts, clock };
        let mut changed = self.gc_sweep_manifests(&run, &mut report)?;
        tracing::debug!(elapsed = ?started.elapsed(), "GC swept manifests");
        self.gc_sweep_blobs(&run, progress, &mut report)?;
        tracing::debug!(elapsed = ?started.elapsed(), "GC swept blobs");
        changed.extend(self.gc_tidy(&run, &mut report)?);
        if !opts.dry_run {
            // A few requests each, on many threads, and the changes announced to other
            // replicas in one round: one by one, a GC that touched many repositories spent
            // seconds here.
            changed.sort_unstable();
            changed.dedup();
            let names: Vec<RepoName> = changed.iter().map(|&i| run.s.repos[i].name.clone()).collect();
            // Read from the index when the run did (it holds every link the store holds).
            let from_index = self.index.as_deref().filter(|_| run.s.blobs.is_some()).map(|i| i.holding(&names));
            let exists = match from_index {
                Some(Ok(held)) => held,
                // The deletes are done: tell the others from storage rather than not at all.
                _ => par_map(self.workers(), &names, |n| self.repo_exists(n))?,
            };
            let changes: Vec<(RepoName, bool)> = names.into_iter().zip(exists).collect();
            self.catalog_refresh_many(&changes)?;
            tracing::debug!(elapsed = ?started.elapsed(), repositories = changed.len(), "GC refreshed the catalog");
        }
        drop(run);
        crate::scan::give_back_memory();
        report.duration = started.elapsed();
        // Other requests in the meantime (pushes, pulls) count too: an upper bound.
        report.store_requests = self.store().requests().zip(requests_before).map(|(a, b)| a - b);
        if !opts.dry_run {
            self.gc_record(&report, opts.who.as_deref())?;
        }
        Ok(report)
    }

    /// Appends a finished run to the history.
    fn gc_record(&self, r: &GcReport, who: Option<&str>) -> Result<()> {
        let run = GcRun {
            time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            who: who.map(str::to_owned),
            seconds: r.duration.as_secs_f64(),
            blobs: r.blobs,
            bytes_freed: r.bytes_freed,
            manifests: r.manifests.len(),
            repositories: r.repositories.len(),
            uploads: r.uploads,
        };
        let mut line = serde_json::to_vec(&run).expect("a GC run serializes");
        line.push(b'\n');
        let mut w = self.store().writer(&layout::gc_history()).map_err(storage)?;
        w.write_all(&line).map_err(storage)?;
        w.commit().map_err(storage)?;
        Ok(())
    }

    /// The last `n` GC runs, newest first. A line that cannot be read (a torn write after a
    /// crash) is skipped.
    pub fn gc_history(&self, n: usize) -> Result<Vec<GcRun>> {
        let text = match self.store().get(&layout::gc_history()) {
            Ok(t) => t,
            Err(berth_storage::StorageError::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(storage(e)),
        };
        Ok(text.split(|&b| b == b'\n').rev().filter_map(|l| serde_json::from_slice(l).ok()).take(n).collect())
    }

    /// Phase 1: reads every repository's links, the trash (before and after), and every
    /// manifest they reach.
    fn gc_scan(&self, opts: &GcOptions, progress: &(dyn Fn(GcProgress) + Sync)) -> Result<Scanned> {
        let scan = ScanOptions { sizes: false, listing: opts.listing };
        self.scan(scan, &|done, total| progress(GcProgress::Scan { done, total }))
    }

    /// Phase 2: marks what the roots reach, per repository (see the module docs). A reached
    /// manifest that cannot be read stops the run: what it references is unknown, so nothing
    /// could be swept safely.
    fn gc_mark(&self, s: &Scanned, opts: &GcOptions, clock: &Clock) -> Result<Marks> {
        let g = &s.graph;
        let subjects = g.subjects();
        let position: HashMap<&RepoName, u32> = g.repos.keys().enumerate().map(|(i, n)| (n, i as u32)).collect();
        let mut m = Marks {
            reached: vec![false; g.len()],
            keep: vec![HashSet::new(); s.repos.len()],
            needed: vec![HashSet::new(); s.repos.len()],
            recent: self.coord.recent(clock.cutoff)?,
        };
        let reach = |m: &mut Marks, i: usize, roots: Vec<Id>| {
            let gi = position.get(&s.repos[i].name).copied();
            reach_into(g, gi, roots, &subjects, &mut m.reached, &mut m.keep[i]);
        };
        for (i, r) in s.repos.iter().enumerate() {
            let tagged = r.tags.iter().map(|(_, d)| d);
            let touched = r.revisions.iter().filter(|d| m.recent.contains(*d));
            let roots: Vec<Id> = tagged.chain(touched).filter_map(|d| g.id(d)).collect();
            reach(&mut m, i, roots);
        }
        let index: HashMap<&RepoName, usize> = s.repos.iter().enumerate().map(|(i, r)| (&r.name, i)).collect();
        for e in g.trash.values() {
            let roots: Vec<Id> = e.held_manifests().filter_map(|d| g.id(d)).collect();
            match index.get(&e.repository) {
                Some(&i) => {
                    reach(&mut m, i, roots);
                    m.needed[i].extend(e.layers.iter().filter_map(|d| g.id(d)));
                }
                None => reach_into(g, None, roots, &subjects, &mut m.reached, &mut HashSet::new()),
            }
            for id in e.layers.iter().filter_map(|d| g.id(d)) {
                m.reached[id as usize] = true;
            }
        }
        // When each untagged manifest was pushed or last lost a tag: its revision link's time,
        // read for every repository at once (a request per repository on an object store).
        let untagged = |m: &Marks, i: usize| -> Vec<Digest> {
            let unkept = |d: &&Digest| g.id(d).is_some_and(|id| !m.keep[i].contains(&id));
            s.repos[i].revisions.iter().filter(unkept).cloned().collect()
        };
        let indexes: Vec<usize> = (0..s.repos.len()).collect();
        let times: Vec<HashMap<Digest, SystemTime>> = match opts.untagged {
            UntaggedPolicy::OlderThan(age) if !age.is_zero() => {
                par_map(self.workers(), &indexes, |&i| match &s.repos[i].times {
                    Some(times) => Ok(times.clone()),
                    None => self.revision_times(&s.repos[i].name, &untagged(&m, i)),
                })?
            }
            _ => vec![HashMap::new(); s.repos.len()],
        };
        for (i, times) in times.iter().enumerate() {
            let mut kept_by_policy = Vec::new();
            for d in untagged(&m, i) {
                let keep_it = match opts.untagged {
                    UntaggedPolicy::Keep => true,
                    UntaggedPolicy::OlderThan(age) => {
                        times.get(&d).is_some_and(|t| clock.now.duration_since(*t).unwrap_or_default() < age)
                    }
                };
                if keep_it {
                    kept_by_policy.extend(g.id(&d));
                }
            }
            reach(&mut m, i, kept_by_policy);
            let needed: Vec<Id> =
                m.keep[i].iter().filter_map(|&k| g.node(k)).flat_map(|n| n.blobs.iter().copied()).collect();
            m.needed[i].extend(needed);
        }
        if let Some((&id, reason)) = g.unreadable.iter().find(|&(&id, _)| m.reached[id as usize]) {
            return Err(RegistryError::Corrupt {
                what: format!("manifest {}", g.digest(id)),
                reason: format!("{reason}; GC cannot know what it references; run berth fsck"),
            });
        }
        Ok(m)
    }

    /// Phase 3: removes the revision links of manifests no root reaches (and their referrers
    /// index entries), then the tag-history entries that name them. Returns the repositories
    /// it changed.
    fn gc_sweep_manifests(&self, run: &Run<'_>, report: &mut GcReport) -> Result<Vec<usize>> {
        let Run { s, m, opts, clock } = run;
        let g = &s.graph;
        // One group per repository: the workers then remove in different folders.
        let doomed: Vec<(usize, Vec<Digest>)> = s
            .repos
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let gone = r.revisions.iter().filter(|d| g.id(d).is_none_or(|id| !m.keep[i].contains(&id)));
                (i, gone.cloned().collect::<Vec<_>>())
            })
            .filter(|(_, v)| !v.is_empty())
            .collect();
        let subject_of = |d: &Digest| g.id(d).and_then(|id| g.node(id)).and_then(|n| n.subject).map(|s| g.digest(s));
        let removed: Vec<(usize, Vec<Digest>)> = if opts.dry_run || self.store().has_folders() {
            par_map(self.workers(), &doomed, |(i, digests)| {
                let r = &s.repos[*i];
                let mut gone = Vec::new();
                for d in digests {
                    if opts.dry_run {
                        if !self.coord.protected(d, clock.cutoff)? {
                            gone.push(d.clone());
                        }
                        continue;
                    }
                    let remove = || self.gc_remove_manifest(&r.name, d, subject_of(d).as_ref());
                    if self.sweep_one(d, clock.cutoff, remove)?.transpose()?.is_some() {
                        gone.push(d.clone());
                    }
                }
                Ok((*i, gone))
            })?
        } else {
            self.gc_sweep_manifest_batches(s, &doomed, &subject_of, clock)?
        };
        // The history entries naming what went are removed after a listing of each tag
        // folder: with an index, a request per repository the run changed, to tidy entries that
        // harm nothing, so they are left (as layer links are; `fsck --repair` tidies them).
        if !opts.dry_run && s.blobs.is_none() {
            par_map(self.workers(), &removed, |(i, gone)| {
                if !gone.is_empty() {
                    self.gc_clean_tag_histories(&s.repos[*i], gone)?;
                }
                Ok(())
            })?;
        }
        let mut changed = Vec::new();
        for (i, gone) in removed {
            if !gone.is_empty() {
                changed.push(i);
            }
            report.manifests.extend(gone.into_iter().map(|d| (s.repos[i].name.clone(), d)));
        }
        Ok(changed)
    }

    /// Phase 4: lists every blob folder (or, with a ready index, reads the blobs it holds) and
    /// removes the blobs nothing reached that are older than the grace period and were not
    /// touched.
    fn gc_sweep_blobs(
        &self,
        run: &Run<'_>,
        progress: &(dyn Fn(GcProgress) + Sync),
        report: &mut GcReport,
    ) -> Result<()> {
        let Run { s, m, opts, clock } = run;
        let g = &s.graph;
        let mut groups = Vec::new();
        match &s.blobs {
            // Read from the index: only the blobs nothing reached, grouped by folder where
            // the store has folders, else in batches of one delete request each (a batch holds
            // the stripes it spans at once).
            Some(blobs) => {
                let mut by_folder: BTreeMap<(Algorithm, &str), Vec<Listed>> = BTreeMap::new();
                for b in blobs.iter().filter(|b| !m.reached(g, &b.digest)) {
                    let modified = clock.now.checked_sub(b.age).unwrap_or(SystemTime::UNIX_EPOCH);
                    let meta = Meta { size: b.size, modified };
                    let folder = (b.digest.algorithm(), &b.digest.hex()[..2]);
                    by_folder.entry(folder).or_default().push((b.digest.clone(), Some(Some(meta))));
                }
                if self.store().has_folders() {
                    groups.extend(by_folder.into_values().map(Group::Listed));
                } else {
                    let all: Vec<Listed> = by_folder.into_values().flatten().collect();
                    groups.extend(all.chunks(DELETE_BATCH).map(|c| Group::Listed(c.to_vec())));
                }
            }
            None => {
                for alg in [Algorithm::Sha256, Algorithm::Sha512] {
                    for p in self.store().list_all(&layout::blob_algorithm_dir(alg)).map_err(storage)? {
                        if let Some(dir) = layout::blob_prefix_dir(alg, &p) {
                            groups.push(Group::Folder(alg, dir));
                        }
                    }
                }
            }
        }
        let seen = AtomicUsize::new(0);
        #[derive(Clone, Copy)]
        enum Fate {
            Kept,
            Removed { size: u64, had_data: bool },
        }
        let removed = |meta: Option<Meta>| Fate::Removed { size: meta.map_or(0, |m| m.size), had_data: meta.is_some() };
        // No cache may claim a removed blob exists (Distribution's problem 6).
        let forget = |d: &Digest| self.manifests.remove(d);
        // One group per blob folder: the workers then delete in different folders, and do not
        // queue on one folder's lock as they would taking neighbours from one list. A folder is
        // also one stripe of the touched set, so a batch delete holds one lock.
        let fates = par_map(self.workers(), &groups, |group| {
            let listed = match group {
                Group::Folder(alg, dir) => self.blob_folder(*alg, dir)?,
                Group::Listed(listed) => listed.clone(),
            };
            let n = seen.fetch_add(listed.len(), Ordering::Relaxed) + listed.len();
            progress(GcProgress::Sweep { done: n });
            let mut fates = Vec::new();
            let mut doomed: Vec<(Digest, Option<Meta>)> = Vec::new();
            for (d, known) in listed {
                if m.reached(g, &d) {
                    continue;
                }
                if m.recent.contains(&d) {
                    fates.push(Fate::Kept);
                    continue;
                }
                let meta = match known {
                    Some(meta) => meta,
                    None => self.store().stat_opt(&layout::blob_data(&d)).map_err(storage)?,
                };
                if meta.is_some_and(|meta| meta.modified >= clock.cutoff) {
                    fates.push(Fate::Kept);
                } else {
                    doomed.push((d, meta));
                }
            }
            if opts.dry_run {
                for (d, meta) in &doomed {
                    fates.push(if self.coord.protected(d, clock.cutoff)? { Fate::Kept } else { removed(*meta) });
                }
            } else if self.store().has_folders() {
                for (d, meta) in &doomed {
                    let remove = || {
                        forget(d);
                        self.remove_one(&layout::blob_data(d), &layout::blob_dir(d))
                    };
                    let swept = self.sweep_one(d, clock.cutoff, remove)?.transpose()?;
                    fates.push(if swept.is_some() { removed(*meta) } else { Fate::Kept });
                }
            } else {
                // Without folders, a blob is its one `data` object: a request deletes a batch.
                for batch in doomed.chunks(DELETE_BATCH) {
                    let digests: Vec<Digest> = batch.iter().map(|(d, _)| d.clone()).collect();
                    let (swept, done) = self.sweep_many(&digests, clock.cutoff, |doomed| {
                        doomed.iter().for_each(forget);
                        let keys: Vec<Key> = doomed.iter().map(layout::blob_data).collect();
                        self.store().delete_objects(&keys).map_err(storage)
                    })?;
                    done?;
                    let swept: HashSet<&Digest> = swept.iter().collect();
                    for (d, meta) in batch {
                        fates.push(if swept.contains(d) { removed(*meta) } else { Fate::Kept });
                    }
                }
            }
            Ok(fates)
        })?;
        for fate in fates.into_iter().flatten() {
            match fate {
                Fate::Kept => report.blobs_kept_recent += 1,
                Fate::Removed { size, had_data } => {
                    if had_data {
                        report.blobs += 1;
                        report.bytes_freed += size;
                    }
                }
            }
        }
        progress(GcProgress::Sweep { done: seen.load(Ordering::Relaxed) });
        Ok(())
    }

    /// Phase 5: removes stale uploads, and the folders of repositories left with nothing (no
    /// tag, no kept manifest, no layer link a kept image or trash entry needs, no live upload).
    /// Returns the repositories it changed.
    fn gc_tidy(&self, run: &Run<'_>, report: &mut GcReport) -> Result<Vec<usize>> {
        let Run { s, m, opts, clock } = run;
        let g = &s.graph;
        let upload_cutoff = clock.now.checked_sub(opts.upload_max_age).unwrap_or(SystemTime::UNIX_EPOCH);
        let indexes: Vec<usize> = (0..s.repos.len()).collect();
        let tidy = par_map(self.workers(), &indexes, |&i| {
            let r = &s.repos[i];
            let mut uploads = 0u64;
            for id in &r.uploads {
                if self.upload_started_at(&r.name, id)? < upload_cutoff {
                    if !opts.dry_run {
                        self.store().delete_prefix(&layout::upload_dir(&r.name, id)).map_err(storage)?;
                        self.forget_upload(&r.name, id);
                    }
                    uploads += 1;
                }
            }
            let empty = is_left_empty(g, r, m, i) && uploads as usize == r.uploads.len();
            let links = if empty { self.gc_unlink_layers(r, opts, clock)? } else { 0 };
            Ok((links, uploads, empty))
        })?;
        let mut changed = Vec::new();
        for (i, (links, uploads, empty)) in tidy.into_iter().enumerate() {
            report.layer_links += links;
            report.uploads += uploads;
            if empty {
                report.repositories.push(s.repos[i].name.clone());
            }
            if empty || links > 0 || uploads > 0 {
                changed.push(i);
            }
        }
        if !opts.dry_run {
            // Only repositories left with nothing are walked for empty folders: walking every
            // changed repository would cost as much as the rest of the sweep.
            for name in &report.repositories {
                self.store().prune_empty(&layout::repo_dir(name)).map_err(storage)?;
                self.store().prune_empty(&layout::referrers_dir(name)).map_err(storage)?;
                // What Berth knew of its tags (pull times, restored push times) goes with it.
                for fact in [layout::pull_times(name), layout::restored_push_times(name)] {
                    self.store().delete(&fact).map_err(storage)?;
                    if let Some(dir) = fact.parent() {
                        self.store().prune_empty(&dir).map_err(storage)?;
                    }
                }
                self.prune_repo_parents(name)?;
            }
        }
        Ok(changed)
    }

    /// Phase 3 on a store without folders: the revision links (and referrers index entries)
    /// of every repository in batches of up to [`DELETE_BATCH`] digests, one request and one
    /// hold of their stripes each, instead of a request per repository. A digest doomed in
    /// several repositories is one entry of a batch. Returns what went, by repository.
    fn gc_sweep_manifest_batches(
        &self,
        s: &Scanned,
        doomed: &[(usize, Vec<Digest>)],
        subject_of: &(dyn Fn(&Digest) -> Option<Digest> + Sync),
        clock: &Clock,
    ) -> Result<Vec<(usize, Vec<Digest>)>> {
        let mut repos_of: BTreeMap<&Digest, Vec<usize>> = BTreeMap::new();
        for (i, digests) in doomed {
            for d in digests {
                repos_of.entry(d).or_default().push(*i);
            }
        }
        let digests: Vec<Digest> = repos_of.keys().map(|d| (*d).clone()).collect();
        let batches: Vec<&[Digest]> = digests.chunks(DELETE_BATCH / 2).collect();
        let swept = par_map(self.workers(), &batches, |batch| {
            let (swept, done) = self.sweep_many(batch, clock.cutoff, |doomed| {
                let mut keys = Vec::with_capacity(doomed.len());
                for d in doomed {
                    for &i in &repos_of[d] {
                        let name = &s.repos[i].name;
                        keys.push(layout::revision_link(name, d));
                        keys.extend(subject_of(d).map(|sub| layout::referrer_entry(name, &sub, d)));
                    }
                }
                self.store().delete_objects(&keys).map_err(storage)
            })?;
            done?;
            Ok(swept)
        })?;
        let mut gone: BTreeMap<usize, Vec<Digest>> = BTreeMap::new();
        for d in swept.into_iter().flatten() {
            for &i in &repos_of[&d] {
                gone.entry(i).or_default().push(d.clone());
            }
        }
        Ok(gone.into_iter().collect())
    }

    /// Removes the layer links of a repository left with nothing; returns how many went. Each
    /// goes under the touched lock, so a push that mounts or uploads into this repository right
    /// now keeps its link (and so the folder).
    fn gc_unlink_layers(&self, r: &RepoLinks, opts: &GcOptions, clock: &Clock) -> Result<u64> {
        if opts.dry_run {
            return Ok(r.layers.len() as u64);
        }
        let mut links = 0;
        for l in &r.layers {
            let remove = || self.remove_one(&layout::layer_link(&r.name, l), &layout::layer_link_dir(&r.name, l));
            if self.sweep_one(l, clock.cutoff, remove)?.transpose()?.is_some() {
                links += 1;
            }
        }
        Ok(links)
    }

    fn gc_remove_manifest(&self, name: &RepoName, d: &Digest, subject: Option<&Digest>) -> Result<()> {
        self.remove_one(&layout::revision_link(name, d), &layout::revision_dir(name, d))?;
        if let Some(s) = subject {
            self.store().delete(&layout::referrer_entry(name, s, d)).map_err(storage)?;
        }
        Ok(())
    }

    /// Removes the entries of each remaining tag's history that name a removed manifest.
    fn gc_clean_tag_histories(&self, r: &RepoLinks, removed: &[Digest]) -> Result<()> {
        let removed: HashSet<&Digest> = removed.iter().collect();
        if let Some(objects) = self.store().list_objects(&layout::tags_dir(&r.name)).map_err(storage)? {
            // `<tag>/index/<algorithm>/<hex>/link`, every tag in one listing.
            let mut files = Vec::new();
            for (rel, _) in objects {
                let parts: Vec<&str> = rel.split('/').collect();
                if let [tag, "index", alg, hex, "link"] = parts[..]
                    && let (Ok(t), Some(d)) = (tag.parse::<berth_oci::Tag>(), Digest::from_parts(alg, hex))
                    && removed.contains(&d)
                {
                    files.push((layout::tag_index_link(&r.name, &t, &d), layout::tag_index_dir(&r.name, &t, &d)));
                }
            }
            return self.remove_files(&files);
        }
        for (t, _) in &r.tags {
            for alg in [Algorithm::Sha256, Algorithm::Sha512] {
                let hexes = self.store().list_all(&layout::tag_index_alg_dir(&r.name, t, alg)).map_err(storage)?;
                for d in hexes.iter().filter_map(|h| Digest::from_parts(alg.as_str(), h)) {
                    if removed.contains(&d) {
                        self.remove_one(
                            &layout::tag_index_link(&r.name, t, &d),
                            &layout::tag_index_dir(&r.name, t, &d),
                        )?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The blobs in one blob folder (`blobs/<algorithm>/<ab>/`), each with its data's meta when
    /// the listing carries it (`Some(None)`: a folder without data), or `None` when it must be
    /// asked for (a filesystem lists names only, and only unreached blobs are worth a stat).
    pub(crate) fn blob_folder(&self, alg: Algorithm, dir: &Key) -> Result<Vec<Listed>> {
        let Some(objects) = self.store().list_objects(dir).map_err(storage)? else {
            let hexes = self.store().list_all(dir).map_err(storage)?;
            return Ok(hexes.iter().filter_map(|h| Digest::from_parts(alg.as_str(), h)).map(|d| (d, None)).collect());
        };
        let mut out: Vec<Listed> = Vec::new();
        for (rel, meta) in objects {
            let Some((hex, rest)) = rel.split_once('/') else { continue };
            let Some(d) = Digest::from_parts(alg.as_str(), hex) else { continue };
            // Key order keeps a folder's objects together.
            if out.last().is_none_or(|(last, _)| *last != d) {
                out.push((d, Some(None)));
            }
            if rest == "data"
                && let Some((_, known)) = out.last_mut()
            {
                *known = Some(Some(meta));
            }
        }
        Ok(out)
    }

    /// When each of `digests`' revision links in `name` was written, for those that have one.
    pub(crate) fn revision_times(&self, name: &RepoName, digests: &[Digest]) -> Result<HashMap<Digest, SystemTime>> {
        let mut out = HashMap::new();
        if digests.is_empty() {
            return Ok(out);
        }
        let wanted: HashSet<&Digest> = digests.iter().collect();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            if !digests.iter().any(|d| d.algorithm() == alg) {
                continue;
            }
            match self.store().list_objects(&layout::revisions_dir(name, alg)).map_err(storage)? {
                Some(objects) => {
                    for (rel, meta) in objects {
                        if let Some(hex) = rel.strip_suffix("/link")
                            && let Some(d) = Digest::from_parts(alg.as_str(), hex)
                            && wanted.contains(&d)
                        {
                            out.insert(d, meta.modified);
                        }
                    }
                }
                None => {
                    for d in digests.iter().filter(|d| d.algorithm() == alg) {
                        if let Some(meta) = self.store().stat_opt(&layout::revision_link(name, d)).map_err(storage)? {
                            out.insert(d.clone(), meta.modified);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Removes folders that each hold one file (see [`Registry::remove_one`]); in one request
    /// per batch on a store without folders.
    fn remove_files(&self, files: &[(Key, Key)]) -> Result<()> {
        if self.store().has_folders() {
            return files.iter().try_for_each(|(file, dir)| self.remove_one(file, dir));
        }
        let keys: Vec<Key> = files.iter().map(|(f, _)| f.clone()).collect();
        self.store().delete_objects(&keys).map_err(storage)
    }

    /// Removes a folder that holds one file (a blob's `data`, a link): two calls instead of a
    /// recursive walk, and a recursive walk only if something unexpected is left in it. On a
    /// store without folders, the file is all there is.
    fn remove_one(&self, file: &Key, dir: &Key) -> Result<()> {
        if !self.store().has_folders() {
            return self.store().delete_objects(std::slice::from_ref(file)).map_err(storage);
        }
        self.store().delete(file).map_err(storage)?;
        if !self.store().remove_empty_folder(dir).map_err(storage)? {
            self.store().delete_prefix(dir).map_err(storage)?;
        }
        Ok(())
    }

    /// When an upload began: its `startedat`, else its data's modification time, else now
    /// (an upload that has written nothing yet is not stale).
    pub(crate) fn upload_started_at(&self, name: &RepoName, id: &berth_oci::UploadId) -> Result<SystemTime> {
        if let Ok(Some(b)) = self.store().get_opt(&layout::upload_started(name, id))
            && let Ok(t) = humantime::parse_rfc3339_weak(String::from_utf8_lossy(&b).trim())
        {
            return Ok(t);
        }
        let meta = self.store().stat_opt(&layout::upload_data(name, id)).map_err(storage)?;
        Ok(meta.map_or_else(SystemTime::now, |m| m.modified))
    }
}

/// Marks everything `roots` reach in the repository at graph position `gi`: manifests into
/// `keep`, manifests and blobs into `reached`.
fn reach_into(
    g: &Graph,
    gi: Option<u32>,
    roots: Vec<Id>,
    subjects: &Subjects,
    reached: &mut [bool],
    keep: &mut HashSet<Id>,
) {
    // Manifests kept already were walked with everything below them.
    let roots: Vec<Id> = roots.into_iter().filter(|r| !keep.contains(r)).collect();
    g.reach(gi, roots, subjects, |r| match r {
        Reached::Manifest(&id) => {
            keep.insert(id);
            reached[id as usize] = true;
        }
        Reached::Blob(&id) => reached[id as usize] = true,
    });
}

/// Whether a repository keeps nothing: no tag, no kept manifest with a revision link, no layer
/// link a kept image or trash entry needs, no link touched recently.
fn is_left_empty(g: &Graph, r: &RepoLinks, m: &Marks, i: usize) -> bool {
    let kept = |d: &Digest| g.id(d).is_some_and(|id| m.keep[i].contains(&id));
    let needed = |d: &Digest| g.id(d).is_some_and(|id| m.needed[i].contains(&id)) || m.recent.contains(d);
    // A manifest kept only by a trash entry has no revision link here: restore brings it back.
    r.tags.is_empty() && !r.revisions.iter().any(kept) && !r.layers.iter().any(needed)
}
