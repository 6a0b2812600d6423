//! Bad input gets the spec's error code and a clear message: never a 500, a redirect or a
//! panic, and nothing stored.

use berth_oci::Digest;
use serde_json::json;

use crate::clients::raw;
use crate::harness::Berth;
use crate::image::noise;
use crate::protocol::Reg;

struct Case {
    what: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn case(what: &'static str, method: &'static str, path: impl Into<String>, status: u16, code: &'static str) -> Case {
    Case { what, method, path: path.into(), headers: vec![], body: vec![], status, code }
}

impl Case {
    fn header(mut self, k: &'static str, v: impl Into<String>) -> Case {
        self.headers.push((k, v.into()));
        self
    }
    fn body(mut self, b: impl Into<Vec<u8>>) -> Case {
        self.body = b.into();
        self
    }
}

const OCI: &str = "application/vnd.oci.image.manifest.v1+json";

#[test]
fn bad_input_table() {
    let berth = Berth::start();
    let r = Reg::new(&berth.addr, "berth");
    let manifest = r.push_image("bad/repo", "v1", 40);
    let config_digest = r.push_blob("bad/repo", b"{}");
    let good_layer = r.push_blob("bad/repo", &noise(41, 100));
    let missing = Digest::sha256_of(b"never uploaded");
    let upload = |r: &Reg| r.req("POST", "/v2/bad/repo/blobs/uploads/", &[], b"").h("location").unwrap().to_owned();

    let image_with = |config: &Digest, layer: &Digest, media_type: &str| {
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": media_type,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer.to_string(), "size": 100}]}))
        .unwrap()
    };
    let long_name = "a".repeat(256);
    let long_tag = "t".repeat(129);
    let big = vec![b' '; (4 << 20) + 1];

    // Uploads in a known state for the range cases.
    let patched = upload(&r);
    let p = r.req("PATCH", &patched, &[("Content-Range", "0-9")], &noise(42, 10));
    assert_eq!(p.status, 202);

    let cases = vec![
        case("upper-case name", "GET", "/v2/Bad/repo/tags/list", 400, "NAME_INVALID"),
        case("dot-dot component", "GET", "/v2/bad/../repo/tags/list", 400, "NAME_INVALID"),
        case("trailing slash in name", "GET", "/v2/bad/repo//tags/list", 400, "NAME_INVALID"),
        case("leading slash in name", "GET", "/v2//bad/tags/list", 400, "NAME_INVALID"),
        case("256-character name", "GET", format!("/v2/{long_name}/tags/list"), 400, "NAME_INVALID"),
        case("percent-encoded slash", "GET", "/v2/bad%2frepo/tags/list", 400, "NAME_INVALID"),
        case("malformed digest", "GET", "/v2/bad/repo/blobs/sha256:1234", 400, "DIGEST_INVALID"),
        case(
            "upper-case hex digest",
            "GET",
            format!("/v2/bad/repo/blobs/sha256:{}", missing.hex().to_uppercase()),
            400,
            "DIGEST_INVALID",
        ),
        case(
            "unsupported algorithm",
            "GET",
            "/v2/bad/repo/blobs/md5:d41d8cd98f00b204e9800998ecf8427e",
            400,
            "UNSUPPORTED",
        ),
        case(
            "monolithic upload, wrong digest",
            "POST",
            format!("/v2/bad/repo/blobs/uploads/?digest={missing}"),
            400,
            "DIGEST_INVALID",
        )
        .body(b"other content".to_vec()),
        case(
            "monolithic upload, malformed digest",
            "POST",
            "/v2/bad/repo/blobs/uploads/?digest=sha256:zz",
            400,
            "DIGEST_INVALID",
        )
        .body(b"x".to_vec()),
        case("completion without digest", "PUT", upload(&r), 400, "DIGEST_INVALID"),
        case("completion, wrong digest", "PUT", format!("{}?digest={missing}", upload(&r)), 400, "DIGEST_INVALID")
            .body(b"abc".to_vec()),
        case("chunk past the end", "PATCH", patched.clone(), 416, "BLOB_UPLOAD_INVALID")
            .header("Content-Range", "20-29")
            .body(noise(1, 10)),
        case("overlapping chunk", "PATCH", patched.clone(), 416, "BLOB_UPLOAD_INVALID")
            .header("Content-Range", "5-14")
            .body(noise(1, 10)),
        case("range that contradicts the length", "PATCH", patched.clone(), 400, "BLOB_UPLOAD_INVALID")
            .header("Content-Range", "10-19")
            .body(noise(1, 5)),
        case(
            "unknown upload id",
            "GET",
            "/v2/bad/repo/blobs/uploads/3f5e1a2b-0000-4000-8000-000000000000",
            404,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        case("upload id with a dot", "GET", "/v2/bad/repo/blobs/uploads/x.y", 404, "BLOB_UPLOAD_UNKNOWN"),
        case(
            "manifest under a digest not its own",
            "PUT",
            format!("/v2/bad/repo/manifests/{missing}"),
            400,
            "DIGEST_INVALID",
        )
        .header("Content-Type", OCI)
        .body(manifest.clone()),
        case("manifest over 4 MiB", "PUT", "/v2/bad/repo/manifests/big", 413, "SIZE_INVALID")
            .header("Content-Type", OCI)
            .body(big),
        case("manifest that is not JSON", "PUT", "/v2/bad/repo/manifests/x", 400, "MANIFEST_INVALID")
            .header("Content-Type", OCI)
            .body(b"not json".to_vec()),
        case("manifest without config", "PUT", "/v2/bad/repo/manifests/x", 400, "MANIFEST_INVALID")
            .header("Content-Type", OCI)
            .body(
                br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#.to_vec(),
            ),
        case("Content-Type contradicting mediaType", "PUT", "/v2/bad/repo/manifests/x", 400, "MANIFEST_INVALID")
            .header("Content-Type", berth_oci::media::DOCKER_MANIFEST)
            .body(image_with(&config_digest, &good_layer, OCI)),
        case("tag over 128 characters", "PUT", format!("/v2/bad/repo/manifests/{long_tag}"), 400, "TAG_INVALID")
            .header("Content-Type", OCI)
            .body(manifest.clone()),
        case("tag with a leading dot", "PUT", "/v2/bad/repo/manifests/.x", 400, "TAG_INVALID")
            .header("Content-Type", OCI)
            .body(manifest.clone()),
        case("delete of an invalid tag", "DELETE", "/v2/bad/repo/manifests/.x", 400, "TAG_INVALID"),
        case("delete of a malformed digest", "DELETE", "/v2/bad/repo/manifests/sha256:12", 400, "DIGEST_INVALID"),
        // The OCI conformance suite reads `.INVALID_MANIFEST_NAME` and expects 404.
        case(
            "read of a reference that cannot exist",
            "GET",
            "/v2/bad/repo/manifests/.INVALID_MANIFEST_NAME",
            404,
            "MANIFEST_UNKNOWN",
        ),
        case("read of a malformed digest", "GET", "/v2/bad/repo/manifests/sha256:12", 404, "MANIFEST_UNKNOWN"),
        case("manifest naming a missing layer", "PUT", "/v2/bad/repo/manifests/broken", 400, "MANIFEST_BLOB_UNKNOWN")
            .header("Content-Type", OCI)
            .body(image_with(&config_digest, &missing, OCI)),
        case(
            "index naming a missing child",
            "PUT",
            "/v2/bad/repo/manifests/broken-index",
            400,
            "MANIFEST_BLOB_UNKNOWN",
        )
        .header("Content-Type", berth_oci::media::OCI_INDEX)
        .body(
            serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": berth_oci::media::OCI_INDEX,
                    "manifests": [{"mediaType": OCI, "digest": missing.to_string(), "size": 10}]}))
            .unwrap(),
        ),
        case("unknown repository", "GET", "/v2/no/such/repo/tags/list", 404, "NAME_UNKNOWN"),
        case("manifest of unknown repository", "GET", "/v2/no/such/repo/manifests/v1", 404, "NAME_UNKNOWN"),
        case("unknown tag", "GET", "/v2/bad/repo/manifests/nope", 404, "MANIFEST_UNKNOWN"),
        case("unknown digest", "GET", format!("/v2/bad/repo/manifests/{missing}"), 404, "MANIFEST_UNKNOWN"),
        case("unknown blob", "GET", format!("/v2/bad/repo/blobs/{missing}"), 404, "BLOB_UNKNOWN"),
        case("blob of another repository", "GET", format!("/v2/other/repo/blobs/{good_layer}"), 404, "BLOB_UNKNOWN"),
        case("range outside the blob", "GET", format!("/v2/bad/repo/blobs/{good_layer}"), 416, "SIZE_INVALID")
            .header("Range", "bytes=500-600"),
        case("n that is not a number", "GET", "/v2/bad/repo/tags/list?n=abc", 400, "PAGINATION_NUMBER_INVALID"),
        case("negative n", "GET", "/v2/_catalog?n=-1", 400, "PAGINATION_NUMBER_INVALID"),
        case("unknown endpoint", "GET", "/v2/bad/repo/widgets/x", 404, "UNSUPPORTED"),
        case("wrong method", "POST", "/v2/bad/repo/tags/list", 405, "UNSUPPORTED"),
        // The admin API: every malformed path is a 4xx, never a dropped connection.
        case("admin delete without a name", "DELETE", "/api/repositories", 405, "UNSUPPORTED"),
        case("admin delete with an empty name", "DELETE", "/api/repositories/", 405, "UNSUPPORTED"),
        case("admin delete with an empty component", "DELETE", "/api/repositories//x", 400, "NAME_INVALID"),
        case("admin read of an invalid name", "GET", "/api/repositories/Bad", 400, "NAME_INVALID"),
        case("admin read of a traversal", "GET", "/api/repositories/a/../b", 400, "NAME_INVALID"),
        case("admin unknown repository", "GET", "/api/repositories/no/such", 404, "NAME_UNKNOWN"),
        case("admin invalid trash id", "GET", "/api/trash/a.b", 404, "TRASH_ENTRY_UNKNOWN"),
        case("admin restore of an invalid id", "POST", "/api/trash/x.y/restore", 404, "TRASH_ENTRY_UNKNOWN"),
        case("admin unknown trash path", "POST", "/api/trash/20261123T150102Z-0a1b2c3d/purge", 404, "UNSUPPORTED"),
        case("admin unknown endpoint", "GET", "/api/nope", 404, "UNSUPPORTED"),
        case("admin root", "GET", "/api/", 404, "UNSUPPORTED"),
        case("admin wrong method", "PUT", "/api/gc", 405, "UNSUPPORTED"),
        case("admin bad flag", "POST", "/api/gc?dry_run=maybe", 400, "UNSUPPORTED"),
        case("admin bad grace", "POST", "/api/gc?dry_run=true&grace=soon", 400, "UNSUPPORTED"),
        case("admin restore without repository", "POST", "/api/restore", 400, "UNSUPPORTED"),
        case("admin delete of an invalid tag", "DELETE", "/api/repositories/bad/repo?tag=.x", 400, "TAG_INVALID"),
    ];

    let mut failures = Vec::new();
    for c in &cases {
        let headers: Vec<(&str, &str)> = c.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let resp = raw(&berth.addr, c.method, &c.path, &headers, &c.body);
        let code = resp.error_code().unwrap_or_default();
        let message = resp.error_message().unwrap_or_default();
        if resp.status != c.status
            || code != c.code
            || message.is_empty()
            || resp.header("content-type") != Some("application/json")
        {
            failures.push(format!(
                "{}: {} {} -> {} {code} {message:?} (wanted {} {})",
                c.what,
                c.method,
                c.path.chars().take(80).collect::<String>(),
                resp.status,
                c.status,
                c.code
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));

    // Nothing was stored by any of it, and the server is still whole.
    let tags = r.req("GET", "/v2/bad/repo/tags/list", &[], b"").json();
    assert_eq!(tags["tags"], json!(["v1"]));
    assert_eq!(r.req("GET", "/v2/bad/repo/manifests/v1", &[], b"").body, manifest);
    assert!(!berth.log().contains("panicked"), "{}", berth.log());
}
