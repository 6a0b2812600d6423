//! skopeo round trips against Berth: OCI image and index, Docker schema 2, inspect and list-tags.

use berth_oci::Digest;

use crate::clients::{copy, raw_manifest, served_digest, skopeo};
use crate::harness::{Berth, run};
use crate::image::{Layout, standard};

#[test]
fn skopeo_round_trip_of_oci_image_and_two_platform_index_keeps_every_digest() {
    let berth = Berth::start();
    let work = tempfile::tempdir().unwrap();
    let src = standard(&work.path().join("src"), 1);
    let a = &berth.addr;

    copy(&format!("oci:{}:img", src.layout.dir.display()), &format!("docker://{a}/test/img:v1"), &[]);
    copy(&format!("oci:{}:multi", src.layout.dir.display()), &format!("docker://{a}/test/multi:v1"), &["--all"]);

    assert_eq!(served_digest(&format!("{a}/test/img:v1")), src.image.digest);
    assert_eq!(served_digest(&format!("{a}/test/multi:v1")), src.index.digest);
    assert_eq!(served_digest(&format!("{a}/test/multi@{}", src.arm64.digest)), src.arm64.digest);

    let out = Layout::new(&work.path().join("out"));
    copy(&format!("docker://{a}/test/img:v1"), &format!("oci:{}:img", out.dir.display()), &[]);
    copy(&format!("docker://{a}/test/multi:v1"), &format!("oci:{}:multi", out.dir.display()), &["--all"]);
    assert_eq!(out.lookup("img"), Some(src.image.digest.clone()));
    assert_eq!(out.lookup("multi"), Some(src.index.digest.clone()));
    for layer in &src.layers {
        assert_eq!(Digest::sha256_of(&out.read(&layer.digest)), layer.digest, "layer pulled back intact");
    }
    assert_eq!(out.read(&src.arm64.digest), src.layout.read(&src.arm64.digest), "arm64 child pulled with --all");

    let inspect: serde_json::Value = serde_json::from_str(&run(skopeo()
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{a}/test/img:v1"))))
    .unwrap();
    assert_eq!(inspect["Digest"], src.image.digest.to_string());
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 3);

    copy(&format!("oci:{}:img", src.layout.dir.display()), &format!("docker://{a}/test/img:v2"), &[]);
    let tags: serde_json::Value = serde_json::from_str(&run(skopeo()
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{a}/test/img"))))
    .unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["v1", "v2"]));
}

#[test]
fn skopeo_v2s2_push_is_stored_and_served_as_docker_schema2() {
    let berth = Berth::start();
    let work = tempfile::tempdir().unwrap();
    let src = standard(&work.path().join("src"), 2);
    let a = &berth.addr;
    copy(
        &format!("oci:{}:img", src.layout.dir.display()),
        &format!("docker://{a}/test/docker:v1"),
        &["--format", "v2s2"],
    );

    let raw = raw_manifest(&format!("{a}/test/docker:v1"));
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(m["mediaType"], berth_oci::media::DOCKER_MANIFEST);
    let layer_digests: Vec<String> =
        m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_owned()).collect();
    let want: Vec<String> = src.layers.iter().map(|l| l.digest.to_string()).collect();
    assert_eq!(layer_digests, want, "gzip layers are moved, not recompressed");

    // Registry to registry keeps the exact bytes, so the digest.
    copy(&format!("docker://{a}/test/docker:v1"), &format!("docker://{a}/test/docker-copy:v1"), &[]);
    assert_eq!(served_digest(&format!("{a}/test/docker-copy:v1")), Digest::sha256_of(&raw));

    let http = crate::harness::http();
    let resp = http
        .get(berth.url("/v2/test/docker/manifests/v1"))
        .header("Accept", berth_oci::media::DOCKER_MANIFEST)
        .call()
        .unwrap();
    assert_eq!(resp.headers().get("content-type").unwrap(), berth_oci::media::DOCKER_MANIFEST);
}
