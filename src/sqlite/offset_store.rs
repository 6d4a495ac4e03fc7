//! `OffsetStore` over SQLite (`kafka_offsets`, `offset_gaps`): where each partition of the embedded
//! queue stands, on a pooled connection (read at start and when a partition restarts).

use std::collections::BTreeMap;

use actors::ports::{OffsetStore, StoreError};
use async_trait::async_trait;
use diesel::prelude::*;
use diesel::SqliteConnection;

use super::tables::{kafka_offsets, offset_gaps};
use super::{micros, SqliteDb};

pub struct SqliteOffsetStore {
    db: SqliteDb,
}

impl SqliteOffsetStore {
    pub fn new(db: SqliteDb) -> SqliteOffsetStore {
        SqliteOffsetStore { db }
    }
}

/// The stored next offset of each of `partitions`, made at 0 where missing, on `conn` (the embedded
/// queue reads them synchronously as it starts).
pub fn load_in(
    conn: &mut SqliteConnection,
    topic: &str,
    partitions: &[i32],
    now_us: i64,
) -> QueryResult<BTreeMap<i32, i64>> {
    conn.immediate_transaction(|conn| {
        for &p in partitions {
            diesel::insert_or_ignore_into(kafka_offsets::table)
                .values((
                    kafka_offsets::topic.eq(topic),
                    kafka_offsets::partition.eq(p),
                    kafka_offsets::next_offset.eq(0_i64),
                    kafka_offsets::updated_at.eq(now_us),
                ))
                .execute(conn)?;
        }
        let rows: Vec<(i32, i64)> = kafka_offsets::table
            .filter(kafka_offsets::topic.eq(topic))
            .filter(kafka_offsets::partition.eq_any(partitions))
            .select((kafka_offsets::partition, kafka_offsets::next_offset))
            .load(conn)?;
        Ok(rows.into_iter().collect())
    })
}

#[async_trait]
impl OffsetStore for SqliteOffsetStore {
    async fn load(&self, topic: &str, partitions: &[i32]) -> Result<BTreeMap<i32, i64>, StoreError> {
        let (topic, partitions) = (topic.to_owned(), partitions.to_vec());
        let now = micros(chrono::Utc::now());
        self.db.read(move |conn| load_in(conn, &topic, &partitions, now)).await
    }

    async fn record_gap(&self, topic: &str, partition: i32, from: i64, to: i64) -> Result<bool, StoreError> {
        let topic = topic.to_owned();
        let now = micros(chrono::Utc::now());
        self.db
            .read(move |conn| {
                conn.immediate_transaction(|conn| {
                    let moved = diesel::update(
                        kafka_offsets::table
                            .filter(kafka_offsets::topic.eq(&topic))
                            .filter(kafka_offsets::partition.eq(partition))
                            .filter(kafka_offsets::next_offset.eq(from)),
                    )
                    .set((kafka_offsets::next_offset.eq(to), kafka_offsets::updated_at.eq(now)))
                    .execute(conn)?;
                    if moved != 1 {
                        return Ok(false);
                    }
                    diesel::insert_into(offset_gaps::table)
                        .values((
                            offset_gaps::topic.eq(&topic),
                            offset_gaps::partition.eq(partition),
                            offset_gaps::from_offset.eq(from),
                            offset_gaps::to_offset.eq(to),
                            offset_gaps::detected_at.eq(now),
                        ))
                        .execute(conn)?;
                    Ok(true)
                })
            })
            .await
    }
}
