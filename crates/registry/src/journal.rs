//! Berth's own records: what a delete removed ([`TrashEntry`], with its [`TrashId`] and
//! [`DeleteKind`]) and what happened to it ([`AuditRecord`]), and their on-disk formats: trash
//! entries (`berth/trash/<id>.json`) and audit-log lines (`berth/audit/audit.jsonl`). Together
//! with the admin API's wire types and the config file, these are the only serialization
//! boundaries; everything else passes typed values.
//!
//! Both formats carry `"version": 1`. Readers accept any version they know and refuse newer
//! ones rather than misread them; unknown fields are ignored so a newer minor writer stays
//! readable. This module reads and writes bytes only; where they are stored is `trash`'s job.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use berth_oci::{Digest, RepoName, Tag};
use serde::{Deserialize, Serialize};

/// What a delete removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteKind {
    /// One tag (`DELETE /v2/<name>/manifests/<tag>`).
    Tag,
    /// A manifest and every tag on it (`DELETE /v2/<name>/manifests/<digest>`).
    Manifest,
    /// A layer link (`DELETE /v2/<name>/blobs/<digest>`).
    Blob,
    /// A whole repository.
    Repository,
    /// Several tags of one repository at once (a retention run).
    Tags,
}

/// A trash entry id: `<UTC time>-<8 hex>`, so ids sort by time (see [`TrashId::new`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrashId(String);

impl TrashId {
    /// `<UTC second>-<8 hex>`, the hex being the microsecond within the second (20 bits) and
    /// a per-process sequence (12 bits): ids sort in the order the deletes happened, and two
    /// deletes in one process never share one.
    pub(crate) fn new(time: SystemTime) -> TrashId {
        static SEQUENCE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let stamp = humantime::format_rfc3339_seconds(time).to_string().replace(['-', ':'], "");
        let micros = time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.subsec_micros());
        let seq = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & 0xfff;
        TrashId(format!("{stamp}-{:08x}", micros << 12 | seq))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TrashId {
    type Err = String;

    /// Only what [`TrashId::new`] makes: it becomes a file name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = s.len() <= 64 && !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if ok { Ok(TrashId(s.to_owned())) } else { Err(format!("invalid trash id {s:?}")) }
    }
}

impl fmt::Display for TrashId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One delete, as recorded in the trash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrashEntry {
    /// Its id.
    pub id: TrashId,
    /// When the delete happened.
    pub time: SystemTime,
    /// Who deleted, when known.
    pub who: Option<String>,
    /// What kind of delete.
    pub kind: DeleteKind,
    /// The repository.
    pub repository: RepoName,
    /// Tags removed, with the digest each pointed at.
    pub tags: BTreeMap<Tag, Digest>,
    /// Manifests removed from the repository (revision links).
    pub manifests: Vec<Digest>,
    /// Layer links removed from the repository.
    pub layers: Vec<Digest>,
    /// Bytes the delete frees once the entry expires and GC runs, as computed at delete time.
    pub bytes_freed: u64,
    /// When each removed tag had last been pushed: a restore gives it back, so retention does
    /// not take restored tags for new ones.
    pub pushed: BTreeMap<Tag, SystemTime>,
}

impl TrashEntry {
    /// When the entry expires under `retention`.
    pub fn expires(&self, retention: Duration) -> SystemTime {
        self.time + retention
    }

    /// Every manifest digest the entry holds: removed manifests and the targets of removed tags.
    pub fn held_manifests(&self) -> impl Iterator<Item = &Digest> {
        self.manifests.iter().chain(self.tags.values())
    }
}

/// The format version this build writes.
pub const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct EntryV1 {
    version: u32,
    id: String,
    time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    who: Option<String>,
    kind: String,
    repository: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    manifests: Vec<String>,
    #[serde(default)]
    layers: Vec<String>,
    #[serde(default)]
    bytes_freed: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pushed: BTreeMap<String, String>,
}

fn kind_str(k: DeleteKind) -> &'static str {
    match k {
        DeleteKind::Tag => "tag",
        DeleteKind::Manifest => "manifest",
        DeleteKind::Blob => "blob",
        DeleteKind::Repository => "repository",
        DeleteKind::Tags => "tags",
    }
}

fn kind_of(s: &str) -> Result<DeleteKind, String> {
    Ok(match s {
        "tag" => DeleteKind::Tag,
        "manifest" => DeleteKind::Manifest,
        "blob" => DeleteKind::Blob,
        "repository" => DeleteKind::Repository,
        "tags" => DeleteKind::Tags,
        other => return Err(format!("unknown delete kind {other:?}")),
    })
}

/// `t` in RFC 3339 with nanoseconds, clamped to what the format holds (1970 to 9999): a file
/// time outside it (a clock set wrong) must not stop a delete.
pub(crate) fn nanos_str(t: SystemTime) -> String {
    let max = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(253_402_300_799);
    humantime::format_rfc3339_nanos(t.clamp(SystemTime::UNIX_EPOCH, max)).to_string()
}

fn time_str(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Serialises a trash entry.
pub fn encode_entry(e: &TrashEntry) -> Vec<u8> {
    let v = EntryV1 {
        version: VERSION,
        id: e.id.to_string(),
        time: time_str(e.time),
        who: e.who.clone(),
        kind: kind_str(e.kind).to_owned(),
        repository: e.repository.to_string(),
        tags: e.tags.iter().map(|(t, d)| (t.to_string(), d.to_string())).collect(),
        manifests: e.manifests.iter().map(ToString::to_string).collect(),
        layers: e.layers.iter().map(ToString::to_string).collect(),
        bytes_freed: e.bytes_freed,
        pushed: e.pushed.iter().map(|(t, at)| (t.to_string(), nanos_str(*at))).collect(),
    };
    let mut out = serde_json::to_vec_pretty(&v).expect("plain data serialises");
    out.push(b'\n');
    out
}

/// Reads a trash entry; the error says what is wrong with it.
pub fn decode_entry(bytes: &[u8]) -> Result<TrashEntry, String> {
    let v: EntryV1 = serde_json::from_slice(bytes).map_err(|e| format!("not a trash entry: {e}"))?;
    if v.version != VERSION {
        return Err(format!("trash entry version {} is not supported (this build reads {VERSION})", v.version));
    }
    let kind = kind_of(&v.kind)?;
    let digest = |s: &str| s.parse::<Digest>().map_err(|e| e.to_string());
    Ok(TrashEntry {
        id: v.id.parse()?,
        time: humantime::parse_rfc3339(&v.time).map_err(|e| format!("bad time {:?}: {e}", v.time))?,
        who: v.who,
        kind,
        repository: v.repository.parse::<RepoName>().map_err(|e| e.to_string())?,
        tags: v
            .tags
            .iter()
            .map(|(t, d)| Ok((t.parse::<Tag>().map_err(|e| e.to_string())?, digest(d)?)))
            .collect::<Result<_, String>>()?,
        manifests: v.manifests.iter().map(|d| digest(d)).collect::<Result<_, _>>()?,
        layers: v.layers.iter().map(|d| digest(d)).collect::<Result<_, _>>()?,
        bytes_freed: v.bytes_freed,
        pushed: v
            .pushed
            .iter()
            .map(|(t, at)| {
                let at = humantime::parse_rfc3339(at).map_err(|e| format!("bad push time {at:?}: {e}"))?;
                Ok((t.parse::<Tag>().map_err(|e| e.to_string())?, at))
            })
            .collect::<Result<_, String>>()?,
    })
}

/// What an audit line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    /// Something was deleted (into the trash, or for good when the trash is off).
    Delete,
    /// A trash entry was restored.
    Restore,
    /// A trash entry was purged by hand.
    Purge,
    /// A trash entry expired and was purged by the background task.
    Expire,
}

impl AuditAction {
    /// The name in the audit log: `delete`, `restore`, `purge`, `expire`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Delete => "delete",
            AuditAction::Restore => "restore",
            AuditAction::Purge => "purge",
            AuditAction::Expire => "expire",
        }
    }
}

/// One line of the audit log: something that happened to a trash entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// When it happened.
    pub time: SystemTime,
    /// What happened.
    pub action: AuditAction,
    /// The trash entry (absent for a final delete, with the trash off).
    pub id: Option<TrashId>,
    /// Who deleted, when known.
    pub who: Option<String>,
    /// What kind of delete the entry records.
    pub kind: DeleteKind,
    /// The repository.
    pub repository: RepoName,
    /// Tags the entry removed, with their digests.
    pub tags: BTreeMap<Tag, Digest>,
    /// Manifests the entry removed.
    pub manifests: Vec<Digest>,
    /// Layer links the entry removed.
    pub layers: Vec<Digest>,
    /// Bytes the delete frees.
    pub bytes_freed: u64,
    /// A delete that overrode a refusal, or a restore that overwrote tags.
    pub forced: bool,
    /// For a delete: whether it went to the trash.
    pub trashed: Option<bool>,
}

impl AuditRecord {
    /// The record of `action` on `entry` at `time`.
    pub fn of(action: AuditAction, entry: &TrashEntry, forced: bool, trashed: Option<bool>, time: SystemTime) -> Self {
        AuditRecord {
            time,
            action,
            id: (trashed != Some(false)).then(|| entry.id.clone()),
            who: entry.who.clone(),
            kind: entry.kind,
            repository: entry.repository.clone(),
            tags: entry.tags.clone(),
            manifests: entry.manifests.clone(),
            layers: entry.layers.clone(),
            bytes_freed: entry.bytes_freed,
            forced,
            trashed,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct AuditV1 {
    version: u32,
    time: String,
    action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    who: Option<String>,
    kind: String,
    repository: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    manifests: Vec<String>,
    #[serde(default)]
    layers: Vec<String>,
    #[serde(default)]
    bytes_freed: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    forced: bool,
    /// Whether the delete went to the trash (false: the trash is off, the delete is final).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trashed: Option<bool>,
}

/// One audit-log line, with its newline.
pub fn encode_audit(r: &AuditRecord) -> Vec<u8> {
    let line = AuditV1 {
        version: VERSION,
        time: time_str(r.time),
        action: r.action.as_str().to_owned(),
        id: r.id.as_ref().map(ToString::to_string),
        who: r.who.clone(),
        kind: kind_str(r.kind).to_owned(),
        repository: r.repository.to_string(),
        tags: r.tags.iter().map(|(t, d)| (t.to_string(), d.to_string())).collect(),
        manifests: r.manifests.iter().map(ToString::to_string).collect(),
        layers: r.layers.iter().map(ToString::to_string).collect(),
        bytes_freed: r.bytes_freed,
        forced: r.forced,
        trashed: r.trashed,
    };
    let mut out = serde_json::to_vec(&line).expect("plain data serialises");
    out.push(b'\n');
    out
}

/// Reads one audit-log line (without its newline); the error says what is wrong with it.
pub fn decode_audit(line: &[u8]) -> Result<AuditRecord, String> {
    let v: AuditV1 = serde_json::from_slice(line).map_err(|e| format!("not an audit line: {e}"))?;
    if v.version != VERSION {
        return Err(format!("audit line version {} is not supported (this build reads {VERSION})", v.version));
    }
    let action = match v.action.as_str() {
        "delete" => AuditAction::Delete,
        "restore" => AuditAction::Restore,
        "purge" => AuditAction::Purge,
        "expire" => AuditAction::Expire,
        other => return Err(format!("unknown audit action {other:?}")),
    };
    let digest = |s: &str| s.parse::<Digest>().map_err(|e| e.to_string());
    Ok(AuditRecord {
        time: humantime::parse_rfc3339(&v.time).map_err(|e| format!("bad time {:?}: {e}", v.time))?,
        action,
        id: v.id.map(|i| i.parse()).transpose()?,
        who: v.who,
        kind: kind_of(&v.kind)?,
        repository: v.repository.parse::<RepoName>().map_err(|e| e.to_string())?,
        tags: v
            .tags
            .iter()
            .map(|(t, d)| Ok((t.parse::<Tag>().map_err(|e| e.to_string())?, digest(d)?)))
            .collect::<Result<_, String>>()?,
        manifests: v.manifests.iter().map(|d| digest(d)).collect::<Result<_, _>>()?,
        layers: v.layers.iter().map(|d| digest(d)).collect::<Result<_, _>>()?,
        bytes_freed: v.bytes_freed,
        forced: v.forced,
        trashed: v.trashed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trash_entries_round_trip() {
        let d = Digest::sha256_of(b"x");
        let e = TrashEntry {
            id: "20261123T150102Z-0a1b2c3d".parse().unwrap(),
            time: humantime::parse_rfc3339("2026-11-23T15:01:02Z").unwrap(),
            who: Some("alice".into()),
            kind: DeleteKind::Manifest,
            repository: "team/app".parse().unwrap(),
            tags: [("v1".parse().unwrap(), d.clone()), ("latest".parse().unwrap(), d.clone())].into_iter().collect(),
            manifests: vec![d.clone()],
            layers: vec![],
            bytes_freed: 1234,
            pushed: [(
                "v1".parse().unwrap(),
                SystemTime::UNIX_EPOCH + std::time::Duration::new(1_796_120_772, 746_106_900),
            )]
            .into_iter()
            .collect(),
        };
        let bytes = encode_entry(&e);
        assert_eq!(decode_entry(&bytes).unwrap(), e);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\"version\": 1") && text.contains("\"kind\": \"manifest\""), "{text}");
    }

    #[test]
    fn ids_sort_in_the_order_they_were_made() {
        let t = humantime::parse_rfc3339("2026-11-23T15:01:02.5Z").unwrap();
        let ids: Vec<TrashId> = (0..100).map(|i| TrashId::new(t + Duration::from_micros(i))).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert!(ids[0].as_str().starts_with("20261123T150102Z-"), "{}", ids[0]);
        assert_eq!(ids[0].as_str().parse::<TrashId>().unwrap(), ids[0]);
    }

    #[test]
    fn refuses_unknown_versions_and_bad_values() {
        let future = br#"{"version":2,"id":"20261123T150102Z-0a1b2c3d","time":"2026-11-23T15:01:02Z","kind":"tag","repository":"a"}"#;
        assert!(decode_entry(future).unwrap_err().contains("version 2"));
        let bad = br#"{"version":1,"id":"20261123T150102Z-0a1b2c3d","time":"2026-11-23T15:01:02Z","kind":"tag","repository":"A"}"#;
        assert!(decode_entry(bad).is_err());
        let traversal = br#"{"version":1,"id":"../x","time":"2026-11-23T15:01:02Z","kind":"tag","repository":"a"}"#;
        assert!(decode_entry(traversal).is_err());
    }

    #[test]
    fn audit_lines_are_single_json_lines() {
        let e = TrashEntry {
            id: "20261123T150102Z-0a1b2c3d".parse().unwrap(),
            time: SystemTime::UNIX_EPOCH,
            who: None,
            kind: DeleteKind::Repository,
            repository: "a".parse().unwrap(),
            tags: BTreeMap::new(),
            manifests: vec![],
            layers: vec![],
            bytes_freed: 0,
            pushed: BTreeMap::new(),
        };
        let record = AuditRecord::of(AuditAction::Expire, &e, false, None, SystemTime::UNIX_EPOCH);
        let line = encode_audit(&record);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["action"], "expire");
        assert_eq!(v["kind"], "repository");
        assert_eq!(decode_audit(line.trim_ascii_end()).unwrap(), record);
        let mut final_delete = AuditRecord::of(AuditAction::Delete, &e, true, Some(false), SystemTime::UNIX_EPOCH);
        final_delete.tags.insert("v1".parse().unwrap(), Digest::sha256_of(b"x"));
        let back = decode_audit(encode_audit(&final_delete).trim_ascii_end()).unwrap();
        assert_eq!(back, final_delete);
        assert_eq!(back.id, None, "a final delete has no trash entry");
        assert!(
            decode_audit(
                br#"{"version":2,"time":"2026-11-23T15:01:02Z","action":"delete","kind":"tag","repository":"a"}"#
            )
            .is_err()
        );
    }
}
