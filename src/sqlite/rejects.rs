//! Dead letters on the embedded store: `rejects list` and `rejects replay`, as `crate::db::rejects`
//! does them on PostgreSQL (the same rows, filter and report). A replayed reject is marked and its
//! event stored (and indexed) in one write transaction, so it is replayed at most once, also by two
//! replays at once: the second finds it marked. The keyword indexer counts replayed rows as any
//! others (they are stored above its mark).

use actors::domain::{LogEvent, ParseRules};
use anyhow::Context;
use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Binary, Integer, Nullable, Text};
use diesel::{QueryableByName, RunQueryDsl, SqliteConnection};

use super::{from_micros, micros, SqliteDb};
use crate::db::rejects::{RejectFilter, RejectRow, ReplayReport, NO_KAFKA_PARTITION};

/// Rejects read per transaction during a replay.
const REPLAY_PAGE: i64 = 1_000;

#[derive(QueryableByName)]
struct StoredReject {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    source: String,
    #[diesel(sql_type = Nullable<Text>)]
    topic: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    partition: Option<i32>,
    #[diesel(sql_type = Nullable<BigInt>)]
    offset: Option<i64>,
    #[diesel(sql_type = Text)]
    reason: String,
    #[diesel(sql_type = Text)]
    detail: String,
    #[diesel(sql_type = Binary)]
    raw: Vec<u8>,
    #[diesel(sql_type = Integer)]
    raw_len: i32,
    #[diesel(sql_type = Nullable<BigInt>)]
    kafka_ts: Option<i64>,
    #[diesel(sql_type = BigInt)]
    rejected_at: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    replayed_at: Option<i64>,
}

impl From<StoredReject> for RejectRow {
    fn from(r: StoredReject) -> RejectRow {
        RejectRow {
            id: r.id,
            source: r.source,
            topic: r.topic,
            partition: r.partition,
            offset: r.offset,
            reason: r.reason,
            detail: r.detail,
            raw: r.raw,
            raw_len: r.raw_len,
            kafka_ts: r.kafka_ts.map(from_micros),
            rejected_at: from_micros(r.rejected_at),
            replayed_at: r.replayed_at.map(from_micros),
        }
    }
}

const COLUMNS: &str = "id, source, topic, \"partition\", \"offset\", reason, detail, raw, raw_len, kafka_ts, \
                       rejected_at, replayed_at";

/// Rejects matching `filter` (replayed ones included), oldest first, at most `limit`.
pub async fn list(db: &SqliteDb, filter: &RejectFilter, limit: i64) -> anyhow::Result<Vec<RejectRow>> {
    let since = filter.since.map(micros);
    let reason = filter.reason.clone();
    let rows: Vec<StoredReject> = db
        .read(move |conn| {
            diesel::sql_query(format!(
                "SELECT {COLUMNS} FROM log_rejects WHERE (?1 IS NULL OR rejected_at >= ?1) \
                 AND (?2 IS NULL OR reason = ?2) ORDER BY id LIMIT ?3"
            ))
            .bind::<Nullable<BigInt>, _>(since)
            .bind::<Nullable<Text>, _>(reason)
            .bind::<BigInt, _>(limit)
            .load(conn)
        })
        .await
        .map_err(|e| anyhow::anyhow!("reading log_rejects: {e}"))?;
    Ok(rows.into_iter().map(RejectRow::from).collect())
}

/// Re-parses every not yet replayed reject matching `filter` with `rules`; stores each one that parses
/// now and marks it replayed in the same transaction.
pub async fn replay(
    db: &SqliteDb,
    filter: &RejectFilter,
    rules: &ParseRules,
    topic: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<ReplayReport> {
    let db = db.clone();
    let filter = filter.clone();
    let rules = rules.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut conn = db.connect()?;
        replay_on(&mut conn, &filter, &rules, &topic, now)
    })
    .await
    .context("the replay did not finish")?
}

fn replay_on(
    conn: &mut SqliteConnection,
    filter: &RejectFilter,
    rules: &ParseRules,
    topic: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<ReplayReport> {
    let mut report = ReplayReport::default();
    let mut after = 0_i64;
    loop {
        let page: Vec<RejectRow> = diesel::sql_query(format!(
            "SELECT {COLUMNS} FROM log_rejects WHERE replayed_at IS NULL AND id > ?1 \
             AND (?2 IS NULL OR rejected_at >= ?2) AND (?3 IS NULL OR reason = ?3) ORDER BY id LIMIT ?4"
        ))
        .bind::<BigInt, _>(after)
        .bind::<Nullable<BigInt>, _>(filter.since.map(micros))
        .bind::<Nullable<Text>, _>(filter.reason.as_deref())
        .bind::<BigInt, _>(REPLAY_PAGE)
        .load::<StoredReject>(conn)
        .context("reading log_rejects")?
        .into_iter()
        .map(RejectRow::from)
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
        if !parsed.is_empty() {
            report.replayed += conn.immediate_transaction(|conn| store(conn, &parsed, topic, now))?;
        }
    }
    Ok(report)
}

/// Marks each reject replayed and, when this call marked it, inserts its event. The caller holds
/// the write transaction.
fn store(
    conn: &mut SqliteConnection,
    parsed: &[(RejectRow, LogEvent)],
    topic: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<u64> {
    let mut marked = 0_u64;
    for (reject, e) in parsed {
        let won = diesel::sql_query("UPDATE log_rejects SET replayed_at = ?2 WHERE id = ?1 AND replayed_at IS NULL")
            .bind::<BigInt, _>(reject.id)
            .bind::<BigInt, _>(micros(now))
            .execute(conn)
            .context("marking a reject replayed")?;
        if won == 0 {
            continue;
        }
        marked += 1;
        let (topic, partition, offset) = match (&reject.topic, reject.partition, reject.offset) {
            (Some(t), Some(p), Some(o)) => (t.as_str(), p, o),
            _ => (topic, NO_KAFKA_PARTITION, reject.id),
        };
        diesel::sql_query(
            "INSERT INTO logs (ts, level, service, user_id, message, tokens, attrs, topic, \"partition\", \"offset\", \
             ingested_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .bind::<BigInt, _>(micros(e.ts))
        .bind::<Integer, _>(i32::from(e.level.as_i16()))
        .bind::<Text, _>(e.service.as_str())
        .bind::<Nullable<Text>, _>(e.user_id.as_ref().map(|u| u.as_str()))
        .bind::<Text, _>(&e.message)
        .bind::<Text, _>(serde_json::to_string(&e.tokens)?)
        .bind::<Text, _>(e.attrs.as_str())
        .bind::<Text, _>(topic)
        .bind::<Integer, _>(partition)
        .bind::<BigInt, _>(offset)
        .bind::<BigInt, _>(micros(now))
        .execute(conn)
        .context("storing a replayed event")?;
    }
    // The keyword indexer counts the stored rows after this commits (they are above its mark).
    Ok(marked)
}
