//! Users and passwords from an htpasswd file (Distribution's `auth.htpasswd.path`), bcrypt
//! entries only, as `htpasswd -B` and `berth user add` write them.
//!
//! A bcrypt check costs tens of milliseconds at cost 10; Distribution pays it on every request.
//! Here a successful check is remembered for a few minutes under an HMAC of the user name and
//! password with a key made at start (so the cache holds no password and no unkeyed hash of
//! one), and forgotten whenever the file changes. The file is looked at again at most once a
//! second; if it stops being readable, nobody is let in until it is fixed (failing closed).
//!
//! Never logs a password or a hash.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long a verified password is remembered.
const REMEMBER: Duration = Duration::from_secs(300);
/// Most remembered verifications; past it the cache starts over.
const CACHE_MAX: usize = 10_000;
/// How often the file is looked at for changes.
const RECHECK: Duration = Duration::from_secs(1);

/// Reads an htpasswd file: `user:hash` lines, bcrypt hashes only.
pub fn parse(text: &str, path: &Path) -> Result<HashMap<String, String>, String> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{} line {}", path.display(), i + 1);
        let (user, hash) = line.split_once(':').ok_or_else(|| format!("{at}: expected user:hash"))?;
        if user.is_empty() {
            return Err(format!("{at}: empty user name"));
        }
        if !["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p)) {
            return Err(format!(
                "{at}: the entry of {user:?} is not bcrypt; only bcrypt entries are accepted (htpasswd -B, or berth user add)"
            ));
        }
        users.insert(user.to_owned(), hash.to_owned());
    }
    Ok(users)
}

#[derive(Debug)]
struct State {
    /// `None` while the file is unreadable: nobody gets in.
    users: Option<HashMap<String, String>>,
    stamp: Option<[u8; 32]>,
    checked: Instant,
}

/// An htpasswd file, kept current, with its cache of verified passwords.
pub struct Htpasswd {
    path: PathBuf,
    /// `auth.htpasswd.realm`, for the challenge.
    pub realm: String,
    state: RwLock<State>,
    cache: Mutex<HashMap<[u8; 32], (String, Instant)>>,
    key: [u8; 32],
}

impl std::fmt::Debug for Htpasswd {
    /// The file and realm only: never the key, the hashes or the cache.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Htpasswd").field("path", &self.path).field("realm", &self.realm).finish_non_exhaustive()
    }
}

/// What tells a changed file from the one read: a hash of its content (so an edit in place
/// that keeps the length, within one tick of a coarse clock, is still seen).
fn stamp(text: &str) -> [u8; 32] {
    use sha2::Digest;
    Sha256::digest(text.as_bytes()).into()
}

impl Htpasswd {
    /// Reads the file; a file that is missing or holds anything but bcrypt entries is an error
    /// (the server does not start).
    pub fn load(path: &Path, realm: &str) -> Result<Htpasswd, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("auth.htpasswd.path {}: {e}", path.display()))?;
        let users = parse(&text, path)?;
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| format!("no randomness for the password cache: {e}"))?;
        Ok(Htpasswd {
            path: path.to_owned(),
            realm: realm.to_owned(),
            state: RwLock::new(State { users: Some(users), stamp: Some(stamp(&text)), checked: Instant::now() }),
            cache: Mutex::new(HashMap::new()),
            key,
        })
    }

    /// Reads the file again if it changed since it was last looked at (at most once a second).
    fn refresh(&self) {
        {
            let s = self.state.read().unwrap_or_else(|e| e.into_inner());
            if s.checked.elapsed() < RECHECK {
                return;
            }
        }
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        s.checked = Instant::now();
        let text = std::fs::read_to_string(&self.path);
        let now = text.as_ref().ok().map(|t| stamp(t));
        if now.is_some() && now == s.stamp && s.users.is_some() {
            return;
        }
        s.stamp = now;
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
        match text.map_err(|e| e.to_string()).and_then(|t| parse(&t, &self.path)) {
            Ok(users) => {
                tracing::info!(file = %self.path.display(), users = users.len(), "htpasswd file reloaded");
                s.users = Some(users);
            }
            Err(e) => {
                tracing::error!(error = %e, "the htpasswd file cannot be read; nobody can sign in until it is fixed");
                s.users = None;
            }
        }
    }

    fn cache_key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(user.as_bytes());
        mac.update(&[0]);
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether `password` is `user`'s, answered from the cache when it can be. A cache miss
    /// costs a bcrypt verification: call it off the async threads.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        self.refresh();
        let key = self.cache_key(user, password);
        if let Some((u, until)) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key)
            && u == user
            && *until > Instant::now()
        {
            return true;
        }
        let hash = {
            let s = self.state.read().unwrap_or_else(|e| e.into_inner());
            match s.users.as_ref().and_then(|u| u.get(user)) {
                Some(h) => h.clone(),
                // Unknown user: spend what a known one costs, so timing does not tell them apart.
                None => DUMMY.to_owned(),
            }
        };
        let ok = bcrypt::verify(password, &hash).unwrap_or(false) && hash != DUMMY;
        if ok {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(key, (user.to_owned(), Instant::now() + REMEMBER));
        }
        ok
    }

    /// A fingerprint of `user`'s entry (a SHA-256 of its hash), if the user exists: it changes
    /// when their password does. The web UI ends sessions whose fingerprint changed.
    pub fn fingerprint(&self, user: &str) -> Option<[u8; 32]> {
        use sha2::Digest;
        self.refresh();
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        s.users.as_ref()?.get(user).map(|h| Sha256::digest(h.as_bytes()).into())
    }

    /// Whether a verification of `user:password` would be answered from the cache (so it can
    /// be done on the async thread).
    pub fn cached(&self, user: &str, password: &str) -> bool {
        self.refresh();
        let key = self.cache_key(user, password);
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .is_some_and(|(u, until)| u == user && *until > Instant::now())
    }
}

/// A bcrypt hash of no one's password, checked against for unknown users.
const DUMMY: &str = "$2y$10$C6UzMDM.H6dfI/f/IKxGhuD3NoM9uYgJGvKO1P2UfM.dF/bVhR1ne";

/// Hashes `password` for an htpasswd file (bcrypt, cost 10, `$2y$` as Apache writes it).
pub fn hash(password: &str) -> Result<String, String> {
    bcrypt::hash_with_result(password, 10)
        .map(|h| h.format_for_version(bcrypt::Version::TwoY))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bcrypt_entries_are_accepted() {
        let p = Path::new("/etc/htpasswd");
        let h = hash("secret").unwrap();
        assert!(h.starts_with("$2y$10$"), "{h}");
        let users = parse(&format!("alice:{h}\n\n# comment\nbob:{h}\r\n"), p).unwrap();
        assert_eq!(users.len(), 2);
        for bad in
            ["carol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "dave:$apr1$abc$def", "eve:plain", "nocolon", ":$2y$10$x"]
        {
            let e = parse(bad, p).unwrap_err();
            assert!(e.contains("/etc/htpasswd line 1"), "{bad}: {e}");
        }
    }

    #[test]
    fn verifies_remembers_and_forgets_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, format!("alice:{}\n", hash("right").unwrap())).unwrap();
        let h = Htpasswd::load(&path, "r").unwrap();
        assert!(!h.verify("alice", "wrong"));
        assert!(!h.cached("alice", "right"));
        assert!(h.verify("alice", "right"));
        assert!(h.cached("alice", "right"), "remembered");
        assert!(!h.verify("bob", "right"), "unknown user");
        assert!(!h.cached("alice", "wrong"), "failures are not remembered");
        // The file changes: alice's password is another now.
        std::fs::write(&path, format!("alice:{}\nbob:{}\n", hash("new").unwrap(), hash("b").unwrap())).unwrap();
        h.state.write().unwrap().checked = Instant::now() - RECHECK;
        assert!(!h.verify("alice", "right"), "the old password is forgotten with the file");
        assert!(h.verify("alice", "new") && h.verify("bob", "b"));
        // An unreadable file lets nobody in.
        std::fs::write(&path, "alice:plain\n").unwrap();
        h.state.write().unwrap().checked = Instant::now() - RECHECK;
        assert!(!h.verify("bob", "b"), "fail closed");
    }

    #[test]
    fn the_dummy_hash_is_bcrypt() {
        assert!(!bcrypt::verify("anything", DUMMY).unwrap());
    }

    /// Fuzz target `htpasswd`: any file is read or refused with the line at fault, never a
    /// panic; every user read comes from a `user:hash` line with a bcrypt hash.
    #[test]
    fn fuzz_htpasswd() {
        berth_fuzz::fuzz("htpasswd", |input| {
            let Ok(text) = std::str::from_utf8(input) else { return };
            match parse(text, Path::new("users.htpasswd")) {
                Ok(users) => {
                    for (user, hash) in &users {
                        assert!(!user.is_empty() && hash.starts_with("$2"), "{user:?}: {hash:?}");
                        assert!(text.lines().any(|l| l.trim_end_matches('\r') == format!("{user}:{hash}")));
                    }
                }
                Err(e) => assert!(e.contains("users.htpasswd line "), "{e}"),
            }
        });
    }
}
