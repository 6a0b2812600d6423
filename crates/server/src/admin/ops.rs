//! The admin operations as plain functions over a [`Registry`], returning [`wire`] types, so
//! the HTTP handlers and the CLI's direct mode run exactly the same code and print the same
//! thing. Listings answer one page ([`Paged`]) as their [`Listing`] asks.

use std::collections::HashMap;
use std::time::SystemTime;

use berth_oci::{RepoName, RepoPattern};
use berth_registry::{
    DeleteRequest, GcOptions, GcProgress, Registry, RegistryError, RepoSummary, RestoreTarget, TagUsage, TrashId,
};

use super::listing::{Listing, Paged, Sort};
use super::wire::*;
use crate::error::ApiError;

/// Orders of the repository listings (`ls`, `du`).
pub const REPOSITORY_SORTS: &[Sort] = &[Sort::Name, Sort::Size, Sort::Shared, Sort::Unique, Sort::Tags, Sort::Pushed];
/// Orders of a repository's tags.
pub const TAG_SORTS: &[Sort] = &[Sort::Name, Sort::Size, Sort::Shared, Sort::Unique, Sort::ImageUnique, Sort::Pushed];

fn repo_key(sort: Sort, r: &RepoSummary, pushed: &HashMap<String, u64>) -> u64 {
    match sort {
        Sort::Size => r.usage.total,
        Sort::Shared => r.usage.shared,
        Sort::Unique => r.usage.unique,
        Sort::Tags => r.tags as u64,
        Sort::Pushed => pushed.get(r.name.as_str()).copied().unwrap_or(0),
        Sort::Name | Sort::ImageUnique => 0,
    }
}

fn unix(t: Option<SystemTime>) -> u64 {
    t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs())
}

/// Which repositories a caller may see in a listing (those it may pull).
pub type Visible<'a> = &'a dyn Fn(&str) -> bool;

/// One page of the repositories that match `l` and are `visible`.
fn repository_page(
    reg: &Registry,
    l: &Listing,
    visible: Visible<'_>,
) -> Result<Paged<Vec<RepoSummary>>, RegistryError> {
    let all: Vec<RepoSummary> = reg
        .repository_summaries()?
        .into_iter()
        .filter(|r| l.admits(r.name.as_str()) && visible(r.name.as_str()))
        .collect();
    // Push times are remembered per repository, but the first read of each costs a stat per
    // tag: read them only to sort by them.
    let mut pushed = HashMap::new();
    if l.sort == Sort::Pushed {
        for r in &all {
            pushed.insert(r.name.to_string(), unix(reg.repository_pushed(&r.name)?));
        }
    }
    Ok(l.page(all, |r| r.name.as_str(), |r| repo_key(l.sort, r, &pushed)))
}

/// A tag's accounting and, when read, when it was pushed.
type Pushed = (TagUsage, Option<SystemTime>);

/// One page of a repository's tags, each with when it was pushed; and the repository's figures.
fn tag_page(reg: &Registry, name: &RepoName, l: &Listing) -> Result<(RepoSummary, Paged<Vec<Pushed>>), RegistryError> {
    let unknown = || RegistryError::NameUnknown { name: name.clone() };
    let summary = reg.repository_summary(name)?.ok_or_else(unknown)?;
    let usage = reg.repository_usage(name)?.ok_or_else(unknown)?;
    // Tags are not repository names: only the prefix filter applies to them.
    let tags =
        usage.tags.into_iter().filter(|t| l.prefix.as_ref().is_none_or(|p| t.tag.as_str().starts_with(p.as_str())));
    let times = reg.push_times(name)?;
    let with_times: Vec<Pushed> = tags.map(|t| (times.get(&t.tag).copied(), t)).map(|(p, t)| (t, p)).collect();
    let key = |(t, p): &Pushed| match l.sort {
        Sort::Size => t.usage.total,
        Sort::Shared => t.usage.shared,
        Sort::Unique => t.usage.unique,
        Sort::ImageUnique => t.image_unique,
        Sort::Pushed => unix(*p),
        Sort::Name | Sort::Tags => 0,
    };
    let page = l.page(with_times, |(t, _)| t.tag.as_str(), key);
    Ok((summary, page))
}

/// `GET /api/repositories`: repositories that hold a tag or a manifest.
pub fn repositories(reg: &Registry, l: &Listing, visible: Visible<'_>) -> Result<Paged<RepositoryList>, RegistryError> {
    Ok(repository_page(reg, l, visible)?
        .map(|rs| RepositoryList { repositories: rs.iter().map(RepositorySummary::new).collect() }))
}

/// `GET /api/repositories/<name>`: one repository's tags.
pub fn repository(reg: &Registry, name: &RepoName, l: &Listing) -> Result<Paged<RepositoryDetail>, RegistryError> {
    let (_, page) = tag_page(reg, name, l)?;
    let pulled = reg.pull_times(name)?;
    Ok(page.map(|tags| RepositoryDetail {
        name: name.to_string(),
        tags: tags.iter().map(|(t, p)| TagInfo::new(t, *p, pulled.tags.get(&t.tag).copied())).collect(),
    }))
}

/// `GET /api/usage`: repositories' figures, or one repository's with its tags.
pub fn usage(
    reg: &Registry,
    name: Option<&RepoName>,
    l: &Listing,
    visible: Visible<'_>,
) -> Result<Paged<UsageReport>, RegistryError> {
    match name {
        None => Ok(repository_page(reg, l, visible)?
            .map(|rs| UsageReport { repositories: rs.iter().map(|r| RepoUsageWire::new(r, &[])).collect() })),
        Some(n) => {
            let (summary, page) = tag_page(reg, n, l)?;
            Ok(page.map(|tags| {
                let tags: Vec<TagUsage> = tags.into_iter().map(|(t, _)| t).collect();
                UsageReport { repositories: vec![RepoUsageWire::new(&summary, &tags)] }
            }))
        }
    }
}

/// A delete, or what it would do.
pub fn delete(reg: &Registry, req: &DeleteRequest, dry_run: bool) -> Result<DeleteResult, RegistryError> {
    let retention = reg.config().trash_retention;
    if dry_run {
        let entry = reg.delete_plan(req)?;
        return Ok(DeleteResult { dry_run, trashed: !retention.is_zero(), entry: Entry::new(&entry, Some(retention)) });
    }
    let done = reg.delete(req)?;
    Ok(DeleteResult {
        dry_run,
        trashed: done.trashed,
        entry: Entry::new(&done.entry, done.trashed.then_some(retention)),
    })
}

/// Orders of the trash: by id (oldest first), or newest first.
pub const TRASH_SORTS: &[Sort] = &[Sort::Name, Sort::Pushed];

/// `GET /api/trash`: entries oldest first (by id), or with `sort=pushed` newest first,
/// filtered by their repository.
pub fn trash(reg: &Registry, l: &Listing, visible: Visible<'_>) -> Result<Paged<TrashList>, RegistryError> {
    let retention = reg.config().trash_retention;
    let entries: Vec<_> = reg
        .trash_list()?
        .into_iter()
        .filter(|e| l.admits(e.repository.as_str()) && visible(e.repository.as_str()))
        .collect();
    let by = match l.sort {
        Sort::Pushed => l.clone(),
        _ => Listing { sort: Sort::Name, ..l.clone() },
    };
    Ok(by.page(entries, |e| e.id.as_str(), |e| unix(Some(e.time))).map(|es| TrashList {
        retention_seconds: retention.as_secs(),
        entries: es.iter().map(|e| Entry::new(e, Some(retention))).collect(),
    }))
}

/// One trash entry.
pub fn trash_entry(reg: &Registry, id: &TrashId) -> Result<Entry, RegistryError> {
    Ok(Entry::new(&reg.trash_get(id)?, Some(reg.config().trash_retention)))
}

/// Purges one entry, or all, for `who`.
pub fn purge(reg: &Registry, id: Option<&TrashId>, who: Option<&str>) -> Result<PurgeResult, RegistryError> {
    let retention = reg.config().trash_retention;
    let purged = reg.trash_purge(id, who)?;
    Ok(PurgeResult { purged: purged.iter().map(|e| Entry::new(e, Some(retention))).collect() })
}

/// Runs GC.
pub fn gc(reg: &Registry, opts: &GcOptions, progress: &(dyn Fn(GcProgress) + Sync)) -> Result<GcResult, RegistryError> {
    Ok(GcResult::new(&reg.gc(opts, progress)?))
}

/// Runs the retention `policies` over the repositories `only` matches (all when `None`).
pub fn retention(
    reg: &Registry,
    policies: &berth_registry::Retention,
    only: Option<&RepoPattern>,
    dry_run: bool,
) -> Result<RetentionResult, RegistryError> {
    let run = reg.retention(&policies.policies, only, dry_run, std::time::SystemTime::now())?;
    Ok(RetentionResult::new(dry_run, &run))
}

/// Restores an entry for `who`.
pub fn restore(
    reg: &Registry,
    target: &RestoreTarget,
    force: bool,
    who: Option<&str>,
) -> Result<RestoreResult, RegistryError> {
    let restored = reg.restore(target, force, who)?;
    Ok(RestoreResult::new(&restored, reg.config().trash_retention))
}

/// Which audit lines to list: newest first, starting before byte offset `last`, filtered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// At most this many.
    pub n: usize,
    /// Lines that start before this byte offset of the log.
    pub last: Option<u64>,
    /// Only lines about repositories matching this.
    pub repository: Option<RepoPattern>,
    /// Only lines whose `who` is this.
    pub who: Option<String>,
    /// Only lines of this action (`delete`, `restore`, `purge`, `expire`).
    pub action: Option<String>,
}

impl AuditQuery {
    /// Reads `n`, `last`, `repository` (a name or pattern), `who` and `action` from a query.
    pub fn from_query(q: &HashMap<String, String>) -> Result<AuditQuery, ApiError> {
        let n = super::listing::page_size(q)?;
        let last = q
            .get("last")
            .map(|l| {
                l.parse::<u64>().map_err(|_| ApiError::BadRequest(format!("last must be a line number, not {l:?}")))
            })
            .transpose()?;
        let action = q.get("action").cloned();
        if let Some(a) = &action
            && !["delete", "restore", "purge", "expire"].contains(&a.as_str())
        {
            return Err(ApiError::BadRequest(format!("action must be delete, restore, purge or expire, not {a:?}")));
        }
        Ok(AuditQuery {
            n,
            last,
            repository: q.get("repository").map(|r| r.parse()).transpose()?,
            who: q.get("who").cloned(),
            action,
        })
    }

    /// The query naming this page (for a `Link` header).
    pub fn to_query(&self) -> Vec<(&'static str, String)> {
        let mut q = vec![("n", self.n.to_string())];
        if let Some(l) = self.last {
            q.push(("last", l.to_string()));
        }
        if let Some(r) = &self.repository {
            q.push(("repository", r.to_string()));
        }
        if let Some(w) = &self.who {
            q.push(("who", w.clone()));
        }
        if let Some(a) = &self.action {
            q.push(("action", a.clone()));
        }
        q
    }
}

/// `GET /api/audit`: the audit log, newest first.
pub fn audit(
    reg: &Registry,
    q: &AuditQuery,
    visible: Visible<'_>,
) -> Result<Paged<AuditList, AuditQuery>, RegistryError> {
    let keep = |r: &berth_registry::AuditRecord| {
        visible(r.repository.as_str())
            && q.repository.as_ref().is_none_or(|p| p.matches(&r.repository))
            && q.who.as_ref().is_none_or(|w| r.who.as_deref() == Some(w.as_str()))
            && q.action.as_ref().is_none_or(|a| r.action.as_str() == a)
    };
    let mut lines = reg.audit_log(q.last, q.n + 1, keep)?;
    let more = lines.len() > q.n;
    lines.truncate(q.n);
    let next = match lines.last() {
        Some((offset, _)) if more => Some(AuditQuery { last: Some(*offset), ..q.clone() }),
        _ => None,
    };
    Ok(Paged { body: AuditList { entries: lines.iter().map(|(o, r)| AuditEntry::new(*o, r)).collect() }, next })
}
