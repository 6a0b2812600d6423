//! The CLI's HTTP session with a registry (a Berth's admin API, or any registry for
//! `rm --registry`): one agent trusting the CA of `--cacert` (else Mozilla's roots), the
//! credentials, and the sign-in dance: HTTP Basic, or a `Bearer` token fetched from the realm a
//! challenge names, as docker and podman do.
//!
//! Credentials come from `--user` (password on stdin with `--password-stdin`, else asked for
//! on the terminal), or inline in `~/.docker/config.json` for the host. They are sent with the
//! first request when known, so a Berth that also lets anonymous callers in answers for the
//! user, not for anonymous. Never prints a password or a token.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, anyhow, bail};
use base64::Engine;

/// A user name and password.
pub type Creds = (String, String);

/// A registry reached over HTTP.
pub struct Session {
    /// `scheme://host[:port]`, no trailing slash.
    pub base: String,
    /// `host[:port]`, for messages and `~/.docker/config.json`.
    pub host: String,
    agent: ureq::Agent,
    creds: Option<Creds>,
    /// The `Authorization` header that last worked.
    auth: Mutex<Option<String>>,
}

/// An answer with its body read.
pub struct Answer {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The first error's code and message of a spec error body (empty when there is none).
    pub fn error(&self) -> (String, String) {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        let e = &v["errors"][0];
        (e["code"].as_str().unwrap_or("").to_owned(), e["message"].as_str().unwrap_or("").to_owned())
    }
}

/// The `host[:port]` of a URL with a scheme.
pub fn host_of(base: &str) -> Option<String> {
    let rest = base.strip_prefix("https://").or_else(|| base.strip_prefix("http://"))?;
    Some(rest.split('/').next().unwrap_or("").to_owned())
}

impl Session {
    /// A session with `base` (`http://` or `https://`), trusting `cacert` if given.
    pub fn new(base: &str, cacert: Option<&Path>, creds: Option<Creds>, redirects: u32) -> anyhow::Result<Session> {
        let base = base.trim_end_matches('/').to_owned();
        let host = host_of(&base).ok_or_else(|| anyhow!("{base} needs a scheme, e.g. https://{base}"))?;
        let mut config = ureq::Agent::config_builder().http_status_as_error(false).max_redirects(redirects);
        if let Some(path) = cacert {
            config = config.tls_config(
                ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::Specific(Arc::new(ca(path)?))).build(),
            );
        }
        let agent = config.build().new_agent();
        Ok(Session { base, host, agent, creds, auth: Mutex::new(None) })
    }

    fn send(&self, method: &str, url: &str, accept: Option<&str>, auth: Option<&str>) -> anyhow::Result<Answer> {
        let mut b = ureq::http::Request::builder().method(method).uri(url);
        if let Some(a) = accept {
            b = b.header("Accept", a);
        }
        if let Some(a) = auth {
            b = b.header("Authorization", a);
        }
        let resp = self.agent.run(b.body(Vec::new())?).map_err(|e| anyhow!("cannot reach {}: {e}", self.base))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = if method == "HEAD" { Vec::new() } else { resp.into_body().read_to_vec()? };
        Ok(Answer { status, headers, body })
    }

    /// Sends a request (`path` under `base`, or a whole URL on the same scheme and host: the
    /// credentials never go anywhere else), answering a sign-in challenge once. Fails when the
    /// credentials are refused; any other answer is the caller's to read.
    pub fn request(&self, method: &str, path: &str, accept: Option<&str>) -> anyhow::Result<Answer> {
        let url = if path.starts_with('/') {
            format!("{}{path}", self.base)
        } else if path.strip_prefix(&self.base).is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '?'])) {
            path.to_owned()
        } else {
            bail!("{} pointed to {path}, which is not on {}; not following it", self.host, self.base);
        };
        let current = self.auth.lock().expect("auth lock").clone().or_else(|| self.basic());
        let first = self.send(method, &url, accept, current.as_deref())?;
        if first.status != 401 {
            return Ok(first);
        }
        let challenge = first.header("www-authenticate").unwrap_or("").to_owned();
        let auth = self.answer_challenge(&challenge)?;
        let second = self.send(method, &url, accept, Some(&auth))?;
        if second.status == 401 {
            bail!(
                "{} refused the credentials{}",
                self.host,
                if self.creds.is_none() {
                    " (none were found; give --user with --password-stdin, or log in with docker/podman)"
                } else {
                    ""
                }
            );
        }
        *self.auth.lock().expect("auth lock") = Some(auth);
        Ok(second)
    }

    fn basic(&self) -> Option<String> {
        self.creds
            .as_ref()
            .map(|(u, p)| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))))
    }

    fn answer_challenge(&self, challenge: &str) -> anyhow::Result<String> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => self.basic().ok_or_else(|| {
                anyhow!("{} needs a user name and password (give --user with --password-stdin)", self.host)
            }),
            "bearer" => {
                let p = parse_params(params);
                let realm = p.get("realm").ok_or_else(|| anyhow!("{}: Bearer challenge without a realm", self.host))?;
                if self.base.starts_with("https://") && !realm.starts_with("https://") && self.creds.is_some() {
                    bail!(
                        "{} sends sign-ins to {realm}, which is not https; not sending the password there",
                        self.host
                    );
                }
                let mut url = format!("{realm}?");
                for key in ["service", "scope"] {
                    if let Some(v) = p.get(key) {
                        url.push_str(&format!("{key}={}&", berth_server::headers::encode(v)));
                    }
                }
                let resp = self.send("GET", url.trim_end_matches(['?', '&']), None, self.basic().as_deref())?;
                if resp.status != 200 {
                    bail!("the token service {realm} answered HTTP {}", resp.status);
                }
                let v: serde_json::Value =
                    serde_json::from_slice(&resp.body).context("the token service's answer is not JSON")?;
                let token = v["token"]
                    .as_str()
                    .or(v["access_token"].as_str())
                    .ok_or_else(|| anyhow!("no token from {realm}"))?;
                Ok(format!("Bearer {token}"))
            }
            _ => bail!("{}: unsupported authentication scheme {scheme:?}", self.host),
        }
    }
}

/// The certificates of a PEM file, to trust as roots.
fn ca(path: &Path) -> anyhow::Result<Vec<ureq::tls::Certificate<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("--cacert {}", path.display()))?;
    let mut out = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(c) = item.with_context(|| format!("--cacert {}", path.display()))? {
            out.push(c);
        }
    }
    if out.is_empty() {
        bail!("--cacert {}: no PEM certificate in it", path.display());
    }
    Ok(out)
}

/// `key="value", key=value` parameters of a challenge.
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while let Some((k, after)) = rest.split_once('=') {
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (v, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (&q[..end], q.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        out.insert(k, v.to_owned());
        rest = tail.trim_start_matches(',').trim();
    }
    out
}

/// The credentials to use for `host`: `--user` (with the password from stdin or the terminal),
/// else those inline in `~/.docker/config.json`, else none.
pub fn credentials(user: Option<&str>, password_stdin: bool, host: &str) -> anyhow::Result<Option<Creds>> {
    match user {
        Some(u) => Ok(Some((u.to_owned(), password(&format!("Password for {u} at {host}: "), password_stdin)?))),
        None if password_stdin => bail!("--password-stdin needs --user"),
        None => docker_config_creds(host),
    }
}

/// A password: stdin's first line with `from_stdin`, else asked for on the terminal without
/// echo. Never waits on a stdin that is not a terminal unless told to read it.
pub fn password(prompt: &str, from_stdin: bool) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let mut line = String::new();
    if from_stdin {
        stdin.lock().read_to_string(&mut line).context("reading the password from stdin")?;
        let p = line.lines().next().unwrap_or("").to_owned();
        if p.is_empty() {
            bail!("--password-stdin: stdin held no password");
        }
        return Ok(p);
    }
    if !stdin.is_terminal() {
        bail!("no password: give --password-stdin and pipe it in, or run on a terminal to be asked");
    }
    eprint!("{prompt}");
    std::io::stderr().flush().ok();
    let echo = Echo::off();
    let read = stdin.read_line(&mut line);
    drop(echo);
    eprintln!();
    read.context("reading the password")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Terminal echo switched off until dropped.
struct Echo(Option<libc::termios>);

impl Echo {
    fn off() -> Echo {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios we own; failure leaves echo on.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return Echo(None);
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            t.c_lflag |= libc::ECHONL;
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return Echo(None);
            }
            Echo(Some(saved))
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        if let Some(t) = self.0 {
            // SAFETY: restores the settings read in `off`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &t);
            }
        }
    }
}

/// Credentials for `host` from `~/.docker/config.json`, if it has them inline.
pub fn docker_config_creds(host: &str) -> anyhow::Result<Option<Creds>> {
    let Some(home) = std::env::var_os("HOME") else { return Ok(None) };
    let path = Path::new(&home).join(".docker/config.json");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    let Some(auths) = v["auths"].as_object() else { return Ok(None) };
    for (key, entry) in auths {
        let k = key.trim_start_matches("https://").trim_start_matches("http://");
        let k = k.split('/').next().unwrap_or(k);
        if k != host {
            continue;
        }
        if let Some(auth) = entry["auth"].as_str() {
            let decoded =
                base64::engine::general_purpose::STANDARD.decode(auth).context("bad auth in docker config")?;
            let text = String::from_utf8(decoded).context("bad auth in docker config")?;
            if let Some((u, p)) = text.split_once(':') {
                return Ok(Some((u.to_owned(), p.to_owned())));
            }
        }
        if let (Some(u), Some(p)) = (entry["username"].as_str(), entry["password"].as_str()) {
            return Ok(Some((u.to_owned(), p.to_owned())));
        }
    }
    if v.get("credsStore").is_some() || v.get("credHelpers").is_some() {
        tracing::warn!("~/.docker/config.json uses a credential helper, which berth does not call; give --user");
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_parameters_are_parsed() {
        let p =
            parse_params(r#"realm="https://auth.example/token",service="registry",scope="repository:a/b:pull,push""#);
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        assert_eq!(parse_params("realm=x, service=y")["service"], "y");
    }

    #[test]
    fn hosts_need_a_scheme() {
        assert_eq!(host_of("https://r.example:5000/x").as_deref(), Some("r.example:5000"));
        assert_eq!(host_of("r.example"), None);
    }
}
