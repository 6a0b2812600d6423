//! Distribution's link files, read and written: a repository's layer links
//! (`_layers/<alg>/<hex>/link`: the blob belongs to it), revision links
//! (`_manifests/revisions/…`: the manifest belongs to it) and tag links (`_manifests/tags/<tag>/
//! current/link`: the manifest a tag points at now, and `index/…`: every one it pointed at).
//!
//! Also the entries of Berth's derived referrers index (`berth/referrers/…`), which are links
//! too. What a link means is decided by the modules above; this one only says whether a link
//! is there and where it points. It never removes one: removal belongs to `delete`, `gc` and
//! `fsck`, which record or justify it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use berth_oci::{Algorithm, Digest, RepoName, Tag};
use berth_storage::{BackendExt, layout};

use crate::Registry;
use crate::error::{RegistryError, Result, storage};

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The entries.
    pub items: Vec<String>,
    /// Whether more entries follow the last one.
    pub more: bool,
}

impl Page {
    /// The first `n` of `items` (all when `n` is `None`).
    pub(crate) fn cut(mut items: Vec<String>, n: Option<usize>) -> Page {
        match n {
            Some(n) if items.len() > n => {
                items.truncate(n);
                Page { items, more: n > 0 }
            }
            _ => Page { items, more: false },
        }
    }
}

/// When each tag of a repository was pushed.
pub type PushTimes = BTreeMap<Tag, SystemTime>;

/// A restored tag's push time: `pushed` holds while its link is still the one the restore
/// wrote (modified at `link`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RestoredPush {
    pub pushed: SystemTime,
    pub link: SystemTime,
}

/// What is known of a repository's tags, kept until a tag of the repository changes: push
/// times per repository, read once (a stat per tag), since listings sorted by push time, or
/// showing a repository's last push, would otherwise stat every tag of every repository on every
/// page; and the digest each pulled tag resolved to, since on an object store resolving a tag
/// costs two requests (its link, then the manifest's revision link) on every pull.
///
/// It is right only while this process makes every change to the root, which the root lock
/// (or lease) guarantees for one server; several replicas must invalidate it across processes.
/// A resolved tag is stored only when both links were there: GC never removes the revision of
/// a tagged manifest, and every tag change goes through [`PushTimesCache::forget`].
#[derive(Debug, Default)]
pub(crate) struct PushTimesCache {
    repos: Mutex<HashMap<RepoName, Arc<PushTimes>>>,
    resolved: Mutex<HashMap<RepoName, HashMap<Tag, Digest>>>,
    /// With several processes: the generation (see `coord`) each repository had when this
    /// process last looked; another value means another process changed it since.
    seen: Mutex<HashMap<RepoName, i64>>,
    /// Bumped by every change; a read that saw another value when it began does not store
    /// what it read (it may predate the change).
    generation: AtomicU64,
}

impl PushTimesCache {
    /// Forgets `name`'s times (a tag of it was set or removed).
    pub(crate) fn forget(&self, name: &RepoName) {
        let mut repos = self.repos.lock().unwrap_or_else(|e| e.into_inner());
        let mut resolved = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        repos.remove(name);
        resolved.remove(name);
    }

    /// Forgets every repository's times (links were repaired).
    pub(crate) fn forget_all(&self) {
        let mut repos = self.repos.lock().unwrap_or_else(|e| e.into_inner());
        let mut resolved = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        repos.clear();
        resolved.clear();
    }

    /// Forgets `name` unless its shared generation is still `generation`.
    pub(crate) fn sync(&self, name: &RepoName, generation: i64) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.get(name) != Some(&generation) {
            self.forget(name);
            seen.insert(name.clone(), generation);
        }
    }

    /// The generation a read begins at (see [`PushTimesCache::remember`]).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The digest `tag` resolved to, if remembered.
    pub(crate) fn resolved(&self, name: &RepoName, tag: &Tag) -> Option<Digest> {
        self.resolved.lock().unwrap_or_else(|e| e.into_inner()).get(name)?.get(tag).cloned()
    }

    /// Remembers that `tag` resolved to `digest` (its link and the revision link were both
    /// there), unless a tag changed since `generation` was read: the read may predate it.
    pub(crate) fn remember(&self, name: &RepoName, tag: &Tag, digest: &Digest, generation: u64) {
        let mut resolved = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::SeqCst) == generation {
            resolved.entry(name.clone()).or_default().insert(tag.clone(), digest.clone());
        }
    }
}

impl Registry {
    /// Says that `name`'s tags or manifests changed (once the change is stored), here and to
    /// every other process serving the root; and whether the repository exists now.
    pub(crate) fn repo_changed(&self, name: &RepoName, exists: bool) -> Result<()> {
        self.push_times.forget(name);
        self.coord.changed(name, exists)
    }

    /// [`Registry::repo_changed`] for many repositories, announced in one round.
    pub(crate) fn repos_changed(&self, changes: &[(RepoName, bool)]) -> Result<()> {
        for (name, _) in changes {
            self.push_times.forget(name);
        }
        self.coord.changed_many(changes)
    }

    /// Runs `write`, a change of `name` in storage; when it fails midway (part of it may be
    /// stored), still tells every process that `name` changed, so none goes on trusting what
    /// it remembers. The success path tells them itself, once it knows whether `name` exists.
    pub(crate) fn announcing<T>(&self, name: &RepoName, write: impl FnOnce() -> Result<T>) -> Result<T> {
        let result = write();
        if result.is_err() {
            self.push_times.forget(name);
            if let Err(e) = self.coord.changed(name, true) {
                tracing::warn!(repository = %name, error = %e, "could not tell other processes of a failed change");
            }
        }
        result
    }

    /// Forgets what this process remembers of `name` if another process changed it since.
    /// When that cannot be known (the coordination database is down), forgets it anyway: the
    /// read then goes to storage, which is the truth.
    pub(crate) fn repo_sync(&self, name: &RepoName) {
        match self.coord.generation(name) {
            Ok(Some(g)) => self.push_times.sync(name, g),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(repository = %name, error = %e, "cannot check what other replicas changed; reading storage");
                self.push_times.forget(name);
            }
        }
    }
}

/// Digests named by the folders below `<alg>` folders, for both algorithms.
fn digests_below(reg: &Registry, dir: impl Fn(Algorithm) -> berth_storage::Key) -> Result<Vec<Digest>> {
    let mut out = Vec::new();
    for alg in [Algorithm::Sha256, Algorithm::Sha512] {
        let hexes = reg.store().list_all(&dir(alg)).map_err(storage)?;
        out.extend(hexes.iter().filter_map(|h| Digest::from_parts(alg.as_str(), h)));
    }
    Ok(out)
}

impl Registry {
    /// Whether `name` has a `_layers` link for `digest`.
    pub(crate) fn layer_linked(&self, name: &RepoName, digest: &Digest) -> Result<bool> {
        self.store().exists(&layout::layer_link(name, digest)).map_err(storage)
    }

    /// Links existing blob data into a repository.
    pub(crate) fn link_layer(&self, name: &RepoName, digest: &Digest) -> Result<()> {
        self.store().put(&layout::layer_link(name, digest), &layout::link_content(digest)).map_err(storage)
    }

    /// Every blob with a layer link in `name`.
    pub(crate) fn layer_links(&self, name: &RepoName) -> Result<Vec<Digest>> {
        digests_below(self, |alg| layout::layers_dir(name, alg))
    }

    /// Whether `name` holds the manifest `d` (has its revision link).
    pub(crate) fn revision_exists(&self, name: &RepoName, d: &Digest) -> Result<bool> {
        self.store().exists(&layout::revision_link(name, d)).map_err(storage)
    }

    /// Writes (or rewrites, which restarts its untagged clock) the revision link of `d`.
    pub(crate) fn put_revision(&self, name: &RepoName, d: &Digest) -> Result<()> {
        self.store().put(&layout::revision_link(name, d), &layout::link_content(d)).map_err(storage)
    }

    /// Every manifest digest `name` holds.
    pub(crate) fn revisions(&self, name: &RepoName) -> Result<Vec<Digest>> {
        digests_below(self, |alg| layout::revisions_dir(name, alg))
    }

    /// Records in Berth's referrers index that `referrer` names `subject` (see `referrers`; a
    /// repository whose index is not built yet gets it built from its revisions on first use,
    /// this entry included).
    pub(crate) fn link_referrer(&self, name: &RepoName, subject: &Digest, referrer: &Digest) -> Result<()> {
        self.store()
            .put(&layout::referrer_entry(name, subject, referrer), &layout::link_content(referrer))
            .map_err(storage)
    }

    /// Tags of `name` in lexical order, after `last`, at most `n`.
    pub fn tags_list(&self, name: &RepoName, n: Option<usize>, last: Option<&str>) -> Result<Page> {
        let mut tags = self.tags(name)?;
        if tags.is_empty() && !self.repo_exists(name)? {
            return Err(RegistryError::NameUnknown { name: name.clone() });
        }
        if let Some(last) = last {
            tags.retain(|t| t.as_str() > last);
        }
        Ok(Page::cut(tags.into_iter().map(|t| t.as_str().to_owned()).collect(), n))
    }

    /// Every tag of `name` that points somewhere, sorted.
    pub(crate) fn tags(&self, name: &RepoName) -> Result<Vec<Tag>> {
        Ok(self.tag_links(name)?.into_iter().map(|(t, _)| t).collect())
    }

    /// Every tag of `name` with the digest it points at, sorted by tag.
    pub(crate) fn tag_links(&self, name: &RepoName) -> Result<Vec<(Tag, Digest)>> {
        let names = self.store().list_all(&layout::tags_dir(name)).map_err(storage)?;
        let mut tags = Vec::with_capacity(names.len());
        for n in names {
            // A folder left without its current link (an interrupted delete) is not a tag.
            if let Ok(t) = n.parse::<Tag>()
                && let Some(d) = self.tag_get(name, &t)?
            {
                tags.push((t, d));
            }
        }
        Ok(tags)
    }

    /// The digest `tag` points at, if the tag exists.
    pub(crate) fn tag_get(&self, name: &RepoName, tag: &Tag) -> Result<Option<Digest>> {
        let link = self.store().get_opt(&layout::tag_current_link(name, tag)).map_err(storage)?;
        Ok(link.and_then(|b| layout::parse_link(&b)))
    }

    /// Points `tag` at `digest`: index link first, then the current link (atomic replace).
    ///
    /// When the tag moves off a manifest, that manifest's revision link is rewritten, so its
    /// modification time says when it lost the tag: GC's untagged policy counts from there.
    pub(crate) fn tag_set(&self, name: &RepoName, tag: &Tag, digest: &Digest) -> Result<()> {
        let previous = self.tag_get(name, tag)?;
        let link = layout::link_content(digest);
        self.store().put(&layout::tag_index_link(name, tag, digest), &link).map_err(storage)?;
        self.store().put(&layout::tag_current_link(name, tag), &link).map_err(storage)?;
        // The operation that set it tells other processes once it is done (`repo_changed`).
        self.push_times.forget(name);
        if let Some(p) = previous
            && &p != digest
            && self.revision_exists(name, &p)?
        {
            self.put_revision(name, &p)?;
        }
        Ok(())
    }

    /// What restores recorded of `name`'s tags: for each restored tag, the push time it keeps
    /// while its link is the one the restore wrote.
    pub(crate) fn restored_push_times(&self, name: &RepoName) -> Result<BTreeMap<Tag, RestoredPush>> {
        let Some(bytes) = self.store().get_opt(&layout::restored_push_times(name)).map_err(storage)? else {
            return Ok(BTreeMap::new());
        };
        let raw: BTreeMap<String, (String, String)> = serde_json::from_slice(&bytes).unwrap_or_default();
        let time = |s: &str| humantime::parse_rfc3339(s).ok();
        Ok(raw
            .iter()
            .filter_map(|(t, (pushed, link))| {
                Some((t.parse().ok()?, RestoredPush { pushed: time(pushed)?, link: time(link)? }))
            })
            .collect())
    }

    /// Records that `restored` tags of `name` (tag → when it had last been pushed) were just
    /// linked again, so they keep that push time until pushed anew. Under the repository lock.
    pub(crate) fn record_restored_push_times(
        &self,
        name: &RepoName,
        restored: &BTreeMap<Tag, SystemTime>,
    ) -> Result<()> {
        let mut all = self.restored_push_times(name)?;
        // Entries whose tag was pushed (or removed) since are stale.
        let mut keep = BTreeMap::new();
        for (tag, r) in all.iter() {
            if self.store().stat_opt(&layout::tag_current_link(name, tag)).map_err(storage)?.map(|m| m.modified)
                == Some(r.link)
            {
                keep.insert(tag.clone(), *r);
            }
        }
        all = keep;
        for (tag, pushed) in restored {
            if let Some(meta) = self.store().stat_opt(&layout::tag_current_link(name, tag)).map_err(storage)? {
                all.insert(tag.clone(), RestoredPush { pushed: *pushed, link: meta.modified });
            }
        }
        let nanos = crate::journal::nanos_str;
        let raw: BTreeMap<String, (String, String)> =
            all.iter().map(|(t, r)| (t.to_string(), (nanos(r.pushed), nanos(r.link)))).collect();
        let key = layout::restored_push_times(name);
        if raw.is_empty() {
            self.store().delete(&key).map_err(storage)?;
        } else {
            self.store().put(&key, &serde_json::to_vec(&raw).expect("plain data serialises")).map_err(storage)?;
        }
        // A read since the links were written remembered their times without this.
        self.push_times.forget(name);
        Ok(())
    }

    /// When a tag was last pointed somewhere (the modification time of its current link).
    pub fn tag_pushed(&self, name: &RepoName, tag: &Tag) -> Result<Option<SystemTime>> {
        Ok(self.push_times(name)?.get(tag).copied())
    }

    /// When each tag of `name` was last pointed somewhere; read from the tag links the first
    /// time, then remembered until a tag of `name` changes.
    pub fn push_times(&self, name: &RepoName) -> Result<Arc<PushTimes>> {
        self.repo_sync(name);
        let cache = &self.push_times;
        let generation = {
            let repos = cache.repos.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(t) = repos.get(name) {
                return Ok(t.clone());
            }
            cache.generation.load(Ordering::SeqCst)
        };
        let mut times = PushTimes::new();
        for tag in self.tags(name)? {
            if let Some(meta) = self.store().stat_opt(&layout::tag_current_link(name, &tag)).map_err(storage)? {
                times.insert(tag, meta.modified);
            }
        }
        // A restored tag keeps the push time it had: its link's time is the restore's.
        for (tag, r) in self.restored_push_times(name)? {
            if times.get(&tag) == Some(&r.link) {
                times.insert(tag, r.pushed);
            }
        }
        let times = Arc::new(times);
        let mut repos = cache.repos.lock().unwrap_or_else(|e| e.into_inner());
        if cache.generation.load(Ordering::SeqCst) == generation {
            repos.insert(name.clone(), times.clone());
        }
        Ok(times)
    }
}
