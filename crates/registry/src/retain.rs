//! A retention run: for every repository a policy applies to, what `retention` decides for its
//! tags, carried out through `delete` (one trash entry per repository and run, so one restore
//! undoes it; an audit line naming the policy). A client of `delete`, with no removal path of
//! its own; a dry run plans the same deletes and changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use berth_oci::{Digest, RepoName, RepoPattern, Tag};

use crate::Registry;
use crate::delete::{DeleteRequest, DeleteTarget, SeenManifest, SeenTag};
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
    /// Why the run failed in this repository.
    pub error: Option<String>,
}

impl Registry {
    /// Runs `policies` over every repository (those `only` matches, if given) at `now`. A
    /// repository that fails is reported with its error and the run goes on with the others:
    /// what was done elsewhere must still be reported (and announced).
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
            out.push(self.retain_repo(&name, policy, dry_run, now).unwrap_or_else(|e| {
                tracing::error!(repository = %name, policy = %policy.name, error = %e, "retention failed in this repository");
                RetainedRepo {
                    repository: name.clone(),
                    policy: policy.name.clone(),
                    tags: Vec::new(),
                    manifests: Vec::new(),
                    bytes_freed: 0,
                    trash_id: None,
                    error: Some(e.to_string()),
                }
            }));
        }
        Ok(out)
    }

    fn retain_repo(
        &self,
        name: &RepoName,
        policy: &RetentionPolicy,
        dry_run: bool,
        now: SystemTime,
    ) -> Result<RetainedRepo> {
        let pushed = self.push_times(name)?;
        let pulled = self.pull_times(name)?;
        let facts: Vec<TagFacts> = self
            .tag_links(name)?
            .into_iter()
            .map(|(tag, digest)| TagFacts {
                pushed: pushed.get(&tag).copied().unwrap_or(SystemTime::UNIX_EPOCH),
                pulled: pulled.tags.get(&tag).copied(),
                tag,
                digest,
            })
            .collect();
        let tags = judge_tags(policy, &facts, now);
        let seen: BTreeMap<&Tag, &TagFacts> = facts.iter().map(|f| (&f.tag, f)).collect();
        let dropped: Vec<SeenTag> = tags
            .iter()
            .filter(|(_, f)| !f.kept())
            .filter_map(|(t, _)| {
                let f = seen.get(t)?;
                Some(SeenTag { tag: t.clone(), digest: f.digest.clone(), pushed: f.pushed })
            })
            .collect();
        let (manifests, written): (Vec<(Digest, String)>, Vec<SeenManifest>) = self
            .untagged_to_drop(name, policy, &facts, now)?
            .into_iter()
            .map(|(d, why, at)| ((d.clone(), why), SeenManifest { digest: d, written: at }))
            .unzip();
        let mut repo = RetainedRepo {
            repository: name.clone(),
            policy: policy.name.clone(),
            tags,
            manifests,
            bytes_freed: 0,
            trash_id: None,
            error: None,
        };
        if dropped.is_empty() && repo.manifests.is_empty() {
            return Ok(repo);
        }
        let req = DeleteRequest {
            target: DeleteTarget::Tags(name.clone(), dropped, written),
            force: false,
            who: Some(format!("retention:{}", policy.name)),
        };
        if dry_run {
            repo.bytes_freed = self.delete_plan(&req)?.bytes_freed;
            return Ok(repo);
        }
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
        Ok(repo)
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
    ) -> Result<Vec<(Digest, String, SystemTime)>> {
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
        // Referrers go only once as old as untagged manifests may get (a day when the policy
        // keeps those): a referrer may be pushed before its subject.
        let referrer_age = policy.delete_untagged.unwrap_or(Duration::from_secs(24 * 3600));
        let old =
            |d: &Digest, age: Duration| times.get(d).is_some_and(|t| now.duration_since(*t).unwrap_or_default() > age);
        let mut base: BTreeMap<Digest, String> = BTreeMap::new();
        if let Some(age) = policy.delete_untagged {
            for d in untagged.iter().filter(|d| old(d, age) && !subjects.contains_key(*d)) {
                base.insert(d.clone(), format!("untagged for more than {}", humantime::format_duration(age)));
            }
        }
        // What stays needs its children, and a subject that stays keeps its referrers; a
        // referrer of a subject that goes (or is gone) goes. Recomputed from `base` each pass,
        // so a referrer added while its subject was going leaves again when the subject stays.
        let present: BTreeSet<&Digest> = revisions.iter().collect();
        let mut going = base.clone();
        for _ in 0..=revisions.len() + 1 {
            let mut next = base.clone();
            if policy.delete_referrers {
                for d in untagged.iter().filter(|d| old(d, referrer_age)) {
                    if let Some(s) = subjects.get(d)
                        && (!present.contains(s) || going.contains_key(s))
                    {
                        next.insert(d.clone(), format!("a referrer of {s}, which is not in the repository"));
                    }
                }
            }
            let needed: BTreeSet<Digest> = children
                .iter()
                .filter(|(parent, _)| !next.contains_key(*parent))
                .flat_map(|(_, c)| c.iter().cloned())
                .collect();
            next.retain(|d, _| !needed.contains(d));
            if next == going {
                break;
            }
            going = next;
        }
        // Whatever the passes ended on: nothing that stays loses a child or a referrer (this
        // only shrinks, so it ends).
        loop {
            let needed: BTreeSet<Digest> = children
                .iter()
                .filter(|(parent, _)| !going.contains_key(*parent))
                .flat_map(|(_, c)| c.iter().cloned())
                .collect();
            let before = going.len();
            let leaving: BTreeSet<Digest> = going.keys().cloned().collect();
            going.retain(|d, _| {
                let subject_stays = subjects.get(d).is_some_and(|s| present.contains(s) && !leaving.contains(s));
                !needed.contains(d) && !subject_stays
            });
            if going.len() == before {
                break;
            }
        }
        // With when each was written, so the delete can leave one written since.
        Ok(going.into_iter().filter_map(|(d, why)| Some((d.clone(), why, *times.get(&d)?))).collect())
    }
}
