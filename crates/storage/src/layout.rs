//! CNCF Distribution's on-disk layout, and Berth's own state beside it.
//!
//! This is the only module that spells out `docker/registry/v2/…`. Keys are built from
//! validated [`RepoName`], [`Tag`], [`Digest`] and [`UploadId`] values, so a key is always
//! inside the tree it claims to be in:
//!
//! ```text
//! docker/registry/v2/blobs/<alg>/<hex[0:2]>/<hex>/data
//! docker/registry/v2/repositories/<name>/_layers/<alg>/<hex>/link                 "<alg>:<hex>"
//! docker/registry/v2/repositories/<name>/_manifests/revisions/<alg>/<hex>/link
//! docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link
//! docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/index/<alg>/<hex>/link
//! docker/registry/v2/repositories/<name>/_uploads/<id>/{data,startedat}
//! berth/…                                                      Berth's own state, derived or journal
//! ```

use berth_oci::{Algorithm, Digest, RepoName, Tag, UploadId};

use crate::key::Key;

/// Where the filesystem backend keeps its temporary files.
pub const TMP_DIR: &str = "berth/tmp";

/// The file `berth serve` and root-changing commands lock, so only one works on a root.
pub const LOCK_FILE: &str = "berth/root.lock";

/// The lease object that stands for the root lock on an object store.
pub const LEASE: &str = "berth/root.lease";
/// The lease replicas coordinated through a database renew together, so that a process
/// without the database does not take the root beside them.
pub const REPLICAS_LEASE: &str = "berth/replicas.lease";

const V2: &str = "docker/registry/v2";

fn key(s: String) -> Key {
    Key::new(s).expect("layout keys are built from validated values")
}

/// `…/blobs`: the parent of every algorithm folder.
pub fn blobs_root() -> Key {
    key(format!("{V2}/blobs"))
}

/// `…/blobs/<alg>`.
pub fn blob_algorithm_dir(algorithm: Algorithm) -> Key {
    key(format!("{V2}/blobs/{}", algorithm.as_str()))
}

/// `…/blobs/<alg>/<prefix>`: one of the two-hex-digit folders; `None` for a name that is not
/// two lowercase hex digits.
pub fn blob_prefix_dir(algorithm: Algorithm, prefix: &str) -> Option<Key> {
    let ok = prefix.len() == 2 && prefix.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ok.then(|| key(format!("{V2}/blobs/{}/{prefix}", algorithm.as_str())))
}

/// `…/blobs/<alg>/<hex[0:2]>/<hex>`: the folder of one blob.
pub fn blob_dir(d: &Digest) -> Key {
    key(format!("{V2}/blobs/{}/{}/{}", d.algorithm().as_str(), &d.hex()[..2], d.hex()))
}

/// `…/blobs/<alg>/<hex[0:2]>/<hex>/data`: the content of one blob (layers, configs, manifests).
pub fn blob_data(d: &Digest) -> Key {
    key(format!("{}/data", blob_dir(d)))
}

/// `…/repositories`: the parent of every repository.
pub fn repositories_root() -> Key {
    key(format!("{V2}/repositories"))
}

/// The folder of one repository.
pub fn repo_dir(name: &RepoName) -> Key {
    key(format!("{V2}/repositories/{name}"))
}

/// The folder of a repository-relative path written as `parts`, for listing nested names.
pub fn repositories_child(path: &str) -> Option<Key> {
    if path.is_empty() { Some(repositories_root()) } else { Key::new(format!("{V2}/repositories/{path}")).ok() }
}

/// `<repo>/_layers`.
pub fn layers_root(name: &RepoName) -> Key {
    key(format!("{}/_layers", repo_dir(name)))
}

/// `<repo>/_layers/<alg>`.
pub fn layers_dir(name: &RepoName, algorithm: Algorithm) -> Key {
    key(format!("{}/_layers/{}", repo_dir(name), algorithm.as_str()))
}

/// `<repo>/_layers/<alg>/<hex>/link`: the blob belongs to the repository.
pub fn layer_link(name: &RepoName, d: &Digest) -> Key {
    key(format!("{}/_layers/{}/{}/link", repo_dir(name), d.algorithm().as_str(), d.hex()))
}

/// `<repo>/_layers/<alg>/<hex>`: the folder holding a layer link.
pub fn layer_link_dir(name: &RepoName, d: &Digest) -> Key {
    key(format!("{}/_layers/{}/{}", repo_dir(name), d.algorithm().as_str(), d.hex()))
}

/// `<repo>/_manifests`.
pub fn manifests_dir(name: &RepoName) -> Key {
    key(format!("{}/_manifests", repo_dir(name)))
}

/// `<repo>/_manifests/revisions/<alg>`.
pub fn revisions_dir(name: &RepoName, algorithm: Algorithm) -> Key {
    key(format!("{}/_manifests/revisions/{}", repo_dir(name), algorithm.as_str()))
}

/// `<repo>/_manifests/revisions/<alg>/<hex>`: the folder of one revision link.
pub fn revision_dir(name: &RepoName, d: &Digest) -> Key {
    key(format!("{}/_manifests/revisions/{}/{}", repo_dir(name), d.algorithm().as_str(), d.hex()))
}

/// `<repo>/_manifests/revisions/<alg>/<hex>/link`: the manifest belongs to the repository.
pub fn revision_link(name: &RepoName, d: &Digest) -> Key {
    key(format!("{}/link", revision_dir(name, d)))
}

/// `<repo>/_manifests/tags`.
pub fn tags_dir(name: &RepoName) -> Key {
    key(format!("{}/_manifests/tags", repo_dir(name)))
}

/// `<repo>/_manifests/tags/<tag>`.
pub fn tag_dir(name: &RepoName, tag: &Tag) -> Key {
    key(format!("{}/_manifests/tags/{tag}", repo_dir(name)))
}

/// `<repo>/_manifests/tags/<tag>/current/link`: the digest the tag points at now.
pub fn tag_current_link(name: &RepoName, tag: &Tag) -> Key {
    key(format!("{}/current/link", tag_dir(name, tag)))
}

/// `<repo>/_manifests/tags/<tag>/index/<alg>/<hex>/link`: the tag has pointed at this digest.
pub fn tag_index_link(name: &RepoName, tag: &Tag, d: &Digest) -> Key {
    key(format!("{}/index/{}/{}/link", tag_dir(name, tag), d.algorithm().as_str(), d.hex()))
}

/// `<repo>/_manifests/tags/<tag>/index/<alg>`: a tag's history for one algorithm.
pub fn tag_index_alg_dir(name: &RepoName, tag: &Tag, algorithm: Algorithm) -> Key {
    key(format!("{}/index/{}", tag_dir(name, tag), algorithm.as_str()))
}

/// `<repo>/_manifests/tags/<tag>/index/<alg>/<hex>`: one entry of a tag's history.
pub fn tag_index_dir(name: &RepoName, tag: &Tag, d: &Digest) -> Key {
    key(format!("{}/index/{}/{}", tag_dir(name, tag), d.algorithm().as_str(), d.hex()))
}

/// `<repo>/_uploads`.
pub fn uploads_dir(name: &RepoName) -> Key {
    key(format!("{}/_uploads", repo_dir(name)))
}

/// `<repo>/_uploads/<id>`.
pub fn upload_dir(name: &RepoName, id: &UploadId) -> Key {
    key(format!("{}/_uploads/{id}", repo_dir(name)))
}

/// `<repo>/_uploads/<id>/data`: the bytes received so far.
pub fn upload_data(name: &RepoName, id: &UploadId) -> Key {
    key(format!("{}/data", upload_dir(name, id)))
}

/// `<repo>/_uploads/<id>/startedat`: RFC 3339 start time, as Distribution writes it.
pub fn upload_started(name: &RepoName, id: &UploadId) -> Key {
    key(format!("{}/startedat", upload_dir(name, id)))
}

/// `berth`: the root of Berth's own state.
pub fn berth_dir() -> Key {
    key("berth".to_owned())
}

/// `berth/referrers/<name>`: the referrers index of one repository (derived data).
pub fn referrers_dir(name: &RepoName) -> Key {
    key(format!("berth/referrers/{name}"))
}

/// `berth/referrers/<name>/_indexed`: present once the repository's index is complete.
pub fn referrers_marker(name: &RepoName) -> Key {
    key(format!("berth/referrers/{name}/_indexed"))
}

/// `berth/referrers/<name>/_subjects`: one folder per subject.
pub fn referrers_subjects(name: &RepoName) -> Key {
    key(format!("berth/referrers/{name}/_subjects"))
}

/// `berth/quarantine/<digest>`: where fsck moves blob data that does not match its digest.
pub fn quarantine(d: &Digest) -> Key {
    key(format!("berth/quarantine/{d}"))
}

/// `berth/referrers/<name>/_subjects/<subject>`: referrers of one subject.
pub fn referrers_of(name: &RepoName, subject: &Digest) -> Key {
    key(format!("berth/referrers/{name}/_subjects/{subject}"))
}

/// `berth/referrers/<name>/_subjects/<subject>/<referrer>`: the referrer's descriptor (JSON).
pub fn referrer_entry(name: &RepoName, subject: &Digest, referrer: &Digest) -> Key {
    key(format!("berth/referrers/{name}/_subjects/{subject}/{referrer}"))
}

/// `berth/index/indexed`: present once a metadata index was filled from this root (`berth db
/// import`); a process that writes the root without the database then marks it stale.
pub fn index_marker() -> Key {
    key("berth/index/indexed".to_owned())
}

/// `berth/index/stale`: a process without the database wrote to this root since the metadata
/// index was last reconciled with it; the index is not read until it is again.
pub fn index_stale() -> Key {
    key("berth/index/stale".to_owned())
}

/// `berth/pulls/<name>/_pulls.json`: when a repository's tags and manifests were last pulled.
pub fn pull_times(name: &RepoName) -> Key {
    key(format!("berth/pulls/{name}/_pulls.json"))
}

/// `berth/notifications/<owner>/segments`: the outbox of one server (`owner`: its machine and
/// port, made safe as a key segment by the caller; refused otherwise), one file per batch.
pub fn notification_segments(owner: &str) -> Result<Key, crate::StorageError> {
    Key::new(format!("berth/notifications/{owner}/segments"))
}

/// `berth/notifications/<owner>/segments/<name>`: one batch of events.
pub fn notification_segment(owner: &str, name: &str) -> Result<Key, crate::StorageError> {
    Key::new(format!("berth/notifications/{owner}/segments/{name}"))
}

/// `berth/notifications/<owner>/cursors`: one file per endpoint.
pub fn notification_cursors(owner: &str) -> Result<Key, crate::StorageError> {
    Key::new(format!("berth/notifications/{owner}/cursors"))
}

/// `berth/notifications/<owner>/cursors/<endpoint>.json`: the next event an endpoint takes.
pub fn notification_cursor(owner: &str, endpoint: &str) -> Result<Key, crate::StorageError> {
    Key::new(format!("berth/notifications/{owner}/cursors/{endpoint}.json"))
}

/// `berth/restored/<name>/_pushed.json`: for tags a restore brought back, when each had last
/// been pushed and the time of the link the restore wrote (a later push rewrites the link).
pub fn restored_push_times(name: &RepoName) -> Key {
    key(format!("berth/restored/{name}/_pushed.json"))
}

/// `berth/trash`: one file per trash entry.
pub fn trash_dir() -> Key {
    key("berth/trash".to_owned())
}

/// `berth/trash/<id>.json`. `id` is a validated trash id (letters, digits and dashes).
pub fn trash_entry(id: &str) -> Key {
    key(format!("berth/trash/{id}.json"))
}

/// `berth/audit/audit.jsonl`: the append-only audit log.
pub fn audit_log() -> Key {
    key("berth/audit/audit.jsonl".to_owned())
}

/// `berth/gc/history.jsonl`: one line per GC run (dry runs are not recorded).
pub fn gc_history() -> Key {
    key("berth/gc/history.jsonl".to_owned())
}

/// The content of a link file for `d`.
pub fn link_content(d: &Digest) -> Vec<u8> {
    d.to_string().into_bytes()
}

/// Reads a link file's content; `None` when it does not hold a valid digest.
pub fn parse_link(bytes: &[u8]) -> Option<Digest> {
    std::str::from_utf8(bytes).ok().and_then(|s| s.trim().parse().ok())
}

/// What an index of the layout kept beside the store (see `berth-db`) records about a key, or
/// about everything at or below a prefix. Only what GC, accounting and the catalog read is
/// indexed: tags' current links, revision links, layer links, uploads (by their `startedat`)
/// and blob data. A tag's history, an upload's data and Berth's own state are [`Scope::None`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Nothing indexed.
    None,
    /// One blob (its `data`, or its folder).
    Blob(Digest),
    /// Every blob whose digest starts with this (`sha256:ab`, `sha256:`, or `` for all).
    Blobs(String),
    /// Every repository named this or below it (`team` covers `team/app`; `` covers all).
    Repositories(String),
    /// Every tag and revision link of a repository (its `_manifests` folder).
    Manifests(RepoName),
    /// Every tag of a repository.
    Tags(RepoName),
    /// One tag's current link (its `current/link`, its `current` folder or the tag's folder).
    Tag(RepoName, Tag),
    /// Every revision link of a repository whose digest starts with this (`sha256:` or ``).
    Revisions(RepoName, String),
    /// One revision link.
    Revision(RepoName, Digest),
    /// Every layer link of a repository whose digest starts with this.
    Layers(RepoName, String),
    /// One layer link.
    Layer(RepoName, Digest),
    /// Every upload of a repository.
    Uploads(RepoName),
    /// One upload (its `startedat`, or its folder).
    Upload(RepoName, UploadId),
}

/// What `key` (an object or a folder) covers in an index of the layout (see [`Scope`]).
pub fn scope(key: &Key) -> Scope {
    let Some(rest) = key.as_str().strip_prefix(V2).and_then(|r| r.strip_prefix('/')) else {
        return Scope::None;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match parts[..] {
        ["blobs"] => Scope::Blobs(String::new()),
        ["blobs", alg, ref more @ ..] => blob_scope(alg, more),
        ["repositories"] => Scope::Repositories(String::new()),
        ["repositories", ref more @ ..] => repo_scope(more),
        _ => Scope::None,
    }
}

fn is_algorithm(s: &str) -> bool {
    [Algorithm::Sha256, Algorithm::Sha512].iter().any(|a| a.as_str() == s)
}

fn blob_scope(alg: &str, more: &[&str]) -> Scope {
    if !is_algorithm(alg) {
        return Scope::None;
    }
    match more {
        [] => Scope::Blobs(format!("{alg}:")),
        [ab] if ab.len() == 2 => Scope::Blobs(format!("{alg}:{ab}")),
        [ab, hex] | [ab, hex, "data"] if hex.starts_with(ab) => {
            Digest::from_parts(alg, hex).map_or(Scope::None, Scope::Blob)
        }
        _ => Scope::None,
    }
}

fn repo_scope(parts: &[&str]) -> Scope {
    // Components of a repository name never start with `_`; the first that does ends the name.
    let split = parts.iter().position(|p| p.starts_with('_')).unwrap_or(parts.len());
    let path = parts[..split].join("/");
    if split == parts.len() {
        return Scope::Repositories(path);
    }
    let Ok(name) = path.parse::<RepoName>() else { return Scope::None };
    let prefix = |alg: &str| if is_algorithm(alg) { Some(format!("{alg}:")) } else { None };
    match parts[split..] {
        ["_manifests"] => Scope::Manifests(name),
        ["_manifests", "tags"] => Scope::Tags(name),
        ["_manifests", "tags", tag]
        | ["_manifests", "tags", tag, "current"]
        | ["_manifests", "tags", tag, "current", "link"] => tag.parse().map_or(Scope::None, |t| Scope::Tag(name, t)),
        ["_manifests", "revisions"] => Scope::Revisions(name, String::new()),
        ["_manifests", "revisions", alg] => prefix(alg).map_or(Scope::None, |p| Scope::Revisions(name, p)),
        ["_manifests", "revisions", alg, hex] | ["_manifests", "revisions", alg, hex, "link"] => {
            Digest::from_parts(alg, hex).map_or(Scope::None, |d| Scope::Revision(name, d))
        }
        ["_layers"] => Scope::Layers(name, String::new()),
        ["_layers", alg] => prefix(alg).map_or(Scope::None, |p| Scope::Layers(name, p)),
        ["_layers", alg, hex] | ["_layers", alg, hex, "link"] => {
            Digest::from_parts(alg, hex).map_or(Scope::None, |d| Scope::Layer(name, d))
        }
        ["_uploads"] => Scope::Uploads(name),
        ["_uploads", id] | ["_uploads", id, "startedat"] => {
            id.parse().map_or(Scope::None, |id| Scope::Upload(name, id))
        }
        _ => Scope::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_distribution() {
        let name: RepoName = "library/alpine".parse().unwrap();
        let tag: Tag = "3.19".parse().unwrap();
        let d = Digest::sha256_of(b"x");
        let hex = d.hex();
        let repo = "docker/registry/v2/repositories/library/alpine";
        assert_eq!(blob_data(&d).as_str(), format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]));
        assert_eq!(layer_link(&name, &d).as_str(), format!("{repo}/_layers/sha256/{hex}/link"));
        assert_eq!(revision_link(&name, &d).as_str(), format!("{repo}/_manifests/revisions/sha256/{hex}/link"));
        assert_eq!(tag_current_link(&name, &tag).as_str(), format!("{repo}/_manifests/tags/3.19/current/link"));
        assert_eq!(
            tag_index_link(&name, &tag, &d).as_str(),
            format!("{repo}/_manifests/tags/3.19/index/sha256/{hex}/link")
        );
        let id: UploadId = "3f5e1a2b-0000-4000-8000-000000000000".parse().unwrap();
        assert_eq!(upload_data(&name, &id).as_str(), format!("{repo}/_uploads/{id}/data"));
    }

    #[test]
    fn links_round_trip_and_tolerate_a_newline() {
        let d = Digest::sha256_of(b"x");
        assert_eq!(parse_link(&link_content(&d)), Some(d.clone()));
        assert_eq!(parse_link(format!("{d}\n").as_bytes()), Some(d));
        assert_eq!(parse_link(b"garbage"), None);
    }

    #[test]
    fn scopes_name_what_an_index_records() {
        let name: RepoName = "team/app".parse().unwrap();
        let tag: Tag = "v1".parse().unwrap();
        let d = Digest::sha256_of(b"x");
        let id: UploadId = "3f5e1a2b-0000-4000-8000-000000000000".parse().unwrap();
        assert_eq!(scope(&blob_data(&d)), Scope::Blob(d.clone()));
        assert_eq!(scope(&blob_dir(&d)), Scope::Blob(d.clone()));
        assert_eq!(scope(&blob_prefix_dir(Algorithm::Sha256, "ab").unwrap()), Scope::Blobs("sha256:ab".into()));
        assert_eq!(scope(&blobs_root()), Scope::Blobs(String::new()));
        assert_eq!(scope(&tag_current_link(&name, &tag)), Scope::Tag(name.clone(), tag.clone()));
        assert_eq!(scope(&tag_dir(&name, &tag)), Scope::Tag(name.clone(), tag.clone()));
        assert_eq!(scope(&tag_index_link(&name, &tag, &d)), Scope::None, "a tag's history is not indexed");
        assert_eq!(scope(&tags_dir(&name)), Scope::Tags(name.clone()));
        assert_eq!(scope(&revision_link(&name, &d)), Scope::Revision(name.clone(), d.clone()));
        assert_eq!(scope(&revision_dir(&name, &d)), Scope::Revision(name.clone(), d.clone()));
        assert_eq!(scope(&revisions_dir(&name, Algorithm::Sha256)), Scope::Revisions(name.clone(), "sha256:".into()));
        assert_eq!(scope(&manifests_dir(&name)), Scope::Manifests(name.clone()));
        assert_eq!(scope(&layer_link(&name, &d)), Scope::Layer(name.clone(), d.clone()));
        assert_eq!(scope(&layer_link_dir(&name, &d)), Scope::Layer(name.clone(), d.clone()));
        assert_eq!(scope(&layers_root(&name)), Scope::Layers(name.clone(), String::new()));
        assert_eq!(scope(&upload_started(&name, &id)), Scope::Upload(name.clone(), id.clone()));
        assert_eq!(scope(&upload_dir(&name, &id)), Scope::Upload(name.clone(), id.clone()));
        assert_eq!(scope(&upload_data(&name, &id)), Scope::None, "an upload's data is not indexed");
        assert_eq!(scope(&uploads_dir(&name)), Scope::Uploads(name.clone()));
        assert_eq!(scope(&repo_dir(&name)), Scope::Repositories("team/app".into()));
        assert_eq!(scope(&repositories_child("team").unwrap()), Scope::Repositories("team".into()));
        assert_eq!(scope(&repositories_root()), Scope::Repositories(String::new()));
        assert_eq!(scope(&trash_entry("abc")), Scope::None);
        assert_eq!(scope(&Key::new("docker/registry/v2/blobs/sha256/zz/nothex/data").unwrap()), Scope::None);
    }
}
