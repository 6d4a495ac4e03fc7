//! `/stats/errors`' `limit` and `other` through memory and PostgreSQL, its 400s, and the
//! MAX_LIVE_SERVICES policy: totals exact from memory, the detail of services over the cap from the
//! store, never a wrong answer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api::spawn_role_with;
use crate::helpers::*;
use crate::ingest::IngestEnv;

/// `(service, events, errors)`: events of one second, `at − 30`.
fn messages(second: i64, services: &[(String, u64, u64)]) -> Vec<Outgoing> {
    let mut out = Vec::new();
    for (service, events, errors) in services {
        for i in 0..*events {
            let level = if i < *errors { "error" } else { "info" };
            let payload =
                json!({"ts": second * 1_000, "level": level, "service": service, "message": "request served"});
            out.push(Outgoing {
                partition: 0,
                timestamp_ms: second * 1_000,
                payload: payload.to_string().into_bytes(),
            });
        }
    }
    out
}

/// What every source must answer: the `limit` services with most errors (then by name), the rest summed.
fn expected(services: &[(String, u64, u64)], limit: usize) -> Value {
    let mut sorted: Vec<&(String, u64, u64)> = services.iter().collect();
    sorted.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    let listed: Vec<Value> =
        sorted.iter().take(limit).map(|(s, t, e)| json!({"service": s, "total": t, "errors": e})).collect();
    let rest = &sorted[limit.min(sorted.len())..];
    json!({
        "total": services.iter().map(|s| s.1).sum::<u64>(),
        "errors": services.iter().map(|s| s.2).sum::<u64>(),
        "by_service": listed,
        "other": {"total": rest.iter().map(|s| s.1).sum::<u64>(), "errors": rest.iter().map(|s| s.2).sum::<u64>()},
    })
}

fn pick(answer: &Value) -> Value {
    json!({"total": answer["total"], "errors": answer["errors"], "by_service": answer["by_service"], "other": answer["other"]})
}

/// GETs `path` until it answers 200 from `source` with `want`.
async fn until_answer(port: u16, path: &str, source: &str, want: &Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, answer) = get_json(port, path).await;
        if status == 200 && answer["source"] == source && &pick(&answer) == want {
            return;
        }
        assert!(Instant::now() < deadline, "{path}: {status} {answer}\nwant from {source}: {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn limit_lists_the_most_errors_and_other_sums_the_rest_from_memory_and_postgres() {
    let env = IngestEnv::create(1).await;
    let app = spawn_role_with(&env, "run", "", &unique("la_card"), &[]);
    app.wait_memory_ready().await;
    let at = chrono::Utc::now().timestamp() + 1;
    // Errors 0..=7 over 8 services, two of them tied at 3 to check the tie-break by name.
    let mut services: Vec<(String, u64, u64)> = (0..8).map(|i| (format!("svc-{i}"), 10, i)).collect();
    services[2].2 = 3;
    produce_all(&producer(&env.brokers), &env.topic, &messages(at - 30, &services)).await;
    let client = env.db.client().await;
    env.wait_stored(&client, 80, Duration::from_secs(60)).await;
    for source in ["memory", "postgres"] {
        for limit in [1, 3, 8, 100] {
            let path = format!("/stats/errors?window=1m&at={at}&limit={limit}&source={source}");
            until_answer(app.port, &path, source, &expected(&services, limit)).await;
        }
        // The default is 100: every service listed, nothing left for `other`.
        let path = format!("/stats/errors?window=1m&at={at}&source={source}");
        until_answer(app.port, &path, source, &expected(&services, 100)).await;
    }
    let (_, answer) = get_json(app.port, &format!("/stats/errors?window=1m&at={at}&limit=3")).await;
    let names: Vec<&str> =
        answer["by_service"].as_array().unwrap().iter().map(|s| s["service"].as_str().unwrap()).collect();
    assert_eq!(names, ["svc-7", "svc-6", "svc-5"], "{answer}");

    for bad in ["0", "-1", "ten", "1001", "2.5", ""] {
        let (status, answer) = get_json(app.port, &format!("/stats/errors?window=1m&limit={bad}")).await;
        assert_eq!(status, 400, "limit={bad}: {answer}");
        assert_eq!(answer["error"], "bad_limit", "{answer}");
        assert!(answer["message"].as_str().is_some_and(|m| m.contains("1000")), "{answer}");
    }
    let (status, _) = get_json(app.port, "/stats/errors?window=1m&limit=1000").await;
    assert_eq!(status, 200);
    env.db.drop_db().await;
}

#[tokio::test]
async fn over_max_live_services_totals_come_from_memory_and_untracked_detail_from_postgres() {
    let env = IngestEnv::create(1).await;
    let app = spawn_role_with(&env, "run", "", &unique("la_card"), &[("MAX_LIVE_SERVICES", "2")]);
    app.wait_memory_ready().await;
    let at = chrono::Utc::now().timestamp() + 1;
    let producer = producer(&env.brokers);
    let client = env.db.client().await;
    // "loud" comes first and alone, so it has a place; then 20 quiet services share the other one.
    let loud = vec![("loud".to_owned(), 60, 50)];
    produce_all(&producer, &env.topic, &messages(at - 40, &loud)).await;
    env.wait_stored(&client, 60, Duration::from_secs(60)).await;
    let quiet: Vec<(String, u64, u64)> = (0..20).map(|i| (format!("quiet-{i:02}"), 3, i % 2)).collect();
    produce_all(&producer, &env.topic, &messages(at - 30, &quiet)).await;
    env.wait_stored(&client, 120, Duration::from_secs(60)).await;
    let all: Vec<(String, u64, u64)> = loud.iter().chain(&quiet).cloned().collect();

    // The loud service's 50 errors beat every untracked error together (10): memory lists it.
    until_answer(app.port, &format!("/stats/errors?window=1m&at={at}&limit=1"), "memory", &expected(&all, 1)).await;
    // Listing 100 needs the untracked services' detail: PostgreSQL answers, exactly.
    let (status, answer) = get_json(app.port, &format!("/stats/errors?window=1m&at={at}")).await;
    assert_eq!((status, &answer["source"]), (200, &json!("postgres")), "{answer}");
    assert_eq!(pick(&answer), expected(&all, 100));
    let (status, answer) = get_json(app.port, &format!("/stats/errors?window=1m&at={at}&source=memory")).await;
    assert_eq!(status, 503, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("MAX_LIVE_SERVICES"), "{answer}");

    // Each quiet service's own counts are exact, whichever source gives them; most are untracked.
    let mut sources: BTreeMap<String, usize> = BTreeMap::new();
    for (service, events, errors) in &quiet {
        let (status, answer) = get_json(app.port, &format!("/stats/errors?window=1m&at={at}&service={service}")).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!((answer["total"].as_u64(), answer["errors"].as_u64()), (Some(*events), Some(*errors)), "{answer}");
        *sources.entry(answer["source"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    assert!(sources.get("postgres").is_some_and(|n| *n >= 19), "{sources:?}");
    env.db.drop_db().await;
}

/// Services of the hour in `many_services_over_an_hour…`, and its rows (one SQL statement).
const HOUR_SERVICES: i64 = 20_000;
const HOUR_ROWS: i64 = 120_000;

/// An hour of 20k services (issue #16: with 100k, the bench's answers never came): the default
/// listing is exact against a direct SQL count and comes within a generous bound, and Redis,
/// whose buckets hold the same events, refuses to sum a window that large instead of stalling
/// (an hour of 100k services held Redis 4.6 s per request) unless allowed to, and then agrees.
#[actix_rt::test]
async fn many_services_over_an_hour_are_ranked_exactly_and_in_time_and_redis_is_not_stalled() {
    use actors::ports::{WindowAnswer, WindowQuery, WindowQuestion};
    use actors::windows::{BucketDelta, Counts, KeywordSet, WindowRange};
    use log_analyzer::cache::answers::RedisBuckets;
    use log_analyzer::cache::RedisCache;
    use std::sync::Arc;

    let env = IngestEnv::create(1).await;
    let client = env.db.client().await;
    let at = chrono::Utc::now().timestamp();
    // Service i % 20k, six events each, spread over every second of [at − 3600, at); errors vary
    // per service (0 to 6) so the ranking and its ties are non-trivial.
    client
        .execute(
            "INSERT INTO logs (ts, level, service, message, tokens, topic, \"partition\", \"offset\") \
             SELECT to_timestamp($1::bigint - 1 - (i * 7) % 3600), \
                    CASE WHEN ((i % $3) * 31 + i / $3) % 9 < (i % $3) % 4 THEN 4 ELSE 2 END, \
                    'svc-' || (i % $3), 'request served', ARRAY['request', 'served'], $2, 0, i \
             FROM generate_series(0::bigint, $4::bigint - 1) AS i",
            &[&at, &env.topic, &HOUR_SERVICES, &HOUR_ROWS],
        )
        .await
        .expect("insert an hour of rows");
    client
        .execute(
            "INSERT INTO kafka_offsets (topic, \"partition\", next_offset) VALUES ($1, 0, $2)",
            &[&env.topic, &HOUR_ROWS],
        )
        .await
        .expect("offsets");
    let rows = client
        .query(
            "SELECT service, count(*)::bigint, (count(*) FILTER (WHERE level >= 4))::bigint FROM logs \
             WHERE ts >= to_timestamp($1::bigint - 3600) AND ts < to_timestamp($1::bigint) GROUP BY service",
            &[&at],
        )
        .await
        .expect("direct count");
    let truth: Vec<(String, u64, u64)> =
        rows.iter().map(|r| (r.get(0), r.get::<_, i64>(1) as u64, r.get::<_, i64>(2) as u64)).collect();
    assert_eq!(truth.len() as i64, HOUR_SERVICES, "every service has events in the hour");
    assert!(truth.iter().any(|s| s.2 >= 3) && truth.iter().any(|s| s.2 == 0), "errors vary by service");

    // The same events in Redis's buckets, through the writer every ingest process uses.
    let prefix = unique("la_hour");
    let redis_url = stack().redis_url;
    let cache = RedisCache::new(&redis_url, &prefix, &env.topic, Duration::from_secs(10), 7_200, 60).expect("redis");
    let keywords = KeywordSet::new(Vec::new());
    let events = client
        .query(
            "SELECT floor(extract(epoch FROM ts))::bigint, service, level, \"offset\" FROM logs ORDER BY \"offset\"",
            &[],
        )
        .await
        .expect("rows");
    for chunk in events.chunks(10_000) {
        let mut delta = BucketDelta {
            topic: env.topic.clone(),
            partition: 0,
            from: chunk[0].get(3),
            to: chunk[chunk.len() - 1].get::<_, i64>(3) + 1,
            ..BucketDelta::default()
        };
        for row in chunk {
            let counts: &mut Counts = delta
                .seconds
                .entry(row.get(0))
                .or_default()
                .by_service
                .entry(Arc::from(row.get::<_, &str>(1)))
                .or_default();
            counts.total += 1;
            counts.errors += u64::from(row.get::<_, i16>(2) >= 4);
        }
        assert!(cache.apply(&delta, &keywords).await.expect("apply"), "a new delta is applied");
    }

    let app = spawn_role_with(&env, "api", &redis_url, &prefix, &[("WINDOW_HORIZON", "2h")]);
    app.wait_listening().await;
    let want = expected(&truth, 100);
    for (path, source) in [
        (format!("/stats/errors?window=1h&at={at}"), "postgres"),
        (format!("/stats/errors?window=1h&at={at}&source=postgres"), "postgres"),
        (format!("/stats/errors?window=1h&at={at}&limit=1000"), "postgres"),
    ] {
        let started = Instant::now();
        let (status, answer) = get_json(app.port, &path).await;
        let took = started.elapsed();
        assert_eq!((status, answer["source"].as_str()), (200, Some(source)), "{path}: {answer}");
        let limit = if path.contains("limit=1000") { 1000 } else { 100 };
        assert_eq!(pick(&answer), expected(&truth, limit), "{path}");
        // Not a timing claim: a bound a debug build on shared cores keeps, which a return to
        // numbering every service of the hour (spilled to disk) under load would not.
        assert!(took < Duration::from_secs(5), "{path} took {took:?}");
    }
    let (_, kept) = get_json(app.port, &format!("/stats/errors?window=1h&at={at}")).await;
    assert_eq!(pick(&kept), want, "the kept answer is the same");

    // Redis holds the window but too many fields to sum within its budget: it says so, at once.
    // (A limit not asked before: the answers above are kept in Redis and it would give those.)
    let started = Instant::now();
    let (status, answer) = get_json(app.port, &format!("/stats/errors?window=1h&at={at}&limit=7&source=redis")).await;
    assert_eq!(status, 503, "{answer}");
    assert!(answer["message"].as_str().is_some_and(|m| m.contains("REDIS_MAX_WINDOW_FIELDS")), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5), "refused in {:?}", started.elapsed());
    // Allowed to sum it all, the same buckets give the same answer.
    let range = WindowRange { from: at - 3_600, to: at };
    let unbounded = RedisBuckets::new(cache.summing_at_most(u64::MAX), Arc::new(keywords));
    let answer = unbounded.answer(&WindowQuestion::Errors { range, service: None, limit: 100 }).await;
    let Ok(WindowAnswer::Errors(stats)) = answer else { panic!("redis summed: {answer:?}") };
    let stats = serde_json::to_value(&stats).unwrap();
    assert_eq!(pick(&stats), want);
    env.db.drop_db().await;
}
