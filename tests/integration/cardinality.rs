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
