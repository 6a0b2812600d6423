//! The `database:` section, resolved: where PostgreSQL is and how many connections to keep.
//!
//! The keys are GitLab container registry's (`host`, `port`, `user`, `password`, `dbname`,
//! `sslmode`, `connecttimeout`, `pool.maxopen`), or one `url`. TLS to the server is not built
//! yet, so a `sslmode` that demands it (`require`, `verify-ca`, `verify-full`) is refused at
//! start rather than quietly connecting in clear text.

use std::time::Duration;

use crate::error::{DbError, Result};

/// `sslmode`, as libpq spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS if the server insists (Berth: never).
    Allow,
    /// TLS if the server offers it (Berth: never, as libpq without TLS support does).
    Prefer,
}

impl std::str::FromStr for SslMode {
    type Err = DbError;
    fn from_str(s: &str) -> Result<SslMode> {
        match s.trim() {
            "disable" => Ok(SslMode::Disable),
            "allow" => Ok(SslMode::Allow),
            "" | "prefer" => Ok(SslMode::Prefer),
            m @ ("require" | "verify-ca" | "verify-full") => Err(DbError::Config(format!(
                "sslmode {m} needs TLS to PostgreSQL, which Berth does not support yet; connecting in clear text instead would ignore it. Use sslmode disable on a trusted network, or a TLS tunnel"
            ))),
            other => Err(DbError::Config(format!(
                "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
            ))),
        }
    }
}

/// A resolved database configuration.
#[derive(Clone)]
pub struct DbConfig {
    pg: postgres::Config,
    /// At most this many connections per process.
    pub max_open: u32,
    /// How long to wait for a connection (from the pool, or a new one to the server).
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("DbConfig").field("at", &self.describe()).field("max_open", &self.max_open).finish()
    }
}

/// The parts of a configuration given key by key.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    /// `host` (a name, an address, or a folder holding the server's Unix socket).
    pub host: Option<String>,
    /// `port`
    pub port: Option<u16>,
    /// `user`
    pub user: Option<String>,
    /// `password`
    pub password: Option<String>,
    /// `dbname`
    pub dbname: Option<String>,
    /// `sslmode`
    pub sslmode: Option<String>,
}

/// Connections per process unless `pool.maxopen` says otherwise.
pub const DEFAULT_MAX_OPEN: u32 = 32;
/// The connection timeout unless `connecttimeout` says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl DbConfig {
    /// From a `postgres://user:password@host:port/dbname?sslmode=…` URL.
    pub fn from_url(url: &str) -> Result<DbConfig> {
        // The URL's sslmode is checked like the key's, first: the client's parser knows only
        // some of libpq's modes.
        if let Some(mode) = url
            .split_once('?')
            .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("sslmode=")).map(str::to_owned))
        {
            mode.parse::<SslMode>()?;
        }
        let pg: postgres::Config =
            url.parse().map_err(|e| DbError::Config(format!("url is not a PostgreSQL connection URL: {e}")))?;
        Self::finish(pg)
    }

    /// From GitLab's keys.
    pub fn from_keys(k: &Keys) -> Result<DbConfig> {
        let mut pg = postgres::Config::new();
        pg.host(k.host.as_deref().unwrap_or("localhost"));
        pg.port(k.port.unwrap_or(5432));
        pg.user(k.user.as_deref().ok_or_else(|| DbError::Config("user is required".into()))?);
        if let Some(p) = &k.password {
            pg.password(p);
        }
        pg.dbname(k.dbname.as_deref().ok_or_else(|| DbError::Config("dbname is required".into()))?);
        let mode = k.sslmode.as_deref().unwrap_or("prefer").parse::<SslMode>()?;
        pg.ssl_mode(match mode {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Allow | SslMode::Prefer => postgres::config::SslMode::Prefer,
        });
        Self::finish(pg)
    }

    fn finish(mut pg: postgres::Config) -> Result<DbConfig> {
        if pg.get_user().is_none() {
            return Err(DbError::Config("no user given".into()));
        }
        pg.application_name("berth");
        // Locks live as long as their session or transaction: a server that ends idle ones
        // (common on managed PostgreSQL) would drop a sweep's or a push's lock under it.
        pg.options("-c idle_in_transaction_session_timeout=0 -c idle_session_timeout=0");
        pg.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        // A replica whose server vanished without a word (a cut network) must notice, so the
        // locks it held are released and its own requests fail instead of hanging.
        pg.keepalives(true).keepalives_idle(Duration::from_secs(10));
        Ok(DbConfig { pg, max_open: DEFAULT_MAX_OPEN, connect_timeout: DEFAULT_CONNECT_TIMEOUT })
    }

    /// Sets the connection timeout.
    pub fn with_connect_timeout(mut self, t: Duration) -> DbConfig {
        self.connect_timeout = t;
        self.pg.connect_timeout(t);
        self
    }

    /// Sets the pool's size (`pool.maxopen`; 0 means the default).
    pub fn with_max_open(mut self, n: u32) -> DbConfig {
        self.max_open = if n == 0 { DEFAULT_MAX_OPEN } else { n };
        self
    }

    /// The server's configuration, for the client.
    pub(crate) fn pg(&self) -> &postgres::Config {
        &self.pg
    }

    /// Where it points, for logs and errors: `postgres://user@host:port/dbname`, never the
    /// password.
    pub fn describe(&self) -> String {
        let host = match self.pg.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) => h.clone(),
            Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = self.pg.get_ports().first().copied().unwrap_or(5432);
        format!("postgres://{}@{host}:{port}/{}", self.pg.get_user().unwrap_or(""), self.pg.get_dbname().unwrap_or(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_urls_resolve_and_tls_demands_are_refused() {
        let k = Keys {
            host: Some("db.internal".into()),
            port: Some(6432),
            user: Some("registry".into()),
            password: Some("s3cret".into()),
            dbname: Some("registry".into()),
            sslmode: Some("disable".into()),
        };
        let c = DbConfig::from_keys(&k).unwrap();
        assert_eq!(c.describe(), "postgres://registry@db.internal:6432/registry");
        assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
        let u = DbConfig::from_url("postgres://me:pw@127.0.0.1:5433/berth?sslmode=disable").unwrap();
        assert_eq!(u.describe(), "postgres://me@127.0.0.1:5433/berth");
        for mode in ["require", "verify-ca", "verify-full"] {
            let e = DbConfig::from_keys(&Keys { sslmode: Some(mode.into()), ..k.clone() }).unwrap_err();
            assert!(e.to_string().contains("needs TLS"), "{e}");
            let e = DbConfig::from_url(&format!("postgres://me@h/db?sslmode={mode}")).unwrap_err();
            assert!(e.to_string().contains("needs TLS"), "{e}");
        }
        assert!(DbConfig::from_keys(&Keys { sslmode: Some("sometimes".into()), ..k.clone() }).is_err());
        assert!(DbConfig::from_keys(&Keys { user: None, ..k.clone() }).is_err());
        assert!(DbConfig::from_keys(&Keys { dbname: None, ..k }).is_err());
        assert!(DbConfig::from_url("mysql://x").is_err());
    }
}
