//! Static membership (INSTANCE_ID): a killed ingest restarted under the same id takes its partitions
//! back at once, a clean stop still hands them over, and two live processes under one id fail
//! clearly; every event stored exactly once throughout.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::helpers::*;
use crate::ingest::{dataset, stored_ids, Dataset, IngestEnv};

/// The session timeout a dead dynamic member's partitions wait out (src/kafka/source/config.rs).
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

fn spawn_member(env: &IngestEnv, instance_id: &str) -> ChildProcess {
    ChildProcess::spawn(
        &["ingest"],
        &[
            ("DATABASE_URL", &env.db.url),
            ("KAFKA_BROKERS", &env.brokers),
            ("KAFKA_TOPIC", &env.topic),
            ("KAFKA_GROUP", &env.group),
            // Small batches: the backlog takes a while, so there is work left at every step.
            ("BATCH_MAX_EVENTS", "500"),
            ("WRITER_COUNT", "1"),
            ("ADMIN_ADDR", "127.0.0.1:0"),
            ("INSTANCE_ID", instance_id),
        ],
    )
}

/// Each partition's stored next offset.
async fn stored_by_partition(client: &tokio_postgres::Client, topic: &str) -> BTreeMap<i32, i64> {
    let rows =
        client.query("SELECT \"partition\", next_offset FROM kafka_offsets WHERE topic = $1", &[&topic]).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

async fn assert_each_event_once(client: &tokio_postgres::Client, data: &Dataset) {
    let ids = stored_ids(client).await; // panics on an event stored twice
    let missing: Vec<&String> = data.events.keys().filter(|eid| !ids.contains(*eid)).take(5).collect();
    assert!(missing.is_empty(), "events lost, e.g. {missing:?}");
    assert_eq!(ids.len(), data.events.len(), "unexpected extra events");
}

/// How long until every partition's stored offset has moved past `before` (or its end).
async fn until_every_partition_moves(
    env: &IngestEnv,
    client: &tokio_postgres::Client,
    before: &BTreeMap<i32, i64>,
    ends: &BTreeMap<i32, i64>,
    timeout: Duration,
) -> Duration {
    let started = Instant::now();
    eventually("every partition stores rows again", timeout, || async {
        let now = stored_by_partition(client, &env.topic).await;
        before.iter().all(|(p, o)| now.get(p).is_some_and(|n| n > o || Some(n) == ends.get(p))).then_some(())
    })
    .await;
    started.elapsed()
}

/// When a child logged `msg`, each time, with the line (its JSON log).
fn logged(child: &ChildProcess, msg: &str) -> Vec<(DateTime<Utc>, serde_json::Value)> {
    let text = std::fs::read_to_string(&child.log_path).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["msg"] == msg)
        .filter_map(|line| Some((line["ts"].as_str()?.parse().ok()?, line)))
        .collect()
}

/// The first time a child was assigned partitions (a non-empty assignment).
fn first_assignment(child: &ChildProcess) -> Option<DateTime<Utc>> {
    logged(child, "partitions assigned").into_iter().find(|(_, line)| line["offsets"] != "Some({})").map(|(at, _)| at)
}

fn partition_ends(data: &Dataset) -> BTreeMap<i32, i64> {
    let mut ends = BTreeMap::new();
    for m in &data.messages {
        *ends.entry(m.partition).or_insert(0) += 1;
    }
    ends
}

#[tokio::test]
async fn a_killed_static_member_restarted_under_its_id_stores_again_well_before_the_session_timeout() {
    let env = IngestEnv::create(3).await;
    let data = dataset(41, 150_000, 3, 1_000);
    let total = data.messages.len() as i64;
    produce_all(&producer(&env.brokers), &env.topic, &data.messages).await;
    let ends = partition_ends(&data);
    let client = env.db.client().await;
    let id = unique("member");
    let mut ingest = spawn_member(&env, &id);
    env.wait_stored(&client, total / 10, Duration::from_secs(120)).await;
    ingest.kill9();
    let before = stored_by_partition(&client, &env.topic).await;
    assert!(before.values().zip(ends.values()).any(|(o, end)| o < end), "work left after the kill");
    let mut ingest = spawn_member(&env, &id);
    let waited = until_every_partition_moves(&env, &client, &before, &ends, Duration::from_secs(30)).await;
    // Timed by the process itself, from its start to its partitions: a loaded machine stretches
    // the start of a debug build, not the join. A dynamic member waits out the dead one's session
    // (6 s) here.
    let started = logged(&ingest, "ingest started").first().map(|(at, _)| *at).expect("ingest started");
    let assigned = first_assignment(&ingest).expect("partitions assigned");
    let joined = (assigned - started).to_std().unwrap_or_default();
    eprintln!("restart → partitions {joined:?} after the process started; every partition stores again {waited:?} after the restart");
    assert!(joined < SESSION_TIMEOUT / 2, "took {joined:?}: the partitions waited for the session timeout");
    env.wait_stored(&client, total, Duration::from_secs(240)).await;
    assert_each_event_once(&client, &data).await;
    let status = ingest.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", ingest.log_tail());
    drop(client);
    env.db.drop_db().await;
}

#[tokio::test]
async fn a_static_member_stopped_cleanly_hands_its_partitions_over_at_once() {
    let env = IngestEnv::create(4).await;
    let data = dataset(43, 150_000, 4, 1_000);
    let total = data.messages.len() as i64;
    produce_all(&producer(&env.brokers), &env.topic, &data.messages).await;
    let ends = partition_ends(&data);
    let client = env.db.client().await;
    let mut a = spawn_member(&env, &unique("member-a"));
    env.wait_stored(&client, total / 10, Duration::from_secs(120)).await;
    let mut b = spawn_member(&env, &unique("member-b"));
    // b owns some partitions once it stores rows of its own; a's are handed over only when a leaves.
    eventually("b is assigned partitions", Duration::from_secs(60), || async {
        std::fs::read_to_string(&b.log_path).unwrap_or_default().contains("partitions assigned").then_some(())
    })
    .await;
    let stopping = Instant::now();
    let status = a.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", a.log_tail());
    let stopped = stopping.elapsed();
    let before = stored_by_partition(&client, &env.topic).await;
    assert!(before.values().zip(ends.values()).any(|(o, end)| o < end), "work left after the stop");
    let waited = until_every_partition_moves(&env, &client, &before, &ends, Duration::from_secs(30)).await;
    // From a's stop to b's last assignment, as the processes logged them. Without a LeaveGroup,
    // a's partitions wait out its session (6 s).
    let stop = logged(&a, "shutdown requested").first().map(|(at, _)| *at).expect("a's shutdown");
    let taken = logged(&b, "partitions assigned").last().map(|(at, _)| *at).expect("b assigned");
    assert!(taken > stop, "b took a's partitions when a stopped");
    let handed = (taken - stop).to_std().unwrap_or_default();
    eprintln!("a stopped in {stopped:?}; b had a's partitions {handed:?} after a's stop began; all stored again within {waited:?}");
    // b notices the rebalance at its next heartbeat (1.5 s); kept by a, the partitions would move
    // only after a's session (6 s) from a's exit, which is later than this from its stop's start.
    assert!(handed < SESSION_TIMEOUT, "took {handed:?}: a left without handing its partitions over");
    env.wait_stored(&client, total, Duration::from_secs(240)).await;
    assert_each_event_once(&client, &data).await;
    let status = b.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", b.log_tail());
    drop(client);
    env.db.drop_db().await;
}

#[tokio::test]
async fn two_live_processes_under_one_instance_id_fail_clearly_and_store_nothing_twice() {
    let env = IngestEnv::create(3).await;
    let data = dataset(47, 100_000, 3, 1_000);
    let total = data.messages.len() as i64;
    produce_all(&producer(&env.brokers), &env.topic, &data.messages).await;
    let client = env.db.client().await;
    let id = unique("twin");
    let mut first = spawn_member(&env, &id);
    env.wait_stored(&client, total / 10, Duration::from_secs(120)).await;
    let mut second = spawn_member(&env, &id);
    // The broker hands the id to the newest member and fences the older one.
    let status = eventually("the older twin exits", Duration::from_secs(30), || {
        let status = first.child.try_wait().expect("try_wait");
        async move { status }
    })
    .await;
    assert!(!status.success(), "a fenced process exits with an error: {status:?}");
    let log = std::fs::read_to_string(&first.log_path).unwrap();
    assert!(log.contains("fenced") && log.contains(&format!("INSTANCE_ID={id}")), "{}", first.log_tail());
    env.wait_stored(&client, total, Duration::from_secs(240)).await;
    assert_each_event_once(&client, &data).await;
    assert!(second.child.try_wait().expect("try_wait").is_none(), "the newer twin keeps running");
    let status = second.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", second.log_tail());
    drop(client);
    env.db.drop_db().await;
}
