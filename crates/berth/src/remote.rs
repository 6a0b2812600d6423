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
//! Sign-in as in [`crate::http`]. Credentials come from `--username`/`--password`,
//! `BERTH_REGISTRY_USER`/`BERTH_REGISTRY_PASSWORD`, `--user`/`--password-stdin`, or
//! `~/.docker/config.json`.

use anyhow::{anyhow, bail};
use berth_oci::{Digest, RepoName, Tag};
use serde::Serialize;

use crate::cli::RmArgs;
use crate::http::{Answer, Session, credentials, host_of};

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
                      application/vnd.docker.distribution.manifest.v2+json, \
                      application/vnd.docker.distribution.manifest.list.v2+json";

/// A registry reached through the distribution API.
pub struct Remote {
    session: Session,
}

impl Remote {
    /// Connects to `url` (with its scheme; `http://` is allowed for local registries).
    fn new(url: &str, a: &RmArgs) -> anyhow::Result<Remote> {
        let host = host_of(url.trim_end_matches('/')).ok_or_else(|| {
            anyhow!("--registry needs a scheme, e.g. https://{url} (or http:// for a local registry)")
        })?;
        let env = |k| std::env::var(k).ok().filter(|v: &String| !v.is_empty());
        let creds = match (
            a.username.clone().or_else(|| env("BERTH_REGISTRY_USER")),
            a.password.clone().or_else(|| env("BERTH_REGISTRY_PASSWORD")),
        ) {
            (Some(u), Some(p)) => Some((u, p)),
            (Some(_), None) | (None, Some(_)) => bail!("give both a user name and a password"),
            (None, None) => credentials(a.r#where.user.as_deref(), a.r#where.password_stdin, &host)?,
        };
        Ok(Remote { session: Session::new(url, a.r#where.cacert.as_deref(), creds, 5)? })
    }

    fn request(&self, method: &str, path: &str, accept: Option<&str>) -> anyhow::Result<Answer> {
        self.session.request(method, path, accept)
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
        // A registry whose links go round in circles is not followed for ever.
        let mut pages = 0;
        while let Some(path) = next.take() {
            pages += 1;
            if pages > 100_000 {
                bail!("listing tags of {repo}: more than 100,000 pages; the registry's Link headers loop");
            }
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
    let remote = Remote::new(url, &a)?;
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
