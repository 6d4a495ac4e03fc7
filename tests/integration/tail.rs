//! GET /logs/tail against real processes: every matching stored event once, whichever ingest
//! process stored it; heartbeats; a slow client cut without slowing ingest; the embedded mode.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::api::{spawn_role_with, App};
use crate::embedded::{spawn_embedded, wait_up, EmbeddedDir};
use crate::helpers::*;
use crate::ingest::IngestEnv;

/// One Server-Sent Events frame.
#[derive(Debug, Clone, Default)]
struct Frame {
    event: Option<String>,
    data: String,
    id: Option<String>,
    comment: Option<String>,
}

/// A raw HTTP/1.1 SSE client: it reads only when asked to, so a test can make it slow.
struct Sse {
    stream: tokio::net::TcpStream,
    raw: Vec<u8>,
    body: Vec<u8>,
    ended: bool,
}

/// What GET answered: a stream, or a status with its JSON body.
enum Opened {
    Stream(Sse),
    Refused(u16, Value),
}

impl Sse {
    /// GETs `path`; `receive_buffer` shrinks the socket's buffer (a slow client backs up sooner).
    async fn open(port: u16, path: &str, headers: &[(&str, &str)], receive_buffer: Option<u32>) -> Opened {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = receive_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let mut stream = socket.connect(([127, 0, 0, 1], port).into()).await.expect("connect");
        let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n{extra}\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let head_end = loop {
            if let Some(i) = find(&raw, b"\r\n\r\n") {
                break i;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
                .await
                .expect("response head in time")
                .unwrap();
            assert!(n > 0, "connection closed before the response head");
            raw.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).to_lowercase();
        let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
        let rest = raw[head_end + 4..].to_vec();
        if status != 200 {
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let mut body = rest;
            while body.len() < length {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
            return Opened::Refused(status, serde_json::from_slice(&body).unwrap_or(Value::Null));
        }
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        Opened::Stream(Sse { stream, raw: rest, body: Vec::new(), ended: false })
    }

    async fn open_ok(port: u16, path: &str, headers: &[(&str, &str)]) -> Sse {
        match Sse::open(port, path, headers, None).await {
            Opened::Stream(sse) => sse,
            Opened::Refused(status, body) => panic!("GET {path}: {status} {body}"),
        }
    }

    /// Moves whole chunks of the chunked encoding from `raw` to `body`.
    fn dechunk(&mut self) {
        loop {
            let Some(line_end) = find(&self.raw, b"\r\n") else { return };
            let size_text = String::from_utf8_lossy(&self.raw[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.trim(), 16).expect("chunk size");
            if size == 0 {
                self.ended = true;
                self.raw.clear();
                return;
            }
            let start = line_end + 2;
            if self.raw.len() < start + size + 2 {
                return;
            }
            self.body.extend_from_slice(&self.raw[start..start + size]);
            self.raw.drain(..start + size + 2);
        }
    }

    /// The next frame, or `None` when the stream ended or nothing came within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // What came with the response head (or in one read with an earlier chunk) first.
            self.dechunk();
            if let Some(end) = find(&self.body, b"\n\n") {
                let text = String::from_utf8(self.body[..end].to_vec()).expect("UTF-8 frame");
                self.body.drain(..end + 2);
                let mut frame = Frame::default();
                for line in text.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        frame.comment = Some(c.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        frame.event = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        frame.data.push_str(v);
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        frame.id = Some(v.to_owned());
                    }
                }
                return Some(frame);
            }
            if self.ended {
                return None;
            }
            let mut chunk = [0u8; 65536];
            let n = match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) => n,
                Ok(Err(_)) | Err(_) => return None,
            };
            if n == 0 {
                self.ended = true;
            }
            self.raw.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next `event: log` frame's event (heartbeats skipped); `None` if none came in `wait`.
    async fn next_event(&mut self, wait: Duration) -> Option<Value> {
        let deadline = Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let frame = self.next(left).await?;
            match frame.event.as_deref() {
                Some("log") => {
                    let event: Value = serde_json::from_str(&frame.data).expect("event JSON");
                    let id = format!("{}/{}/{}", event["topic"].as_str().unwrap(), event["partition"], event["offset"]);
                    assert_eq!(frame.id.as_deref(), Some(id.as_str()));
                    return Some(event);
                }
                Some(other) => panic!("unexpected event {other}: {}", frame.data),
                None => {}
            }
        }
        None
    }
}

/// The value of an unlabelled metric on `admin`'s /metrics (0 when absent).
async fn metric(admin: u16, name: &str) -> f64 {
    let (status, body) = http(admin, "GET", "/metrics", b"", &[]).await.expect("the admin listener answers");
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines().filter_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).next().unwrap_or(0.0)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// An `api` process of `env` with `extra` settings, listening.
async fn spawn_api(env: &IngestEnv, extra: &[(&str, &str)]) -> App {
    let app = spawn_role_with(env, "api", "", &unique("la_tail"), extra);
    app.wait_listening().await;
    app
}

/// Waits until the api process's tail listener is listening (it starts with the first client):
/// from then on every stored event reaches the tail.
async fn wait_listener(app: &App) {
    let path = app.process.log_path.clone();
    eventually("the tail listener started", Duration::from_secs(30), || {
        let path = path.clone();
        async move { std::fs::read_to_string(&path).ok()?.contains("tail listener started").then_some(()) }
    })
    .await;
}

/// `n` JSON lines over `partitions`; those whose index `matches` holds say `timeout` at level
/// error (what the test's filter asks for), the others miss the filter in one way or another.
fn lines(tag: &str, n: usize, partitions: i32, message_bytes: usize, matches: impl Fn(usize) -> bool) -> Vec<Outgoing> {
    let now = chrono::Utc::now();
    let padding = "p".repeat(message_bytes);
    (0..n)
        .map(|i| {
            let (level, message) = match (matches(i), i % 3) {
                (true, _) => ("error", format!("upstream timeout {tag} {i} {padding}")),
                (false, 0) => ("info", format!("upstream timeout {tag} {i} {padding}")),
                (false, 1) => ("error", format!("connection refused {tag} {i} {padding}")),
                (false, _) => ("error", format!("upstream timeout retry {tag} {i} {padding}")),
            };
            let line = json!({"ts": now.to_rfc3339(), "level": level, "service": "checkout", "message": message, "eid": format!("{tag}-{i}")});
            Outgoing {
                partition: (i as i32) % partitions,
                timestamp_ms: now.timestamp_millis(),
                payload: line.to_string().into_bytes(),
            }
        })
        .collect()
}

/// What the test's filter selects: `timeout` at error level, without `retry`.
const FILTER: &str = "/logs/tail?q=timeout%20-retry&level=error";

/// The stored rows of `topic` the filter matches, as (partition, offset).
async fn stored_matching(client: &tokio_postgres::Client, topic: &str) -> BTreeSet<(i32, i64)> {
    client
        .query(
            "SELECT \"partition\", \"offset\" FROM logs WHERE topic = $1 AND level = 4 \
             AND tokens @> ARRAY['timeout'] AND NOT tokens @> ARRAY['retry']",
            &[&topic],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn tail_delivers_every_matching_stored_event_exactly_once_while_two_ingest_processes_rebalance() {
    let env = IngestEnv::create(4).await;
    let client = env.db.client().await;
    let api = spawn_api(&env, &[]).await;
    let mut a = env.spawn_ingest();
    // Something stored before the tail opens is not replayed to it.
    let producer = producer(&env.brokers);
    let before = lines("before", 400, 4, 0, |i| i % 2 == 0);
    produce_all(&producer, &env.topic, &before).await;
    env.wait_stored(&client, before.len() as i64, Duration::from_secs(120)).await;
    let mut sse = Sse::open_ok(api.port, FILTER, &[]).await;
    assert_eq!(sse.next(Duration::from_secs(10)).await.and_then(|f| f.comment).as_deref(), Some("tail open"));
    wait_listener(&api).await;
    let known_before = stored_matching(&client, &env.topic).await;

    // The stream flows while a second process joins the group and leaves it again.
    let data = lines("during", 12_000, 4, 0, |i| i % 7 == 0);
    let (first, rest) = data.split_at(4_000);
    let (second, third) = rest.split_at(4_000);
    let received = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(event) = sse.next_event(Duration::from_secs(60)).await {
            got.push(event);
            if got.len() == 12_000 / 7 + 1 {
                break;
            }
        }
        (got, sse)
    });
    produce_all(&producer, &env.topic, first).await;
    env.wait_stored(&client, (before.len() + 2_000) as i64, Duration::from_secs(120)).await;
    let mut b = env.spawn_ingest();
    produce_all(&producer, &env.topic, second).await;
    eventually("b owns partitions", Duration::from_secs(60), || async {
        std::fs::read_to_string(&b.log_path).ok()?.contains("partitions assigned").then_some(())
    })
    .await;
    env.wait_stored(&client, (before.len() + 6_000) as i64, Duration::from_secs(120)).await;
    let status = b.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", b.log_tail());
    produce_all(&producer, &env.topic, third).await;
    let total = (before.len() + data.len()) as i64;
    env.wait_stored(&client, total, Duration::from_secs(180)).await;

    let (got, mut sse) = received.await.unwrap();
    let matching = stored_matching(&client, &env.topic).await;
    let expected: BTreeSet<(i32, i64)> = matching.difference(&known_before).copied().collect();
    assert_eq!(expected.len(), data.iter().enumerate().filter(|(i, _)| i % 7 == 0).count(), "stored exactly once");
    let positions: Vec<(i32, i64)> =
        got.iter().map(|e| (e["partition"].as_i64().unwrap() as i32, e["offset"].as_i64().unwrap())).collect();
    let distinct: HashSet<&(i32, i64)> = positions.iter().collect();
    assert_eq!(distinct.len(), positions.len(), "an event was tailed twice");
    let tailed: BTreeSet<(i32, i64)> = positions.iter().copied().collect();
    let missing: Vec<_> = expected.difference(&tailed).take(5).collect();
    let extra: Vec<_> = tailed.difference(&expected).take(5).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}, extra {extra:?} of {}", expected.len());
    for event in &got {
        assert_eq!((event["level"].as_str(), event["service"].as_str()), (Some("error"), Some("checkout")), "{event}");
        assert_eq!(event["topic"].as_str(), Some(env.topic.as_str()));
        assert!(event["attrs"]["eid"].as_str().unwrap().starts_with("during-"), "{event}");
    }
    // Nothing more is on its way: a last matching event comes next, with nothing before it.
    let last = lines("last", 1, 4, 0, |_| true);
    produce_all(&producer, &env.topic, &last).await;
    let next = sse.next_event(Duration::from_secs(60)).await.expect("the last event");
    assert_eq!(next["attrs"]["eid"], "last-0", "{next}");

    let status = a.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", a.log_tail());
    drop((api, client));
    env.db.drop_db().await;
}

#[tokio::test]
async fn a_slow_client_is_cut_and_frees_its_place_while_ingest_keeps_storing() {
    let env = IngestEnv::create(2).await;
    let client = env.db.client().await;
    let api = spawn_api(&env, &[("TAIL_BUFFER_EVENTS", "50"), ("TAIL_MAX_CLIENTS", "1")]).await;
    let _ingest = env.spawn_ingest();
    // A client that reads its first frame and then nothing; its socket buffer is small.
    let mut slow = match Sse::open(api.port, "/logs/tail", &[], Some(4096)).await {
        Opened::Stream(sse) => sse,
        Opened::Refused(status, body) => panic!("{status} {body}"),
    };
    assert!(slow.next(Duration::from_secs(10)).await.is_some());
    wait_listener(&api).await;
    // The one place is taken.
    match Sse::open(api.port, "/logs/tail", &[], None).await {
        Opened::Refused(503, body) => assert_eq!(body["error"], "too_many_tails", "{body}"),
        _ => panic!("a second tail was let in beside TAIL_MAX_CLIENTS=1"),
    }
    let data = lines("slow", 3_000, 2, 2_000, |i| i % 2 == 0);
    let started = Instant::now();
    produce_all(&producer(&env.brokers), &env.topic, &data).await;
    env.wait_stored(&client, data.len() as i64, Duration::from_secs(120)).await;
    let stored_in = started.elapsed();
    // The slow client was cut: its place is free again.
    let port = api.port;
    let mut fresh = eventually("the slow client's place freed", Duration::from_secs(30), || async move {
        match Sse::open(port, "/logs/tail", &[], None).await {
            Opened::Stream(sse) => Some(sse),
            Opened::Refused(..) => None,
        }
    })
    .await;
    assert!(fresh.next(Duration::from_secs(10)).await.is_some());
    // Reading at last, the slow client finds what fitted its buffer, then the cut, then the end.
    let mut events = 0;
    let cut = loop {
        let frame = slow.next(Duration::from_secs(30)).await.expect("the cut before the stream ends");
        match frame.event.as_deref() {
            Some("log") => events += 1,
            Some("cut") => break frame,
            _ => {}
        }
    };
    let body: Value = serde_json::from_str(&cut.data).unwrap();
    assert_eq!(body["error"], "slow_client", "{body}");
    assert!(body["message"].as_str().unwrap().contains("TAIL_BUFFER_EVENTS"));
    assert!(events < data.len(), "a cut client got everything ({events})");
    assert!(slow.next(Duration::from_secs(10)).await.is_none(), "the stream ends after the cut");
    // The operator sees it: one refusal, one cut, one tail open (the fresh one), events queued.
    assert_eq!(metric(api.admin_port, "log_analyzer_tail_refused_total").await, 1.0);
    assert_eq!(metric(api.admin_port, "log_analyzer_tail_cut_total").await, 1.0);
    assert_eq!(metric(api.admin_port, "log_analyzer_tail_clients").await, 1.0);
    assert!(metric(api.admin_port, "log_analyzer_tail_events_total").await >= events as f64);
    assert!(stored_in < Duration::from_secs(120));
    drop((api, client));
    env.db.drop_db().await;
}

#[tokio::test]
async fn the_tail_is_guarded_checks_its_filter_and_beats_on_an_idle_stream() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let secret = "tail-secret-at-least-32-bytes-long!";
    let env = IngestEnv::create(1).await;
    let api = spawn_api(&env, &[("JWT_SECRET", secret), ("TAIL_HEARTBEAT_MS", "200")]).await;
    match Sse::open(api.port, "/logs/tail", &[], None).await {
        Opened::Refused(401, body) => assert_eq!(body["error"], "unauthorized", "{body}"),
        _ => panic!("a tail without a token was let in"),
    }
    let claims = json!({"exp": chrono::Utc::now().timestamp() + 600});
    let token = encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap();
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    for (path, code) in [
        ("/logs/tail?q=a", "bad_query"),
        ("/logs/tail?q=timeout%20-timeout", "bad_query"),
        ("/logs/tail?level=loud", "bad_level"),
        ("/logs/tail?limit=5", "unknown_parameter"),
        ("/logs/tail?q=x1&q=x2", "repeated_parameter"),
    ] {
        match Sse::open(api.port, path, &auth, None).await {
            Opened::Refused(400, body) => {
                assert_eq!(body["error"], code, "{path}: {body}");
                assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
            }
            _ => panic!("{path} was not refused"),
        }
    }
    let mut sse = Sse::open_ok(api.port, "/logs/tail?q=timeout&level=warn%2B", &auth).await;
    let mut beats = 0;
    while beats < 2 {
        let frame = sse.next(Duration::from_secs(10)).await.expect("a heartbeat on the idle stream");
        assert!(frame.event.is_none(), "nothing was stored, yet {frame:?}");
        if frame.comment.as_deref() == Some("heartbeat") {
            beats += 1;
        }
    }
    drop((sse, api));
    env.db.drop_db().await;
}

#[tokio::test]
async fn the_embedded_tail_sees_the_lines_posted_to_ingest() {
    let dir = EmbeddedDir::create();
    // Heartbeats often: a closed tail is noticed when the next one fails to send.
    let mut app = spawn_embedded(&dir, &[("TAIL_HEARTBEAT_MS", "200")]);
    wait_up(&mut app).await;
    let mut sse = Sse::open_ok(app.port, "/logs/tail?q=disk", &[]).await;
    assert!(sse.next(Duration::from_secs(10)).await.is_some());
    let body = b"{\"level\":\"warn\",\"message\":\"disk almost full\",\"service\":\"node-1\"}\nplain text line without it\nERROR disk gone\n";
    let (status, answer) = http(app.port, "POST", "/ingest", body, &[]).await.expect("POST /ingest");
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&answer));
    let first = sse.next_event(Duration::from_secs(30)).await.expect("the first line");
    let second = sse.next_event(Duration::from_secs(30)).await.expect("the third line");
    let mut got = [first, second];
    got.sort_by_key(|e| e["message"].as_str().unwrap().to_owned());
    assert_eq!(got[0]["message"], "ERROR disk gone");
    assert_eq!(got[0]["level"], "error");
    assert_eq!(got[1]["message"], "disk almost full");
    assert_eq!(got[1]["service"], "node-1");
    // Tailed lines are stored ones: the file holds both, and nothing else matched.
    assert_eq!(crate::embedded::count(&dir.db_path(), "SELECT count(*) AS n FROM logs"), 3);
    assert!(sse.next_event(Duration::from_millis(500)).await.is_none());
    assert_eq!(metric(app.admin_port, "log_analyzer_tail_clients").await, 1.0);
    assert_eq!(metric(app.admin_port, "log_analyzer_tail_events_total").await, 2.0);
    drop(sse);
    let admin = app.admin_port;
    eventually("the closed tail leaves the gauge", Duration::from_secs(10), || async move {
        (metric(admin, "log_analyzer_tail_clients").await == 0.0).then_some(())
    })
    .await;
    drop(app);
}
