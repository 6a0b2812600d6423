//! The referrers API (OCI distribution 1.1): which manifests name a given manifest as their
//! `subject`.
//!
//! Distribution's layout has no such index, so Berth keeps one under `berth/referrers/<name>/`:
//! one link file per (subject, referrer) pair, written when a manifest with a subject is pushed.
//! It is derived data: a repository without the `_indexed` marker (one written by another
//! registry) is indexed from its revisions on first use. Entries whose manifest has left the
//! repository are skipped, so a stale entry can hide nothing and show nothing.

use std::collections::BTreeMap;

use berth_oci::{Digest, RepoName};
use berth_storage::{BackendExt, layout};

use crate::Registry;
use crate::error::{Result, storage};

/// One entry of a referrers list: a descriptor of the referring manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    /// Media type of the referring manifest.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Its `artifactType`, else its config's media type.
    pub artifact_type: Option<String>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
}

impl Registry {
    /// Manifests in `name` whose subject is `subject`, optionally only those of `artifact_type`.
    /// An unknown subject or repository has no referrers (an empty list, not an error: clients
    /// read a 404 as "referrers API unsupported").
    pub fn referrers(&self, name: &RepoName, subject: &Digest, artifact_type: Option<&str>) -> Result<Vec<Referrer>> {
        {
            // Building the index writes files; a repository delete must not meet them.
            let _share = self.repo_share(name)?;
            self.ensure_referrers_index(name)?;
        }
        let entries = self.store().list_all(&layout::referrers_of(name, subject)).map_err(storage)?;
        let mut out = Vec::new();
        for e in entries {
            let Ok(d) = e.parse::<Digest>() else { continue };
            if !self.revision_exists(name, &d)? {
                continue;
            }
            let Some(stored) = self.load_manifest(&d)? else { continue };
            let Some(m) = &stored.manifest else { continue };
            if m.subject.as_ref().map(|s| &s.digest) != Some(subject) {
                continue;
            }
            let at = m.effective_artifact_type().map(str::to_owned);
            if artifact_type.is_some_and(|want| at.as_deref() != Some(want)) {
                continue;
            }
            out.push(Referrer {
                media_type: stored.media_type.clone(),
                digest: d,
                size: stored.bytes.len() as u64,
                artifact_type: at,
                annotations: m.annotations.clone(),
            });
        }
        Ok(out)
    }

    /// Whether the index of `name` disagrees with its manifests (an entry for a manifest that
    /// does not name that subject, or a manifest with a subject and no entry).
    pub(crate) fn referrers_drift(&self, name: &RepoName) -> Result<bool> {
        if !self.store().exists(&layout::referrers_marker(name)).map_err(storage)? {
            return Ok(false); // not built yet: it will be, from the layout, on first use
        }
        let mut indexed = std::collections::HashSet::new();
        for s in self.store().list_all(&layout::referrers_subjects(name)).map_err(storage)? {
            let Ok(subject) = s.parse::<Digest>() else { return Ok(true) };
            for r in self.store().list_all(&layout::referrers_of(name, &subject)).map_err(storage)? {
                let Ok(d) = r.parse::<Digest>() else { return Ok(true) };
                indexed.insert((subject.clone(), d));
            }
        }
        let mut actual = std::collections::HashSet::new();
        for d in self.revisions(name)? {
            if let Ok(Some(m)) = self.load_manifest(&d)
                && let Some(s) = m.manifest.as_ref().and_then(|m| m.subject.as_ref())
            {
                actual.insert((s.digest.clone(), d));
            }
        }
        // Entries for manifests that left the repository are tolerated (queries skip them);
        // a missing entry would hide a referrer.
        Ok(!actual.is_subset(&indexed))
    }

    /// Throws the index of `name` away and builds it again from its manifests.
    pub(crate) fn referrers_rebuild(&self, name: &RepoName) -> Result<()> {
        self.store().delete_prefix(&layout::referrers_dir(name)).map_err(storage)?;
        self.ensure_referrers_index(name)
    }

    fn ensure_referrers_index(&self, name: &RepoName) -> Result<()> {
        let marker = layout::referrers_marker(name);
        if self.store().exists(&marker).map_err(storage)? {
            return Ok(());
        }
        for d in self.revisions(name)? {
            if let Some(stored) = self.load_manifest(&d)?
                && let Some(s) = stored.manifest.as_ref().and_then(|m| m.subject.as_ref())
            {
                self.store()
                    .put(&layout::referrer_entry(name, &s.digest, &d), &layout::link_content(&d))
                    .map_err(storage)?;
            }
        }
        self.store().put(&marker, b"1").map_err(storage)
    }
}
