//! Why a piece of client input is not a valid name, tag, digest or manifest.

/// A value that failed validation, in words a client can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The repository name breaks the distribution spec's grammar or length limit.
    #[error("invalid repository name {name:?}: {reason}")]
    Name {
        /// The name as received (truncated for the message when very long).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The tag breaks `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
    #[error("invalid tag {tag:?}: {reason}")]
    Tag {
        /// The tag as received.
        tag: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The digest is malformed, or its encoded part does not fit its algorithm.
    #[error("invalid digest {digest:?}: {reason}")]
    Digest {
        /// The digest as received.
        digest: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The digest is well formed but uses an algorithm Berth does not implement.
    #[error("unsupported digest algorithm {algorithm:?} (sha256 and sha512 are supported)")]
    UnsupportedAlgorithm {
        /// The algorithm component of the digest.
        algorithm: String,
    },
    /// The upload id is not one Berth could have issued.
    #[error("invalid upload id {id:?}")]
    UploadId {
        /// The id as received.
        id: String,
    },
    /// A repository-name pattern that cannot be read.
    #[error("invalid repository pattern {pattern:?}: {reason}")]
    Pattern {
        /// The pattern as received.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The manifest is not one Berth can accept.
    #[error("invalid manifest: {0}")]
    Manifest(String),
}

/// Keeps error messages bounded when a client sends a huge value.
pub(crate) fn shorten(s: &str) -> String {
    const MAX: usize = 300;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
