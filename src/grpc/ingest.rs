//! `loganalyzer.v1.Ingest/Push`: POST /ingest as a client stream. Lines are gathered into batches
//! of at most `INGEST_MAX_BODY_BYTES` (the body limit, so memory per call stays bounded) and each
//! batch is one POST /ingest body for the intake: each line is resolved, dead-lettered or queued
//! once, and a batch the queue did not take ends the call saying how many lines went before it.

use actix_web::http::StatusCode;
use actix_web::web;
use actors::domain::ServiceName;
use tonic::{Request, Response, Status, Streaming};

use super::pb::ingest_server::{Ingest, IngestServer};
use super::pb::{LineError, PushReply, PushRequest};
use super::{authorize, status, Actix};
use crate::http::AppState;

/// Line errors listed in the reply, as POST /ingest lists them.
const MAX_LISTED: usize = 100;

pub(super) struct IngestApi {
    state: web::Data<AppState>,
    actix: Actix,
    limit: usize,
}

pub(super) fn service(state: web::Data<AppState>, actix: Actix, limit: usize) -> IngestServer<IngestApi> {
    IngestServer::new(IngestApi { state, actix, limit }).max_decoding_message_size(limit)
}

/// Lines waiting for the intake, all with the same `service` option.
#[derive(Default)]
struct Batch {
    lines: Vec<Vec<u8>>,
    bytes: usize,
    service: Option<String>,
}

/// The whole stream's tally.
#[derive(Default)]
struct Totals {
    reply: PushReply,
    /// Lines handed to the intake so far (a line with newlines in it counts as the lines it holds,
    /// as in a POST /ingest body).
    lines: u64,
}

impl IngestApi {
    async fn flush(&self, batch: &mut Batch, totals: &mut Totals) -> Result<(), Status> {
        if batch.lines.is_empty() {
            return Ok(());
        }
        let lines = std::mem::take(&mut batch.lines);
        batch.bytes = 0;
        let in_batch: u64 = lines.iter().map(|l| 1 + l.iter().filter(|&&b| b == b'\n').count() as u64).sum();
        let state = self.state.clone();
        let service = batch.service.clone();
        let log = self.state.log.new(slog::o!("grpc" => "Ingest/Push"));
        let (code, tally) = self
            .actix
            .run(move || crate::http::intake::intake_lines(state, lines, service, "grpc", log))
            .await?
            .map_err(status)?;
        let not_queued = tally["not_queued"].as_u64().unwrap_or(0);
        if code == StatusCode::SERVICE_UNAVAILABLE || not_queued > 0 {
            let why = tally["message"].as_str().unwrap_or("the queue did not take every line");
            return Err(Status::unavailable(format!(
                "{why}; this stream's first {} lines were handled ({} queued, {} rejected) before the batch of \
                 lines {}-{}, of which {} were queued and {not_queued} not: send the lines from {} on again",
                totals.lines,
                totals.reply.accepted,
                totals.reply.rejected,
                totals.lines + 1,
                totals.lines + in_batch,
                tally["accepted"].as_u64().unwrap_or(0),
                totals.lines + 1,
            )));
        }
        let reply = &mut totals.reply;
        reply.accepted += tally["accepted"].as_u64().unwrap_or(0);
        reply.rejected += tally["rejected"].as_u64().unwrap_or(0);
        if let Some(by_reason) = tally["rejected_by_reason"].as_object() {
            for (reason, n) in by_reason {
                *reply.rejected_by_reason.entry(reason.clone()).or_default() += n.as_u64().unwrap_or(0);
            }
        }
        for error in tally["errors"].as_array().into_iter().flatten() {
            if reply.errors.len() >= MAX_LISTED {
                break;
            }
            reply.errors.push(LineError {
                line: totals.lines + error["line"].as_u64().unwrap_or(0),
                reason: error["reason"].as_str().unwrap_or("").to_owned(),
                message: error["message"].as_str().unwrap_or("").to_owned(),
            });
        }
        totals.lines += in_batch;
        Ok(())
    }
}

#[tonic::async_trait]
impl Ingest for IngestApi {
    async fn push(&self, request: Request<Streaming<PushRequest>>) -> Result<Response<PushReply>, Status> {
        authorize(&self.state, request.metadata())?;
        let mut stream = request.into_inner();
        let mut batch = Batch::default();
        let mut totals = Totals::default();
        while let Some(message) = stream.message().await? {
            let service = Some(message.service).filter(|s| !s.is_empty());
            if let Some(name) = &service {
                ServiceName::parse(name).map_err(|e| Status::invalid_argument(format!("`service` {e}")))?;
            }
            if service != batch.service {
                self.flush(&mut batch, &mut totals).await?;
                batch.service = service;
            }
            for line in message.lines {
                // The newline that joins it to the batch counts against the body limit too.
                if batch.bytes + line.len() + 1 > self.limit {
                    self.flush(&mut batch, &mut totals).await?;
                }
                batch.bytes += line.len() + 1;
                batch.lines.push(line.into_bytes());
            }
        }
        self.flush(&mut batch, &mut totals).await?;
        Ok(Response::new(totals.reply))
    }
}
