//! Stats, health and readiness handlers.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use actors::domain::Window;
use actors::mailbox::Inbox;
use actors::windows::aggregator::QueryStatus;
use actors::windows::{Source, WindowAggregatorActor, WindowRange};
use chrono::{SecondsFormat, TimeZone, Utc};
use futures::future::BoxFuture;
use serde_json::{json, Value};

use super::errors::ApiError;
#[allow(unused_imports)] // Named by the OpenAPI annotations.
use super::openapi::{
    ErrorBody, ErrorsAnswer, ErrorsQuery, Health, KeywordAnswer, KeywordQuery, Readiness, TopKeywordsAnswer,
    TopKeywordsQuery,
};
use super::params::Params;
use super::AppState;

fn rfc3339(second: i64) -> Value {
    Utc.timestamp_opt(second, 0).single().map_or(Value::Null, |t| json!(t.to_rfc3339_opts(SecondsFormat::Secs, true)))
}

/// The window fields every stats answer starts with.
fn window_fields(window: Window, range: WindowRange) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("window".into(), json!(window.to_string()));
    m.insert("window_seconds".into(), json!(window.seconds()));
    m.insert("from".into(), rfc3339(range.from));
    m.insert("to".into(), rfc3339(range.to));
    m
}

/// `{watermark, lag_events}`: the newest committed event time, and the consumer lag this process knows.
pub(crate) async fn freshness(state: &AppState) -> Value {
    json!(freshness_of(state).await)
}

/// The freshness fields, typed (fields in name order, as a `serde_json::Map` writes them).
#[derive(serde::Serialize)]
pub(crate) struct FreshnessBody {
    lag_events: Option<i64>,
    watermark: Option<String>,
}

async fn freshness_of(state: &AppState) -> FreshnessBody {
    let mut watermark_ms = None;
    // Read off the shared view: a round trip through the aggregator's mailbox would wait behind
    // the batch being folded, for a field that only says how fresh the answer is.
    if let Some(view) = &state.windows.memory_view {
        watermark_ms = view.watermark_ms();
    } else if let Some(agg) = &state.windows.memory {
        if let Ok(status) = agg.send(QueryStatus).await {
            watermark_ms = status.watermark_ms;
        }
    } else if let Some(redis_watermark) = &state.windows.redis_watermark {
        watermark_ms = redis_watermark().await;
    }
    let watermark = watermark_ms
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true));
    let lag_events = state.lag.as_ref().and_then(|lag| lag());
    FreshnessBody { lag_events, watermark }
}

fn count(state: &AppState, route: &str, source: Source) {
    state.metrics.answers.with_label_values(&[route, source.as_str()]).inc();
}

fn range_of(params: &Params, window: Window) -> Result<WindowRange, ApiError> {
    Ok(WindowRange::ending_at(params.at(Utc::now())?, window.seconds()))
}

#[utoipa::path(get, path = "/stats/errors", tag = "stats", params(ErrorsQuery),
    responses(
        (status = 200, body = ErrorsAnswer),
        (status = 400, description = "A parameter is malformed, unknown or repeated", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 429, description = "Over RATE_LIMIT_RPS; see Retry-After", body = ErrorBody),
        (status = 503, description = "No source (or not the forced one) could answer", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn errors(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.auth.check(&req)?;
    let params = Params::parse(req.query_string(), &["window", "service", "at", "source", "limit"])?;
    let window = params.window("60s", state.max_window)?;
    let range = range_of(&params, window)?;
    let service = params.service()?;
    let limit = params.service_limit()?;
    let (stats, source) =
        state.reader.errors(range, service, limit, params.source_among(&state.reader.sources())?).await?;
    count(&state, "errors", source);
    let body = ErrorsBody::new(window, range, &stats, source, freshness_of(&state).await);
    Ok(HttpResponse::Ok().content_type(actix_web::http::header::ContentType::json()).body(body.to_json()))
}

/// The answer of `GET /stats/errors`, serialized straight from the stats: building a
/// `serde_json::Value` tree first cost an allocation per key and per listed service, on the API's
/// busiest route. The fields are in name order, as the map they replace wrote them, so the bytes are
/// the same (`errors_body_writes_what_the_json_map_wrote`).
#[derive(serde::Serialize)]
struct ErrorsBody<'a> {
    by_service: ServiceList<'a>,
    error_rate: f64,
    errors: u64,
    freshness: FreshnessBody,
    from: Option<String>,
    other: Other,
    source: Source,
    to: Option<String>,
    total: u64,
    window: String,
    window_seconds: u64,
}

/// `other`, fields in name order.
#[derive(serde::Serialize)]
struct Other {
    errors: u64,
    total: u64,
}

/// `by_service`, each entry's fields in name order.
struct ServiceList<'a>(&'a [actors::windows::ServiceStats]);

impl serde::Serialize for ServiceList<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Entry<'a> {
            errors: u64,
            service: &'a str,
            total: u64,
        }
        serializer.collect_seq(self.0.iter().map(|s| Entry { errors: s.errors, service: &s.service, total: s.total }))
    }
}

fn rfc3339_text(second: i64) -> Option<String> {
    Utc.timestamp_opt(second, 0).single().map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

impl<'a> ErrorsBody<'a> {
    fn new(
        window: Window,
        range: WindowRange,
        stats: &'a actors::windows::ErrorStats,
        source: Source,
        freshness: FreshnessBody,
    ) -> ErrorsBody<'a> {
        ErrorsBody {
            by_service: ServiceList(&stats.by_service),
            error_rate: stats.error_rate(),
            errors: stats.errors,
            freshness,
            from: rfc3339_text(range.from),
            other: Other { errors: stats.other.errors, total: stats.other.total },
            source,
            to: rfc3339_text(range.to),
            total: stats.total,
            window: window.to_string(),
            window_seconds: window.seconds(),
        }
    }

    fn to_json(&self) -> Vec<u8> {
        // Serializing plain numbers, strings and options cannot fail.
        serde_json::to_vec(self).expect("an errors answer serializes")
    }
}

#[utoipa::path(get, path = "/stats/keywords", tag = "stats", params(KeywordQuery),
    responses(
        (status = 200, body = KeywordAnswer),
        (status = 400, description = "A parameter is malformed, unknown or repeated", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 429, description = "Over RATE_LIMIT_RPS; see Retry-After", body = ErrorBody),
        (status = 503, description = "No source (or not the forced one) could answer", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn keywords(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.auth.check(&req)?;
    let params = Params::parse(req.query_string(), &["q", "window", "service", "at", "source"])?;
    let keyword = params.keyword()?;
    let window = params.window("1h", state.max_window)?;
    let range = range_of(&params, window)?;
    let service = params.service()?;
    let (found, source) =
        state.reader.keyword(range, keyword.clone(), service, params.source_among(&state.reader.sources())?).await?;
    count(&state, "keywords", source);
    let mut body = serde_json::Map::new();
    body.insert("keyword".into(), json!(keyword));
    body.extend(window_fields(window, range));
    body.insert("count".into(), json!(found));
    body.insert("source".into(), json!(source));
    body.insert("freshness".into(), freshness(&state).await);
    Ok(HttpResponse::Ok().json(body))
}

#[utoipa::path(get, path = "/stats/keywords/top", tag = "stats", params(TopKeywordsQuery),
    responses(
        (status = 200, body = TopKeywordsAnswer),
        (status = 400, description = "A parameter is malformed, unknown or repeated", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 429, description = "Over RATE_LIMIT_RPS; see Retry-After", body = ErrorBody),
        (status = 503, description = "No source (or not the forced one) could answer", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn top_keywords(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.auth.check(&req)?;
    let params = Params::parse(req.query_string(), &["window", "limit", "at", "source"])?;
    let window = params.window("5m", state.max_window)?;
    let range = range_of(&params, window)?;
    let limit = params.limit()?;
    let (top, source) = state.reader.top_keywords(range, limit, params.source_among(&state.reader.sources())?).await?;
    count(&state, "keywords_top", source);
    let mut body = window_fields(window, range);
    body.insert("keywords".into(), json!(top));
    body.insert("source".into(), json!(source));
    body.insert("freshness".into(), freshness(&state).await);
    Ok(HttpResponse::Ok().json(body))
}

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "The process is up", body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready when the store (the authority) answers; names each dependency's state.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, description = "The store (PostgreSQL or SQLite) answers", body = Readiness),
    (status = 503, description = "The store does not answer", body = Readiness)))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let store_up = (state.windows.store_up)().await;
    let redis = match &state.windows.redis_up {
        Some(up) => json!(if up().await { "up" } else { "down" }),
        None => json!("disabled"),
    };
    // The view first: a question through the aggregator's mailbox holds the view's readers off
    // while it waits there (see MemoryView::current).
    let memory = match (&state.windows.memory_view, &state.windows.memory) {
        (Some(view), _) => json!(view.readiness()),
        (None, Some(agg)) => match agg.send(QueryStatus).await {
            Ok(s) if s.ready && s.owns_all => json!("ready"),
            Ok(s) if s.ready => json!("not_owner"),
            Ok(_) => json!("rebuilding"),
            Err(_) => json!("down"),
        },
        (None, None) => json!("disabled"),
    };
    let kafka = match &state.kafka_ready {
        Some(check) => json!(if check() { "up" } else { "down" }),
        None => json!("unknown"),
    };
    let (ingest, stalled) = match &state.ingest {
        Some(view) => {
            super::readiness::ingest_health(view.as_ref(), state.database_timeout_ms, state.windows.store.as_str())
        }
        None => (json!("disabled"), false),
    };
    let ready = store_up && !stalled;
    let dependencies = dependencies(state.windows.store, store_up, redis, kafka);
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "dependencies": dependencies,
        "memory": memory,
        "ingest": ingest,
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// `dependencies` of /readyz. The embedded mode has neither Kafka nor Redis: naming them "down"
/// there would send an operator looking for services that are not meant to exist.
fn dependencies(store: Source, store_up: bool, redis: Value, queue: Value) -> Value {
    let state = json!(if store_up { "up" } else { "down" });
    match store {
        Source::Sqlite => json!({ "sqlite": state, "queue": queue }),
        _ => json!({ "postgres": state, "redis": redis, "kafka": queue }),
    }
}

/// A check that waits on a dependency (a ping, a read).
pub type AsyncProbe<T> = Arc<dyn Fn() -> BoxFuture<'static, T> + Send + Sync>;

/// What readiness and the freshness fields ask of the window sources (the stats answers themselves
/// go through `AppState::reader`).
pub struct WindowHealth {
    /// This process's in-memory windows (`run`), for their state and watermark.
    pub memory: Option<Inbox<WindowAggregatorActor>>,
    /// The same windows' shared view: the watermark without a mailbox round trip.
    pub memory_view: Option<Arc<actors::windows::MemoryView>>,
    /// The store this process reads and writes: `Postgres`, or `Sqlite` in the embedded mode.
    pub store: Source,
    /// Whether the store answers a trivial query in time.
    pub store_up: AsyncProbe<bool>,
    /// Whether Redis answers, when configured.
    pub redis_up: Option<AsyncProbe<bool>>,
    /// The newest committed event time ingest processes reported to Redis (epoch ms).
    pub redis_watermark: Option<AsyncProbe<Option<i64>>>,
}

/// A probe the readiness check calls (kept abstract so roles can plug in what they know).
pub type Probe = Arc<dyn Fn() -> bool + Send + Sync>;
/// Consumer lag known to this process, if any.
pub type LagProbe = Arc<dyn Fn() -> Option<i64> + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_names_the_dependencies_of_its_mode() {
        let embedded = dependencies(Source::Sqlite, true, json!("disabled"), json!("up"));
        assert_eq!(embedded, json!({ "sqlite": "up", "queue": "up" }));
        let stack = dependencies(Source::Postgres, false, json!("disabled"), json!("up"));
        assert_eq!(stack, json!({ "postgres": "down", "redis": "disabled", "kafka": "up" }));
    }

    /// The typed answer writes the bytes the `serde_json::Map` it replaced wrote (that code, here).
    #[test]
    fn errors_body_writes_what_the_json_map_wrote() {
        use actors::domain::window_stats::OtherServices;
        use actors::windows::{ErrorStats, ServiceStats};
        let service = |name: &str, total, errors| ServiceStats { service: name.into(), total, errors };
        let stats = [
            ErrorStats {
                total: 9,
                errors: 3,
                by_service: vec![service("api \"x\"", 4, 2), service("db", 5, 1)],
                other: OtherServices { total: 0, errors: 0 },
            },
            ErrorStats { total: 0, errors: 0, by_service: vec![], other: OtherServices::default() },
            ErrorStats {
                total: 30,
                errors: 7,
                by_service: vec![service("ünï", 10, 7)],
                other: OtherServices { total: 20, errors: 0 },
            },
        ];
        for (i, stats) in stats.iter().enumerate() {
            let window = Window::parse_unbounded(["10s", "5m", "1h"][i]).unwrap();
            let range = WindowRange::ending_at(1_764_700_000 + i as i64, window.seconds());
            let (lag_events, watermark) =
                [(None, None), (Some(12), Some("2026-12-02T13:00:00.123Z".to_owned())), (Some(0), None)][i].clone();
            let source = [Source::Memory, Source::Postgres, Source::Redis][i];
            let typed = ErrorsBody::new(
                window,
                range,
                stats,
                source,
                FreshnessBody { lag_events, watermark: watermark.clone() },
            )
            .to_json();
            let mut body = window_fields(window, range);
            body.insert("total".into(), json!(stats.total));
            body.insert("errors".into(), json!(stats.errors));
            body.insert("error_rate".into(), json!(stats.error_rate()));
            body.insert("by_service".into(), json!(stats.by_service));
            body.insert("other".into(), json!(stats.other));
            body.insert("source".into(), json!(source));
            body.insert("freshness".into(), json!({ "watermark": watermark, "lag_events": lag_events }));
            let old = serde_json::to_vec(&body).unwrap();
            assert_eq!(String::from_utf8(typed).unwrap(), String::from_utf8(old).unwrap());
        }
    }
}
