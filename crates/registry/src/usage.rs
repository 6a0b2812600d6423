//! Space accounting: for a tag, an image and a repository, the bytes it holds, the bytes it
//! shares with other images, and the bytes deleting it would free once GC runs.
//!
//! The figures come from the in-memory [`Graph`] and its [`Analysis`] (root counts per digest),
//! built by one scan and then kept current by the registry's own mutations, so a delete can
//! price itself without walking the disk again. The model is GC's: what stays is what a tag or
//! a trash entry reaches (and, under the `keep` policy, every manifest), through the same walk;
//! a blob is freed by a delete when every root that reaches it goes with the delete.
//!
//! Never changes storage; the graph it keeps is derived and can be dropped at any time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use berth_oci::{Digest, RepoName, Tag};

use crate::Registry;
use crate::config::UntaggedPolicy;
use crate::error::Result;
use crate::graph::{Analysis, Graph, Id, Reached};
use crate::scan::ScanOptions;

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

impl Usage {
    fn of(total: u64, unique: u64) -> Usage {
        Usage { total, shared: total - unique, unique }
    }
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

/// A repository's line in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSummary {
    /// The repository.
    pub name: RepoName,
    /// How many tags it has.
    pub tags: usize,
    /// How many manifests it holds (tagged or not).
    pub manifests: usize,
    /// Deleting the repository frees `usage.unique`.
    pub usage: Usage,
}

/// Accounting of one repository, with every tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoUsage {
    /// The repository.
    pub name: RepoName,
    /// Deleting the repository frees `usage.unique`.
    pub usage: Usage,
    /// Per tag, sorted by tag.
    pub tags: Vec<TagUsage>,
}

/// What the in-memory graph costs and what it holds, for the benchmark and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphStats {
    /// Repositories.
    pub repositories: usize,
    /// Digests known (manifests and blobs).
    pub digests: usize,
    /// Manifests read.
    pub manifests: usize,
    /// Heap bytes of the per-digest part (packed digest, lookup slot, size, node slot).
    pub digest_bytes: usize,
    /// Heap bytes of manifests' nodes (what each references).
    pub node_bytes: usize,
    /// Heap bytes of repositories (tags, manifest and layer sets) and trash entries.
    pub repo_bytes: usize,
    /// Heap bytes of the analysis (root counts and owners per digest), when computed.
    pub analysis_bytes: usize,
}

impl Registry {
    /// Runs `f` on the current graph and its analysis, building them first if needed.
    pub(crate) fn with_graph<T>(&self, f: impl FnOnce(&Graph, &Analysis) -> T) -> Result<T> {
        let keep = self.config().untagged == UntaggedPolicy::Keep;
        let mut s = self.graph.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(g) = &s.graph {
                let a = match &s.analysis {
                    Some(a) => a.clone(),
                    None => {
                        let a = Arc::new(g.analyse(keep));
                        s.analysis = Some(a.clone());
                        a
                    }
                };
                let g = s.graph.as_ref().expect("checked above");
                return Ok(f(g, &a));
            }
            if !s.scanning {
                break;
            }
            s = self.graph.ready.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.scanning = true;
        drop(s);
        /// Ends the scan whatever happens to it (a panic on a scan thread included), so no
        /// caller waits for a graph that will never come.
        struct Scanning<'a>(&'a crate::graph::GraphCache);
        impl Drop for Scanning<'_> {
            fn drop(&mut self) {
                let mut s = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
                if s.scanning {
                    s.scanning = false;
                    s.pending.clear();
                    self.0.ready.notify_all();
                }
            }
        }
        let guard = Scanning(&self.graph);
        let scanned = self.scan(ScanOptions { sizes: true, listing: false }, &|_, _| {});
        // The scan came back (well or not): the code below ends it under the lock itself.
        std::mem::forget(guard);
        let mut s = self.graph.state.lock().unwrap_or_else(|e| e.into_inner());
        s.scanning = false;
        self.graph.ready.notify_all();
        let mut g = match scanned {
            Ok(sc) => sc.graph,
            Err(e) => {
                // Changes recorded for this scan must not be replayed over a later one.
                s.pending.clear();
                return Err(e);
            }
        };
        let pending = std::mem::take(&mut s.pending);
        if pending.iter().any(|c| matches!(c, crate::graph::Change::Invalidate)) {
            drop(s);
            return self.with_graph(f);
        }
        for c in pending {
            g.apply(c);
        }
        let a = Arc::new(g.analyse(keep));
        let out = f(&g, &a);
        s.graph = Some(g);
        s.analysis = Some(a);
        drop(s);
        crate::scan::give_back_memory();
        Ok(out)
    }

    /// Every repository that holds a tag or a manifest, sorted by name, with its figures.
    pub fn repository_summaries(&self) -> Result<Vec<RepoSummary>> {
        self.with_graph(|g, a| {
            g.repos
                .iter()
                .enumerate()
                .filter(|(_, (_, st))| st.holds_images())
                .map(|(i, (name, st))| RepoSummary {
                    name: name.clone(),
                    tags: st.tags.len(),
                    manifests: st.manifests.len(),
                    usage: Usage::of(a.repo_total[i], a.repo_unique[i]),
                })
                .collect()
        })
    }

    /// The tags of `name` grouped by the image they point at (from the graph: no disk reads).
    pub fn tags_by_image(&self, name: &RepoName) -> Result<BTreeMap<Digest, Vec<Tag>>> {
        self.with_graph(|g, _| {
            let mut out: BTreeMap<Digest, Vec<Tag>> = BTreeMap::new();
            if let Some(st) = g.repos.get(name) {
                for (tag, &image) in &st.tags {
                    out.entry(g.digest(image)).or_default().push(tag.clone());
                }
            }
            out
        })
    }

    /// One repository's summary; `None` when it holds no image.
    pub fn repository_summary(&self, name: &RepoName) -> Result<Option<RepoSummary>> {
        self.with_graph(|g, a| {
            let i = g.repo_index(name)? as usize;
            let st = &g.repos[name];
            st.holds_images().then(|| RepoSummary {
                name: name.clone(),
                tags: st.tags.len(),
                manifests: st.manifests.len(),
                usage: Usage::of(a.repo_total[i], a.repo_unique[i]),
            })
        })
    }

    /// One repository's figures and every tag's; `None` when the graph does not know it.
    pub fn repository_usage(&self, name: &RepoName) -> Result<Option<RepoUsage>> {
        self.with_graph(|g, a| {
            let i = g.repo_index(name)?;
            let st = &g.repos[name];
            let mut closure = HashSet::new();
            let tags = st
                .tags
                .iter()
                .map(|(tag, &image)| {
                    g.closure(Some(i), [image], &a.subjects, &mut closure);
                    let total = closure.iter().map(|&id| g.size(id)).sum();
                    // Under `keep` the manifest stays after its tag goes: nothing is freed.
                    let unique = if a.keep_untagged {
                        0
                    } else {
                        closure.iter().filter(|&&id| a.count(id) == 1).map(|&id| g.size(id)).sum()
                    };
                    let image_unique =
                        closure.iter().filter(|&&id| a.only_image(id, i, image)).map(|&id| g.size(id)).sum();
                    TagUsage {
                        tag: tag.clone(),
                        digest: g.digest(image),
                        usage: Usage::of(total, unique),
                        image_unique,
                    }
                })
                .collect();
            let i = i as usize;
            Some(RepoUsage { name: name.clone(), usage: Usage::of(a.repo_total[i], a.repo_unique[i]), tags })
        })
    }

    /// Accounting for every repository with every tag, sorted by name. Walks every tag; for
    /// listings, [`Registry::repository_summaries`] is the cheap form.
    pub fn usage(&self) -> Result<Vec<RepoUsage>> {
        let names: Vec<RepoName> = self.with_graph(|g, _| g.repos.keys().cloned().collect())?;
        let mut out = Vec::new();
        for n in names {
            out.extend(self.repository_usage(&n)?);
        }
        Ok(out)
    }

    /// Bytes freed, once GC runs, by removing the tags `removed` of `repo` and the manifests
    /// `extra` and layer links `extra_layers` from it.
    pub(crate) fn freed(
        &self,
        repo: &RepoName,
        removed: &[Tag],
        extra: &[Digest],
        extra_layers: &[Digest],
    ) -> Result<u64> {
        self.with_graph(|g, a| {
            let i = g.repo_index(repo);
            let st = g.repos.get(repo);
            // Roots that go: the removed tags, and under `keep` the removed manifests.
            let mut going: BTreeMap<Id, u32> = BTreeMap::new();
            for t in removed {
                if let Some(&d) = st.and_then(|st| st.tags.get(t)) {
                    *going.entry(d).or_default() += 1;
                }
            }
            let extra: Vec<Id> = extra.iter().filter_map(|d| g.id(d)).collect();
            if a.keep_untagged {
                for &m in extra.iter().filter(|m| st.is_some_and(|st| st.manifests.contains(m))) {
                    *going.entry(m).or_default() += 1;
                }
            }
            let mut removed_count: HashMap<Id, u32> = HashMap::new();
            let mut closure = HashSet::new();
            for (&image, &k) in &going {
                g.closure(i, [image], &a.subjects, &mut closure);
                for &id in &closure {
                    *removed_count.entry(id).or_default() += k;
                }
            }
            let mut reach: HashSet<Id> = removed_count.keys().copied().collect();
            g.reach(i, extra.iter().copied(), &a.subjects, |r| {
                let (Reached::Manifest(&id) | Reached::Blob(&id)) = r;
                reach.insert(id);
            });
            reach.extend(extra_layers.iter().filter_map(|d| g.id(d)));
            reach
                .iter()
                .filter(|&&id| a.count(id) == removed_count.get(&id).copied().unwrap_or(0))
                .map(|&id| g.size(id))
                .sum()
        })
    }

    /// When a tag of `name` was last pushed (the newest tag link), if it has tags.
    pub fn repository_pushed(&self, name: &RepoName) -> Result<Option<std::time::SystemTime>> {
        Ok(self.push_times(name)?.values().max().copied())
    }

    /// What the in-memory graph holds and costs, if it is built (never builds it: `/metrics`
    /// must stay cheap).
    pub fn graph_stats(&self) -> Option<GraphStats> {
        let s = self.graph.state.lock().unwrap_or_else(|e| e.into_inner());
        let g = s.graph.as_ref()?;
        let (digest_bytes, node_bytes, repo_bytes) = g.heap_bytes();
        Some(GraphStats {
            repositories: g.repos.len(),
            digests: g.len(),
            manifests: (0..g.len() as u32).filter(|&id| g.node(id).is_some()).count(),
            digest_bytes,
            node_bytes,
            repo_bytes,
            analysis_bytes: s.analysis.as_ref().map_or(0, |a| a.heap_bytes()),
        })
    }
}
