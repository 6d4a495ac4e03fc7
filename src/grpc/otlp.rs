//! OTLP/gRPC: `opentelemetry.proto.collector.logs.v1.LogsService/Export`, with OTLP/HTTP's mapping,
//! intake and answer (`partial_success` for the records refused).

use actix_web::web;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use tonic::{Request, Response, Status};

use super::{authorize, status, Actix};
use crate::http::protocols::{intake_mapped, otlp_lines};
use crate::http::AppState;

pub(super) struct Logs {
    state: web::Data<AppState>,
    actix: Actix,
}

/// The service, refusing a request over `limit` bytes (`INGEST_MAX_BODY_BYTES`) as
/// RESOURCE_EXHAUSTED before decoding it.
pub(super) fn service(state: web::Data<AppState>, actix: Actix, limit: usize) -> LogsServiceServer<Logs> {
    LogsServiceServer::new(Logs { state, actix }).max_decoding_message_size(limit)
}

#[tonic::async_trait]
impl LogsService for Logs {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        authorize(&self.state, request.metadata())?;
        let mapped = otlp_lines(request.get_ref());
        let state = self.state.clone();
        let log = self.state.log.new(slog::o!("grpc" => "LogsService/Export"));
        let outcome = self.actix.run(move || intake_mapped(state, log, mapped)).await?.map_err(status)?;
        let partial_success = (outcome.rejected > 0).then_some(ExportLogsPartialSuccess {
            rejected_log_records: outcome.rejected as i64,
            error_message: outcome.summary,
        });
        Ok(Response::new(ExportLogsServiceResponse { partial_success }))
    }
}
