//! The registry core's settings: limits, the trash retention and the untagged policy, and the
//! one parser of durations that the config file, the admin API and the CLI share.
//!
//! Nothing here reads a file or an environment variable; the binary does that and fills
//! [`Config`] in.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Limits and switches of the registry core.
#[derive(Debug, Clone)]
pub struct Config {
    /// The largest manifest accepted, in bytes.
    pub max_manifest_bytes: usize,
    /// The largest blob accepted, in bytes (`None`: no limit but the disk).
    pub max_blob_bytes: Option<u64>,
    /// How long a trash entry protects and can restore what it names; zero turns the trash
    /// off (deletes are final, nothing can be restored).
    pub trash_retention: Duration,
    /// What GC does with untagged manifests; accounting counts the same way.
    pub untagged: UntaggedPolicy,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_manifest_bytes: 4 << 20,
            max_blob_bytes: None,
            trash_retention: Duration::from_secs(7 * 24 * 3600),
            untagged: UntaggedPolicy::OlderThan(Duration::from_secs(24 * 3600)),
        }
    }
}

/// What happens to manifests no tag reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UntaggedPolicy {
    /// Keep them (and what they reference) forever.
    Keep,
    /// Collect them once untagged for longer than this.
    OlderThan(Duration),
}

impl FromStr for UntaggedPolicy {
    type Err = String;

    /// `keep`, or an age such as `24h` (see [`parse_duration`]).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "keep" { Ok(UntaggedPolicy::Keep) } else { parse_duration(s).map(UntaggedPolicy::OlderThan) }
    }
}

impl fmt::Display for UntaggedPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UntaggedPolicy::Keep => f.write_str("keep"),
            UntaggedPolicy::OlderThan(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

/// Parses a duration such as `7d`, `24h`, `90s`, `1h30m` or `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.chars().all(|c| c == '0') {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| format!("bad duration {s:?} ({e}); write e.g. 7d, 24h, 90s or 0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_policies() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("000"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(" 90s "), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        for bad in ["", "soon", "-1s", "5"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!("keep".parse(), Ok(UntaggedPolicy::Keep));
        assert_eq!("24h".parse(), Ok(UntaggedPolicy::OlderThan(Duration::from_secs(86400))));
        assert!("sometimes".parse::<UntaggedPolicy>().is_err());
        for p in [UntaggedPolicy::Keep, UntaggedPolicy::OlderThan(Duration::from_secs(5400))] {
            assert_eq!(p.to_string().parse(), Ok(p), "round trip of {p}");
        }
    }
}
