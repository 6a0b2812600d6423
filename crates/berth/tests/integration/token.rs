//! Access control with bearer tokens from an external token server (`auth.token`): the denial
//! matrix for tokens (none, expired, signed by another key, for another service or issuer,
//! for another repository, short of the action), the token's grants intersected with the
//! `access:` policy, the admin right from `access.admins` only, ES256 keys from a JWK set,
//! real clients and the CLI through the whole Docker token flow, and Distribution answering
//! the same tokens the same way.

use base64::Engine;
use serde_json::json;

use crate::clients::skopeo;
use crate::harness::{Berth, Distribution, cli_input, run};
use crate::image::standard;
use crate::podman::podman;
use crate::protocol::{Reg, Resp};
use crate::tokens::{EcSigner, RsaSigner, SERVICE, TokenServer, auth_section, claims, expired, with};

const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
const REALM: &str = "https://auth.example.test/token";

/// The challenge a request needing `scope` (if any) gets, with `error` (if any).
fn challenge(scope: Option<&str>, error: Option<&str>) -> String {
    let mut c = format!("Bearer realm=\"{REALM}\",service=\"{SERVICE}\"");
    if let Some(s) = scope {
        c.push_str(&format!(",scope=\"{s}\""));
    }
    if let Some(e) = error {
        c.push_str(&format!(",error=\"{e}\""));
    }
    c
}

fn unauthorized(r: &Resp, want: &str, what: &str) {
    assert_eq!((r.status, r.code().as_str()), (401, "UNAUTHORIZED"), "{what}: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.h("www-authenticate"), Some(want), "{what}: the challenge");
}

const POLICY: &str = r#"access:
  repositories:
    "team/**":
      policies:
        - users: [janitor]
          actions: [pull, delete]
      default: [pull, push]
    "public/**":
      default: [pull, push]
      anonymous: [pull]
  admins: [alice]
gc:
  interval: off
"#;

#[test]
fn the_token_denial_matrix_and_the_policy_on_top() {
    let dir = tempfile::tempdir().unwrap();
    let signer = RsaSigner::new(dir.path(), "signer");
    let stranger = RsaSigner::new(dir.path(), "stranger");
    let ec = EcSigner::new("ec-1");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [ec.jwk()]}).to_string()).unwrap();
    let config = format!("{}{POLICY}", auth_section(REALM, &signer.cert, Some(&jwks)));
    let berth = Berth::start_on(&dir.path().join("root"), Some(&config));
    let r = Reg::new(&berth.addr, "berth");
    let all: &[&str] = &["pull", "push", "delete"];

    let ci = r.with_token(&signer.mint(&claims("ci", &[("repository", "team/app", &["pull", "push"])]), true));
    let manifest = ci.push_image("team/app", "v1", 21);
    let digest = berth_oci::Digest::sha256_of(&manifest).to_string();
    r.with_token(&signer.mint(&claims("ci", &[("repository", "public/app", &["pull", "push"])]), true)).push_image(
        "public/app",
        "v1",
        22,
    );
    let intact = || {
        let got = ci.req("GET", "/v2/team/app/manifests/v1", &[("Accept", OCI)], b"");
        assert_eq!((got.status, &got.body), (200, &manifest), "nothing changed");
    };

    // No token; then tokens that are not good.
    unauthorized(&r.req("GET", "/v2/", &[], b""), &challenge(None, None), "no token, /v2/");
    let pull = "repository:team/app:pull";
    let get = |reg: &Reg| reg.req("GET", "/v2/team/app/manifests/v1", &[("Accept", OCI)], b"");
    unauthorized(&get(&r), &challenge(Some(pull), None), "no token");
    let good = claims("ci", &[("repository", "team/app", &["pull"])]);
    let bad = [
        ("expired", signer.mint(&expired(good.clone()), true)),
        ("signed by another key, chain in x5c", stranger.mint(&good, true)),
        ("signed by another key, no x5c", stranger.mint(&good, false)),
        ("for another service", signer.mint(&with(good.clone(), "aud", json!("elsewhere")), true)),
        ("from another issuer", signer.mint(&with(good.clone(), "iss", json!("mallory")), true)),
        ("not a JWT", "abc.def".to_owned()),
    ];
    for (what, token) in &bad {
        unauthorized(&get(&r.with_token(token)), &challenge(Some(pull), Some("invalid_token")), what);
        intact();
    }
    // An Authorization header that holds no token is asked to sign in, not counted as a bad one.
    for header in ["Bearer", "Bearer ", "Token abc", "Basic Y2k6Y2k="] {
        let got = r.req("GET", "/v2/team/app/manifests/v1", &[("Authorization", header)], b"");
        unauthorized(&got, &challenge(Some(pull), None), header);
    }
    // A named key must be one of the trusted ones.
    let named = |kid: &str| {
        let mut parts: Vec<String> = ec.mint(&good).split('.').map(str::to_owned).collect();
        parts[0] = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(json!({"alg": "ES256", "typ": "JWT", "kid": kid}).to_string());
        parts.join(".")
    };
    unauthorized(&get(&r.with_token(&named("unknown"))), &challenge(Some(pull), Some("invalid_token")), "unknown kid");
    // Good tokens, by every way of naming the key.
    assert_eq!(get(&r.with_token(&signer.mint(&good, true))).status, 200, "RS256, certificate in x5c");
    assert_eq!(get(&r.with_token(&signer.mint(&good, false))).status, 200, "RS256, key of the bundle");
    assert_eq!(get(&r.with_token(&ec.mint(&good))).status, 200, "ES256, key of the JWK set by kid");
    let other_ec = EcSigner::new("ec-1");
    unauthorized(
        &get(&r.with_token(&other_ec.mint(&good))),
        &challenge(Some(pull), Some("invalid_token")),
        "ES256 impostor",
    );

    // A token for another repository, or short of the action: 401 naming the scope needed,
    // so the client asks the token server again.
    let other_repo = r.with_token(&signer.mint(&claims("ci", &[("repository", "team/other", all)]), true));
    unauthorized(&get(&other_repo), &challenge(Some(pull), Some("insufficient_scope")), "another repository");
    let del = |reg: &Reg, what: &str| reg.req("DELETE", &format!("/v2/team/app/manifests/{what}"), &[], b"");
    let want = challenge(Some("repository:team/app:delete"), Some("insufficient_scope"));
    unauthorized(&del(&ci, "v1"), &want, "a push token deleting a tag");
    unauthorized(&del(&ci, &digest), &want, "a push token deleting a manifest");
    let layer = ci.req("GET", "/v2/team/app/manifests/v1", &[("Accept", OCI)], b"").json()["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    unauthorized(
        &ci.req("DELETE", &format!("/v2/team/app/blobs/{layer}"), &[], b""),
        &want,
        "a push token deleting a blob link",
    );
    unauthorized(
        &ci.req("POST", "/v2/team/new/blobs/uploads/", &[], b""),
        &challenge(Some("repository:team/new:push"), Some("insufficient_scope")),
        "a token for team/app pushing to team/new",
    );
    intact();

    // The token allows it, the policy does not: 403.
    let ci_all = r.with_token(&signer.mint(&claims("ci", &[("repository", "team/app", all)]), true));
    let denied = del(&ci_all, "v1");
    assert_eq!((denied.status, denied.code().as_str()), (403, "DENIED"), "ci may not delete by policy");
    assert!(denied.h("www-authenticate").is_none());
    intact();
    // A repository delete is admin only: the token lacks the admin scope (asked for first,
    // as Distribution asks for what a token lacks), and with it the policy still refuses.
    let repo_delete = ci_all.req("DELETE", "/api/repositories/team/app", &[], b"");
    unauthorized(&repo_delete, &challenge(Some("registry:admin:*"), Some("insufficient_scope")), "repository delete");
    let ci_admin = r.with_token(&signer.mint(&claims("ci", &[("registry", "admin", &["*"])]), true));
    let repo_delete = ci_admin.req("DELETE", "/api/repositories/team/app", &[], b"");
    assert_eq!((repo_delete.status, repo_delete.code().as_str()), (403, "DENIED"), "a repository delete is admin only");
    // Admin takes access.admins and a token granting registry:admin:*, so a token scoped to
    // something else never acts as an admin, whoever holds it.
    let gc = |reg: &Reg| reg.req("POST", "/api/gc?dry_run=true", &[], b"");
    let admin_scope = challenge(Some("registry:admin:*"), Some("insufficient_scope"));
    unauthorized(&gc(&r), &challenge(Some("registry:admin:*"), None), "GC without a token");
    let admin: &[(&str, &str, &[&str])] = &[("repository", "team/app", all), ("registry", "admin", &["*"])];
    let janitor = r.with_token(&signer.mint(&claims("janitor", admin), true));
    assert_eq!(gc(&janitor).status, 403, "a non-admin running GC");
    assert_eq!(janitor.req("POST", "/api/restore?repository=team/app&tag=v1", &[], b"").status, 403, "nor restore");
    intact();
    let alice_scoped = r.with_token(&signer.mint(&claims("alice", &[("repository", "team/app", &["pull"])]), true));
    unauthorized(&gc(&alice_scoped), &admin_scope, "an admin's token scoped to one repository");
    unauthorized(
        &alice_scoped.req("DELETE", "/api/repositories/team/app", &[], b""),
        &admin_scope,
        "nor deleting a repository with it",
    );
    intact();
    let alice = r.with_token(&signer.mint(&claims("alice", &[("registry", "admin", &["*"])]), true));
    assert_eq!(gc(&alice).status, 200, "access.admins, with the admin scope");

    // The catalog needs registry:catalog:*, and shows what the policy lets the caller pull.
    let catalog = "/v2/_catalog";
    unauthorized(
        &ci.req("GET", catalog, &[], b""),
        &challenge(Some("registry:catalog:*"), Some("insufficient_scope")),
        "catalog without the grant",
    );
    let lister = r.with_token(&signer.mint(&claims("ci", &[("registry", "catalog", &["*"])]), true));
    assert_eq!(lister.req("GET", catalog, &[], b"").json()["repositories"], json!(["public/app", "team/app"]));
    assert_eq!(r.req("GET", catalog, &[], b"").json()["repositories"], json!(["public/app"]), "anonymous");
    // A mount from a repository the token does not let the caller pull is no mount: a plain
    // upload starts (202), as the spec has it; with pull on the source, the blob is mounted.
    let mount = format!("/v2/team/app/blobs/uploads/?mount={layer}&from=public/app");
    let public_layer =
        r.req("GET", "/v2/public/app/manifests/v1", &[("Accept", OCI)], b"").json()["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .to_owned();
    let mount = mount.replace(&layer, &public_layer);
    let plain = ci.req("POST", &mount, &[], b"");
    assert_eq!(plain.status, 202, "{}", String::from_utf8_lossy(&plain.body));
    let both = r.with_token(&signer.mint(
        &claims("ci", &[("repository", "team/app", &["pull", "push"]), ("repository", "public/app", &["pull"])]),
        true,
    ));
    assert_eq!(both.req("POST", &mount, &[], b"").status, 201, "mounted");
    // Anonymous pull of public/** beside token push; anonymous push is asked to sign in.
    assert_eq!(r.req("GET", "/v2/public/app/manifests/v1", &[("Accept", OCI)], b"").status, 200);
    unauthorized(
        &r.req("POST", "/v2/public/app/blobs/uploads/", &[], b""),
        &challenge(Some("repository:public/app:push"), None),
        "anonymous push",
    );

    // The janitor deletes; the trash says who. Admin listings, like the catalog, take
    // registry:catalog:*.
    assert_eq!(del(&janitor, "v1").status, 202);
    unauthorized(
        &alice.req("GET", "/api/trash", &[], b""),
        &challenge(Some("registry:catalog:*"), Some("insufficient_scope")),
        "an admin listing without the grant",
    );
    let alice = r.with_token(
        &signer.mint(&claims("alice", &[("registry", "catalog", &["*"]), ("registry", "admin", &["*"])]), true),
    );
    let trash = alice.req("GET", "/api/trash", &[], b"").json();
    assert_eq!(trash["entries"][0]["who"], "janitor", "{trash}");
}

/// skopeo, podman and the CLI run the Docker token flow against a token server; Berth
/// intersects what it grants (everything asked) with the policy.
#[test]
fn real_clients_and_the_cli_get_their_tokens_from_the_token_server() {
    let dir = tempfile::tempdir().unwrap();
    let signer = RsaSigner::new(dir.path(), "signer");
    let server = TokenServer::start(&signer, "bob", "hunter2");
    let policy = "access:\n  repositories:\n    \"team/**\":\n      default: [pull, push]\ngc:\n  interval: off\n";
    let config = format!("{}{policy}", auth_section(&server.realm, &signer.cert, None));
    let berth = Berth::start_on(&dir.path().join("root"), Some(&config));
    let a = &berth.addr;
    let src = standard(&dir.path().join("src"), 23);
    let layout = format!("oci:{}:img", src.layout.dir.display());
    run(skopeo()
        .args(["copy", "--retry-times=0", "--dest-tls-verify=false", "--dest-creds", "bob:hunter2"])
        .arg(&layout)
        .arg(format!("docker://{a}/team/img:v1")));
    let wrong = skopeo()
        .args(["copy", "--retry-times=0", "--dest-tls-verify=false", "--dest-creds", "bob:nope"])
        .arg(&layout)
        .arg(format!("docker://{a}/team/img:v2"))
        .output()
        .unwrap();
    assert!(!wrong.status.success(), "the token server refuses a wrong password");
    let store = dir.path().join("podman");
    let auth_file = dir.path().join("auth.json");
    run(podman(&store)
        .args(["login", "--tls-verify=false", "--authfile"])
        .arg(&auth_file)
        .args(["-u", "bob", "-p", "hunter2", a]));
    run(podman(&store)
        .args(["pull", "--tls-verify=false", "--authfile"])
        .arg(&auth_file)
        .arg(format!("{a}/team/img:v1")));

    let url = format!("http://{a}");
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--url", &url, "--user", "bob", "--password-stdin"]);
        cli_input(&all, "hunter2\n")
    };
    let ls = cli(&["ls", "--json"]);
    assert_eq!((ls.code, ls.json()), (0, json!(["team/img"])), "{}", ls.stderr);
    let tags = cli(&["ls", "team/img", "--json"]);
    assert_eq!(tags.code, 0, "{}", tags.stderr);
    let rm = cli(&["rm", "team/img:v1", "--yes"]);
    assert!(
        rm.code == 1 && rm.stderr.contains("bob may not delete"),
        "the token grants it, the policy not: {}",
        rm.stderr
    );
}

/// The same tokens, minted outside either server, on Berth (no `access:`: the token is the
/// policy) and on Distribution 2.8 with the same `auth.token`: the same status, error code
/// and challenge for every case Distribution supports.
#[test]
fn berth_and_distribution_answer_the_same_tokens_alike() {
    let dir = tempfile::tempdir().unwrap();
    let signer = RsaSigner::new(dir.path(), "signer");
    let stranger = RsaSigner::new(dir.path(), "stranger");
    let auth = auth_section(REALM, &signer.cert, None);
    let berth = Berth::start_on(&dir.path().join("broot"), Some(&format!("{auth}gc:\n  interval: off\n")));
    let dist = Distribution::start_with(&dir.path().join("droot"), &auth);
    let t = |c: serde_json::Value| signer.mint(&c, true);
    let pushpull = t(claims("ci", &[("repository", "same/app", &["pull", "push"])]));
    let pull = t(claims("ci", &[("repository", "same/app", &["pull"])]));
    let pull_claims = claims("ci", &[("repository", "same/app", &["pull"])]);
    let cases: Vec<(&str, String, Option<String>)> = vec![
        ("base, no token", "GET /v2/".into(), None),
        ("base, a token without access", "GET /v2/".into(), Some(t(claims("ci", &[])))),
        ("base, Basic credentials", "GET /v2/".into(), Some("Basic".into())),
        ("pull, no token", "GET /v2/same/app/manifests/v1".into(), None),
        ("pull, good", "GET /v2/same/app/manifests/v1".into(), Some(pull.clone())),
        ("pull, expired", "GET /v2/same/app/manifests/v1".into(), Some(t(expired(pull_claims.clone())))),
        ("pull, another key", "GET /v2/same/app/manifests/v1".into(), Some(stranger.mint(&pull_claims, true))),
        (
            "pull, another service",
            "GET /v2/same/app/manifests/v1".into(),
            Some(t(with(pull_claims.clone(), "aud", json!("elsewhere")))),
        ),
        (
            "pull, another repository",
            "GET /v2/same/app/manifests/v1".into(),
            Some(t(claims("ci", &[("repository", "same/other", &["pull"])]))),
        ),
        ("tags, good", "GET /v2/same/app/tags/list".into(), Some(pull.clone())),
        ("delete, pull token", "DELETE /v2/same/app/manifests/DIGEST".into(), Some(pull.clone())),
        ("catalog, no token", "GET /v2/_catalog".into(), None),
        ("catalog, no grant", "GET /v2/_catalog".into(), Some(pull.clone())),
        ("catalog, granted", "GET /v2/_catalog".into(), Some(t(claims("ci", &[("registry", "catalog", &["*"])])))),
    ];
    let mut answers = Vec::new();
    for reg in [Reg::new(&berth.addr, "berth"), Reg::new(&dist.addr, "distribution")] {
        let m = reg.with_token(&pushpull).push_image("same/app", "v1", 24);
        let digest = berth_oci::Digest::sha256_of(&m).to_string();
        let mut got = Vec::new();
        for (what, req, token) in &cases {
            let (method, path) = req.split_once(' ').unwrap();
            let path = path.replace("DIGEST", &digest);
            let r = match token.as_deref() {
                None => reg.req(method, &path, &[("Accept", OCI)], b""),
                Some("Basic") => reg.as_user("ci", "x").req(method, &path, &[("Accept", OCI)], b""),
                Some(tok) => reg.with_token(tok).req(method, &path, &[("Accept", OCI)], b""),
            };
            let body = if r.status == 200 && path.contains("_catalog") { r.json().to_string() } else { String::new() };
            got.push((what.to_string(), r.status, r.code(), r.h("www-authenticate").map(str::to_owned), body));
        }
        answers.push(got);
    }
    for (b, d) in answers[0].iter().zip(&answers[1]) {
        assert_eq!(b, d, "berth (left) and distribution (right) differ");
    }
    // The cases mean something: some pass, some are refused for each reason.
    let statuses: Vec<u16> = answers[0].iter().map(|a| a.1).collect();
    assert!(statuses.contains(&200) && statuses.contains(&401), "{statuses:?}");
    assert!(answers[0].iter().any(|a| a.3.as_deref().is_some_and(|c| c.contains("insufficient_scope"))));
    assert!(answers[0].iter().any(|a| a.3.as_deref().is_some_and(|c| c.contains("invalid_token"))));
}
