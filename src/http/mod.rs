//! The public HTTP API (actix-web): stats, ingest, health.

pub mod auth;
pub mod errors;
pub mod ingest;
pub mod params;
pub mod read_path;
pub mod routes;
pub mod summary;

use std::net::TcpListener;

use actix_web::{web, App, HttpServer};
use actors::domain::{ParseRules, Window};
use rdkafka::producer::FutureProducer;
use slog::Logger;

use crate::db::PgPool;
use read_path::StatsReader;
use routes::{LagProbe, Probe};

/// What every handler can reach.
pub struct AppState {
    pub reader: StatsReader,
    pub max_window: Window,
    pub topic: String,
    pub producer: Option<FutureProducer>,
    pub pool: PgPool,
    pub parse_rules: ParseRules,
    pub ingest_max_body_bytes: usize,
    /// Bound on the PostgreSQL queries a handler makes itself (`DATABASE_TIMEOUT_MS`).
    pub database_timeout_ms: u64,
    pub lag: Option<LagProbe>,
    pub kafka_ready: Option<Probe>,
    pub auth: auth::Auth,
    pub metrics: std::sync::Arc<crate::admin::Metrics>,
    pub log: Logger,
}

/// Routes of the public listener.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/stats/errors", web::get().to(routes::errors))
        .route("/stats/keywords", web::get().to(routes::keywords))
        .route("/stats/keywords/top", web::get().to(routes::top_keywords))
        .route("/stats/summary", web::get().to(summary::summary))
        .route("/ingest", web::post().to(ingest::ingest))
        .route("/healthz", web::get().to(routes::healthz))
        .route("/readyz", web::get().to(routes::readyz));
}

/// The public server on an already bound listener (port 0 works: read the port off the listener).
pub fn serve(state: web::Data<AppState>, listener: TcpListener) -> std::io::Result<actix_web::dev::Server> {
    let server = HttpServer::new(move || {
        App::new().app_data(state.clone()).app_data(web::QueryConfig::default()).configure(configure).default_service(
            web::to(|| async {
                actix_web::HttpResponse::NotFound().json(serde_json::json!({
                    "error": "not_found",
                    "message": "no such route: see /stats/errors, /stats/keywords, /stats/keywords/top, /stats/summary, /ingest",
                }))
            }),
        )
    })
    .shutdown_timeout(5)
    .listen(listener)?
    .run();
    Ok(server)
}
