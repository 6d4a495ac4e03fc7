//! What the public listener does before and around a handler: a per-client rate limit, a deadline
//! on reading the body, and a panic in a handler turned into a 500 that says so.

use std::cell::Cell;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::rc::Rc;
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};
use futures::FutureExt;
use governor::clock::Clock;
use serde_json::json;
use slog::Logger;

/// Counts and logs panics caught in handlers.
pub struct PanicGuard {
    panics: prometheus::IntCounter,
    log: Logger,
}

impl PanicGuard {
    pub fn new(panics: prometheus::IntCounter, log: Logger) -> PanicGuard {
        PanicGuard { panics, log }
    }
}

/// The text a panic was raised with (`panic!("…")` gives a `&str` or a `String`).
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// A handler panicked: 500 `{error: "internal", message}`.
#[derive(Debug)]
pub struct HandlerPanicked;

impl std::fmt::Display for HandlerPanicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the server failed on this request (a bug, logged with the request id); try again or report it")
    }
}

impl actix_web::ResponseError for HandlerPanicked {
    fn status_code(&self) -> actix_web::http::StatusCode {
        actix_web::http::StatusCode::INTERNAL_SERVER_ERROR
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::InternalServerError().json(json!({ "error": "internal", "message": self.to_string() }))
    }
}

/// A handler that panics answers 500 `{error: "internal", message}` instead of a dropped
/// connection; the panic is counted (`log_analyzer_http_panics_total`) and logged. The answer is
/// an error, not a response: building a response needs the request, and a copy of it held here
/// would stop the router from filling in its path parameters.
pub async fn catch_panics(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let guard = req.app_data::<web::Data<PanicGuard>>().cloned();
    let method = req.method().clone();
    let path = req.path().to_owned();
    // Only the id is kept: the logger that carries it is made if a panic is to be logged, not for
    // every request.
    let id = req.extensions().get::<super::RequestId>().map(|id| id.0.clone());
    // Nothing of the request's state is read after an unwind, so no half-updated value is seen.
    match std::panic::AssertUnwindSafe(next.call(req)).catch_unwind().await {
        Ok(result) => result.map(ServiceResponse::map_into_boxed_body),
        Err(payload) => {
            let text = panic_text(&*payload);
            if let Some(guard) = guard {
                let log = match id {
                    Some(id) => guard.log.new(slog::o!("request_id" => id)),
                    None => guard.log.clone(),
                };
                guard.panics.inc();
                slog::error!(log, "handler panicked"; "method" => %method, "path" => path, "panic" => &text);
            }
            Err(HandlerPanicked.into())
        }
    }
}

/// Requests per second per client IP on the public API; `None` when off.
pub struct RateLimit(Option<governor::DefaultKeyedRateLimiter<IpAddr>>);

/// Above this many tracked clients, the ones back at a full bucket are forgotten.
const TRACKED_CLIENTS: usize = 10_000;

impl RateLimit {
    /// `rps` requests per second per IP (0: no limit), with `burst` at once (0: `rps`).
    pub fn new(rps: u32, burst: u32) -> RateLimit {
        let Some(rate) = NonZeroU32::new(rps) else { return RateLimit(None) };
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        RateLimit(Some(governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))))
    }

    /// `Err(wait)` when the client must wait before its next request.
    pub(crate) fn check(&self, client: IpAddr) -> Result<(), Duration> {
        let Some(limiter) = &self.0 else { return Ok(()) };
        if limiter.len() > TRACKED_CLIENTS {
            limiter.retain_recent();
        }
        limiter.check_key(&client).map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }
}

/// Over its rate, a client gets 429 with `Retry-After` (whole seconds, at least 1). Keyed by the
/// peer address (not `X-Forwarded-For`, which any client can write). Health probes are never limited.
pub async fn rate_limit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let limited = !matches!(req.path(), "/healthz" | "/readyz");
    if let (true, Some(limit), Some(peer)) =
        (limited, req.app_data::<web::Data<RateLimit>>(), req.peer_addr().map(|a| a.ip()))
    {
        if let Err(wait) = limit.check(peer) {
            let seconds = retry_seconds(wait);
            let response =
                HttpResponse::TooManyRequests().insert_header(("Retry-After", seconds.to_string())).json(json!({
                    "error": "rate_limited",
                    "message": format!("too many requests from {peer}; retry in {seconds} s"),
                }));
            return Ok(req.into_response(response));
        }
    }
    next.call(req).await.map(ServiceResponse::map_into_boxed_body)
}

/// A wait as whole seconds to retry in, at least 1.
pub(crate) fn retry_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// The most a client may take to send a whole request body (`HTTP_BODY_TIMEOUT_MS`).
pub struct BodyTimeout(pub Duration);

/// A body not read in full by its deadline fails the read, and the answer is 408 (whatever the
/// handler made of the failed read): a slow client cannot hold a worker and its buffer for ever.
pub async fn body_deadline(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    // A WebSocket's "body" is the session itself, bounded by its own rules (see http::dashboard::session).
    let upgrade = req.head().upgrade();
    let Some(limit) = req.app_data::<web::Data<BodyTimeout>>().map(|t| t.0).filter(|_| !upgrade) else {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    };
    let timed_out = Rc::new(Cell::new(false));
    let payload = req.take_payload();
    let deadline = tokio::time::Instant::now() + limit;
    let flag = timed_out.clone();
    let stream = futures::stream::unfold(Some(payload), move |payload| {
        let flag = flag.clone();
        async move {
            let mut payload = payload?;
            match tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut payload)).await {
                Ok(Some(chunk)) => Some((chunk, Some(payload))),
                Ok(None) => None,
                Err(_) => {
                    flag.set(true);
                    let error = std::io::Error::new(std::io::ErrorKind::TimedOut, "the body did not arrive in time");
                    Some((Err(actix_web::error::PayloadError::Io(error)), None))
                }
            }
        }
    });
    let boxed: std::pin::Pin<Box<dyn futures::Stream<Item = Result<web::Bytes, actix_web::error::PayloadError>>>> =
        Box::pin(stream);
    req.set_payload(actix_web::dev::Payload::from(boxed));
    let res = next.call(req).await?;
    if !timed_out.get() {
        return Ok(res.map_into_boxed_body());
    }
    let (http_req, _) = res.into_parts();
    let body = HttpResponse::RequestTimeout().insert_header(("Connection", "close")).json(json!({
        "error": "body_timeout",
        "message": format!("the request body did not arrive within {} ms; send it faster or in smaller parts",
                           limit.as_millis()),
    }));
    Ok(ServiceResponse::new(http_req, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::middleware::from_fn;
    use actix_web::test as web_test;
    use actix_web::App;

    fn discard() -> Logger {
        Logger::root(slog::Discard, slog::o!())
    }

    async fn boom() -> HttpResponse {
        panic!("boom: {}", 42)
    }

    #[actix_web::test]
    async fn a_panicking_handler_answers_500_json_and_is_counted() {
        let metrics = crate::admin::Metrics::new();
        let guard = web::Data::new(PanicGuard::new(metrics.http.panics.clone(), discard()));
        let app = web_test::init_service(
            App::new()
                .app_data(guard)
                .wrap(from_fn(catch_panics))
                .route("/boom", web::get().to(boom))
                .route("/fine", web::get().to(|| async { HttpResponse::Ok().body("fine") })),
        )
        .await;
        // The server turns the error into the answer; the test service hands the error over as is.
        let Err(error) = web_test::try_call_service(&app, web_test::TestRequest::get().uri("/boom").to_request()).await
        else {
            panic!("a panic must be an error answer")
        };
        let res = error.error_response();
        assert_eq!(res.status(), 500);
        let bytes = actix_web::body::to_bytes(res.into_body()).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"], "internal");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(!body.to_string().contains("boom: 42"), "the panic text stays in the log: {body}");
        assert_eq!(metrics.http.panics.get(), 1);
        // The worker lives on: the next request is served.
        let res = web_test::call_service(&app, web_test::TestRequest::get().uri("/fine").to_request()).await;
        assert_eq!(res.status(), 200);
        assert_eq!(metrics.http.panics.get(), 1);
        let metrics_text = metrics.render();
        assert!(metrics_text.contains("log_analyzer_http_panics_total 1"), "{metrics_text}");
    }

    #[test]
    fn panic_text_reads_str_and_string_payloads() {
        assert_eq!(panic_text(&"static"), "static");
        assert_eq!(panic_text(&String::from("owned")), "owned");
        assert_eq!(panic_text(&7u8), "a panic without a message");
    }

    #[test]
    fn the_rate_limit_allows_the_burst_then_says_how_long_to_wait() {
        let limit = RateLimit::new(2, 3);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..3 {
            assert!(limit.check(a).is_ok());
        }
        let wait = limit.check(a).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500), "{wait:?}");
        assert!(limit.check(b).is_ok(), "another client has its own bucket");
        let off = RateLimit::new(0, 0);
        assert!((0..1_000).all(|_| off.check(a).is_ok()));
    }
}
