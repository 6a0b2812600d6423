//! A full disk and blob size limits (I5, I6): Berth on a small tmpfs. A push that finds no
//! space gets a clear 5xx that names no path, its partial data is gone at once, every image
//! already acknowledged still pulls whole, and pushes work again once space is freed, with no
//! restart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_oci::Digest;

use crate::harness::{Berth, http};
use crate::image::noise;
use crate::protocol::{Reg, Resp};

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).output();
        match out {
            Ok(o) if o.status.success() => Tmpfs(dir.to_owned()),
            Ok(o) => panic!(
                "this test needs to mount a small tmpfs (run it as root, as scripts/test does in CI): {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("this test needs `mount` (util-linux) to mount a small tmpfs: {e}"),
        }
    }

    /// Bytes free, as the filesystem reports them.
    fn free(&self) -> u64 {
        let out = Command::new("df").args(["--output=avail", "-B1"]).arg(&self.0).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap().trim().parse().unwrap()
    }

    /// Writes `name` until the filesystem is full; returns its size.
    fn fill(&self, name: &str) -> u64 {
        let mut f = std::fs::File::create(self.0.join(name)).unwrap();
        let block = vec![0u8; 64 << 10];
        let mut written = 0;
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        written
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn no_internals(r: &Resp, mount: &Path) {
    let body = String::from_utf8_lossy(&r.body);
    assert_eq!(r.h("content-type"), Some("application/json"), "{body}");
    assert!(!r.code().is_empty(), "spec-shaped body: {body}");
    for secret in ["docker/registry", "berth/tmp", "_uploads", &mount.display().to_string(), "No space"] {
        assert!(!body.contains(secret), "the answer names {secret:?}: {body}");
    }
}

fn pulls_whole(r: &Reg, repo: &str, tag: &str) {
    let m = r.req("GET", &format!("/v2/{repo}/manifests/{tag}"), &[], b"");
    assert_eq!(m.status, 200, "{}", String::from_utf8_lossy(&m.body));
    let v = m.json();
    for b in std::iter::once(&v["config"]).chain(v["layers"].as_array().unwrap()) {
        let d = b["digest"].as_str().unwrap();
        let blob = r.req("GET", &format!("/v2/{repo}/blobs/{d}"), &[], b"");
        assert_eq!(blob.status, 200);
        assert_eq!(Digest::sha256_of(&blob.body).to_string(), d);
    }
}

#[test]
fn i5_a_full_disk_refuses_pushes_cleanly_keeps_serving_pulls_and_recovers_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&dir.path().join("mnt"), "32m");
    let berth = Berth::start_on(&fs.0.join("root"), Some("gc:\n  interval: off\n"));
    let r = Reg::new(&berth.addr, "berth");
    let kept = r.push_image("full/app", "v1", 1);

    // Leave about 1 MiB free, then push 4 MiB: monolithic, then chunked.
    fs.fill("filler");
    std::fs::remove_file(fs.0.join("filler")).unwrap();
    let room = fs.free();
    fs.fill("filler");
    let filler_len = std::fs::metadata(fs.0.join("filler")).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(fs.0.join("filler")).unwrap().set_len(filler_len - (1 << 20)).unwrap();
    let free_before = fs.free();
    assert!(free_before >= 1 << 20 && free_before < room, "{free_before} of {room}");

    let big = noise(2, 4 << 20);
    let d = Digest::sha256_of(&big);
    let mono = r.req("POST", &format!("/v2/full/app/blobs/uploads/?digest={d}"), &[], &big);
    assert_eq!(mono.status, 507, "{}", String::from_utf8_lossy(&mono.body));
    no_internals(&mono, &fs.0);
    assert!(fs.free() >= free_before, "the refused upload's data is gone at once");

    // A server that refuses a body before reading it all may close the connection after
    // answering (HTTP allows it): each request after a refused body goes on a new one.
    let fresh = || Reg::new(&berth.addr, "berth");
    let start = fresh().req("POST", "/v2/full/app/blobs/uploads/", &[], b"");
    assert_eq!(start.status, 202);
    let loc = start.h("location").unwrap().to_owned();
    let patch = r.req("PATCH", &loc, &[], &big);
    assert_eq!(patch.status, 507, "{}", String::from_utf8_lossy(&patch.body));
    no_internals(&patch, &fs.0);
    assert!(fs.free() >= free_before, "the chunked upload's data is gone at once");
    let r = fresh();
    assert_eq!(r.req("GET", &loc, &[], b"").status, 404, "the session went with its data");

    // Completely full: a manifest push (its blobs are there) is refused, pulls go on.
    fs.fill("filler2");
    let retag = r.req(
        "PUT",
        "/v2/full/app/manifests/v2",
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        &kept,
    );
    assert_eq!(retag.status, 507, "{}", String::from_utf8_lossy(&retag.body));
    no_internals(&retag, &fs.0);
    pulls_whole(&r, "full/app", "v1");
    assert_eq!(r.req("GET", "/v2/full/app/tags/list", &[], b"").json()["tags"], serde_json::json!(["v1"]));

    // Space comes back: pushes work again in the same process.
    std::fs::remove_file(fs.0.join("filler")).unwrap();
    std::fs::remove_file(fs.0.join("filler2")).unwrap();
    assert_eq!(r.push_blob("full/app", &big), d);
    r.push_image("full/app", "v3", 3);
    pulls_whole(&r, "full/app", "v3");
    pulls_whole(&r, "full/app", "v1");

    let metrics = http().get(berth.url("/metrics")).call().unwrap().into_body().read_to_string().unwrap();
    assert!(metrics.contains(r#"berth_http_server_errors_total{status="507"} 3"#), "{metrics}");
    assert!(berth.log().contains("request failed"), "the cause is logged: {}", berth.log());
    drop(berth);
}

#[test]
fn i6_a_blob_over_max_blob_bytes_gets_413_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let berth = Berth::start_on(&root, Some("berth:\n  max_blob_bytes: 1048576\n"));
    let r = Reg::new(&berth.addr, "berth");
    let big = noise(5, (1 << 20) + 1);
    let d = Digest::sha256_of(&big);
    let mono = r.req("POST", &format!("/v2/lim/app/blobs/uploads/?digest={d}"), &[], &big);
    assert_eq!((mono.status, mono.code().as_str()), (413, "SIZE_INVALID"));

    // After a refused body, a new connection (see the test above).
    let fresh = || Reg::new(&berth.addr, "berth");
    let r = fresh();
    let start = r.req("POST", "/v2/lim/app/blobs/uploads/", &[], b"");
    let loc = start.h("location").unwrap().to_owned();
    let (a, b) = big.split_at(1 << 19);
    assert_eq!(r.req("PATCH", &loc, &[("Content-Range", &format!("0-{}", a.len() - 1))], a).status, 202);
    let over = r.req("PATCH", &loc, &[("Content-Range", &format!("{}-{}", a.len(), big.len() - 1))], b);
    assert_eq!((over.status, over.code().as_str()), (413, "SIZE_INVALID"));
    let r = fresh();
    assert_eq!(r.req("GET", &loc, &[], b"").status, 404);
    let uploads = root.join("docker/registry/v2/repositories/lim/app/_uploads");
    assert_eq!(std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0), 0, "no upload data left");

    // At the limit it is accepted.
    r.push_blob("lim/app", &big[..1 << 20]);
}
