//! OTLP/gRPC: `opentelemetry.proto.collector.logs.v1.LogsService/Export`, with OTLP/HTTP's mapping,
//! intake and answer (`partial_success` for the records refused).
//!
//! The route is mounted by hand rather than with the crate's generated `LogsServiceServer`: that
//! one decodes with tonic's default codec, which calls a malformed request INTERNAL (a server
//! fault, which exporters retry for ever); [`OtlpCodec`] calls it INVALID_ARGUMENT (the client's).

use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::web;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{empty_body, http, Body, BoxFuture, StdError};
use tonic::{Request, Response, Status};

use super::{authorize, status, Actix};
use crate::http::protocols::{intake_mapped, otlp_lines};
use crate::http::AppState;

pub(super) struct Logs {
    state: web::Data<AppState>,
    actix: Actix,
}

/// The service, refusing a request over `limit` bytes (`INGEST_MAX_BODY_BYTES`) before decoding it
/// (tonic answers OUT_OF_RANGE).
pub(super) fn service(state: web::Data<AppState>, actix: Actix, limit: usize) -> LogsServer {
    LogsServer { logs: Arc::new(Logs { state, actix }), limit }
}

/// `LogsService` on the gRPC router.
#[derive(Clone)]
pub(super) struct LogsServer {
    logs: Arc<Logs>,
    limit: usize,
}

impl tonic::server::NamedService for LogsServer {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
}

const EXPORT: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

impl<B> tonic::codegen::Service<http::Request<B>> for LogsServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::BoxBody>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != EXPORT {
            return Box::pin(async {
                Ok(http::Response::builder()
                    .status(200)
                    .header("grpc-status", (tonic::Code::Unimplemented as i32).to_string())
                    .header("content-type", "application/grpc")
                    .body(empty_body())
                    .expect("a fixed response builds"))
            });
        }
        let export = Export(self.logs.clone());
        let limit = self.limit;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(OtlpCodec).apply_max_message_size_config(Some(limit), None);
            Ok(grpc.unary(export, req).await)
        })
    }
}

struct Export(Arc<Logs>);

impl tonic::server::UnaryService<ExportLogsServiceRequest> for Export {
    type Response = ExportLogsServiceResponse;
    type Future = BoxFuture<Response<ExportLogsServiceResponse>, Status>;

    fn call(&mut self, request: Request<ExportLogsServiceRequest>) -> Self::Future {
        let logs = self.0.clone();
        Box::pin(async move { logs.export(request).await })
    }
}

/// Protobuf both ways; a request that does not decode is the client's error.
#[derive(Default)]
struct OtlpCodec;

impl Codec for OtlpCodec {
    type Encode = ExportLogsServiceResponse;
    type Decode = ExportLogsServiceRequest;
    type Encoder = OtlpCodec;
    type Decoder = OtlpCodec;

    fn encoder(&mut self) -> OtlpCodec {
        OtlpCodec
    }

    fn decoder(&mut self) -> OtlpCodec {
        OtlpCodec
    }
}

impl Encoder for OtlpCodec {
    type Item = ExportLogsServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: ExportLogsServiceResponse, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf).map_err(|e| Status::internal(format!("encoding the answer: {e}")))
    }
}

impl Decoder for OtlpCodec {
    type Item = ExportLogsServiceRequest;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<ExportLogsServiceRequest>, Status> {
        ExportLogsServiceRequest::decode(buf)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("not an OTLP ExportLogsServiceRequest: {e}")))
    }
}

impl Logs {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        authorize(&self.state, request.metadata())?;
        let mapped = otlp_lines(request.get_ref());
        let state = self.state.clone();
        let log = self.state.log.new(slog::o!("grpc" => "LogsService/Export"));
        let outcome = self.actix.run(move || intake_mapped(state, log, mapped, "otlp")).await?.map_err(status)?;
        let partial_success = (outcome.rejected > 0).then_some(ExportLogsPartialSuccess {
            rejected_log_records: outcome.rejected as i64,
            error_message: outcome.summary,
        });
        Ok(Response::new(ExportLogsServiceResponse { partial_success }))
    }
}
