//! The one place where an error becomes an HTTP status and a spec error body
//! (`{"errors":[{"code","message","detail"}]}`).
//!
//! The match over [`RegistryError`] is exhaustive with no catch-all arm, so a new variant cannot
//! ship without a decision here. Failures that are not the client's fault are logged with their
//! cause chain and answered with a bare 500 that shows no internals.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_oci::ParseError;
use berth_registry::RegistryError;
use serde::Serialize;

/// An error answered to an HTTP client.
#[derive(Debug)]
pub enum ApiError {
    /// From the registry core.
    Registry(RegistryError),
    /// `n` of a paginated listing is not a non-negative integer.
    PaginationNumberInvalid(String),
    /// No endpoint at this path.
    NotFound,
    /// The endpoint exists but not with this method.
    MethodNotAllowed,
    /// A bug or a failed task inside the server; logged, answered as a bare 500.
    Internal(&'static str),
    /// An admin API request that does not make sense (unknown parameter value).
    BadRequest(String),
    /// No credentials, or wrong ones: 401 with a `WWW-Authenticate` challenge.
    Unauthorized {
        /// The `WWW-Authenticate` value.
        challenge: String,
    },
    /// Signed in, without the right: 403.
    Denied(String),
    /// Too many failed sign-ins from this address: 429 with `Retry-After`.
    TooManyRequests {
        /// Seconds to wait.
        retry_after: u64,
    },
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        ApiError::Registry(e)
    }
}

impl From<ParseError> for ApiError {
    fn from(e: ParseError) -> Self {
        ApiError::Registry(e.into())
    }
}

/// Status, spec code and detail for an error.
pub(crate) struct Mapped {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: Option<serde_json::Value>,
}

fn m(status: StatusCode, code: &'static str) -> Mapped {
    Mapped { status, code, detail: None }
}

impl ApiError {
    pub(crate) fn mapped(&self) -> Mapped {
        use StatusCode as S;
        let e = match self {
            ApiError::Registry(e) => e,
            ApiError::PaginationNumberInvalid(n) => {
                return Mapped {
                    status: S::BAD_REQUEST,
                    code: "PAGINATION_NUMBER_INVALID",
                    detail: Some(serde_json::json!({ "n": n })),
                };
            }
            ApiError::NotFound => return m(S::NOT_FOUND, "UNSUPPORTED"),
            ApiError::MethodNotAllowed => return m(S::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            ApiError::Internal(_) => return m(S::INTERNAL_SERVER_ERROR, "UNKNOWN"),
            ApiError::BadRequest(_) => return m(S::BAD_REQUEST, "UNSUPPORTED"),
            ApiError::Unauthorized { .. } => return m(S::UNAUTHORIZED, "UNAUTHORIZED"),
            ApiError::Denied(_) => return m(S::FORBIDDEN, "DENIED"),
            ApiError::TooManyRequests { .. } => return m(S::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"),
        };
        match e {
            RegistryError::Parse(p) => match p {
                ParseError::Name { .. } | ParseError::Pattern { .. } => m(S::BAD_REQUEST, "NAME_INVALID"),
                ParseError::Tag { .. } => m(S::BAD_REQUEST, "TAG_INVALID"),
                ParseError::Digest { .. } => m(S::BAD_REQUEST, "DIGEST_INVALID"),
                ParseError::UnsupportedAlgorithm { .. } => m(S::BAD_REQUEST, "UNSUPPORTED"),
                ParseError::UploadId { .. } => m(S::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"),
                ParseError::Manifest(_) => m(S::BAD_REQUEST, "MANIFEST_INVALID"),
            },
            RegistryError::BlobUnknown { digest } => Mapped {
                status: S::NOT_FOUND,
                code: "BLOB_UNKNOWN",
                detail: Some(serde_json::json!({ "digest": digest.to_string() })),
            },
            RegistryError::BlobUploadInvalid { .. } => m(S::BAD_REQUEST, "BLOB_UPLOAD_INVALID"),
            RegistryError::BlobUploadUnknown { .. } => m(S::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"),
            RegistryError::DigestInvalid { .. } => m(S::BAD_REQUEST, "DIGEST_INVALID"),
            RegistryError::ManifestBlobUnknown { digests } => Mapped {
                status: S::BAD_REQUEST,
                code: "MANIFEST_BLOB_UNKNOWN",
                detail: Some(serde_json::json!({
                    "missing": digests.iter().map(|d| d.to_string()).collect::<Vec<_>>()
                })),
            },
            RegistryError::ManifestInvalid { .. } => m(S::BAD_REQUEST, "MANIFEST_INVALID"),
            RegistryError::ManifestUnknown { .. } => m(S::NOT_FOUND, "MANIFEST_UNKNOWN"),
            RegistryError::NameUnknown { .. } => m(S::NOT_FOUND, "NAME_UNKNOWN"),
            RegistryError::SizeInvalid { too_large, .. } => {
                m(if *too_large { S::PAYLOAD_TOO_LARGE } else { S::BAD_REQUEST }, "SIZE_INVALID")
            }
            RegistryError::RangeInvalid { .. } => m(S::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID"),
            RegistryError::RangeNotSatisfiable { .. } => m(S::RANGE_NOT_SATISFIABLE, "SIZE_INVALID"),
            RegistryError::Unsupported { .. } => m(S::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            RegistryError::Denied { .. } => m(S::FORBIDDEN, "DENIED"),
            RegistryError::InUse { .. } => m(S::CONFLICT, "DENIED"),
            RegistryError::Conflict { .. } => m(S::CONFLICT, "DENIED"),
            RegistryError::TrashUnknown { .. } => m(S::NOT_FOUND, "TRASH_ENTRY_UNKNOWN"),
            RegistryError::RestoreIncomplete { missing, .. } => Mapped {
                status: S::CONFLICT,
                code: "MANIFEST_BLOB_UNKNOWN",
                detail: Some(serde_json::json!({
                    "missing": missing.iter().map(|d| d.to_string()).collect::<Vec<_>>()
                })),
            },
            RegistryError::Corrupt { .. } => m(S::INTERNAL_SERVER_ERROR, "UNKNOWN"),
            RegistryError::Body(_) => m(S::BAD_REQUEST, "BLOB_UPLOAD_INVALID"),
            RegistryError::Storage(_) => m(S::INTERNAL_SERVER_ERROR, "UNKNOWN"),
            // 507: the request was fine and may be retried once space is freed; clients treat
            // a 5xx as retryable.
            RegistryError::StorageFull(_) => m(S::INSUFFICIENT_STORAGE, "UNKNOWN"),
            // Distribution answers 503 UNAVAILABLE when a dependency is down; clients retry.
            RegistryError::Unavailable { .. } => m(S::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
        }
    }

    /// The status and message a page shown to a person carries (the web UI), a 5xx logged as
    /// an API answer's is.
    pub(crate) fn status_and_message(&self) -> (StatusCode, String) {
        let mapped = self.mapped();
        if mapped.status.is_server_error() {
            log_chain(self);
        }
        (mapped.status, self.message())
    }

    fn message(&self) -> String {
        match self {
            ApiError::Registry(RegistryError::Storage(_) | RegistryError::Corrupt { .. }) | ApiError::Internal(_) => {
                "internal server error".to_owned()
            }
            ApiError::BadRequest(why) => why.clone(),
            ApiError::Registry(e) => e.to_string(),
            ApiError::PaginationNumberInvalid(n) => format!("n must be a non-negative integer, not {n:?}"),
            ApiError::NotFound => "no such endpoint".to_owned(),
            ApiError::MethodNotAllowed => "method not allowed on this endpoint".to_owned(),
            ApiError::Unauthorized { .. } => "authentication required".to_owned(),
            ApiError::Denied(why) => format!("access denied: {why}"),
            ApiError::TooManyRequests { retry_after } => {
                format!("too many failed sign-ins from this address; try again in {retry_after} s")
            }
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    errors: [Entry<'a>; 1],
}

#[derive(Serialize)]
struct Entry<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<serde_json::Value>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mapped = self.mapped();
        if mapped.status.is_server_error() {
            log_chain(&self);
        }
        let body = Body { errors: [Entry { code: mapped.code, message: self.message(), detail: mapped.detail }] };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut resp = (mapped.status, json).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match &self {
            ApiError::Registry(RegistryError::RangeNotSatisfiable { size }) => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
            }
            ApiError::Registry(RegistryError::RangeInvalid { offset, .. }) => {
                if let Ok(v) = HeaderValue::from_str(&crate::headers::upload_range(*offset)) {
                    resp.headers_mut().insert(header::RANGE, v);
                }
            }
            ApiError::Unauthorized { challenge } => {
                if let Ok(v) = HeaderValue::from_str(challenge) {
                    resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
            }
            ApiError::TooManyRequests { retry_after } => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            _ => {}
        }
        resp
    }
}

fn log_chain(e: &ApiError) {
    if let ApiError::Registry(RegistryError::Corrupt { what, reason }) = e {
        tracing::error!(%what, %reason, "request failed on a corrupt record");
        return;
    }
    if let ApiError::Internal(what) = e {
        tracing::error!(error = what, "request failed");
    }
    if let ApiError::Registry(e) = e {
        let mut chain = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        tracing::error!(error = %chain, "request failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_oci::Digest;

    /// Every code Berth may answer with, as listed in DESIGN.md (plus Distribution's
    /// PAGINATION_NUMBER_INVALID and UNKNOWN for 500s).
    const ALLOWED: &[&str] = &[
        "BLOB_UNKNOWN",
        "BLOB_UPLOAD_INVALID",
        "BLOB_UPLOAD_UNKNOWN",
        "DIGEST_INVALID",
        "MANIFEST_BLOB_UNKNOWN",
        "MANIFEST_INVALID",
        "MANIFEST_UNKNOWN",
        "NAME_INVALID",
        "NAME_UNKNOWN",
        "SIZE_INVALID",
        "UNAUTHORIZED",
        "DENIED",
        "UNSUPPORTED",
        "TOOMANYREQUESTS",
        "PAGINATION_NUMBER_INVALID",
        "UNKNOWN",
        // Distribution's code for a tag that breaks the grammar (a write to an invalid tag).
        "TAG_INVALID",
        // Admin API only: a trash id that names no entry.
        "TRASH_ENTRY_UNKNOWN",
        // Distribution's code for a 503 (a dependency is down).
        "UNAVAILABLE",
    ];

    #[test]
    fn every_error_maps_to_a_listed_code_and_a_sensible_status() {
        let d = Digest::sha256_of(b"");
        let name: berth_oci::RepoName = "a".parse().unwrap();
        let errors: Vec<(ApiError, u16)> = vec![
            ("A".parse::<berth_oci::RepoName>().unwrap_err().into(), 400),
            ("-".parse::<berth_oci::Tag>().unwrap_err().into(), 400),
            ("sha256:1".parse::<Digest>().unwrap_err().into(), 400),
            ("md5:1".parse::<Digest>().unwrap_err().into(), 400),
            ("a.b".parse::<berth_oci::UploadId>().unwrap_err().into(), 404),
            (berth_oci::ParseError::Manifest("x".into()).into(), 400),
            ("A/**".parse::<berth_oci::RepoPattern>().unwrap_err().into(), 400),
            (RegistryError::BlobUnknown { digest: d.clone() }.into(), 404),
            (RegistryError::BlobUploadInvalid { reason: "x".into() }.into(), 400),
            (RegistryError::BlobUploadUnknown { id: "x".into() }.into(), 404),
            (RegistryError::DigestInvalid { reason: "x".into() }.into(), 400),
            (RegistryError::ManifestBlobUnknown { digests: vec![d.clone()] }.into(), 400),
            (RegistryError::ManifestInvalid { reason: "x".into() }.into(), 400),
            (RegistryError::ManifestUnknown { name: name.clone(), reference: "x".into() }.into(), 404),
            (RegistryError::NameUnknown { name }.into(), 404),
            (RegistryError::SizeInvalid { reason: "x".into(), too_large: true }.into(), 413),
            (RegistryError::SizeInvalid { reason: "x".into(), too_large: false }.into(), 400),
            (RegistryError::RangeInvalid { reason: "x".into(), offset: 3 }.into(), 416),
            (RegistryError::RangeNotSatisfiable { size: 3 }.into(), 416),
            (RegistryError::Unsupported { what: "x".into() }.into(), 405),
            (RegistryError::Denied { reason: "x".into() }.into(), 403),
            (RegistryError::Body(std::io::Error::other("x")).into(), 400),
            (RegistryError::Storage(berth_storage_error()).into(), 500),
            (ApiError::PaginationNumberInvalid("x".into()), 400),
            (ApiError::NotFound, 404),
            (ApiError::MethodNotAllowed, 405),
            (ApiError::Internal("x"), 500),
            (ApiError::BadRequest("x".into()), 400),
            (ApiError::Unauthorized { challenge: "Basic realm=\"r\"".into() }, 401),
            (ApiError::Denied("x".into()), 403),
            (ApiError::TooManyRequests { retry_after: 3 }, 429),
            (RegistryError::InUse { reason: "x".into() }.into(), 409),
            (RegistryError::Conflict { reason: "x".into() }.into(), 409),
            (RegistryError::TrashUnknown { id: "x".into() }.into(), 404),
            (RegistryError::RestoreIncomplete { id: "x".into(), missing: vec![d.clone()] }.into(), 409),
            (RegistryError::Corrupt { what: "x".into(), reason: "y".into() }.into(), 500),
            (RegistryError::StorageFull(berth_storage_error()).into(), 507),
            (RegistryError::Unavailable { reason: "x".into() }.into(), 503),
        ];
        for (e, status) in errors {
            let m = e.mapped();
            assert_eq!(m.status.as_u16(), status, "{e:?}");
            assert!(ALLOWED.contains(&m.code), "{e:?} -> {}", m.code);
        }
    }

    fn berth_storage_error() -> berth_registry::StorageError {
        berth_registry::StorageError::InvalidKey { key: "x".into(), reason: "test" }
    }

    #[test]
    fn internal_errors_show_no_internals() {
        let e = ApiError::Registry(RegistryError::Storage(berth_storage_error()));
        assert_eq!(e.message(), "internal server error");
        let full = berth_registry::StorageError::Io {
            key: berth_storage::Key::new("docker/registry/v2/blobs/x").unwrap(),
            source: std::io::Error::from(std::io::ErrorKind::StorageFull),
        };
        let e = ApiError::Registry(RegistryError::StorageFull(full));
        assert!(!e.message().contains("docker/registry") && e.message().contains("full"), "{}", e.message());
    }
}
