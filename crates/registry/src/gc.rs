//! Garbage collection, online: mark what the roots reach, sweep the rest, while the registry
//! keeps serving. The only module that removes blob data.
//!
//! **Roots** (invariant I2): every tag; every trash entry (what it holds stays until it
//! expires); untagged manifests the policy keeps (`UntaggedPolicy`, measured from when a manifest
//! was pushed or last lost a tag); manifests and blobs clients touched within the grace period or
//! since this GC began. From each root, **mark** reaches the manifest, its blobs, an index's
//! children and the referrers of anything reached (in the same repository).
//!
//! **Sweep**, in order: revision links of unreached manifests; blob data that nothing reached
//! and that is older than the grace period; layer links that no kept manifest of their
//! repository needs and that are older than the grace period (a push's leftovers) or point at
//! nothing; uploads older than their maximum age; folders left empty. Each manifest and blob is removed inside
//! `Touched::sweep_if_untouched`, which closes the race with a push (see `touched`).
//!
//! Why a grace period on top of the touched set: a client checks a blob exists (HEAD) and may
//! send the manifest naming it minutes later. The touched set only covers touches since this GC
//! began; the grace period (default 1 hour) covers a push that began before. A push slower than
//! the grace period loses its race and is refused with `MANIFEST_BLOB_UNKNOWN`, never accepted
//! broken (`manifests::check_complete` runs after the touch).
//!
//! What this module deliberately does not do: hold any lock that a pull or a push waits on for
//! longer than one file delete; trust the in-memory usage graph (it reads the links afresh; only
//! manifest bytes, immutable by digest, come from the cache); delete a folder that is not empty.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use berth_oci::{Algorithm, Digest, RepoName, Tag, UploadId};
use berth_storage::layout;

use crate::Registry;
use crate::error::{RegistryError, Result, storage};
use crate::usage::{Change, Node};

/// What happens to manifests no tag reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UntaggedPolicy {
    /// Keep them (and what they reference) forever.
    Keep,
    /// Collect them once untagged for longer than this.
    OlderThan(Duration),
}

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
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            grace: Duration::from_secs(3600),
            untagged: UntaggedPolicy::OlderThan(Duration::from_secs(24 * 3600)),
            upload_max_age: Duration::from_secs(7 * 24 * 3600),
            dry_run: false,
        }
    }
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
    /// Layer links removed: no kept manifest of their repository needs them, or their blob is gone.
    pub layer_links: u64,
    /// Blobs something reaches.
    pub blobs_in_use: u64,
    /// Blobs nothing reaches that were kept because they are recent or were touched.
    pub blobs_kept_recent: u64,
    /// How long it took.
    pub duration: Duration,
}

struct RepoScan {
    name: RepoName,
    tags: BTreeMap<Tag, Digest>,
    revisions: Vec<Digest>,
    layers: Vec<Digest>,
    uploads: Vec<UploadId>,
}

impl Registry {
    /// Runs one GC. Waits for a GC already running to finish first (one at a time).
    pub fn gc(&self, opts: &GcOptions, progress: &dyn Fn(GcProgress)) -> Result<GcReport> {
        let _one = self.gc_lock.lock().unwrap_or_else(|e| e.into_inner());
        let started = Instant::now();
        let now = SystemTime::now();
        let cutoff = now.checked_sub(opts.grace).unwrap_or(SystemTime::UNIX_EPOCH);
        self.touched.gc_begin(cutoff.min(now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)));
        struct End<'a>(&'a Registry);
        impl Drop for End<'_> {
            fn drop(&mut self) {
                self.0.touched.gc_end();
            }
        }
        let _end = End(self);
        let mut report = GcReport { dry_run: opts.dry_run, ..Default::default() };

        let repos = self.gc_scan(progress)?;
        let trash = self.trash_list()?;
        let recent = self.touched.recent(cutoff);

        // Mark.
        let mut nodes: HashMap<Digest, Option<Node>> = HashMap::new();
        let mut marked: HashSet<Digest> = HashSet::new();
        let mut keep: Vec<HashSet<Digest>> = Vec::with_capacity(repos.len());
        let by_name: HashMap<&RepoName, usize> = repos.iter().enumerate().map(|(i, r)| (&r.name, i)).collect();
        for r in &repos {
            for d in &r.revisions {
                self.gc_node(d, &mut nodes)?;
            }
        }
        let subjects: Vec<HashMap<Digest, Vec<Digest>>> = repos
            .iter()
            .map(|r| {
                let mut m: HashMap<Digest, Vec<Digest>> = HashMap::new();
                for d in &r.revisions {
                    if let Some(Some(n)) = nodes.get(d)
                        && let Some(s) = &n.subject
                    {
                        m.entry(s.clone()).or_default().push(d.clone());
                    }
                }
                m
            })
            .collect();
        for (i, r) in repos.iter().enumerate() {
            let mut k = HashSet::new();
            let roots: Vec<Digest> =
                r.tags.values().chain(r.revisions.iter().filter(|d| recent.contains(*d))).cloned().collect();
            self.gc_reach(roots, &subjects[i], &mut nodes, &mut k, &mut marked)?;
            keep.push(k);
        }
        let empty = HashMap::new();
        for e in &trash {
            let i = by_name.get(&e.repository).copied();
            let mut k = HashSet::new();
            let subj = i.map(|i| &subjects[i]).unwrap_or(&empty);
            self.gc_reach(e.held_manifests().cloned().collect(), subj, &mut nodes, &mut k, &mut marked)?;
            marked.extend(e.layers.iter().cloned());
            if let Some(i) = i {
                keep[i].extend(k);
            }
        }
        for (i, r) in repos.iter().enumerate() {
            let untagged: Vec<Digest> = r.revisions.iter().filter(|d| !keep[i].contains(*d)).cloned().collect();
            let mut kept_by_policy = Vec::new();
            for d in untagged {
                let keep_it = match opts.untagged {
                    UntaggedPolicy::Keep => true,
                    UntaggedPolicy::OlderThan(age) => match self.store().stat(&layout::revision_link(&r.name, &d)) {
                        Ok(m) => now.duration_since(m.modified).unwrap_or_default() < age,
                        Err(e) if e.is_not_found() => false,
                        Err(e) => return Err(storage(e)),
                    },
                };
                if keep_it {
                    kept_by_policy.push(d);
                }
            }
            let mut k = std::mem::take(&mut keep[i]);
            self.gc_reach(kept_by_policy, &subjects[i], &mut nodes, &mut k, &mut marked)?;
            keep[i] = k;
        }
        report.blobs_in_use = marked.len() as u64;
        // Layer links a repository still needs: what its kept manifests and its trash entries reach.
        let mut needed: Vec<HashSet<Digest>> = vec![HashSet::new(); repos.len()];
        for i in 0..repos.len() {
            for d in &keep[i] {
                if let Some(Some(n)) = nodes.get(d) {
                    needed[i].extend(n.blobs.iter().cloned());
                }
            }
        }
        for e in &trash {
            if let Some(&i) = by_name.get(&e.repository) {
                needed[i].extend(e.layers.iter().cloned());
            }
        }

        // Sweep untagged manifests.
        let mut changed_repos: HashSet<usize> = HashSet::new();
        for (i, r) in repos.iter().enumerate() {
            for d in r.revisions.iter().filter(|d| !keep[i].contains(*d)) {
                let removed = if opts.dry_run {
                    !self.touched.protected(d, cutoff)
                } else {
                    let subject = nodes.get(d).and_then(|n| n.as_ref()).and_then(|n| n.subject.clone());
                    match self.touched.sweep_if_untouched(d, cutoff, || self.gc_remove_manifest(r, d, subject.as_ref()))
                    {
                        Some(res) => {
                            res?;
                            true
                        }
                        None => false,
                    }
                };
                if removed {
                    report.manifests.push((r.name.clone(), d.clone()));
                    changed_repos.insert(i);
                }
            }
        }

        // Sweep blobs.
        let mut swept: HashSet<Digest> = HashSet::new();
        let mut seen = 0usize;
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let prefixes = self.store().list(&layout::blob_algorithm_dir(alg), None, usize::MAX).map_err(storage)?;
            for p in prefixes {
                let Some(dir) = layout::blob_prefix_dir(alg, &p) else { continue };
                let hexes = self.store().list(&dir, None, usize::MAX).map_err(storage)?;
                for hex in hexes {
                    seen += 1;
                    if seen % 4096 == 0 {
                        progress(GcProgress::Sweep { done: seen });
                    }
                    let Some(d) = Digest::from_parts(alg.as_str(), &hex) else { continue };
                    if marked.contains(&d) {
                        continue;
                    }
                    if recent.contains(&d) {
                        report.blobs_kept_recent += 1;
                        continue;
                    }
                    let meta = match self.store().stat(&layout::blob_data(&d)) {
                        Ok(m) => Some(m),
                        Err(e) if e.is_not_found() => None,
                        Err(e) => return Err(storage(e)),
                    };
                    let recent_data = meta.is_some_and(|m| m.modified >= cutoff);
                    if recent_data {
                        report.blobs_kept_recent += 1;
                        continue;
                    }
                    let size = meta.map(|m| m.size).unwrap_or(0);
                    let removed = if opts.dry_run {
                        !self.touched.protected(&d, cutoff)
                    } else {
                        match self
                            .touched
                            .sweep_if_untouched(&d, cutoff, || self.store().delete_prefix(&layout::blob_dir(&d)))
                        {
                            Some(res) => {
                                res.map_err(storage)?;
                                true
                            }
                            None => false,
                        }
                    };
                    if removed {
                        if meta.is_some() {
                            report.blobs += 1;
                            report.bytes_freed += size;
                        }
                        swept.insert(d.clone());
                        self.manifests.remove(&d);
                    } else {
                        report.blobs_kept_recent += 1;
                    }
                }
            }
        }
        progress(GcProgress::Sweep { done: seen });

        // Layer links no kept manifest of the repository needs (a push's leftovers, older than
        // the grace period) or that point at nothing; stale uploads; empty folders.
        let upload_cutoff = now.checked_sub(opts.upload_max_age).unwrap_or(SystemTime::UNIX_EPOCH);
        for (i, r) in repos.iter().enumerate() {
            let mut links_left = r.layers.len();
            for l in &r.layers {
                if needed[i].contains(l) || recent.contains(l) {
                    continue;
                }
                let stale = swept.contains(l)
                    || match self.store().stat(&layout::layer_link(&r.name, l)) {
                        Ok(m) => m.modified < cutoff,
                        Err(e) if e.is_not_found() => false,
                        Err(e) => return Err(storage(e)),
                    };
                if !stale {
                    continue;
                }
                let removed = opts.dry_run
                    || self
                        .touched
                        .sweep_if_untouched(l, cutoff, || self.gc_unlink_layer(&r.name, l))
                        .transpose()?
                        .is_some();
                if removed {
                    report.layer_links += 1;
                    links_left -= 1;
                    changed_repos.insert(i);
                }
            }
            let mut uploads_left = r.uploads.len();
            for id in &r.uploads {
                if self.upload_started_at(&r.name, id)? < upload_cutoff {
                    if !opts.dry_run {
                        self.store().delete_prefix(&layout::upload_dir(&r.name, id)).map_err(storage)?;
                    }
                    report.uploads += 1;
                    uploads_left -= 1;
                    changed_repos.insert(i);
                }
            }
            let manifests_left = r.revisions.iter().filter(|d| keep[i].contains(*d)).count();
            if r.tags.is_empty() && manifests_left == 0 && links_left == 0 && uploads_left == 0 {
                report.repositories.push(r.name.clone());
                changed_repos.insert(i);
            }
        }
        if !opts.dry_run {
            for &i in &changed_repos {
                let name = &repos[i].name;
                self.store().prune_empty(&layout::repo_dir(name)).map_err(storage)?;
                if !self.repo_exists(name)? {
                    self.store().prune_empty(&layout::referrers_dir(name)).map_err(storage)?;
                }
                self.prune_repo_parents(name)?;
                self.catalog_refresh(name)?;
            }
            self.usage_change(Change::Invalidate);
        }
        report.duration = started.elapsed();
        Ok(report)
    }

    /// Reads every repository folder's links.
    fn gc_scan(&self, progress: &dyn Fn(GcProgress)) -> Result<Vec<RepoScan>> {
        let names = self.repository_folders()?;
        let total = names.len();
        let mut out = Vec::with_capacity(total);
        for (i, name) in names.into_iter().enumerate() {
            if i % 64 == 0 {
                progress(GcProgress::Scan { done: i, total });
            }
            let mut tags = BTreeMap::new();
            for t in self.tags(&name)? {
                if let Some(d) = self.tag_get(&name, &t)? {
                    tags.insert(t, d);
                }
            }
            let revisions = self.revisions(&name)?;
            let layers = self.layer_links(&name)?;
            let uploads = self
                .store()
                .list(&layout::uploads_dir(&name), None, usize::MAX)
                .map_err(storage)?
                .into_iter()
                .filter_map(|s| s.parse().ok())
                .collect();
            out.push(RepoScan { name, tags, revisions, layers, uploads });
        }
        progress(GcProgress::Scan { done: total, total });
        Ok(out)
    }

    /// The node of a manifest, loaded once. A manifest whose bytes are there but unreadable
    /// stops the GC: what it references is unknown, so nothing could be swept safely.
    fn gc_node<'a>(&self, d: &Digest, nodes: &'a mut HashMap<Digest, Option<Node>>) -> Result<Option<&'a Node>> {
        if !nodes.contains_key(d) {
            let node = match self.load_manifest(d) {
                Ok(Some(m)) => match &m.manifest {
                    Some(parsed) => Some(Node::of(m.bytes.len() as u64, parsed)),
                    None => {
                        return Err(RegistryError::Corrupt {
                            what: format!("manifest {d}"),
                            reason: "it cannot be parsed, so GC cannot know what it references; run berth fsck".into(),
                        });
                    }
                },
                Ok(None) => None,
                Err(RegistryError::Storage(e)) => {
                    return Err(RegistryError::Corrupt {
                        what: format!("manifest {d}"),
                        reason: format!("{e}; GC cannot know what it references; run berth fsck"),
                    });
                }
                Err(e) => return Err(e),
            };
            nodes.insert(d.clone(), node);
        }
        Ok(nodes[d].as_ref())
    }

    /// Marks everything `roots` reach within one repository.
    fn gc_reach(
        &self,
        roots: Vec<Digest>,
        subjects: &HashMap<Digest, Vec<Digest>>,
        nodes: &mut HashMap<Digest, Option<Node>>,
        keep: &mut HashSet<Digest>,
        marked: &mut HashSet<Digest>,
    ) -> Result<()> {
        let mut stack = roots;
        while let Some(d) = stack.pop() {
            if !keep.insert(d.clone()) {
                continue;
            }
            marked.insert(d.clone());
            if let Some(n) = self.gc_node(&d, nodes)? {
                marked.extend(n.blobs.iter().cloned());
                stack.extend(n.children.iter().cloned());
            }
            if let Some(refs) = subjects.get(&d) {
                stack.extend(refs.iter().cloned());
            }
        }
        Ok(())
    }

    fn gc_remove_manifest(&self, r: &RepoScan, d: &Digest, subject: Option<&Digest>) -> Result<()> {
        self.store().delete_prefix(&layout::revision_dir(&r.name, d)).map_err(storage)?;
        for t in r.tags.keys() {
            self.store().delete_prefix(&layout::tag_index_dir(&r.name, t, d)).map_err(storage)?;
        }
        if let Some(s) = subject {
            self.store().delete(&layout::referrer_entry(&r.name, s, d)).map_err(storage)?;
        }
        Ok(())
    }

    fn gc_unlink_layer(&self, name: &RepoName, d: &Digest) -> Result<()> {
        self.store().delete_prefix(&layout::layer_link_dir(name, d)).map_err(storage)?;
        Ok(())
    }

    /// When an upload began: its `startedat`, else its data's modification time, else now
    /// (an upload that has written nothing yet is not stale).
    pub(crate) fn upload_started_at(&self, name: &RepoName, id: &UploadId) -> Result<SystemTime> {
        if let Ok(b) = self.store().get(&layout::upload_started(name, id))
            && let Ok(t) = humantime::parse_rfc3339_weak(String::from_utf8_lossy(&b).trim())
        {
            return Ok(t);
        }
        match self.store().stat(&layout::upload_data(name, id)) {
            Ok(m) => Ok(m.modified),
            Err(e) if e.is_not_found() => Ok(SystemTime::now()),
            Err(e) => Err(storage(e)),
        }
    }
}
