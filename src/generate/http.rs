//! The generator's HTTP sink: NDJSON batches POSTed to `/ingest` over keep-alive HTTP/1.1 connections,
//! a bounded number in flight, counting what the 202 answers say was accepted and rejected.
//!
//! The client is awc (actix's, on the actix-http already in the tree), on a thread of its own with a
//! single-threaded runtime: awc's client is not `Send`, and the generator actor must not wait on it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use actors::generator::{EventSink, SinkError};
use awc::error::{ConnectError, SendRequestError};
use awc::http::header::{CONNECTION, CONTENT_TYPE};

/// Where `POST /ingest` goes: `http://HOST:PORT[/PATH]` (the path defaults to `/ingest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl std::str::FromStr for HttpTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix("http://").ok_or_else(|| format!("{s:?}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("{s:?}: bad port {p:?}"))?),
            None => (authority, 80),
        };
        if host.is_empty() {
            return Err(format!("{s:?}: no host"));
        }
        let path = if path.is_empty() || path == "/" { "/ingest" } else { path };
        Ok(HttpTarget { host: host.to_owned(), port, path: path.to_owned() })
    }
}

impl std::fmt::Display for HttpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.path)
    }
}

/// How batches are sent.
#[derive(Debug, Clone)]
pub struct HttpSinkOptions {
    /// Events per POST.
    pub batch_events: usize,
    /// Requests in flight at once (one keep-alive connection each).
    pub in_flight: usize,
    /// A partial batch is sent once it is this old.
    pub linger: Duration,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl Default for HttpSinkOptions {
    fn default() -> Self {
        HttpSinkOptions { batch_events: 1_000, in_flight: 4, linger: Duration::from_millis(50), token: None }
    }
}

/// Attempts per batch when the server says it could not queue (503, 429, `not_queued` lines) or the
/// request never reached it.
const ATTEMPTS: u32 = 5;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle connection is dropped before a server's usual keep-alive (actix-web's is 5 s) closes it,
/// so a request rarely meets a connection the server is closing.
const IDLE_KEEP_ALIVE: Duration = Duration::from_secs(2);
/// A 202 lists at most 100 ranges and 100 errors: far below this.
const MAX_ANSWER_BYTES: usize = 1 << 20;

#[derive(Default)]
struct Counters {
    acked: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    /// Events handed to the workers and not yet counted as acked, rejected or failed.
    outstanding: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Counters {
    fn fail(&self, events: u64, why: String) {
        self.failed.fetch_add(events, Ordering::Relaxed);
        self.first_error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(why);
    }
}

struct Batch {
    body: Bytes,
    events: u64,
}

/// NDJSON over HTTP: `send` only appends to the open batch; full batches go to a bounded queue that a
/// thread of its own drains with `in_flight` connections.
pub struct HttpSink {
    open: Vec<u8>,
    open_events: u64,
    opened_at: Instant,
    options: HttpSinkOptions,
    queue: Option<tokio::sync::mpsc::Sender<Batch>>,
    counters: Arc<Counters>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpSink {
    pub fn new(target: HttpTarget, options: HttpSinkOptions) -> anyhow::Result<HttpSink> {
        let in_flight = options.in_flight.max(1);
        let (tx, rx) = tokio::sync::mpsc::channel::<Batch>(in_flight);
        let counters = Arc::new(Counters::default());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (c, token) = (counters.clone(), options.token.clone());
        let thread = std::thread::Builder::new().name("http-sink".into()).spawn(move || {
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move {
                // One pool of keep-alive connections, one per worker at most.
                let connector =
                    awc::Connector::new().limit(in_flight).timeout(CONNECT_TIMEOUT).conn_keep_alive(IDLE_KEEP_ALIVE);
                let mut builder =
                    awc::Client::builder().connector(connector).timeout(REQUEST_TIMEOUT).disable_redirects();
                if let Some(token) = &token {
                    builder = builder.bearer_auth(token);
                }
                let awc = builder.finish();
                let rx = Arc::new(tokio::sync::Mutex::new(rx));
                let workers: Vec<_> = (0..in_flight)
                    .map(|_| {
                        let mut client = Client { target: target.clone(), awc: awc.clone(), kept_alive: false };
                        let (rx, c) = (rx.clone(), c.clone());
                        tokio::task::spawn_local(async move {
                            loop {
                                let next = rx.lock().await.recv().await;
                                let Some(batch) = next else { break };
                                let events = batch.events;
                                client.deliver(batch, &c).await;
                                c.outstanding.fetch_sub(events, Ordering::Relaxed);
                            }
                        })
                    })
                    .collect();
                futures::future::join_all(workers).await;
            })
        })?;
        Ok(HttpSink {
            open: Vec::new(),
            open_events: 0,
            opened_at: Instant::now(),
            options,
            queue: Some(tx),
            counters,
            thread: Some(thread),
        })
    }

    /// Hands the open batch to the workers; `false` when their queue is full (the batch stays open).
    fn ship(&mut self) -> bool {
        if self.open_events == 0 {
            return true;
        }
        let Some(queue) = self.queue.as_ref() else { return false };
        let batch = Batch { body: Bytes::from(std::mem::take(&mut self.open)), events: self.open_events };
        let events = batch.events;
        self.counters.outstanding.fetch_add(events, Ordering::Relaxed);
        match queue.try_send(batch) {
            Ok(()) => {
                self.open_events = 0;
                true
            }
            Err(tokio::sync::mpsc::error::TrySendError::Full(batch)) => {
                self.counters.outstanding.fetch_sub(events, Ordering::Relaxed);
                self.open = batch.body.into();
                false
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                self.counters.outstanding.fetch_sub(events, Ordering::Relaxed);
                self.counters.fail(events, "the HTTP sink's workers stopped".into());
                self.open_events = 0;
                true
            }
        }
    }

    /// Retried requests so far.
    pub fn retries(&self) -> u64 {
        self.counters.retries.load(Ordering::Relaxed)
    }
}

impl EventSink for HttpSink {
    fn send(&mut self, payload: Vec<u8>, _timestamp_ms: i64) -> Result<(), SinkError> {
        if self.open_events as usize >= self.options.batch_events.max(1) && !self.ship() {
            return Err(SinkError::Full(payload));
        }
        if self.open_events == 0 {
            self.opened_at = Instant::now();
        }
        // One event per line: a payload's own newlines would split it, so they go as spaces (JSON
        // allows whitespace between tokens, and the generator never puts one inside a string).
        self.open.extend(payload.iter().map(|&b| if b == b'\n' { b' ' } else { b }));
        self.open.push(b'\n');
        self.open_events += 1;
        Ok(())
    }

    fn poll(&mut self) {
        if self.open_events > 0 && self.opened_at.elapsed() >= self.options.linger {
            self.ship();
        }
    }

    fn acked(&self) -> u64 {
        self.counters.acked.load(Ordering::Relaxed)
    }

    fn rejected(&self) -> u64 {
        self.counters.rejected.load(Ordering::Relaxed)
    }

    fn failed(&self) -> u64 {
        self.counters.failed.load(Ordering::Relaxed)
    }

    fn first_error(&self) -> Option<String> {
        self.counters.first_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn flush(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while !self.ship() {
            if Instant::now() >= deadline {
                return Err(format!("the HTTP queue stayed full for {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        while self.counters.outstanding.load(Ordering::Relaxed) > 0 {
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} events still unanswered after {timeout:?}",
                    self.counters.outstanding.load(Ordering::Relaxed)
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

impl Drop for HttpSink {
    fn drop(&mut self) {
        // Closing the queue ends the workers once it is drained.
        self.queue = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Why a request got no answer.
#[derive(Debug)]
enum PostError {
    /// The server cannot have processed it (no connection, the request not written, or a kept-alive
    /// connection closed before any answer): safe to send again.
    NotSent(String),
    /// It may have been processed: sending again could duplicate events.
    Unknown(String),
}

struct Client {
    target: HttpTarget,
    awc: awc::Client,
    /// The last answer left its connection open, so the next request most likely goes on it.
    kept_alive: bool,
}

impl Client {
    /// Sends a batch until every line is accepted, rejected, or counted as failed.
    async fn deliver(&mut self, batch: Batch, counters: &Counters) {
        let (mut body, mut events) = (batch.body, batch.events);
        for attempt in 1..=ATTEMPTS {
            let last = attempt == ATTEMPTS;
            if attempt > 1 {
                counters.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100 << (attempt - 2).min(5))).await;
            }
            match self.post(&body).await {
                Ok((202, answer)) => {
                    let Ok(answer) = serde_json::from_slice::<serde_json::Value>(&answer) else {
                        counters.fail(events, "a 202 without a JSON body".into());
                        return;
                    };
                    let accepted = answer["accepted"].as_u64().unwrap_or(0);
                    let rejected = answer["rejected"].as_u64().unwrap_or(0);
                    counters.acked.fetch_add(accepted, Ordering::Relaxed);
                    counters.rejected.fetch_add(rejected, Ordering::Relaxed);
                    // Lines the server could not queue in Kafka: send just those again.
                    let not_queued = not_queued_lines(&answer);
                    let unaccounted = events.saturating_sub(accepted + rejected);
                    // Lines the answer could not list (it lists at most 100 ranges) cannot be resent.
                    let unlisted = unaccounted.saturating_sub(not_queued.len() as u64);
                    if unlisted > 0 || (last && unaccounted > 0) {
                        let lost = if last { unaccounted } else { unlisted };
                        counters.fail(lost, format!("{lost} lines not queued by the server"));
                    }
                    if not_queued.is_empty() || last {
                        return;
                    }
                    body = Bytes::from(lines(&body, &not_queued));
                    events = not_queued.len() as u64;
                }
                Ok((status @ (429 | 502 | 503 | 504), _)) if !last => {
                    let _ = status; // try again: the server queued nothing
                }
                Ok((status, answer)) => {
                    let text = String::from_utf8_lossy(&answer[..answer.len().min(300)]).into_owned();
                    counters.fail(events, format!("POST {}: {status} {text}", self.target));
                    return;
                }
                Err(PostError::NotSent(_)) if !last => {}
                Err(PostError::NotSent(e) | PostError::Unknown(e)) => {
                    counters.fail(events, format!("POST {}: {e}", self.target));
                    return;
                }
            }
        }
    }

    /// One request, on a kept-alive connection when the pool has one; status and body.
    async fn post(&mut self, body: &Bytes) -> Result<(u16, Vec<u8>), PostError> {
        let reused = std::mem::take(&mut self.kept_alive);
        let request = self.awc.post(self.target.to_string()).insert_header((CONTENT_TYPE, "application/x-ndjson"));
        let mut response = match request.send_body(body.clone()).await {
            Ok(response) => response,
            Err(e) => return Err(classify(e, reused)),
        };
        let status = response.status().as_u16();
        let closes = response.headers().get(CONNECTION).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
            || response.version() < awc::http::Version::HTTP_11;
        let answer = response
            .body()
            .limit(MAX_ANSWER_BYTES)
            .await
            .map_err(|e| PostError::Unknown(format!("reading the answer: {e}")))?;
        self.kept_alive = !closes;
        Ok((status, answer.to_vec()))
    }
}

/// Whether a failed request may have reached the server.
fn classify(e: SendRequestError, reused: bool) -> PostError {
    match e {
        // The connection closed with no answer: on a kept-alive one, the server had closed it idle
        // before reading the request; on a fresh one, it may have read it and then failed.
        SendRequestError::Connect(ConnectError::Disconnected) if reused => {
            PostError::NotSent("keep-alive connection closed by the server".into())
        }
        SendRequestError::Connect(ConnectError::Disconnected) => {
            PostError::Unknown("the connection closed before any answer".into())
        }
        SendRequestError::Connect(e) => PostError::NotSent(format!("connect: {e}")),
        SendRequestError::Send(e) => PostError::NotSent(format!("sending: {e}")),
        SendRequestError::Timeout => PostError::Unknown(format!("no answer within {REQUEST_TIMEOUT:?}")),
        e => PostError::Unknown(format!("reading the answer: {e}")),
    }
}

/// The line numbers a 202 says were not queued: its `not_queued_lines` ranges (`[[first, last]…]`),
/// or, from a server that lists no ranges, the `not_queued` entries of `errors`.
fn not_queued_lines(answer: &serde_json::Value) -> Vec<usize> {
    if let Some(ranges) = answer["not_queued_lines"].as_array() {
        return ranges
            .iter()
            .filter_map(|r| Some((r.get(0)?.as_u64()? as usize, r.get(1)?.as_u64()? as usize)))
            .flat_map(|(first, last)| first..=last)
            .collect();
    }
    answer["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["reason"] == "not_queued")
        .filter_map(|e| e["line"].as_u64().map(|n| n as usize))
        .collect()
}

/// The lines numbered `numbers` (1-based) of an NDJSON body.
fn lines(body: &[u8], numbers: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        if numbers.contains(&(i + 1)) {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_a_default_path() {
        let t: HttpTarget = "http://127.0.0.1:8080".parse().unwrap();
        assert_eq!(t, HttpTarget { host: "127.0.0.1".into(), port: 8080, path: "/ingest".into() });
        let t: HttpTarget = "http://logs.internal/v1/ingest".parse().unwrap();
        assert_eq!((t.port, t.path.as_str()), (80, "/v1/ingest"));
        assert!("https://x:1".parse::<HttpTarget>().is_err());
        assert!("http://:80".parse::<HttpTarget>().is_err());
        assert!("http://x:port".parse::<HttpTarget>().is_err());
    }

    /// A scripted server on a thread: answers the n-th request with `answers[n]`; hands back the
    /// bodies it got.
    fn scripted_server(answers: Vec<String>) -> (u16, std::thread::JoinHandle<Vec<Vec<u8>>>) {
        use std::io::{BufRead, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let mut bodies = Vec::new();
            let mut answers = answers.into_iter();
            'connections: for stream in listener.incoming() {
                let mut stream = std::io::BufReader::new(stream.unwrap());
                loop {
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        if stream.read_line(&mut line).unwrap() == 0 {
                            continue 'connections;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    stream.read_exact(&mut body).unwrap();
                    bodies.push(body);
                    let Some(answer) = answers.next() else { return bodies };
                    stream.get_mut().write_all(answer.as_bytes()).unwrap();
                    if answer.contains("Connection: close") {
                        continue 'connections;
                    }
                    if answers.len() == 0 {
                        return bodies;
                    }
                }
            }
            bodies
        });
        (port, server)
    }

    fn answer(status: &str, body: &str, close: bool) -> String {
        let close = if close { "Connection: close\r\n" } else { "" };
        format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n{close}\r\n{body}", body.len())
    }

    #[test]
    fn a_503_is_retried_and_only_lines_not_queued_are_sent_again() {
        let (port, server) = scripted_server(vec![
            answer("503 Service Unavailable", "", true),
            answer(
                "202 Accepted",
                r#"{"accepted":1,"rejected":1,"errors":[{"line":2,"reason":"bad_level"},{"line":3,"reason":"not_queued"}]}"#,
                false,
            ),
            answer("202 Accepted", r#"{"accepted":1,"rejected":0,"errors":[]}"#, false),
        ]);
        let target = HttpTarget { host: "127.0.0.1".into(), port, path: "/ingest".into() };
        let options = HttpSinkOptions { batch_events: 3, in_flight: 1, ..HttpSinkOptions::default() };
        let mut sink = HttpSink::new(target, options).unwrap();
        for payload in ["a", "b", "c"] {
            sink.send(payload.as_bytes().to_vec(), 0).unwrap();
        }
        sink.flush(Duration::from_secs(20)).unwrap();
        assert_eq!((sink.acked(), sink.rejected(), sink.failed(), sink.retries()), (2, 1, 0, 2));
        assert_eq!(server.join().unwrap(), vec![b"a\nb\nc\n".to_vec(), b"a\nb\nc\n".to_vec(), b"c\n".to_vec()]);
    }

    #[test]
    fn a_refusal_is_counted_as_failed_with_its_reason_not_retried() {
        let (port, server) = scripted_server(vec![answer("401 Unauthorized", r#"{"error":"unauthorized"}"#, false)]);
        let target = HttpTarget { host: "127.0.0.1".into(), port, path: "/ingest".into() };
        let mut sink = HttpSink::new(target, HttpSinkOptions::default()).unwrap();
        sink.send(b"x".to_vec(), 0).unwrap();
        sink.send(b"y".to_vec(), 0).unwrap();
        sink.flush(Duration::from_secs(20)).unwrap();
        assert_eq!((sink.acked(), sink.failed(), sink.retries()), (0, 2, 0));
        assert!(sink.first_error().unwrap().contains("401"), "{:?}", sink.first_error());
        assert_eq!(server.join().unwrap().len(), 1);
    }

    #[test]
    fn a_chunked_answer_is_read_and_a_garbled_one_fails_without_a_resend() {
        let json = r#"{"accepted":2,"rejected":0,"errors":[]}"#;
        let chunked = format!(
            "HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{json}\r\n0\r\n\r\n",
            json.len()
        );
        let (port, server) = scripted_server(vec![chunked, "SMTP ready\r\n\r\n".into()]);
        let target = HttpTarget { host: "127.0.0.1".into(), port, path: "/ingest".into() };
        let options = HttpSinkOptions { batch_events: 2, in_flight: 1, ..HttpSinkOptions::default() };
        let mut sink = HttpSink::new(target, options).unwrap();
        for payload in ["a", "b", "c", "d"] {
            sink.send(payload.as_bytes().to_vec(), 0).unwrap();
        }
        sink.flush(Duration::from_secs(20)).unwrap();
        assert_eq!((sink.acked(), sink.failed(), sink.retries()), (2, 2, 0), "{:?}", sink.first_error());
        assert_eq!(server.join().unwrap(), vec![b"a\nb\n".to_vec(), b"c\nd\n".to_vec()]);
    }

    #[test]
    fn not_queued_lines_come_from_the_ranges_else_from_the_errors() {
        let ranges =
            serde_json::json!({"not_queued_lines": [[2, 4], [7, 7]], "errors": [{"line": 9, "reason": "not_queued"}]});
        assert_eq!(not_queued_lines(&ranges), vec![2, 3, 4, 7]);
        let old =
            serde_json::json!({"errors": [{"line": 3, "reason": "not_queued"}, {"line": 5, "reason": "bad_level"}]});
        assert_eq!(not_queued_lines(&old), vec![3]);
    }

    #[test]
    fn only_the_numbered_lines_are_sent_again() {
        assert_eq!(lines(b"a\nb\nc\nd\n", &[2, 4]), b"b\nd\n");
    }
}
