//! The stack is real and the foundation works against it.

use std::time::Duration;

use chrono::{Days, Utc};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use log_analyzer::kafka::admin::{ensure_topic, TopicState};
use log_analyzer::startup::{self, PARTITIONS_AHEAD_DAYS};
use log_analyzer::telemetry;

use crate::helpers::{settings, stack, unique, TestDatabase};

#[tokio::test]
async fn kafka_round_trips_a_message_on_a_fresh_topic() {
    let brokers = stack().kafka_brokers;
    let topic = unique("smoke");
    assert_eq!(ensure_topic(&brokers, &topic, 1).await.unwrap(), TopicState::Created);
    assert_eq!(ensure_topic(&brokers, &topic, 1).await.unwrap(), TopicState::AlreadyExisted);

    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", &brokers).set("acks", "all").create().unwrap();
    let payload = format!("hello from {topic} ✓");
    let delivery = producer
        .send(FutureRecord::to(&topic).key("k").payload(&payload), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    assert_eq!((delivery.partition, delivery.offset), (0, 0));

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", unique("smoke_group"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(&topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&assignment).unwrap();
    let message =
        tokio::time::timeout(Duration::from_secs(20), consumer.recv()).await.expect("no message within 20 s").unwrap();
    assert_eq!(message.payload_view::<str>().unwrap().unwrap(), payload);
    assert_eq!(message.key(), Some(&b"k"[..]));
    assert_eq!(message.offset(), 0);
}

#[tokio::test]
async fn migrate_creates_tables_partitions_and_topic_and_is_idempotent() {
    let db = TestDatabase::create().await;
    let topic = unique("migrate");
    let settings = settings(&[("DATABASE_URL", &db.url), ("KAFKA_TOPIC", &topic), ("KAFKA_PARTITIONS", "4")]);
    let log = telemetry::discard();

    let first = startup::migrate(&settings, &log).await.unwrap();
    assert_eq!(
        first.applied.len(),
        6,
        "create_logs, daily_summary, offset_gaps, ingest_idempotency, search_indexes and logs_epoch"
    );
    assert_eq!(first.partitions_created as u64, PARTITIONS_AHEAD_DAYS + 2);
    assert_eq!(first.topic, TopicState::Created);

    let again = startup::migrate(&settings, &log).await.unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(again.partitions_created, 0);
    assert_eq!(again.topic, TopicState::AlreadyExisted);

    let client = db.client().await;
    for table in [
        "logs",
        "kafka_offsets",
        "log_rejects",
        "user_log_summary",
        "keyword_daily",
        "job_runs",
        "offset_gaps",
        "ingest_requests",
    ] {
        let found: i64 = client
            .query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = $1", &[&table])
            .await
            .unwrap()
            .get(0);
        assert_eq!(found, 1, "table {table} missing");
    }
    let today = Utc::now().date_naive();
    let mut expected: Vec<String> = Vec::new();
    let mut day = today - Days::new(1);
    while day <= today + Days::new(PARTITIONS_AHEAD_DAYS) {
        expected.push(format!("logs_{}", day.format("%Y%m%d")));
        day = day + Days::new(1);
    }
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'logs'::regclass ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let partitions: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(partitions, expected);

    // A row for today lands in today's partition, proving the ranges are right.
    client
        .execute(
            "INSERT INTO logs (ts, level, service, message, tokens, topic, partition, \"offset\") \
             VALUES (now(), 2, 's', 'm', '{}', 't', 0, 0)",
            &[],
        )
        .await
        .unwrap();
    let holder: String = client.query_one("SELECT tableoid::regclass::text FROM logs", &[]).await.unwrap().get(0);
    assert_eq!(holder, format!("logs_{}", today.format("%Y%m%d")));

    // The topic has the configured partition count.
    let consumer: StreamConsumer =
        ClientConfig::new().set("bootstrap.servers", &settings.kafka_brokers).create().unwrap();
    let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)).unwrap();
    assert_eq!(metadata.topics()[0].partitions().len(), 4);

    drop(client);
    db.drop_db().await;
}

#[tokio::test]
async fn redis_answers_ping_and_keeps_a_prefixed_key() {
    use bb8_redis::redis::AsyncCommands;
    let manager = bb8_redis::RedisConnectionManager::new(stack().redis_url).unwrap();
    let pool = bb8::Pool::builder().max_size(2).build(manager).await.unwrap();
    let mut conn = pool.get().await.unwrap();
    let pong: String = bb8_redis::redis::cmd("PING").query_async(&mut *conn).await.unwrap();
    assert_eq!(pong, "PONG");
    let key = format!("{}:smoke", unique("la_test"));
    let _: () = conn.set_ex(&key, "v", 60).await.unwrap();
    let got: String = conn.get(&key).await.unwrap();
    assert_eq!(got, "v");
    let _: () = conn.del(&key).await.unwrap();
}
