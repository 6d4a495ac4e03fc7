//! `GET /logs/tail`: matching events as Server-Sent Events, each once its batch committed.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use actors::search::SearchParams;
use actors::tail::{TailHub, TailItem, TailSubscription};

use super::errors::ApiError;
#[allow(unused_imports)] // Named by the OpenAPI annotation.
use super::openapi::ErrorBody;
use super::params::Params;
use super::AppState;

/// What the live tail of a process needs.
#[derive(Clone)]
pub struct Tail {
    pub hub: Arc<TailHub>,
    /// A comment is sent this often, so proxies and clients know a quiet stream is alive.
    pub heartbeat: Duration,
}

const CUT: &str = "event: cut\ndata: {\"error\":\"slow_client\",\"message\":\"this client fell TAIL_BUFFER_EVENTS events behind and was cut; reconnect, and find what was missed with GET /logs\"}\n\n";

#[utoipa::path(get, path = "/logs/tail", tag = "search",
    params(
        ("q" = Option<String>, Query, description = "Space-separated tokens, all required; -token excludes"),
        ("service" = Option<String>, Query, description = "Only this service"),
        ("level" = Option<String>, Query, description = "One level (error) or a minimum (warn+)"),
    ),
    responses(
        (status = 200, description = "text/event-stream: `event: log` with a found event as `data` (and `id: topic/partition/offset`) for each matching event once stored; `: heartbeat` comments every TAIL_HEARTBEAT_MS; `event: cut` with `{error, message}` before the stream ends when the client fell TAIL_BUFFER_EVENTS behind", content_type = "text/event-stream"),
        (status = 400, description = "A parameter is malformed, unknown or repeated", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 429, description = "Over RATE_LIMIT_RPS; see Retry-After", body = ErrorBody),
        (status = 503, description = "TAIL_MAX_CLIENTS tails are open already", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn tail(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.auth.check(&req)?;
    let params = Params::parse(req.query_string(), &["q", "service", "level"])?;
    let filter = SearchParams::from_pairs(params.pairs())?.filter()?;
    let Some(tail) = &state.tail else {
        return Err(ApiError::unavailable("no_tail", "this process serves no live tail"));
    };
    let subscription =
        tail.hub.subscribe(filter).map_err(|e| ApiError::unavailable("too_many_tails", e.to_string()))?;
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        // Proxies that buffer answers (nginx) would hold the events back.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(frames(subscription, tail.heartbeat)))
}

enum Step {
    Opening(TailSubscription, tokio::time::Interval),
    Streaming(TailSubscription, tokio::time::Interval),
    Ended,
}

/// The stream's frames: a first comment (the client sees the stream open before any event), then
/// events and heartbeats, then a cut if it comes to that.
fn frames(
    subscription: TailSubscription,
    heartbeat: Duration,
) -> impl futures::Stream<Item = Result<Bytes, actix_web::Error>> {
    let ticks = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    futures::stream::unfold(Step::Opening(subscription, ticks), |step| async move {
        match step {
            Step::Ended => None,
            Step::Opening(sub, ticks) => {
                Some((Ok(Bytes::from_static(b": tail open\n\n")), Step::Streaming(sub, ticks)))
            }
            Step::Streaming(sub, mut ticks) => {
                let frame = tokio::select! {
                    item = sub.next() => match item {
                        TailItem::Event(e) => {
                            let frame = format!("id: {}\nevent: log\ndata: {}\n\n", e.id, e.json);
                            return Some((Ok(Bytes::from(frame)), Step::Streaming(sub, ticks)));
                        }
                        TailItem::Cut => return Some((Ok(Bytes::from_static(CUT.as_bytes())), Step::Ended)),
                    },
                    _ = ticks.tick() => Bytes::from_static(b": heartbeat\n\n"),
                };
                Some((Ok(frame), Step::Streaming(sub, ticks)))
            }
        }
    })
}

/// The live tails' metrics: clients open now, events queued to them, clients cut or refused.
/// The hub counts in atomics on the ingest path; a scrape copies them in.
pub struct TailMetrics {
    clients: prometheus::IntGauge,
    delivered: prometheus::IntCounter,
    cut: prometheus::IntCounter,
    refused: prometheus::IntCounter,
    hub: std::sync::Mutex<Option<Arc<TailHub>>>,
}

impl TailMetrics {
    pub fn new(r: &prometheus::Registry) -> TailMetrics {
        use crate::telemetry::metric::{plain_counter, register};
        TailMetrics {
            clients: register(
                r,
                prometheus::IntGauge::new("log_analyzer_tail_clients", "Live tails (GET /logs/tail) open now")
                    .expect("metric definition"),
            ),
            delivered: plain_counter(
                r,
                "log_analyzer_tail_events_total",
                "Events queued to live tails (an event sent to three tails counts three)",
            ),
            cut: plain_counter(
                r,
                "log_analyzer_tail_cut_total",
                "Live tails cut for falling TAIL_BUFFER_EVENTS behind",
            ),
            refused: plain_counter(
                r,
                "log_analyzer_tail_refused_total",
                "Live tails refused (503 too_many_tails) because TAIL_MAX_CLIENTS were open",
            ),
            hub: std::sync::Mutex::new(None),
        }
    }

    /// Exports `hub`'s counters from now on.
    pub fn watch(&self, hub: Arc<TailHub>) {
        *self.hub.lock().unwrap_or_else(|e| e.into_inner()) = Some(hub);
    }

    pub fn refresh(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(hub) = self.hub.lock().unwrap_or_else(|e| e.into_inner()).clone() else { return };
        let raise = |c: &prometheus::IntCounter, value: u64| c.inc_by(value.saturating_sub(c.get()));
        self.clients.set(hub.clients() as i64);
        raise(&self.delivered, hub.stats.delivered.load(Relaxed));
        raise(&self.cut, hub.stats.cut.load(Relaxed));
        raise(&self.refused, hub.stats.refused.load(Relaxed));
    }
}
