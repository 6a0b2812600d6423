//! Checking a root: every tag leads to a manifest whose blobs and children are all there, every
//! link points at something, content matches its digest (on request), uploads are not stale, and
//! Berth's derived referrers index agrees with the layout.
//!
//! A finding is **damage** when an acknowledged image cannot be pulled whole or bytes do not
//! match their digest, and **debris** otherwise (harmless leftovers, such as those a crash
//! leaves). `repair` fixes what can be fixed without losing acknowledged data: it re-creates
//! links whose targets exist, removes links to nothing, removes stale uploads, rebuilds the
//! referrers index, makes the metadata index (with a database) agree with the store, and moves
//! corrupt blobs aside to `berth/quarantine/` (so clients see them
//! as missing and push them again) instead of deleting them.

use std::io::Read;
use std::time::{Duration, SystemTime};

use berth_oci::{Digest, DigestHasher, Reference, RepoName, Tag};
use berth_storage::{BackendExt, layout};

use crate::Registry;
use crate::error::{RegistryError, Result, storage};
use crate::graph::{Change, Reached, walk};
use crate::journal::TrashId;
use crate::reindex;

/// How `fsck` runs.
#[derive(Debug, Clone)]
pub struct FsckOptions {
    /// Hash every blob and compare it with its digest (reads all data).
    pub verify_content: bool,
    /// Fix what can be fixed.
    pub repair: bool,
    /// Uploads older than this are debris.
    pub upload_max_age: Duration,
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// A short stable name, e.g. `missing-blob`.
    pub kind: &'static str,
    /// Whether it breaks an image or content (else it is debris).
    pub damage: bool,
    /// The repository, if the finding is in one.
    pub repository: Option<RepoName>,
    /// What exactly.
    pub message: String,
    /// Whether `repair` fixed it.
    pub repaired: bool,
    /// Bytes it takes on disk that `repair` frees (0 when that is nothing or not known).
    pub bytes: u64,
}

/// What `fsck` found.
#[derive(Debug, Clone, Default)]
pub struct FsckReport {
    /// Every finding.
    pub findings: Vec<Finding>,
    /// Repositories checked.
    pub repositories: u64,
    /// Manifests checked.
    pub manifests: u64,
    /// Blobs whose content was hashed.
    pub blobs_verified: u64,
}

impl FsckReport {
    /// Damage left unrepaired.
    pub fn damage(&self) -> usize {
        self.findings.iter().filter(|f| f.damage && !f.repaired).count()
    }
}

struct Ctx<'a> {
    report: &'a mut FsckReport,
    repair: bool,
}

impl Ctx<'_> {
    fn find(
        &mut self,
        kind: &'static str,
        damage: bool,
        repo: Option<&RepoName>,
        message: String,
        fix: Option<&dyn Fn() -> Result<()>>,
    ) -> Result<()> {
        let repaired = match fix {
            Some(f) if self.repair => {
                f()?;
                true
            }
            _ => false,
        };
        self.report.findings.push(Finding { kind, damage, repository: repo.cloned(), message, repaired, bytes: 0 });
        Ok(())
    }

    /// Says how many bytes the finding just made takes on disk.
    fn taking(&mut self, bytes: u64) {
        if let Some(f) = self.report.findings.last_mut() {
            f.bytes = bytes;
        }
    }
}

impl Registry {
    /// Checks the root (see the module docs).
    pub fn fsck(&self, opts: &FsckOptions) -> Result<FsckReport> {
        let mut report = FsckReport::default();
        let mut cx = Ctx { report: &mut report, repair: opts.repair };
        let now = SystemTime::now();
        for name in self.repository_folders()? {
            // A repair writes links; with other processes serving the root, a push or delete
            // of this repository must not interleave with it.
            let _lock = if opts.repair { Some(self.repo_lock(&name)?) } else { None };
            cx.report.repositories += 1;
            self.fsck_repo(&name, opts, now, &mut cx)?;
        }
        if opts.verify_content {
            self.fsck_content(&mut cx)?;
        }
        self.fsck_trash(&mut cx)?;
        self.fsck_index(&mut cx)?;
        if opts.repair {
            self.graph.note(Change::Invalidate);
            self.push_times.forget_all();
        }
        Ok(report)
    }

    /// Compares the metadata index (with a database) with the store, after every repair of
    /// the store; repairing makes the index agree with the store.
    fn fsck_index(&self, cx: &mut Ctx<'_>) -> Result<()> {
        let Some(diff) = self.index_reconcile(cx.repair, &|_| {})? else { return Ok(()) };
        if diff.stale {
            let message = "a process without the database wrote to the root since the metadata index was last \
                           reconciled; GC, accounting and the catalog list storage until it is repaired"
                .to_owned();
            let done = || Ok(());
            cx.find("index-stale", false, None, message, Some(&done))?;
        }
        if diff.total() == 0 {
            return Ok(());
        }
        let consequence = if diff.missing() > 0 {
            "; until it is repaired, GC, accounting and the catalog list storage instead"
        } else {
            "; GC keeps what the extra rows name until it is repaired"
        };
        let message = format!("the metadata index disagrees with storage: {}{consequence}", reindex::describe(&diff));
        // Already applied above when repairing: reconciling is the fix.
        let done = || Ok(());
        cx.find("index-out-of-step", false, None, message, Some(&done))
    }

    fn fsck_repo(&self, name: &RepoName, opts: &FsckOptions, now: SystemTime, cx: &mut Ctx<'_>) -> Result<()> {
        let n = Some(name);
        // Tags lead to manifests.
        let tag_dirs = self.store().list_all(&layout::tags_dir(name)).map_err(storage)?;
        for t in tag_dirs {
            let Ok(tag) = t.parse::<Tag>() else { continue };
            let Some(d) = self.tag_get(name, &tag)? else { continue };
            if !self.revision_exists(name, &d)? {
                if self.blob_size(&d)?.is_some() {
                    let fix = || self.put_revision(name, &d);
                    cx.find(
                        "tag-without-revision",
                        true,
                        n,
                        format!("{name}:{tag} points at {d}, which has no revision link (its bytes are there)"),
                        Some(&fix),
                    )?;
                } else {
                    cx.find(
                        "tag-to-missing-manifest",
                        true,
                        n,
                        format!("{name}:{tag} points at {d}, whose manifest is gone"),
                        None,
                    )?;
                }
            }
        }
        // A tag's history names manifests the repository still holds (GC through a metadata
        // index leaves the entries of manifests it removes, as it leaves layer links).
        let revisions = self.revisions(name)?;
        let held: std::collections::HashSet<&Digest> = revisions.iter().collect();
        for t in self.store().list_all(&layout::tags_dir(name)).map_err(storage)? {
            let Ok(tag) = t.parse::<Tag>() else { continue };
            for alg in [berth_oci::Algorithm::Sha256, berth_oci::Algorithm::Sha512] {
                let hexes = self.store().list_all(&layout::tag_index_alg_dir(name, &tag, alg)).map_err(storage)?;
                for d in hexes.iter().filter_map(|h| Digest::from_parts(alg.as_str(), h)) {
                    if !held.contains(&d) {
                        let fix = || {
                            self.store()
                                .delete_prefix(&layout::tag_index_dir(name, &tag, &d))
                                .map(|_| ())
                                .map_err(storage)
                        };
                        let message = format!("{name}:{tag}'s history names {d}, which the repository no longer holds");
                        cx.find("tag-history-to-nothing", false, n, message, Some(&fix))?;
                    }
                }
            }
        }
        // Manifests are whole.
        let layers: std::collections::HashSet<Digest> = self.layer_links(name)?.into_iter().collect();
        for d in revisions {
            cx.report.manifests += 1;
            let m = match self.load_manifest(&d) {
                Ok(Some(m)) => m,
                Ok(None) => {
                    cx.find(
                        "missing-manifest",
                        true,
                        n,
                        format!("{name}@{d}: revision link, but the manifest's bytes are gone"),
                        None,
                    )?;
                    continue;
                }
                Err(RegistryError::Storage(e)) => {
                    cx.find("corrupt-manifest", true, n, format!("{name}@{d}: {e}"), None)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(parsed) = &m.manifest else {
                cx.find("unreadable-manifest", true, n, format!("{name}@{d} is not a manifest Berth can read"), None)?;
                continue;
            };
            for r in parsed.references() {
                if self.blob_size(&r.digest)?.is_none() {
                    cx.find(
                        "missing-blob",
                        true,
                        n,
                        format!("{name}@{d} needs blob {}, which is gone", r.digest),
                        None,
                    )?;
                } else if !layers.contains(&r.digest) {
                    let fix = || self.link_layer(name, &r.digest);
                    cx.find(
                        "missing-layer-link",
                        true,
                        n,
                        format!("{name}@{d} needs blob {}, which is not linked into {name}", r.digest),
                        Some(&fix),
                    )?;
                }
            }
            for c in &parsed.manifests {
                if !self.revision_exists(name, &c.digest)? {
                    if self.blob_size(&c.digest)?.is_some() {
                        let fix = || self.put_revision(name, &c.digest);
                        cx.find(
                            "missing-child-revision",
                            true,
                            n,
                            format!("{name}@{d} names child {}, which has no revision link", c.digest),
                            Some(&fix),
                        )?;
                    } else {
                        cx.find(
                            "missing-child",
                            true,
                            n,
                            format!("{name}@{d} names child {}, which is gone", c.digest),
                            None,
                        )?;
                    }
                }
            }
        }
        // Links point at something.
        for l in &layers {
            if self.blob_size(l)?.is_none() {
                let fix = || self.store().delete_prefix(&layout::layer_link_dir(name, l)).map(|_| ()).map_err(storage);
                cx.find("dangling-layer-link", false, n, format!("{name} links blob {l}, which is gone"), Some(&fix))?;
                cx.taking(layout::link_content(l).len() as u64);
            }
        }
        // Uploads are not stale.
        let cutoff = now.checked_sub(opts.upload_max_age).unwrap_or(SystemTime::UNIX_EPOCH);
        for id in self.store().list_all(&layout::uploads_dir(name)).map_err(storage)? {
            let Ok(id) = id.parse() else { continue };
            if self.upload_started_at(name, &id)? < cutoff {
                let size =
                    self.store().stat_opt(&layout::upload_data(name, &id)).map_err(storage)?.map_or(0, |m| m.size);
                let fix = || self.store().delete_prefix(&layout::upload_dir(name, &id)).map(|_| ()).map_err(storage);
                cx.find(
                    "stale-upload",
                    false,
                    n,
                    format!("{name}: upload {id} is older than {}", humantime::format_duration(opts.upload_max_age)),
                    Some(&fix),
                )?;
                cx.taking(size);
            }
        }
        // The referrers index agrees with the layout.
        if self.referrers_drift(name)? {
            let fix = || self.referrers_rebuild(name);
            cx.find(
                "referrers-index-drift",
                false,
                n,
                format!("{name}: the referrers index disagrees with the manifests"),
                Some(&fix),
            )?;
        }
        Ok(())
    }

    fn fsck_content(&self, cx: &mut Ctx<'_>) -> Result<()> {
        for d in self.all_blobs()? {
            let key = layout::blob_data(&d);
            let (mut r, _) = match self.store().open(&key, 0) {
                Ok(x) => x,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(storage(e)),
            };
            let mut h = DigestHasher::new(d.algorithm());
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = r
                    .read(&mut buf)
                    .map_err(|e| storage(berth_storage::StorageError::Io { key: key.clone(), source: e }))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            cx.report.blobs_verified += 1;
            let actual = h.finish();
            if actual != d {
                let fix = || {
                    self.store().rename(&key, &layout::quarantine(&d)).map_err(storage)?;
                    self.manifests.remove(&d);
                    Ok(())
                };
                cx.find("corrupt-blob", true, None, format!("blob {d} holds content hashing to {actual}"), Some(&fix))?;
            }
        }
        Ok(())
    }

    fn fsck_trash(&self, cx: &mut Ctx<'_>) -> Result<()> {
        let names = self.store().list_all(&layout::trash_dir()).map_err(storage)?;
        for n in names {
            let Some(id) = n.strip_suffix(".json").and_then(|s| s.parse::<TrashId>().ok()) else { continue };
            match self.trash_get(&id) {
                Ok(e) => {
                    let missing = self.missing_content(&e)?;
                    if !missing.is_empty() {
                        let list = missing.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
                        cx.find(
                            "trash-content-gone",
                            false,
                            Some(&e.repository),
                            format!("trash entry {id} cannot be restored: {list} gone"),
                            None,
                        )?;
                    }
                }
                Err(RegistryError::Corrupt { reason, .. }) => {
                    cx.find("unreadable-trash-entry", true, None, format!("trash entry {id}: {reason}"), None)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Every digest in the blob store.
    pub(crate) fn all_blobs(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for alg in [berth_oci::Algorithm::Sha256, berth_oci::Algorithm::Sha512] {
            for p in self.store().list_all(&layout::blob_algorithm_dir(alg)).map_err(storage)? {
                let Some(dir) = layout::blob_prefix_dir(alg, &p) else { continue };
                for hex in self.store().list_all(&dir).map_err(storage)? {
                    out.extend(Digest::from_parts(alg.as_str(), &hex));
                }
            }
        }
        Ok(out)
    }

    /// Whether `name` resolves `reference` to a manifest whose blobs and children are all
    /// there, linked into `name`: what a pull needs.
    pub fn image_whole(&self, name: &RepoName, reference: &Reference) -> Result<bool> {
        let m = match self.manifest_get(name, reference) {
            Ok(m) => m,
            Err(RegistryError::ManifestUnknown { .. } | RegistryError::NameUnknown { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let mut whole = true;
        walk([m.digest.clone()], |r, _| {
            let present = match r {
                Reached::Manifest(d) => self.revision_exists(name, d)? && self.blob_size(d)?.is_some(),
                Reached::Blob(d) => self.layer_linked(name, d)? && self.blob_size(d)?.is_some(),
            };
            let node = match r {
                Reached::Manifest(d) if present => self.stored_node(d)?,
                _ => None,
            };
            whole &= present && (matches!(r, Reached::Blob(_)) || node.is_some());
            Ok::<_, RegistryError>(node)
        })?;
        Ok(whole)
    }
}
