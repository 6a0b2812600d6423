//! The admin JSON API under `/api/`, which the CLI and the web UI use. Documented in README.md.
//!
//! | method and path | what |
//! | --- | --- |
//! | `GET /api/repositories` | repositories with tag count and sizes (a listing) |
//! | `GET /api/repositories/<name>` | its tags with digest, sizes and push time (a listing) |
//! | `DELETE /api/repositories/<name>[?tag=T\|digest=D\|blob=D][&force=true][&dry_run=true]` | delete a tag, an image, a layer link or the repository |
//! | `GET /api/usage[?repository=<name>]` | space accounting (a listing) |
//! | `GET /api/trash`, `GET /api/trash/<id>` | trash entries (a listing), one entry |
//! | `POST /api/trash/<id>/restore[?force=true]` | restore an entry |
//! | `POST /api/restore?repository=<name>[&tag=<tag>][&force=true]` | restore the newest entry holding a tag or a repository |
//! | `DELETE /api/trash[/<id>]` | purge entries for good |
//! | `GET /api/audit[?repository=&who=&action=]` | the audit log, newest first (a listing) |
//! | `POST /api/gc[?dry_run=true][&grace=1h][&untagged=24h\|keep][&list_storage=true]` | run GC (after any GC already running) and report; `list_storage` lists the bucket even with a metadata index |
//! | `GET /api/gc` | the last runs (not dry runs), newest first |
//! | `POST /api/retention[?dry_run=true][&repository=<glob>]` | run the retention policies (all repositories, or those the glob matches) and report each tag's fate |
//!
//! A listing answers one page (`listing`): `n`, `last`, `sort`, `prefix` and `match`, and a
//! `Link` header naming the next page. The paths are parsed once (`route`); the operations are
//! plain functions (`ops`) that the CLI's direct mode calls too.

pub mod listing;
pub mod ops;
pub mod route;
pub mod wire;

use std::collections::HashMap;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_oci::{Digest, RepoName, Tag};
use berth_registry::{DeleteRequest, DeleteTarget, RestoreTarget, UntaggedPolicy, parse_duration};
use serde::Serialize;

use crate::auth::Caller;
use crate::body::blocking;
use crate::error::ApiError;
use crate::headers::next_link;
use crate::{AppState, notify};
use listing::{Listing, Paged};
use route::Endpoint;

type Q = HashMap<String, String>;

fn flag(q: &Q, name: &str) -> Result<bool, ApiError> {
    match q.get(name).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!("{name} must be true or false, not {other:?}"))),
    }
}

/// The answer to a purge, noting each entry purged.
fn purged(st: &AppState, r: wire::PurgeResult) -> Response {
    let notes = match st.notify {
        Some(_) => r.purged.iter().map(|e| notify::trash_event("purge", e, false)).collect(),
        None => vec![],
    };
    notify::attach(json(StatusCode::OK, &r), notes)
}

/// The answer to a restore, noting it.
fn restored(st: &AppState, r: wire::RestoreResult) -> Response {
    let notes = if st.notify.is_some() { vec![notify::trash_event("restore", &r.restored, false)] } else { vec![] };
    notify::attach(json(StatusCode::OK, &r), notes)
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec_pretty(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// A listing's page, with a `Link` to the next one (on `path`, with `extra` query pairs kept).
fn paged<T: Serialize>(path: &str, extra: &[(&'static str, String)], page: Paged<T>) -> Response {
    paged_with(path, extra, page.body, page.next.map(|l| l.to_query()))
}

fn paged_with<T: Serialize>(
    path: &str,
    extra: &[(&'static str, String)],
    body: T,
    next: Option<Vec<(&'static str, String)>>,
) -> Response {
    let mut resp = json(StatusCode::OK, &body);
    if let Some(mut q) = next {
        q.extend(extra.iter().cloned());
        let mut h = HeaderMap::new();
        h.insert(header::LINK, next_link(path, &q));
        resp.headers_mut().extend(h);
    }
    resp
}

/// Every `/api/...` request.
pub async fn dispatch(State(st): State<AppState>, req: Request) -> Response {
    let uri = req.uri().clone();
    let method = req.method().clone();
    // The access guard runs first and always leaves the caller; an open registry's caller may
    // do everything.
    let caller = req.extensions().get::<Caller>().cloned().unwrap_or_else(Caller::open);
    let path = uri.path().strip_prefix("/api/").unwrap_or("");
    let q: Q = Query::<Q>::try_from_uri(&uri).map(|q| q.0).unwrap_or_default();
    let result = match route::parse(path) {
        Err(e) => Err(e.into()),
        Ok(None) => Err(ApiError::NotFound),
        Ok(Some(endpoint)) => handle(st, method, endpoint, q, caller).await,
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn handle(st: AppState, method: Method, ep: Endpoint, q: Q, caller: Caller) -> Result<Response, ApiError> {
    let reg = st.registry.clone();
    let who = caller.user.clone();
    // Names (the repository list) as the catalog shows them; more than names (usage, trash,
    // audit) only where the caller may pull by every rule.
    let names_caller = caller.clone();
    let names = move |name: &str| names_caller.may_pull(name);
    let visible = move |name: &str| caller.may_see(name);
    match (ep, method) {
        (Endpoint::Repositories, Method::GET) => {
            let l = Listing::from_query(&q, ops::REPOSITORY_SORTS)?;
            Ok(paged("/api/repositories", &[], blocking(move || ops::repositories(&reg, &l, &names)).await??))
        }
        (Endpoint::Repository(name), Method::GET) => {
            let l = Listing::from_query(&q, ops::TAG_SORTS)?;
            let path = format!("/api/repositories/{name}");
            Ok(paged(&path, &[], blocking(move || ops::repository(&reg, &name, &l)).await??))
        }
        (Endpoint::Repository(name), Method::DELETE) => {
            st.check_deletes_enabled()?;
            let target = match (q.get("tag"), q.get("digest"), q.get("blob")) {
                (None, None, None) => DeleteTarget::Repository(name),
                (Some(t), None, None) => DeleteTarget::Tag(name, t.parse::<Tag>()?),
                (None, Some(d), None) => DeleteTarget::Manifest(name, d.parse::<Digest>()?),
                (None, None, Some(d)) => DeleteTarget::Blob(name, d.parse::<Digest>()?),
                _ => return Err(ApiError::BadRequest("give at most one of tag, digest and blob".into())),
            };
            let req = DeleteRequest { target, force: flag(&q, "force")?, who };
            let dry_run = flag(&q, "dry_run")?;
            let result = blocking(move || ops::delete(&reg, &req, dry_run)).await??;
            let notes = if dry_run || st.notify.is_none() { vec![] } else { notify::deleted(&result.entry) };
            Ok(notify::attach(json(if dry_run { StatusCode::OK } else { StatusCode::ACCEPTED }, &result), notes))
        }
        (Endpoint::Usage, Method::GET) => {
            let name = q.get("repository").map(|n| n.parse::<RepoName>()).transpose()?;
            let l = Listing::from_query(&q, if name.is_some() { ops::TAG_SORTS } else { ops::REPOSITORY_SORTS })?;
            let extra: Vec<(&'static str, String)> = name.iter().map(|n| ("repository", n.to_string())).collect();
            Ok(paged("/api/usage", &extra, blocking(move || ops::usage(&reg, name.as_ref(), &l, &visible)).await??))
        }
        (Endpoint::Trash, Method::GET) => {
            let l = Listing::from_query(&q, ops::TRASH_SORTS)?;
            Ok(paged("/api/trash", &[], blocking(move || ops::trash(&reg, &l, &visible)).await??))
        }
        (Endpoint::TrashEntry(id), Method::GET) => {
            Ok(json(StatusCode::OK, &blocking(move || ops::trash_entry(&reg, &id)).await??))
        }
        (Endpoint::Trash, Method::DELETE) => {
            Ok(purged(&st, blocking(move || ops::purge(&reg, None, who.as_deref())).await??))
        }
        (Endpoint::TrashEntry(id), Method::DELETE) => {
            Ok(purged(&st, blocking(move || ops::purge(&reg, Some(&id), who.as_deref())).await??))
        }
        (Endpoint::TrashRestore(id), Method::POST) => {
            let target = RestoreTarget::Id(id);
            let force = flag(&q, "force")?;
            Ok(restored(&st, blocking(move || ops::restore(&reg, &target, force, who.as_deref())).await??))
        }
        (Endpoint::Restore, Method::POST) => {
            let name: RepoName =
                q.get("repository").ok_or_else(|| ApiError::BadRequest("repository is required".into()))?.parse()?;
            let target = match q.get("tag") {
                Some(t) => RestoreTarget::Tag(name, t.parse()?),
                None => RestoreTarget::Repository(name),
            };
            let force = flag(&q, "force")?;
            Ok(restored(&st, blocking(move || ops::restore(&reg, &target, force, who.as_deref())).await??))
        }
        (Endpoint::Audit, Method::GET) => {
            let aq = ops::AuditQuery::from_query(&q)?;
            let page = blocking(move || ops::audit(&reg, &aq, &visible)).await??;
            Ok(paged_with("/api/audit", &[], page.body, page.next.map(|n| n.to_query())))
        }
        (Endpoint::Gc, Method::GET) => {
            let runs = blocking(move || reg.gc_history(100)).await??;
            Ok(json(StatusCode::OK, &wire::GcHistory { runs }))
        }
        (Endpoint::Gc, Method::POST) => {
            let mut opts = st.gc.clone();
            opts.who = who;
            opts.dry_run = flag(&q, "dry_run")?;
            opts.listing = flag(&q, "list_storage")?;
            if let Some(g) = q.get("grace") {
                opts.grace = parse_duration(g).map_err(|e| ApiError::BadRequest(format!("grace: {e}")))?;
            }
            if let Some(u) = q.get("untagged") {
                opts.untagged =
                    u.parse::<UntaggedPolicy>().map_err(|e| ApiError::BadRequest(format!("untagged: {e}")))?;
            }
            let result = blocking(move || ops::gc(&reg, &opts, &|_| {})).await??;
            let notes = if st.notify.is_some() { notify::gc_event(&result) } else { vec![] };
            Ok(notify::attach(json(StatusCode::OK, &result), notes))
        }
        (Endpoint::Retention, Method::POST) => {
            st.check_deletes_enabled()?;
            if st.retention.policies.is_empty() {
                // An empty report would read as "nothing to remove".
                return Err(berth_registry::RegistryError::Unsupported {
                    what: "no retention policies are configured on this server (retention.policies)".into(),
                }
                .into());
            }
            let only = q.get("repository").map(|p| p.parse::<berth_oci::RepoPattern>()).transpose()?;
            // The configured dry run cannot be overridden by a request: a registry set to
            // report only deletes nothing.
            let dry_run = flag(&q, "dry_run")? || st.retention.dry_run;
            let policies = st.retention.clone();
            let result = blocking(move || ops::retention(&reg, &policies, only.as_ref(), dry_run)).await??;
            let notes = if st.notify.is_some() { notify::retained(&result) } else { vec![] };
            Ok(notify::attach(json(StatusCode::OK, &result), notes))
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}
