//! Header names, header values and query encoding shared by the `/v2` and admin handlers and
//! the error mapping. A leaf: it uses nothing else in this crate.

use axum::http::{HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// `Docker-Distribution-API-Version`, on every answer.
pub static API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
/// `Docker-Content-Digest`
pub static DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
/// `Docker-Upload-UUID`
pub static DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
/// `OCI-Subject`
pub static OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
/// `OCI-Filters-Applied`
pub static OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

/// A header value from text built of validated names, digests and numbers.
pub fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The `Range` header value of an upload holding `size` bytes (`0-<last byte>`; `0-0` when
/// empty, as CNCF Distribution answers).
pub fn upload_range(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

/// Everything but RFC 3986's unreserved characters is percent-encoded in a query value.
pub const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Percent-encodes a query-string value.
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, QUERY_VALUE).to_string()
}

/// An RFC 8288 `Link` to the next page: `<path?k=v&…>; rel="next"`.
pub fn next_link(path: &str, query: &[(&str, String)]) -> HeaderValue {
    let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
    hv(&format!("<{path}?{}>; rel=\"next\"", q.join("&")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_keep_only_unreserved_characters() {
        assert_eq!(encode("a/b c&d=e?~._-"), "a%2Fb%20c%26d%3De%3F~._-");
        assert_eq!(encode("é"), "%C3%A9");
        assert_eq!(
            next_link("/v2/_catalog", &[("n", "2".into()), ("last", "a/b".into())]),
            "</v2/_catalog?n=2&last=a%2Fb>; rel=\"next\""
        );
    }
}
