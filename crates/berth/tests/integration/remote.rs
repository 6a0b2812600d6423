//! `berth rm --registry`: deleting correctly on another registry through the standard API,
//! here CNCF Distribution 2.8 (no OCI tag deletion) and Berth (with it).

use std::process::Command;

use crate::clients::copy;
use crate::harness::{Berth, Distribution, cli_fails, cli_ok, require_tool};
use crate::image::standard;
use crate::protocol::Reg;
use crate::tokens::{RsaSigner, TokenServer, auth_section};

/// The tags of `repo`, sorted; empty when the registry says the repository is unknown. Any
/// other answer fails the test.
fn tags(r: &Reg, repo: &str) -> Vec<String> {
    let resp = r.req("GET", &format!("/v2/{repo}/tags/list"), &[], b"");
    if resp.status == 404 {
        assert_eq!(resp.code(), "NAME_UNKNOWN", "{}", String::from_utf8_lossy(&resp.body));
        return vec![];
    }
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    // Distribution answers `"tags": null` for a repository whose tags are all gone.
    let mut t: Vec<String> = match &resp.json()["tags"] {
        serde_json::Value::Null => vec![],
        v => serde_json::from_value(v.clone()).expect("tags is a list of strings"),
    };
    t.sort();
    t
}

#[test]
fn remote_delete_on_distribution_refuses_to_take_sibling_tags_unless_all_tags() {
    let work = tempfile::tempdir().unwrap();
    let src = standard(&work.path().join("src"), 110);
    let root = work.path().join("dist");
    std::fs::create_dir_all(&root).unwrap();
    let dist = Distribution::start(&root, true);
    let url = format!("http://{}", dist.addr);
    for t in ["v1", "v2"] {
        copy(&format!("oci:{}:img", src.layout.dir.display()), &format!("docker://{}/rem/app:{t}", dist.addr), &[]);
    }
    copy(
        &format!("oci:{}:multi", src.layout.dir.display()),
        &format!("docker://{}/rem/app:solo", dist.addr),
        &["--all"],
    );
    let r = Reg::new(&dist.addr, "distribution");

    let err = cli_fails(&["rm", "--registry", &url, "rem/app:v1"]);
    assert!(err.contains("rem/app:v2") && err.contains("--all-tags"), "{err}");
    assert_eq!(tags(&r, "rem/app"), ["solo", "v1", "v2"], "the refusal touched nothing");

    let dry = cli_ok(&["rm", "--registry", &url, "rem/app:v1", "--all-tags", "--dry-run", "--json"]).json();
    assert_eq!(dry["deleted_tags"], serde_json::json!(["v1", "v2"]));
    assert_eq!(tags(&r, "rem/app"), ["solo", "v1", "v2"]);

    let done = cli_ok(&["rm", "--registry", &url, "rem/app:v1", "--all-tags", "--json"]).json();
    assert_eq!(done["method"], "digest");
    assert_eq!(done["shared_with"], serde_json::json!(["v2"]));
    assert_eq!(tags(&r, "rem/app"), ["solo"]);

    // A tag alone on its digest is deleted by digest without --all-tags.
    let done = cli_ok(&["rm", "--registry", &url, "rem/app:solo", "--json"]).json();
    assert_eq!(
        (done["method"].as_str(), done["digest"].as_str()),
        (Some("digest"), Some(src.index.digest.to_string().as_str()))
    );
    assert!(tags(&r, "rem/app").is_empty());
}

#[test]
fn remote_delete_says_plainly_when_deletes_are_disabled() {
    let work = tempfile::tempdir().unwrap();
    let src = standard(&work.path().join("src"), 111);
    let root = work.path().join("dist");
    std::fs::create_dir_all(&root).unwrap();
    let dist = Distribution::start(&root, false);
    copy(&format!("oci:{}:img", src.layout.dir.display()), &format!("docker://{}/off/app:v1", dist.addr), &[]);
    let err = cli_fails(&["rm", "--registry", &format!("http://{}", dist.addr), "off/app:v1"]);
    assert!(err.contains("deletes are disabled") && err.contains("storage.delete.enabled"), "{err}");
    assert_eq!(tags(&Reg::new(&dist.addr, "distribution"), "off/app"), ["v1"]);
}

#[test]
fn remote_delete_on_a_registry_with_tag_deletion_removes_just_the_tag() {
    let berth = Berth::start();
    let r = Reg::new(&berth.addr, "berth");
    let m = r.push_image("tagdel/app", "v1", 112);
    r.put_manifest("tagdel/app", "v2", &m, "application/vnd.oci.image.manifest.v1+json");
    let done = cli_ok(&["rm", "--registry", &berth.url(""), "tagdel/app:v1", "--json"]).json();
    assert_eq!(done["method"], "tag");
    assert_eq!(tags(&r, "tagdel/app"), ["v2"]);
}

#[test]
fn remote_delete_with_basic_auth_from_flags_and_docker_config() {
    let htpasswd = require_tool("htpasswd", "install it with `apt-get install -y apache2-utils`");
    let work = tempfile::tempdir().unwrap();
    let src = standard(&work.path().join("src"), 113);
    let root = work.path().join("dist");
    std::fs::create_dir_all(&root).unwrap();
    let users = work.path().join("htpasswd");
    let line = crate::harness::run(Command::new(htpasswd).args(["-Bbn", "alice", "s3cret"]));
    std::fs::write(&users, line).unwrap();
    let dist = Distribution::start_with(
        &root,
        &format!("auth:\n  htpasswd:\n    realm: test\n    path: {}\n", users.display()),
    );
    let url = format!("http://{}", dist.addr);
    for t in ["a", "b"] {
        copy(
            &format!("oci:{}:img", src.layout.dir.display()),
            &format!("docker://{}/auth/app:{t}", dist.addr),
            &["--dest-creds", "alice:s3cret"],
        );
    }
    let err = cli_fails(&["rm", "--registry", &url, "auth/app:a"]);
    assert!(err.contains("user name and password"), "{err}");
    cli_ok(&["rm", "--registry", &url, "auth/app:a", "--all-tags", "--username", "alice", "--password", "s3cret"]);

    // Credentials from ~/.docker/config.json, as docker and podman login write them.
    copy(
        &format!("oci:{}:img", src.layout.dir.display()),
        &format!("docker://{}/auth/app:c", dist.addr),
        &["--dest-creds", "alice:s3cret"],
    );
    let home = work.path().join("home");
    std::fs::create_dir_all(home.join(".docker")).unwrap();
    std::fs::write(
        home.join(".docker/config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"YWxpY2U6czNjcmV0"}}}}}}"#, dist.addr),
    )
    .unwrap();
    let out = Command::new(crate::harness::berth_bin())
        .args(["rm", "--registry", &url, "auth/app:c", "--json"])
        .env("HOME", &home)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn remote_delete_through_the_docker_token_flow_on_distribution() {
    let work = tempfile::tempdir().unwrap();
    let signer = RsaSigner::new(work.path(), "berth-test-token");
    let server = TokenServer::start(&signer, "bob", "hunter2");
    let root = work.path().join("dist");
    std::fs::create_dir_all(&root).unwrap();
    let dist = Distribution::start_with(&root, &auth_section(&server.realm, &signer.cert, None));
    let src = standard(&work.path().join("src"), 114);
    for t in ["a", "b"] {
        copy(
            &format!("oci:{}:img", src.layout.dir.display()),
            &format!("docker://{}/tok/app:{t}", dist.addr),
            &["--dest-creds", "bob:hunter2"],
        );
    }
    let url = format!("http://{}", dist.addr);
    let err = cli_fails(&["rm", "--registry", &url, "tok/app:a", "--username", "bob", "--password", "wrong"]);
    assert!(err.contains("token service") || err.contains("refused"), "{err}");
    let err = cli_fails(&["rm", "--registry", &url, "tok/app:a", "--username", "bob", "--password", "hunter2"]);
    assert!(err.contains("tok/app:b"), "authenticated, and still refuses to take the sibling tag: {err}");
    let done = cli_ok(&[
        "rm",
        "--registry",
        &url,
        "tok/app:a",
        "--all-tags",
        "--username",
        "bob",
        "--password",
        "hunter2",
        "--json",
    ])
    .json();
    assert_eq!(done["deleted_tags"], serde_json::json!(["a", "b"]));
    // Through the same token flow, both tags now resolve to nothing.
    for t in ["a", "b"] {
        let err = cli_fails(&[
            "rm",
            "--registry",
            &url,
            &format!("tok/app:{t}"),
            "--username",
            "bob",
            "--password",
            "hunter2",
        ]);
        assert!(err.contains("does not exist"), "tok/app:{t}: {err}");
    }
}
