//! The admin JSON API under `/api/`, which the CLI and the web UI use. Documented in README.md.
//!
//! | method and path | what |
//! | --- | --- |
//! | `GET /api/repositories` | repositories with tag count and size |
//! | `GET /api/repositories/<name>` | tags with digest, size and push time |
//! | `DELETE /api/repositories/<name>[?tag=T\|digest=D\|blob=D][&force=true][&dry_run=true]` | delete a tag, an image, a layer link or the repository |
//! | `GET /api/usage[?repository=<name>]` | space accounting |
//! | `GET /api/trash`, `GET /api/trash/<id>` | trash entries |
//! | `POST /api/trash/<id>/restore[?force=true]` | restore an entry |
//! | `POST /api/restore?repository=<name>[&tag=<tag>][&force=true]` | restore the newest entry holding a tag or a repository |
//! | `DELETE /api/trash[/<id>]` | purge entries for good |
//! | `POST /api/gc[?dry_run=true][&grace=1h][&untagged=24h\|keep]` | run GC (after any GC already running) and report |
//!
//! [`ops`] holds the operations as plain functions over a [`Registry`], so the CLI runs exactly
//! the same code when it works on a storage root directly.

pub mod route;
pub mod wire;

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use berth_oci::{Digest, RepoName, Tag};
use berth_registry::{DeleteRequest, DeleteTarget, RestoreTarget};
use serde::Serialize;

use crate::AppState;
use crate::body::blocking;
use crate::error::ApiError;
use route::Endpoint;

/// The admin operations, shared by the HTTP API and the CLI's direct mode.
pub mod ops {
    use berth_oci::RepoName;
    use berth_registry::{DeleteRequest, Registry, RegistryError, RestoreTarget, TrashId};

    use super::wire::*;

    /// Repositories that hold a tag or a manifest.
    pub fn repositories(reg: &Registry) -> Result<RepositoryList, RegistryError> {
        let usage = reg.usage()?;
        let exists: Vec<RepoName> = reg.with_graph(|g| {
            g.repos
                .iter()
                .filter(|(_, st)| !st.tags.is_empty() || !st.manifests.is_empty())
                .map(|(n, _)| n.clone())
                .collect()
        })?;
        Ok(RepositoryList {
            repositories: usage
                .iter()
                .filter(|u| exists.contains(&u.name))
                .map(|u| RepositorySummary { name: u.name.to_string(), tags: u.tags.len(), size: u.usage.total })
                .collect(),
        })
    }

    /// One repository's tags.
    pub fn repository(reg: &Registry, name: &RepoName) -> Result<RepositoryDetail, RegistryError> {
        if !reg.repo_exists(name)? {
            return Err(RegistryError::NameUnknown { name: name.clone() });
        }
        let usage = reg.usage()?;
        let mut tags = Vec::new();
        if let Some(u) = usage.iter().find(|u| &u.name == name) {
            for t in &u.tags {
                tags.push(TagInfo {
                    tag: t.tag.to_string(),
                    digest: t.digest.to_string(),
                    size: t.usage.total,
                    pushed: pushed(reg.tag_pushed(name, &t.tag)?),
                });
            }
        }
        Ok(RepositoryDetail { name: name.to_string(), tags })
    }

    /// Space accounting, for one repository or all.
    pub fn usage(reg: &Registry, name: Option<&RepoName>) -> Result<UsageReport, RegistryError> {
        if let Some(n) = name
            && !reg.repo_exists(n)?
        {
            return Err(RegistryError::NameUnknown { name: n.clone() });
        }
        let all = reg.usage()?;
        Ok(UsageReport {
            repositories: all.iter().filter(|u| name.is_none_or(|n| &u.name == n)).map(RepoUsageWire::new).collect(),
        })
    }

    /// A delete, or what it would do.
    pub fn delete(reg: &Registry, req: &DeleteRequest, dry_run: bool) -> Result<DeleteResult, RegistryError> {
        let retention = reg.config().trash_retention;
        if dry_run {
            let entry = reg.delete_plan(req)?;
            return Ok(DeleteResult {
                dry_run,
                trashed: !retention.is_zero(),
                entry: Entry::new(&entry, Some(retention)),
            });
        }
        let done = reg.delete(req)?;
        Ok(DeleteResult {
            dry_run,
            trashed: done.trashed,
            entry: Entry::new(&done.entry, done.trashed.then_some(retention)),
        })
    }

    /// The trash.
    pub fn trash(reg: &Registry) -> Result<TrashList, RegistryError> {
        let retention = reg.config().trash_retention;
        let entries = reg.trash_list()?;
        Ok(TrashList {
            retention_seconds: retention.as_secs(),
            entries: entries.iter().map(|e| Entry::new(e, Some(retention))).collect(),
        })
    }

    /// One trash entry.
    pub fn trash_entry(reg: &Registry, id: &TrashId) -> Result<Entry, RegistryError> {
        Ok(Entry::new(&reg.trash_get(id)?, Some(reg.config().trash_retention)))
    }

    /// Purges one entry, or all.
    pub fn purge(reg: &Registry, id: Option<&TrashId>) -> Result<PurgeResult, RegistryError> {
        let retention = reg.config().trash_retention;
        let purged = reg.trash_purge(id)?;
        Ok(PurgeResult { purged: purged.iter().map(|e| Entry::new(e, Some(retention))).collect() })
    }

    /// Runs GC.
    pub fn gc(
        reg: &Registry,
        opts: &berth_registry::GcOptions,
        progress: &(dyn Fn(berth_registry::GcProgress) + Sync),
    ) -> Result<GcResult, RegistryError> {
        Ok(GcResult::new(&reg.gc(opts, progress)?))
    }

    /// Restores an entry.
    pub fn restore(reg: &Registry, target: &RestoreTarget, force: bool) -> Result<RestoreResult, RegistryError> {
        let restored = reg.restore(target, force)?;
        Ok(RestoreResult::new(&restored, reg.config().trash_retention))
    }
}

type Q = HashMap<String, String>;

fn flag(q: &Q, name: &str) -> Result<bool, ApiError> {
    match q.get(name).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!("{name} must be true or false, not {other:?}"))),
    }
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec_pretty(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// Every `/api/...` request.
pub async fn dispatch(State(st): State<AppState>, method: Method, uri: Uri, _body: Body) -> Response {
    let path = uri.path().strip_prefix("/api/").unwrap_or("");
    let q: Q = Query::<Q>::try_from_uri(&uri).map(|q| q.0).unwrap_or_default();
    let result = match route::parse(path) {
        Err(e) => Err(e.into()),
        Ok(None) => Err(ApiError::NotFound),
        Ok(Some(endpoint)) => handle(st, method, endpoint, q).await,
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn handle(st: AppState, method: Method, ep: Endpoint, q: Q) -> Result<Response, ApiError> {
    let reg = st.registry.clone();
    match (ep, method) {
        (Endpoint::Repositories, Method::GET) => {
            Ok(json(StatusCode::OK, &blocking(move || ops::repositories(&reg)).await??))
        }
        (Endpoint::Repository(name), Method::GET) => {
            Ok(json(StatusCode::OK, &blocking(move || ops::repository(&reg, &name)).await??))
        }
        (Endpoint::Repository(name), Method::DELETE) => {
            crate::v2::check_deletes_enabled(&st)?;
            let target = match (q.get("tag"), q.get("digest"), q.get("blob")) {
                (None, None, None) => DeleteTarget::Repository(name),
                (Some(t), None, None) => DeleteTarget::Tag(name, t.parse::<Tag>()?),
                (None, Some(d), None) => DeleteTarget::Manifest(name, d.parse::<Digest>()?),
                (None, None, Some(d)) => DeleteTarget::Blob(name, d.parse::<Digest>()?),
                _ => return Err(ApiError::BadRequest("give at most one of tag, digest and blob".into())),
            };
            let req = DeleteRequest { target, force: flag(&q, "force")?, who: None };
            let dry_run = flag(&q, "dry_run")?;
            let result = blocking(move || ops::delete(&reg, &req, dry_run)).await??;
            Ok(json(if dry_run { StatusCode::OK } else { StatusCode::ACCEPTED }, &result))
        }
        (Endpoint::Usage, Method::GET) => {
            let name = q.get("repository").map(|n| n.parse::<RepoName>()).transpose()?;
            Ok(json(StatusCode::OK, &blocking(move || ops::usage(&reg, name.as_ref())).await??))
        }
        (Endpoint::Trash, Method::GET) => Ok(json(StatusCode::OK, &blocking(move || ops::trash(&reg)).await??)),
        (Endpoint::TrashEntry(id), Method::GET) => {
            Ok(json(StatusCode::OK, &blocking(move || ops::trash_entry(&reg, &id)).await??))
        }
        (Endpoint::Trash, Method::DELETE) => {
            Ok(json(StatusCode::OK, &blocking(move || ops::purge(&reg, None)).await??))
        }
        (Endpoint::TrashEntry(id), Method::DELETE) => {
            Ok(json(StatusCode::OK, &blocking(move || ops::purge(&reg, Some(&id))).await??))
        }
        (Endpoint::TrashRestore(id), Method::POST) => {
            let target = RestoreTarget::Id(id);
            let force = flag(&q, "force")?;
            Ok(json(StatusCode::OK, &blocking(move || ops::restore(&reg, &target, force)).await??))
        }
        (Endpoint::Restore, Method::POST) => {
            let name: RepoName =
                q.get("repository").ok_or_else(|| ApiError::BadRequest("repository is required".into()))?.parse()?;
            let target = match q.get("tag") {
                Some(t) => RestoreTarget::Tag(name, t.parse()?),
                None => RestoreTarget::Repository(name),
            };
            let force = flag(&q, "force")?;
            Ok(json(StatusCode::OK, &blocking(move || ops::restore(&reg, &target, force)).await??))
        }
        (Endpoint::Gc, Method::POST) => {
            let mut opts = st.gc.clone();
            opts.dry_run = flag(&q, "dry_run")?;
            if let Some(g) = q.get("grace") {
                opts.grace = duration(g).map_err(|e| ApiError::BadRequest(format!("grace: {e}")))?;
            }
            if let Some(u) = q.get("untagged") {
                opts.untagged = untagged(u).map_err(|e| ApiError::BadRequest(format!("untagged: {e}")))?;
            }
            Ok(json(StatusCode::OK, &blocking(move || ops::gc(&reg, &opts, &|_| {})).await??))
        }
        (Endpoint::Audit, _) => Err(ApiError::NotFound),
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// Parses `7d`, `24h`, `90s`, `0`.
pub fn duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.chars().all(|c| c == '0') {
        return Ok(std::time::Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| format!("bad duration {s:?} ({e}); write e.g. 7d, 24h, 90s or 0"))
}

/// Parses an untagged policy: `keep`, or an age such as `24h`.
pub fn untagged(s: &str) -> Result<berth_registry::UntaggedPolicy, String> {
    if s.trim() == "keep" {
        Ok(berth_registry::UntaggedPolicy::Keep)
    } else {
        duration(s).map(berth_registry::UntaggedPolicy::OlderThan)
    }
}
