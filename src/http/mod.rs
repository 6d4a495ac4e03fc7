//! The public HTTP API (actix-web): stats, ingest, health.

pub mod auth;
pub mod dashboard;
pub mod errors;
pub mod intake;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod params;
pub mod protocols;
pub mod readiness;
pub mod routes;
pub mod search;
pub mod summary;
pub mod tail;

use std::net::TcpListener;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpMessage, HttpRequest, HttpServer};
use actors::domain::Window;
use slog::Logger;

use actors::windows::WindowReader;
use routes::{LagProbe, Probe, WindowHealth};

/// What every handler can reach.
pub struct AppState {
    /// Answers the stats questions: memory → Redis → PostgreSQL.
    pub reader: WindowReader,
    /// What readiness and the freshness fields ask of the window sources.
    pub windows: WindowHealth,
    pub max_window: Window,
    /// POST /ingest's use case, over Kafka and PostgreSQL.
    pub intake: std::sync::Arc<dyn actors::intake::TakeLines>,
    /// GET /stats/summary's source.
    pub summary: std::sync::Arc<dyn actors::summary::SummaryReader>,
    /// GET /logs and GET /logs/{topic}/{partition}/{offset}: the store's search.
    pub search: std::sync::Arc<dyn actors::search::LogSearch>,
    pub ingest_max_body_bytes: usize,
    /// Bound on the PostgreSQL queries a handler makes itself (`DATABASE_TIMEOUT_MS`).
    pub database_timeout_ms: u64,
    pub lag: Option<LagProbe>,
    pub kafka_ready: Option<Probe>,
    /// The partitions this process ingests (`run`), for readiness: paused or stalled on PostgreSQL.
    pub ingest: Option<std::sync::Arc<dyn readiness::IngestView>>,
    pub auth: auth::Auth,
    /// GET /logs/tail's hub, when this process serves tails.
    pub tail: Option<tail::Tail>,
    pub metrics: std::sync::Arc<crate::admin::Metrics>,
    /// The live dashboard's one feed (`/ws`).
    pub dashboard: std::sync::Arc<dashboard::DashboardFeed>,
    pub log: Logger,
}

/// Every route of the public listener, each with its handler: `configure` registers these and the
/// 404 answer names them, so a route added here is listed there. The dashboard's static files
/// (`dashboard::assets`) are left out of the list: they are the page's, not the API's.
fn public_routes() -> [(&'static str, actix_web::Route); 15] {
    [
        ("/stats/errors", web::get().to(routes::errors)),
        ("/stats/keywords", web::get().to(routes::keywords)),
        ("/stats/keywords/top", web::get().to(routes::top_keywords)),
        ("/stats/summary", web::get().to(summary::summary)),
        ("/logs", web::get().to(search::logs)),
        ("/logs/{topic}/{partition}/{offset}", web::get().to(search::event)),
        ("/ingest", web::post().to(intake::ingest)),
        ("/v1/logs", web::post().to(protocols::otlp_logs)),
        ("/loki/api/v1/push", web::post().to(protocols::loki_push)),
        ("/logs/tail", web::get().to(tail::tail)),
        ("/healthz", web::get().to(routes::healthz)),
        ("/readyz", web::get().to(routes::readyz)),
        ("/openapi.json", web::get().to(openapi::serve_document)),
        ("/", web::get().to(dashboard::public_page)),
        ("/ws", web::get().to(dashboard::public_socket)),
    ]
}

/// Routes of the public listener.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for (path, route) in public_routes() {
        cfg.route(path, route);
    }
    cfg.configure(dashboard::assets);
}

/// What the public listener answers a path no route takes: 404 `not_found`, naming every route.
async fn no_such_route() -> actix_web::HttpResponse {
    static MESSAGE: OnceLock<String> = OnceLock::new();
    let message = MESSAGE.get_or_init(|| {
        let paths: Vec<&str> = public_routes().iter().map(|(path, _)| *path).collect();
        format!("no such route: see {}", paths.join(", "))
    });
    actix_web::HttpResponse::NotFound().json(serde_json::json!({ "error": "not_found", "message": message }))
}

/// The id of one request: the caller's `X-Request-Id` when it is a sane token, else a new one.
/// Every log line about the request carries it, and the response echoes it.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

impl RequestId {
    fn of(req: &actix_web::dev::ServiceRequest) -> RequestId {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        static PREFIX: OnceLock<String> = OnceLock::new();
        let given = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).filter(|v| {
            !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        });
        match given {
            Some(id) => RequestId(id.to_owned()),
            None => {
                // Unique across restarts: the process start time, then a counter.
                let prefix = PREFIX.get_or_init(|| format!("{:x}", chrono::Utc::now().timestamp_micros()));
                RequestId(format!("{prefix}-{:x}", NEXT.fetch_add(1, Ordering::Relaxed)))
            }
        }
    }
}

/// A logger for lines about this request (with its id).
pub fn request_log(req: &HttpRequest, log: &Logger) -> Logger {
    match req.extensions().get::<RequestId>() {
        Some(id) => log.new(slog::o!("request_id" => id.0.clone())),
        None => log.clone(),
    }
}

/// Per request: an id, the latency and status counted per route, and one log line (debug when it
/// went well, info for a client error, error with the cause chain for a server error).
async fn observe(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = RequestId::of(&req);
    req.extensions_mut().insert(id.clone());
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let mut res = match next.call(req).await {
        Ok(res) => res,
        Err(e) => {
            // An error the server itself turns into the answer (a handler's panic): counted and
            // logged here all the same.
            if let Some(state) = state {
                metrics::RequestHandled {
                    method: &method,
                    route: &route,
                    status: e.as_response_error().status_code(),
                    elapsed: started.elapsed(),
                    error: Some(e.to_string()),
                }
                .emit(&state.metrics.http, &state.log, &id.0);
            }
            return Err(e);
        }
    };
    let elapsed = started.elapsed();
    let status = res.status();
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&id.0) {
        res.headers_mut().insert(actix_web::http::header::HeaderName::from_static("x-request-id"), value);
    }
    if let Some(state) = state {
        let error = status.is_server_error().then(|| res.response().error().map(|e| e.to_string()).unwrap_or_default());
        metrics::RequestHandled { method: &method, route: &route, status, elapsed, error }.emit(
            &state.metrics.http,
            &state.log,
            &id.0,
        );
    }
    Ok(res)
}

/// The public server on an already bound listener (port 0 works: read the port off the listener).
pub fn serve(
    state: web::Data<AppState>,
    settings: &crate::config::Settings,
    listener: TcpListener,
) -> std::io::Result<actix_web::dev::Server> {
    let panics = web::Data::new(limits::PanicGuard::new(state.metrics.http.panics.clone(), state.log.clone()));
    let rate_limit = web::Data::new(limits::RateLimit::new(settings.rate_limit_rps, settings.rate_limit_burst));
    let body_timeout = web::Data::new(limits::BodyTimeout(Duration::from_millis(settings.http_body_timeout_ms)));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(panics.clone())
            .app_data(rate_limit.clone())
            .app_data(body_timeout.clone())
            // A query that does not fit a route's typed parameters is a 400 with the usual JSON body.
            .app_data(web::QueryConfig::default().error_handler(|e, _| {
                errors::ApiError::bad("bad_query", format!("the query string is not valid: {e}")).into()
            }))
            // Innermost first: a panic becomes a 500 before `observe` counts and logs it.
            .wrap(actix_web::middleware::from_fn(limits::catch_panics))
            .wrap(actix_web::middleware::from_fn(limits::body_deadline))
            .wrap(actix_web::middleware::from_fn(limits::rate_limit))
            .wrap(actix_web::middleware::from_fn(observe))
            .configure(configure)
            .default_service(web::to(no_such_route))
    })
    .shutdown_timeout(5)
    // A client that does not finish its headers in time is cut (slowloris); one that stops reading
    // after the answer gets a second to go.
    .client_request_timeout(Duration::from_millis(settings.http_request_timeout_ms))
    .client_disconnect_timeout(Duration::from_secs(1))
    .listen(listener)?
    .run();
    Ok(server)
}

#[cfg(test)]
mod tests {
    use actix_web::test::{call_service, init_service, read_body_json, TestRequest};

    use super::*;

    /// The 404 names every route the listener serves: each documented in the OpenAPI document,
    /// the dashboard's two, and each registered (a request to it is not the 404).
    #[actix_rt::test]
    async fn the_404_names_every_route_and_every_named_route_is_served() {
        let app = init_service(App::new().configure(configure).default_service(web::to(no_such_route))).await;
        let res = call_service(&app, TestRequest::get().uri("/no/such/route").to_request()).await;
        assert_eq!(res.status(), 404);
        let body: serde_json::Value = read_body_json(res).await;
        assert_eq!(body["error"], "not_found");
        let message = body["message"].as_str().expect("a message").to_owned();
        let listed: Vec<&str> =
            message.strip_prefix("no such route: see ").expect("the list of routes").split(", ").collect();
        let documented = openapi::document();
        let mut wanted: Vec<&str> = documented.paths.paths.keys().map(String::as_str).collect();
        wanted.extend(["/", "/ws", "/logs", "/logs/tail", "/logs/{topic}/{partition}/{offset}"]);
        for path in wanted {
            assert!(listed.contains(&path), "{path} is not in the 404's list: {message}");
        }
        for (path, _) in public_routes() {
            let uri = path.replace("{topic}", "t").replace("{partition}", "0").replace("{offset}", "1");
            // Each route's own method; no app state, so a served route answers a 500 (or a 4xx of
            // its own), never the fallback's list.
            let method = if ["/ingest", "/v1/logs", "/loki/api/v1/push"].contains(&path) { "POST" } else { "GET" };
            let req = TestRequest::default()
                .method(actix_web::http::Method::from_bytes(method.as_bytes()).unwrap())
                .uri(&uri)
                .to_request();
            let res = call_service(&app, req).await;
            let body = actix_web::test::read_body(res).await;
            assert!(!String::from_utf8_lossy(&body).contains("no such route"), "{method} {uri} is not served");
        }
    }
}
