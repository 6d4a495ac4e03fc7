//! The public listener's metrics, and the events that count into them and log.

use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use prometheus::{HistogramVec, IntCounter, IntCounterVec, Registry};
use slog::{Drain, Logger};

use crate::telemetry::metric::{counter, histogram, latency_buckets, plain_counter};

pub struct HttpMetrics {
    /// Public HTTP requests by route pattern and status, and their latency.
    requests: IntCounterVec,
    seconds: HistogramVec,
    /// Public HTTP handlers that panicked (each answered 500).
    pub panics: IntCounter,
}

impl HttpMetrics {
    pub fn new(r: &Registry) -> HttpMetrics {
        HttpMetrics {
            requests: counter(
                r,
                "log_analyzer_http_requests_total",
                "Public HTTP requests by route and status",
                &["route", "status"],
            ),
            seconds: histogram(
                r,
                "log_analyzer_http_request_seconds",
                "Public HTTP request latency",
                latency_buckets(),
                &["route"],
            ),
            panics: plain_counter(
                r,
                "log_analyzer_http_panics_total",
                "Public HTTP handlers that panicked (each answered 500)",
            ),
        }
    }
}

/// Stats answers by route and source (`log_analyzer_stats_answers_total`).
pub fn stats_answers(r: &Registry) -> IntCounterVec {
    counter(r, "log_analyzer_stats_answers_total", "Stats answers by route and source", &["route", "source"])
}

/// Redis reads on the stats path (`log_analyzer_cache_requests_total`): `hit` (Redis answered),
/// `miss` (Redis could not answer exactly), `error` (timeout, breaker open, connection).
pub fn cache_requests(r: &Registry) -> IntCounterVec {
    counter(r, "log_analyzer_cache_requests_total", "Redis reads on the stats path", &["result"])
}

/// One request answered: counted per route and status, timed, and logged (debug when it went
/// well, info for a client error, warn with the cause for a 503, error for another server error).
pub struct RequestHandled<'a> {
    pub method: &'a Method,
    /// The route pattern (`unmatched` for none), so labels stay few.
    pub route: &'a str,
    pub status: StatusCode,
    pub elapsed: Duration,
    /// What went wrong, for a server error.
    pub error: Option<String>,
}

impl RequestHandled<'_> {
    /// Counts the request, and logs it through `log` with `request_id` when its level is on. The
    /// child logger is made only then: at the default level the line of a request that went well is
    /// not written, and making one per request (an allocation and a copy of the id) cost for nothing.
    pub fn emit(self, metrics: &HttpMetrics, log: &Logger, request_id: &str) {
        metrics.requests.with_label_values(&[self.route, self.status.as_str()]).inc();
        metrics.seconds.with_label_values(&[self.route]).observe(self.elapsed.as_secs_f64());
        let level = if self.status.is_server_error() {
            if self.status == StatusCode::SERVICE_UNAVAILABLE {
                slog::Level::Warning
            } else {
                slog::Level::Error
            }
        } else if self.status.is_client_error() {
            slog::Level::Info
        } else {
            slog::Level::Debug
        };
        if !log.is_enabled(level) {
            return;
        }
        let log = log.new(slog::o!("request_id" => request_id.to_owned()));
        let (method, route, status, micros) =
            (self.method, self.route, self.status.as_u16(), self.elapsed.as_micros() as u64);
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // A source that cannot answer yet or a dependency that is down: the state is the
            // operator's to see (readiness, the answer's message), not a fault of this server.
            slog::warn!(log, "request not answered"; "method" => %method, "route" => route, "status" => status,
                        "micros" => micros, "error" => self.error.unwrap_or_default());
        } else if self.status.is_server_error() {
            slog::error!(log, "request failed"; "method" => %method, "route" => route, "status" => status,
                         "micros" => micros, "error" => self.error.unwrap_or_default());
        } else if self.status.is_client_error() {
            slog::info!(log, "request refused"; "method" => %method, "route" => route, "status" => status,
                        "micros" => micros);
        } else {
            slog::debug!(log, "request"; "method" => %method, "route" => route, "status" => status,
                         "micros" => micros);
        }
    }
}
