//! The admin listener (`ADMIN_ADDR`, keep it private): `/metrics` for Prometheus, `/debug/actors`,
//! `/debug/pprof/profile`, and `/debug/log-level`.
//!
//! Each component defines its metrics beside itself and registers them in [`Metrics`]; what its
//! actors count in atomics on the hot path is copied in at each scrape, and what happens in the
//! shell (a request, a delta) is counted by its event as it happens.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use actors::mailbox::{ActorRegistry, Inbox};
use actors::windows::aggregator::QueryStatus;
use actors::windows::WindowAggregatorActor;
use prometheus::{CounterVec, Encoder, IntCounterVec, IntGauge, IntGaugeVec, Registry, TextEncoder};
use serde_json::json;

use crate::kafka::source::SourceState;
use crate::telemetry::metric::{counter, gauge, raise_to, register, seconds_counter};
use crate::telemetry::LogLevelHandle;

/// The registry every metric of the process is in; each component's metrics are defined beside it
/// and registered here, so a scrape answers them all.
pub struct Metrics {
    registry: Registry,
    /// Every actor's mailbox probe.
    pub actors: ActorRegistry,
    mailbox_depth: IntGaugeVec,
    handled: IntCounterVec,
    send_blocked: CounterVec,
    restarts: IntCounterVec,
    window_buckets: IntGauge,
    /// The Kafka source's partitions (`run`, `ingest`).
    pub source: crate::kafka::source::metrics::SourceMetrics,
    /// The writers into PostgreSQL (`run`, `ingest`).
    pub writers: crate::ingest::metrics::WriterMetrics,
    /// The public listener.
    pub http: crate::http::metrics::HttpMetrics,
    /// Redis reads on the stats path: `hit`, `miss`, `error` (see `http::metrics::cache_requests`).
    pub cache: IntCounterVec,
    /// Stats answers by route and source.
    pub answers: IntCounterVec,
    /// Bucket deltas offered to Redis.
    pub deltas: crate::cache::delta_writer::DeltaMetrics,
    /// The daily summary job.
    pub summary: crate::jobs::SummaryMetrics,
    /// The in-process generator (`run --generate`).
    pub generator: crate::generate::metrics::GeneratorMetrics,
    /// The live tails (`GET /logs/tail`).
    pub tail: crate::http::tail::TailMetrics,
    /// The embedded store's keyword indexer.
    pub keyword_index: Arc<crate::sqlite::indexer::IndexerMetrics>,
    /// The embedded store's background WAL checkpoints.
    pub sqlite_checkpoints: Arc<crate::sqlite::checkpoint::CheckpointMetrics>,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::with_mailbox_timing(true)
    }

    /// Metrics whose actor probes time every message (`MAILBOX_METRICS=on`) or only count them.
    pub fn with_mailbox_timing(timed: bool) -> Metrics {
        let r = Registry::new();
        let actors = ActorRegistry::with_timing(timed);
        register(&r, actors.handling_histogram());
        let actor = ["actor", "instance"];
        Metrics {
            mailbox_depth: gauge(
                &r,
                "log_analyzer_actor_mailbox_depth",
                "Messages sent to the actor and not yet taken",
                &actor,
            ),
            handled: counter(&r, "log_analyzer_actor_messages_handled_total", "Messages the actor handled", &actor),
            send_blocked: seconds_counter(
                &r,
                "log_analyzer_actor_send_blocked_seconds_total",
                "Time senders spent waiting for the actor to take their message (full mailbox or queue)",
                &actor,
            ),
            restarts: counter(
                &r,
                "log_analyzer_actor_restarts_total",
                "Restarts by a supervisor or the source",
                &actor,
            ),
            window_buckets: register(
                &r,
                IntGauge::new("log_analyzer_window_buckets", "Seconds held in the in-memory windows")
                    .expect("metric definition"),
            ),
            source: crate::kafka::source::metrics::SourceMetrics::new(&r),
            writers: crate::ingest::metrics::WriterMetrics::new(&r),
            cache: crate::http::metrics::cache_requests(&r),
            deltas: crate::cache::delta_writer::DeltaMetrics::new(&r),
            answers: crate::http::metrics::stats_answers(&r),
            http: crate::http::metrics::HttpMetrics::new(&r),
            summary: crate::jobs::SummaryMetrics::new(&r),
            generator: crate::generate::metrics::GeneratorMetrics::new(&r),
            tail: crate::http::tail::TailMetrics::new(&r),
            keyword_index: Arc::new(crate::sqlite::indexer::IndexerMetrics::new(&r)),
            sqlite_checkpoints: Arc::new(crate::sqlite::checkpoint::CheckpointMetrics::new(&r)),
            actors,
            registry: r,
        }
    }

    /// The registry in Prometheus' text format (what `/metrics` answers, without the refresh).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding of metrics");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// Counters for a generator run in this process, exported as `log_analyzer_generator_*`.
    pub fn watch_generator(&self) -> Arc<actors::generator::GeneratorStats> {
        self.generator.watch()
    }

    /// Brings what is counted outside the registry in: the actors' probes, and each component's
    /// counters kept in its actors.
    fn refresh(&self) {
        for probe in self.actors.probes() {
            let labels = [probe.actor(), probe.instance()];
            self.mailbox_depth.with_label_values(&labels).set(probe.mailbox_depth());
            raise_to(&self.handled, &labels, probe.handled());
            raise_to(&self.restarts, &labels, probe.restarts());
            let blocked = self.send_blocked.with_label_values(&labels);
            blocked.inc_by((probe.send_blocked().as_secs_f64() - blocked.get()).max(0.0));
        }
        self.writers.refresh();
        self.source.refresh();
        self.generator.refresh();
        self.summary.refresh();
        self.tail.refresh();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// What the admin routes read.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    /// The partitions owned, for /debug/actors.
    pub source: Option<Arc<SourceState>>,
    pub aggregator: Option<Inbox<WindowAggregatorActor>>,
    pub log_level: LogLevelHandle,
    /// The dashboard's feed, for the operator's page at `/` (roles that serve the public API).
    pub dashboard: Option<Arc<crate::http::dashboard::DashboardFeed>>,
}

async fn metrics(state: web::Data<AdminState>) -> HttpResponse {
    if let Some(aggregator) = &state.aggregator {
        if let Ok(status) = aggregator.send(QueryStatus).await {
            state.metrics.window_buckets.set(status.seconds_held as i64);
        }
    }
    state.metrics.refresh();
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&state.metrics.registry.gather(), &mut out) {
        return HttpResponse::InternalServerError().body(e.to_string());
    }
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(out)
}

/// Every actor with its mailbox figures; consumers (instance `topic/partition`) with the partition
/// they own and its counters.
async fn actors(state: web::Data<AdminState>) -> HttpResponse {
    use crate::kafka::source::partition_name;
    let owned: Vec<String> =
        state.source.as_ref().map(|s| s.owned().iter().map(partition_name).collect()).unwrap_or_default();
    let mut list = Vec::new();
    for probe in state.metrics.actors.probes() {
        let mut entry = serde_json::to_value(probe.snapshot()).expect("snapshot serializes");
        if probe.actor() == "consumer" {
            let instance = probe.instance();
            let owns = owned.iter().any(|p| p.as_str() == instance);
            entry["partitions"] = json!(if owns { vec![instance] } else { vec![] });
            if let Some(source) = &state.source {
                let stats = source.all_partitions().into_iter().find(|(q, _)| partition_name(q) == instance);
                if let Some((_, stats)) = stats {
                    entry["messages"] = json!(stats.messages.load(Ordering::Relaxed));
                    entry["batches"] = json!(stats.batches.load(Ordering::Relaxed));
                    entry["stored_offset"] = json!(stats.stored_offset.load(Ordering::Relaxed));
                }
            }
        }
        if probe.actor() == "keyword_indexer" {
            entry["lag_rows"] = json!(state.metrics.keyword_index.lag());
            entry["indexed_rowid"] = json!(state.metrics.keyword_index.mark());
        }
        list.push(entry);
    }
    let aggregator = match &state.aggregator {
        Some(a) => match a.send(QueryStatus).await {
            Ok(s) => json!({"ready": s.ready, "owns_all": s.owns_all, "seconds_held": s.seconds_held,
                            "rebuilds": s.rebuilds, "watermark_ms": s.watermark_ms}),
            Err(e) => json!({"error": e.to_string()}),
        },
        None => serde_json::Value::Null,
    };
    // Per owned partition: the broker's high watermark less the offset stored (what the total lag sums).
    let lag: serde_json::Map<String, serde_json::Value> = match &state.source {
        Some(source) => {
            let highs = source.high_watermarks.lock().expect("source state").clone();
            let partitions = source.partitions.lock().expect("source state");
            partitions
                .iter()
                .map(|(p, stats)| {
                    let lag =
                        highs.get(p).map(|high| (high - stats.stored_offset.load(Ordering::Relaxed) as i64).max(0));
                    (partition_name(p), json!(lag))
                })
                .collect()
        }
        None => serde_json::Map::new(),
    };
    HttpResponse::Ok().json(json!({
        "actors": list,
        "partitions": owned,
        "lag": lag,
        "aggregator": aggregator,
        "dashboards": state.dashboard.as_ref().map(|feed| feed.sessions()),
    }))
}

/// `GET`: the current level; `PUT` with a level name (`debug`, `info`, …) as the body: sets it.
async fn log_level(state: web::Data<AdminState>, req: actix_web::HttpRequest, body: String) -> HttpResponse {
    if req.method() == actix_web::http::Method::PUT {
        match crate::config::parse_log_level(body.trim()) {
            Ok(level) => state.log_level.set(level),
            Err(e) => return HttpResponse::BadRequest().json(json!({"error": "bad_level", "message": e})),
        }
    }
    HttpResponse::Ok().json(json!({"level": state.log_level.get().as_str().to_ascii_lowercase()}))
}

/// One CPU profile at a time: the sampler is process-wide.
static PROFILING: AtomicBool = AtomicBool::new(false);

#[derive(serde::Deserialize)]
struct ProfileQuery {
    seconds: Option<u64>,
    format: Option<String>,
}

/// Samples every thread's stack at 99 Hz for `seconds` (1–120, default 10) and answers a pprof
/// protobuf (`format=pb`, the default; `go tool pprof` reads it) or a flamegraph (`format=svg`).
async fn profile(query: web::Query<ProfileQuery>) -> HttpResponse {
    let seconds = query.seconds.unwrap_or(10);
    if !(1..=120).contains(&seconds) {
        return HttpResponse::BadRequest().json(json!({"error": "bad_seconds", "message": "seconds must be 1 to 120"}));
    }
    let format = query.format.as_deref().unwrap_or("pb");
    if !matches!(format, "pb" | "svg") {
        return HttpResponse::BadRequest().json(json!({"error": "bad_format", "message": "format must be pb or svg"}));
    }
    if PROFILING.swap(true, Ordering::AcqRel) {
        return HttpResponse::Conflict()
            .json(json!({"error": "busy", "message": "a profile is already being taken; retry when it ends"}));
    }
    let result = take_profile(Duration::from_secs(seconds), format == "svg").await;
    PROFILING.store(false, Ordering::Release);
    match result {
        Ok(body) if format == "svg" => HttpResponse::Ok().content_type("image/svg+xml").body(body),
        Ok(body) => HttpResponse::Ok()
            .content_type("application/octet-stream")
            .insert_header(("content-disposition", "attachment; filename=\"profile.pb\""))
            .body(body),
        Err(e) => HttpResponse::InternalServerError().json(json!({"error": "profiler", "message": e})),
    }
}

async fn take_profile(duration: Duration, svg: bool) -> Result<Vec<u8>, String> {
    // Unwinding inside these libraries from a signal handler can deadlock: their frames are skipped.
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(99)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| e.to_string())?;
    actix_rt::time::sleep(duration).await;
    let report = guard.report().build().map_err(|e| e.to_string())?;
    drop(guard);
    let mut out = Vec::new();
    if svg {
        if report.data.is_empty() {
            // An idle process: no stack was sampled, and a flamegraph of nothing is not an image.
            let text = format!("no CPU samples in {} s: the process was idle", duration.as_secs());
            out = format!(
                r#"<?xml version="1.0" standalone="no"?><svg version="1.1" width="600" height="40" xmlns="http://www.w3.org/2000/svg"><text x="10" y="25">{text}</text></svg>"#
            )
            .into_bytes();
        } else {
            report.flamegraph(&mut out).map_err(|e| e.to_string())?;
        }
    } else {
        use pprof::protos::Message;
        let profile = report.pprof().map_err(|e| e.to_string())?;
        profile.encode(&mut out).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// `ADMIN_TOKEN`, when set: what the routes that change the process or cost it CPU require.
struct AdminToken(Option<crate::config::Secret>);

impl AdminToken {
    /// Whether this request must show the token: changing the log level, and every profile.
    fn guards(req: &actix_web::dev::ServiceRequest) -> bool {
        req.path().starts_with("/debug/pprof/")
            || (req.path() == "/debug/log-level" && req.method() != actix_web::http::Method::GET)
    }

    fn admits(&self, header: Option<&str>) -> bool {
        let Some(expected) = &self.0 else { return true };
        let given = header.and_then(crate::http::auth::bearer_token).unwrap_or_default();
        // Compared in time independent of where they differ, so the token cannot be guessed byte by byte.
        let (a, b) = (given.as_bytes(), expected.expose().as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

async fn require_admin_token(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let token = req.app_data::<web::Data<AdminToken>>().cloned();
    if let Some(token) = token.filter(|_| AdminToken::guards(&req)) {
        let header = req.headers().get("Authorization").and_then(|h| h.to_str().ok());
        if !token.admits(header) {
            let response = HttpResponse::Unauthorized().insert_header(("WWW-Authenticate", "Bearer")).json(json!({
                "error": "unauthorized",
                "message": "this admin route needs Authorization: Bearer <ADMIN_TOKEN>",
            }));
            return Ok(req.into_response(response));
        }
    }
    next.call(req).await.map(actix_web::dev::ServiceResponse::map_into_boxed_body)
}

/// The admin server on an already bound listener; with `admin_token`, PUT /debug/log-level and
/// /debug/pprof/* require `Authorization: Bearer <admin_token>`.
pub fn serve(
    state: AdminState,
    admin_token: Option<crate::config::Secret>,
    listener: TcpListener,
) -> std::io::Result<actix_web::dev::Server> {
    let dashboard = state.dashboard.clone().map(web::Data::new);
    let state = web::Data::new(state);
    let token = web::Data::new(AdminToken(admin_token));
    Ok(HttpServer::new(move || {
        let app = App::new();
        let app = match &dashboard {
            Some(feed) => app.app_data(feed.clone()).configure(crate::http::dashboard::operator_routes),
            None => app,
        };
        app.app_data(state.clone())
            .app_data(token.clone())
            .wrap(actix_web::middleware::from_fn(require_admin_token))
            .route("/metrics", web::get().to(metrics))
            .route("/debug/actors", web::get().to(actors))
            .route("/debug/log-level", web::get().to(log_level))
            .route("/debug/log-level", web::put().to(log_level))
            .route("/debug/pprof/profile", web::get().to(profile))
    })
    // Two workers: a profile being taken does not hold up a scrape.
    .workers(2)
    .shutdown_timeout(2)
    .listen(listener)?
    .run())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_token_must_match_exactly_when_set() {
        let open = AdminToken(None);
        assert!(open.admits(None));
        let token = AdminToken(Some(crate::config::Secret::new("admin-token-1")));
        assert!(token.admits(Some("Bearer admin-token-1")));
        assert!(token.admits(Some("bearer admin-token-1")));
        for bad in
            [None, Some("Bearer admin-token-2"), Some("Bearer admin-token-1x"), Some("admin-token-1"), Some("Bearer ")]
        {
            assert!(!token.admits(bad), "{bad:?}");
        }
    }
}
