//! PostgreSQL adapters: the diesel schema, migrations, partitions, and the pool used for queries.

pub mod daily_jobs;
pub mod event_store;
pub mod idempotency;
pub mod migrate;
pub mod offset_store;
pub mod ranking;
pub mod rejects;
pub mod schema;
pub mod search;
pub mod stats;
pub mod summary;
pub mod tail;

use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::AsyncPgConnection;

/// The diesel-async connection pool.
pub type PgPool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;

/// Builds the query pool; every statement on it stops after `timeout`. Connections are made lazily,
/// so a database that is down at start is not fatal.
pub fn pool(url: &str, size: u32, timeout: std::time::Duration) -> PgPool {
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}options=-c%20statement_timeout%3D{}", timeout.as_millis());
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
    bb8::Pool::builder().max_size(size).min_idle(Some(0)).connection_timeout(timeout).build_unchecked(manager)
}
