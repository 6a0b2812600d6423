//! Berth and CNCF Distribution on the same root, both ways: the layout is the contract.

use crate::clients::{copy, raw_manifest, served_digest};
use crate::harness::{Berth, Distribution, http};
use crate::image::{Layout, standard};

fn tags(addr: &str, repo: &str) -> serde_json::Value {
    let body =
        http().get(format!("http://{addr}/v2/{repo}/tags/list")).call().unwrap().into_body().read_to_string().unwrap();
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["tags"].clone()
}

fn catalog(addr: &str) -> serde_json::Value {
    let body = http().get(format!("http://{addr}/v2/_catalog")).call().unwrap().into_body().read_to_string().unwrap();
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["repositories"].clone()
}

#[test]
fn root_written_by_berth_is_served_by_distribution() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let src = standard(&work.path().join("src"), 3);
    let mut berth = Berth::start_on(&root, None);
    copy(&format!("oci:{}:img", src.layout.dir.display()), &format!("docker://{}/compat/img:v1", berth.addr), &[]);
    copy(
        &format!("oci:{}:multi", src.layout.dir.display()),
        &format!("docker://{}/compat/multi:v1", berth.addr),
        &["--all"],
    );
    let berth_tags = tags(&berth.addr, "compat/img");
    assert!(berth.stop().success(), "berth exits cleanly on SIGTERM");

    let dist = Distribution::start(&root, true);
    let d = &dist.addr;
    assert_eq!(served_digest(&format!("{d}/compat/img:v1")), src.image.digest);
    assert_eq!(served_digest(&format!("{d}/compat/multi:v1")), src.index.digest);
    let out = Layout::new(&work.path().join("out"));
    copy(&format!("docker://{d}/compat/multi:v1"), &format!("oci:{}:multi", out.dir.display()), &["--all"]);
    assert_eq!(out.lookup("multi"), Some(src.index.digest.clone()));
    assert_eq!(out.read(&src.arm64.digest), src.layout.read(&src.arm64.digest));
    assert_eq!(tags(d, "compat/img"), berth_tags);
    assert_eq!(catalog(d), serde_json::json!(["compat/img", "compat/multi"]), "{}", dist.log());
}

#[test]
fn root_written_by_distribution_is_served_by_berth() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let src = standard(&work.path().join("src"), 4);
    let dist = Distribution::start(&root, true);
    copy(&format!("oci:{}:img", src.layout.dir.display()), &format!("docker://{}/legacy/img:v1", dist.addr), &[]);
    copy(
        &format!("oci:{}:multi", src.layout.dir.display()),
        &format!("docker://{}/legacy/multi:v1", dist.addr),
        &["--all"],
    );
    copy(
        &format!("oci:{}:img", src.layout.dir.display()),
        &format!("docker://{}/legacy/docker:v1", dist.addr),
        &["--format", "v2s2"],
    );
    let dist_raw = raw_manifest(&format!("{}/legacy/docker:v1", dist.addr));
    let dist_tags = tags(&dist.addr, "legacy/img");
    drop(dist);

    let berth = Berth::start_on(&root, None);
    let b = &berth.addr;
    assert_eq!(served_digest(&format!("{b}/legacy/img:v1")), src.image.digest);
    assert_eq!(served_digest(&format!("{b}/legacy/multi:v1")), src.index.digest);
    assert_eq!(
        raw_manifest(&format!("{b}/legacy/docker:v1")),
        dist_raw,
        "schema 2 bytes served as Distribution stored them"
    );
    let out = Layout::new(&work.path().join("out"));
    copy(&format!("docker://{b}/legacy/multi:v1"), &format!("oci:{}:multi", out.dir.display()), &["--all"]);
    assert_eq!(out.lookup("multi"), Some(src.index.digest.clone()));
    assert_eq!(tags(b, "legacy/img"), dist_tags);
    assert_eq!(catalog(b), serde_json::json!(["legacy/docker", "legacy/img", "legacy/multi"]));

    // And Berth can keep writing into it: a push on top of Distribution's data.
    copy(&format!("oci:{}:img", src.layout.dir.display()), &format!("docker://{b}/legacy/img:v2"), &[]);
    assert_eq!(served_digest(&format!("{b}/legacy/img:v2")), src.image.digest);
}
