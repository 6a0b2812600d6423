//! Repository names, tags and the `<reference>` of a manifest URL.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::{ParseError, shorten};

/// The longest repository name accepted, as CNCF Distribution enforces it.
pub const MAX_NAME_LEN: usize = 255;

/// A repository name that matches the distribution spec's grammar
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
///
/// Every component starts with `[a-z0-9]`, so no component is `.`, `..` or begins with `_`;
/// the latter keeps repository names apart from the `_manifests`, `_layers` and `_uploads`
/// folders of the storage layout.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `/`-separated components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl FromStr for RepoName {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| ParseError::Name { name: shorten(s), reason };
        if s.is_empty() {
            return Err(bad("the name is empty"));
        }
        if s.len() > MAX_NAME_LEN {
            return Err(bad("the name is longer than 255 characters"));
        }
        for component in s.split('/') {
            if !is_component(component) {
                return Err(bad("each /-separated component must be lowercase letters and digits, \
                     joined by '.', '_', '__' or dashes, and must not be empty"));
            }
        }
        Ok(RepoName(s.to_owned()))
    }
}

fn is_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        // An alphanumeric run.
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        // One separator: '.', '_', '__' or one or more '-'.
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A tag matching `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    /// The tag as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| ParseError::Tag { tag: shorten(s), reason };
        let b = s.as_bytes();
        if b.is_empty() {
            return Err(bad("the tag is empty"));
        }
        if b.len() > 128 {
            return Err(bad("a tag has at most 128 characters"));
        }
        if !(b[0].is_ascii_alphanumeric() || b[0] == b'_') {
            return Err(bad("a tag starts with a letter, a digit or '_'"));
        }
        if !b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-')) {
            return Err(bad("a tag holds only letters, digits, '_', '.' and '-'"));
        }
        Ok(Tag(s.to_owned()))
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// The `<reference>` of `/v2/<name>/manifests/<reference>`: a tag or a digest.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Reference {
    /// A tag.
    Tag(Tag),
    /// A digest.
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = ParseError;

    /// A reference with a `:` can only be a digest (tags never contain one).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') { s.parse().map(Reference::Digest) } else { s.parse().map(Reference::Tag) }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

/// The id of a blob upload session, as it appears in `/v2/<name>/blobs/uploads/<id>`.
///
/// Berth issues UUIDs; any id of 1 to 128 characters from `[A-Za-z0-9_-]` is accepted so that
/// uploads begun by another registry on the same root can be found, and nothing else, so an id
/// is always a safe path component.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadId(String);

impl UploadId {
    /// A fresh random id.
    pub fn new_random(random: u128) -> UploadId {
        let h = format!("{random:032x}");
        UploadId(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UploadId {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(ParseError::UploadId { id: shorten(s) });
        }
        Ok(UploadId(s.to_owned()))
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_table() {
        let long_ok = format!("a/{}", "b".repeat(253));
        let too_long = "a".repeat(256);
        let cases: &[(&str, bool)] = &[
            ("alpine", true),
            ("library/alpine", true),
            ("a/b/c/d/e/f/g/h", true),
            ("my-app", true),
            ("my--app", true),
            ("my_app", true),
            ("my__app", true),
            ("my.app", true),
            ("a0.b1-c2_d3__e4", true),
            ("blobs/manifests/uploads", true),
            (&long_ok, true),
            (&too_long, false),
            ("", false),
            ("Alpine", false),
            ("alpine/", false),
            ("/alpine", false),
            ("a//b", false),
            ("..", false),
            ("a/../b", false),
            ("a/./b", false),
            ("_layers", false),
            ("a/_manifests", false),
            ("my___app", false),
            ("my._app", false),
            ("my-", false),
            ("-my", false),
            ("my.", false),
            ("a b", false),
            ("a\\b", false),
            ("a%2fb", false),
        ];
        for (input, ok) in cases {
            assert_eq!(input.parse::<RepoName>().is_ok(), *ok, "{input:?}");
        }
    }

    #[test]
    fn tag_table() {
        let t128 = format!("a{}", "b".repeat(127));
        let t129 = format!("a{}", "b".repeat(128));
        let cases: &[(&str, bool)] = &[
            ("latest", true),
            ("v1.2.3", true),
            ("_hidden", true),
            ("A-Za-z0-9._-", true),
            (&t128, true),
            (&t129, false),
            ("", false),
            (".start", false),
            ("-start", false),
            ("a/b", false),
            ("a:b", false),
            ("..", false),
        ];
        for (input, ok) in cases {
            assert_eq!(input.parse::<Tag>().is_ok(), *ok, "{input:?}");
        }
    }

    #[test]
    fn upload_ids() {
        assert!("3f5e1a2b-0000-4000-8000-000000000000".parse::<UploadId>().is_ok());
        assert_eq!(UploadId::new_random(u128::MAX).as_str().len(), 36);
        for bad in ["", "..", "a/b", "a.b", &"x".repeat(129)] {
            assert!(bad.parse::<UploadId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reference_picks_digest_on_colon() {
        assert!(matches!("latest".parse::<Reference>(), Ok(Reference::Tag(_))));
        assert!(matches!(
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse::<Reference>(),
            Ok(Reference::Digest(_))
        ));
        assert!(matches!("sha256:zz".parse::<Reference>(), Err(ParseError::Digest { .. })));
    }
}
