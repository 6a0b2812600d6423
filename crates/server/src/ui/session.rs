//! Who is looking at the UI: sessions made by the sign-in form (the registry's own users and
//! policy, through [`crate::auth::Auth::sign_in`]), their cookie, and the CSRF token every
//! state-changing form must carry.
//!
//! A session id is 32 random bytes, sent as `berth_session` (`HttpOnly`, `SameSite=Strict`,
//! `Path=/ui`, `Secure` under TLS) and kept server-side only as its SHA-256, so the map holds
//! nothing a cookie could be made from. Sessions end after [`IDLE`] without a request, after
//! [`LONGEST`] in any case, and at sign-out. Without auth there are no sessions; the CSRF token
//! is then an HMAC of a key made at start, so a page from another site still cannot post here.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};

/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(2 * 3600);
/// A session ends after this long whatever happens.
pub const LONGEST: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept; past it the oldest are dropped.
const MAX_SESSIONS: usize = 10_000;

/// Sessions one user may hold at once; signing in again ends their oldest beyond this, so
/// one user's sign-ins cannot push everyone else's sessions out.
const PER_USER: usize = 20;
/// The cookie's name.
pub const COOKIE: &str = "berth_session";

#[derive(Debug, Clone)]
struct Session {
    user: String,
    csrf: String,
    /// The user's password entry when they signed in (see `Auth::user_fingerprint`): a
    /// session ends when the entry changes or goes.
    entry: [u8; 32],
    started: Instant,
    seen: Instant,
}

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    /// Who.
    pub user: String,
    /// The CSRF token of their forms.
    pub csrf: String,
    /// Their password entry when they signed in.
    pub entry: [u8; 32],
}

/// The sessions of signed-in users.
pub struct Sessions {
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
    key: [u8; 32],
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the system has randomness");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hash(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// Compares two strings in time that depends only on their lengths.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new()
    }
}

impl Sessions {
    /// No sessions yet, and a fresh key for the CSRF token of unauthenticated pages.
    pub fn new() -> Sessions {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the system has randomness");
        Sessions { by_hash: Mutex::new(HashMap::new()), key }
    }

    /// Starts a session for `user`, whose password entry is `entry`; its cookie value.
    pub fn start(&self, user: &str, entry: [u8; 32]) -> String {
        let id = random_hex();
        let now = Instant::now();
        let mut map = self.by_hash.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| live(s, now));
        let theirs = map.values().filter(|s| s.user == user).count();
        if theirs >= PER_USER || map.len() >= MAX_SESSIONS {
            // Their own oldest when they are at their limit, else the oldest of all.
            let mine = theirs >= PER_USER;
            let oldest =
                map.iter().filter(|(_, s)| !mine || s.user == user).min_by_key(|(_, s)| s.seen).map(|(k, _)| *k);
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        map.insert(hash(&id), Session { user: user.to_owned(), csrf: random_hex(), entry, started: now, seen: now });
        id
    }

    /// The session `id`, if it is live (and marks it seen).
    pub fn get(&self, id: &str) -> Option<Live> {
        let now = Instant::now();
        let mut map = self.by_hash.lock().unwrap_or_else(|e| e.into_inner());
        let h = hash(id);
        let s = map.get_mut(&h)?;
        if !live(s, now) {
            map.remove(&h);
            return None;
        }
        s.seen = now;
        Some(Live { user: s.user.clone(), csrf: s.csrf.clone(), entry: s.entry })
    }

    /// Ends the session `id`.
    pub fn end(&self, id: &str) {
        self.by_hash.lock().unwrap_or_else(|e| e.into_inner()).remove(&hash(id));
    }

    /// The CSRF token of forms shown to someone not signed in (the sign-in form, an open
    /// registry's pages).
    pub fn anonymous_csrf(&self) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(b"berth ui anonymous csrf");
        mac.finalize().into_bytes().iter().map(|x| format!("{x:02x}")).collect()
    }
}

fn live(s: &Session, now: Instant) -> bool {
    now.duration_since(s.seen) < IDLE && now.duration_since(s.started) < LONGEST
}

/// The session cookie's value in a `Cookie` header, if any.
pub fn cookie(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The `Set-Cookie` value that stores `id` (or, with `None`, forgets the cookie).
pub fn set_cookie(id: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match id {
        Some(id) => format!("{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict{secure}"),
        None => format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_start_are_found_by_their_cookie_and_end() {
        let s = Sessions::new();
        let id = s.start("alice", [7; 32]);
        let live = s.get(&id).unwrap();
        assert_eq!((live.user.as_str(), live.entry), ("alice", [7; 32]));
        assert_eq!(live.csrf.len(), 64);
        assert_ne!(live.csrf, id, "the CSRF token is not the session id");
        assert!(s.get(&random_hex()).is_none());
        s.end(&id);
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn one_user_signing_in_again_and_again_ends_only_their_own_oldest_sessions() {
        let s = Sessions::new();
        let bob = s.start("bob", [1; 32]);
        let first = s.start("alice", [2; 32]);
        let mut latest = String::new();
        for _ in 0..PER_USER {
            latest = s.start("alice", [2; 32]);
        }
        assert!(s.get(&first).is_none(), "alice's oldest session ended");
        assert!(s.get(&latest).is_some());
        assert!(s.get(&bob).is_some(), "bob's session is untouched");
    }

    #[test]
    fn idle_and_old_sessions_are_dead() {
        let now = Instant::now();
        let fresh = Session { user: "a".into(), csrf: "c".into(), entry: [0; 32], started: now, seen: now };
        assert!(live(&fresh, now));
        let idle = Session { seen: now - IDLE, ..fresh.clone() };
        assert!(!live(&idle, now));
        let old = Session { started: now - LONGEST, ..fresh };
        assert!(!live(&old, now));
    }

    #[test]
    fn the_cookie_is_read_strictly_and_written_with_every_attribute() {
        let id = random_hex();
        let mut h = axum::http::HeaderMap::new();
        h.insert(axum::http::header::COOKIE, format!("other=1; {COOKIE}={id}").parse().unwrap());
        assert_eq!(cookie(&h), Some(id.clone()));
        h.insert(axum::http::header::COOKIE, format!("{COOKIE}=not-hex").parse().unwrap());
        assert_eq!(cookie(&h), None);
        let set = set_cookie(Some(&id), true);
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Secure"] {
            assert!(set.contains(attr), "{set}");
        }
        assert!(!set_cookie(Some(&id), false).contains("Secure"));
        assert!(set_cookie(None, false).contains("Max-Age=0"));
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
