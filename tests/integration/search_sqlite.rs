//! `GET /logs` on the embedded store: `SqliteLogSearch` over a real SQLite file written by the
//! embedded pipeline (queue → consumers → writer, driven through the intake use case), with the
//! eight Loghub samples and generated lines. The expected answers are computed here from the rows
//! as stored (`search_cases`), and events are stored between pages.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actors::domain::Level;
use actors::intake::{Intake, IntakeOptions, IntakeOutcome, Lines};
use actors::search::{LogSearch, SearchParams};
use chrono::{DateTime, SecondsFormat, Utc};
use diesel::sql_types::{BigInt, Integer, Text};
use diesel::{QueryableByName, RunQueryDsl};
use log_analyzer::config::Settings;
use log_analyzer::embedded::intake::EmbeddedIntake;
use log_analyzer::embedded::EmbeddedIngest;
use log_analyzer::sqlite::search::SqliteLogSearch;
use log_analyzer::sqlite::SqliteDb;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;

use crate::helpers::unique;
use crate::search_cases::{self, params, query, StoredRow};

const SERVICES: [&str; 4] = ["api", "billing", "cart", "web"];
const WORDS: [&str; 12] =
    ["timeout", "payment", "declined", "retry", "disk", "user", "login", "cache", "miss", "queue", "slow", "ok"];
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "fatal"];
/// The events' times: whole seconds of this span before the start, so many share a microsecond
/// and order by (partition, offset, topic).
const SPAN_S: i64 = 900;

struct Embedded {
    dir: PathBuf,
    db: SqliteDb,
    ingest: Mutex<Option<EmbeddedIngest>>,
    intake: Intake<EmbeddedIntake>,
    base: DateTime<Utc>,
    rng: Mutex<SmallRng>,
    /// The highest rowid read back so far.
    seen: Mutex<i64>,
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
    async fn start(seed: u64) -> Embedded {
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
        let base = Utc::now() - chrono::Duration::seconds(2 * SPAN_S);
        Embedded {
            dir,
            db,
            ingest: Mutex::new(Some(ingest)),
            intake,
            base,
            rng: Mutex::new(SmallRng::seed_from_u64(seed)),
            seen: Mutex::new(0),
            log,
        }
    }

    fn ts(&self) -> String {
        let offset = self.rng.lock().unwrap().random_range(0..SPAN_S);
        let t = self.base + chrono::Duration::seconds(offset);
        t.to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    /// `n` generated lines: a service, a level and three to six words each.
    fn generated(&self, n: usize, tag: &str) -> Vec<String> {
        (0..n)
            .map(|i| {
                let ts = self.ts();
                let mut rng = self.rng.lock().unwrap();
                let count = rng.random_range(3..7);
                let words: Vec<&str> = (0..count).map(|_| WORDS[rng.random_range(0..WORDS.len())]).collect();
                let service = SERVICES[rng.random_range(0..SERVICES.len())];
                let level = LEVELS[rng.random_range(0..LEVELS.len())];
                // A rare word (about 0.4 % of lines each) for the selective questions.
                let rare =
                    if rng.random_bool(0.008) { format!(" zebra{}", rng.random_range(0..2)) } else { String::new() };
                let message = format!("{}{rare} {tag}{i}", words.join(" "));
                json!({"ts": ts, "level": level, "service": service, "message": message}).to_string()
            })
            .collect()
    }

    /// Every Loghub sample, each line the message of a Vector-like envelope (the level is in the line).
    fn loghub(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for system in crate::loghub::SYSTEMS {
            let sample = crate::loghub::load(system);
            for line in &sample.lines {
                lines.push(
                    json!({"timestamp": self.ts(), "service": system.to_lowercase(), "message": line}).to_string(),
                );
            }
        }
        lines
    }

    /// Stores `lines` through the intake; returns once committed (a 202 means stored).
    async fn store(&self, lines: &[String]) {
        let body = lines.join("\n").into_bytes();
        let options =
            IntakeOptions { service: None, idempotency: None, dry_run: false, received: Utc::now(), source: "http" };
        let outcome = self.intake.take(Lines::Body(&body), options, &self.log).await.expect("stored");
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

/// A limit giving about 12 pages of the expected answer (at least 3 events a page).
fn small_limit(expected: usize) -> usize {
    (expected / 12).clamp(3, 1_000)
}

#[actix_rt::test]
async fn pages_equal_the_ground_truth_in_order_while_events_are_stored_between_pages() {
    let store = Embedded::start(18).await;
    let loghub = store.loghub();
    let generated = store.generated(3_000, "gen");
    store.store(&loghub).await;
    store.store(&generated).await;
    let mut rows = store.read_new().await;
    assert_eq!(rows.len(), loghub.len() + generated.len());
    let (rare, common) = search_cases::rare_and_common(&rows);
    let search = SqliteLogSearch::new(store.db.clone(), 1_000_000);
    assert_eq!(search.source(), "sqlite");

    let from = (store.base + chrono::Duration::seconds(SPAN_S / 3)).to_rfc3339();
    let to = (store.base + chrono::Duration::seconds(SPAN_S / 2)).to_rfc3339();
    let rare_and_common = format!("{rare} {common}");
    let common_not_rare = format!("{common} -{rare}");
    let cases: Vec<SearchParams<'_>> = vec![
        params(&[("q", &rare)]),
        params(&[("q", &common)]),
        params(&[("q", &common_not_rare)]),
        params(&[("q", &rare_and_common)]),
        params(&[("q", "nosuchtokenanywhere")]),
        params(&[("service", "hadoop")]),
        params(&[("q", "timeout"), ("service", "api"), ("level", "warn+")]),
        params(&[("level", "error")]),
        params(&[("level", "warn+"), ("service", "zookeeper")]),
        params(&[("q", "block -receiving"), ("service", "hdfs")]),
        params(&[("q", &common), ("from", &from), ("to", &to)]),
        params(&[("from", &from), ("to", &to), ("level", "info+")]),
    ];
    let mut nonempty = 0;
    for (i, p) in cases.iter().enumerate() {
        let probe = query(p, 1);
        let n = search_cases::expected(&rows, &probe).len();
        nonempty += usize::from(n > 0);
        let first = query(p, small_limit(n));
        let added = Mutex::new(Vec::new());
        let (store, added_ref) = (&store, &added);
        let paged = search_cases::page_through(&search, &rows, &first, 4, |page| {
            let lines = store.generated(40, &format!("more{i}x{page}y"));
            async move {
                store.store(&lines).await;
                let new = store.read_new().await;
                added_ref.lock().unwrap().extend(new.iter().cloned());
                new
            }
        })
        .await;
        assert!(paged.pages >= 1 && paged.truncated_pages == 0, "{p:?}: {} pages", paged.pages);
        assert!(n == 0 || paged.events.len() >= n, "{p:?}: the events stored before paging are all found");
        rows.extend(added.into_inner().unwrap());
    }
    assert!(nonempty >= cases.len() - 1, "only the token in no row finds nothing ({nonempty} of {})", cases.len());
    store.stop().await;
}

#[actix_rt::test]
async fn a_scan_bound_truncates_pages_and_following_their_cursors_finds_everything() {
    let store = Embedded::start(7).await;
    let lines = store.generated(2_500, "bound");
    store.store(&lines).await;
    let rows = store.read_new().await;
    let (rare, common) = search_cases::rare_and_common(&rows);
    for max_scan in [1, 37, 500] {
        let search = SqliteLogSearch::new(store.db.clone(), max_scan);
        for p in [
            params(&[("q", &rare)]),
            params(&[("q", &common), ("level", "error+")]),
            params(&[("service", "cart"), ("level", "fatal")]),
            params(&[("q", "nosuchtokenanywhere")]),
        ] {
            let n = search_cases::expected(&rows, &query(&p, 1)).len();
            if max_scan == 1 && n > 40 {
                continue; // one row a page: only the selective questions, to stay quick
            }
            // Pages that never fill: the bound is what ends them.
            let first = query(&p, 1_000);
            let paged =
                search_cases::page_through(&search, &rows, &first, 0, |_| async { Vec::<StoredRow>::new() }).await;
            assert!(paged.truncated_pages > 0, "{p:?} with max_scan {max_scan}: never truncated");
        }
    }
    store.stop().await;
}

#[actix_rt::test]
async fn one_event_is_found_by_its_position_and_a_missing_one_is_none() {
    let store = Embedded::start(3).await;
    let lines = store.generated(300, "one");
    store.store(&lines).await;
    let rows = store.read_new().await;
    let search = SqliteLogSearch::new(store.db.clone(), 10_000);
    for row in rows.iter().step_by(37) {
        let found = search.event(&row.topic, row.partition, row.offset).await.unwrap().expect("found");
        assert_eq!(
            (found.ts.timestamp_micros(), found.message.as_str(), found.service.as_str(), found.level),
            (row.ts_micros, row.message.as_str(), row.service.as_str(), row.level)
        );
        assert_eq!(
            (found.topic.as_str(), found.partition, found.offset),
            (row.topic.as_str(), row.partition, row.offset)
        );
        assert!(found.attrs.is_object(), "{found:?}");
    }
    let last = rows.iter().map(|r| r.offset).max().unwrap();
    let row = &rows[0];
    assert_eq!(search.event(&row.topic, row.partition, last + 1_000).await.unwrap(), None);
    assert_eq!(search.event("elsewhere", row.partition, row.offset).await.unwrap(), None);
    assert_eq!(search.event(&row.topic, 999, row.offset).await.unwrap(), None);
    store.stop().await;
    // A stopped pipeline changes nothing for the reader: the file answers alone.
    let reopened = Arc::new(SqliteLogSearch::new(SqliteDb::at(store.db.path()), 10));
    assert!(reopened.event(&row.topic, row.partition, row.offset).await.unwrap().is_some());
}
