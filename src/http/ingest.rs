//! POST /ingest: newline-delimited JSON events into the Kafka topic (acks=all) before answering;
//! lines that do not parse are reported by number and dead-lettered, so nothing sent is lost.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use actors::domain::event::REJECT_RAW_PREFIX_BYTES;
use actors::domain::{Fallback, LogEvent, ServiceName};
use chrono::Utc;
use diesel_async::RunQueryDsl;
use futures::StreamExt;
use rdkafka::producer::FutureRecord;
use serde_json::json;
use slog::warn;

use super::errors::ApiError;
use super::AppState;
use crate::db::schema::log_rejects;

#[derive(diesel::Insertable)]
#[diesel(table_name = log_rejects)]
struct NewReject {
    source: &'static str,
    reason: String,
    detail: String,
    raw: Vec<u8>,
    raw_len: i32,
}

/// `?service=S`: the service of lines that name none; `?dry_run=true`: resolve and answer, store nothing.
#[derive(Debug, serde::Deserialize)]
pub struct IngestQuery {
    service: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

pub async fn ingest(
    req: HttpRequest,
    mut body: web::Payload,
    query: web::Query<IngestQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.auth.check(&req)?;
    let service = query.service.as_deref().filter(|s| !s.is_empty());
    if let Some(name) = service {
        ServiceName::parse(name).map_err(|e| ApiError::bad("bad_service", format!("`service` {e}")))?;
    }
    let limit = state.ingest_max_body_bytes;
    let mut bytes = web::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad("bad_body", format!("reading the body: {e}")))?;
        if bytes.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge(format!("the body is over {limit} bytes; send smaller batches")));
        }
        bytes.extend_from_slice(&chunk);
    }
    let now = Utc::now();
    if query.dry_run {
        let lines: Vec<serde_json::Value> = bytes[..]
            .split(|b: &u8| *b == b'\n')
            .enumerate()
            .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
            .map(|(i, line)| match LogEvent::parse(line, Fallback::http(now, service), now, &state.parse_rules) {
                Ok(event) => json!({ "line": i + 1, "event": event.to_json() }),
                Err(reject) => json!({ "line": i + 1, "reject": reject.to_json() }),
            })
            .collect();
        return Ok(HttpResponse::Ok().json(json!({ "dry_run": true, "lines": lines })));
    }
    let producer =
        state.producer.as_ref().ok_or_else(|| ApiError::unavailable("kafka_unavailable", "no Kafka producer"))?;
    let mut deliveries = Vec::new();
    let mut errors = Vec::new();
    let mut rejects = Vec::new();
    for (i, line) in bytes[..].split(|b: &u8| *b == b'\n').enumerate() {
        let line_no = i + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match LogEvent::parse(line, Fallback::http(now, service), now, &state.parse_rules) {
            Ok(_) => {
                let mut record: FutureRecord<'_, (), [u8]> =
                    FutureRecord::to(&state.topic).payload(line).timestamp(now.timestamp_millis());
                if let Some(name) = service {
                    let header = rdkafka::message::Header { key: actors::ingest::SERVICE_HEADER, value: Some(name) };
                    record = record.headers(rdkafka::message::OwnedHeaders::new().insert(header));
                }
                deliveries.push((line_no, producer.send(record, Duration::from_secs(5))));
            }
            Err(reject) => {
                errors.push(json!({ "line": line_no, "reason": reject.reason.code(), "message": reject.detail }));
                rejects.push(NewReject {
                    source: "http",
                    reason: reject.reason.code().to_owned(),
                    detail: format!("line {line_no}: {}", reject.detail),
                    raw: line[..line.len().min(REJECT_RAW_PREFIX_BYTES)].to_vec(),
                    raw_len: i32::try_from(line.len()).unwrap_or(i32::MAX),
                });
            }
        }
    }
    let mut accepted = 0u64;
    for (line_no, delivery) in deliveries {
        match delivery.await {
            Ok(_) => accepted += 1,
            Err((e, _)) => {
                errors.push(json!({ "line": line_no, "reason": "not_queued", "message": format!("Kafka refused it: {e}; send it again") }))
            }
        }
    }
    // Nothing reached Kafka: the client will send the whole body again, so its dead letters are
    // stored then, not now (storing them now would store them twice).
    if accepted == 0 && errors.iter().any(|e| e["reason"] == "not_queued") {
        return Err(ApiError::unavailable("kafka_unavailable", "Kafka did not take any event; nothing was accepted"));
    }
    let rejected = rejects.len();
    if !rejects.is_empty() {
        let stored = async {
            let mut conn = state.pool.get().await.map_err(|e| e.to_string())?;
            diesel::insert_into(log_rejects::table).values(&rejects).execute(&mut conn).await.map_err(|e| e.to_string())
        }
        .await;
        if let Err(e) = stored {
            // The client still has every rejected line in the answer.
            warn!(super::request_log(&req, &state.log), "dead letters of POST /ingest not stored"; "count" => rejected, "error" => e);
        }
    }
    errors.sort_by_key(|e| e["line"].as_u64());
    Ok(HttpResponse::Accepted().json(json!({ "accepted": accepted, "rejected": rejected, "errors": errors })))
}
