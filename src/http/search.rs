//! `GET /logs` (matching events, newest first, a page at a time) and
//! `GET /logs/{topic}/{partition}/{offset}` (one stored event), over the `LogSearch` port.

use actix_web::{web, HttpRequest, HttpResponse};
use actors::search::{BadSearch, SearchFailed, SearchPage, SearchParams};
use serde_json::json;

use super::errors::ApiError;
#[allow(unused_imports)] // Named by the OpenAPI annotations.
use super::openapi::{ErrorBody, FoundEventBody, LogsQuery, SearchAnswer};
use super::params::Params;
use super::AppState;

impl From<BadSearch> for ApiError {
    fn from(bad: BadSearch) -> ApiError {
        ApiError::bad(bad.code, bad.message)
    }
}

impl From<SearchFailed> for ApiError {
    fn from(failed: SearchFailed) -> ApiError {
        match failed {
            SearchFailed::Unavailable(why) => ApiError::unavailable("search_unavailable", why),
            SearchFailed::Corrupt(why) => ApiError::Internal { code: "corrupt_row", message: why },
        }
    }
}

/// The JSON of one page (the CLI's `--json` prints its events the same way).
pub fn page_body(page: &SearchPage, source: &str) -> serde_json::Value {
    json!({
        "events": page.events,
        "next_cursor": page.next_cursor.as_ref().map(|c| c.encode()),
        "truncated": page.truncated,
        "source": source,
    })
}

#[utoipa::path(get, path = "/logs", tag = "search", params(LogsQuery),
    responses(
        (status = 200, description = "Matching events, newest first (ties by partition, then offset, then topic)", body = SearchAnswer),
        (status = 400, description = "A parameter is malformed, unknown or repeated (bad_query, bad_level, bad_from, bad_cursor, …)", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 429, description = "Over RATE_LIMIT_RPS; see Retry-After", body = ErrorBody),
        (status = 500, description = "A stored row is corrupt: a level outside 0..=5 or attrs that are not JSON (corrupt_row)", body = ErrorBody),
        (status = 503, description = "The store did not answer in time (search_unavailable)", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn logs(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.auth.check(&req)?;
    // `Params` answers an unknown or repeated name with the route's usual 400 before the core sees it.
    let params = Params::parse(req.query_string(), &SearchParams::NAMES)?;
    let query = SearchParams::from_pairs(params.pairs())?.query()?;
    let page = state.search.search(&query).await?;
    Ok(HttpResponse::Ok().json(page_body(&page, state.search.source())))
}

#[utoipa::path(get, path = "/logs/{topic}/{partition}/{offset}", tag = "search",
    params(
        ("topic" = String, Path, description = "The Kafka topic the event was read from"),
        ("partition" = i32, Path, description = "The partition, a whole number ≥ 0"),
        ("offset" = i64, Path, description = "The offset in the partition, a whole number ≥ 0"),
    ),
    responses(
        (status = 200, description = "The stored event at that position", body = FoundEventBody),
        (status = 400, description = "partition or offset is not a whole number ≥ 0", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No event is stored there (not_found)", body = ErrorBody),
        (status = 429, description = "Over RATE_LIMIT_RPS; see Retry-After", body = ErrorBody),
        (status = 500, description = "A stored row is corrupt: a level outside 0..=5 or attrs that are not JSON (corrupt_row)", body = ErrorBody),
        (status = 503, description = "The store did not answer in time (search_unavailable)", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn event(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    state.auth.check(&req)?;
    if !req.query_string().is_empty() {
        return Err(ApiError::bad("unknown_parameter", "this route takes no query parameters"));
    }
    let (topic, partition, offset) = path.into_inner();
    let partition = partition.parse::<i32>().ok().filter(|p| *p >= 0).ok_or_else(|| {
        ApiError::bad("bad_partition", format!("partition: {partition:?} is not a whole number from 0 to 2147483647"))
    })?;
    let offset = offset
        .parse::<i64>()
        .ok()
        .filter(|o| *o >= 0)
        .ok_or_else(|| ApiError::bad("bad_offset", format!("offset: {offset:?} is not a whole number ≥ 0")))?;
    match state.search.event(&topic, partition, offset).await? {
        Some(found) => Ok(HttpResponse::Ok().json(found)),
        None => Err(ApiError::NotFound {
            code: "not_found",
            message: format!("no event is stored at {topic}/{partition}/{offset}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use actix_web::ResponseError;
    use futures::FutureExt;

    use super::*;

    #[test]
    fn a_store_down_is_a_503_and_a_corrupt_row_a_500() {
        let down = ApiError::from(SearchFailed::Unavailable("PostgreSQL: gone".into()));
        assert_eq!(down.status_code(), 503);
        let corrupt = ApiError::from(SearchFailed::Corrupt("the stored event at logs/0/1 has level 9".into()));
        assert_eq!(corrupt.status_code(), 500);
        let body = corrupt.error_response().into_body();
        let bytes = actix_web::body::to_bytes(body).now_or_never().unwrap().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json, json!({"error": "corrupt_row", "message": "the stored event at logs/0/1 has level 9"}));
    }
}
