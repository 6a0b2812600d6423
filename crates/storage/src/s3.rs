//! The object-store backend: a [`Backend`] on an S3-compatible bucket, in the key layout of
//! CNCF Distribution's `s3` driver (`<rootdirectory>/docker/registry/v2/…`), so Distribution
//! and Berth can serve one bucket.
//!
//! Requests are signed with `rusty-s3` (SigV4 without I/O of its own; it also makes the
//! presigned URLs blob GETs can redirect clients to) and sent with `ureq`, a blocking client,
//! as the backend contract is synchronous.
//!
//! What an object store lacks, and what stands in for it:
//! - **appends**: a staged object ([`Backend::writer`]) is a run of part objects
//!   `<key>.parts/<offset>`, each at most `chunksize` long. Reading the key reads them in
//!   order, listing its folder shows the key, and [`Backend::rename`] assembles them into the
//!   target with one multipart upload: by server-side copy of each part when every part but the
//!   last has S3's 5 MiB minimum, else by streaming them through in `chunksize` parts. An
//!   upload that spans requests, or a restart, finds its parts in the bucket.
//! - **rename**: a server-side copy (a multipart copy above `multipartcopythresholdsize`), then
//!   a delete; the target appears whole when the copy completes.
//! - **put-if-absent**: a HEAD then a PUT, not atomic: stores such as Garage ignore
//!   `If-None-Match`. Berth only uses it for content-addressed keys, where racing writers write
//!   the same bytes.
//! - **folders**: there are none; pruning does nothing.
//!
//! Must never: hold a whole blob in memory (buffers are one `chunksize` part), or log a secret.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rusty_s3::actions::{CreateMultipartUpload, DeleteObjectsResponse, ListObjectsV2, ObjectIdentifier};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::Result;
use crate::backend::{Backend, Meta, ObjectReader, ObjectWriter};
use crate::error::StorageError;
use crate::key::Key;

/// How long a signed request stays valid (requests are sent at once; redirects get their own).
const SIGNED_FOR: Duration = Duration::from_secs(15 * 60);
/// S3's smallest part but the last.
pub const MIN_PART: u64 = 5 << 20;
/// S3's largest part, and largest single-request copy.
pub const MAX_PART: u64 = 5 << 30;
/// Keys per `DeleteObjects` request (S3's limit).
const DELETE_BATCH: usize = 1000;
/// Keys per listing page (S3's limit).
const LIST_PAGE: usize = 1000;
/// The suffix of the folder holding a staged object's parts.
const PARTS: &str = ".parts";
/// Attempts of a request that failed in transit or with a 5xx.
const ATTEMPTS: u32 = 3;

/// Where the bucket is and how to reach it: Distribution's `storage.s3` keys.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Options {
    /// `bucket`
    pub bucket: String,
    /// `region`
    pub region: String,
    /// `regionendpoint`: the server's URL (`http://127.0.0.1:3900`); AWS's when absent.
    pub endpoint: Option<String>,
    /// `accesskey`
    pub access_key: String,
    /// `secretkey`
    pub secret_key: String,
    /// A session token with temporary credentials (`AWS_SESSION_TOKEN`).
    pub session_token: Option<String>,
    /// `rootdirectory`: a key prefix inside the bucket (no leading or trailing `/`).
    pub root: String,
    /// `forcepathstyle`: `http://host/bucket/key` rather than `http://bucket.host/key`.
    pub path_style: bool,
    /// `secure`: HTTPS when the endpoint names no scheme (and for AWS).
    pub secure: bool,
    /// `skipverify`: do not verify the server's TLS certificate.
    pub skip_verify: bool,
    /// `chunksize`: the part size of uploads (5 MiB to 5 GiB; default 10 MiB).
    pub chunk_size: u64,
    /// `multipartcopythresholdsize`: objects larger than this are copied in parts.
    pub copy_threshold: u64,
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<hidden>")
            .field("session_token", &self.session_token.as_ref().map(|_| "<hidden>"))
            .field("root", &self.root)
            .field("path_style", &self.path_style)
            .field("secure", &self.secure)
            .field("skip_verify", &self.skip_verify)
            .field("chunk_size", &self.chunk_size)
            .field("copy_threshold", &self.copy_threshold)
            .finish()
    }
}

impl S3Options {
    /// Distribution's defaults around the given bucket and credentials.
    pub fn new(bucket: &str, region: &str, access_key: &str, secret_key: &str) -> S3Options {
        S3Options {
            bucket: bucket.into(),
            region: region.into(),
            endpoint: None,
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            session_token: None,
            root: String::new(),
            path_style: false,
            secure: true,
            skip_verify: false,
            chunk_size: 10 << 20,
            copy_threshold: 32 << 20,
        }
    }

    /// The endpoint's URL, with a scheme.
    pub fn endpoint_url(&self) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        match &self.endpoint {
            Some(e) if e.contains("://") => e.trim_end_matches('/').to_owned(),
            Some(e) => format!("{scheme}://{}", e.trim_end_matches('/')),
            None => format!("{scheme}://s3.{}.amazonaws.com", self.region),
        }
    }

    /// `bucket` at the endpoint, for messages.
    pub fn describe(&self) -> String {
        let root = if self.root.is_empty() { String::new() } else { format!("/{}", self.root) };
        format!("s3://{}{root} at {}", self.bucket, self.endpoint_url())
    }
}

/// A [`Backend`] on an S3 bucket (see the module docs).
#[derive(Clone)]
pub struct S3Backend {
    inner: Arc<Inner>,
}

struct Inner {
    bucket: Bucket,
    creds: Credentials,
    agent: ureq::Agent,
    root: String,
    chunk: u64,
    copy_threshold: u64,
    /// Requests sent, retries included (see [`Backend::requests`]).
    requests: AtomicU64,
}

impl fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Backend").field("bucket", &self.inner.bucket.name()).field("root", &self.inner.root).finish()
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl S3Backend {
    /// A backend on the bucket `o` names. Nothing is sent yet; [`S3Backend::check`] asks.
    pub fn open(o: &S3Options) -> io::Result<S3Backend> {
        if !(MIN_PART..=MAX_PART).contains(&o.chunk_size) {
            return Err(invalid(format!("chunksize must be between 5 MiB and 5 GiB, not {}", o.chunk_size)));
        }
        if !(MIN_PART..=MAX_PART).contains(&o.copy_threshold) {
            return Err(invalid(format!(
                "multipartcopythresholdsize must be between 5 MiB and 5 GiB, not {}",
                o.copy_threshold
            )));
        }
        let url = o.endpoint_url();
        let endpoint = url.parse().map_err(|e| invalid(format!("regionendpoint {url:?}: {e}")))?;
        let style = if o.path_style { UrlStyle::Path } else { UrlStyle::VirtualHost };
        let bucket = Bucket::new(endpoint, style, o.bucket.clone(), o.region.clone())
            .map_err(|e| invalid(format!("bucket {:?} at {url}: {e}", o.bucket)))?;
        let tls = ureq::tls::TlsConfig::builder().disable_verification(o.skip_verify).build();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .timeout_per_write(Some(Duration::from_secs(120)))
            .max_idle_connections_per_host(64)
            .build()
            .new_agent();
        let root = o.root.trim_matches('/').to_owned();
        let inner = Inner {
            bucket,
            creds: match &o.session_token {
                Some(t) => Credentials::new_with_token(o.access_key.clone(), o.secret_key.clone(), t.clone()),
                None => Credentials::new(o.access_key.clone(), o.secret_key.clone()),
            },
            agent,
            root,
            chunk: o.chunk_size,
            copy_threshold: o.copy_threshold,
            requests: AtomicU64::new(0),
        };
        Ok(S3Backend { inner: Arc::new(inner) })
    }

    /// Asks the bucket for one key: fails when it cannot be reached or the credentials are
    /// refused.
    pub fn check(&self) -> io::Result<()> {
        let probe = Key::new("berth/probe").map_err(io::Error::other)?;
        match self.stat(&probe) {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(StorageError::Io { source, .. }) => Err(source),
            Err(e) => Err(io::Error::other(e.to_string())),
        }
    }

    /// Whether the store honours `If-None-Match: *` on PUT (the second create-only write of a
    /// probe key is refused with 412). Berth never relies on it; the answer is for the log.
    pub fn conditional_writes(&self) -> io::Result<bool> {
        let i = &self.inner;
        let nonce = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let key = Key::new(format!("berth/probe/conditional-{nonce}")).map_err(io::Error::other)?;
        let raw = i.object(&key);
        let mut action = i.bucket.put_object(Some(&i.creds), &raw);
        action.headers_mut().insert("if-none-match", "*");
        let url = action.sign(SIGNED_FOR);
        let put = || i.send("PUT", url.as_str(), &[("if-none-match", "*".to_owned())], Some(b"probe"));
        let first = put()?.status().as_u16();
        let second = put()?.status().as_u16();
        let _ = i.delete_raw(&key, &raw);
        Ok((200..300).contains(&first) && second == 412)
    }
}

/// A response, read or not.
type Response = ureq::http::Response<ureq::Body>;

/// A staged object's parts, each with its offset.
type Parts = Vec<(u64, Part)>;

/// A part of a staged object.
#[derive(Debug, Clone)]
struct Part {
    /// Its object key.
    raw: String,
    size: u64,
    modified: Option<SystemTime>,
}

fn parse_time(t: &str) -> Option<SystemTime> {
    // Listings give RFC 3339, HEAD answers the HTTP date format.
    let ts = t.parse::<jiff::Timestamp>().ok().or_else(|| jiff::fmt::rfc2822::parse(t).ok().map(|z| z.timestamp()))?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_nanos(u64::try_from(ts.as_nanosecond()).ok()?))
}

/// The text between `<tag>` and `</tag>` in an XML body.
fn xml_field<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let start = body.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(&body[start..end])
}

/// Characters a copy source keeps as they are; everything else is percent-encoded.
const COPY_SOURCE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'.').remove(b'_').remove(b'~');

impl Inner {
    fn object(&self, key: &Key) -> String {
        if self.root.is_empty() { key.as_str().to_owned() } else { format!("{}/{}", self.root, key.as_str()) }
    }

    fn parts_prefix(&self, key: &Key) -> String {
        format!("{}{PARTS}/", self.object(key))
    }

    /// Sends one request, retrying transport failures and 5xx answers when the body can be
    /// sent again (it always can here: bodies are slices).
    fn send(&self, method: &str, url: &str, headers: &[(&str, String)], body: Option<&[u8]>) -> io::Result<Response> {
        let mut wait = Duration::from_millis(100);
        for attempt in 1..=ATTEMPTS {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let result = match method {
                "GET" | "HEAD" | "DELETE" => {
                    let mut r = match method {
                        "GET" => self.agent.get(url),
                        "HEAD" => self.agent.head(url),
                        _ => self.agent.delete(url),
                    };
                    for (k, v) in headers {
                        r = r.header(*k, v.as_str());
                    }
                    r.call()
                }
                _ => {
                    let mut r = if method == "PUT" { self.agent.put(url) } else { self.agent.post(url) };
                    for (k, v) in headers {
                        r = r.header(*k, v.as_str());
                    }
                    r.send(body.unwrap_or(&[]))
                }
            };
            match result {
                Ok(resp) if resp.status().is_server_error() && attempt < ATTEMPTS => {}
                Ok(resp) => return Ok(resp),
                // Transport failures are retried; the last one is reported with the request.
                Err(_) if attempt < ATTEMPTS => {}
                Err(e) => return Err(io::Error::other(format!("{method} {}: {e}", strip_query(url)))),
            }
            std::thread::sleep(wait);
            wait *= 4;
        }
        unreachable!("the last attempt returns")
    }

    /// A failure of `what` on `key` from a non-success answer.
    fn failure(&self, key: &Key, what: &str, mut resp: Response) -> StorageError {
        let status = resp.status();
        if status.as_u16() == 404 {
            return StorageError::NotFound { key: key.clone() };
        }
        let body = resp.body_mut().with_config().limit(64 << 10).read_to_string().unwrap_or_default();
        let code = xml_field(&body, "Code").unwrap_or("");
        let message = xml_field(&body, "Message").unwrap_or("");
        let kind = match (status.as_u16(), code) {
            (_, "QuotaExceeded" | "EntityTooLarge") | (507, _) => io::ErrorKind::QuotaExceeded,
            (403, _) => io::ErrorKind::PermissionDenied,
            _ => io::ErrorKind::Other,
        };
        StorageError::Io {
            key: key.clone(),
            source: io::Error::new(kind, format!("{what}: the object store answered {status} {code} {message}")),
        }
    }

    fn io(&self, key: &Key, e: io::Error) -> StorageError {
        StorageError::Io { key: key.clone(), source: e }
    }

    fn read_all(&self, key: &Key, mut resp: Response) -> Result<Vec<u8>> {
        resp.body_mut().with_config().limit(u64::MAX).read_to_vec().map_err(|e| self.io(key, io::Error::other(e)))
    }

    fn get_raw(&self, key: &Key, raw: &str, range: Option<(u64, Option<u64>)>) -> Result<Response> {
        let url = self.bucket.get_object(Some(&self.creds), raw).sign(SIGNED_FOR);
        let headers: Vec<(&str, String)> = match range {
            Some((from, Some(to))) => vec![("range", format!("bytes={from}-{to}"))],
            Some((from, None)) => vec![("range", format!("bytes={from}-"))],
            None => vec![],
        };
        self.send("GET", url.as_str(), &headers, None).map_err(|e| self.io(key, e))
    }

    fn head_raw(&self, key: &Key, raw: &str) -> Result<Option<Meta>> {
        let url = self.bucket.head_object(Some(&self.creds), raw).sign(SIGNED_FOR);
        let resp = self.send("HEAD", url.as_str(), &[], None).map_err(|e| self.io(key, e))?;
        match resp.status().as_u16() {
            200 => {
                let h = resp.headers();
                let size = h.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
                let modified = h.get("last-modified").and_then(|v| v.to_str().ok()).and_then(parse_time);
                Ok(Some(Meta { size: size.unwrap_or(0), modified: modified.unwrap_or(SystemTime::UNIX_EPOCH) }))
            }
            404 => Ok(None),
            500..=599 if self.not_an_object(key, raw) => Ok(None),
            _ => Err(self.failure(key, "HEAD", resp)),
        }
    }

    /// Whether the listing says there is no object `raw`, after a read of it failed with a
    /// 5xx. Stores that keep objects as files (s3s-fs) cannot read a key that is a folder, even
    /// an empty one left behind, and answer 500 rather than 404; the listing tells.
    fn not_an_object(&self, key: &Key, raw: &str) -> bool {
        let mut action = self.bucket.list_objects_v2(Some(&self.creds));
        action.with_prefix(raw);
        action.with_max_keys(1);
        let url = action.sign(SIGNED_FOR);
        let Ok(resp) = self.send("GET", url.as_str(), &[], None) else { return false };
        if !resp.status().is_success() {
            return false;
        }
        let Ok(body) = self.read_all(key, resp) else { return false };
        ListObjectsV2::parse_response(&String::from_utf8_lossy(&body))
            .is_ok_and(|page| page.contents.first().is_none_or(|c| c.key != raw))
    }

    fn put_raw(&self, key: &Key, raw: &str, data: &[u8]) -> Result<()> {
        let url = self.bucket.put_object(Some(&self.creds), raw).sign(SIGNED_FOR);
        let resp = self.send("PUT", url.as_str(), &[], Some(data)).map_err(|e| self.io(key, e))?;
        if resp.status().is_success() { Ok(()) } else { Err(self.failure(key, "PUT", resp)) }
    }

    fn delete_raw(&self, key: &Key, raw: &str) -> Result<()> {
        let url = self.bucket.delete_object(Some(&self.creds), raw).sign(SIGNED_FOR);
        let resp = self.send("DELETE", url.as_str(), &[], None).map_err(|e| self.io(key, e))?;
        match resp.status().as_u16() {
            200 | 204 | 404 => Ok(()),
            _ => Err(self.failure(key, "DELETE", resp)),
        }
    }

    /// One page of a listing under `prefix`.
    fn list_page(
        &self,
        key: &Key,
        prefix: &str,
        delimiter: bool,
        start_after: Option<&str>,
        token: Option<&str>,
    ) -> Result<rusty_s3::actions::ListObjectsV2Response> {
        let mut action = self.bucket.list_objects_v2(Some(&self.creds));
        action.with_prefix(prefix);
        if delimiter {
            action.with_delimiter("/");
        }
        match (token, start_after) {
            (Some(t), _) => action.with_continuation_token(t),
            (None, Some(s)) => action.with_start_after(s),
            (None, None) => {}
        }
        action.with_max_keys(LIST_PAGE);
        let url = action.sign(SIGNED_FOR);
        let resp = self.send("GET", url.as_str(), &[], None).map_err(|e| self.io(key, e))?;
        if !resp.status().is_success() {
            return Err(self.failure(key, "LIST", resp));
        }
        let body = self.read_all(key, resp)?;
        let text = String::from_utf8_lossy(&body);
        ListObjectsV2::parse_response(&text).map_err(|e| {
            self.io(key, io::Error::new(io::ErrorKind::InvalidData, format!("a listing that is not S3's: {e}")))
        })
    }

    /// Every object key below `prefix` (recursively), with sizes and times, in key order.
    fn list_recursive(&self, key: &Key, prefix: &str) -> Result<Vec<Part>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.list_page(key, prefix, false, None, token.as_deref())?;
            out.extend(page.contents.into_iter().map(|c| Part {
                size: c.size.unwrap_or(0),
                modified: c.last_modified.as_deref().and_then(parse_time),
                raw: c.key,
            }));
            match page.next_continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(out),
            }
        }
    }

    /// The parts of the staged object `key`, in order, each with its offset.
    fn parts(&self, key: &Key) -> Result<Parts> {
        let prefix = self.parts_prefix(key);
        let mut parts: Parts = self
            .list_recursive(key, &prefix)?
            .into_iter()
            .filter_map(|p| p.raw[prefix.len()..].parse::<u64>().ok().map(|o| (o, p)))
            .collect();
        parts.sort_by_key(|(o, _)| *o);
        Ok(parts)
    }

    fn staged_meta(&self, key: &Key) -> Result<Option<(Parts, Meta)>> {
        let parts = self.parts(key)?;
        let Some((last_offset, last)) = parts.last() else { return Ok(None) };
        let size = last_offset + last.size;
        let modified = parts.iter().filter_map(|(_, p)| p.modified).max().unwrap_or(SystemTime::UNIX_EPOCH);
        Ok(Some((parts, Meta { size, modified })))
    }

    fn copy_source(&self, raw: &str) -> String {
        format!("/{}/{}", self.bucket.name(), percent_encoding::utf8_percent_encode(raw, COPY_SOURCE))
    }

    /// Copies the object `from` (`size` bytes) to `to` on the server.
    fn copy(&self, key: &Key, from: &str, size: u64, to: &str) -> Result<()> {
        if size <= self.copy_threshold {
            let mut action = self.bucket.put_object(Some(&self.creds), to);
            let source = self.copy_source(from);
            action.headers_mut().insert("x-amz-copy-source", source.clone());
            let url = action.sign(SIGNED_FOR);
            let resp = self
                .send("PUT", url.as_str(), &[("x-amz-copy-source", source)], Some(&[]))
                .map_err(|e| self.io(key, e))?;
            return self.expect_xml_ok(key, "COPY", resp).map(|_| ());
        }
        let mut ranges = Vec::new();
        let mut at = 0;
        while at < size {
            let end = (at + self.chunk).min(size);
            ranges.push((from.to_owned(), Some((at, end - 1))));
            at = end;
        }
        self.multipart_copy(key, to, &ranges)
    }

    /// A 2xx answer whose XML body is not an `<Error>` (S3 may answer 200 and fail later).
    fn expect_xml_ok(&self, key: &Key, what: &str, resp: Response) -> Result<String> {
        if !resp.status().is_success() {
            return Err(self.failure(key, what, resp));
        }
        let body = String::from_utf8_lossy(&self.read_all(key, resp)?).into_owned();
        if body.contains("<Error>") {
            let code = xml_field(&body, "Code").unwrap_or("");
            let message = xml_field(&body, "Message").unwrap_or("");
            return Err(self.io(key, io::Error::other(format!("{what}: the object store failed: {code} {message}"))));
        }
        Ok(body)
    }

    fn create_multipart(&self, key: &Key, to: &str) -> Result<String> {
        let url = self.bucket.create_multipart_upload(Some(&self.creds), to).sign(SIGNED_FOR);
        let resp = self.send("POST", url.as_str(), &[], Some(&[])).map_err(|e| self.io(key, e))?;
        let body = self.expect_xml_ok(key, "CreateMultipartUpload", resp)?;
        let parsed =
            CreateMultipartUpload::parse_response(&body).map_err(|e| self.io(key, io::Error::other(e.to_string())))?;
        Ok(parsed.upload_id().to_owned())
    }

    fn complete_multipart(&self, key: &Key, to: &str, upload: &str, etags: &[String]) -> Result<()> {
        let action =
            self.bucket.complete_multipart_upload(Some(&self.creds), to, upload, etags.iter().map(String::as_str));
        let url = action.sign(SIGNED_FOR);
        let body = action.body();
        let resp = self.send("POST", url.as_str(), &[], Some(body.as_bytes())).map_err(|e| self.io(key, e))?;
        self.expect_xml_ok(key, "CompleteMultipartUpload", resp).map(|_| ())
    }

    fn abort_multipart(&self, to: &str, upload: &str) {
        let url = self.bucket.abort_multipart_upload(Some(&self.creds), to, upload).sign(SIGNED_FOR);
        let _ = self.send("DELETE", url.as_str(), &[], None);
    }

    fn upload_part(&self, key: &Key, to: &str, upload: &str, n: u16, data: &[u8]) -> Result<String> {
        let url = self.bucket.upload_part(Some(&self.creds), to, n, upload).sign(SIGNED_FOR);
        let resp = self.send("PUT", url.as_str(), &[], Some(data)).map_err(|e| self.io(key, e))?;
        if !resp.status().is_success() {
            return Err(self.failure(key, "UploadPart", resp));
        }
        let etag = resp.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        Ok(etag)
    }

    fn upload_part_copy(
        &self,
        key: &Key,
        to: &str,
        upload: &str,
        n: u16,
        from: &str,
        range: Option<(u64, u64)>,
    ) -> Result<String> {
        let mut action = self.bucket.upload_part(Some(&self.creds), to, n, upload);
        let source = self.copy_source(from);
        action.headers_mut().insert("x-amz-copy-source", source.clone());
        let mut headers = vec![("x-amz-copy-source", source)];
        if let Some((a, b)) = range {
            let r = format!("bytes={a}-{b}");
            action.headers_mut().insert("x-amz-copy-source-range", r.clone());
            headers.push(("x-amz-copy-source-range", r));
        }
        let url = action.sign(SIGNED_FOR);
        let resp = self.send("PUT", url.as_str(), &headers, Some(&[])).map_err(|e| self.io(key, e))?;
        let body = self.expect_xml_ok(key, "UploadPartCopy", resp)?;
        Ok(xml_field(&body, "ETag").unwrap_or("").replace("&quot;", "\""))
    }

    /// Builds `to` from server-side copies of `sources` (object, optional inclusive range), in
    /// order, with one multipart upload.
    fn multipart_copy(&self, key: &Key, to: &str, sources: &[(String, Option<(u64, u64)>)]) -> Result<()> {
        let upload = self.create_multipart(key, to)?;
        let result = (|| {
            let mut etags = Vec::with_capacity(sources.len());
            for (i, (from, range)) in sources.iter().enumerate() {
                etags.push(self.upload_part_copy(key, to, &upload, part_number(key, i)?, from, *range)?);
            }
            self.complete_multipart(key, to, &upload, &etags)
        })();
        if result.is_err() {
            self.abort_multipart(to, &upload);
        }
        result
    }

    /// Builds `to` from the bytes of `parts`, streamed through in `chunk`-sized parts.
    fn multipart_through(&self, key: &Key, to: &str, parts: &[(u64, Part)]) -> Result<()> {
        let upload = self.create_multipart(key, to)?;
        let result = (|| {
            let mut etags = Vec::new();
            let mut buf: Vec<u8> = Vec::with_capacity(self.chunk as usize);
            for (_, p) in parts {
                let resp = self.get_raw(key, &p.raw, None)?;
                if !resp.status().is_success() {
                    return Err(self.failure(key, "GET", resp));
                }
                let mut reader = resp.into_body().into_reader();
                let mut block = vec![0u8; 1 << 20];
                loop {
                    let n = reader.read(&mut block).map_err(|e| self.io(key, e))?;
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&block[..n]);
                    if buf.len() as u64 >= self.chunk {
                        let rest = buf.split_off(self.chunk as usize);
                        etags.push(self.upload_part(key, to, &upload, part_number(key, etags.len())?, &buf)?);
                        buf = rest;
                    }
                }
            }
            if !buf.is_empty() || etags.is_empty() {
                etags.push(self.upload_part(key, to, &upload, part_number(key, etags.len())?, &buf)?);
            }
            self.complete_multipart(key, to, &upload, &etags)
        })();
        if result.is_err() {
            self.abort_multipart(to, &upload);
        }
        result
    }

    fn delete_many(&self, key: &Key, raws: &[String]) -> Result<()> {
        for batch in raws.chunks(DELETE_BATCH) {
            let ids: Vec<ObjectIdentifier> = batch.iter().map(|r| ObjectIdentifier::new(r.clone())).collect();
            let mut action = self.bucket.delete_objects(Some(&self.creds), ids.iter());
            action.set_quiet(true);
            let url = action.sign(SIGNED_FOR);
            let (body, md5) = action.body_with_md5();
            let resp = self
                .send("POST", url.as_str(), &[("content-md5", md5)], Some(body.as_bytes()))
                .map_err(|e| self.io(key, e))?;
            let text = self.expect_xml_ok(key, "DeleteObjects", resp)?;
            if text.trim().is_empty() {
                continue;
            }
            // An answer that cannot be read may hide per-key failures: not a success (the
            // metadata index drops the rows of what a delete reports done).
            let parsed = DeleteObjectsResponse::parse(&text).map_err(|e| {
                self.io(key, io::Error::other(format!("DeleteObjects: unreadable answer ({e:?}): {}", shorten(&text))))
            })?;
            if let Some(e) = parsed.errors.first() {
                return Err(
                    self.io(key, io::Error::other(format!("DeleteObjects: {}: {} {}", e.key, e.code, e.message)))
                );
            }
        }
        Ok(())
    }
}

/// The S3 part number of the `i`-th part (from 1; at most 10,000).
fn part_number(key: &Key, i: usize) -> Result<u16> {
    u16::try_from(i + 1).ok().filter(|n| *n <= 10_000).ok_or_else(|| StorageError::Io {
        key: key.clone(),
        source: io::Error::other("more than 10,000 parts: raise chunksize"),
    })
}

fn strip_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// Reads a staged object's parts one after another, from an offset.
struct PartsReader {
    inner: Arc<Inner>,
    key: Key,
    /// Parts still to read: object key and where to start in it.
    left: VecDeque<(String, u64)>,
    current: Option<ureq::BodyReader<'static>>,
}

impl Read for PartsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(r) = &mut self.current {
                let n = r.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                self.current = None;
            }
            let Some((raw, from)) = self.left.pop_front() else { return Ok(0) };
            let range = (from > 0).then_some((from, None));
            let resp = self.inner.get_raw(&self.key, &raw, range).map_err(|e| io::Error::other(e.to_string()))?;
            if !resp.status().is_success() {
                let e = self.inner.failure(&self.key, "GET", resp);
                return Err(io::Error::other(e.to_string()));
            }
            self.current = Some(resp.into_body().into_reader());
        }
    }
}

/// Appends to a staged object, one part object per `chunk` bytes (and one for what is left when
/// it commits).
struct S3Writer {
    inner: Arc<Inner>,
    key: Key,
    /// Bytes already in part objects.
    flushed: u64,
    buf: Vec<u8>,
}

impl S3Writer {
    fn flush_part(&mut self, len: usize) -> Result<()> {
        let raw = format!("{}{:020}", self.inner.parts_prefix(&self.key), self.flushed);
        let rest = self.buf.split_off(len);
        self.inner.put_raw(&self.key, &raw, &self.buf)?;
        self.flushed += len as u64;
        self.buf = rest;
        Ok(())
    }
}

impl ObjectWriter for S3Writer {
    fn write_all(&mut self, data: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(data);
        let chunk = self.inner.chunk as usize;
        while self.buf.len() >= chunk {
            self.flush_part(chunk)?;
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.flushed + self.buf.len() as u64
    }

    fn commit(mut self: Box<Self>) -> Result<u64> {
        if !self.buf.is_empty() {
            let len = self.buf.len();
            self.flush_part(len)?;
        }
        Ok(self.flushed)
    }
}

impl S3Backend {
    /// The staged object `key` (its parts in order) from `offset`, once a read found no plain
    /// object there; NotFound when it has no parts either.
    fn staged(&self, key: &Key, offset: u64) -> Result<(ObjectReader, u64)> {
        let i = &self.inner;
        let Some((parts, meta)) = i.staged_meta(key)? else {
            return Err(StorageError::NotFound { key: key.clone() });
        };
        let left = parts
            .into_iter()
            .filter(|(o, p)| o + p.size > offset)
            .map(|(o, p)| (p.raw, offset.saturating_sub(o)))
            .collect();
        let reader = PartsReader { inner: i.clone(), key: key.clone(), left, current: None };
        Ok((ObjectReader::Stream(Box::new(reader)), meta.size))
    }
}

impl Backend for S3Backend {
    fn get(&self, key: &Key) -> Result<Vec<u8>> {
        let i = &self.inner;
        let resp = i.get_raw(key, &i.object(key), None)?;
        let status = resp.status().as_u16();
        match status {
            200 => i.read_all(key, resp),
            _ if status == 404 || (status >= 500 && i.not_an_object(key, &i.object(key))) => {
                let (mut r, _) = self.staged(key, 0)?;
                let mut out = Vec::new();
                r.read_to_end(&mut out).map_err(|e| i.io(key, e))?;
                Ok(out)
            }
            _ => Err(i.failure(key, "GET", resp)),
        }
    }

    fn open(&self, key: &Key, offset: u64) -> Result<(ObjectReader, u64)> {
        let i = &self.inner;
        let raw = i.object(key);
        let resp = i.get_raw(key, &raw, (offset > 0).then_some((offset, None)))?;
        match resp.status().as_u16() {
            200 | 206 => {
                let h = resp.headers();
                let total = h
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.rsplit('/').next())
                    .and_then(|v| v.parse::<u64>().ok())
                    .or_else(|| {
                        h.get("content-length")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok())
                            .map(|l| l + offset)
                    })
                    .unwrap_or(offset);
                let reader: Box<dyn Read + Send> = Box::new(resp.into_body().into_reader());
                Ok((ObjectReader::Stream(reader), total))
            }
            // Past the end: nothing to read, but the object is there.
            416 => match i.head_raw(key, &raw)? {
                Some(m) => Ok((ObjectReader::Stream(Box::new(io::empty())), m.size)),
                None => Err(StorageError::NotFound { key: key.clone() }),
            },
            status if status == 404 || (status >= 500 && i.not_an_object(key, &raw)) => self.staged(key, offset),
            _ => Err(i.failure(key, "GET", resp)),
        }
    }

    fn stat(&self, key: &Key) -> Result<Meta> {
        let i = &self.inner;
        if let Some(m) = i.head_raw(key, &i.object(key))? {
            return Ok(m);
        }
        match i.staged_meta(key)? {
            Some((_, m)) => Ok(m),
            None => Err(StorageError::NotFound { key: key.clone() }),
        }
    }

    fn put(&self, key: &Key, data: &[u8]) -> Result<()> {
        let i = &self.inner;
        i.put_raw(key, &i.object(key), data)
    }

    fn put_if_absent(&self, key: &Key, data: &[u8]) -> Result<bool> {
        let i = &self.inner;
        if i.head_raw(key, &i.object(key))?.is_some() {
            return Ok(false);
        }
        i.put_raw(key, &i.object(key), data)?;
        Ok(true)
    }

    fn writer(&self, key: &Key) -> Result<Box<dyn ObjectWriter>> {
        let i = &self.inner;
        let mut flushed = i.parts(key)?.last().map_or(0, |(o, p)| o + p.size);
        if flushed == 0 {
            // A plain object (a log copied from a disk, say) becomes the first part, so that
            // appends continue it rather than hide behind it.
            let raw = i.object(key);
            if let Some(m) = i.head_raw(key, &raw)? {
                i.copy(key, &raw, m.size, &format!("{}{:020}", i.parts_prefix(key), 0))?;
                i.delete_raw(key, &raw)?;
                flushed = m.size;
            }
        }
        Ok(Box::new(S3Writer { inner: i.clone(), key: key.clone(), flushed, buf: Vec::new() }))
    }

    fn rename(&self, from: &Key, to: &Key) -> Result<u64> {
        let i = &self.inner;
        let (src, dst) = (i.object(from), i.object(to));
        if let Some(m) = i.head_raw(from, &src)? {
            i.copy(from, &src, m.size, &dst)?;
            i.delete_raw(from, &src)?;
            return Ok(m.size);
        }
        let parts = i.parts(from)?;
        let Some(((_, last), rest)) = parts.split_last() else {
            return Err(StorageError::NotFound { key: from.clone() });
        };
        let total: u64 = parts.iter().map(|(_, p)| p.size).sum();
        if rest.is_empty() {
            i.copy(from, &last.raw, last.size, &dst)?;
        } else if rest.iter().all(|(_, p)| p.size >= MIN_PART) {
            let sources: Vec<(String, Option<(u64, u64)>)> = parts.iter().map(|(_, p)| (p.raw.clone(), None)).collect();
            i.multipart_copy(from, &dst, &sources)?;
        } else if total < MIN_PART {
            // Small: read it whole and write it once.
            let mut data = Vec::with_capacity(total as usize);
            for (_, p) in &parts {
                let resp = i.get_raw(from, &p.raw, None)?;
                if !resp.status().is_success() {
                    return Err(i.failure(from, "GET", resp));
                }
                data.extend(i.read_all(from, resp)?);
            }
            i.put_raw(to, &dst, &data)?;
        } else {
            i.multipart_through(from, &dst, &parts)?;
        }
        let raws: Vec<String> = parts.into_iter().map(|(_, p)| p.raw).collect();
        i.delete_many(from, &raws)?;
        Ok(total)
    }

    fn delete(&self, key: &Key) -> Result<bool> {
        let i = &self.inner;
        let raw = i.object(key);
        let plain = i.head_raw(key, &raw)?.is_some();
        if plain {
            i.delete_raw(key, &raw)?;
        }
        let parts: Vec<String> = i.parts(key)?.into_iter().map(|(_, p)| p.raw).collect();
        i.delete_many(key, &parts)?;
        Ok(plain || !parts.is_empty())
    }

    fn delete_prefix(&self, prefix: &Key) -> Result<bool> {
        let i = &self.inner;
        let raw = i.object(prefix);
        let below = format!("{raw}/");
        let parts = format!("{raw}{PARTS}/");
        let mut raws: Vec<String> = i.list_recursive(prefix, &below)?.into_iter().map(|p| p.raw).collect();
        raws.extend(i.list_recursive(prefix, &parts)?.into_iter().map(|p| p.raw));
        if i.head_raw(prefix, &raw)?.is_some() {
            raws.push(raw);
        }
        i.delete_many(prefix, &raws)?;
        Ok(!raws.is_empty())
    }

    fn list(&self, prefix: &Key, start_after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let i = &self.inner;
        let p = format!("{}/", i.object(prefix));
        let after = start_after.map(|s| format!("{p}{s}"));
        // Names, each with whether the listing has shown it; S3 lists in key order, where a
        // folder sorts as `name/`, which is not name order (`a-b` comes before `a/`).
        let mut names: BTreeMap<String, ()> = BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            let page = i.list_page(prefix, &p, true, after.as_deref(), token.as_deref())?;
            let mut highest: Option<String> = None;
            for c in &page.contents {
                highest = highest.max(Some(c.key.clone()));
                names.insert(child_name(&c.key[p.len()..]).to_owned(), ());
            }
            for c in &page.common_prefixes {
                highest = highest.max(Some(c.prefix.clone()));
                names.insert(child_name(c.prefix[p.len()..].trim_end_matches('/')).to_owned(), ());
            }
            let more = page.next_continuation_token.filter(|t| !t.is_empty());
            let wanted = |n: &&String| start_after.is_none_or(|s| n.as_str() > s);
            if more.is_none() {
                return Ok(names.keys().filter(wanted).take(limit).cloned().collect());
            }
            // Names that no later key can precede are final.
            let seen = highest.unwrap_or_default();
            let ready: Vec<String> =
                names.keys().filter(wanted).take_while(|n| settled(&p, n, &seen)).take(limit).cloned().collect();
            if ready.len() >= limit {
                return Ok(ready);
            }
            token = more;
        }
    }

    fn prune_empty(&self, _prefix: &Key) -> Result<()> {
        Ok(())
    }

    fn remove_empty_folder(&self, _prefix: &Key) -> Result<bool> {
        Ok(false)
    }

    fn delete_objects(&self, keys: &[Key]) -> Result<()> {
        let i = &self.inner;
        match keys {
            [] => Ok(()),
            [one] => i.delete_raw(one, &i.object(one)),
            [first, ..] => i.delete_many(first, &keys.iter().map(|k| i.object(k)).collect::<Vec<_>>()),
        }
    }

    fn list_objects(&self, prefix: &Key) -> Result<Option<Vec<(String, Meta)>>> {
        let i = &self.inner;
        let p = format!("{}/", i.object(prefix));
        let objects = i.list_recursive(prefix, &p)?;
        Ok(Some(
            objects
                .into_iter()
                .filter(|o| !o.raw.contains(&format!("{PARTS}/")))
                .map(|o| {
                    let meta = Meta { size: o.size, modified: o.modified.unwrap_or(SystemTime::UNIX_EPOCH) };
                    (o.raw[p.len()..].to_owned(), meta)
                })
                .collect(),
        ))
    }

    fn has_folders(&self) -> bool {
        false
    }

    /// Each request waits a round trip (a millisecond on loopback, tens of milliseconds to a
    /// cloud region) while using little CPU here, so many go at once.
    fn parallelism(&self) -> usize {
        32
    }

    fn requests(&self) -> Option<u64> {
        Some(self.inner.requests.load(Ordering::Relaxed))
    }

    fn presigned_get(&self, key: &Key, valid: Duration) -> Option<String> {
        let object = self.inner.object(key);
        Some(self.inner.bucket.get_object(Some(&self.inner.creds), &object).sign(valid).to_string())
    }
}

/// The child name a listing entry stands for: the folder of a staged object's parts is the
/// staged object.
fn child_name(entry: &str) -> &str {
    entry.strip_suffix(PARTS).unwrap_or(entry)
}

/// Whether, once a listing under `p` has shown every key up to `seen`, no child name not yet
/// shown can sort before `name`. A child `c` is listed at `p c` (an object), `p c/` (a folder)
/// or `p c.parts/`; a name before `name` that is not a prefix of it is listed before `p name`,
/// so only prefixes of `name` followed by a byte below `/` can still come.
fn settled(p: &str, name: &str, seen: &str) -> bool {
    if format!("{p}{name}").as_str() > seen {
        return false;
    }
    name.bytes().enumerate().skip(1).all(|(i, b)| b >= b'/' || format!("{p}{}/", &name[..i]).as_str() <= seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_order_is_settled_only_when_no_prefix_folder_can_follow() {
        assert!(settled("r/", "a", "r/a"));
        assert!(!settled("r/", "b", "r/a"), "b itself not reached");
        // `a-b` is listed before the folder `a/`: until `r/a/` is passed, `a` may still come.
        assert!(!settled("r/", "a-b", "r/a-b/x"));
        assert!(settled("r/", "a-b", "r/a/"));
        assert!(settled("r/", "ab", "r/ab"), "b is above `/`: no prefix folder sorts after it");
    }

    #[test]
    fn staged_parts_list_as_the_staged_object() {
        assert_eq!(child_name("data.parts"), "data");
        assert_eq!(child_name("data"), "data");
    }

    #[test]
    fn times_in_both_formats_parse() {
        let a = parse_time("2026-11-30T19:20:00.000Z").unwrap();
        let b = parse_time("Mon, 30 Nov 2026 19:20:00 GMT").unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let o = S3Options::new("b", "r", "AKID", "very-secret");
        assert!(!format!("{o:?}").contains("very-secret"));
    }

    #[test]
    fn endpoints_get_a_scheme() {
        let mut o = S3Options::new("b", "garage", "k", "s");
        assert_eq!(o.endpoint_url(), "https://s3.garage.amazonaws.com");
        o.endpoint = Some("127.0.0.1:3900".into());
        o.secure = false;
        assert_eq!(o.endpoint_url(), "http://127.0.0.1:3900");
        o.endpoint = Some("https://minio.example/".into());
        assert_eq!(o.endpoint_url(), "https://minio.example");
    }
}

#[cfg(test)]
mod conformance_tests {
    use super::*;
    use crate::conformance;
    use crate::testservers::S3Server;

    /// The smallest parts and copies S3 allows, so the suite crosses part boundaries and
    /// copies in parts with a few MiB.
    fn backend(server: &S3Server, root: &str) -> S3Backend {
        let mut o = server.options.clone();
        o.chunk_size = MIN_PART;
        o.copy_threshold = MIN_PART;
        o.root = root.into();
        let b = S3Backend::open(&o).unwrap();
        b.check().unwrap_or_else(|e| panic!("{} does not answer: {e}", o.describe()));
        b
    }

    #[test]
    fn conformance_on_garage() {
        let server = S3Server::garage();
        conformance::run_all(&backend(&server, ""));
    }

    #[test]
    fn conformance_on_s3s_fs() {
        let server = S3Server::s3s_fs();
        conformance::run_all(&backend(&server, ""));
    }

    #[test]
    fn keys_live_under_the_root_directory_as_distribution_puts_them() {
        let server = S3Server::garage();
        let rooted = backend(&server, "/registry/");
        let bare = backend(&server, "");
        let key = Key::new("docker/registry/v2/blobs/sha256/ab/abc/data").unwrap();
        rooted.put(&key, b"blob").unwrap();
        let raw = Key::new("registry/docker/registry/v2/blobs/sha256/ab/abc/data").unwrap();
        assert_eq!(bare.get(&raw).unwrap(), b"blob");
        assert_eq!(bare.list(&Key::new("registry").unwrap(), None, 10).unwrap(), ["docker"]);
        conformance::run_all(&rooted);
    }

    #[test]
    fn a_wrong_secret_is_refused_clearly() {
        let server = S3Server::garage();
        let mut o = server.options.clone();
        o.secret_key = "wrong".into();
        let err = S3Backend::open(&o).unwrap().check().unwrap_err();
        assert!(err.to_string().contains("403"), "{err}");
    }
}

/// At most 200 characters of an answer, for an error message.
fn shorten(text: &str) -> String {
    text.chars().take(200).collect()
}
