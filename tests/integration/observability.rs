//! The admin listener against real traffic: metrics that move as they must, a writer held back by
//! a locked table showing in its mailbox, `/debug/actors` matching the group's assignment, CPU
//! profiles that parse, the log level changed at runtime.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::Value;

use crate::api::{spawn_role, spawn_role_with, App};
use crate::helpers::*;
use crate::ingest::{dataset, IngestEnv};

/// Every sample of `name` in a Prometheus text page: its labels and value.
fn samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => {
                    let (labels, value) = r.split_once("} ")?;
                    (labels, value)
                }
                None => ("", rest.strip_prefix(' ')?),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once("=\"")?;
                    Some((k.to_owned(), v.trim_end_matches('"').to_owned()))
                })
                .collect();
            Some((labels, value.parse().ok()?))
        })
        .collect()
}

fn sum(text: &str, name: &str, filter: &[(&str, &str)]) -> f64 {
    samples(text, name)
        .into_iter()
        .filter(|(labels, _)| filter.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, v)| v)
        .sum()
}

async fn scrape(admin: u16) -> String {
    let (status, body) = http(admin, "GET", "/metrics", b"", &[]).await.expect("admin answers");
    assert_eq!(status, 200);
    String::from_utf8(body).unwrap()
}

#[tokio::test]
async fn metrics_follow_the_traffic_and_a_writer_held_by_a_locked_table_shows_in_its_mailbox() {
    let env = IngestEnv::create(3).await;
    // One writer: while it waits on the lock, the other partitions' batches queue in its mailbox.
    let app = spawn_role_with(&env, "run", &stack().redis_url, &unique("la_obs"), &[("WRITER_COUNT", "1")]);
    app.wait_memory_ready().await;
    let admin = app.admin_port;
    let data = dataset(61, 3_000, 3, 50);
    let lock = env.db.client().await;
    lock.batch_execute("BEGIN; LOCK TABLE kafka_offsets IN ACCESS EXCLUSIVE MODE").await.unwrap();
    produce_all(&producer(&env.brokers), &env.topic, &data.messages).await;

    let writer = [("actor", "writer")];
    let text = eventually("the writer's mailbox fills", Duration::from_secs(30), || async {
        let text = scrape(admin).await;
        (sum(&text, "log_analyzer_actor_mailbox_depth", &writer) > 0.0).then_some(text)
    })
    .await;
    let blocked = sum(&text, "log_analyzer_actor_send_blocked_seconds_total", &writer);
    eventually("blocked time grows while the table is locked", Duration::from_secs(10), || async {
        let text = scrape(admin).await;
        (sum(&text, "log_analyzer_actor_send_blocked_seconds_total", &writer) > blocked + 0.05).then_some(())
    })
    .await;
    let (_, actors) = get_json(admin, "/debug/actors").await;
    let held = actors["actors"].as_array().unwrap().iter().find(|a| a["actor"] == "writer").unwrap().clone();
    assert!(held["mailbox_depth"].as_i64().unwrap() > 0, "{held}");
    // (kafka_offsets itself is locked: count the rows.)
    let rows: i64 = env.db.client().await.query_one("SELECT count(*) FROM logs", &[]).await.unwrap().get(0);
    assert_eq!(rows, 0, "nothing stored while locked");

    lock.batch_execute("COMMIT").await.unwrap();
    let client = env.db.client().await;
    env.wait_stored(&client, data.messages.len() as i64, Duration::from_secs(60)).await;
    let text = eventually("lag 0 and empty mailboxes", Duration::from_secs(30), || async {
        let text = scrape(admin).await;
        let lag = samples(&text, "log_analyzer_consumer_lag_events");
        let settled = lag.len() == 3
            && lag.iter().all(|(_, v)| *v == 0.0)
            && sum(&text, "log_analyzer_actor_mailbox_depth", &writer) == 0.0;
        settled.then_some(text)
    })
    .await;
    let settled = sum(&text, "log_analyzer_actor_send_blocked_seconds_total", &writer);
    assert_eq!(
        sum(&scrape(admin).await, "log_analyzer_actor_send_blocked_seconds_total", &writer),
        settled,
        "blocked time stops growing once released"
    );
    assert!(settled > blocked);

    // Counts equal what was sent, split per partition and reason as sent.
    assert_eq!(sum(&text, "log_analyzer_ingested_events_total", &[]), data.events.len() as f64);
    assert_eq!(sum(&text, "log_analyzer_rejects_total", &[]), data.rejects.len() as f64);
    for p in 0..3 {
        let p_text = p.to_string();
        let sent = data.messages.iter().filter(|m| m.partition == p).count();
        let rejected = data.rejects.keys().filter(|(q, _)| *q == p).count();
        let labels = [("topic", env.topic.as_str()), ("partition", p_text.as_str())];
        assert_eq!(sum(&text, "log_analyzer_ingested_events_total", &labels), (sent - rejected) as f64);
        let bytes: usize = data.messages.iter().filter(|m| m.partition == p).map(|m| m.payload.len()).sum();
        assert_eq!(sum(&text, "log_analyzer_ingested_bytes_total", &labels), bytes as f64);
    }
    let mut by_reason: BTreeMap<&str, f64> = BTreeMap::new();
    for reason in data.rejects.values() {
        *by_reason.entry(reason).or_default() += 1.0;
    }
    for (reason, n) in by_reason {
        assert_eq!(sum(&text, "log_analyzer_rejects_total", &[("reason", reason)]), n, "{reason}");
    }
    // Every consumer message went through its mailbox, and the writer's batches were timed.
    assert_eq!(
        sum(&text, "log_analyzer_actor_messages_handled_total", &[("actor", "consumer")]),
        data.messages.len() as f64
    );
    let batches = sum(&text, "log_analyzer_writer_batches_total", &[]);
    assert!(batches >= 3.0);
    assert_eq!(sum(&text, "log_analyzer_writer_batch_seconds_count", &[]), batches);
    assert_eq!(sum(&text, "log_analyzer_writer_batch_events_sum", &[]), data.messages.len() as f64);
    // Every message carried its producer's timestamp: each take was timed.
    assert_eq!(sum(&text, "log_analyzer_consumer_take_delay_seconds_count", &[]), data.messages.len() as f64);
    assert!(sum(&text, "log_analyzer_consumer_take_delay_seconds_sum", &[]) > 0.0);

    // The public API is counted per route and status, and answers carry a request id.
    let (status, _) = get_json(app.port, "/stats/errors?window=1m").await;
    assert_eq!(status, 200);
    let (status, _) = get_json(app.port, "/stats/errors?window=banana").await;
    assert_eq!(status, 400);
    let text = scrape(admin).await;
    let route = ("route", "/stats/errors");
    assert_eq!(sum(&text, "log_analyzer_http_requests_total", &[route, ("status", "200")]), 1.0);
    assert_eq!(sum(&text, "log_analyzer_http_requests_total", &[route, ("status", "400")]), 1.0);
    assert_eq!(sum(&text, "log_analyzer_http_request_seconds_count", &[route]), 2.0);
    assert_eq!(sum(&text, "log_analyzer_stats_answers_total", &[("route", "errors")]), 1.0);
    assert!(sum(&text, "log_analyzer_window_buckets", &[]) > 0.0);
    let (_, head) = raw_head(app.port, "/stats/errors?window=1m", "abc-123").await;
    assert!(head.to_ascii_lowercase().contains("x-request-id: abc-123"), "{head}");

    // `run` also runs the scheduler: it caught up yesterday's summary at start, timed and counted.
    let text = eventually("the catch-up summary counted", Duration::from_secs(30), || async {
        let text = scrape(admin).await;
        (sum(&text, "log_analyzer_summary_runs_total", &[("status", "ok")]) >= 1.0).then_some(text)
    })
    .await;
    assert!(sum(&text, "log_analyzer_summary_job_seconds_count", &[]) >= 1.0);
    let (_, actors) = get_json(admin, "/debug/actors").await;
    let kinds: BTreeSet<&str> =
        actors["actors"].as_array().unwrap().iter().filter_map(|a| a["actor"].as_str()).collect();
    for kind in ["consumer", "writer", "window_aggregator", "delta_writer", "scheduler"] {
        assert!(kinds.contains(kind), "{kind} missing from {kinds:?}");
    }
    let scheduler = actors["actors"].as_array().unwrap().iter().find(|a| a["actor"] == "scheduler").unwrap();
    assert!(scheduler["handled"].as_u64().unwrap() >= 1, "{scheduler}");

    // Admin routes are not served publicly, and the API is not served on the admin port.
    for path in ["/metrics", "/debug/actors", "/debug/pprof/profile?seconds=1", "/debug/log-level"] {
        assert_eq!(http(app.port, "GET", path, b"", &[]).await.unwrap().0, 404, "{path}");
    }
    assert_eq!(http(admin, "GET", "/stats/errors", b"", &[]).await.unwrap().0, 404);
    drop(app);
    env.db.drop_db().await;
}

/// A GET with an `X-Request-Id`; the status line and headers of the answer.
async fn raw_head(port: u16, path: &str, request_id: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: {request_id}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer).to_string();
    let head = text.split("\r\n\r\n").next().unwrap_or_default().to_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head)
}

/// Partitions each member of `group` was assigned, from the group coordinator (classic protocol:
/// the assignment is a ConsumerProtocolAssignment: version, then [topic, [partition]]).
fn group_assignment(brokers: &str, group: &str, topic: &str) -> BTreeSet<BTreeSet<i32>> {
    let consumer: BaseConsumer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", brokers).create().expect("admin consumer");
    let groups = consumer.fetch_group_list(Some(group), Duration::from_secs(10)).expect("group list");
    let group = groups.groups().first().expect("the group exists");
    group
        .members()
        .iter()
        .map(|m| {
            let bytes = m.assignment().unwrap_or_default();
            let mut at = 2; // version
            let i32_at = |at: usize| i32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
            let mut partitions = BTreeSet::new();
            let topics = i32_at(at);
            at += 4;
            for _ in 0..topics {
                let len = i16::from_be_bytes(bytes[at..at + 2].try_into().unwrap()) as usize;
                let name = std::str::from_utf8(&bytes[at + 2..at + 2 + len]).unwrap().to_owned();
                at += 2 + len;
                let n = i32_at(at);
                at += 4;
                for _ in 0..n {
                    if name == topic {
                        partitions.insert(i32_at(at));
                    }
                    at += 4;
                }
            }
            partitions
        })
        .collect()
}

/// The partition numbers of the `topic/partition` names a process owns (one topic here).
fn owned_partitions(actors: &Value) -> BTreeSet<i32> {
    let number = |p: &Value| p.as_str().unwrap().rsplit_once('/').unwrap().1.parse::<i32>().unwrap();
    actors["partitions"].as_array().unwrap().iter().map(number).collect()
}

#[tokio::test]
async fn debug_actors_lists_every_actor_and_consumers_match_the_group_assignment() {
    let env = IngestEnv::create(4).await;
    let prefix = unique("la_actors");
    let redis = stack().redis_url;
    let a = spawn_role(&env, "ingest", &redis, &prefix);
    let b = spawn_role(&env, "ingest", &redis, &prefix);
    let snapshot = || async {
        let mut owned = BTreeSet::new();
        let mut lists = Vec::new();
        for app in [&a, &b] {
            // None until both listen.
            let (_, body) = http(app.admin_port, "GET", "/debug/actors", b"", &[]).await?;
            let actors: Value = serde_json::from_slice(&body).ok()?;
            owned.insert(owned_partitions(&actors));
            lists.push(actors);
        }
        Some((owned, lists))
    };
    let settled = || async {
        let (owned, lists) = snapshot().await?;
        let all: BTreeSet<i32> = owned.iter().flatten().copied().collect();
        let disjoint = owned.iter().map(BTreeSet::len).sum::<usize>() == all.len();
        let settled = owned.len() == 2 && owned.iter().all(|p| !p.is_empty()) && all.len() == 4 && disjoint;
        (settled && group_assignment(&env.brokers, &env.group, &env.topic) == owned).then_some((owned, lists))
    };
    // Settled: both processes own partitions, together all four, and the coordinator agrees.
    let (before, _) = eventually("assignment settled", Duration::from_secs(60), settled).await;
    let data = dataset(67, 2_000, 4, 0);
    produce_all(&producer(&env.brokers), &env.topic, &data.messages).await;
    let client = env.db.client().await;
    env.wait_stored(&client, data.messages.len() as i64, Duration::from_secs(60)).await;
    let (owned, lists) = eventually("assignment still settled", Duration::from_secs(30), settled).await;
    assert_eq!(owned, before, "no rebalance while the data flowed");

    for (actors, app) in lists.iter().zip([&a, &b]) {
        let list = actors["actors"].as_array().unwrap();
        let of = |kind: &str| list.iter().filter(|x| x["actor"] == kind).cloned().collect::<Vec<_>>();
        assert_eq!(of("writer").len(), 2, "{actors}");
        assert_eq!(of("delta_writer").len(), 1);
        assert_eq!(of("delta_forwarder").len(), 1);
        // Each owned partition has a running consumer that says it owns it.
        for p in owned_partitions(actors) {
            let name = format!("{}/{p}", env.topic);
            let consumer = of("consumer").into_iter().find(|c| c["instance"].as_str() == Some(&*name)).unwrap();
            assert_eq!(consumer["running"], true, "{consumer}");
            assert_eq!(consumer["partitions"], serde_json::json!([name]));
        }
        for entry in list {
            for field in ["mailbox_depth", "handled", "restarts", "send_blocked_seconds"] {
                assert!(entry[field].is_number(), "{field} in {entry}");
            }
            assert!(entry.get("last_error").is_some());
        }
        // Messages handled by this process's consumers = what its partitions received.
        let handled: u64 = of("consumer").iter().map(|c| c["handled"].as_u64().unwrap()).sum();
        let sent = data.messages.iter().filter(|m| owned_partitions(actors).contains(&m.partition)).count() as u64;
        assert_eq!(handled, sent, "handled by the consumers of {:?}", app.process.log_path);
    }
    drop((a, b));
    env.db.drop_db().await;
}

#[tokio::test]
async fn a_cpu_profile_downloads_as_flamegraph_and_pprof_and_the_log_level_changes_at_runtime() {
    let env = IngestEnv::create(1).await;
    let app: App = spawn_role(&env, "api", &stack().redis_url, &unique("la_prof"));
    app.wait_listening().await;
    let admin = app.admin_port;
    // Keep the process busy while it is profiled, so the profile has samples.
    let port = app.port;
    let load = tokio::spawn(async move {
        loop {
            let _ = http(port, "GET", "/stats/errors?window=1h&source=postgres", b"", &[]).await;
        }
    });

    let (status, svg) = http(admin, "GET", "/debug/pprof/profile?seconds=2&format=svg", b"", &[]).await.unwrap();
    assert_eq!(status, 200);
    let svg = String::from_utf8(svg).unwrap();
    assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"), "{}", &svg[..svg.len().min(300)]);

    let (status, pb) = http(admin, "GET", "/debug/pprof/profile?seconds=1", b"", &[]).await.unwrap();
    assert_eq!(status, 200);
    load.abort();
    use pprof::protos::Message;
    let profile = pprof::protos::Profile::decode(pb.as_slice()).expect("a pprof protobuf");
    let period_type = profile.period_type.as_ref().expect("a period type");
    assert_eq!(profile.string_table[period_type.ty as usize], "cpu");
    assert!(profile.period > 0);
    assert!(!profile.sample.is_empty(), "a busy process was sampled");

    for bad in ["seconds=0", "seconds=1000", "seconds=x", "format=xml"] {
        let (status, _) = http(admin, "GET", &format!("/debug/pprof/profile?{bad}"), b"", &[]).await.unwrap();
        assert_eq!(status, 400, "{bad}");
    }

    let (_, level) = get_json(admin, "/debug/log-level").await;
    assert_eq!(level["level"], "info");
    let (status, _) = http(admin, "PUT", "/debug/log-level", b"debug", &[]).await.unwrap();
    assert_eq!(status, 200);
    let (_, level) = get_json(admin, "/debug/log-level").await;
    assert_eq!(level["level"], "debug");
    // At debug, each public request is logged with its id.
    let (status, _) = raw_head(app.port, "/healthz", "probe-42").await;
    assert_eq!(status, 200);
    let log_path = app.process.log_path.clone();
    eventually("the request line logged", Duration::from_secs(10), || {
        let log_path = log_path.clone();
        async move {
            let log = std::fs::read_to_string(&log_path).ok()?;
            log.lines().any(|l| l.contains("\"request_id\":\"probe-42\"") && l.contains("/healthz")).then_some(())
        }
    })
    .await;
    let (status, _) = http(admin, "PUT", "/debug/log-level", b"loud", &[]).await.unwrap();
    assert_eq!(status, 400);
    drop(app);
    env.db.drop_db().await;
}
