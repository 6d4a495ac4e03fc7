//! The edges of the HTTP door against real processes: hostile parameters, token edge cases, the
//! admin token, the per-client rate limit, slow clients, SIGTERM under load, and a generator
//! pointed at a topic that does not exist.

use std::time::{Duration, Instant};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::api::{spawn_role_with, App};
use crate::helpers::*;
use crate::ingest::IngestEnv;

const SECRET: &str = "edges-secret-that-is-at-least-32-bytes-long";

fn token(claims: Value) -> String {
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// One raw HTTP/1.1 exchange: status, headers (lower-case names) and body.
async fn exchange(port: u16, request: &[u8]) -> Option<(u16, Vec<(String, String)>, Vec<u8>)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    stream.write_all(request).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw)).await.ok()?.ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some((status, headers, raw[split + 4..].to_vec()))
}

fn get_request(path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.into_bytes()
}

/// Status and JSON body of a GET (panics when the connection drops: that is what a panic looked like).
async fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let (status, _, body) =
        exchange(port, &get_request(path, headers)).await.unwrap_or_else(|| panic!("GET {path}: connection dropped"));
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("GET {path}: {status} not JSON: {}", String::from_utf8_lossy(&body)));
    (status, body)
}

fn assert_error_body(what: &str, status: u16, body: &Value, want_status: u16, want_error: &str) {
    assert_eq!(status, want_status, "{what}: {body}");
    assert_eq!(body["error"], want_error, "{what}: {body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {body}");
}

async fn admin(port: u16, method: &str, path: &str, body: &str, auth: Option<&str>) -> u16 {
    let mut headers = vec![];
    let bearer;
    if let Some(t) = auth {
        bearer = format!("Bearer {t}");
        headers.push(("Authorization", bearer.as_str()));
    }
    http(port, method, path, body.as_bytes(), &headers).await.unwrap_or_else(|| panic!("{method} {path} dropped")).0
}

#[tokio::test]
async fn hostile_parameters_token_edges_admin_token_and_slow_clients() {
    let env = IngestEnv::create(1).await;
    let prefix = unique("la_edges");
    let app: App = spawn_role_with(
        &env,
        "api",
        &stack().redis_url,
        &prefix,
        &[
            ("JWT_SECRET", SECRET),
            ("ADMIN_TOKEN", "edges-admin-token"),
            ("HTTP_REQUEST_TIMEOUT_MS", "1000"),
            ("HTTP_BODY_TIMEOUT_MS", "1500"),
        ],
    );
    app.wait_listening().await;
    let port = app.port;
    let valid = format!("Bearer {}", token(json!({"exp": now() + 600})));
    let auth = [("Authorization", valid.as_str())];

    // A non-ASCII last character in `window` once panicked in split_at and dropped the connection.
    for route in ["/stats/errors?", "/stats/keywords?q=timeout&", "/stats/keywords/top?"] {
        for window in ["1%C3%A9", "%C3%A9", "5%E2%82%AC", "%F0%9F%98%80"] {
            let path = format!("{route}window={window}");
            let (status, body) = get(port, &path, &auth).await;
            assert_error_body(&path, status, &body, 400, "bad_window");
        }
    }
    let (status, body) = get(port, "/stats/summary?date=2026-01-0%C3%A9", &auth).await;
    assert_error_body("summary date", status, &body, 400, "bad_date");
    let (status, body) = get(port, "/stats/summary?window=1%C3%A9&date=2026-01-01", &auth).await;
    assert_error_body("summary window", status, &body, 400, "unknown_parameter");
    let (status, _) = get(port, "/healthz", &[]).await;
    assert_eq!(status, 200, "the server is still up");

    // nbf in the future: not valid yet.
    let later = format!("Bearer {}", token(json!({"exp": now() + 3_600, "nbf": now() + 600})));
    let (status, body) = get(port, "/stats/errors", &[("Authorization", &later)]).await;
    assert_error_body("nbf", status, &body, 401, "unauthorized");
    assert!(body["message"].as_str().unwrap().contains("not valid yet"), "{body}");
    // The scheme is case-insensitive.
    let lower = format!("bearer {}", token(json!({"exp": now() + 600})));
    let (status, body) = get(port, "/stats/errors?window=10s", &[("Authorization", &lower)]).await;
    assert_eq!(status, 200, "lowercase bearer: {body}");

    // ADMIN_TOKEN guards what changes the process or costs it CPU; reading stays open.
    let admin_port = app.admin_port;
    assert_eq!(admin(admin_port, "PUT", "/debug/log-level", "debug", None).await, 401);
    assert_eq!(admin(admin_port, "PUT", "/debug/log-level", "debug", Some("wrong")).await, 401);
    assert_eq!(admin(admin_port, "PUT", "/debug/log-level", "debug", Some("edges-admin-token")).await, 200);
    assert_eq!(admin(admin_port, "GET", "/debug/log-level", "", None).await, 200);
    assert_eq!(admin(admin_port, "GET", "/debug/pprof/profile?seconds=1", "", None).await, 401);
    assert_eq!(
        admin(admin_port, "GET", "/debug/pprof/profile?seconds=1&format=svg", "", Some("edges-admin-token")).await,
        200
    );
    assert_eq!(admin(admin_port, "GET", "/metrics", "", None).await, 200);

    // A client that sends half its headers and waits is cut after HTTP_REQUEST_TIMEOUT_MS.
    let started = Instant::now();
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    slow.write_all(b"GET /stats/errors HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ").await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "a client with half its headers was not cut within 10 s");
    let cut_after = started.elapsed();
    // actix checks the deadline on a coarse (~0.5 s) clock: what matters is that it is cut, not at once.
    assert!(cut_after >= Duration::from_millis(300), "cut at once, not by the timeout: {cut_after:?}");
    println!("slow headers: connection cut after {:.2} s", cut_after.as_secs_f64());

    // A body that stops arriving gets 408 after HTTP_BODY_TIMEOUT_MS.
    let started = Instant::now();
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {valid}\r\nContent-Length: 1000\r\n\
         Content-Type: application/x-ndjson\r\n\r\n{{\"level\":\"info\""
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut raw)).await;
    assert!(read.is_ok(), "a stalled body was not cut within 10 s");
    let text = String::from_utf8_lossy(&raw).to_string();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"error\":\"body_timeout\""), "{text}");
    let cut_after = started.elapsed();
    assert!(cut_after >= Duration::from_millis(1_400), "cut too early: {cut_after:?}");
    println!("slow body: 408 after {:.2} s", cut_after.as_secs_f64());

    drop(app);
    env.db.drop_db().await;
}

#[tokio::test]
async fn over_the_rate_limit_a_client_gets_429_with_retry_after_and_health_stays_open() {
    let env = IngestEnv::create(1).await;
    let prefix = unique("la_rate");
    let app = spawn_role_with(
        &env,
        "api",
        &stack().redis_url,
        &prefix,
        &[("RATE_LIMIT_RPS", "2"), ("RATE_LIMIT_BURST", "3")],
    );
    app.wait_listening().await;
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..10 {
        let (status, headers, body) =
            exchange(app.port, &get_request("/stats/keywords/top?window=10s", &[])).await.expect("answer");
        statuses.push(status);
        if status == 429 && limited.is_none() {
            limited = Some((headers, body));
        }
    }
    // 10 requests in well under a second: the burst of 3 passes (plus at most what refilled), the rest wait.
    let passed = statuses.iter().filter(|s| **s == 200).count();
    assert!((3..=5).contains(&passed), "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    let (headers, body) = limited.expect("a 429");
    let retry_after: u64 = headers
        .iter()
        .find(|(k, _)| k == "retry-after")
        .map(|(_, v)| v.parse().expect("whole seconds"))
        .expect("Retry-After");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_error_body("rate limit", 429, &body, 429, "rate_limited");
    for _ in 0..10 {
        assert_eq!(get(app.port, "/healthz", &[]).await.0, 200, "probes are not limited");
    }
    // After the wait it says, the client is served again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(get(app.port, "/stats/keywords/top?window=10s", &[]).await.0, 200);
    drop(app);
    env.db.drop_db().await;
}

#[tokio::test]
async fn a_short_hs256_secret_stops_the_process_at_start_naming_jwt_secret() {
    let mut child =
        ChildProcess::spawn(&["api"], &[("JWT_SECRET", "only-20-bytes-long!!"), ("HTTP_ADDR", "127.0.0.1:0")]);
    let status = eventually("api to refuse to start", Duration::from_secs(30), || {
        let status = child.child.try_wait().expect("try_wait");
        async move { status }
    })
    .await;
    let log = std::fs::read_to_string(&child.log_path).unwrap();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("JWT_SECRET") && log.contains("at least 32 bytes"), "{log}");
    assert!(log.contains("this one is 20"), "{log}");
}

#[tokio::test]
async fn sigterm_while_two_writers_ingest_exits_within_10_s() {
    let env = IngestEnv::create(2).await;
    let prefix = unique("la_term");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = ChildProcess::spawn(
        &["run", "--generate", "5000"],
        &[
            ("DATABASE_URL", env.db.url.as_str()),
            ("KAFKA_BROKERS", &env.brokers),
            ("KAFKA_TOPIC", &env.topic),
            ("KAFKA_GROUP", &env.group),
            ("REDIS_URL", &stack().redis_url),
            ("REDIS_PREFIX", &prefix),
            ("HTTP_ADDR", &addr),
            ("ADMIN_ADDR", "127.0.0.1:0"),
            ("WRITER_COUNT", "2"),
        ],
    );
    let client = env.db.client().await;
    let topic = env.topic.clone();
    // Ingesting for real: rows are being stored, and more keep coming.
    let first = eventually("rows stored", Duration::from_secs(60), || {
        let (client, topic) = (&client, &topic);
        async move { Some(stored_total(client, topic).await).filter(|n| *n > 0) }
    })
    .await;
    eventually("ingest still moving", Duration::from_secs(30), || {
        let (client, topic) = (&client, &topic);
        async move { (stored_total(client, topic).await > first).then_some(()) }
    })
    .await;
    let started = Instant::now();
    let status = child.terminate(Duration::from_secs(30));
    let seconds = started.elapsed().as_secs_f64();
    println!("SIGTERM to exit with WRITER_COUNT=2 while ingesting: {seconds:.2} s");
    assert!(status.success(), "exit {status:?}: {}", child.log_tail());
    assert!(seconds <= 10.0, "SIGTERM took {seconds:.2} s (limit 10 s): {}", child.log_tail());
    drop(client);
    env.db.drop_db().await;
}

#[tokio::test]
async fn generate_into_a_missing_topic_says_how_many_failed_and_why() {
    let topic = unique("missing_topic");
    let mut child = ChildProcess::spawn(
        &["generate", "--to", "kafka", "--count", "2000", "--rate", "0"],
        &[("KAFKA_TOPIC", &topic)],
    );
    let status = eventually("generate to give up", Duration::from_secs(120), || {
        let status = child.child.try_wait().expect("try_wait");
        async move { status }
    })
    .await;
    let log = std::fs::read_to_string(&child.log_path).unwrap();
    assert!(!status.success(), "{log}");
    let line = log.lines().find(|l| l.starts_with("log-analyzer: ")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("events were not delivered; first error: "), "{line}");
    let mut words = line.trim_start_matches("log-analyzer: ").split_whitespace();
    let failed: u64 = words.next().unwrap().parse().unwrap_or_else(|_| panic!("{line}"));
    assert_eq!(words.next(), Some("of"), "{line}");
    let sent: u64 = words.next().unwrap().parse().unwrap_or_else(|_| panic!("{line}"));
    assert!(failed > 0 && failed <= sent && sent <= 2_000, "{line}");
    assert!(line.contains(&format!("topic \"{topic}\" does not exist")), "{line}");
    // The structured log line carries the same reason.
    assert!(log.lines().any(|l| l.starts_with('{') && l.contains("does not exist")), "{log}");
}
