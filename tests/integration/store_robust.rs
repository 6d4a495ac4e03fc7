//! Ingest against a PostgreSQL that hangs, rows it refuses, and offsets Kafka no longer has.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api::spawn_role_with;
use crate::helpers::*;
use crate::ingest::{dataset, stored_ids, IngestEnv};

/// `/readyz` of a process, whatever its status code.
async fn readyz(port: u16) -> Option<(u16, Value)> {
    let (status, body) = http(port, "GET", "/readyz", b"", &[]).await?;
    Some((status, serde_json::from_slice(&body).ok()?))
}

/// Polls a child's log until `needle` shows up.
async fn log_shows(child: &ChildProcess, needle: &str, timeout: Duration) {
    eventually(&format!("{needle:?} in the log"), timeout, || async {
        std::fs::read_to_string(&child.log_path).unwrap_or_default().contains(needle).then_some(())
    })
    .await;
}

async fn dead_letters(client: &tokio_postgres::Client, reason: &str) -> Vec<(i64, String, Vec<u8>)> {
    client
        .query("SELECT \"offset\", detail, raw FROM log_rejects WHERE reason = $1 ORDER BY \"offset\"", &[&reason])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn a_hung_postgres_is_reported_within_5_s_and_loses_or_doubles_nothing_after_it_wakes() {
    let pg = OwnedPostgres::start();
    let env = IngestEnv::create_with_db(TestDatabase::create_on(&pg.admin_url()).await, 2).await;
    let data = dataset(61, 40_000, 2, 500);
    let total = data.messages.len() as i64;
    let prefix = unique("la_hung");
    let redis = stack().redis_url;
    let run = spawn_role_with(
        &env,
        "run",
        &redis,
        &prefix,
        &[("DATABASE_WRITE_TIMEOUT_MS", "3000"), ("DATABASE_TIMEOUT_MS", "1000"), ("BATCH_MAX_EVENTS", "2000")],
    );
    let producing = {
        let (brokers, topic, messages) = (env.brokers.clone(), env.topic.clone(), data.messages.clone());
        tokio::spawn(async move {
            let producer = producer(&brokers);
            for slice in messages.chunks(4_000) {
                produce_all(&producer, &topic, slice).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    {
        let client = env.db.client().await;
        env.wait_stored(&client, total / 5, Duration::from_secs(120)).await;
    }
    let port = run.port;
    let (status, ready) = readyz(port).await.expect("readyz");
    assert_eq!((status, ready["ingest"]["state"].clone()), (200, json!("flowing")), "{ready}");

    pg.freeze();
    let frozen_at = Instant::now();
    let ready = eventually("readyz to name the hung PostgreSQL", Duration::from_secs(5), || async move {
        let (status, ready) = readyz(port).await?;
        (status == 503 && ready["dependencies"]["postgres"] == "down" && ready["ingest"]["waiting_on"] == "postgres")
            .then_some(ready)
    })
    .await;
    let noticed = frozen_at.elapsed();
    eprintln!("readyz named the hung PostgreSQL {} ms after the freeze", noticed.as_millis());
    assert!(noticed < Duration::from_secs(5), "took {noticed:?}: {ready}");
    assert_eq!(ready["ingest"]["state"], "stalled", "{ready}");
    // Events keep arriving: each partition's consumer fills up and the source stops fetching it.
    eventually("partitions paused", Duration::from_secs(30), || async move {
        let (_, ready) = readyz(port).await?;
        (ready["ingest"]["paused"].as_array()?.len() == 2).then_some(())
    })
    .await;
    // Past the write timeout: the writers give up on their connections and retry on fresh ones.
    log_shows(&run.process, "did not finish the batch within 3000 ms", Duration::from_secs(15)).await;
    pg.thaw();

    producing.await.unwrap();
    let client = env.db.client().await;
    env.wait_stored(&client, total, Duration::from_secs(180)).await;
    let ids = stored_ids(&client).await;
    let missing: Vec<&String> = data.events.keys().filter(|eid| !ids.contains(*eid)).take(5).collect();
    assert!(missing.is_empty(), "events lost, e.g. {missing:?}");
    assert_eq!(ids.len(), data.events.len(), "events doubled");
    let rejects: i64 = client.query_one("SELECT count(*) FROM log_rejects", &[]).await.unwrap().get(0);
    assert_eq!(rejects as usize, data.rejects.len());
    let (status, ready) = eventually("ready again", Duration::from_secs(30), || async move {
        readyz(port).await.filter(|(status, ready)| *status == 200 && ready["ingest"]["state"] == "flowing")
    })
    .await;
    assert_eq!(ready["dependencies"]["postgres"], "up", "{status} {ready}");
    let mut run = run;
    let status = run.process.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", run.process.log_tail());
}

#[tokio::test]
async fn a_postgres_hung_during_assignment_neither_blocks_shutdown_nor_ingest_after_it_wakes() {
    let pg = OwnedPostgres::start();
    let env = IngestEnv::create_with_db(TestDatabase::create_on(&pg.admin_url()).await, 1).await;
    let spawn = || {
        ChildProcess::spawn(
            &["ingest"],
            &[
                ("DATABASE_URL", &env.db.url),
                ("KAFKA_BROKERS", &env.brokers),
                ("KAFKA_TOPIC", &env.topic),
                ("KAFKA_GROUP", &env.group),
                ("ADMIN_ADDR", "127.0.0.1:0"),
                ("DATABASE_WRITE_TIMEOUT_MS", "2000"),
            ],
        )
    };
    pg.freeze();
    let mut ingest = spawn();
    // The offset load in the rebalance callback gives up and retries instead of hanging the poll thread.
    log_shows(&ingest, "cannot load stored offsets", Duration::from_secs(30)).await;
    let asked = Instant::now();
    let status = ingest.terminate(Duration::from_secs(15));
    assert!(status.success(), "{}", ingest.log_tail());
    assert!(asked.elapsed() < Duration::from_secs(15));
    pg.thaw();

    let data = dataset(67, 2_000, 1, 0);
    produce_all(&producer(&env.brokers), &env.topic, &data.messages).await;
    let mut ingest = spawn();
    let client = env.db.client().await;
    env.wait_stored(&client, data.messages.len() as i64, Duration::from_secs(60)).await;
    assert_eq!(stored_ids(&client).await.len(), data.events.len());
    let status = ingest.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", ingest.log_tail());
    drop(client);
    env.db.drop_db().await;
}

#[tokio::test]
async fn rows_postgres_refuses_become_store_rejected_dead_letters_and_the_partition_flows_on() {
    let env = IngestEnv::create(1).await;
    let client = env.db.client().await;
    client
        .batch_execute("ALTER TABLE logs ADD CONSTRAINT no_poison CHECK (message NOT LIKE '%poison%')")
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let message = |i: usize| {
        let text = if i % 97 == 13 { format!("poison pill {i}") } else { format!("fine {i}") };
        let payload = if i % 250 == 7 {
            b"{not json".to_vec()
        } else {
            json!({"level": "info", "service": "s", "message": text, "eid": format!("r{i}")}).to_string().into_bytes()
        };
        Outgoing { partition: 0, timestamp_ms: now, payload }
    };
    let first: Vec<Outgoing> = (0..3_000).map(message).collect();
    produce_all(&producer(&env.brokers), &env.topic, &first).await;
    let mut ingest = env.spawn_ingest();
    env.wait_stored(&client, first.len() as i64, Duration::from_secs(90)).await;

    let poison: Vec<i64> = (0..3_000).filter(|i| i % 97 == 13 && i % 250 != 7).map(|i| i as i64).collect();
    let junk: Vec<i64> = (0..3_000).filter(|i| i % 250 == 7).map(|i| i as i64).collect();
    let ids = stored_ids(&client).await;
    let want: std::collections::HashSet<String> =
        (0..3_000_i64).filter(|i| !poison.contains(i) && !junk.contains(i)).map(|i| format!("r{i}")).collect();
    assert_eq!(ids, want, "every good event stored once");
    let refused = dead_letters(&client, "store_rejected").await;
    assert_eq!(refused.iter().map(|r| r.0).collect::<Vec<_>>(), poison);
    for (offset, detail, raw) in &refused {
        assert!(detail.contains("no_poison"), "offset {offset}: {detail}");
        let raw: Value = serde_json::from_slice(raw).unwrap();
        assert_eq!(raw["message"], format!("poison pill {offset}"));
        assert_eq!(raw["eid"], format!("r{offset}"));
    }
    assert_eq!(dead_letters(&client, "not_json").await.len(), junk.len());

    // The partition keeps flowing afterwards.
    let more: Vec<Outgoing> = (0..500)
        .map(|k| Outgoing {
            partition: 0,
            timestamp_ms: now,
            payload: json!({"level": "warn", "service": "s", "message": "after", "eid": format!("after{k}")})
                .to_string()
                .into_bytes(),
        })
        .collect();
    produce_all(&producer(&env.brokers), &env.topic, &more).await;
    env.wait_stored(&client, 3_500, Duration::from_secs(60)).await;
    assert_eq!(stored_ids(&client).await.len(), want.len() + 500);
    let status = ingest.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", ingest.log_tail());
    drop(client);
    env.db.drop_db().await;
}

/// Deletes the partition's messages before `before` (as retention does), through the admin API.
async fn delete_before(brokers: &str, topic: &str, partition: i32, before: i64) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", brokers).create().expect("admin client");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, rdkafka::Offset::Offset(before)).unwrap();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(15)));
    let result = admin.delete_records(&tpl, &options).await.expect("delete_records");
    let element = result.find_partition(topic, partition).expect("partition in the answer");
    assert_eq!(element.error(), Ok(()), "delete_records");
    assert_eq!(element.offset(), rdkafka::Offset::Offset(before), "new low watermark");
}

#[tokio::test]
async fn offsets_deleted_before_they_were_stored_are_a_recorded_gap_not_a_silent_skip() {
    let env = IngestEnv::create(1).await;
    let data = dataset(71, 300, 1, 0);
    let producer = producer(&env.brokers);
    produce_all(&producer, &env.topic, &data.messages[..100]).await;
    let admin_port = free_port();
    let admin_addr = format!("127.0.0.1:{admin_port}");
    let spawn = || {
        ChildProcess::spawn(
            &["ingest"],
            &[
                ("DATABASE_URL", &env.db.url),
                ("KAFKA_BROKERS", &env.brokers),
                ("KAFKA_TOPIC", &env.topic),
                ("KAFKA_GROUP", &env.group),
                ("ADMIN_ADDR", &admin_addr),
            ],
        )
    };
    let mut ingest = spawn();
    let client = env.db.client().await;
    env.wait_stored(&client, 100, Duration::from_secs(60)).await;
    let status = ingest.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", ingest.log_tail());

    // While ingest is away, 200 more arrive and retention deletes everything before 150.
    produce_all(&producer, &env.topic, &data.messages[100..300]).await;
    delete_before(&env.brokers, &env.topic, 0, 150).await;
    let mut ingest = spawn();
    env.wait_stored(&client, 300, Duration::from_secs(60)).await;

    let gaps = client
        .query("SELECT topic, \"partition\", from_offset, to_offset FROM offset_gaps", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i32>(1), r.get::<_, i64>(2), r.get::<_, i64>(3)))
        .collect::<Vec<_>>();
    assert_eq!(gaps, vec![(env.topic.clone(), 0, 100, 150)]);
    let offsets: std::collections::BTreeSet<i64> =
        client.query("SELECT \"offset\" FROM logs", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    let want: std::collections::BTreeSet<i64> = (0..100).chain(150..300).collect();
    assert_eq!(offsets, want, "everything Kafka still had is stored, once");
    assert_eq!(stored_ids(&client).await.len(), 250);

    let log = std::fs::read_to_string(&ingest.log_path).unwrap();
    assert!(log.contains("stored offset no longer in Kafka"), "no error line about the gap");
    let (_, metrics) = http(admin_port, "GET", "/metrics", b"", &[]).await.expect("metrics");
    let metrics = String::from_utf8_lossy(&metrics).to_string();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("log_analyzer_offset_gaps_total") && l.contains(&env.topic))
        .unwrap_or_else(|| panic!("no gap metric in:\n{metrics}"));
    assert!(line.ends_with(" 1"), "{line}");

    // The operator lists it.
    let listed = std::process::Command::new(env!("CARGO_BIN_EXE_log-analyzer"))
        .args(["gaps", "list", "--topic", &env.topic])
        .env("DATABASE_URL", &env.db.url)
        .env("LOG_LEVEL", "error")
        .output()
        .expect("gaps list");
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(listed.contains(&format!("{}/0", env.topic)) && listed.contains("100 -> 150"), "{listed}");
    assert!(listed.contains("50 messages never stored"), "{listed}");

    let status = ingest.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", ingest.log_tail());
    drop(client);
    env.db.drop_db().await;
}

#[tokio::test]
async fn offsets_deleted_while_ingest_is_behind_are_reported_by_kafka_and_recorded_as_a_gap() {
    let pg = OwnedPostgres::start();
    let env = IngestEnv::create_with_db(TestDatabase::create_on(&pg.admin_url()).await, 1).await;
    let data = dataset(73, 31_000, 1, 0);
    let producer = producer(&env.brokers);
    produce_all(&producer, &env.topic, &data.messages[..1_000]).await;
    let admin_port = free_port();
    let admin_addr = format!("127.0.0.1:{admin_port}");
    let mut ingest = ChildProcess::spawn(
        &["ingest"],
        &[
            ("DATABASE_URL", &env.db.url),
            ("KAFKA_BROKERS", &env.brokers),
            ("KAFKA_TOPIC", &env.topic),
            ("KAFKA_GROUP", &env.group),
            ("ADMIN_ADDR", &admin_addr),
            ("BATCH_MAX_EVENTS", "2000"),
            ("DATABASE_WRITE_TIMEOUT_MS", "2000"),
        ],
    );
    {
        let client = env.db.client().await;
        env.wait_stored(&client, 1_000, Duration::from_secs(60)).await;
    }
    // PostgreSQL hangs; events keep coming until the partition's consumer is full and Kafka pauses it…
    pg.freeze();
    produce_all(&producer, &env.topic, &data.messages[1_000..]).await;
    eventually("the consumer's queue full", Duration::from_secs(60), || async move {
        let (_, body) = http(admin_port, "GET", "/metrics", b"", &[]).await?;
        let text = String::from_utf8_lossy(&body).to_string();
        let depth: f64 = text
            .lines()
            .find(|l| l.starts_with("log_analyzer_actor_mailbox_depth") && l.contains("actor=\"consumer\""))?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()?;
        (depth >= 4_000.0).then_some(())
    })
    .await;
    // …and meanwhile retention deletes what it has not fetched yet.
    delete_before(&env.brokers, &env.topic, 0, 25_000).await;
    pg.thaw();

    let client = env.db.client().await;
    env.wait_stored(&client, 31_000, Duration::from_secs(120)).await;
    let gaps = client
        .query("SELECT from_offset, to_offset FROM offset_gaps WHERE topic = $1", &[&env.topic])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
        .collect::<Vec<_>>();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let (from, to) = gaps[0];
    assert!((1_000..25_000).contains(&from) && to == 25_000, "{gaps:?}");
    // Every offset is stored once or inside the recorded gap.
    let offsets: Vec<i64> =
        client.query("SELECT \"offset\" FROM logs ORDER BY 1", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    let want: Vec<i64> = (0..from).chain(25_000..31_000).collect();
    assert_eq!(offsets.len(), want.len(), "stored offsets vs. everything outside the gap");
    assert!(offsets == want, "first difference near {:?}", offsets.iter().zip(&want).find(|(a, b)| a != b));
    let log = std::fs::read_to_string(&ingest.log_path).unwrap();
    assert!(log.contains("kafka reports offsets out of range"), "{}", ingest.log_tail());
    assert!(log.contains("stored offset no longer in Kafka"), "{}", ingest.log_tail());
    let status = ingest.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", ingest.log_tail());
}
