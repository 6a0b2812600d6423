//! The configuration file: CNCF Distribution's `config.yml` keys that Berth understands, plus a
//! `berth:` section of its own. This is one of Berth's serialization boundaries.
//!
//! A file may hold only the keys it changes; everything else has a default. Keys Berth does not
//! know in Distribution's sections are ignored, so an existing `config.yml` loads as it is;
//! unknown keys in the `berth:` section are errors, because there a typo is certainly a mistake.
//! Flags and environment variables override the file (see `cli`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
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

/// Parses a duration such as `7d`, `24h`, `90s` or `0`.
pub fn parse_duration(s: &str) -> anyhow::Result<std::time::Duration> {
    let s = s.trim();
    if s.chars().all(|c| c == '0') && !s.is_empty() {
        return Ok(std::time::Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| anyhow::anyhow!("bad duration {s:?} ({e}); write e.g. 7d, 24h, 90s or 0"))
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
    /// `http.tls`
    pub tls: Option<TlsSection>,
}

/// `http.tls`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TlsSection {
    /// PEM certificate chain.
    pub certificate: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
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
    /// fsync every write before acknowledging it (default true).
    pub fsync: Option<bool>,
}

/// Drivers CNCF Distribution has and Berth does not (yet).
const OTHER_DRIVERS: &[&str] = &["s3", "azure", "gcs", "swift", "oss", "inmemory"];

impl FileConfig {
    /// GC settings (`gc:`), with Distribution's `storage.maintenance.uploadpurging.age` as a
    /// fallback for the upload age; and the interval (`None`: scheduled GC is off).
    pub fn gc(&self) -> anyhow::Result<(berth_registry::GcOptions, Option<std::time::Duration>)> {
        let mut o = berth_registry::GcOptions::default();
        if let Some(g) = &self.gc.grace {
            o.grace = parse_duration(g).context("gc.grace")?;
        }
        if let Some(u) = &self.gc.untagged {
            o.untagged = berth_server::admin::untagged(u).map_err(anyhow::Error::msg).context("gc.untagged")?;
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
        let interval = match self.gc.interval.as_deref().map(str::trim) {
            None => Some(std::time::Duration::from_secs(24 * 3600)),
            Some("off") | Some("never") => None,
            Some(i) => Some(parse_duration(i).context("gc.interval")?).filter(|d| !d.is_zero()),
        };
        Ok((o, interval))
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

    /// Parses config text.
    pub fn parse(text: &str) -> anyhow::Result<FileConfig> {
        let cfg: FileConfig =
            if text.trim().is_empty() { FileConfig::default() } else { serde_yaml_ng::from_str(text)? };
        if let Some(driver) = OTHER_DRIVERS.iter().find(|d| cfg.storage.other.contains_key(**d)) {
            bail!("storage driver {driver:?} is not supported; Berth stores on the filesystem (storage.filesystem)");
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_distribution_config_as_shipped_by_debian() {
        let text = r#"
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
        let cfg = FileConfig::parse(text).unwrap();
        assert_eq!(cfg.http.addr.as_deref(), Some(":5000"));
        assert_eq!(cfg.storage.filesystem.unwrap().rootdirectory.unwrap(), PathBuf::from("/var/lib/docker-registry"));
        assert_eq!(cfg.storage.delete.enabled, Some(true));
    }

    #[test]
    fn a_file_may_hold_only_what_it_changes() {
        let cfg = FileConfig::parse("storage:\n  delete:\n    enabled: false\n").unwrap();
        assert_eq!(cfg.storage.delete.enabled, Some(false));
        assert!(cfg.http.addr.is_none());
        assert!(FileConfig::parse("").is_ok());
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
        let e = FileConfig::parse("storage:\n  s3:\n    bucket: x\n").unwrap_err();
        assert!(e.to_string().contains("s3"), "{e}");
    }
}
