//! `EventStore` and its positions over SQLite: a batch's events and dead letters and the moved
//! position, in one `BEGIN IMMEDIATE` transaction fenced like PostgreSQL's.
//! STUB (helper W fills it).

use actors::domain::batch::Batch;
use actors::ports::{EventStore, StoreError};
use async_trait::async_trait;

use super::SqliteDb;

/// The one writer of the embedded store's `logs`.
pub struct SqliteEventStore {
    #[allow(dead_code)]
    db: SqliteDb,
}

impl SqliteEventStore {
    pub fn new(db: SqliteDb) -> SqliteEventStore {
        SqliteEventStore { db }
    }
}

#[async_trait]
impl EventStore for SqliteEventStore {
    async fn write(&mut self, _batch: &Batch) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("SqliteEventStore is not written yet".into()))
    }

    fn reset(&mut self) {}
}
