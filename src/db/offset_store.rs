//! The PostgreSQL OffsetStore: each partition's stored next offset (`kafka_offsets`), and the gaps
//! it had to jump over (`offset_gaps`), through diesel-async.

use std::collections::BTreeMap;
use std::time::Duration;

use actors::ports::{OffsetStore, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::schema::{kafka_offsets, offset_gaps};

/// Connects per call: offsets are read only when partitions are assigned.
pub struct PgOffsetStore {
    url: String,
    /// Each call runs on the poll thread inside a rebalance: a hung server must not hold it.
    timeout: Duration,
}

impl PgOffsetStore {
    pub fn new(url: impl Into<String>) -> PgOffsetStore {
        PgOffsetStore { url: url.into(), timeout: super::event_store::DEFAULT_WRITE_TIMEOUT }
    }

    /// Gives up on a call (and drops its connection) after `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> PgOffsetStore {
        self.timeout = timeout;
        self
    }

    async fn bounded<T>(
        &self,
        what: &str,
        work: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, work).await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "{what}: PostgreSQL did not answer within {} ms",
                self.timeout.as_millis()
            )))
        })
    }
}

fn failed(what: &str) -> impl Fn(&dyn std::fmt::Display) -> StoreError + '_ {
    move |e| StoreError::Unavailable(format!("{what}: {e}"))
}

#[async_trait]
impl OffsetStore for PgOffsetStore {
    async fn load(&self, topic: &str, partitions: &[i32]) -> Result<BTreeMap<i32, i64>, StoreError> {
        self.bounded("loading stored offsets", async {
            let failed = failed("loading stored offsets");
            let mut conn = AsyncPgConnection::establish(&self.url).await.map_err(|e| failed(&e))?;
            let fresh: Vec<_> = partitions
                .iter()
                .map(|p| {
                    (
                        kafka_offsets::topic.eq(topic),
                        kafka_offsets::partition.eq(*p),
                        kafka_offsets::next_offset.eq(0_i64),
                    )
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
        })
        .await
    }

    async fn record_gap(&self, topic: &str, partition: i32, from: i64, to: i64) -> Result<bool, StoreError> {
        self.bounded("recording an offset gap", async {
            let failed = failed("recording an offset gap");
            let mut conn = AsyncPgConnection::establish(&self.url).await.map_err(|e| failed(&e))?;
            let (topic, moved_topic) = (topic.to_owned(), topic.to_owned());
            conn.transaction(async move |conn| {
                let moved = diesel::update(kafka_offsets::table)
                    .filter(kafka_offsets::topic.eq(&moved_topic))
                    .filter(kafka_offsets::partition.eq(partition))
                    .filter(kafka_offsets::next_offset.eq(from))
                    .set((kafka_offsets::next_offset.eq(to), kafka_offsets::updated_at.eq(diesel::dsl::now)))
                    .execute(conn)
                    .await?;
                if moved != 1 {
                    return Ok(false);
                }
                diesel::insert_into(offset_gaps::table)
                    .values((
                        offset_gaps::topic.eq(&topic),
                        offset_gaps::partition.eq(partition),
                        offset_gaps::from_offset.eq(from),
                        offset_gaps::to_offset.eq(to),
                    ))
                    .execute(conn)
                    .await?;
                Ok::<_, diesel::result::Error>(true)
            })
            .await
            .map_err(|e| failed(&e))
        })
        .await
    }
}

/// One recorded gap.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, serde::Serialize)]
pub struct OffsetGap {
    pub id: i64,
    pub topic: String,
    pub partition: i32,
    pub from_offset: i64,
    pub to_offset: i64,
    pub detected_at: DateTime<Utc>,
}

/// Recorded gaps, oldest first, at most `limit`; only `topic`'s when given.
pub async fn list_gaps(url: &str, topic: Option<&str>, limit: i64) -> anyhow::Result<Vec<OffsetGap>> {
    use anyhow::Context;
    let mut conn = AsyncPgConnection::establish(url).await.context("connecting to PostgreSQL")?;
    let mut query = offset_gaps::table.order(offset_gaps::id).limit(limit).into_boxed();
    if let Some(topic) = topic {
        query = query.filter(offset_gaps::topic.eq(topic.to_owned()));
    }
    query
        .select((
            offset_gaps::id,
            offset_gaps::topic,
            offset_gaps::partition,
            offset_gaps::from_offset,
            offset_gaps::to_offset,
            offset_gaps::detected_at,
        ))
        .load(&mut conn)
        .await
        .context("listing offset gaps")
}
