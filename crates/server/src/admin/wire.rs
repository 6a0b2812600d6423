//! The admin API's JSON bodies (version 1 of `/api`). The CLI decodes these same types, and
//! builds them itself when it works on a root directly, so both modes print the same thing.
//! This is a serialization boundary: fields are only ever added (`tests` round-trips each
//! type). Listings come a page at a time; the next page is named by the answer's `Link`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use berth_registry::{AuditRecord, DeleteKind, RepoSummary, Restored, TagUsage, TrashEntry};
use serde::{Deserialize, Serialize};

/// `GET /api/repositories`: one page.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RepositoryList {
    /// Repositories that hold a tag or a manifest, in the order asked for.
    pub repositories: Vec<RepositorySummary>,
}

/// One line of the repository list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RepositorySummary {
    /// Its name.
    pub name: String,
    /// How many tags.
    pub tags: usize,
    /// Bytes it reaches (each blob once).
    pub size: u64,
    /// The part other repositories or trash entries also reach.
    #[serde(default)]
    pub shared: u64,
    /// What deleting it frees once GC runs.
    #[serde(default)]
    pub unique: u64,
}

impl RepositorySummary {
    /// The wire form of a repository's summary.
    pub fn new(r: &RepoSummary) -> RepositorySummary {
        RepositorySummary {
            name: r.name.to_string(),
            tags: r.tags,
            size: r.usage.total,
            shared: r.usage.shared,
            unique: r.usage.unique,
        }
    }
}

/// `GET /api/repositories/<name>`: one page of its tags.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RepositoryDetail {
    /// Its name.
    pub name: String,
    /// Its tags, in the order asked for.
    pub tags: Vec<TagInfo>,
}

/// One tag.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TagInfo {
    /// The tag.
    pub tag: String,
    /// The manifest digest it points at.
    pub digest: String,
    /// Bytes the image reaches.
    pub size: u64,
    /// When the tag was last pushed (RFC 3339).
    pub pushed: Option<String>,
    /// When the tag was last pulled (RFC 3339; recorded on manifest GETs by tag, stored every
    /// few seconds), if ever.
    #[serde(default)]
    pub pulled: Option<String>,
    /// The part something else also reaches.
    #[serde(default)]
    pub shared: u64,
    /// What deleting just this tag frees (0 while another tag shares the digest).
    #[serde(default)]
    pub unique: u64,
    /// What deleting the image (the digest and all its tags here) frees.
    #[serde(default)]
    pub image_unique: u64,
}

impl TagInfo {
    /// The wire form of a tag's accounting, pushed at `pushed`, last pulled at `pulled`.
    pub fn new(t: &TagUsage, pushed: Option<SystemTime>, pulled: Option<SystemTime>) -> TagInfo {
        TagInfo {
            tag: t.tag.to_string(),
            digest: t.digest.to_string(),
            size: t.usage.total,
            pushed: pushed.map(time),
            pulled: pulled.map(time),
            shared: t.usage.shared,
            unique: t.usage.unique,
            image_unique: t.image_unique,
        }
    }
}

/// `GET /api/usage`: one page of repositories (without tags), or with `?repository=` that one
/// repository with one page of its tags.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UsageReport {
    /// Per repository.
    pub repositories: Vec<RepoUsageWire>,
}

/// Accounting of one repository, in bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RepoUsageWire {
    /// The repository.
    pub repository: String,
    /// Everything it reaches.
    pub total: u64,
    /// The part other repositories or trash entries also reach.
    pub shared: u64,
    /// What deleting the repository frees once GC runs.
    pub unique: u64,
    /// Per tag: only when one repository was asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<TagUsageWire>,
}

impl RepoUsageWire {
    /// The wire form of a repository's figures, with `tags`.
    pub fn new(r: &RepoSummary, tags: &[TagUsage]) -> RepoUsageWire {
        RepoUsageWire {
            repository: r.name.to_string(),
            total: r.usage.total,
            shared: r.usage.shared,
            unique: r.usage.unique,
            tags: tags.iter().map(TagUsageWire::new).collect(),
        }
    }
}

/// Accounting of one tag, in bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TagUsageWire {
    /// The tag.
    pub tag: String,
    /// Its digest.
    pub digest: String,
    /// Everything it reaches.
    pub total: u64,
    /// The part something else also reaches.
    pub shared: u64,
    /// What deleting just this tag frees (0 while another tag shares the digest).
    pub unique: u64,
    /// What deleting the image (the digest and all its tags here) frees.
    pub image_unique: u64,
}

/// A trash entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// Its id.
    pub id: String,
    /// When the delete happened.
    pub time: String,
    /// When it expires (absent when the trash is off and the delete was final).
    pub expires: Option<String>,
    /// Who deleted, when known.
    pub who: Option<String>,
    /// `tag`, `manifest`, `blob` or `repository`.
    pub kind: String,
    /// The repository.
    pub repository: String,
    /// Tags removed → the digest each pointed at.
    pub tags: BTreeMap<String, String>,
    /// Manifests removed.
    pub manifests: Vec<String>,
    /// Layer links removed.
    pub layers: Vec<String>,
    /// Every digest the entry holds (tag targets, manifests and layers), sorted, once each.
    pub digests: Vec<String>,
    /// Bytes freed once the entry expires and GC runs.
    pub bytes_freed: u64,
}

/// `GET /api/trash`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TrashList {
    /// The retention in force, in seconds (0: the trash is off).
    pub retention_seconds: u64,
    /// Entries, oldest first.
    pub entries: Vec<Entry>,
}

/// The answer to a delete.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeleteResult {
    /// Nothing was changed: this is what would happen.
    pub dry_run: bool,
    /// The delete went to the trash (false: final, the trash is off).
    pub trashed: bool,
    /// What was (or would be) removed.
    pub entry: Entry,
}

/// The answer to a restore.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RestoreResult {
    /// The entry brought back.
    pub restored: Entry,
    /// Tags overwritten by a forced restore → the digest they pointed at before.
    pub overwritten: BTreeMap<String, String>,
}

/// The answer to a purge.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PurgeResult {
    /// Entries removed for good.
    pub purged: Vec<Entry>,
}

fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Entry {
    /// The wire form of a trash entry under `retention` (`None`: the delete was final).
    pub fn new(e: &TrashEntry, retention: Option<Duration>) -> Entry {
        let mut digests: Vec<String> =
            e.tags.values().chain(e.manifests.iter()).chain(e.layers.iter()).map(ToString::to_string).collect();
        digests.sort();
        digests.dedup();
        Entry {
            id: e.id.to_string(),
            time: time(e.time),
            expires: retention.filter(|r| !r.is_zero()).map(|r| time(e.expires(r))),
            who: e.who.clone(),
            kind: kind(e.kind).to_owned(),
            repository: e.repository.to_string(),
            tags: e.tags.iter().map(|(t, d)| (t.to_string(), d.to_string())).collect(),
            manifests: e.manifests.iter().map(ToString::to_string).collect(),
            layers: e.layers.iter().map(ToString::to_string).collect(),
            digests,
            bytes_freed: e.bytes_freed,
        }
    }
}

impl RestoreResult {
    /// The wire form of a restore.
    pub fn new(r: &Restored, retention: Duration) -> RestoreResult {
        RestoreResult {
            restored: Entry::new(&r.entry, Some(retention)),
            overwritten: r.overwritten.iter().map(|(t, d)| (t.to_string(), d.to_string())).collect(),
        }
    }
}

impl TagUsageWire {
    /// The wire form of a tag's accounting.
    pub fn new(t: &TagUsage) -> TagUsageWire {
        TagUsageWire {
            tag: t.tag.to_string(),
            digest: t.digest.to_string(),
            total: t.usage.total,
            shared: t.usage.shared,
            unique: t.usage.unique,
            image_unique: t.image_unique,
        }
    }
}

/// `GET /api/audit`: one page of the audit log, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditList {
    /// The lines.
    pub entries: Vec<AuditEntry>,
}

/// One line of the audit log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditEntry {
    /// The byte offset in the log where its line starts: the `last` of the next page.
    pub offset: u64,
    /// When (RFC 3339).
    pub time: String,
    /// `delete`, `restore`, `purge` or `expire`.
    pub action: String,
    /// The trash entry (absent for a final delete).
    pub id: Option<String>,
    /// Who deleted, when known.
    pub who: Option<String>,
    /// `tag`, `manifest`, `blob` or `repository`.
    pub kind: String,
    /// The repository.
    pub repository: String,
    /// Tags removed → the digest each pointed at.
    pub tags: BTreeMap<String, String>,
    /// Manifests removed.
    pub manifests: Vec<String>,
    /// Layer links removed.
    pub layers: Vec<String>,
    /// Bytes the delete frees.
    pub bytes_freed: u64,
    /// A forced delete, or a restore that overwrote tags.
    pub forced: bool,
    /// For a delete: whether it went to the trash.
    pub trashed: Option<bool>,
}

impl AuditEntry {
    /// The wire form of the audit line starting at `offset`.
    pub fn new(offset: u64, r: &AuditRecord) -> AuditEntry {
        AuditEntry {
            offset,
            time: time(r.time),
            action: r.action.as_str().to_owned(),
            id: r.id.as_ref().map(ToString::to_string),
            who: r.who.clone(),
            kind: kind(r.kind).to_owned(),
            repository: r.repository.to_string(),
            tags: r.tags.iter().map(|(t, d)| (t.to_string(), d.to_string())).collect(),
            manifests: r.manifests.iter().map(ToString::to_string).collect(),
            layers: r.layers.iter().map(ToString::to_string).collect(),
            bytes_freed: r.bytes_freed,
            forced: r.forced,
            trashed: r.trashed,
        }
    }
}

fn kind(k: DeleteKind) -> &'static str {
    match k {
        DeleteKind::Tag => "tag",
        DeleteKind::Manifest => "manifest",
        DeleteKind::Blob => "blob",
        DeleteKind::Repository => "repository",
        DeleteKind::Tags => "tags",
    }
}

/// The answer to `GET /api/gc`: the last GC runs (not dry runs), newest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GcHistory {
    /// The runs.
    pub runs: Vec<berth_registry::GcRun>,
}

/// The answer to `POST /api/retention`: what a retention run removed (or, dry, would remove).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RetentionResult {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Every repository a policy applies to, in name order.
    pub repositories: Vec<RetentionRepo>,
    /// What the run frees in all (once out of the trash and collected).
    pub bytes_freed: u64,
}

/// One repository of a retention run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RetentionRepo {
    /// The repository.
    pub repository: String,
    /// The policy that applied.
    pub policy: String,
    /// Every tag, with what was decided and the rule that decided it.
    pub tags: Vec<RetentionTag>,
    /// Untagged manifests that go (`deleteuntagged`, `deletereferrers`).
    pub manifests: Vec<RetentionManifest>,
    /// What the run frees here.
    pub bytes_freed: u64,
    /// The trash entry holding what went: restore it to undo the run here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trash_id: Option<String>,
    /// Why the run failed here (the others went on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A tag's fate in a retention run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RetentionTag {
    /// The tag.
    pub tag: String,
    /// Whether it stays.
    pub kept: bool,
    /// Why.
    pub reason: String,
}

/// An untagged manifest a retention run removes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RetentionManifest {
    /// Its digest.
    pub digest: String,
    /// Why it goes.
    pub reason: String,
}

impl RetentionResult {
    /// The wire form of a run.
    pub fn new(dry_run: bool, run: &[berth_registry::RetainedRepo]) -> RetentionResult {
        let repositories: Vec<RetentionRepo> = run
            .iter()
            .map(|r| RetentionRepo {
                repository: r.repository.to_string(),
                policy: r.policy.clone(),
                tags: r
                    .tags
                    .iter()
                    .map(|(t, f)| {
                        let (kept, reason) = match f {
                            berth_registry::Fate::Kept(w) => (true, w.clone()),
                            berth_registry::Fate::Dropped(w) => (false, w.clone()),
                        };
                        RetentionTag { tag: t.to_string(), kept, reason }
                    })
                    .collect(),
                manifests: r
                    .manifests
                    .iter()
                    .map(|(d, why)| RetentionManifest { digest: d.to_string(), reason: why.clone() })
                    .collect(),
                bytes_freed: r.bytes_freed,
                trash_id: r.trash_id.as_ref().map(|i| i.to_string()),
                error: r.error.clone(),
            })
            .collect();
        let bytes_freed = repositories.iter().map(|r| r.bytes_freed).sum();
        RetentionResult { dry_run, repositories, bytes_freed }
    }
}

/// The answer to `POST /api/gc`: what a GC run removed (or would remove).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GcResult {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Blobs removed.
    pub blobs: u64,
    /// Their bytes.
    pub bytes_freed: u64,
    /// Untagged manifests removed.
    pub manifests: Vec<ManifestRef>,
    /// Repositories whose folders were removed because they held nothing.
    pub repositories: Vec<String>,
    /// Stale uploads removed.
    pub uploads: u64,
    /// Layer links removed with the repositories left empty.
    pub layer_links: u64,
    /// Blobs still reachable.
    pub blobs_in_use: u64,
    /// Unreachable blobs kept because they are recent or in use by a push.
    pub blobs_kept_recent: u64,
    /// How long the run took.
    pub seconds: f64,
    /// Requests sent to the object store during the run (absent on a filesystem).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_requests: Option<u64>,
}

/// A manifest in a repository.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestRef {
    /// The repository.
    pub repository: String,
    /// The manifest's digest.
    pub digest: String,
}

impl GcResult {
    /// The wire form of a GC report.
    pub fn new(r: &berth_registry::GcReport) -> GcResult {
        GcResult {
            dry_run: r.dry_run,
            blobs: r.blobs,
            bytes_freed: r.bytes_freed,
            manifests: r
                .manifests
                .iter()
                .map(|(n, d)| ManifestRef { repository: n.to_string(), digest: d.to_string() })
                .collect(),
            repositories: r.repositories.iter().map(ToString::to_string).collect(),
            uploads: r.uploads,
            layer_links: r.layer_links,
            blobs_in_use: r.blobs_in_use,
            blobs_kept_recent: r.blobs_kept_recent,
            seconds: r.duration.as_secs_f64(),
            store_requests: r.store_requests,
        }
    }
}

/// What `berth fsck` found.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FsckResult {
    /// Repositories checked.
    pub repositories: u64,
    /// Manifests checked.
    pub manifests: u64,
    /// Blobs whose content was hashed.
    pub blobs_verified: u64,
    /// Findings that break an image or content and were not repaired.
    pub damage: usize,
    /// Every finding.
    pub findings: Vec<FindingWire>,
}

/// One fsck finding.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FindingWire {
    /// A short stable name, e.g. `missing-blob`.
    pub kind: String,
    /// Damage (an image or content is broken) rather than debris.
    pub damage: bool,
    /// The repository, if any.
    pub repository: Option<String>,
    /// What.
    pub message: String,
    /// Fixed by --repair.
    pub repaired: bool,
    /// Bytes it takes that --repair frees.
    #[serde(default)]
    pub bytes: u64,
}

impl FsckResult {
    /// The wire form of an fsck report.
    pub fn new(r: &berth_registry::FsckReport) -> FsckResult {
        FsckResult {
            repositories: r.repositories,
            manifests: r.manifests,
            blobs_verified: r.blobs_verified,
            damage: r.damage(),
            findings: r
                .findings
                .iter()
                .map(|f| FindingWire {
                    kind: f.kind.to_owned(),
                    damage: f.damage,
                    repository: f.repository.as_ref().map(ToString::to_string),
                    message: f.message.clone(),
                    repaired: f.repaired,
                    bytes: f.bytes,
                })
                .collect(),
        }
    }
}

/// Formats a modification time for [`TagInfo::pushed`].
pub fn pushed(t: Option<SystemTime>) -> Option<String> {
    t.map(time)
}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;

    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// Encodes and decodes `v`; it must come back equal, and its JSON must name `field`.
    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(v: T, field: &str) {
        let json = serde_json::to_string(&v).unwrap();
        assert!(json.contains(&format!("\"{field}\"")), "{json}");
        let back: T = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
        assert_eq!(back, v, "{json}");
    }

    fn entry() -> Entry {
        Entry {
            id: "20261123T150102Z-0a1b2c3d".into(),
            time: "2026-11-23T15:01:02Z".into(),
            expires: Some("2026-11-30T15:01:02Z".into()),
            who: Some("alice".into()),
            kind: "manifest".into(),
            repository: "team/app".into(),
            tags: [("v1".to_owned(), D.to_owned())].into_iter().collect(),
            manifests: vec![D.into()],
            layers: vec![],
            digests: vec![D.into()],
            bytes_freed: 1234,
        }
    }

    #[test]
    fn every_wire_type_round_trips() {
        let summary = RepositorySummary { name: "team/app".into(), tags: 3, size: 30, shared: 10, unique: 20 };
        round_trip(summary.clone(), "unique");
        round_trip(RepositoryList { repositories: vec![summary] }, "repositories");
        let tag = TagInfo {
            tag: "v1".into(),
            digest: D.into(),
            size: 30,
            pushed: Some("2026-11-23T15:01:02Z".into()),
            pulled: Some("2026-11-24T08:00:00Z".into()),
            shared: 5,
            unique: 0,
            image_unique: 25,
        };
        round_trip(tag.clone(), "image_unique");
        round_trip(RepositoryDetail { name: "team/app".into(), tags: vec![tag] }, "tags");
        let tu =
            TagUsageWire { tag: "v1".into(), digest: D.into(), total: 30, shared: 30, unique: 0, image_unique: 25 };
        round_trip(tu.clone(), "image_unique");
        let with_tags =
            RepoUsageWire { repository: "team/app".into(), total: 30, shared: 5, unique: 25, tags: vec![tu] };
        round_trip(with_tags.clone(), "tags");
        let without = RepoUsageWire { tags: vec![], ..with_tags.clone() };
        assert!(!serde_json::to_string(&without).unwrap().contains("tags"), "a repository-level line has no tags");
        round_trip(without, "unique");
        round_trip(UsageReport { repositories: vec![with_tags] }, "repositories");
        round_trip(entry(), "bytes_freed");
        round_trip(TrashList { retention_seconds: 604800, entries: vec![entry()] }, "retention_seconds");
        round_trip(DeleteResult { dry_run: true, trashed: true, entry: entry() }, "dry_run");
        round_trip(
            RestoreResult { restored: entry(), overwritten: [("v1".to_owned(), D.to_owned())].into_iter().collect() },
            "overwritten",
        );
        round_trip(PurgeResult { purged: vec![entry()] }, "purged");
        let repo = RetentionRepo {
            repository: "team/app".into(),
            policy: "team".into(),
            tags: vec![RetentionTag { tag: "v1".into(), kept: false, reason: "no keeptags rule keeps it".into() }],
            manifests: vec![RetentionManifest { digest: D.into(), reason: "untagged for more than 1day".into() }],
            bytes_freed: 12,
            trash_id: Some("20261123T150102Z-0a1b2c3d".into()),
            error: None,
        };
        round_trip(repo.clone(), "trash_id");
        round_trip(RetentionResult { dry_run: false, repositories: vec![repo], bytes_freed: 12 }, "repositories");
        let run = berth_registry::GcRun {
            time: "2026-11-30T17:00:00Z".into(),
            who: Some("alice".into()),
            seconds: 1.5,
            blobs: 3,
            bytes_freed: 4096,
            manifests: 1,
            repositories: 0,
            uploads: 2,
        };
        round_trip(GcHistory { runs: vec![run] }, "bytes_freed");
        let m = ManifestRef { repository: "team/app".into(), digest: D.into() };
        round_trip(m.clone(), "digest");
        round_trip(
            GcResult {
                dry_run: false,
                blobs: 2,
                bytes_freed: 300,
                manifests: vec![m],
                repositories: vec!["team/old".into()],
                uploads: 1,
                layer_links: 4,
                blobs_in_use: 10,
                blobs_kept_recent: 1,
                seconds: 0.25,
                store_requests: Some(12),
            },
            "blobs_kept_recent",
        );
        let finding = FindingWire {
            kind: "missing-blob".into(),
            damage: true,
            repository: Some("team/app".into()),
            message: "gone".into(),
            repaired: false,
            bytes: 71,
        };
        round_trip(finding.clone(), "repaired");
        round_trip(
            FsckResult { repositories: 1, manifests: 2, blobs_verified: 0, damage: 1, findings: vec![finding] },
            "findings",
        );
        let line = AuditEntry {
            offset: 7,
            time: "2026-11-23T15:01:02Z".into(),
            action: "delete".into(),
            id: None,
            who: Some("alice".into()),
            kind: "tag".into(),
            repository: "team/app".into(),
            tags: [("v1".to_owned(), D.to_owned())].into_iter().collect(),
            manifests: vec![],
            layers: vec![],
            bytes_freed: 0,
            forced: false,
            trashed: Some(false),
        };
        round_trip(line.clone(), "trashed");
        round_trip(AuditList { entries: vec![line] }, "entries");
    }

    #[test]
    fn older_answers_without_the_added_fields_still_decode() {
        let v1: RepositorySummary = serde_json::from_str(r#"{"name":"a","tags":1,"size":5}"#).unwrap();
        assert_eq!((v1.shared, v1.unique), (0, 0));
        let t: TagInfo =
            serde_json::from_str(&format!(r#"{{"tag":"v1","digest":"{D}","size":5,"pushed":null}}"#)).unwrap();
        assert_eq!(t.image_unique, 0);
    }
}
