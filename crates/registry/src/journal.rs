//! The on-disk formats of Berth's own records: trash entries (`berth/trash/<id>.json`) and
//! audit-log lines (`berth/audit/audit.jsonl`). Together with the admin API's wire types and the
//! config file, these are the only serialization boundaries; everything else passes typed
//! values.
//!
//! Both formats carry `"version": 1`. Readers accept any version they know and refuse newer
//! ones rather than misread them; unknown fields are ignored so a newer minor writer stays
//! readable.

use std::collections::BTreeMap;
use std::time::SystemTime;

use berth_oci::{Digest, RepoName, Tag};
use serde::{Deserialize, Serialize};

use crate::trash::{DeleteKind, TrashEntry};

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
}

fn kind_str(k: DeleteKind) -> &'static str {
    match k {
        DeleteKind::Tag => "tag",
        DeleteKind::Manifest => "manifest",
        DeleteKind::Blob => "blob",
        DeleteKind::Repository => "repository",
    }
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
    let kind = match v.kind.as_str() {
        "tag" => DeleteKind::Tag,
        "manifest" => DeleteKind::Manifest,
        "blob" => DeleteKind::Blob,
        "repository" => DeleteKind::Repository,
        other => return Err(format!("unknown delete kind {other:?}")),
    };
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

#[derive(Serialize)]
struct AuditV1<'a> {
    version: u32,
    time: String,
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    who: Option<&'a str>,
    kind: &'static str,
    repository: String,
    tags: BTreeMap<String, String>,
    manifests: Vec<String>,
    layers: Vec<String>,
    bytes_freed: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    forced: bool,
    /// Whether the delete went to the trash (false: the trash is off, the delete is final).
    #[serde(skip_serializing_if = "Option::is_none")]
    trashed: Option<bool>,
}

/// One audit-log line (with its newline) about `entry`.
pub fn encode_audit(
    action: AuditAction,
    entry: &TrashEntry,
    forced: bool,
    trashed: Option<bool>,
    now: SystemTime,
) -> Vec<u8> {
    let line = AuditV1 {
        version: VERSION,
        time: time_str(now),
        action: match action {
            AuditAction::Delete => "delete",
            AuditAction::Restore => "restore",
            AuditAction::Purge => "purge",
            AuditAction::Expire => "expire",
        },
        id: (trashed != Some(false)).then(|| entry.id.to_string()),
        who: entry.who.as_deref(),
        kind: kind_str(entry.kind),
        repository: entry.repository.to_string(),
        tags: entry.tags.iter().map(|(t, d)| (t.to_string(), d.to_string())).collect(),
        manifests: entry.manifests.iter().map(ToString::to_string).collect(),
        layers: entry.layers.iter().map(ToString::to_string).collect(),
        bytes_freed: entry.bytes_freed,
        forced,
        trashed,
    };
    let mut out = serde_json::to_vec(&line).expect("plain data serialises");
    out.push(b'\n');
    out
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
        };
        let bytes = encode_entry(&e);
        assert_eq!(decode_entry(&bytes).unwrap(), e);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\"version\": 1") && text.contains("\"kind\": \"manifest\""), "{text}");
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
        };
        let line = encode_audit(AuditAction::Expire, &e, false, None, SystemTime::UNIX_EPOCH);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["action"], "expire");
        assert_eq!(v["kind"], "repository");
    }
}
