//! The incremental ranking of long windows (`db::ranking`) against real PostgreSQL: every answer is
//! the one a full count of the stored rows gives, as the window moves, late rows arrive, other
//! writers touch `logs`, and a recreated topic reuses offsets; and the kept counts are what answer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actors::domain::ParseRules;
use actors::ingest::{Batch, BatchBuilder, RawMessage};
use actors::ports::EventStore;
use actors::windows::{ErrorStats, KeywordSet, ServiceStats, WindowRange};
use chrono::{TimeZone, Utc};
use log_analyzer::db::event_store::PgEventStore;
use log_analyzer::db::ranking::RankingCounts;
use log_analyzer::db::stats::PgStats;
use serde_json::json;

use crate::helpers::*;

const HOUR: i64 = 3_600;

/// One batch of `partition` from `from`: each event (second, service, error?) gets the next offset.
fn batch(topic: &Arc<str>, partition: i32, from: i64, events: &[(i64, String, bool)]) -> Batch {
    let mut b = BatchBuilder::new(topic.clone(), partition, from, ParseRules::default());
    for (i, (second, service, error)) in events.iter().enumerate() {
        let level = if *error { "error" } else { "info" };
        let payload = json!({"ts": second * 1_000 + 250, "level": level, "service": service, "message": "m"});
        b.push(
            RawMessage {
                offset: from + i as i64,
                timestamp: Utc.timestamp_opt(*second, 0).single(),
                payload: Some(payload.to_string().into_bytes()),
                service: None,
            },
            Utc::now(),
        );
    }
    b.take(Arc::default())
}

/// Events spread over `[first, last)`: `n` of them, over `services` services, about one in 3 errors.
fn spread(rng: &mut Rng, n: usize, first: i64, last: i64, services: u64) -> Vec<(i64, String, bool)> {
    (0..n)
        .map(|_| {
            let second = first + rng.below((last - first) as u64) as i64;
            (second, format!("svc-{:04}", rng.below(services)), rng.below(3) == 0)
        })
        .collect()
}

/// The answer a full count of what is stored gives.
async fn counted(client: &tokio_postgres::Client, topic: &str, range: WindowRange, limit: usize) -> ErrorStats {
    let rows = client
        .query(
            "SELECT service, count(*), count(*) FILTER (WHERE level >= 4) FROM logs \
             WHERE topic = $1 AND ts >= to_timestamp($2) AND ts < to_timestamp($3) GROUP BY service",
            &[&topic, &(range.from as f64), &(range.to as f64)],
        )
        .await
        .unwrap();
    let services = rows.iter().map(|r| ServiceStats {
        service: r.get(0),
        total: r.get::<_, i64>(1) as u64,
        errors: r.get::<_, i64>(2) as u64,
    });
    ErrorStats::from_services(services, None, limit)
}

/// Writes fenced batches, each partition's from where the last ended.
struct Writer {
    store: PgEventStore,
    next: HashMap<i32, i64>,
    topic: Arc<str>,
}

impl Writer {
    async fn write(&mut self, partition: i32, events: Vec<(i64, String, bool)>) {
        let from = *self.next.get(&partition).unwrap_or(&0);
        self.store.write(&batch(&self.topic, partition, from, &events)).await.expect("a fenced batch");
        self.next.insert(partition, from + events.len() as i64);
    }
}

struct Ranked {
    stats: PgStats,
    client: tokio_postgres::Client,
    topic: String,
}

impl Ranked {
    /// Asks the window ending at `to` and checks it against a full count; returns how it was answered.
    async fn check(&self, to: i64, limit: usize, what: &str) -> RankingCounts {
        let range = WindowRange::ending_at(to, HOUR as u64);
        let answer = self.stats.errors(range, None, limit).await.unwrap();
        let expected = counted(&self.client, &self.topic, range, limit).await;
        assert!(expected.total > 0, "{what}: the test's window is empty");
        assert_eq!(answer, expected, "{what}");
        self.stats.ranking_counts()
    }
}

#[tokio::test]
async fn the_kept_ranking_of_an_hour_is_the_full_count_whatever_is_written_meanwhile() {
    let db = TestDatabase::create().await;
    log_analyzer::db::migrate::run_migrations(&db.url).await.expect("migrate");
    let topic_name = unique("ranking");
    let topic: Arc<str> = Arc::from(topic_name.as_str());
    let pool = log_analyzer::db::pool(&db.url, 2, Duration::from_secs(20));
    let ranked = Ranked {
        // Counts that cannot be kept are tried again at once (by default a length waits a minute).
        stats: PgStats::new(pool, vec![topic_name.clone()], Arc::new(KeywordSet::default()), Duration::from_secs(20))
            .pausing_rankings(Duration::ZERO),
        client: db.client().await,
        topic: topic_name.clone(),
    };
    let mut rng = Rng::new(16);
    let t0 = Utc::now().timestamp() - 600;
    let mut writer = Writer { store: PgEventStore::new(&db.url), next: HashMap::new(), topic: topic.clone() };
    // Registers the partitions' offsets the way ingest does before its first batch.
    ranked
        .client
        .execute(
            "INSERT INTO kafka_offsets (topic, \"partition\", next_offset) VALUES ($1, 0, 0), ($1, 1, 0)",
            &[&topic_name],
        )
        .await
        .unwrap();

    // An hour and a bit of 300 services, around the window ending at t0.
    writer.write(0, spread(&mut rng, 3_000, t0 - HOUR - 60, t0 + 60, 300)).await;
    writer.write(1, spread(&mut rng, 3_000, t0 - HOUR - 60, t0 + 60, 300)).await;
    let first = ranked.check(t0, 100, "counted in full").await;
    assert_eq!((first.counted, first.updated), (1, 0));

    // The window moves a second at a time; late rows land in the hour meanwhile, some on the very
    // seconds that leave or enter, on both partitions.
    for step in 1..=5 {
        let to = t0 + step;
        let mut late = spread(&mut rng, 40, to - HOUR, to, 300);
        late.push((to - HOUR - 1, "svc-edge".into(), true)); // left with this step: never counted
        late.push((to - HOUR, "svc-edge".into(), true)); // the window's first second
        late.push((to - 1, "svc-new".into(), false)); // its last second
        late.push((to, "svc-new".into(), false)); // just after it
        writer.write((step % 2) as i32, late).await;
        ranked.check(to, 100, &format!("step {step}")).await;
    }
    let moved = ranked.stats.ranking_counts();
    assert_eq!((moved.counted, moved.updated, moved.invalidated), (1, 5, 0), "the kept counts answered");

    // Every listed length sees the same kept counts; the same second asked again is unchanged.
    ranked.check(t0 + 5, 3, "a short listing").await;
    ranked.check(t0 + 5, 1_000, "every service").await;
    // Back a few seconds (within reach) and forward again.
    ranked.check(t0 + 2, 100, "back three seconds").await;
    ranked.check(t0 + 6, 100, "forward four").await;
    // An older window, far from the kept one: answered by the plain query, the kept counts untouched.
    ranked.check(t0 - 2_000, 100, "an hour long ago").await;
    let before = ranked.stats.ranking_counts();
    ranked.check(t0 + 7, 100, "live again").await;
    assert_eq!(ranked.stats.ranking_counts().updated, before.updated + 1, "the live counts were kept");

    // A writer that is not fenced (as `rejects replay` is): the epoch moves, the next answer counts
    // again, and exactly.
    ranked
        .client
        .execute(
            "INSERT INTO logs (ts, level, service, message, tokens, attrs, topic, \"partition\", \"offset\") \
             VALUES (to_timestamp($1), 5, 'svc-replayed', 'm', '{}', '{}', $2, -1, 1)",
            &[&((t0 - 100) as f64), &topic_name],
        )
        .await
        .unwrap();
    let after_replay = ranked.check(t0 + 8, 100, "after an unfenced insert").await;
    assert_eq!(after_replay.invalidated, before.invalidated + 1);
    assert_eq!(after_replay.counted, before.counted + 1);
    ranked.client.execute("DELETE FROM logs WHERE service = 'svc-replayed'", &[]).await.unwrap();
    ranked.check(t0 + 9, 100, "after an operator's DELETE").await;
    // Straight on a day's partition, not through `logs`: its own trigger moves the epoch.
    let day = format!("logs_{}", Utc.timestamp_opt(t0 - 100, 0).unwrap().format("%Y%m%d"));
    let before = ranked.stats.ranking_counts();
    let deleted = ranked
        .client
        .execute(
            &format!("DELETE FROM {day} WHERE service = 'svc-0007' AND ts > to_timestamp($1)"),
            &[&((t0 - 1_800) as f64)],
        )
        .await
        .unwrap();
    assert!(deleted > 0, "the test deletes rows of the window");
    ranked.check(t0 + 9, 100, "after a DELETE on the day's partition").await;
    assert_eq!(ranked.stats.ranking_counts().invalidated, before.invalidated + 1);

    // An operator moves partition 1 back (no gap recorded) and ingest stores its offsets again: the
    // rows it adds reuse offsets the counts hold.
    ranked
        .client
        .execute("UPDATE kafka_offsets SET next_offset = 0 WHERE topic = $1 AND \"partition\" = 1", &[&topic_name])
        .await
        .unwrap();
    let p1 = writer.next.insert(1, 0).unwrap();
    writer.write(1, spread(&mut rng, p1 as usize + 5, t0 + 9 - HOUR, t0 + 9, 300)).await;
    ranked.check(t0 + 9, 100, "after partition 1 was reset and stored again").await;
    assert_eq!(ranked.stats.ranking_counts().counted, before.counted + 2, "counted again after the reset");

    // The topic is recreated: partition 0 starts again at offset 0 (ingest records the jump in
    // offset_gaps) and its new rows reuse offsets the hour already holds. The answers stay exact: the
    // counts made while old rows carry offsets above the fence are not kept.
    ranked
        .client
        .batch_execute(&format!(
            "BEGIN; \
             INSERT INTO offset_gaps (topic, \"partition\", from_offset, to_offset) \
                 SELECT topic, \"partition\", next_offset, 0 FROM kafka_offsets WHERE topic = '{topic_name}' AND \"partition\" = 0; \
             UPDATE kafka_offsets SET next_offset = 0 WHERE topic = '{topic_name}' AND \"partition\" = 0; \
             COMMIT"
        ))
        .await
        .unwrap();
    writer.next.insert(0, 0);
    ranked.check(t0 + 10, 100, "after the jump back").await;
    for step in 11..=13 {
        writer.write(0, spread(&mut rng, 50, t0 + step - HOUR, t0 + step, 300)).await;
        ranked.check(t0 + step, 100, &format!("offsets reused, step {step}")).await;
    }
    // Once the new life's offsets pass every old one, the counts are kept again.
    writer.write(0, spread(&mut rng, 3_200, t0 + 14 - HOUR, t0 + 14, 300)).await;
    ranked.check(t0 + 14, 100, "past the old offsets").await;
    let kept_again = ranked.stats.ranking_counts();
    writer.write(1, spread(&mut rng, 30, t0 + 15 - HOUR, t0 + 15, 300)).await;
    ranked.check(t0 + 15, 100, "kept again").await;
    assert_eq!(ranked.stats.ranking_counts().updated, kept_again.updated + 1);

    // Questions of one length asked together (a dashboard's second and the next): each waits for the
    // other's update and is exact.
    let seconds: Vec<i64> = vec![t0 + 18, t0 + 16, t0 + 20, t0 + 17, t0 + 19, t0 + 16];
    let answers = futures::future::join_all(
        seconds.iter().map(|&to| ranked.stats.errors(WindowRange::ending_at(to, HOUR as u64), None, 100)),
    )
    .await;
    for (to, answer) in seconds.iter().zip(answers) {
        let range = WindowRange::ending_at(*to, HOUR as u64);
        assert_eq!(answer.unwrap(), counted(&ranked.client, &topic_name, range, 100).await, "asked together: {to}");
    }

    drop(ranked);
    db.drop_db().await;
}

#[tokio::test]
async fn retention_dropping_a_day_under_a_kept_window_is_seen_by_the_next_answer() {
    let db = TestDatabase::create().await;
    log_analyzer::db::migrate::run_migrations(&db.url).await.expect("migrate");
    let topic_name = unique("ranking_drop");
    let topic: Arc<str> = Arc::from(topic_name.as_str());
    let pool = log_analyzer::db::pool(&db.url, 2, Duration::from_secs(20));
    let ranked = Ranked {
        stats: PgStats::new(pool, vec![topic_name.clone()], Arc::new(KeywordSet::default()), Duration::from_secs(20)),
        client: db.client().await,
        topic: topic_name.clone(),
    };
    ranked
        .client
        .execute("INSERT INTO kafka_offsets (topic, \"partition\", next_offset) VALUES ($1, 0, 0)", &[&topic_name])
        .await
        .unwrap();
    // An hour across a midnight three days ago: half its rows in each day's partition.
    let midnight = (Utc::now() - chrono::Duration::days(3)).date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
    let to = midnight.timestamp() + 1_800;
    let mut rng = Rng::new(17);
    let mut writer = Writer { store: PgEventStore::new(&db.url), next: HashMap::new(), topic };
    writer.write(0, spread(&mut rng, 2_000, to - HOUR - 10, to + 10, 50)).await;
    ranked.check(to, 100, "counted in full").await;
    ranked.check(to + 1, 100, "kept").await;
    assert_eq!(ranked.stats.ranking_counts().updated, 1);

    let dropped =
        log_analyzer::db::daily_jobs::drop_partitions_before(&ranked.client, midnight.date_naive()).await.unwrap();
    assert_eq!(dropped, vec![midnight.date_naive() - chrono::Days::new(1)]);
    ranked.check(to + 2, 100, "after the day before midnight was dropped").await;
    let counts = ranked.stats.ranking_counts();
    assert_eq!((counts.invalidated, counts.counted), (1, 2), "{counts:?}");

    drop(ranked);
    db.drop_db().await;
}
