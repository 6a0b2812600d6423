//! Fuzz targets for everything a client sends that this crate parses: repository names, tags,
//! references, digests, name patterns, and the four manifest formats (see
//! `berth_fuzz`). Each checks that nothing panics and that what parses round-trips.

use std::collections::BTreeSet;
use std::str::FromStr;

use berth_fuzz::fuzz;
use berth_oci::manifest::Manifest;
use berth_oci::{Digest, Reference, RepoName, RepoPattern, Tag, media};

/// Parses `text`; when it parses, printing gives `text` back (every accepted spelling is the
/// canonical one) and parsing that gives the same value.
fn round_trips<T>(text: &str)
where
    T: FromStr + ToString + PartialEq + std::fmt::Debug,
{
    if let Ok(v) = text.parse::<T>() {
        let printed = v.to_string();
        assert_eq!(printed, text, "printed differently from what was parsed");
        let again = printed.parse::<T>().ok();
        assert_eq!(again.as_ref(), Some(&v), "what was printed does not parse to the same value");
    }
}

fn text(input: &[u8]) -> Option<&str> {
    std::str::from_utf8(input).ok()
}

#[test]
fn repository_names() {
    fuzz("name", |input| {
        if let Some(s) = text(input) {
            round_trips::<RepoName>(s);
            if let Ok(n) = s.parse::<RepoName>() {
                assert!(n.as_str().len() <= 255 && !n.as_str().contains("..") && !n.as_str().starts_with('/'));
                assert!(n.components().all(|c| !c.is_empty() && !c.starts_with('_')), "{n}");
            }
        }
    });
}

#[test]
fn tags_and_references() {
    fuzz("reference", |input| {
        if let Some(s) = text(input) {
            round_trips::<Tag>(s);
            round_trips::<Reference>(s);
            if let Ok(Reference::Digest(d)) = s.parse::<Reference>() {
                assert_eq!(d.to_string(), s);
            }
        }
    });
}

#[test]
fn digests() {
    fuzz("digest", |input| {
        if let Some(s) = text(input) {
            round_trips::<Digest>(s);
            if let Ok(d) = Digest::parse(s) {
                assert_eq!(Digest::from_parts(d.algorithm().as_str(), d.hex()), Some(d.clone()));
            }
        }
    });
}

#[test]
fn name_patterns() {
    fuzz("pattern", |input| {
        let Some(s) = text(input) else { return };
        round_trips::<RepoPattern>(s);
        if let Ok(p) = s.parse::<RepoPattern>() {
            // A pattern without wildcards matches exactly the name it spells.
            if !s.contains('*')
                && let Ok(n) = s.parse::<RepoName>()
            {
                assert!(p.matches(&n), "{s} does not match itself");
            }
            if s == "**" {
                assert!(p.matches(&"any/name".parse().unwrap()));
            }
        }
    });
}

/// The digests the JSON names where a registry must hold them: an image manifest's config and
/// layers (without foreign layers that carry URLs), or an index's children (the fields of the
/// other kind mean nothing in it).
fn named_in_json(v: &serde_json::Value, index: bool) -> (BTreeSet<String>, BTreeSet<String>) {
    let digest = |d: &serde_json::Value| d["digest"].as_str().map(str::to_owned);
    if index {
        return (BTreeSet::new(), v["manifests"].as_array().into_iter().flatten().filter_map(digest).collect());
    }
    let mut blobs: BTreeSet<String> = v.get("config").and_then(digest).into_iter().collect();
    for l in v["layers"].as_array().into_iter().flatten() {
        let foreign = l["mediaType"].as_str().is_some_and(media::is_foreign_layer)
            && l["urls"].as_array().is_some_and(|u| !u.is_empty());
        if !foreign {
            blobs.extend(digest(l));
        }
    }
    (blobs, BTreeSet::new())
}

#[test]
fn manifests() {
    let types = [
        None,
        Some(media::OCI_MANIFEST),
        Some(media::OCI_INDEX),
        Some(media::DOCKER_MANIFEST),
        Some(media::DOCKER_LIST),
        Some("application/json"),
    ];
    fuzz("manifest", |input| {
        let stored = Manifest::parse_stored(input);
        for ct in types {
            let Ok(m) = Manifest::parse_for_put(input, ct) else { continue };
            // What a registry accepts it can read back.
            assert!(stored.is_ok(), "accepted for a push ({ct:?}) but unreadable once stored");
            let v: serde_json::Value = serde_json::from_slice(input).expect("an accepted manifest is JSON");
            let (blobs, children) = named_in_json(&v, m.kind.is_index());
            let refs: BTreeSet<String> = m.references().map(|d| d.digest.to_string()).collect();
            assert_eq!(refs, blobs, "references are not exactly the config and layers in the JSON");
            let kids: BTreeSet<String> = m.manifests.iter().map(|d| d.digest.to_string()).collect();
            assert_eq!(kids, children, "children are not exactly the manifests in the JSON");
            assert_eq!(
                m.subject.as_ref().map(|s| s.digest.to_string()),
                v["subject"]["digest"].as_str().map(str::to_owned)
            );
        }
    });
}
