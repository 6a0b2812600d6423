//! The CLI on a storage root with no server running, and its manners: one-line reasons, exit
//! codes, no prompts without a terminal, and no direct writes beside a running server.

use serde_json::json;

use crate::harness::{Berth, cli, cli_env, cli_fails, cli_ok};
use crate::protocol::Reg;

#[test]
fn offline_mode_lists_deletes_restores_and_purges_on_a_root_with_no_server() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut berth = Berth::start_on(&root, None);
    let r = Reg::new(&berth.addr, "berth");
    let m1 = r.push_image("off/app", "v1", 100);
    r.put_manifest("off/app", "stable", &m1, "application/vnd.oci.image.manifest.v1+json");
    r.push_image("off/other", "v1", 101);
    berth.stop();
    let root_s = root.display().to_string();
    fn with<'a>(args: &[&'a str], root: &'a str) -> Vec<&'a str> {
        [args, &["--root", root]].concat()
    }

    assert_eq!(cli_ok(&with(&["ls", "--json"], &root_s)).json(), json!(["off/app", "off/other"]));
    assert_eq!(cli_ok(&with(&["ls", "off/app", "--json"], &root_s)).json(), json!(["stable", "v1"]));
    let human = cli_ok(&with(&["ls", "off/app"], &root_s)).stdout;
    assert!(human.contains("TAG") && human.contains("stable") && human.contains("sha256:"), "{human}");

    let del = cli_env(&with(&["rm", "off/app:v1", "--json"], &root_s), &[("USER", Some("tester"))]);
    assert_eq!(del.code, 0, "{}", del.stderr);
    let del = del.json();
    assert_eq!(del["entry"]["tags"], json!({"v1": berth_oci::Digest::sha256_of(&m1).to_string()}));
    assert_eq!(del["entry"]["who"], "local:tester", "the audit names who deleted");
    let trash = cli_ok(&with(&["trash", "--json"], &root_s)).json();
    let e = &trash[0];
    assert_eq!(e["repository"], "off/app");
    assert_eq!(e["tags"], json!({"v1": berth_oci::Digest::sha256_of(&m1).to_string()}));
    assert_eq!(e["digests"], json!([berth_oci::Digest::sha256_of(&m1).to_string()]));
    assert!(e["id"].is_string());
    assert_eq!(cli_ok(&with(&["ls", "off/app", "--json"], &root_s)).json(), json!(["stable"]));

    cli_ok(&with(&["restore", "off/app:v1"], &root_s));
    assert_eq!(cli_ok(&with(&["ls", "off/app", "--json"], &root_s)).json(), json!(["stable", "v1"]));

    // Without USER (a container, a cron job) the audit still names someone: the uid.
    let anon = cli_env(&with(&["rm", "off/other", "--yes", "--json"], &root_s), &[("USER", None)]);
    assert_eq!(anon.code, 0, "{}", anon.stderr);
    let who = anon.json()["entry"]["who"].as_str().unwrap().to_owned();
    assert!(who.starts_with("local:uid ") && who[10..].parse::<u32>().is_ok(), "{who}");
    let err = cli_fails(&with(&["trash", "purge"], &root_s));
    assert!(err.contains("--yes"), "{err}");
    let purged = cli_ok(&with(&["trash", "purge", "--yes", "--json"], &root_s)).json();
    assert_eq!(purged["purged"].as_array().unwrap().len(), 1);
    assert_eq!(cli_ok(&with(&["trash", "--json"], &root_s)).json(), json!([]));

    // What the offline commands did is what a server then serves.
    let berth = Berth::start_on(&root, None);
    let r = Reg::new(&berth.addr, "berth");
    assert_eq!(r.req("GET", "/v2/off/app/manifests/v1", &[], b"").body, m1);
    assert_eq!(r.req("GET", "/v2/_catalog", &[], b"").json()["repositories"], json!(["off/app"]));
}

#[test]
fn direct_writes_are_refused_while_a_server_runs_on_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let berth = Berth::start_on(&root, None);
    Reg::new(&berth.addr, "berth").push_image("busy/app", "v1", 102);
    let root_s = root.display().to_string();
    let err = cli_fails(&["rm", "busy/app:v1", "--root", &root_s]);
    assert!(err.contains("berth serve") && err.contains("--url"), "{err}");
    // Reading is fine.
    assert_eq!(cli_ok(&["ls", "--json", "--root", &root_s]).json(), json!(["busy/app"]));
    // And a second server on the same root is refused.
    let out = std::process::Command::new(crate::harness::berth_bin())
        .args(["serve", "--addr", "127.0.0.1:0", "--root", &root_s])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is using"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn failures_are_one_line_reasons_with_exit_code_1() {
    let berth = Berth::start();
    let url = berth.url("");
    for (args, needle) in [
        (vec!["ls", "no/such", "--url", url.as_str()], "not known"),
        (vec!["rm", "no/such:v1", "--url", url.as_str()], "not known"),
        (vec!["rm", "Bad:v1", "--url", url.as_str()], "invalid repository name"),
        (vec!["restore", "no/such:v1", "--url", url.as_str()], "no trash entry"),
        (vec!["ls", "--url", "http://127.0.0.1:1"], "cannot reach"),
        (vec!["ls", "--url", url.as_str(), "--root", "/tmp"], "not both"),
        (vec!["ls", "--root", "/nonexistent/berth-root"], "not a registry storage root"),
    ] {
        let err = cli_fails(&args);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert_eq!(cli(&["rm"]).code, 2, "bad usage is exit code 2");
}

/// Issue 8: after a large GC, fsck printed one line per leftover layer link.
#[test]
fn fsck_summarises_debris_by_kind_and_lists_it_with_verbose() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut berth = Berth::start_on(&root, Some("gc:\n  interval: off\n"));
    let r = Reg::new(&berth.addr, "berth");
    r.push_image("fsck/app", "keep", 110);
    r.push_image("fsck/app", "drop", 111);
    assert_eq!(r.req("DELETE", "/v2/fsck/app/manifests/drop", &[], b"").status, 202);
    assert_eq!(r.req("DELETE", "/api/trash", &[], b"").status, 200);
    let gc = r.req("POST", "/api/gc?grace=0s&untagged=0s", &[], b"").json();
    assert_eq!(gc["blobs"], 3, "the dropped image's manifest, config and layer: {gc}");
    berth.stop();
    let root_s = root.display().to_string();
    let out = cli_ok(&["fsck", "--root", &root_s]).stdout;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "one summary line and the total:\n{out}");
    assert!(lines[0].starts_with("debris  dangling-layer-link: 2 ("), "{out}");
    assert!(lines[1].contains("0 damage, 2 debris"), "{out}");
    let verbose = cli_ok(&["fsck", "--verbose", "--root", &root_s]).stdout;
    assert_eq!(
        verbose.lines().filter(|l| l.starts_with("debris  dangling-layer-link: fsck/app links blob")).count(),
        2,
        "{verbose}"
    );
    let repaired = cli_ok(&["fsck", "--repair", "--root", &root_s]).stdout;
    assert!(repaired.contains("dangling-layer-link: 2") && repaired.contains("(repaired)"), "{repaired}");
    assert!(cli_ok(&["fsck", "--root", &root_s]).stdout.contains("0 damage, 0 debris"));
}
