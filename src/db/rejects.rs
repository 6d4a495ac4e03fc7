//! Dead letters: listing them, and replaying them through today's parser into `logs`, exactly once.
//!
//! A replayed event keeps its reject's Kafka position (topic, partition, offset). A reject from
//! POST /ingest never had one: it is stored under the configured topic with partition -1 and the
//! reject's id as its offset, so it stays findable and can never collide with a Kafka position.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;

use actors::domain::{Fallback, LogEvent, ParseRules};
use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

use super::daily_jobs::ensure_partitions;

/// Partition recorded for replayed rejects that never had a Kafka position (POST /ingest).
pub const NO_KAFKA_PARTITION: i32 = -1;
/// Rejects read per transaction during a replay.
const REPLAY_PAGE: i64 = 1_000;

/// Which rejects a command looks at.
#[derive(Debug, Clone, Default)]
pub struct RejectFilter {
    /// Rejected at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// With this reason code.
    pub reason: Option<String>,
}

/// One row of `log_rejects`.
#[derive(Debug, Clone, Serialize)]
pub struct RejectRow {
    pub id: i64,
    pub source: String,
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub reason: String,
    pub detail: String,
    #[serde(skip)]
    pub raw: Vec<u8>,
    pub raw_len: i32,
    pub kafka_ts: Option<DateTime<Utc>>,
    pub rejected_at: DateTime<Utc>,
    pub replayed_at: Option<DateTime<Utc>>,
}

impl RejectRow {
    /// What the message's first delivery knew besides its bytes: a Kafka reject has its topic and
    /// message time; a POST /ingest reject its receive time (`rejected_at`) and no service.
    pub fn fallback(&self) -> Fallback<'_> {
        match &self.topic {
            Some(topic) => Fallback::kafka(self.kafka_ts.or(Some(self.rejected_at)), topic),
            None => Fallback::http(self.kafka_ts.unwrap_or(self.rejected_at), None),
        }
    }

    /// The stored bytes are only the first 4 KiB of a longer payload.
    pub fn truncated(&self) -> bool {
        self.raw_len as usize > self.raw.len()
    }
}

const COLUMNS: &str = "id, source, topic, \"partition\", \"offset\", reason, detail, raw, raw_len, kafka_ts, \
                       rejected_at, replayed_at";

fn row_of(row: &tokio_postgres::Row) -> RejectRow {
    RejectRow {
        id: row.get(0),
        source: row.get(1),
        topic: row.get(2),
        partition: row.get(3),
        offset: row.get(4),
        reason: row.get(5),
        detail: row.get(6),
        raw: row.get(7),
        raw_len: row.get(8),
        kafka_ts: row.get(9),
        rejected_at: row.get(10),
        replayed_at: row.get(11),
    }
}

/// Rejects matching `filter` (replayed ones included), oldest first, at most `limit`.
pub async fn list(client: &Client, filter: &RejectFilter, limit: i64) -> anyhow::Result<Vec<RejectRow>> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM log_rejects WHERE ($1::timestamptz IS NULL OR rejected_at >= $1) \
                 AND ($2::text IS NULL OR reason = $2) ORDER BY id LIMIT $3"
            ),
            &[&filter.since, &filter.reason, &limit],
        )
        .await
        .context("reading log_rejects")?;
    Ok(rows.iter().map(row_of).collect())
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// Rejects that parse now and were stored in `logs` (and marked replayed) by this run.
    pub replayed: u64,
    /// Rejects that still do not parse, by today's reason code.
    pub still_invalid: BTreeMap<String, u64>,
    /// Rejects that cannot be replayed, by why (`truncated`: only the first 4 KiB were kept).
    pub skipped: BTreeMap<String, u64>,
}

/// Re-parses every not yet replayed reject matching `filter` with `rules`; stores each one that parses
/// now and marks it replayed in the same transaction (a reject is replayed at most once, even by two
/// concurrent replays).
pub async fn replay(
    client: &mut Client,
    filter: &RejectFilter,
    rules: &ParseRules,
    topic: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<ReplayReport> {
    let mut report = ReplayReport::default();
    let mut after = 0_i64;
    loop {
        let page: Vec<RejectRow> = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM log_rejects WHERE replayed_at IS NULL AND id > $1 \
                     AND ($2::timestamptz IS NULL OR rejected_at >= $2) AND ($3::text IS NULL OR reason = $3) \
                     ORDER BY id LIMIT $4"
                ),
                &[&after, &filter.since, &filter.reason, &REPLAY_PAGE],
            )
            .await
            .context("reading log_rejects")?
            .iter()
            .map(row_of)
            .collect();
        let Some(last) = page.last() else { break };
        after = last.id;

        let mut parsed: Vec<(RejectRow, LogEvent)> = Vec::new();
        for reject in page {
            if reject.truncated() {
                *report.skipped.entry("truncated".into()).or_default() += 1;
                continue;
            }
            match LogEvent::parse(&reject.raw, reject.fallback(), now, rules) {
                Ok(event) => parsed.push((reject, event)),
                Err(e) => *report.still_invalid.entry(e.reason.code().into()).or_default() += 1,
            }
        }
        if parsed.is_empty() {
            continue;
        }
        let days: BTreeSet<NaiveDate> = parsed.iter().map(|(_, e)| e.ts.date_naive()).collect();
        for day in days {
            ensure_partitions(client, day, day).await?;
        }
        report.replayed += store(client, &parsed, topic).await?;
    }
    Ok(report)
}

/// Marks the rejects replayed and inserts the events of those this call marked, in one transaction.
async fn store(client: &mut Client, parsed: &[(RejectRow, LogEvent)], topic: &str) -> anyhow::Result<u64> {
    let tx = client.transaction().await?;
    let ids: Vec<i64> = parsed.iter().map(|(r, _)| r.id).collect();
    let marked: BTreeSet<i64> = tx
        .query(
            "UPDATE log_rejects SET replayed_at = now() WHERE id = ANY($1) AND replayed_at IS NULL RETURNING id",
            &[&ids],
        )
        .await
        .context("marking rejects replayed")?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let insert = tx
        .prepare(
            "INSERT INTO logs (ts, level, service, user_id, message, tokens, attrs, topic, \"partition\", \"offset\") \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .await?;
    for (reject, e) in parsed.iter().filter(|(r, _)| marked.contains(&r.id)) {
        let (topic, partition, offset) = match (&reject.topic, reject.partition, reject.offset) {
            (Some(t), Some(p), Some(o)) => (t.as_str(), p, o),
            _ => (topic, NO_KAFKA_PARTITION, reject.id),
        };
        let level = e.level.as_i16();
        let user_id = e.user_id.as_ref().map(|u| u.as_str());
        let attrs = crate::db::event_store::JsonbText(e.attrs.as_str());
        let tokens = crate::db::event_store::TokenArray(&e.tokens);
        let row: [&(dyn ToSql + Sync); 10] =
            [&e.ts, &level, &e.service.as_str(), &user_id, &e.message, &tokens, &attrs, &topic, &partition, &offset];
        tx.execute(&insert, &row).await.context("storing a replayed event")?;
    }
    tx.commit().await.context("committing the replay")?;
    Ok(marked.len() as u64)
}

const COPY_HTTP_REJECTS: &str = "COPY log_rejects (source, reason, detail, raw, raw_len) FROM STDIN (FORMAT binary)";
const HTTP_REJECTS_TYPES: [Type; 5] = [Type::TEXT, Type::TEXT, Type::TEXT, Type::BYTEA, Type::INT4];

/// Dead letters of one POST /ingest body, streamed into `log_rejects` by one binary COPY (no
/// parameter limit, memory bounded by the writer's buffer). The caller runs it inside a transaction
/// and decides whether it commits.
pub struct RejectCopy {
    writer: Pin<Box<BinaryCopyInWriter>>,
    rows: u64,
}

impl RejectCopy {
    pub async fn start(client: &Client) -> anyhow::Result<RejectCopy> {
        let sink = client.copy_in(COPY_HTTP_REJECTS).await.context("starting the COPY of dead letters")?;
        Ok(RejectCopy { writer: Box::pin(BinaryCopyInWriter::new(sink, &HTTP_REJECTS_TYPES)), rows: 0 })
    }

    /// `raw` is the whole line: only its first `REJECT_RAW_PREFIX_BYTES` are kept, with its length.
    pub async fn push(&mut self, source: &str, reason: &str, detail: &str, raw: &[u8]) -> anyhow::Result<()> {
        let kept = &raw[..raw.len().min(actors::domain::event::REJECT_RAW_PREFIX_BYTES)];
        let raw_len = i32::try_from(raw.len()).unwrap_or(i32::MAX);
        let row: [&(dyn ToSql + Sync); 5] = [&source, &reason, &detail, &kept, &raw_len];
        self.writer.as_mut().write(&row).await.context("streaming dead letters")?;
        self.rows += 1;
        Ok(())
    }

    /// Ends the COPY; the rows stored.
    pub async fn finish(mut self) -> anyhow::Result<u64> {
        let stored = self.writer.as_mut().finish().await.context("ending the COPY of dead letters")?;
        debug_assert_eq!(stored, self.rows);
        Ok(stored)
    }
}
