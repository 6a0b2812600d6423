//! Berth's HTTP shell: the OCI distribution `/v2` API, `/metrics` and `/healthz` over a
//! [`Registry`].
//!
//! A request is parsed into an endpoint ([`v2::route`]) with validated names and digests, the
//! registry core is called on a blocking thread, and its result becomes a response; every error
//! becomes a spec error body in [`error`], and nowhere else.
//!
//! Architecture invariant: handlers never see a storage path or a `StorageError`; everything
//! they know of storage comes through `berth_registry`.

pub mod admin;
pub mod auth;
mod body;
pub mod conn;
pub mod error;
pub mod headers;
pub mod metrics;
pub mod notify;
pub mod tls;
pub mod ui;
pub mod v2;
pub mod zero_copy;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use berth_registry::Registry;

use crate::metrics::Metrics;

/// Everything a handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The registry core.
    pub registry: Arc<Registry>,
    /// Request and byte counters.
    pub metrics: Arc<Metrics>,
    /// Whether DELETE endpoints are enabled (`storage.delete.enabled`).
    pub delete_enabled: bool,
    /// GC settings from the config; a request may override grace and the untagged policy.
    pub gc: berth_registry::GcOptions,
    /// Headers added to every answer (`http.headers`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Access control; `None`: an open registry.
    pub auth: Option<Arc<auth::Auth>>,
    /// The web UI; `None` when `ui.enabled: false`.
    pub ui: Option<Arc<ui::Ui>>,
    /// Blob GETs answer 307 to the object store (S3 without `storage.redirect.disable`).
    pub redirect: bool,
    /// The retention policies (`retention:`), which `POST /api/retention` runs.
    pub retention: Arc<berth_registry::Retention>,
    /// Notifications (`notifications:`); `None`: no endpoint is configured.
    pub notify: Option<Arc<notify::Notifier>>,
    /// Whether clients reach this server over TLS (for the URLs events carry).
    pub tls: bool,
}

impl AppState {
    /// Answers `UNSUPPORTED` (405) when `storage.delete.enabled` is false.
    pub(crate) fn check_deletes_enabled(&self) -> Result<(), error::ApiError> {
        if self.delete_enabled {
            Ok(())
        } else {
            Err(berth_registry::RegistryError::Unsupported {
                what: "deletes are disabled on this registry (storage.delete.enabled: false)".into(),
            }
            .into())
        }
    }
}

/// Validates `http.headers` entries into header pairs.
pub fn response_headers(pairs: &[(String, String)]) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    pairs
        .iter()
        .map(|(n, v)| {
            let name = HeaderName::try_from(n.as_str()).map_err(|_| format!("{n:?} is not a valid header name"))?;
            let value = HeaderValue::try_from(v.as_str()).map_err(|_| format!("{v:?} is not a valid value for {n}"))?;
            Ok((name, value))
        })
        .collect()
}

/// The router for every endpoint Berth serves.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v2", get(v2::base))
        .route("/v2/", get(v2::base))
        .route("/v2/_catalog", get(v2::listing::catalog))
        .route("/v2/{*path}", any(v2::dispatch))
        .route("/api/{*path}", any(admin::dispatch))
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(health))
        .route("/", get(ui::root))
        .route("/ui", any(ui::dispatch))
        .route("/ui/", any(ui::dispatch))
        .route("/ui/{*path}", any(ui::dispatch))
        .fallback(|| async { error::ApiError::NotFound.into_response() })
        .layer(middleware::from_fn_with_state(state.clone(), notify::layer))
        .layer(middleware::from_fn_with_state(state.clone(), auth::guard))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Serves `router` on `listener` (over TLS when `tls` is given) until `shutdown` resolves, then
/// lets requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    tls: Option<Arc<tls::Tls>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<conn::Peer>();
    match tls {
        Some(tls) => axum::serve(tls::Listener::new(listener, tls)?, app).with_graceful_shutdown(shutdown).await,
        None => axum::serve(zero_copy::Listener(listener), app).with_graceful_shutdown(shutdown).await,
    }
}

/// Adds the API version header, strips bodies from HEAD answers, and records metrics.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let kind = metrics::classify(req.uri().path());
    let method = req.method().clone();
    let mut resp = next.run(req).await;
    resp.headers_mut().insert(headers::API_VERSION.clone(), HeaderValue::from_static("registry/2.0"));
    for (name, value) in &state.headers {
        resp.headers_mut().append(name.clone(), value.clone());
    }
    if method == Method::HEAD {
        // Keep Content-Length (it describes the GET answer) but send no body.
        let (parts, _) = resp.into_parts();
        resp = Response::from_parts(parts, axum::body::Body::empty());
    }
    state.metrics.record(kind, method.as_str(), resp.status().as_u16(), started.elapsed());
    resp
}

async fn render_metrics(State(state): State<AppState>) -> Response {
    let mut text = state.metrics.render();
    metrics::render_graph(&mut text, state.registry.graph_stats());
    if let Some(n) = &state.notify {
        n.render_metrics(&mut text);
    }
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"))], text).into_response()
}

async fn health(State(state): State<AppState>) -> Response {
    let registry = state.registry.clone();
    match body::blocking(move || registry.health()).await {
        Ok(Ok(())) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "{\"status\":\"ok\"}").into_response()
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "application/json")],
                "{\"status\":\"storage unavailable\"}",
            )
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}
