//! The trash: one entry per delete, naming exactly the tags, manifests and layer links it
//! removed. While an entry lives, GC treats what it names as reachable (I2), and restore brings
//! it back (I4). Entries expire after the configured retention and are purged, after which the
//! next GC may free their content.
//!
//! Also the audit log: every delete, restore, purge and expiry appends one JSON line, and
//! [`Registry::audit_log`] reads it back.
//!
//! This module never removes a tag or a manifest itself; `delete` does, after writing here.
//! The record formats belong to `journal`; this module decides where they are stored.

use std::collections::BTreeMap;
use std::time::SystemTime;

use berth_oci::{Digest, RepoName, Tag};
use berth_storage::{BackendExt, layout};

use crate::Registry;
use crate::error::{RegistryError, Result, storage};
use crate::graph::{Change, Reached, walk};
use crate::journal::{self, AuditAction, AuditRecord, DeleteKind, TrashEntry, TrashId};

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
        let names = self.store().list_all(&layout::trash_dir()).map_err(storage)?;
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
        let Some(bytes) = self.store().get_opt(&layout::trash_entry(id.as_str())).map_err(storage)? else {
            return Err(RegistryError::TrashUnknown { id: id.to_string() });
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
            self.graph.note(Change::TrashAdd(entry.clone()));
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
        self.audit_by(action, entry, entry.who.as_deref(), forced, trashed)
    }

    /// Appends one audit line naming `who` did it (the entry names who deleted).
    fn audit_by(
        &self,
        action: AuditAction,
        entry: &TrashEntry,
        who: Option<&str>,
        forced: bool,
        trashed: Option<bool>,
    ) -> Result<()> {
        let mut record = AuditRecord::of(action, entry, forced, trashed, SystemTime::now());
        record.who = who.map(str::to_owned);
        let line = journal::encode_audit(&record);
        let mut w = self.store().writer(&layout::audit_log()).map_err(storage)?;
        w.write_all(&line).map_err(storage)?;
        w.commit().map_err(storage)?;
        Ok(())
    }

    /// Removes trash entries for good: one, or all when `id` is `None`, for `who` (recorded in
    /// the audit log). Their content is then unprotected and the next GC may free it.
    pub fn trash_purge(&self, id: Option<&TrashId>, who: Option<&str>) -> Result<Vec<TrashEntry>> {
        let entries = match id {
            Some(id) => vec![self.trash_get(id)?],
            None => self.trash_list()?,
        };
        for e in &entries {
            self.trash_remove(e, AuditAction::Purge, who)?;
        }
        Ok(entries)
    }

    /// Purges entries older than the retention; returns them. Run by the server periodically.
    pub fn trash_expire(&self, now: SystemTime) -> Result<Vec<TrashEntry>> {
        let retention = self.config().trash_retention;
        let mut expired = Vec::new();
        for e in self.trash_list()? {
            if e.expires(retention) <= now {
                self.trash_remove(&e, AuditAction::Expire, None)?;
                expired.push(e);
            }
        }
        Ok(expired)
    }

    fn trash_remove(&self, e: &TrashEntry, action: AuditAction, who: Option<&str>) -> Result<()> {
        self.audit_by(action, e, who, false, None)?;
        self.store().delete(&layout::trash_entry(e.id.as_str())).map_err(storage)?;
        self.graph.note(Change::TrashRemove(e.id.clone()));
        if e.kind == DeleteKind::Repository && !self.repo_exists(&e.repository)? {
            // The repository's folder goes with its entry: whatever empty folders remain.
            self.store().prune_empty(&layout::repo_dir(&e.repository)).map_err(storage)?;
            self.prune_repo_parents(&e.repository)?;
        }
        Ok(())
    }

    /// Restores a trash entry for `who` (recorded in the audit log): checks that all its
    /// content is still whole (else changes nothing and names what is missing) and that no tag
    /// it restores was re-pushed since (else refuses unless `force`, naming what would be
    /// overwritten); then re-links it all.
    pub fn restore(&self, target: &RestoreTarget, force: bool, who: Option<&str>) -> Result<Restored> {
        let entry = self.find_entry(target)?;
        let _inflight = self.inflight()?;
        let _guard = self.repo_lock(&entry.repository)?;
        // Touch all of it before checking that it is whole (see `touched`), so a GC running now
        // either keeps it or has already removed something, which the check then reports.
        let reach = self.entry_reach(&entry)?;
        self.touch(reach.iter())?;
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
        self.announcing(name, || {
            for l in &entry.layers {
                self.link_layer(name, l)?;
            }
            self.relink_manifests(name, entry.held_manifests().cloned())?;
            for (tag, d) in &entry.tags {
                self.tag_set(name, tag, d)?;
            }
            if !entry.pushed.is_empty() {
                self.record_restored_push_times(name, &entry.pushed)?;
            }
            self.store().delete(&layout::trash_entry(entry.id.as_str())).map_err(storage)?;
            self.audit_by(AuditAction::Restore, &entry, who, force && !conflicts.is_empty(), None)
        })?;
        self.graph.note(Change::Restore(entry.clone()));
        self.catalog_added(name);
        self.repo_changed(name, true)?;
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
        let mut out = e.layers.clone();
        walk(e.held_manifests().cloned(), |r, _| -> Result<_> {
            let (Reached::Manifest(d) | Reached::Blob(d)) = r;
            out.push(d.clone());
            match r {
                Reached::Manifest(m) => self.stored_node(m),
                Reached::Blob(_) => Ok(None),
            }
        })?;
        Ok(out)
    }

    /// Every blob or manifest the entry needs that is no longer in the blob store.
    pub(crate) fn missing_content(&self, e: &TrashEntry) -> Result<Vec<Digest>> {
        let mut missing = Vec::new();
        walk(e.held_manifests().cloned(), |r, _| {
            let (Reached::Manifest(d) | Reached::Blob(d)) = r;
            // The store, not the manifest cache, says whether the bytes are still there.
            if self.blob_size(d)?.is_none() {
                missing.push(d.clone());
                return Ok::<_, RegistryError>(None);
            }
            // Bytes that are there but not a manifest Berth reads are present all the same: a
            // restore relinks them as they are, without going below them.
            match r {
                Reached::Manifest(m) => self.stored_node(m),
                Reached::Blob(_) => Ok(None),
            }
        })?;
        for l in &e.layers {
            if !missing.contains(l) && self.blob_size(l)?.is_none() {
                missing.push(l.clone());
            }
        }
        missing.sort();
        missing.dedup();
        Ok(missing)
    }

    /// Gives manifests (and their children) back to a repository: revision links, the layer
    /// links their blobs need so that pulls find them, and their referrers index entries.
    fn relink_manifests(&self, name: &RepoName, manifests: impl IntoIterator<Item = Digest>) -> Result<()> {
        walk(manifests, |r, _| match r {
            Reached::Blob(b) => self.link_layer(name, b).map(|()| None),
            Reached::Manifest(m) => {
                let node = self.stored_node(m)?;
                if let Some(s) = node.as_ref().and_then(|n| n.subject.as_ref()) {
                    self.link_referrer(name, s, m)?;
                }
                self.put_revision(name, m)?;
                Ok(node)
            }
        })
    }

    /// The audit log, newest first: records that `keep` accepts, each with the byte offset
    /// where its line starts, among the lines that start before `before` (all when `None`), at
    /// most `n`. Reads the log backwards a chunk at a time, so a page costs what it covers, not
    /// the whole log. Unreadable lines (a torn last line after a crash) are skipped with a
    /// warning.
    pub fn audit_log(
        &self,
        before: Option<u64>,
        n: usize,
        keep: impl Fn(&AuditRecord) -> bool,
    ) -> Result<Vec<(u64, AuditRecord)>> {
        const CHUNK: u64 = 64 << 10;
        let key = layout::audit_log();
        let Some(meta) = self.store().stat_opt(&key).map_err(storage)? else { return Ok(vec![]) };
        let end = before.map_or(meta.size, |b| b.min(meta.size));
        let mut out = Vec::new();
        let decode = |line: &[u8], start: u64| -> Option<(u64, AuditRecord)> {
            if line.is_empty() {
                return None;
            }
            match journal::decode_audit(line) {
                Ok(r) => keep(&r).then_some((start, r)),
                Err(e) => {
                    tracing::warn!(offset = start, error = %e, "skipping an unreadable audit line");
                    None
                }
            }
        };
        // `buf` holds the bytes of the log from `pos` to the start of the last line handled.
        let (mut pos, mut buf) = (end, Vec::new());
        while out.len() < n {
            let body = if buf.last() == Some(&b'\n') { buf.len() - 1 } else { buf.len() };
            match buf[..body].iter().rposition(|&b| b == b'\n') {
                Some(i) => {
                    out.extend(decode(&buf[i + 1..body], pos + i as u64 + 1));
                    buf.truncate(i + 1);
                }
                None if pos == 0 => {
                    out.extend(decode(&buf[..body], 0));
                    break;
                }
                None => {
                    let from = pos.saturating_sub(CHUNK);
                    let (reader, _) = self.store().open(&key, from).map_err(storage)?;
                    let mut chunk = Vec::with_capacity((pos - from) as usize + buf.len());
                    std::io::Read::read_to_end(&mut std::io::Read::take(reader, pos - from), &mut chunk)
                        .map_err(|e| storage(berth_storage::StorageError::Io { key: key.clone(), source: e }))?;
                    chunk.extend_from_slice(&buf);
                    buf = chunk;
                    pos = from;
                }
            }
        }
        Ok(out)
    }
}
