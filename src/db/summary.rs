//! The daily summary job: one day's `user_log_summary` and `keyword_daily` replaced in one transaction,
//! and a `job_runs` row for every run. The day's events are read once, by one binary COPY (so from one
//! snapshot), and counted in Rust on a blocking thread while PostgreSQL serializes the rest: per-user
//! figures, every (user, token) pair and the day's tokens (see `actors::summary::DayCount`).

mod copy_rows;
pub mod reader;

use std::collections::BTreeMap;
use std::time::Instant;

use actors::domain::STOP_WORDS;
use actors::schedule::SummaryRun;
use actors::summary::{DayCount, DaySummary};
use anyhow::Context;
use chrono::{DateTime, Days, NaiveDate, Utc};
use futures::{pin_mut, StreamExt};
use slog::{error, info, Logger};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, ToSql, Type};
use tokio_postgres::{Client, Transaction};

/// `job_runs.job` of the summary.
pub const SUMMARY_JOB: &str = "summary";
/// The bucket of events that carry no `user_id`.
pub const NO_USER: &str = "(none)";
/// Keywords kept per user, and per day.
pub const USER_TOP_KEYWORDS: i64 = 10;
pub const DAY_TOP_KEYWORDS: i64 = 1_000;
/// Class of the advisory lock (`pg_advisory_xact_lock(class, day)`) that queues two runs of one day.
const SUMMARY_LOCK_CLASS: i32 = 0x5355_4d4d; // "SUMM"
/// Midnight UTC starting `day`.
pub fn day_start(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

/// Summarizes `day` (idempotent: the day's rows are replaced), records the run in `job_runs`, and logs
/// one line with the day's invalid rows by reason.
pub async fn summarize_day(client: &mut Client, day: NaiveDate, log: &Logger) -> anyhow::Result<SummaryRun> {
    let started = Instant::now();
    let run_id: i64 = client
        .query_one("INSERT INTO job_runs (job, day) VALUES ($1, $2) RETURNING id", &[&SUMMARY_JOB, &day])
        .await
        .context("recording the job run")?
        .get(0);
    match replace_day(client, day, run_id, started).await {
        Ok(run) => {
            let invalid = serde_json::to_string(&run.invalid_rows).unwrap_or_default();
            info!(log, "day summarized"; "job" => SUMMARY_JOB, "day" => %day, "run_id" => run_id,
                  "rows" => run.rows, "keywords" => run.keywords, "duration_ms" => run.duration_ms,
                  "invalid_total" => run.invalid_rows.values().sum::<u64>(), "invalid_rows" => invalid);
            Ok(run)
        }
        Err(e) => {
            let duration_ms = started.elapsed().as_millis() as i64;
            let message = format!("{e:#}");
            error!(log, "summary failed"; "job" => SUMMARY_JOB, "day" => %day, "run_id" => run_id,
                   "duration_ms" => duration_ms, "error" => &message);
            // Best effort: the connection may be what failed; the row then stays 'running'.
            let _ = client
                .execute(
                    "UPDATE job_runs SET status = 'failed', finished = now(), duration_ms = $2, error = $3 \
                     WHERE id = $1",
                    &[&run_id, &duration_ms, &message],
                )
                .await;
            Err(e)
        }
    }
}

async fn replace_day(client: &mut Client, day: NaiveDate, run_id: i64, started: Instant) -> anyhow::Result<SummaryRun> {
    let from = day_start(day);
    let to = day_start(day + Days::new(1));
    let tx = client.transaction().await?;
    let day_number = (day - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32;
    tx.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&SUMMARY_LOCK_CLASS, &day_number])
        .await
        .context("waiting for another run of the same day")?;

    // Every figure of the day comes from this one statement, so from one snapshot (taken after the lock).
    let summary = scan_day(&tx, from, to).await.context("reading the day's events")?;

    tx.execute("DELETE FROM user_log_summary WHERE day = $1", &[&day]).await?;
    let sink = tx
        .copy_in(
            "COPY user_log_summary (day, user_id, total, errors, warnings, error_rate, services, first_seen, \
             last_seen, top_keywords) FROM STDIN (FORMAT binary)",
        )
        .await
        .context("writing user_log_summary")?;
    let types = [
        Type::DATE,
        Type::TEXT,
        Type::INT8,
        Type::INT8,
        Type::INT8,
        Type::FLOAT8,
        Type::TEXT_ARRAY,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::JSONB,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for u in &summary.users {
        let top: Vec<serde_json::Value> =
            u.top_keywords.iter().map(|(k, c)| serde_json::json!({"keyword": k, "count": c})).collect();
        let error_rate = u.errors as f64 / u.total as f64;
        let row: [&(dyn ToSql + Sync); 10] = [
            &day,
            &u.user_id,
            &u.total,
            &u.errors,
            &u.warnings,
            &error_rate,
            &u.services,
            &u.first_seen,
            &u.last_seen,
            &Json(&top),
        ];
        writer.as_mut().write(&row).await.context("writing user_log_summary")?;
    }
    let rows = writer.finish().await.context("writing user_log_summary")?;

    tx.execute("DELETE FROM keyword_daily WHERE day = $1", &[&day]).await?;
    let (words, counts): (Vec<&str>, Vec<i64>) = summary.keywords.iter().map(|(k, c)| (k.as_str(), *c)).unzip();
    let keywords = tx
        .execute(
            "INSERT INTO keyword_daily (day, keyword, count) SELECT $1::date, k, c FROM unnest($2::text[], $3::int8[]) t(k, c)",
            &[&day, &words, &counts],
        )
        .await
        .context("writing keyword_daily")?;

    let invalid_rows: BTreeMap<String, u64> = tx
        .query(
            "SELECT reason, count(*)::bigint FROM log_rejects WHERE rejected_at >= $1 AND rejected_at < $2 \
             GROUP BY reason",
            &[&from, &to],
        )
        .await?
        .into_iter()
        .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1) as u64))
        .collect();

    let duration_ms = started.elapsed().as_millis() as u64;
    tx.execute(
        "UPDATE job_runs SET status = 'ok', finished = now(), rows = $2, invalid_rows = $3, duration_ms = $4 \
         WHERE id = $1",
        &[&run_id, &(rows as i64), &Json(&invalid_rows), &(duration_ms as i64)],
    )
    .await?;
    tx.commit().await.context("committing the summary")?;
    Ok(SummaryRun { day, rows, keywords, invalid_rows, duration_ms })
}

/// Streams the day's events out of PostgreSQL (binary COPY, one statement) to a blocking thread that
/// counts them while PostgreSQL serializes the next ones, and returns the day's summary.
async fn scan_day(tx: &Transaction<'_>, from: DateTime<Utc>, to: DateTime<Utc>) -> anyhow::Result<DaySummary> {
    // COPY takes no bind parameters; the values inlined are two formatted timestamps.
    let stream = tx
        .copy_out(&format!(
            "COPY (SELECT user_id, level, service, ts, tokens FROM logs WHERE ts >= '{from}' AND ts < '{to}') \
             TO STDOUT (FORMAT binary)",
            from = from.to_rfc3339(),
            to = to.to_rfc3339(),
        ))
        .await?;
    pin_mut!(stream);
    let (send, mut receive) = tokio::sync::mpsc::channel::<Vec<_>>(64);
    let counter = tokio::task::spawn_blocking(move || count_batches(&mut receive));
    let streamed = async {
        let mut batch = Vec::with_capacity(COPY_BATCH);
        while let Some(chunk) = stream.next().await {
            batch.push(chunk?);
            if batch.len() == COPY_BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(COPY_BATCH));
                if send.send(full).await.is_err() {
                    break; // the counter failed: its error is the one to report
                }
            }
        }
        if !batch.is_empty() {
            let _ = send.send(batch).await;
        }
        anyhow::Ok(())
    }
    .await;
    // The counter stops at the end of the channel, also when the stream failed.
    drop(send);
    let counted = counter.await.context("the counting thread")?;
    streamed?;
    counted
}

/// Counts the chunks received until the sender goes away.
fn count_batches<B: AsRef<[u8]>>(receive: &mut tokio::sync::mpsc::Receiver<Vec<B>>) -> anyhow::Result<DaySummary> {
    let mut day = DayCount::new(STOP_WORDS.iter().map(|w| w.as_bytes()));
    let mut rows = copy_rows::CopyRows::default();
    while let Some(batch) = receive.blocking_recv() {
        for chunk in batch {
            rows.feed(chunk.as_ref(), &mut day)?;
        }
    }
    rows.finish()?;
    day.finish(USER_TOP_KEYWORDS as usize, DAY_TOP_KEYWORDS as usize, NO_USER).map_err(anyhow::Error::msg)
}

/// CopyData chunks (about one row each) handed to the counting thread at a time.
const COPY_BATCH: usize = 512;

/// The newest day with a successful summary run.
pub async fn last_summarized(client: &Client) -> anyhow::Result<Option<NaiveDate>> {
    let row = client
        .query_one("SELECT max(day) FROM job_runs WHERE job = $1 AND status = 'ok'", &[&SUMMARY_JOB])
        .await
        .context("reading job_runs")?;
    Ok(row.get(0))
}
