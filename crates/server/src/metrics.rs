//! Prometheus metrics: request counts and latencies per endpoint, method and status class,
//! and blob bytes in and out, rendered as the text exposition format at `/metrics`.
//!
//! Fixed arrays of atomics rather than a metrics registry: the label sets are small and known,
//! and recording a request is a few relaxed increments with no lock.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Which API endpoint a request hit, for labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointKind {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// blob GET/HEAD/DELETE
    Blob,
    /// upload endpoints
    Upload,
    /// manifest endpoints
    Manifest,
    /// tags list
    Tags,
    /// referrers
    Referrers,
    /// the admin API under `/api/`
    Admin,
    /// anything else
    Other,
}

const KINDS: [(EndpointKind, &str); 9] = [
    (EndpointKind::Base, "base"),
    (EndpointKind::Catalog, "catalog"),
    (EndpointKind::Blob, "blob"),
    (EndpointKind::Upload, "upload"),
    (EndpointKind::Manifest, "manifest"),
    (EndpointKind::Tags, "tags"),
    (EndpointKind::Referrers, "referrers"),
    (EndpointKind::Admin, "admin"),
    (EndpointKind::Other, "other"),
];
const METHODS: [&str; 7] = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OTHER"];
const CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];
/// 5xx answers counted one by one: each is a bug or an outage worth an alert.
const SERVER_ERRORS: [u16; 4] = [500, 503, 507, 0];
/// Histogram bucket bounds in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 10.0];

/// The server's counters.
#[derive(Debug)]
pub struct Metrics {
    requests: Vec<AtomicU64>,
    latency_buckets: Vec<AtomicU64>,
    latency_sum_us: Vec<AtomicU64>,
    latency_count: Vec<AtomicU64>,
    blob_bytes_sent: AtomicU64,
    blob_bytes_received: AtomicU64,
    server_errors: Vec<AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let n = |len| (0..len).map(|_| AtomicU64::new(0)).collect();
        Metrics {
            requests: n(KINDS.len() * METHODS.len() * CLASSES.len()),
            latency_buckets: n(KINDS.len() * BUCKETS.len()),
            latency_sum_us: n(KINDS.len()),
            latency_count: n(KINDS.len()),
            blob_bytes_sent: AtomicU64::new(0),
            blob_bytes_received: AtomicU64::new(0),
            server_errors: n(SERVER_ERRORS.len()),
        }
    }
}

/// Classifies a request path with the same parser that routes it, so a name containing
/// `blobs` or `manifests` is counted as what it is.
pub fn classify(path: &str) -> EndpointKind {
    use crate::v2::route::{self, Endpoint};
    if path.starts_with("/api/") {
        return EndpointKind::Admin;
    }
    let Some(rest) = path.strip_prefix("/v2") else { return EndpointKind::Other };
    match rest {
        "" | "/" => return EndpointKind::Base,
        "/_catalog" => return EndpointKind::Catalog,
        _ => {}
    }
    match route::parse(rest.strip_prefix('/').unwrap_or(rest)) {
        Ok(Some(Endpoint::Blob(..))) => EndpointKind::Blob,
        Ok(Some(Endpoint::UploadStart(..) | Endpoint::Upload(..))) => EndpointKind::Upload,
        Ok(Some(Endpoint::Manifest(..) | Endpoint::ManifestInvalid(..))) => EndpointKind::Manifest,
        Ok(Some(Endpoint::Tags(..))) => EndpointKind::Tags,
        Ok(Some(Endpoint::Referrers(..))) => EndpointKind::Referrers,
        Ok(None) | Err(_) => EndpointKind::Other,
    }
}

fn kind_index(k: EndpointKind) -> usize {
    KINDS.iter().position(|(x, _)| *x == k).unwrap_or(KINDS.len() - 1)
}

impl Metrics {
    /// Records one finished request.
    pub fn record(&self, kind: EndpointKind, method: &str, status: u16, elapsed: Duration) {
        let k = kind_index(kind);
        let m = METHODS.iter().position(|x| *x == method).unwrap_or(METHODS.len() - 1);
        let c = match status {
            0..=299 => 0,
            300..=399 => 1,
            400..=499 => 2,
            _ => 3,
        };
        self.requests[(k * METHODS.len() + m) * CLASSES.len() + c].fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            let i = SERVER_ERRORS.iter().position(|s| *s == status).unwrap_or(SERVER_ERRORS.len() - 1);
            self.server_errors[i].fetch_add(1, Ordering::Relaxed);
        }
        let secs = elapsed.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.latency_buckets[k * BUCKETS.len() + i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_sum_us[k].fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.latency_count[k].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts blob bytes served.
    pub fn blob_sent(&self, n: u64) {
        self.blob_bytes_sent.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts blob bytes received.
    pub fn blob_received(&self, n: u64) {
        self.blob_bytes_received.fetch_add(n, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP berth_http_requests_total HTTP requests by endpoint, method and status class.\n");
        out.push_str("# TYPE berth_http_requests_total counter\n");
        for (k, (_, kn)) in KINDS.iter().enumerate() {
            for (m, mn) in METHODS.iter().enumerate() {
                for (c, cn) in CLASSES.iter().enumerate() {
                    let v = self.requests[(k * METHODS.len() + m) * CLASSES.len() + c].load(Ordering::Relaxed);
                    if v > 0 {
                        let _ = writeln!(
                            out,
                            "berth_http_requests_total{{endpoint=\"{kn}\",method=\"{mn}\",code=\"{cn}\"}} {v}"
                        );
                    }
                }
            }
        }
        out.push_str("# HELP berth_http_request_duration_seconds Time to response headers, by endpoint.\n");
        out.push_str("# TYPE berth_http_request_duration_seconds histogram\n");
        for (k, (_, kn)) in KINDS.iter().enumerate() {
            let count = self.latency_count[k].load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            for (i, b) in BUCKETS.iter().enumerate() {
                let v = self.latency_buckets[k * BUCKETS.len() + i].load(Ordering::Relaxed);
                let _ = writeln!(out, "berth_http_request_duration_seconds_bucket{{endpoint=\"{kn}\",le=\"{b}\"}} {v}");
            }
            let _ =
                writeln!(out, "berth_http_request_duration_seconds_bucket{{endpoint=\"{kn}\",le=\"+Inf\"}} {count}");
            let sum = self.latency_sum_us[k].load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "berth_http_request_duration_seconds_sum{{endpoint=\"{kn}\"}} {sum}");
            let _ = writeln!(out, "berth_http_request_duration_seconds_count{{endpoint=\"{kn}\"}} {count}");
        }
        out.push_str(
            "# HELP berth_blob_bytes_sent_total Blob bytes served.\n# TYPE berth_blob_bytes_sent_total counter\n",
        );
        let _ = writeln!(out, "berth_blob_bytes_sent_total {}", self.blob_bytes_sent.load(Ordering::Relaxed));
        out.push_str("# HELP berth_blob_bytes_received_total Blob bytes received by uploads.\n# TYPE berth_blob_bytes_received_total counter\n");
        let _ = writeln!(out, "berth_blob_bytes_received_total {}", self.blob_bytes_received.load(Ordering::Relaxed));
        out.push_str("# HELP berth_http_server_errors_total 5xx answers by status (500: a bug, logged with its cause; 507: storage full).\n# TYPE berth_http_server_errors_total counter\n");
        for (i, status) in SERVER_ERRORS.iter().enumerate() {
            let label = if *status == 0 { "other".to_owned() } else { status.to_string() };
            let _ = writeln!(
                out,
                "berth_http_server_errors_total{{status=\"{label}\"}} {}",
                self.server_errors[i].load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// Appends what the in-memory accounting graph holds and costs (nothing until it is built).
pub fn render_graph(out: &mut String, stats: Option<berth_registry::GraphStats>) {
    let Some(g) = stats else { return };
    let gauges = [
        ("berth_graph_repositories", "Repositories in the in-memory accounting graph.", g.repositories),
        ("berth_graph_digests", "Digests (manifests and blobs) in the in-memory accounting graph.", g.digests),
        ("berth_graph_manifests", "Manifests read into the in-memory accounting graph.", g.manifests),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
    let _ = writeln!(
        out,
        "# HELP berth_graph_bytes Heap bytes of the in-memory accounting graph, by part.\n# TYPE berth_graph_bytes gauge"
    );
    for (part, v) in [
        ("digests", g.digest_bytes),
        ("nodes", g.node_bytes),
        ("repositories", g.repo_bytes),
        ("analysis", g.analysis_bytes),
    ] {
        let _ = writeln!(out, "berth_graph_bytes{{part=\"{part}\"}} {v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_paths() {
        assert_eq!(classify("/v2/"), EndpointKind::Base);
        assert_eq!(classify("/v2/_catalog"), EndpointKind::Catalog);
        assert_eq!(classify("/v2/a/blobs/uploads/x"), EndpointKind::Upload);
        assert_eq!(classify("/v2/a/blobs/sha256:x"), EndpointKind::Other, "malformed: not a blob request");
        assert_eq!(classify("/v2/a/manifests/latest"), EndpointKind::Manifest);
        assert_eq!(classify("/v2/a/tags/list"), EndpointKind::Tags);
        assert_eq!(classify("/metrics"), EndpointKind::Other);
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(classify(&format!("/v2/x/manifests/blobs/{d}")), EndpointKind::Blob);
        assert_eq!(classify(&format!("/v2/a/blobs/{d}")), EndpointKind::Blob);
        assert_eq!(classify("/v2/blobs/uploads/manifests/latest"), EndpointKind::Manifest);
        assert_eq!(classify("/v2/a/widgets/x"), EndpointKind::Other);
        assert_eq!(classify("/api/repositories/a"), EndpointKind::Admin);
    }

    #[test]
    fn renders_recorded_requests() {
        let m = Metrics::default();
        m.record(EndpointKind::Manifest, "GET", 200, Duration::from_millis(3));
        m.record(EndpointKind::Manifest, "GET", 404, Duration::from_millis(30));
        m.record(EndpointKind::Upload, "PUT", 507, Duration::from_millis(1));
        let text = m.render();
        assert!(text.contains(r#"berth_http_server_errors_total{status="507"} 1"#), "{text}");
        assert!(text.contains(r#"berth_http_server_errors_total{status="500"} 0"#), "{text}");
        assert!(text.contains(r#"berth_http_requests_total{endpoint="manifest",method="GET",code="2xx"} 1"#), "{text}");
        assert!(text.contains(r#"berth_http_requests_total{endpoint="manifest",method="GET",code="4xx"} 1"#));
        assert!(text.contains(r#"berth_http_request_duration_seconds_bucket{endpoint="manifest",le="0.005"} 1"#));
        assert!(text.contains(r#"berth_http_request_duration_seconds_count{endpoint="manifest"} 2"#));
    }
}
