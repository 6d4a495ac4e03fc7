//! `KAFKA_TOPIC` as a list: one consumer group over several topics, each (topic, partition) stored,
//! fenced and counted on its own, and the live windows answering for all the topics together.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde_json::{json, Value};

use log_analyzer::startup;
use log_analyzer::telemetry;

use crate::api::spawn_role;
use crate::helpers::*;
use crate::ingest::{dataset, Dataset, IngestEnv};

/// One event sent: its topic, second, service and whether it is an error.
struct Sent {
    topic: String,
    second: i64,
    service: String,
    error: bool,
}

fn sent(topic: &str, data: &Dataset, into: &mut HashMap<String, Sent>) {
    for (eid, e) in &data.events {
        let event =
            Sent { topic: topic.to_owned(), second: e.ts.timestamp(), service: e.service.clone(), error: e.level >= 4 };
        assert!(into.insert(eid.clone(), event).is_none(), "event ids are unique across topics");
    }
}

/// `/stats/errors` as computed from what was sent, over every topic.
fn errors(truth: &HashMap<String, Sent>, to: i64, window: i64, service: Option<&str>) -> Value {
    let mut per: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for e in truth.values().filter(|e| e.second >= to - window && e.second < to) {
        if service.is_some_and(|s| s != e.service) {
            continue;
        }
        let entry = per.entry(&e.service).or_default();
        entry.0 += 1;
        entry.1 += u64::from(e.error);
    }
    // As every source lists them: most errors first, then by name.
    let mut ranked: Vec<_> = per.iter().collect();
    ranked.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then_with(|| a.0.cmp(b.0)));
    let by_service: Vec<Value> =
        ranked.iter().map(|(s, (t, e))| json!({"service": s, "total": t, "errors": e})).collect();
    json!({
        "total": per.values().map(|v| v.0).sum::<u64>(),
        "errors": per.values().map(|v| v.1).sum::<u64>(),
        "by_service": by_service,
    })
}

fn pick(answer: &Value) -> Value {
    json!({"total": answer["total"], "errors": answer["errors"], "by_service": answer["by_service"]})
}

/// Waits until every topic's stored offsets cover what was produced into it.
async fn wait_stored(client: &tokio_postgres::Client, produced: &[(&str, usize)]) {
    eventually("every topic stored", Duration::from_secs(120), || async {
        for (topic, n) in produced {
            if stored_total(client, topic).await < *n as i64 {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// Every stored event once, with the topic it was sent to.
async fn assert_stored_once_with_topic(client: &tokio_postgres::Client, truth: &HashMap<String, Sent>) {
    let rows = client.query("SELECT attrs->>'eid', topic FROM logs", &[]).await.unwrap();
    let mut seen = HashMap::with_capacity(rows.len());
    for row in rows {
        let (eid, topic): (String, String) = (row.get(0), row.get(1));
        assert!(seen.insert(eid.clone(), topic).is_none(), "event {eid} stored twice");
    }
    assert_eq!(seen.len(), truth.len(), "every event stored");
    for (eid, e) in truth {
        assert_eq!(seen.get(eid), Some(&e.topic), "topic of {eid}");
    }
}

/// The `topic/partition` names a process ingests, from its /debug/actors.
async fn owned(admin_port: u16) -> Option<BTreeSet<String>> {
    let (_, body) = http(admin_port, "GET", "/debug/actors", b"", &[]).await?;
    let actors: Value = serde_json::from_slice(&body).ok()?;
    actors["partitions"].as_array()?.iter().map(|p| p.as_str().map(str::to_owned)).collect()
}

#[tokio::test]
async fn one_run_process_ingests_two_topics_exactly_once_and_answers_for_both() {
    let db = TestDatabase::create().await;
    let (a, b) = (unique("multi_a"), unique("multi_b"));
    for (topic, partitions) in [(&a, "2"), (&b, "3")] {
        let settings = settings(&[("DATABASE_URL", &db.url), ("KAFKA_TOPIC", topic), ("KAFKA_PARTITIONS", partitions)]);
        startup::migrate(&settings, &telemetry::discard()).await.expect("migrate");
    }
    let env = IngestEnv { db, topic: format!("{a},{b}"), group: unique("group"), brokers: stack().kafka_brokers };
    let generated_at = chrono::Utc::now().timestamp();
    let (data_a, data_b) = (dataset(51, 3_000, 2, 0), dataset(52, 4_000, 3, 0));
    let mut truth = HashMap::new();
    sent(&a, &data_a, &mut truth);
    sent(&b, &data_b, &mut truth);

    let app = spawn_role(&env, "run", &stack().redis_url, &unique("la_multi"));
    let kafka = producer(&env.brokers);
    produce_all(&kafka, &a, &data_a.messages).await;
    produce_all(&kafka, &b, &data_b.messages).await;
    let client = env.db.client().await;
    wait_stored(&client, &[(&a, data_a.messages.len()), (&b, data_b.messages.len())]).await;
    assert_stored_once_with_topic(&client, &truth).await;

    // One row per (topic, partition), each at the number of messages sent into it.
    let mut want: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for (topic, data) in [(&a, &data_a), (&b, &data_b)] {
        for m in &data.messages {
            *want.entry((topic.clone(), m.partition)).or_default() += 1;
        }
    }
    let rows = client
        .query(
            "SELECT topic, \"partition\", next_offset FROM kafka_offsets WHERE topic = ANY($1)",
            &[&vec![a.clone(), b.clone()]],
        )
        .await
        .unwrap();
    let stored: BTreeMap<(String, i32), i64> = rows.iter().map(|r| ((r.get(0), r.get(1)), r.get(2))).collect();
    assert_eq!(stored.len(), 5, "{stored:?}");
    assert_eq!(stored, want);

    // The consumers are named by topic and partition, all five in this one process.
    let all: BTreeSet<String> = want.keys().map(|(t, p)| format!("{t}/{p}")).collect();
    let admin = app.admin_port;
    eventually("all five partitions owned", Duration::from_secs(30), || async {
        (owned(admin).await? == all).then_some(())
    })
    .await;

    // Memory owns every partition of both topics: its answers are the truth over both, like Redis's
    // and PostgreSQL's.
    app.wait_memory_ready().await;
    let port = app.port;
    let at = generated_at + 1;
    let want_total = errors(&truth, at, 1_800, None)["total"].clone();
    eventually("memory caught up", Duration::from_secs(30), || {
        let want_total = want_total.clone();
        async move {
            let (_, answer) = get_json(port, &format!("/stats/errors?window=30m&at={at}&source=memory")).await;
            (answer["total"] == want_total).then_some(())
        }
    })
    .await;
    // Redis is fed behind memory, its fence keyed by topic and partition as well.
    eventually("redis caught up", Duration::from_secs(30), || {
        let want_total = want_total.clone();
        async move {
            let (_, answer) = get_json(port, &format!("/stats/errors?window=30m&at={at}&source=redis")).await;
            (answer["total"] == want_total).then_some(())
        }
    })
    .await;
    for (window, seconds) in [("1m", 60), ("10m", 600), ("30m", 1_800)] {
        for service in [None, Some("payments"), Some("checkout")] {
            let param = service.map(|s| format!("&service={s}")).unwrap_or_default();
            for source in ["memory", "redis", "postgres"] {
                let path = format!("/stats/errors?window={window}&at={at}{param}&source={source}");
                let (status, answer) = get_json(port, &path).await;
                assert_eq!(status, 200, "{path}: {answer}");
                assert_eq!(answer["source"], source, "{path}");
                assert_eq!(pick(&answer), errors(&truth, at, seconds, service), "{path}");
            }
        }
    }

    // A second process joins the group: the partitions are shared, and memory, no longer owning
    // all of them, refuses rather than answer for part of the topics.
    let mut joined = env.spawn_ingest();
    eventually("the group rebalanced", Duration::from_secs(60), || async {
        let mine = owned(admin).await?;
        (!mine.is_empty() && mine.len() < all.len()).then_some(())
    })
    .await;
    let (mut more_a, mut more_b) = (dataset(53, 2_000, 2, 0), dataset(54, 2_000, 3, 0));
    sent(&a, &more_a, &mut truth);
    sent(&b, &more_b, &mut truth);
    // An event naming no service is its own topic's.
    let now_ms = chrono::Utc::now().timestamp_millis();
    for (topic, more) in [(&a, &mut more_a), (&b, &mut more_b)] {
        let eid = format!("no-service-{topic}");
        let payload = json!({"message": "a line without a service", "eid": eid}).to_string().into_bytes();
        more.messages.push(Outgoing { partition: 1, timestamp_ms: now_ms, payload });
        let event =
            Sent { topic: topic.clone(), second: now_ms.div_euclid(1_000), service: topic.clone(), error: false };
        truth.insert(eid, event);
    }
    produce_all(&kafka, &a, &more_a.messages).await;
    produce_all(&kafka, &b, &more_b.messages).await;
    wait_stored(
        &client,
        &[(&a, data_a.messages.len() + more_a.messages.len()), (&b, data_b.messages.len() + more_b.messages.len())],
    )
    .await;
    assert_stored_once_with_topic(&client, &truth).await;
    for topic in [&a, &b] {
        let row = client
            .query_one("SELECT service FROM logs WHERE attrs->>'eid' = $1", &[&format!("no-service-{topic}")])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), *topic, "fallback service is the event's own topic");
    }
    let (status, answer) = get_json(port, &format!("/stats/errors?window=30m&at={at}&source=memory")).await;
    assert_eq!(status, 503, "{answer}");
    let (status, answer) = get_json(port, &format!("/stats/errors?window=30m&at={at}&source=postgres")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(pick(&answer), errors(&truth, at, 1_800, None));

    let status = joined.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", joined.log_tail());

    // The partitions come back: memory rebuilds from what both topics' partitions stored meanwhile
    // (some by the other process, never seen here) and is exact again.
    eventually("all five partitions owned again", Duration::from_secs(60), || async {
        (owned(admin).await? == all).then_some(())
    })
    .await;
    let at = chrono::Utc::now().timestamp() + 1; // the events without a service included
    let want_total = errors(&truth, at, 1_800, None)["total"].clone();
    eventually("memory answers again", Duration::from_secs(60), || {
        let want_total = want_total.clone();
        async move {
            let (status, answer) = get_json(port, &format!("/stats/errors?window=30m&at={at}&source=memory")).await;
            (status == 200 && answer["total"] == want_total).then_some(())
        }
    })
    .await;
    for (window, seconds) in [("1m", 60), ("30m", 1_800)] {
        for service in [None, Some("payments"), Some(a.as_str())] {
            let param = service.map(|s| format!("&service={s}")).unwrap_or_default();
            let path = format!("/stats/errors?window={window}&at={at}{param}&source=memory");
            let (status, answer) = get_json(port, &path).await;
            assert_eq!(status, 200, "{path}: {answer}");
            assert_eq!(pick(&answer), errors(&truth, at, seconds, service), "{path}");
        }
    }
    drop(client);
    drop(app);
    env.db.drop_db().await;
}
