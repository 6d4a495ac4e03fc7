//! Embedded migrations and the daily partitions of `logs`.

use anyhow::{anyhow, Context};
use chrono::{Days, NaiveDate};
use diesel::sql_types::Date;
use diesel::Connection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::AsyncPgConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

/// The SQL of `migrations/postgres/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Arbitrary key of the advisory lock that serializes concurrent `migrate` runs.
const MIGRATION_LOCK_KEY: i64 = 0x6c6f_6761_6e61_6c79;

/// Applies pending migrations; returns the versions applied. Several processes may race here safely.
pub async fn run_migrations(database_url: &str) -> anyhow::Result<Vec<String>> {
    let url = database_url.to_owned();
    // The migration harness is synchronous: keep it off the async workers.
    tokio::task::spawn_blocking(move || {
        use diesel::RunQueryDsl;
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)
            .context("connecting to PostgreSQL to migrate")?;
        diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")).execute(&mut conn)?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(ToString::to_string).collect::<Vec<_>>())
            .map_err(|e| anyhow!("applying migrations: {e}"));
        diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")).execute(&mut conn)?;
        applied
    })
    .await?
}

/// Creates the daily partitions of `logs` for `first..=last` that do not exist yet; returns how many
/// were created.
pub async fn ensure_partitions(
    conn: &mut AsyncPgConnection,
    first: NaiveDate,
    last: NaiveDate,
) -> anyhow::Result<usize> {
    use diesel_async::RunQueryDsl;

    #[derive(diesel::QueryableByName)]
    struct Created {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        created: bool,
    }

    let mut created = 0;
    let mut day = first;
    while day <= last {
        let row: Created = diesel::sql_query("SELECT ensure_logs_partition($1) AS created")
            .bind::<Date, _>(day)
            .get_result(conn)
            .await
            .with_context(|| format!("creating the logs partition for {day}"))?;
        created += usize::from(row.created);
        day = day.checked_add_days(Days::new(1)).ok_or_else(|| anyhow!("date overflow"))?;
    }
    Ok(created)
}
