//! `berth rm --registry URL REPO:TAG`: deleting correctly on any registry (CNCF Distribution,
//! Harbor, zot, …) through the standard API only.
//!
//! 1. Resolve the tag's digest with every manifest type in `Accept`, so the registry answers
//!    with the stored manifest's digest and never a converted one.
//! 2. List the other tags that share the digest.
//! 3. Delete just the tag where the registry supports OCI 1.1 tag deletion. Where it does not,
//!    delete by digest only when no other tag would go with it (or `--all-tags`); otherwise
//!    refuse and name every such tag.
//!
//! Authentication: HTTP Basic, and the Docker token flow (a `Bearer` challenge names a realm;
//! a token is fetched there with the credentials, if any). Credentials come from the flags,
//! `BERTH_REGISTRY_USER`/`BERTH_REGISTRY_PASSWORD`, or `~/.docker/config.json`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use berth_oci::{Digest, RepoName, Tag};
use serde::Serialize;

use crate::cli::RmArgs;

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
                      application/vnd.docker.distribution.manifest.v2+json, \
                      application/vnd.docker.distribution.manifest.list.v2+json";

/// A registry reached through the distribution API.
pub struct Remote {
    base: String,
    host: String,
    agent: ureq::Agent,
    creds: Option<(String, String)>,
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
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn error(&self) -> (String, String) {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        let e = &v["errors"][0];
        (e["code"].as_str().unwrap_or("").to_owned(), e["message"].as_str().unwrap_or("").to_owned())
    }
}

impl Remote {
    /// Connects to `url` (with its scheme; `http://` is allowed for local registries).
    pub fn new(url: &str, username: Option<String>, password: Option<String>) -> anyhow::Result<Remote> {
        let base = url.trim_end_matches('/').to_owned();
        let host = base
            .strip_prefix("https://")
            .or_else(|| base.strip_prefix("http://"))
            .ok_or_else(|| anyhow!("--registry needs a scheme, e.g. https://{base} (or http:// for a local registry)"))?
            .split('/')
            .next()
            .unwrap_or("")
            .to_owned();
        let env = |k| std::env::var(k).ok().filter(|v: &String| !v.is_empty());
        let creds = match (
            username.or_else(|| env("BERTH_REGISTRY_USER")),
            password.or_else(|| env("BERTH_REGISTRY_PASSWORD")),
        ) {
            (Some(u), Some(p)) => Some((u, p)),
            (Some(_), None) | (None, Some(_)) => bail!("give both a user name and a password"),
            (None, None) => docker_config_creds(&host)?,
        };
        let agent = ureq::Agent::config_builder().http_status_as_error(false).max_redirects(5).build().new_agent();
        Ok(Remote { base, host, agent, creds, auth: Mutex::new(None) })
    }

    fn send(&self, method: &str, path: &str, accept: Option<&str>, auth: Option<&str>) -> anyhow::Result<Answer> {
        let url = if path.starts_with("http") { path.to_owned() } else { format!("{}{path}", self.base) };
        let mut b = ureq::http::Request::builder().method(method).uri(&url);
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

    /// Sends a request, answering an authentication challenge once.
    pub fn request(&self, method: &str, path: &str, accept: Option<&str>) -> anyhow::Result<Answer> {
        let current = self.auth.lock().expect("auth lock").clone();
        let first = self.send(method, path, accept, current.as_deref())?;
        if first.status != 401 {
            return Ok(first);
        }
        let challenge = first.header("www-authenticate").unwrap_or("").to_owned();
        let auth = self.answer_challenge(&challenge)?;
        let second = self.send(method, path, accept, Some(&auth))?;
        if second.status == 401 {
            bail!(
                "{} refused the credentials{}",
                self.host,
                if self.creds.is_none() {
                    " (none were found; give --username and --password, or log in with docker/podman)"
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
            "basic" => self.basic().ok_or_else(|| anyhow!("{} needs a user name and password (Basic auth)", self.host)),
            "bearer" => {
                let p = parse_params(params);
                let realm = p.get("realm").ok_or_else(|| anyhow!("{}: Bearer challenge without a realm", self.host))?;
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

    /// The digest `tag` points at, if the tag exists.
    pub fn resolve(&self, repo: &RepoName, tag: &str) -> anyhow::Result<Option<Digest>> {
        let path = format!("/v2/{repo}/manifests/{tag}");
        let head = self.request("HEAD", &path, Some(ACCEPT))?;
        match head.status {
            200 => {}
            404 => return Ok(None),
            s => bail!("HEAD {path} answered HTTP {s}"),
        }
        if let Some(d) = head.header("docker-content-digest").and_then(|d| d.parse().ok()) {
            return Ok(Some(d));
        }
        // No digest header: hash what the registry serves.
        let get = self.request("GET", &path, Some(ACCEPT))?;
        if get.status != 200 {
            bail!("GET {path} answered HTTP {}", get.status);
        }
        Ok(Some(Digest::sha256_of(&get.body)))
    }

    /// Every tag of `repo`, following `Link` pagination.
    pub fn tags(&self, repo: &RepoName) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        let mut next = Some(format!("/v2/{repo}/tags/list"));
        while let Some(path) = next.take() {
            let a = self.request("GET", &path, None)?;
            if a.status != 200 {
                let (code, message) = a.error();
                bail!("listing tags of {repo}: HTTP {} {code} {message}", a.status);
            }
            let v: serde_json::Value = serde_json::from_slice(&a.body)?;
            out.extend(v["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(str::to_owned)));
            next = a
                .header("link")
                .and_then(|l| l.split(';').next())
                .map(|l| l.trim().trim_start_matches('<').trim_end_matches('>').to_owned());
        }
        Ok(out)
    }
}

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

/// Credentials for `host` from `~/.docker/config.json`, if it has them inline.
fn docker_config_creds(host: &str) -> anyhow::Result<Option<(String, String)>> {
    let Some(home) = std::env::var_os("HOME") else { return Ok(None) };
    let path = std::path::Path::new(&home).join(".docker/config.json");
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
        tracing::warn!(
            "~/.docker/config.json uses a credential helper, which berth does not call; give --username/--password"
        );
    }
    Ok(None)
}

/// What `berth rm --registry` did, for `--json`.
#[derive(Serialize)]
struct Outcome {
    registry: String,
    repository: String,
    tag: String,
    digest: String,
    /// Other tags on the same digest.
    shared_with: Vec<String>,
    /// Tags that are gone afterwards.
    deleted_tags: Vec<String>,
    /// `tag` (OCI tag deletion), `digest` (manifest delete), or `none` (dry run).
    method: &'static str,
    dry_run: bool,
}

/// `berth rm --registry URL REPO:TAG [--all-tags]`
pub fn rm(a: RmArgs) -> anyhow::Result<()> {
    let url = a.registry.as_deref().expect("only called with --registry");
    let (repo, tag) = a
        .target
        .split_once(':')
        .ok_or_else(|| anyhow!("with --registry, give REPO:TAG (the tag to delete), not {:?}", a.target))?;
    let repo: RepoName = repo.parse()?;
    let tag: Tag = tag.parse()?;
    let remote = Remote::new(url, a.username.clone(), a.password.clone())?;
    let digest = remote.resolve(&repo, tag.as_str())?.ok_or_else(|| anyhow!("{repo}:{tag} does not exist on {url}"))?;
    let mut shared = Vec::new();
    for t in remote.tags(&repo)? {
        if t != tag.as_str() && remote.resolve(&repo, &t)?.as_ref() == Some(&digest) {
            shared.push(t);
        }
    }
    shared.sort();
    let mut outcome = Outcome {
        registry: url.to_owned(),
        repository: repo.to_string(),
        tag: tag.to_string(),
        digest: digest.to_string(),
        shared_with: shared.clone(),
        deleted_tags: vec![],
        method: "none",
        dry_run: a.dry_run,
    };
    let everything = || std::iter::once(tag.to_string()).chain(shared.iter().cloned()).collect::<Vec<_>>();
    let refuse = || {
        anyhow!(
            "refusing: {url} cannot delete just the tag, and deleting {repo}:{tag} by digest {digest} would also delete {}: {}; \
             add --all-tags to delete them all",
            if shared.len() == 1 { "tag" } else { "tags" },
            shared.iter().map(|t| format!("{repo}:{t}")).collect::<Vec<_>>().join(", ")
        )
    };
    if a.dry_run {
        outcome.deleted_tags = if a.all_tags { everything() } else { vec![tag.to_string()] };
        return report(&outcome, a.json);
    }
    if !a.all_tags {
        let del = remote.request("DELETE", &format!("/v2/{repo}/manifests/{tag}"), None)?;
        if (200..300).contains(&del.status) {
            if remote.resolve(&repo, tag.as_str())?.is_none() {
                outcome.deleted_tags = vec![tag.to_string()];
                outcome.method = "tag";
                return report(&outcome, a.json);
            }
            bail!("{url} accepted the tag delete but {repo}:{tag} still resolves; nothing else was touched");
        }
        disabled_or(&del, url)?;
        if !shared.is_empty() {
            return Err(refuse());
        }
    }
    // Delete by digest: takes every tag on it. Check the tag was not re-pushed meanwhile.
    if remote.resolve(&repo, tag.as_str())?.as_ref() != Some(&digest) {
        bail!("{repo}:{tag} changed while deleting; nothing was deleted");
    }
    let del = remote.request("DELETE", &format!("/v2/{repo}/manifests/{digest}"), Some(ACCEPT))?;
    if !(200..300).contains(&del.status) {
        disabled_or(&del, url)?;
        let (code, message) = del.error();
        bail!("{url} refused to delete {repo}@{digest}: HTTP {} {code} {message}", del.status);
    }
    outcome.deleted_tags = everything();
    outcome.method = "digest";
    report(&outcome, a.json)
}

/// Fails with a plain message when the registry has deletes switched off; otherwise lets the
/// caller try another way.
fn disabled_or(a: &Answer, url: &str) -> anyhow::Result<()> {
    let (code, message) = a.error();
    // Distribution answers every delete with 405 UNSUPPORTED when storage.delete.enabled is
    // false; a registry without OCI tag deletion answers a tag delete otherwise (400/404).
    if a.status == 405 && code == "UNSUPPORTED" {
        bail!(
            "deletes are disabled on {url} (HTTP 405 UNSUPPORTED{}); on CNCF Distribution set storage.delete.enabled: true",
            if message.is_empty() { String::new() } else { format!(": {message}") }
        );
    }
    if a.status == 401 || a.status == 403 {
        bail!("{url} denied the delete (HTTP {} {code} {message})", a.status);
    }
    Ok(())
}

fn report(o: &Outcome, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(o)?);
        return Ok(());
    }
    let verb = if o.dry_run { "would delete" } else { "deleted" };
    let how = match o.method {
        "tag" => " (tag deletion; the image stays for its other tags)",
        "digest" => " (by digest)",
        _ => "",
    };
    println!(
        "{verb} {} from {}/{}{how}",
        o.deleted_tags.iter().map(|t| format!("{}:{t}", o.repository)).collect::<Vec<_>>().join(", "),
        o.registry,
        o.repository
    );
    if o.method == "tag" && !o.shared_with.is_empty() {
        println!("kept on the same digest {}: {}", o.digest, o.shared_with.join(", "));
    }
    Ok(())
}
