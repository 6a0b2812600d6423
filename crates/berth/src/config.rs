//! The configuration file: CNCF Distribution's `config.yml` keys that Berth understands, plus
//! sections of its own (`berth:`, `trash:`, `gc:`). This is one of Berth's serialization
//! boundaries.
//!
//! A file may hold only the keys it changes; everything else has a default. Every key of a
//! Distribution file is classified by [`classify`] before anything else is read:
//!
//! - keys Berth takes are used;
//! - keys that would make Distribution **restrict access** and that Berth cannot honour
//!   (`auth`, Let's Encrypt and cipher-suite choices in `http.tls`, a non-TCP `http.net`,
//!   read-only mode, access middleware, manifest URL rules, proxy mode, other storage drivers)
//!   are refused: `berth serve` stops at start naming the key, because serving
//!   such a file open would be a silent security downgrade;
//! - every other key is ignored and listed, so the operator sees in one log line what Berth did
//!   not take (see [`FileConfig::ignored`]).
//!
//! Unknown keys in Berth's own sections are errors, because there a typo is certainly a
//! mistake. Flags and environment variables override the file (see `cli`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use berth_storage::StorageConfig;
use serde::Deserialize;

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct FileConfig {
    /// Distribution's `version: 0.1`; accepted and ignored.
    pub version: Option<serde_yaml_ng::Value>,
    /// `log:`
    pub log: LogSection,
    /// `http:`
    pub http: HttpSection,
    /// `storage:`
    pub storage: StorageSection,
    /// `berth:`
    pub berth: BerthSection,
    /// `trash:`
    pub trash: TrashSection,
    /// `gc:`
    pub gc: GcSection,
    /// `auth:`
    pub auth: AuthSection,
    /// `access:` (Berth's own): who may do what where.
    pub access: Option<AccessSection>,
    /// `ui:` (Berth's own): the web UI.
    pub ui: UiSection,
    /// `database:` (GitLab container registry's keys): PostgreSQL, for several replicas.
    pub database: DatabaseSection,
    /// `retention:` (Berth's own, modelled on zot's): which tags go automatically.
    pub retention: RetentionSection,
    /// `notifications:` (Distribution's keys, plus `outbox`).
    pub notifications: NotificationsSection,
    /// Keys of the file that Berth does not use, dotted (`notifications`, `http.secret`).
    #[serde(skip)]
    pub ignored: Vec<String>,
    /// Keys that would restrict access under Distribution and that Berth cannot honour, each
    /// with the reason; `berth serve` refuses to start while any is present.
    #[serde(skip)]
    pub refused: Vec<(String, &'static str)>,
}

/// `database:`: GitLab container registry's keys, or one `url`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DatabaseSection {
    /// `enabled`: the section is used only when true, as in GitLab's registry.
    pub enabled: Option<bool>,
    /// `url`: `postgres://user:password@host:port/dbname?sslmode=…` instead of the keys.
    pub url: Option<String>,
    /// `host`
    pub host: Option<String>,
    /// `port` (a number, or a string holding one)
    pub port: Option<serde_yaml_ng::Value>,
    /// `user`
    pub user: Option<String>,
    /// `password`
    pub password: Option<String>,
    /// `dbname`
    pub dbname: Option<String>,
    /// `sslmode`
    pub sslmode: Option<String>,
    /// `connecttimeout` (a duration)
    pub connecttimeout: Option<String>,
    /// `pool:`
    pub pool: DatabasePool,
}

/// `database.pool:`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DatabasePool {
    /// `maxopen`: connections per process (0: the default).
    pub maxopen: Option<u32>,
}

/// `auth:`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AuthSection {
    /// `auth.htpasswd`
    pub htpasswd: Option<HtpasswdSection>,
    /// `auth.token`
    pub token: Option<TokenSection>,
}

/// `auth.token`: an external token server's tokens.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TokenSection {
    /// Where clients get tokens (named in the challenge).
    pub realm: Option<String>,
    /// This registry's name: tokens must be issued for it (`aud`).
    pub service: Option<String>,
    /// Who issues tokens (`iss`).
    pub issuer: Option<String>,
    /// PEM certificates whose keys sign tokens.
    pub rootcertbundle: Option<PathBuf>,
    /// A JWK set of keys that sign tokens.
    pub jwks: Option<PathBuf>,
    /// The JWS algorithms accepted.
    pub signingalgorithms: Vec<String>,
}

/// `auth.htpasswd`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HtpasswdSection {
    /// `auth.htpasswd.realm`: named in the challenge.
    pub realm: Option<String>,
    /// `auth.htpasswd.path`: the file, bcrypt entries only.
    pub path: Option<PathBuf>,
}

/// `access:`
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessSection {
    /// Patterns (`team/**`) and their rules.
    pub repositories: BTreeMap<String, RepositoryAccess>,
    /// Users who may do everything, the admin API's writes included.
    pub admins: Vec<String>,
}

/// `access.repositories.<pattern>`
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RepositoryAccess {
    /// Users and their actions.
    pub policies: Vec<AccessPolicy>,
    /// Actions of any signed-in user no policy names.
    pub default: Vec<String>,
    /// Actions of callers who did not sign in.
    pub anonymous: Vec<String>,
}

/// `access.repositories.<pattern>.policies[]`
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessPolicy {
    /// User names.
    pub users: Vec<String>,
    /// `pull`, `push`, `delete`, `*`.
    pub actions: Vec<String>,
}

/// `gc:`
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcSection {
    /// `gc.interval`: how often the server collects, e.g. `24h`; `off` (or `0`) for never.
    /// Default 24h.
    pub interval: Option<String>,
    /// `gc.grace`: unreferenced blobs younger than this, or touched within it, stay. Default 1h.
    pub grace: Option<String>,
    /// `gc.untagged`: `keep`, or how long a manifest may stay untagged. Default 24h.
    pub untagged: Option<String>,
    /// `gc.uploads`
    pub uploads: UploadsSection,
}

/// `gc.uploads`
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadsSection {
    /// `gc.uploads.maxage`: uploads started longer ago are removed. Default 168h (as
    /// Distribution's `storage.maintenance.uploadpurging.age`, which is read when this is absent).
    pub maxage: Option<String>,
}

/// `trash:`
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrashSection {
    /// `trash.retention`: how long deletes stay restorable, e.g. `7d`, `12h`; `0` turns the
    /// trash off (deletes are final). Default 7 days.
    pub retention: Option<String>,
}

/// `notifications:`
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsSection {
    /// `endpoints`: where events go.
    pub endpoints: Vec<EndpointSection>,
    /// `events.includereferences`
    pub events: NotifyEventsSection,
    /// `outbox.maxevents` (Berth's own): events held at most before the oldest are dropped.
    pub outbox: OutboxSection,
}

/// `notifications.events`
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyEventsSection {
    /// Manifest events list what the manifest references.
    pub includereferences: Option<bool>,
}

/// `notifications.outbox`
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxSection {
    /// Default 100000.
    pub maxevents: Option<u64>,
}

/// One of `notifications.endpoints`, with Distribution's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointSection {
    pub name: Option<String>,
    pub disabled: Option<bool>,
    pub url: Option<String>,
    pub headers: BTreeMap<String, Vec<String>>,
    /// A duration (`500ms`) or, as Go reads it, a number of nanoseconds. Default 1s.
    pub timeout: Option<serde_yaml_ng::Value>,
    /// Failures in a row before backing off. Default 10.
    pub threshold: Option<u32>,
    /// Default 1s.
    pub backoff: Option<serde_yaml_ng::Value>,
    pub ignoredmediatypes: Vec<String>,
    pub ignore: IgnoreSection,
}

/// `notifications.endpoints[].ignore`
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IgnoreSection {
    pub mediatypes: Vec<String>,
    pub actions: Vec<String>,
}

/// A Go `time.Duration` as YAML gives it: a string such as `500ms`, or nanoseconds.
fn go_duration(v: &serde_yaml_ng::Value) -> anyhow::Result<std::time::Duration> {
    match v {
        serde_yaml_ng::Value::String(s) => parse_duration(s),
        serde_yaml_ng::Value::Number(n) => {
            n.as_u64().map(std::time::Duration::from_nanos).context("not a whole number of nanoseconds")
        }
        other => bail!("{other:?} is not a duration"),
    }
}

/// `retention:`
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSection {
    /// `retention.interval`: how often the server runs the policies (default 24h); `off`: only
    /// on demand (`berth retention`, `POST /api/retention`).
    pub interval: Option<String>,
    /// `retention.dryrun`: report and log what would go, delete nothing.
    pub dryrun: Option<bool>,
    /// `retention.policies`: the one with the most specific pattern matching a repository
    /// applies to it (the first among equally specific ones).
    pub policies: Vec<PolicySection>,
}

/// One of `retention.policies`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySection {
    /// `name`: what the audit log calls it (`retention:<name>`); its index when absent.
    pub name: Option<String>,
    /// `repositories`: globs, as in `access:`.
    pub repositories: Vec<String>,
    /// `deleteuntagged`: a duration (untagged for longer than this), or `false`.
    pub deleteuntagged: Option<serde_yaml_ng::Value>,
    /// `deletereferrers`: referrers whose subject is gone go.
    pub deletereferrers: Option<bool>,
    /// `keeptags`: a tag is kept if any rule keeps it.
    pub keeptags: Vec<KeepTagsSection>,
}

/// One of a policy's `keeptags` rules.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeepTagsSection {
    /// `patterns`: regular expressions; the rule looks at tags matching any (all when absent).
    pub patterns: Vec<String>,
    /// `mostrecentlypushedcount`
    pub mostrecentlypushedcount: Option<usize>,
    /// `mostrecentlypulledcount`
    pub mostrecentlypulledcount: Option<usize>,
    /// `pulledwithin`
    pub pulledwithin: Option<String>,
    /// `pushedwithin`
    pub pushedwithin: Option<String>,
}

/// `ui:`
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UiSection {
    /// `ui.enabled`: serve the web UI at `/ui/` (default true). It has the registry's users and
    /// rights, so turning it off takes nothing away from access control.
    pub enabled: Option<bool>,
}

/// A byte count written as a number or a string of digits (Distribution accepts both).
fn byte_count(v: &serde_yaml_ng::Value) -> anyhow::Result<u64> {
    match v {
        serde_yaml_ng::Value::Number(n) => n.as_u64().context("not a whole number of bytes"),
        serde_yaml_ng::Value::String(s) => s.trim().parse().context("not a whole number of bytes"),
        _ => bail!("not a number of bytes"),
    }
}

/// Credentials from the AWS environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`) or the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE` or
/// `~/.aws/credentials`, profile `AWS_PROFILE` or `default`), as Distribution's SDK finds them.
fn aws_credentials() -> anyhow::Result<(String, String, Option<String>)> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let (Some(a), Some(s)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Ok((a, s, env("AWS_SESSION_TOKEN")));
    }
    let file = env("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")));
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let text = file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()).unwrap_or_default();
    let (mut section, mut key, mut secret, mut token) = (String::new(), None, None, None);
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_owned();
        } else if section == profile
            && let Some((k, v)) = line.split_once('=')
        {
            let v = Some(v.trim().to_owned());
            match k.trim() {
                "aws_access_key_id" => key = v,
                "aws_secret_access_key" => secret = v,
                "aws_session_token" => token = v,
                _ => {}
            }
        }
    }
    match (key, secret) {
        (Some(k), Some(s)) => Ok((k, s, token)),
        _ => bail!(
            "storage.s3 has no accesskey/secretkey, and neither AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY nor profile {profile:?} of {} gives credentials",
            file.map_or("~/.aws/credentials".into(), |f| f.display().to_string())
        ),
    }
}

/// Parses a duration such as `7d`, `24h`, `90s` or `0` (the registry's one parser).
pub fn parse_duration(s: &str) -> anyhow::Result<std::time::Duration> {
    berth_registry::parse_duration(s).map_err(anyhow::Error::msg)
}

/// A schedule (`gc.interval`, `retention.interval`): `None` when `off`, `never` or zero; daily
/// when absent.
fn schedule(v: Option<&str>, key: &str) -> anyhow::Result<Option<std::time::Duration>> {
    Ok(match v.map(str::trim) {
        None => Some(std::time::Duration::from_secs(24 * 3600)),
        Some("off") | Some("never") => None,
        Some(i) => Some(parse_duration(i).with_context(|| key.to_owned())?).filter(|d| !d.is_zero()),
    })
}

/// `log:`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LogSection {
    /// `log.level`: error, warn, info, debug.
    pub level: Option<String>,
}

/// `http:`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HttpSection {
    /// `http.addr`, such as `:5000` or `127.0.0.1:5000`.
    pub addr: Option<String>,
    /// `http.headers`: headers added to every answer (Debian's file sets
    /// `X-Content-Type-Options: nosniff`), as Distribution does.
    pub headers: BTreeMap<String, Vec<String>>,
    /// `http.tls`
    pub tls: Option<TlsSection>,
}

/// `http.tls`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TlsSection {
    /// `http.tls.certificate`: PEM certificate chain.
    pub certificate: Option<PathBuf>,
    /// `http.tls.key`: PEM private key.
    pub key: Option<PathBuf>,
    /// `http.tls.clientcas`: PEM authorities client certificates must chain to.
    pub clientcas: Vec<PathBuf>,
    /// `http.tls.minimumtls`: `tls1.2` (default) or `tls1.3`.
    pub minimumtls: Option<String>,
}

/// `storage:`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StorageSection {
    /// `storage.filesystem`
    pub filesystem: Option<FilesystemSection>,
    /// `storage.delete`
    pub delete: DeleteSection,
    /// Other drivers and options (`cache`, `maintenance`, `s3`, …).
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml_ng::Value>,
}

/// `storage.s3`: Distribution's keys (numbers may be written as strings, as Distribution
/// accepts them).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct S3Section {
    pub bucket: Option<String>,
    pub region: Option<String>,
    pub regionendpoint: Option<String>,
    pub accesskey: Option<String>,
    pub secretkey: Option<String>,
    pub sessiontoken: Option<String>,
    pub rootdirectory: Option<String>,
    pub forcepathstyle: Option<bool>,
    pub secure: Option<bool>,
    pub skipverify: Option<bool>,
    pub chunksize: Option<serde_yaml_ng::Value>,
    pub multipartcopythresholdsize: Option<serde_yaml_ng::Value>,
}

/// `storage.filesystem`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct FilesystemSection {
    /// `storage.filesystem.rootdirectory`
    pub rootdirectory: Option<PathBuf>,
}

/// `storage.delete`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeleteSection {
    /// `storage.delete.enabled`. Berth's default is `true`: the trash makes deletes undoable.
    pub enabled: Option<bool>,
}

/// `berth:`
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BerthSection {
    /// Largest manifest accepted, in bytes (default 4 MiB).
    pub max_manifest_bytes: Option<usize>,
    /// Largest blob accepted, in bytes (default: no limit but the disk). A larger upload is
    /// refused with 413 as soon as it crosses the limit, and its data removed.
    pub max_blob_bytes: Option<u64>,
    /// fsync every write before acknowledging it (default true).
    pub fsync: Option<bool>,
}

/// What Berth does with one key of a Distribution config file.
#[derive(Debug, PartialEq, Eq)]
enum Disposition {
    /// Berth reads it.
    Used,
    /// A section: look at each key inside.
    Descend,
    /// Berth does not use it; harmless to leave out.
    Ignored,
    /// It would restrict access under Distribution and Berth cannot honour it.
    Refused(&'static str),
}

/// Drivers CNCF Distribution has and Berth does not (yet).
const OTHER_DRIVERS: &[&str] = &["azure", "gcs", "swift", "oss", "inmemory"];

fn is_set(v: &serde_yaml_ng::Value) -> bool {
    match v {
        serde_yaml_ng::Value::Null => false,
        serde_yaml_ng::Value::Mapping(m) => m.values().any(is_set),
        serde_yaml_ng::Value::Sequence(s) => !s.is_empty(),
        serde_yaml_ng::Value::String(s) => !s.trim().is_empty(),
        _ => true,
    }
}

/// Classifies the key at dotted `path` holding `v` (see the module docs). A section that is
/// present but empty (`auth:` with nothing below) restricts nothing in Distribution either.
fn classify(path: &str, v: &serde_yaml_ng::Value) -> Disposition {
    use Disposition::*;
    let restricting = |why| if is_set(v) { Refused(why) } else { Used };
    match path {
        "version"
        | "log.level"
        | "http.addr"
        | "http.headers"
        | "storage.filesystem.rootdirectory"
        | "storage.delete.enabled"
        | "storage.maintenance.uploadpurging.age"
        | "berth"
        | "trash"
        | "gc"
        | "ui"
        | "retention"
        | "notifications" => Used,
        // Berth's Location headers are always relative.
        "http.relativeurls" => Used,
        "log"
        | "http"
        | "storage"
        | "storage.filesystem"
        | "storage.delete"
        | "storage.maintenance"
        | "storage.maintenance.uploadpurging"
        | "storage.maintenance.readonly"
        | "storage.s3"
        | "storage.redirect"
        | "middleware"
        | "validation"
        | "validation.manifests" => Descend,
        "auth" => Descend,
        "auth.htpasswd" => Used,
        "database" | "database.pool" => Descend,
        "database.enabled"
        | "database.url"
        | "database.host"
        | "database.port"
        | "database.user"
        | "database.password"
        | "database.dbname"
        | "database.sslmode"
        | "database.connecttimeout"
        | "database.pool.maxopen" => Used,
        "database.sslcert" | "database.sslkey" | "database.sslrootcert" => {
            restricting("TLS to PostgreSQL is not supported yet; Berth would connect without these certificates")
        }
        "auth.token" => Descend,
        "auth.token.realm"
        | "auth.token.service"
        | "auth.token.issuer"
        | "auth.token.rootcertbundle"
        | "auth.token.jwks"
        | "auth.token.signingalgorithms" => Used,
        "auth.silly" => restricting("silly auth lets anyone in; it is for development only and not supported"),
        "access" => Used,
        "http.tls" => Descend,
        "http.tls.certificate" | "http.tls.key" | "http.tls.clientcas" | "http.tls.minimumtls" => Used,
        "http.tls.letsencrypt" => restricting("Let's Encrypt is not supported; give http.tls.certificate and key"),
        "http.tls.ciphersuites" => {
            restricting("choosing cipher suites is not supported; Berth uses rustls' defaults, all of them modern")
        }
        "http.net" => match v.as_str().map(str::trim) {
            None | Some("") | Some("tcp") => Used,
            Some(_) => Refused("Berth listens on TCP only; serving a unix socket's registry on TCP would expose it"),
        },
        "proxy" => restricting(
            "pull-through cache mode is not supported; Berth would serve a writable registry instead of a read-only mirror",
        ),
        "storage.maintenance.readonly.enabled" => match v.as_bool() {
            Some(true) => Refused("read-only mode is not supported; Berth would accept pushes and deletes"),
            _ => Used,
        },
        "middleware.registry" | "middleware.repository" => {
            restricting("middleware is not supported; what it would enforce would not be enforced")
        }
        "validation.manifests.urls" => {
            restricting("manifest URL rules are not supported; Berth would accept manifests this file means to refuse")
        }
        "storage.s3.bucket"
        | "storage.s3.region"
        | "storage.s3.regionendpoint"
        | "storage.s3.accesskey"
        | "storage.s3.secretkey"
        | "storage.s3.sessiontoken"
        | "storage.s3.rootdirectory"
        | "storage.s3.forcepathstyle"
        | "storage.s3.secure"
        | "storage.s3.skipverify"
        | "storage.s3.chunksize"
        | "storage.s3.multipartcopythresholdsize"
        | "storage.s3.v4auth"
        | "storage.redirect.disable" => Used,
        "storage.s3.encrypt" => match v.as_bool() {
            Some(true) => Refused(
                "server-side encryption (storage.s3.encrypt) is not supported yet; Berth would write unencrypted objects",
            ),
            _ => Used,
        },
        "storage.s3.keyid" => {
            restricting("KMS keys (storage.s3.keyid) are not supported yet; Berth would write objects without them")
        }
        "storage.s3.objectacl" => match v.as_str().map(str::trim) {
            None | Some("") | Some("private") => Used,
            Some(_) => Refused(
                "object ACLs other than private are not supported; Berth writes objects with the bucket's default",
            ),
        },
        p if p.strip_prefix("storage.").is_some_and(|d| OTHER_DRIVERS.contains(&d)) => Refused(
            "this storage driver is not supported; Berth stores on the filesystem (storage.filesystem) or S3 (storage.s3)",
        ),
        _ => Ignored,
    }
}

/// Walks a parsed file, sorting every key into `ignored` and `refused`.
fn audit_keys(
    prefix: &str,
    v: &serde_yaml_ng::Value,
    ignored: &mut Vec<String>,
    refused: &mut Vec<(String, &'static str)>,
) {
    let Some(map) = v.as_mapping() else { return };
    for (k, child) in map {
        let key = match k {
            serde_yaml_ng::Value::String(s) => s.clone(),
            other => serde_yaml_ng::to_string(other).unwrap_or_default().trim().to_owned(),
        };
        let path = if prefix.is_empty() { key } else { format!("{prefix}.{key}") };
        match classify(&path, child) {
            Disposition::Used => {}
            Disposition::Descend => audit_keys(&path, child, ignored, refused),
            Disposition::Ignored => ignored.push(path),
            Disposition::Refused(why) => refused.push((path, why)),
        }
    }
}

impl FileConfig {
    /// GC settings (`gc:`), with Distribution's `storage.maintenance.uploadpurging.age` as a
    /// fallback for the upload age; and the interval (`None`: scheduled GC is off).
    pub fn gc(&self) -> anyhow::Result<(berth_registry::GcOptions, Option<std::time::Duration>)> {
        let mut o = berth_registry::GcOptions::default();
        if let Some(g) = &self.gc.grace {
            o.grace = parse_duration(g).context("gc.grace")?;
        }
        if let Some(u) = &self.gc.untagged {
            o.untagged = u.parse().map_err(anyhow::Error::msg).context("gc.untagged")?;
        }
        let purging_age = self
            .storage
            .other
            .get("maintenance")
            .and_then(|m| m.get("uploadpurging"))
            .and_then(|p| p.get("age"))
            .and_then(|a| a.as_str().map(str::to_owned));
        if let Some(a) = self.gc.uploads.maxage.clone().or(purging_age) {
            o.upload_max_age = parse_duration(&a).context("gc.uploads.maxage")?;
        }
        Ok((o, schedule(self.gc.interval.as_deref(), "gc.interval")?))
    }

    /// Where to store: `storage.s3` when the file has it, else the filesystem root from
    /// `root` (a flag or the environment), `storage.filesystem.rootdirectory`, or `./data`.
    pub fn storage(&self, root: Option<PathBuf>, fsync: bool) -> anyhow::Result<StorageConfig> {
        let Some(s3) = self.storage.other.get("s3").filter(|v| !v.is_null()) else {
            let root = root
                .or_else(|| self.storage.filesystem.as_ref().and_then(|f| f.rootdirectory.clone()))
                .unwrap_or_else(|| PathBuf::from("./data"));
            return Ok(StorageConfig::Filesystem { root, fsync });
        };
        if let Some(r) = root {
            bail!("the config stores on S3 (storage.s3); a filesystem root ({}) cannot be given too", r.display());
        }
        if self.storage.filesystem.as_ref().is_some_and(|f| f.rootdirectory.is_some()) {
            bail!("storage.filesystem and storage.s3 are both set; choose one");
        }
        let section: S3Section = serde_yaml_ng::from_value(s3.clone()).context("storage.s3")?;
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let bucket = section.bucket.clone().context("storage.s3.bucket is required")?;
        let region = section
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .context("storage.s3.region is required (or AWS_REGION)")?;
        let (access, secret, token) = match (&section.accesskey, &section.secretkey) {
            (Some(a), Some(s)) => (a.clone(), s.clone(), section.sessiontoken.clone()),
            (None, None) => aws_credentials()?,
            _ => bail!(
                "storage.s3 needs both accesskey and secretkey, or neither (then the AWS environment or credentials file)"
            ),
        };
        let mut o = berth_storage::S3Options::new(&bucket, &region, &access, &secret);
        o.session_token = token;
        o.endpoint = section.regionendpoint.clone().filter(|e| !e.trim().is_empty());
        o.root = section.rootdirectory.clone().unwrap_or_default().trim_matches('/').to_owned();
        o.path_style = section.forcepathstyle.unwrap_or(false);
        o.secure = section.secure.unwrap_or(true);
        o.skip_verify = section.skipverify.unwrap_or(false);
        if let Some(v) = &section.chunksize {
            o.chunk_size = byte_count(v).context("storage.s3.chunksize")?;
        }
        if let Some(v) = &section.multipartcopythresholdsize {
            o.copy_threshold = byte_count(v).context("storage.s3.multipartcopythresholdsize")?;
        }
        Ok(StorageConfig::S3(Box::new(o)))
    }

    /// The database (`database:` with `enabled: true`), if any.
    pub fn database(&self) -> anyhow::Result<Option<berth_db::DbConfig>> {
        let d = &self.database;
        if d.enabled != Some(true) {
            return Ok(None);
        }
        let config = match &d.url {
            Some(url) => {
                if d.host.is_some() || d.user.is_some() || d.dbname.is_some() || d.port.is_some() {
                    bail!("database: give url or host/port/user/dbname, not both");
                }
                berth_db::DbConfig::from_url(url)?
            }
            None => {
                let port = match &d.port {
                    None => None,
                    Some(v) => Some(
                        v.as_u64()
                            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                            .and_then(|p| u16::try_from(p).ok())
                            .context("database.port must be a port number")?,
                    ),
                };
                berth_db::DbConfig::from_keys(&berth_db::Keys {
                    host: d.host.clone(),
                    port,
                    user: d.user.clone(),
                    password: d.password.clone(),
                    dbname: d.dbname.clone(),
                    sslmode: d.sslmode.clone(),
                })?
            }
        };
        let mut config = config.with_max_open(d.pool.maxopen.unwrap_or(0));
        if let Some(t) = &d.connecttimeout {
            config = config.with_connect_timeout(parse_duration(t).context("database.connecttimeout")?);
        }
        Ok(Some(config))
    }

    /// Whether blob GETs on an object store redirect to the store (`storage.redirect.disable`
    /// not set): Distribution's default.
    pub fn redirect(&self) -> bool {
        let disabled = self
            .storage
            .other
            .get("redirect")
            .and_then(|r| r.get("disable"))
            .is_some_and(|d| d.as_bool() == Some(true) || d.as_str().is_some_and(|s| s.trim() == "true"));
        !disabled
    }

    /// The retention policies (`retention:`) and how often to run them (`None`: on demand
    /// only). No section: no policies, and nothing is ever removed by retention.
    pub fn retention(&self) -> anyhow::Result<(berth_registry::Retention, Option<std::time::Duration>)> {
        let r = &self.retention;
        let mut policies = Vec::new();
        for (i, p) in r.policies.iter().enumerate() {
            let at = format!("retention.policies[{i}]");
            if p.repositories.is_empty() {
                bail!("{at}.repositories: a policy must say which repositories it applies to (\"**\" for all)");
            }
            let repositories = p
                .repositories
                .iter()
                .map(|g| g.parse().map_err(|e| anyhow::anyhow!("{at}.repositories: {g:?}: {e}")))
                .collect::<anyhow::Result<_>>()?;
            let delete_untagged = match &p.deleteuntagged {
                None | Some(serde_yaml_ng::Value::Null) | Some(serde_yaml_ng::Value::Bool(false)) => None,
                Some(serde_yaml_ng::Value::String(d)) => {
                    Some(parse_duration(d).with_context(|| format!("{at}.deleteuntagged"))?)
                }
                Some(other) => bail!("{at}.deleteuntagged: {other:?} is neither a duration (24h) nor false"),
            };
            let mut keep_tags = Vec::new();
            for (j, k) in p.keeptags.iter().enumerate() {
                let at = format!("{at}.keeptags[{j}]");
                let within = |v: &Option<String>, key: &str| -> anyhow::Result<Option<std::time::Duration>> {
                    v.as_deref().map(parse_duration).transpose().with_context(|| format!("{at}.{key}"))
                };
                keep_tags.push(berth_registry::KeepRule {
                    patterns: k
                        .patterns
                        .iter()
                        .map(|re| regex::Regex::new(re).with_context(|| format!("{at}.patterns: {re:?}")))
                        .collect::<anyhow::Result<_>>()?,
                    most_recently_pushed: k.mostrecentlypushedcount,
                    most_recently_pulled: k.mostrecentlypulledcount,
                    pulled_within: within(&k.pulledwithin, "pulledwithin")?,
                    pushed_within: within(&k.pushedwithin, "pushedwithin")?,
                });
            }
            policies.push(berth_registry::RetentionPolicy {
                name: p.name.clone().unwrap_or_else(|| i.to_string()),
                repositories,
                delete_untagged,
                delete_referrers: p.deletereferrers.unwrap_or(false),
                keep_tags,
            });
        }
        let interval = schedule(r.interval.as_deref(), "retention.interval")?.filter(|_| !policies.is_empty());
        Ok((berth_registry::Retention { policies, dry_run: r.dryrun.unwrap_or(false) }, interval))
    }

    /// The notification endpoints that are not disabled (`None`: none, notifications off).
    pub fn notifications(&self) -> anyhow::Result<Option<berth_server::notify::Settings>> {
        let n = &self.notifications;
        let mut endpoints: Vec<berth_server::notify::Endpoint> = Vec::new();
        for (i, e) in n.endpoints.iter().enumerate() {
            let at = format!("notifications.endpoints[{i}]");
            let name = e.name.clone().unwrap_or_else(|| i.to_string());
            if e.disabled == Some(true) {
                tracing::info!(endpoint = %name, "notification endpoint disabled");
                continue;
            }
            let url =
                e.url.clone().filter(|u| !u.trim().is_empty()).with_context(|| format!("{at}.url is required"))?;
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.parse::<ureq::http::Uri>().is_err() {
                bail!("{at}.url: {url:?} is not an http:// or https:// URL");
            }
            for (h, values) in &e.headers {
                check_header(h, values).with_context(|| format!("{at}.headers"))?;
            }
            let key = berth_server::notify::key_safe(&name);
            if endpoints.iter().any(|o| o.key == key) {
                bail!(
                    "{at}.name: {name:?} is the name of another endpoint (names keep each endpoint's place in the outbox)"
                );
            }
            let dur = |v: &Option<serde_yaml_ng::Value>, k: &str| -> anyhow::Result<std::time::Duration> {
                let d = match v {
                    Some(v) => go_duration(v).with_context(|| format!("{at}.{k}"))?,
                    None => std::time::Duration::ZERO,
                };
                // Distribution's defaults for anything not above zero.
                Ok(if d.is_zero() { std::time::Duration::from_secs(1) } else { d })
            };
            endpoints.push(berth_server::notify::Endpoint {
                name,
                key,
                url,
                headers: e.headers.iter().flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.clone()))).collect(),
                timeout: dur(&e.timeout, "timeout")?,
                threshold: e.threshold.filter(|t| *t > 0).unwrap_or(10),
                backoff: dur(&e.backoff, "backoff")?,
                ignored_media_types: e.ignoredmediatypes.iter().chain(&e.ignore.mediatypes).cloned().collect(),
                ignored_actions: e.ignore.actions.clone(),
            });
        }
        if endpoints.is_empty() {
            return Ok(None);
        }
        let max_events = n.outbox.maxevents.unwrap_or(100_000);
        if max_events == 0 {
            bail!("notifications.outbox.maxevents must be at least 1");
        }
        Ok(Some(berth_server::notify::Settings {
            endpoints,
            include_references: n.events.includereferences.unwrap_or(false),
            max_events,
        }))
    }

    /// `trash.retention`, or the default of 7 days.
    pub fn trash_retention(&self) -> anyhow::Result<std::time::Duration> {
        match &self.trash.retention {
            Some(r) => parse_duration(r).context("trash.retention"),
            None => Ok(berth_registry::Config::default().trash_retention),
        }
    }

    /// Reads and checks a config file.
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        FileConfig::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses config text, classifying every key (see the module docs).
    pub fn parse(text: &str) -> anyhow::Result<FileConfig> {
        if text.trim().is_empty() {
            return Ok(FileConfig::default());
        }
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)?;
        if !value.is_mapping() && !value.is_null() {
            bail!("the config file must be a YAML mapping of sections");
        }
        let (mut ignored, mut refused) = (Vec::new(), Vec::new());
        audit_keys("", &value, &mut ignored, &mut refused);
        // From the text, not the value: a bare `retention: 0` must read as the string "0".
        let mut cfg: FileConfig = serde_yaml_ng::from_str(text)?;
        for (name, values) in &cfg.http.headers {
            check_header(name, values)?;
        }
        cfg.ignored = ignored;
        cfg.refused = refused;
        Ok(cfg)
    }

    /// TLS settings from `http.tls`, if the section asks for TLS.
    pub fn tls(&self) -> anyhow::Result<Option<berth_server::tls::TlsSettings>> {
        let Some(t) = &self.http.tls else { return Ok(None) };
        if t.certificate.is_none() && t.key.is_none() && t.clientcas.is_empty() && t.minimumtls.is_none() {
            return Ok(None);
        }
        let (Some(certificate), Some(key)) = (&t.certificate, &t.key) else {
            bail!("http.tls needs both certificate and key");
        };
        let min_version = match &t.minimumtls {
            Some(v) => berth_server::tls::MinVersion::parse(v).map_err(anyhow::Error::msg)?,
            None => Default::default(),
        };
        Ok(Some(berth_server::tls::TlsSettings {
            certificate: certificate.clone(),
            key: key.clone(),
            client_cas: t.clientcas.clone(),
            min_version,
        }))
    }

    /// Access control from `auth:` and `access:`, if the file asks for it. The htpasswd file
    /// must load (bcrypt entries only) or the server does not start.
    pub fn auth(&self) -> anyhow::Result<Option<berth_server::auth::Auth>> {
        use berth_server::auth::{Auth, Authenticator, htpasswd::Htpasswd, policy};
        let policy = match &self.access {
            None => None,
            Some(a) => {
                let repos = a
                    .repositories
                    .iter()
                    .map(|(p, r)| {
                        let spec = policy::RuleSpec {
                            policies: r.policies.iter().map(|p| (p.users.clone(), p.actions.clone())).collect(),
                            default: r.default.clone(),
                            anonymous: r.anonymous.clone(),
                        };
                        (p.clone(), spec)
                    })
                    .collect();
                Some(policy::Policy::new(&repos, &a.admins).map_err(anyhow::Error::msg)?)
            }
        };
        if let Some(t) = &self.auth.token {
            if self.auth.htpasswd.is_some() {
                bail!("auth: give htpasswd or token, not both (a registry has one way to sign in)");
            }
            let settings = berth_server::auth::token::TokenSettings {
                realm: t.realm.clone().unwrap_or_default(),
                service: t.service.clone().unwrap_or_default(),
                issuer: t.issuer.clone().unwrap_or_default(),
                rootcertbundle: t.rootcertbundle.clone(),
                jwks: t.jwks.clone(),
                algorithms: t.signingalgorithms.clone(),
            };
            let token = berth_server::auth::token::TokenAuth::load(&settings).map_err(anyhow::Error::msg)?;
            return Ok(Some(Auth::new(Authenticator::Token(token), policy)));
        }
        let Some(h) = &self.auth.htpasswd else {
            if policy.is_some() {
                bail!("access: needs an auth: section to say who the users are (auth.htpasswd or auth.token)");
            }
            return Ok(None);
        };
        let path = h.path.as_ref().context("auth.htpasswd.path is missing")?;
        crate::serve::warn_if_readable_by_others("the htpasswd file (auth.htpasswd.path)", path);
        let realm = h.realm.clone().unwrap_or_else(|| "berth".to_owned());
        let file = Htpasswd::load(path, &realm).map_err(anyhow::Error::msg)?;
        Ok(Some(Auth::new(Authenticator::Htpasswd(file), policy)))
    }

    /// Fails naming the first key that would restrict access and that Berth cannot honour.
    pub fn refuse_restrictions(&self) -> anyhow::Result<()> {
        match self.refused.first() {
            Some((key, why)) => bail!("config key {key}: {why}; refusing to start rather than serve it unprotected"),
            None => Ok(()),
        }
    }
}

/// Checks an `http.headers` entry is a valid header name with valid values.
fn check_header(name: &str, values: &[String]) -> anyhow::Result<()> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        bail!("http.headers: {name:?} is not a valid header name");
    }
    if let Some(v) = values.iter().find(|v| v.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f)) {
        bail!("http.headers.{name}: {v:?} is not a valid header value");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = r#"
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/docker-registry
  delete:
    enabled: true
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
auth:
  htpasswd:
    realm: basic-realm
    path: /etc/docker/registry
health:
  storagedriver:
    enabled: true
"#;

    #[test]
    fn loads_distribution_config_as_shipped_by_debian_and_honours_its_auth() {
        let cfg = FileConfig::parse(DEBIAN).unwrap();
        assert_eq!(cfg.http.addr.as_deref(), Some(":5000"));
        assert_eq!(cfg.http.headers["X-Content-Type-Options"], vec!["nosniff".to_owned()]);
        assert_eq!(
            cfg.storage.filesystem.as_ref().unwrap().rootdirectory.as_deref(),
            Some(Path::new("/var/lib/docker-registry"))
        );
        assert_eq!(cfg.storage.delete.enabled, Some(true));
        assert_eq!(cfg.ignored, ["log.fields", "storage.cache", "health"]);
        assert!(cfg.refused.is_empty(), "{:?}", cfg.refused);
        // Its htpasswd file is honoured: here it does not exist, so the server would not start.
        let e = cfg.auth().unwrap_err().to_string();
        assert!(e.contains("auth.htpasswd.path /etc/docker/registry"), "{e}");
        // Without the auth section the same file serves open.
        let open = DEBIAN.replace("auth:\n  htpasswd:\n    realm: basic-realm\n    path: /etc/docker/registry\n", "");
        let open = FileConfig::parse(&open).unwrap();
        open.refuse_restrictions().unwrap();
        assert!(open.auth().unwrap().is_none());
    }

    #[test]
    fn every_key_that_restricts_access_is_refused_and_empty_sections_are_not() {
        let refused = |text: &str| {
            FileConfig::parse(text).unwrap().refused.into_iter().map(|(k, _)| k).collect::<Vec<_>>().join(",")
        };
        let cases: &[(&str, &str)] = &[
            ("auth:\n  token:\n    realm: https://auth.example.com/token\n", ""),
            ("auth:\n  silly:\n    realm: x\n    service: y\n", "auth.silly"),
            ("auth:\n  htpasswd:\n    realm: r\n    path: /p\n", ""),
            ("auth:\n", ""),
            ("auth: {}\n", ""),
            ("http:\n  tls:\n    certificate: /c.pem\n    key: /k.pem\n", ""),
            ("http:\n  tls:\n    clientcas: [/ca.pem]\n", ""),
            ("http:\n  tls:\n    letsencrypt:\n      email: a@b.c\n", "http.tls.letsencrypt"),
            ("http:\n  tls:\n    ciphersuites: [TLS_AES_128_GCM_SHA256]\n", "http.tls.ciphersuites"),
            ("http:\n  net: unix\n  addr: /run/registry.sock\n", "http.net"),
            ("http:\n  net: tcp\n", ""),
            ("proxy:\n  remoteurl: https://registry-1.docker.io\n", "proxy"),
            ("storage:\n  maintenance:\n    readonly:\n      enabled: true\n", "storage.maintenance.readonly.enabled"),
            ("storage:\n  maintenance:\n    readonly:\n      enabled: false\n", ""),
            ("middleware:\n  registry:\n    - name: x\n", "middleware.registry"),
            ("middleware:\n  repository:\n    - name: x\n", "middleware.repository"),
            ("validation:\n  manifests:\n    urls:\n      allow: ['^https?://x/']\n", "validation.manifests.urls"),
            ("storage:\n  azure:\n    accountname: x\n", "storage.azure"),
        ];
        for (text, want) in cases {
            assert_eq!(refused(text), *want, "{text}");
        }
    }

    #[test]
    fn token_auth_needs_its_keys_and_excludes_htpasswd() {
        let auth = |t: &str| FileConfig::parse(t).unwrap().auth().map(|a| a.is_some()).map_err(|e| e.to_string());
        let e = auth("auth:\n  token:\n    realm: https://a/token\n    service: s\n    issuer: i\n").unwrap_err();
        assert!(e.contains("rootcertbundle or jwks"), "{e}");
        let e = auth(
            "auth:\n  token:\n    realm: r\n    service: s\n    issuer: i\n    rootcertbundle: /nonexistent.pem\n",
        )
        .unwrap_err();
        assert!(e.contains("/nonexistent.pem"), "{e}");
        let both = "auth:\n  htpasswd:\n    path: /p\n  token:\n    realm: r\n";
        assert!(auth(both).unwrap_err().contains("not both"));
        let cfg = FileConfig::parse("auth:\n  token:\n    realm: r\n    autoredirect: true\n").unwrap();
        assert_eq!(cfg.ignored, ["auth.token.autoredirect"]);
    }

    #[test]
    fn tls_settings_need_a_certificate_and_a_key() {
        let tls = |t: &str| FileConfig::parse(t).unwrap().tls();
        assert!(tls("").unwrap().is_none());
        assert!(tls("http:\n  tls: {}\n").unwrap().is_none());
        let s = tls("http:\n  tls:\n    certificate: /c.pem\n    key: /k.pem\n    minimumtls: tls1.3\n    clientcas: [/ca.pem]\n")
            .unwrap()
            .unwrap();
        assert_eq!(s.min_version, berth_server::tls::MinVersion::Tls13);
        assert_eq!(s.client_cas, [PathBuf::from("/ca.pem")]);
        assert!(tls("http:\n  tls:\n    certificate: /c.pem\n").unwrap_err().to_string().contains("both"));
        assert!(tls("http:\n  tls:\n    certificate: /c\n    key: /k\n    minimumtls: ssl3\n").is_err());
    }

    #[test]
    fn keys_berth_does_not_use_are_listed() {
        let text =
            "notifications:\n  endpoints: []\nhttp:\n  secret: s\n  debug:\n    addr: :5001\nredis:\n  addr: x\n";
        let cfg = FileConfig::parse(text).unwrap();
        assert_eq!(cfg.ignored, ["http.secret", "http.debug", "redis"]);
        assert!(cfg.refused.is_empty());
    }

    #[test]
    fn notifications_take_distributions_endpoint_keys() {
        use std::time::Duration;
        let text = r#"
notifications:
  events:
    includereferences: true
  endpoints:
    - name: alistener
      url: https://listener.example.com/event
      headers:
        Authorization: [Bearer t]
      timeout: 500ms
      threshold: 5
      backoff: 1000000000
      ignoredmediatypes: [application/octet-stream]
      ignore:
        mediatypes: [application/x]
        actions: [pull]
    - name: off
      disabled: true
      url: http://x
    - url: http://127.0.0.1:9/
"#;
        let n = FileConfig::parse(text).unwrap().notifications().unwrap().unwrap();
        assert!(n.include_references);
        assert_eq!(n.max_events, 100_000);
        assert_eq!(n.endpoints.len(), 2, "the disabled one is left out");
        let e = &n.endpoints[0];
        assert_eq!(e.headers, [("Authorization".to_owned(), "Bearer t".to_owned())]);
        assert_eq!((e.timeout, e.threshold, e.backoff), (Duration::from_millis(500), 5, Duration::from_secs(1)));
        assert_eq!(e.ignored_media_types, ["application/octet-stream", "application/x"]);
        assert_eq!(e.ignored_actions, ["pull"]);
        let d = &n.endpoints[1];
        assert_eq!(
            (d.name.as_str(), d.timeout, d.threshold, d.backoff),
            ("2", Duration::from_secs(1), 10, Duration::from_secs(1))
        );
        assert!(FileConfig::parse("").unwrap().notifications().unwrap().is_none());
        let err = |t: &str| format!("{:#}", FileConfig::parse(t).and_then(|c| c.notifications()).unwrap_err());
        assert!(err("notifications:\n  endpoints:\n    - name: a\n").contains("url is required"));
        assert!(err("notifications:\n  endpoints:\n    - url: ftp://x\n").contains("not an http"));
        assert!(
            err("notifications:\n  endpoints:\n    - url: http://x\n      treshold: 3\n").contains("unknown field")
        );
        assert!(
            err("notifications:\n  endpoints:\n    - {name: a, url: 'http://x'}\n    - {name: a, url: 'http://y'}\n")
                .contains("another endpoint")
        );
        assert!(
            err("notifications:\n  outbox:\n    maxevents: 0\n  endpoints:\n    - url: http://x\n")
                .contains("maxevents")
        );
    }

    #[test]
    fn bad_response_headers_are_refused() {
        assert!(FileConfig::parse("http:\n  headers:\n    \"Bad Name\": [x]\n").is_err());
        assert!(FileConfig::parse("http:\n  headers:\n    X-A: [\"a\\nb\"]\n").is_err());
    }

    #[test]
    fn a_file_may_hold_only_what_it_changes() {
        let cfg = FileConfig::parse("storage:\n  delete:\n    enabled: false\n").unwrap();
        assert_eq!(cfg.storage.delete.enabled, Some(false));
        assert!(cfg.http.addr.is_none());
        assert!(FileConfig::parse("").is_ok());
    }

    #[test]
    fn distributions_s3_section_configures_the_bucket_and_refuses_what_it_cannot_honour() {
        let text = "storage:\n  s3:\n    bucket: reg\n    region: eu-west-1\n    regionendpoint: http://127.0.0.1:3900\n    \
                    accesskey: AK\n    secretkey: \"0001\"\n    rootdirectory: /registry/\n    forcepathstyle: true\n    \
                    secure: false\n    chunksize: \"20971520\"\n    multipartcopythresholdsize: 67108864\n    \
                    storageclass: STANDARD\n  redirect:\n    disable: true\n";
        let cfg = FileConfig::parse(text).unwrap();
        assert!(cfg.refused.is_empty(), "{:?}", cfg.refused);
        assert!(cfg.ignored.contains(&"storage.s3.storageclass".to_owned()), "{:?}", cfg.ignored);
        let StorageConfig::S3(o) = cfg.storage(None, true).unwrap() else { panic!("not S3") };
        assert_eq!((o.bucket.as_str(), o.region.as_str(), o.root.as_str()), ("reg", "eu-west-1", "registry"));
        assert_eq!((o.access_key.as_str(), o.secret_key.as_str()), ("AK", "0001"));
        assert_eq!((o.path_style, o.secure, o.chunk_size, o.copy_threshold), (true, false, 20 << 20, 64 << 20));
        assert_eq!(o.endpoint_url(), "http://127.0.0.1:3900");
        assert!(!cfg.redirect());
        assert!(cfg.storage(Some("/data".into()), true).is_err(), "a filesystem root beside S3 is an error");
        assert!(FileConfig::parse("storage:\n  s3:\n    bucket: reg\n").unwrap().redirect(), "redirects by default");

        for (bad, key) in [
            ("    encrypt: true\n", "storage.s3.encrypt"),
            ("    keyid: arn:aws:kms:x\n", "storage.s3.keyid"),
            ("    objectacl: public-read\n", "storage.s3.objectacl"),
        ] {
            let cfg = FileConfig::parse(&format!("storage:\n  s3:\n    bucket: reg\n{bad}")).unwrap();
            assert_eq!(cfg.refused.first().map(|(k, _)| k.as_str()), Some(key), "{bad}");
        }
        let fine = FileConfig::parse("storage:\n  s3:\n    bucket: reg\n    encrypt: false\n    objectacl: private\n")
            .unwrap();
        assert!(fine.refused.is_empty(), "{:?}", fine.refused);
    }

    #[test]
    fn retention_section_builds_policies_and_names_what_is_wrong() {
        let text = r#"
retention:
  interval: 12h
  dryrun: true
  policies:
    - repositories: ["team/**"]
      deleteuntagged: 24h
      deletereferrers: true
      keeptags:
        - patterns: ['^v[0-9]+$']
          mostrecentlypushedcount: 3
        - pulledwithin: 720h
    - name: rest
      repositories: ["**"]
      deleteuntagged: false
"#;
        let (r, every) = FileConfig::parse(text).unwrap().retention().unwrap();
        assert_eq!(every, Some(std::time::Duration::from_secs(12 * 3600)));
        assert!(r.dry_run);
        let (p0, p1) = (&r.policies[0], &r.policies[1]);
        assert_eq!((p0.name.as_str(), p1.name.as_str()), ("0", "rest"), "unnamed: its index");
        assert_eq!(p0.delete_untagged, Some(std::time::Duration::from_secs(86400)));
        assert!(p0.delete_referrers && p1.delete_untagged.is_none());
        assert_eq!(p0.keep_tags[0].most_recently_pushed, Some(3));
        assert!(p0.keep_tags[0].patterns[0].is_match("v12") && !p0.keep_tags[0].patterns[0].is_match("v1.2"));
        assert_eq!(p0.keep_tags[1].pulled_within, Some(std::time::Duration::from_secs(720 * 3600)));
        // No section: no policies and no schedule; `off`: on demand only.
        let (none, every) = FileConfig::parse("").unwrap().retention().unwrap();
        assert!(none.policies.is_empty() && every.is_none());
        let off = "retention:\n  interval: off\n  policies:\n    - repositories: [a]\n";
        assert_eq!(FileConfig::parse(off).unwrap().retention().unwrap().1, None);
        let err = |t: &str| match FileConfig::parse(t).and_then(|c| c.retention()) {
            Ok(_) => panic!("accepted {t}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err("retention:\n  policies:\n    - keeptags: []\n").contains("repositories"));
        assert!(
            err("retention:\n  policies:\n    - repositories: [a]\n      keeptags:\n        - patterns: ['(']\n")
                .contains("keeptags[0].patterns")
        );
        assert!(
            err("retention:\n  policies:\n    - repositories: [a]\n      keeptags:\n        - mostrecentlypushed: 3\n")
                .contains("unknown field")
        );
        assert!(
            err("retention:\n  policies:\n    - repositories: [a]\n      deleteuntagged: 3\n")
                .contains("deleteuntagged")
        );
        assert!(err("retention:\n  policies:\n    - repositories: ['A/**']\n").contains("repositories"));
    }

    #[test]
    fn trash_retention_parses_durations_and_zero() {
        let r = |t: &str| FileConfig::parse(t).unwrap().trash_retention().unwrap().as_secs();
        assert_eq!(r(""), 7 * 86400);
        assert_eq!(r("trash:\n  retention: 12h\n"), 12 * 3600);
        assert_eq!(r("trash:\n  retention: 0\n"), 0);
        assert_eq!(r("trash:\n  retention: 2s\n"), 2);
        assert!(FileConfig::parse("trash:\n  retention: soon\n").unwrap().trash_retention().is_err());
    }

    #[test]
    fn gc_section_and_distribution_upload_purging() {
        let (o, i) = FileConfig::parse("").unwrap().gc().unwrap();
        assert_eq!((o.grace.as_secs(), i.map(|d| d.as_secs())), (3600, Some(86400)));
        assert_eq!(o.untagged, berth_registry::UntaggedPolicy::OlderThan(std::time::Duration::from_secs(86400)));
        let text = "gc:\n  interval: off\n  grace: 0s\n  untagged: keep\n  uploads:\n    maxage: 2h\n";
        let (o, i) = FileConfig::parse(text).unwrap().gc().unwrap();
        assert_eq!(
            (o.grace.as_secs(), i, o.untagged, o.upload_max_age.as_secs()),
            (0, None, berth_registry::UntaggedPolicy::Keep, 7200)
        );
        let dist = "storage:\n  maintenance:\n    uploadpurging:\n      enabled: true\n      age: 48h\n";
        assert_eq!(FileConfig::parse(dist).unwrap().gc().unwrap().0.upload_max_age.as_secs(), 48 * 3600);
        assert!(FileConfig::parse("gc:\n  untagged: sometimes\n").unwrap().gc().is_err());
    }

    #[test]
    fn rejects_typos_in_berth_section_and_foreign_drivers() {
        assert!(FileConfig::parse("berth:\n  fsnc: false\n").is_err());
        let e = FileConfig::parse("storage:\n  gcs:\n    bucket: x\n").unwrap().refuse_restrictions().unwrap_err();
        assert!(e.to_string().contains("storage.gcs"), "{e}");
    }

    #[test]
    fn the_database_section_takes_gitlabs_keys_or_a_url_and_refuses_tls_it_cannot_do() {
        let keys = "database:\n  enabled: true\n  host: db.internal\n  port: 6432\n  user: registry\n  \
                    password: hunter2\n  dbname: registry\n  sslmode: disable\n  pool:\n    maxopen: 10\n    maxidle: 5\n  \
                    draintimeout: 5s\n";
        let cfg = FileConfig::parse(keys).unwrap();
        assert!(cfg.refused.is_empty(), "{:?}", cfg.refused);
        assert!(cfg.ignored.contains(&"database.pool.maxidle".to_owned()), "{:?}", cfg.ignored);
        assert!(cfg.ignored.contains(&"database.draintimeout".to_owned()), "{:?}", cfg.ignored);
        let db = cfg.database().unwrap().unwrap();
        assert_eq!(db.describe(), "postgres://registry@db.internal:6432/registry");
        assert_eq!(db.max_open, 10);
        let off = FileConfig::parse(&keys.replace("enabled: true", "enabled: false")).unwrap();
        assert!(off.database().unwrap().is_none(), "enabled: false leaves it off, as in GitLab");
        let url = FileConfig::parse("database:\n  enabled: true\n  url: postgres://me@127.0.0.1:5433/berth\n").unwrap();
        assert_eq!(url.database().unwrap().unwrap().describe(), "postgres://me@127.0.0.1:5433/berth");
        let both = FileConfig::parse("database:\n  enabled: true\n  url: postgres://me@h/b\n  host: x\n").unwrap();
        assert!(both.database().is_err());
        let tls = FileConfig::parse(&keys.replace("sslmode: disable", "sslmode: verify-full")).unwrap();
        assert!(format!("{:#}", tls.database().unwrap_err()).contains("needs TLS"));
        let cert = FileConfig::parse(&format!("{keys}  sslcert: /etc/c.pem\n")).unwrap();
        assert_eq!(cert.refused.len(), 1, "{:?}", cert.refused);
        assert!(cert.refuse_restrictions().is_err());
    }

    /// Fuzz target `config`: any config file is read or refused with a reason, never a panic;
    /// one that reads gives settings (or a refusal) without a panic either.
    #[test]
    fn fuzz_config() {
        berth_fuzz::fuzz("config", |input| {
            let Ok(text) = std::str::from_utf8(input) else { return };
            if let Ok(file) = FileConfig::parse(text) {
                let _ = file.database();
                let _ = file.gc();
                let _ = file.trash_retention();
                let _ = file.retention();
                let _ = file.notifications();
            }
        });
    }
}
