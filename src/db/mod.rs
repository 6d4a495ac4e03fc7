//! PostgreSQL adapters: the diesel schema, migrations, partitions, and the pool used for queries.

pub mod event_store;
pub mod migrate;
pub mod offset_store;
pub mod schema;

use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::AsyncPgConnection;

/// The diesel-async connection pool.
pub type PgPool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;

/// Builds the query pool. Connections are made lazily, so a database that is down at start is not fatal.
pub async fn pool(url: &str, size: u32) -> anyhow::Result<PgPool> {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
    let pool = bb8::Pool::builder()
        .max_size(size)
        .min_idle(Some(0))
        .connection_timeout(std::time::Duration::from_secs(2))
        .build(manager)
        .await?;
    Ok(pool)
}
