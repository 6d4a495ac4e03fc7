//! The gRPC listener end to end (issue #17): OTLP/gRPC from telemetrygen, and the loganalyzer.v1
//! API through grpcurl and server reflection (both installed by scripts/tools.sh), against a real
//! `run` (Kafka → PostgreSQL) or `api`.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::api::{spawn_role_with, App};
use crate::helpers::*;
use crate::ingest::IngestEnv;

struct GrpcApp {
    app: App,
    grpc_port: u16,
}

async fn start(env: &IngestEnv, role: &str, extra: &[(&str, &str)]) -> GrpcApp {
    let grpc_port = free_port();
    let grpc_addr = format!("127.0.0.1:{grpc_port}");
    let mut vars = vec![("GRPC_ADDR", grpc_addr.as_str())];
    vars.extend_from_slice(extra);
    let app = spawn_role_with(env, role, &stack().redis_url, &unique("la_grpc"), &vars);
    app.wait_listening().await;
    GrpcApp { app, grpc_port }
}

/// grpcurl's flags, the address, then `after` (a method, or `list`/`describe …`), with `input` on
/// stdin; what it printed: (succeeded, stdout, stderr).
async fn grpcurl(port: u16, flags: &[&str], after: &[&str], input: Option<&str>) -> (bool, String, String) {
    let mut command = tokio::process::Command::new(tool("grpcurl"));
    command.args(["-plaintext", "-emit-defaults"]).args(flags).arg(format!("127.0.0.1:{port}")).args(after);
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(text) = input {
        stdin.write_all(text.as_bytes()).await.unwrap();
    }
    drop(stdin);
    let output = child.wait_with_output().await.expect("grpcurl runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// grpcurl calling `method`.
async fn grpcurl_method(port: u16, flags: &[&str], method: &str, input: Option<&str>) -> (bool, String, String) {
    grpcurl(port, flags, &[method], input).await
}

/// A unary call that must succeed; its reply as JSON.
async fn call(port: u16, method: &str, request: Value, headers: &[&str]) -> Value {
    let body = request.to_string();
    let mut args: Vec<&str> = Vec::new();
    for h in headers {
        args.extend(["-H", h]);
    }
    args.extend(["-d", &body]);
    let (ok, out, err) = grpcurl_method(port, &args, method, None).await;
    assert!(ok, "{method}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{method} printed no JSON ({e}): {out}"))
}

/// The protobuf JSON mapping back to REST's shape: snake_case names, 64-bit integers as numbers;
/// `freshness` dropped (the watermark and the lag move between two calls).
fn rest_shape(value: &Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .filter(|(k, _)| k.as_str() != "freshness")
                .map(|(k, v)| (snake_case(k), rest_shape(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(rest_shape).collect()),
        Value::String(s) => s.parse::<u64>().map(Value::from).unwrap_or_else(|_| value.clone()),
        Value::Number(n) => {
            n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map_or(value.clone(), |f| json!(f as u64))
        }
        other => other.clone(),
    }
}

fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

async fn rest(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let (status, body) = http(port, "GET", path, b"", headers).await.unwrap_or_else(|| panic!("GET {path} answered"));
    (status, serde_json::from_slice(&body).unwrap_or_else(|_| panic!("{path}: {}", String::from_utf8_lossy(&body))))
}

#[tokio::test]
async fn telemetrygen_over_otlp_grpc_stores_every_record_mapped() {
    let env = IngestEnv::create(1).await;
    let app = start(&env, "run", &[]).await;
    let n = 300;
    let endpoint = format!("127.0.0.1:{}", app.grpc_port);
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let output = tokio::process::Command::new(tool("telemetrygen"))
        .args(["logs", "--otlp-insecure", "--otlp-endpoint", &endpoint])
        .args(["--logs", &n.to_string(), "--workers", "1", "--rate", "0", "--service", "payments"])
        .args(["--body", "charge refused: upstream timeout", "--severity-text", "Warn", "--severity-number", "13"])
        .args(["--telemetry-attributes", "order=\"o-42\"", "--otlp-attributes", "region=\"eu\""])
        .output()
        .await
        .expect("telemetrygen runs");
    assert!(output.status.success(), "telemetrygen: {}", String::from_utf8_lossy(&output.stderr));
    let client = env.db.client().await;
    env.wait_stored(&client, n, Duration::from_secs(60)).await;
    let found = client.query("SELECT service, level, message, ts, attrs FROM logs", &[]).await.unwrap();
    assert_eq!(found.len(), n as usize, "exactly the records sent");
    assert_telemetrygen_rows(
        &found,
        ("payments", 3, "charge refused: upstream timeout"),
        "o-42",
        ("region", "eu"),
        before,
    );
    drop(client);
    drop(app);
    env.db.drop_db().await;
}

#[tokio::test]
async fn grpcurl_sees_the_api_by_reflection_push_lands_once_and_stats_equal_rest() {
    let env = IngestEnv::create(1).await;
    let app = start(&env, "run", &[]).await;
    let port = app.grpc_port;

    let (ok, listed, err) = grpcurl(port, &[], &["list"], None).await;
    assert!(ok, "grpcurl list: {err}");
    for service in ["loganalyzer.v1.Stats", "loganalyzer.v1.Ingest"] {
        assert!(listed.lines().any(|l| l.trim() == service), "{service} not listed: {listed}");
    }
    let (ok, described, err) = grpcurl(port, &[], &["describe", "loganalyzer.v1.Stats"], None).await;
    assert!(ok && described.contains("TopKeywords"), "describe: {described}{err}");

    // Known events, a second apart, in two messages of one stream; one line that is no event.
    let now = chrono::Utc::now().timestamp();
    let line = |i: i64, service: &str, level: &str, text: &str| {
        let user = format!("u{}", i % 3);
        json!({ "ts": now - 30 + i, "service": service, "level": level, "message": text, "user_id": user }).to_string()
    };
    let first: Vec<String> =
        (0..6).map(|i| line(i, "web", if i % 2 == 0 { "error" } else { "info" }, "db timeout after retry")).collect();
    let mut second: Vec<String> =
        (6..10).map(|i| line(i, "auth", if i == 6 { "error" } else { "warn" }, "token denied")).collect();
    second.push(json!({ "service": "auth", "level": "info" }).to_string());
    let stream = format!("{}\n{}", json!({ "lines": first }), json!({ "lines": second, "service": "fallback" }));
    let (ok, out, err) = grpcurl_method(port, &["-d", "@"], "loganalyzer.v1.Ingest/Push", Some(&stream)).await;
    assert!(ok, "Push: {err}");
    let reply: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rest_shape(&reply["accepted"]), json!(10), "{reply}");
    assert_eq!(rest_shape(&reply["rejected"]), json!(1), "{reply}");
    assert_eq!(rest_shape(&reply["errors"][0]["line"]), json!(11), "positions count the whole stream: {reply}");

    let client = env.db.client().await;
    env.wait_stored(&client, 10, Duration::from_secs(60)).await;
    let stored: i64 = client.query_one("SELECT count(DISTINCT ts) FROM logs", &[]).await.unwrap().get(0);
    assert_eq!(stored, 10, "every pushed line once");
    let dead: i64 = client.query_one("SELECT count(*) FROM log_rejects", &[]).await.unwrap().get(0);
    assert_eq!(dead, 1);

    // The same window and `at` on both listeners, once REST counts every event.
    let at = (now + 1).to_string();
    let http_port = app.app.port;
    eventually("REST to count the pushed events", Duration::from_secs(60), || {
        let at = at.clone();
        async move {
            let (_, v) = rest(http_port, &format!("/stats/errors?window=1h&at={at}"), &[]).await;
            (v["total"] == 10).then_some(())
        }
    })
    .await;
    let cases = [
        (
            "loganalyzer.v1.Stats/Errors",
            json!({ "window": "1h", "at": at }),
            format!("/stats/errors?window=1h&at={at}"),
        ),
        (
            "loganalyzer.v1.Stats/Errors",
            json!({ "window": "5m", "at": at, "service": "web" }),
            format!("/stats/errors?window=5m&at={at}&service=web"),
        ),
        (
            "loganalyzer.v1.Stats/Keywords",
            json!({ "q": "timeout", "window": "1h", "at": at }),
            format!("/stats/keywords?q=timeout&window=1h&at={at}"),
        ),
        (
            "loganalyzer.v1.Stats/TopKeywords",
            json!({ "window": "1h", "at": at, "limit": 3 }),
            format!("/stats/keywords/top?window=1h&at={at}&limit=3"),
        ),
    ];
    for (method, request, path) in cases {
        let (status, mut expected) = rest(http_port, &path, &[]).await;
        assert_eq!(status, 200, "{path}: {expected}");
        expected.as_object_mut().unwrap().remove("freshness");
        let answer = rest_shape(&call(port, method, request, &[]).await);
        assert_eq!(answer, rest_shape(&expected), "{method} differs from GET {path}");
    }
    let (_, errors) = rest(http_port, &format!("/stats/errors?window=1h&at={at}"), &[]).await;
    assert_eq!((errors["errors"].clone(), errors["total"].clone()), (json!(4), json!(10)), "{errors}");

    // The day's summary, once the job has run: the same answer; before, the same NOT_FOUND.
    let day = chrono::DateTime::from_timestamp(now - 30, 0).unwrap().date_naive().to_string();
    let summary = json!({ "date": day }).to_string();
    let (ok, _, err) = grpcurl(port, &["-d", &summary], &["loganalyzer.v1.Stats/Summary"], None).await;
    let (status, not_found) = rest(http_port, &format!("/stats/summary?date={day}"), &[]).await;
    assert_eq!(status, 404, "{not_found}");
    assert!(!ok && err.contains("Code: NotFound") && err.contains(not_found["message"].as_str().unwrap()), "{err}");
    let mut job = ChildProcess::spawn(&["summary", "--date", &day], &[("DATABASE_URL", &env.db.url)]);
    let exit = eventually("the summary job to finish", Duration::from_secs(60), || {
        let exit = job.child.try_wait().expect("try_wait");
        async move { exit }
    })
    .await;
    assert!(exit.success(), "{}", std::fs::read_to_string(&job.log_path).unwrap_or_default());
    let (status, expected) = rest(http_port, &format!("/stats/summary?date={day}"), &[]).await;
    assert_eq!(status, 200, "{expected}");
    assert_eq!(expected["users"].as_array().map(Vec::len), Some(3), "{expected}");
    let answer = rest_shape(&call(port, "loganalyzer.v1.Stats/Summary", json!({ "date": day }), &[]).await);
    assert_eq!(answer, rest_shape(&expected), "Summary differs from GET /stats/summary");

    // A bad window: INVALID_ARGUMENT with REST's message.
    let (status, refusal) = rest(http_port, "/stats/errors?window=7x", &[]).await;
    assert_eq!(status, 400);
    let (ok, _, err) = grpcurl_method(port, &["-d", r#"{"window":"7x"}"#], "loganalyzer.v1.Stats/Errors", None).await;
    assert!(!ok && err.contains("Code: InvalidArgument"), "{err}");
    assert!(err.contains(refusal["message"].as_str().unwrap()), "{err} vs {refusal}");
    drop(client);
    drop(app);
    env.db.drop_db().await;
}

#[tokio::test]
async fn with_jwt_configured_a_call_without_a_token_is_unauthenticated() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let env = IngestEnv::create(1).await;
    let secret = "a-test-secret-of-at-least-32-bytes!!";
    let app = start(&env, "api", &[("JWT_SECRET", secret)]).await;
    let port = app.grpc_port;
    let request = r#"{"window":"1m"}"#;
    for (method, input) in
        [("loganalyzer.v1.Stats/Errors", None), ("loganalyzer.v1.Ingest/Push", Some(r#"{"lines":["x"]}"#))]
    {
        let args = if input.is_some() { ["-d", "@"] } else { ["-d", request] };
        let (ok, _, err) = grpcurl_method(port, &args, method, input).await;
        assert!(!ok && err.contains("Code: Unauthenticated"), "{method}: {err}");
    }
    let (ok, _, err) = grpcurl_method(
        port,
        &["-H", "authorization: Bearer not.a.token", "-d", request],
        "loganalyzer.v1.Stats/Errors",
        None,
    )
    .await;
    assert!(!ok && err.contains("Code: Unauthenticated") && err.contains("token refused"), "{err}");
    let exp = chrono::Utc::now().timestamp() + 600;
    let token =
        encode(&Header::default(), &json!({ "exp": exp }), &EncodingKey::from_secret(secret.as_bytes())).unwrap();
    let header = format!("authorization: Bearer {token}");
    let answer = call(port, "loganalyzer.v1.Stats/Errors", json!({ "window": "1m" }), &[&header]).await;
    assert_eq!(answer["window"], "1m", "{answer}");
    drop(app);
    env.db.drop_db().await;
}

#[tokio::test]
async fn rate_limit_rps_limits_grpc_calls_per_client_as_it_limits_http() {
    let env = IngestEnv::create(1).await;
    // One call a second, one at once: grpcurl's reflection call takes the token, so its method call
    // (or, a second later still within the burst, the next reflection) is refused.
    let app = start(&env, "api", &[("RATE_LIMIT_RPS", "1"), ("RATE_LIMIT_BURST", "1")]).await;
    let (ok, _, err) =
        grpcurl_method(app.grpc_port, &["-d", r#"{"window":"1m"}"#], "loganalyzer.v1.Stats/Errors", None).await;
    assert!(!ok, "a second call within the same second passed the limit");
    assert!(err.contains("ResourceExhausted") && err.contains("too many requests from 127.0.0.1"), "{err}");
    drop(app);
    env.db.drop_db().await;
}

/// One gRPC call by hand over HTTP/2 (curl), for bodies no client library would send: the
/// `grpc-status` the server answered, from its headers or trailers.
async fn raw_call(port: u16, path: &str, message: &[u8]) -> String {
    let mut frame = vec![0];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    let file = std::env::temp_dir().join(unique("grpc_frame"));
    std::fs::write(&file, &frame).unwrap();
    let mut command = tokio::process::Command::new("curl");
    command.args(["-sS", "--http2-prior-knowledge", "-X", "POST", "-o", "/dev/null", "-D", "-"]);
    command.args(["-H", "content-type: application/grpc", "-H", "te: trailers"]);
    let output = command
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .await
        .expect("curl runs");
    std::fs::remove_file(&file).ok();
    let dump = String::from_utf8_lossy(&output.stdout).into_owned();
    let status = dump
        .lines()
        .find_map(|l| l.strip_prefix("grpc-status:").map(|s| s.trim().to_owned()))
        .unwrap_or_else(|| panic!("no grpc-status in: {dump}{}", String::from_utf8_lossy(&output.stderr)));
    format!("{status} {}", dump.lines().find_map(|l| l.strip_prefix("grpc-message:")).unwrap_or("").trim())
}

#[tokio::test]
async fn bad_otlp_bodies_get_clear_statuses_and_long_pushes_land_once_in_body_sized_batches() {
    let env = IngestEnv::create(1).await;
    let app = start(&env, "run", &[("INGEST_MAX_BODY_BYTES", "4096")]).await;
    let port = app.grpc_port;
    let export = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
    // resource_logs declares 50 bytes and has 3.
    let truncated = raw_call(port, export, &[0x0a, 0x32, 0x01, 0x02, 0x03]).await;
    assert!(truncated.starts_with("3 "), "truncated protobuf is INVALID_ARGUMENT: {truncated}");
    let oversize = raw_call(port, export, &vec![0u8; 5000]).await;
    // tonic's code for a message over the limit, before anything is decoded.
    assert!(oversize.starts_with("11 ") && oversize.contains("4096"), "over INGEST_MAX_BODY_BYTES: {oversize}");

    // 200 lines of ~80 bytes: several 4 KiB batches, each line once.
    let now = chrono::Utc::now().timestamp_millis();
    let lines: Vec<String> = (0..200)
        .map(|i| {
            json!({ "ts": now - 60_000 + i, "service": "batchy", "level": "info", "message": format!("line {i:04}") })
                .to_string()
        })
        .collect();
    let stream: Vec<String> = lines.chunks(7).map(|c| json!({ "lines": c }).to_string()).collect();
    let (ok, out, err) = grpcurl(port, &["-d", "@"], &["loganalyzer.v1.Ingest/Push"], Some(&stream.join("\n"))).await;
    assert!(ok, "Push: {err}");
    let reply: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((rest_shape(&reply["accepted"]), rest_shape(&reply["rejected"])), (json!(200), json!(0)), "{reply}");
    let client = env.db.client().await;
    env.wait_stored(&client, 200, Duration::from_secs(60)).await;
    let row = client.query_one("SELECT count(*), count(DISTINCT message) FROM logs", &[]).await.unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (200, 200));

    // A message over the limit is refused before it is read; a bad `service` is the client's error.
    let long = json!({ "lines": ["x".repeat(4097)] }).to_string();
    let (ok, _, err) = grpcurl(port, &["-d", "@"], &["loganalyzer.v1.Ingest/Push"], Some(&long)).await;
    assert!(!ok && err.contains("Code: OutOfRange"), "{err}");
    let bad_service = json!({ "lines": ["a"], "service": "tab\there" }).to_string();
    let (ok, _, err) = grpcurl(port, &["-d", "@"], &["loganalyzer.v1.Ingest/Push"], Some(&bad_service)).await;
    assert!(!ok && err.contains("Code: InvalidArgument") && err.contains("`service`"), "{err}");
    drop(client);
    drop(app);
    env.db.drop_db().await;
}
