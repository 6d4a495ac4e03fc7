//! The embedded store's migrations (`migrations/sqlite/`, compiled into the binary).

use anyhow::anyhow;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::SqliteDb;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Applies pending migrations; returns the versions applied.
pub async fn run_migrations(db: &SqliteDb) -> anyhow::Result<Vec<String>> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = db.connect()?;
        let applied = conn.run_pending_migrations(MIGRATIONS).map_err(|e| anyhow!("applying migrations: {e}"))?;
        Ok(applied.iter().map(ToString::to_string).collect())
    })
    .await?
}
