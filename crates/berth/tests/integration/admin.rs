//! The admin API's listings at a scale that needs paging: pages, `Link` headers, sorting and
//! filters over HTTP, and the CLI reading every page.

use std::collections::BTreeSet;
use std::path::Path;

use berth_oci::Digest;
use serde_json::json;

use crate::harness::{Berth, cli_ok, http};
use crate::protocol::{Reg, Resp};

const OCI: &str = "application/vnd.oci.image.manifest.v1+json";

/// Writes `repos` repositories straight into Distribution's layout, repository `i` holding
/// `1 + i % 3` tags on one image whose own layer has `100 * (i % 7 + 1)` bytes, plus a shared
/// layer: as a root Distribution wrote looks, without pushing a thousand images.
fn generate(root: &Path, repos: usize) -> Vec<String> {
    let v2 = root.join("docker/registry/v2");
    let blob = |data: &[u8]| {
        let d = Digest::sha256_of(data);
        let p = v2.join("blobs/sha256").join(&d.hex()[..2]).join(d.hex()).join("data");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
        d
    };
    let link = |path: std::path::PathBuf, d: &Digest| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, d.to_string()).unwrap();
    };
    let shared = blob(&[9u8; 1000]);
    let mut names = Vec::new();
    for i in 0..repos {
        let name = format!("team{:02}/app{i:04}", i % 20);
        let repo = v2.join("repositories").join(&name);
        let own = blob(
            &vec![(i % 251) as u8; 100 * (i % 7 + 1)]
                .iter()
                .chain(i.to_string().as_bytes())
                .copied()
                .collect::<Vec<_>>(),
        );
        let own_len = std::fs::metadata(v2.join("blobs/sha256").join(&own.hex()[..2]).join(own.hex()).join("data"))
            .unwrap()
            .len();
        let config = format!(r#"{{"architecture":"amd64","os":"linux","n":{i}}}"#);
        let c = blob(config.as_bytes());
        let m = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c.to_string(), "size": config.len()},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": own.to_string(), "size": own_len},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": shared.to_string(), "size": 1000}]}))
        .unwrap();
        let md = blob(&m);
        for d in [&own, &shared, &c] {
            link(repo.join("_layers/sha256").join(d.hex()).join("link"), d);
        }
        link(repo.join("_manifests/revisions/sha256").join(md.hex()).join("link"), &md);
        for t in 0..1 + i % 3 {
            let tag = repo.join("_manifests/tags").join(format!("v{t}"));
            link(tag.join("current/link"), &md);
            link(tag.join("index/sha256").join(md.hex()).join("link"), &md);
        }
        names.push(name);
    }
    names.sort();
    names
}

/// Follows `Link: <…>; rel="next"` from `path`; returns every page.
fn all_pages(r: &Reg, path: &str) -> Vec<Resp> {
    let mut pages = Vec::new();
    let mut next = Some(path.to_owned());
    while let Some(p) = next {
        let resp = r.req("GET", &p, &[], b"");
        assert_eq!(resp.status, 200, "{p}: {}", String::from_utf8_lossy(&resp.body));
        next = resp.h("link").map(|l| l.split('<').nth(1).unwrap().split('>').next().unwrap().to_owned());
        pages.push(resp);
        assert!(pages.len() < 1000, "the links never end");
    }
    pages
}

#[test]
fn listings_page_sort_and_filter_over_http_and_the_cli_reads_every_page() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let names = generate(&root, 1050);
    let berth = Berth::start_on(&root, Some("gc:\n  interval: off\n"));
    let r = Reg::new(&berth.addr, "berth");

    // By name, 100 at a time: every repository once, in order, each page at most 100.
    let pages = all_pages(&r, "/api/repositories");
    assert_eq!(pages.len(), 11);
    let listed: Vec<String> = pages
        .iter()
        .flat_map(|p| {
            let v = p.json()["repositories"].as_array().unwrap().clone();
            assert!(v.len() <= 100);
            v.into_iter().map(|r| r["name"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(listed, names);

    // By what a delete frees, largest first, ties by name, across pages of 7.
    let by_unique: Vec<(u64, String)> = all_pages(&r, "/api/repositories?n=7&sort=unique")
        .iter()
        .flat_map(|p| p.json()["repositories"].as_array().unwrap().clone())
        .map(|r| (r["unique"].as_u64().unwrap(), r["name"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(by_unique.len(), names.len());
    let mut sorted = by_unique.clone();
    sorted.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    assert_eq!(by_unique, sorted);
    assert!(by_unique[0].0 > by_unique[names.len() - 1].0, "sizes differ");
    let total: u64 = pages
        .iter()
        .flat_map(|p| p.json()["repositories"].as_array().unwrap().clone())
        .map(|r| r["shared"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 1000 * names.len() as u64, "the shared layer is shared by every repository");

    // Filters: a prefix, and a pattern.
    let team3: BTreeSet<String> = names.iter().filter(|n| n.starts_with("team03/")).cloned().collect();
    let by_prefix: BTreeSet<String> = all_pages(&r, "/api/repositories?prefix=team03/&n=10")
        .iter()
        .flat_map(|p| p.json()["repositories"].as_array().unwrap().clone())
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(by_prefix, team3);
    let pattern = r.req("GET", "/api/repositories?match=*/app000*&n=1000", &[], b"").json();
    let matched: Vec<&str> =
        pattern["repositories"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(matched.len(), 10, "{matched:?}");
    assert_eq!(r.req("GET", "/api/repositories?match=Team/**", &[], b"").code(), "NAME_INVALID");
    assert_eq!(r.req("GET", "/api/repositories?sort=color", &[], b"").status, 400);
    assert_eq!(r.req("GET", "/api/repositories?n=x", &[], b"").code(), "PAGINATION_NUMBER_INVALID");

    // A repository's tags, and the usage listings, page the same way.
    let repo = "team02/app0002"; // i = 2: three tags
    let tags = all_pages(&r, &format!("/api/repositories/{repo}?n=1"));
    assert_eq!(tags.len(), 3);
    let t: Vec<String> = tags.iter().map(|p| p.json()["tags"][0]["tag"].as_str().unwrap().to_owned()).collect();
    assert_eq!(t, ["v0", "v1", "v2"]);
    let usage = all_pages(&r, &format!("/api/usage?repository={repo}&n=2"));
    assert_eq!(usage.len(), 2, "the repository's tags in two pages");
    assert!(usage[0].h("link").unwrap().contains("repository="), "the next page keeps the repository");
    let repos_usage = all_pages(&r, "/api/usage?n=1000");
    assert_eq!(repos_usage.len(), 2);
    assert!(repos_usage[0].json()["repositories"][0].get("tags").is_none(), "repository-level usage carries no tags");

    // The CLI reads past one page of 1000.
    let ls = cli_ok(&["ls", "--json", "--url", &berth.url("")]).json();
    assert_eq!(ls.as_array().unwrap().len(), names.len());
    let du = cli_ok(&["du", "--json", "--url", &berth.url("")]).json();
    assert_eq!(du.as_array().unwrap().len(), names.len());
    assert_eq!(du[0]["unique"], by_unique[0].0, "du sorts by what a delete frees");

    // Trash and audit: deletes, then their pages, newest audit line first, filtered.
    for i in [5, 6, 7] {
        let resp = r.req("DELETE", &format!("/api/repositories/{}", names[i]), &[], b"");
        assert_eq!(resp.status, 202, "{}", String::from_utf8_lossy(&resp.body));
    }
    let trash = all_pages(&r, "/api/trash?n=2");
    let ids: Vec<String> = trash
        .iter()
        .flat_map(|p| p.json()["entries"].as_array().unwrap().clone())
        .map(|e| e["repository"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, [names[5].clone(), names[6].clone(), names[7].clone()]);
    let audit = all_pages(&r, "/api/audit?n=2");
    let lines: Vec<serde_json::Value> =
        audit.iter().flat_map(|p| p.json()["entries"].as_array().unwrap().clone()).collect();
    let repos: Vec<&str> = lines.iter().map(|l| l["repository"].as_str().unwrap()).collect();
    assert_eq!(repos, [names[7].as_str(), names[6].as_str(), names[5].as_str()], "newest first");
    assert!(lines.iter().all(|l| l["action"] == "delete" && l["kind"] == "repository"));
    let one = r.req("GET", &format!("/api/audit?repository={}", names[6]), &[], b"").json();
    assert_eq!(one["entries"].as_array().unwrap().len(), 1);
    assert_eq!(r.req("GET", "/api/audit?action=explode", &[], b"").status, 400);
    let restored = r.req("POST", &format!("/api/restore?repository={}", names[6]), &[], b"");
    assert_eq!(restored.status, 200);
    let restores = r.req("GET", "/api/audit?action=restore", &[], b"").json();
    assert_eq!(restores["entries"][0]["repository"], names[6]);

    let metrics = http().get(berth.url("/metrics")).call().unwrap().into_body().read_to_string().unwrap();
    assert!(metrics.contains(r#"berth_http_requests_total{endpoint="admin",method="GET",code="2xx"}"#), "{metrics}");
    // The accounting graph reports what it holds and costs.
    let gauge = |name: &str| -> u64 {
        let line = metrics.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name}: {metrics}"));
        line.split_whitespace().last().unwrap().parse().unwrap()
    };
    assert_eq!(gauge("berth_graph_repositories"), names.len() as u64 - 2, "three deleted, one restored");
    assert_eq!(gauge("berth_graph_manifests"), names.len() as u64, "the trash still holds the deleted ones");
    assert_eq!(gauge("berth_graph_digests"), 1 + 3 * names.len() as u64, "shared layer, own layer, config, manifest");
    assert!(gauge(r#"berth_graph_bytes{part="digests"}"#) > 40 * names.len() as u64);
}

/// Pull times: a GET of a manifest by tag (skopeo's pull) records when the tag was pulled, a
/// HEAD does not; the listing and `berth ls` show it, and it survives a restart.
#[test]
fn pull_times_are_recorded_shown_and_kept_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut berth = Berth::start_on(&root, Some("gc:\n  interval: off\n"));
    let r = Reg::new(&berth.addr, "berth");
    r.push_image("pull/app", "v1", 1);
    r.push_image("pull/app", "v2", 2);
    let pulled = |r: &Reg| -> Vec<(String, Option<String>)> {
        let detail = r.req("GET", "/api/repositories/pull/app", &[], b"").json();
        let tags = detail["tags"].as_array().unwrap().clone();
        tags.iter().map(|t| (t["tag"].as_str().unwrap().to_owned(), t["pulled"].as_str().map(str::to_owned))).collect()
    };
    assert_eq!(pulled(&r), [("v1".to_owned(), None), ("v2".to_owned(), None)], "nothing pulled yet");
    let before = std::time::SystemTime::now();
    let out = crate::image::Layout::new(&dir.path().join("out"));
    crate::clients::pull(&berth.addr, "pull/app:v1", &out, "v1");
    assert_eq!(r.req("HEAD", "/v2/pull/app/manifests/v2", &[("Accept", OCI)], b"").status, 200);
    let now = pulled(&r);
    let v1 = now[0].1.clone().expect("v1 was pulled");
    let at = humantime::parse_rfc3339_weak(&v1).unwrap();
    assert!(at + std::time::Duration::from_secs(1) >= before, "{v1} is the pull's time");
    assert_eq!(now[1].1, None, "a HEAD is not a pull");

    // SIGTERM stores what was recorded; the next server on the root reads it.
    assert!(berth.stop().success());
    let ls = cli_ok(&["ls", "pull/app", "--root", &root.display().to_string()]);
    let line = |tag: &str| ls.stdout.lines().find(|l| l.starts_with(tag)).unwrap_or_default().to_owned();
    assert!(ls.stdout.contains("PULLED") && line("v2").ends_with("never"), "{}", ls.stdout);
    assert!(!line("v1").ends_with("never"), "{}", ls.stdout);
    let berth = Berth::start_on(&root, Some("gc:\n  interval: off\n"));
    let r = Reg::new(&berth.addr, "berth");
    assert_eq!(pulled(&r)[0].1.as_deref(), Some(v1.as_str()), "the time survived the restart");
}
