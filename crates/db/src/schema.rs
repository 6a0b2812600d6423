//! The schema, as numbered migrations compiled into the binary.
//!
//! `berth db migrate` applies the missing ones in one transaction under an advisory lock, so
//! two replicas migrating at once do not both apply one. Every start checks the schema: a
//! replica refuses to run on a database that was never migrated, is behind, or was migrated by
//! a newer Berth (whose tables it would misread or leave out of step).

use postgres::GenericClient;

use crate::error::{DbError, Result};

/// One migration.
#[derive(Debug)]
pub struct Migration {
    /// Its number; applied in order, each once.
    pub version: i32,
    /// What it is for.
    pub name: &'static str,
    /// Its SQL.
    pub sql: &'static str,
}

/// Every migration this Berth knows, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "coordination", sql: include_str!("../migrations/0001_coordination.sql") },
    Migration { version: 2, name: "invalidation", sql: include_str!("../migrations/0002_invalidation.sql") },
    Migration { version: 3, name: "index", sql: include_str!("../migrations/0003_index.sql") },
];

/// The newest schema this Berth knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Where a database's schema stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchemaState {
    /// Never migrated.
    Empty,
    /// Migrated up to `version`, which this Berth knows to be `latest`.
    At {
        /// The newest applied migration.
        version: i32,
        /// The newest migration this Berth has.
        latest: i32,
    },
}

/// The advisory lock `migrate` holds (key pair: Berth's class, 0).
const MIGRATE_LOCK: (i32, i32) = (crate::schema::LOCK_CLASS_MIGRATE, 0);
pub(crate) const LOCK_CLASS_MIGRATE: i32 = 0x4265_7200;

const CREATE_SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS berth_schema (
    version    int PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())";

fn applied(c: &mut impl GenericClient) -> Result<Option<i32>> {
    let exists: bool = c.query_one("SELECT to_regclass('berth_schema') IS NOT NULL", &[])?.get(0);
    if !exists {
        return Ok(None);
    }
    Ok(c.query_one("SELECT max(version) FROM berth_schema", &[])?.get::<_, Option<i32>>(0))
}

/// Where the schema stands.
pub fn state(c: &mut impl GenericClient) -> Result<SchemaState> {
    Ok(match applied(c)? {
        None => SchemaState::Empty,
        Some(version) => SchemaState::At { version, latest: latest() },
    })
}

/// Fails unless the schema is exactly the newest this Berth knows.
pub fn check(c: &mut impl GenericClient) -> Result<()> {
    match applied(c)? {
        None => Err(DbError::NotMigrated),
        Some(v) if v < latest() => Err(DbError::Behind { found: v, needed: latest() }),
        Some(v) if v > latest() => Err(DbError::Ahead { found: v, known: latest() }),
        Some(_) => Ok(()),
    }
}

/// Applies what is missing, all or nothing; returns what it applied.
pub fn migrate(c: &mut postgres::Client) -> Result<Vec<&'static Migration>> {
    let mut tx = c.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&MIGRATE_LOCK.0, &MIGRATE_LOCK.1])?;
    tx.batch_execute(CREATE_SCHEMA_TABLE)?;
    let found = applied(&mut tx)?.unwrap_or(0);
    if found > latest() {
        return Err(DbError::Ahead { found, known: latest() });
    }
    let mut done = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        tx.batch_execute(m.sql)?;
        tx.execute("INSERT INTO berth_schema (version, name) VALUES ($1, $2)", &[&m.version, &m.name])?;
        done.push(m);
    }
    tx.commit()?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_numbered_from_one_without_gaps() {
        for (i, m) in super::MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "{}", m.name);
            assert!(!m.sql.trim().is_empty());
        }
    }
}
