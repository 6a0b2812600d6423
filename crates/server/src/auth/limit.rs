//! Failed password checks are limited per client address (an IPv6 client by its /64): after
//! [`MAX_FAILURES`] within [`WINDOW`], that address's password checks are answered 429 until
//! the oldest failure is a window old. Only password guesses are limited: other addresses,
//! and requests that check no password (anonymous ones, tokens, passwords already verified),
//! are not slowed, so one client cannot lock out everyone behind the same proxy. Memory stays
//! bounded: addresses with nothing recent are forgotten.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures tolerated per address within [`WINDOW`].
pub const MAX_FAILURES: usize = 10;
/// The window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered before old ones are pruned.
const PRUNE_AT: usize = 10_000;

/// Recent failures per client address.
#[derive(Debug, Default)]
pub struct Limiter {
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

/// The address failures are counted under: IPv4 as it is, IPv6 by its /64 (one host usually
/// holds a whole /64, so counting single addresses would not limit it).
fn group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

impl Limiter {
    /// How long `ip` must still wait, if it is blocked now.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let q = map.get(&group(ip))?;
        let oldest = *q.front()?;
        (q.len() >= MAX_FAILURES && now.duration_since(oldest) < WINDOW).then(|| WINDOW - now.duration_since(oldest))
    }

    /// Records a failed sign-in from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= PRUNE_AT {
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
            // Still full of recent failures (a spread-out attack): start over rather than grow.
            if map.len() >= PRUNE_AT {
                map.clear();
            }
        }
        let q = map.entry(group(ip)).or_default();
        while q.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            q.pop_front();
        }
        q.push_back(now);
        while q.len() > MAX_FAILURES {
            q.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_failures_in_a_minute_block_that_address_only_until_the_window_passes() {
        let l = Limiter::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for i in 0..9 {
            l.failed(a, t0 + Duration::from_secs(i));
        }
        assert_eq!(l.blocked(a, t0 + Duration::from_secs(9)), None, "nine are tolerated");
        l.failed(a, t0 + Duration::from_secs(9));
        assert_eq!(l.blocked(a, t0 + Duration::from_secs(10)), Some(Duration::from_secs(50)));
        assert_eq!(l.blocked(b, t0 + Duration::from_secs(10)), None, "other addresses are not slowed");
        assert_eq!(l.blocked(a, t0 + Duration::from_secs(60)), None, "the oldest failure left the window");
        // One IPv6 host's /64 counts as one address.
        let v6 = |s: &str| -> IpAddr { s.parse().unwrap() };
        for i in 0..10 {
            l.failed(v6(&format!("2001:db8::{i}")), t0);
        }
        assert!(l.blocked(v6("2001:db8::ffff"), t0).is_some());
        assert_eq!(l.blocked(v6("2001:db8:0:1::1"), t0), None, "another /64");
        // Failures spread over more than a minute never block.
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        for i in 0..30 {
            l.failed(c, t0 + Duration::from_secs(7 * i));
            assert_eq!(l.blocked(c, t0 + Duration::from_secs(7 * i)), None);
        }
    }
}
