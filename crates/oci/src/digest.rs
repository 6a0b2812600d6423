//! Content digests (`algorithm:encoded`) and the hasher that produces them.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

use crate::error::{ParseError, shorten};

/// A digest algorithm Berth can verify content against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, the algorithm every registry and client must support.
    Sha256,
    /// SHA-512, which the distribution spec says registries should support.
    Sha512,
}

impl Algorithm {
    /// The name used in digests and in the storage layout (`sha256`).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated content digest such as `sha256:<64 lowercase hex>`.
///
/// Only a supported algorithm with a correctly sized lowercase hex encoding can be held, so the
/// encoded part is safe to use as a path component.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// The algorithm part.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The encoded (lowercase hex) part.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// SHA-256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        let mut h = DigestHasher::new(Algorithm::Sha256);
        h.update(bytes);
        h.finish()
    }

    /// Digest of `bytes` with `algorithm`.
    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut h = DigestHasher::new(algorithm);
        h.update(bytes);
        h.finish()
    }

    /// Parses a digest from a path component or link file, where a trailing newline is tolerated.
    pub fn parse(s: &str) -> Result<Digest, ParseError> {
        s.parse()
    }

    /// The digest whose raw hash is `bytes`; `None` when `bytes` is not the algorithm's length.
    pub fn from_bytes(algorithm: Algorithm, bytes: &[u8]) -> Option<Digest> {
        (bytes.len() * 2 == algorithm.hex_len()).then(|| Digest { algorithm, hex: to_hex(bytes) })
    }

    /// Builds a digest from an algorithm directory name and hex directory name in the storage
    /// layout; `None` when either is not valid.
    pub fn from_parts(algorithm: &str, hex: &str) -> Option<Digest> {
        format!("{algorithm}:{hex}").parse().ok()
    }
}

impl FromStr for Digest {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| ParseError::Digest { digest: shorten(s), reason };
        let (algorithm, encoded) = s.split_once(':').ok_or_else(|| bad("expected algorithm:encoded"))?;
        if !is_algorithm_grammar(algorithm) {
            return Err(bad("the algorithm must match [a-z0-9]+([+._-][a-z0-9]+)*"));
        }
        if encoded.is_empty()
            || !encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'=' || b == b'_' || b == b'-')
        {
            return Err(bad("the encoded part must match [a-zA-Z0-9=_-]+"));
        }
        let algorithm = match algorithm {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => return Err(ParseError::UnsupportedAlgorithm { algorithm: shorten(other) }),
        };
        if encoded.len() != algorithm.hex_len() {
            return Err(bad(match algorithm {
                Algorithm::Sha256 => "a sha256 digest has 64 hex characters",
                Algorithm::Sha512 => "a sha512 digest has 128 hex characters",
            }));
        }
        if !encoded.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad("the encoded part must be lowercase hex"));
        }
        Ok(Digest { algorithm, hex: encoded.to_owned() })
    }
}

fn is_algorithm_grammar(s: &str) -> bool {
    let mut prev_sep = true; // disallows a leading separator
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' => prev_sep = false,
            b'+' | b'.' | b'_' | b'-' if !prev_sep => prev_sep = true,
            _ => return false,
        }
    }
    !prev_sep
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An incremental hasher for one algorithm.
///
/// Clonable so an upload can keep its running state between chunks.
#[derive(Clone)]
pub enum DigestHasher {
    /// SHA-256 state (uses the CPU's SHA extensions when present).
    Sha256(sha2::Sha256),
    /// SHA-512 state.
    Sha512(sha2::Sha512),
}

impl DigestHasher {
    /// A fresh hasher.
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => DigestHasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => DigestHasher::Sha512(sha2::Sha512::new()),
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            DigestHasher::Sha256(h) => h.update(bytes),
            DigestHasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The algorithm this hasher computes.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            DigestHasher::Sha256(_) => Algorithm::Sha256,
            DigestHasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            DigestHasher::Sha256(h) => (Algorithm::Sha256, to_hex(&h.finalize())),
            DigestHasher::Sha512(h) => (Algorithm::Sha512, to_hex(&h.finalize())),
        };
        Digest { algorithm, hex }
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn from_bytes_is_the_digest_of_its_raw_hash() {
        let raw = sha2::Sha256::digest(b"");
        assert_eq!(Digest::from_bytes(Algorithm::Sha256, &raw).unwrap().to_string(), EMPTY);
        assert_eq!(Digest::from_bytes(Algorithm::Sha512, &raw), None, "a sha256 hash is no sha512 digest");
        assert_eq!(Digest::from_bytes(Algorithm::Sha256, &raw[..31]), None);
    }

    #[test]
    fn hashes_known_values() {
        assert_eq!(Digest::sha256_of(b"").to_string(), EMPTY);
        assert_eq!(
            Digest::of(Algorithm::Sha512, b"").to_string(),
            "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
        );
    }

    #[test]
    fn parse_table() {
        // (input, Ok(round trip) | Err(is_unsupported))
        let cases: &[(&str, Result<(), bool>)] = &[
            (EMPTY, Ok(())),
            ("sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", Err(false)),
            ("sha256:e3b0", Err(false)),
            ("sha256:", Err(false)),
            ("sha256", Err(false)),
            (":abc", Err(false)),
            ("sha256:../../etc/passwd", Err(false)),
            ("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g", Err(false)),
            ("-sha256:abc", Err(false)),
            ("sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564", Err(true)),
            ("md5:d41d8cd98f00b204e9800998ecf8427e", Err(true)),
            ("SHA256:abc", Err(false)),
        ];
        for (input, want) in cases {
            let got = input.parse::<Digest>();
            match (want, &got) {
                (Ok(()), Ok(d)) => assert_eq!(&d.to_string(), input),
                (Err(true), Err(ParseError::UnsupportedAlgorithm { .. })) => {}
                (Err(false), Err(ParseError::Digest { .. })) => {}
                _ => panic!("{input:?}: got {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn incremental_equals_one_shot() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let mut h = DigestHasher::new(Algorithm::Sha256);
        for chunk in data.chunks(4093) {
            let snapshot = h.clone();
            h = snapshot;
            h.update(chunk);
        }
        assert_eq!(h.finish(), Digest::sha256_of(&data));
    }
}
