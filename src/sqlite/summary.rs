//! The daily jobs over SQLite (summary, retention) and reading a summarized day back: the same rows
//! and answers as `crate::db::summary` and `crate::db::daily_jobs` on PostgreSQL.
//!
//! A run reads the day in one read transaction (under WAL a snapshot: every event committed before
//! it began, and ingest goes on meanwhile), then replaces the day's rows in one short write
//! transaction: holding SQLite's one write lock through the scan of a busy day would stall ingest.
//! The scheduler's lead is an OS lock on a file beside the database, released by the kernel when
//! its process dies (as PostgreSQL drops a session's lock), so two processes on one file run the
//! jobs once.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use actors::domain::STOP_WORDS;
use actors::ports::summary::{SummarizedDay, UserDay};
use actors::ports::{DailyJobs, PartitionChanges, StoreError, SummaryReader, SummaryRun};
use actors::summary::{DayCount, DaySummary};
use anyhow::Context;
use async_trait::async_trait;
use chrono::{Days, NaiveDate, Utc};
use diesel::connection::DefaultLoadingMode;
use diesel::sql_types::{BigInt, Double, Integer, Nullable, Text};
use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};
use slog::{error, info, Logger};

use super::{from_micros, keywords, micros, SqliteDb};
use crate::db::summary::{day_start, DAY_TOP_KEYWORDS, NO_USER, SUMMARY_JOB, USER_TOP_KEYWORDS};

#[derive(QueryableByName)]
struct EventRow {
    #[diesel(sql_type = Nullable<Text>)]
    user_id: Option<String>,
    #[diesel(sql_type = Integer)]
    level: i32,
    #[diesel(sql_type = Text)]
    service: String,
    #[diesel(sql_type = BigInt)]
    ts: i64,
    #[diesel(sql_type = Text)]
    tokens: String,
}

#[derive(QueryableByName)]
struct ReasonRow {
    #[diesel(sql_type = Text)]
    reason: String,
    #[diesel(sql_type = BigInt)]
    count: i64,
}

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

#[derive(QueryableByName)]
struct MaybeText {
    #[diesel(sql_type = Nullable<Text>)]
    value: Option<String>,
}

#[derive(QueryableByName)]
struct MaybeNumber {
    #[diesel(sql_type = Nullable<BigInt>)]
    value: Option<i64>,
}

fn day_text(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Runs `work` on a connection of its own on a blocking thread (the jobs write, the pool reads).
async fn on_connection<T, F>(db: &SqliteDb, work: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut SqliteConnection) -> anyhow::Result<T> + Send + 'static,
{
    let db = db.clone();
    tokio::task::spawn_blocking(move || work(&mut db.connect()?)).await.context("a SQLite job did not finish")?
}

/// `summary --date D` on the embedded store: one idempotent run (the day's rows are replaced),
/// recorded in `job_runs`, logged with the day's invalid rows by reason.
pub async fn summarize_day(db: &SqliteDb, day: NaiveDate, log: &Logger) -> anyhow::Result<SummaryRun> {
    let log = log.clone();
    on_connection(db, move |conn| {
        let started = Instant::now();
        let run_id = diesel::sql_query("INSERT INTO job_runs (job, day, started) VALUES (?1, ?2, ?3) RETURNING id")
            .bind::<Text, _>(SUMMARY_JOB)
            .bind::<Text, _>(day_text(day))
            .bind::<BigInt, _>(micros(Utc::now()))
            .get_result::<IdRow>(conn)
            .context("recording the job run")?
            .id;
        match replace_day(conn, day, run_id, started) {
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
                // Best effort: the file may be what failed; the row then stays 'running'.
                let _ = diesel::sql_query(
                    "UPDATE job_runs SET status = 'failed', finished = ?2, duration_ms = ?3, error = ?4 WHERE id = ?1",
                )
                .bind::<BigInt, _>(run_id)
                .bind::<BigInt, _>(micros(Utc::now()))
                .bind::<BigInt, _>(duration_ms)
                .bind::<Text, _>(&message)
                .execute(conn);
                Err(e)
            }
        }
    })
    .await
}

fn replace_day(
    conn: &mut SqliteConnection,
    day: NaiveDate,
    run_id: i64,
    started: Instant,
) -> anyhow::Result<SummaryRun> {
    let from = micros(day_start(day));
    let to = micros(day_start(day + Days::new(1)));
    let (summary, invalid_rows) = conn.transaction(|conn| {
        let (summary, unreadable) = scan_day(conn, from, to).context("reading the day's events")?;
        let mut invalid_rows: BTreeMap<String, u64> = diesel::sql_query(
            "SELECT reason, count(*) AS count FROM log_rejects WHERE rejected_at >= ?1 AND rejected_at < ?2 \
             GROUP BY reason",
        )
        .bind::<BigInt, _>(from)
        .bind::<BigInt, _>(to)
        .load::<ReasonRow>(conn)?
        .into_iter()
        .map(|r| (r.reason, r.count as u64))
        .collect();
        if unreadable > 0 {
            // Stored rows, not dead letters: a reason no reject has.
            *invalid_rows.entry(UNREADABLE_TOKENS.to_owned()).or_default() += unreadable;
        }
        anyhow::Ok((summary, invalid_rows))
    })?;
    conn.immediate_transaction(|conn| write_day(conn, day, run_id, started, &summary, invalid_rows))
}

fn write_day(
    conn: &mut SqliteConnection,
    day: NaiveDate,
    run_id: i64,
    started: Instant,
    summary: &DaySummary,
    invalid_rows: BTreeMap<String, u64>,
) -> anyhow::Result<SummaryRun> {
    let day_key = day_text(day);

    diesel::sql_query("DELETE FROM user_log_summary WHERE day = ?1").bind::<Text, _>(&day_key).execute(conn)?;
    for u in &summary.users {
        let top: Vec<serde_json::Value> =
            u.top_keywords.iter().map(|(k, c)| serde_json::json!({"keyword": k, "count": c})).collect();
        diesel::sql_query(
            "INSERT INTO user_log_summary (day, user_id, total, errors, warnings, error_rate, services, first_seen, \
             last_seen, top_keywords) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .bind::<Text, _>(&day_key)
        .bind::<Text, _>(&u.user_id)
        .bind::<BigInt, _>(u.total)
        .bind::<BigInt, _>(u.errors)
        .bind::<BigInt, _>(u.warnings)
        .bind::<Double, _>(u.errors as f64 / u.total as f64)
        .bind::<Text, _>(serde_json::to_string(&u.services)?)
        .bind::<BigInt, _>(micros(u.first_seen))
        .bind::<BigInt, _>(micros(u.last_seen))
        .bind::<Text, _>(serde_json::Value::from(top).to_string())
        .execute(conn)
        .context("writing user_log_summary")?;
    }
    let rows = summary.users.len() as u64;

    diesel::sql_query("DELETE FROM keyword_daily WHERE day = ?1").bind::<Text, _>(&day_key).execute(conn)?;
    for (keyword, count) in &summary.keywords {
        diesel::sql_query("INSERT INTO keyword_daily (day, keyword, count) VALUES (?1, ?2, ?3)")
            .bind::<Text, _>(&day_key)
            .bind::<Text, _>(keyword)
            .bind::<BigInt, _>(*count)
            .execute(conn)
            .context("writing keyword_daily")?;
    }
    let keywords = summary.keywords.len() as u64;

    let duration_ms = started.elapsed().as_millis() as u64;
    diesel::sql_query(
        "UPDATE job_runs SET status = 'ok', finished = ?2, rows = ?3, invalid_rows = ?4, duration_ms = ?5 WHERE id = ?1",
    )
    .bind::<BigInt, _>(run_id)
    .bind::<BigInt, _>(micros(Utc::now()))
    .bind::<BigInt, _>(rows as i64)
    .bind::<Text, _>(serde_json::to_string(&invalid_rows)?)
    .bind::<BigInt, _>(duration_ms as i64)
    .execute(conn)?;
    Ok(SummaryRun { day, rows, keywords, invalid_rows, duration_ms })
}

/// The `invalid_rows` reason of the day's stored rows whose `tokens` is not a JSON array of text
/// (`keywords::read_tokens`): each still counts as an event of its user, with the text elements
/// of its array as its tokens (none when it is not an array), instead of failing the day.
pub const UNREADABLE_TOKENS: &str = "unreadable_tokens";

/// Counts the day's events row by row as SQLite steps through them (no copy of the day in memory);
/// also returns how many had unreadable tokens ([`UNREADABLE_TOKENS`]).
fn scan_day(conn: &mut SqliteConnection, from: i64, to: i64) -> anyhow::Result<(DaySummary, u64)> {
    let mut day = DayCount::new(STOP_WORDS.iter().map(|w| w.as_bytes()));
    let rows = diesel::sql_query("SELECT user_id, level, service, ts, tokens FROM logs WHERE ts >= ?1 AND ts < ?2")
        .bind::<BigInt, _>(from)
        .bind::<BigInt, _>(to)
        .load_iter::<EventRow, DefaultLoadingMode>(conn)?;
    let mut unreadable = 0u64;
    for row in rows {
        let row = row?;
        let keywords::RowTokens { tokens, readable } = keywords::read_tokens(&row.tokens);
        unreadable += u64::from(!readable);
        let level = i16::try_from(row.level).context("level out of range")?;
        day.event(
            row.user_id.as_deref().map(str::as_bytes),
            level,
            row.service.as_bytes(),
            row.ts,
            tokens.iter().map(|t| t.as_bytes()),
        );
    }
    let summary =
        day.finish(USER_TOP_KEYWORDS as usize, DAY_TOP_KEYWORDS as usize, NO_USER).map_err(anyhow::Error::msg)?;
    Ok((summary, unreadable))
}

/// The newest day with a successful summary run.
pub async fn last_summarized(db: &SqliteDb) -> anyhow::Result<Option<NaiveDate>> {
    let newest = db
        .read(|conn| {
            diesel::sql_query("SELECT max(day) AS value FROM job_runs WHERE job = ?1 AND status = 'ok'")
                .bind::<Text, _>(SUMMARY_JOB)
                .get_result::<MaybeText>(conn)
        })
        .await
        .map_err(|e| anyhow::anyhow!("reading job_runs: {e}"))?;
    newest
        .value
        .map(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").with_context(|| format!("job_runs.day {d:?}")))
        .transpose()
}

/// Retention: deletes the events (and their keyword index rows) of the days before `oldest_kept`;
/// returns the days that had events. One write transaction per hour of events, oldest first: a
/// day of a busy store in one transaction would hold SQLite's one write lock (and ingest) for
/// seconds, and an hour's events leave with their index rows, so answers never see half of either.
///
/// Each transaction finds its hour, then deletes the rows and their index rows: a crash between
/// two statements rolls both back, and no writer commits in between (an immediate transaction
/// holds the write lock from its start). Before, the last step (the index rows left below the cut)
/// ran in a transaction of its own after the loop's last look at `logs`: an event older than the
/// cut stored in between kept its row but lost its index rows, so the search's token plan (which
/// reads only the seconds `log_token_seconds` lists) and the keyword counts missed it until the
/// next day's retention deleted it.
///
/// The keyword indexer's mark and epoch move with the rows (`keywords::rows_deleted`), in the same
/// transaction.
pub async fn delete_days_before(db: &SqliteDb, oldest_kept: NaiveDate) -> anyhow::Result<Vec<NaiveDate>> {
    let cutoff = micros(day_start(oldest_kept));
    on_connection(db, move |conn| {
        let mut days = BTreeSet::new();
        loop {
            let deleted = conn.immediate_transaction(|conn| {
                let oldest: MaybeNumber = diesel::sql_query("SELECT min(ts) AS value FROM logs WHERE ts < ?1")
                    .bind::<BigInt, _>(cutoff)
                    .get_result(conn)?;
                let Some(oldest) = oldest.value else {
                    // Nothing left below the cut: index rows there have no event (none are
                    // expected), and the seconds before the cut are a prefix of the key.
                    keywords::forget_before(conn, cutoff)?;
                    return Ok::<_, diesel::result::Error>(None);
                };
                let hour = keywords::hour_of(oldest);
                let end = hour.saturating_add(1).saturating_mul(keywords::HOUR_US).min(cutoff);
                let unindexed = keywords::unindexed_between(conn, oldest, end)?;
                // The rows first, then their index rows; one transaction, so the order only
                // matters to a reader of this code: never an index row missing for a kept row.
                diesel::sql_query("DELETE FROM logs WHERE ts >= ?1 AND ts < ?2")
                    .bind::<BigInt, _>(oldest)
                    .bind::<BigInt, _>(end)
                    .execute(conn)?;
                keywords::forget_hour(conn, hour, end)?;
                // Rows above the indexer's mark may have gone too (unindexed, so no counts to
                // forget): its mark comes down, and its epoch moves if they did
                // (`keywords::rows_deleted`).
                keywords::rows_deleted(conn, unindexed)?;
                Ok(Some(oldest))
            })?;
            match deleted {
                Some(oldest) => days.insert(from_micros(oldest).date_naive()),
                None => break,
            };
        }
        Ok(days.into_iter().collect())
    })
    .await
}

/// The scheduler's daily jobs on the embedded store.
pub struct SqliteDailyJobs {
    db: SqliteDb,
    log: Logger,
    /// The lead file, locked while this scheduler leads.
    lead: Mutex<Option<File>>,
}

impl SqliteDailyJobs {
    pub fn new(db: SqliteDb, log: &Logger) -> SqliteDailyJobs {
        SqliteDailyJobs { db, log: log.clone(), lead: Mutex::new(None) }
    }

    /// `log-analyzer.db` → `log-analyzer.db-lead`, beside SQLite's own `-wal` and `-shm`.
    fn lead_path(&self) -> PathBuf {
        let mut name = self.db.path().as_os_str().to_owned();
        name.push("-lead");
        PathBuf::from(name)
    }
}

#[async_trait]
impl DailyJobs for SqliteDailyJobs {
    async fn lead(&self) -> Result<bool, StoreError> {
        let mut held = self.lead.lock().expect("lead lock");
        if held.is_some() {
            return Ok(true);
        }
        let path = self.lead_path();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| unavailable(format!("opening {}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {
                *held = Some(file);
                Ok(true)
            }
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => Err(unavailable(format!("locking {}: {e}", path.display()))),
        }
    }

    async fn last_summarized(&self) -> Result<Option<NaiveDate>, StoreError> {
        last_summarized(&self.db).await.map_err(|e| unavailable(format!("{e:#}")))
    }

    async fn summarize(&self, day: NaiveDate) -> Result<SummaryRun, StoreError> {
        summarize_day(&self.db, day, &self.log).await.map_err(|e| unavailable(format!("{e:#}")))
    }

    /// No partitions here: `created` stays empty, and the days before the retention are deleted.
    async fn maintain_partitions(
        &self,
        today: NaiveDate,
        _ahead_days: u32,
        retention_days: u32,
    ) -> Result<PartitionChanges, StoreError> {
        let dropped = delete_days_before(&self.db, today - Days::new(u64::from(retention_days)))
            .await
            .map_err(|e| unavailable(format!("{e:#}")))?;
        Ok(PartitionChanges { created: Vec::new(), dropped })
    }
}

#[derive(QueryableByName)]
struct RunRow {
    #[diesel(sql_type = BigInt)]
    finished: i64,
    #[diesel(sql_type = Text)]
    invalid_rows: String,
}

#[derive(QueryableByName)]
struct UserRow {
    #[diesel(sql_type = Text)]
    user_id: String,
    #[diesel(sql_type = BigInt)]
    total: i64,
    #[diesel(sql_type = BigInt)]
    errors: i64,
    #[diesel(sql_type = BigInt)]
    warnings: i64,
    #[diesel(sql_type = Double)]
    error_rate: f64,
    #[diesel(sql_type = Text)]
    services: String,
    #[diesel(sql_type = BigInt)]
    first_seen: i64,
    #[diesel(sql_type = BigInt)]
    last_seen: i64,
    #[diesel(sql_type = Text)]
    top_keywords: String,
}

#[derive(QueryableByName)]
struct KeywordRow {
    #[diesel(sql_type = Text)]
    keyword: String,
    #[diesel(sql_type = BigInt)]
    count: i64,
}

pub struct SqliteSummaryReader {
    db: SqliteDb,
}

impl SqliteSummaryReader {
    pub fn new(db: SqliteDb) -> SqliteSummaryReader {
        SqliteSummaryReader { db }
    }
}

type Read = (Option<RunRow>, Vec<UserRow>, Vec<KeywordRow>);

#[async_trait]
impl SummaryReader for SqliteSummaryReader {
    async fn day(&self, day: NaiveDate, user: Option<&str>, limit: i64) -> Result<Option<SummarizedDay>, String> {
        let key = day_text(day);
        let user = user.map(str::to_owned);
        let (run, users, keywords): Read = self
            .db
            .read(move |conn| {
                conn.transaction(|conn| {
                    let run: Option<RunRow> = diesel::sql_query(
                        "SELECT finished, invalid_rows FROM job_runs WHERE job = ?1 AND day = ?2 AND status = 'ok' \
                         AND finished IS NOT NULL ORDER BY finished DESC, id DESC LIMIT 1",
                    )
                    .bind::<Text, _>(SUMMARY_JOB)
                    .bind::<Text, _>(&key)
                    .load(conn)?
                    .pop();
                    if run.is_none() {
                        return Ok((None, Vec::new(), Vec::new()));
                    }
                    let users = diesel::sql_query(
                        "SELECT user_id, total, errors, warnings, error_rate, services, first_seen, last_seen, \
                         top_keywords FROM user_log_summary WHERE day = ?1 AND (?2 IS NULL OR user_id = ?2) \
                         ORDER BY total DESC, user_id LIMIT ?3",
                    )
                    .bind::<Text, _>(&key)
                    .bind::<Nullable<Text>, _>(user)
                    .bind::<BigInt, _>(limit)
                    .load(conn)?;
                    let keywords = diesel::sql_query(
                        "SELECT keyword, count FROM keyword_daily WHERE day = ?1 ORDER BY count DESC, keyword LIMIT ?2",
                    )
                    .bind::<Text, _>(&key)
                    .bind::<BigInt, _>(limit)
                    .load(conn)?;
                    Ok((run, users, keywords))
                })
            })
            .await
            .map_err(|e| e.to_string())?;
        let Some(run) = run else { return Ok(None) };
        let json = |s: &str| serde_json::from_str::<serde_json::Value>(s).map_err(|e| format!("stored JSON: {e}"));
        let users = users
            .into_iter()
            .map(|u| {
                Ok(UserDay {
                    services: serde_json::from_str(&u.services).map_err(|e| format!("stored services: {e}"))?,
                    top_keywords: json(&u.top_keywords)?,
                    user_id: u.user_id,
                    total: u.total,
                    errors: u.errors,
                    warnings: u.warnings,
                    error_rate: u.error_rate,
                    first_seen: from_micros(u.first_seen),
                    last_seen: from_micros(u.last_seen),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Some(SummarizedDay {
            summarized_at: from_micros(run.finished),
            invalid_rows: json(&run.invalid_rows)?,
            users,
            keywords: keywords.into_iter().map(|k| (k.keyword, k.count)).collect(),
        }))
    }
}
