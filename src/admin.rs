//! The admin listener (`ADMIN_ADDR`, keep it private): `/metrics` for Prometheus and
//! `/debug/actors`. Pipeline counters live in the actors as atomics; a scrape copies them into the
//! registry, so the hot path never touches Prometheus.

use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::Addr;
use actix_web::{web, App, HttpResponse, HttpServer};
use actors::ingest::WriterStats;
use actors::windows::aggregator::QueryStatus;
use actors::windows::WindowAggregatorActor;
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use serde_json::json;

use crate::kafka::source::SourceState;

/// Every metric the process exports.
pub struct Metrics {
    registry: Registry,
    writer_batches: IntCounterVec,
    writer_events: IntCounterVec,
    writer_rejects: IntCounterVec,
    writer_failures: IntCounterVec,
    restarts: IntCounterVec,
    consumer_messages: IntCounterVec,
    consumer_lag: IntGaugeVec,
    stored_offset: IntGaugeVec,
    /// Stats answers per route and source, counted by the HTTP handlers.
    pub answers: IntCounterVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition");
    registry.register(Box::new(c.clone())).expect("metric registered once");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric definition");
    registry.register(Box::new(g.clone())).expect("metric registered once");
    g
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        Metrics {
            writer_batches: counter(
                &r,
                "log_analyzer_writer_batches_total",
                "Batches committed to PostgreSQL",
                &["writer"],
            ),
            writer_events: counter(
                &r,
                "log_analyzer_ingested_events_total",
                "Events stored in PostgreSQL",
                &["writer"],
            ),
            writer_rejects: counter(&r, "log_analyzer_rejects_total", "Dead letters stored", &["writer"]),
            writer_failures: counter(
                &r,
                "log_analyzer_writer_errors_total",
                "Failed batch writes (retried)",
                &["writer"],
            ),
            restarts: counter(&r, "log_analyzer_actor_restarts_total", "Supervisor restarts", &["actor", "instance"]),
            consumer_messages: counter(&r, "log_analyzer_consumer_messages_total", "Messages taken in", &["partition"]),
            consumer_lag: gauge(
                &r,
                "log_analyzer_consumer_lag_events",
                "High watermark minus stored offset",
                &["partition"],
            ),
            stored_offset: gauge(&r, "log_analyzer_stored_offset", "Next offset stored in PostgreSQL", &["partition"]),
            answers: counter(
                &r,
                "log_analyzer_stats_answers_total",
                "Stats answers by route and source",
                &["route", "source"],
            ),
            registry: r,
        }
    }

    /// Copies the actors' counters in (they only grow, so the difference is added).
    fn refresh(&self, writers: &[Arc<WriterStats>], source: Option<&SourceState>) {
        let sync = |c: &IntCounterVec, labels: &[&str], value: u64| {
            let counter = c.with_label_values(labels);
            counter.inc_by(value.saturating_sub(counter.get()));
        };
        for (i, w) in writers.iter().enumerate() {
            let id = i.to_string();
            sync(&self.writer_batches, &[&id], w.batches.load(Ordering::Relaxed));
            sync(&self.writer_events, &[&id], w.events.load(Ordering::Relaxed));
            sync(&self.writer_rejects, &[&id], w.rejects.load(Ordering::Relaxed));
            sync(&self.writer_failures, &[&id], w.failures.load(Ordering::Relaxed));
            sync(&self.restarts, &["writer", &id], w.restarts.load(Ordering::Relaxed));
        }
        if let Some(source) = source {
            let highs = source.high_watermarks.lock().expect("source state").clone();
            self.consumer_lag.reset();
            self.stored_offset.reset();
            for (p, stats) in source.partitions.lock().expect("source state").iter() {
                let p_label = p.to_string();
                let stored = stats.stored_offset.load(Ordering::Relaxed) as i64;
                sync(&self.consumer_messages, &[&p_label], stats.messages.load(Ordering::Relaxed));
                self.stored_offset.with_label_values(&[&p_label]).set(stored);
                if let Some(high) = highs.get(p) {
                    self.consumer_lag.with_label_values(&[&p_label]).set((high - stored).max(0));
                }
            }
        }
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
    pub writers: Vec<Arc<WriterStats>>,
    pub source: Option<Arc<SourceState>>,
    pub aggregator: Option<Addr<WindowAggregatorActor>>,
}

async fn metrics(state: web::Data<AdminState>) -> HttpResponse {
    state.metrics.refresh(&state.writers, state.source.as_deref());
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&state.metrics.registry.gather(), &mut out) {
        return HttpResponse::InternalServerError().body(e.to_string());
    }
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(out)
}

async fn actors(state: web::Data<AdminState>) -> HttpResponse {
    let writers: Vec<_> = state
        .writers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            json!({
                "actor": "writer", "instance": i,
                "handled": w.batches.load(Ordering::Relaxed), "failures": w.failures.load(Ordering::Relaxed),
                "restarts": w.restarts.load(Ordering::Relaxed), "dropped": w.dropped.load(Ordering::Relaxed),
            })
        })
        .collect();
    let consumers: Vec<_> = state
        .source
        .as_ref()
        .map(|s| {
            s.partitions
                .lock()
                .expect("source state")
                .iter()
                .map(|(p, c)| {
                    json!({
                        "actor": "consumer", "partition": p,
                        "messages": c.messages.load(Ordering::Relaxed), "batches": c.batches.load(Ordering::Relaxed),
                        "retries": c.retries.load(Ordering::Relaxed), "stored_offset": c.stored_offset.load(Ordering::Relaxed),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let aggregator = match &state.aggregator {
        Some(a) => match a.send(QueryStatus).await {
            Ok(s) => json!({"actor": "window_aggregator", "ready": s.ready, "owns_all": s.owns_all,
                            "seconds_held": s.seconds_held, "rebuilds": s.rebuilds}),
            Err(e) => json!({"actor": "window_aggregator", "error": e.to_string()}),
        },
        None => serde_json::Value::Null,
    };
    HttpResponse::Ok().json(json!({ "writers": writers, "consumers": consumers, "aggregator": aggregator }))
}

/// The admin server on an already bound listener.
pub fn serve(state: AdminState, listener: TcpListener) -> std::io::Result<actix_web::dev::Server> {
    let state = web::Data::new(state);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/metrics", web::get().to(metrics))
            .route("/debug/actors", web::get().to(actors))
    })
    .workers(1)
    .shutdown_timeout(2)
    .listen(listener)?
    .run())
}
