//! The embedded write path on a real SQLite file in a fresh temp directory: the event store's fence,
//! the offset store across a restart, and the queue → consumers → writer → SQLite pipeline driven
//! through the intake use case (no HTTP).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actors::domain::ParseRules;
use actors::ingest::{BatchBuilder, RawMessage};
use actors::intake::{Intake, IntakeOptions, IntakeOutcome, Lines};
use actors::ports::{EventStore, OffsetStore, StoreError};
use chrono::Utc;
use diesel::sql_types::BigInt;
use diesel::RunQueryDsl;
use log_analyzer::config::Settings;
use log_analyzer::embedded::EmbeddedIngest;
use log_analyzer::sqlite::event_store::SqliteEventStore;
use log_analyzer::sqlite::offset_store::SqliteOffsetStore;
use log_analyzer::sqlite::SqliteDb;

use crate::helpers::unique;

/// A temp directory removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(unique("la_embedded"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn migrated(dir: &TempDir) -> SqliteDb {
    let db = SqliteDb::at(dir.0.join("la.db"));
    log_analyzer::sqlite::migrate::run_migrations(&db).await.expect("migrations");
    db
}

/// One number the SQL `expr` (a scalar subquery) comes to.
async fn number(db: &SqliteDb, expr: &str) -> i64 {
    let expr = expr.to_owned();
    db.read(move |conn| diesel::select(diesel::dsl::sql::<BigInt>(&expr)).get_result(conn)).await.expect("query")
}

fn message(offset: i64, payload: &str) -> RawMessage {
    RawMessage { offset, timestamp: Some(Utc::now()), payload: Some(payload.as_bytes().to_vec()), service: None }
}

#[tokio::test]
async fn batches_are_stored_fenced_batches_write_nothing_and_offsets_survive_a_restart() {
    let dir = TempDir::new();
    let db = migrated(&dir).await;
    let offsets = SqliteOffsetStore::new(db.clone());
    assert_eq!(offsets.load("logs", &[0, 1]).await.unwrap(), [(0, 0), (1, 0)].into());

    let mut builder = BatchBuilder::new("logs".into(), 0, 0, ParseRules::default());
    for i in 0..50 {
        builder.push(message(i, &format!(r#"{{"level":"error","service":"api","message":"boom {i}"}}"#)), Utc::now());
    }
    builder.push(message(50, "{not json"), Utc::now());
    builder.push(message(51, ""), Utc::now());
    let batch = builder.take(Arc::default());
    let mut store = SqliteEventStore::new(db.clone());
    store.write(&batch).await.expect("first write");
    assert_eq!(number(&db, "(SELECT count(*) FROM logs)").await, 50);
    assert_eq!(number(&db, "(SELECT count(*) FROM logs WHERE level = 4 AND service = 'api')").await, 50);
    assert_eq!(number(&db, "(SELECT count(*) FROM log_rejects WHERE source = 'kafka' AND topic = 'logs')").await, 2);
    assert_eq!(
        number(&db, "(SELECT count(*) FROM logs WHERE tokens = '[\"boom\",\"7\"]' OR message = 'boom 7')").await,
        1
    );
    assert_eq!(number(&db, "(SELECT next_offset FROM kafka_offsets WHERE topic = 'logs' AND partition = 0)").await, 52);

    // The same batch again is a zombie's: fenced, nothing written.
    match store.write(&batch).await {
        Err(StoreError::Fenced { batch_from: 0, stored: Some(52) }) => {}
        other => panic!("expected a fence, got {other:?}"),
    }
    assert_eq!(number(&db, "(SELECT count(*) FROM logs)").await, 50);
    assert_eq!(number(&db, "(SELECT count(*) FROM log_rejects)").await, 2);

    // A gap is fenced too.
    assert!(!offsets.record_gap("logs", 0, 10, 60).await.unwrap());
    assert!(offsets.record_gap("logs", 0, 52, 60).await.unwrap());
    assert_eq!(number(&db, "(SELECT count(*) FROM offset_gaps WHERE from_offset = 52 AND to_offset = 60)").await, 1);

    // A new process on the same file reads the positions back.
    drop((store, offsets, db));
    let reopened = SqliteOffsetStore::new(SqliteDb::at(dir.0.join("la.db")));
    assert_eq!(reopened.load("logs", &[0, 1, 2]).await.unwrap(), [(0, 60), (1, 0), (2, 0)].into());
}

fn embedded_settings(dir: &TempDir) -> Settings {
    let url = format!("sqlite://{}", dir.0.join("la.db").display());
    let vars = [("KAFKA_BROKERS", ""), ("DATABASE_URL", url.as_str()), ("REDIS_URL", ""), ("GRPC_ADDR", "127.0.0.1:0")];
    Settings::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string()))).expect("settings")
}

fn body(tag: &str, lines: usize, invalid: usize) -> Vec<u8> {
    let mut body = Vec::new();
    for i in 0..lines {
        body.extend_from_slice(format!(r#"{{"level":"info","service":"web","message":"{tag} {i}"}}"#).as_bytes());
        body.push(b'\n');
    }
    for _ in 0..invalid {
        body.extend_from_slice(b"{broken\n");
    }
    body
}

fn batches(ingest: &EmbeddedIngest) -> u64 {
    ingest.state().all_partitions().iter().map(|(_, s)| s.batches.load(Ordering::Relaxed)).sum()
}

#[actix_rt::test]
async fn lines_are_stored_exactly_once_replays_store_nothing_and_bodies_share_transactions() {
    let dir = TempDir::new();
    let db = migrated(&dir).await;
    let settings = embedded_settings(&dir);
    let metrics = log_analyzer::admin::Metrics::new();
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let ingest = EmbeddedIngest::start(&settings, db.clone(), None, None, &metrics, &log).expect("start");
    let intake = Arc::new(Intake::new(ingest.intake(), settings.parse_rules(), Duration::from_secs(20)));
    let options = |key: Option<(&'static str, &'static [u8])>| IntakeOptions {
        service: None,
        idempotency: key,
        dry_run: false,
        received: Utc::now(),
        source: "http",
    };

    // One body with a key: every valid line once, every invalid one a dead letter.
    let first = body("first", 3_000, 7);
    let outcome = intake.take(Lines::Body(&first), options(Some(("key-1", b"hash-1"))), &log).await.unwrap();
    let IntakeOutcome::Accepted { body: answer } = outcome else { panic!("not accepted: {outcome:?}") };
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["accepted"], 3_000, "{answer}");
    // A 202 means committed: the rows are there the moment the answer is.
    assert_eq!(number(&db, "(SELECT count(*) FROM logs WHERE message LIKE 'first %')").await, 3_000);
    assert_eq!(number(&db, "(SELECT count(DISTINCT message) FROM logs WHERE message LIKE 'first %')").await, 3_000);
    assert_eq!(
        number(&db, "(SELECT count(*) FROM log_rejects WHERE source = 'http' AND reason = 'not_json')").await,
        7
    );

    // The same key and body again: the stored answer, nothing stored twice.
    let replay = intake.take(Lines::Body(&first), options(Some(("key-1", b"hash-1"))), &log).await.unwrap();
    assert!(matches!(replay, IntakeOutcome::Replayed { status: 202, .. }), "{replay:?}");
    assert_eq!(number(&db, "(SELECT count(*) FROM logs)").await, 3_000);
    assert_eq!(number(&db, "(SELECT count(*) FROM log_rejects)").await, 7);

    // Many bodies at once: one transaction holds the lines of several.
    let before = batches(&ingest);
    // More bodies than partitions (each body goes to one partition here), so sharing is visible.
    let count = 4 * ingest.queue().partition_count() + 8;
    let bodies: Vec<Vec<u8>> = (0..count).map(|b| body(&format!("concurrent{b}"), 200, 0)).collect();
    let takes = bodies.iter().map(|b| {
        let intake = intake.clone();
        let log = log.clone();
        async move { intake.take(Lines::Body(b), options(None), &log).await }
    });
    for outcome in futures::future::join_all(takes).await {
        assert!(matches!(outcome, Ok(IntakeOutcome::Accepted { .. })), "{outcome:?}");
    }
    let used = batches(&ingest) - before;
    assert!((1..count as u64).contains(&used), "{count} bodies took {used} transactions");
    assert_eq!(number(&db, "(SELECT count(*) FROM logs WHERE message LIKE 'concurrent%')").await, count as i64 * 200);
    let duplicates = "(SELECT count(*) FROM (SELECT 1 FROM logs GROUP BY partition, \"offset\" HAVING count(*) > 1))";
    assert_eq!(number(&db, duplicates).await, 0);
    ingest.stop().await;

    // Started again on the same file: positions go on where they stood, nothing is stored again.
    let stored_before = number(&db, "(SELECT sum(next_offset) FROM kafka_offsets)").await;
    assert_eq!(
        stored_before,
        number(&db, "(SELECT count(*) FROM logs) + (SELECT count(*) FROM log_rejects WHERE source = 'kafka')").await
    );
    let ingest = EmbeddedIngest::start(&settings, db.clone(), None, None, &metrics, &log).expect("restart");
    let intake = Intake::new(ingest.intake(), settings.parse_rules(), Duration::from_secs(20));
    let again = body("after", 500, 0);
    let outcome = intake.take(Lines::Body(&again), options(None), &log).await.unwrap();
    assert!(matches!(outcome, IntakeOutcome::Accepted { .. }), "{outcome:?}");
    assert_eq!(number(&db, "(SELECT count(*) FROM logs)").await, 3_000 + count as i64 * 200 + 500);
    assert_eq!(number(&db, duplicates).await, 0);
    assert_eq!(number(&db, "(SELECT sum(next_offset) FROM kafka_offsets)").await, stored_before + 500);
    ingest.stop().await;
}

#[actix_rt::test]
async fn dead_letters_beyond_the_memory_bound_are_written_early_and_deleted_on_discard() {
    use actors::intake::{Claim, DeadLetter, IntakeSink};
    use log_analyzer::embedded::intake::{EmbeddedSession, HELD_LETTER_BYTES};

    let dir = TempDir::new();
    let db = migrated(&dir).await;
    let settings = embedded_settings(&dir);
    let metrics = log_analyzer::admin::Metrics::new();
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let ingest = EmbeddedIngest::start(&settings, db.clone(), None, None, &metrics, &log).expect("start");
    let sink = ingest.intake();
    let raw = vec![b'x'; 200];
    let letters: Vec<DeadLetter<'_>> = (0..1_024)
        .map(|i| DeadLetter { source: "http", reason: "not_json", detail: format!("line {i}: not JSON"), raw: &raw })
        .collect();

    // More than the bound: some are in SQLite before the body ends (memory stays bounded) ...
    let mut held = EmbeddedSession::default();
    let chunks = HELD_LETTER_BYTES / (1_024 * 200) + 2;
    for _ in 0..chunks {
        sink.store_dead_letters(&mut held, &letters).await.unwrap();
    }
    sink.seal_dead_letters(&mut held).await.unwrap();
    let early = number(&db, "(SELECT count(*) FROM log_rejects)").await;
    assert!(early > 0 && early < (chunks * 1_024) as i64, "{early} written early");
    // ... and a discarded body leaves none behind.
    sink.discard(held, None).await.unwrap();
    assert_eq!(number(&db, "(SELECT count(*) FROM log_rejects)").await, 0);

    // A committed body keeps its letters and its answer; a replay finds the answer.
    let mut held = EmbeddedSession::default();
    assert_eq!(sink.claim(&mut held, "k", b"h").await.unwrap(), Claim::Claimed);
    sink.store_dead_letters(&mut held, &letters[..10]).await.unwrap();
    sink.commit(held, Some(("k", 202, b"{}"))).await.unwrap();
    assert_eq!(number(&db, "(SELECT count(*) FROM log_rejects WHERE raw_len = 200)").await, 10);
    let mut held = EmbeddedSession::default();
    assert_eq!(sink.claim(&mut held, "k", b"h").await.unwrap(), Claim::Answered { status: 202, body: b"{}".to_vec() });
    assert_eq!(sink.claim(&mut held, "k", b"other").await.unwrap(), Claim::OtherBody);

    // A key given up is claimed afresh by its retry.
    let mut held = EmbeddedSession::default();
    assert_eq!(sink.claim(&mut held, "k2", b"h").await.unwrap(), Claim::Claimed);
    let mut twin = EmbeddedSession::default();
    assert!(matches!(sink.claim(&mut twin, "k2", b"h").await.unwrap(), Claim::Running { .. }));
    sink.discard(held, Some("k2")).await.unwrap();
    assert_eq!(sink.claim(&mut twin, "k2", b"h").await.unwrap(), Claim::Claimed);
    ingest.stop().await;
}

#[actix_rt::test]
async fn a_fenced_partition_restarts_from_the_stored_offset_and_its_lines_are_still_stored() {
    let dir = TempDir::new();
    let db = migrated(&dir).await;
    let settings = embedded_settings(&dir);
    let metrics = log_analyzer::admin::Metrics::new();
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let ingest = EmbeddedIngest::start(&settings, db.clone(), None, None, &metrics, &log).expect("start");
    let intake = Intake::new(ingest.intake(), settings.parse_rules(), Duration::from_secs(20));
    let options =
        IntakeOptions { service: None, idempotency: None, dry_run: false, received: Utc::now(), source: "http" };
    let first = body("before", 4_096, 0);
    assert!(matches!(intake.take(Lines::Body(&first), options, &log).await, Ok(IntakeOutcome::Accepted { .. })));

    // Someone else moved the positions (a restored file, a second process): the next batch of each
    // such partition is fenced, and its consumer starts again from what is stored.
    db.read(|conn| {
        diesel::sql_query("UPDATE kafka_offsets SET next_offset = next_offset - 10 WHERE next_offset >= 10")
            .execute(conn)
    })
    .await
    .unwrap();
    let second = body("after", 2_048 * ingest.queue().partition_count(), 0);
    let outcome = intake.take(Lines::Body(&second), options, &log).await.unwrap();
    assert!(matches!(outcome, IntakeOutcome::Accepted { .. }), "{outcome:?}");
    assert_eq!(number(&db, "(SELECT count(*) FROM logs WHERE message LIKE 'after %')").await, second_len(&second));
    let restarts: u64 = metrics.actors.probes().iter().filter(|p| p.actor() == "consumer").map(|p| p.restarts()).sum();
    assert!(restarts >= 1, "no consumer restarted");
    let duplicates = "(SELECT count(*) FROM (SELECT 1 FROM logs GROUP BY partition, \"offset\" HAVING count(*) > 1))";
    assert_eq!(number(&db, duplicates).await, 0);
    ingest.stop().await;
}

fn second_len(body: &[u8]) -> i64 {
    body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count() as i64
}

#[actix_rt::test]
async fn a_full_queue_refuses_lines_after_the_timeout_instead_of_growing() {
    use log_analyzer::embedded::QUEUE_MESSAGES;

    let dir = TempDir::new();
    let db = migrated(&dir).await;
    let settings = embedded_settings(&dir);
    let metrics = log_analyzer::admin::Metrics::new();
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let ingest = EmbeddedIngest::start(&settings, db.clone(), None, None, &metrics, &log).expect("start");
    // Another connection holds SQLite's write lock: nothing the queue holds can be stored meanwhile.
    let (locked_tx, locked) = std::sync::mpsc::channel();
    let unlocking = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let holder = {
        let db = db.clone();
        let unlocking = unlocking.clone();
        std::thread::spawn(move || {
            use diesel::connection::SimpleConnection;
            let mut conn = db.connect().expect("connect");
            conn.batch_execute("BEGIN IMMEDIATE").expect("lock");
            locked_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_secs(3));
            unlocking.store(true, std::sync::atomic::Ordering::SeqCst);
            conn.batch_execute("COMMIT").expect("unlock");
        })
    };
    locked.recv().unwrap();
    // Three bodies at once, more than the queue holds together (each alone stays under its own
    // bound of lines in flight): what does not fit waits, then is refused.
    let per_body = QUEUE_MESSAGES / 2 - 2_000;
    let bodies: Vec<Vec<u8>> = (0..3).map(|b| body(&format!("full{b}"), per_body, 0)).collect();
    let sink = ingest.intake();
    let takes = bodies.iter().map(|b| {
        let sink = &sink;
        let unlocking = unlocking.clone();
        async move {
            use actors::intake::{Delivery, IntakeSink, Line};
            let lines: Vec<Line<'_>> = b
                .split(|c| *c == b'\n')
                .filter(|l| !l.is_empty())
                .zip(1..)
                .map(|(bytes, number)| Line { number, bytes })
                .collect();
            let mut deliveries: Vec<Delivery> = Vec::new();
            let mut report = |_: u32, d: Delivery| {
                // Lines the queue took are acknowledged once stored, however long that takes (an
                // earlier "not stored" would make the client send them twice), never before.
                if d == Delivery::Queued {
                    assert!(
                        unlocking.load(std::sync::atomic::Ordering::SeqCst),
                        "acknowledged while SQLite was locked"
                    );
                }
                deliveries.push(d);
                true
            };
            sink.queue(None, &lines, Utc::now(), Duration::from_millis(1_500), &mut report).await;
            deliveries
        }
    });
    // The queue is the consumers' mailboxes: /debug/actors shows what waits in it while SQLite is locked.
    let depth = async {
        crate::helpers::eventually("the queue's depth in the consumers' mailboxes", Duration::from_secs(3), || {
            let waiting: i64 =
                metrics.actors.probes().iter().filter(|p| p.actor() == "consumer").map(|p| p.mailbox_depth()).sum();
            let locked = !unlocking.load(std::sync::atomic::Ordering::SeqCst);
            async move { (waiting > 0 && locked).then_some(waiting) }
        })
        .await
    };
    let (deliveries, _) = futures::join!(futures::future::join_all(takes), depth);
    let deliveries: Vec<_> = deliveries.into_iter().flatten().collect();
    let lines = bodies.len() * per_body;
    assert_eq!(deliveries.len(), lines, "one delivery per line");
    let refused = deliveries
        .iter()
        .filter(|d| matches!(d, actors::intake::Delivery::Refused(why) if why.contains("stayed full for")))
        .count();
    assert!(refused >= lines - QUEUE_MESSAGES, "{refused} of {lines} refused");
    let queued = deliveries.iter().filter(|d| **d == actors::intake::Delivery::Queued).count();
    assert_eq!(queued + refused, lines, "a line was neither stored nor refused");
    holder.join().unwrap();

    // What the queue did take is stored once the lock is gone; what it refused never is.
    let stored = crate::helpers::eventually("the queued lines stored", Duration::from_secs(30), || {
        let db = db.clone();
        async move {
            let n = number(&db, "(SELECT count(*) FROM logs)").await;
            (n > 0 && ingest_idle(&db).await).then_some(n)
        }
    })
    .await;
    assert_eq!(stored, queued as i64, "stored lines are exactly the acknowledged ones");
    assert!(stored <= QUEUE_MESSAGES as i64 && stored < lines as i64, "{stored} stored");
    ingest.stop().await;
}

/// Whether every position moved as far as the rows stored.
async fn ingest_idle(db: &SqliteDb) -> bool {
    number(db, "(SELECT sum(next_offset) FROM kafka_offsets)").await == number(db, "(SELECT count(*) FROM logs)").await
}
