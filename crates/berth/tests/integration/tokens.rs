//! Tokens minted outside Berth, as a token server would: an RSA key with its self-signed
//! certificate made by openssl (signing RS256, with or without the certificate in `x5c`), a
//! P-256 key for a JWK set (ES256), and the Python token service of `token_server.py` for
//! clients that run the whole Docker token flow.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::{Value, json};

use crate::harness::{require_tool, run};

/// The issuer and service the tests configure.
pub const ISSUER: &str = "berth-test-issuer";
pub const SERVICE: &str = "berth-test";

/// An RSA signing key with its self-signed certificate, made by openssl.
pub struct RsaSigner {
    pub key: PathBuf,
    pub cert: PathBuf,
    pair: RsaKeyPair,
    cert_der: Vec<u8>,
}

fn pem_body(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap();
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(b64).unwrap()
}

impl RsaSigner {
    /// A new key and certificate under `dir`, named `name`.
    pub fn new(dir: &Path, name: &str) -> RsaSigner {
        let openssl = require_tool("openssl", "install it with `apt-get install -y openssl`");
        std::fs::create_dir_all(dir).unwrap();
        let (key, cert) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.crt")));
        run(Command::new(openssl)
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj"])
            .arg(format!("/CN={name}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert));
        let pair = RsaKeyPair::from_pkcs8(&pem_body(&key)).expect("openssl writes PKCS#8 keys");
        let cert_der = pem_body(&cert);
        RsaSigner { key, cert, pair, cert_der }
    }

    /// A token with `claims`, RS256, carrying the certificate in `x5c` or not.
    pub fn mint(&self, claims: &Value, x5c: bool) -> String {
        let header = if x5c {
            json!({"typ": "JWT", "alg": "RS256", "x5c": [STANDARD.encode(&self.cert_der)]})
        } else {
            json!({"typ": "JWT", "alg": "RS256"})
        };
        let input = signing_input(&header, claims);
        let mut sig = vec![0; self.pair.public().modulus_len()];
        self.pair.sign(&RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), input.as_bytes(), &mut sig).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

/// A P-256 key and its entry for a JWK set.
pub struct EcSigner {
    pair: EcdsaKeyPair,
    pub kid: String,
}

impl EcSigner {
    pub fn new(kid: &str) -> EcSigner {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        EcSigner { pair, kid: kid.to_owned() }
    }

    /// The key as a JWK.
    pub fn jwk(&self) -> Value {
        let p = self.pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "use": "sig", "kid": self.kid,
               "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..])})
    }

    /// A token with `claims`, ES256, naming the key by `kid`.
    pub fn mint(&self, claims: &Value) -> String {
        let input = signing_input(&json!({"typ": "JWT", "alg": "ES256", "kid": self.kid}), claims);
        let sig = self.pair.sign(&ring::rand::SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()))
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Claims for `sub` granting `access` (`(type, name, actions)`), valid for five minutes.
pub fn claims(sub: &str, access: &[(&str, &str, &[&str])]) -> Value {
    let t = now();
    let access: Vec<Value> = access.iter().map(|(k, n, a)| json!({"type": k, "name": n, "actions": a})).collect();
    json!({"iss": ISSUER, "sub": sub, "aud": SERVICE, "exp": t + 300, "nbf": t - 5, "iat": t,
           "jti": format!("{sub}-{t}-{}", access.len()), "access": access})
}

/// `claims` with `key` set to `value`.
pub fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

/// Expired two minutes ago (past the minute of skew both servers allow).
pub fn expired(claims: Value) -> Value {
    with(claims, "exp", json!(now() - 120))
}

/// The `auth.token` section for a realm, with the signer's certificate as the bundle.
pub fn auth_section(realm: &str, bundle: &Path, jwks: Option<&Path>) -> String {
    let mut s = format!(
        "auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        bundle.display()
    );
    if let Some(j) = jwks {
        s.push_str(&format!("    jwks: {}\n", j.display()));
    }
    s
}

/// `token_server.py`, running: grants `user` (with `password`) whatever scope is asked for,
/// signing with `signer`'s key and certificate. Stopped when dropped.
pub struct TokenServer {
    child: std::process::Child,
    pub realm: String,
}

impl TokenServer {
    pub fn start(signer: &RsaSigner, user: &str, password: &str) -> TokenServer {
        let python = require_tool("python3", "install it with `apt-get install -y python3`");
        let mut child = Command::new(python)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/integration/token_server.py"))
            .arg(&signer.key)
            .arg(&signer.cert)
            .args([ISSUER, user, password])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        let port: u16 = line.trim().strip_prefix("listening ").expect("token server started").parse().unwrap();
        TokenServer { child, realm: format!("http://127.0.0.1:{port}/token") }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
