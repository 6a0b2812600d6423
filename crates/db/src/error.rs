//! What can go wrong talking to PostgreSQL, in words an operator can act on.

/// A database error.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The server refused, failed or could not be reached.
    #[error("PostgreSQL: {}", describe(.0))]
    Postgres(#[from] postgres::Error),
    /// No connection could be had from the pool in time (the server is down or every
    /// connection is busy).
    #[error("PostgreSQL: no connection within the timeout ({0})")]
    Pool(#[from] r2d2::Error),
    /// The database has never been migrated.
    #[error("the database has no Berth schema; run `berth db migrate` first")]
    NotMigrated,
    /// The database is migrated to an older schema than this Berth needs.
    #[error("the database schema is at version {found}, this Berth needs version {needed}; run `berth db migrate`")]
    Behind {
        /// The newest applied migration.
        found: i32,
        /// The newest this Berth knows.
        needed: i32,
    },
    /// A newer Berth migrated the database: this one would not understand what it finds.
    #[error(
        "the database schema is at version {found}, newer than this Berth knows (version {known}); run a Berth at least as new as the one that migrated it"
    )]
    Ahead {
        /// The newest applied migration.
        found: i32,
        /// The newest this Berth knows.
        known: i32,
    },
    /// The `database:` section cannot be used as written.
    #[error("database: {0}")]
    Config(String),
}

/// A result with [`DbError`].
pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// The server's own message when there is one (`postgres::Error`'s `Display` says only "db
/// error").
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

impl DbError {
    /// Whether the failure is the connection's (the server went away or cannot be reached),
    /// as opposed to something the database refused.
    pub fn is_connection(&self) -> bool {
        match self {
            DbError::Pool(_) => true,
            DbError::Postgres(e) => e.is_closed() || e.as_db_error().is_none(),
            _ => false,
        }
    }
}
