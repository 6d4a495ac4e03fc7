//! `SummaryReader` on PostgreSQL: a summarized day as the job wrote it.

use std::time::Duration;

use actors::summary::{SummarizedDay, SummaryReader, UserDay};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use diesel::sql_types::{Array, BigInt, Date, Double, Jsonb, Nullable, Text, Timestamptz};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use serde_json::{json, Value};

use super::SUMMARY_JOB;
use crate::db::stats::KeywordRow;
use crate::db::PgPool;

pub struct PgSummaryReader {
    pool: PgPool,
    /// Bound on the whole read (`DATABASE_TIMEOUT_MS`).
    timeout: Duration,
}

impl PgSummaryReader {
    pub fn new(pool: PgPool, timeout: Duration) -> PgSummaryReader {
        PgSummaryReader { pool, timeout }
    }
}

#[derive(QueryableByName)]
struct RunRow {
    #[diesel(sql_type = Nullable<Timestamptz>)]
    finished: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    invalid_rows: Option<Value>,
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
    #[diesel(sql_type = Array<Text>)]
    services: Vec<String>,
    #[diesel(sql_type = Timestamptz)]
    first_seen: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    last_seen: DateTime<Utc>,
    #[diesel(sql_type = Jsonb)]
    top_keywords: Value,
}

#[async_trait]
impl SummaryReader for PgSummaryReader {
    async fn day(&self, day: NaiveDate, user: Option<&str>, limit: i64) -> Result<Option<SummarizedDay>, String> {
        let query = async {
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            let run: RunRow = diesel::sql_query(
                "SELECT max(finished) AS finished, (array_agg(invalid_rows ORDER BY finished DESC))[1] AS invalid_rows \
                 FROM job_runs WHERE job = $1 AND day = $2 AND status = 'ok'",
            )
            .bind::<Text, _>(SUMMARY_JOB)
            .bind::<Date, _>(day)
            .get_result(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
            let Some(summarized_at) = run.finished else { return Ok(None) };
            let users: Vec<UserRow> = diesel::sql_query(
                "SELECT user_id, total, errors, warnings, error_rate, services, first_seen, last_seen, top_keywords \
                 FROM user_log_summary WHERE day = $1 AND ($2::text IS NULL OR user_id = $2) \
                 ORDER BY total DESC, user_id LIMIT $3",
            )
            .bind::<Date, _>(day)
            .bind::<Nullable<Text>, _>(user)
            .bind::<BigInt, _>(limit)
            .load(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
            let keywords: Vec<KeywordRow> = diesel::sql_query(
                "SELECT keyword, count FROM keyword_daily WHERE day = $1 ORDER BY count DESC, keyword COLLATE \"C\" \
                 LIMIT $2",
            )
            .bind::<Date, _>(day)
            .bind::<BigInt, _>(limit)
            .load(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
            Ok::<_, String>(Some(SummarizedDay {
                summarized_at,
                invalid_rows: run.invalid_rows.unwrap_or_else(|| json!({})),
                users: users
                    .into_iter()
                    .map(|u| UserDay {
                        user_id: u.user_id,
                        total: u.total,
                        errors: u.errors,
                        warnings: u.warnings,
                        error_rate: u.error_rate,
                        services: u.services,
                        first_seen: u.first_seen,
                        last_seen: u.last_seen,
                        top_keywords: u.top_keywords,
                    })
                    .collect(),
                keywords: keywords.into_iter().map(|k| (k.keyword, k.count)).collect(),
            }))
        };
        tokio::time::timeout(self.timeout, query)
            .await
            .map_err(|_| format!("no answer within {} ms", self.timeout.as_millis()))?
    }
}
