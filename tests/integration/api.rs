//! The stats API against the real stack: every source (memory, Redis, PostgreSQL) gives the exact
//! answer computed here from the data sent, through scale-out and outages (the ground-truth grid of
//! both backends, with its restart, is in `ground_truth`).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::ground_truth::{assert_grid, pick, Truth, GRID_SERVICES};
use crate::helpers::*;
use crate::ingest::{dataset, IngestEnv};

/// A `log-analyzer run` or `api` child on its own port.
pub struct App {
    pub process: ChildProcess,
    pub port: u16,
    pub admin_port: u16,
}

pub fn spawn_role(env: &IngestEnv, role: &str, redis_url: &str, prefix: &str) -> App {
    spawn_role_with(env, role, redis_url, prefix, &[])
}

pub fn spawn_role_with(env: &IngestEnv, role: &str, redis_url: &str, prefix: &str, extra: &[(&str, &str)]) -> App {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let admin_port = free_port();
    let admin = format!("127.0.0.1:{admin_port}");
    let mut vars = vec![
        ("DATABASE_URL", env.db.url.as_str()),
        ("KAFKA_BROKERS", &env.brokers),
        ("KAFKA_TOPIC", &env.topic),
        ("KAFKA_GROUP", &env.group),
        ("REDIS_URL", redis_url),
        ("REDIS_PREFIX", prefix),
        ("HTTP_ADDR", &addr),
        ("ADMIN_ADDR", &admin),
    ];
    vars.extend_from_slice(extra);
    App { process: ChildProcess::spawn(&[role], &vars), port, admin_port }
}

impl App {
    pub async fn wait_memory_ready(&self) {
        let port = self.port;
        eventually("memory ready", Duration::from_secs(60), || async move {
            let (_, body) = http(port, "GET", "/readyz", b"", &[]).await?;
            let v: Value = serde_json::from_slice(&body).ok()?;
            (v["memory"] == "ready").then_some(())
        })
        .await;
    }

    pub async fn wait_listening(&self) {
        let port = self.port;
        eventually("HTTP listening", Duration::from_secs(30), || async move {
            http(port, "GET", "/healthz", b"", &[]).await.filter(|(s, _)| *s == 200).map(|_| ())
        })
        .await;
    }
}

#[tokio::test]
async fn two_ingest_processes_and_an_api_process_answer_exactly_from_redis() {
    let env = IngestEnv::create(4).await;
    let data = dataset(43, 12_000, 4, 0);
    let generated_at = chrono::Utc::now().timestamp();
    let truth = Truth::of(&data);
    let prefix = unique("la_scale");
    let redis = stack().redis_url;
    let ingest_a = spawn_role(&env, "ingest", &redis, &prefix);
    let ingest_b = spawn_role(&env, "ingest", &redis, &prefix);
    let api = spawn_role(&env, "api", &redis, &prefix);
    // Both must own partitions before the data flows, or one could take it all.
    for app in [&ingest_a, &ingest_b] {
        let admin = app.admin_port;
        eventually("owning partitions", Duration::from_secs(60), || async move {
            let (_, body) = http(admin, "GET", "/debug/actors", b"", &[]).await?;
            let v: Value = serde_json::from_slice(&body).ok()?;
            (!v["partitions"].as_array()?.is_empty()).then_some(())
        })
        .await;
    }
    produce_all(&producer(&env.brokers), &env.topic, &data.messages).await;
    let client = env.db.client().await;
    env.wait_stored(&client, data.messages.len() as i64, Duration::from_secs(120)).await;
    api.wait_listening().await;
    let at = generated_at + 1;
    let want = truth.errors(at, 1_800, None);
    let port = api.port;
    // Redis holds the sum of both processes' deltas once each has folded its last batch in.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, a) = get_json(port, &format!("/stats/errors?window=30m&at={at}&source=redis")).await;
        if s == 200 && pick(&a, &["total", "errors", "by_service"]) == want {
            break;
        }
        assert!(Instant::now() < deadline, "redis never caught up: {s} {a}\nwant {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_grid(api.port, &truth, &["redis"], &[at, generated_at - 600], &GRID_SERVICES[..3]).await;
    // Without a forced source the api process answers from Redis (it keeps no windows).
    let (_, answer) = get_json(api.port, &format!("/stats/errors?window=5m&at={}", generated_at - 900)).await;
    assert_eq!(answer["source"], "redis");
    let (status, _) = get_json(api.port, &format!("/stats/errors?window=5m&at={at}&source=memory")).await;
    assert_eq!(status, 503);
    for app in [&ingest_a, &ingest_b] {
        let log = std::fs::read_to_string(&app.process.log_path).unwrap();
        assert!(log.contains("partitions assigned"), "each ingest process took part");
    }
    drop(client);
    drop((ingest_a, ingest_b, api));
    env.db.drop_db().await;
}

#[tokio::test]
async fn outages_of_redis_or_postgres_change_the_source_not_the_answer() {
    let pg = OwnedPostgres::start();
    let redis = OwnedRedis::start();
    let env = IngestEnv::create_with_db(TestDatabase::create_on(&pg.admin_url()).await, 2).await;
    let data = dataset(47, 6_000, 2, 0);
    let generated_at = chrono::Utc::now().timestamp();
    let truth = Truth::of(&data);
    let prefix = unique("la_outage");
    let run = spawn_role(&env, "run", &redis.url(), &prefix);
    // A Redis timeout far above any PostgreSQL answer: a request that waited on the frozen Redis
    // stands out from CPU noise (other tests share the cores), so the bound below tests the breaker.
    let api = spawn_role_with(&env, "api", &redis.url(), &prefix, &[("REDIS_TIMEOUT_MS", "1500")]);
    produce_all(&producer(&env.brokers), &env.topic, &data.messages).await;
    {
        let client = env.db.client().await;
        env.wait_stored(&client, data.messages.len() as i64, Duration::from_secs(120)).await;
    }
    run.wait_memory_ready().await;
    api.wait_listening().await;
    let at = generated_at + 1;
    let want = truth.errors(at, 600, None);
    let (port, want2) = (api.port, want.clone());
    eventually("redis caught up", Duration::from_secs(30), || {
        let want = want2.clone();
        async move {
            let (s, a) = get_json(port, &format!("/stats/errors?window=10m&at={at}&source=redis")).await;
            (s == 200 && pick(&a, &["total", "errors", "by_service"]) == want).then_some(())
        }
    })
    .await;

    // Redis stops answering: the api process answers from PostgreSQL, exactly and quickly.
    redis.freeze();
    let mut latencies = Vec::new();
    for i in 0..100 {
        let to = at - (i % 20);
        let started = Instant::now();
        let (status, answer) = get_json(api.port, &format!("/stats/errors?window=10s&at={to}")).await;
        latencies.push(started.elapsed());
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["source"], "postgres");
        assert_eq!(pick(&answer, &["total", "errors", "by_service"]), truth.errors(to, 10, None));
    }
    latencies.sort();
    let p99 = latencies[98];
    // At most the first request waits the Redis timeout (it opens the breaker); the rest go straight
    // to PostgreSQL, in milliseconds when the cores are free (and well under the timeout when not).
    assert!(p99 < Duration::from_millis(500), "p99 with Redis down: {p99:?}; slowest: {:?}", &latencies[90..]);
    let (_, answer) = get_json(run.port, &format!("/stats/errors?window=10m&at={at}")).await;
    assert_eq!(
        (answer["source"].clone(), pick(&answer, &["total", "errors", "by_service"])),
        (json!("memory"), want.clone())
    );
    redis.thaw();
    let port = api.port;
    eventually("redis answering again", Duration::from_secs(10), || async move {
        let (s, _) = get_json(port, &format!("/stats/errors?window=10m&at={at}&source=redis")).await;
        (s == 200).then_some(())
    })
    .await;

    // PostgreSQL goes away: memory and Redis still answer, exactly.
    pg.halt();
    let (status, answer) = get_json(run.port, &format!("/stats/errors?window=10m&at={at}")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["source"].clone(), pick(&answer, &["total", "errors", "by_service"])),
        (json!("memory"), want.clone())
    );
    let (status, answer) = get_json(api.port, &format!("/stats/errors?window=10m&at={at}")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["source"].clone(), pick(&answer, &["total", "errors", "by_service"])), (json!("redis"), want));
    let (status, answer) = get_json(api.port, &format!("/stats/errors?window=10m&at={at}&source=postgres")).await;
    assert_eq!(status, 503, "{answer}");
    let (status, ready) = get_json(api.port, "/readyz").await;
    assert_eq!((status, ready["dependencies"]["postgres"].clone()), (503, json!("down")));
    pg.resume();
    drop((run, api));
}

#[tokio::test]
async fn post_ingest_queues_good_lines_and_reports_and_dead_letters_bad_ones() {
    let env = IngestEnv::create(1).await;
    let prefix = unique("la_post");
    let app = spawn_role(&env, "run", &stack().redis_url, &prefix);
    app.wait_listening().await;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let body = format!(
        "{{\"level\":\"info\",\"service\":\"web\",\"message\":\"hello\",\"eid\":\"h1\",\"ts\":{now_ms}}}\n\
         {{not json at all\n\
         \n\
         {{\"level\":\"error\",\"service\":\"web\",\"message\":\"upstream timeout\",\"eid\":\"h2\"}}\n\
         {{\"level\":\"nope\",\"service\":\"web\",\"message\":\"x\"}}\n\
         {{\"level\":\"warn\",\"service\":\"web\",\"message\":\"last, no newline\",\"eid\":\"h3\"}}"
    );
    let (status, raw) =
        http(app.port, "POST", "/ingest", body.as_bytes(), &[("Content-Type", "application/x-ndjson")]).await.unwrap();
    let answer: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], 3);
    assert_eq!(answer["rejected"], 2);
    let lines: Vec<(u64, String)> = answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["reason"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(lines, vec![(2, "not_json".to_owned()), (5, "bad_level".to_owned())]);

    let client = env.db.client().await;
    env.wait_stored(&client, 3, Duration::from_secs(30)).await;
    let ids: Vec<String> = client
        .query("SELECT attrs->>'eid' FROM logs ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec!["h1", "h2", "h3"]);
    let dead: Vec<(String, String)> = client
        .query("SELECT reason, detail FROM log_rejects WHERE source = 'http' ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].0, "not_json");
    assert!(dead[0].1.starts_with("line 2:"), "{:?}", dead[0]);
    assert_eq!(dead[1].0, "bad_level");

    // A body over the cap is refused whole.
    let big = vec![b'x'; 9 * 1024 * 1024];
    let (status, _) = http(app.port, "POST", "/ingest", &big, &[]).await.unwrap();
    assert_eq!(status, 413);
    drop(client);
    drop(app);
    env.db.drop_db().await;
}

#[tokio::test]
async fn bad_inputs_get_a_400_with_a_message_never_a_500() {
    let env = IngestEnv::create(1).await;
    let app = spawn_role(&env, "api", &stack().redis_url, &unique("la_bad"));
    app.wait_listening().await;
    let long_service = "s".repeat(129);
    let cases: Vec<(String, &str)> = vec![
        ("/stats/errors?window=0s".into(), "bad_window"),
        ("/stats/errors?window=10".into(), "bad_window"),
        ("/stats/errors?window=1w".into(), "bad_window"),
        ("/stats/errors?window=31d".into(), "bad_window"),
        ("/stats/errors?window=-5s".into(), "bad_window"),
        ("/stats/errors?window=99999999999999999999s".into(), "bad_window"),
        ("/stats/errors?at=yesterday".into(), "bad_at"),
        ("/stats/errors?at=-3".into(), "bad_at"),
        (format!("/stats/errors?service={long_service}"), "bad_service"),
        ("/stats/errors?service=".into(), "bad_service"),
        ("/stats/errors?source=disk".into(), "bad_source"),
        ("/stats/errors?windw=10s".into(), "unknown_parameter"),
        ("/stats/errors?window=1s&window=2s".into(), "repeated_parameter"),
        ("/stats/keywords".into(), "missing_parameter"),
        ("/stats/keywords?q=a".into(), "bad_keyword"),
        ("/stats/keywords?q=two%20words".into(), "bad_keyword"),
        ("/stats/keywords?q=x%27%3BDROP%20TABLE%20logs".into(), "bad_keyword"),
        ("/stats/keywords/top?limit=0".into(), "bad_limit"),
        ("/stats/keywords/top?limit=101".into(), "bad_limit"),
        ("/stats/keywords/top?limit=many".into(), "bad_limit"),
        ("/stats/errors?window=%ZZ".into(), "bad_window"),
    ];
    for (path, code) in cases {
        let (status, answer) = get_json(app.port, &path).await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert_eq!(answer["error"], code, "{path}: {answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()), "{path}");
    }
    let (status, answer) = get_json(app.port, "/nowhere").await;
    assert_eq!((status, answer["error"].clone()), (404, json!("not_found")));
    drop(app);
    env.db.drop_db().await;
}

#[tokio::test]
async fn with_a_jwt_secret_stats_and_ingest_need_a_valid_token_and_health_stays_open() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let env = IngestEnv::create(1).await;
    let app = spawn_role_with(
        &env,
        "api",
        &stack().redis_url,
        &unique("la_jwt"),
        &[("JWT_SECRET", "integration-secret-at-least-32-bytes"), ("JWT_AUDIENCE", "log-analyzer")],
    );
    let port = app.port;
    app.wait_listening().await;
    let token = |secret: &str, alg: Algorithm, exp_in: i64| {
        let claims = json!({"exp": chrono::Utc::now().timestamp() + exp_in, "aud": "log-analyzer"});
        encode(&Header::new(alg), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    };
    let get = |bearer: Option<String>| async move {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.as_deref().map(|a| vec![("Authorization", a)]).unwrap_or_default();
        http(port, "GET", "/stats/errors?window=10s&source=postgres", b"", &headers).await.unwrap().0
    };
    assert_eq!(get(None).await, 401, "missing");
    assert_eq!(get(Some(token("integration-secret-at-least-32-bytes", Algorithm::HS256, -600))).await, 401, "expired");
    assert_eq!(get(Some(token("integration-secret-at-least-32-bytes", Algorithm::HS512, 600))).await, 401, "wrong alg");
    assert_eq!(get(Some(token("wrong-secret", Algorithm::HS256, 600))).await, 401, "wrong key");
    assert_eq!(get(Some(token("integration-secret-at-least-32-bytes", Algorithm::HS256, 600))).await, 200, "valid");
    let (status, _) = http(port, "POST", "/ingest", b"{}", &[]).await.unwrap();
    assert_eq!(status, 401);
    assert_eq!(http(port, "GET", "/healthz", b"", &[]).await.unwrap().0, 200);
    drop(app);
    env.db.drop_db().await;
}
