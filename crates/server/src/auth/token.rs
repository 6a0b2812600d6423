//! Bearer tokens from an external token server (Distribution's `auth.token`): JWTs signed
//! RS256/384/512 or ES256/384 by a key Berth trusts, either a certificate of
//! `rootcertbundle` (the token names it by `kid`, or carries a chain to it in `x5c`) or a
//! key of the `jwks` file. Checks `iss`, `aud` (must name the service), `exp` and `nbf` with
//! a minute of clock skew, as Distribution does, and reads the `access` claim.
//!
//! Owns nothing but verification: what a token's grants mean for a request is decided in
//! [`super`]. Never logs a token.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::{CertificateDer, UnixTime};
use sha2::{Digest as _, Sha256};
use webpki::EndEntityCert;

use super::action::Action;

/// How far `exp` and `nbf` may be off: Distribution's leeway.
const LEEWAY: Duration = Duration::from_secs(60);

/// Signature algorithms of a JWS header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Es256,
    Es384,
}

impl Alg {
    /// Reads a JWS `alg`; `none`, HMAC and the rest are not accepted.
    pub fn parse(s: &str) -> Option<Alg> {
        Some(match s {
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            _ => return None,
        })
    }

    /// Every supported algorithm.
    pub fn all() -> BTreeSet<Alg> {
        [Alg::Rs256, Alg::Rs384, Alg::Rs512, Alg::Es256, Alg::Es384].into()
    }

    fn webpki(self) -> &'static dyn rustls_pki_types::SignatureVerificationAlgorithm {
        match self {
            Alg::Rs256 => webpki::ring::RSA_PKCS1_2048_8192_SHA256,
            Alg::Rs384 => webpki::ring::RSA_PKCS1_2048_8192_SHA384,
            Alg::Rs512 => webpki::ring::RSA_PKCS1_2048_8192_SHA512,
            Alg::Es256 => webpki::ring::ECDSA_P256_SHA256,
            Alg::Es384 => webpki::ring::ECDSA_P384_SHA384,
        }
    }

    /// Bytes of each of `r` and `s` in a JWS ECDSA signature.
    fn ec_half(self) -> Option<usize> {
        match self {
            Alg::Es256 => Some(32),
            Alg::Es384 => Some(48),
            _ => None,
        }
    }
}

/// A key a token may be signed with.
enum Key {
    /// A certificate of the bundle (its key).
    Cert { der: CertificateDer<'static>, kid: String },
    /// An RSA key of the JWKS.
    Rsa { n: Vec<u8>, e: Vec<u8>, kid: Option<String> },
    /// An EC key of the JWKS: the uncompressed point, and its curve's algorithm.
    Ec { point: Vec<u8>, alg: Alg, kid: Option<String> },
}

impl Key {
    fn kid(&self) -> Option<&str> {
        match self {
            Key::Cert { kid, .. } => Some(kid),
            Key::Rsa { kid, .. } | Key::Ec { kid, .. } => kid.as_deref(),
        }
    }

    fn verify(&self, alg: Alg, msg: &[u8], sig: &[u8]) -> bool {
        use ring::signature as rs;
        match self {
            Key::Cert { der, .. } => verify_with_cert(der, alg, msg, sig),
            Key::Rsa { n, e, .. } => {
                let params = match alg {
                    Alg::Rs256 => &rs::RSA_PKCS1_2048_8192_SHA256,
                    Alg::Rs384 => &rs::RSA_PKCS1_2048_8192_SHA384,
                    Alg::Rs512 => &rs::RSA_PKCS1_2048_8192_SHA512,
                    _ => return false,
                };
                rs::RsaPublicKeyComponents { n, e }.verify(params, msg, sig).is_ok()
            }
            Key::Ec { point, alg: curve, .. } => {
                let params = match (alg, curve) {
                    (Alg::Es256, Alg::Es256) => &rs::ECDSA_P256_SHA256_FIXED,
                    (Alg::Es384, Alg::Es384) => &rs::ECDSA_P384_SHA384_FIXED,
                    _ => return false,
                };
                rs::UnparsedPublicKey::new(params, point).verify(msg, sig).is_ok()
            }
        }
    }
}

/// Verifies a JWS signature with a certificate's key (ECDSA's `r || s` made DER for webpki).
fn verify_with_cert(der: &CertificateDer<'_>, alg: Alg, msg: &[u8], sig: &[u8]) -> bool {
    let Ok(cert) = EndEntityCert::try_from(der) else { return false };
    let sig = match alg.ec_half() {
        Some(half) => match ecdsa_der(sig, half) {
            Some(d) => d,
            None => return false,
        },
        None => sig.to_vec(),
    };
    cert.verify_signature(alg.webpki(), msg, &sig).is_ok()
}

/// A JWS ECDSA signature (`r || s`, `half` bytes each) as an ASN.1 `Ecdsa-Sig-Value`.
fn ecdsa_der(sig: &[u8], half: usize) -> Option<Vec<u8>> {
    if sig.len() != 2 * half {
        return None;
    }
    let int = |b: &[u8]| {
        let b = &b[b.iter().position(|&x| x != 0).unwrap_or(b.len() - 1)..];
        let mut v = vec![0x02];
        let pad = b[0] & 0x80 != 0;
        v.push((b.len() + pad as usize) as u8);
        if pad {
            v.push(0);
        }
        v.extend_from_slice(b);
        v
    };
    let (r, s) = (int(&sig[..half]), int(&sig[half..]));
    let len = r.len() + s.len();
    let mut out = vec![0x30];
    if len >= 0x80 {
        out.push(0x81);
    }
    out.push(len as u8);
    out.extend(r);
    out.extend(s);
    Some(out)
}

/// libtrust's key id, which Distribution and token servers such as docker_auth put in `kid`:
/// the first 240 bits of the SHA-256 of the key's SPKI, base32, in groups of four.
fn libtrust_kid(spki: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let hash = Sha256::digest(spki);
    let bits = &hash[..30];
    let mut chars = String::with_capacity(48);
    let mut acc: u32 = 0;
    let mut n = 0;
    for &b in bits {
        acc = (acc << 8) | b as u32;
        n += 8;
        while n >= 5 {
            n -= 5;
            chars.push(ALPHABET[((acc >> n) & 31) as usize] as char);
        }
    }
    let groups: Vec<&str> = (0..chars.len()).step_by(4).map(|i| &chars[i..i + 4]).collect();
    groups.join(":")
}

/// What a verified token grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// The subject (`sub`); empty for a token issued to nobody in particular.
    pub subject: String,
    /// Actions per repository, as the `access` claim names them.
    pub repositories: BTreeMap<String, BTreeSet<Action>>,
    /// `registry:catalog:*`.
    pub catalog: bool,
    /// `registry:admin:*` (Berth's own; an admin of `access.admins` needs it in a token).
    pub admin: bool,
}

impl Grants {
    /// Whether the token allows `action` on the repository named `name`.
    pub fn allows(&self, name: &str, action: Action) -> bool {
        self.repositories.get(name).is_some_and(|a| a.contains(&action))
    }
}

/// Why a token was not accepted (said in the log, never to the client beyond `invalid_token`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("not a JWT")]
    Malformed,
    #[error("signing algorithm not accepted")]
    Algorithm,
    #[error("no trusted key verifies the signature")]
    Signature,
    #[error("issued by another issuer")]
    Issuer,
    #[error("issued for another service")]
    Audience,
    #[error("expired")]
    Expired,
    #[error("not valid yet")]
    NotYet,
}

/// The token server Berth trusts: `auth.token`.
pub struct TokenAuth {
    /// Where clients get tokens.
    pub realm: String,
    /// This registry's name in tokens (`aud`) and challenges.
    pub service: String,
    issuer: String,
    keys: Vec<Key>,
    algs: BTreeSet<Alg>,
}

impl std::fmt::Debug for TokenAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuth")
            .field("realm", &self.realm)
            .field("service", &self.service)
            .field("issuer", &self.issuer)
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// `auth.token`, as read from the config.
#[derive(Debug, Clone, Default)]
pub struct TokenSettings {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    /// PEM certificates whose keys sign tokens (and roots for `x5c` chains).
    pub rootcertbundle: Option<std::path::PathBuf>,
    /// A JWK set of keys that sign tokens.
    pub jwks: Option<std::path::PathBuf>,
    /// Accepted algorithms (`signingalgorithms`); empty: all supported.
    pub algorithms: Vec<String>,
}

impl TokenAuth {
    /// Loads the keys; a missing or unusable bundle or JWKS is an error (no start).
    pub fn load(s: &TokenSettings) -> Result<TokenAuth, String> {
        for (key, v) in [("realm", &s.realm), ("service", &s.service), ("issuer", &s.issuer)] {
            if v.is_empty() {
                return Err(format!("auth.token.{key} is missing"));
            }
        }
        let mut keys = Vec::new();
        if let Some(path) = &s.rootcertbundle {
            let pem = std::fs::read(path).map_err(|e| format!("auth.token.rootcertbundle {}: {e}", path.display()))?;
            let before = keys.len();
            for item in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
                let der: CertificateDer<'static> =
                    item.map_err(|e| format!("auth.token.rootcertbundle {}: {e}", path.display()))?;
                let cert = EndEntityCert::try_from(&der)
                    .map_err(|e| format!("auth.token.rootcertbundle {}: a certificate: {e}", path.display()))?;
                let kid = libtrust_kid(cert.subject_public_key_info().as_ref());
                keys.push(Key::Cert { der: der.clone(), kid });
            }
            if keys.len() == before {
                return Err(format!("auth.token.rootcertbundle {}: no PEM certificate in it", path.display()));
            }
        }
        if let Some(path) = &s.jwks {
            let text = std::fs::read(path).map_err(|e| format!("auth.token.jwks {}: {e}", path.display()))?;
            let found = jwks(&text).map_err(|e| format!("auth.token.jwks {}: {e}", path.display()))?;
            if found.is_empty() {
                return Err(format!("auth.token.jwks {}: no RSA or EC signing key in it", path.display()));
            }
            keys.extend(found);
        }
        if keys.is_empty() {
            return Err("auth.token needs rootcertbundle or jwks: the keys tokens are signed with".into());
        }
        let algs = if s.algorithms.is_empty() {
            Alg::all()
        } else {
            s.algorithms
                .iter()
                .map(|a| {
                    Alg::parse(a).ok_or_else(|| {
                        format!(
                            "auth.token.signingalgorithms: {a:?} is not supported (RS256, RS384, RS512, ES256, ES384)"
                        )
                    })
                })
                .collect::<Result<_, _>>()?
        };
        Ok(TokenAuth { realm: s.realm.clone(), service: s.service.clone(), issuer: s.issuer.clone(), keys, algs })
    }

    /// Verifies `token` at `now`; what it grants.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Grants, TokenError> {
        let mut parts = token.split('.');
        let (Some(h64), Some(c64), Some(s64), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Malformed);
        };
        let b64 = |s: &str| URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).map_err(|_| TokenError::Malformed);
        let header: serde_json::Value = serde_json::from_slice(&b64(h64)?).map_err(|_| TokenError::Malformed)?;
        let sig = b64(s64)?;
        let alg = header["alg"].as_str().and_then(Alg::parse).ok_or(TokenError::Algorithm)?;
        if !self.algs.contains(&alg) {
            return Err(TokenError::Algorithm);
        }
        let signed = &token.as_bytes()[..h64.len() + 1 + c64.len()];
        let unix = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
        let ok = match header["x5c"].as_array() {
            // A chain: its first certificate signed the token, and must be one of the bundle
            // or chain to one.
            Some(chain) => {
                let ders: Vec<CertificateDer<'static>> = chain
                    .iter()
                    .map(|c| c.as_str().and_then(|s| STANDARD.decode(s).ok()).map(CertificateDer::from))
                    .collect::<Option<_>>()
                    .ok_or(TokenError::Malformed)?;
                let leaf = ders.first().ok_or(TokenError::Malformed)?;
                self.trusts_chain(leaf, &ders[1..], unix) && verify_with_cert(leaf, alg, signed, &sig)
            }
            None => match header["kid"].as_str() {
                // A named key must be one Berth trusts, as Distribution requires.
                Some(kid) => self.keys.iter().filter(|k| k.kid() == Some(kid)).any(|k| k.verify(alg, signed, &sig)),
                // Neither `kid` nor `x5c`: any trusted key that verifies the signature.
                None => self.keys.iter().any(|k| k.verify(alg, signed, &sig)),
            },
        };
        if !ok {
            return Err(TokenError::Signature);
        }
        let claims: serde_json::Value = serde_json::from_slice(&b64(c64)?).map_err(|_| TokenError::Malformed)?;
        if claims["iss"].as_str() != Some(self.issuer.as_str()) {
            return Err(TokenError::Issuer);
        }
        let aud_ok = match &claims["aud"] {
            serde_json::Value::String(a) => *a == self.service,
            serde_json::Value::Array(a) => a.iter().any(|x| x.as_str() == Some(self.service.as_str())),
            _ => false,
        };
        if !aud_ok {
            return Err(TokenError::Audience);
        }
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
        let leeway = LEEWAY.as_secs() as i64;
        let exp = match &claims["exp"] {
            serde_json::Value::Null => return Err(TokenError::Expired),
            v => v.as_i64().ok_or(TokenError::Malformed)?,
        };
        if secs > exp.saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        match &claims["nbf"] {
            serde_json::Value::Null => {}
            v => {
                if secs < v.as_i64().ok_or(TokenError::Malformed)?.saturating_sub(leeway) {
                    return Err(TokenError::NotYet);
                }
            }
        }
        let mut grants = Grants { subject: claims["sub"].as_str().unwrap_or("").to_owned(), ..Grants::default() };
        match &claims["access"] {
            serde_json::Value::Null => {}
            serde_json::Value::Array(items) => {
                for item in items {
                    let (Some(kind), Some(name)) = (item["type"].as_str(), item["name"].as_str()) else {
                        return Err(TokenError::Malformed);
                    };
                    let actions: Vec<&str> =
                        item["actions"].as_array().into_iter().flatten().filter_map(|a| a.as_str()).collect();
                    match kind {
                        "repository" => {
                            let set = grants.repositories.entry(name.to_owned()).or_default();
                            // Actions Berth does not know (Distribution has none either) grant nothing.
                            set.extend(actions.iter().filter_map(|a| Action::parse_list(a)).flatten());
                        }
                        "registry" if name == "catalog" && actions.contains(&"*") => grants.catalog = true,
                        "registry" if name == "admin" && actions.contains(&"*") => grants.admin = true,
                        _ => {}
                    }
                }
            }
            _ => return Err(TokenError::Malformed),
        }
        Ok(grants)
    }

    /// Whether `leaf` is a bundle certificate, or chains to one through `intermediates` at `now`.
    fn trusts_chain(&self, leaf: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>], now: UnixTime) -> bool {
        let roots: Vec<&CertificateDer<'static>> =
            self.keys.iter().filter_map(|k| if let Key::Cert { der, .. } = k { Some(der) } else { None }).collect();
        if roots.iter().any(|r| r.as_ref() == leaf.as_ref()) {
            // The bundle's own certificate, which webpki will not take as an end entity: its
            // validity is checked here, as Distribution's chain check does.
            let t = now.as_secs() as i64;
            return validity(leaf.as_ref()).is_some_and(|(from, until)| from <= t && t <= until);
        }
        let anchors: Vec<_> = roots.iter().filter_map(|r| webpki::anchor_from_trusted_cert(r).ok()).collect();
        if anchors.is_empty() {
            return false;
        }
        let Ok(cert) = EndEntityCert::try_from(leaf) else { return false };
        let algs: Vec<_> = Alg::all().into_iter().map(Alg::webpki).collect();
        cert.verify_for_usage(&algs, &anchors, intermediates, now, AnyUsage, None, None).is_ok()
    }
}

/// A DER element of tag `tag` at the start of `input`: its contents and what follows it.
fn tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize), &rest[n..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// What follows the DER element at the start of `input`, whatever its tag.
fn skip(input: &[u8]) -> Option<&[u8]> {
    Some(tlv(input, *input.first()?)?.1)
}

/// A certificate's validity period (notBefore, notAfter) in Unix seconds.
fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (cert, _) = tlv(der, 0x30)?;
    let (tbs, _) = tlv(cert, 0x30)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = skip(rest)?; // version
    }
    rest = skip(skip(skip(rest)?)?)?; // serial number, signature algorithm, issuer
    let (period, _) = tlv(rest, 0x30)?;
    let (from, rest) = asn1_time(period)?;
    let (until, _) = asn1_time(rest)?;
    Some((from, until))
}

/// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) in Unix seconds.
fn asn1_time(input: &[u8]) -> Option<(i64, &[u8])> {
    let (text, rest, year) = match tlv(input, 0x17) {
        Some((t, rest)) => {
            let yy: i64 = std::str::from_utf8(t.get(..2)?).ok()?.parse().ok()?;
            (t.get(2..)?, rest, if yy >= 50 { 1900 + yy } else { 2000 + yy })
        }
        None => {
            let (t, rest) = tlv(input, 0x18)?;
            (t.get(4..)?, rest, std::str::from_utf8(t.get(..4)?).ok()?.parse().ok()?)
        }
    };
    if text.len() != 11 || text[10] != b'Z' {
        return None;
    }
    let field = |i: usize| -> Option<i64> { std::str::from_utf8(&text[i..i + 2]).ok()?.parse().ok() };
    let (mo, d, h, mi, s) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    // Days from the civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let y = if mo <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + s, rest))
}

/// Token signing certificates carry any extended key usage, or none: Distribution accepts any.
struct AnyUsage;

impl webpki::ExtendedKeyUsageValidator for AnyUsage {
    fn validate(&self, _: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

/// The signing keys of a JWK set (RSA, and EC on P-256 or P-384); keys for encryption are
/// left out.
fn jwks(text: &[u8]) -> Result<Vec<Key>, String> {
    let v: serde_json::Value = serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
    let keys = v["keys"].as_array().ok_or("no \"keys\" array")?;
    let mut out = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        if k["use"].as_str().is_some_and(|u| u != "sig") {
            continue;
        }
        let field = |name: &str| -> Result<Vec<u8>, String> {
            let s = k[name].as_str().ok_or_else(|| format!("key {i}: no {name:?}"))?;
            URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).map_err(|_| format!("key {i}: {name:?} is not base64url"))
        };
        let kid = k["kid"].as_str().map(str::to_owned);
        match k["kty"].as_str() {
            Some("RSA") => out.push(Key::Rsa { n: field("n")?, e: field("e")?, kid }),
            Some("EC") => {
                let (alg, half) = match k["crv"].as_str() {
                    Some("P-256") => (Alg::Es256, 32),
                    Some("P-384") => (Alg::Es384, 48),
                    other => return Err(format!("key {i}: curve {other:?} is not supported (P-256, P-384)")),
                };
                let (x, y) = (field("x")?, field("y")?);
                if x.len() != half || y.len() != half {
                    return Err(format!("key {i}: x and y must be {half} bytes each"));
                }
                let mut point = vec![4];
                point.extend(x);
                point.extend(y);
                out.push(Key::Ec { point, alg, kid });
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    /// A P-256 key, and its JWKS entry.
    fn ec_key(kid: &str) -> (EcdsaKeyPair, serde_json::Value) {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let p = pair.public_key().as_ref();
        let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..])});
        (pair, jwk)
    }

    /// Token auth for service `reg` and issuer `iss`, trusting `jwk` (from a JWKS file in the
    /// folder returned with it).
    fn trusting(jwk: serde_json::Value) -> (TokenAuth, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, serde_json::json!({"keys": [jwk]}).to_string()).unwrap();
        let auth = TokenAuth::load(&TokenSettings {
            realm: "https://auth/token".into(),
            service: "reg".into(),
            issuer: "iss".into(),
            jwks: Some(path),
            ..Default::default()
        })
        .unwrap();
        (auth, dir)
    }

    fn mint(key: &EcdsaKeyPair, header: serde_json::Value, claims: serde_json::Value) -> String {
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let sig = key.sign(&ring::rand::SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    #[test]
    fn es256_tokens_from_a_jwks_are_verified_claim_by_claim() {
        let (key, jwk) = ec_key("k1");
        let (other, _) = ec_key("k2");
        let (auth, _dir) = trusting(jwk);
        let now = SystemTime::now();
        let t = now.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let claims = |over: serde_json::Value| {
            let mut c = serde_json::json!({"iss": "iss", "sub": "ci", "aud": "reg", "exp": t + 300, "nbf": t - 5,
                "access": [{"type": "repository", "name": "team/app", "actions": ["pull", "push", "bogus"]},
                           {"type": "registry", "name": "catalog", "actions": ["*"]}]});
            for (k, v) in over.as_object().unwrap() {
                c[k] = v.clone();
            }
            c
        };
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": "k1"});
        let g = auth.verify(&mint(&key, header.clone(), claims(serde_json::json!({}))), now).unwrap();
        assert_eq!(g.subject, "ci");
        assert!(g.allows("team/app", Action::Push) && g.catalog);
        assert!(!g.allows("team/app", Action::Delete) && !g.allows("team/other", Action::Pull));
        // No kid, or another one: still only the trusted key verifies.
        let no_kid = serde_json::json!({"alg": "ES256"});
        assert!(auth.verify(&mint(&key, no_kid.clone(), claims(serde_json::json!({}))), now).is_ok());
        let cases = [
            (mint(&other, header.clone(), claims(serde_json::json!({}))), TokenError::Signature),
            (mint(&other, no_kid, claims(serde_json::json!({}))), TokenError::Signature),
            (mint(&key, header.clone(), claims(serde_json::json!({"iss": "evil"}))), TokenError::Issuer),
            (mint(&key, header.clone(), claims(serde_json::json!({"aud": "other"}))), TokenError::Audience),
            (mint(&key, header.clone(), claims(serde_json::json!({"aud": ["x", "reg"]}))), TokenError::Malformed),
            (mint(&key, header.clone(), claims(serde_json::json!({"exp": t - 61}))), TokenError::Expired),
            (mint(&key, header.clone(), claims(serde_json::json!({"exp": null}))), TokenError::Expired),
            (mint(&key, header.clone(), claims(serde_json::json!({"nbf": t + 61}))), TokenError::NotYet),
            (mint(&key, serde_json::json!({"alg": "none"}), claims(serde_json::json!({}))), TokenError::Algorithm),
            (mint(&key, serde_json::json!({"alg": "HS256"}), claims(serde_json::json!({}))), TokenError::Algorithm),
            (mint(&key, header.clone(), claims(serde_json::json!({"access": "all"}))), TokenError::Malformed),
            ("a.b".to_owned(), TokenError::Malformed),
        ];
        for (i, (token, want)) in cases.into_iter().enumerate() {
            let got = auth.verify(&token, now);
            // An audience list naming the service is fine.
            if i == 4 {
                assert!(got.is_ok(), "{got:?}");
                continue;
            }
            assert_eq!(got, Err(want), "case {i}");
        }
        // Within the minute of skew.
        assert!(auth.verify(&mint(&key, header.clone(), claims(serde_json::json!({"exp": t - 30}))), now).is_ok());
        // A token altered after signing.
        let good = mint(&key, header, claims(serde_json::json!({})));
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(claims(serde_json::json!({"sub": "alice"})).to_string());
        assert_eq!(auth.verify(&parts.join("."), now), Err(TokenError::Signature));
    }

    #[test]
    fn ecdsa_signatures_become_der() {
        let mut sig = vec![0u8; 64];
        sig[0] = 0x80; // r needs a zero byte in front
        sig[63] = 1; // s is 1
        let der = ecdsa_der(&sig, 32).unwrap();
        assert_eq!(&der[..4], &[0x30, 33 + 2 + 3, 0x02, 33]);
        assert_eq!(&der[der.len() - 3..], &[0x02, 1, 1]);
        assert_eq!(ecdsa_der(&sig[..63], 32), None);
    }

    #[test]
    fn certificate_times_are_read_from_der() {
        assert_eq!(asn1_time(b"\x17\x0d700101000000Z"), Some((0, &b""[..])));
        assert_eq!(asn1_time(b"\x17\x0d261130164500Z").map(|t| t.0), Some(1_796_057_100));
        assert_eq!(asn1_time(b"\x18\x0f20261130164500Z").map(|t| t.0), Some(1_796_057_100));
        assert_eq!(asn1_time(b"\x17\x0d2611301645Z"), None, "too short for its length");
        assert_eq!(asn1_time(b"\x17\x0b2611301645Z").map(|t| t.0), None, "no seconds");
        // A TBSCertificate with a version, serial, algorithm, issuer and validity.
        let validity_seq = [&[0x30u8, 30][..], b"\x17\x0d700101000000Z", b"\x17\x0d700101000100Z"].concat();
        let tbs = [&[0xa0u8, 3, 2, 1, 2][..], &[2, 1, 7], &[0x30, 0], &[0x30, 0], &validity_seq].concat();
        let cert = [&[0x30u8, (tbs.len() + 2) as u8, 0x30, tbs.len() as u8][..], &tbs].concat();
        assert_eq!(validity(&cert), Some((0, 60)));
        assert_eq!(validity(&cert[..cert.len() - 3]), None, "truncated");
    }

    #[test]
    fn libtrust_kids_have_twelve_groups() {
        let kid = libtrust_kid(b"anything");
        assert_eq!(kid.len(), 48 + 11);
        assert_eq!(kid.split(':').count(), 12);
        assert!(kid.chars().all(|c| c == ':' || c.is_ascii_uppercase() || ('2'..='7').contains(&c)), "{kid}");
    }

    #[test]
    fn bad_settings_are_refused() {
        let s = TokenSettings { realm: "r".into(), service: "s".into(), issuer: "i".into(), ..Default::default() };
        assert!(TokenAuth::load(&s).unwrap_err().contains("rootcertbundle or jwks"));
        let e = TokenAuth::load(&TokenSettings { issuer: String::new(), ..s.clone() }).unwrap_err();
        assert!(e.contains("issuer"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let j = dir.path().join("jwks.json");
        std::fs::write(&j, r#"{"keys":[{"kty":"EC","crv":"P-521","x":"AA","y":"AA"}]}"#).unwrap();
        let e = TokenAuth::load(&TokenSettings { jwks: Some(j.clone()), ..s.clone() }).unwrap_err();
        assert!(e.contains("P-521"), "{e}");
        std::fs::write(&j, r#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB","use":"enc"}]}"#).unwrap();
        let e = TokenAuth::load(&TokenSettings { jwks: Some(j), ..s }).unwrap_err();
        assert!(e.contains("no RSA or EC signing key"), "{e}");
    }

    /// Fuzz target `jwt`: any string is refused as a token (no key of ours signed it), and
    /// any header and claims (the input's two JSON lines) signed with the trusted key are
    /// verified claim by claim; never a panic, and nothing passes that should not.
    #[test]
    fn fuzz_jwt() {
        let (key, jwk) = ec_key("k1");
        let (auth, _dir) = trusting(jwk);
        let now = SystemTime::now();
        let t = now.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        berth_fuzz::fuzz("jwt", |input| {
            let Ok(text) = std::str::from_utf8(input) else { return };
            assert!(auth.verify(text.trim(), now).is_err(), "an unsigned token passed: {text:?}");
            let Some((h, c)) = text.split_once('\n') else { return };
            let (Ok(h), Ok(c)) =
                (serde_json::from_str::<serde_json::Value>(h), serde_json::from_str::<serde_json::Value>(c))
            else {
                return;
            };
            if let Ok(g) = auth.verify(&mint(&key, h.clone(), c.clone()), now) {
                assert_eq!(h["alg"], "ES256", "{h}");
                assert_eq!(c["iss"], "iss", "{c}");
                let aud_ok = c["aud"] == "reg" || c["aud"].as_array().is_some_and(|a| a.iter().any(|x| x == "reg"));
                assert!(aud_ok, "{c}");
                assert!(c["exp"].as_i64().is_some_and(|e| e > t - 61), "{c}");
                assert!(c["nbf"].as_i64().is_none_or(|n| n <= t + 61), "{c}");
                for (name, action) in [("team/app", Action::Pull), ("team/app", Action::Delete)] {
                    if g.allows(name, action) {
                        let granted = c["access"].as_array().is_some_and(|a| a.iter().any(|e| e["name"] == name));
                        assert!(granted, "{name} allowed without an access entry naming it: {c}");
                    }
                }
            }
        });
    }
}
