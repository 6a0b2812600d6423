//! Storage keys: relative, `/`-separated paths that cannot leave the root.

use std::fmt;

use crate::error::StorageError;

/// A validated storage key such as `docker/registry/v2/blobs/sha256/ab/ab…/data`.
///
/// Invariants, enforced when built: not empty; no empty segment (so no leading, trailing or
/// doubled `/`); no `.` or `..` segment; only `[A-Za-z0-9._:+=-]` in segments. A key is
/// therefore always a path below the root on any backend.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

impl Key {
    /// Validates `s` as a key.
    pub fn new(s: impl Into<String>) -> Result<Key, StorageError> {
        let s = s.into();
        check(&s).map_err(|reason| StorageError::InvalidKey { key: s.clone(), reason })?;
        Ok(Key(s))
    }

    /// This key with one more segment (or several, `/`-separated) appended.
    pub fn join(&self, segments: &str) -> Result<Key, StorageError> {
        Key::new(format!("{}/{}", self.0, segments))
    }

    /// The key as a `/`-separated string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The key one level up, if any.
    pub fn parent(&self) -> Option<Key> {
        self.0.rsplit_once('/').map(|(p, _)| Key(p.to_owned()))
    }
}

fn check(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("empty key");
    }
    for seg in s.split('/') {
        if seg.is_empty() {
            return Err("empty segment");
        }
        if seg == "." || seg == ".." {
            return Err("relative segment");
        }
        if !seg.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'+' | b'=' | b'-')) {
            return Err("segment holds a character outside [A-Za-z0-9._:+=-]");
        }
    }
    Ok(())
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_table() {
        let cases: &[(&str, bool)] = &[
            ("a", true),
            ("a/b/c", true),
            ("docker/registry/v2/blobs/sha256:x", true),
            ("a/.hidden", true),
            ("", false),
            ("/a", false),
            ("a/", false),
            ("a//b", false),
            ("..", false),
            ("a/../b", false),
            ("a/./b", false),
            ("a\\b", false),
            ("a b", false),
            ("a/\0", false),
            ("a/é", false),
        ];
        for (input, ok) in cases {
            assert_eq!(Key::new(*input).is_ok(), *ok, "{input:?}");
        }
    }
}
