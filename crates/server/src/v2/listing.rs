//! Listings: tags (end-8), the catalog, and referrers (end-12).

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_oci::{Digest, RepoName, media};
use berth_registry::Page;

use super::Q;
use super::wire::{Catalog, Index, IndexEntry, TagList};
use crate::AppState;
use crate::auth::Caller;
use crate::body::blocking;
use crate::error::ApiError;
use crate::headers::{OCI_FILTERS_APPLIED, hv, next_link};

/// Catalog page size when the client gives no `n`, and the most it may ask for; both as in
/// CNCF Distribution (its `catalog.maxentries` default).
const CATALOG_DEFAULT: usize = 100;
const CATALOG_MAX: usize = 1000;

fn parse_n(q: &Q) -> Result<Option<usize>, ApiError> {
    match q.get("n") {
        None => Ok(None),
        Some(s) => s.parse::<usize>().map(Some).map_err(|_| ApiError::PaginationNumberInvalid(s.clone())),
    }
}

fn json(body: Vec<u8>, content_type: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, hv(content_type));
    h.insert(header::CONTENT_LENGTH, hv(&body.len().to_string()));
    h
}

/// `GET /v2/<name>/tags/list?n=&last=`
pub async fn tags(st: AppState, name: RepoName, q: Q) -> Result<Response, ApiError> {
    let n = parse_n(&q)?;
    let last = q.get("last").cloned();
    let reg = st.registry.clone();
    let nm = name.clone();
    let l = last.clone();
    let page: Page = blocking(move || reg.tags_list(&nm, n, l.as_deref())).await??;
    let body = serde_json::to_vec(&TagList { name: name.as_str(), tags: &page.items }).unwrap_or_default();
    let mut h = json(body.clone(), "application/json");
    if page.more
        && let (Some(n), Some(last)) = (n, page.items.last())
    {
        h.insert(
            header::LINK,
            next_link(&format!("/v2/{name}/tags/list"), &[("n", n.to_string()), ("last", last.clone())]),
        );
    }
    Ok((StatusCode::OK, h, body).into_response())
}

/// `GET /v2/_catalog?n=&last=`: only the repositories the caller may pull.
pub async fn catalog(State(st): State<AppState>, Extension(caller): Extension<Caller>, Query(q): Query<Q>) -> Response {
    catalog_page(st, q, caller).await.unwrap_or_else(IntoResponse::into_response)
}

async fn catalog_page(st: AppState, q: Q, caller: Caller) -> Result<Response, ApiError> {
    let n = parse_n(&q)?.unwrap_or(CATALOG_DEFAULT).min(CATALOG_MAX);
    let last = q.get("last").cloned();
    let reg = st.registry.clone();
    let page: Page = blocking(move || reg.catalog_where(n, last.as_deref(), &|r| caller.may_pull(r))).await??;
    let body = serde_json::to_vec(&Catalog { repositories: &page.items }).unwrap_or_default();
    let mut h = json(body.clone(), "application/json");
    if page.more
        && let Some(last) = page.items.last()
    {
        h.insert(header::LINK, next_link("/v2/_catalog", &[("n", n.to_string()), ("last", last.clone())]));
    }
    Ok((StatusCode::OK, h, body).into_response())
}

/// `GET /v2/<name>/referrers/<digest>?artifactType=`
pub async fn referrers(st: AppState, name: RepoName, subject: Digest, q: Q) -> Result<Response, ApiError> {
    let filter = q.get("artifactType").cloned();
    let reg = st.registry.clone();
    let f = filter.clone();
    let list = blocking(move || reg.referrers(&name, &subject, f.as_deref())).await??;
    let index = Index {
        schema_version: 2,
        media_type: media::OCI_INDEX,
        manifests: list
            .into_iter()
            .map(|r| IndexEntry {
                media_type: r.media_type,
                digest: r.digest.to_string(),
                size: r.size,
                artifact_type: r.artifact_type,
                annotations: r.annotations,
            })
            .collect(),
    };
    let body = serde_json::to_vec(&index).unwrap_or_default();
    let mut h = json(body.clone(), media::OCI_INDEX);
    if filter.is_some() {
        h.insert(OCI_FILTERS_APPLIED.clone(), hv("artifactType"));
    }
    Ok((StatusCode::OK, h, body).into_response())
}
