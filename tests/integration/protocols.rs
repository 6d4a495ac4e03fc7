//! The shippers' protocols end to end (issue #17): OTLP/HTTP from a real client (telemetrygen,
//! installed by scripts/tools.sh), OTLP/JSON, Loki push as JSON and as protobuf + snappy, and bad
//! bodies on each endpoint, against a real `run` (Kafka → PostgreSQL).

use std::io::Write;
use std::time::Duration;

use log_analyzer::http::protocols::logproto;
use prost::Message;
use serde_json::{json, Value};

use crate::api::{spawn_role_with, App};
use crate::helpers::*;
use crate::ingest::IngestEnv;

async fn start(env: &IngestEnv, extra: &[(&str, &str)]) -> App {
    let app = spawn_role_with(env, "run", &stack().redis_url, &unique("la_proto"), extra);
    app.wait_listening().await;
    app
}

async fn rows(client: &tokio_postgres::Client, sql: &str) -> Vec<tokio_postgres::Row> {
    client.query(sql, &[]).await.expect(sql)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

async fn post(port: u16, path: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
    http(port, "POST", path, body, headers).await.unwrap_or_else(|| panic!("POST {path} answered"))
}

fn error_code(body: &[u8]) -> String {
    let value: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not a JSON error body: {}", String::from_utf8_lossy(body)));
    assert!(value["message"].as_str().is_some_and(|m| !m.is_empty()), "{value}");
    value["error"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn telemetrygen_over_otlp_http_stores_every_record_mapped() {
    let env = IngestEnv::create(1).await;
    let app = start(&env, &[]).await;
    let n = 300;
    let endpoint = format!("127.0.0.1:{}", app.port);
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let output = tokio::process::Command::new(tool("telemetrygen"))
        .args(["logs", "--otlp-http", "--otlp-insecure", "--otlp-endpoint", &endpoint])
        .args(["--logs", &n.to_string(), "--workers", "1", "--rate", "0", "--service", "checkout"])
        .args(["--body", "card declined: upstream timeout", "--severity-text", "Error", "--severity-number", "17"])
        .args(["--telemetry-attributes", "order=\"o-17\"", "--otlp-attributes", "deployment=\"prod\""])
        .output()
        .await
        .expect("telemetrygen runs");
    assert!(output.status.success(), "telemetrygen: {}", String::from_utf8_lossy(&output.stderr));
    let client = env.db.client().await;
    env.wait_stored(&client, n, Duration::from_secs(60)).await;
    let found = rows(&client, "SELECT service, level, message, ts, attrs FROM logs ORDER BY ts").await;
    assert_eq!(found.len(), n as usize, "exactly the records sent");
    assert_telemetrygen_rows(
        &found,
        ("checkout", 4, "card declined: upstream timeout"),
        "o-17",
        ("deployment", "prod"),
        before,
    );
    drop(client);
    drop(app);
    env.db.drop_db().await;
}

fn otlp_json(records: Value) -> Value {
    json!({ "resourceLogs": [{
        "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": "billing" } }] },
        "scopeLogs": [{ "scope": { "name": "test" }, "logRecords": records }]
    }]})
}

#[tokio::test]
async fn otlp_json_and_gzip_are_stored_and_bad_records_come_back_as_partial_success() {
    let env = IngestEnv::create(1).await;
    let app = start(&env, &[]).await;
    let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    let good = json!({ "timeUnixNano": now_ns.to_string(), "severityNumber": 13, "body": { "stringValue": "disk almost full" },
                       "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174" });
    let too_old = json!({ "timeUnixNano": "1000000000000000000", "body": { "stringValue": "ancient" } });
    let bad_span = json!({ "body": { "stringValue": "x" }, "spanId": "AAEC" });
    let body = serde_json::to_vec(&otlp_json(json!([good, too_old, bad_span]))).unwrap();
    let (status, raw) =
        post(app.port, "/v1/logs", &gzip(&body), &[("Content-Type", "application/json"), ("Content-Encoding", "gzip")])
            .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&raw));
    let answer: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(answer["partialSuccess"]["rejectedLogRecords"], "2", "{answer}");
    let message = answer["partialSuccess"]["errorMessage"].as_str().unwrap();
    assert!(message.contains("ts_out_of_range") && message.contains("span_id"), "{message}");

    let client = env.db.client().await;
    env.wait_stored(&client, 1, Duration::from_secs(60)).await;
    let found = rows(&client, "SELECT service, level, message, attrs FROM logs").await;
    assert_eq!(found.len(), 1);
    let (service, level, message): (String, i16, String) = (found[0].get(0), found[0].get(1), found[0].get(2));
    assert_eq!((service.as_str(), level, message.as_str()), ("billing", 3, "disk almost full"));
    let attrs: Value = found[0].get(3);
    assert_eq!(attrs["trace_id"], "5b8efff798038103d269b633813fc60c");
    assert_eq!(attrs["span_id"], "eee19b7ec3c1b174");
    let dead = rows(&client, "SELECT reason FROM log_rejects").await;
    assert_eq!(dead.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>(), ["ts_out_of_range"]);
    drop(client);
    drop(app);
    env.db.drop_db().await;
}

fn loki_protobuf(streams: Vec<logproto::StreamAdapter>) -> Vec<u8> {
    let raw = logproto::PushRequest { streams }.encode_to_vec();
    snap::raw::Encoder::new().compress_vec(&raw).unwrap()
}

#[tokio::test]
async fn loki_pushes_as_json_and_as_protobuf_snappy_are_stored_with_labels_and_metadata() {
    let env = IngestEnv::create(1).await;
    let app = start(&env, &[]).await;
    let now = chrono::Utc::now();
    let ns = now.timestamp_nanos_opt().unwrap();
    let json_push = json!({ "streams": [{ "stream": { "app": "shop", "env": "prod", "level": "warn" },
        "values": [[ns.to_string(), "cart slow"], [(ns + 1).to_string(), "cart slower", { "trace_id": "t-1" }]] }] });
    let (status, raw) =
        post(app.port, "/loki/api/v1/push", json_push.to_string().as_bytes(), &[("Content-Type", "application/json")])
            .await;
    assert_eq!(status, 204, "{}", String::from_utf8_lossy(&raw));

    let entry = |line: &str, nanos: i32| logproto::EntryAdapter {
        timestamp: Some(prost_types::Timestamp { seconds: now.timestamp(), nanos }),
        line: line.into(),
        structured_metadata: vec![logproto::LabelPairAdapter { name: "pod".into(), value: "p-9".into() }],
    };
    let body = loki_protobuf(vec![logproto::StreamAdapter {
        labels: r#"{service_name="payments", detected_level="unknown", region="eu"}"#.into(),
        entries: vec![entry("ERROR charge failed", 123_456_789), entry("charge retried", 5)],
        hash: 0,
    }]);
    let (status, raw) = post(app.port, "/loki/api/v1/push", &body, &[("Content-Type", "application/x-protobuf")]).await;
    assert_eq!(status, 204, "{}", String::from_utf8_lossy(&raw));

    let client = env.db.client().await;
    env.wait_stored(&client, 4, Duration::from_secs(60)).await;
    let found = rows(&client, "SELECT service, level, message, attrs, ts FROM logs ORDER BY service, message").await;
    let got: Vec<(String, i16, String, Value)> =
        found.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    let metadata = json!({ "pod": "p-9" });
    let labels = json!({ "detected_level": "unknown", "region": "eu" });
    assert_eq!(
        got,
        vec![
            (
                "payments".into(),
                4,
                "ERROR charge failed".into(),
                json!({ "labels": labels, "structured_metadata": metadata })
            ),
            (
                "payments".into(),
                2,
                "charge retried".into(),
                json!({ "labels": labels, "structured_metadata": metadata })
            ),
            ("shop".into(), 3, "cart slow".into(), json!({ "labels": { "env": "prod" } })),
            (
                "shop".into(),
                3,
                "cart slower".into(),
                json!({ "labels": { "env": "prod" }, "structured_metadata": { "trace_id": "t-1" } })
            ),
        ]
    );
    let ts: chrono::DateTime<chrono::Utc> = found[0].get(4);
    assert_eq!(ts.timestamp_subsec_nanos(), 123_456_000, "the entry's nanoseconds, to the µs kept");

    // A malformed push stores nothing at all, not even its good entries.
    let half_bad = json!({ "streams": [{ "stream": { "app": "shop" },
        "values": [[ns.to_string(), "fine"], ["yesterday", "not a timestamp"]] }] });
    let (status, raw) =
        post(app.port, "/loki/api/v1/push", half_bad.to_string().as_bytes(), &[("Content-Type", "application/json")])
            .await;
    assert_eq!((status, error_code(&raw).as_str()), (400, "bad_push"));
    let bad_labels = loki_protobuf(vec![logproto::StreamAdapter {
        labels: "app=shop".into(),
        entries: vec![entry("fine", 0)],
        hash: 0,
    }]);
    let (status, raw) =
        post(app.port, "/loki/api/v1/push", &bad_labels, &[("Content-Type", "application/x-protobuf")]).await;
    assert_eq!((status, error_code(&raw).as_str()), (400, "bad_push"));
    // A marker through the same path: once it is stored, anything of the bad pushes would be too.
    let marker = json!({ "streams": [{ "stream": { "app": "marker" }, "values": [[ns.to_string(), "marker"]] }] });
    let (status, _) =
        post(app.port, "/loki/api/v1/push", marker.to_string().as_bytes(), &[("Content-Type", "application/json")])
            .await;
    assert_eq!(status, 204);
    env.wait_stored(&client, 5, Duration::from_secs(60)).await;
    let all = rows(&client, "SELECT message FROM logs WHERE service = 'shop' AND message = 'fine'").await;
    assert!(all.is_empty(), "nothing of a malformed push is stored");
    drop(client);
    drop(app);
    env.db.drop_db().await;
}

#[tokio::test]
async fn bad_bodies_on_every_endpoint_get_a_clear_4xx() {
    let env = IngestEnv::create(1).await;
    let limit = 64 * 1024;
    let app = start(&env, &[("INGEST_MAX_BODY_BYTES", &limit.to_string())]).await;
    let protobuf = [("Content-Type", "application/x-protobuf")];
    let json_type = [("Content-Type", "application/json")];

    // Truncated protobuf: a valid request cut short.
    let request = opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest {
        resource_logs: vec![opentelemetry_proto::tonic::logs::v1::ResourceLogs {
            resource: None,
            scope_logs: vec![opentelemetry_proto::tonic::logs::v1::ScopeLogs {
                scope: None,
                log_records: vec![opentelemetry_proto::tonic::logs::v1::LogRecord {
                    severity_text: "info".into(),
                    ..Default::default()
                }],
                schema_url: "https://example.invalid/schema".into(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec();
    let (status, raw) = post(app.port, "/v1/logs", &request[..request.len() - 3], &protobuf).await;
    assert_eq!((status, error_code(&raw).as_str()), (400, "bad_protobuf"));
    let loki = logproto::PushRequest {
        streams: vec![logproto::StreamAdapter { labels: "{a=\"b\"}".into(), entries: vec![], hash: 7 }],
    }
    .encode_to_vec();
    let truncated = snap::raw::Encoder::new().compress_vec(&loki[..loki.len() - 2]).unwrap();
    let (status, raw) = post(app.port, "/loki/api/v1/push", &truncated, &protobuf).await;
    assert_eq!((status, error_code(&raw).as_str()), (400, "bad_push"));
    let (status, raw) = post(app.port, "/loki/api/v1/push", &loki, &protobuf).await;
    assert_eq!((status, error_code(&raw).as_str()), (400, "bad_push"), "protobuf without snappy");
    let (status, raw) = post(app.port, "/v1/logs", b"{\"resourceLogs\": [", &json_type).await;
    assert_eq!((status, error_code(&raw).as_str()), (400, "bad_json"));

    // Wrong content type.
    for path in ["/v1/logs", "/loki/api/v1/push"] {
        let (status, raw) = post(app.port, path, b"hello", &[("Content-Type", "text/plain")]).await;
        assert_eq!((status, error_code(&raw).as_str()), (415, "unsupported_media_type"), "{path}");
    }
    let (status, raw) =
        post(app.port, "/v1/logs", b"x", &[("Content-Type", "application/json"), ("Content-Encoding", "br")]).await;
    assert_eq!((status, error_code(&raw).as_str()), (415, "unsupported_encoding"));

    // Oversize as sent.
    let big = vec![b' '; limit + 1];
    for (path, headers) in [("/v1/logs", &json_type), ("/loki/api/v1/push", &json_type)] {
        let (status, raw) = post(app.port, path, &big, headers).await;
        assert_eq!((status, error_code(&raw).as_str()), (413, "body_too_large"), "{path}");
    }
    // A gzip bomb: 32 MiB of zeros in about 32 KiB, under the limit as sent and far over it inflated.
    let bomb = gzip(&vec![0u8; 32 * 1024 * 1024]);
    assert!(bomb.len() < limit, "the bomb is {} bytes", bomb.len());
    let gz = [("Content-Type", "application/json"), ("Content-Encoding", "gzip")];
    for path in ["/v1/logs", "/loki/api/v1/push"] {
        let (status, raw) = post(app.port, path, &bomb, &gz).await;
        assert_eq!((status, error_code(&raw).as_str()), (413, "body_too_large"), "{path}");
    }
    // A snappy block that claims to inflate past the limit.
    let snappy_bomb = snap::raw::Encoder::new().compress_vec(&vec![b'a'; 1024 * 1024]).unwrap();
    assert!(snappy_bomb.len() < limit);
    let (status, raw) = post(app.port, "/loki/api/v1/push", &snappy_bomb, &protobuf).await;
    assert_eq!((status, error_code(&raw).as_str()), (413, "body_too_large"));
    let peak = {
        let status = std::fs::read_to_string(format!("/proc/{}/status", app.process.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap().to_owned();
        line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap()
    };
    assert!(peak < 256 * 1024, "peak RSS {} MiB: the bombs were not inflated", peak / 1024);

    let client = env.db.client().await;
    assert_eq!(rows(&client, "SELECT 1 FROM logs").await.len(), 0);
    drop(client);
    drop(app);
    env.db.drop_db().await;
}
