//! Deleting through the /v2 API and the CLI, restoring, and what real clients see.

use berth_oci::Digest;
use serde_json::json;

use crate::clients::{absent, copy, pull, served_digest};
use crate::harness::{Berth, cli_fails, cli_ok};
use crate::image::{Layout, standard};
use crate::protocol::Reg;

#[test]
fn problem3_two_tags_on_one_digest_tag_delete_digest_delete_and_restore_with_skopeo() {
    let berth = Berth::start();
    let url = berth.url("");
    let work = tempfile::tempdir().unwrap();
    let src = standard(&work.path().join("src"), 80);
    let a = &berth.addr;
    for tag in ["v1", "latest"] {
        copy(&format!("oci:{}:img", src.layout.dir.display()), &format!("docker://{a}/del/app:{tag}"), &[]);
    }
    let r = Reg::new(a, "berth");
    let d = src.image.digest.to_string();

    // Deleting one tag leaves the other, which still pulls.
    assert_eq!(r.req("DELETE", "/v2/del/app/manifests/v1", &[], b"").status, 202);
    assert!(absent(a, "del/app:v1"));
    let out = Layout::new(&work.path().join("out1"));
    assert_eq!(pull(a, "del/app:latest", &out, "latest"), src.image.digest);

    cli_ok(&["restore", "del/app:v1", "--url", &url]);
    assert_eq!(served_digest(&format!("{a}/del/app:v1")), src.image.digest);

    // Deleting the digest removes both tags.
    assert_eq!(r.req("DELETE", &format!("/v2/del/app/manifests/{d}"), &[], b"").status, 202);
    assert!(absent(a, "del/app:v1") && absent(a, "del/app:latest"));
    assert_eq!(r.req("GET", &format!("/v2/del/app/manifests/{d}"), &[], b"").status, 404);

    // One restore brings both back, and skopeo pulls both with identical digests.
    let restored = cli_ok(&["restore", "del/app:latest", "--url", &url, "--json"]).json();
    assert_eq!(restored["restored"]["tags"], json!({"latest": d, "v1": d}));
    let out = Layout::new(&work.path().join("out2"));
    assert_eq!(pull(a, "del/app:v1", &out, "v1"), src.image.digest);
    assert_eq!(pull(a, "del/app:latest", &out, "latest"), src.image.digest);
    for l in &src.layers {
        assert_eq!(Digest::sha256_of(&out.read(&l.digest)), l.digest);
    }
}

#[test]
fn i4_restore_whose_blobs_are_gone_is_refused_naming_them_and_changes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let mut berth = Berth::start_on(&root, None);
    let r = Reg::new(&berth.addr, "berth");
    let layer = b"the only copy of this layer".to_vec();
    r.push_layers("gone/app", "v1", &[&layer]);
    let del = cli_ok(&["rm", "gone/app:v1", "--url", &berth.url(""), "--json"]).json();
    let id = del["entry"]["id"].as_str().unwrap().to_owned();
    berth.stop();

    // Someone deletes blob files by hand (problem 7), then tries to restore.
    let ld = Digest::sha256_of(&layer);
    std::fs::remove_file(root.join(format!("docker/registry/v2/blobs/sha256/{}/{}/data", &ld.hex()[..2], ld.hex())))
        .unwrap();
    let root_s = root.display().to_string();
    let err = cli_fails(&["restore", &id, "--root", &root_s]);
    assert!(err.contains(&ld.to_string()) && err.contains("cannot restore"), "{err}");
    let trash = cli_ok(&["trash", "--root", &root_s, "--json"]).json();
    assert_eq!(trash[0]["id"], id, "the entry is still there");
    assert!(!root.join("docker/registry/v2/repositories/gone/app/_manifests/tags/v1").exists(), "no tag came back");
}

#[test]
fn problem4_repository_delete_and_restore_through_the_cli_and_catalog() {
    let berth = Berth::start();
    let url = berth.url("");
    let r = Reg::new(&berth.addr, "berth");
    r.push_image("org/keep", "v1", 81);
    r.push_image("org/drop", "v1", 82);
    r.push_image("org/drop", "v2", 83);
    let catalog = || r.req("GET", "/v2/_catalog", &[], b"").json()["repositories"].clone();
    assert_eq!(catalog(), json!(["org/drop", "org/keep"]));

    let err = cli_fails(&["rm", "org/drop", "--url", &url]);
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(catalog(), json!(["org/drop", "org/keep"]), "nothing deleted without confirmation");

    let dry = cli_ok(&["rm", "org/drop", "--url", &url, "--dry-run", "--json"]).json();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["entry"]["tags"].as_object().unwrap().len(), 2);
    assert_eq!(catalog(), json!(["org/drop", "org/keep"]), "a dry run changes nothing");

    let done = cli_ok(&["rm", "org/drop", "--url", &url, "--yes", "--json"]).json();
    assert_eq!(done["entry"]["kind"], "repository");
    assert_eq!(done["entry"]["bytes_freed"], dry["entry"]["bytes_freed"]);
    assert_eq!(catalog(), json!(["org/keep"]));
    let tags = r.req("GET", "/v2/org/drop/tags/list", &[], b"");
    assert_eq!((tags.status, tags.code()), (404, "NAME_UNKNOWN".to_owned()));

    cli_ok(&["restore", "org/drop", "--url", &url]);
    assert_eq!(catalog(), json!(["org/drop", "org/keep"]));
    assert_eq!(r.req("GET", "/v2/org/drop/tags/list", &[], b"").json()["tags"], json!(["v1", "v2"]));
    assert_eq!(r.req("GET", "/v2/org/drop/manifests/v2", &[], b"").status, 200);
}

#[test]
fn deletes_that_would_break_an_image_are_refused_over_v2() {
    let berth = Berth::start();
    let r = Reg::new(&berth.addr, "berth");
    let (amd, _) = r.push_layers("brk/app", "amd", &[b"amd64 layer"]);
    let (arm, _) = r.push_layers("brk/app", "arm", &[b"arm64 layer"]);
    r.push_index("brk/app", "multi", &[(&amd, "amd64"), (&arm, "arm64")]);

    let child = r.req("DELETE", &format!("/v2/brk/app/manifests/{}", Digest::sha256_of(&arm)), &[], b"");
    assert_eq!((child.status, child.code()), (409, "DENIED".to_owned()));
    assert!(child.json()["errors"][0]["message"].as_str().unwrap().contains("brk/app:multi"));
    let layer = r.req("DELETE", &format!("/v2/brk/app/blobs/{}", Digest::sha256_of(b"arm64 layer")), &[], b"");
    assert_eq!((layer.status, layer.code()), (409, "DENIED".to_owned()));
    assert_eq!(r.req("GET", "/v2/brk/app/manifests/arm", &[], b"").status, 200, "nothing was broken");

    let stray = r.push_blob("brk/app", b"an unused upload");
    assert_eq!(r.req("DELETE", &format!("/v2/brk/app/blobs/{stray}"), &[], b"").status, 202);
    assert_eq!(r.req("HEAD", &format!("/v2/brk/app/blobs/{stray}"), &[], b"").status, 404);
    // The CLI can force what the /v2 API refuses.
    cli_ok(&["rm", &format!("brk/app@{}", Digest::sha256_of(&arm)), "--url", &berth.url(""), "--force"]);
}
