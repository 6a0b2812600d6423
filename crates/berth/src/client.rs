//! The management commands' view of a Berth: either a running server over its admin API, or a
//! storage root opened directly (while no server runs). Both return the admin API's wire
//! types, built by the same `berth_server::admin::ops`, so output is identical. Listings are
//! read a page at a time in both modes (following the `Link` header over HTTP), so no answer
//! ever has to hold a whole listing.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use berth_oci::{RepoName, RepoPattern};
use berth_registry::{DeleteRequest, DeleteTarget, Registry, RegistryError, RestoreTarget, TrashId};
use berth_server::admin::listing::{Listing, MAX_N, Paged};
use berth_server::admin::{ops, wire};
use berth_server::headers::encode;
use berth_storage::RootLock;
use serde::de::DeserializeOwned;

use crate::cli::Where;
use crate::config::FileConfig;
use crate::http::{Session, credentials, host_of};

/// A Berth to manage.
pub enum Admin {
    /// A running server.
    Http(Box<Session>),
    /// A root, opened directly.
    Local {
        reg: Box<Registry>,
        who: Option<String>,
        gc: Box<berth_registry::GcOptions>,
        retention: Box<berth_registry::Retention>,
        /// The server's outbox, when the config has notifications and this command writes.
        notify: Option<Arc<berth_server::notify::Notifier>>,
        _lock: Option<RootLock>,
        _replicas: Option<berth_storage::ReplicasLease>,
    },
}

/// Whether a command changes the root (and so must not run beside a server on it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// `?k=v&…`, values percent-encoded.
fn query(pairs: &[(&str, String)]) -> String {
    let q: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
    if q.is_empty() { String::new() } else { format!("?{}", q.join("&")) }
}

/// The target of a `Link: <…>; rel="next"` header.
fn next_link(h: &ureq::http::HeaderMap) -> Option<String> {
    let v = h.get("link")?.to_str().ok()?;
    v.split(',')
        .find(|l| l.contains("rel=\"next\""))
        .and_then(|l| Some(l.split('<').nth(1)?.split('>').next()?.to_owned()))
}

impl Admin {
    /// Resolves `--url`/`--root`/environment into a Berth to talk to.
    pub fn open(w: &Where, access: Access) -> anyhow::Result<Admin> {
        Admin::open_root(w, access, false)
    }

    /// Like [`Admin::open`] for writing, directly on the root, accepting a store with nothing
    /// in it yet (`berth db import` of a fresh bucket).
    pub fn open_maybe_empty(w: &Where) -> anyhow::Result<Admin> {
        Admin::open_root(w, Access::Write, true)
    }

    fn open_root(w: &Where, access: Access, empty_ok: bool) -> anyhow::Result<Admin> {
        if w.url.is_some() && w.root.is_some() {
            bail!("give --url or --root, not both");
        }
        let env = |k| std::env::var(k).ok().filter(|v: &String| !v.is_empty());
        let url = w.url.clone().or_else(|| if w.root.is_none() { env("BERTH_URL") } else { None });
        if let Some(url) = url {
            let base = url.trim_end_matches('/').to_owned();
            let host = host_of(&base).ok_or_else(|| anyhow!("--url needs a scheme, e.g. http://{base}"))?;
            let creds = credentials(w.user.as_deref(), w.password_stdin, &host)?;
            return Ok(Admin::Http(Box::new(Session::new(&base, w.cacert.as_deref(), creds, 0)?)));
        }
        if w.user.is_some() || w.password_stdin || w.cacert.is_some() {
            bail!("--user, --password-stdin and --cacert are for a server (--url); a root is opened directly");
        }
        let file = match &w.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let root = w.root.clone().or_else(|| env("BERTH_ROOT").map(PathBuf::from));
        let storage = file.storage(root, true)?;
        if !empty_ok && !storage.holds_a_root() {
            bail!(
                "{} is not a registry storage root (give --root DIR, or --url URL for a running Berth)",
                storage.describe()
            );
        }
        // With a database, the replicas serving the root coordinate through it, and so does
        // this command; without one, a command that writes must hold the root alone.
        let database = file.database()?;
        let replicas = match (&database, access) {
            (Some(db), Access::Write) => {
                match storage.replicas_lease(&format!("replicas coordinated through {}", db.describe()))? {
                    Ok(lease) => Some(lease),
                    Err(holder) => bail!(
                        "{holder} is using {} without the database; while it runs, manage it with --url",
                        storage.describe()
                    ),
                }
            }
            _ => None,
        };
        let lock = match access {
            _ if database.is_some() => None,
            Access::Read => None,
            Access::Write => {
                let me = format!("berth command (pid {})", std::process::id());
                match storage.lock(&me).with_context(|| format!("locking {}", storage.describe()))? {
                    Ok(lock) => Some(lock),
                    Err(holder) => {
                        bail!("{holder} is using {}; while a server runs, manage it with --url", storage.describe())
                    }
                }
            }
        };
        let backend = storage.open().with_context(|| format!("opening {}", storage.describe()))?;
        // A lone server's outbox (replicas each keep their own, named by where they listen).
        let notify = match (file.notifications()?, access, &database) {
            (Some(n), Access::Write, None) => {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                let source = host.trim().to_owned();
                Some(
                    berth_server::notify::Notifier::offline(backend.clone(), &n, "server", &source)
                        .map_err(anyhow::Error::msg)?,
                )
            }
            _ => None,
        };
        let gc = file.gc()?.0;
        let config = berth_registry::Config {
            trash_retention: file.trash_retention()?,
            untagged: gc.untagged,
            ..Default::default()
        };
        let who = Some(format!("local:{}", env("USER").unwrap_or_else(|| format!("uid {}", uid()))));
        let reg = match database {
            Some(db) => {
                let me = format!("berth command (pid {})", std::process::id());
                let coord = berth_db::PgCoordination::start(&db, &me)
                    .with_context(|| format!("opening the database {}", db.describe()))?;
                std::sync::Arc::new(coord).registry(backend, config)
            }
            None => Registry::new(backend, config),
        };
        let retention = file.retention()?.0;
        Ok(Admin::Local {
            reg: Box::new(reg),
            who,
            gc: Box::new(gc),
            retention: Box::new(retention),
            notify,
            _lock: lock,
            _replicas: replicas,
        })
    }

    /// One request; the JSON answer and the `Link` to the next page, if any.
    fn call<T: DeserializeOwned>(&self, method: &str, path_and_query: &str) -> anyhow::Result<(T, Option<String>)> {
        let Admin::Http(session) = self else { unreachable!("HTTP call on a local root") };
        let url = format!("{}{path_and_query}", session.base);
        let answer = session.request(method, path_and_query, None)?;
        let next = next_link(&answer.headers);
        if !(200..300).contains(&answer.status) {
            let (code, message) = answer.error();
            return Err(match (answer.status, message.is_empty()) {
                (403, _) => anyhow!("{} denied it: {message} ({code})", session.host),
                (_, false) => anyhow!(message),
                (s, true) => anyhow!("{method} {url}: HTTP {s}"),
            });
        }
        let value = serde_json::from_slice(&answer.body).with_context(|| format!("unexpected answer from {url}"))?;
        Ok((value, next))
    }

    fn one<T: DeserializeOwned>(&self, method: &str, path_and_query: &str) -> anyhow::Result<T> {
        Ok(self.call(method, path_and_query)?.0)
    }

    /// Every page of a listing, in order: over HTTP by following `Link`, directly by asking
    /// `local` for each next page.
    fn pages<T: DeserializeOwned>(
        &self,
        path: &str,
        extra: &[(&str, String)],
        local: impl Fn(&Registry, &Listing) -> Result<Paged<T>, RegistryError>,
    ) -> anyhow::Result<Vec<T>> {
        let mut out = Vec::new();
        match self {
            Admin::Http(_) => {
                let mut q = vec![("n", MAX_N.to_string())];
                q.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
                let mut next = Some(format!("{path}{}", query(&q)));
                while let Some(p) = next {
                    let (page, link) = self.call("GET", &p)?;
                    out.push(page);
                    next = link;
                }
            }
            Admin::Local { reg, .. } => {
                let mut listing = Some(Listing { n: MAX_N, ..Listing::default() });
                while let Some(l) = listing {
                    let page = local(reg, &l)?;
                    out.push(page.body);
                    listing = page.next;
                }
            }
        }
        Ok(out)
    }

    /// Repositories.
    pub fn repositories(&self) -> anyhow::Result<Vec<wire::RepositorySummary>> {
        let pages = self.pages("/api/repositories", &[], |reg, l| ops::repositories(reg, l, &|_| true))?;
        Ok(pages.into_iter().flat_map(|p| p.repositories).collect())
    }

    /// One repository's tags.
    pub fn repository(&self, name: &RepoName) -> anyhow::Result<Vec<wire::TagInfo>> {
        let pages = self.pages(&format!("/api/repositories/{name}"), &[], |reg, l| ops::repository(reg, name, l))?;
        Ok(pages.into_iter().flat_map(|p| p.tags).collect())
    }

    /// Space accounting: every repository (without tags), or one with its tags.
    pub fn usage(&self, name: Option<&RepoName>) -> anyhow::Result<Vec<wire::RepoUsageWire>> {
        let extra: Vec<(&str, String)> = name.iter().map(|n| ("repository", n.to_string())).collect();
        let pages = self.pages("/api/usage", &extra, |reg, l| ops::usage(reg, name, l, &|_| true))?;
        let mut out: Vec<wire::RepoUsageWire> = Vec::new();
        for page in pages {
            for r in page.repositories {
                // With one repository, each page carries it again with more of its tags.
                match out.last_mut() {
                    Some(last) if name.is_some() && last.repository == r.repository => last.tags.extend(r.tags),
                    _ => out.push(r),
                }
            }
        }
        Ok(out)
    }

    /// A delete (or its dry run).
    pub fn delete(&self, target: DeleteTarget, force: bool, dry_run: bool) -> anyhow::Result<wire::DeleteResult> {
        match self {
            Admin::Http(_) => {
                let (name, mut q) = match &target {
                    DeleteTarget::Tag(n, t) => (n, vec![("tag", t.to_string())]),
                    DeleteTarget::Manifest(n, d) => (n, vec![("digest", d.to_string())]),
                    DeleteTarget::Blob(n, d) => (n, vec![("blob", d.to_string())]),
                    DeleteTarget::Repository(n) => (n, vec![]),
                    DeleteTarget::Tags(..) => {
                        bail!("the admin API deletes one tag at a time; several go through a retention run")
                    }
                };
                q.extend([("force", force.to_string()), ("dry_run", dry_run.to_string())]);
                self.one("DELETE", &format!("/api/repositories/{name}{}", query(&q)))
            }
            Admin::Local { reg, who, notify, .. } => {
                let r = ops::delete(reg, &DeleteRequest { target, force, who: who.clone() }, dry_run)?;
                if let Some(n) = notify.as_ref().filter(|_| !dry_run) {
                    n.record_blocking(berth_server::notify::deleted(&r.entry));
                }
                Ok(r)
            }
        }
    }

    /// The trash: the retention in force and every entry.
    pub fn trash(&self) -> anyhow::Result<(u64, Vec<wire::Entry>)> {
        let pages = self.pages("/api/trash", &[], |reg, l| ops::trash(reg, l, &|_| true))?;
        let retention = pages.first().map_or(0, |p| p.retention_seconds);
        Ok((retention, pages.into_iter().flat_map(|p| p.entries).collect()))
    }

    /// Purges one entry or all.
    pub fn purge(&self, id: Option<&TrashId>) -> anyhow::Result<wire::PurgeResult> {
        match self {
            Admin::Http(_) => match id {
                Some(id) => self.one("DELETE", &format!("/api/trash/{id}")),
                None => self.one("DELETE", "/api/trash"),
            },
            Admin::Local { reg, who, notify, .. } => {
                let r = ops::purge(reg, id, who.as_deref())?;
                if let Some(n) = notify {
                    n.record_blocking(
                        r.purged.iter().map(|e| berth_server::notify::trash_event("purge", e, false)).collect(),
                    );
                }
                Ok(r)
            }
        }
    }

    /// Runs GC, with the grace and untagged policy given or the configured ones.
    pub fn gc(
        &self,
        dry_run: bool,
        list_storage: bool,
        grace: Option<&str>,
        untagged: Option<&str>,
        progress: &(dyn Fn(berth_registry::GcProgress) + Sync),
    ) -> anyhow::Result<wire::GcResult> {
        match self {
            Admin::Http(_) => {
                let mut q = vec![("dry_run", dry_run.to_string())];
                if list_storage {
                    q.push(("list_storage", "true".to_owned()));
                }
                q.extend(grace.map(|g| ("grace", g.to_owned())));
                q.extend(untagged.map(|u| ("untagged", u.to_owned())));
                self.one("POST", &format!("/api/gc{}", query(&q)))
            }
            Admin::Local { reg, gc, who, notify, .. } => {
                let mut opts = gc.as_ref().clone();
                opts.dry_run = dry_run;
                opts.listing = list_storage;
                opts.who = who.clone();
                if let Some(g) = grace {
                    opts.grace = berth_registry::parse_duration(g).map_err(anyhow::Error::msg).context("--grace")?;
                }
                if let Some(u) = untagged {
                    opts.untagged = u.parse().map_err(anyhow::Error::msg).context("--untagged")?;
                }
                let r = ops::gc(reg, &opts, progress)?;
                if let Some(n) = notify {
                    n.record_blocking(berth_server::notify::gc_event(&r));
                }
                Ok(r)
            }
        }
    }

    /// Checks the root (direct mode only).
    pub fn fsck(&self, opts: &berth_registry::FsckOptions) -> anyhow::Result<wire::FsckResult> {
        match self {
            Admin::Http(s) => {
                bail!("fsck works on a storage root: give --root (and stop the server at {} to --repair)", s.base)
            }
            Admin::Local { reg, .. } => Ok(wire::FsckResult::new(&reg.fsck(opts)?)),
        }
    }

    /// The configured GC options (direct mode), for fsck's upload age.
    pub fn gc_defaults(&self) -> berth_registry::GcOptions {
        match self {
            Admin::Local { gc, .. } => gc.as_ref().clone(),
            Admin::Http(_) => berth_registry::GcOptions::default(),
        }
    }

    /// A retention run (or its dry run) over the repositories `only` matches. On a server the
    /// server's policies apply; on a root, those of `--config`.
    pub fn retention(&self, only: Option<&RepoPattern>, dry_run: bool) -> anyhow::Result<wire::RetentionResult> {
        match self {
            Admin::Http(_) => {
                let mut q = vec![("dry_run", dry_run.to_string())];
                q.extend(only.map(|p| ("repository", p.to_string())));
                self.one("POST", &format!("/api/retention{}", query(&q)))
            }
            Admin::Local { reg, retention, notify, .. } => {
                if retention.policies.is_empty() {
                    bail!("no retention policies: give --config with a retention: section");
                }
                let r = ops::retention(reg, retention, only, dry_run || retention.dry_run)?;
                if let Some(n) = notify {
                    n.record_blocking(berth_server::notify::retained(&r));
                }
                Ok(r)
            }
        }
    }

    /// Restores.
    pub fn restore(&self, target: &RestoreTarget, force: bool) -> anyhow::Result<wire::RestoreResult> {
        match self {
            Admin::Http(_) => {
                let (path, mut q) = match target {
                    RestoreTarget::Id(id) => (format!("/api/trash/{id}/restore"), vec![]),
                    RestoreTarget::Tag(n, t) => {
                        ("/api/restore".to_owned(), vec![("repository", n.to_string()), ("tag", t.to_string())])
                    }
                    RestoreTarget::Repository(n) => ("/api/restore".to_owned(), vec![("repository", n.to_string())]),
                };
                q.push(("force", force.to_string()));
                self.one("POST", &format!("{path}{}", query(&q)))
            }
            Admin::Local { reg, who, notify, .. } => {
                let r = ops::restore(reg, target, force, who.as_deref())?;
                if let Some(n) = notify {
                    n.record_blocking(vec![berth_server::notify::trash_event("restore", &r.restored, false)]);
                }
                Ok(r)
            }
        }
    }
}

/// The real user id, for the audit log when `USER` is not set (a container, a cron job).
fn uid() -> u32 {
    // SAFETY: getuid(2) cannot fail and touches no memory.
    unsafe { libc::getuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_encoded_and_links_followed() {
        assert_eq!(query(&[("grace", "1h 30m".into()), ("untagged", "keep".into())]), "?grace=1h%2030m&untagged=keep");
        assert_eq!(query(&[]), "");
        let mut h = ureq::http::HeaderMap::new();
        h.insert("link", "</api/repositories?n=2&last=a%2Fb>; rel=\"next\"".parse().unwrap());
        assert_eq!(next_link(&h).as_deref(), Some("/api/repositories?n=2&last=a%2Fb"));
        assert_eq!(next_link(&ureq::http::HeaderMap::new()), None);
    }
}
