//! A retention run: for every repository a policy applies to, what `retention` decides for its
//! tags, carried out through `delete` (one trash entry per repository and run, so one restore
//! undoes it; an audit line naming the policy). A client of `delete`, with no removal path of
//! its own; a dry run plans the same deletes and changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use berth_oci::{Digest, RepoName, RepoPattern, Tag};

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
    /// The untagged manifests that go (`deleteuntagged`, `deletereferrers`), each with why.
    pub manifests: Vec<(Digest, String)>,
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
            let digest_of: BTreeMap<&Tag, &Digest> = facts.iter().map(|f| (&f.tag, &f.digest)).collect();
            let dropped: Vec<(Tag, Digest)> =
                tags.iter().filter(|(_, f)| !f.kept()).map(|(t, _)| (t.clone(), digest_of[t].clone())).collect();
            let manifests = self.untagged_to_drop(&name, policy, &facts, now)?;
            let mut repo = RetainedRepo {
                repository: name.clone(),
                policy: policy.name.clone(),
                tags,
                manifests,
                bytes_freed: 0,
                trash_id: None,
            };
            if !dropped.is_empty() || !repo.manifests.is_empty() {
                let digests = repo.manifests.iter().map(|(d, _)| d.clone()).collect();
                let req = DeleteRequest {
                    target: DeleteTarget::Tags(name.clone(), dropped, digests),
                    force: false,
                    who: Some(format!("retention:{}", policy.name)),
                };
                if dry_run {
                    repo.bytes_freed = self.delete_plan(&req)?.bytes_freed;
                } else {
                    let done = self.delete(&req)?;
                    repo.bytes_freed = done.entry.bytes_freed;
                    repo.trash_id = done.trashed.then_some(done.entry.id.clone());
                    // A tag re-pushed or removed meanwhile was left alone: say what went.
                    for (t, fate) in repo.tags.iter_mut() {
                        if !fate.kept() && !done.entry.tags.contains_key(t) {
                            *fate = Fate::Kept("changed while the run looked at it; left for the next run".into());
                        }
                    }
                    repo.manifests.retain(|(d, _)| done.entry.manifests.contains(d));
                }
            }
            out.push(repo);
        }
        Ok(out)
    }
}

impl Registry {
    /// The untagged manifests of `name` that `policy` removes, with why: those untagged for
    /// longer than `deleteuntagged` (counted, as GC counts, from when the revision link was last
    /// written: a push or the loss of the last tag), and, with `deletereferrers`, referrers whose
    /// subject is not in the repository. Never what stays needs: a platform image of an index
    /// that stays, or a referrer of a subject that stays (a signature lives as long as what it
    /// signs). Tags dropped in the same run do not make their manifests untagged here: those
    /// start their untagged time now.
    fn untagged_to_drop(
        &self,
        name: &RepoName,
        policy: &RetentionPolicy,
        tags: &[TagFacts],
        now: SystemTime,
    ) -> Result<Vec<(Digest, String)>> {
        if policy.delete_untagged.is_none() && !policy.delete_referrers {
            return Ok(Vec::new());
        }
        let revisions = self.revisions(name)?;
        let tagged: BTreeSet<&Digest> = tags.iter().map(|t| &t.digest).collect();
        let untagged: Vec<Digest> = revisions.iter().filter(|d| !tagged.contains(d)).cloned().collect();
        let times = self.revision_times(name, &untagged)?;
        let mut children: BTreeMap<Digest, Vec<Digest>> = BTreeMap::new();
        let mut subjects: BTreeMap<Digest, Digest> = BTreeMap::new();
        for d in &revisions {
            let Some(m) = self.load_manifest(d)? else { continue };
            let Some(p) = m.manifest.as_ref() else { continue };
            children.insert(d.clone(), p.manifests.iter().map(|c| c.digest.clone()).collect());
            if let Some(s) = &p.subject {
                subjects.insert(d.clone(), s.digest.clone());
            }
        }
        let mut going: BTreeMap<Digest, String> = BTreeMap::new();
        if let Some(age) = policy.delete_untagged {
            for d in &untagged {
                let old = times.get(d).is_some_and(|t| now.duration_since(*t).unwrap_or_default() > age);
                if old && !subjects.contains_key(d) {
                    going.insert(d.clone(), format!("untagged for more than {}", humantime::format_duration(age)));
                }
            }
        }
        // Until nothing changes: a child of a manifest that stays stays; a referrer whose
        // subject is gone (or going) goes.
        // Adding referrers and keeping children pull opposite ways; a bound ends any cycle.
        for _ in 0..=revisions.len() {
            let before: Vec<Digest> = going.keys().cloned().collect();
            if policy.delete_referrers {
                for d in &untagged {
                    if let Some(s) = subjects.get(d)
                        && (!revisions.contains(s) || going.contains_key(s))
                        && !going.contains_key(d)
                    {
                        going.insert(d.clone(), format!("a referrer of {s}, which is not in the repository"));
                    }
                }
            }
            let needed: BTreeSet<Digest> = children
                .iter()
                .filter(|(parent, _)| !going.contains_key(*parent))
                .flat_map(|(_, c)| c.iter().cloned())
                .collect();
            going.retain(|d, _| !needed.contains(d));
            if going.keys().eq(before.iter()) {
                break;
            }
        }
        // Whatever the loop ended on, nothing a staying manifest needs goes (this only shrinks).
        loop {
            let needed: BTreeSet<Digest> = children
                .iter()
                .filter(|(parent, _)| !going.contains_key(*parent))
                .flat_map(|(_, c)| c.iter().cloned())
                .collect();
            let before = going.len();
            going.retain(|d, _| !needed.contains(d));
            if going.len() == before {
                break;
            }
        }
        Ok(going.into_iter().collect())
    }
}
