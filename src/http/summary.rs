//! `GET /stats/summary?date=YYYY-MM-DD[&user_id=U][&limit=N]`: the daily summary as the job wrote it.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::errors::ApiError;
#[allow(unused_imports)] // Named by the OpenAPI annotations.
use super::openapi::{ErrorBody, SummaryAnswer, SummaryQuery};
use super::params::Params;
use super::AppState;

/// Users answered when `limit` is not given, and the most allowed.
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1_000;

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

    let answer = state
        .summary
        .day(day, user.as_deref(), limit)
        .await
        .map_err(|e| ApiError::unavailable("postgres_unavailable", format!("PostgreSQL: {e}")))?;
    let Some(summarized) = answer else {
        return Err(ApiError::NotFound {
            code: "not_summarized",
            message: format!("{day} has not been summarized (run `log-analyzer summary --date {day}`)"),
        });
    };
    let users: Vec<Value> = summarized
        .users
        .into_iter()
        .map(|u| {
            json!({
                "user_id": u.user_id, "total": u.total, "errors": u.errors, "warnings": u.warnings,
                "error_rate": u.error_rate, "services": u.services, "first_seen": time(u.first_seen),
                "last_seen": time(u.last_seen), "top_keywords": u.top_keywords,
            })
        })
        .collect();
    let keywords: Vec<Value> =
        summarized.keywords.into_iter().map(|(keyword, count)| json!({"keyword": keyword, "count": count})).collect();
    Ok(HttpResponse::Ok().json(json!({
        "date": day.to_string(),
        "summarized_at": time(summarized.summarized_at),
        "invalid_rows": summarized.invalid_rows,
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
