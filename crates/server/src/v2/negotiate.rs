//! Content negotiation for manifest GETs.
//!
//! Berth never converts a manifest, so the digest of what it serves is always the digest of what
//! was pushed (CNCF Distribution's old schema 1 conversion made the digest depend on `Accept`).
//! The one accommodation, which Distribution also makes: a client that accepts image manifests
//! but not the index it asked for gets the index's linux/amd64 image, as legacy clients expect.

use axum::http::{HeaderMap, header};
use berth_oci::{Digest, media};
use berth_registry::StoredManifest;

/// What to answer a manifest GET with.
#[derive(Debug, PartialEq, Eq)]
pub enum Choice {
    /// The stored manifest.
    Serve,
    /// This child of the stored index instead.
    Child(Digest),
}

/// The media types listed in every `Accept` header, without parameters.
pub fn accepted(h: &HeaderMap) -> Vec<String> {
    h.get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(media::essence)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Decides what to serve for `stored` given the client's accepted types.
pub fn choose(stored: &StoredManifest, accept: &[String]) -> Choice {
    let Some(m) = &stored.manifest else { return Choice::Serve };
    let lists = |t: &str| accept.iter().any(|a| a == t);
    let knows_manifests = accept.iter().any(|a| media::MANIFEST_TYPES.contains(&a.as_str()));
    if !m.kind.is_index() || !knows_manifests || lists("*/*") || lists(&stored.media_type) {
        return Choice::Serve;
    }
    let wants_image = lists(media::OCI_MANIFEST) || lists(media::DOCKER_MANIFEST);
    if !wants_image {
        return Choice::Serve;
    }
    let amd64 = m.manifests.iter().find(|c| {
        c.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == "amd64") && lists(&c.media_type)
    });
    match amd64 {
        Some(c) => Choice::Child(c.digest.clone()),
        None => Choice::Serve,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_oci::manifest::Manifest;
    use bytes::Bytes;

    fn stored(json: &str) -> StoredManifest {
        let m = Manifest::parse_stored(json.as_bytes()).unwrap();
        StoredManifest {
            digest: Digest::sha256_of(json.as_bytes()),
            media_type: m.media_type.clone(),
            bytes: Bytes::from(json.to_owned()),
            manifest: Some(m),
        }
    }

    const ARM: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const AMD: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn index() -> StoredManifest {
        stored(&format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[
              {{"mediaType":"{m}","digest":"{ARM}","size":1,"platform":{{"architecture":"arm64","os":"linux"}}}},
              {{"mediaType":"{m}","digest":"{AMD}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            media::OCI_INDEX,
            m = media::OCI_MANIFEST
        ))
    }

    #[test]
    fn choices() {
        let idx = index();
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(choose(&idx, &[]), Choice::Serve);
        assert_eq!(choose(&idx, &a(&["*/*"])), Choice::Serve);
        assert_eq!(choose(&idx, &a(&[media::OCI_INDEX, media::OCI_MANIFEST])), Choice::Serve);
        assert_eq!(choose(&idx, &a(&["application/json"])), Choice::Serve);
        assert_eq!(choose(&idx, &a(&[media::OCI_MANIFEST])), Choice::Child(AMD.parse().unwrap()));
        assert_eq!(choose(&idx, &a(&[media::DOCKER_MANIFEST])), Choice::Serve, "no docker child to give");
        let image = stored(&format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"a/b","digest":"{ARM}","size":1}},"layers":[]}}"#,
            media::OCI_MANIFEST
        ));
        assert_eq!(choose(&image, &a(&[media::DOCKER_MANIFEST])), Choice::Serve, "never converted");
    }
}
