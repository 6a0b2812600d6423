//! The trash: one entry per delete, naming exactly the tags, manifests and layer links it
//! removed. While an entry lives, GC treats what it names as reachable (I2), and restore brings
//! it back (I4). Entries expire after the configured retention and are purged, after which the
//! next GC may free their content.
//!
//! Also the audit log: every delete, restore, purge and expiry appends one JSON line.
//!
//! This module never removes a tag or a manifest itself; `delete` does, after writing here.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use berth_oci::{Digest, RepoName, Tag};
use berth_storage::layout;

use crate::Registry;
use crate::error::{RegistryError, Result, storage};
use crate::journal::{self, AuditAction};

/// What a delete removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteKind {
    /// One tag (`DELETE /v2/<name>/manifests/<tag>`).
    Tag,
    /// A manifest and every tag on it (`DELETE /v2/<name>/manifests/<digest>`).
    Manifest,
    /// A layer link (`DELETE /v2/<name>/blobs/<digest>`).
    Blob,
    /// A whole repository.
    Repository,
}

/// A trash entry id: `<UTC time>-<8 hex>`, so ids sort by time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrashId(String);

impl TrashId {
    pub(crate) fn new(time: SystemTime) -> TrashId {
        let stamp = humantime::format_rfc3339_seconds(time).to_string().replace(['-', ':'], "");
        let random = uuid::Uuid::new_v4().as_u128() as u32;
        TrashId(format!("{stamp}-{random:08x}"))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TrashId {
    type Err = String;

    /// Only what [`TrashId::new`] makes: it becomes a file name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = s.len() <= 64 && !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if ok { Ok(TrashId(s.to_owned())) } else { Err(format!("invalid trash id {s:?}")) }
    }
}

impl fmt::Display for TrashId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One delete, as recorded in the trash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrashEntry {
    /// Its id.
    pub id: TrashId,
    /// When the delete happened.
    pub time: SystemTime,
    /// Who deleted, when known.
    pub who: Option<String>,
    /// What kind of delete.
    pub kind: DeleteKind,
    /// The repository.
    pub repository: RepoName,
    /// Tags removed, with the digest each pointed at.
    pub tags: BTreeMap<Tag, Digest>,
    /// Manifests removed from the repository (revision links).
    pub manifests: Vec<Digest>,
    /// Layer links removed from the repository.
    pub layers: Vec<Digest>,
    /// Bytes the delete frees once the entry expires and GC runs, as computed at delete time.
    pub bytes_freed: u64,
}

impl TrashEntry {
    /// When the entry expires under `retention`.
    pub fn expires(&self, retention: Duration) -> SystemTime {
        self.time + retention
    }

    /// Every manifest digest the entry holds: removed manifests and the targets of removed tags.
    pub fn held_manifests(&self) -> impl Iterator<Item = &Digest> {
        self.manifests.iter().chain(self.tags.values())
    }
}

/// Which trash entry to restore.
#[derive(Debug, Clone)]
pub enum RestoreTarget {
    /// By id.
    Id(TrashId),
    /// The newest entry that removed this tag (with every tag in that entry).
    Tag(RepoName, Tag),
    /// The newest entry that deleted this repository.
    Repository(RepoName),
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The entry restored (now gone from the trash).
    pub entry: TrashEntry,
    /// Tags that pointed elsewhere and were overwritten (only with `force`).
    pub overwritten: BTreeMap<Tag, Digest>,
}

impl Registry {
    /// Every trash entry, oldest first. Unreadable entries are skipped with a warning (fsck
    /// reports them); they still protect nothing, so they are never silently trusted.
    pub fn trash_list(&self) -> Result<Vec<TrashEntry>> {
        let names = self.store().list(&layout::trash_dir(), None, usize::MAX).map_err(storage)?;
        let mut out = Vec::new();
        for n in names {
            let Some(id) = n.strip_suffix(".json").and_then(|s| s.parse::<TrashId>().ok()) else { continue };
            match self.trash_read(&id) {
                Ok(e) => out.push(e),
                Err(RegistryError::TrashUnknown { .. }) => {} // purged meanwhile
                Err(e) => tracing::warn!(id = %id, error = %e, "skipping unreadable trash entry"),
            }
        }
        Ok(out)
    }

    /// One trash entry.
    pub fn trash_get(&self, id: &TrashId) -> Result<TrashEntry> {
        self.trash_read(id)
    }

    fn trash_read(&self, id: &TrashId) -> Result<TrashEntry> {
        let bytes = match self.store().get(&layout::trash_entry(id.as_str())) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Err(RegistryError::TrashUnknown { id: id.to_string() }),
            Err(e) => return Err(storage(e)),
        };
        journal::decode_entry(&bytes)
            .map_err(|reason| RegistryError::Corrupt { what: format!("trash entry {id}"), reason })
    }

    /// Records a delete: the trash entry (when the trash is on), then the audit line.
    pub(crate) fn trash_record(&self, entry: &TrashEntry, forced: bool) -> Result<bool> {
        let trashed = !self.config().trash_retention.is_zero();
        if trashed {
            self.store()
                .put(&layout::trash_entry(entry.id.as_str()), &journal::encode_entry(entry))
                .map_err(storage)?;
            self.usage_change(crate::usage::Change::TrashAdd(entry.clone()));
        }
        self.audit(AuditAction::Delete, entry, forced, Some(trashed))?;
        Ok(trashed)
    }

    /// Appends one audit line. Appends of one short line are atomic on a local filesystem, so
    /// concurrent writers (a server and a CLI) never interleave within a line.
    pub(crate) fn audit(
        &self,
        action: AuditAction,
        entry: &TrashEntry,
        forced: bool,
        trashed: Option<bool>,
    ) -> Result<()> {
        let line = journal::encode_audit(action, entry, forced, trashed, SystemTime::now());
        let mut w = self.store().writer(&layout::audit_log()).map_err(storage)?;
        w.write_all(&line).map_err(storage)?;
        w.commit().map_err(storage)?;
        Ok(())
    }

    /// Removes trash entries for good: one, or all when `id` is `None`. Their content is then
    /// unprotected and the next GC may free it.
    pub fn trash_purge(&self, id: Option<&TrashId>) -> Result<Vec<TrashEntry>> {
        let entries = match id {
            Some(id) => vec![self.trash_get(id)?],
            None => self.trash_list()?,
        };
        for e in &entries {
            self.trash_remove(e, AuditAction::Purge)?;
        }
        Ok(entries)
    }

    /// Purges entries older than the retention; returns them. Run by the server periodically.
    pub fn trash_expire(&self, now: SystemTime) -> Result<Vec<TrashEntry>> {
        let retention = self.config().trash_retention;
        let mut expired = Vec::new();
        for e in self.trash_list()? {
            if e.expires(retention) <= now {
                self.trash_remove(&e, AuditAction::Expire)?;
                expired.push(e);
            }
        }
        Ok(expired)
    }

    fn trash_remove(&self, e: &TrashEntry, action: AuditAction) -> Result<()> {
        self.audit(action, e, false, None)?;
        self.store().delete(&layout::trash_entry(e.id.as_str())).map_err(storage)?;
        self.usage_change(crate::usage::Change::TrashRemove(e.id.clone()));
        if e.kind == DeleteKind::Repository && !self.repo_exists(&e.repository)? {
            // The repository's folder goes with its entry: whatever empty folders remain.
            self.store().prune_empty(&layout::repo_dir(&e.repository)).map_err(storage)?;
            self.prune_repo_parents(&e.repository)?;
        }
        Ok(())
    }

    /// Restores a trash entry: checks that all its content is still whole (else changes
    /// nothing and names what is missing) and that no tag it restores was re-pushed since
    /// (else refuses unless `force`, naming what would be overwritten); then re-links it all.
    pub fn restore(&self, target: &RestoreTarget, force: bool) -> Result<Restored> {
        let entry = self.find_entry(target)?;
        let _inflight = self.inflight();
        let _guard = self.repo_lock(&entry.repository);
        // Touch all of it before checking that it is whole (see `touched`), so a GC running now
        // either keeps it or has already removed something, which the check then reports.
        let reach = self.entry_reach(&entry)?;
        self.touched.touch(reach.iter());
        let missing = self.missing_content(&entry)?;
        if !missing.is_empty() {
            return Err(RegistryError::RestoreIncomplete { id: entry.id.to_string(), missing });
        }
        let mut conflicts = Vec::new();
        for (tag, d) in &entry.tags {
            if let Some(now) = self.tag_get(&entry.repository, tag)?
                && &now != d
            {
                conflicts.push((tag.clone(), now));
            }
        }
        if !conflicts.is_empty() && !force {
            let what = conflicts
                .iter()
                .map(|(t, now)| {
                    format!("{}:{t} now points at {now}, the trash holds {}", entry.repository, entry.tags[t])
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Err(RegistryError::Conflict {
                reason: format!("restoring {} would overwrite re-pushed tags ({what}); force to overwrite", entry.id),
            });
        }
        let name = &entry.repository;
        for l in &entry.layers {
            self.link_layer(name, l)?;
        }
        for m in entry.held_manifests() {
            self.relink_manifest(name, m)?;
        }
        for (tag, d) in &entry.tags {
            self.tag_set(name, tag, d)?;
        }
        self.store().delete(&layout::trash_entry(entry.id.as_str())).map_err(storage)?;
        self.audit(AuditAction::Restore, &entry, force && !conflicts.is_empty(), None)?;
        self.usage_change(crate::usage::Change::Restore(entry.clone()));
        self.catalog_added(name);
        Ok(Restored { entry, overwritten: conflicts.into_iter().collect() })
    }

    fn find_entry(&self, target: &RestoreTarget) -> Result<TrashEntry> {
        let newest = |pred: &dyn Fn(&TrashEntry) -> bool, what: String| -> Result<TrashEntry> {
            let mut entries = self.trash_list()?;
            entries.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
            entries.into_iter().rev().find(|e| pred(e)).ok_or(RegistryError::TrashUnknown { id: what })
        };
        match target {
            RestoreTarget::Id(id) => self.trash_get(id),
            RestoreTarget::Tag(name, tag) => {
                newest(&|e| &e.repository == name && e.tags.contains_key(tag), format!("an entry holding {name}:{tag}"))
            }
            RestoreTarget::Repository(name) => newest(
                &|e| &e.repository == name && e.kind == DeleteKind::Repository,
                format!("an entry holding repository {name}"),
            ),
        }
    }

    /// Every digest the entry reaches: held manifests, their children, their blobs, its layers.
    fn entry_reach(&self, e: &TrashEntry) -> Result<Vec<Digest>> {
        let mut out = self.reach_from(e.held_manifests().cloned().collect())?;
        out.extend(e.layers.iter().cloned());
        Ok(out)
    }

    /// Every blob or manifest the entry needs that is no longer in the blob store.
    pub(crate) fn missing_content(&self, e: &TrashEntry) -> Result<Vec<Digest>> {
        let mut missing = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut stack: Vec<Digest> = e.held_manifests().cloned().collect();
        while let Some(d) = stack.pop() {
            if !seen.insert(d.clone()) {
                continue;
            }
            // The store, not the manifest cache, says whether the bytes are still there.
            let present = self.blob_size(&d)?.is_some();
            match self.load_manifest(&d)?.filter(|_| present) {
                None => missing.push(d),
                Some(m) => {
                    if let Some(parsed) = &m.manifest {
                        for r in parsed.references() {
                            if seen.insert(r.digest.clone()) && self.blob_size(&r.digest)?.is_none() {
                                missing.push(r.digest.clone());
                            }
                        }
                        stack.extend(parsed.manifests.iter().map(|c| c.digest.clone()));
                    }
                }
            }
        }
        for l in &e.layers {
            if seen.insert(l.clone()) && self.blob_size(l)?.is_none() {
                missing.push(l.clone());
            }
        }
        missing.sort();
        Ok(missing)
    }

    /// Gives a manifest (and its children) back to a repository: revision links, and the layer
    /// links its blobs need so that pulls find them.
    fn relink_manifest(&self, name: &RepoName, d: &Digest) -> Result<()> {
        let mut stack = vec![d.clone()];
        while let Some(d) = stack.pop() {
            let Some(m) = self.load_manifest(&d)? else { continue };
            if let Some(parsed) = &m.manifest {
                for r in parsed.references() {
                    self.link_layer(name, &r.digest)?;
                }
                if let Some(s) = &parsed.subject {
                    self.referrers_record(name, &s.digest, &d)?;
                }
                stack.extend(parsed.manifests.iter().map(|c| c.digest.clone()));
            }
            self.store().put(&layout::revision_link(name, &d), &layout::link_content(&d)).map_err(storage)?;
        }
        Ok(())
    }
}
