//! Access control with htpasswd and the `access:` policy: the denial matrix (each refusal with
//! its status, code and challenge, and nothing changed), rights per repository with delete as a
//! right of its own, listings filtered by what the caller may pull, who is recorded, failed
//! sign-ins limited per address, and real clients (skopeo, podman, curl) over TLS. Distribution
//! serves the same htpasswd file beside Berth and answers the same where it can.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::clients::skopeo;
use crate::harness::{Berth, Distribution, TestCa, cli, cli_fails, cli_input, https, require_tool, run};
use crate::image::standard;
use crate::podman::podman;
use crate::protocol::{Reg, Resp};

const OCI: &str = "application/vnd.oci.image.manifest.v1+json";

/// Writes an htpasswd file with Apache's tool (bcrypt, cost 10), as operators do.
fn htpasswd(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    let tool = require_tool("htpasswd", "install it with `apt-get install -y apache2-utils`");
    let file = dir.join("htpasswd");
    for (i, (u, p)) in users.iter().enumerate() {
        let mut c = Command::new(&tool);
        c.arg("-B").arg("-b").args(["-C", "10"]);
        if i == 0 {
            c.arg("-c");
        }
        run(c.arg(&file).arg(u).arg(p));
    }
    file
}

const USERS: &[(&str, &str)] =
    &[("ci", "ci-pass"), ("janitor", "janitor-pass"), ("reader", "reader-pass"), ("alice", "alice-pass")];

fn policy(file: &Path) -> String {
    format!(
        r#"gc:
  interval: off
auth:
  htpasswd:
    realm: berth-test
    path: {}
access:
  repositories:
    "team/**":
      policies:
        - users: [ci]
          actions: [pull, push]
        - users: [janitor]
          actions: [pull, delete]
      default: [pull]
    "public/**":
      policies:
        - users: [ci]
          actions: [pull, push]
      anonymous: [pull]
  admins: [alice]
"#,
        file.display()
    )
}

fn refused(r: &Resp, status: u16, code: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.code(), code, "{what}");
    if status == 401 {
        assert_eq!(r.h("www-authenticate"), Some("Basic realm=\"berth-test\""), "{what}: the challenge");
    }
    let body = String::from_utf8_lossy(&r.body);
    assert!(!body.contains("pass"), "{what}: no secret in the answer: {body}");
}

#[test]
fn the_denial_matrix_each_refusal_answered_right_and_changing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = htpasswd(dir.path(), USERS);
    let berth = Berth::start_on(&dir.path().join("root"), Some(&policy(&file)));
    let anon = Reg::new(&berth.addr, "berth");
    let (ci, janitor, reader, alice) = (
        anon.as_user("ci", "ci-pass"),
        anon.as_user("janitor", "janitor-pass"),
        anon.as_user("reader", "reader-pass"),
        anon.as_user("alice", "alice-pass"),
    );
    let m = ci.push_image("team/app", "v1", 1);
    ci.put_manifest("team/app", "v2", &m, OCI);
    ci.push_image("public/lib", "v1", 2);
    let digest = berth_oci::Digest::sha256_of(&m);
    let layer =
        serde_json::from_slice::<serde_json::Value>(&m).unwrap()["layers"][0]["digest"].as_str().unwrap().to_owned();
    let state = |r: &Reg| {
        (
            alice.req("GET", "/v2/team/app/tags/list", &[], b"").json(),
            alice.req("GET", "/api/trash", &[], b"").json()["entries"].as_array().unwrap().len(),
            r.label,
        )
    };
    let before = state(&alice);

    // Not signed in, or signed in wrongly: 401 with the challenge.
    refused(&anon.req("GET", "/v2/team/app/manifests/v1", &[], b""), 401, "UNAUTHORIZED", "no credentials");
    refused(&anon.as_user("ci", "wrong").req("GET", "/v2/", &[], b""), 401, "UNAUTHORIZED", "wrong password");
    refused(&anon.as_user("mallory", "x").req("GET", "/v2/", &[], b""), 401, "UNAUTHORIZED", "unknown user");
    refused(
        &anon.req("PUT", "/v2/public/lib/manifests/v9", &[("Content-Type", OCI)], &m),
        401,
        "UNAUTHORIZED",
        "anonymous push",
    );
    refused(&anon.req("DELETE", "/v2/public/lib/manifests/v1", &[], b""), 401, "UNAUTHORIZED", "anonymous delete");
    // Signed in, without the right: 403.
    refused(&reader.req("POST", "/v2/team/app/blobs/uploads/", &[], b""), 403, "DENIED", "pull-only user pushing");
    refused(
        &reader.req("PUT", "/v2/team/app/manifests/v9", &[("Content-Type", OCI)], &m),
        403,
        "DENIED",
        "pull-only user tagging",
    );
    refused(&ci.req("DELETE", "/v2/team/app/manifests/v1", &[], b""), 403, "DENIED", "push-only user deleting a tag");
    refused(
        &ci.req("DELETE", &format!("/v2/team/app/manifests/{digest}"), &[], b""),
        403,
        "DENIED",
        "push-only user deleting a manifest",
    );
    refused(
        &ci.req("DELETE", &format!("/v2/team/app/blobs/{layer}"), &[], b""),
        403,
        "DENIED",
        "push-only user unlinking a blob",
    );
    refused(
        &ci.req("DELETE", "/api/repositories/team/app", &[], b""),
        403,
        "DENIED",
        "push-only user deleting a repository",
    );
    refused(
        &janitor.req("DELETE", "/api/repositories/team/app", &[], b""),
        403,
        "DENIED",
        "a repository delete takes an admin",
    );
    refused(&ci.req("POST", "/api/gc", &[], b""), 403, "DENIED", "non-admin GC");
    refused(&janitor.req("POST", "/api/restore?repository=team/app", &[], b""), 403, "DENIED", "non-admin restore");
    refused(&janitor.req("DELETE", "/api/trash", &[], b""), 403, "DENIED", "non-admin purge");
    refused(&reader.req("GET", "/v2/other/thing/tags/list", &[], b""), 403, "DENIED", "no pattern matches: no rights");
    // A mount from a repository the user may not pull is no mount: a plain upload starts
    // (202, as the spec has registries do when they cannot mount), and nothing is linked.
    let no_mount = ci.req("POST", &format!("/v2/team/copy/blobs/uploads/?mount={layer}&from=private/x"), &[], b"");
    assert_eq!(no_mount.status, 202, "mount from a repository the user may not pull");
    assert_eq!(ci.req("HEAD", &format!("/v2/team/copy/blobs/{layer}"), &[], b"").status, 404, "nothing mounted");
    assert_eq!(ci.req("DELETE", no_mount.h("location").unwrap(), &[], b"").status, 204);
    assert_eq!(state(&alice), before, "no refused request changed anything");

    // What is allowed is allowed.
    assert_eq!(reader.req("GET", "/v2/team/app/manifests/v1", &[], b"").status, 200);
    assert_eq!(anon.req("GET", "/v2/public/lib/manifests/v1", &[], b"").status, 200, "anonymous pull of public/**");
    assert_eq!(
        anon.req("GET", "/v2/", &[], b"").status,
        401,
        "clients learn the challenge at /v2/, then pull anonymously"
    );
    let del = janitor.req("DELETE", "/v2/team/app/manifests/v2", &[], b"");
    assert_eq!(del.status, 202, "{}", String::from_utf8_lossy(&del.body));
    assert_eq!(alice.req("POST", "/api/gc?dry_run=true", &[], b"").status, 200, "admins run GC");

    // Who did it is recorded.
    let trash = alice.req("GET", "/api/trash", &[], b"").json();
    assert_eq!(trash["entries"][0]["who"], "janitor");
    let audit = alice.req("GET", "/api/audit", &[], b"").json();
    assert_eq!(audit["entries"][0]["who"], "janitor");
    let restored = alice.req("POST", "/api/restore?repository=team/app&tag=v2", &[], b"");
    assert_eq!(restored.status, 200);
    assert_eq!(alice.req("GET", "/api/audit?action=restore", &[], b"").json()["entries"][0]["who"], "alice");

    // Listings show only what the caller may pull.
    let names = |r: &Reg| r.req("GET", "/v2/_catalog", &[], b"").json()["repositories"].clone();
    assert_eq!(names(&reader), json!(["public/lib", "team/app"]));
    assert_eq!(names(&anon), json!(["public/lib"]));
    let listed = anon.req("GET", "/api/repositories", &[], b"").json();
    assert_eq!(listed["repositories"].as_array().unwrap().len(), 1);
    assert_eq!(listed["repositories"][0]["name"], "public/lib");
}

/// Ten wrong passwords in a minute from one address stop password checks from it (429 with
/// Retry-After); what checks no password is not held up, so one client cannot lock out
/// everyone behind the same proxy.
#[test]
fn failed_sign_ins_are_limited_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let file = htpasswd(dir.path(), &[("ci", "ci-pass"), ("reader", "reader-pass")]);
    let berth = Berth::start_on(&dir.path().join("root"), Some(&policy(&file)));
    let r = Reg::new(&berth.addr, "berth");
    assert_eq!(r.as_user("ci", "ci-pass").req("GET", "/v2/", &[], b"").status, 200, "ci signs in once");
    let bad = r.as_user("ci", "guess");
    for _ in 0..10 {
        assert_eq!(bad.req("GET", "/v2/", &[], b"").status, 401);
    }
    let blocked = r.as_user("reader", "reader-pass").req("GET", "/v2/", &[], b"");
    assert_eq!((blocked.status, blocked.code().as_str()), (429, "TOOMANYREQUESTS"), "no password is checked now");
    let wait: u64 = blocked.h("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(bad.req("GET", "/v2/", &[], b"").status, 429, "nor a guess");
    assert_eq!(r.as_user("ci", "ci-pass").req("GET", "/v2/", &[], b"").status, 200, "a verified password still works");
    assert_eq!(r.req("GET", "/healthz", &[], b"").status, 200);
    assert_eq!(r.req("GET", "/v2/_catalog", &[], b"").status, 200, "anonymous requests check no password");
}

#[test]
fn the_htpasswd_file_is_read_again_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let file = htpasswd(dir.path(), &[("ci", "ci-pass")]);
    let berth = Berth::start_on(&dir.path().join("root"), Some(&policy(&file)));
    let r = Reg::new(&berth.addr, "berth");
    assert_eq!(r.as_user("ci", "ci-pass").req("GET", "/v2/", &[], b"").status, 200);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    htpasswd(dir.path(), &[("ci", "new-pass")]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(r.as_user("ci", "ci-pass").req("GET", "/v2/", &[], b"").status, 401, "the old password is gone");
    assert_eq!(r.as_user("ci", "new-pass").req("GET", "/v2/", &[], b"").status, 200);
}

#[test]
fn a_config_with_non_bcrypt_entries_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, "ci:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n").unwrap();
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, format!("http:\n  addr: 127.0.0.1:0\n{}", policy(&file))).unwrap();
    let out = Command::new(crate::harness::berth_bin())
        .args(["serve", "--root"])
        .arg(dir.path().join("root"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not bcrypt") && err.contains("htpasswd -B") && err.trim().lines().count() == 1, "{err}");
}

/// The same htpasswd file and requests on Berth (no `access:`: Distribution's behaviour,
/// every signed-in user may do everything) and on Distribution: the same answers.
#[test]
fn berth_and_distribution_answer_alike_with_the_same_htpasswd_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = htpasswd(dir.path(), &[("ci", "ci-pass")]);
    let auth = format!("auth:\n  htpasswd:\n    realm: shared-realm\n    path: {}\n", file.display());
    let berth = Berth::start_on(&dir.path().join("broot"), Some(&auth));
    let dist = Distribution::start_with(&dir.path().join("droot"), &auth);
    for r in [Reg::new(&berth.addr, "berth"), Reg::new(&dist.addr, "distribution")] {
        let base = r.req("GET", "/v2/", &[], b"");
        assert_eq!(base.status, 401, "{}", r.label);
        assert_eq!(base.h("www-authenticate"), Some("Basic realm=\"shared-realm\""), "{}", r.label);
        assert_eq!(base.code(), "UNAUTHORIZED", "{}", r.label);
        assert_eq!(r.as_user("ci", "nope").req("GET", "/v2/", &[], b"").status, 401, "{}", r.label);
        assert_eq!(r.req("GET", "/v2/_catalog", &[], b"").status, 401, "{}", r.label);
        let ci = r.as_user("ci", "ci-pass");
        assert_eq!(ci.req("GET", "/v2/", &[], b"").status, 200, "{}", r.label);
        let m = ci.push_image("same/app", "v1", 5);
        assert_eq!(ci.req("GET", "/v2/same/app/manifests/v1", &[("Accept", OCI)], b"").body, m, "{}", r.label);
        assert_eq!(r.req("GET", "/v2/same/app/manifests/v1", &[], b"").status, 401, "{}", r.label);
        assert_eq!(ci.req("GET", "/v2/_catalog", &[], b"").json()["repositories"], json!(["same/app"]), "{}", r.label);
    }
}

/// Real clients sign in over TLS: skopeo with --dest-creds/--src-creds, podman login, curl.
#[test]
fn skopeo_podman_and_curl_sign_in_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let file = htpasswd(dir.path(), USERS);
    let ca = TestCa::new(&dir.path().join("ca"));
    let (cert, key) = ca.issue("server", true);
    let config =
        format!("http:\n  tls:\n    certificate: {}\n    key: {}\n{}", cert.display(), key.display(), policy(&file));
    let berth = Berth::start_on(&dir.path().join("root"), Some(&config));
    let a = &berth.addr;
    let certs = dir.path().join("certs.d");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(ca.dir.join("ca.crt"), certs.join("ca.crt")).unwrap();
    let src = standard(&dir.path().join("src"), 95);
    let layout = format!("oci:{}:img", src.layout.dir.display());

    run(skopeo()
        .args(["copy", "--retry-times=0", "--dest-creds", "ci:ci-pass", "--dest-cert-dir"])
        .arg(&certs)
        .arg(&layout)
        .arg(format!("docker://{a}/team/img:v1")));
    let refused = skopeo()
        .args(["copy", "--retry-times=0", "--dest-creds", "reader:reader-pass", "--dest-cert-dir"])
        .arg(&certs)
        .arg(&layout)
        .arg(format!("docker://{a}/team/img:v2"))
        .output()
        .unwrap();
    assert!(!refused.status.success(), "a pull-only user cannot push");
    // Anonymous pull of public/** beside authenticated push.
    run(skopeo()
        .args(["copy", "--retry-times=0", "--dest-creds", "ci:ci-pass", "--dest-cert-dir"])
        .arg(&certs)
        .arg(&layout)
        .arg(format!("docker://{a}/public/img:v1")));
    run(skopeo()
        .args(["copy", "--retry-times=0", "--src-cert-dir"])
        .arg(&certs)
        .arg(format!("docker://{a}/public/img:v1"))
        .arg(format!("oci:{}:anon", dir.path().join("anon").display())));
    let private = skopeo()
        .args(["copy", "--retry-times=0", "--src-cert-dir"])
        .arg(&certs)
        .arg(format!("docker://{a}/team/img:v1"))
        .arg(format!("oci:{}:anon", dir.path().join("anon2").display()))
        .output()
        .unwrap();
    assert!(!private.status.success(), "team/** is not public");
    let out = dir.path().join("out");
    run(skopeo()
        .args(["copy", "--retry-times=0", "--src-creds", "reader:reader-pass", "--src-cert-dir"])
        .arg(&certs)
        .arg(format!("docker://{a}/team/img:v1"))
        .arg(format!("oci:{}:img", out.display())));

    let store = dir.path().join("podman");
    let auth_file = dir.path().join("auth.json");
    run(podman(&store)
        .args(["login", "--cert-dir"])
        .arg(&certs)
        .arg("--authfile")
        .arg(&auth_file)
        .args(["-u", "ci", "-p", "ci-pass", a]));
    run(podman(&store)
        .args(["pull", "--cert-dir"])
        .arg(&certs)
        .arg("--authfile")
        .arg(&auth_file)
        .arg(format!("{a}/team/img:v1")));
    run(podman(&store)
        .args(["push", "--cert-dir"])
        .arg(&certs)
        .arg("--authfile")
        .arg(&auth_file)
        .arg(format!("{a}/team/img:v1"))
        .arg(format!("docker://{a}/team/pushed:v1")));

    let curl = require_tool("curl", "install it with `apt-get install -y curl`");
    let code = run(Command::new(&curl)
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-u",
            "janitor:janitor-pass",
            "-X",
            "DELETE",
            "--cacert",
        ])
        .arg(ca.dir.join("ca.crt"))
        .arg(format!("https://{a}/v2/team/pushed/manifests/v1")));
    assert_eq!(code, "202");
    let r = Reg::https(a, "berth", https(&ca.pem(), None)).as_user("alice", "alice-pass");
    assert_eq!(r.req("GET", "/api/trash", &[], b"").json()["entries"][0]["who"], "janitor");
}

/// `berth user add|rm` writes the htpasswd file (read by Berth without a restart, and by
/// Distribution as well), and the management commands sign in over TLS with `--user`,
/// `--password-stdin` and `--cacert`, each allowed exactly what the policy gives its user.
#[test]
fn the_cli_manages_users_and_signs_in_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    let f = file.to_str().unwrap();
    for (u, p) in USERS {
        let out = cli_input(&["user", "add", u, "--file", f, "--password-stdin"], &format!("{p}\n"));
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), USERS.len());
    assert!(text.lines().all(|l| l.contains(":$2y$10$")) && !text.contains("pass"), "{text}");
    let ca = TestCa::new(&dir.path().join("ca"));
    let (cert, key) = ca.issue("server", true);
    let config =
        format!("http:\n  tls:\n    certificate: {}\n    key: {}\n{}", cert.display(), key.display(), policy(&file));
    let berth = Berth::start_on(&dir.path().join("root"), Some(&config));
    let url = format!("https://{}", berth.addr);
    let cacert = ca.dir.join("ca.crt");
    let r = Reg::https(&berth.addr, "berth", https(&ca.pem(), None));
    r.as_user("ci", "ci-pass").push_image("team/app", "v1", 11);
    r.as_user("ci", "ci-pass").push_image("team/app", "v2", 12);
    let as_user = |user: &str, pass: &str, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--url", &url, "--cacert", cacert.to_str().unwrap(), "--user", user, "--password-stdin"]);
        cli_input(&all, &format!("{pass}\n"))
    };

    let ls = as_user("reader", "reader-pass", &["ls", "--json"]);
    assert_eq!((ls.code, ls.json()), (0, json!(["team/app"])), "{}", ls.stderr);
    let no_ca = cli_input(&["ls", "--url", &url, "--user", "reader", "--password-stdin"], "reader-pass\n");
    assert_eq!(no_ca.code, 1, "a server certificate from an unknown CA is refused");
    let wrong = as_user("reader", "nope", &["ls"]);
    assert!(wrong.code == 1 && wrong.stderr.contains("refused the credentials"), "{}", wrong.stderr);

    let denied = as_user("ci", "ci-pass", &["rm", "team/app:v1", "--yes"]);
    assert!(denied.code == 1 && denied.stderr.contains("may not delete"), "a pusher cannot delete: {}", denied.stderr);
    let rm = as_user("janitor", "janitor-pass", &["rm", "team/app:v1", "--yes", "--json"]);
    assert_eq!(rm.code, 0, "{}", rm.stderr);
    let gc = as_user("janitor", "janitor-pass", &["gc", "--dry-run"]);
    assert!(gc.code == 1 && gc.stderr.contains("not an admin"), "{}", gc.stderr);
    let trash = as_user("alice", "alice-pass", &["trash", "--json"]);
    assert_eq!(trash.code, 0, "{}", trash.stderr);
    assert_eq!(trash.json()[0]["who"], "janitor", "the signed-in user is recorded: {}", trash.stdout);
    assert_eq!(as_user("alice", "alice-pass", &["gc", "--dry-run"]).code, 0);

    // A removed user is refused within the second the server takes to look at the file again.
    assert_eq!(cli(&["user", "rm", "janitor", "--file", f]).code, 0);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(r.as_user("janitor", "janitor-pass").req("GET", "/v2/", &[], b"").status, 401);
    assert!(cli_fails(&["user", "rm", "janitor", "--file", f]).contains("not in"));
    // A changed password.
    assert_eq!(cli_input(&["user", "add", "ci", "--file", f, "--password-stdin"], "ci-new\n").code, 0);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(r.as_user("ci", "ci-pass").req("GET", "/v2/", &[], b"").status, 401);
    assert_eq!(r.as_user("ci", "ci-new").req("GET", "/v2/", &[], b"").status, 200);
    assert!(cli_fails(&["user", "add", "a:b", "--file", f, "--password-stdin"]).contains("cannot be a user name"));

    // Distribution reads the file berth wrote.
    let auth = format!("auth:\n  htpasswd:\n    realm: r\n    path: {}\n", file.display());
    let dist = Distribution::start_with(&dir.path().join("droot"), &auth);
    let d = Reg::new(&dist.addr, "distribution");
    assert_eq!(d.as_user("ci", "ci-new").req("GET", "/v2/", &[], b"").status, 200);
    assert_eq!(d.as_user("alice", "nope").req("GET", "/v2/", &[], b"").status, 401);
}
