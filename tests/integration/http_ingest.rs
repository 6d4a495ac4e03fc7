//! POST /ingest at full speed and bounded (issue #12): whole bodies in flight at once, bounded memory
//! and answers, every dead letter stored, a prompt 503 when Kafka is away, Idempotency-Key retries
//! that produce nothing again.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api::{spawn_role, spawn_role_with, App};
use crate::helpers::*;
use crate::ingest::IngestEnv;

fn valid_lines(prefix: &str, n: usize) -> String {
    let now_ms = chrono::Utc::now().timestamp_millis();
    (0..n)
        .map(|i| {
            let level = if i % 10 == 0 { "error" } else { "info" };
            format!(
                "{{\"ts\":{},\"level\":\"{level}\",\"service\":\"web\",\"message\":\"line {i} upstream timeout\",\"eid\":\"{prefix}-{i}\"}}\n",
                now_ms - i as i64
            )
        })
        .collect()
}

async fn post(port: u16, body: &[u8], headers: &[(&str, &str)]) -> (u16, Vec<u8>, Value) {
    let (status, raw) = http(port, "POST", "/ingest", body, headers).await.expect("POST /ingest answered");
    let json = serde_json::from_slice(&raw)
        .unwrap_or_else(|_| panic!("POST /ingest {status}: not JSON: {}", String::from_utf8_lossy(&raw)));
    (status, raw, json)
}

/// POST /ingest with an Idempotency-Key over a raw connection: the status and the response head.
async fn raw_exchange(port: u16, body: &[u8], key: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nIdempotency-Key: {key}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let head = text.split("\r\n\r\n").next().unwrap_or_default().to_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head)
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.expect(sql).get(0)
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmHWM in kB")
}

#[tokio::test]
async fn twenty_thousand_valid_lines_in_one_body_are_all_accepted_and_stored() {
    let env = IngestEnv::create(2).await;
    let app = spawn_role(&env, "run", &stack().redis_url, &unique("la_h20k"));
    app.wait_listening().await;
    let body = valid_lines("big", 20_000);
    let started = Instant::now();
    let (status, raw, answer) = post(app.port, body.as_bytes(), &[]).await;
    let took = started.elapsed();
    assert_eq!(status, 202, "{answer}");
    assert_eq!((answer["accepted"].as_u64(), answer["rejected"].as_u64()), (Some(20_000), Some(0)), "{answer}");
    assert_eq!(answer["not_queued"], 0);
    assert!(raw.len() < 1024, "a clean body gets a small answer: {} bytes", raw.len());
    assert!(took < Duration::from_secs(20), "20,000 lines took {took:?}");
    eprintln!("POST /ingest of 20,000 lines answered in {took:?}");

    let client = env.db.client().await;
    env.wait_stored(&client, 20_000, Duration::from_secs(120)).await;
    let stored =
        count(&client, "SELECT count(DISTINCT attrs->>'eid') FROM logs WHERE attrs->>'eid' LIKE 'big-%'").await;
    assert_eq!(stored, 20_000);
    assert_eq!(count(&client, "SELECT count(*) FROM logs").await, 20_000);
    drop(client);
    drop(app);
    env.db.drop_db().await;
}

#[tokio::test]
async fn an_8_mib_body_of_junk_lines_stays_within_memory_and_gets_a_small_answer() {
    let env = IngestEnv::create(1).await;
    // INPUT_FORMAT=json keeps `x` a reject once text lines become events.
    let app = spawn_role_with(&env, "api", &stack().redis_url, &unique("la_hjunk"), &[("INPUT_FORMAT", "json")]);
    app.wait_listening().await;
    let lines = 4 * 1024 * 1024;
    let body = b"x\n".repeat(lines);
    assert_eq!(body.len(), 8 * 1024 * 1024);
    let (status, raw, answer) = post(app.port, &body, &[]).await;
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&raw[..raw.len().min(2000)]));
    assert!(raw.len() < 64 * 1024, "the answer is {} bytes", raw.len());
    assert_eq!(answer["rejected"].as_u64(), Some(lines as u64));
    assert_eq!(
        answer["rejected_by_reason"]["not_json"].as_u64(),
        Some(lines as u64),
        "{}",
        answer["rejected_by_reason"]
    );
    assert_eq!(answer["errors"].as_array().map(Vec::len), Some(100));
    assert_eq!(answer["errors"][0]["line"], 1);
    assert_eq!(answer["errors_truncated"], true);
    let peak = peak_rss_kib(app.process.child.id());
    assert!(peak < 256 * 1024, "peak RSS of the api process: {} MiB", peak / 1024);
    eprintln!("8 MiB junk body: peak RSS {} MiB, answer {} bytes", peak / 1024, raw.len());
    let client = env.db.client().await;
    assert_eq!(count(&client, "SELECT count(*) FROM log_rejects WHERE source = 'http'").await, lines as i64);
    drop(client);
    drop(app);
    env.db.drop_db().await;
}

#[tokio::test]
async fn fourteen_thousand_empty_objects_are_all_stored_as_dead_letters() {
    let env = IngestEnv::create(1).await;
    let app = spawn_role(&env, "api", &stack().redis_url, &unique("la_hempty"));
    app.wait_listening().await;
    let body = "{}\n".repeat(14_000);
    let (status, _, answer) = post(app.port, body.as_bytes(), &[]).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!((answer["accepted"].as_u64(), answer["rejected"].as_u64()), (Some(0), Some(14_000)));
    let client = env.db.client().await;
    let rows: Vec<(String, String)> = client
        .query("SELECT reason, detail FROM log_rejects WHERE source = 'http' ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows.len(), 14_000);
    let by_reason = answer["rejected_by_reason"].as_object().unwrap();
    for (reason, n) in by_reason {
        assert_eq!(rows.iter().filter(|r| &r.0 == reason).count() as u64, n.as_u64().unwrap(), "{reason}");
    }
    assert!(rows[13_999].1.starts_with("line 14000:"), "{:?}", rows[13_999]);
    drop(client);
    drop(app);
    env.db.drop_db().await;
}

#[tokio::test]
async fn with_kafka_unreachable_the_answer_is_a_503_within_the_ingest_timeout() {
    let env = IngestEnv::create(1).await;
    let closed = format!("127.0.0.1:{}", free_port());
    let app = spawn_role_with(
        &env,
        "api",
        &stack().redis_url,
        &unique("la_hnokafka"),
        &[("KAFKA_BROKERS", &closed), ("INGEST_TIMEOUT_MS", "1500")],
    );
    app.wait_listening().await;
    let body = format!("{}{{not json\n", valid_lines("lost", 50));
    let started = Instant::now();
    let (status, _, answer) = tokio::time::timeout(
        Duration::from_secs(10),
        post(app.port, body.as_bytes(), &[("Idempotency-Key", "nokafka-1")]),
    )
    .await
    .expect("an answer within 10 s");
    let took = started.elapsed();
    eprintln!("Kafka unreachable, INGEST_TIMEOUT_MS=1500: 503 after {took:?}");
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"], "kafka_unavailable", "{answer}");
    assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(took < Duration::from_millis(1500 + 2000), "answered after {took:?}");
    assert_eq!(answer["accepted"], 0);
    assert_eq!(answer["not_queued"], 50, "{answer}");
    assert_eq!(answer["not_queued_lines"], serde_json::json!([[1, 50]]), "{answer}");
    // Kafka took nothing: the retry stores the dead letters, so none are kept now; the key is free again.
    let client = env.db.client().await;
    assert_eq!(count(&client, "SELECT count(*) FROM log_rejects").await, 0);
    assert_eq!(count(&client, "SELECT count(*) FROM ingest_requests").await, 0);
    drop(client);
    drop(app);
    env.db.drop_db().await;
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_gets_the_first_answer_and_produces_nothing_again() {
    let env = IngestEnv::create(1).await;
    let app: App = spawn_role(&env, "run", &stack().redis_url, &unique("la_hidem"));
    app.wait_listening().await;
    let body = format!("{}{{\"level\":\"nope\",\"service\":\"web\",\"message\":\"x\"}}\n", valid_lines("idem", 300));
    let key = [("Idempotency-Key", "batch-0001")];
    let (status, first_raw, first) = post(app.port, body.as_bytes(), &key).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!((first["accepted"].as_u64(), first["rejected"].as_u64()), (Some(300), Some(1)));
    let (status, again_raw, _) = post(app.port, body.as_bytes(), &key).await;
    assert_eq!(status, 202);
    assert_eq!(again_raw, first_raw, "the retry gets the first answer, byte for byte");
    let (status, replayed) = raw_exchange(app.port, body.as_bytes(), "batch-0001").await;
    assert_eq!(status, 202, "{replayed}");
    assert!(replayed.to_ascii_lowercase().contains("idempotent-replayed: true"), "{replayed}");

    // The same key with other data is refused.
    let (status, _, answer) = post(app.port, valid_lines("other", 3).as_bytes(), &key).await;
    assert_eq!((status, answer["error"].as_str()), (422, Some("idempotency_key_reused")), "{answer}");

    // Two copies at once under a new key: one produces, the other gets its answer or a 409.
    let second = valid_lines("twin", 200);
    let twin_key = [("Idempotency-Key", "batch-0002")];
    let (a, b) =
        tokio::join!(post(app.port, second.as_bytes(), &twin_key), post(app.port, second.as_bytes(), &twin_key));
    let statuses = [a.0, b.0];
    assert!(statuses.contains(&202), "{statuses:?}: {} / {}", a.2, b.2);
    assert!(statuses.iter().all(|s| *s == 202 || *s == 409), "{statuses:?}: {} / {}", a.2, b.2);

    // A last line behind them in the single partition: once it is stored, any duplicate would be too.
    let (status, _, _) = post(app.port, valid_lines("sentinel", 1).as_bytes(), &[]).await;
    assert_eq!(status, 202);
    let client = env.db.client().await;
    env.wait_stored(&client, 501, Duration::from_secs(60)).await;
    assert_eq!(count(&client, "SELECT count(*) FROM logs").await, 501);
    assert_eq!(count(&client, "SELECT count(DISTINCT attrs->>'eid') FROM logs").await, 501);
    assert_eq!(count(&client, "SELECT count(*) FROM log_rejects WHERE source = 'http'").await, 1);
    assert_eq!(count(&client, "SELECT count(*) FROM ingest_requests WHERE status = 202").await, 2);
    drop(client);
    drop(app);
    env.db.drop_db().await;
}

#[tokio::test]
async fn a_body_over_the_limit_gets_a_413_even_before_it_is_sent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = IngestEnv::create(1).await;
    let app =
        spawn_role_with(&env, "api", &stack().redis_url, &unique("la_h413"), &[("INGEST_MAX_BODY_BYTES", "1000")]);
    app.wait_listening().await;
    let (status, _, answer) = post(app.port, valid_lines("big", 20).as_bytes(), &[]).await;
    assert_eq!((status, answer["error"].as_str()), (413, Some("body_too_large")), "{answer}");
    assert!(answer["message"].as_str().is_some_and(|m| m.contains("1000")), "{answer}");

    // A declared length over the limit is refused from the headers alone, without waiting for a body.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    let head = "POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 100000000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut raw))
        .await
        .expect("an answer without the body being sent")
        .unwrap();
    let text = String::from_utf8_lossy(&raw[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("body_too_large"), "{text}");
    drop(app);
    env.db.drop_db().await;
}
