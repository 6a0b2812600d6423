//! Splits `/v2/<name>/<kind>/<reference>` into an [`Endpoint`], from the right, so a name may
//! have any depth and may itself contain components like `blobs` or `manifests`.

use berth_oci::{Digest, ParseError, Reference, RepoName, UploadId};
use berth_registry::RegistryError;

/// A parsed /v2 endpoint (spec end-1 … end-13, plus the catalog handled elsewhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v2/<name>/blobs/<digest>`
    Blob(RepoName, Digest),
    /// `/v2/<name>/blobs/uploads/`
    UploadStart(RepoName),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(RepoName, UploadId),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(RepoName, Reference),
    /// `/v2/<name>/manifests/<reference>` with a reference that is neither a tag nor a digest:
    /// a read of it answers 404 (it cannot exist, as the OCI conformance suite expects and
    /// Distribution answers), a write 400 with the parse error.
    ManifestInvalid(RepoName, ParseError),
    /// `/v2/<name>/tags/list`
    Tags(RepoName),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(RepoName, Digest),
}

/// Parses the part of the path after `/v2/`. `Ok(None)` means no such endpoint; `Err` means
/// the endpoint is recognised but its name, digest or reference is invalid.
pub fn parse(path: &str) -> Result<Option<Endpoint>, RegistryError> {
    let name = |s: &str| s.parse::<RepoName>().map_err(RegistryError::from);
    if let Some(n) = path.strip_suffix("/tags/list") {
        return Ok(Some(Endpoint::Tags(name(n)?)));
    }
    if let Some(n) = path.strip_suffix("/blobs/uploads/").or_else(|| path.strip_suffix("/blobs/uploads")) {
        return Ok(Some(Endpoint::UploadStart(name(n)?)));
    }
    let Some((rest, last)) = path.rsplit_once('/') else { return Ok(None) };
    let Some((before, kind)) = rest.rsplit_once('/') else { return Ok(None) };
    if kind == "uploads"
        && let Some(n) = before.strip_suffix("/blobs")
    {
        // A digest never contains '/', so "<name>/blobs/uploads/<x>" is always an upload.
        return Ok(Some(Endpoint::Upload(name(n)?, last.parse()?)));
    }
    Ok(Some(match kind {
        "blobs" => Endpoint::Blob(name(before)?, last.parse()?),
        "manifests" => match last.parse() {
            Ok(r) => Endpoint::Manifest(name(before)?, r),
            Err(e) => Endpoint::ManifestInvalid(name(before)?, e),
        },
        "referrers" => Endpoint::Referrers(name(before)?, last.parse()?),
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn ok(path: &str) -> Endpoint {
        parse(path).unwrap_or_else(|e| panic!("{path}: {e}")).unwrap_or_else(|| panic!("{path}: no endpoint"))
    }

    #[test]
    fn splits_from_the_right_at_any_depth() {
        let cases: Vec<(String, &str, &str)> = vec![
            (format!("a/blobs/{D}"), "a", "blob"),
            (format!("a/b/c/d/blobs/{D}"), "a/b/c/d", "blob"),
            (format!("blobs/blobs/{D}"), "blobs", "blob"),
            (format!("x/manifests/blobs/{D}"), "x/manifests", "blob"),
            ("a/blobs/uploads/".into(), "a", "start"),
            ("a/blobs/uploads".into(), "a", "start"),
            ("blobs/uploads/blobs/uploads/".into(), "blobs/uploads", "start"),
            ("a/b/blobs/uploads/0b1c-22".into(), "a/b", "upload"),
            ("a/manifests/latest".into(), "a", "manifest"),
            ("manifests/manifests/manifests/latest".into(), "manifests/manifests", "manifest"),
            (format!("a/manifests/{D}"), "a", "manifest"),
            ("tags/tags/list".into(), "tags", "tags"),
            (format!("r/referrers/{D}"), "r", "referrers"),
        ];
        for (path, name, kind) in cases {
            let (n, k) = match ok(&path) {
                Endpoint::Blob(n, _) => (n, "blob"),
                Endpoint::UploadStart(n) => (n, "start"),
                Endpoint::Upload(n, _) => (n, "upload"),
                Endpoint::Manifest(n, _) => (n, "manifest"),
                Endpoint::ManifestInvalid(n, _) => (n, "invalid manifest"),
                Endpoint::Tags(n) => (n, "tags"),
                Endpoint::Referrers(n, _) => (n, "referrers"),
            };
            assert_eq!((n.as_str(), k), (name, kind), "{path}");
        }
    }

    #[test]
    fn unknown_shapes_are_not_endpoints() {
        for p in ["", "a", "a/b", "a/widgets/x", "a/tags/lst"] {
            assert!(matches!(parse(p), Ok(None)), "{p}");
        }
    }

    #[test]
    fn manifest_references_that_cannot_exist_are_kept_for_the_handler() {
        for p in
            ["a/manifests/sha256:123".to_owned(), format!("a/manifests/{}", "t".repeat(129)), "a/manifests/.x".into()]
        {
            assert!(matches!(ok(&p), Endpoint::ManifestInvalid(..)), "{p}");
        }
        assert!(parse("A/manifests/.x").is_err(), "the name is still checked");
    }

    #[test]
    fn invalid_parts_are_errors() {
        for p in [
            "A/manifests/latest".to_owned(),
            "a/../b/manifests/latest".into(),
            "a/blobs/uploads/bad.id".into(),
            "a%2fb/tags/list".into(),
        ] {
            assert!(parse(&p).is_err(), "{p}");
        }
    }

    /// Fuzz target `route`: any path after `/v2/` is an endpoint whose names are valid, a
    /// refusal, or no endpoint; never a panic. An endpoint's repository is spelled in the path.
    #[test]
    fn fuzz_route() {
        berth_fuzz::fuzz("route", |input| {
            let Ok(path) = std::str::from_utf8(input) else { return };
            if let Ok(Some(Endpoint::Tags(name))) = parse(path) {
                assert_eq!(format!("{name}/tags/list"), path);
            }
            if let Ok(Some(ep)) = parse(path) {
                let shown = format!("{ep:?}");
                assert!(!shown.is_empty());
            }
        });
    }
}
