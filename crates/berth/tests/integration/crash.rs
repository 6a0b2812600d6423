//! I5: `kill -9` of `berth serve` in the middle of pushes and GC runs; after a restart, fsck
//! finds no damage and every acknowledged image pulls whole.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_oci::Digest;
use serde_json::json;

use crate::harness::{Berth, cli_ok};
use crate::image::noise;
use crate::protocol::Reg;

const OCI: &str = "application/vnd.oci.image.manifest.v1+json";

/// One push over raw HTTP that tolerates the server dying: `Some(digest)` only when the
/// manifest PUT was acknowledged with 201.
fn try_push(addr: &str, repo: &str, tag: &str, layers: &[Vec<u8>]) -> Option<Digest> {
    let agent = crate::harness::http();
    let up = |data: &[u8]| -> Option<Digest> {
        let d = Digest::sha256_of(data);
        let start = agent.post(format!("http://{addr}/v2/{repo}/blobs/uploads/")).send_empty().ok()?;
        let loc = start.headers().get("location")?.to_str().ok()?.to_owned();
        let done = agent.put(format!("http://{addr}{loc}?digest={d}")).send(data).ok()?;
        (done.status() == 201).then_some(d)
    };
    let config = serde_json::to_vec(&json!({"os": "linux", "architecture": "amd64", "tag": tag})).ok()?;
    let mut descs = Vec::new();
    for l in layers {
        descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": up(l)?.to_string(), "size": l.len()}));
    }
    let cd = up(&config)?;
    let m = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
        "layers": descs})).ok()?;
    let put =
        agent.put(format!("http://{addr}/v2/{repo}/manifests/{tag}")).header("Content-Type", OCI).send(&m[..]).ok()?;
    (put.status() == 201).then(|| Digest::sha256_of(&m))
}

/// Pushes and GCs against `berth` until it is killed after `after`; returns the acknowledged
/// pushes.
fn load_then_kill(berth: &mut Berth, round: u64, after: Duration) -> BTreeMap<String, Digest> {
    let acked: Arc<Mutex<BTreeMap<String, Digest>>> = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let gcs_done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let addr = berth.addr.clone();
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (addr, acked, stop) = (addr.clone(), acked.clone(), stop.clone());
            s.spawn(move || {
                let shared = noise(300 + round, 32 << 10);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let tag = format!("r{round}-t{t}-{n}");
                    if let Some(d) = try_push(
                        &addr,
                        "crash/app",
                        &tag,
                        &[shared.clone(), noise(round * 10_000 + t * 1000 + n, 200 << 10)],
                    ) {
                        acked.lock().unwrap().insert(tag, d);
                    }
                    n += 1;
                }
            });
        }
        {
            let (addr, stop, gcs_done) = (addr.clone(), stop.clone(), gcs_done.clone());
            s.spawn(move || {
                let agent = crate::harness::http();
                while !stop.load(Ordering::Relaxed) {
                    // The last call fails when the server is killed under it; that is the point.
                    if let Ok(r) = agent.post(format!("http://{addr}/api/gc?grace=1s&untagged=0s")).send_empty()
                        && r.status() == 200
                    {
                        gcs_done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        std::thread::sleep(after);
        berth.kill9();
        stop.store(true, Ordering::Relaxed);
    });
    assert!(gcs_done.load(Ordering::Relaxed) > 0, "round {round}: no GC completed before the kill");
    Arc::try_unwrap(acked).unwrap().into_inner().unwrap()
}

#[test]
fn i5_kill_9_during_pushes_and_gc_leaves_every_acknowledged_image_whole() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let root_s = root.display().to_string();
    let mut all: BTreeMap<String, Digest> = BTreeMap::new();
    for (round, after) in
        [(1u64, Duration::from_millis(1500)), (2, Duration::from_millis(2300)), (3, Duration::from_millis(800))]
    {
        let mut berth = Berth::start_on(&root, Some("gc:\n  interval: off\n"));
        let acked = load_then_kill(&mut berth, round, after);
        assert!(!acked.is_empty(), "round {round}: nothing was acknowledged before the kill");
        all.extend(acked);
        let fsck = cli_ok(&["fsck", "--root", &root_s, "--json"]).json();
        assert_eq!(fsck["damage"], 0, "round {round}: {fsck}");
    }
    let berth = Berth::start_on(&root, None);
    let r = Reg::new(&berth.addr, "berth");
    for (tag, d) in &all {
        let m = r.req("GET", &format!("/v2/crash/app/manifests/{tag}"), &[("Accept", OCI)], b"");
        assert_eq!(m.status, 200, "acknowledged crash/app:{tag} is gone");
        assert_eq!(Digest::sha256_of(&m.body), *d, "crash/app:{tag}");
        let v = m.json();
        for b in std::iter::once(&v["config"]).chain(v["layers"].as_array().unwrap().iter()) {
            let bd = b["digest"].as_str().unwrap();
            let blob = r.req("GET", &format!("/v2/crash/app/blobs/{bd}"), &[], b"");
            assert_eq!(Digest::sha256_of(&blob.body).to_string(), bd, "crash/app:{tag} blob {bd}");
        }
    }
    eprintln!("crash: {} acknowledged pushes over three kills, all whole", all.len());
}
