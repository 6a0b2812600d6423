//! [`Db`]: a pool of connections to one database, and the one place connections come from.

use postgres::NoTls;
use r2d2_postgres::PostgresConnectionManager;

use crate::config::DbConfig;
use crate::error::Result;
use crate::schema;

/// A borrowed connection; back to the pool when dropped.
pub type Conn = r2d2::PooledConnection<PostgresConnectionManager<NoTls>>;

/// A pool of connections to Berth's database.
#[derive(Clone)]
pub struct Db {
    pool: r2d2::Pool<PostgresConnectionManager<NoTls>>,
    config: DbConfig,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("at", &self.config.describe()).finish()
    }
}

impl Db {
    /// Connects (one connection now, so a wrong address or password fails here), without
    /// looking at the schema.
    pub fn connect(config: &DbConfig) -> Result<Db> {
        let manager = PostgresConnectionManager::new(config.pg().clone(), NoTls);
        let pool = r2d2::Pool::builder()
            .max_size(config.max_open)
            .min_idle(Some(1))
            .connection_timeout(config.connect_timeout)
            // A connection the server dropped (a restart) is found out before it is handed on.
            .test_on_check_out(true)
            .error_handler(Box::new(LogErrors))
            .build(manager)?;
        Ok(Db { pool, config: config.clone() })
    }

    /// Connects and checks that the schema is the one this Berth knows (see
    /// [`schema::check`]).
    pub fn open(config: &DbConfig) -> Result<Db> {
        let db = Db::connect(config)?;
        schema::check(&mut *db.conn()?)?;
        Ok(db)
    }

    /// A connection from the pool, waiting at most the connection timeout.
    pub fn conn(&self) -> Result<Conn> {
        Ok(self.pool.get()?)
    }

    /// Where it points (no password).
    pub fn describe(&self) -> String {
        self.config.describe()
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &DbConfig {
        &self.config
    }

    /// Applies every migration not yet applied; returns those it applied.
    pub fn migrate(&self) -> Result<Vec<&'static schema::Migration>> {
        schema::migrate(&mut *self.conn()?)
    }

    /// Where the schema stands.
    pub fn schema_state(&self) -> Result<schema::SchemaState> {
        schema::state(&mut *self.conn()?)
    }
}

/// Logs failed connection attempts once each, without the password (the error never holds it).
#[derive(Debug)]
struct LogErrors;

impl r2d2::HandleError<postgres::Error> for LogErrors {
    fn handle_error(&self, error: postgres::Error) {
        tracing::warn!(error = %crate::DbError::from(error), "connecting to PostgreSQL failed");
    }
}
