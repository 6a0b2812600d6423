//! Blob reads (end-2) and blob delete (end-10).

use std::io::Read;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_oci::{Digest, RepoName};
use berth_registry::{DeleteRequest, DeleteTarget, ObjectReader, RegistryError};
use bytes::Bytes;

use crate::admin::wire::Entry;
use crate::body::{blocking, from_reader};
use crate::error::ApiError;
use crate::headers::{DOCKER_CONTENT_DIGEST, hv};
use crate::{AppState, notify, zero_copy};

/// A byte range request, resolved against the blob's size.
#[derive(Debug, PartialEq, Eq)]
enum RangeReq {
    /// No usable `Range`: serve everything.
    Whole,
    /// Inclusive bounds within the blob.
    Part(u64, u64),
    /// Outside the blob.
    Unsatisfiable,
}

/// Parses a single-range `Range: bytes=…` header. Malformed or multi-range headers are ignored,
/// as RFC 9110 allows, and the whole blob is served.
fn parse_range(h: Option<&str>, size: u64) -> RangeReq {
    let Some(spec) = h.and_then(|h| h.trim().strip_prefix("bytes=")) else { return RangeReq::Whole };
    if spec.contains(',') {
        return RangeReq::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else { return RangeReq::Whole };
    let (a, b) = (a.trim(), b.trim());
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(start), Ok(end)) if start <= end => {
            if start >= size {
                RangeReq::Unsatisfiable
            } else {
                RangeReq::Part(start, end.min(size - 1))
            }
        }
        (Ok(_), Ok(_)) => RangeReq::Whole,
        (Ok(start), Err(_)) if b.is_empty() => {
            if start >= size {
                RangeReq::Unsatisfiable
            } else {
                RangeReq::Part(start, size - 1)
            }
        }
        (Err(_), Ok(suffix)) if a.is_empty() => {
            if suffix == 0 || size == 0 {
                RangeReq::Unsatisfiable
            } else {
                RangeReq::Part(size.saturating_sub(suffix), size - 1)
            }
        }
        _ => RangeReq::Whole,
    }
}

/// Blobs up to this size are read into memory and sent with their headers in one write;
/// larger ones go from the file to the socket (`zero_copy`).
const SMALL_BLOB: u64 = 64 << 10;

/// The status and headers of a blob answer, and the range it covers.
fn blob_headers(digest: &Digest, size: u64, h: &HeaderMap) -> Result<(StatusCode, HeaderMap, u64, u64), ApiError> {
    let range = parse_range(h.get(header::RANGE).and_then(|v| v.to_str().ok()), size);
    let (status, start, len) = match range {
        RangeReq::Whole => (StatusCode::OK, 0, size),
        RangeReq::Part(a, b) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        RangeReq::Unsatisfiable => return Err(RegistryError::RangeNotSatisfiable { size }.into()),
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_LENGTH, hv(&len.to_string()));
    headers.insert(header::CONTENT_TYPE, hv("application/octet-stream"));
    headers.insert(header::ACCEPT_RANGES, hv("bytes"));
    headers.insert(header::ETAG, hv(&format!("\"{digest}\"")));
    headers.insert(header::CACHE_CONTROL, hv("max-age=31536000"));
    headers.insert(DOCKER_CONTENT_DIGEST.clone(), hv(&digest.to_string()));
    if status == StatusCode::PARTIAL_CONTENT {
        headers.insert(header::CONTENT_RANGE, hv(&format!("bytes {start}-{}/{size}", start + len - 1)));
    }
    Ok((status, headers, start, len))
}

/// HEAD of a blob: its size and digest, no body.
pub async fn head(st: AppState, name: RepoName, digest: Digest, h: &HeaderMap) -> Result<Response, ApiError> {
    let reg = st.registry.clone();
    let d = digest.clone();
    let n = name.clone();
    let size = blocking(move || reg.blob_stat(&n, &d)).await??;
    let (status, headers, _, _) = blob_headers(&digest, size, h)?;
    // Distribution announces a HEAD as a pull too.
    Ok(pulled(&st, (status, headers).into_response(), &name, &digest, size))
}

/// `resp` with the pull of a blob noted, when notifications are on.
fn pulled(st: &AppState, resp: Response, name: &RepoName, digest: &Digest, size: u64) -> Response {
    let notes = if st.notify.is_some() { vec![notify::blob("pull", name, digest, size, None)] } else { vec![] };
    notify::attach(resp, notes)
}

/// What the blocking part of a GET found.
enum Opened {
    /// A small blob's bytes (or the range asked for).
    Bytes(Bytes),
    /// A large blob, open at the start of the range.
    Reader(ObjectReader),
}

/// How long a redirect to the object store stays valid (Distribution's `s3` default).
const REDIRECT_FOR: std::time::Duration = std::time::Duration::from_secs(20 * 60);

/// GET of a blob, honouring `Range`; or, on an object store with redirects on, a 307 to a
/// presigned URL of the blob (after checking the repository holds it). The blob is opened before the answer is decided, so a
/// blob GC removes in between is a 404, not a broken answer.
pub async fn get(
    st: AppState,
    name: RepoName,
    digest: Digest,
    h: &HeaderMap,
    conn: Option<&zero_copy::Conn>,
) -> Result<Response, ApiError> {
    if st.redirect {
        let (reg, n, d) = (st.registry.clone(), name.clone(), digest.clone());
        if let Some(url) = blocking(move || reg.blob_redirect(&n, &d, REDIRECT_FOR)).await?? {
            let mut resp = StatusCode::TEMPORARY_REDIRECT.into_response();
            let hs = resp.headers_mut();
            hs.insert(
                header::LOCATION,
                HeaderValue::from_str(&url).map_err(|_| ApiError::Internal("a presigned URL that is not a header"))?,
            );
            if let Ok(v) = HeaderValue::from_str(&digest.to_string()) {
                hs.insert(DOCKER_CONTENT_DIGEST.clone(), v);
            }
            if st.notify.is_none() {
                return Ok(resp);
            }
            // The event carries the size, which the redirect did not need; failing to read it
            // must not fail a redirect that is fine.
            let (reg, n, d) = (st.registry.clone(), name.clone(), digest.clone());
            return Ok(match blocking(move || reg.blob_stat(&n, &d)).await {
                Ok(Ok(size)) => pulled(&st, resp, &name, &digest, size),
                _ => {
                    tracing::warn!(repository = %name, %digest, "no pull event: the blob's size could not be read");
                    resp
                }
            });
        }
    }
    let reg = st.registry.clone();
    let (n, d) = (name.clone(), digest.clone());
    let range = h.get(header::RANGE).cloned();
    let (size, opened) = blocking(move || -> Result<_, ApiError> {
        let size = reg.blob_stat(&n, &d)?;
        let mut rh = HeaderMap::new();
        if let Some(r) = range {
            rh.insert(header::RANGE, r);
        }
        let (_, _, start, len) = blob_headers(&d, size, &rh)?;
        let blob = reg.blob_open(&n, &d, start)?;
        if len > SMALL_BLOB {
            return Ok((size, Opened::Reader(blob.reader)));
        }
        let mut buf = Vec::with_capacity(len as usize);
        if let Err(e) = blob.reader.take(len).read_to_end(&mut buf) {
            tracing::error!(digest = %d, error = %e, "reading a blob failed");
            return Err(ApiError::Internal("reading a blob failed"));
        }
        if (buf.len() as u64) < len {
            return Err(ApiError::Internal("blob shrank while read"));
        }
        Ok((size, Opened::Bytes(Bytes::from(buf))))
    })
    .await??;
    let (status, headers, start, len) = blob_headers(&digest, size, h)?;
    st.metrics.blob_sent(len);
    let body = match (opened, conn) {
        (Opened::Bytes(b), _) => Body::from(b),
        (Opened::Reader(ObjectReader::File(f)), Some(conn)) => zero_copy::file_body(conn, f, start, len),
        (Opened::Reader(reader), _) => from_reader(Box::new(reader.take(len)), len),
    };
    Ok(pulled(&st, (status, headers, body).into_response(), &name, &digest, size))
}

/// DELETE of a blob: unlinks the layer from the repository (into the trash); the data is left
/// to GC. Refused (409) while a manifest in the repository still uses the layer.
pub async fn delete(st: AppState, name: RepoName, digest: Digest, who: Option<String>) -> Result<Response, ApiError> {
    st.check_deletes_enabled()?;
    let reg = st.registry.clone();
    let target = DeleteTarget::Blob(name, digest);
    let done = blocking(move || reg.delete(&DeleteRequest { target, force: false, who })).await??;
    let resp = (StatusCode::ACCEPTED, [(header::CONTENT_LENGTH, "0")]).into_response();
    let notes = if st.notify.is_some() { notify::deleted(&Entry::new(&done.entry, None)) } else { vec![] };
    Ok(notify::attach(resp, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_table() {
        use RangeReq::*;
        let cases: &[(Option<&str>, u64, RangeReq)] = &[
            (None, 10, Whole),
            (Some("bytes=0-4"), 10, Part(0, 4)),
            (Some("bytes=5-"), 10, Part(5, 9)),
            (Some("bytes=-3"), 10, Part(7, 9)),
            (Some("bytes=-30"), 10, Part(0, 9)),
            (Some("bytes=8-100"), 10, Part(8, 9)),
            (Some("bytes=10-"), 10, Unsatisfiable),
            (Some("bytes=10-20"), 10, Unsatisfiable),
            (Some("bytes=-0"), 10, Unsatisfiable),
            (Some("bytes=0-0"), 0, Unsatisfiable),
            (Some("bytes=5-2"), 10, Whole),
            (Some("bytes=0-1,3-4"), 10, Whole),
            (Some("items=0-1"), 10, Whole),
            (Some("bytes=x-y"), 10, Whole),
        ];
        for (h, size, want) in cases {
            assert_eq!(&parse_range(*h, *size), want, "{h:?} of {size}");
        }
    }

    /// Fuzz target `range`: any `Range` header, against blobs of several sizes, gives a range
    /// inside the blob or none, never a panic.
    #[test]
    fn fuzz_range() {
        berth_fuzz::fuzz("range", |input| {
            let Ok(h) = std::str::from_utf8(input) else { return };
            for size in [0, 1, 2, 1000, u64::MAX] {
                match parse_range(Some(h), size) {
                    RangeReq::Part(a, b) => assert!(a <= b && b < size, "{h:?} on {size} bytes gave {a}-{b}"),
                    RangeReq::Unsatisfiable => assert!(h.contains("bytes="), "{h:?}"),
                    RangeReq::Whole => {}
                }
            }
        });
    }
}
