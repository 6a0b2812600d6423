//! The list of repositories, and whether one exists.
//!
//! A repository exists while it holds a tag or a manifest; an empty repository folder (which
//! CNCF Distribution leaves behind and keeps listing) does not count. Walking every folder for
//! each `_catalog` call is slow on large roots, so the sorted list is cached in memory: built on
//! first use and updated by this process's own pushes and deletes. It is derived data; the
//! layout remains the truth. With a ready metadata index, the list is read from it instead of
//! walking the folders.

use std::collections::BTreeSet;
use std::sync::Mutex;

use berth_oci::{Algorithm, RepoName};
use berth_storage::{BackendExt, layout};

use crate::Registry;
use crate::error::{Result, storage};
use crate::links::Page;

#[derive(Debug, Default)]
pub(crate) struct CatalogCache {
    repos: Mutex<Option<BTreeSet<String>>>,
    /// With several processes: the shared catalog generation the list was built at (see
    /// `coord`); another value means another process added or removed a repository since.
    generation: Mutex<Option<i64>>,
}

impl Registry {
    /// Repository names in lexical order, after `last`, at most `n`.
    pub fn catalog(&self, n: usize, last: Option<&str>) -> Result<Page> {
        self.catalog_where(n, last, &|_| true)
    }

    /// Like [`Registry::catalog`], listing only the repositories `keep` accepts (those a
    /// caller may pull).
    pub fn catalog_where(&self, n: usize, last: Option<&str>, keep: &dyn Fn(&str) -> bool) -> Result<Page> {
        let shared = self.coord.catalog_generation();
        let mut guard = self.catalog.repos.lock().expect("catalog lock");
        let mut built = self.catalog.generation.lock().expect("catalog generation lock");
        match shared {
            Ok(None) => {}
            Ok(Some(g)) if *built == Some(g) => {}
            Ok(Some(g)) => {
                *guard = None;
                *built = Some(g);
            }
            Err(e) => {
                // Whether another replica changed it cannot be known: walk storage.
                tracing::debug!(error = %e, "cannot check the catalog against other replicas; walking storage");
                *guard = None;
                *built = None;
            }
        }
        drop(built);
        if guard.is_none() {
            *guard = Some(self.walk_repositories()?.into_iter().map(|r| r.as_str().to_owned()).collect());
        }
        let repos = guard.as_ref().expect("filled above");
        let start = match last {
            Some(l) => repos.range::<str, _>((std::ops::Bound::Excluded(l), std::ops::Bound::Unbounded)),
            None => repos.range::<str, _>(..),
        };
        let after: Vec<String> = start.filter(|r| keep(r)).take(n.saturating_add(1)).cloned().collect();
        Ok(Page::cut(after, Some(n)))
    }

    /// Every repository, read fresh from the metadata index or storage (sorted).
    pub fn repositories(&self) -> Result<Vec<RepoName>> {
        let mut repos = self.walk_repositories()?;
        repos.sort();
        Ok(repos)
    }

    /// Whether `name` holds at least one tag or manifest.
    pub fn repo_exists(&self, name: &RepoName) -> Result<bool> {
        let any = |k| self.store().any_below(&k).map_err(storage);
        Ok(any(layout::tags_dir(name))?
            || any(layout::revisions_dir(name, Algorithm::Sha256))?
            || any(layout::revisions_dir(name, Algorithm::Sha512))?)
    }

    /// Brings the cached catalog in line with storage for one repository.
    pub(crate) fn catalog_refresh(&self, name: &RepoName) -> Result<()> {
        let exists = self.repo_exists(name)?;
        self.catalog_refresh_many(&[(name.clone(), exists)])
    }

    /// Every repository folder, with content or not (GC and accounting look at all of them).
    pub fn repository_folders(&self) -> Result<Vec<RepoName>> {
        let mut out = Vec::new();
        let mut stack = vec![String::new()];
        while let Some(path) = stack.pop() {
            let Some(dir) = layout::repositories_child(&path) else { continue };
            let children = self.store().list_all(&dir).map_err(storage)?;
            if children.iter().any(|c| c == "_manifests" || c == "_layers" || c == "_uploads")
                && let Ok(name) = path.parse::<RepoName>()
            {
                out.push(name);
            }
            for c in children.into_iter().filter(|c| !c.starts_with('_')) {
                stack.push(if path.is_empty() { c } else { format!("{path}/{c}") });
            }
        }
        out.sort();
        Ok(out)
    }

    /// [`Registry::catalog_refresh`] for many repositories whose existence the caller read
    /// (`repo_exists`): the change is announced to other processes once for all.
    pub(crate) fn catalog_refresh_many(&self, changes: &[(RepoName, bool)]) -> Result<()> {
        self.repos_changed(changes)?;
        if let Some(set) = self.catalog.repos.lock().expect("catalog lock").as_mut() {
            for (name, exists) in changes {
                if *exists {
                    set.insert(name.as_str().to_owned());
                } else {
                    set.remove(name.as_str());
                }
            }
        }
        Ok(())
    }

    pub(crate) fn catalog_added(&self, name: &RepoName) {
        if let Some(set) = self.catalog.repos.lock().expect("catalog lock").as_mut() {
            set.insert(name.as_str().to_owned());
        }
    }

    /// Every repository holding a tag or a manifest: from the metadata index when it is ready,
    /// else walked from storage.
    fn walk_repositories(&self) -> Result<Vec<RepoName>> {
        if let Some(index) = self.ready_index() {
            return Ok(index.repository_names()?.into_iter().filter_map(|n| n.parse().ok()).collect());
        }
        let mut out = Vec::new();
        let mut stack = vec![String::new()];
        while let Some(path) = stack.pop() {
            let Some(dir) = layout::repositories_child(&path) else { continue };
            let children = self.store().list_all(&dir).map_err(storage)?;
            if children.iter().any(|c| c == "_manifests")
                && let Ok(name) = path.parse::<RepoName>()
                && self.repo_exists(&name)?
            {
                out.push(name);
            }
            for c in children.into_iter().filter(|c| !c.starts_with('_')) {
                stack.push(if path.is_empty() { c } else { format!("{path}/{c}") });
            }
        }
        Ok(out)
    }
}

impl Registry {
    /// Removes the now-empty folders a deleted repository leaves above it (`team/` after
    /// `team/app`), so `_catalog` and the folder tree forget it.
    pub(crate) fn prune_repo_parents(&self, name: &RepoName) -> Result<()> {
        let mut path = name.as_str();
        loop {
            if let Some(dir) = layout::repositories_child(path) {
                self.store().remove_empty_folder(&dir).map_err(storage)?;
            }
            match path.rsplit_once('/') {
                Some((parent, _)) => path = parent,
                None => return Ok(()),
            }
        }
    }

    /// Checks that storage answers: lists the repositories folder.
    pub fn health(&self) -> Result<()> {
        self.store().list(&layout::repositories_root(), None, 1).map(|_| ()).map_err(storage)
    }
}
