//! `log-analyzer generate --to http://…` against a real `run` process: what was sent is exactly what
//! the server stored plus what it rejected.

use std::time::Duration;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::helpers::{eventually, free_port, http, stack, unique, ChildProcess};
use crate::ingest::IngestEnv;

/// Waits for a child to exit; its status and log.
async fn finished(child: &mut ChildProcess, timeout: Duration) -> (std::process::ExitStatus, String) {
    let status = eventually("generate to exit", timeout, || {
        let status = child.child.try_wait().expect("try_wait");
        async move { status }
    })
    .await;
    (status, std::fs::read_to_string(&child.log_path).unwrap_or_default())
}

/// The `key=N` figure of the generator's summary line.
fn figure(log: &str, key: &str) -> u64 {
    let summary =
        log.lines().find(|l| l.starts_with("generate: done")).unwrap_or_else(|| panic!("no summary in {log}"));
    let value = summary.split_whitespace().find_map(|w| w.strip_prefix(&format!("{key}="))).expect("figure");
    value.parse().expect("a number")
}

#[tokio::test]
async fn generate_to_http_delivers_every_event_as_a_row_or_a_reject_and_sends_the_token() {
    const COUNT: u64 = 3_000;
    const MALFORMED: u64 = 150; // 5 %: exactly floor(COUNT × ratio)
    let env = IngestEnv::create(2).await;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let prefix = unique("la_gen");
    let redis = stack().redis_url;
    let _server = ChildProcess::spawn(
        &["run"],
        &[
            ("DATABASE_URL", env.db.url.as_str()),
            ("KAFKA_BROKERS", &env.brokers),
            ("KAFKA_TOPIC", &env.topic),
            ("KAFKA_GROUP", &env.group),
            ("REDIS_URL", &redis),
            ("REDIS_PREFIX", &prefix),
            ("HTTP_ADDR", &addr),
            ("ADMIN_ADDR", "127.0.0.1:0"),
            ("JWT_SECRET", "generate-secret-at-least-32-bytes-long"),
            ("JWT_AUDIENCE", "log-analyzer"),
        ],
    );
    eventually("HTTP listening", Duration::from_secs(60), || async {
        http(port, "GET", "/healthz", b"", &[]).await.filter(|(s, _)| *s == 200).map(|_| ())
    })
    .await;
    let url = format!("http://{addr}");
    let generate = |token: Option<&str>| {
        let mut args = vec!["generate", "--to", &url, "--rate", "0", "--seed", "5", "--batch", "250"];
        args.extend(["--count", "3000", "--malformed-ratio", "0.05", "--in-flight", "3"]);
        if let Some(t) = token {
            args.extend(["--token", t]);
        }
        ChildProcess::spawn(&args, &[("KAFKA_TOPIC", &env.topic)])
    };

    // Without the token the server refuses every batch: the run says so and fails.
    let mut refused = generate(None);
    let (status, log) = finished(&mut refused, Duration::from_secs(60)).await;
    assert!(!status.success(), "{log}");
    assert_eq!(figure(&log, "failed"), COUNT, "{log}");
    assert!(log.contains("401"), "{log}");

    let claims = json!({"exp": chrono::Utc::now().timestamp() + 600, "aud": "log-analyzer"});
    let token = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(b"generate-secret-at-least-32-bytes-long"),
    )
    .unwrap();
    let mut run = generate(Some(&token));
    let (status, log) = finished(&mut run, Duration::from_secs(120)).await;
    assert!(status.success(), "{log}");
    assert_eq!(
        (figure(&log, "sent"), figure(&log, "acked"), figure(&log, "rejected"), figure(&log, "failed")),
        (COUNT, COUNT - MALFORMED, MALFORMED, 0),
        "{log}"
    );

    let client = env.db.client().await;
    env.wait_stored(&client, (COUNT - MALFORMED) as i64, Duration::from_secs(60)).await;
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) as u64 }
    };
    let stored = count("SELECT count(*) FROM logs").await;
    let rejects = count("SELECT count(*) FROM log_rejects WHERE source = 'http'").await;
    assert_eq!((stored, rejects), (COUNT - MALFORMED, MALFORMED));
    assert_eq!(stored + rejects, COUNT);
    drop(client);
    env.db.drop_db().await;
}
