//! The OCI distribution `/v2` API (spec end-1 … end-13, plus `_catalog`).
//!
//! [`dispatch`] parses the path once into an [`route::Endpoint`] and hands it, with the method,
//! to the handler module that owns that kind of endpoint.

mod blobs;
pub mod listing;
mod manifests;
pub mod negotiate;
pub mod route;
mod uploads;
mod wire;

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};

use berth_oci::ParseError;
use berth_registry::RegistryError;

use crate::error::ApiError;
use crate::{AppState, zero_copy};
use route::Endpoint;

/// `GET /v2/`: the API version check (end-1).
pub async fn base() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], "{}").into_response()
}

/// Every `/v2/<name>/...` request.
pub async fn dispatch(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    // The raw path, not a percent-decoded one: an encoded '/' or '.' must fail validation
    // rather than become a separator.
    let path = parts.uri.path().strip_prefix("/v2/").unwrap_or("");
    let query = Query::<HashMap<String, String>>::try_from_uri(&parts.uri).map(|q| q.0).unwrap_or_default();
    let conn = parts.extensions.get::<ConnectInfo<crate::conn::Peer>>().and_then(|c| c.0.zero_copy.clone());
    let who = parts.extensions.get::<crate::auth::Caller>().and_then(|c| c.user.clone());
    let result = match route::parse(path) {
        Err(e) => Err(e.into()),
        Ok(None) => Err(ApiError::NotFound),
        Ok(Some(endpoint)) => {
            handle(state, parts.method, endpoint, Req { q: query, h: parts.headers, conn, who }, body).await
        }
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

type Q = HashMap<String, String>;

/// What a handler may need of the request besides its endpoint and body.
struct Req {
    q: Q,
    h: HeaderMap,
    conn: Option<zero_copy::Conn>,
    /// The signed-in user, for the audit log.
    who: Option<String>,
}

async fn handle(st: AppState, method: Method, ep: Endpoint, req: Req, body: Body) -> Result<Response, ApiError> {
    let Req { q, h, conn, who } = req;
    match (ep, method) {
        (Endpoint::Blob(n, d), Method::GET) => blobs::get(st, n, d, &h, conn.as_ref()).await,
        (Endpoint::Blob(n, d), Method::HEAD) => blobs::head(st, n, d, &h).await,
        (Endpoint::Blob(n, d), Method::DELETE) => blobs::delete(st, n, d, who).await,
        (Endpoint::UploadStart(n), Method::POST) => uploads::start(st, n, q, body).await,
        (Endpoint::Upload(n, id), Method::GET) => uploads::status(st, n, id).await,
        (Endpoint::Upload(n, id), Method::PATCH) => uploads::patch(st, n, id, &h, body).await,
        (Endpoint::Upload(n, id), Method::PUT) => uploads::put(st, n, id, q, &h, body).await,
        (Endpoint::Upload(n, id), Method::DELETE) => uploads::cancel(st, n, id).await,
        (Endpoint::Manifest(n, r), Method::GET) => manifests::get(st, n, r, &h, true).await,
        (Endpoint::Manifest(n, r), Method::HEAD) => manifests::get(st, n, r, &h, false).await,
        (Endpoint::Manifest(n, r), Method::PUT) => manifests::put(st, n, r, &h, body).await,
        (Endpoint::Manifest(n, r), Method::DELETE) => manifests::delete(st, n, r, who).await,
        (Endpoint::ManifestInvalid(name, e), Method::GET | Method::HEAD) => {
            let reference = match e {
                ParseError::Tag { tag, .. } => tag,
                ParseError::Digest { digest, .. } => digest,
                other => other.to_string(),
            };
            Err(RegistryError::ManifestUnknown { name, reference }.into())
        }
        (Endpoint::ManifestInvalid(_, e), Method::PUT | Method::DELETE) => Err(e.into()),
        (Endpoint::Tags(n), Method::GET) => listing::tags(st, n, q).await,
        (Endpoint::Referrers(n, d), Method::GET) => listing::referrers(st, n, d, q).await,
        _ => Err(ApiError::MethodNotAllowed),
    }
}
