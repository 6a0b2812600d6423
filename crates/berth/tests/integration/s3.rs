//! Berth on an S3 bucket (a real Garage 2.5.0): skopeo pushes and pulls through redirects to
//! the store, deletes, restores and online GC remove exactly what they should from the bucket,
//! a chunked upload resumes after a restart, fsck finds the bucket whole, and Distribution's
//! `s3` driver serves the bucket Berth wrote with identical pulls.

use std::path::Path;

use berth_oci::Digest;
use berth_storage::testservers::S3Server;
use berth_storage::{Backend, BackendExt, Key, S3Backend, S3Options};

use crate::clients::{absent, copy, pull, served_digest};
use crate::harness::{Berth, Distribution, cli, cli_ok, http};
use crate::image::{Layout, standard};
use crate::protocol::Reg;

/// The `storage:` section (indented below it) for the bucket of `server` under `/registry`.
pub(crate) fn storage_yaml(server: &S3Server, extra: &str) -> String {
    s3_yaml(&server.options, "/registry", extra)
}

/// The `storage:` section (indented below it) for the bucket `o` reaches, under `root`.
pub(crate) fn s3_yaml(o: &S3Options, root: &str, extra: &str) -> String {
    format!(
        "  s3:\n    bucket: {}\n    region: {}\n    regionendpoint: {}\n    accesskey: \"{}\"\n    secretkey: \"{}\"\n    \
         forcepathstyle: true\n    secure: false\n    rootdirectory: {root}\n    chunksize: 5242880\n{extra}",
        o.bucket,
        o.region,
        o.endpoint.as_deref().unwrap(),
        o.access_key,
        o.secret_key,
    )
}

/// `berth serve` on the bucket; `extra` goes below `storage:`.
pub(crate) fn berth_on(server: &S3Server, dir: &Path, extra: &str) -> (Berth, std::path::PathBuf) {
    let cfg = dir.join(format!("berth-{}.yml", extra.len()));
    let b = serve_config(&cfg, &s3_yaml(&server.options, "/registry", extra), "gc:\n  interval: off\n  grace: 0s\n");
    (b, cfg)
}

/// Writes `cfg` with the `storage:` section `storage` and the top-level `sections`, and
/// starts `berth serve` on it.
pub(crate) fn serve_config(cfg: &Path, storage: &str, sections: &str) -> Berth {
    std::fs::write(cfg, format!("storage:\n{storage}{sections}")).unwrap();
    Berth::spawn(None, &["--addr".into(), "127.0.0.1:0".into(), "--config".into(), cfg.display().to_string()])
}

/// A backend on the same bucket root, to look at what Berth left there.
pub(crate) fn bucket(server: &S3Server) -> S3Backend {
    bucket_at(&server.options, "registry")
}

/// A backend on the root `root` of the bucket `o` reaches.
pub(crate) fn bucket_at(o: &S3Options, root: &str) -> S3Backend {
    let mut o = o.clone();
    o.root = root.into();
    S3Backend::open(&o).unwrap()
}

pub(crate) fn blob_key(d: &Digest) -> Key {
    Key::new(format!("docker/registry/v2/blobs/{}/{}/{}/data", d.algorithm().as_str(), &d.hex()[..2], d.hex())).unwrap()
}

#[test]
fn berth_on_garage_pushes_pulls_deletes_restores_collects_and_distribution_reads_it() {
    let server = S3Server::garage();
    let work = tempfile::tempdir().unwrap();
    let (mut berth, cfg) = berth_on(&server, work.path(), "");
    let a = berth.addr.clone();
    let log = berth.log();
    assert!(log.contains("ignores conditional writes"), "the probe says what Garage does:\n{log}");
    let store = bucket(&server);

    let src = standard(&work.path().join("src"), 700);
    let other = standard(&work.path().join("other"), 701);
    for tag in ["v1", "latest"] {
        copy(&format!("oci:{}:img", src.layout.dir.display()), &format!("docker://{a}/s3/app:{tag}"), &[]);
    }
    copy(&format!("oci:{}:multi", src.layout.dir.display()), &format!("docker://{a}/s3/app:multi"), &["--all"]);
    copy(&format!("oci:{}:img", other.layout.dir.display()), &format!("docker://{a}/s3/other:v1"), &[]);
    for l in &src.layers {
        assert!(
            store.exists(&blob_key(&l.digest)).unwrap(),
            "layer {} is in the bucket, in Distribution's layout",
            l.digest
        );
    }

    // Pulls follow a 307 to the store and get identical bytes.
    let r = Reg::new(&a, "berth");
    let layer = &src.layers[1].digest;
    let redirect =
        http().get(berth.url(&format!("/v2/s3/app/blobs/{layer}"))).config().max_redirects(0).build().call().unwrap();
    assert_eq!(redirect.status(), 307);
    let location = redirect.headers().get("location").unwrap().to_str().unwrap().to_owned();
    assert!(location.starts_with(server.options.endpoint.as_deref().unwrap()), "{location}");
    let mut got = http().get(&location).call().unwrap();
    assert_eq!(Digest::sha256_of(&got.body_mut().with_config().limit(1 << 30).read_to_vec().unwrap()), *layer);
    assert_eq!(
        r.req("GET", &format!("/v2/s3/other/blobs/{layer}"), &[], b"").status,
        404,
        "not linked there: no redirect"
    );
    let out = Layout::new(&work.path().join("out"));
    assert_eq!(pull(&a, "s3/app:v1", &out, "v1"), src.image.digest);
    for l in &src.layers {
        assert_eq!(Digest::sha256_of(&out.read(&l.digest)), l.digest);
    }

    // Delete a tag, restore it; delete the other repository and collect: its blobs leave the
    // bucket, nothing the kept images use does.
    assert_eq!(r.req("DELETE", "/v2/s3/app/manifests/latest", &[], b"").status, 202);
    assert!(absent(&a, "s3/app:latest"));
    let url = berth.url("");
    cli_ok(&["restore", "s3/app:latest", "--url", &url]);
    assert_eq!(served_digest(&format!("{a}/s3/app:latest")), src.image.digest);
    cli_ok(&["rm", "s3/other", "--yes", "--url", &url]);
    cli_ok(&["trash", "purge", "--yes", "--url", &url]);
    let gc = r.req("POST", "/api/gc", &[], b"");
    assert_eq!(gc.status, 200, "{}", String::from_utf8_lossy(&gc.body));
    let freed = gc.json()["blobs"].as_u64().unwrap();
    assert!(freed >= 2, "the other repository's own blobs were collected: {}", String::from_utf8_lossy(&gc.body));
    assert!(!store.exists(&blob_key(&other.image.digest)).unwrap(), "its manifest left the bucket");
    for l in &src.layers {
        assert!(store.exists(&blob_key(&l.digest)).unwrap(), "kept: {}", l.digest);
    }
    assert_eq!(served_digest(&format!("{a}/s3/app:multi")), src.index.digest);
    assert_eq!(
        pull(&a, "s3/app:multi", &Layout::new(&work.path().join("out2")), "m"),
        src.image.digest,
        "amd64 of the index"
    );

    // A chunked upload of 7 MiB (a 6 MiB part, then the rest after a restart).
    let big = crate::image::noise(7, 7 << 20);
    let d = Digest::sha256_of(&big);
    let start = r.req("POST", "/v2/s3/chunked/blobs/uploads/", &[], b"");
    let loc = start.h("location").unwrap().to_owned();
    let first = 6 << 20;
    let patch = r.req("PATCH", &loc, &[("Content-Range", &format!("0-{}", first - 1))], &big[..first]);
    assert_eq!(patch.status, 202);
    assert!(berth.stop().success());
    let (berth2, _) = berth_on(&server, work.path(), "  redirect:\n    disable: true\n");
    let r = Reg::new(&berth2.addr, "berth");
    let status = r.req("GET", &loc, &[], b"");
    assert_eq!(
        (status.status, status.h("range")),
        (204, Some(format!("0-{}", first - 1).as_str())),
        "the upload survived"
    );
    let rest = r.req("PATCH", &loc, &[("Content-Range", &format!("{first}-{}", big.len() - 1))], &big[first..]);
    assert_eq!(rest.status, 202);
    let put = r.req("PUT", &format!("{loc}{}digest={d}", if loc.contains('?') { "&" } else { "?" }), &[], b"");
    assert_eq!(put.status, 201, "{}", String::from_utf8_lossy(&put.body));
    // Redirects off: the blob streams from Berth, ranges included.
    let whole = r.req("GET", &format!("/v2/s3/chunked/blobs/{d}"), &[], b"");
    assert_eq!((whole.status, Digest::sha256_of(&whole.body)), (200, d.clone()));
    let part = r.req("GET", &format!("/v2/s3/chunked/blobs/{d}"), &[("Range", "bytes=5242870-5242889")], b"");
    assert_eq!((part.status, part.body.as_slice()), (206, &big[5_242_870..5_242_890]));
    assert!(
        store
            .list(&Key::new("docker/registry/v2/repositories/s3/chunked/_uploads").unwrap(), None, 10)
            .unwrap()
            .is_empty(),
        "no upload left"
    );
    drop(berth2);

    // fsck, offline on the bucket, finds nothing broken.
    let fsck = cli(&["fsck", "--config", &cfg.display().to_string()]);
    assert_eq!(fsck.code, 0, "{}\n{}", fsck.stdout, fsck.stderr);

    // Distribution's s3 driver serves the bucket Berth wrote: the same digests, the same bytes.
    let dist = Distribution::start_storage(&storage_yaml(&server, "  delete:\n    enabled: true\n"), "");
    let da = &dist.addr;
    for (reference, digest) in [("s3/app:v1", &src.image.digest), ("s3/app:multi", &src.index.digest)] {
        assert_eq!(served_digest(&format!("{da}/{reference}")), *digest, "{reference}\n{}", dist.log());
    }
    let out = Layout::new(&work.path().join("dist-out"));
    assert_eq!(pull(da, "s3/app:latest", &out, "l"), src.image.digest);
    for l in &src.layers {
        assert_eq!(Digest::sha256_of(&out.read(&l.digest)), l.digest);
    }
}

/// The other direction: Distribution's `s3` driver fills a bucket; Berth serves it with the
/// same digests and bytes, deletes from it, and its GC leaves what the images use.
#[test]
fn berth_serves_a_bucket_distribution_wrote() {
    let server = S3Server::garage();
    let work = tempfile::tempdir().unwrap();
    let src = standard(&work.path().join("src"), 710);
    {
        let dist = Distribution::start_storage(&storage_yaml(&server, "  delete:\n    enabled: true\n"), "");
        let da = &dist.addr;
        copy(&format!("oci:{}:img", src.layout.dir.display()), &format!("docker://{da}/dist/app:v1"), &[]);
        copy(&format!("oci:{}:multi", src.layout.dir.display()), &format!("docker://{da}/dist/app:multi"), &["--all"]);
        assert_eq!(served_digest(&format!("{da}/dist/app:v1")), src.image.digest, "{}", dist.log());
    }
    let (berth, _) = berth_on(&server, work.path(), "");
    let a = &berth.addr;
    assert_eq!(served_digest(&format!("{a}/dist/app:v1")), src.image.digest);
    assert_eq!(served_digest(&format!("{a}/dist/app:multi")), src.index.digest);
    let out = Layout::new(&work.path().join("out"));
    assert_eq!(pull(a, "dist/app:v1", &out, "v1"), src.image.digest);
    for l in &src.layers {
        assert_eq!(Digest::sha256_of(&out.read(&l.digest)), l.digest);
    }
    let r = Reg::new(a, "berth");
    let tags = r.req("GET", "/v2/dist/app/tags/list", &[], b"");
    assert_eq!(tags.json()["tags"], serde_json::json!(["multi", "v1"]));
    let gc = r.req("POST", "/api/gc", &[], b"");
    assert_eq!(gc.status, 200, "{}", String::from_utf8_lossy(&gc.body));
    assert_eq!(gc.json()["blobs"], serde_json::json!(0), "nothing unused: {}", String::from_utf8_lossy(&gc.body));
    assert_eq!(pull(a, "dist/app:v1", &Layout::new(&work.path().join("out2")), "v1"), src.image.digest);
}

/// `berth copy` moves a root from a disk onto a bucket: Berth then serves the same images
/// from it, the trash and audit log came along (and the log takes new lines), and a copy is
/// refused while a server holds the source.
#[test]
fn berth_copy_moves_a_disk_root_onto_a_bucket_that_serves_it() {
    let server = S3Server::garage();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let src = standard(&work.path().join("src"), 740);
    let to = work.path().join("to.yml");
    std::fs::write(&to, format!("storage:\n{}", storage_yaml(&server, ""))).unwrap();
    let (root_s, to_s) = (root.display().to_string(), to.display().to_string());
    {
        let disk = Berth::start_on(&root, None);
        let a = &disk.addr;
        for tag in ["v1", "v2"] {
            copy(&format!("oci:{}:img", src.layout.dir.display()), &format!("docker://{a}/moved/app:{tag}"), &[]);
        }
        copy(&format!("oci:{}:multi", src.layout.dir.display()), &format!("docker://{a}/moved/app:multi"), &["--all"]);
        let r = Reg::new(a, "berth");
        assert_eq!(r.req("DELETE", "/v2/moved/app/manifests/v2", &[], b"").status, 202);
        let refused = cli(&["copy", "--root", &root_s, "--to-config", &to_s]);
        assert_ne!(refused.code, 0, "copying a root a server holds");
        assert!(refused.stderr.contains("stop it first"), "{}", refused.stderr);
    }
    let out = cli_ok(&["copy", "--root", &root_s, "--to-config", &to_s]);
    assert!(out.stdout.starts_with("copied "), "{}", out.stdout);

    let (berth, _) = berth_on(&server, work.path(), "");
    let a = &berth.addr;
    assert_eq!(served_digest(&format!("{a}/moved/app:v1")), src.image.digest);
    assert_eq!(served_digest(&format!("{a}/moved/app:multi")), src.index.digest);
    let pulled = Layout::new(&work.path().join("out"));
    assert_eq!(pull(a, "moved/app:v1", &pulled, "v1"), src.image.digest);
    for l in &src.layers {
        assert_eq!(Digest::sha256_of(&pulled.read(&l.digest)), l.digest);
    }
    assert!(absent(a, "moved/app:v2"), "the deleted tag stayed deleted");
    let url = berth.url("");
    cli_ok(&["restore", "moved/app:v2", "--url", &url]);
    assert_eq!(served_digest(&format!("{a}/moved/app:v2")), src.image.digest, "restored from the copied trash");
    let r = Reg::new(a, "berth");
    let audit = r.req("GET", "/api/audit?repository=moved/app", &[], b"").json();
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["restore", "delete"], "the copied log, then the new line: {audit}");
}
