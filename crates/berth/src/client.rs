//! The management commands' view of a Berth: either a running server over its admin API, or a
//! storage root opened directly (while no server runs). Both return the admin API's wire
//! types, built by the same `berth_server::admin::ops`, so output is identical.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use berth_oci::RepoName;
use berth_registry::{DeleteRequest, DeleteTarget, Registry, RestoreTarget, TrashId};
use berth_server::admin::{ops, wire};
use berth_storage::{FsBackend, FsOptions, RootLock};
use serde::de::DeserializeOwned;

use crate::cli::Where;
use crate::config::FileConfig;

/// A Berth to manage.
pub enum Admin {
    /// A running server.
    Http { base: String, agent: ureq::Agent },
    /// A root, opened directly.
    Local { reg: Registry, who: Option<String>, gc: berth_registry::GcOptions, _lock: Option<RootLock> },
}

/// Whether a command changes the root (and so must not run beside a server on it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Admin {
    /// Resolves `--url`/`--root`/environment into a Berth to talk to.
    pub fn open(w: &Where, access: Access) -> anyhow::Result<Admin> {
        if w.url.is_some() && w.root.is_some() {
            bail!("give --url or --root, not both");
        }
        let env = |k| std::env::var(k).ok().filter(|v: &String| !v.is_empty());
        let url = w.url.clone().or_else(|| if w.root.is_none() { env("BERTH_URL") } else { None });
        if let Some(url) = url {
            let base = url.trim_end_matches('/').to_owned();
            if !base.starts_with("http://") && !base.starts_with("https://") {
                bail!("--url needs a scheme, e.g. http://{base}");
            }
            let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
            return Ok(Admin::Http { base, agent });
        }
        let file = match &w.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let root = w
            .root
            .clone()
            .or_else(|| env("BERTH_ROOT").map(PathBuf::from))
            .or_else(|| file.storage.filesystem.as_ref().and_then(|f| f.rootdirectory.clone()))
            .unwrap_or_else(|| PathBuf::from("./data"));
        if !root.join("docker/registry/v2").is_dir() && !root.join("berth").is_dir() {
            bail!(
                "{} is not a registry storage root (give --root DIR, or --url URL for a running Berth)",
                root.display()
            );
        }
        let backend =
            FsBackend::open(&root, FsOptions::default()).with_context(|| format!("opening {}", root.display()))?;
        let lock = match access {
            Access::Read => None,
            Access::Write => {
                let me = format!("berth command (pid {})", std::process::id());
                match backend.try_lock(&me).with_context(|| format!("locking {}", root.display()))? {
                    Ok(lock) => Some(lock),
                    Err(holder) => {
                        bail!("{holder} is using {}; while a server runs, manage it with --url", root.display())
                    }
                }
            }
        };
        let gc = file.gc()?.0;
        let config = berth_registry::Config {
            trash_retention: file.trash_retention()?,
            untagged: gc.untagged,
            ..Default::default()
        };
        let who = env("USER").map(|u| format!("local:{u}"));
        Ok(Admin::Local { reg: Registry::new(Arc::new(backend), config), who, gc, _lock: lock })
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call("GET", path)
    }

    fn call<T: DeserializeOwned>(&self, method: &str, path: &str) -> anyhow::Result<T> {
        let Admin::Http { base, agent } = self else { unreachable!("HTTP call on a local root") };
        let url = format!("{base}{path}");
        let req = ureq::http::Request::builder().method(method).uri(&url).body(Vec::new())?;
        let resp = agent.run(req).map_err(|e| anyhow!("cannot reach Berth at {base}: {e}"))?;
        let status = resp.status();
        let body = resp.into_body().read_to_vec()?;
        if !status.is_success() {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let message = v["errors"][0]["message"].as_str().map(str::to_owned);
            return Err(anyhow!(message.unwrap_or_else(|| format!("{method} {url}: HTTP {status}"))));
        }
        serde_json::from_slice(&body).with_context(|| format!("unexpected answer from {url}"))
    }

    /// Repositories.
    pub fn repositories(&self) -> anyhow::Result<wire::RepositoryList> {
        match self {
            Admin::Http { .. } => self.get("/api/repositories"),
            Admin::Local { reg, .. } => Ok(ops::repositories(reg)?),
        }
    }

    /// One repository's tags.
    pub fn repository(&self, name: &RepoName) -> anyhow::Result<wire::RepositoryDetail> {
        match self {
            Admin::Http { .. } => self.get(&format!("/api/repositories/{name}")),
            Admin::Local { reg, .. } => Ok(ops::repository(reg, name)?),
        }
    }

    /// Space accounting.
    pub fn usage(&self, name: Option<&RepoName>) -> anyhow::Result<wire::UsageReport> {
        match self {
            Admin::Http { .. } => match name {
                Some(n) => self.get(&format!("/api/usage?repository={n}")),
                None => self.get("/api/usage"),
            },
            Admin::Local { reg, .. } => Ok(ops::usage(reg, name)?),
        }
    }

    /// A delete (or its dry run).
    pub fn delete(&self, target: DeleteTarget, force: bool, dry_run: bool) -> anyhow::Result<wire::DeleteResult> {
        match self {
            Admin::Http { .. } => {
                let (name, query) = match &target {
                    DeleteTarget::Tag(n, t) => (n, format!("tag={t}")),
                    DeleteTarget::Manifest(n, d) => (n, format!("digest={d}")),
                    DeleteTarget::Blob(n, d) => (n, format!("blob={d}")),
                    DeleteTarget::Repository(n) => (n, String::new()),
                };
                self.call("DELETE", &format!("/api/repositories/{name}?{query}&force={force}&dry_run={dry_run}"))
            }
            Admin::Local { reg, who, .. } => {
                Ok(ops::delete(reg, &DeleteRequest { target, force, who: who.clone() }, dry_run)?)
            }
        }
    }

    /// The trash.
    pub fn trash(&self) -> anyhow::Result<wire::TrashList> {
        match self {
            Admin::Http { .. } => self.get("/api/trash"),
            Admin::Local { reg, .. } => Ok(ops::trash(reg)?),
        }
    }

    /// Purges one entry or all.
    pub fn purge(&self, id: Option<&TrashId>) -> anyhow::Result<wire::PurgeResult> {
        match self {
            Admin::Http { .. } => match id {
                Some(id) => self.call("DELETE", &format!("/api/trash/{id}")),
                None => self.call("DELETE", "/api/trash"),
            },
            Admin::Local { reg, .. } => Ok(ops::purge(reg, id)?),
        }
    }

    /// Runs GC, with the grace and untagged policy given or the configured ones.
    pub fn gc(
        &self,
        dry_run: bool,
        grace: Option<&str>,
        untagged: Option<&str>,
        progress: &(dyn Fn(berth_registry::GcProgress) + Sync),
    ) -> anyhow::Result<wire::GcResult> {
        match self {
            Admin::Http { .. } => {
                let mut q = format!("/api/gc?dry_run={dry_run}");
                if let Some(g) = grace {
                    q.push_str(&format!("&grace={g}"));
                }
                if let Some(u) = untagged {
                    q.push_str(&format!("&untagged={u}"));
                }
                self.call("POST", &q)
            }
            Admin::Local { reg, gc, .. } => {
                let mut opts = gc.clone();
                opts.dry_run = dry_run;
                if let Some(g) = grace {
                    opts.grace = berth_server::admin::duration(g).map_err(anyhow::Error::msg).context("--grace")?;
                }
                if let Some(u) = untagged {
                    opts.untagged =
                        berth_server::admin::untagged(u).map_err(anyhow::Error::msg).context("--untagged")?;
                }
                Ok(ops::gc(reg, &opts, progress)?)
            }
        }
    }

    /// Checks the root (direct mode only).
    pub fn fsck(&self, opts: &berth_registry::FsckOptions) -> anyhow::Result<wire::FsckResult> {
        match self {
            Admin::Http { base, .. } => {
                bail!("fsck works on a storage root: give --root (and stop the server at {base} to --repair)")
            }
            Admin::Local { reg, .. } => Ok(wire::FsckResult::new(&reg.fsck(opts)?)),
        }
    }

    /// The configured GC options (direct mode), for fsck's upload age.
    pub fn gc_defaults(&self) -> berth_registry::GcOptions {
        match self {
            Admin::Local { gc, .. } => gc.clone(),
            Admin::Http { .. } => berth_registry::GcOptions::default(),
        }
    }

    /// Restores.
    pub fn restore(&self, target: &RestoreTarget, force: bool) -> anyhow::Result<wire::RestoreResult> {
        match self {
            Admin::Http { .. } => match target {
                RestoreTarget::Id(id) => self.call("POST", &format!("/api/trash/{id}/restore?force={force}")),
                RestoreTarget::Tag(n, t) => {
                    self.call("POST", &format!("/api/restore?repository={n}&tag={t}&force={force}"))
                }
                RestoreTarget::Repository(n) => {
                    self.call("POST", &format!("/api/restore?repository={n}&force={force}"))
                }
            },
            Admin::Local { reg, .. } => Ok(ops::restore(reg, target, force)?),
        }
    }
}
