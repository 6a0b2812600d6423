//! `berth du` against images with known shared and unique layers.

use serde_json::json;

use crate::harness::{Berth, cli_ok};
use crate::protocol::Reg;

#[test]
fn du_reports_exact_shared_and_unique_bytes_online_and_offline() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut berth = Berth::start_on(&root, None);
    let r = Reg::new(&berth.addr, "berth");
    let shared = vec![7u8; 10_000];
    let (ma, ca) = r.push_layers("du/a", "v1", &[&[1u8; 3_000], &shared]);
    let (mb, cb) = r.push_layers("du/b", "v1", &[&[2u8; 5_000], &shared]);
    r.put_manifest("du/b", "v2", &mb, "application/vnd.oci.image.manifest.v1+json");
    let own_a = (ma.len() + ca.len() + 3_000) as u64;
    let own_b = (mb.len() + cb.len() + 5_000) as u64;
    let b_tags = json!([
        {"tag": "v1", "total": own_b + 10_000, "shared": own_b + 10_000, "unique": 0, "image_unique": own_b},
        {"tag": "v2", "total": own_b + 10_000, "shared": own_b + 10_000, "unique": 0, "image_unique": own_b},
    ]);
    let a_tags = json!([
        {"tag": "v1", "total": own_a + 10_000, "shared": 10_000, "unique": own_a, "image_unique": own_a},
    ]);
    // The whole-root listing carries no tags (a root may hold 50,000); one repository does.
    let want = json!([
        {"repository": "du/b", "total": own_b + 10_000, "shared": 10_000, "unique": own_b},
        {"repository": "du/a", "total": own_a + 10_000, "shared": 10_000, "unique": own_a},
    ]);
    let strip = |mut v: serde_json::Value| {
        for r in v.as_array_mut().unwrap() {
            for t in r["tags"].as_array_mut().unwrap() {
                t.as_object_mut().unwrap().remove("digest");
            }
        }
        v
    };
    let with_tags = |repo: &str, tags: &serde_json::Value| {
        let mut r = want.as_array().unwrap().iter().find(|r| r["repository"] == repo).unwrap().clone();
        r["tags"] = tags.clone();
        json!([r])
    };
    // Sorted by what a delete frees, largest first: du/b (5,000 own bytes) before du/a.
    let online = cli_ok(&["du", "--json", "--url", &berth.url("")]).json();
    assert_eq!(online, want);
    let b = cli_ok(&["du", "du/b", "--json", "--url", &berth.url("")]).json();
    assert_eq!(strip(b.clone()), with_tags("du/b", &b_tags));
    assert_eq!(b[0]["tags"][0]["digest"], berth_oci::Digest::sha256_of(&mb).to_string());
    let human = cli_ok(&["du", "--url", &berth.url("")]).stdout;
    assert!(human.find("du/b").unwrap() < human.find("du/a").unwrap(), "{human}");
    berth.stop();
    let root = root.display().to_string();
    let offline = cli_ok(&["du", "--json", "--root", &root]).json();
    assert_eq!(offline, want, "the same numbers without a server");
    for (repo, tags) in [("du/a", &a_tags), ("du/b", &b_tags)] {
        let one = cli_ok(&["du", repo, "--json", "--root", &root]).json();
        assert_eq!(strip(one), with_tags(repo, tags), "{repo} without a server");
    }
}
