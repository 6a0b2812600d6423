//! Deleting: the only public way anything leaves a repository.
//!
//! Every delete is planned first (what it removes, what it would free), refused if it would
//! break an image that stays (a platform of a tagged multi-platform index, a layer of a manifest
//! still in the repository) unless forced, then recorded — trash entry, then audit line — and
//! only then carried out. A crash after the record leaves an entry whose restore is a no-op for
//! what was not yet removed; a crash before it leaves everything in place.
//!
//! Semantics (DESIGN.md, "Deletion semantics"): a tag delete removes that tag only; a manifest
//! delete removes the manifest and every tag on it; a blob delete removes the layer link; a
//! repository delete removes everything in it. Blob data is never removed here; only GC does.

use std::collections::BTreeMap;
use std::time::SystemTime;

use berth_oci::{Digest, Reference, RepoName, Tag};
use berth_storage::layout;

use crate::Registry;
use crate::error::{RegistryError, Result, storage};
use crate::graph::Change;
use crate::journal::{DeleteKind, TrashEntry, TrashId};

/// What to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteTarget {
    /// One tag.
    Tag(RepoName, Tag),
    /// A manifest and every tag pointing at it.
    Manifest(RepoName, Digest),
    /// A layer link.
    Blob(RepoName, Digest),
    /// Everything in a repository.
    Repository(RepoName),
    /// Several tags and untagged manifests of one repository, in one trash entry (a retention
    /// run: one restore undoes it), as the caller last saw them: each tag only, and only if it
    /// still points where it did and was not pushed since; each manifest only if its revision
    /// link was not written since, it is still untagged and (unless forced) no platform image
    /// of a tagged index. What changed since the caller looked is left alone, decided under
    /// the repository's lock.
    Tags(RepoName, Vec<SeenTag>, Vec<SeenManifest>),
}

impl DeleteTarget {
    /// The repository the delete is in.
    pub fn repository(&self) -> &RepoName {
        match self {
            DeleteTarget::Tag(n, _)
            | DeleteTarget::Manifest(n, _)
            | DeleteTarget::Blob(n, _)
            | DeleteTarget::Repository(n)
            | DeleteTarget::Tags(n, _, _) => n,
        }
    }
}

/// A tag as a caller saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenTag {
    /// The tag.
    pub tag: Tag,
    /// Where it pointed.
    pub digest: Digest,
    /// When it was pushed (as `Registry::push_times` says).
    pub pushed: SystemTime,
}

/// An untagged manifest as a caller saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenManifest {
    /// Its digest.
    pub digest: Digest,
    /// When its revision link was written (a push, or the loss of its last tag).
    pub written: SystemTime,
}

/// A delete to carry out.
#[derive(Debug, Clone)]
pub struct DeleteRequest {
    /// What.
    pub target: DeleteTarget,
    /// Delete even what a tagged index or a manifest in the repository still needs.
    pub force: bool,
    /// Who asks, when known.
    pub who: Option<String>,
}

/// A delete that happened.
#[derive(Debug, Clone)]
pub struct Deleted {
    /// What it removed (the trash entry, if the trash is on).
    pub entry: TrashEntry,
    /// Whether it went to the trash (false: the trash is off and the delete is final).
    pub trashed: bool,
}

impl Registry {
    /// What `req` would remove and free, changing nothing (a dry run). Fails as the delete
    /// would.
    pub fn delete_plan(&self, req: &DeleteRequest) -> Result<TrashEntry> {
        let now = SystemTime::now();
        let name = req.target.repository().clone();
        let mut tags = BTreeMap::new();
        let mut manifests = Vec::new();
        let mut layers = Vec::new();
        let kind = match &req.target {
            DeleteTarget::Tag(_, t) => {
                let d =
                    self.tag_get(&name, t)?.ok_or_else(|| self.manifest_unknown(&name, &Reference::Tag(t.clone())))?;
                tags.insert(t.clone(), d);
                DeleteKind::Tag
            }
            DeleteTarget::Manifest(_, d) => {
                self.plan_manifest(&name, d, req.force, &mut tags, &mut manifests)?;
                DeleteKind::Manifest
            }
            DeleteTarget::Blob(_, d) => {
                if !self.layer_linked(&name, d)? {
                    return Err(RegistryError::BlobUnknown { digest: d.clone() });
                }
                if !req.force {
                    self.refuse_if_blob_in_use(&name, d)?;
                }
                layers.push(d.clone());
                DeleteKind::Blob
            }
            DeleteTarget::Tags(_, ts, ms) => {
                let now: BTreeMap<Tag, Digest> = self.tag_links(&name)?.into_iter().collect();
                let pushed = self.push_times(&name)?;
                for s in ts {
                    if now.get(&s.tag) == Some(&s.digest) && pushed.get(&s.tag) == Some(&s.pushed) {
                        tags.insert(s.tag.clone(), s.digest.clone());
                    }
                }
                let digests: Vec<Digest> = ms.iter().map(|m| m.digest.clone()).collect();
                let written = self.revision_times(&name, &digests)?;
                for m in ms {
                    let d = &m.digest;
                    let untagged = !now.values().any(|td| td == d);
                    let safe = req.force || self.refuse_if_child_of_tagged_index(&name, d).is_ok();
                    if untagged && safe && written.get(d) == Some(&m.written) {
                        manifests.push(d.clone());
                    }
                }
                DeleteKind::Tags
            }
            DeleteTarget::Repository(_) => {
                tags.extend(self.tag_links(&name)?);
                manifests = self.revisions(&name)?;
                layers = self.layer_links(&name)?;
                if tags.is_empty() && manifests.is_empty() && layers.is_empty() {
                    return Err(RegistryError::NameUnknown { name });
                }
                DeleteKind::Repository
            }
        };
        let removed: Vec<Tag> = tags.keys().cloned().collect();
        let bytes_freed = self.freed(&name, &removed, &manifests, &layers)?;
        let pushed = if removed.is_empty() {
            BTreeMap::new()
        } else {
            let times = self.push_times(&name)?;
            removed.iter().filter_map(|t| times.get(t).map(|at| (t.clone(), *at))).collect()
        };
        Ok(TrashEntry {
            id: TrashId::new(now),
            time: now,
            who: req.who.clone(),
            kind,
            repository: name,
            tags,
            manifests,
            layers,
            bytes_freed,
            pushed,
        })
    }

    /// Plans removing manifest `d` and every tag on it.
    fn plan_manifest(
        &self,
        name: &RepoName,
        d: &Digest,
        force: bool,
        tags: &mut BTreeMap<Tag, Digest>,
        manifests: &mut Vec<Digest>,
    ) -> Result<()> {
        if !self.revision_exists(name, d)? {
            return Err(self.manifest_unknown(name, &Reference::Digest(d.clone())));
        }
        if !force {
            self.refuse_if_child_of_tagged_index(name, d)?;
        }
        tags.extend(self.tag_links(name)?.into_iter().filter(|(_, td)| td == d));
        manifests.push(d.clone());
        Ok(())
    }

    /// Deletes: plans, records (trash entry and audit line), then removes the links.
    pub fn delete(&self, req: &DeleteRequest) -> Result<Deleted> {
        let _guard = self.repo_lock(req.target.repository())?;
        let entry = self.delete_plan(req)?;
        // Several names, all changed since the caller looked: nothing to do, nothing to record.
        if entry.kind == DeleteKind::Tags && entry.tags.is_empty() && entry.manifests.is_empty() {
            return Ok(Deleted { entry, trashed: false });
        }
        let trashed = self.trash_record(&entry, req.force)?;
        self.announcing(&entry.repository, || {
            let unlinked = self.unlink(&entry);
            self.push_times.forget(&entry.repository);
            unlinked?;
            self.graph.note(Change::Delete(entry.clone()));
            self.catalog_refresh(&entry.repository)
        })?;
        Ok(Deleted { entry, trashed })
    }

    fn unlink(&self, e: &TrashEntry) -> Result<()> {
        let name = &e.repository;
        if e.kind == DeleteKind::Repository {
            // Everything but upload sessions: a push in flight completes into a fresh
            // repository instead of failing midway. The folder goes once nothing is left in it.
            self.store().delete_prefix(&layout::manifests_dir(name)).map_err(storage)?;
            self.store().delete_prefix(&layout::layers_root(name)).map_err(storage)?;
            self.store().delete_prefix(&layout::referrers_dir(name)).map_err(storage)?;
            self.store().prune_empty(&layout::repo_dir(name)).map_err(storage)?;
            return self.prune_repo_parents(name);
        }
        for t in e.tags.keys() {
            self.store().delete_prefix(&layout::tag_dir(name, t)).map_err(storage)?;
        }
        for m in &e.manifests {
            self.store().delete_prefix(&layout::revision_dir(name, m)).map_err(storage)?;
        }
        for l in &e.layers {
            self.store().delete_prefix(&layout::layer_link_dir(name, l)).map_err(storage)?;
        }
        Ok(())
    }

    /// A platform image of a tagged index must not vanish from under it.
    fn refuse_if_child_of_tagged_index(&self, name: &RepoName, d: &Digest) -> Result<()> {
        let mut tagged: BTreeMap<Digest, Vec<Tag>> = BTreeMap::new();
        for (t, td) in self.tag_links(name)? {
            tagged.entry(td).or_default().push(t);
        }
        for (index, on) in &tagged {
            let Some(m) = self.load_manifest(index)? else { continue };
            if m.manifest.as_ref().is_some_and(|p| p.manifests.iter().any(|c| &c.digest == d)) {
                let tags = on.iter().map(|t| format!("{name}:{t}")).collect::<Vec<_>>().join(", ");
                return Err(RegistryError::InUse {
                    reason: format!(
                        "{d} is a platform image of the index {index} (tagged {tags}); deleting it would break that \
                         multi-platform image; delete the index first, or force"
                    ),
                });
            }
        }
        Ok(())
    }

    /// A layer link that a manifest in the repository still needs must stay, or pulls break.
    fn refuse_if_blob_in_use(&self, name: &RepoName, d: &Digest) -> Result<()> {
        for m in self.revisions(name)? {
            let Some(stored) = self.load_manifest(&m)? else { continue };
            if stored.manifest.as_ref().is_some_and(|p| p.references().any(|r| &r.digest == d)) {
                return Err(RegistryError::InUse {
                    reason: format!(
                        "blob {d} is used by manifest {m} in {name}; unlinking it would break that image; \
                         delete the manifest first, or force"
                    ),
                });
            }
        }
        Ok(())
    }
}
