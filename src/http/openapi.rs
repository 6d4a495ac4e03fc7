//! `GET /openapi.json`: the public API as an OpenAPI 3.1 document, generated (utoipa) from the
//! handlers' `#[utoipa::path]` annotations and the types below, so it cannot drift into fiction.
//! The shapes here are the answers' contract; schemathesis (scripts/fuzz-api.sh) checks every real
//! answer against them.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use actix_web::HttpResponse;
use serde::Serialize;
use utoipa::{IntoParams, OpenApi, ToSchema};

/// Every 4xx and 5xx answer of the public API.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code (`bad_window`, `unauthorized`, `rate_limited`, `source_unavailable`, …).
    pub error: String,
    /// What went wrong and what to do about it, for a person.
    pub message: String,
}

/// Which path answered.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceName {
    Memory,
    Redis,
    Postgres,
    /// The embedded mode's store.
    Sqlite,
}

/// How fresh the answer is.
#[derive(Serialize, ToSchema)]
pub struct Freshness {
    /// The newest committed event time (RFC 3339, ms), when known.
    pub watermark: Option<String>,
    /// Consumer lag this process knows, in events.
    pub lag_events: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct ServiceErrors {
    pub service: String,
    pub total: u64,
    pub errors: u64,
}

#[derive(Serialize, ToSchema)]
pub struct OtherServices {
    pub total: u64,
    pub errors: u64,
}

/// `GET /stats/errors`.
#[derive(Serialize, ToSchema)]
pub struct ErrorsAnswer {
    /// The window as given back in its largest exact unit (`90s`, `5m`, `1h`).
    pub window: String,
    pub window_seconds: u64,
    /// Window start (RFC 3339, inclusive).
    pub from: Option<String>,
    /// Window end (RFC 3339, exclusive).
    pub to: Option<String>,
    pub total: u64,
    pub errors: u64,
    pub error_rate: f64,
    /// The `limit` services with the most errors (then by name).
    pub by_service: Vec<ServiceErrors>,
    /// The window's other services, summed: `total` = Σ `by_service.total` + `other.total`.
    pub other: OtherServices,
    pub source: SourceName,
    pub freshness: Freshness,
}

/// `GET /stats/keywords`.
#[derive(Serialize, ToSchema)]
pub struct KeywordAnswer {
    pub keyword: String,
    pub window: String,
    pub window_seconds: u64,
    pub from: Option<String>,
    pub to: Option<String>,
    pub count: u64,
    pub source: SourceName,
    pub freshness: Freshness,
}

#[derive(Serialize, ToSchema)]
pub struct KeywordCount {
    pub keyword: String,
    pub count: u64,
}

/// `GET /stats/keywords/top`.
#[derive(Serialize, ToSchema)]
pub struct TopKeywordsAnswer {
    pub window: String,
    pub window_seconds: u64,
    pub from: Option<String>,
    pub to: Option<String>,
    /// Most frequent first, then alphabetical.
    pub keywords: Vec<KeywordCount>,
    pub source: SourceName,
    pub freshness: Freshness,
}

#[derive(Serialize, ToSchema)]
pub struct UserSummary {
    pub user_id: String,
    pub total: i64,
    pub errors: i64,
    pub warnings: i64,
    pub error_rate: f64,
    pub services: Vec<String>,
    pub first_seen: String,
    pub last_seen: String,
    /// `[{keyword, count}]`, most frequent first.
    pub top_keywords: Vec<KeywordCount>,
}

/// `GET /stats/summary`.
#[derive(Serialize, ToSchema)]
pub struct SummaryAnswer {
    /// The UTC day, YYYY-MM-DD.
    pub date: String,
    pub summarized_at: Option<String>,
    /// Rows the job could not use, by reason.
    pub invalid_rows: BTreeMap<String, u64>,
    pub users: Vec<UserSummary>,
    pub keywords: Vec<KeywordCount>,
}

/// One stored event, as a search finds it.
#[derive(Serialize, ToSchema)]
pub struct FoundEventBody {
    /// Event time (RFC 3339, microseconds, UTC).
    #[schema(example = "2026-12-01T11:59:58.123456Z")]
    pub ts: String,
    /// trace, debug, info, warn, error or fatal.
    pub level: String,
    pub service: String,
    pub message: String,
    pub user_id: Option<String>,
    /// The event's other fields, as stored.
    pub attrs: serde_json::Value,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// Where a search answer came from.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SearchSource {
    Postgres,
    Sqlite,
}

/// `GET /logs`: one page of matching events.
#[derive(Serialize, ToSchema)]
pub struct SearchAnswer {
    /// Newest first; ties by partition, then offset, then topic (all descending).
    pub events: Vec<FoundEventBody>,
    /// Pass as `cursor` for the next page; null when nothing matching is left.
    pub next_cursor: Option<String>,
    /// The page stopped after SEARCH_MAX_SCAN rows: it may hold fewer than `limit` events although
    /// more match further on; `next_cursor` goes on from the last row examined.
    pub truncated: bool,
    pub source: SearchSource,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct LogsQuery {
    /// Space-separated terms, all required, tokenized as messages are (`db:timeout` is the two
    /// tokens db and timeout); `-term` excludes one token. At most 16 tokens, 1024 bytes.
    #[param(example = "timeout -retry")]
    pub q: Option<String>,
    /// Only this service.
    pub service: Option<String>,
    /// One level (`error`), or a minimum (`warn+`, the `+` sent as `%2B` or as a space).
    #[param(example = "warn+")]
    pub level: Option<String>,
    /// Events at or after this time: RFC 3339 or epoch seconds.
    pub from: Option<String>,
    /// Events before this time: RFC 3339 or epoch seconds.
    pub to: Option<String>,
    /// Events per page, 1–1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`, as it came.
    pub cursor: Option<String>,
}

/// One line of a POST /ingest body that was refused or not queued.
#[derive(Serialize, ToSchema)]
pub struct LineError {
    /// 1-based line number in the body.
    pub line: u64,
    /// A reject reason (`not_json`, `missing_field`, …) or `not_queued`.
    pub reason: String,
    pub message: String,
}

/// `POST /ingest`: what happened to the lines of the body.
#[derive(Serialize, ToSchema)]
pub struct IngestAnswer {
    /// Lines Kafka acknowledged.
    pub accepted: u64,
    /// Lines refused (each stored as a dead letter with its reason).
    pub rejected: u64,
    /// `rejected` by reason code.
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// The first 100 line errors, by line number.
    pub errors: Vec<LineError>,
    /// More line errors than `errors` lists.
    pub errors_truncated: bool,
    /// Lines Kafka did not acknowledge: send them again.
    pub not_queued: u64,
    /// When some lines were not queued: `[first, last]` ranges of those lines (the first 100).
    pub not_queued_lines: Option<Vec<[u64; 2]>>,
    /// When some lines were not queued: `[first, last]` ranges of the queued lines (the first 100).
    pub queued_lines: Option<Vec<[u64; 2]>>,
}

/// `POST /ingest?dry_run=true`: each line resolved as ingest would, nothing stored.
#[derive(Serialize, ToSchema)]
pub struct DryRunAnswer {
    pub dry_run: bool,
    /// `{line, event}` or `{line, reject: {reason, detail}}` per non-blank line.
    pub lines: Vec<serde_json::Value>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct IngestParams {
    /// Service of lines that name none (1–128 bytes, no control characters).
    pub service: Option<String>,
    /// Resolve and answer each line, store nothing.
    pub dry_run: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// `GET /readyz`: 200 when the store (PostgreSQL, or SQLite in the embedded mode) answers and ingest
/// is not stalled on it, else 503, with each dependency's state.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// The stack: `{postgres, redis, kafka}`; the embedded mode: `{sqlite, queue}`. Each `up`,
    /// `down`, `disabled` or `unknown`.
    pub dependencies: BTreeMap<String, String>,
    /// The in-memory windows: `ready`, `not_owner`, `rebuilding`, `down` or `disabled`.
    pub memory: String,
    /// `disabled` in roles without ingest, else `{state: flowing|stalled, waiting_on, partitions,
    /// paused, stalled}`.
    pub ingest: serde_json::Value,
}

/// Forces one path (503 when it cannot answer), for cross-checks. The stack's sources are memory,
/// redis and postgres; the embedded mode's are memory and sqlite (another is a 400).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceParam {
    Memory,
    Redis,
    Postgres,
    Sqlite,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Only read by the OpenAPI generator.
pub struct ErrorsQuery {
    /// `<integer><s|m|h|d>`, 1 s up to RETENTION_DAYS; default `60s`.
    #[param(pattern = "^[0-9]+[smhd]$", example = "5m")]
    pub window: Option<String>,
    /// Only this service (1–128 bytes, no control characters).
    pub service: Option<String>,
    /// Window end: RFC 3339 or epoch seconds; default now.
    #[param(example = "2026-11-26T10:00:00Z")]
    pub at: Option<String>,
    pub source: Option<SourceParam>,
    /// Services listed in `by_service` (most errors first, then by name), 1–1000, default 100;
    /// the rest are summed in `other`.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct KeywordQuery {
    /// Exactly one keyword token (case-insensitive).
    #[param(example = "timeout")]
    pub q: String,
    /// `<integer><s|m|h|d>`; default `1h`.
    #[param(pattern = "^[0-9]+[smhd]$")]
    pub window: Option<String>,
    pub service: Option<String>,
    pub at: Option<String>,
    pub source: Option<SourceParam>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct TopKeywordsQuery {
    /// `<integer><s|m|h|d>`; default `5m`.
    #[param(pattern = "^[0-9]+[smhd]$")]
    pub window: Option<String>,
    /// 1–100, default 10.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    pub at: Option<String>,
    pub source: Option<SourceParam>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct SummaryQuery {
    /// The UTC day, YYYY-MM-DD.
    #[param(example = "2026-11-25", format = Date)]
    pub date: String,
    /// Only this user.
    pub user_id: Option<String>,
    /// Users and keywords answered: 1–1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// The ingest handler is documented here rather than on itself, so its file carries no OpenAPI.
#[utoipa::path(
    post,
    path = "/ingest",
    tag = "ingest",
    request_body(content = String, content_type = "application/x-ndjson",
                 description = "One event per line: a JSON object in any shape of README's Log events, or a text line; blank lines are skipped"),
    params(IngestParams,
           ("Idempotency-Key" = Option<String>, Header, description = "1–255 visible ASCII characters: a retry with the same key and body within 24 h gets the first answer")),
    responses(
        (status = 200, description = "dry_run=true: each line resolved, nothing stored", body = DryRunAnswer),
        (status = 202, description = "Every line queued (Kafka, or committed to SQLite in the embedded mode) or refused with its reason", body = IngestAnswer),
        (status = 400, description = "The body could not be read", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 408, description = "The body did not arrive within HTTP_BODY_TIMEOUT_MS", body = ErrorBody),
        (status = 409, description = "A request with this Idempotency-Key has no answer yet", body = ErrorBody),
        (status = 413, description = "The body is over INGEST_MAX_BODY_BYTES", body = ErrorBody),
        (status = 422, description = "This Idempotency-Key was used with another body", body = ErrorBody),
        (status = 429, description = "Over RATE_LIMIT_RPS; see Retry-After", body = ErrorBody),
        (status = 503, description = "The queue took no line (kafka_unavailable, also in the embedded mode, with IngestAnswer's fields), or the store did not take the dead letters", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
#[allow(dead_code)]
fn ingest() {}

/// `GET /openapi.json` itself.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
               responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json")))]
pub async fn serve_document() -> HttpResponse {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let body = DOCUMENT.get_or_init(|| document().to_json().expect("the OpenAPI document serializes"));
    HttpResponse::Ok().content_type("application/json").body(body.as_str())
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "log-analyzer", description = "Exact, live answers about a Kafka stream of application logs. \
          With JWT_SECRET or JWT_PUBLIC_KEY set, /stats/*, /logs and the intake routes (/ingest, /v1/logs, /loki/api/v1/push) need a Bearer token."),
    paths(
        super::routes::errors,
        super::routes::keywords,
        super::routes::top_keywords,
        super::summary::summary,
        ingest,
        super::protocols::otlp_logs,
        super::protocols::loki_push,
        super::search::logs,
        super::search::event,
        super::tail::tail,
        super::routes::healthz,
        super::routes::readyz,
        serve_document,
    ),
    // Schemas only named by query parameters are not collected on their own.
    components(schemas(SourceParam)),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

/// The whole document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_and_covers_every_public_route() {
        let doc: serde_json::Value = serde_json::from_str(&document().to_json().unwrap()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
        let paths = doc["paths"].as_object().unwrap();
        for (path, method) in [
            ("/stats/errors", "get"),
            ("/stats/keywords", "get"),
            ("/stats/keywords/top", "get"),
            ("/stats/summary", "get"),
            ("/ingest", "post"),
            ("/v1/logs", "post"),
            ("/loki/api/v1/push", "post"),
            ("/logs", "get"),
            ("/logs/{topic}/{partition}/{offset}", "get"),
            ("/logs/tail", "get"),
            ("/healthz", "get"),
            ("/readyz", "get"),
        ] {
            let op = &paths[path][method];
            assert!(op.is_object(), "{method} {path} is missing");
            if path.starts_with("/stats")
                || path.starts_with("/logs")
                || matches!(path, "/ingest" | "/v1/logs" | "/loki/api/v1/push")
            {
                for status in ["400", "401", "429"] {
                    let schema = &op["responses"][status]["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(schema, "#/components/schemas/ErrorBody", "{path} {status}");
                }
            }
        }
        let otlp = &paths["/v1/logs"]["post"]["responses"]["200"]["content"];
        assert!(otlp["application/x-protobuf"].is_object() && otlp["application/json"].is_object(), "{otlp}");
        assert!(doc["components"]["schemas"]["SourceParam"].is_object(), "every $ref resolves");
        let error = &doc["components"]["schemas"]["ErrorBody"];
        assert_eq!(error["required"], serde_json::json!(["error", "message"]));
    }
}
