//! `berth serve` as an operator runs it: defaults, config file, flags over file, metrics,
//! health, and a clean stop on SIGTERM.

use crate::harness::{Berth, http};
use crate::protocol::Reg;

fn repo_exists(root: &std::path::Path, repo: &str) -> bool {
    root.join("docker/registry/v2/repositories").join(repo).join("_manifests").is_dir()
}

#[test]
fn with_no_root_flag_the_registry_stores_under_dot_data() {
    let cwd = tempfile::tempdir().unwrap();
    let mut berth = Berth::spawn(Some(cwd.path()), &["--addr".into(), "127.0.0.1:0".into()]);
    Reg::new(&berth.addr, "berth").push_image("dflt/app", "v1", 60);
    assert!(repo_exists(&cwd.path().join("data"), "dflt/app"));
    assert!(berth.stop().success());
}

#[test]
fn config_file_sets_root_and_address_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let (from_file, from_flag) = (dir.path().join("file-root"), dir.path().join("flag-root"));
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\n",
            from_file.display()
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();

    let berth = Berth::spawn(None, &["--config".into(), cfg.clone()]);
    Reg::new(&berth.addr, "berth").push_image("cfg/app", "v1", 61);
    assert!(repo_exists(&from_file, "cfg/app"));
    drop(berth);

    let berth = Berth::spawn(None, &["--config".into(), cfg, "--root".into(), from_flag.display().to_string()]);
    Reg::new(&berth.addr, "berth").push_image("cfg/flag", "v1", 62);
    assert!(repo_exists(&from_flag, "cfg/flag"));
    assert!(!repo_exists(&from_file, "cfg/flag"));
}

#[test]
fn a_bad_config_fails_at_start_with_a_one_line_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, "storage:\n  s3:\n    bucket: x\n").unwrap();
    let out =
        std::process::Command::new(crate::harness::berth_bin()).args(["serve", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("berth: ") && err.contains("s3") && err.trim().lines().count() == 1, "{err}");
}

/// Issue 8, part 1: a Distribution file whose `auth:` or `http.tls` Berth cannot honour must
/// not be served open; nor one whose token auth lacks the keys to check tokens with.
#[test]
fn a_config_that_restricts_access_is_refused_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "auth:\n  token:\n    realm: https://a/token\n    service: r\n    issuer: i\n",
            "auth.token needs rootcertbundle or jwks",
        ),
        ("auth:\n  silly:\n    realm: r\n    service: s\n", "config key auth.silly"),
        ("http:\n  tls:\n    letsencrypt:\n      email: a@b.c\n", "config key http.tls.letsencrypt"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let cfg = dir.path().join(format!("config{i}.yml"));
        let root = dir.path().join(format!("root{i}"));
        let text = if text.starts_with("http:") {
            text.replacen("http:\n", "http:\n  addr: 127.0.0.1:0\n", 1)
        } else {
            format!("http:\n  addr: 127.0.0.1:0\n{text}")
        };
        std::fs::write(&cfg, &text).unwrap();
        let out = std::process::Command::new(crate::harness::berth_bin())
            .args(["serve", "--root"])
            .arg(&root)
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}: {err}");
        assert!(err.starts_with("berth: ") && err.contains(needle) && err.trim().lines().count() == 1, "{text}: {err}");
        assert!(!err.contains("listening"), "it must never have served: {err}");
    }
}

#[test]
fn ignored_keys_are_listed_once_and_response_headers_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::start_on(
        &dir.path().join("root"),
        Some(
            "http:\n  secret: s3cr3t\n  headers:\n    X-Content-Type-Options: [nosniff]\nredis:\n  addr: localhost:6379\n",
        ),
    );
    let log = berth.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("config keys Berth does not use")).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("http.secret, redis"), "{log}");
    let r = Reg::new(&berth.addr, "berth");
    assert_eq!(r.req("GET", "/v2/", &[], b"").h("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.req("GET", "/v2/nope/manifests/v1", &[], b"").h("x-content-type-options"), Some("nosniff"));
}

#[test]
fn deletes_can_be_switched_off_in_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let berth = Berth::start_on(&dir.path().join("root"), Some("storage:\n  delete:\n    enabled: false\n"));
    let r = Reg::new(&berth.addr, "berth");
    r.push_image("nodel/app", "v1", 63);
    let d = r.req("DELETE", "/v2/nodel/app/manifests/v1", &[], b"");
    assert_eq!(d.status, 405);
    assert_eq!(d.code(), "UNSUPPORTED");
    assert_eq!(r.req("GET", "/v2/nodel/app/manifests/v1", &[], b"").status, 200, "nothing was deleted");
}

#[test]
fn metrics_health_and_api_version_header() {
    let berth = Berth::start();
    let r = Reg::new(&berth.addr, "berth");
    r.push_image("obs/app", "v1", 64);
    for _ in 0..3 {
        assert_eq!(r.req("GET", "/v2/obs/app/manifests/v1", &[], b"").status, 200);
    }
    assert_eq!(r.req("GET", "/v2/obs/app/manifests/nope", &[], b"").status, 404);
    let base = r.req("GET", "/v2/", &[], b"");
    assert_eq!(base.status, 200);
    assert_eq!(base.h("docker-distribution-api-version"), Some("registry/2.0"));

    let metrics = http().get(berth.url("/metrics")).call().unwrap().into_body().read_to_string().unwrap();
    assert!(
        metrics.contains(r#"berth_http_requests_total{endpoint="manifest",method="GET",code="2xx"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"berth_http_requests_total{endpoint="manifest",method="GET",code="4xx"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("berth_blob_bytes_received_total"), "{metrics}");

    let health = r.req("GET", "/healthz", &[], b"");
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
}
