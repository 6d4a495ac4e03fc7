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
