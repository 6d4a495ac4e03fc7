//! `GET /logs` on the embedded store: `SqliteLogSearch` over a real SQLite file written by the
//! embedded pipeline (queue → consumers → writer, driven through the intake use case), running the
//! shared suite (`search_cases`, the same questions PostgreSQL is asked) with the eight Loghub
//! samples and generated lines, and what only SQLite has: the file answering alone, a corrupt row.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actors::domain::Level;
use actors::intake::{Intake, IntakeOptions, IntakeOutcome, Lines as Body};
use actors::search::LogSearch;
use chrono::Utc;
use diesel::connection::SimpleConnection;
use diesel::sql_types::{BigInt, Integer, Text};
use diesel::{QueryableByName, RunQueryDsl};
use log_analyzer::config::Settings;
use log_analyzer::embedded::intake::EmbeddedIntake;
use log_analyzer::embedded::EmbeddedIngest;
use log_analyzer::sqlite::search::SqliteLogSearch;
use log_analyzer::sqlite::SqliteDb;

use crate::helpers::unique;
use crate::search_cases::{self, Backend, Lines, StoredRow};

struct Embedded {
    dir: PathBuf,
    db: SqliteDb,
    ingest: Mutex<Option<EmbeddedIngest>>,
    intake: Intake<EmbeddedIntake>,
    /// The highest rowid read back so far.
    seen: Mutex<i64>,
    /// `store` returns only once the keyword indexer has counted what it stored.
    indexed: bool,
    log: slog::Logger,
}

impl Drop for Embedded {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    rowid: i64,
    #[diesel(sql_type = BigInt)]
    ts: i64,
    #[diesel(sql_type = Integer)]
    level: i32,
    #[diesel(sql_type = Text)]
    service: String,
    #[diesel(sql_type = Text)]
    message: String,
    #[diesel(sql_type = Text)]
    tokens: String,
    #[diesel(sql_type = Text)]
    topic: String,
    #[diesel(sql_type = Integer)]
    partition: i32,
    #[diesel(sql_type = BigInt)]
    offset: i64,
}

impl Embedded {
    async fn start() -> Embedded {
        let dir = std::env::temp_dir().join(unique("la_search"));
        std::fs::create_dir_all(&dir).unwrap();
        let db = SqliteDb::at(dir.join("la.db"));
        log_analyzer::sqlite::migrate::run_migrations(&db).await.expect("migrations");
        let url = format!("sqlite://{}", dir.join("la.db").display());
        let vars =
            [("KAFKA_BROKERS", ""), ("DATABASE_URL", url.as_str()), ("REDIS_URL", ""), ("GRPC_ADDR", "127.0.0.1:0")];
        let settings = Settings::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string()))).expect("settings");
        let metrics = log_analyzer::admin::Metrics::new();
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let ingest = EmbeddedIngest::start(&settings, db.clone(), None, None, &metrics, &log).expect("start");
        let intake = Intake::new(ingest.intake(), settings.parse_rules(), Duration::from_secs(30));
        Embedded { dir, db, ingest: Mutex::new(Some(ingest)), intake, seen: Mutex::new(0), indexed: false, log }
    }

    /// A store whose `store` waits for the keyword indexer to count the rows (it passes once a
    /// second): questions about the indexed walk, not the unindexed tail.
    async fn start_indexed() -> Embedded {
        let mut store = Embedded::start().await;
        store.indexed = true;
        store
    }

    /// Waits until the keyword indexer's mark reaches the newest row.
    async fn until_indexed(&self) {
        #[derive(QueryableByName)]
        struct Marks {
            #[diesel(sql_type = BigInt)]
            mark: i64,
            #[diesel(sql_type = BigInt)]
            newest: i64,
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let m: Marks = self
                .db
                .read(|conn| {
                    diesel::sql_query(
                        "SELECT (SELECT indexed_rowid FROM log_index WHERE id = 1) AS mark, \
                         (SELECT COALESCE(MAX(rowid), 0) FROM logs) AS newest",
                    )
                    .get_result(conn)
                })
                .await
                .expect("marks");
            if m.mark >= m.newest {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "the indexer stayed at {} of {}", m.mark, m.newest);
            actix::clock::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stores `lines` through the intake; returns once committed (a 202 means stored).
    async fn store(&self, lines: &[String]) {
        let body = lines.join("\n").into_bytes();
        let options =
            IntakeOptions { service: None, idempotency: None, dry_run: false, received: Utc::now(), source: "http" };
        let outcome = self.intake.take(Body::Body(&body), options, &self.log).await.expect("stored");
        let IntakeOutcome::Accepted { body: answer } = outcome else { panic!("not accepted: {outcome:?}") };
        let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer["accepted"], lines.len(), "{answer}");
    }

    /// The rows stored since the last call, as the store keeps them.
    async fn read_new(&self) -> Vec<StoredRow> {
        let after = *self.seen.lock().unwrap();
        let rows: Vec<Row> = self
            .db
            .read(move |conn| {
                diesel::sql_query(
                    "SELECT rowid, ts, level, service, message, tokens, topic, \"partition\", \"offset\" FROM logs \
                     WHERE rowid > ?1 ORDER BY rowid",
                )
                .bind::<BigInt, _>(after)
                .load(conn)
            })
            .await
            .expect("rows");
        *self.seen.lock().unwrap() = rows.last().map_or(after, |r| r.rowid);
        rows.into_iter()
            .map(|r| StoredRow {
                ts_micros: r.ts,
                level: Level::from_i16(r.level as i16).expect("a stored level"),
                service: r.service,
                message: r.message,
                tokens: serde_json::from_str(&r.tokens).expect("JSON tokens"),
                topic: r.topic,
                partition: r.partition,
                offset: r.offset,
            })
            .collect()
    }

    async fn stop(&self) {
        let ingest = self.ingest.lock().unwrap().take();
        if let Some(ingest) = ingest {
            ingest.stop().await;
        }
    }
}

impl Backend for Embedded {
    async fn store(&self, lines: &[String]) -> Vec<StoredRow> {
        Embedded::store(self, lines).await;
        if self.indexed {
            self.until_indexed().await;
        }
        self.read_new().await
    }

    fn search(&self, max_scan: usize) -> Arc<dyn LogSearch> {
        Arc::new(SqliteLogSearch::new(self.db.clone(), max_scan))
    }
}

#[actix_rt::test]
async fn pages_equal_the_ground_truth_in_order_while_events_are_stored_between_pages() {
    let store = Embedded::start().await;
    let search =
        search_cases::pages_equal_the_ground_truth_while_events_are_stored_between_pages(&store, &Lines::new(18)).await;
    assert_eq!(search.source(), "sqlite");
    store.stop().await;
}

#[actix_rt::test]
async fn a_scan_bound_truncates_pages_and_following_their_cursors_finds_everything() {
    // The bound is the indexed walk's: the rows above the indexer's mark are read whole (their
    // number is the indexer's lag, module doc of sqlite::search).
    let store = Embedded::start_indexed().await;
    let bounded =
        search_cases::a_scan_bound_truncates_pages_and_their_cursors_find_everything(&store, &Lines::new(7)).await;
    // Every row (and every second walked past) counts against the bound, so a page of 1,000 never
    // fills before it: every question stops there.
    assert!(bounded.len() >= 8, "{} questions asked", bounded.len());
    for b in &bounded {
        assert!(b.truncated_pages > 0, "{} with max_scan {}: never truncated", b.question, b.max_scan);
    }
    store.stop().await;
}

#[actix_rt::test]
async fn one_event_is_found_by_its_position_and_a_missing_one_is_none() {
    let store = Embedded::start().await;
    let rows = search_cases::one_event_is_found_by_its_position_and_a_missing_one_is_none(&store, &Lines::new(3)).await;
    store.stop().await;
    // A stopped pipeline changes nothing for the reader: the file answers alone.
    let row = &rows[0];
    let reopened = Arc::new(SqliteLogSearch::new(SqliteDb::at(store.db.path()), 10));
    assert!(reopened.event(&row.topic, row.partition, row.offset).await.unwrap().is_some());
}

/// A row whose level no `Level` has (the schema's CHECK bypassed, as a file written by another tool
/// may be) is an error the caller sees, for its position and for a search without a level, as on
/// PostgreSQL; never an `info` event made up. A search for a level leaves it out, as PostgreSQL's
/// `level = ANY(…)` does.
#[actix_rt::test]
async fn a_row_with_a_level_out_of_range_is_a_corrupt_row_error() {
    let store = Embedded::start().await;
    let rows = Backend::store(&store, &Lines::new(5).generated(20, "corrupt")).await;
    let row = rows.iter().max_by_key(|r| (r.ts_micros, r.partition, r.offset)).expect("rows").clone();
    store.stop().await;
    let mut conn = store.db.connect().unwrap();
    conn.batch_execute("PRAGMA ignore_check_constraints = ON").unwrap();
    let changed =
        diesel::sql_query("UPDATE logs SET level = 9 WHERE topic = ?1 AND \"partition\" = ?2 AND \"offset\" = ?3")
            .bind::<Text, _>(&row.topic)
            .bind::<Integer, _>(row.partition)
            .bind::<BigInt, _>(row.offset)
            .execute(&mut conn)
            .unwrap();
    assert_eq!(changed, 1);
    let search = SqliteLogSearch::new(store.db.clone(), 10_000);
    search_cases::a_row_with_level_9_is_a_corrupt_row_error(&search, &row).await;
}
