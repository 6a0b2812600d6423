//! Berth on S3 when things go wrong, and under load, on real Garage servers: a node of a
//! three-node Garage cluster (replication 3) killed during a stream of pushes; `kill -9` of
//! Berth during a chunked upload and during a GC, then `fsck`, a restart and pulls; the
//! concurrent push/pull/delete/GC stress load; podman and oras round trips with delete,
//! restore, GC and fsck; and Berth's GC against Distribution's `garbage-collect` on two roots
//! of one bucket that Distribution's `s3` driver filled.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use berth_oci::Digest;
use berth_storage::testservers::S3Server;
use berth_storage::{Backend, BackendExt, Key, S3Backend, layout};
use serde_json::json;

use crate::clients::{absent, copy, oras_script, served_digest};
use crate::gc_compat::closure;
use crate::harness::{Berth, Distribution, cli, cli_ok, distribution_bin, http, run, serve_refused};
use crate::image::{Layout, noise, standard};
use crate::podman::podman;
use crate::protocol::Reg;
use crate::s3::{berth_on, blob_key, bucket, bucket_at, s3_yaml, serve_config, storage_yaml};
use crate::stress::{STRESS_GC, pull, stress};

const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
const NO_GC: &str = "gc:\n  interval: off\n";

/// An image a registry acknowledged: its manifest's digest and the blobs the manifest names.
struct Pushed {
    manifest: Digest,
    blobs: Vec<Digest>,
}

/// Pushes an image of `layers` (and a config naming `repo:tag`) over HTTP, never panicking:
/// `Err` says which request failed and how, so a refused push is told apart from an
/// acknowledged one.
fn try_push(addr: &str, repo: &str, tag: &str, layers: &[&[u8]]) -> Result<Pushed, String> {
    let agent = http();
    let base = format!("http://{addr}");
    let upload = |data: &[u8]| -> Result<Digest, String> {
        let d = Digest::sha256_of(data);
        let start =
            agent.post(format!("{base}/v2/{repo}/blobs/uploads/")).send_empty().map_err(|e| format!("POST: {e}"))?;
        if start.status() != 202 {
            return Err(format!("POST upload: HTTP {}", start.status()));
        }
        let loc = start.headers().get("location").and_then(|v| v.to_str().ok()).ok_or("no Location")?.to_owned();
        let sep = if loc.contains('?') { '&' } else { '?' };
        let mut done =
            agent.put(format!("{base}{loc}{sep}digest={d}")).send(data).map_err(|e| format!("PUT {d}: {e}"))?;
        match done.status().as_u16() {
            201 => Ok(d),
            s => Err(format!("PUT {d}: HTTP {s} {}", done.body_mut().read_to_string().unwrap_or_default())),
        }
    };
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "for": format!("{repo}:{tag}")}))
        .map_err(|e| e.to_string())?;
    let mut blobs = vec![upload(&config)?];
    let mut descs = Vec::new();
    for l in layers {
        let d = upload(l)?;
        descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d.to_string(), "size": l.len()}));
        blobs.push(d);
    }
    let m = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blobs[0].to_string(), "size": config.len()},
        "layers": descs}))
    .map_err(|e| e.to_string())?;
    let mut put = agent
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("Content-Type", OCI)
        .send(&m[..])
        .map_err(|e| format!("manifest PUT: {e}"))?;
    match put.status().as_u16() {
        201 => Ok(Pushed { manifest: Digest::sha256_of(&m), blobs }),
        s => Err(format!("manifest PUT: HTTP {s} {}", put.body_mut().read_to_string().unwrap_or_default())),
    }
}

/// Every acknowledged image pulls whole through `r`: the tag names the acknowledged digest,
/// and the manifest and every blob hash to their digests.
fn assert_pulls_whole(r: &Reg, repo: &str, acked: &BTreeMap<String, Pushed>, via: &str) {
    for (tag, p) in acked {
        let head = r.req("HEAD", &format!("/v2/{repo}/manifests/{tag}"), &[("Accept", OCI)], b"");
        assert_eq!(
            (head.status, head.h("docker-content-digest")),
            (200, Some(p.manifest.to_string().as_str())),
            "{via}: acknowledged {repo}:{tag}"
        );
        assert_eq!(pull(r, repo, &p.manifest.to_string()), Ok(true), "{via}: acknowledged {repo}:{tag} is not whole");
    }
}

/// The digests of the blobs in the root `store` stands on, from a listing of the bucket.
fn bucket_blobs(store: &S3Backend) -> BTreeSet<String> {
    let base = "docker/registry/v2/blobs/sha256";
    let mut out = BTreeSet::new();
    for prefix in store.list_all(&Key::new(base).unwrap()).unwrap() {
        for hex in store.list_all(&Key::new(format!("{base}/{prefix}")).unwrap()).unwrap() {
            if store.exists(&Key::new(format!("{base}/{prefix}/{hex}/data")).unwrap()).unwrap() {
                out.insert(format!("sha256:{hex}"));
            }
        }
    }
    out
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

/// The root lease object, as a killed server left it: when it ends (Unix seconds) and the
/// rest of its text (the holder).
fn lease(store: &S3Backend) -> (u64, String) {
    let text = String::from_utf8(store.get(&Key::new(layout::LEASE).unwrap()).unwrap()).unwrap();
    let (until, holder) = text.split_once('\n').unwrap_or_else(|| panic!("a lease names when it ends: {text:?}"));
    (until.trim().parse().unwrap_or_else(|_| panic!("a lease names when it ends: {text:?}")), holder.to_owned())
}

/// `berth fsck --config CFG --json --verify-content`, which must exit 0 reporting no damage.
fn fsck_clean(cfg: &Path, when: &str) -> serde_json::Value {
    let out = cli(&["fsck", "--config", &cfg.display().to_string(), "--json", "--verify-content"]);
    assert_eq!(out.code, 0, "fsck {when}:\n{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    assert_eq!(report["damage"], 0, "fsck {when}: {report}");
    report
}

/// Every tag in the registry pulls whole; returns how many there are.
fn every_tag_pulls_whole(r: &Reg) -> usize {
    let mut n = 0;
    for repo in r.req("GET", "/v2/_catalog", &[], b"").json()["repositories"].as_array().unwrap() {
        let repo = repo.as_str().unwrap();
        let tags = r.req("GET", &format!("/v2/{repo}/tags/list"), &[], b"").json();
        for tag in tags["tags"].as_array().into_iter().flatten() {
            let tag = tag.as_str().unwrap();
            let accept = format!("{OCI}, {}", berth_oci::media::OCI_INDEX);
            let m = r.req("HEAD", &format!("/v2/{repo}/manifests/{tag}"), &[("Accept", &accept)], b"");
            if m.h("content-type") == Some(OCI) {
                assert_eq!(pull(r, repo, tag), Ok(true), "{repo}:{tag} exists but does not pull whole");
            } else {
                let out = tempfile::tempdir().unwrap();
                let dst = format!("oci:{}:x", out.path().display());
                copy(&format!("docker://{}/{repo}:{tag}", r.addr), &dst, &["--all"]);
            }
            n += 1;
        }
    }
    n
}

#[test]
fn a_garage_node_killed_during_pushes_loses_no_acknowledged_image() {
    let mut cluster = S3Server::garage_cluster();
    let work = tempfile::tempdir().unwrap();
    let cfg1 = work.path().join("via-node1.yml");
    let mut berth = serve_config(&cfg1, &s3_yaml(&cluster.nodes[0].options, "/registry", ""), NO_GC);
    let addr = berth.addr.clone();
    let base = noise(900, 64 << 10);
    let acked: Mutex<BTreeMap<String, Pushed>> = Default::default();
    let refused: Mutex<Vec<String>> = Default::default();
    let acked_at_kill = AtomicUsize::new(0);
    let pushing = AtomicBool::new(true);
    let killer_cluster = &mut cluster;
    std::thread::scope(|s| {
        s.spawn(|| {
            while acked.lock().unwrap().len() < 10 && pushing.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(2));
            }
            killer_cluster.kill9(2);
            acked_at_kill.store(acked.lock().unwrap().len(), Ordering::Relaxed);
        });
        // Three clients at once, as CI pipelines push; a Garage cluster answers in tens of
        // milliseconds, so one client alone would take most of a minute.
        let pushers: Vec<_> = (0..3u64)
            .map(|t| {
                let (addr, base, acked, refused) = (&addr, &base, &acked, &refused);
                s.spawn(move || {
                    for n in (t..30).step_by(3) {
                        let tag = format!("v{n}");
                        match try_push(addr, "cluster/app", &tag, &[base, &noise(1000 + n, 100 << 10)]) {
                            Ok(p) => {
                                acked.lock().unwrap().insert(tag, p);
                            }
                            Err(e) => refused.lock().unwrap().push(format!("{tag}: {e}")),
                        }
                    }
                })
            })
            .collect();
        for p in pushers {
            p.join().unwrap();
        }
        pushing.store(false, Ordering::Relaxed);
    });
    let (acked, refused) = (acked.into_inner().unwrap(), refused.into_inner().unwrap());
    let at_kill = acked_at_kill.load(Ordering::Relaxed);
    assert!((10..30).contains(&at_kill), "node 3 was killed while pushes went on ({at_kill} acknowledged then)");
    // Two of three nodes are a quorum: losing one must not cost a push.
    assert!(
        refused.is_empty(),
        "pushes refused after node 3 died:\n{}\nberth's log:\n{}",
        refused.join("\n"),
        berth.log()
    );
    assert_pulls_whole(&Reg::new(&addr, "berth"), "cluster/app", &acked, "berth on node 1");

    // Node 2 (which Berth never talked to) holds every acknowledged tag and blob.
    let via2 = bucket_at(&cluster.nodes[1].options, "registry");
    for (tag, p) in &acked {
        let link = Key::new(format!("docker/registry/v2/repositories/cluster/app/_manifests/tags/{tag}/current/link"))
            .unwrap();
        assert_eq!(via2.get(&link).unwrap(), p.manifest.to_string().into_bytes(), "tag {tag} through node 2");
        for d in std::iter::once(&p.manifest).chain(&p.blobs) {
            let bytes = via2.get(&blob_key(d)).unwrap_or_else(|e| panic!("{tag}: blob {d} through node 2: {e}"));
            assert_eq!(Digest::sha256_of(&bytes), *d, "{tag}: blob {d} through node 2");
        }
    }
    assert!(berth.stop().success());
    let cfg2 = work.path().join("via-node2.yml");
    let mut berth2 = serve_config(&cfg2, &s3_yaml(&cluster.nodes[1].options, "/registry", ""), NO_GC);
    assert_pulls_whole(&Reg::new(&berth2.addr, "berth"), "cluster/app", &acked, "berth on node 2");
    assert!(berth2.stop().success());
    fsck_clean(&cfg2, "through node 2");
    eprintln!("garage cluster: {} pushes acknowledged, node 3 killed after {at_kill}", acked.len());
}

#[test]
fn kill_9_during_a_chunked_upload_on_garage_leaves_no_damage_and_the_upload_resumes() {
    let server = S3Server::garage();
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("berth.yml");
    let storage = storage_yaml(&server, "");
    let mut berth = serve_config(&cfg, &storage, NO_GC);
    let killed_addr = berth.addr.clone();
    let store = bucket(&server);
    let r = Reg::new(&berth.addr, "berth");
    let mut acked = BTreeMap::new();
    for n in 0..4u64 {
        let layer = noise(40 + n, 20 << 10);
        let (m, config) = r.push_layers("crash/app", &format!("v{n}"), &[&layer]);
        acked.insert(
            format!("v{n}"),
            Pushed {
                manifest: Digest::sha256_of(&m),
                blobs: vec![Digest::sha256_of(&config), Digest::sha256_of(&layer)],
            },
        );
    }

    // 14 MiB in two chunks; the second is cut off after 7 of its 8 MiB, once Berth has put a
    // part of it (chunksize 5 MiB) into the bucket: it dies holding the rest in memory.
    let big = noise(77, 14 << 20);
    let d = Digest::sha256_of(&big);
    let start = r.req("POST", "/v2/crash/big/blobs/uploads/", &[], b"");
    assert_eq!(start.status, 202);
    let loc = start.h("location").unwrap().to_owned();
    let id = loc.split('?').next().unwrap().rsplit('/').next().unwrap().to_owned();
    let first = 6 << 20;
    let p1 = r.req("PATCH", &loc, &[("Content-Range", &format!("0-{}", first - 1))], &big[..first]);
    assert_eq!(p1.status, 202, "{}", String::from_utf8_lossy(&p1.body));
    let mut conn = TcpStream::connect(&berth.addr).unwrap();
    write!(
        conn,
        "PATCH {loc} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Range: {first}-{}\r\n\
         Content-Length: {}\r\n\r\n",
        berth.addr,
        big.len() - 1,
        big.len() - first
    )
    .unwrap();
    conn.write_all(&big[first..first + (7 << 20)]).unwrap();
    let data = Key::new(format!("docker/registry/v2/repositories/crash/big/_uploads/{id}/data")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.stat_opt(&data).unwrap().is_none_or(|m| m.size < (first + (5 << 20)) as u64) {
        assert!(Instant::now() < deadline, "no part of the second chunk reached the bucket:\n{}", berth.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    // A second server on the bucket is refused while the first lives.
    let refusal = serve_refused(&cfg);
    assert!(
        refusal.contains(&format!("http://{killed_addr}")) && refusal.contains("refusing to serve it twice"),
        "a second server is refused, naming the one serving: {refusal}"
    );
    berth.kill9();
    drop(conn);

    // fsck reads the bucket without taking the lease, so it runs at once.
    fsck_clean(&cfg, "after the kill");
    // Meanwhile Distribution's s3 driver, which takes no lease, serves every acknowledged image.
    {
        let dist = Distribution::start_storage(&storage, "");
        assert_pulls_whole(&Reg::new(&dist.addr, "distribution"), "crash/app", &acked, "distribution");
    }
    // The killed server's lease has not ended, but it names a process of this machine that is
    // gone: the restart takes the bucket over at once.
    let (until, _) = lease(&store);
    assert!(until > unix_now(), "the dead server's lease still runs");
    let mut berth =
        Berth::spawn(None, &["--addr".into(), "127.0.0.1:0".into(), "--config".into(), cfg.display().to_string()]);
    let r = Reg::new(&berth.addr, "berth");
    assert_pulls_whole(&r, "crash/app", &acked, "berth after the restart");

    // The upload holds what reached the bucket; the client goes on from there.
    let status = r.req("GET", &loc, &[], b"");
    assert_eq!(status.status, 204, "the upload survived the kill: {}", String::from_utf8_lossy(&status.body));
    let range = status.h("range").unwrap().to_owned();
    let held: usize = range.strip_prefix("0-").and_then(|e| e.parse::<usize>().ok()).unwrap() + 1;
    assert!(
        held >= first + (5 << 20) && held < big.len(),
        "the upload holds its first chunk and the part that was written: {range}"
    );
    let rest = r.req("PATCH", &loc, &[("Content-Range", &format!("{held}-{}", big.len() - 1))], &big[held..]);
    assert_eq!(rest.status, 202, "{}", String::from_utf8_lossy(&rest.body));
    let put = r.req("PUT", &format!("{loc}?digest={d}"), &[], b"");
    assert_eq!(put.status, 201, "the resumed upload hashes to its digest: {}", String::from_utf8_lossy(&put.body));
    let mut got = http().get(berth.url(&format!("/v2/crash/big/blobs/{d}"))).call().unwrap();
    assert_eq!(got.status(), 200);
    let body = got.body_mut().with_config().limit(1 << 30).read_to_vec().unwrap();
    assert_eq!(Digest::sha256_of(&body), d, "the resumed blob pulls whole");
    assert!(berth.stop().success());
    let report = fsck_clean(&cfg, "after the upload finished");
    assert!(
        store
            .list(&Key::new("docker/registry/v2/repositories/crash/big/_uploads").unwrap(), None, 10)
            .unwrap()
            .is_empty(),
        "no upload left: {report}"
    );
}

#[test]
fn kill_9_during_gc_on_garage_leaves_no_damage_and_the_next_gc_finishes() {
    let server = S3Server::garage();
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("berth.yml");
    let mut berth = serve_config(&cfg, &storage_yaml(&server, ""), NO_GC);
    let (addr, url) = (berth.addr.clone(), berth.url(""));
    let store = bucket(&server);
    let r = Reg::new(&addr, "berth");

    // What stays: a two-platform index and plain images sharing a layer with what goes.
    let src = standard(&work.path().join("src"), 600);
    copy(&format!("oci:{}:multi", src.layout.dir.display()), &format!("docker://{addr}/keep/multi:v1"), &["--all"]);
    let shared = noise(601, 32 << 10);
    let mut kept = BTreeMap::new();
    for n in 0..4u64 {
        let p = try_push(&addr, "keep/app", &format!("v{n}"), &[&shared, &noise(610 + n, 16 << 10)]).unwrap();
        kept.insert(format!("v{n}"), p);
    }
    // What goes: eight repositories of images, half deleted whole and half tag by tag.
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (addr, shared) = (&addr, &shared);
            s.spawn(move || {
                for n in 0..12u64 {
                    let unique = noise(10_000 + t * 100 + n, 4 << 10);
                    try_push(addr, &format!("doomed/r{t}"), &format!("v{n}"), &[shared, &unique]).unwrap();
                    try_push(addr, &format!("doomed/s{t}"), &format!("v{n}"), &[&unique]).unwrap();
                }
            });
        }
    });
    for t in 0..4 {
        cli_ok(&["rm", &format!("doomed/r{t}"), "--yes", "--url", &url]);
        for n in 0..12 {
            assert_eq!(r.req("DELETE", &format!("/v2/doomed/s{t}/manifests/v{n}"), &[], b"").status, 202);
        }
    }
    cli_ok(&["trash", "purge", "--yes", "--url", &url]);
    // And blobs nothing references, put straight into the bucket, as years of deleted tags on
    // a Distribution bucket leave them: enough that the sweep takes a while.
    let orphan = |i: usize| format!("orphan {i}").into_bytes();
    let orphans: Vec<Digest> = (0..3000).map(|i| Digest::sha256_of(&orphan(i))).collect();
    std::thread::scope(|s| {
        for t in 0..8 {
            let (store, orphan, orphans) = (&store, &orphan, &orphans);
            s.spawn(move || {
                for i in (t..orphans.len()).step_by(8) {
                    store.put(&blob_key(&orphans[i]), &orphan(i)).unwrap();
                }
            });
        }
    });

    let sample: Vec<&Digest> = orphans.iter().step_by(orphans.len() / 24).collect();
    let answer: Mutex<Option<u16>> = Mutex::new(None);
    let started = Instant::now();
    let mut sweep_began_after = Duration::ZERO;
    std::thread::scope(|s| {
        s.spawn(|| {
            let resp = http().post(format!("http://{addr}/api/gc?grace=0s&untagged=0s")).send_empty();
            // Failing is the expected end: the server is killed under the call.
            *answer.lock().unwrap() = Some(resp.map_or(0, |r| r.status().as_u16()));
        });
        // Killed as soon as the sweep has removed a first sampled orphan.
        loop {
            if sample.iter().any(|d| !store.exists(&blob_key(d)).unwrap()) || answer.lock().unwrap().is_some() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the GC removed nothing in a minute:\n{}",
                berth.log()
            );
        }
        sweep_began_after = started.elapsed();
        berth.kill9();
    });
    let answer = answer.into_inner().unwrap();
    assert_eq!(answer, Some(0), "the GC was killed before it answered (it answered {answer:?}): give it more garbage");
    let left = sample.iter().filter(|d| store.exists(&blob_key(d)).unwrap()).count();
    eprintln!(
        "gc kill: sweep began {sweep_began_after:?} into the GC; {left} of {} sampled orphans left",
        sample.len()
    );

    fsck_clean(&cfg, "after the GC was killed");
    // The dead server's lease names a process that is gone: the restart needs no wait.
    let mut berth =
        Berth::spawn(None, &["--addr".into(), "127.0.0.1:0".into(), "--config".into(), cfg.display().to_string()]);
    let r = Reg::new(&berth.addr, "berth");
    assert_pulls_whole(&r, "keep/app", &kept, "after the GC was killed");
    assert_eq!(served_digest(&format!("{}/keep/multi:v1", berth.addr)), src.index.digest);
    let tags = every_tag_pulls_whole(&r);
    assert_eq!(tags, kept.len() + 1, "only the kept tags are left");

    // The next GC finishes the job: the bucket holds exactly what the kept tags reach.
    let gc = r.req("POST", "/api/gc?grace=0s&untagged=0s", &[], b"");
    assert_eq!(gc.status, 200, "{}", String::from_utf8_lossy(&gc.body));
    let mut expected = BTreeSet::new();
    closure(&src.layout, &src.index.digest, &mut expected);
    for p in kept.values() {
        expected.extend(std::iter::once(&p.manifest).chain(&p.blobs).map(Digest::to_string));
    }
    assert_eq!(bucket_blobs(&store), expected, "the bucket after the second GC");
    let catalog = r.req("GET", "/v2/_catalog", &[], b"").json();
    assert_eq!(catalog["repositories"], json!(["keep/app", "keep/multi"]));
    assert_pulls_whole(&r, "keep/app", &kept, "after the second GC");
    let out = Layout::new(&work.path().join("out"));
    copy(&format!("docker://{}/keep/multi:v1", berth.addr), &format!("oci:{}:m", out.dir.display()), &["--all"]);
    assert!(berth.stop().success());
    fsck_clean(&cfg, "after the second GC");
}

#[test]
fn stress_on_garage_never_breaks_an_acknowledged_image() {
    let server = S3Server::garage();
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("stress.yml");
    let mut berth = serve_config(&cfg, &storage_yaml(&server, ""), STRESS_GC);
    stress(&mut berth, &["--config", &cfg.display().to_string()], "stress on garage");
}

#[test]
fn podman_and_oras_on_garage_push_pull_delete_restore_collect_and_fsck() {
    let server = S3Server::garage();
    let work = tempfile::tempdir().unwrap();
    let (mut berth, cfg) = berth_on(&server, work.path(), "");
    let (a, url) = (berth.addr.clone(), berth.url(""));
    let store = bucket(&server);
    let r = Reg::new(&a, "berth");
    let src = standard(&work.path().join("src"), 720);
    copy(&format!("oci:{}:img", src.layout.dir.display()), &format!("docker://{a}/pod/img:v1"), &[]);

    // podman pulls (following redirects to Garage) and pushes a copy back.
    let pstore = work.path().join("podman");
    run(podman(&pstore).args(["pull", "--tls-verify=false"]).arg(format!("{a}/pod/img:v1")));
    let seen = run(podman(&pstore).args(["images", "--format", "{{.Digest}}"]).arg(format!("{a}/pod/img:v1")));
    assert_eq!(seen.trim(), src.image.digest.to_string(), "podman saw the digest that was pushed");
    run(podman(&pstore)
        .args(["push", "--tls-verify=false"])
        .arg(format!("{a}/pod/img:v1"))
        .arg(format!("docker://{a}/pod/copy:v1")));
    let pushed = served_digest(&format!("{a}/pod/copy:v1"));
    assert_eq!(pull(&r, "pod/copy", &pushed.to_string()), Ok(true), "the image podman pushed is whole");

    // oras pushes an artifact in small chunks and pulls it back.
    let files = work.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let (notes, payload) = (b"release notes\n".to_vec(), noise(721, 300 << 10));
    std::fs::write(files.join("notes.txt"), &notes).unwrap();
    std::fs::write(files.join("payload.bin"), &payload).unwrap();
    let out = oras_script(&format!(
        r#"
import os, oras.client
os.chdir({dir:?})
c = oras.client.OrasClient(hostname="{a}", insecure=True)
resp = c.push(target="{a}/oras/art:v1", files=["notes.txt:text/plain", "payload.bin:application/octet-stream"],
              do_chunked=True, chunk_size=65536)
print(resp.status_code)
pulled = c.pull(target="{a}/oras/art:v1", outdir="pulled")
print(len(pulled))
"#,
        dir = files.display().to_string(),
    ));
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["201", "2"], "oras push and pull: {out}");
    assert_eq!(std::fs::read(files.join("pulled/notes.txt")).unwrap(), notes);
    assert_eq!(std::fs::read(files.join("pulled/payload.bin")).unwrap(), payload, "oras pulled the bytes it pushed");
    let artifact_blobs = [Digest::sha256_of(&notes), Digest::sha256_of(&payload)];
    for d in &artifact_blobs {
        assert!(store.exists(&blob_key(d)).unwrap(), "{d} is in the bucket");
    }

    // Delete and restore through the CLI; podman pulls the restored image.
    cli_ok(&["rm", "pod/copy:v1", "--url", &url]);
    assert!(absent(&a, "pod/copy:v1"));
    cli_ok(&["restore", "pod/copy:v1", "--url", &url]);
    assert_eq!(served_digest(&format!("{a}/pod/copy:v1")), pushed);
    let fresh = work.path().join("podman2");
    run(podman(&fresh).args(["pull", "--tls-verify=false"]).arg(format!("{a}/pod/copy:v1")));

    // The artifact's repository deleted and collected: its blobs leave the bucket, the images'
    // stay.
    cli_ok(&["rm", "oras/art", "--yes", "--url", &url]);
    cli_ok(&["trash", "purge", "--yes", "--url", &url]);
    let gc = cli_ok(&["gc", "--url", &url, "--grace", "0s", "--untagged", "0s", "--json"]).json();
    assert!(gc["blobs"].as_u64().unwrap() >= 3, "the artifact's blobs and manifest were collected: {gc}");
    for d in &artifact_blobs {
        assert!(!store.exists(&blob_key(d)).unwrap(), "{d} left the bucket");
    }
    for l in &src.layers {
        assert!(store.exists(&blob_key(&l.digest)).unwrap(), "kept: {}", l.digest);
    }
    assert_eq!(pull(&r, "pod/img", "v1"), Ok(true));
    assert_eq!(pull(&r, "pod/copy", "v1"), Ok(true));
    assert!(berth.stop().success());
    fsck_clean(&cfg, "after podman, oras, delete, restore and GC");
}

/// Distribution 2.8's GC removes the children of a kept index (they look untagged to it), so
/// there Berth keeps more; everything else both leave alike. Every repository keeps a tag:
/// on a bucket, Distribution 2.8's `garbage-collect --delete-untagged` stops with "unknown
/// repository" at a repository whose last tag went (there is no empty tags folder).
#[test]
fn gc_on_a_bucket_distribution_wrote_removes_what_distribution_removes_except_kept_index_children() {
    let server = S3Server::garage();
    let work = tempfile::tempdir().unwrap();
    let a = standard(&work.path().join("a"), 730);
    let b = standard(&work.path().join("b"), 731);
    let c = standard(&work.path().join("c"), 732);
    let keep = standard(&work.path().join("keep"), 733);
    // The same pushes and the same API deletes into two roots of one bucket.
    for root in ["/dist-gc", "/berth-gc"] {
        let dist = Distribution::start_storage(&s3_yaml(&server.options, root, "  delete:\n    enabled: true\n"), "");
        let h = &dist.addr;
        let push = |from: &Layout, name: &str, to: &str, all: bool| {
            let extra: &[&str] = if all { &["--all"] } else { &[] };
            copy(&format!("oci:{}:{name}", from.dir.display()), &format!("docker://{h}/{to}"), extra);
        };
        push(&a.layout, "img", "gc/one:v1", false);
        push(&a.layout, "img", "gc/one:v2", false);
        push(&b.layout, "multi", "gc/multi:v1", true);
        push(&c.layout, "img", "gc/three:v1", false);
        push(&a.layout, "img", "gc/copy:v1", false);
        push(&c.layout, "multi", "gc/gone:v1", true);
        for repo in ["gc/three", "gc/copy", "gc/gone"] {
            push(&keep.layout, "img", &format!("{repo}:keep"), false);
        }
        // Distribution 2.8 deletes by digest only: the manifest and every tag on it.
        let r = Reg::new(h, "distribution");
        for (repo, d) in [("gc/three", &c.image.digest), ("gc/copy", &a.image.digest), ("gc/gone", &c.index.digest)] {
            let del = r.req("DELETE", &format!("/v2/{repo}/manifests/{d}"), &[], b"");
            assert_eq!(del.status, 202, "{root}: delete {repo}@{d}: {}", String::from_utf8_lossy(&del.body));
        }
    }
    let (dist_store, berth_store) = (bucket_at(&server.options, "dist-gc"), bucket_at(&server.options, "berth-gc"));
    let before = bucket_blobs(&dist_store);
    assert_eq!(before, bucket_blobs(&berth_store), "both roots hold the same blobs before GC");

    let dist_cfg = work.path().join("dist-gc.yml");
    std::fs::write(&dist_cfg, format!("version: 0.1\nstorage:\n{}", s3_yaml(&server.options, "/dist-gc", ""))).unwrap();
    run(Command::new(distribution_bin())
        .args(["garbage-collect", "--delete-untagged"])
        .arg(&dist_cfg)
        // Its AWS SDK panics at start on this machine's AWS_CA_BUNDLE.
        .env_remove("AWS_CA_BUNDLE"));
    let berth_cfg = work.path().join("berth-gc.yml");
    std::fs::write(&berth_cfg, format!("storage:\n{}", s3_yaml(&server.options, "/berth-gc", ""))).unwrap();
    cli_ok(&["gc", "--config", &berth_cfg.display().to_string(), "--grace", "0s", "--untagged", "0s"]);

    let (left_dist, left_berth) = (bucket_blobs(&dist_store), bucket_blobs(&berth_store));
    let mut expected = BTreeSet::new();
    closure(&a.layout, &a.image.digest, &mut expected);
    closure(&b.layout, &b.index.digest, &mut expected);
    closure(&keep.layout, &keep.image.digest, &mut expected);
    assert_eq!(left_berth, expected, "Berth keeps exactly what the remaining tags reach");
    assert!(before.len() > left_berth.len(), "there was something to collect");
    assert!(
        left_dist.is_subset(&left_berth),
        "Distribution keeps nothing Berth removes: {:?}",
        left_dist.difference(&left_berth).collect::<Vec<_>>()
    );
    let mut children = BTreeSet::new();
    closure(&b.layout, &b.image.digest, &mut children);
    closure(&b.layout, &b.arm64.digest, &mut children);
    let only_berth: BTreeSet<String> = left_berth.difference(&left_dist).cloned().collect();
    assert!(
        !only_berth.is_empty() && only_berth.is_subset(&children),
        "the only difference is the kept index's children: {only_berth:?}"
    );

    // Berth serves what its GC left, the two-platform image whole.
    let cfg = work.path().join("serve-berth-gc.yml");
    let berth = serve_config(&cfg, &s3_yaml(&server.options, "/berth-gc", ""), NO_GC);
    for (tag, all) in [("gc/one:v2", false), ("gc/multi:v1", true)] {
        let out = Layout::new(&work.path().join(format!("pull-{}", tag.replace([':', '/'], "-"))));
        let extra: &[&str] = if all { &["--all"] } else { &[] };
        copy(&format!("docker://{}/{tag}", berth.addr), &format!("oci:{}:x", out.dir.display()), extra);
    }
    assert!(absent(&berth.addr, "gc/three:v1") && absent(&berth.addr, "gc/gone:v1"));
}
