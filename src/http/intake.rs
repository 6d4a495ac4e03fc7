//! POST /ingest: newline-delimited events into the intake (`actors::intake`: each line checked, the
//! valid ones queued in Kafka before answering, the others dead-lettered, exactly once under an
//! `Idempotency-Key`). This route reads the request within its bounds (`INGEST_MAX_BODY_BYTES`, the
//! headers, the query) and turns the intake's outcome into HTTP.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actors::domain::ServiceName;
use actors::intake::{IntakeError, IntakeOptions, IntakeOutcome, Lines};
use chrono::Utc;
use futures::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::errors::ApiError;
use super::AppState;

/// Longest accepted `Idempotency-Key`.
const MAX_KEY_BYTES: usize = 255;
/// `log_rejects.source` of this route's dead letters.
const SOURCE: &str = "http";

/// `?service=S`: the service of lines that name none; `?dry_run=true`: resolve and answer, store nothing.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
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
    let key = idempotency_key(&req)?;
    let IngestQuery { service, dry_run } = query.into_inner();
    let service = service.filter(|s| !s.is_empty());
    if let Some(name) = &service {
        ServiceName::parse(name).map_err(|e| ApiError::bad("bad_service", format!("`service` {e}")))?;
    }
    let limit = state.ingest_max_body_bytes;
    let too_large = || ApiError::TooLarge(format!("the body is over {limit} bytes; send smaller batches"));
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut bytes = web::BytesMut::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad("bad_body", format!("reading the body: {e}")))?;
        if bytes.len() + chunk.len() > limit {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    let body = bytes.freeze();
    let received = Utc::now();
    let hash = key.as_ref().map(|_| Sha256::digest(&body));
    let log = super::request_log(&req, &state.log);
    // Its own task: a client that hangs up does not cut the work short between queueing and storing
    // the dead letters.
    let task = actix_rt::spawn(async move {
        let options = IntakeOptions {
            service: service.as_deref(),
            idempotency: key.as_deref().zip(hash.as_ref().map(|h| &h[..])),
            dry_run,
            received,
            source: SOURCE,
        };
        state.intake.take(Lines::Body(&body), options, &log).await
    });
    let outcome = match task.await {
        Ok(outcome) => outcome,
        Err(e) => {
            return Ok(json_answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({ "error": "internal", "message": format!("ingest failed: {e}") }),
            ))
        }
    };
    Ok(match outcome {
        Ok(IntakeOutcome::Accepted { body }) => answer(StatusCode::ACCEPTED, body),
        Ok(IntakeOutcome::Replayed { status, body }) => {
            let mut response = answer(StatusCode::from_u16(status).unwrap_or(StatusCode::ACCEPTED), body);
            response.headers_mut().insert(
                actix_web::http::header::HeaderName::from_static("idempotent-replayed"),
                actix_web::http::header::HeaderValue::from_static("true"),
            );
            response
        }
        Ok(IntakeOutcome::KeyInUse { since }) => json_answer(
            StatusCode::CONFLICT,
            &json!({ "error": "idempotency_key_in_use", "message": format!(
                "a request with this Idempotency-Key started at {since} and has no answer yet (still running, \
                 or interrupted: then whether its lines reached the queue is unknown); ask again later") }),
        ),
        Ok(IntakeOutcome::KeyReused) => json_answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({ "error": "idempotency_key_reused", "message":
                "this Idempotency-Key was used with another body in the last 24 h; use a new key for new data" }),
        ),
        Ok(IntakeOutcome::QueueDown { body } | IntakeOutcome::NotRecorded { body }) => {
            json_answer(StatusCode::SERVICE_UNAVAILABLE, &body)
        }
        Ok(IntakeOutcome::DryRun { lines }) => HttpResponse::Ok().json(json!({ "dry_run": true, "lines": lines })),
        Err(e @ IntakeError::StoreUnavailable(_)) => {
            return Err(ApiError::unavailable("database_unavailable", e.to_string()))
        }
        Err(e @ IntakeError::DeadLettersNotStored(_)) => {
            return Err(ApiError::unavailable("dead_letters_not_stored", e.to_string()))
        }
    })
}

fn answer(status: StatusCode, body: Vec<u8>) -> HttpResponse {
    HttpResponse::build(status).content_type("application/json").body(body)
}

fn json_answer(status: StatusCode, body: &Value) -> HttpResponse {
    answer(status, serde_json::to_vec(body).expect("JSON values serialize"))
}

/// What POST /ingest makes of `lines` (each a JSON object or a text line, without a newline) with
/// its `service` option: the same resolution, dead letters (kept with `source`) and queue, and the
/// same per-body tally (`accepted`, `rejected`, `rejected_by_reason`, `errors`, `not_queued`…) with
/// its status (202, or 503 when nothing was queued). The other intake routes (OTLP, Loki) come in
/// through here.
pub async fn intake_lines(
    state: web::Data<AppState>,
    lines: Vec<Vec<u8>>,
    service: Option<String>,
    source: &'static str,
    log: slog::Logger,
) -> Result<(StatusCode, Value), ApiError> {
    let task = actix_rt::spawn(async move {
        let options = IntakeOptions {
            service: service.as_deref(),
            idempotency: None,
            dry_run: false,
            received: Utc::now(),
            source,
        };
        state.intake.take(Lines::Split(&lines), options, &log).await
    });
    let outcome = task.await.map_err(|e| ApiError::unavailable("internal", format!("ingest failed: {e}")))?;
    match outcome {
        Ok(IntakeOutcome::Accepted { body }) => {
            Ok((StatusCode::ACCEPTED, serde_json::from_slice(&body).unwrap_or(Value::Null)))
        }
        Ok(IntakeOutcome::QueueDown { body } | IntakeOutcome::NotRecorded { body }) => {
            Ok((StatusCode::SERVICE_UNAVAILABLE, body))
        }
        // Without a key or dry_run the intake answers none of the others.
        Ok(other) => Err(ApiError::unavailable("internal", format!("unexpected intake outcome {other:?}"))),
        Err(e @ IntakeError::StoreUnavailable(_)) => Err(ApiError::unavailable("database_unavailable", e.to_string())),
        Err(e @ IntakeError::DeadLettersNotStored(_)) => {
            Err(ApiError::unavailable("dead_letters_not_stored", e.to_string()))
        }
    }
}

/// The `Idempotency-Key` header, if any: 1 to 255 visible ASCII characters.
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else { return Ok(None) };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_BYTES && k.bytes().all(|b| b.is_ascii_graphic() || b == b' '));
    match key {
        Some(key) => Ok(Some(key.to_owned())),
        None => Err(ApiError::bad(
            "bad_idempotency_key",
            format!("Idempotency-Key must be 1 to {MAX_KEY_BYTES} visible ASCII characters"),
        )),
    }
}
