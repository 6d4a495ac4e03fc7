//! `GET /stats/summary?date=YYYY-MM-DD[&user_id=U][&limit=N]`: the daily summary as the job wrote it.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use diesel::sql_types::{Array, BigInt, Date, Double, Jsonb, Nullable, Text, Timestamptz};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use serde_json::{json, Value};

use super::errors::ApiError;
#[allow(unused_imports)] // Named by the OpenAPI annotations.
use super::openapi::{ErrorBody, SummaryAnswer, SummaryQuery};
use super::params::Params;
use super::AppState;
use crate::db::stats::KeywordRow;
use crate::db::summary::SUMMARY_JOB;

/// Users answered when `limit` is not given, and the most allowed.
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1_000;

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

fn date_param(params: &Params) -> Result<NaiveDate, ApiError> {
    let text = params
        .get("date")
        .ok_or_else(|| ApiError::bad("missing_parameter", "date is required: the UTC day, YYYY-MM-DD"))?;
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| ApiError::bad("bad_date", format!("date: {text:?} is not a day YYYY-MM-DD")))
}

fn limit_param(params: &Params) -> Result<i64, ApiError> {
    let Some(text) = params.get("limit") else { return Ok(DEFAULT_LIMIT) };
    match text.parse::<i64>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::bad("bad_limit", format!("limit: {text:?} is not a whole number from 1 to {MAX_LIMIT}"))),
    }
}

fn user_param(params: &Params) -> Result<Option<String>, ApiError> {
    params
        .get("user_id")
        .map(|u| {
            actors::domain::UserId::parse(u)
                .map(actors::domain::UserId::into_inner)
                .map_err(|e| ApiError::bad("bad_user_id", format!("user_id {e}")))
        })
        .transpose()
}

fn time(t: DateTime<Utc>) -> Value {
    json!(t.to_rfc3339_opts(SecondsFormat::Micros, true))
}

#[utoipa::path(get, path = "/stats/summary", tag = "stats", params(SummaryQuery),
    responses(
        (status = 200, body = SummaryAnswer),
        (status = 400, description = "A parameter is malformed, unknown or repeated", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "The day has not been summarized", body = ErrorBody),
        (status = 429, description = "Over RATE_LIMIT_RPS; see Retry-After", body = ErrorBody),
        (status = 503, description = "PostgreSQL did not answer in time", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn summary(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.auth.check(&req)?;
    let params = Params::parse(req.query_string(), &["date", "user_id", "limit"])?;
    let day = date_param(&params)?;
    let user = user_param(&params)?;
    let limit = limit_param(&params)?;

    let timeout = Duration::from_millis(state.database_timeout_ms);
    let unavailable = |e: String| ApiError::unavailable("postgres_unavailable", format!("PostgreSQL: {e}"));
    let query = async {
        let mut conn = state.pool.get().await.map_err(|e| e.to_string())?;
        let run: RunRow = diesel::sql_query(
            "SELECT max(finished) AS finished, (array_agg(invalid_rows ORDER BY finished DESC))[1] AS invalid_rows \
             FROM job_runs WHERE job = $1 AND day = $2 AND status = 'ok'",
        )
        .bind::<Text, _>(SUMMARY_JOB)
        .bind::<Date, _>(day)
        .get_result(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
        if run.finished.is_none() {
            return Ok(None);
        }
        let users: Vec<UserRow> = diesel::sql_query(
            "SELECT user_id, total, errors, warnings, error_rate, services, first_seen, last_seen, top_keywords \
             FROM user_log_summary WHERE day = $1 AND ($2::text IS NULL OR user_id = $2) \
             ORDER BY total DESC, user_id LIMIT $3",
        )
        .bind::<Date, _>(day)
        .bind::<Nullable<Text>, _>(user.clone())
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
        Ok::<_, String>(Some((run, users, keywords)))
    };
    let answer = tokio::time::timeout(timeout, query)
        .await
        .map_err(|_| unavailable(format!("no answer within {} ms", timeout.as_millis())))?
        .map_err(unavailable)?;
    let Some((run, users, keywords)) = answer else {
        return Err(ApiError::NotFound {
            code: "not_summarized",
            message: format!("{day} has not been summarized (run `log-analyzer summary --date {day}`)"),
        });
    };
    let users: Vec<Value> = users
        .into_iter()
        .map(|u| {
            json!({
                "user_id": u.user_id, "total": u.total, "errors": u.errors, "warnings": u.warnings,
                "error_rate": u.error_rate, "services": u.services, "first_seen": time(u.first_seen),
                "last_seen": time(u.last_seen), "top_keywords": u.top_keywords,
            })
        })
        .collect();
    let keywords: Vec<Value> = keywords.into_iter().map(|k| json!({"keyword": k.keyword, "count": k.count})).collect();
    Ok(HttpResponse::Ok().json(json!({
        "date": day.to_string(),
        "summarized_at": run.finished.map(time),
        "invalid_rows": run.invalid_rows.unwrap_or_else(|| json!({})),
        "users": users,
        "keywords": keywords,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(name: &str, value: &[u8]) -> Option<Params> {
        Params::parse(&format!("{name}={}", crate::http::params::tests::encoded(value)), &["date", "user_id", "limit"])
            .ok()
    }

    fn is_400<T>(r: Result<T, ApiError>) -> bool {
        r.as_ref().err().is_none_or(|e| matches!(e, ApiError::BadRequest { .. }))
    }

    proptest::proptest! {
        #[test]
        fn any_date_user_or_limit_is_a_400_or_parses(
            name in proptest::sample::select(vec!["date", "user_id", "limit"]),
            text in "\\PC{0,40}",
        ) {
            if let Some(p) = params(name, text.as_bytes()) {
                proptest::prop_assert!(is_400(date_param(&p)));
                proptest::prop_assert!(is_400(user_param(&p)));
                proptest::prop_assert!(is_400(limit_param(&p)));
            }
        }
    }

    #[test]
    fn non_ascii_dates_and_limits_are_400s() {
        let p = params("date", "2026-01-0é".as_bytes()).unwrap();
        assert!(matches!(date_param(&p), Err(ApiError::BadRequest { code: "bad_date", .. })));
        let p = params("limit", "1é".as_bytes()).unwrap();
        assert!(matches!(limit_param(&p), Err(ApiError::BadRequest { code: "bad_limit", .. })));
    }
}
