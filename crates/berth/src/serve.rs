//! `berth serve`: resolves settings, opens the root, serves until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use berth_registry::Registry;
use berth_server::AppState;
use berth_server::admin::wire;
use berth_server::notify::{self, Notifier};
use berth_storage::StorageConfig;

use crate::cli::ServeArgs;
use crate::config::FileConfig;

/// Settings after flags, environment, file and defaults are merged.
#[derive(Debug)]
pub struct Settings {
    /// Where the registry stores (the filesystem, or an S3 bucket).
    pub storage: StorageConfig,
    /// Blob GETs redirect to the object store (S3, unless `storage.redirect.disable`).
    pub redirect: bool,
    pub addr: String,
    pub delete_enabled: bool,
    pub max_manifest_bytes: usize,
    pub max_blob_bytes: Option<u64>,
    pub log_level: String,
    pub trash_retention: std::time::Duration,
    pub gc: berth_registry::GcOptions,
    pub gc_interval: Option<std::time::Duration>,
    /// `http.headers`, added to every answer.
    pub headers: Vec<(String, String)>,
    /// Config keys Berth does not use, logged once at start.
    pub ignored: Vec<String>,
    /// `http.tls`, when TLS is on.
    pub tls: Option<berth_server::tls::TlsSettings>,
    /// Access control (`auth:`, `access:`); `None`: open.
    pub auth: Option<Arc<berth_server::auth::Auth>>,
    /// `ui.enabled`
    pub ui: bool,
    /// `database:`: several replicas coordinated through PostgreSQL.
    pub database: Option<berth_db::DbConfig>,
    /// `retention:`: the policies.
    pub retention: berth_registry::Retention,
    /// How often the server runs them (`None`: on demand only, or no policies).
    pub retention_interval: Option<std::time::Duration>,
    /// `notifications:`; `None`: no enabled endpoint.
    pub notifications: Option<berth_server::notify::Settings>,
}

impl Settings {
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Settings> {
        let file = match &args.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        file.refuse_restrictions()?;
        let defaults = berth_registry::Config::default();
        Ok(Settings {
            storage: file.storage(args.root.clone(), file.berth.fsync.unwrap_or(true))?,
            redirect: file.redirect(),
            addr: args.addr.clone().or(file.http.addr.clone()).unwrap_or_else(|| ":5000".to_owned()),
            delete_enabled: file.storage.delete.enabled.unwrap_or(true),
            max_manifest_bytes: file.berth.max_manifest_bytes.unwrap_or(defaults.max_manifest_bytes),
            max_blob_bytes: file.berth.max_blob_bytes,
            log_level: args.log_level.clone().or(file.log.level.clone()).unwrap_or_else(|| "info".to_owned()),
            trash_retention: file.trash_retention()?,
            gc: file.gc()?.0,
            gc_interval: file.gc()?.1,
            headers: file
                .http
                .headers
                .iter()
                .flat_map(|(name, values)| values.iter().map(move |v| (name.clone(), v.clone())))
                .collect(),
            tls: file.tls()?,
            auth: file.auth()?.map(Arc::new),
            ui: file.ui.enabled.unwrap_or(true),
            database: file.database()?,
            retention: file.retention()?.0,
            retention_interval: file.retention()?.1,
            notifications: file.notifications()?,
            ignored: file.ignored,
        })
    }
}

/// Binds `addr`; `:PORT` means every interface, as in Distribution.
async fn bind(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    if let Some(port) = addr.strip_prefix(':') {
        let port: u16 = port.parse().with_context(|| format!("bad port in {addr:?}"))?;
        // Dual-stack first; a host without IPv6 gets IPv4 only.
        if let Ok(l) = tokio::net::TcpListener::bind(SocketAddr::from(([0u16; 8], port))).await {
            return Ok(l);
        }
        return tokio::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port)))
            .await
            .with_context(|| format!("binding {addr}"));
    }
    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))
}

/// Warns, once, when a secret file can be read by other users: Distribution setups often leave
/// them so, and refusing to start would break switching in place.
pub(crate) fn warn_if_readable_by_others(what: &str, path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path)
        && m.permissions().mode() & 0o004 != 0
    {
        tracing::warn!(file = %path.display(), "{what} is readable by every user of this machine; chmod o-r it");
    }
}

pub fn run(settings: Settings) -> anyhow::Result<()> {
    let storage = settings.storage.clone();
    let backend = storage.open().with_context(|| format!("opening storage root {}", storage.describe()))?;
    let tls = match &settings.tls {
        Some(t) => {
            warn_if_readable_by_others("the TLS private key (http.tls.key)", &t.key);
            Some(Arc::new(berth_server::tls::Tls::load(t.clone()).map_err(anyhow::Error::msg)?))
        }
        None => None,
    };
    // The synchronous PostgreSQL client runs its own small runtime: it is started, and
    // finally dropped, outside the server's (never on an async worker thread).
    let coordination = match &settings.database {
        Some(db) => {
            let me = format!("berth serve (pid {}, {} on {})", std::process::id(), settings.addr, hostname());
            let c = berth_db::PgCoordination::start(db, &me)
                .with_context(|| format!("opening the database {}", db.describe()))?;
            Some(Arc::new(c))
        }
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let coord = coordination.clone();
    let served = runtime.block_on(async move {
        let listener = bind(&settings.addr).await?;
        let local = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        // With a database, several replicas serve one root and coordinate through it; without
        // one, this process must be the only one.
        let me = format!("berth serve (pid {}, {scheme}://{local})", std::process::id());
        let (_lock, _replicas) = match &settings.database {
            Some(db) => match storage.replicas_lease(&format!("replicas coordinated through {}", db.describe()))? {
                Ok(lease) => (None, Some(lease)),
                Err(holder) => bail!(
                    "{holder} is using {} without the database; refusing to serve it beside it",
                    storage.describe()
                ),
            },
            None => match storage.lock(&me)? {
                Ok(lock) => (Some(lock), None),
                Err(holder) => bail!("{holder} is using {}; refusing to serve it twice", storage.describe()),
            },
        };
        let config = berth_registry::Config {
            max_manifest_bytes: settings.max_manifest_bytes,
            max_blob_bytes: settings.max_blob_bytes,
            trash_retention: settings.trash_retention,
            untagged: settings.gc.untagged,
        };
        // Events are stored under the root, so a restart delivers what its predecessor had
        // not. One server holds a root alone and has one outbox; replicas have one each,
        // named by machine and port (a replica restarted elsewhere leaves its own behind).
        let notify = match &settings.notifications {
            Some(n) => {
                let owner = match &settings.database {
                    None => "server".to_owned(),
                    Some(_) => format!("{}:{}", hostname(), local.port()),
                };
                let source = format!("{}:{}", hostname(), local.port());
                let notifier = berth_server::notify::Notifier::start(backend.clone(), n, &owner, &source)
                    .map_err(anyhow::Error::msg)
                    .context("starting notifications")?;
                for e in &n.endpoints {
                    tracing::info!(endpoint = %e.name, url = %berth_server::notify::redacted(&e.url), timeout = ?e.timeout, threshold = e.threshold, backoff = ?e.backoff, "notifications go to this endpoint");
                }
                Some(notifier)
            }
            None => None,
        };
        let registry = Arc::new(match &coord {
            Some(c) => c.clone().registry(backend, config),
            None => Registry::new(backend, config),
        });
        let state = AppState {
            registry: registry.clone(),
            metrics: Default::default(),
            delete_enabled: settings.delete_enabled,
            gc: settings.gc.clone(),
            headers: berth_server::response_headers(&settings.headers).map_err(anyhow::Error::msg).context("http.headers")?,
            auth: settings.auth.clone(),
            ui: settings.ui.then(|| Arc::new(berth_server::ui::Ui::new(tls.is_some()))),
            redirect: settings.redirect && matches!(storage, StorageConfig::S3(_)),
            retention: Arc::new(settings.retention.clone()),
            notify: notify.clone(),
            tls: tls.is_some(),
        };
        if let Some(probe) = storage.probe_conditional_writes() {
            match probe {
                Ok(true) => tracing::info!("the object store honours conditional writes (Berth does not rely on them)"),
                Ok(false) => tracing::info!("the object store ignores conditional writes (If-None-Match); Berth does not rely on them"),
                Err(e) => tracing::warn!(error = %e, "could not probe the object store for conditional writes"),
            }
        }
        tokio::spawn(expire_trash(registry.clone(), settings.trash_retention, notify.clone()));
        tokio::spawn(flush_pulls(registry.clone()));
        if let Some(every) = settings.retention_interval {
            if settings.delete_enabled {
                tokio::spawn(scheduled_retention(registry.clone(), state.retention.clone(), every, notify.clone()));
            } else {
                tracing::warn!("retention policies are configured but deletes are disabled (storage.delete.enabled: false); they will not run");
            }
        }
        if let Some(every) = settings.gc_interval {
            tokio::spawn(scheduled_gc(registry, settings.gc.clone(), every, notify.clone()));
        }
        if !settings.ignored.is_empty() {
            tracing::warn!(keys = %settings.ignored.join(", "), "config keys Berth does not use (ignored)");
        }
        tracing::info!(addr = %local, storage = %storage.describe(), delete_enabled = settings.delete_enabled, tls = tls.is_some(), ui = settings.ui, "berth listening on {local}");
        if let Some(tls) = tls.clone() {
            tokio::spawn(reload_tls_on_sighup(tls));
        }
        let registry = state.registry.clone();
        berth_server::serve(listener, state, tls, shutdown_signal()).await?;
        // What was pulled since the last flush survives the stop.
        if let Err(e) = tokio::task::spawn_blocking(move || registry.flush_pulls()).await? {
            tracing::warn!(error = %e, "could not store the last pull times");
        }
        if let Some(n) = notify {
            tokio::task::spawn_blocking(move || n.flush()).await?;
        }
        tracing::info!("berth stopped");
        Ok(())
    });
    // Tasks still holding the registry go with the runtime; then the database goes.
    drop(runtime);
    drop(coordination);
    served
}

/// How often recorded pulls are stored: a crash loses at most this much of them.
const PULLS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Stores recorded pull times every [`PULLS_EVERY`].
async fn flush_pulls(registry: Arc<Registry>) {
    let mut tick = tokio::time::interval(PULLS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let reg = registry.clone();
        match tokio::task::spawn_blocking(move || reg.flush_pulls()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "storing pull times failed; retried at the next flush"),
            Err(e) => tracing::error!(error = %e, "the pull-times task failed"),
        }
    }
}

/// This machine's name, for the replicas table.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
}

/// Purges expired trash entries, checking a few times per retention period (at least every
/// minute, at most every second).
async fn expire_trash(registry: Arc<Registry>, retention: std::time::Duration, notify: Option<Arc<Notifier>>) {
    if retention.is_zero() {
        return;
    }
    let every = (retention / 4).clamp(std::time::Duration::from_secs(1), std::time::Duration::from_secs(60));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let (reg, n) = (registry.clone(), notify.clone());
        let expire = move || {
            let expired = reg.trash_expire(std::time::SystemTime::now())?;
            if let Some(n) = n {
                n.record_blocking(
                    expired.iter().map(|e| notify::trash_event("purge", &wire::Entry::new(e, None), true)).collect(),
                );
            }
            Ok::<_, berth_registry::RegistryError>(expired)
        };
        match tokio::task::spawn_blocking(expire).await {
            Ok(Ok(expired)) => {
                for e in expired {
                    tracing::info!(id = %e.id, repository = %e.repository, bytes = e.bytes_freed, "trash entry expired");
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "expiring trash entries failed"),
            Err(e) => tracing::error!(error = %e, "trash expiry task failed"),
        }
    }
}

/// Ticks every `every`, the first time one interval from now; a run that overruns delays the
/// next rather than bunching them.
fn schedule(every: std::time::Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Runs GC every `every`, the first time one interval after start.
async fn scheduled_gc(
    registry: Arc<Registry>,
    opts: berth_registry::GcOptions,
    every: std::time::Duration,
    notify: Option<Arc<Notifier>>,
) {
    let mut tick = schedule(every);
    loop {
        tick.tick().await;
        let reg = registry.clone();
        // Several replicas each keep this schedule; the GC lock makes their runs one at a time,
        // and a run that finds one finished within half an interval (on any replica: the
        // history is in the bucket) does nothing.
        let o = berth_registry::GcOptions { unless_ran_within: Some(every / 2), ..opts.clone() };
        let n = notify.clone();
        let run = move || {
            let r = reg.gc(&o, &|_| {})?;
            if let Some(n) = n.filter(|_| !r.skipped) {
                n.record_blocking(notify::gc_event(&wire::GcResult::new(&r)));
            }
            Ok::<_, berth_registry::RegistryError>(r)
        };
        match tokio::task::spawn_blocking(run).await {
            Ok(Ok(r)) if r.skipped => {
                tracing::info!("scheduled GC skipped: a GC finished recently (on this or another replica)")
            }
            Ok(Ok(r)) => tracing::info!(
                blobs = r.blobs,
                bytes = r.bytes_freed,
                manifests = r.manifests.len(),
                repositories = r.repositories.len(),
                uploads = r.uploads,
                seconds = r.duration.as_secs_f64(),
                "scheduled GC done"
            ),
            Ok(Err(e)) => tracing::error!(error = %e, "scheduled GC failed"),
            Err(e) => tracing::error!(error = %e, "scheduled GC task failed"),
        }
    }
}

/// Runs the retention policies every `every`, the first time one interval after start. Each
/// run is logged per repository with what went and what it frees; a dry run logs the same and
/// deletes nothing.
async fn scheduled_retention(
    registry: Arc<Registry>,
    policies: Arc<berth_registry::Retention>,
    every: std::time::Duration,
    notify: Option<Arc<Notifier>>,
) {
    let mut tick = schedule(every);
    loop {
        tick.tick().await;
        let (reg, p, n) = (registry.clone(), policies.clone(), notify.clone());
        let run = move || {
            let repos = reg.retention(&p.policies, None, p.dry_run, std::time::SystemTime::now())?;
            if let Some(n) = n {
                n.record_blocking(notify::retained(&wire::RetentionResult::new(p.dry_run, &repos)));
            }
            Ok::<_, berth_registry::RegistryError>(repos)
        };
        match tokio::task::spawn_blocking(run).await {
            Ok(Ok(repos)) => {
                for r in repos {
                    // The registry logged a repository's failure; the others went on.
                    if r.error.is_some() {
                        continue;
                    }
                    let dropped: Vec<String> =
                        r.tags.iter().filter(|(_, f)| !f.kept()).map(|(t, _)| t.to_string()).collect();
                    if dropped.is_empty() && r.manifests.is_empty() {
                        continue;
                    }
                    tracing::info!(
                        repository = %r.repository,
                        policy = %r.policy,
                        dry_run = policies.dry_run,
                        tags = %dropped.join(","),
                        manifests = r.manifests.len(),
                        bytes = r.bytes_freed,
                        trash_id = r.trash_id.as_ref().map(|i| i.to_string()).unwrap_or_default(),
                        "retention"
                    );
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "scheduled retention failed"),
            Err(e) => tracing::error!(error = %e, "scheduled retention task failed"),
        }
    }
}

/// Re-reads the certificate and key on SIGHUP, so a renewal needs no restart.
async fn reload_tls_on_sighup(tls: Arc<berth_server::tls::Tls>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
    while hup.recv().await.is_some() {
        match tls.reload() {
            Ok(()) => tracing::info!("TLS certificate and key reloaded"),
            Err(e) => tracing::error!(error = %e, "reloading TLS failed; the previous certificate stays in use"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down; finishing requests in flight");
}
