//! Filling and checking the metadata index from the store (`berth db import`, and `fsck` with
//! a database): list the whole store once, then let the index make itself agree with what was
//! listed (see [`MetaIndex::reconcile`] for why that is safe while other processes write).
//!
//! It reads the store and writes only the index; it never changes the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use berth_oci::{Algorithm, Digest};
use berth_storage::{BackendExt, layout};

use crate::Registry;
use crate::error::{Result, storage};
use crate::index::{IndexDiff, IndexedBlob, IndexedRepo, StoreSnapshot};
use crate::scan::{ScanOptions, par_map};

/// Where a reconciliation is, for progress displays.
#[derive(Debug, Clone, Copy)]
pub enum ReindexProgress {
    /// Reading the links of repositories.
    Repositories { done: usize, total: usize },
    /// Listing blob folders.
    Blobs { folders: usize, total: usize, blobs: usize },
    /// Comparing with the index (and writing it).
    Index,
}

impl Registry {
    /// Lists the store and makes the metadata index agree with it (with `apply`; else only
    /// counts how far it is). `None` without an index.
    pub fn index_reconcile(
        &self,
        apply: bool,
        progress: &(dyn Fn(ReindexProgress) + Sync),
    ) -> Result<Option<IndexDiff>> {
        let Some(index) = self.index.as_deref() else { return Ok(None) };
        if apply {
            // From now on a process that writes the root without the database marks it stale.
            self.store().put(&layout::index_marker(), b"a metadata index is kept of this root\n").map_err(storage)?;
        }
        let stale = self.store().exists(&layout::index_stale()).map_err(storage)?;
        let since = index.now()?;
        let snapshot = self.store_snapshot(progress)?;
        progress(ReindexProgress::Index);
        let mut diff = index.reconcile(&snapshot, since, apply)?;
        if apply && stale {
            // Reconciled with a listing taken after the last such write (none can happen while
            // this process holds the replicas' lease).
            self.store().delete(&layout::index_stale()).map_err(storage)?;
        }
        diff.stale = stale;
        let sum = |f: fn(&IndexedRepo) -> usize| snapshot.repos.iter().map(f).sum::<usize>() as u64;
        diff.listed = vec![
            ("repositories".to_owned(), snapshot.repos.len() as u64),
            ("tags".to_owned(), sum(|r| r.tags.len())),
            ("revisions".to_owned(), sum(|r| r.revisions.len())),
            ("layers".to_owned(), sum(|r| r.layers.len())),
            ("uploads".to_owned(), sum(|r| r.uploads.len())),
            ("blobs".to_owned(), snapshot.blobs.len() as u64),
            ("manifests read".to_owned(), snapshot.manifests.len() as u64),
        ];
        Ok(Some(diff))
    }

    /// Everything the index records, read from the store.
    fn store_snapshot(&self, progress: &(dyn Fn(ReindexProgress) + Sync)) -> Result<StoreSnapshot> {
        let scan = ScanOptions { sizes: false, listing: true };
        let s = self.scan(scan, &|done, total| progress(ReindexProgress::Repositories { done, total }))?;
        let now = SystemTime::now();
        let age = |t: SystemTime| now.duration_since(t).unwrap_or_default();
        let times = par_map(self.workers(), &s.repos, |r| self.revision_times(&r.name, &r.revisions))?;
        let repos = s
            .repos
            .into_iter()
            .zip(times)
            .map(|(r, times)| IndexedRepo {
                revisions: r
                    .revisions
                    .iter()
                    .map(|d| (d.clone(), times.get(d).map_or_else(Default::default, |t| age(*t))))
                    .collect(),
                name: r.name,
                tags: r.tags,
                layers: r.layers,
                uploads: r.uploads,
            })
            .collect();
        let g = &s.graph;
        let manifests = (0..g.len() as u32)
            .filter_map(|id| {
                let n = g.node(id)?;
                let digests = |ids: &[u32]| ids.iter().map(|&i| g.digest(i)).collect::<Vec<Digest>>();
                Some(crate::index::IndexedManifest {
                    digest: g.digest(id),
                    size: n.size,
                    blobs: digests(&n.blobs),
                    children: digests(&n.children),
                    subject: n.subject.map(|i| g.digest(i)),
                })
            })
            .collect();
        let mut folders = Vec::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            for p in self.store().list_all(&layout::blob_algorithm_dir(alg)).map_err(storage)? {
                if let Some(dir) = layout::blob_prefix_dir(alg, &p) {
                    folders.push((alg, dir));
                }
            }
        }
        let (done, count) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let listed = par_map(self.workers(), &folders, |(alg, dir)| {
            let mut out = Vec::new();
            for (d, meta) in self.blob_folder(*alg, dir)? {
                let meta = match meta {
                    Some(m) => m,
                    None => self.store().stat_opt(&layout::blob_data(&d)).map_err(storage)?,
                };
                if let Some(m) = meta {
                    out.push(IndexedBlob { digest: d, size: m.size, age: age(m.modified) });
                }
            }
            let blobs = count.fetch_add(out.len(), Ordering::Relaxed) + out.len();
            let folders_done = done.fetch_add(1, Ordering::Relaxed) + 1;
            progress(ReindexProgress::Blobs { folders: folders_done, total: folders.len(), blobs });
            Ok(out)
        })?;
        let blobs = listed.into_iter().flatten().collect();
        Ok(StoreSnapshot { repos, blobs, manifests })
    }
}

/// Says, for an operator, how far the index was from the store.
pub(crate) fn describe(diff: &IndexDiff) -> String {
    let mut by: HashMap<&str, String> = HashMap::new();
    for (kind, missing, extra, changed) in &diff.kinds {
        let mut parts = Vec::new();
        if *missing > 0 {
            parts.push(format!("{missing} missing"));
        }
        if *extra > 0 {
            parts.push(format!("{extra} extra"));
        }
        if *changed > 0 {
            parts.push(format!("{changed} pointing elsewhere"));
        }
        if !parts.is_empty() {
            by.insert(kind, parts.join(", "));
        }
    }
    let mut kinds: Vec<_> = by.into_iter().collect();
    kinds.sort();
    kinds.into_iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join("; ")
}
