//! The reachability graph of a root, and the one walk over what a manifest reaches.
//!
//! [`walk`] is the single definition of reachability: from a manifest, its blobs (config and
//! layers, as [`Node::of`] reads them), its children (an index's manifests), and, where the
//! caller supplies them, the manifests naming it as their subject. Pushing (is the image
//! whole?), restoring, GC's mark and accounting all walk through it, so they cannot disagree.
//!
//! [`Graph`] holds a whole root in memory: each repository's tags, manifests and layer links,
//! what each manifest references, blob sizes and the live trash entries. Digests are interned
//! as dense `u32` ids ([`Ids`]) so that the graph of a 200,000-blob root costs tens of bytes per
//! blob, not hundreds. It is derived data, built by `scan` and kept current by [`Change`]s.
//! [`Analysis`] counts, for every digest, the roots (tags, trash entries, kept manifests) that
//! reach it, which is all that accounting needs.
//!
//! Pure: no I/O, no storage, no locks other than the cache's; everything here is a function of
//! its inputs.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Condvar, Mutex};

use berth_oci::manifest::Manifest;
use berth_oci::{Algorithm, Digest, RepoName, Tag};
use hashbrown::HashTable;

use crate::journal::{DeleteKind, TrashEntry, TrashId};

/// A digest interned in one [`Graph`].
pub(crate) type Id = u32;

/// What a manifest references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node<T> {
    /// Size of the manifest itself.
    pub size: u64,
    /// Config and layer blobs (foreign layers with URLs excluded: the registry does not hold
    /// them).
    pub blobs: Box<[T]>,
    /// Child manifests of an index.
    pub children: Box<[T]>,
    /// The manifest it refers to.
    pub subject: Option<T>,
}

impl Node<Digest> {
    /// What `m` (of `size` bytes) references: the one reading of a manifest every walk uses.
    pub(crate) fn of(size: u64, m: &Manifest) -> Node<Digest> {
        Node {
            size,
            blobs: m.references().map(|d| d.digest.clone()).collect(),
            children: m.manifests.iter().map(|c| c.digest.clone()).collect(),
            subject: m.subject.as_ref().map(|s| s.digest.clone()),
        }
    }
}

/// What one step of a [`walk`] reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reached<'a, T> {
    /// A manifest (a root, a child, or a referrer).
    Manifest(&'a T),
    /// A blob a reached manifest references.
    Blob(&'a T),
}

/// Walks everything `roots` (manifests) reach, visiting each manifest and each blob once, in
/// the order the manifests list them: a manifest, then its blobs, its children (recursively)
/// and the manifests `step` adds as its referrers.
///
/// `step` is called once per digest reached. For a manifest it returns what the manifest
/// references (`None`: unknown, or not to be followed, and nothing below it is reached) and may
/// push referrers into the vector it is given; for a blob its answer is ignored. Any error
/// stops the walk.
pub(crate) fn walk<T, N, E>(
    roots: impl IntoIterator<Item = T>,
    mut step: impl FnMut(Reached<'_, T>, &mut Vec<T>) -> Result<Option<N>, E>,
) -> Result<(), E>
where
    T: Clone + Eq + Hash,
    N: std::ops::Deref<Target = Node<T>>,
{
    let mut stack: Vec<(T, bool)> = roots.into_iter().map(|d| (d, false)).collect();
    stack.reverse();
    let mut manifests = HashSet::new();
    let mut blobs = HashSet::new();
    let mut referrers = Vec::new();
    while let Some((d, is_blob)) = stack.pop() {
        if is_blob {
            if blobs.insert(d.clone()) {
                step(Reached::Blob(&d), &mut referrers)?;
                referrers.clear();
            }
            continue;
        }
        if !manifests.insert(d.clone()) {
            continue;
        }
        referrers.clear();
        let next = step(Reached::Manifest(&d), &mut referrers)?;
        // Pushed in reverse, so they pop in the manifest's order: blobs, children, referrers.
        stack.extend(referrers.drain(..).rev().map(|r| (r, false)));
        if let Some(n) = next {
            stack.extend(n.children.iter().rev().map(|c| (c.clone(), false)));
            stack.extend(n.blobs.iter().rev().map(|b| (b.clone(), true)));
        }
    }
    Ok(())
}

/// A digest in a compact form: 32 bytes for SHA-256 instead of a 64-character string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Packed {
    Sha256([u8; 32]),
    Sha512(Box<[u8; 64]>),
}

fn unhex(hex: &str, out: &mut [u8]) {
    let v = |c: u8| if c.is_ascii_digit() { c - b'0' } else { c - b'a' + 10 };
    for (o, pair) in out.iter_mut().zip(hex.as_bytes().chunks(2)) {
        *o = v(pair[0]) << 4 | v(pair[1]);
    }
}

impl Packed {
    fn of(d: &Digest) -> Packed {
        // A Digest holds only lowercase hex of its algorithm's length.
        match d.algorithm() {
            Algorithm::Sha256 => {
                let mut b = [0u8; 32];
                unhex(d.hex(), &mut b);
                Packed::Sha256(b)
            }
            Algorithm::Sha512 => {
                let mut b = Box::new([0u8; 64]);
                unhex(d.hex(), &mut b[..]);
                Packed::Sha512(b)
            }
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Packed::Sha256(b) => b,
            Packed::Sha512(b) => &b[..],
        }
    }

    /// The digest bytes are uniformly distributed: their first eight are a hash already.
    fn hash(&self) -> u64 {
        let b = self.bytes();
        u64::from_le_bytes(b[..8].try_into().expect("digests are longer than 8 bytes"))
    }

    fn digest(&self) -> Digest {
        let alg = match self {
            Packed::Sha256(_) => Algorithm::Sha256,
            Packed::Sha512(_) => Algorithm::Sha512,
        };
        Digest::from_bytes(alg, self.bytes()).expect("packed from a valid digest")
    }
}

/// Digests interned as dense ids: each digest is stored once, packed, and the lookup table holds
/// only ids.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ids {
    table: HashTable<Id>,
    digests: Vec<Packed>,
}

impl Ids {
    /// The id of `d`, interning it if new.
    pub(crate) fn intern(&mut self, d: &Digest) -> Id {
        let p = Packed::of(d);
        let hash = p.hash();
        if let Some(id) = self.table.find(hash, |&id| self.digests[id as usize] == p) {
            return *id;
        }
        let id = Id::try_from(self.digests.len()).expect("fewer than 4 billion digests");
        self.digests.push(p);
        let digests = &self.digests;
        self.table.insert_unique(hash, id, |&i| digests[i as usize].hash());
        id
    }

    /// The id of `d`, if interned.
    pub(crate) fn get(&self, d: &Digest) -> Option<Id> {
        let p = Packed::of(d);
        self.table.find(p.hash(), |&id| self.digests[id as usize] == p).copied()
    }

    /// The digest of an id.
    pub(crate) fn digest(&self, id: Id) -> Digest {
        self.digests[id as usize].digest()
    }

    /// How many digests are interned.
    pub(crate) fn len(&self) -> usize {
        self.digests.len()
    }
}

/// One repository in the graph.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RepoState {
    /// Tag → manifest.
    pub tags: BTreeMap<Tag, Id>,
    /// Manifests with a revision link.
    pub manifests: BTreeSet<Id>,
    /// Blobs with a layer link.
    pub layers: BTreeSet<Id>,
}

impl RepoState {
    /// Whether it holds a tag or a manifest (what makes a repository exist).
    pub(crate) fn holds_images(&self) -> bool {
        !self.tags.is_empty() || !self.manifests.is_empty()
    }

    fn is_empty(&self) -> bool {
        !self.holds_images() && self.layers.is_empty()
    }
}

const UNKNOWN_SIZE: u64 = u64::MAX;

/// The reachability graph of a whole root.
#[derive(Debug, Clone, Default)]
pub(crate) struct Graph {
    ids: Ids,
    /// By id: what a manifest references; `None` for blobs and for manifests not read.
    nodes: Vec<Option<Box<Node<Id>>>>,
    /// By id: the size of the blob in the blob store, or `UNKNOWN_SIZE`.
    sizes: Vec<u64>,
    /// Every repository folder with content.
    pub repos: BTreeMap<RepoName, RepoState>,
    /// Live trash entries.
    pub trash: BTreeMap<TrashId, TrashEntry>,
    /// Manifests whose bytes are there but cannot be read, with why: what they reference is
    /// unknown (GC refuses to sweep while it reaches one).
    pub unreadable: BTreeMap<Id, String>,
}

/// A repository's tags, manifests and layer links by digest (see [`Graph::by_digest`]).
#[cfg(test)]
pub(crate) type RepoByDigest = (BTreeMap<Tag, Digest>, BTreeSet<Digest>, BTreeSet<Digest>);

/// Manifests naming another as their subject, per repository (by its position in
/// `Graph::repos`) and subject.
pub(crate) type Subjects = HashMap<(u32, Id), Vec<Id>>;

impl Graph {
    /// The id of `d`, interning it if new.
    pub(crate) fn intern(&mut self, d: &Digest) -> Id {
        let id = self.ids.intern(d);
        if self.nodes.len() <= id as usize {
            self.nodes.resize_with(id as usize + 1, || None);
            self.sizes.resize(id as usize + 1, UNKNOWN_SIZE);
        }
        id
    }

    /// The id of `d`, if the graph knows it.
    pub(crate) fn id(&self, d: &Digest) -> Option<Id> {
        self.ids.get(d)
    }

    /// The digest of an id.
    pub(crate) fn digest(&self, id: Id) -> Digest {
        self.ids.digest(id)
    }

    /// How many digests the graph knows.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// What the manifest `id` references, if it was read.
    pub(crate) fn node(&self, id: Id) -> Option<&Node<Id>> {
        self.nodes.get(id as usize).and_then(|n| n.as_deref())
    }

    /// Records what a manifest references (and its size).
    pub(crate) fn set_node(&mut self, d: &Digest, n: &Node<Digest>) -> Id {
        let id = self.intern(d);
        let node = Node {
            size: n.size,
            blobs: n.blobs.iter().map(|b| self.intern(b)).collect(),
            children: n.children.iter().map(|c| self.intern(c)).collect(),
            subject: n.subject.as_ref().map(|s| self.intern(s)),
        };
        self.sizes[id as usize] = n.size;
        self.nodes[id as usize] = Some(Box::new(node));
        id
    }

    /// Records that the manifest `d` is there but cannot be read.
    pub(crate) fn set_unreadable(&mut self, d: &Digest, reason: String) {
        let id = self.intern(d);
        self.unreadable.insert(id, reason);
    }

    /// Records the size of a blob.
    pub(crate) fn set_size(&mut self, d: &Digest, size: u64) {
        let id = self.intern(d);
        self.sizes[id as usize] = size;
    }

    /// The size of `id` (0 when unknown: content that is gone frees nothing).
    pub(crate) fn size(&self, id: Id) -> u64 {
        match self.sizes.get(id as usize) {
            Some(&s) if s != UNKNOWN_SIZE => s,
            _ => 0,
        }
    }

    /// The position of a repository in `repos`, the key of [`Subjects`].
    pub(crate) fn repo_index(&self, name: &RepoName) -> Option<u32> {
        self.repos.keys().position(|n| n == name).map(|i| i as u32)
    }

    /// Every manifest that names a subject in its repository.
    pub(crate) fn subjects(&self) -> Subjects {
        let mut map: Subjects = HashMap::new();
        for (i, st) in self.repos.values().enumerate() {
            for &m in &st.manifests {
                if let Some(s) = self.node(m).and_then(|n| n.subject) {
                    map.entry((i as u32, s)).or_default().push(m);
                }
            }
        }
        map
    }

    /// Walks everything `roots` reach within the repository at position `repo` (its referrers
    /// included), calling `visit` once per manifest and blob.
    pub(crate) fn reach(
        &self,
        repo: Option<u32>,
        roots: impl IntoIterator<Item = Id>,
        subjects: &Subjects,
        mut visit: impl FnMut(Reached<'_, Id>),
    ) {
        let _ = walk(roots, |r, more| {
            visit(r);
            let Reached::Manifest(&id) = r else { return Ok::<_, std::convert::Infallible>(None) };
            if let Some(refs) = repo.and_then(|r| subjects.get(&(r, id))) {
                more.extend(refs.iter().copied());
            }
            Ok(self.node(id))
        });
    }

    /// The ids of what a trash entry holds: its manifests (removed ones and tag targets) and
    /// its layer links.
    fn trash_roots(&self, e: &TrashEntry) -> (Vec<Id>, Vec<Id>) {
        let m = e.held_manifests().filter_map(|d| self.id(d)).collect();
        let l = e.layers.iter().filter_map(|d| self.id(d)).collect();
        (m, l)
    }

    /// Heap bytes the graph holds, estimated from its capacities: `(per-digest part, nodes of
    /// manifests, repositories and trash)`. The per-digest part is the interned digest, its
    /// lookup slot, its size and its node slot; a manifest adds its node and reference lists.
    pub(crate) fn heap_bytes(&self) -> (usize, usize, usize) {
        use std::mem::size_of;
        let sha512 = self.ids.digests.iter().filter(|p| matches!(p, Packed::Sha512(_))).count() * 64;
        let digests = self.ids.digests.capacity() * size_of::<Packed>()
            + sha512
            + self.ids.table.capacity() * (size_of::<Id>() + 1)
            + self.sizes.capacity() * size_of::<u64>()
            + self.nodes.capacity() * size_of::<Option<Box<Node<Id>>>>();
        let nodes = self
            .nodes
            .iter()
            .flatten()
            .map(|n| size_of::<Node<Id>>() + (n.blobs.len() + n.children.len()) * size_of::<Id>())
            .sum();
        // B-tree entries cost about their size again in node overhead.
        let repos = self
            .repos
            .iter()
            .map(|(name, st)| {
                name.as_str().len()
                    + st.tags.keys().map(|t| 2 * (size_of::<Tag>() + size_of::<Id>()) + t.as_str().len()).sum::<usize>()
                    + 2 * (st.manifests.len() + st.layers.len()) * size_of::<Id>()
            })
            .sum::<usize>()
            + self.trash.len() * size_of::<TrashEntry>();
        (digests, nodes, repos)
    }

    /// Applies a mutation the registry made.
    pub(crate) fn apply(&mut self, c: Change) {
        match c {
            Change::PutManifest { repo, digest, node, sizes, tag } => {
                let id = self.set_node(&digest, &node);
                for (d, s) in sizes {
                    self.set_size(&d, s);
                }
                let st = self.repos.entry(repo).or_default();
                st.manifests.insert(id);
                if let Some(t) = tag {
                    st.tags.insert(t, id);
                }
            }
            Change::Blob { repo, digest, size } => {
                self.set_size(&digest, size);
                let id = self.intern(&digest);
                self.repos.entry(repo).or_default().layers.insert(id);
            }
            Change::Delete(e) => {
                if e.kind == DeleteKind::Repository {
                    self.repos.remove(&e.repository);
                } else if let Some(st) = self.repos.get_mut(&e.repository) {
                    for t in e.tags.keys() {
                        st.tags.remove(t);
                    }
                    for m in &e.manifests {
                        if let Some(id) = self.ids.get(m) {
                            st.manifests.remove(&id);
                        }
                    }
                    for l in &e.layers {
                        if let Some(id) = self.ids.get(l) {
                            st.layers.remove(&id);
                        }
                    }
                    if st.is_empty() {
                        self.repos.remove(&e.repository);
                    }
                }
            }
            Change::Restore(e) => {
                // What a restore relinks: every manifest the entry holds (children included)
                // and the blobs they reference, plus its layer links.
                let (roots, mut layers) = self.trash_roots(&e);
                let mut manifests = Vec::new();
                self.reach(None, roots, &Subjects::new(), |r| match r {
                    Reached::Manifest(&m) => manifests.push(m),
                    Reached::Blob(&b) => layers.push(b),
                });
                let tags: Vec<(Tag, Id)> = e.tags.iter().map(|(t, d)| (t.clone(), self.intern(d))).collect();
                let st = self.repos.entry(e.repository.clone()).or_default();
                st.layers.extend(layers);
                st.manifests.extend(manifests);
                st.tags.extend(tags);
                self.trash.remove(&e.id);
            }
            Change::TrashAdd(e) => {
                for d in e.held_manifests().chain(e.layers.iter()) {
                    self.intern(d);
                }
                self.trash.insert(e.id.clone(), e);
            }
            Change::TrashRemove(id) => {
                self.trash.remove(&id);
            }
            Change::Invalidate => unreachable!("handled by the cache"),
        }
    }

    /// The graph's content by digest, for comparing two graphs (ids differ between them).
    #[cfg(test)]
    pub(crate) fn by_digest(&self) -> BTreeMap<RepoName, RepoByDigest> {
        self.repos
            .iter()
            .map(|(n, st)| {
                let tags = st.tags.iter().map(|(t, &id)| (t.clone(), self.digest(id))).collect();
                let m = st.manifests.iter().map(|&id| self.digest(id)).collect();
                let l = st.layers.iter().map(|&id| self.digest(id)).collect();
                (n.clone(), (tags, m, l))
            })
            .collect()
    }

    /// Counts the roots that reach each digest (see [`Analysis`]). With `keep_untagged`, every
    /// manifest in a repository is a root too (GC's `keep` policy); otherwise untagged
    /// manifests are garbage to come and reach nothing.
    pub(crate) fn analyse(&self, keep_untagged: bool) -> Analysis {
        let subjects = self.subjects();
        let n = self.len();
        let mut a = Analysis {
            count: vec![0; n],
            repo_owner: vec![NOBODY; n],
            group_owner: vec![NOBODY; n],
            groups: HashMap::new(),
            repo_total: Vec::with_capacity(self.repos.len()),
            repo_unique: Vec::with_capacity(self.repos.len()),
            subjects,
            keep_untagged,
        };
        let mut closure = HashSet::new();
        for (ri, st) in self.repos.values().enumerate() {
            let ri = ri as u32;
            // Every tag on an image is a root of its own; under `keep` the manifest is one too.
            let mut roots: BTreeMap<Id, u32> = BTreeMap::new();
            for &t in st.tags.values() {
                *roots.entry(t).or_default() += 1;
            }
            if keep_untagged {
                for &m in &st.manifests {
                    *roots.entry(m).or_default() += 1;
                }
            }
            for (image, k) in roots {
                let group = a.group(ri, image);
                self.closure(Some(ri), [image], &a.subjects, &mut closure);
                a.add(&closure, k, ri, group);
            }
        }
        let trash_owner = self.repos.len() as u32;
        for e in self.trash.values() {
            let (manifests, layers) = self.trash_roots(e);
            let group = a.next_group();
            self.closure(self.repo_index(&e.repository), manifests, &a.subjects, &mut closure);
            closure.extend(layers);
            a.add(&closure, 1, trash_owner, group);
        }
        // What each repository holds, and the part only its own roots reach.
        for (ri, st) in self.repos.values().enumerate() {
            let held = self.held(ri as u32, st, &a.subjects);
            let total = held.iter().map(|&id| self.size(id)).sum();
            let unique = held
                .iter()
                .filter(|&&id| matches!(a.repo_owner[id as usize], o if o == NOBODY || o == ri as u32))
                .map(|&id| self.size(id))
                .sum();
            a.repo_total.push(total);
            a.repo_unique.push(unique);
        }
        a
    }

    /// Everything `roots` reach in the repository at position `repo`, into `out` (cleared first).
    pub(crate) fn closure(
        &self,
        repo: Option<u32>,
        roots: impl IntoIterator<Item = Id>,
        subjects: &Subjects,
        out: &mut HashSet<Id>,
    ) {
        out.clear();
        self.reach(repo, roots, subjects, |r| {
            let (Reached::Manifest(&id) | Reached::Blob(&id)) = r;
            out.insert(id);
        });
    }

    /// Everything a repository holds: what its manifests reach (untagged ones too, until GC
    /// takes them) and its layer links.
    pub(crate) fn held(&self, repo: u32, st: &RepoState, subjects: &Subjects) -> Vec<Id> {
        let mut held: HashSet<Id> = st.layers.iter().copied().collect();
        self.reach(Some(repo), st.manifests.iter().chain(st.tags.values()).copied(), subjects, |r| {
            let (Reached::Manifest(&id) | Reached::Blob(&id)) = r;
            held.insert(id);
        });
        held.into_iter().collect()
    }
}

/// Owner of a digest reached by no root yet.
const NOBODY: u32 = u32::MAX;
/// Owner of a digest reached by roots of more than one owner.
const MANY: u32 = u32::MAX - 1;

fn merge(current: u32, owner: u32) -> u32 {
    match current {
        NOBODY => owner,
        c if c == owner => c,
        _ => MANY,
    }
}

/// For every digest, how many roots reach it and whose they are: enough to say, for any tag,
/// image or repository, which bytes only it holds (what deleting it frees once GC runs).
///
/// A root is a tag (or, under the `keep` policy, a manifest) in a repository, or a trash entry.
/// Roots belong to an owner (their repository; every trash entry counts as one other owner)
/// and to a group (the repository and the image digest, so that deleting an image takes all
/// its tags; each trash entry its own group).
#[derive(Debug, Clone)]
pub(crate) struct Analysis {
    count: Vec<u32>,
    repo_owner: Vec<u32>,
    group_owner: Vec<u32>,
    groups: HashMap<(u32, Id), u32>,
    /// By repository position: bytes it holds.
    pub repo_total: Vec<u64>,
    /// By repository position: bytes deleting it frees.
    pub repo_unique: Vec<u64>,
    /// The referrers of each manifest, per repository.
    pub subjects: Subjects,
    /// Whether untagged manifests count as roots.
    pub keep_untagged: bool,
}

impl Analysis {
    fn group(&mut self, repo: u32, image: Id) -> u32 {
        let next = self.groups.len() as u32;
        *self.groups.entry((repo, image)).or_insert(next)
    }

    /// Counts `k` roots of `owner` and `group` reaching everything in `closure`.
    fn add(&mut self, closure: &HashSet<Id>, k: u32, owner: u32, group: u32) {
        for &id in closure {
            let i = id as usize;
            self.count[i] += k;
            self.repo_owner[i] = merge(self.repo_owner[i], owner);
            self.group_owner[i] = merge(self.group_owner[i], group);
        }
    }

    fn next_group(&mut self) -> u32 {
        let next = self.groups.len() as u32;
        // Trash entries never share a group: key them past every real id.
        self.groups.insert((u32::MAX, Id::MAX - next), next);
        next
    }

    /// Heap bytes it holds, estimated from its capacities.
    pub(crate) fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        (self.count.capacity() + self.repo_owner.capacity() + self.group_owner.capacity()) * size_of::<u32>()
            + self.groups.capacity() * (size_of::<(u32, Id)>() + size_of::<u32>() + 1)
            + (self.repo_total.capacity() + self.repo_unique.capacity()) * size_of::<u64>()
            + self.subjects.values().map(|v| 16 + size_of::<Vec<Id>>() + v.capacity() * size_of::<Id>()).sum::<usize>()
    }

    /// How many roots reach `id`.
    pub(crate) fn count(&self, id: Id) -> u32 {
        self.count.get(id as usize).copied().unwrap_or(0)
    }

    /// Whether every root reaching `id` is a tag (or manifest) of `image` in `repo`.
    pub(crate) fn only_image(&self, id: Id, repo: u32, image: Id) -> bool {
        match (self.groups.get(&(repo, image)), self.group_owner.get(id as usize)) {
            (Some(g), Some(&o)) => o == NOBODY || o == *g,
            _ => true,
        }
    }
}

/// A mutation the registry made, applied to a loaded graph.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// A manifest pushed (and tagged).
    PutManifest { repo: RepoName, digest: Digest, node: Node<Digest>, sizes: Vec<(Digest, u64)>, tag: Option<Tag> },
    /// A blob linked into a repository (upload or mount).
    Blob { repo: RepoName, digest: Digest, size: u64 },
    /// A delete carried out.
    Delete(TrashEntry),
    /// A trash entry restored.
    Restore(TrashEntry),
    /// A trash entry written.
    TrashAdd(TrashEntry),
    /// A trash entry purged or expired.
    TrashRemove(TrashId),
    /// Something changed that is cheaper to rescan than to replay (a GC sweep, a repair).
    Invalidate,
}

/// The in-memory graph, its analysis, and the changes that arrive while it is being built.
#[derive(Debug, Default)]
pub(crate) struct GraphCache {
    pub(crate) state: Mutex<CacheState>,
    pub(crate) ready: Condvar,
}

/// See [`GraphCache`].
#[derive(Debug, Default)]
pub(crate) struct CacheState {
    /// The graph, once built.
    pub graph: Option<Graph>,
    /// Its analysis, until the next change.
    pub analysis: Option<std::sync::Arc<Analysis>>,
    /// A scan is building the graph.
    pub scanning: bool,
    /// Changes made while the scan runs, replayed on top of it.
    pub pending: Vec<Change>,
}

impl GraphCache {
    /// Applies a mutation to the graph, if one is loaded or being built. Every change is
    /// idempotent, so one that a running scan also saw counts once.
    pub(crate) fn note(&self, c: Change) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.analysis = None;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    fn node(blobs: &[&str], children: &[&str]) -> Node<Digest> {
        Node {
            size: 10,
            blobs: blobs.iter().map(|b| d(b)).collect(),
            children: children.iter().map(|c| d(c)).collect(),
            subject: None,
        }
    }

    #[test]
    fn ids_round_trip_and_are_dense() {
        let mut ids = Ids::default();
        let a = d("a");
        let long = Digest::of(Algorithm::Sha512, b"b");
        assert_eq!(ids.intern(&a), 0);
        assert_eq!(ids.intern(&long), 1);
        assert_eq!(ids.intern(&a), 0);
        assert_eq!(ids.get(&long), Some(1));
        assert_eq!(ids.get(&d("c")), None);
        assert_eq!(ids.digest(0), a);
        assert_eq!(ids.digest(1), long);
        for i in 0..10_000 {
            ids.intern(&d(&i.to_string()));
        }
        assert_eq!(ids.len(), 10_002);
        assert_eq!(ids.get(&d("9999")).map(|id| ids.digest(id)), Some(d("9999")));
    }

    #[test]
    fn the_walk_visits_each_digest_once_in_manifest_order_and_stops_where_told() {
        let nodes: HashMap<Digest, Node<Digest>> = [
            (d("index"), node(&[], &["amd", "arm"])),
            (d("amd"), node(&["cfg1", "shared", "l1"], &[])),
            (d("arm"), node(&["cfg2", "shared"], &[])),
        ]
        .into_iter()
        .collect();
        let mut seen = Vec::new();
        walk([d("index"), d("amd")], |r, more| {
            seen.push(match r {
                Reached::Manifest(m) => format!("m:{}", &m.hex()[..4]),
                Reached::Blob(b) => format!("b:{}", &b.hex()[..4]),
            });
            let Reached::Manifest(m) = r else { return Ok::<_, ()>(None) };
            if m == &d("arm") {
                more.push(d("signature"));
            }
            Ok(nodes.get(m))
        })
        .unwrap();
        let short = |k: &str, s: &str| format!("{k}:{}", &d(s).hex()[..4]);
        let want = vec![
            short("m", "index"),
            short("m", "amd"),
            short("b", "cfg1"),
            short("b", "shared"),
            short("b", "l1"),
            short("m", "arm"),
            short("b", "cfg2"),
            short("m", "signature"),
        ];
        assert_eq!(seen, want);
        // A node that is not followed hides everything below it.
        let mut count = 0;
        walk([d("index")], |_, _| {
            count += 1;
            Ok::<Option<&Node<Digest>>, ()>(None)
        })
        .unwrap();
        assert_eq!(count, 1);
    }

    #[test]
    fn analysis_counts_roots_and_owners() {
        let mut g = Graph::default();
        let a: RepoName = "a".parse().unwrap();
        let b: RepoName = "b".parse().unwrap();
        g.apply(Change::PutManifest {
            repo: a.clone(),
            digest: d("ma"),
            node: node(&["shared", "only-a"], &[]),
            sizes: vec![(d("shared"), 100), (d("only-a"), 10)],
            tag: Some("v1".parse().unwrap()),
        });
        g.apply(Change::PutManifest {
            repo: a.clone(),
            digest: d("ma"),
            node: node(&["shared", "only-a"], &[]),
            sizes: vec![],
            tag: Some("latest".parse().unwrap()),
        });
        g.apply(Change::PutManifest {
            repo: b.clone(),
            digest: d("mb"),
            node: node(&["shared"], &[]),
            sizes: vec![],
            tag: Some("v1".parse().unwrap()),
        });
        let an = g.analyse(false);
        let id = |s: &str| g.id(&d(s)).unwrap();
        assert_eq!(an.count(id("shared")), 3, "two tags in a, one in b");
        assert_eq!(an.count(id("only-a")), 2);
        assert!(an.only_image(id("only-a"), 0, id("ma")));
        assert!(!an.only_image(id("shared"), 0, id("ma")));
        assert_eq!(an.repo_total, vec![10 + 100 + 10, 10 + 100]);
        assert_eq!(an.repo_unique, vec![10 + 10, 10], "the shared layer is nobody's alone");
    }
}
