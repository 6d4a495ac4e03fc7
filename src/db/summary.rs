//! The daily summary job: one day's `user_log_summary` and `keyword_daily` replaced in one transaction
//! by set-based SQL over that day's `logs` partition, and a `job_runs` row for every run.

use std::collections::BTreeMap;
use std::time::Instant;

use actors::domain::STOP_WORDS;
use actors::schedule::SummaryRun;
use anyhow::Context;
use chrono::{DateTime, Days, NaiveDate, Utc};
use slog::{error, info, Logger};
use tokio_postgres::types::Json;
use tokio_postgres::Client;

/// `job_runs.job` of the summary.
pub const SUMMARY_JOB: &str = "summary";
/// The bucket of events that carry no `user_id`.
pub const NO_USER: &str = "(none)";
/// Keywords kept per user, and per day.
pub const USER_TOP_KEYWORDS: i64 = 10;
pub const DAY_TOP_KEYWORDS: i64 = 1_000;
/// Class of the advisory lock (`pg_advisory_xact_lock(class, day)`) that queues two runs of one day.
const SUMMARY_LOCK_CLASS: i32 = 0x5355_4d4d; // "SUMM"
/// Memory for the job's hash aggregates: a 10M-event day has ~10M (user, token) pairs, which spill to
/// disk (and take twice as long) below about 1 GB.
const JOB_WORK_MEM: &str = "1GB";

/// Midnight UTC starting `day`.
pub fn day_start(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

/// The SQL array literal of the stop words (constants of our own: letters only, nothing to escape).
fn stop_words_literal() -> String {
    debug_assert!(STOP_WORDS.iter().all(|w| w.chars().all(|c| c.is_ascii_lowercase())));
    format!("'{{{}}}'::text[]", STOP_WORDS.join(","))
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
    // JIT compiles for longer than it saves on these plans.
    tx.batch_execute(&format!("SET LOCAL work_mem = '{JOB_WORK_MEM}'; SET LOCAL jit = off")).await?;
    let day_number = (day - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32;
    tx.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&SUMMARY_LOCK_CLASS, &day_number])
        .await
        .context("waiting for another run of the same day")?;

    // Every (user, token) count of the day, read once for both tops. CREATE TABLE AS takes no bind
    // parameters; the values inlined are a formatted date and our own stop words. `unnest` in the
    // select list (ProjectSet) rather than in FROM (a Function Scan, one tuplestore per row) saves a
    // third of the scan on a 10M-event day; stop words go after the aggregate, where there are ~8 times
    // fewer rows to test than unnested tokens. The planner cannot
    // estimate the groups of an unnest (it guesses 200) and would sort ~10M partial groups to merge the
    // parallel workers' results; hashing them is twice as fast.
    tx.batch_execute(&format!(
        "SET LOCAL enable_sort = off; \
         CREATE TEMP TABLE summary_tokens ON COMMIT DROP AS \
         SELECT COALESCE(user_id, '{NO_USER}') AS user_id, keyword, count(*) AS hits \
         FROM (SELECT user_id, unnest(tokens) AS keyword FROM logs WHERE ts >= '{from}' AND ts < '{to}') t \
         GROUP BY 1, 2; \
         SET LOCAL enable_sort = on; \
         DELETE FROM summary_tokens WHERE keyword = ANY({stop})",
        from = from.to_rfc3339(),
        to = to.to_rfc3339(),
        stop = stop_words_literal(),
    ))
    .await
    .context("counting the day's tokens")?;

    tx.execute("DELETE FROM user_log_summary WHERE day = $1", &[&day]).await?;
    let rows = tx
        .execute(
            // Most pairs are tokens seen once (ids, numbers); a user with at least `$5` tokens seen
            // more than once never ranks those, so they are left out before the sort (exactly).
            "WITH repeated AS ( \
                 SELECT user_id FROM summary_tokens WHERE hits > 1 GROUP BY user_id HAVING count(*) >= $5 \
             ) \
             INSERT INTO user_log_summary (day, user_id, total, errors, warnings, error_rate, services, \
                 first_seen, last_seen, top_keywords) \
             SELECT $1::date, s.user_id, s.total, s.errors, s.warnings, s.errors::float8 / s.total, s.services, \
                 s.first_seen, s.last_seen, COALESCE(k.top, '[]'::jsonb) \
             FROM ( \
                 SELECT user_id, sum(total)::bigint AS total, sum(errors)::bigint AS errors, \
                     sum(warnings)::bigint AS warnings, array_agg(service ORDER BY service COLLATE \"C\") AS services, \
                     min(first_seen) AS first_seen, max(last_seen) AS last_seen \
                 FROM ( \
                     SELECT COALESCE(user_id, $4) AS user_id, service, count(*) AS total, \
                         count(*) FILTER (WHERE level >= 4) AS errors, count(*) FILTER (WHERE level = 3) AS warnings, \
                         min(ts) AS first_seen, max(ts) AS last_seen \
                     FROM logs WHERE ts >= $2 AND ts < $3 GROUP BY 1, 2 \
                 ) per_service GROUP BY user_id \
             ) s LEFT JOIN ( \
                 SELECT user_id, jsonb_agg(jsonb_build_object('keyword', keyword, 'count', hits) \
                     ORDER BY hits DESC, keyword COLLATE \"C\") AS top \
                 FROM ( \
                     SELECT user_id, keyword, hits, \
                         row_number() OVER (PARTITION BY user_id ORDER BY hits DESC, keyword COLLATE \"C\") AS rank \
                     FROM summary_tokens t \
                     WHERE t.hits > 1 OR NOT EXISTS (SELECT 1 FROM repeated r WHERE r.user_id = t.user_id) \
                 ) ranked WHERE rank <= $5 GROUP BY user_id \
             ) k USING (user_id)",
            &[&day, &from, &to, &NO_USER, &USER_TOP_KEYWORDS],
        )
        .await
        .context("writing user_log_summary")?;

    tx.execute("DELETE FROM keyword_daily WHERE day = $1", &[&day]).await?;
    let keywords = tx
        .execute(
            "INSERT INTO keyword_daily (day, keyword, count) \
             SELECT $1::date, keyword, sum(hits)::bigint FROM summary_tokens GROUP BY keyword \
             ORDER BY 3 DESC, keyword COLLATE \"C\" LIMIT $2",
            &[&day, &DAY_TOP_KEYWORDS],
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

/// The newest day with a successful summary run.
pub async fn last_summarized(client: &Client) -> anyhow::Result<Option<NaiveDate>> {
    let row = client
        .query_one("SELECT max(day) FROM job_runs WHERE job = $1 AND status = 'ok'", &[&SUMMARY_JOB])
        .await
        .context("reading job_runs")?;
    Ok(row.get(0))
}
