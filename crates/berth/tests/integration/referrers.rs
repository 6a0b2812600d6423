//! OCI 1.1 referrers: an artifact with a `subject`, pushed by a real client (oras), listed by
//! `GET /v2/<name>/referrers/<digest>`.

use berth_oci::Digest;
use serde_json::json;

use crate::clients::oras_script;
use crate::harness::Berth;
use crate::protocol::Reg;

#[test]
fn oras_artifact_with_subject_is_listed_by_referrers_with_filter() {
    let berth = Berth::start();
    let r = Reg::new(&berth.addr, "berth");
    let image = r.push_image("ref/app", "v1", 50);
    let subject = Digest::sha256_of(&image);
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("sbom.json"), br#"{"spdxVersion":"SPDX-2.3"}"#).unwrap();
    let out = oras_script(&format!(
        r#"
import os, oras.client, oras.oci
os.chdir({dir:?})
c = oras.client.OrasClient(hostname="{addr}", insecure=True)
subject = oras.oci.Subject(mediaType="application/vnd.oci.image.manifest.v1+json", digest="{subject}", size={size})
resp = c.push(target="{addr}/ref/app:sbom", files=["sbom.json:application/spdx+json"],
              manifest_annotations={{"org.example.kind": "sbom"}}, subject=subject, do_chunked=True, chunk_size=8)
print(resp.status_code, resp.headers.get("OCI-Subject", ""), resp.headers.get("Docker-Content-Digest", ""))
"#,
        dir = work.path().display().to_string(),
        addr = berth.addr,
        size = image.len(),
    ));
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fields.first(), Some(&"201"), "oras push: {out}");
    assert_eq!(fields.get(1), Some(&subject.to_string().as_str()), "OCI-Subject header on the PUT answer");
    let artifact = fields[2].to_owned();

    let list = r.req("GET", &format!("/v2/ref/app/referrers/{subject}"), &[], b"");
    assert_eq!(list.status, 200);
    assert_eq!(list.h("content-type"), Some(berth_oci::media::OCI_INDEX));
    let index = list.json();
    assert_eq!(index["mediaType"], berth_oci::media::OCI_INDEX);
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{index}");
    assert_eq!(entries[0]["digest"], artifact);
    assert_eq!(entries[0]["annotations"]["org.example.kind"], "sbom");
    // oras-py sets no artifactType, so the config media type stands in for it (spec 1.1).
    let artifact_type = entries[0]["artifactType"].as_str().unwrap().to_owned();
    assert!(!artifact_type.is_empty());

    // A query string carries '+' as %2B ('+' alone means a space).
    let encoded = artifact_type.replace('+', "%2B");
    let filtered = r.req("GET", &format!("/v2/ref/app/referrers/{subject}?artifactType={encoded}"), &[], b"");
    assert_eq!(filtered.h("oci-filters-applied"), Some("artifactType"));
    assert_eq!(filtered.json()["manifests"].as_array().unwrap().len(), 1);
    let none = r.req("GET", &format!("/v2/ref/app/referrers/{subject}?artifactType=application/x-other"), &[], b"");
    assert_eq!(none.json()["manifests"], json!([]));

    let unknown = r.req("GET", &format!("/v2/ref/app/referrers/{}", Digest::sha256_of(b"nothing")), &[], b"");
    assert_eq!(unknown.status, 200, "an unknown subject has an empty list, not a 404");
    assert_eq!(unknown.json()["manifests"], json!([]));
}

#[test]
fn manifest_with_a_subject_not_pushed_yet_is_accepted_and_listed_with_its_artifact_type() {
    let berth = Berth::start();
    let r = Reg::new(&berth.addr, "berth");
    let empty = r.push_blob("ref/late", b"{}");
    let sig = r.push_blob("ref/late", b"signature bytes");
    let future = Digest::sha256_of(b"the image will be pushed later");
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": sig.to_string(), "size": 15}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": future.to_string(), "size": 123},
    }))
    .unwrap();
    let digest = Digest::sha256_of(&manifest);
    let put = r.put_manifest("ref/late", &digest.to_string(), &manifest, "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(put.h("oci-subject"), Some(future.to_string().as_str()));
    let list = r.req("GET", &format!("/v2/ref/late/referrers/{future}"), &[], b"").json();
    assert_eq!(list["manifests"][0]["digest"], digest.to_string());
    assert_eq!(list["manifests"][0]["artifactType"], "application/vnd.example.signature");
    assert_eq!(list["manifests"][0]["size"], manifest.len());
}
