//! The notification envelope as CNCF Distribution sends it: `POST` with
//! `Content-Type: application/vnd.docker.distribution.events.v1+json` and the body
//! `{"events":[event]}`, one event per request, every field named and ordered as Distribution
//! names and orders it, so a listener written for Distribution needs no change.
//!
//! Berth's own actions (`restore`, `purge`, `gc`) use the same envelope and put what
//! Distribution has no field for under `berth` (bytes freed, the trash entry), which a listener
//! may ignore.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The `Content-Type` of every notification request.
pub const ENVELOPE_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

/// Blobs are announced with this media type, as Distribution does (it never knows a blob's).
pub const BLOB_MEDIA_TYPE: &str = "application/octet-stream";

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// A random UUID; a listener dedupes redeliveries by it.
    pub id: String,
    /// RFC 3339 with nanoseconds, trailing zeros dropped, UTC.
    pub timestamp: String,
    /// `push`, `pull`, `mount`, `delete`; Berth's own `restore`, `purge`, `gc`.
    pub action: String,
    /// What it was about.
    pub target: Target,
    /// The HTTP request that caused it (empty for scheduled runs).
    pub request: RequestRecord,
    /// Who.
    pub actor: Actor,
    /// The registry that sent it.
    pub source: Source,
    /// Berth's details of its own actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub berth: Option<serde_json::Value>,
}

/// `target`: absent fields are left out, as Distribution leaves them out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// With `notifications.events.includereferences`: what a manifest references.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
}

/// A descriptor in `target.references`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reference {
    pub media_type: String,
    pub size: u64,
    pub digest: String,
}

/// `request`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    #[serde(default)]
    pub id: String,
    /// The client: `X-Forwarded-For`'s first address, else `X-Real-Ip`, else the peer.
    #[serde(default)]
    pub addr: String,
    /// The `Host` header as sent.
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub method: String,
    #[serde(default)]
    pub useragent: String,
}

/// `actor`: `{}` without a signed-in user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Actor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `source`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// This machine's name and the port Berth listens on.
    pub addr: String,
    /// A UUID, new at every start.
    #[serde(rename = "instanceID")]
    pub instance_id: String,
}

/// The body of one notification request.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub events: Vec<Event>,
}

/// What happened, before the request and the registry are known: a handler's part.
#[derive(Debug, Clone, PartialEq)]
pub struct Happened {
    pub action: &'static str,
    pub target: Target,
    /// Who, when not the request's signed-in user (a retention policy, trash expiry).
    pub actor: Option<String>,
    pub berth: Option<serde_json::Value>,
}

impl Happened {
    /// An action on `target`.
    pub fn new(action: &'static str, target: Target) -> Happened {
        Happened { action, target, actor: None, berth: None }
    }
}

/// A random (version 4) UUID, as Distribution's ids are.
pub fn uuid() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the system's random source works");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// `t` as Go's RFC3339Nano prints it in UTC: nanoseconds with trailing zeros dropped.
pub fn timestamp(t: SystemTime) -> String {
    let full = humantime::format_rfc3339_nanos(t).to_string();
    let Some((secs, frac)) = full.trim_end_matches('Z').split_once('.') else { return full };
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() { format!("{secs}Z") } else { format!("{secs}.{frac}Z") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_and_ids_look_like_distributions() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_796_120_772, 746_106_900);
        assert_eq!(timestamp(t), "2026-12-01T10:26:12.7461069Z");
        assert_eq!(timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_120_772)), "2026-12-01T10:26:12Z");
        let id = uuid();
        assert_eq!((id.len(), &id[14..15]), (36, "4"), "{id}");
        assert_ne!(uuid(), id);
    }

    #[test]
    fn an_event_serialises_with_distributions_names_and_order() {
        let e = Event {
            id: "i".into(),
            timestamp: "t".into(),
            action: "mount".into(),
            target: Target {
                media_type: Some(BLOB_MEDIA_TYPE.into()),
                size: Some(3),
                digest: Some("sha256:x".into()),
                length: Some(3),
                repository: Some("a/b".into()),
                from_repository: Some("c".into()),
                url: Some("http://h/v2/a/b/blobs/sha256:x".into()),
                ..Default::default()
            },
            request: RequestRecord::default(),
            actor: Actor::default(),
            source: Source { addr: "vm:5000".into(), instance_id: "u".into() },
            berth: None,
        };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"id":"i","timestamp":"t","action":"mount","target":{"mediaType":"application/octet-stream","size":3,"digest":"sha256:x","length":3,"repository":"a/b","fromRepository":"c","url":"http://h/v2/a/b/blobs/sha256:x"},"request":{"id":"","addr":"","host":"","method":"","useragent":""},"actor":{},"source":{"addr":"vm:5000","instanceID":"u"}}"#
        );
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
    }
}
