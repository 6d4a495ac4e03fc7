//! The ingest spine against real Kafka and PostgreSQL: exactly once, whatever happens.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde_json::{json, Value};

use log_analyzer::startup;
use log_analyzer::telemetry;

use crate::helpers::*;

/// A fresh database (migrated) and a fresh topic, and the environment a child `ingest` needs.
pub struct IngestEnv {
    pub db: TestDatabase,
    pub topic: String,
    pub group: String,
    pub brokers: String,
}

impl IngestEnv {
    pub async fn create(partitions: u32) -> IngestEnv {
        Self::create_with_db(TestDatabase::create().await, partitions).await
    }

    pub async fn create_with_db(db: TestDatabase, partitions: u32) -> IngestEnv {
        let topic = unique("ingest");
        let group = unique("group");
        let partitions_text = partitions.to_string();
        let settings =
            settings(&[("DATABASE_URL", &db.url), ("KAFKA_TOPIC", &topic), ("KAFKA_PARTITIONS", &partitions_text)]);
        startup::migrate(&settings, &telemetry::discard()).await.expect("migrate");
        IngestEnv { db, topic, group, brokers: stack().kafka_brokers }
    }

    pub fn spawn_ingest(&self) -> ChildProcess {
        ChildProcess::spawn(
            &["ingest"],
            &[
                ("DATABASE_URL", &self.db.url),
                ("KAFKA_BROKERS", &self.brokers),
                ("KAFKA_TOPIC", &self.topic),
                ("KAFKA_GROUP", &self.group),
                ("BATCH_MAX_EVENTS", "2000"),
                ("ADMIN_ADDR", "127.0.0.1:0"),
            ],
        )
    }

    /// Waits until the stored offsets cover `total` messages.
    pub async fn wait_stored(&self, client: &tokio_postgres::Client, total: i64, timeout: Duration) {
        let topic = self.topic.clone();
        eventually(&format!("{total} messages stored"), timeout, || async {
            (stored_total(client, &topic).await >= total).then_some(())
        })
        .await;
    }
}

/// What the test expects to find for one event it sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub ts: DateTime<Utc>,
    pub level: i16,
    pub service: String,
    pub user_id: Option<String>,
    pub message: String,
    pub attrs: Value,
    pub partition: i32,
    pub offset: i64,
}

pub struct Dataset {
    pub messages: Vec<Outgoing>,
    pub events: HashMap<String, Expected>,
    /// (partition, offset) → reason code
    pub rejects: BTreeMap<(i32, i64), &'static str>,
}

const SERVICES: [&str; 5] = ["checkout", "payments", "search-api", "认证服务", "édition"];
const LEVELS: [(&str, i16); 8] =
    [("trace", 0), ("DEBUG", 1), ("info", 2), ("Warning", 3), ("warn", 3), ("error", 4), ("FATAL", 5), ("critical", 5)];
const WORDS: [&str; 10] =
    ["timeout", "refused", "ok", "Überlauf", "接続", "🔥panic", "deadline_exceeded", "a", "user", "x9"];

/// `n` messages over `partitions` partitions; one in `reject_every` is malformed, cycling through
/// every reason code. Event ids (`eid`) are unique within the topic.
pub fn dataset(seed: u64, n: usize, partitions: i32, reject_every: usize) -> Dataset {
    let mut rng = Rng::new(seed);
    let now = Utc::now();
    let mut next_offset: HashMap<i32, i64> = HashMap::new();
    let mut messages = Vec::with_capacity(n);
    let mut events = HashMap::new();
    let mut rejects = BTreeMap::new();
    let mut bad_kind = 0;
    for i in 0..n {
        let partition = (rng.below(partitions as u64)) as i32;
        let offset = {
            let o = next_offset.entry(partition).or_insert(0);
            *o += 1;
            *o - 1
        };
        let kafka_ts = now.timestamp_millis() - rng.below(600_000) as i64;
        if reject_every > 0 && i % reject_every == reject_every - 1 {
            let (payload, reason) = malformed(bad_kind, &now);
            bad_kind += 1;
            rejects.insert((partition, offset), reason);
            messages.push(Outgoing { partition, timestamp_ms: kafka_ts, payload });
            continue;
        }
        let eid = format!("e{seed}-{i}");
        let (level_name, level) = LEVELS[rng.below(LEVELS.len() as u64) as usize];
        let service = SERVICES[rng.below(SERVICES.len() as u64) as usize];
        let words: Vec<&str> = (0..1 + rng.below(12)).map(|_| WORDS[rng.below(WORDS.len() as u64) as usize]).collect();
        let message = format!("{} #{i} \"quoted\" \\ tab\t", words.join(" "));
        let user_id = (rng.below(4) != 0).then(|| format!("user-{}", rng.below(50)));
        let event_ms = now.timestamp_millis() - rng.below(3_600_000) as i64;
        let event_ts = Utc.timestamp_millis_opt(event_ms).unwrap();
        let mut obj = json!({"level": level_name, "service": service, "message": message, "eid": eid});
        let ts = match i % 4 {
            0 => {
                obj["ts"] = json!(event_ts.to_rfc3339_opts(SecondsFormat::Millis, true));
                event_ts
            }
            1 => {
                obj["ts"] = json!(event_ms);
                event_ts
            }
            2 => {
                let offset = chrono::FixedOffset::east_opt(2 * 3600).unwrap();
                obj["ts"] = json!(event_ts.with_timezone(&offset).to_rfc3339_opts(SecondsFormat::Millis, false));
                event_ts
            }
            _ => Utc.timestamp_millis_opt(kafka_ts).unwrap(), // no ts: the Kafka timestamp
        };
        if let Some(u) = &user_id {
            obj["user_id"] = json!(u);
        }
        if i % 3 == 0 {
            obj["http"] = json!({"status": 500 + (i % 4), "path": "/api/ünïcode"});
            obj["latency_ms"] = json!(rng.below(10_000));
        }
        let mut attrs = obj.clone();
        for known in ["ts", "level", "service", "message", "user_id"] {
            attrs.as_object_mut().unwrap().remove(known);
        }
        events.insert(
            eid,
            Expected { ts, level, service: service.to_string(), user_id, message, attrs, partition, offset },
        );
        messages.push(Outgoing { partition, timestamp_ms: kafka_ts, payload: obj.to_string().into_bytes() });
    }
    Dataset { messages, events, rejects }
}

/// The `kind`-th malformed payload (cycling over every reason code) and its expected reason.
fn malformed(kind: usize, now: &DateTime<Utc>) -> (Vec<u8>, &'static str) {
    match kind % 9 {
        0 => (vec![0xc3, 0x28, b'{', b'}'], "not_utf8"),
        1 => (b"{\"level\": \"info\", ".to_vec(), "not_json"),
        2 => (b"[\"level\", \"info\"]".to_vec(), "not_object"),
        3 => (br#"{"level":"info","service":"no message"}"#.to_vec(), "missing_field"),
        4 => (br#"{"level":"loud","service":"s","message":"m"}"#.to_vec(), "bad_level"),
        5 => (br#"{"ts":"26/11/2026","level":"info","service":"s","message":"m"}"#.to_vec(), "bad_ts"),
        6 => {
            let ts = (*now - chrono::Duration::days(400)).timestamp_millis();
            (format!(r#"{{"ts":{ts},"level":"info","service":"s","message":"m"}}"#).into_bytes(), "ts_out_of_range")
        }
        7 => {
            let big = "x".repeat(20_000);
            (format!(r#"{{"level":"info","service":"s","message":"{big}"}}"#).into_bytes(), "too_large")
        }
        _ => (br#"{"level":"info","service":"","message":"m"}"#.to_vec(), "bad_field"),
    }
}

/// Every stored event, by eid (panics on a duplicate eid).
pub async fn stored_events(client: &tokio_postgres::Client) -> HashMap<String, Expected> {
    let rows = client
        .query(
            "SELECT attrs->>'eid', ts, level, service, user_id, message, attrs, \"partition\", \"offset\", tokens FROM logs",
            &[],
        )
        .await
        .unwrap();
    let mut out = HashMap::with_capacity(rows.len());
    for row in rows {
        let eid: String = row.get(0);
        let message: String = row.get(5);
        let tokens: Vec<String> = row.get(9);
        assert_eq!(tokens, actors::domain::tokenize(&message), "stored tokens of {eid}");
        let e = Expected {
            ts: row.get(1),
            level: row.get(2),
            service: row.get(3),
            user_id: row.get(4),
            message,
            attrs: row.get(6),
            partition: row.get(7),
            offset: row.get(8),
        };
        assert!(out.insert(eid.clone(), e).is_none(), "event {eid} stored twice");
    }
    out
}

/// Every stored event id, checking none is there twice.
pub async fn stored_ids(client: &tokio_postgres::Client) -> std::collections::HashSet<String> {
    let rows = client.query("SELECT attrs->>'eid' FROM logs", &[]).await.unwrap();
    let mut ids = std::collections::HashSet::with_capacity(rows.len());
    for row in rows {
        let eid: String = row.get(0);
        assert!(ids.insert(eid.clone()), "event {eid} stored twice");
    }
    ids
}

async fn stored_rejects(client: &tokio_postgres::Client) -> BTreeMap<(i32, i64), String> {
    let rows = client.query("SELECT \"partition\", \"offset\", reason FROM log_rejects", &[]).await.unwrap();
    rows.iter().map(|r| ((r.get(0), r.get(1)), r.get(2))).collect()
}

#[tokio::test]
async fn ten_thousand_events_land_exactly_with_every_field_and_every_reject_reason() {
    let env = IngestEnv::create(3).await;
    let data = dataset(7, 10_000, 3, 100);
    assert_eq!(data.rejects.len(), 100);
    produce_all(&producer(&env.brokers), &env.topic, &data.messages).await;
    let mut ingest = env.spawn_ingest();
    let client = env.db.client().await;
    env.wait_stored(&client, data.messages.len() as i64, Duration::from_secs(120)).await;

    let stored = stored_events(&client).await;
    assert_eq!(stored.len(), data.events.len(), "valid events stored");
    for (eid, want) in &data.events {
        let got = stored.get(eid).unwrap_or_else(|| panic!("event {eid} missing"));
        assert_eq!(got, want, "event {eid}");
    }
    let rejects = stored_rejects(&client).await;
    let want: BTreeMap<(i32, i64), String> = data.rejects.iter().map(|(k, v)| (*k, v.to_string())).collect();
    assert_eq!(rejects, want);
    let reasons: std::collections::BTreeSet<&String> = rejects.values().collect();
    assert_eq!(reasons.len(), 9, "every reason code is exercised");

    let status = ingest.terminate(Duration::from_secs(10));
    assert!(status.success(), "ingest exit: {status:?}\n{}", ingest.log_tail());
    drop(client);
    env.db.drop_db().await;
}

/// Produces `data` in slices with pauses, so that it flows while the test does things to ingest.
fn produce_flowing(brokers: String, topic: String, messages: Vec<Outgoing>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let producer = producer(&brokers);
        for slice in messages.chunks(10_000) {
            produce_all(&producer, &topic, slice).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// Checks the end state of a run: every valid event once, every reject once, nothing else.
async fn assert_exactly_once(client: &tokio_postgres::Client, data: &Dataset) {
    let ids = stored_ids(client).await;
    let missing: Vec<&String> = data.events.keys().filter(|eid| !ids.contains(*eid)).take(5).collect();
    assert!(missing.is_empty(), "events lost, e.g. {missing:?}");
    assert_eq!(ids.len(), data.events.len(), "unexpected extra events");
    let rejects = stored_rejects(client).await;
    assert_eq!(rejects.len(), data.rejects.len(), "dead letters");
}

#[tokio::test]
async fn kill_minus_nine_three_times_while_events_flow_loses_and_duplicates_nothing() {
    let env = IngestEnv::create(4).await;
    let data = dataset(11, 200_000, 4, 1_000);
    let total = data.messages.len() as i64;
    let messages = data.messages.clone();
    let producing = produce_flowing(env.brokers.clone(), env.topic.clone(), messages);
    let client = env.db.client().await;
    let mut rng = Rng::new(99);
    let mut ingest = env.spawn_ingest();
    for round in 0..3 {
        // A random moment: once a random share of this round's stretch is stored.
        let target = total * (round * 25 + 10 + rng.below(15) as i64) / 100;
        env.wait_stored(&client, target, Duration::from_secs(180)).await;
        ingest.kill9();
        ingest = env.spawn_ingest();
    }
    producing.await.unwrap();
    env.wait_stored(&client, total, Duration::from_secs(240)).await;
    assert_exactly_once(&client, &data).await;
    let status = ingest.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", ingest.log_tail());
    drop(client);
    env.db.drop_db().await;
}

#[tokio::test]
async fn scaling_the_group_up_and_down_loses_and_duplicates_nothing_and_sigterm_exits_fast() {
    let env = IngestEnv::create(6).await;
    let data = dataset(23, 120_000, 6, 500);
    let total = data.messages.len() as i64;
    let messages = data.messages.clone();
    let producing = produce_flowing(env.brokers.clone(), env.topic.clone(), messages);
    let client = env.db.client().await;
    let mut a = env.spawn_ingest();
    let mut b = env.spawn_ingest();
    env.wait_stored(&client, total / 4, Duration::from_secs(120)).await;
    a.kill9();
    env.wait_stored(&client, total / 2, Duration::from_secs(120)).await;
    let mut c = env.spawn_ingest();
    producing.await.unwrap();
    env.wait_stored(&client, total, Duration::from_secs(180)).await;
    assert_exactly_once(&client, &data).await;
    for process in [&mut b, &mut c] {
        let started = std::time::Instant::now();
        let status = process.terminate(Duration::from_secs(10));
        assert!(status.success(), "{}", process.log_tail());
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    let b_log = std::fs::read_to_string(&b.log_path).unwrap();
    assert!(b_log.contains("partitions assigned"), "b never owned partitions");
    drop(client);
    env.db.drop_db().await;
}

#[tokio::test]
async fn poison_and_oversize_messages_are_dead_lettered_and_the_partition_keeps_flowing() {
    let env = IngestEnv::create(1).await;
    let now = Utc::now().timestamp_millis();
    let event = |i: usize| Outgoing {
        partition: 0,
        timestamp_ms: now,
        payload: format!(r#"{{"level":"info","service":"s","message":"m{i}","eid":"p{i}"}}"#).into_bytes(),
    };
    let mut rng = Rng::new(5);
    let random: Vec<u8> = (0..3_000).map(|_| rng.below(256) as u8).collect();
    let huge = format!(r#"{{"level":"info","service":"s","message":"{}"}}"#, "z".repeat(5 * 1024 * 1024)).into_bytes();
    let huge_len = huge.len() as i32;
    let mut messages: Vec<Outgoing> = (0..10).map(event).collect();
    messages.push(Outgoing { partition: 0, timestamp_ms: now, payload: huge });
    messages.push(Outgoing { partition: 0, timestamp_ms: now, payload: random });
    messages.extend((10..20).map(event));
    produce_all(&producer(&env.brokers), &env.topic, &messages).await;
    let mut ingest = env.spawn_ingest();
    let client = env.db.client().await;
    env.wait_stored(&client, messages.len() as i64, Duration::from_secs(60)).await;

    let ids = stored_ids(&client).await;
    assert_eq!(ids.len(), 20, "every valid event, before and after the poison, is stored");
    let rows = client
        .query("SELECT \"offset\", reason, raw_len, octet_length(raw) FROM log_rejects ORDER BY \"offset\"", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let first: (i64, String, i32, i32) = (rows[0].get(0), rows[0].get(1), rows[0].get(2), rows[0].get(3));
    assert_eq!(first, (10, "too_large".to_string(), huge_len, 4096));
    let second_reason: String = rows[1].get(1);
    assert!(["not_utf8", "not_json"].contains(&second_reason.as_str()), "{second_reason}");
    assert_eq!(rows[1].get::<_, i64>(0), 11);
    let status = ingest.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", ingest.log_tail());
    drop(client);
    env.db.drop_db().await;
}

#[tokio::test]
async fn the_fence_rejects_a_batch_that_does_not_start_at_the_stored_offset() {
    use actors::domain::ParseRules;
    use actors::ingest::{BatchBuilder, RawMessage};
    use actors::ports::{EventStore, OffsetStore, StoreError};
    use log_analyzer::db::event_store::PgEventStore;
    use log_analyzer::db::offset_store::PgOffsetStore;
    use std::sync::Arc;

    let env = IngestEnv::create(1).await;
    let topic: Arc<str> = Arc::from(env.topic.as_str());
    let offsets = PgOffsetStore::new(&env.db.url).load(&env.topic, &[0]).await.unwrap();
    assert_eq!(offsets.get(&0), Some(&0));
    let batch = |from: i64, to: i64| {
        let mut b = BatchBuilder::new(topic.clone(), 0, from, ParseRules::default());
        for offset in from..to {
            let payload = format!(r#"{{"level":"info","service":"s","message":"m","eid":"f{offset}"}}"#);
            b.push(
                RawMessage { offset, timestamp: Some(Utc::now()), payload: Some(payload.into_bytes()), service: None },
                Utc::now(),
            );
        }
        b.take(Arc::default())
    };
    let client = env.db.client().await;
    let count = || async { client.query_one("SELECT count(*) FROM logs", &[]).await.unwrap().get::<_, i64>(0) };

    let mut store = PgEventStore::new(&env.db.url);
    store.write(&batch(0, 3)).await.unwrap();
    assert_eq!(count().await, 3);
    // A zombie replaying the same range, and a batch that skips ahead: both refused, nothing written.
    assert_eq!(store.write(&batch(0, 3)).await, Err(StoreError::Fenced { batch_from: 0, stored: Some(3) }));
    assert_eq!(store.write(&batch(5, 7)).await, Err(StoreError::Fenced { batch_from: 5, stored: Some(3) }));
    assert_eq!(count().await, 3);

    // Two writers racing on the same batch: exactly one wins.
    let racing = batch(3, 6);
    let mut other = PgEventStore::new(&env.db.url);
    let (r1, r2) = tokio::join!(store.write(&racing), other.write(&racing));
    assert_eq!([&r1, &r2].iter().filter(|r| r.is_ok()).count(), 1, "{r1:?} {r2:?}");
    assert!([&r1, &r2].iter().any(|r| matches!(r, Err(StoreError::Fenced { .. }))));
    assert_eq!(count().await, 6);
    let next: i64 = client.query_one("SELECT next_offset FROM kafka_offsets", &[]).await.unwrap().get(0);
    assert_eq!(next, 6);
    drop(client);
    env.db.drop_db().await;
}

#[tokio::test]
async fn a_postgres_outage_pauses_ingest_which_resumes_by_itself_without_loss() {
    let pg = OwnedPostgres::start();
    let env = IngestEnv::create_with_db(TestDatabase::create_on(&pg.admin_url()).await, 3).await;
    let data = dataset(31, 60_000, 3, 400);
    let total = data.messages.len() as i64;
    let messages = data.messages.clone();
    let producing = produce_flowing(env.brokers.clone(), env.topic.clone(), messages);
    let mut ingest = env.spawn_ingest();
    {
        let client = env.db.client().await;
        env.wait_stored(&client, total / 5, Duration::from_secs(120)).await;
    }
    pg.halt();
    // The database is gone for ~10 s while events keep arriving; ingest must neither die nor skip.
    let outage_end = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < outage_end {
        assert!(ingest.child.try_wait().unwrap().is_none(), "ingest died during the outage:\n{}", ingest.log_tail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pg.resume();
    producing.await.unwrap();
    let client = env.db.client().await;
    env.wait_stored(&client, total, Duration::from_secs(120)).await;
    assert_exactly_once(&client, &data).await;
    let log = std::fs::read_to_string(&ingest.log_path).unwrap();
    assert!(log.contains("batch not stored yet; retrying"), "the outage was not noticed");
    let status = ingest.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", ingest.log_tail());
}
