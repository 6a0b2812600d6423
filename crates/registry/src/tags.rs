//! Tags: `_manifests/tags/<tag>/current/link` names the manifest a tag points at now, and
//! `index/<alg>/<hex>/link` records every digest it has pointed at (Distribution's format).

use berth_oci::{Digest, RepoName, Tag};
use berth_storage::layout;

use crate::Registry;
use crate::catalog::Page;
use crate::error::{RegistryError, Result, storage};

impl Registry {
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
        let names = self.store().list(&layout::tags_dir(name), None, usize::MAX).map_err(storage)?;
        let mut tags = Vec::with_capacity(names.len());
        for n in names {
            // A folder left without its current link (an interrupted delete) is not a tag.
            if let Ok(t) = n.parse::<Tag>()
                && self.tag_get(name, &t)?.is_some()
            {
                tags.push(t);
            }
        }
        Ok(tags)
    }

    /// The digest `tag` points at, if the tag exists.
    pub(crate) fn tag_get(&self, name: &RepoName, tag: &Tag) -> Result<Option<Digest>> {
        match self.store().get(&layout::tag_current_link(name, tag)) {
            Ok(b) => Ok(layout::parse_link(&b)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(storage(e)),
        }
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
        if let Some(p) = previous
            && &p != digest
            && self.revision_exists(name, &p)?
        {
            self.store().put(&layout::revision_link(name, &p), &layout::link_content(&p)).map_err(storage)?;
        }
        Ok(())
    }
}
