//! `OffsetStore` over SQLite (`kafka_offsets`, `offset_gaps`). STUB (helper W fills it).

use std::collections::BTreeMap;

use actors::ports::{OffsetStore, StoreError};
use async_trait::async_trait;

use super::SqliteDb;

pub struct SqliteOffsetStore {
    #[allow(dead_code)]
    db: SqliteDb,
}

impl SqliteOffsetStore {
    pub fn new(db: SqliteDb) -> SqliteOffsetStore {
        SqliteOffsetStore { db }
    }
}

#[async_trait]
impl OffsetStore for SqliteOffsetStore {
    async fn load(&self, _topic: &str, _partitions: &[i32]) -> Result<BTreeMap<i32, i64>, StoreError> {
        Err(StoreError::Unavailable("SqliteOffsetStore is not written yet".into()))
    }

    async fn record_gap(&self, _topic: &str, _partition: i32, _from: i64, _to: i64) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable("SqliteOffsetStore is not written yet".into()))
    }
}
