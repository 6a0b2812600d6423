//! PostgreSQL for several Berth replicas on one bucket: what they must agree on that the bucket
//! cannot decide (Garage ignores conditional writes, so no object can serve as a lock).
//!
//! - `config`: the `database:` section resolved into a connection configuration;
//! - `error`: [`DbError`];
//! - `schema`: the migrations, applied by `berth db migrate` and checked at every start (a
//!   replica never runs on a schema it does not know);
//! - `pool`: [`Db`], the connection pool every other module borrows from;
//! - `coord`: [`PgCoordination`], the registry's `Coordination` kept in PostgreSQL;
//! - `watch`: [`Indexed`], the store wrapped so that every write to it is recorded in the
//!   metadata index;
//! - `index`: [`PgIndex`], the registry's `MetaIndex` read from those rows, and reconciled
//!   with a listing of the bucket.
//!
//! Architecture invariant: the database holds coordination and derived data only. The bucket
//! alone stays a valid Distribution root; everything here can be rebuilt from it or is
//! transient (locks, leases, touches). Nothing here knows HTTP.

mod config;
mod coord;
mod error;
mod index;
mod pool;
mod schema;
mod watch;
#[cfg(feature = "testserver")]
pub mod testserver;

pub use config::{DbConfig, Keys, SslMode};
pub use coord::{HEARTBEAT, LEASE, PgCoordination};
pub use error::{DbError, Result};
pub use index::{PgIndex, RECONCILE_MARGIN};
pub use pool::Db;
pub use schema::{MIGRATIONS, Migration, SchemaState, latest as latest_schema};
pub use watch::Indexed;
