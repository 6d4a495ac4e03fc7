//! The gRPC listener (`GRPC_ADDR`, DESIGN §12): OTLP/gRPC `LogsService/Export`, the
//! `loganalyzer.v1` API (`Stats`, `Ingest/Push`; proto/loganalyzer/v1) and server reflection.
//!
//! Nothing here decides anything the HTTP API does not: OTLP records take OTLP/HTTP's mapping and
//! intake (`http::protocols`), Push takes POST /ingest's intake, and a `Stats` call is the REST
//! handler itself, answered from its JSON. So the answers, the limits, the JWT check and the error
//! messages are the same on both listeners by construction.
//!
//! tonic runs on its own thread (an actix Arbiter, whose runtime is tokio's). The intake and the
//! handlers spawn actix-local tasks, which need an actix arbiter's task set: each call is handed to
//! that arbiter ([`Actix::run`]) rather than run on tonic's connection task.

// tonic's `Status` is the call's answer, returned once per call: boxing it would buy nothing.
#![allow(clippy::result_large_err)]

mod ingest;
mod otlp;
mod stats;

use std::future::Future;

use actix_web::web;
use slog::{error, info, Logger};
use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::http::errors::ApiError;
use crate::http::AppState;

/// The generated `loganalyzer.v1` messages and services.
pub mod pb {
    tonic::include_proto!("loganalyzer.v1");

    /// What server reflection describes.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("loganalyzer_descriptor");
}

/// A running gRPC listener.
pub struct GrpcServer {
    arbiter: actix::Arbiter,
    shutdown: tokio::sync::oneshot::Sender<()>,
    stopped: tokio::sync::oneshot::Receiver<()>,
    port: u16,
}

/// How long a stop waits for the calls in progress (the process has 10 s in all).
const DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

impl GrpcServer {
    /// The port it listens on (port 0 in `GRPC_ADDR` picks one).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops taking calls, lets the running ones finish (for up to 5 s), then ends its thread.
    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        let _ = tokio::time::timeout(DRAIN, self.stopped).await;
        self.arbiter.stop();
    }
}

/// Serves gRPC on an already bound listener until [`GrpcServer::stop`].
/// `rate` is the public API's `RATE_LIMIT_RPS`/`RATE_LIMIT_BURST`, per client IP, for gRPC calls too: past it a
/// call gets RESOURCE_EXHAUSTED with the wait (HTTP's 429 and Retry-After).
pub fn serve(
    state: web::Data<AppState>,
    rate: crate::http::limits::RateLimit,
    listener: std::net::TcpListener,
    log: &Logger,
) -> anyhow::Result<GrpcServer> {
    let rate = std::sync::Arc::new(rate);
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let arbiter = actix::Arbiter::new();
    let actix = Actix(arbiter.handle());
    let (shutdown, shutdown_asked) = tokio::sync::oneshot::channel::<()>();
    let (done, stopped) = tokio::sync::oneshot::channel::<()>();
    let log = log.new(slog::o!("listener" => "grpc"));
    let limit = state.ingest_max_body_bytes;
    let started = arbiter.spawn_fn(move || {
        actix_rt::spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => listener,
                Err(e) => return error!(log, "the gRPC listener cannot be used"; "error" => %e),
            };
            let incoming = match tonic::transport::server::TcpIncoming::from_listener(listener, true, None) {
                Ok(incoming) => incoming,
                Err(e) => return error!(log, "the gRPC listener cannot be used"; "error" => %e),
            };
            let reflection = match tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .build()
            {
                Ok(reflection) => reflection,
                Err(e) => return error!(log, "the gRPC reflection service cannot be built"; "error" => %e),
            };
            info!(log, "listening"; "port" => port);
            let limit_calls = move |request: tonic::Request<()>| -> Result<tonic::Request<()>, Status> {
                let Some(peer) = request.remote_addr().map(|a| a.ip()) else { return Ok(request) };
                match rate.check(peer) {
                    Ok(()) => Ok(request),
                    Err(wait) => Err(Status::resource_exhausted(format!(
                        "too many requests from {peer}; retry in {} s",
                        crate::http::limits::retry_seconds(wait)
                    ))),
                }
            };
            let served = tonic::transport::Server::builder()
                .layer(tonic::service::interceptor(limit_calls))
                .add_service(otlp::service(state.clone(), actix.clone(), limit))
                .add_service(stats::service(state.clone(), actix.clone()))
                .add_service(ingest::service(state, actix, limit))
                .add_service(reflection)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = shutdown_asked.await;
                })
                .await;
            match served {
                Ok(()) => info!(log, "stopped"),
                Err(e) => error!(log, "the gRPC server failed"; "error" => %e),
            }
            let _ = done.send(());
        });
    });
    anyhow::ensure!(started, "the gRPC server's thread did not start");
    Ok(GrpcServer { arbiter, shutdown, stopped, port })
}

/// The arbiter whose task set runs the calls' work.
#[derive(Clone)]
pub(crate) struct Actix(actix::ArbiterHandle);

impl Actix {
    /// Runs `work` as an actix task and waits for its answer.
    pub(crate) async fn run<W, F, T>(&self, work: W) -> Result<T, Status>
    where
        W: FnOnce() -> F + Send + 'static,
        F: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let handed = self.0.spawn_fn(move || {
            actix_rt::spawn(async move {
                let _ = answer.send(work().await);
            });
        });
        if !handed {
            return Err(Status::unavailable("the server is stopping"));
        }
        answered.await.map_err(|_| Status::internal("the call's task ended without an answer"))
    }
}

/// An HTTP request carrying the call's `authorization` metadata, for the checks and handlers the
/// REST routes use (they read headers off an `HttpRequest`).
pub(crate) fn http_request(uri: &str, metadata: &MetadataMap) -> actix_web::HttpRequest {
    let mut req = actix_web::test::TestRequest::get().uri(uri);
    if let Some(value) = metadata.get("authorization").and_then(|v| v.to_str().ok()) {
        req = req.insert_header(("authorization", value.to_owned()));
    }
    req.to_http_request()
}

/// The same JWT check as REST's.
pub(crate) fn authorize(state: &AppState, metadata: &MetadataMap) -> Result<(), Status> {
    state.auth.check(&http_request("/", metadata)).map_err(status)
}

/// REST's refusal as a gRPC status, with the same message.
pub(crate) fn status(error: ApiError) -> Status {
    let message = error.to_string();
    match error {
        ApiError::BadRequest { .. } => Status::invalid_argument(message),
        ApiError::Unauthorized(_) => Status::unauthenticated(message),
        ApiError::NotFound { .. } => Status::not_found(message),
        ApiError::TooLarge(_) => Status::resource_exhausted(message),
        ApiError::Unavailable { .. } => Status::unavailable(message),
        ApiError::Internal { .. } => Status::internal(message),
    }
}
