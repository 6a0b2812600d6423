//! Patterns over repository names, as operators write them in access rules, retention policies
//! and listing filters: `team/**`, `*/app`, `team/app-*`.
//!
//! Within one `/`-separated component, `*` matches any run of characters (none included);
//! a component that is exactly `**` matches any number of whole components, none included.
//! Everything else matches itself. Matching is on the validated [`RepoName`], never on a path.

use std::fmt;
use std::str::FromStr;

use crate::error::{ParseError, shorten};
use crate::name::RepoName;

/// A validated repository-name pattern.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RepoPattern {
    text: String,
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Part {
    /// `**`: any number of components.
    Deep,
    /// One component, with `*` wildcards.
    Glob(String),
}

impl FromStr for RepoPattern {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| ParseError::Pattern { pattern: shorten(s), reason };
        if s.is_empty() || s.len() > 2 * crate::name::MAX_NAME_LEN {
            return Err(bad("a pattern is 1 to 510 characters long"));
        }
        let mut parts = Vec::new();
        for c in s.split('/') {
            if c == "**" {
                parts.push(Part::Deep);
            } else if c.is_empty() || c.contains("**") {
                return Err(bad("components are non-empty, and ** stands alone as a whole component"));
            } else if !c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-*".contains(&b)) {
                return Err(bad("components hold lowercase letters, digits, '.', '_', '-' and '*'"));
            } else {
                parts.push(Part::Glob(c.to_owned()));
            }
        }
        Ok(RepoPattern { text: s.to_owned(), parts })
    }
}

impl RepoPattern {
    /// Whether `name` matches.
    pub fn matches(&self, name: &RepoName) -> bool {
        let components: Vec<&str> = name.components().collect();
        matches_from(&self.parts, &components)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// How specific the pattern is: literal characters, then fewer wildcards; larger is more
    /// specific. Where several patterns match a name, the most specific one decides (access
    /// rules, retention policies).
    pub fn specificity(&self) -> (usize, std::cmp::Reverse<usize>) {
        let wild = self.text.matches('*').count();
        (self.text.len() - wild, std::cmp::Reverse(wild))
    }
}

/// Whether `parts` match `components`, in O(parts × components): a table of which suffixes of
/// the pattern match which suffixes of the name, so no pattern can make matching explode.
fn matches_from(parts: &[Part], components: &[&str]) -> bool {
    let (p, c) = (parts.len(), components.len());
    // ok[i][j]: parts[i..] matches components[j..].
    let mut ok = vec![vec![false; c + 1]; p + 1];
    ok[p][c] = true;
    for i in (0..p).rev() {
        for j in (0..=c).rev() {
            ok[i][j] = match &parts[i] {
                Part::Deep => ok[i + 1][j] || (j < c && ok[i][j + 1]),
                Part::Glob(g) => j < c && glob(g.as_bytes(), components[j].as_bytes()) && ok[i + 1][j + 1],
            };
        }
    }
    ok[0][0]
}

/// `*` matches any run of bytes; everything else itself. Linear backtracking to the last star.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

impl fmt::Display for RepoPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for RepoPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("team/**", "team/app", true),
            ("team/**", "team/a/b/c", true),
            ("team/**", "team", true),
            ("team/**", "teams/app", false),
            ("*/app", "team/app", true),
            ("*/app", "a/b/app", false),
            ("**/app", "a/b/app", true),
            ("**/app", "app", true),
            ("team/app-*", "team/app-web", true),
            ("team/app-*", "team/app-x", true),
            ("team/app*", "team/app", true),
            ("team/app-*", "team/app", false),
            ("*", "app", true),
            ("*", "team/app", false),
            ("**", "anything/at/all", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbbd", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ];
        for (p, n, want) in cases {
            let pat: RepoPattern = p.parse().unwrap();
            assert_eq!(pat.matches(&n.parse().unwrap()), *want, "{p} vs {n}");
        }
        // Hostile patterns stay cheap.
        let long: RepoName = format!("{}/{}", "a".repeat(120), "a/".repeat(60) + "b").parse().unwrap();
        let stars: RepoPattern = format!("{}c", "*a".repeat(100)).parse().unwrap();
        let deep: RepoPattern = "**/".repeat(100).trim_end_matches('/').parse().unwrap();
        let t = std::time::Instant::now();
        assert!(!stars.matches(&long));
        assert!(deep.matches(&long));
        // Not a speed figure: exponential matching would take hours here, not seconds.
        assert!(t.elapsed() < std::time::Duration::from_secs(10), "{:?}", t.elapsed());
        for bad in ["", "a//b", "/a", "a/", "a/**b", "***", "A/b", "a b", "a/../b".replace("..", "%2e").as_str()] {
            assert!(bad.parse::<RepoPattern>().is_err(), "{bad:?}");
        }
    }
}
