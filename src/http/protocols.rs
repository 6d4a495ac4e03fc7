//! The shippers' push protocols on the public listener (DESIGN §12): OTLP/HTTP `POST /v1/logs` and
//! Loki's `POST /loki/api/v1/push`. Each decodes its wire format, maps every record to a §4 event
//! line in the core (`actors::protocols`) and hands the lines to POST /ingest's intake, so the
//! resolution, the dead letters, the queue, the limits, JWT and the rate limit are the same.
//!
//! Memory per request is bounded by `INGEST_MAX_BODY_BYTES` twice over: once for the body as sent,
//! once for it decompressed (gzip is read through a cap; snappy states its length up front), so a
//! compression bomb is a 413 before it is inflated.

// A refusal is the finished answer, made at most once per request: boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use std::io::Read;

use actix_web::http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actors::protocols::{loki, otlp, AnyValue};
use base64::Engine;
use futures::StreamExt;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1 as otlp_common;
use prost::Message;
use serde_json::{json, Map, Value};

use super::errors::ApiError;
use super::AppState;

/// The Loki push messages generated from proto/loki/push.proto.
pub mod logproto {
    include!(concat!(env!("OUT_DIR"), "/logproto.rs"));
}

/// Seconds a client is told to wait when the queue is down.
const RETRY_AFTER_SECONDS: u64 = 5;

/// A refusal in the API's usual shape, for statuses `ApiError` has no variant for.
fn refuse(status: StatusCode, code: &str, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": code, "message": message.into() }))
}

/// The body encodings of the two protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

/// `Content-Type`, without parameters; `None` for a type this route does not take.
fn encoding(req: &HttpRequest, missing: Option<Encoding>) -> Result<Encoding, HttpResponse> {
    let Some(value) = req.headers().get(CONTENT_TYPE) else {
        return missing.ok_or_else(|| {
            refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send a Content-Type: application/x-protobuf or application/json",
            )
        });
    };
    let essence = value.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        other => Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Type {other:?} is not accepted here: send application/x-protobuf or application/json"),
        )),
    }
}

fn too_large(limit: usize) -> HttpResponse {
    refuse(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the body is over {limit} bytes (as sent or decompressed); send smaller batches"),
    )
}

/// The body as sent, at most `limit` bytes.
async fn read_body(req: &HttpRequest, mut payload: web::Payload, limit: usize) -> Result<Vec<u8>, HttpResponse> {
    let declared =
        req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| refuse(StatusCode::BAD_REQUEST, "bad_body", format!("reading the body: {e}")))?;
        if bytes.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// The body with its `Content-Encoding` (identity or gzip) undone, at most `limit` bytes.
fn decode_content(req: &HttpRequest, body: Vec<u8>, limit: usize) -> Result<Vec<u8>, HttpResponse> {
    let coding = req.headers().get(CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    match coding.as_deref() {
        None | Some("" | "identity") => Ok(body),
        Some("gzip" | "x-gzip") => {
            let mut out = Vec::new();
            // One byte past the limit tells a body that is over it from one that is exactly it.
            let mut reader = flate2::read::MultiGzDecoder::new(&body[..]).take(limit as u64 + 1);
            reader.read_to_end(&mut out).map_err(|e| {
                refuse(StatusCode::BAD_REQUEST, "bad_gzip", format!("the gzip body does not decode: {e}"))
            })?;
            if out.len() > limit {
                return Err(too_large(limit));
            }
            Ok(out)
        }
        Some(other) => Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("Content-Encoding {other:?} is not accepted: send gzip or no encoding"),
        )),
    }
}

/// The event lines of a request and the records that could not be mapped.
#[derive(Default)]
pub(crate) struct Mapped {
    lines: Vec<Vec<u8>>,
    unmapped: u64,
    first_unmapped: Option<String>,
}

impl Mapped {
    fn push(&mut self, line: Result<Vec<u8>, actors::domain::Reject>) {
        match line {
            Ok(line) => self.lines.push(line),
            Err(reject) => {
                self.unmapped += 1;
                self.first_unmapped.get_or_insert_with(|| reject.to_string());
            }
        }
    }
}

/// What the intake made of a request's lines.
pub(crate) struct Outcome {
    pub accepted: u64,
    pub rejected: u64,
    /// `reason: first message` of the rejected, for the client.
    pub summary: String,
}

/// Hands the lines to POST /ingest's intake; 503 with `Retry-After` when not all of them were
/// queued (the client sends the batch again: a repeat beats a loss).
async fn intake(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    mapped: Mapped,
    source: &'static str,
) -> Result<Outcome, HttpResponse> {
    let log = super::request_log(req, &state.log);
    intake_mapped(state.clone(), log, mapped, source)
        .await
        .map_err(|e| with_retry_after(actix_web::ResponseError::error_response(&e)))
}

/// The intake of mapped records, for every protocol (HTTP here, gRPC in `crate::grpc`): an error
/// when not all of them were queued.
pub(crate) async fn intake_mapped(
    state: web::Data<AppState>,
    log: slog::Logger,
    mapped: Mapped,
    source: &'static str,
) -> Result<Outcome, ApiError> {
    let total = mapped.lines.len();
    let (status, tally) = super::intake::intake_lines(state, mapped.lines, None, source, log).await?;
    let not_queued = tally["not_queued"].as_u64().unwrap_or(0);
    if status == StatusCode::SERVICE_UNAVAILABLE || not_queued > 0 {
        let message = tally["message"].as_str().map(str::to_owned).unwrap_or_else(|| {
            format!(
                "{not_queued} of {total} records were not queued (the queue did not take them); send the batch again"
            )
        });
        return Err(ApiError::unavailable("queue_unavailable", message));
    }
    let accepted = tally["accepted"].as_u64().unwrap_or(0);
    let rejected = tally["rejected"].as_u64().unwrap_or(0) + mapped.unmapped;
    let mut reasons: Vec<String> = Vec::new();
    if let Some(first) = mapped.first_unmapped {
        reasons.push(format!("{} not mappable (first: {first})", mapped.unmapped));
    }
    if let Some(first) = tally["errors"].as_array().and_then(|e| e.first()) {
        reasons.push(format!(
            "{} rejected by reason {} (first: {}: {})",
            tally["rejected"],
            tally["rejected_by_reason"],
            first["reason"].as_str().unwrap_or(""),
            first["message"].as_str().unwrap_or("")
        ));
    }
    Ok(Outcome { accepted, rejected, summary: reasons.join("; ") })
}

fn with_retry_after(mut response: HttpResponse) -> HttpResponse {
    if response.status() == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            actix_web::http::header::RETRY_AFTER,
            actix_web::http::header::HeaderValue::from(RETRY_AFTER_SECONDS),
        );
    }
    response
}

// ---------------------------------------------------------------------------------------------
// OTLP/HTTP

#[utoipa::path(post, path = "/v1/logs", tag = "ingest",
    request_body(content = String, description = "An OTLP ExportLogsServiceRequest (protobuf or JSON, gzip allowed)",
                 content_type = "application/x-protobuf"),
    responses(
        (status = 200, description = "ExportLogsServiceResponse in the request's encoding; partial_success counts refused records",
            content((serde_json::Value = "application/json"), (String = "application/x-protobuf"))),
        (status = 400, description = "Malformed body", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = super::openapi::ErrorBody),
        (status = 413, description = "Over INGEST_MAX_BODY_BYTES, as sent or decompressed", body = super::openapi::ErrorBody),
        (status = 415, description = "Not protobuf or JSON, or an unknown Content-Encoding", body = super::openapi::ErrorBody),
        (status = 429, description = "Over RATE_LIMIT_RPS; see Retry-After", body = super::openapi::ErrorBody),
        (status = 503, description = "The queue did not take the records; see Retry-After", body = super::openapi::ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn otlp_logs(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    match otlp_logs_inner(&req, payload, &state).await {
        Ok(response) | Err(response) => response,
    }
}

async fn otlp_logs_inner(
    req: &HttpRequest,
    payload: web::Payload,
    state: &web::Data<AppState>,
) -> Result<HttpResponse, HttpResponse> {
    state.auth.check(req).map_err(|e| actix_web::ResponseError::error_response(&e))?;
    let encoding = encoding(req, None)?;
    let limit = state.ingest_max_body_bytes;
    let body = decode_content(req, read_body(req, payload, limit).await?, limit)?;
    let request = match encoding {
        Encoding::Protobuf => ExportLogsServiceRequest::decode(&body[..]).map_err(|e| {
            refuse(StatusCode::BAD_REQUEST, "bad_protobuf", format!("not an OTLP ExportLogsServiceRequest: {e}"))
        })?,
        Encoding::Json => otlp_json::request(&body)
            .map_err(|e| refuse(StatusCode::BAD_REQUEST, "bad_json", format!("not an OTLP/JSON logs request: {e}")))?,
    };
    let outcome = intake(state, req, otlp_lines(&request), "otlp").await?;
    let partial_success = (outcome.rejected > 0).then(|| ExportLogsPartialSuccess {
        rejected_log_records: outcome.rejected as i64,
        error_message: outcome.summary.clone(),
    });
    Ok(match encoding {
        Encoding::Protobuf => HttpResponse::Ok()
            .content_type("application/x-protobuf")
            .body(ExportLogsServiceResponse { partial_success }.encode_to_vec()),
        Encoding::Json => {
            let body = match partial_success {
                Some(p) => json!({ "partialSuccess": {
                    "rejectedLogRecords": p.rejected_log_records.to_string(), "errorMessage": p.error_message } }),
                None => json!({}),
            };
            HttpResponse::Ok().json(body)
        }
    })
}

/// The event lines of an OTLP request (OTLP/HTTP and OTLP/gRPC alike).
pub(crate) fn otlp_lines(request: &ExportLogsServiceRequest) -> Mapped {
    let mut mapped = Mapped::default();
    for resource_logs in &request.resource_logs {
        let resource = otlp::Resource {
            attributes: resource_logs.resource.as_ref().map(|r| key_values(&r.attributes)).unwrap_or_default(),
        };
        for scope_logs in &resource_logs.scope_logs {
            let scope = scope_logs
                .scope
                .as_ref()
                .map(|s| otlp::Scope {
                    name: s.name.clone(),
                    version: s.version.clone(),
                    attributes: key_values(&s.attributes),
                })
                .unwrap_or_default();
            for r in &scope_logs.log_records {
                let record = otlp::LogRecord {
                    time_unix_nano: r.time_unix_nano,
                    observed_time_unix_nano: r.observed_time_unix_nano,
                    severity_number: r.severity_number,
                    severity_text: r.severity_text.clone(),
                    body: r.body.as_ref().and_then(any_value),
                    attributes: key_values(&r.attributes),
                    trace_id: r.trace_id.clone(),
                    span_id: r.span_id.clone(),
                    flags: r.flags,
                };
                mapped.push(otlp::event_line(&resource, &scope, &record));
            }
        }
    }
    mapped
}

fn key_values(pairs: &[otlp_common::KeyValue]) -> Vec<(String, AnyValue)> {
    pairs.iter().filter_map(|kv| Some((kv.key.clone(), any_value(kv.value.as_ref()?)?))).collect()
}

fn any_value(value: &otlp_common::AnyValue) -> Option<AnyValue> {
    use otlp_common::any_value::Value as V;
    Some(match value.value.as_ref()? {
        V::StringValue(s) => AnyValue::String(s.clone()),
        V::BoolValue(b) => AnyValue::Bool(*b),
        V::IntValue(i) => AnyValue::Int(*i),
        V::DoubleValue(d) => AnyValue::Double(*d),
        V::BytesValue(b) => AnyValue::Bytes(b.clone()),
        V::ArrayValue(a) => AnyValue::Array(a.values.iter().filter_map(any_value).collect()),
        V::KvlistValue(kv) => AnyValue::KvList(key_values(&kv.values)),
    })
}

/// OTLP/JSON (the protobuf JSON mapping: lowerCamelCase names, or the proto names; 64-bit integers
/// as strings or numbers; ids as hex, or base64 as some exporters send them) into the prost types.
mod otlp_json {
    use super::*;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    type Fields = Map<String, Value>;

    fn field<'a>(object: &'a Fields, camel: &str, snake: &str) -> Option<&'a Value> {
        object.get(camel).or_else(|| object.get(snake)).filter(|v| !v.is_null())
    }

    fn objects<'a>(object: &'a Fields, camel: &str, snake: &str) -> Result<Vec<&'a Fields>, String> {
        match field(object, camel, snake) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => {
                items.iter().map(|i| i.as_object().ok_or_else(|| format!("`{camel}` holds a non-object"))).collect()
            }
            Some(_) => Err(format!("`{camel}` is not an array")),
        }
    }

    fn object<'a>(object: &'a Fields, camel: &str, snake: &str) -> Result<Option<&'a Fields>, String> {
        match field(object, camel, snake) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(_) => Err(format!("`{camel}` is not an object")),
        }
    }

    fn string(object: &Fields, camel: &str, snake: &str) -> Result<String, String> {
        match field(object, camel, snake) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("`{camel}` is not a string")),
        }
    }

    fn integer<T: std::str::FromStr + TryFrom<i64> + TryFrom<u64> + Default>(
        object: &Fields,
        camel: &str,
        snake: &str,
    ) -> Result<T, String> {
        let bad = || format!("`{camel}` is not an integer in range");
        match field(object, camel, snake) {
            None => Ok(T::default()),
            Some(Value::String(s)) => s.parse().map_err(|_| bad()),
            Some(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => T::try_from(u).map_err(|_| bad()),
                (None, Some(i)) => T::try_from(i).map_err(|_| bad()),
                _ => Err(bad()),
            },
            Some(_) => Err(bad()),
        }
    }

    /// `severityNumber`: an integer, or the enum's name (`SEVERITY_NUMBER_ERROR2`).
    fn severity_number(object: &Fields) -> Result<i32, String> {
        if let Some(Value::String(name)) = field(object, "severityNumber", "severity_number") {
            if let Some(rest) = name.strip_prefix("SEVERITY_NUMBER_") {
                let (base, step) = match rest.trim_end_matches(['2', '3', '4']) {
                    "UNSPECIFIED" => return Ok(0),
                    "TRACE" => (1, rest.len() - 5),
                    "DEBUG" => (5, rest.len() - 5),
                    "INFO" => (9, rest.len() - 4),
                    "WARN" => (13, rest.len() - 4),
                    "ERROR" => (17, rest.len() - 5),
                    "FATAL" => (21, rest.len() - 5),
                    _ => return Err(format!("unknown severityNumber {name:?}")),
                };
                let offset = if step == 0 { 0 } else { rest[rest.len() - 1..].parse::<i32>().unwrap_or(1) - 1 };
                return Ok(base + offset);
            }
        }
        integer(object, "severityNumber", "severity_number")
    }

    /// A trace or span id of `len` bytes: hex, or base64.
    fn id(object: &Fields, camel: &str, snake: &str, len: usize) -> Result<Vec<u8>, String> {
        let text = string(object, camel, snake)?;
        if text.is_empty() {
            return Ok(Vec::new());
        }
        if text.len() == len * 2 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok((0..len)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex digits"))
                .collect());
        }
        base64::engine::general_purpose::STANDARD
            .decode(&text)
            .map_err(|_| format!("`{camel}` {text:?} is neither hex nor base64"))
    }

    fn key_values(object: &Fields, camel: &str) -> Result<Vec<otlp_common::KeyValue>, String> {
        objects(object, camel, camel)?
            .into_iter()
            .map(|kv| Ok(otlp_common::KeyValue { key: string(kv, "key", "key")?, value: object_any(kv, "value")? }))
            .collect()
    }

    fn object_any(object: &Fields, name: &str) -> Result<Option<otlp_common::AnyValue>, String> {
        match field(object, name, name) {
            None => Ok(None),
            Some(Value::Object(v)) => any_value(v).map(Some),
            Some(_) => Err(format!("`{name}` is not an AnyValue object")),
        }
    }

    fn any_value(v: &Fields) -> Result<otlp_common::AnyValue, String> {
        use otlp_common::any_value::Value as V;
        let value = if let Some(s) = field(v, "stringValue", "string_value") {
            Some(V::StringValue(s.as_str().ok_or("`stringValue` is not a string")?.to_owned()))
        } else if let Some(b) = field(v, "boolValue", "bool_value") {
            Some(V::BoolValue(b.as_bool().ok_or("`boolValue` is not a boolean")?))
        } else if field(v, "intValue", "int_value").is_some() {
            Some(V::IntValue(integer(v, "intValue", "int_value")?))
        } else if let Some(d) = field(v, "doubleValue", "double_value") {
            let d = match d {
                Value::String(s) => s.parse().map_err(|_| "`doubleValue` is not a number")?,
                other => other.as_f64().ok_or("`doubleValue` is not a number")?,
            };
            Some(V::DoubleValue(d))
        } else if let Some(b) = field(v, "bytesValue", "bytes_value") {
            let text = b.as_str().ok_or("`bytesValue` is not a string")?;
            Some(V::BytesValue(
                base64::engine::general_purpose::STANDARD.decode(text).map_err(|_| "`bytesValue` is not base64")?,
            ))
        } else if let Some(a) = object(v, "arrayValue", "array_value")? {
            let values = objects(a, "values", "values")?.into_iter().map(any_value).collect::<Result<_, _>>()?;
            Some(V::ArrayValue(otlp_common::ArrayValue { values }))
        } else if let Some(kv) = object(v, "kvlistValue", "kvlist_value")? {
            Some(V::KvlistValue(otlp_common::KeyValueList { values: key_values(kv, "values")? }))
        } else {
            None
        };
        Ok(otlp_common::AnyValue { value })
    }

    pub fn request(body: &[u8]) -> Result<ExportLogsServiceRequest, String> {
        let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let root = value.as_object().ok_or("the body is not a JSON object")?;
        let mut resource_logs = Vec::new();
        for rl in objects(root, "resourceLogs", "resource_logs")? {
            let resource = object(rl, "resource", "resource")?.map(|r| -> Result<_, String> {
                Ok(opentelemetry_proto::tonic::resource::v1::Resource {
                    attributes: key_values(r, "attributes")?,
                    dropped_attributes_count: 0,
                })
            });
            let mut scope_logs = Vec::new();
            for sl in objects(rl, "scopeLogs", "scope_logs")? {
                let scope = object(sl, "scope", "scope")?.map(|s| -> Result<_, String> {
                    Ok(otlp_common::InstrumentationScope {
                        name: string(s, "name", "name")?,
                        version: string(s, "version", "version")?,
                        attributes: key_values(s, "attributes")?,
                        dropped_attributes_count: 0,
                    })
                });
                let mut log_records = Vec::new();
                for r in objects(sl, "logRecords", "log_records")? {
                    log_records.push(LogRecord {
                        time_unix_nano: integer(r, "timeUnixNano", "time_unix_nano")?,
                        observed_time_unix_nano: integer(r, "observedTimeUnixNano", "observed_time_unix_nano")?,
                        severity_number: severity_number(r)?,
                        severity_text: string(r, "severityText", "severity_text")?,
                        body: object_any(r, "body")?,
                        attributes: key_values(r, "attributes")?,
                        dropped_attributes_count: 0,
                        flags: integer(r, "flags", "flags")?,
                        trace_id: id(r, "traceId", "trace_id", 16)?,
                        span_id: id(r, "spanId", "span_id", 8)?,
                    });
                }
                scope_logs.push(ScopeLogs { scope: scope.transpose()?, log_records, schema_url: String::new() });
            }
            resource_logs.push(ResourceLogs { resource: resource.transpose()?, scope_logs, schema_url: String::new() });
        }
        Ok(ExportLogsServiceRequest { resource_logs })
    }
}

// ---------------------------------------------------------------------------------------------
// Loki push

#[utoipa::path(post, path = "/loki/api/v1/push", tag = "ingest",
    request_body(content = String, description = "A Loki PushRequest: protobuf + snappy (block format), or JSON (gzip allowed)",
                 content_type = "application/x-protobuf"),
    responses(
        (status = 204, description = "Every entry was queued"),
        (status = 400, description = "Malformed push (nothing stored), or some entries rejected (the rest queued; the rejected dead-lettered)", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = super::openapi::ErrorBody),
        (status = 413, description = "Over INGEST_MAX_BODY_BYTES, as sent or decompressed", body = super::openapi::ErrorBody),
        (status = 415, description = "Not protobuf or JSON", body = super::openapi::ErrorBody),
        (status = 429, description = "Over RATE_LIMIT_RPS; see Retry-After", body = super::openapi::ErrorBody),
        (status = 503, description = "The queue did not take the entries; see Retry-After", body = super::openapi::ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn loki_push(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    match loki_push_inner(&req, payload, &state).await {
        Ok(response) | Err(response) => response,
    }
}

async fn loki_push_inner(
    req: &HttpRequest,
    payload: web::Payload,
    state: &web::Data<AppState>,
) -> Result<HttpResponse, HttpResponse> {
    state.auth.check(req).map_err(|e| actix_web::ResponseError::error_response(&e))?;
    // Loki reads a push without a Content-Type as protobuf, as Promtail has always sent it.
    let encoding = encoding(req, Some(Encoding::Protobuf))?;
    let limit = state.ingest_max_body_bytes;
    let body = read_body(req, payload, limit).await?;
    let malformed = |what: String| refuse(StatusCode::BAD_REQUEST, "bad_push", format!("{what}; nothing was stored"));
    let lines = match encoding {
        Encoding::Protobuf => {
            let declared = snap::raw::decompress_len(&body)
                .map_err(|e| malformed(format!("the body is not snappy (block format): {e}")))?;
            if declared > limit {
                return Err(too_large(limit));
            }
            let raw = snap::raw::Decoder::new()
                .decompress_vec(&body)
                .map_err(|e| malformed(format!("the body is not snappy (block format): {e}")))?;
            let push = logproto::PushRequest::decode(&raw[..])
                .map_err(|e| malformed(format!("not a Loki PushRequest: {e}")))?;
            loki_protobuf_lines(&push).map_err(malformed)?
        }
        Encoding::Json => {
            let body = decode_content(req, body, limit)?;
            loki_json_lines(&body).map_err(malformed)?
        }
    };
    let outcome = intake(state, req, Mapped { lines, ..Mapped::default() }, "loki").await?;
    if outcome.rejected == 0 {
        return Ok(HttpResponse::NoContent().finish());
    }
    Ok(HttpResponse::BadRequest().json(json!({
        "error": "entries_rejected",
        "message": format!("{} entries were queued; {} were rejected and dead-lettered (do not send them again): {}",
                           outcome.accepted, outcome.rejected, outcome.summary),
        "accepted": outcome.accepted,
        "rejected": outcome.rejected,
    })))
}

fn loki_protobuf_lines(push: &logproto::PushRequest) -> Result<Vec<Vec<u8>>, String> {
    let mut lines = Vec::new();
    for stream in &push.streams {
        let labels = loki::parse_labels(&stream.labels)?;
        for entry in &stream.entries {
            let ts = entry.timestamp.as_ref().ok_or("an entry has no timestamp")?;
            let ts = u32::try_from(ts.nanos)
                .ok()
                .and_then(|nanos| chrono::DateTime::from_timestamp(ts.seconds, nanos))
                .ok_or_else(|| format!("an entry's timestamp {}s {}ns is out of range", ts.seconds, ts.nanos))?;
            let structured_metadata =
                entry.structured_metadata.iter().map(|p| (p.name.clone(), p.value.clone())).collect();
            lines.push(loki::event_line(&labels, &loki::Entry { ts, line: entry.line.clone(), structured_metadata }));
        }
    }
    Ok(lines)
}

fn loki_json_lines(body: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let streams = value.get("streams").and_then(Value::as_array).ok_or("expected {\"streams\": [...]}")?;
    let mut lines = Vec::new();
    for (i, stream) in streams.iter().enumerate() {
        let pairs = |v: Option<&Value>, what: &str| -> Result<Vec<(String, String)>, String> {
            match v {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Object(o)) => o
                    .iter()
                    .map(|(k, v)| {
                        Ok((k.clone(), v.as_str().ok_or(format!("{what} {k:?} is not a string"))?.to_owned()))
                    })
                    .collect(),
                Some(_) => Err(format!("{what} is not an object")),
            }
        };
        let labels = pairs(stream.get("stream"), &format!("streams[{i}].stream"))?;
        let values =
            stream.get("values").and_then(Value::as_array).ok_or(format!("streams[{i}].values is not an array"))?;
        for (j, value) in values.iter().enumerate() {
            let at = format!("streams[{i}].values[{j}]");
            let item = value.as_array().filter(|a| (2..=3).contains(&a.len())).ok_or(format!(
                "{at} is not [\"<unix ns>\", \"<line>\"] or [\"<unix ns>\", \"<line>\", {{metadata}}]"
            ))?;
            let nanos: u64 = item[0]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or(format!("{at}: the timestamp is not a string of unix nanoseconds"))?;
            let ts = chrono::DateTime::from_timestamp_nanos(
                i64::try_from(nanos).map_err(|_| format!("{at}: the timestamp is out of range"))?,
            );
            let line = item[1].as_str().ok_or(format!("{at}: the line is not a string"))?.to_owned();
            let structured_metadata = pairs(item.get(2), &format!("{at} metadata"))?;
            lines.push(loki::event_line(&labels, &loki::Entry { ts, line, structured_metadata }));
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_json_reads_camel_case_string_integers_and_both_id_forms() {
        let body =
            br#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"api"}}]},
            "scopeLogs":[{"scope":{"name":"lib"},"logRecords":[
              {"timeUnixNano":"1700000000000000001","severityNumber":17,"body":{"stringValue":"boom"},
               "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
               "attributes":[{"key":"n","value":{"intValue":"42"}}]},
              {"time_unix_nano":5,"severityNumber":"SEVERITY_NUMBER_WARN2","body":{"kvlistValue":{"values":[]}},
               "traceId":"W47/95gDgQPSabYzgT/GDA=="}]}]}]}"#;
        let request = otlp_json::request(body).unwrap();
        let records = &request.resource_logs[0].scope_logs[0].log_records;
        assert_eq!(records[0].time_unix_nano, 1_700_000_000_000_000_001);
        assert_eq!(records[0].trace_id.len(), 16);
        assert_eq!(records[0].trace_id, records[1].trace_id, "hex and base64 give the same bytes");
        assert_eq!(records[1].severity_number, 14);
        assert_eq!(records[1].time_unix_nano, 5);
        let mapped = otlp_lines(&request);
        assert_eq!((mapped.lines.len(), mapped.unmapped), (2, 0));
        let line: Value = serde_json::from_slice(&mapped.lines[0]).unwrap();
        assert_eq!(line["service"], "api");
        assert_eq!(line["attributes"]["n"], 42);
        for bad in [
            &b"[]"[..],
            br#"{"resourceLogs":{}}"#,
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"zz"}]}]}]}"#,
        ] {
            assert!(otlp_json::request(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn loki_json_maps_every_entry_or_refuses_the_whole_push() {
        let body = br#"{"streams":[{"stream":{"app":"shop"},"values":[["1700000000000000000","a"],["1700000000000000001","b",{"k":"v"}]]}]}"#;
        let lines = loki_json_lines(body).unwrap();
        assert_eq!(lines.len(), 2);
        let second: Value = serde_json::from_slice(&lines[1]).unwrap();
        assert_eq!(second["structured_metadata"], json!({"k": "v"}));
        assert_eq!(second["ts"], "2023-11-14T22:13:20.000000001Z");
        for bad in [
            &br#"{"streams":[{"stream":{},"values":[[1700000000,"a"]]}]}"#[..],
            br#"{"streams":[{"values":[["1","a","b","c"]]}]}"#,
            b"{}",
        ] {
            assert!(loki_json_lines(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
