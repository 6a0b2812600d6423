//! A retention run: for every repository a policy applies to, what `retention` decides for its
//! tags, carried out through `delete` (one trash entry per repository and run, so one restore
//! undoes it; an audit line naming the policy). A client of `delete`, with no removal path of
//! its own; a dry run plans the same deletes and changes nothing.

use std::time::SystemTime;

use berth_oci::{RepoName, RepoPattern, Tag};

use crate::Registry;
use crate::delete::{DeleteRequest, DeleteTarget};
use crate::error::Result;
use crate::journal::TrashId;
use crate::retention::{Fate, RetentionPolicy, TagFacts, judge_tags, policy_for};

/// What a run decided (and, unless a dry run, did) in one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedRepo {
    /// The repository.
    pub repository: RepoName,
    /// The policy that applied (its name).
    pub policy: String,
    /// Every tag, with what was decided and why.
    pub tags: Vec<(Tag, Fate)>,
    /// What deleting the dropped tags frees (or freed).
    pub bytes_freed: u64,
    /// The trash entry holding what went (none in a dry run or when nothing went).
    pub trash_id: Option<TrashId>,
}

impl Registry {
    /// Runs `policies` over every repository (those `only` matches, if given) at `now`.
    pub fn retention(
        &self,
        policies: &[RetentionPolicy],
        only: Option<&RepoPattern>,
        dry_run: bool,
        now: SystemTime,
    ) -> Result<Vec<RetainedRepo>> {
        let mut out = Vec::new();
        for name in self.repositories()? {
            if only.is_some_and(|p| !p.matches(&name)) {
                continue;
            }
            let Some((_, policy)) = policy_for(policies, &name) else { continue };
            let pushed = self.push_times(&name)?;
            let pulled = self.pull_times(&name)?;
            let facts: Vec<TagFacts> = self
                .tag_links(&name)?
                .into_iter()
                .map(|(tag, digest)| TagFacts {
                    pushed: pushed.get(&tag).copied().unwrap_or(SystemTime::UNIX_EPOCH),
                    pulled: pulled.tags.get(&tag).copied(),
                    tag,
                    digest,
                })
                .collect();
            let tags = judge_tags(policy, &facts, now);
            let dropped: Vec<Tag> = tags.iter().filter(|(_, f)| !f.kept()).map(|(t, _)| t.clone()).collect();
            let mut repo = RetainedRepo {
                repository: name.clone(),
                policy: policy.name.clone(),
                tags,
                bytes_freed: 0,
                trash_id: None,
            };
            if !dropped.is_empty() {
                let req = DeleteRequest {
                    target: DeleteTarget::Tags(name.clone(), dropped),
                    force: false,
                    who: Some(format!("retention:{}", policy.name)),
                };
                if dry_run {
                    repo.bytes_freed = self.delete_plan(&req)?.bytes_freed;
                } else {
                    let done = self.delete(&req)?;
                    repo.bytes_freed = done.entry.bytes_freed;
                    repo.trash_id = done.trashed.then_some(done.entry.id);
                }
            }
            out.push(repo);
        }
        Ok(out)
    }
}
