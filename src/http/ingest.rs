//! POST /ingest: newline-delimited events into the Kafka topic (acks=all, idempotent producer)
//! before answering; lines that do not parse are reported by number and dead-lettered, so nothing
//! sent is lost.
//!
//! Work per request is bounded: the body is read up to `INGEST_MAX_BODY_BYTES`, at most
//! `MAX_IN_FLIGHT` deliveries are outstanding, the dead letters stream into one COPY, and the answer
//! carries counts, the first `MAX_LISTED` line errors and at most `MAX_LISTED` line ranges.
//!
//! Exactly once, with an `Idempotency-Key`: the key is claimed (committed) before anything is
//! produced, so a concurrent or later duplicate produces nothing. The body is handled in two passes
//! inside one PostgreSQL transaction: first every line is parsed and the dead letters are COPYed,
//! then the valid lines are produced and awaited, then the answer is recorded under the key in the
//! same transaction and it commits. So:
//! - storing the dead letters fails → nothing was produced: 503, the key is released, a retry
//!   starts afresh (and stores them then);
//! - Kafka takes nothing → roll back (the dead letters are not kept, the retry stores them), 503,
//!   the key is released;
//! - Kafka takes some or all → the dead letters and the answer commit together; a retry with the key
//!   gets that answer.
//!
//! What is left is the commit itself failing after Kafka acknowledged (the server going away in
//! those milliseconds): the answer is then a 503 `dead_letters_not_stored` saying the accepted lines
//! are in Kafka, and the key stays claimed without an answer, so a retry gets 409 instead of
//! producing the lines twice.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actors::domain::{Fallback, LogEvent, ServiceName};
use chrono::{DateTime, Utc};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use slog::{warn, Logger};

use super::errors::ApiError;
use super::AppState;
use crate::db::idempotency::{self, Claim};
use crate::db::rejects::RejectCopy;

/// Deliveries one body keeps outstanding at most (the producer's own queue bounds all bodies together).
const MAX_IN_FLIGHT: usize = 20_000;
/// Line errors, and line ranges, listed in an answer at most.
const MAX_LISTED: usize = 100;
/// Longest accepted `Idempotency-Key`.
const MAX_KEY_BYTES: usize = 255;

/// A finished answer: what is sent, and what is recorded under an idempotency key.
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
    /// The stored answer of an earlier request with the same Idempotency-Key.
    replayed: bool,
}

impl Answer {
    fn json(status: StatusCode, body: &Value) -> Answer {
        Answer { status, body: serde_json::to_vec(body).expect("JSON values serialize"), replayed: false }
    }

    fn response(self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.replayed {
            response.insert_header(("Idempotent-Replayed", "true"));
        }
        response.content_type("application/json").body(self.body)
    }
}

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
    if dry_run {
        let now = Utc::now();
        let lines: Vec<Value> = lines(&body)
            .map(|(i, line)| {
                match LogEvent::parse(line, Fallback::http(now, service.as_deref()), now, &state.parse_rules) {
                    Ok(event) => json!({ "line": i + 1, "event": event.to_json() }),
                    Err(reject) => json!({ "line": i + 1, "reject": reject.to_json() }),
                }
            })
            .collect();
        return Ok(HttpResponse::Ok().json(json!({ "dry_run": true, "lines": lines })));
    }
    let log = super::request_log(&req, &state.log);
    // Its own task: a client that hangs up does not cut the work short between producing and
    // storing the dead letters.
    let task = actix_rt::spawn(async move { handle(&state, &body, key.as_deref(), service.as_deref(), &log).await });
    let answer = match task.await {
        Ok(answer) => answer?,
        Err(e) => Answer::json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({ "error": "internal", "message": format!("ingest failed: {e}") }),
        ),
    };
    Ok(answer.response())
}

/// What POST /ingest makes of `lines` (each a JSON object or a text line, without a newline) with
/// its `service` option: the same resolution, dead letters and queue, and the same per-body tally
/// (`accepted`, `rejected`, `rejected_by_reason`, `errors`, `not_queued`…) with its status (202, or
/// 503 when nothing was queued). The other intake routes (OTLP, Loki) come in through here.
pub async fn intake_lines(
    state: web::Data<AppState>,
    lines: Vec<Vec<u8>>,
    service: Option<String>,
    log: Logger,
) -> Result<(StatusCode, Value), ApiError> {
    let body = lines.join(&b'\n');
    let task = actix_rt::spawn(async move { handle(&state, &body, None, service.as_deref(), &log).await });
    let answer = task.await.map_err(|e| ApiError::unavailable("internal", format!("ingest failed: {e}")))??;
    let tally = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    Ok((answer.status, tally))
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

async fn handle(
    state: &AppState,
    body: &[u8],
    key: Option<&str>,
    service: Option<&str>,
    log: &Logger,
) -> Result<Answer, ApiError> {
    let producer =
        state.producer.as_ref().ok_or_else(|| ApiError::unavailable("kafka_unavailable", "no Kafka producer"))?;
    let pg_down = |e: anyhow::Error| ApiError::unavailable("database_unavailable", format!("{e:#}; send it again"));
    let mut client = None;
    if let Some(key) = key {
        let c = state.ingest_pg.get().await.map_err(pg_down)?;
        let hash = Sha256::digest(body);
        match idempotency::claim(&c, key, &hash[..]).await.map_err(pg_down)? {
            Claim::Claimed => client = Some(c),
            Claim::Answered { status, body } => {
                state.ingest_pg.put(c);
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::ACCEPTED);
                return Ok(Answer { status, body, replayed: true });
            }
            Claim::Running { since } => {
                state.ingest_pg.put(c);
                return Ok(Answer::json(
                    StatusCode::CONFLICT,
                    &json!({ "error": "idempotency_key_in_use", "message": format!(
                        "a request with this Idempotency-Key started at {since} and has no answer yet (still running, \
                         or interrupted: then whether its lines reached Kafka is unknown); ask again later") }),
                ));
            }
            Claim::OtherBody => {
                state.ingest_pg.put(c);
                return Ok(Answer::json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &json!({ "error": "idempotency_key_reused", "message":
                        "this Idempotency-Key was used with another body in the last 24 h; use a new key for new data" }),
                ));
            }
        }
    }
    let now = Utc::now();

    // Pass 1: parse every line; dead letters into one COPY inside a transaction left open.
    let mut tally = Tally::default();
    let mut valid = Vec::new();
    let mut copy = None;
    let stored = async {
        for (i, line) in lines(body) {
            let line_no = i as u32 + 1;
            match check_line(line, now, service, state) {
                Ok(()) => valid.push(ValidLine { line: line_no, start: offset(body, line), len: line.len() }),
                Err(reject) => {
                    if copy.is_none() {
                        if client.is_none() {
                            client = Some(state.ingest_pg.get().await?);
                        }
                        let c = client.as_ref().expect("just set");
                        idempotency::begin(c).await?;
                        copy = Some(RejectCopy::start(c).await?);
                    }
                    let copy = copy.as_mut().expect("just set");
                    let reason = reject.reason.code();
                    copy.push("http", reason, &format!("line {line_no}: {}", reject.detail), line).await?;
                    tally.reject(line_no, reason, reject.detail);
                }
            }
        }
        match copy.take() {
            Some(copy) => copy.finish().await.map(drop),
            None => Ok(()),
        }
    }
    .await;
    if let Err(e) = stored {
        // Nothing was produced yet: the client sends the body again and the dead letters are stored then.
        drop(client);
        if let Some(key) = key {
            release_key(state, key, log).await;
        }
        return Err(ApiError::unavailable(
            "dead_letters_not_stored",
            format!("the rejected lines could not be stored ({e:#}); nothing was queued: send the body again"),
        ));
    }

    // Pass 2: every valid line in flight at once (bounded), one answer when all are acknowledged.
    let destination = Destination::new(&state.topic, service);
    produce(producer, &destination, body, &valid, now, state.ingest_timeout, &mut tally).await;
    let queued_none = tally.accepted == 0 && !tally.not_queued.is_empty();
    if queued_none {
        if let Some(c) = client.take() {
            let ended = async {
                if tally.rejected > 0 {
                    idempotency::rollback(&c).await?;
                }
                if let Some(key) = key {
                    idempotency::release(&c, key).await?;
                }
                anyhow::Ok(())
            }
            .await;
            match ended {
                Ok(()) => state.ingest_pg.put(c),
                Err(e) => warn!(log, "rolling back the dead letters of a body Kafka did not take failed";
                                "key_released" => false, "error" => format!("{e:#}")),
            }
        }
        let mut answer = tally.answer();
        answer["error"] = json!("kafka_unavailable");
        answer["message"] = json!(format!(
            "Kafka did not take any event within {} ms ({}); nothing was accepted: send the body again",
            state.ingest_timeout.as_millis(),
            tally.first_kafka_error.as_deref().unwrap_or("no acknowledgement")
        ));
        return Ok(Answer::json(StatusCode::SERVICE_UNAVAILABLE, &answer));
    }
    let answer = Answer::json(StatusCode::ACCEPTED, &tally.answer());
    let Some(c) = client else { return Ok(answer) };
    let committed = async {
        if tally.rejected == 0 {
            idempotency::begin(&c).await?;
        }
        if let Some(key) = key {
            idempotency::finish(&c, key, answer.status.as_u16(), &answer.body).await?;
        }
        idempotency::commit(&c).await?;
        anyhow::Ok(())
    }
    .await;
    match committed {
        Ok(()) => {
            state.ingest_pg.put(c);
            Ok(answer)
        }
        Err(e) => {
            warn!(log, "dead letters of POST /ingest not stored after Kafka took the events";
                  "accepted" => tally.accepted, "rejected" => tally.rejected, "error" => format!("{e:#}"));
            let mut answer = tally.answer();
            answer["error"] = json!("dead_letters_not_stored");
            answer["message"] = json!(format!(
                "the {} accepted lines are in Kafka (do not send them again), but the {} rejected lines could not \
                 be stored ({e:#}): send only the rejected lines again",
                tally.accepted, tally.rejected
            ));
            Ok(Answer::json(StatusCode::SERVICE_UNAVAILABLE, &answer))
        }
    }
}

async fn release_key(state: &AppState, key: &str, log: &Logger) {
    let released = async {
        let c = state.ingest_pg.get().await?;
        idempotency::release(&c, key).await?;
        state.ingest_pg.put(c);
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = released {
        warn!(log, "releasing an Idempotency-Key failed: a retry gets 409"; "error" => format!("{e:#}"));
    }
}

/// Numbered lines that are not blank (0-based index).
fn lines(body: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    body.split(|b| *b == b'\n').enumerate().filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
}

/// The one place a line meets the event parser.
fn check_line(
    line: &[u8],
    now: DateTime<Utc>,
    service: Option<&str>,
    state: &AppState,
) -> Result<(), actors::domain::event::Reject> {
    LogEvent::parse(line, Fallback::http(now, service), now, &state.parse_rules).map(drop)
}

/// A line that parsed, found again in pass 2 without splitting the body a second time.
struct ValidLine {
    line: u32,
    start: usize,
    len: usize,
}

/// Where `line`, a slice of `body`, starts in it.
fn offset(body: &[u8], line: &[u8]) -> usize {
    line.as_ptr() as usize - body.as_ptr() as usize
}

/// Produces the `valid` lines, at most `MAX_IN_FLIGHT` outstanding. After the first failure that is
/// not about one message (Kafka unreachable, timed out), the rest are not sent.
/// Where the lines of one body go: the topic, and the `?service=` default travelling with each line
/// in a header (the consumer resolves the line, so it needs the default too).
struct Destination<'a> {
    topic: &'a str,
    headers: Option<OwnedHeaders>,
}

impl<'a> Destination<'a> {
    fn new(topic: &'a str, service: Option<&str>) -> Destination<'a> {
        let headers = service
            .map(|name| OwnedHeaders::new().insert(Header { key: actors::ingest::SERVICE_HEADER, value: Some(name) }));
        Destination { topic, headers }
    }

    fn record<'b>(&self, line: &'b [u8], timestamp: i64) -> FutureRecord<'b, (), [u8]>
    where
        'a: 'b,
    {
        let record = FutureRecord::to(self.topic).payload(line).timestamp(timestamp);
        match &self.headers {
            Some(headers) => record.headers(headers.clone()),
            None => record,
        }
    }
}

async fn produce(
    producer: &FutureProducer,
    destination: &Destination<'_>,
    body: &[u8],
    valid: &[ValidLine],
    now: DateTime<Utc>,
    timeout: Duration,
    tally: &mut Tally,
) {
    let deadline = Instant::now() + timeout;
    let mut in_flight = FuturesUnordered::new();
    let timestamp = now.timestamp_millis();
    for &ValidLine { line: line_no, start, len } in valid {
        let line = &body[start..start + len];
        if let Some(why) = &tally.stopped {
            tally.not_queued(line_no, format!("not sent: {why}"));
            continue;
        }
        let mut record = destination.record(line, timestamp);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    in_flight.push(async move {
                        let outcome = match delivery.await {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err((e, _))) => Err(e),
                            Err(_) => Err(KafkaError::Canceled),
                        };
                        (line_no, outcome)
                    });
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    if Instant::now() >= deadline {
                        tally.not_queued(line_no, "Kafka's producer queue stayed full".to_owned());
                        break;
                    }
                    record = back;
                    // Wait for room: one of ours, or anyone's.
                    match in_flight.next().await {
                        Some((n, outcome)) => tally.delivered(n, outcome),
                        None => tokio::time::sleep(Duration::from_millis(2)).await,
                    }
                }
                Err((e, _)) => {
                    tally.not_queued(line_no, format!("Kafka refused it: {e}"));
                    break;
                }
            }
        }
        while in_flight.len() >= MAX_IN_FLIGHT {
            if let Some((n, outcome)) = in_flight.next().await {
                tally.delivered(n, outcome);
            }
        }
    }
    while let Some((n, outcome)) = in_flight.next().await {
        tally.delivered(n, outcome);
    }
}

/// What happened to the lines of one body, bounded in what it lists.
#[derive(Default)]
struct Tally {
    accepted: u64,
    rejected: u64,
    rejected_by_reason: BTreeMap<&'static str, u64>,
    /// The first `MAX_LISTED` line errors by line number: line → (reason, message).
    errors: BTreeMap<u32, (&'static str, String)>,
    error_count: u64,
    /// Lines produced but not acknowledged, or never sent.
    not_queued: Vec<u32>,
    /// Lines handed to the producer.
    sent: Vec<u32>,
    first_kafka_error: Option<String>,
    /// Why the remaining lines are not sent.
    stopped: Option<String>,
}

impl Tally {
    fn reject(&mut self, line: u32, reason: &'static str, message: String) {
        self.rejected += 1;
        *self.rejected_by_reason.entry(reason).or_default() += 1;
        self.error(line, reason, message);
    }

    fn error(&mut self, line: u32, reason: &'static str, message: String) {
        self.error_count += 1;
        if self.errors.len() < MAX_LISTED || self.errors.last_key_value().is_some_and(|(last, _)| line < *last) {
            self.errors.insert(line, (reason, message));
            if self.errors.len() > MAX_LISTED {
                self.errors.pop_last();
            }
        }
    }

    fn not_queued(&mut self, line: u32, why: String) {
        self.not_queued.push(line);
        self.error(line, "not_queued", format!("{why}; send it again"));
    }

    fn delivered(&mut self, line: u32, outcome: Result<(), KafkaError>) {
        self.sent.push(line);
        let Err(error) = outcome else {
            self.accepted += 1;
            return;
        };
        let text = error.to_string();
        if self.first_kafka_error.is_none() {
            self.first_kafka_error = Some(text.clone());
        }
        let about_this_message = matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::MessageSizeTooLarge
                    | RDKafkaErrorCode::InvalidMessage
                    | RDKafkaErrorCode::InvalidMessageSize
            )
        );
        if !about_this_message && self.stopped.is_none() {
            self.stopped = Some(format!("Kafka failed an earlier line of this body ({text})"));
        }
        self.not_queued(line, format!("Kafka did not acknowledge it: {text}"));
    }

    fn answer(&mut self) -> Value {
        let errors: Vec<Value> = self
            .errors
            .iter()
            .map(|(line, (reason, message))| json!({ "line": line, "reason": reason, "message": message }))
            .collect();
        let mut answer = json!({
            "accepted": self.accepted,
            "rejected": self.rejected,
            "rejected_by_reason": self.rejected_by_reason,
            "errors": errors,
            "errors_truncated": self.error_count > errors.len() as u64,
            "not_queued": self.not_queued.len(),
        });
        if !self.not_queued.is_empty() {
            self.not_queued.sort_unstable();
            let not_queued: HashSet<u32> = self.not_queued.iter().copied().collect();
            self.sent.sort_unstable();
            let queued: Vec<u32> = self.sent.iter().copied().filter(|l| !not_queued.contains(l)).collect();
            let (listed, truncated) = ranges(&self.not_queued);
            answer["not_queued_lines"] = json!(listed);
            answer["not_queued_lines_truncated"] = json!(truncated);
            let (listed, truncated) = ranges(&queued);
            answer["queued_lines"] = json!(listed);
            answer["queued_lines_truncated"] = json!(truncated);
        }
        answer
    }
}

/// Ascending line numbers as `[first, last]` runs, the first `MAX_LISTED` of them; and whether more
/// runs were left out.
fn ranges(lines: &[u32]) -> (Vec<[u32; 2]>, bool) {
    let mut runs: Vec<[u32; 2]> = Vec::new();
    for &line in lines {
        if let Some(run) = runs.last_mut().filter(|run| run[1] + 1 == line) {
            run[1] = line;
        } else if runs.len() == MAX_LISTED {
            return (runs, true);
        } else {
            runs.push([line, line]);
        }
    }
    (runs, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_join_consecutive_lines_and_stop_at_the_bound() {
        assert_eq!(ranges(&[1, 2, 3, 5, 7, 8]), (vec![[1, 3], [5, 5], [7, 8]], false));
        let every_other: Vec<u32> = (0..300).map(|i| i * 2 + 1).collect();
        let (runs, truncated) = ranges(&every_other);
        assert_eq!((runs.len(), truncated, runs[99]), (MAX_LISTED, true, [199, 199]));
    }

    #[test]
    fn a_partial_answer_says_which_lines_were_queued_and_which_not() {
        let mut tally = Tally::default();
        tally.reject(3, "not_json", "x".into());
        for line in [1, 2, 4, 5] {
            tally.delivered(line, Ok(()));
        }
        tally.delivered(6, Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)));
        tally.not_queued(7, "not sent".into());
        let answer = tally.answer();
        assert_eq!((answer["accepted"].as_u64(), answer["rejected"].as_u64()), (Some(4), Some(1)));
        assert_eq!(answer["not_queued"], 2);
        assert_eq!(answer["not_queued_lines"], json!([[6, 7]]));
        assert_eq!(answer["queued_lines"], json!([[1, 2], [4, 5]]));
        assert_eq!(answer["rejected_by_reason"], json!({ "not_json": 1 }));
        let reasons: Vec<&str> =
            answer["errors"].as_array().unwrap().iter().map(|e| e["reason"].as_str().unwrap()).collect();
        assert_eq!(reasons, ["not_json", "not_queued", "not_queued"]);
        assert!(tally.stopped.is_some(), "a timeout stops sending the rest of the body");
    }

    #[test]
    fn the_first_errors_by_line_are_kept_whatever_order_they_come_in() {
        let mut tally = Tally::default();
        for line in (1..=500).rev() {
            tally.error(line, "not_queued", String::new());
        }
        let answer = tally.answer();
        assert_eq!(answer["errors"].as_array().unwrap().len(), MAX_LISTED);
        assert_eq!(answer["errors"][0]["line"], 1);
        assert_eq!(answer["errors"][99]["line"], 100);
        assert_eq!(answer["errors_truncated"], true);
    }
}
