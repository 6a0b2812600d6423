//! The real clients the tests drive: skopeo, oras (the Python package) and podman, plus a raw
//! HTTP/1.1 client for requests no polite client would send.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;

use berth_oci::Digest;

use crate::harness::{require_tool, run};

/// `skopeo --insecure-policy` (the tests copy between local stores they made themselves).
pub fn skopeo() -> Command {
    let mut c = Command::new(require_tool("skopeo", "install it with `apt-get install -y skopeo`"));
    c.arg("--insecure-policy");
    if let Some(m) = crate::harness::auth_mode() {
        c.env("REGISTRY_AUTH_FILE", m.auth_json());
    }
    c
}

/// `skopeo copy` with TLS verification off on both sides (the registries run plain HTTP).
pub fn copy(src: &str, dst: &str, extra: &[&str]) {
    run(skopeo()
        .arg("copy")
        .args(["--src-tls-verify=false", "--dest-tls-verify=false", "--retry-times=0"])
        .args(extra)
        .arg(src)
        .arg(dst));
}

/// Pulls `reference` from the registry at `addr` into the layout `out` as `name` with skopeo;
/// the digest of what it got.
pub fn pull(addr: &str, reference: &str, out: &crate::image::Layout, name: &str) -> Digest {
    copy(&format!("docker://{addr}/{reference}"), &format!("oci:{}:{name}", out.dir.display()), &[]);
    out.lookup(name).unwrap()
}

/// Whether skopeo finds no manifest for `reference` at `addr`.
pub fn absent(addr: &str, reference: &str) -> bool {
    !skopeo()
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{addr}/{reference}"))
        .output()
        .unwrap()
        .status
        .success()
}

/// The raw manifest bytes a registry serves for `ref` (`host/repo:tag`).
pub fn raw_manifest(reference: &str) -> Vec<u8> {
    run(skopeo().args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{reference}"))).into_bytes()
}

/// The digest of the manifest a registry serves for `reference`.
pub fn served_digest(reference: &str) -> Digest {
    Digest::sha256_of(&raw_manifest(reference))
}

/// A Python with the `oras` package, as `scripts/test` prepares it.
pub fn oras_python() -> PathBuf {
    let candidates = [
        std::env::var("BERTH_TEST_PYTHON").ok().map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-tools/venv/bin/python")),
    ];
    for c in candidates.into_iter().flatten() {
        if c.is_file() && Command::new(&c).args(["-c", "import oras.client"]).output().is_ok_and(|o| o.status.success())
        {
            return c;
        }
    }
    panic!(
        "this test needs the `oras` Python package; run scripts/test (it creates target/test-tools/venv), \
         or `python3 -m venv target/test-tools/venv && target/test-tools/venv/bin/pip install oras`, \
         or point BERTH_TEST_PYTHON at a python that has it"
    );
}

/// Runs a Python script with oras available; returns stdout.
pub fn oras_script(script: &str) -> String {
    run(Command::new(oras_python()).arg("-c").arg(script))
}

/// A raw HTTP response.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Raw {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The `errors[0].code` of a spec error body.
    pub fn error_code(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v["errors"][0]["code"].as_str().map(str::to_owned)
    }

    /// The `errors[0].message` of a spec error body.
    pub fn error_message(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v["errors"][0]["message"].as_str().map(str::to_owned)
    }
}

/// Sends one request exactly as given (path unnormalised) and reads the whole answer.
pub fn raw(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Raw {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer to {method} {path}: {resp:?}"));
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))).collect();
    let mut body = resp[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Raw { status, headers, body }
}

/// A request to pipeline: method, path, headers.
pub type Pipelined<'a> = (&'a str, String, Vec<(&'a str, String)>);

/// Sends every request on one connection before reading any answer (HTTP/1.1 pipelining),
/// then splits the answers by their `Content-Length`.
pub fn pipelined(addr: &str, requests: &[Pipelined<'_>]) -> Vec<Raw> {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut all = String::new();
    for (i, (method, path, headers)) in requests.iter().enumerate() {
        all.push_str(&format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n"));
        if i + 1 == requests.len() {
            all.push_str("Connection: close\r\n");
        }
        for (k, v) in headers {
            all.push_str(&format!("{k}: {v}\r\n"));
        }
        all.push_str("\r\n");
    }
    s.write_all(all.as_bytes()).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let mut rest = &resp[..];
    let mut out = Vec::new();
    for (method, path, _) in requests {
        let split = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no answer to pipelined {method} {path} (got {} of them)", out.len()));
        let head = String::from_utf8_lossy(&rest[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> =
            lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))).collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        let len = if *method == "HEAD" { 0 } else { len };
        let body = rest[split + 4..split + 4 + len].to_vec();
        rest = &rest[split + 4 + len..];
        out.push(Raw { status, headers, body });
    }
    assert!(rest.is_empty(), "{} bytes after the last answer", rest.len());
    out
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(nl) = b.windows(2).position(|w| w == b"\r\n") else { return out };
        let len = usize::from_str_radix(String::from_utf8_lossy(&b[..nl]).trim(), 16).unwrap_or(0);
        if len == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + len]);
        b = &b[nl + 2 + len + 2..];
    }
}
