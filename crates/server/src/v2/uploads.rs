//! Blob uploads: start (end-4a/4b, mount end-11), chunks (end-5), status (end-13),
//! completion (end-6) and cancel.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_oci::{Digest, RepoName, UploadId};
use berth_registry::{BlobInfo, RegistryError};

use super::Q;
use crate::body::{blocking, with_body};
use crate::error::ApiError;
use crate::headers::{DOCKER_CONTENT_DIGEST, DOCKER_UPLOAD_UUID, hv, upload_range};
use crate::{AppState, notify};

fn location(name: &RepoName, id: &UploadId) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

fn accepted(name: &RepoName, id: &UploadId, size: u64, status: StatusCode) -> Response {
    let mut h = HeaderMap::new();
    h.insert(header::LOCATION, hv(&location(name, id)));
    h.insert(header::RANGE, hv(&upload_range(size)));
    h.insert(DOCKER_UPLOAD_UUID.clone(), hv(id.as_str()));
    h.insert(header::CONTENT_LENGTH, hv("0"));
    (status, h).into_response()
}

fn created(name: &RepoName, digest: &Digest) -> Response {
    let mut h = HeaderMap::new();
    h.insert(header::LOCATION, hv(&format!("/v2/{name}/blobs/{digest}")));
    h.insert(DOCKER_CONTENT_DIGEST.clone(), hv(&digest.to_string()));
    h.insert(header::CONTENT_LENGTH, hv("0"));
    (StatusCode::CREATED, h).into_response()
}

fn digest_param(q: &Q) -> Result<Digest, ApiError> {
    let raw = q.get("digest").ok_or_else(|| {
        ApiError::from(RegistryError::DigestInvalid { reason: "the digest query parameter is missing".into() })
    })?;
    Ok(raw.parse()?)
}

/// `POST /v2/<name>/blobs/uploads/`: mount, monolithic upload, or a new session.
pub async fn start(st: AppState, name: RepoName, q: Q, body: Body) -> Result<Response, ApiError> {
    if let Some(mount) = q.get("mount") {
        let digest: Digest = mount.parse()?;
        // An unusable `from` is not an error: the spec says to fall back to a plain upload.
        if let Some(from) = q.get("from").and_then(|f| f.parse::<RepoName>().ok()) {
            let reg = st.registry.clone();
            let (n, d, f) = (name.clone(), digest.clone(), from.clone());
            if blocking(move || reg.blob_mount(&n, &f, &d)).await?? {
                let resp = created(&name, &digest);
                if st.notify.is_none() {
                    return Ok(resp);
                }
                // The mount is done: failing to read the size for its event must not fail it.
                let (reg, n, d) = (st.registry.clone(), name.clone(), digest.clone());
                return Ok(match blocking(move || reg.blob_stat(&n, &d)).await {
                    Ok(Ok(size)) => {
                        notify::attach(resp, vec![notify::blob("mount", &name, &digest, size, Some(&from))])
                    }
                    _ => {
                        tracing::warn!(repository = %name, %digest, "no mount event: the blob's size could not be read");
                        resp
                    }
                });
            }
        }
    } else if q.contains_key("digest") {
        let digest = digest_param(&q)?;
        let reg = st.registry.clone();
        let n = name.clone();
        let (info, received) = with_body(body, move |chunks| reg.blob_put(&n, &digest, chunks)).await?;
        st.metrics.blob_received(received);
        let info: BlobInfo = info?;
        return Ok(pushed(&st, created(&name, &info.digest), &name, &info));
    }
    let reg = st.registry.clone();
    let n = name.clone();
    let id = blocking(move || reg.upload_start(&n)).await??;
    Ok(accepted(&name, &id, 0, StatusCode::ACCEPTED))
}

/// `GET` of an upload: how much has arrived.
pub async fn status(st: AppState, name: RepoName, id: UploadId) -> Result<Response, ApiError> {
    let reg = st.registry.clone();
    let (n, i) = (name.clone(), id.clone());
    let size = blocking(move || reg.upload_status(&n, &i)).await??;
    Ok(accepted(&name, &id, size, StatusCode::NO_CONTENT))
}

/// The start offset of a chunk from `Content-Range: <start>-<end>`, checked against
/// `Content-Length`. Accepts the `bytes ` / `bytes=` prefixes some clients send.
fn chunk_start(h: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = h.get(header::CONTENT_RANGE) else { return Ok(None) };
    let bad =
        |why: &str| ApiError::from(RegistryError::BlobUploadInvalid { reason: format!("bad Content-Range: {why}") });
    let s = v.to_str().map_err(|_| bad("not text"))?.trim();
    let s = s.strip_prefix("bytes=").or_else(|| s.strip_prefix("bytes ")).unwrap_or(s);
    let (a, b) = s.split_once('-').ok_or_else(|| bad("expected <start>-<end>"))?;
    let b = b.split('/').next().unwrap_or(b);
    let (start, end): (u64, u64) = match (a.trim().parse(), b.trim().parse()) {
        (Ok(a), Ok(b)) if a <= b => (a, b),
        _ => return Err(bad("expected <start>-<end> with start <= end")),
    };
    if let Some(len) = h.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
        && len != end - start + 1
    {
        return Err(bad("the range does not match Content-Length"));
    }
    Ok(Some(start))
}

/// `PATCH`: a chunk (with `Content-Range`) or a stream (without).
pub async fn patch(
    st: AppState,
    name: RepoName,
    id: UploadId,
    h: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let start = chunk_start(h)?;
    let reg = st.registry.clone();
    let (n, i) = (name.clone(), id.clone());
    let (size, received) = with_body(body, move |chunks| reg.upload_append(&n, &i, start, chunks)).await?;
    st.metrics.blob_received(received);
    let size = size?;
    Ok(accepted(&name, &id, size, StatusCode::ACCEPTED))
}

/// `PUT ?digest=`: the last chunk, if any, and completion.
pub async fn put(
    st: AppState,
    name: RepoName,
    id: UploadId,
    q: Q,
    h: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let digest = digest_param(&q)?;
    let start = chunk_start(h)?;
    let reg = st.registry.clone();
    let n = name.clone();
    let (info, received) = with_body(body, move |chunks| reg.upload_complete(&n, &id, &digest, start, chunks)).await?;
    st.metrics.blob_received(received);
    let info = info?;
    Ok(pushed(&st, created(&name, &info.digest), &name, &info))
}

/// `resp` with the push of a blob noted, when notifications are on.
fn pushed(st: &AppState, resp: Response, name: &RepoName, info: &BlobInfo) -> Response {
    let notes =
        if st.notify.is_some() { vec![notify::blob("push", name, &info.digest, info.size, None)] } else { vec![] };
    notify::attach(resp, notes)
}

/// `DELETE` of an upload: cancels it.
pub async fn cancel(st: AppState, name: RepoName, id: UploadId) -> Result<Response, ApiError> {
    let reg = st.registry.clone();
    blocking(move || reg.upload_cancel(&name, &id)).await??;
    Ok((StatusCode::NO_CONTENT, [(header::CONTENT_LENGTH, "0")]).into_response())
}
