//! TLS from Distribution's `http.tls` keys: real clients (curl, skopeo, podman) trusting a CA
//! the test makes, client certificates, a certificate renewed by SIGHUP, and large blobs over
//! TLS (where the zero-copy path does not apply).

use std::process::Command;

use berth_oci::Digest;

use crate::clients::skopeo;
use crate::harness::{Berth, TestCa, https, require_tool, run};
use crate::image::{Layout, noise, standard};
use crate::podman::podman;
use crate::protocol::Reg;

fn tls_config(cert: &std::path::Path, key: &std::path::Path, extra: &str) -> String {
    format!("http:\n  tls:\n    certificate: {}\n    key: {}\n{extra}", cert.display(), key.display())
}

fn curl() -> Command {
    Command::new(require_tool("curl", "install it with `apt-get install -y curl`"))
}

#[test]
fn tls_serves_skopeo_podman_and_curl_that_trust_its_ca_and_nothing_in_clear() {
    let work = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&work.path().join("ca"));
    let (cert, key) = ca.issue("server", true);
    let berth = Berth::start_on(&work.path().join("root"), Some(&tls_config(&cert, &key, "")));
    let a = berth.addr.clone();
    let r = Reg::https(&a, "berth", https(&ca.pem(), None));
    assert_eq!(r.req("GET", "/v2/", &[], b"").status, 200);

    // curl --cacert; and the same port in clear text gets no registry answer.
    let ok = run(curl()
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(ca.dir.join("ca.crt"))
        .arg(format!("https://{a}/v2/")));
    assert_eq!(ok, "200");
    let clear = curl()
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5"])
        .arg(format!("http://{a}/v2/"))
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&clear.stdout), "200", "no plain HTTP on a TLS port");
    // A client that does not trust the CA is refused by its own TLS check.
    let untrusted =
        curl().args(["-sS", "-o", "/dev/null", "--max-time", "5"]).arg(format!("https://{a}/v2/")).output().unwrap();
    assert!(!untrusted.status.success());

    // skopeo with a certificate folder (ca.crt), both ways.
    let certs = work.path().join("certs.d");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(ca.dir.join("ca.crt"), certs.join("ca.crt")).unwrap();
    let src = standard(&work.path().join("src"), 90);
    run(skopeo()
        .args(["copy", "--retry-times=0", "--dest-cert-dir"])
        .arg(&certs)
        .arg(format!("oci:{}:img", src.layout.dir.display()))
        .arg(format!("docker://{a}/tls/img:v1")));
    let out = Layout::new(&work.path().join("out"));
    run(skopeo()
        .args(["copy", "--retry-times=0", "--src-cert-dir"])
        .arg(&certs)
        .arg(format!("docker://{a}/tls/img:v1"))
        .arg(format!("oci:{}:img", out.dir.display())));
    assert_eq!(out.lookup("img"), Some(src.image.digest.clone()));

    // podman over TLS with the same folder.
    let store = work.path().join("podman");
    run(podman(&store).args(["pull", "--cert-dir"]).arg(&certs).arg(format!("{a}/tls/img:v1")));
    run(podman(&store)
        .args(["push", "--cert-dir"])
        .arg(&certs)
        .arg(format!("{a}/tls/img:v1"))
        .arg(format!("docker://{a}/tls/copy:v1")));
    let copied =
        r.req("GET", "/v2/tls/copy/manifests/v1", &[("Accept", "application/vnd.oci.image.manifest.v1+json")], b"");
    assert_eq!(copied.status, 200);

    // A blob larger than the zero-copy threshold arrives whole over TLS.
    let big = noise(91, (5 << 20) + 3);
    let d = r.push_blob("tls/big", &big);
    let got = r.req("GET", &format!("/v2/tls/big/blobs/{d}"), &[], b"");
    assert_eq!(Digest::sha256_of(&got.body), d);
    let part = r.req("GET", &format!("/v2/tls/big/blobs/{d}"), &[("Range", "bytes=1000-4999999")], b"");
    assert!(part.status == 206 && part.body == big[1000..5_000_000]);
}

#[test]
fn client_certificates_are_required_when_clientcas_is_set() {
    let work = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&work.path().join("ca"));
    let (cert, key) = ca.issue("server", true);
    let clients = TestCa::new(&work.path().join("clients"));
    let (ccert, ckey) = clients.issue("client", false);
    let config = tls_config(&cert, &key, &format!("    clientcas: [{}]\n", clients.dir.join("ca.crt").display()));
    let berth = Berth::start_on(&work.path().join("root"), Some(&config));
    let url = format!("https://{}/v2/", berth.addr);

    let with = https(&ca.pem(), Some((&std::fs::read(&ccert).unwrap(), &std::fs::read(&ckey).unwrap())));
    assert_eq!(with.get(&url).call().unwrap().status(), 200);
    let without = https(&ca.pem(), None);
    assert!(without.get(&url).call().is_err(), "no client certificate, no answer");
    // A certificate from another authority is refused too.
    let (other, other_key) = ca.issue("stranger", false);
    let wrong = https(&ca.pem(), Some((&std::fs::read(&other).unwrap(), &std::fs::read(&other_key).unwrap())));
    assert!(wrong.get(&url).call().is_err());
}

#[test]
fn sighup_reloads_a_renewed_certificate_without_a_restart() {
    let work = tempfile::tempdir().unwrap();
    let old_ca = TestCa::new(&work.path().join("old"));
    let (cert, key) = old_ca.issue("server", true);
    let live_cert = work.path().join("live.crt");
    let live_key = work.path().join("live.key");
    std::fs::copy(&cert, &live_cert).unwrap();
    std::fs::copy(&key, &live_key).unwrap();
    let berth = Berth::start_on(&work.path().join("root"), Some(&tls_config(&live_cert, &live_key, "")));
    let url = format!("https://{}/v2/", berth.addr);
    assert_eq!(https(&old_ca.pem(), None).get(&url).call().unwrap().status(), 200);

    // Renewal: a certificate from a new CA replaces the files; a bad file first is refused.
    std::fs::write(&live_cert, "not a certificate").unwrap();
    berth.signal("HUP");
    crate::harness::wait_for_log(&berth, "reloading TLS failed");
    assert_eq!(https(&old_ca.pem(), None).get(&url).call().unwrap().status(), 200, "the old certificate stays");
    let new_ca = TestCa::new(&work.path().join("new"));
    let (cert, key) = new_ca.issue("server", true);
    std::fs::copy(&cert, &live_cert).unwrap();
    std::fs::copy(&key, &live_key).unwrap();
    berth.signal("HUP");
    crate::harness::wait_for_log(&berth, "TLS certificate and key reloaded");
    assert_eq!(https(&new_ca.pem(), None).get(&url).call().unwrap().status(), 200);
    assert!(https(&old_ca.pem(), None).get(&url).call().is_err(), "new connections get the new certificate");
}
