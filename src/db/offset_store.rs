//! The PostgreSQL OffsetStore: each partition's stored next offset (`kafka_offsets`), through diesel-async.

use std::collections::BTreeMap;

use actors::ports::{OffsetStore, StoreError};
use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::schema::kafka_offsets;

/// Connects per call: offsets are read only when partitions are assigned.
pub struct PgOffsetStore {
    url: String,
}

impl PgOffsetStore {
    pub fn new(url: impl Into<String>) -> PgOffsetStore {
        PgOffsetStore { url: url.into() }
    }
}

#[async_trait]
impl OffsetStore for PgOffsetStore {
    async fn load(&self, topic: &str, partitions: &[i32]) -> Result<BTreeMap<i32, i64>, StoreError> {
        let failed = |e: &dyn std::fmt::Display| StoreError::Unavailable(format!("loading stored offsets: {e}"));
        let mut conn = AsyncPgConnection::establish(&self.url).await.map_err(|e| failed(&e))?;
        let fresh: Vec<_> = partitions
            .iter()
            .map(|p| {
                (kafka_offsets::topic.eq(topic), kafka_offsets::partition.eq(*p), kafka_offsets::next_offset.eq(0_i64))
            })
            .collect();
        diesel::insert_into(kafka_offsets::table)
            .values(&fresh)
            .on_conflict_do_nothing()
            .execute(&mut conn)
            .await
            .map_err(|e| failed(&e))?;
        let rows: Vec<(i32, i64)> = kafka_offsets::table
            .filter(kafka_offsets::topic.eq(topic))
            .filter(kafka_offsets::partition.eq_any(partitions))
            .select((kafka_offsets::partition, kafka_offsets::next_offset))
            .load(&mut conn)
            .await
            .map_err(|e| failed(&e))?;
        Ok(rows.into_iter().collect())
    }
}
