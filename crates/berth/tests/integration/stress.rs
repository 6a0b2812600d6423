//! Concurrent pushes (sharing base layers), pulls, tag deletes and GC runs with a short grace
//! period, for a bounded time; then every tag that exists must pull whole, and every
//! acknowledged push whose tag still names it must be whole.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_oci::Digest;
use serde_json::json;

use crate::harness::{Berth, cli_ok};
use crate::image::noise;
use crate::protocol::{Reg, Resp};

const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
const RUN_FOR: Duration = Duration::from_secs(20);

/// Pushes base + unique layer + config (the blobs through `r`, the manifest through `m`, which
/// may be another replica); retries when GC raced it (MANIFEST_BLOB_UNKNOWN).
fn push(r: &Reg, m: &Reg, repo: &str, tag: &str, base: &[u8], unique: &[u8], raced: &AtomicU64) -> Digest {
    let via = m;
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "tag": tag})).unwrap();
    for _ in 0..5 {
        let descs: Vec<serde_json::Value> = [base, unique]
            .iter()
            .map(|l| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": r.push_blob(repo, l).to_string(), "size": l.len()}))
            .collect();
        let cd = r.push_blob(repo, &config);
        let m = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
            "layers": descs})).unwrap();
        let resp = via.req("PUT", &format!("/v2/{repo}/manifests/{tag}"), &[("Content-Type", OCI)], &m);
        match resp.status {
            201 => return Digest::sha256_of(&m),
            400 if resp.code() == "MANIFEST_BLOB_UNKNOWN" => {
                raced.fetch_add(1, Ordering::Relaxed);
            }
            s => panic!("push {repo}:{tag}: HTTP {s} {}", String::from_utf8_lossy(&resp.body)),
        }
    }
    panic!("push {repo}:{tag} lost five races in a row");
}

/// Pulls `reference` completely, verifying every digest. `Ok(false)`: it is gone (404).
pub(crate) fn pull(r: &Reg, repo: &str, reference: &str) -> Result<bool, String> {
    let m: Resp = r.req("GET", &format!("/v2/{repo}/manifests/{reference}"), &[("Accept", OCI)], b"");
    match m.status {
        200 => {}
        404 => return Ok(false),
        s => return Err(format!("manifest {repo}:{reference}: HTTP {s}")),
    }
    let digest = m.h("docker-content-digest").unwrap_or("").to_owned();
    if Digest::sha256_of(&m.body).to_string() != digest {
        return Err(format!("manifest {repo}:{reference} does not hash to {digest}"));
    }
    let v = m.json();
    let blobs = std::iter::once(&v["config"]).chain(v["layers"].as_array().unwrap().iter());
    for b in blobs {
        let d = b["digest"].as_str().unwrap();
        let resp = r.req("GET", &format!("/v2/{repo}/blobs/{d}"), &[], b"");
        match resp.status {
            200 if Digest::sha256_of(&resp.body).to_string() == d => {}
            200 => return Err(format!("blob {d} of {repo}:{reference} has wrong content")),
            404 => return Ok(false),
            s => return Err(format!("blob {d} of {repo}:{reference}: HTTP {s}")),
        }
    }
    Ok(true)
}

/// The `gc:` section the stress load expects its server to run with: no scheduled GC (the load
/// runs its own), a short grace period and no kept untagged manifests, so GC removes as much
/// as it may while pushes race it.
pub(crate) const STRESS_GC: &str = "gc:\n  interval: off\n  grace: 1s\n  untagged: 0s\n";

#[test]
fn i2_stress_pushes_pulls_deletes_and_gc_never_break_an_acknowledged_image() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut berth = Berth::start_on(&root, Some(STRESS_GC));
    stress(&mut berth, &["--root", &root.display().to_string()], "stress");
}

/// Runs concurrent pushes, pulls, tag deletes and GC runs against `berth` (started with
/// [`STRESS_GC`]) for [`RUN_FOR`]; checks that no pull saw broken content, that every tag pulls
/// whole and every acknowledged push still named by its tag is whole; then stops the server
/// and runs `berth fsck FSCK_ARGS` on its storage, which must find no damage.
pub(crate) fn stress(berth: &mut Berth, fsck_args: &[&str], label: &str) {
    stress_load(std::slice::from_ref(&berth.addr), label);
    berth.stop();
    fsck_finds_no_damage(fsck_args);
}

/// `berth fsck FSCK_ARGS` finds no damage.
pub(crate) fn fsck_finds_no_damage(fsck_args: &[&str]) {
    let fsck = cli_ok(&[&["fsck", "--json"], fsck_args].concat()).json();
    assert_eq!(fsck["damage"], 0, "{fsck}");
}

/// The load of [`stress`], spread over `addrs` (replicas of one registry): each pusher sends
/// its blobs to one and its manifests to the next, deletes, pulls and GC runs go round them
/// all, and a tag deleted through one must at once be gone from every one. Then the same
/// checks, through each replica in turn.
pub(crate) fn stress_load(addrs: &[String], label: &str) {
    let n_addrs = addrs.len();
    let addr = addrs[0].clone();
    let bases: Vec<Vec<u8>> = (0..3).map(|i| noise(200 + i, 48 << 10)).collect();
    let acked: Arc<Mutex<BTreeMap<(String, String), Digest>>> = Default::default();
    let deleted: Arc<Mutex<Vec<(String, String)>>> = Default::default();
    let (stop, raced, gc_blobs, gc_runs, pulls_ok) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let errors: Arc<Mutex<Vec<String>>> = Default::default();
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let (bases, acked, stop, raced) = (&bases, acked.clone(), stop.clone(), raced.clone());
            s.spawn(move || {
                let r = Reg::new(&addrs[t as usize % n_addrs], "berth");
                let m = Reg::new(&addrs[(t as usize + 1) % n_addrs], "berth");
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let repo = format!("stress/app{}", n % 4);
                    // Every third push moves `latest`, leaving an untagged manifest behind.
                    let tag = if n % 3 == 2 { format!("latest-{t}") } else { format!("p{t}-{n}") };
                    let d = push(&r, &m, &repo, &tag, &bases[(n % 3) as usize], &noise(1000 * t + n, 8 << 10), &raced);
                    acked.lock().unwrap().insert((repo, tag), d);
                    n += 1;
                }
            });
        }
        {
            let (acked, deleted, stop, errors) = (acked.clone(), deleted.clone(), stop.clone(), errors.clone());
            s.spawn(move || {
                let regs: Vec<Reg> = addrs.iter().map(|a| Reg::new(a, "berth")).collect();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(150));
                    let pick =
                        acked.lock().unwrap().keys().filter(|(_, t)| t.starts_with('p')).nth(i * 7 % 50).cloned();
                    i += 1;
                    if let Some((repo, tag)) = pick {
                        let r = &regs[i % n_addrs];
                        let resp = r.req("DELETE", &format!("/v2/{repo}/manifests/{tag}"), &[], b"");
                        assert!(resp.status == 202 || resp.status == 404, "delete: HTTP {}", resp.status);
                        // Gone everywhere the moment the delete is answered (each tag is pushed once).
                        for other in &regs {
                            let got = other.req("GET", &format!("/v2/{repo}/manifests/{tag}"), &[("Accept", OCI)], b"");
                            if got.status != 404 {
                                errors.lock().unwrap().push(format!(
                                    "{repo}:{tag} deleted through {} still answers {} through {}",
                                    r.addr, got.status, other.addr
                                ));
                            }
                        }
                        deleted.lock().unwrap().push((repo, tag));
                    }
                }
            });
        }
        for p in 0..2u64 {
            let (acked, stop, errors, pulls_ok) = (acked.clone(), stop.clone(), errors.clone(), pulls_ok.clone());
            s.spawn(move || {
                let r = Reg::new(&addrs[(p as usize + 2) % n_addrs], "berth");
                let mut i = p as usize;
                while !stop.load(Ordering::Relaxed) {
                    let pick = {
                        let a = acked.lock().unwrap();
                        if a.is_empty() { None } else { a.keys().nth(i % a.len()).cloned() }
                    };
                    i += 3;
                    if let Some((repo, tag)) = pick {
                        match pull(&r, &repo, &tag) {
                            Ok(true) => {
                                pulls_ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(false) => {}
                            Err(e) => errors.lock().unwrap().push(e),
                        }
                    }
                }
            });
        }
        {
            let (stop, gc_blobs, gc_runs) = (stop.clone(), gc_blobs.clone(), gc_runs.clone());
            s.spawn(move || {
                let mut k = n_addrs.saturating_sub(1);
                while !stop.load(Ordering::Relaxed) {
                    let r = Reg::new(&addrs[k % n_addrs], "berth");
                    k += 1;
                    let resp = r.req("POST", "/api/gc", &[], b"");
                    assert_eq!(resp.status, 200, "gc: {}", String::from_utf8_lossy(&resp.body));
                    gc_blobs.fetch_add(resp.json()["blobs"].as_u64().unwrap(), Ordering::Relaxed);
                    gc_runs.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        while started.elapsed() < RUN_FOR {
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
    });

    let errors = errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "pulls saw broken content, or deleted tags lingered:\n{}", errors.join("\n"));
    let r = Reg::new(&addr, "berth");
    let last = r.req("POST", "/api/gc", &[], b"").json();
    let acked = acked.lock().unwrap().clone();
    let deleted = deleted.lock().unwrap().clone();
    assert!(acked.len() > 30, "only {} pushes in {RUN_FOR:?}", acked.len());
    assert!(
        gc_runs.load(Ordering::Relaxed) > 10 && gc_blobs.load(Ordering::Relaxed) + last["blobs"].as_u64().unwrap() > 0,
        "GC never collected anything: {} runs, {} blobs, last {last}",
        gc_runs.load(Ordering::Relaxed),
        gc_blobs.load(Ordering::Relaxed)
    );
    assert!(pulls_ok.load(Ordering::Relaxed) > 10);

    // Every tag that exists pulls whole, through every replica.
    let mut tags_seen = 0;
    for a in addrs {
        let r = Reg::new(a, "berth");
        for repo in r.req("GET", "/v2/_catalog", &[], b"").json()["repositories"].as_array().unwrap() {
            let repo = repo.as_str().unwrap();
            for tag in r.req("GET", &format!("/v2/{repo}/tags/list"), &[], b"").json()["tags"].as_array().unwrap() {
                let tag = tag.as_str().unwrap();
                assert_eq!(pull(&r, repo, tag), Ok(true), "{repo}:{tag} exists but does not pull whole through {a}");
                tags_seen += 1;
            }
        }
    }
    // Every acknowledged push is whole while its tag still names it, and restorable when deleted.
    for ((repo, tag), d) in &acked {
        if deleted.contains(&(repo.clone(), tag.clone())) {
            continue;
        }
        let current = r.req("HEAD", &format!("/v2/{repo}/manifests/{tag}"), &[("Accept", OCI)], b"");
        if current.h("docker-content-digest") == Some(d.to_string().as_str()) {
            assert_eq!(pull(&r, repo, &d.to_string()), Ok(true), "acknowledged {repo}:{tag} ({d}) is not whole");
        }
    }
    let trash = cli_ok(&["trash", "--json", "--url", &format!("http://{addr}")]).json();
    assert!(!trash.as_array().unwrap().is_empty());
    eprintln!(
        "{label}: {} pushes ({} raced GC and retried), {} deletes, {} good pulls, {} GC runs removing {} blobs, {tags_seen} tags verified",
        acked.len(),
        raced.load(Ordering::Relaxed),
        deleted.len(),
        pulls_ok.load(Ordering::Relaxed),
        gc_runs.load(Ordering::Relaxed),
        gc_blobs.load(Ordering::Relaxed)
    );
}

/// Issue 8: a repository delete looping against pushes into that same repository. Each push
/// lands before a delete (and goes to the trash with it) or after it (into a fresh
/// repository); uploads in flight complete, a manifest whose blobs went with a delete is
/// refused (the client pushes them again), and nobody ever sees a 5xx.
#[test]
fn repository_delete_racing_pushes_into_it_never_answers_5xx() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut berth = Berth::start_on(&root, Some("gc:\n  interval: off\n"));
    let addr = berth.addr.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let statuses: Arc<Mutex<BTreeMap<String, u64>>> = Default::default();
    let count = |statuses: &Mutex<BTreeMap<String, u64>>, what: String| {
        *statuses.lock().unwrap().entry(what).or_default() += 1;
    };
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let (addr, stop, statuses) = (addr.clone(), stop.clone(), statuses.clone());
            s.spawn(move || {
                let r = Reg::new(&addr, "berth");
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let data = noise(t * 1_000_000 + n, 32 << 10);
                    let d = Digest::sha256_of(&data);
                    let start = r.req("POST", "/v2/race/app/blobs/uploads/", &[], b"");
                    count(&statuses, format!("upload start {}", start.status));
                    let Some(loc) = start.h("location").map(str::to_owned) else { continue };
                    let (first, rest) = data.split_at(data.len() / 2);
                    let patch = r.req("PATCH", &loc, &[("Content-Range", &format!("0-{}", first.len() - 1))], first);
                    count(&statuses, format!("upload chunk {} {}", patch.status, code_of(&patch)));
                    let put = r.req("PUT", &format!("{loc}?digest={d}"), &[], rest);
                    count(&statuses, format!("upload finish {} {}", put.status, code_of(&put)));
                    let config = serde_json::to_vec(&json!({"os": "linux", "n": n, "t": t})).unwrap();
                    let cd = Digest::sha256_of(&config);
                    let post = r.req("POST", &format!("/v2/race/app/blobs/uploads/?digest={cd}"), &[], &config);
                    count(&statuses, format!("upload monolithic {} {}", post.status, code_of(&post)));
                    let m = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI,
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
                        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": data.len()}]}))
                    .unwrap();
                    let put = r.req("PUT", &format!("/v2/race/app/manifests/t{t}-{n}"), &[("Content-Type", OCI)], &m);
                    count(&statuses, format!("manifest {} {}", put.status, code_of(&put)));
                }
            });
        }
        {
            let (addr, stop, statuses) = (addr.clone(), stop.clone(), statuses.clone());
            s.spawn(move || {
                let r = Reg::new(&addr, "berth");
                while !stop.load(Ordering::Relaxed) {
                    let del = r.req("DELETE", "/api/repositories/race/app", &[], b"");
                    count(&statuses, format!("repository delete {} {}", del.status, code_of(&del)));
                    std::thread::sleep(Duration::from_millis(40));
                }
            });
        }
        while started.elapsed() < Duration::from_secs(8) {
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let statuses = statuses.lock().unwrap().clone();
    let summary = format!("{statuses:#?}");
    let of = |prefix: &str| statuses.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, n)| n).sum::<u64>();
    for (what, n) in &statuses {
        let status: u16 = what.split(' ').find_map(|w| w.parse().ok()).unwrap();
        assert!(status < 500, "{n} × {what}: a 5xx\n{summary}\nlog:\n{}", berth.log());
        let expected = [
            "upload start 202",
            "upload chunk 202 ",
            "upload finish 201 ",
            "upload monolithic 201 ",
            "manifest 201 ",
            "manifest 400 MANIFEST_BLOB_UNKNOWN",
            "repository delete 202 ",
            "repository delete 404 NAME_UNKNOWN",
        ];
        assert!(expected.contains(&what.as_str()), "unexpected answer {n} × {what}\n{summary}");
    }
    assert!(of("manifest 201") > 10 && of("repository delete 202") > 10, "too little happened:\n{summary}");
    eprintln!("repository delete vs pushes: {summary}");
    berth.stop();
    let fsck = cli_ok(&["fsck", "--root", &root.display().to_string(), "--json"]).json();
    assert_eq!(fsck["damage"], 0, "{fsck}");
}

fn code_of(r: &Resp) -> String {
    if r.status < 400 { String::new() } else { r.code() }
}
