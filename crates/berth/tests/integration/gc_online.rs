//! GC inside `berth serve` while clients push and pull.

use std::time::{Duration, Instant};

use berth_oci::Digest;
use serde_json::json;

use crate::clients::copy;
use crate::harness::{Berth, Distribution, cli_ok, run};
use crate::image::{Layout, noise, standard};
use crate::protocol::Reg;

fn gc(r: &Reg, query: &str) -> serde_json::Value {
    let resp = r.req("POST", &format!("/api/gc?{query}"), &[], b"");
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    resp.json()
}

fn manifest_for(config: &Digest, config_len: usize, layer: &Digest, layer_len: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": config_len},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer.to_string(), "size": layer_len}],
    }))
    .unwrap()
}

#[test]
fn i2_race_blob_head_then_gc_then_manifest_put() {
    let berth = Berth::start();
    let r = Reg::new(&berth.addr, "berth");
    const OCI: &str = "application/vnd.oci.image.manifest.v1+json";

    // Within the grace period, a blob the client just checked survives a GC that runs before
    // its manifest arrives, and the push completes.
    let (layer, config) = (noise(120, 3000), b"{\"a\":1}".to_vec());
    let (ld, cd) = (r.push_blob("race/app", &layer), r.push_blob("race/app", &config));
    assert_eq!(r.req("HEAD", &format!("/v2/race/app/blobs/{ld}"), &[], b"").status, 200);
    let report = gc(&r, "untagged=0s");
    assert_eq!(report["blobs"], 0, "{report}");
    assert!(report["blobs_kept_recent"].as_u64().unwrap() >= 2, "{report}");
    let put = r.req(
        "PUT",
        "/v2/race/app/manifests/v1",
        &[("Content-Type", OCI)],
        &manifest_for(&cd, config.len(), &ld, layer.len()),
    );
    assert_eq!(put.status, 201);

    // Past the grace period, the checked blob is collected; the manifest naming it is refused
    // with MANIFEST_BLOB_UNKNOWN (never accepted broken); pushing the blobs again succeeds.
    let (layer, config) = (noise(121, 3000), b"{\"b\":2}".to_vec());
    let (ld, cd) = (r.push_blob("race/late", &layer), r.push_blob("race/late", &config));
    assert_eq!(r.req("HEAD", &format!("/v2/race/late/blobs/{ld}"), &[], b"").status, 200);
    std::thread::sleep(Duration::from_millis(1100));
    let report = gc(&r, "grace=1s&untagged=0s");
    assert_eq!(report["blobs"], 2, "{report}");
    let m = manifest_for(&cd, config.len(), &ld, layer.len());
    let refused = r.req("PUT", "/v2/race/late/manifests/v1", &[("Content-Type", OCI)], &m);
    assert_eq!((refused.status, refused.code()), (400, "MANIFEST_BLOB_UNKNOWN".to_owned()));
    assert_eq!(r.req("GET", "/v2/race/late/manifests/v1", &[], b"").status, 404, "nothing broken was stored");
    r.push_blob("race/late", &layer);
    r.push_blob("race/late", &config);
    assert_eq!(r.req("PUT", "/v2/race/late/manifests/v1", &[("Content-Type", OCI)], &m).status, 201);
    assert_eq!(Digest::sha256_of(&r.req("GET", &format!("/v2/race/late/blobs/{ld}"), &[], b"").body), ld);
    // The first image was untouched by all of it.
    assert_eq!(r.req("GET", "/v2/race/app/manifests/v1", &[("Accept", OCI)], b"").status, 200);
}

#[test]
fn problem6_repush_right_after_gc_uploads_again_and_pulls_without_a_restart() {
    let work = tempfile::tempdir().unwrap();
    let src = standard(&work.path().join("src"), 122);
    let img = format!("oci:{}:img", src.layout.dir.display());

    let berth = Berth::start();
    let (a, url) = (&berth.addr, berth.url(""));
    copy(&img, &format!("docker://{a}/again/app:v1"), &[]);
    cli_ok(&["rm", "again/app:v1", "--url", &url]);
    cli_ok(&["trash", "purge", "--yes", "--url", &url]);
    let report = cli_ok(&["gc", "--url", &url, "--grace", "0s", "--untagged", "0s", "--json"]).json();
    assert_eq!(report["blobs"], 5, "manifest, config and three layers: {report}");
    copy(&img, &format!("docker://{a}/again/app:v1"), &[]);
    let out = Layout::new(&work.path().join("berth-out"));
    copy(&format!("docker://{a}/again/app:v1"), &format!("oci:{}:img", out.dir.display()), &[]);
    for l in &src.layers {
        assert_eq!(Digest::sha256_of(&out.read(&l.digest)), l.digest);
    }

    // CNCF Distribution with its default in-memory blob descriptor cache, for contrast: after
    // an offline garbage-collect while it runs, the re-push "succeeds" and the pull fails.
    let root = work.path().join("dist");
    std::fs::create_dir_all(&root).unwrap();
    let dist = Distribution::start_debian_default(&root);
    let d = &dist.addr;
    copy(&img, &format!("docker://{d}/again/app:v1"), &[]);
    let digest = src.image.digest.to_string();
    let del = Reg::new(d, "distribution").req("DELETE", &format!("/v2/again/app/manifests/{digest}"), &[], b"");
    assert_eq!(del.status, 202);
    let cfg = work.path().join("gc.yml");
    std::fs::write(&cfg, format!("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n", root.display()))
        .unwrap();
    run(std::process::Command::new(crate::harness::distribution_bin()).arg("garbage-collect").arg(&cfg));
    copy(&img, &format!("docker://{d}/again/app:v1"), &[]);
    let pulled = crate::clients::skopeo()
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{d}/again/app:v1"))
        .arg(format!("oci:{}:img", work.path().join("dist-out").display()))
        .output()
        .unwrap();
    assert!(!pulled.status.success(), "Distribution 2.8 was expected to fail this pull (problem 6); it now passes");
}

#[test]
fn delete_gc_restore_then_expiry_and_gc_free_exactly_what_du_predicted() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::start_on(&dir.path().join("root"), Some("trash:\n  retention: 3s\ngc:\n  interval: off\n"));
    let (r, url) = (Reg::new(&berth.addr, "berth"), berth.url(""));
    let shared = noise(123, 20_000);
    r.push_layers("pred/keep", "v1", &[&shared, &noise(124, 1000)]);
    r.push_layers("pred/drop", "v1", &[&shared, &noise(125, 7000)]);
    let du = cli_ok(&["du", "pred/drop", "--json", "--url", &url]).json();
    let predicted = du[0]["unique"].as_u64().unwrap();
    assert!(predicted > 7000);

    let del = cli_ok(&["rm", "pred/drop", "--yes", "--json", "--url", &url]).json();
    assert_eq!(del["entry"]["bytes_freed"].as_u64(), Some(predicted));
    let report = cli_ok(&["gc", "--url", &url, "--grace", "0s", "--untagged", "0s", "--json"]).json();
    assert_eq!(report["blobs"], 0, "the trash entry protects it: {report}");
    cli_ok(&["restore", "pred/drop", "--url", &url]);
    let m = r.req("GET", "/v2/pred/drop/manifests/v1", &[], b"").json();
    for l in m["layers"].as_array().unwrap() {
        let d = l["digest"].as_str().unwrap();
        assert_eq!(Digest::sha256_of(&r.req("GET", &format!("/v2/pred/drop/blobs/{d}"), &[], b"").body).to_string(), d);
    }

    cli_ok(&["rm", "pred/drop", "--yes", "--url", &url]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cli_ok(&["trash", "--json", "--url", &url]).json().as_array().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the entry did not expire");
        std::thread::sleep(Duration::from_millis(200));
    }
    let report = cli_ok(&["gc", "--url", &url, "--grace", "0s", "--untagged", "0s", "--json"]).json();
    assert_eq!(report["bytes_freed"].as_u64(), Some(predicted), "{report}");
    assert_eq!(r.req("GET", "/v2/pred/keep/manifests/v1", &[], b"").status, 200);
    let keep = r.req("GET", "/v2/pred/keep/manifests/v1", &[], b"").json();
    for l in keep["layers"].as_array().unwrap() {
        assert_eq!(
            r.req("HEAD", &format!("/v2/pred/keep/blobs/{}", l["digest"].as_str().unwrap()), &[], b"").status,
            200
        );
    }
}

#[test]
fn scheduled_gc_runs_on_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let berth =
        Berth::start_on(&root, Some("trash:\n  retention: 0\ngc:\n  interval: 1s\n  grace: 0s\n  untagged: 0s\n"));
    let r = Reg::new(&berth.addr, "berth");
    let layer = noise(126, 5000);
    r.push_layers("sched/app", "v1", &[&layer]);
    assert_eq!(r.req("DELETE", "/v2/sched/app/manifests/v1", &[], b"").status, 202);
    let ld = Digest::sha256_of(&layer);
    let data = root.join(format!("docker/registry/v2/blobs/sha256/{}/{}/data", &ld.hex()[..2], ld.hex()));
    let deadline = Instant::now() + Duration::from_secs(15);
    while data.exists() {
        assert!(Instant::now() < deadline, "no scheduled GC within 15 s of a 1 s interval");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The blob goes during the run; the run's log line comes when it ends.
    while !berth.log().contains("scheduled GC done") {
        assert!(Instant::now() < deadline, "no 'scheduled GC done' in the log: {}", berth.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}
