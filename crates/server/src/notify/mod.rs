//! Notifications, compatible with CNCF Distribution's: what happened is announced to the
//! configured endpoints (`notifications.endpoints`) in Distribution's envelope (`event`).
//!
//! The write path: a handler says what happened by attaching [`Notes`] to its response; the
//! [`layer`] around every route turns them into events with the request's record and the
//! signed-in user, and stores them in the durable outbox (`outbox`) **before** the answer
//! leaves. Delivery (`deliver`) runs on its own threads from the outbox, in order per
//! endpoint, with backoff, across restarts. Scheduled runs (GC, retention, trash expiry)
//! record through [`Notifier::record_blocking`].
//!
//! This module never decides what happened; handlers and the registry core do.

pub mod deliver;
pub mod event;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_registry::{Backend, Outbox};
use serde_json::json;

use crate::AppState;
use crate::admin::wire::{Entry, GcResult, RetentionResult};
use event::{Actor, BLOB_MEDIA_TYPE, RequestRecord, Source};
pub use event::{Event, Happened, Target};

/// One endpoint (`notifications.endpoints[]`).
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `name`
    pub name: String,
    /// The name made safe as a storage key (the cursor's file).
    pub key: String,
    /// `url`
    pub url: String,
    /// `headers`, sent with every request.
    pub headers: Vec<(String, String)>,
    /// `timeout` of one request.
    pub timeout: Duration,
    /// `threshold`: failures in a row before waiting `backoff` between tries.
    pub threshold: u32,
    /// `backoff`
    pub backoff: Duration,
    /// `ignoredmediatypes` and `ignore.mediatypes`
    pub ignored_media_types: Vec<String>,
    /// `ignore.actions`
    pub ignored_actions: Vec<String>,
}

impl Endpoint {
    /// Whether it takes an event of `action` on a target of `media_type` (`ignore.actions`,
    /// `ignoredmediatypes`, `ignore.mediatypes`).
    pub fn wants(&self, action: &str, media_type: Option<&str>) -> bool {
        let ignored_media =
            media_type.is_some_and(|m| !m.is_empty() && self.ignored_media_types.iter().any(|i| i == m));
        !ignored_media && !self.ignored_actions.iter().any(|a| a == action)
    }
}

/// `notifications:` as the server runs it.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The enabled endpoints.
    pub endpoints: Vec<Endpoint>,
    /// `events.includereferences`: manifest events list what the manifest references.
    pub include_references: bool,
    /// At most this many events are held; past it the oldest go, counted.
    pub max_events: u64,
}

/// What a handler attaches to its response: what happened, in order.
#[derive(Debug, Clone, Default)]
pub struct Notes(pub Vec<Happened>);

/// Attaches `notes` to `resp` (nothing when empty).
pub fn attach(mut resp: Response, notes: Vec<Happened>) -> Response {
    if !notes.is_empty() {
        resp.extensions_mut().insert(Notes(notes));
    }
    resp
}

type Job = (Vec<Event>, tokio::sync::oneshot::Sender<bool>);

/// The running notification machinery of one server.
pub struct Notifier {
    outbox: Arc<Outbox>,
    jobs: std::sync::mpsc::Sender<Job>,
    source: Source,
    endpoints: Vec<Endpoint>,
    include_references: bool,
    /// Events that could not be stored (the request was answered anyway).
    lost: AtomicU64,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: URLs and headers may hold credentials.
        let names: Vec<&str> = self.endpoints.iter().map(|e| e.name.as_str()).collect();
        f.debug_struct("Notifier").field("source", &self.source).field("endpoints", &names).finish()
    }
}

/// `url` without what may be a credential (user info, query), for logs.
pub fn redacted(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (host, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let path = if path.is_empty() { String::new() } else { format!("/{path}") };
    format!("{scheme}://{host}{path}")
}

/// A storage key segment from any text: what is not `[A-Za-z0-9._-]` becomes `_`.
pub fn key_safe(s: &str) -> String {
    let k: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect();
    if k.is_empty() || k.chars().all(|c| c == '.') { "_".to_owned() } else { k }
}

impl Notifier {
    /// Opens the outbox of `owner` in `store` and starts the writer and one delivery thread per
    /// endpoint; events say they come from `source_addr` (this machine and port).
    pub fn start(
        store: Arc<dyn Backend>,
        settings: &Settings,
        owner: &str,
        source_addr: &str,
    ) -> Result<Arc<Notifier>, String> {
        Notifier::open(store, settings, owner, source_addr, true)
    }

    /// Like [`Notifier::start`] without delivery: a command on a stopped root stores its events
    /// in the server's outbox, and the server delivers them when it starts.
    pub fn offline(
        store: Arc<dyn Backend>,
        settings: &Settings,
        owner: &str,
        source_addr: &str,
    ) -> Result<Arc<Notifier>, String> {
        Notifier::open(store, settings, owner, source_addr, false)
    }

    fn open(
        store: Arc<dyn Backend>,
        settings: &Settings,
        owner: &str,
        source_addr: &str,
        deliver: bool,
    ) -> Result<Arc<Notifier>, String> {
        let keys: Vec<String> = settings.endpoints.iter().map(|e| e.key.clone()).collect();
        let outbox = Arc::new(
            Outbox::open(store, &key_safe(owner), &keys, settings.max_events)
                .map_err(|e| format!("opening the notification outbox: {e}"))?,
        );
        for k in keys.iter().filter(|_| deliver) {
            let pending = outbox.pending(k);
            if pending > 0 {
                tracing::info!(endpoint = %k, events = pending, "notifications from before the restart wait for delivery");
            }
        }
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let writer = outbox.clone();
        std::thread::Builder::new()
            .name("notify-outbox".into())
            .spawn(move || write_batches(&writer, rx))
            .map_err(|e| e.to_string())?;
        for e in settings.endpoints.iter().filter(|_| deliver) {
            deliver::start(outbox.clone(), e.clone()).map_err(|e| e.to_string())?;
        }
        Ok(Arc::new(Notifier {
            outbox,
            jobs,
            source: Source { addr: source_addr.to_owned(), instance_id: event::uuid() },
            endpoints: settings.endpoints.clone(),
            include_references: settings.include_references,
            lost: AtomicU64::new(0),
        }))
    }

    /// Whether any endpoint takes events like `h` (else it is not stored at all: an endpoint
    /// that ignores pulls costs pulls nothing).
    pub fn wanted(&self, h: &Happened) -> bool {
        self.endpoints.iter().any(|e| e.wants(h.action, h.target.media_type.as_deref()))
    }

    /// Whether manifest events list their references.
    pub fn include_references(&self) -> bool {
        self.include_references
    }

    /// The event for `h`, caused by `request` of `user`; `base` (`http://host`) makes the
    /// target's path a URL.
    pub fn event(&self, h: Happened, request: &RequestRecord, user: Option<&str>, base: &str) -> Event {
        let mut target = h.target;
        if let Some(path) = target.url.take() {
            target.url = Some(format!("{base}{path}"));
        }
        Event {
            id: event::uuid(),
            timestamp: event::timestamp(SystemTime::now()),
            action: h.action.to_owned(),
            target,
            request: request.clone(),
            actor: Actor { name: h.actor.or_else(|| user.map(str::to_owned)) },
            source: self.source.clone(),
            berth: h.berth,
        }
    }

    /// Stores `events` durably; returns once they are stored (or storing failed, which is
    /// logged and counted: the change they announce has happened either way).
    pub async fn record(&self, happened: Vec<Happened>, request: &RequestRecord, user: Option<&str>, base: &str) {
        if let Some((n, stored)) = self.submit(happened, request, user, base) {
            self.settle(n, stored.await.unwrap_or(false));
        }
    }

    /// [`Notifier::record`] from a blocking thread, for runs no request caused.
    pub fn record_blocking(&self, happened: Vec<Happened>) {
        if let Some((n, stored)) = self.submit(happened, &RequestRecord::default(), None, "") {
            self.settle(n, stored.blocking_recv().unwrap_or(false));
        }
    }

    /// Hands the events some endpoint takes to the writer; how many, and the answer to wait for.
    fn submit(
        &self,
        happened: Vec<Happened>,
        request: &RequestRecord,
        user: Option<&str>,
        base: &str,
    ) -> Option<(u64, tokio::sync::oneshot::Receiver<bool>)> {
        let events: Vec<Event> =
            happened.into_iter().filter(|h| self.wanted(h)).map(|h| self.event(h, request, user, base)).collect();
        if events.is_empty() {
            return None;
        }
        let n = events.len() as u64;
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.jobs.send((events, tx)).is_err() {
            self.settle(n, false);
            return None;
        }
        Some((n, rx))
    }

    /// Counts `n` events lost unless they were stored.
    fn settle(&self, n: u64, stored: bool) {
        if !stored {
            self.lost.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Stores where every endpoint stands (at a clean stop), so a restart sends nothing twice
    /// but an event in flight.
    pub fn flush(&self) {
        if let Err(e) = self.outbox.store_cursors() {
            tracing::warn!(error = %e, "could not store the notification cursors; a restart sends some events again");
        }
    }

    /// The notification lines of `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(out, "# HELP berth_notifications_pending Events in the outbox an endpoint has not taken yet.");
        let _ = writeln!(out, "# TYPE berth_notifications_pending gauge");
        for e in &self.endpoints {
            let _ =
                writeln!(out, "berth_notifications_pending{{endpoint=\"{}\"}} {}", e.key, self.outbox.pending(&e.key));
        }
        for (metric, help) in [
            ("delivered", "Events an endpoint took."),
            ("failures", "Failed deliveries (each is retried)."),
            ("dropped", "Events dropped past the outbox bound before an endpoint took them."),
        ] {
            let _ = writeln!(out, "# HELP berth_notifications_{metric}_total {help}");
            let _ = writeln!(out, "# TYPE berth_notifications_{metric}_total counter");
            for e in &self.endpoints {
                let c = self.outbox.counters(&e.key).expect("every endpoint has counters");
                let v = match metric {
                    "delivered" => &c.delivered,
                    "failures" => &c.failures,
                    _ => &c.dropped,
                };
                let _ = writeln!(
                    out,
                    "berth_notifications_{metric}_total{{endpoint=\"{}\"}} {}",
                    e.key,
                    v.load(Ordering::Relaxed)
                );
            }
        }
        let _ =
            writeln!(out, "# HELP berth_notifications_unstored_total Events that could not be stored in the outbox.");
        let _ = writeln!(out, "# TYPE berth_notifications_unstored_total counter");
        let _ = writeln!(out, "berth_notifications_unstored_total {}", self.lost.load(Ordering::Relaxed));
    }
}

/// The writer: takes every job waiting, stores them as one segment, answers each.
fn write_batches(outbox: &Outbox, rx: std::sync::mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let events: Vec<Vec<u8>> = batch
            .iter()
            .flat_map(|(e, _)| e.iter().map(|e| serde_json::to_vec(e).expect("events serialise")))
            .collect();
        let ok = match outbox.append(&events) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, events = events.len(), "could not store notifications in the outbox; they are lost");
                false
            }
        };
        for (_, tx) in batch {
            let _ = tx.send(ok);
        }
    }
}

/// The request's record, as Distribution fills it.
fn request_record(req: &Request) -> RequestRecord {
    let h = req.headers();
    let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    let peer = req.extensions().get::<ConnectInfo<crate::conn::Peer>>().map(|c| c.0.addr.to_string());
    let addr = text("x-forwarded-for")
        .and_then(|f| f.split(',').next())
        .map(|a| a.trim().to_owned())
        .or_else(|| text("x-real-ip").map(str::to_owned))
        .or(peer)
        .unwrap_or_default();
    RequestRecord {
        id: event::uuid(),
        addr,
        host: text("host").unwrap_or_default().to_owned(),
        method: req.method().to_string(),
        useragent: text("user-agent").unwrap_or_default().to_owned(),
    }
}

/// `scheme://host` for target URLs: the forwarded ones when a proxy says so.
fn base_url(h: &HeaderMap, tls: bool) -> String {
    let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    let scheme = text("x-forwarded-proto").unwrap_or(if tls { "https" } else { "http" });
    let host = text("x-forwarded-host").or_else(|| text("host")).unwrap_or("localhost");
    format!("{scheme}://{host}")
}

/// Around every route: what the handler noted becomes events, stored before the answer goes.
/// The request runs in a task of its own, so a client that hangs up mid-request cannot cancel
/// the recording of a change that happens anyway.
pub async fn layer(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Some(notifier) = st.notify.clone() else { return next.run(req).await };
    let record = request_record(&req);
    let base = base_url(req.headers(), st.tls);
    let user = req.extensions().get::<crate::auth::Caller>().and_then(|c| c.user.clone());
    let task = tokio::spawn(async move {
        let mut resp = next.run(req).await;
        if let Some(Notes(notes)) = resp.extensions_mut().remove::<Notes>() {
            notifier.record(notes, &record, user.as_deref(), &base).await;
        }
        resp
    });
    match task.await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::error!(error = %e, "a request failed");
            crate::error::ApiError::Internal("the request failed").into_response()
        }
    }
}

// What happened, in Distribution's terms, for each kind of change.

/// A blob pushed, pulled or mounted (`from`).
pub fn blob(
    action: &'static str,
    repo: &berth_oci::RepoName,
    digest: &berth_oci::Digest,
    size: u64,
    from: Option<&berth_oci::RepoName>,
) -> Happened {
    Happened::new(
        action,
        Target {
            media_type: Some(BLOB_MEDIA_TYPE.to_owned()),
            size: Some(size),
            digest: Some(digest.to_string()),
            length: Some(size),
            repository: Some(repo.to_string()),
            from_repository: from.map(|f| f.to_string()),
            url: Some(format!("/v2/{repo}/blobs/{digest}")),
            ..Default::default()
        },
    )
}

/// A manifest pushed or pulled, by `tag` if the request named one.
pub fn manifest(
    action: &'static str,
    repo: &berth_oci::RepoName,
    m: &berth_registry::StoredManifest,
    tag: Option<&berth_oci::Tag>,
    references: bool,
) -> Happened {
    let size = m.bytes.len() as u64;
    let refs = match (&m.manifest, references) {
        (Some(p), true) => p
            .references()
            .chain(p.manifests.iter())
            .map(|d| event::Reference { media_type: d.media_type.clone(), size: d.size, digest: d.digest.to_string() })
            .collect(),
        _ => Vec::new(),
    };
    Happened::new(
        action,
        Target {
            media_type: Some(m.media_type.clone()),
            size: Some(size),
            digest: Some(m.digest.to_string()),
            length: Some(size),
            repository: Some(repo.to_string()),
            url: Some(format!("/v2/{repo}/manifests/{}", m.digest)),
            tag: tag.map(|t| t.to_string()),
            references: refs,
            ..Default::default()
        },
    )
}

/// What a delete removed, as Distribution announces it: each manifest by digest, then each tag
/// by name; a layer link by digest; a whole repository by name. A retention policy that
/// deleted is the actor.
pub fn deleted(e: &Entry) -> Vec<Happened> {
    let repo = Some(e.repository.clone());
    let by = |t: Target| {
        let mut h = Happened::new("delete", t);
        if let Some(w) = e.who.as_deref().filter(|w| w.starts_with("retention:")) {
            h.actor = Some(w.to_owned());
        }
        h
    };
    if e.kind == "repository" {
        return vec![by(Target { repository: repo, ..Default::default() })];
    }
    let mut out = Vec::new();
    for d in e.manifests.iter().chain(&e.layers) {
        out.push(by(Target { digest: Some(d.clone()), repository: repo.clone(), ..Default::default() }));
    }
    for t in e.tags.keys() {
        out.push(by(Target { repository: repo.clone(), tag: Some(t.clone()), ..Default::default() }));
    }
    out
}

/// Berth's own: a trash entry restored (`restore`) or purged (`purge`; `expired` when the
/// trash's retention ran out).
pub fn trash_event(action: &'static str, e: &Entry, expired: bool) -> Happened {
    let mut h = Happened::new(action, Target { repository: Some(e.repository.clone()), ..Default::default() });
    h.berth = Some(json!({
        "trashID": e.id,
        "kind": e.kind,
        "tags": e.tags,
        "manifests": e.manifests,
        "bytesFreed": e.bytes_freed,
        "expired": expired,
    }));
    if expired {
        h.actor = Some("trash-expiry".to_owned());
    }
    h
}

/// Berth's own: a GC run (nothing for a dry run).
pub fn gc_event(r: &GcResult) -> Vec<Happened> {
    if r.dry_run {
        return Vec::new();
    }
    let mut h = Happened::new("gc", Target::default());
    h.berth = Some(json!({
        "bytesFreed": r.bytes_freed,
        "blobs": r.blobs,
        "manifests": r.manifests.len(),
        "repositories": r.repositories.len(),
        "uploads": r.uploads,
    }));
    vec![h]
}

/// A retention run's deletes (nothing for a dry run), as [`deleted`] announces them.
pub fn retained(r: &RetentionResult) -> Vec<Happened> {
    if r.dry_run {
        return Vec::new();
    }
    let mut out = Vec::new();
    for repo in &r.repositories {
        let actor = format!("retention:{}", repo.policy);
        let repository = Some(repo.repository.clone());
        let gone = repo
            .manifests
            .iter()
            .map(|m| Target { digest: Some(m.digest.clone()), repository: repository.clone(), ..Default::default() })
            .chain(repo.tags.iter().filter(|t| !t.kept).map(|t| Target {
                repository: repository.clone(),
                tag: Some(t.tag.clone()),
                ..Default::default()
            }));
        for t in gone {
            let mut h = Happened::new("delete", t);
            h.actor = Some(actor.clone());
            out.push(h);
        }
    }
    out
}
