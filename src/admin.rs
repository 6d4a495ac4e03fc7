//! The admin listener (`ADMIN_ADDR`, keep it private): `/metrics` for Prometheus, `/debug/actors`,
//! `/debug/pprof/profile`, and `/debug/log-level`.
//!
//! Hot-path counters live in the actors as atomics (and in their mailbox probes); a scrape copies
//! them into the registry. Histograms and the HTTP counters are Prometheus types updated directly.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use actors::domain::RejectReason;
use actors::generator::GeneratorStats;
use actors::ingest::WriterStats;
use actors::mailbox::{ActorRegistry, Inbox};
use actors::windows::aggregator::QueryStatus;
use actors::windows::WindowAggregatorActor;
use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use serde_json::json;

use crate::cache::delta_writer::DeltaStats;
use crate::kafka::source::SourceState;
use crate::telemetry::LogLevelHandle;

/// Every metric the process exports (names `log_analyzer_<name>_<unit>[_total]`).
pub struct Metrics {
    registry: Registry,
    /// Every actor's mailbox probe.
    pub actors: ActorRegistry,
    mailbox_depth: IntGaugeVec,
    handled: IntCounterVec,
    send_blocked: CounterVec,
    restarts: IntCounterVec,
    ingested_events: IntCounterVec,
    ingested_bytes: IntCounterVec,
    rejects: IntCounterVec,
    consumer_messages: IntCounterVec,
    consumer_lag: IntGaugeVec,
    stored_offset: IntGaugeVec,
    offset_gaps: IntCounterVec,
    writer_batches: IntCounterVec,
    writer_errors: IntCounterVec,
    /// Messages (events + rejects) per committed batch.
    pub writer_batch_events: Histogram,
    /// Time to commit one batch, per writer.
    pub writer_batch_seconds: HistogramVec,
    window_buckets: IntGauge,
    /// Redis reads on the stats path: `hit` (Redis answered), `miss` (Redis could not answer
    /// exactly), `error` (timeout, breaker open, connection).
    pub cache: IntCounterVec,
    cache_deltas: IntCounterVec,
    /// Stats answers by route and source.
    pub answers: IntCounterVec,
    /// Public HTTP requests by route pattern and status, and their latency.
    pub http_requests: IntCounterVec,
    pub http_seconds: HistogramVec,
    /// Public HTTP handlers that panicked (each answered 500).
    pub http_panics: IntCounter,
    /// The daily summary job: duration and runs by status.
    pub summary_seconds: Histogram,
    pub summary_runs: IntCounterVec,
    /// Events the in-process generator (`run --generate`) sent, had acknowledged, and failed.
    pub generator_sent: IntCounter,
    pub generator_acked: IntCounter,
    pub generator_errors: IntCounter,
    generator: std::sync::Mutex<Option<Arc<GeneratorStats>>>,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, collector: C) -> C {
    registry.register(Box::new(collector.clone())).expect("metric registered once");
    collector
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(r, IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition"))
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(r, IntGaugeVec::new(Opts::new(name, help), labels).expect("metric definition"))
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets);
    register(r, HistogramVec::new(opts, labels).expect("metric definition"))
}

fn plain_counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    register(r, IntCounter::new(name, help).expect("metric definition"))
}

/// Latency buckets from 100 µs to ~105 s (×4).
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.000_1, 4.0, 11).expect("valid buckets")
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let actors = ActorRegistry::new();
        register(&r, actors.handling_histogram());
        let actor = ["actor", "instance"];
        let partition = ["topic", "partition"];
        Metrics {
            mailbox_depth: gauge(
                &r,
                "log_analyzer_actor_mailbox_depth",
                "Messages sent to the actor and not yet taken",
                &actor,
            ),
            handled: counter(&r, "log_analyzer_actor_messages_handled_total", "Messages the actor handled", &actor),
            send_blocked: register(
                &r,
                CounterVec::new(
                    Opts::new(
                        "log_analyzer_actor_send_blocked_seconds_total",
                        "Time senders spent waiting for the actor to take their message (full mailbox or queue)",
                    ),
                    &actor,
                )
                .expect("metric definition"),
            ),
            restarts: counter(
                &r,
                "log_analyzer_actor_restarts_total",
                "Restarts by a supervisor or the source",
                &actor,
            ),
            ingested_events: counter(
                &r,
                "log_analyzer_ingested_events_total",
                "Events stored in PostgreSQL",
                &partition,
            ),
            ingested_bytes: counter(
                &r,
                "log_analyzer_ingested_bytes_total",
                "Payload bytes of the messages stored (events and dead letters)",
                &partition,
            ),
            rejects: counter(&r, "log_analyzer_rejects_total", "Dead letters stored, by reason", &["reason"]),
            consumer_messages: counter(
                &r,
                "log_analyzer_consumer_messages_total",
                "Messages taken in by the partition's consumer",
                &partition,
            ),
            consumer_lag: gauge(
                &r,
                "log_analyzer_consumer_lag_events",
                "Broker high watermark minus the offset stored in PostgreSQL",
                &partition,
            ),
            stored_offset: gauge(&r, "log_analyzer_stored_offset", "Next offset stored in PostgreSQL", &partition),
            offset_gaps: counter(
                &r,
                "log_analyzer_offset_gaps_total",
                "Times the stored offset jumped over offsets Kafka no longer had (see offset_gaps)",
                &partition,
            ),
            writer_batches: counter(&r, "log_analyzer_writer_batches_total", "Batches committed", &["writer"]),
            writer_errors: counter(
                &r,
                "log_analyzer_writer_errors_total",
                "Batch writes that failed: unavailable (retried after a restart), fenced, or rejected (data refused)",
                &["writer", "kind"],
            ),
            writer_batch_events: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("log_analyzer_writer_batch_events", "Messages per committed batch")
                        .buckets(prometheus::exponential_buckets(1.0, 4.0, 9).expect("valid buckets")),
                )
                .expect("metric definition"),
            ),
            writer_batch_seconds: histogram(
                &r,
                "log_analyzer_writer_batch_seconds",
                "Time to write and commit one batch",
                latency_buckets(),
                &["writer"],
            ),
            window_buckets: register(
                &r,
                IntGauge::new("log_analyzer_window_buckets", "Seconds held in the in-memory windows")
                    .expect("metric definition"),
            ),
            cache: counter(&r, "log_analyzer_cache_requests_total", "Redis reads on the stats path", &["result"]),
            cache_deltas: counter(
                &r,
                "log_analyzer_cache_deltas_total",
                "Bucket deltas offered to Redis: applied, duplicate, failed, dropped",
                &["result"],
            ),
            answers: counter(
                &r,
                "log_analyzer_stats_answers_total",
                "Stats answers by route and source",
                &["route", "source"],
            ),
            http_requests: counter(
                &r,
                "log_analyzer_http_requests_total",
                "Public HTTP requests by route and status",
                &["route", "status"],
            ),
            http_seconds: histogram(
                &r,
                "log_analyzer_http_request_seconds",
                "Public HTTP request latency",
                latency_buckets(),
                &["route"],
            ),
            http_panics: plain_counter(
                &r,
                "log_analyzer_http_panics_total",
                "Public HTTP handlers that panicked (each answered 500)",
            ),
            summary_seconds: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("log_analyzer_summary_job_seconds", "Duration of a daily summary run")
                        .buckets(prometheus::exponential_buckets(0.1, 3.0, 9).expect("valid buckets")),
                )
                .expect("metric definition"),
            ),
            summary_runs: counter(&r, "log_analyzer_summary_runs_total", "Daily summary runs by status", &["status"]),
            generator_sent: plain_counter(&r, "log_analyzer_generator_sent_total", "Events the generator sent"),
            generator_acked: plain_counter(
                &r,
                "log_analyzer_generator_acked_total",
                "Events the generator's target acknowledged",
            ),
            generator_errors: plain_counter(
                &r,
                "log_analyzer_generator_errors_total",
                "Events the generator failed to deliver",
            ),
            generator: std::sync::Mutex::new(None),
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
    pub fn watch_generator(&self) -> Arc<GeneratorStats> {
        let stats = Arc::new(GeneratorStats::default());
        *self.generator.lock().expect("generator stats") = Some(stats.clone());
        stats
    }

    /// The stats a new writer reports into (its histograms are this registry's).
    pub fn writer_stats(&self, writer: usize) -> WriterStats {
        WriterStats {
            batch_events: Some(self.writer_batch_events.clone()),
            batch_seconds: Some(self.writer_batch_seconds.with_label_values(&[&writer.to_string()])),
            ..WriterStats::default()
        }
    }

    /// Copies the actors' counters in (they only grow, so the difference is added).
    fn refresh(&self, state: &AdminState) {
        for probe in self.actors.probes() {
            let labels = [probe.actor(), probe.instance()];
            self.mailbox_depth.with_label_values(&labels).set(probe.mailbox_depth());
            sync(&self.handled, &labels, probe.handled());
            sync(&self.restarts, &labels, probe.restarts());
            let blocked = self.send_blocked.with_label_values(&labels);
            blocked.inc_by((probe.send_blocked().as_secs_f64() - blocked.get()).max(0.0));
        }
        for (i, w) in state.writers.iter().enumerate() {
            let id = i.to_string();
            sync(&self.writer_batches, &[&id], w.batches.load(Ordering::Relaxed));
            sync(&self.writer_errors, &[&id, "unavailable"], w.failures.load(Ordering::Relaxed));
            sync(&self.writer_errors, &[&id, "fenced"], w.fenced.load(Ordering::Relaxed));
            sync(&self.writer_errors, &[&id, "rejected"], w.rejected.load(Ordering::Relaxed));
        }
        if let Some(source) = &state.source {
            let highs = source.high_watermarks.lock().expect("source state").clone();
            self.consumer_lag.reset();
            self.stored_offset.reset();
            let mut rejects = [0u64; RejectReason::ALL.len()];
            for (p, stats) in source.all_partitions() {
                let labels = [p.0.as_str(), &p.1.to_string()];
                sync(&self.consumer_messages, &labels, stats.messages.load(Ordering::Relaxed));
                sync(&self.ingested_events, &labels, stats.stored_events.load(Ordering::Relaxed));
                sync(&self.ingested_bytes, &labels, stats.stored_bytes.load(Ordering::Relaxed));
                sync(&self.offset_gaps, &labels, stats.offset_gaps.load(Ordering::Relaxed));
                for (total, count) in rejects.iter_mut().zip(&stats.rejects) {
                    *total += count.load(Ordering::Relaxed);
                }
                if !source.owns(&p) {
                    continue;
                }
                let stored = stats.stored_offset.load(Ordering::Relaxed) as i64;
                self.stored_offset.with_label_values(&labels).set(stored);
                if let Some(high) = highs.get(&p) {
                    self.consumer_lag.with_label_values(&labels).set((high - stored).max(0));
                }
            }
            for (reason, total) in RejectReason::ALL.iter().zip(rejects) {
                sync(&self.rejects, &[reason.code()], total);
            }
        }
        if let Some(generator) = self.generator.lock().expect("generator stats").as_ref() {
            let raise = |c: &IntCounter, value: u64| c.inc_by(value.saturating_sub(c.get()));
            raise(&self.generator_sent, generator.sent.load(Ordering::Relaxed));
            raise(&self.generator_acked, generator.acked.load(Ordering::Relaxed));
            let errors = generator.failed.load(Ordering::Relaxed) + generator.send_errors.load(Ordering::Relaxed);
            raise(&self.generator_errors, errors);
        }
        if let Some(summary) = &state.summary {
            sync(&self.summary_runs, &["ok"], summary.runs_ok.load(Ordering::Relaxed));
            sync(&self.summary_runs, &["failed"], summary.runs_failed.load(Ordering::Relaxed));
        }
        if let Some(deltas) = &state.deltas {
            sync(&self.cache_deltas, &["applied"], deltas.applied.load(Ordering::Relaxed));
            sync(&self.cache_deltas, &["duplicate"], deltas.duplicates.load(Ordering::Relaxed));
            sync(&self.cache_deltas, &["failed"], deltas.failed.load(Ordering::Relaxed));
            sync(&self.cache_deltas, &["dropped"], deltas.dropped.load(Ordering::Relaxed));
        }
    }
}

/// Raises a counter to `value` (counters of the actors only grow).
fn sync(c: &IntCounterVec, labels: &[&str], value: u64) {
    let counter = c.with_label_values(labels);
    counter.inc_by(value.saturating_sub(counter.get()));
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// What the admin routes read.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub writers: Vec<Arc<WriterStats>>,
    pub source: Option<Arc<SourceState>>,
    pub aggregator: Option<Inbox<WindowAggregatorActor>>,
    pub deltas: Option<Arc<DeltaStats>>,
    /// The daily summary's counters, in processes that run the scheduler.
    pub summary: Option<Arc<actors::schedule::SummaryStats>>,
    pub log_level: LogLevelHandle,
}

async fn metrics(state: web::Data<AdminState>) -> HttpResponse {
    if let Some(aggregator) = &state.aggregator {
        if let Ok(status) = aggregator.send(QueryStatus).await {
            state.metrics.window_buckets.set(status.seconds_held as i64);
        }
    }
    state.metrics.refresh(&state);
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
    HttpResponse::Ok().json(json!({
        "actors": list,
        "partitions": owned,
        "aggregator": aggregator,
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
    let state = web::Data::new(state);
    let token = web::Data::new(AdminToken(admin_token));
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
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
