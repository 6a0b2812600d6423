//! Several `berth serve` replicas on one Garage bucket, coordinated through one throwaway
//! PostgreSQL: the schema is migrated by `berth db migrate` and checked at every start; a blob
//! uploaded through one replica and its manifest through another make a whole image; a chunked
//! upload moves between replicas; a tag moved or deleted through one is moved or gone through
//! every other at once; GC on one replica and restore on another; the concurrent stress load
//! spread over three replicas; then fsck through the database finds no damage.

use std::path::{Path, PathBuf};

use berth_db::testserver::TestPg;
use berth_oci::Digest;
use berth_storage::testservers::S3Server;

use crate::clients::{copy, pull, served_digest};
use crate::harness::{Berth, Distribution, cli, cli_ok, serve_refused};
use crate::image::{Layout, noise, standard};
use crate::protocol::Reg;
use crate::s3::storage_yaml;
use crate::stress::{STRESS_GC, fsck_finds_no_damage, stress_load};

const OCI: &str = "application/vnd.oci.image.manifest.v1+json";

/// The `database:` section for `url`.
fn database_yaml(url: &str) -> String {
    format!("database:\n  enabled: true\n  url: {url}\n")
}

/// A config file on the bucket of `s3` and the database at `url`, with `sections` (GC);
/// `berth db migrate` applied unless `migrate` is false.
fn replica_config(dir: &Path, s3: &S3Server, url: &str, sections: &str, migrate: bool) -> PathBuf {
    let cfg = dir.join("replica.yml");
    std::fs::write(&cfg, format!("storage:\n{}{sections}{}", storage_yaml(s3, ""), database_yaml(url))).unwrap();
    if migrate {
        let out = cli_ok(&["db", "migrate", "--config", &cfg.display().to_string()]);
        assert!(out.stdout.contains("applied migration 1") || out.stdout.contains("current"), "{}", out.stdout);
        // An empty bucket: the index is filled at once, and GC, accounting and the catalog
        // read it from here on.
        let out = cli_ok(&["db", "import", "--config", &cfg.display().to_string()]);
        assert!(out.stdout.contains("the metadata index is ready"), "{}", out.stdout);
    }
    cfg
}

/// Runs `berth fsck` through the database: no damage, and the metadata index lacks nothing
/// the bucket has (rows it has in excess count only once older than the reconcile margin).
fn fsck_finds_index_in_step(cfg: &Path) {
    fsck_finds_no_damage(&["--config", &cfg.display().to_string()]);
    let fsck = cli_ok(&["fsck", "--json", "--config", &cfg.display().to_string()]).json();
    let out_of_step: Vec<_> =
        fsck["findings"].as_array().unwrap().iter().filter(|f| f["kind"] == "index-out-of-step").collect();
    assert!(out_of_step.is_empty(), "the index disagrees with the bucket: {out_of_step:?}");
}

/// A PostgreSQL, a Garage and a migrated replica config on them (GC as `sections` says).
struct Cluster {
    cfg: PathBuf,
    s3: S3Server,
    _pg: TestPg,
    _work: tempfile::TempDir,
}

impl Cluster {
    fn new(sections: &str) -> Cluster {
        let pg = TestPg::start();
        let s3 = S3Server::garage();
        let work = tempfile::tempdir().unwrap();
        let cfg = replica_config(work.path(), &s3, &pg.url(&pg.database()), sections, true);
        Cluster { cfg, s3, _pg: pg, _work: work }
    }
}

/// `n` replicas on one config.
fn replicas(cfg: &Path, n: usize) -> Vec<Berth> {
    (0..n)
        .map(|_| {
            Berth::spawn(None, &["--addr".into(), "127.0.0.1:0".into(), "--config".into(), cfg.display().to_string()])
        })
        .collect()
}

fn manifest_digest(r: &Reg, repo: &str, reference: &str) -> Option<String> {
    let m = r.req("GET", &format!("/v2/{repo}/manifests/{reference}"), &[("Accept", OCI)], b"");
    match m.status {
        200 => Some(Digest::sha256_of(&m.body).to_string()),
        404 => None,
        s => panic!("GET {repo}:{reference} through {}: HTTP {s} {}", r.addr, String::from_utf8_lossy(&m.body)),
    }
}

fn catalog(r: &Reg) -> Vec<String> {
    r.req("GET", "/v2/_catalog", &[], b"").json()["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn berth_db_migrate_is_needed_once_and_every_start_checks_the_schema() {
    let pg = TestPg::start();
    let s3 = S3Server::garage();
    let work = tempfile::tempdir().unwrap();
    let url = pg.url(&pg.database());
    let cfg = replica_config(work.path(), &s3, &url, "gc:\n  interval: off\n", false);
    let c = cfg.display().to_string();

    let status = cli(&["db", "status", "--config", &c]);
    assert_ne!(status.code, 0);
    assert!(status.stderr.contains("no Berth schema"), "{}", status.stderr);
    let refused = serve_refused(&cfg);
    assert!(refused.contains("berth db migrate"), "a replica never starts on an unmigrated database: {refused}");

    let first = cli_ok(&["db", "migrate", "--config", &c]);
    assert!(first.stdout.contains("applied migration 1 (coordination)"), "{}", first.stdout);
    let again = cli_ok(&["db", "migrate", "--config", &c]);
    assert!(again.stdout.contains("the schema is current"), "{}", again.stdout);
    assert!(cli_ok(&["db", "status", "--config", &c]).stdout.contains("current"));
    let mut b = replicas(&cfg, 1).pop().unwrap();
    assert!(b.log().contains("coordinating through PostgreSQL"), "{}", b.log());
    b.stop();

    // A schema a newer Berth migrated: this one refuses to run on it.
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    admin.execute("INSERT INTO berth_schema (version, name) VALUES (99, 'from the future')", &[]).unwrap();
    let refused = serve_refused(&cfg);
    assert!(refused.contains("newer than this Berth knows"), "{refused}");
    assert_ne!(cli(&["db", "status", "--config", &c]).code, 0);
    assert_ne!(cli(&["db", "migrate", "--config", &c]).code, 0, "migrate does not go backwards");

    // A database that cannot be reached fails the start with the reason, not a hang.
    let dead = work.path().join("dead.yml");
    let port = crate::harness::free_port();
    std::fs::write(
        &dead,
        format!(
            "storage:\n{}{}",
            storage_yaml(&s3, ""),
            database_yaml(&format!("postgres://postgres@127.0.0.1:{port}/x"))
        ),
    )
    .unwrap();
    let refused = serve_refused(&dead);
    assert!(refused.contains("PostgreSQL"), "{refused}");

    // A replica refuses to start beside a Berth serving the bucket without the database.
    let other = crate::s3::s3_yaml(&s3.options, "/other", "");
    let lone = crate::s3::serve_config(&work.path().join("lone.yml"), &other, "gc:\n  interval: off\n");
    let fresh = work.path().join("fresh.yml");
    std::fs::write(&fresh, format!("storage:\n{other}{}", database_yaml(&pg.url(&pg.database())))).unwrap();
    cli_ok(&["db", "migrate", "--config", &fresh.display().to_string()]);
    let refused = serve_refused(&fresh);
    assert!(refused.contains("without the database; refusing"), "{refused}");
    drop(lone);
}

#[test]
fn two_replicas_serve_one_bucket_as_one_registry() {
    let cluster = Cluster::new(
        "gc:
  interval: off
  grace: 0s
  untagged: 0s
",
    );
    let cfg = &cluster.cfg;
    let mut reps = replicas(cfg, 2);
    let (a, b) = (Reg::new(&reps[0].addr, "replica a"), Reg::new(&reps[1].addr, "replica b"));

    // A Berth without the database is kept off the bucket while the replicas serve it.
    let alone = cfg.with_extension("alone.yml");
    std::fs::write(&alone, format!("storage:\n{}", storage_yaml(&cluster.s3, ""))).unwrap();
    let refused = serve_refused(&alone);
    assert!(refused.contains("replicas coordinated through postgres://"), "{refused}");

    // Blobs through one replica, the manifest through the other.
    let layer = noise(1, 300 << 10);
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let (ld, cd) = (a.push_blob("rep/app", &layer), a.push_blob("rep/app", &config));
    let manifest = |cd: &Digest, ld: &Digest, n: usize| {
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": OCI,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld.to_string(), "size": n}]}))
        .unwrap()
    };
    let m1 = manifest(&cd, &ld, layer.len());
    b.put_manifest("rep/app", "v1", &m1, OCI);
    let d1 = Digest::sha256_of(&m1).to_string();
    for r in [&a, &b] {
        assert_eq!(manifest_digest(r, "rep/app", "v1").as_deref(), Some(d1.as_str()), "through {}", r.label);
        let got = r.req("GET", &format!("/v2/rep/app/blobs/{ld}"), &[], b"");
        assert_eq!((got.status, Digest::sha256_of(&got.body)), (200, ld.clone()), "through {}", r.label);
        assert_eq!(catalog(r), ["rep/app"], "through {}", r.label);
    }

    // A chunked upload that hops between replicas at every request.
    // Under 10 MiB, the test client's body limit: the pulls below read it whole.
    let big = noise(2, 9 << 20);
    let start = a.req("POST", "/v2/rep/app/blobs/uploads/", &[], b"");
    assert_eq!(start.status, 202);
    let mut loc = start.h("location").unwrap().to_owned();
    let chunks: Vec<&[u8]> = big.chunks(3 << 20).collect();
    let mut offset = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        let via = if i % 2 == 0 { &b } else { &a };
        let range = format!("{offset}-{}", offset + chunk.len() - 1);
        let r =
            via.req("PATCH", &loc, &[("Content-Range", &range), ("Content-Type", "application/octet-stream")], chunk);
        assert_eq!(r.status, 202, "chunk {i} through {}: {}", via.label, String::from_utf8_lossy(&r.body));
        offset += chunk.len();
        assert_eq!(r.h("range"), Some(format!("0-{}", offset - 1).as_str()));
        loc = r.h("location").unwrap().to_owned();
    }
    let bd = Digest::sha256_of(&big);
    let sep = if loc.contains('?') { '&' } else { '?' };
    let done = b.req("PUT", &format!("{loc}{sep}digest={bd}"), &[], b"");
    assert_eq!(done.status, 201, "{}", String::from_utf8_lossy(&done.body));
    let head = a.req("HEAD", &format!("/v2/rep/app/blobs/{bd}"), &[], b"");
    assert_eq!((head.status, head.h("content-length")), (200, Some(big.len().to_string().as_str())));

    // A tag moved through one replica is moved through the other at once, even right after
    // the other served (and remembered) it.
    let m2 = manifest(&cd, &bd, big.len());
    let d2 = Digest::sha256_of(&m2).to_string();
    for _ in 0..3 {
        assert_eq!(manifest_digest(&b, "rep/app", "v1").as_deref(), Some(d1.as_str()));
    }
    a.put_manifest("rep/app", "v1", &m2, OCI);
    assert_eq!(manifest_digest(&b, "rep/app", "v1").as_deref(), Some(d2.as_str()), "b serves the moved tag at once");
    b.put_manifest("rep/app", "keep", &m1, OCI);

    // Deleted through one, gone through the other at once.
    assert_eq!(manifest_digest(&b, "rep/app", "keep").as_deref(), Some(d1.as_str()));
    assert_eq!(a.req("DELETE", "/v2/rep/app/manifests/keep", &[], b"").status, 202);
    assert_eq!(manifest_digest(&b, "rep/app", "keep"), None, "b still serves a tag deleted through a");

    // A repository pushed through one appears in the other's catalog at once; deleted through
    // the other, it leaves both.
    a.push_image("rep/other", "x", 7);
    assert_eq!(catalog(&b), ["rep/app", "rep/other"]);
    let del = b.req("DELETE", "/api/repositories/rep/other", &[], b"");
    assert!(del.status == 200 || del.status == 202, "{} {}", del.status, String::from_utf8_lossy(&del.body));
    assert_eq!(catalog(&a), ["rep/app"]);

    // GC through b collects a blob uploaded through a that no manifest names, and nothing a
    // tag or the trash holds; the repository's trash entry restores through a and pulls
    // whole through b.
    let orphan = a.push_blob("rep/app", &noise(3, 2000));
    let gc = b.req("POST", "/api/gc?untagged=0s&grace=0s", &[], b"");
    assert_eq!(gc.status, 200, "{}", String::from_utf8_lossy(&gc.body));
    assert!(gc.json()["blobs"].as_u64().unwrap() >= 1, "{}", gc.json());
    assert_eq!(a.req("HEAD", &format!("/v2/rep/app/blobs/{orphan}"), &[], b"").status, 404);
    let restored = a.req("POST", "/api/restore?repository=rep/other", &[], b"");
    assert_eq!(restored.status, 200, "{}", String::from_utf8_lossy(&restored.body));
    assert_eq!(crate::stress::pull(&b, "rep/other", "x"), Ok(true));
    assert_eq!(catalog(&b), ["rep/app", "rep/other"]);
    for r in [&a, &b] {
        assert_eq!(manifest_digest(r, "rep/app", "v1").as_deref(), Some(d2.as_str()));
        assert_eq!(crate::stress::pull(r, "rep/app", "v1"), Ok(true), "through {}", r.label);
    }

    for r in &mut reps {
        r.stop();
    }
    fsck_finds_index_in_step(cfg);
}

#[test]
fn stress_over_three_replicas_never_breaks_an_image_nor_shows_a_deleted_tag() {
    let cluster = Cluster::new(STRESS_GC);
    let cfg = &cluster.cfg;
    let mut reps = replicas(cfg, 3);
    let addrs: Vec<String> = reps.iter().map(|r| r.addr.clone()).collect();
    stress_load(&addrs, "stress over three replicas");
    for r in &mut reps {
        r.stop();
    }
    fsck_finds_index_in_step(cfg);
}

#[test]
fn a_replica_killed_mid_upload_and_mid_gc_leaves_the_others_to_finish() {
    let cluster = Cluster::new(
        "gc:
  interval: off
  grace: 0s
  untagged: 0s
",
    );
    let (cfg, s3) = (&cluster.cfg, &cluster.s3);
    let mut reps = replicas(cfg, 3);
    let regs: Vec<Reg> = reps.iter().map(|r| Reg::new(&r.addr, "replica")).collect();
    let kept = regs[2].push_image("keep/app", "v1", 11);

    // A chunked upload begun through replica 0, which is killed after its first chunk: the
    // rest goes through replica 1.
    let big = noise(20, 11 << 20);
    let (first, rest) = big.split_at(6 << 20);
    let start = regs[0].req("POST", "/v2/keep/app/blobs/uploads/", &[], b"");
    let loc = start.h("location").unwrap().to_owned();
    let r = regs[0].req("PATCH", &loc, &[("Content-Range", &format!("0-{}", first.len() - 1))], first);
    assert_eq!(r.status, 202);
    let loc = r.h("location").unwrap().to_owned();
    reps[0].kill9();
    let r = regs[1].req("PATCH", &loc, &[("Content-Range", &format!("{}-{}", first.len(), big.len() - 1))], rest);
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let d = Digest::sha256_of(&big);
    let sep = if loc.contains('?') { '&' } else { '?' };
    let done = regs[1].req("PUT", &format!("{}{sep}digest={d}", r.h("location").unwrap()), &[], b"");
    assert_eq!(
        done.status,
        201,
        "the upload finishes through another replica: {}",
        String::from_utf8_lossy(&done.body)
    );
    let got = regs[2].req("HEAD", &format!("/v2/keep/app/blobs/{d}"), &[], b"");
    assert_eq!((got.status, got.h("content-length")), (200, Some(big.len().to_string().as_str())));

    // Garbage enough that a sweep takes a while, put straight into the bucket.
    let store = crate::s3::bucket(s3);
    let orphans: Vec<Digest> = (0..3000).map(|i| Digest::sha256_of(format!("orphan {i}").as_bytes())).collect();
    std::thread::scope(|s| {
        for t in 0..8 {
            let (store, orphans) = (&store, &orphans);
            s.spawn(move || {
                for (i, o) in orphans.iter().enumerate().skip(t).step_by(8) {
                    use berth_storage::Backend;
                    store.put(&crate::s3::blob_key(o), format!("orphan {i}").as_bytes()).unwrap();
                }
            });
        }
    });
    // Garbage written behind Berth's back is unknown to the index until it is reconciled.
    let imported = cli_ok(&["db", "import", "--config", &cfg.display().to_string()]);
    assert!(imported.stdout.contains("blobs: 3000 added"), "{}", imported.stdout);
    // GC through replica 1, killed once its sweep has begun; GC through replica 2 takes over
    // at once (the dead replica's GC lock went with its connection) and finishes.
    let sample: Vec<&Digest> = orphans.iter().step_by(125).collect();
    let exists = |d: &Digest| {
        use berth_storage::BackendExt;
        store.exists(&crate::s3::blob_key(d)).unwrap()
    };
    std::thread::scope(|s| {
        let addr = reps[1].addr.clone();
        let gc = s.spawn(move || {
            crate::harness::http().post(format!("http://{addr}/api/gc?grace=0s&untagged=0s")).send_empty().is_ok()
        });
        let began = std::time::Instant::now();
        while sample.iter().all(|d| exists(d)) {
            assert!(began.elapsed() < std::time::Duration::from_secs(60), "the GC removed nothing in a minute");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        reps[1].kill9();
        assert!(!gc.join().unwrap(), "the GC answered before it was killed: give it more garbage");
    });
    let took = std::time::Instant::now();
    let gc = regs[2].req("POST", "/api/gc?grace=0s&untagged=0s", &[], b"");
    assert_eq!(gc.status, 200, "{}", String::from_utf8_lossy(&gc.body));
    let waited = took.elapsed();
    assert!(orphans.iter().all(|d| !exists(d)), "the second GC removed every orphan");
    assert_eq!(crate::stress::pull(&regs[2], "keep/app", "v1"), Ok(true));
    assert_eq!(
        manifest_digest(&regs[2], "keep/app", "v1"),
        Some(Digest::sha256_of(&kept).to_string()),
        "what a tag holds stays"
    );
    eprintln!("gc takeover: the second GC answered {waited:?} after the first GC's replica was killed");
    reps[2].stop();
    fsck_finds_index_in_step(cfg);
}

#[test]
fn postgresql_stopped_mid_pushes_fails_writes_clearly_and_they_resume() {
    let pg = TestPg::start();
    let s3 = S3Server::garage();
    let work = tempfile::tempdir().unwrap();
    let url = pg.url(&pg.database());
    let cfg = work.path().join("replica.yml");
    std::fs::write(
        &cfg,
        format!(
            "storage:\n{}gc:\n  interval: off\n{}  connecttimeout: 1s\n",
            storage_yaml(&s3, ""),
            database_yaml(&url)
        ),
    )
    .unwrap();
    cli_ok(&["db", "migrate", "--config", &cfg.display().to_string()]);
    cli_ok(&["db", "import", "--config", &cfg.display().to_string()]);
    let mut reps = replicas(&cfg, 2);
    let regs: Vec<Reg> = reps.iter().map(|r| Reg::new(&r.addr, "replica")).collect();
    regs[0].push_image("pg/app", "before", 1);

    let acked = std::sync::Mutex::new(Vec::new());
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<u16, u64>::new());
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..2usize {
            let (regs, acked, statuses, stop) = (&regs, &acked, &statuses, &stop);
            s.spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let (r, m) = (&regs[t], &regs[1 - t]);
                    let layer = noise(1000 * t as u64 + n, 4 << 10);
                    let up = r.req("POST", "/v2/pg/app/blobs/uploads/", &[], b"");
                    let put = up.h("location").map(|loc| {
                        let sep = if loc.contains('?') { '&' } else { '?' };
                        r.req("PUT", &format!("{loc}{sep}digest={}", Digest::sha256_of(&layer)), &[], &layer)
                    });
                    let status = match put {
                        Some(p) if p.status == 201 => {
                            let tag = format!("t{t}-{n}");
                            let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"n\":\"{tag}\"}}");
                            let resp = (|| {
                                let cd = Digest::sha256_of(config.as_bytes());
                                let up = r.req("POST", "/v2/pg/app/blobs/uploads/", &[], b"");
                                let loc = up.h("location")?.to_owned();
                                let sep = if loc.contains('?') { '&' } else { '?' };
                                let c = r.req("PUT", &format!("{loc}{sep}digest={cd}"), &[], config.as_bytes());
                                if c.status != 201 {
                                    return Some(c.status);
                                }
                                let manifest = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": OCI,
                                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
                                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": Digest::sha256_of(&layer).to_string(), "size": layer.len()}]})).unwrap();
                                let p = m.req("PUT", &format!("/v2/pg/app/manifests/{tag}"), &[("Content-Type", OCI)], &manifest);
                                if p.status == 201 {
                                    acked.lock().unwrap().push((tag.clone(), Digest::sha256_of(&manifest).to_string()));
                                }
                                Some(p.status)
                            })();
                            resp.unwrap_or(up.status)
                        }
                        Some(p) => p.status,
                        None => up.status,
                    };
                    *statuses.lock().unwrap().entry(status).or_default() += 1;
                }
            });
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
        pg.stop();
        // Reads go on while the database is down: blobs and tags come from the bucket.
        for r in regs.iter() {
            assert_eq!(
                crate::stress::pull(r, "pg/app", "before"),
                Ok(true),
                "pull through {} with PostgreSQL down",
                r.addr
            );
        }
        std::thread::sleep(std::time::Duration::from_secs(3));
        pg.restart();
        std::thread::sleep(std::time::Duration::from_secs(4));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let statuses = statuses.into_inner().unwrap();
    eprintln!("pushes with PostgreSQL stopped for 3 s: {statuses:?}");
    assert!(statuses.keys().all(|s| [201, 202, 503].contains(s)), "only success or 503: {statuses:?}");
    assert!(statuses.get(&503).copied().unwrap_or(0) > 0, "writes failed while the database was down: {statuses:?}");
    // Pushes work again through both replicas, and every acknowledged image pulls whole.
    regs[0].push_image("pg/app", "after-a", 2);
    regs[1].push_image("pg/app", "after-b", 3);
    let acked = acked.into_inner().unwrap();
    assert!(acked.len() > 5, "{acked:?}");
    for (tag, d) in &acked {
        for r in &regs {
            assert_eq!(manifest_digest(r, "pg/app", tag).as_deref(), Some(d.as_str()), "{tag} through {}", r.addr);
            assert_eq!(crate::stress::pull(r, "pg/app", tag), Ok(true));
        }
    }
    for r in &mut reps {
        r.stop();
    }
    // Whatever the outage interrupted, the index lacks no tag or manifest the bucket has (it
    // would no longer be read if it did); a blob stored just before the database went is at
    // worst unknown to it, which a repair mends.
    fsck_finds_no_damage(&["--config", &cfg.display().to_string()]);
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    assert!(index_ready(&mut admin), "{}", cli_ok(&["fsck", "--json", "--config", &cfg.display().to_string()]).stdout);
    cli_ok(&["fsck", "--repair", "--config", &cfg.display().to_string()]);
    fsck_finds_index_in_step(&cfg);
}

fn index_ready(admin: &mut postgres::Client) -> bool {
    admin.query_one("SELECT ready FROM index_state", &[]).unwrap().get(0)
}

/// `berth db import` fills the metadata index from a bucket Distribution wrote; a replica
/// serves it, and GC through the index removes what a listing would, without listing. Then
/// an index that disagrees with the bucket: `fsck` finds it and stops GC from trusting it (GC
/// lists the bucket and breaks nothing), and `fsck --repair` brings it back in step.
#[test]
fn berth_db_import_of_a_distribution_bucket_then_gc_and_fsck_through_the_index() {
    let pg = TestPg::start();
    let s3 = S3Server::garage();
    let work = tempfile::tempdir().unwrap();
    let src = standard(&work.path().join("src"), 712);
    let orphan = {
        let dist = Distribution::start_storage(&storage_yaml(&s3, "  delete:\n    enabled: true\n"), "");
        let da = &dist.addr;
        let oci = |name: &str| format!("oci:{}:{name}", src.layout.dir.display());
        copy(&oci("img"), &format!("docker://{da}/dist/app:v1"), &[]);
        copy(&oci("multi"), &format!("docker://{da}/dist/app:multi"), &["--all"]);
        copy(&oci("img"), &format!("docker://{da}/dist/other:old"), &[]);
        assert_eq!(served_digest(&format!("{da}/dist/app:multi")), src.index.digest, "{}", dist.log());
        Reg::new(da, "distribution").push_blob("dist/app", &noise(9, 4000))
    };
    let url = pg.url(&pg.database());
    let cfg = replica_config(work.path(), &s3, &url, "gc:\n  interval: off\n", false);
    let c = cfg.display().to_string();
    cli_ok(&["db", "migrate", "--config", &c]);
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    assert!(!index_ready(&mut admin), "an index never imported is not read");

    let imported = cli_ok(&["db", "import", "--config", &c]);
    // 3 layers and 1 config per platform (the base layer shared), 3 manifests, the orphan.
    assert!(
        imported.stdout.contains("listed: 2 repositories, 3 tags, 4 revisions"),
        "{}\n{}",
        imported.stdout,
        imported.stderr
    );
    assert!(imported.stdout.contains("10 blobs"), "{}", imported.stdout);
    assert!(imported.stdout.contains("tags: 3 added, 0 removed"), "{}", imported.stdout);
    assert!(imported.stderr.contains("import: blob folders:"), "progress is reported: {}", imported.stderr);
    assert!(index_ready(&mut admin));
    let again = cli_ok(&["db", "import", "--config", &c]);
    assert!(again.stdout.contains("tags: 0 added, 0 removed, 0 re-pointed"), "{}", again.stdout);
    assert!(again.stdout.contains("blobs: 0 added, 0 removed"), "{}", again.stdout);

    let mut reps = replicas(&cfg, 1);
    let a = &reps[0].addr.clone();
    let r = Reg::new(a, "replica");
    assert_eq!(catalog(&r), ["dist/app", "dist/other"]);
    assert_eq!(served_digest(&format!("{a}/dist/app:multi")), src.index.digest);
    assert_eq!(pull(a, "dist/app:v1", &Layout::new(&work.path().join("out")), "v1"), src.image.digest);

    // GC through the index: only the orphan goes, with fewer requests than a listing needs.
    let gc = r.req("POST", "/api/gc?grace=0s&untagged=0s", &[], b"").json();
    assert_eq!((gc["blobs"].as_u64(), gc["bytes_freed"].as_u64()), (Some(1), Some(4000)), "{gc}");
    assert_eq!(r.req("HEAD", &format!("/v2/dist/app/blobs/{orphan}"), &[], b"").status, 404);
    let listing = r.req("POST", "/api/gc?grace=0s&untagged=0s&list_storage=true", &[], b"").json();
    assert_eq!(listing["blobs"], 0, "the index missed nothing a listing finds: {listing}");
    let (by_index, by_listing) = (gc["store_requests"].as_u64().unwrap(), listing["store_requests"].as_u64().unwrap());
    assert!(by_index < by_listing, "GC through the index sent {by_index} requests, a listing {by_listing}");
    eprintln!("gc requests to the bucket: {by_index} through the index, {by_listing} listing it");

    // An index out of step: dist/other's tag is missing from it (GC through it would collect
    // the tagged manifest), it names a manifest the bucket lacks, and lacks a blob.
    admin.execute("DELETE FROM index_tags WHERE repo = 'dist/other'", &[]).unwrap();
    let ghost = Digest::sha256_of(b"never pushed").to_string();
    admin
        .execute(
            "INSERT INTO index_revisions (repo, digest, at) VALUES ('dist/app', $1, now() - interval '1 hour')",
            &[&ghost],
        )
        .unwrap();
    let version = src.layers[2].digest.to_string();
    assert_eq!(admin.execute("DELETE FROM index_blobs WHERE digest = $1", &[&version]).unwrap(), 1);
    let found = cli_ok(&["fsck", "--json", "--config", &c]).json();
    let finding = found["findings"].as_array().unwrap().iter().find(|f| f["kind"] == "index-out-of-step").cloned();
    let message = finding.as_ref().map(|f| f["message"].as_str().unwrap().to_owned()).unwrap_or_default();
    for part in ["tags: 1 missing", "revisions: 1 extra", "blobs: 1 missing"] {
        assert!(message.contains(part), "fsck says {part}: {found}");
    }
    assert!(!index_ready(&mut admin), "an index lacking a tag is no longer read");
    let gc = r.req("POST", "/api/gc?grace=0s&untagged=0s", &[], b"").json();
    assert_eq!(gc["manifests"], serde_json::json!([]), "GC listed the bucket, and kept the tagged manifest: {gc}");
    assert_eq!(crate::stress::pull(&r, "dist/other", "old"), Ok(true));

    let repaired = cli_ok(&["fsck", "--repair", "--json", "--config", &c]).json();
    let finding = repaired["findings"].as_array().unwrap().iter().find(|f| f["kind"] == "index-out-of-step").cloned();
    assert_eq!(finding.map(|f| f["repaired"].clone()), Some(serde_json::json!(true)), "{repaired}");
    assert!(index_ready(&mut admin));
    let tag: String = admin.query_one("SELECT digest FROM index_tags WHERE repo = 'dist/other'", &[]).unwrap().get(0);
    assert_eq!(tag, src.image.digest.to_string());
    let gc = r.req("POST", "/api/gc?grace=0s&untagged=0s", &[], b"").json();
    assert_eq!((gc["blobs"].as_u64(), gc["manifests"].clone()), (Some(0), serde_json::json!([])), "{gc}");
    assert_eq!(crate::stress::pull(&r, "dist/other", "old"), Ok(true));
    let by_index = gc["store_requests"].as_u64().unwrap();

    // A process without the database wrote to the bucket (it leaves this mark, as a Berth
    // that takes the root alone does): the index is not read until reconciled.
    use berth_storage::{Backend, BackendExt};
    let bucket = crate::s3::bucket(&s3);
    assert!(bucket.exists(&berth_storage::layout::index_marker()).unwrap(), "the import marked the root");
    bucket.put(&berth_storage::layout::index_stale(), b"berth serve (alone)").unwrap();
    let gc = r.req("POST", "/api/gc?grace=0s&untagged=0s", &[], b"").json();
    assert!(gc["store_requests"].as_u64().unwrap() > by_index, "GC listed the bucket: {gc}");
    let found = cli_ok(&["fsck", "--repair", "--json", "--config", &c]).json();
    assert!(found["findings"].as_array().unwrap().iter().any(|f| f["kind"] == "index-stale"), "{found}");
    assert!(!bucket.exists(&berth_storage::layout::index_stale()).unwrap(), "the repair cleared the mark");
    reps[0].stop();
    fsck_finds_index_in_step(&cfg);
}
