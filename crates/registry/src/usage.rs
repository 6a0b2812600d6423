//! Space accounting over the reachability graph: for a tag, an image and a repository, the
//! bytes it holds, the bytes it shares with other images, and the bytes deleting it would free
//! once GC runs.
//!
//! The [`Graph`] is derived from the layout: repositories with their tags, manifests and layer
//! links; every manifest's references (config and layers, index children, subject); blob sizes;
//! and the trash entries. It is built by one scan, then kept current in memory by the registry's
//! own mutations ([`Change`]), so a delete can price itself without walking the disk again.
//! Changes made while a scan runs are replayed on top of it; every change is idempotent, so one
//! seen by both the scan and the replay counts once.
//!
//! The accounting model is GC's: what stays is what a tag or a trash entry reaches (a manifest,
//! its blobs, an index's children, and the referrers of anything reached). A blob is freed by a
//! delete when every root that reaches it goes with the delete.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Condvar, Mutex};
use std::time::SystemTime;

use berth_oci::manifest::Manifest;
use berth_oci::{Algorithm, Digest, RepoName, Tag};
use berth_storage::layout;

use crate::Registry;
use crate::error::{Result, storage};
use crate::trash::{DeleteKind, TrashEntry, TrashId};

/// What a manifest references, as the graph needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Size of the manifest itself.
    pub size: u64,
    /// Config and layer blobs.
    pub blobs: Vec<Digest>,
    /// Child manifests of an index.
    pub children: Vec<Digest>,
    /// The manifest it refers to.
    pub subject: Option<Digest>,
}

impl Node {
    pub(crate) fn of(size: u64, m: &Manifest) -> Node {
        Node {
            size,
            blobs: m.references().map(|d| d.digest.clone()).collect(),
            children: m.manifests.iter().map(|c| c.digest.clone()).collect(),
            subject: m.subject.as_ref().map(|s| s.digest.clone()),
        }
    }
}

/// One repository in the graph.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoState {
    /// Tag → digest.
    pub tags: BTreeMap<Tag, Digest>,
    /// Manifests with a revision link.
    pub manifests: BTreeSet<Digest>,
    /// Blobs with a layer link.
    pub layers: BTreeSet<Digest>,
}

impl RepoState {
    fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.manifests.is_empty() && self.layers.is_empty()
    }
}

/// The reachability graph of a whole root.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// Every repository folder with content.
    pub repos: BTreeMap<RepoName, RepoState>,
    /// Every manifest Berth could read, by digest.
    pub nodes: HashMap<Digest, Node>,
    /// Size of every blob known to be in the blob store.
    pub sizes: HashMap<Digest, u64>,
    /// Live trash entries.
    pub trash: BTreeMap<TrashId, TrashEntry>,
}

/// A mutation the registry made, applied to a loaded graph.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    PutManifest {
        repo: RepoName,
        digest: Digest,
        node: Node,
        sizes: Vec<(Digest, u64)>,
        tag: Option<Tag>,
    },
    Blob {
        repo: RepoName,
        digest: Digest,
        size: u64,
    },
    Delete(TrashEntry),
    Restore(TrashEntry),
    TrashAdd(TrashEntry),
    TrashRemove(TrashId),
    /// Something changed that is cheaper to rescan than to replay (a GC sweep).
    Invalidate,
}

impl Graph {
    fn apply(&mut self, c: Change) {
        match c {
            Change::PutManifest { repo, digest, node, sizes, tag } => {
                self.sizes.insert(digest.clone(), node.size);
                self.sizes.extend(sizes);
                self.nodes.insert(digest.clone(), node);
                let st = self.repos.entry(repo).or_default();
                st.manifests.insert(digest.clone());
                if let Some(t) = tag {
                    st.tags.insert(t, digest);
                }
            }
            Change::Blob { repo, digest, size } => {
                self.sizes.insert(digest.clone(), size);
                self.repos.entry(repo).or_default().layers.insert(digest);
            }
            Change::Delete(e) => {
                if e.kind == DeleteKind::Repository {
                    self.repos.remove(&e.repository);
                } else if let Some(st) = self.repos.get_mut(&e.repository) {
                    for t in e.tags.keys() {
                        st.tags.remove(t);
                    }
                    for m in &e.manifests {
                        st.manifests.remove(m);
                    }
                    for l in &e.layers {
                        st.layers.remove(l);
                    }
                    if st.is_empty() {
                        self.repos.remove(&e.repository);
                    }
                }
            }
            Change::Restore(e) => {
                let mut manifests = Vec::new();
                let mut layers: Vec<Digest> = e.layers.clone();
                let mut stack: Vec<Digest> = e.held_manifests().cloned().collect();
                let mut seen = HashSet::new();
                while let Some(d) = stack.pop() {
                    if !seen.insert(d.clone()) {
                        continue;
                    }
                    if let Some(n) = self.nodes.get(&d) {
                        layers.extend(n.blobs.iter().cloned());
                        stack.extend(n.children.iter().cloned());
                    }
                    manifests.push(d);
                }
                let st = self.repos.entry(e.repository.clone()).or_default();
                st.layers.extend(layers);
                st.manifests.extend(manifests);
                st.tags.extend(e.tags.clone());
                self.trash.remove(&e.id);
            }
            Change::TrashAdd(e) => {
                self.trash.insert(e.id.clone(), e);
            }
            Change::TrashRemove(id) => {
                self.trash.remove(&id);
            }
            Change::Invalidate => unreachable!("handled by the cache"),
        }
    }

    /// Everything `roots` reach in `repo`: the manifests, their blobs, index children and the
    /// referrers of anything reached.
    fn closure<'a>(
        &self,
        repo: &RepoName,
        roots: impl IntoIterator<Item = &'a Digest>,
        subjects: &Subjects,
        out: &mut HashSet<Digest>,
    ) {
        let mut stack: Vec<&Digest> = roots.into_iter().collect();
        while let Some(d) = stack.pop() {
            if !out.insert(d.clone()) {
                continue;
            }
            if let Some(n) = self.nodes.get(d) {
                for b in &n.blobs {
                    out.insert(b.clone());
                }
                stack.extend(n.children.iter());
            }
            if let Some(refs) = subjects.get(&(repo.clone(), d.clone())) {
                stack.extend(refs.iter());
            }
        }
    }

    fn subjects(&self) -> Subjects {
        let mut map: Subjects = HashMap::new();
        for (name, st) in &self.repos {
            for m in &st.manifests {
                if let Some(s) = self.nodes.get(m).and_then(|n| n.subject.as_ref()) {
                    map.entry((name.clone(), s.clone())).or_default().push(m.clone());
                }
            }
        }
        map
    }

    fn bytes<'a>(&self, digests: impl IntoIterator<Item = &'a Digest>) -> u64 {
        digests.into_iter().map(|d| self.sizes.get(d).copied().unwrap_or(0)).sum()
    }

    /// Every root (a tag or a trash entry) with what it reaches, and how many roots reach
    /// each digest.
    /// With `keep_untagged`, every manifest in a repository is a root too (GC's `keep` policy);
    /// otherwise untagged manifests count as garbage to come.
    fn roots(&self, keep_untagged: bool) -> Roots {
        let subjects = self.subjects();
        let mut roots = Vec::new();
        for (name, st) in &self.repos {
            for (tag, d) in &st.tags {
                let mut c = HashSet::new();
                self.closure(name, [d], &subjects, &mut c);
                roots.push((Root::Tag(name.clone(), tag.clone()), c));
            }
            if keep_untagged {
                for d in &st.manifests {
                    let mut c = HashSet::new();
                    self.closure(name, [d], &subjects, &mut c);
                    roots.push((Root::Manifest(name.clone(), d.clone()), c));
                }
            }
        }
        for e in self.trash.values() {
            let mut c = HashSet::new();
            self.closure(&e.repository, e.held_manifests(), &subjects, &mut c);
            c.extend(e.layers.iter().cloned());
            roots.push((Root::Trash, c));
        }
        let mut counts: HashMap<Digest, u32> = HashMap::new();
        for (_, c) in &roots {
            for d in c {
                *counts.entry(d.clone()).or_default() += 1;
            }
        }
        Roots { roots, counts, subjects }
    }

    /// Bytes freed, once GC runs, by removing the tags `removed` of `repo` and the manifests
    /// `extra` and layer links `extra_layers` from it.
    pub(crate) fn freed(
        &self,
        repo: &RepoName,
        removed: &BTreeSet<Tag>,
        extra: &[Digest],
        extra_layers: &[Digest],
        keep_untagged: bool,
    ) -> u64 {
        let r = self.roots(keep_untagged);
        let mut removed_count: HashMap<&Digest, u32> = HashMap::new();
        let mut reach: HashSet<Digest> = HashSet::new();
        for (root, c) in &r.roots {
            let goes = match root {
                Root::Tag(n, t) => n == repo && removed.contains(t),
                Root::Manifest(n, d) => n == repo && extra.contains(d),
                Root::Trash => false,
            };
            if goes {
                for d in c {
                    *removed_count.entry(d).or_default() += 1;
                }
                reach.extend(c.iter().cloned());
            }
        }
        self.closure(repo, extra, &r.subjects, &mut reach);
        reach.extend(extra_layers.iter().cloned());
        self.bytes(
            reach
                .iter()
                .filter(|d| r.counts.get(*d).copied().unwrap_or(0) == removed_count.get(d).copied().unwrap_or(0)),
        )
    }

    /// Accounting for every repository, sorted by name. A repository's figures cover everything
    /// it holds: tagged images, untagged manifests (until GC takes them) and layer links; its
    /// `unique` is exactly what deleting the repository frees.
    pub fn usage(&self, keep_untagged: bool) -> Vec<RepoUsage> {
        let r = self.roots(keep_untagged);
        let mut out = Vec::new();
        for (name, st) in &self.repos {
            let all: Vec<&(Root, HashSet<Digest>)> = r
                .roots
                .iter()
                .filter(|(root, _)| matches!(root, Root::Tag(n, _) | Root::Manifest(n, _) if n == name))
                .collect();
            let mine: Vec<&(Root, HashSet<Digest>)> =
                all.iter().copied().filter(|(root, _)| matches!(root, Root::Tag(..))).collect();
            let mut in_repo: HashMap<&Digest, u32> = HashMap::new();
            for (_, c) in &all {
                for d in c {
                    *in_repo.entry(d).or_default() += 1;
                }
            }
            let mut held: HashSet<Digest> = HashSet::new();
            self.closure(name, st.manifests.iter(), &r.subjects, &mut held);
            held.extend(st.layers.iter().cloned());
            held.extend(in_repo.keys().map(|d| (*d).clone()));
            let total = self.bytes(held.iter());
            let unique = self.bytes(
                held.iter().filter(|d| r.counts.get(*d).copied().unwrap_or(0) == in_repo.get(d).copied().unwrap_or(0)),
            );
            let mut tags = Vec::new();
            for (root, c) in &mine {
                let Root::Tag(_, tag) = root else { continue };
                let digest = st.tags[tag].clone();
                // Roots in this repository on the same digest go together when the image goes.
                let mut same: HashMap<&Digest, u32> = HashMap::new();
                for (other, oc) in &all {
                    let goes = match other {
                        Root::Tag(_, t) => st.tags[t] == digest,
                        Root::Manifest(_, d) => *d == digest,
                        Root::Trash => false,
                    };
                    if goes {
                        for d in oc {
                            *same.entry(d).or_default() += 1;
                        }
                    }
                }
                let t_total = self.bytes(c.iter());
                // Under `keep`, the manifest itself stays after its tag goes: nothing is freed.
                let t_unique =
                    if keep_untagged { 0 } else { self.bytes(c.iter().filter(|d| r.counts.get(*d) == Some(&1))) };
                let image_unique = self.bytes(c.iter().filter(|d| r.counts.get(*d) == same.get(d)));
                tags.push(TagUsage {
                    tag: tag.clone(),
                    digest,
                    usage: Usage { total: t_total, shared: t_total - t_unique, unique: t_unique },
                    image_unique,
                });
            }
            out.push(RepoUsage { name: name.clone(), usage: Usage { total, shared: total - unique, unique }, tags });
        }
        out
    }
}

type Subjects = HashMap<(RepoName, Digest), Vec<Digest>>;

enum Root {
    Tag(RepoName, Tag),
    Manifest(RepoName, Digest),
    Trash,
}

struct Roots {
    roots: Vec<(Root, HashSet<Digest>)>,
    counts: HashMap<Digest, u32>,
    subjects: Subjects,
}

/// Sizes of one thing, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Everything it reaches (each blob once).
    pub total: u64,
    /// The part other tags or trash entries also reach.
    pub shared: u64,
    /// The part only it reaches: what deleting it frees once GC runs.
    pub unique: u64,
}

/// Accounting of one tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagUsage {
    /// The tag.
    pub tag: Tag,
    /// What it points at.
    pub digest: Digest,
    /// Deleting just this tag: `unique` is 0 while another tag shares the digest.
    pub usage: Usage,
    /// Deleting the image (the digest and every tag on it in this repository).
    pub image_unique: u64,
}

/// Accounting of one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoUsage {
    /// The repository.
    pub name: RepoName,
    /// Deleting the repository frees `usage.unique`.
    pub usage: Usage,
    /// Per tag.
    pub tags: Vec<TagUsage>,
}

/// The in-memory graph and the changes that arrive while it is being built.
#[derive(Debug, Default)]
pub(crate) struct UsageCache {
    state: Mutex<CacheState>,
    ready: Condvar,
}

#[derive(Debug, Default)]
struct CacheState {
    graph: Option<Graph>,
    scanning: bool,
    pending: Vec<Change>,
}

impl Registry {
    /// Applies a mutation to the graph, if one is loaded or being built.
    pub(crate) fn usage_change(&self, c: Change) {
        let mut s = self.usage.state.lock().expect("usage lock");
        if matches!(c, Change::Invalidate) {
            s.graph = None;
            s.pending.clear();
            if s.scanning {
                // The scan in flight may have read the old state; make it start over.
                s.pending.push(Change::Invalidate);
            }
            return;
        }
        if let Some(g) = s.graph.as_mut() {
            g.apply(c);
        } else if s.scanning {
            s.pending.push(c);
        }
    }

    /// Runs `f` on the current graph, building it first if needed.
    pub fn with_graph<T>(&self, f: impl FnOnce(&Graph) -> T) -> Result<T> {
        let mut s = self.usage.state.lock().expect("usage lock");
        loop {
            if let Some(g) = &s.graph {
                return Ok(f(g));
            }
            if !s.scanning {
                break;
            }
            s = self.usage.ready.wait(s).expect("usage lock");
        }
        s.scanning = true;
        drop(s);
        let scanned = self.scan_graph();
        let mut s = self.usage.state.lock().expect("usage lock");
        s.scanning = false;
        self.usage.ready.notify_all();
        let mut g = match scanned {
            Ok(g) => g,
            Err(e) => {
                // Changes recorded for this scan must not be replayed over a later one.
                s.pending.clear();
                return Err(e);
            }
        };
        let pending = std::mem::take(&mut s.pending);
        if pending.iter().any(|c| matches!(c, Change::Invalidate)) {
            drop(s);
            return self.with_graph(f);
        }
        for c in pending {
            g.apply(c);
        }
        let out = f(&g);
        s.graph = Some(g);
        Ok(out)
    }

    /// Accounting for every repository, under the configured untagged policy.
    pub fn usage(&self) -> Result<Vec<RepoUsage>> {
        let keep = self.keeps_untagged();
        self.with_graph(|g| g.usage(keep))
    }

    pub(crate) fn keeps_untagged(&self) -> bool {
        self.config().untagged == crate::gc::UntaggedPolicy::Keep
    }

    /// Builds the graph from storage.
    pub fn scan_graph(&self) -> Result<Graph> {
        let mut g = Graph::default();
        for name in self.repository_folders()? {
            let mut st = RepoState::default();
            for t in self.tags(&name)? {
                if let Some(d) = self.tag_get(&name, &t)? {
                    st.tags.insert(t, d);
                }
            }
            st.manifests = self.revisions(&name)?.into_iter().collect();
            for alg in [Algorithm::Sha256, Algorithm::Sha512] {
                let hexes = self.store().list(&layout::layers_dir(&name, alg), None, usize::MAX).map_err(storage)?;
                st.layers.extend(hexes.iter().filter_map(|h| Digest::from_parts(alg.as_str(), h)));
            }
            if !st.is_empty() {
                g.repos.insert(name, st);
            }
        }
        for e in self.trash_list()? {
            g.trash.insert(e.id.clone(), e);
        }
        let mut stack: Vec<Digest> =
            g.repos.values().flat_map(|st| st.manifests.iter().chain(st.tags.values()).cloned()).collect();
        stack.extend(g.trash.values().flat_map(|e| e.held_manifests().cloned().collect::<Vec<_>>()));
        let mut wanted: HashSet<Digest> = g.repos.values().flat_map(|st| st.layers.iter().cloned()).collect();
        wanted.extend(g.trash.values().flat_map(|e| e.layers.iter().cloned()));
        while let Some(d) = stack.pop() {
            if g.nodes.contains_key(&d) {
                continue;
            }
            wanted.insert(d.clone());
            let loaded = match self.load_manifest(&d) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(digest = %d, error = %e, "manifest unreadable; counted as missing");
                    None
                }
            };
            if let Some(m) = loaded
                && let Some(parsed) = &m.manifest
            {
                let node = Node::of(m.bytes.len() as u64, parsed);
                wanted.extend(node.blobs.iter().cloned());
                stack.extend(node.children.iter().cloned());
                g.nodes.insert(d, node);
            }
        }
        for d in wanted {
            if let Some(size) = self.blob_size(&d)? {
                g.sizes.insert(d, size);
            }
        }
        Ok(g)
    }

    /// When a tag was last pointed somewhere (the modification time of its current link).
    pub fn tag_pushed(&self, name: &RepoName, tag: &Tag) -> Result<Option<SystemTime>> {
        match self.store().stat(&layout::tag_current_link(name, tag)) {
            Ok(m) => Ok(Some(m.modified)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(storage(e)),
        }
    }
}
