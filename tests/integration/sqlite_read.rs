//! The embedded store's read side on a real SQLite file (a fresh temp directory per test): every
//! window question, the rebuild snapshot, the summary job and its reader, retention, the scheduler's
//! lead and the replay of dead letters. Rows are inserted by SQL here (indexed with
//! `keywords::index_all_in` in the same transaction, or left to the indexer's step, or not indexed
//! at all: the answers must be the same; one test checks the indexer's counting leaves the table
//! SQL over the stored rows does) and the expected answers are counted from the same rows.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actors::domain::batch::{Batch, StoredEvent};
use actors::domain::counts::{Counts, KeywordSet, SecondCounts};
use actors::domain::{Keyword, Level, LogEvent, ParseRules, ServiceName, UserId, STOP_WORDS};
use actors::ports::summary::SummaryReader;
use actors::ports::{BucketSource, DailyJobs, WindowAnswer, WindowQuery, WindowQuestion};
use actors::windows::{ErrorStats, KeywordCount, ServiceStats, WindowRange};
use chrono::{NaiveDate, TimeZone, Utc};
use diesel::sql_types::{BigInt, Binary, Integer, Nullable, Text};
use diesel::{QueryableByName, RunQueryDsl, SqliteConnection};
use log_analyzer::db::rejects::RejectFilter;
use log_analyzer::sqlite::event_store::{write_batch, ROWS_PER_INSERT};
use log_analyzer::sqlite::stats::{SqliteBucketSource, SqliteStats};
use log_analyzer::sqlite::summary::{summarize_day, SqliteDailyJobs, SqliteSummaryReader};
use log_analyzer::sqlite::{keywords, migrate, rejects, SqliteDb};
use rand::rngs::SmallRng as StdRng;
use rand::{RngExt, SeedableRng};

use crate::helpers::unique;

const TOPIC: &str = "logs";
const OTHER_TOPIC: &str = "elsewhere";
const SERVICES: [&str; 3] = ["api", "billing", "cart"];
const WORDS: [&str; 8] = ["timeout", "error", "payment", "the", "retry", "disk", "user", "ok"];
const TRACKED: [&str; 4] = ["timeout", "payment", "retry", "never"];

/// A temp directory with a migrated database file, removed on drop.
struct TempStore {
    dir: PathBuf,
    db: SqliteDb,
}

impl TempStore {
    async fn create() -> TempStore {
        let dir = std::env::temp_dir().join(unique("la_sqlite"));
        std::fs::create_dir_all(&dir).unwrap();
        let db = SqliteDb::at(dir.join("la.db"));
        migrate::run_migrations(&db).await.unwrap();
        TempStore { dir, db }
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Debug, Clone)]
struct Row {
    ts: i64,
    level: i16,
    service: String,
    user_id: Option<String>,
    tokens: Vec<String>,
    topic: String,
    partition: i32,
    offset: i64,
}

#[derive(QueryableByName)]
struct RowId {
    #[diesel(sql_type = BigInt)]
    rowid: i64,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Inserts `rows` in one transaction and indexes every row up to them, moving the indexer's mark.
fn insert(conn: &mut SqliteConnection, rows: &[Row]) {
    insert_rows(conn, rows, true);
}

/// Inserts `rows` in one transaction, as the event store does, indexing them (and any row before
/// them not yet indexed) in it when `index`.
fn insert_rows(conn: &mut SqliteConnection, rows: &[Row], index: bool) {
    conn.immediate_transaction(|conn| {
        for r in rows {
            diesel::sql_query(
                "INSERT INTO logs (ts, level, service, user_id, message, tokens, attrs, topic, \"partition\", \
                 \"offset\", ingested_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, '{}', ?7, ?8, ?9, ?1)",
            )
            .bind::<BigInt, _>(r.ts)
            .bind::<Integer, _>(i32::from(r.level))
            .bind::<Text, _>(&r.service)
            .bind::<Nullable<Text>, _>(r.user_id.as_deref())
            .bind::<Text, _>(r.tokens.join(" "))
            .bind::<Text, _>(serde_json::to_string(&r.tokens).unwrap())
            .bind::<Text, _>(&r.topic)
            .bind::<Integer, _>(r.partition)
            .bind::<BigInt, _>(r.offset)
            .execute(conn)?;
        }
        if index {
            keywords::index_all_in(conn)?;
        }
        diesel::QueryResult::Ok(())
    })
    .unwrap();
}

fn count(conn: &mut SqliteConnection, sql: &str) -> i64 {
    diesel::sql_query(sql).get_result::<Count>(conn).unwrap().n
}

/// `n` events over `[start, start + span)` seconds, mostly on TOPIC, with random services, levels,
/// users and tokens (distinct per event, as the tokenizer makes them), at µs precision.
fn random_rows(seed: u64, n: usize, start: i64, span: i64) -> Vec<Row> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let mut tokens: Vec<String> =
                WORDS.iter().filter(|_| rng.random_bool(0.35)).map(|w| (*w).to_owned()).collect();
            if rng.random_bool(0.1) {
                tokens.push(format!("id{}", rng.random_range(0..5)));
            }
            Row {
                ts: start * 1_000_000 + rng.random_range(0..span * 1_000_000),
                level: rng.random_range(0..=5),
                service: SERVICES[rng.random_range(0..SERVICES.len())].to_owned(),
                user_id: match rng.random_range(0..4) {
                    0 => None,
                    k => Some(format!("u{k}")),
                },
                tokens,
                topic: if rng.random_bool(0.9) { TOPIC } else { OTHER_TOPIC }.to_owned(),
                partition: rng.random_range(0..2),
                offset: i as i64,
            }
        })
        .collect()
}

fn in_window(r: &Row, range: WindowRange) -> bool {
    r.topic == TOPIC && r.ts >= range.from * 1_000_000 && r.ts < range.to * 1_000_000
}

fn expected_errors(rows: &[Row], range: WindowRange, service: Option<&str>) -> ErrorStats {
    let mut by: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for r in rows.iter().filter(|r| in_window(r, range)) {
        let e = by.entry(&r.service).or_default();
        e.0 += 1;
        e.1 += u64::from(r.level >= 4);
    }
    ErrorStats::from_services(
        by.into_iter().map(|(s, (t, e))| ServiceStats { service: s.to_owned(), total: t, errors: e }),
        service,
        100,
    )
}

fn tracked_set() -> KeywordSet {
    KeywordSet::new(TRACKED.iter().map(|k| Keyword::parse(k).unwrap()))
}

fn stats(store: &TempStore) -> SqliteStats {
    SqliteStats::new(store.db.clone(), vec![TOPIC.to_owned()], Arc::new(tracked_set()), Duration::from_secs(10))
}

/// One row of `log_token_seconds` (also read by the embedded kill -9 test).
#[derive(QueryableByName, Debug, PartialEq)]
pub(crate) struct TokenSecond {
    #[diesel(sql_type = BigInt)]
    pub second: i64,
    #[diesel(sql_type = Text)]
    pub token: String,
    #[diesel(sql_type = Text)]
    pub topic: String,
    #[diesel(sql_type = Text)]
    pub service: String,
    #[diesel(sql_type = BigInt)]
    pub events: i64,
}

fn token_seconds(conn: &mut SqliteConnection) -> Vec<TokenSecond> {
    diesel::sql_query(
        "SELECT second, token, topic, service, events FROM log_token_seconds ORDER BY second, token, topic, service",
    )
    .load(conn)
    .unwrap()
}

/// The event store writes rows only; the indexer's steps count them in memory, `index_rows` in SQL
/// from the stored tokens. Both must leave the same table, and the answers must be exact before,
/// during and after.
#[tokio::test]
async fn the_indexer_counts_the_stored_batches_as_sql_over_the_stored_rows_does() {
    let store = TempStore::create().await;
    let start = 1_764_000_000;
    // Events a few µs apart around second and hour boundaries, and a spread over two hours.
    let mut rows = random_rows(11, 2_000, start, 7_200);
    rows.extend(random_rows(12, 2_000, start + 3_599, 2));
    // A batch is one topic's.
    for r in &mut rows {
        r.topic = TOPIC.to_owned();
    }
    let mut conn = store.db.connect().unwrap();
    diesel::sql_query("INSERT INTO kafka_offsets (topic, \"partition\", next_offset, updated_at) VALUES (?1, 0, 0, 0)")
        .bind::<Text, _>(TOPIC)
        .execute(&mut conn)
        .unwrap();
    let mut offset = 0;
    for chunk in rows.chunks(700) {
        let events: Vec<StoredEvent> = chunk
            .iter()
            .enumerate()
            .map(|(i, r)| StoredEvent {
                offset: offset + i as i64,
                event: LogEvent {
                    ts: Utc.timestamp_micros(r.ts).unwrap(),
                    level: Level::from_i16(r.level).unwrap(),
                    service: ServiceName::parse(r.service.as_str()).unwrap(),
                    message: r.tokens.join(" "),
                    user_id: r.user_id.as_deref().map(|u| UserId::parse(u).unwrap()),
                    attrs: Default::default(),
                    // The tokens of a message of distinct tokens are those tokens.
                    tokens: actors::domain::Tokens::of(&r.tokens.join(" ")),
                },
            })
            .collect();
        let to = offset + events.len() as i64;
        let batch = Batch {
            topic: TOPIC.into(),
            partition: 0,
            from: offset,
            to,
            events,
            rejects: Vec::new(),
            payload_bytes: 0,
            cancelled: Default::default(),
        };
        write_batch(&mut conn, &batch, 0, ROWS_PER_INSERT).unwrap();
        offset = to;
    }
    assert!(token_seconds(&mut conn).is_empty(), "the writer's transactions store rows only");
    let range = WindowRange { from: start + 3_599, to: start + 3_601 };
    let want = rows.iter().filter(|r| in_window(r, range) && r.tokens.iter().any(|t| t == "timeout")).count() as u64;
    assert!(want > 0);
    let q = WindowQuestion::Keyword { range, keyword: Keyword::parse("timeout").unwrap(), service: None };
    let answer = |store: &TempStore| {
        let stats = stats(store);
        let q = q.clone();
        async move {
            match stats.answer(&q).await.unwrap() {
                WindowAnswer::Keyword(got) => got,
                other => panic!("{other:?}"),
            }
        }
    };
    assert_eq!(answer(&store).await, want, "every row above the mark, counted from its tokens");

    // The indexer's steps, 1,500 rows each: the answer is exact after each.
    let mut steps = Vec::new();
    loop {
        let step = keywords::index_next(&mut conn, 1_500).unwrap();
        assert!(!step.stale);
        if step.rows == 0 {
            break;
        }
        steps.push((step.rows, step.mark, step.behind));
        assert_eq!(answer(&store).await, want, "after a step to {}", step.mark);
    }
    let n = rows.len() as i64;
    assert_eq!(steps, [(1_500, 1_500, n - 1_500), (1_500, 3_000, n - 3_000), (1_000, n, 0)]);
    let written = token_seconds(&mut conn);
    let tokens: usize = rows.iter().map(|r| r.tokens.len()).sum();
    assert_eq!(written.iter().map(|r| r.events).sum::<i64>(), tokens as i64, "every token of every event");
    assert!(written.len() < tokens, "{} rows for {tokens} tokens: counts, not one row per token", written.len());
    assert!(written.iter().all(|r| r.topic == TOPIC));

    diesel::sql_query("DELETE FROM log_token_seconds").execute(&mut conn).unwrap();
    keywords::index_rows(&mut conn, 1, n).unwrap();
    assert_eq!(token_seconds(&mut conn), written);
    assert_eq!(answer(&store).await, want);
}

/// A step counted from a snapshot that a deletion (retention) has since changed is thrown away.
#[tokio::test]
async fn a_step_read_before_a_deletion_is_not_committed_after_it() {
    let store = TempStore::create().await;
    let rows = random_rows(13, 500, 1_764_000_000, 600);
    let mut conn = store.db.connect().unwrap();
    insert_rows(&mut conn, &rows, false);
    let before = keywords::mark(&mut conn).unwrap();
    // Between the step's read and its write transaction (where it takes its turn), another
    // connection deletes rows as retention does.
    let mut other = store.db.connect().unwrap();
    let step = keywords::index_next_in_turn(&mut conn, 10_000, || {
        other
            .immediate_transaction(|conn| {
                diesel::sql_query("DELETE FROM logs WHERE rowid > 400").execute(conn)?;
                keywords::rows_deleted(conn, true)
            })
            .unwrap()
    })
    .unwrap();
    assert!(step.stale, "{step:?}");
    assert_eq!((step.rows, step.mark), (0, before.rowid));
    assert!(token_seconds(&mut conn).is_empty(), "nothing of the stale step was committed");
    assert_eq!(keywords::mark(&mut conn).unwrap().epoch, before.epoch + 1);
    // The next step reads again: the 400 rows left, once.
    let step = keywords::index_next(&mut conn, 10_000).unwrap();
    assert_eq!((step.rows, step.mark, step.behind, step.stale), (400, 400, 0, false));
    let tokens: usize = rows[..400].iter().map(|r| r.tokens.len()).sum();
    assert_eq!(count(&mut conn, "SELECT coalesce(sum(events), 0) AS n FROM log_token_seconds"), tokens as i64);
}

/// A deletion of counted rows only (retention's usual case) leaves a step in flight valid: it
/// commits, and the epoch stays, so retention running hour after hour does not stop the indexer.
#[tokio::test]
async fn a_deletion_of_counted_rows_only_keeps_the_step_in_flight() {
    let store = TempStore::create().await;
    let rows = random_rows(17, 500, 1_764_000_000, 600);
    let mut conn = store.db.connect().unwrap();
    insert_rows(&mut conn, &rows, false);
    assert_eq!(keywords::index_next(&mut conn, 300).unwrap().mark, 300);
    let before = keywords::mark(&mut conn).unwrap();
    let (oldest, newest) = (rows.iter().map(|r| r.ts).min().unwrap(), rows.iter().map(|r| r.ts).max().unwrap());
    let mut other = store.db.connect().unwrap();
    let step = keywords::index_next_in_turn(&mut conn, 10_000, || {
        other
            .immediate_transaction(|conn| {
                // The whole span holds unindexed rows; the first 100 rowids alone do not.
                assert!(keywords::unindexed_between(conn, oldest, newest + 1)?);
                diesel::sql_query("DELETE FROM logs WHERE rowid <= 100").execute(conn)?;
                keywords::rows_deleted(conn, false)
            })
            .unwrap()
    })
    .unwrap();
    assert_eq!((step.rows, step.mark, step.behind, step.stale), (200, 500, 0, false), "{step:?}");
    assert_eq!(keywords::mark(&mut conn).unwrap().epoch, before.epoch, "no unindexed row went");
    let tokens: usize = rows.iter().map(|r| r.tokens.len()).sum();
    assert_eq!(
        count(&mut conn, "SELECT coalesce(sum(events), 0) AS n FROM log_token_seconds"),
        tokens as i64,
        "every row counted once (the deleted rows' counts are retention's to forget)"
    );
}

/// A step ends at `STEP_TOKENS` tokens, whatever its row limit: events with many tokens (long
/// messages) make short steps, so the write turn it holds and its memory follow the work.
#[tokio::test]
async fn a_step_counts_at_most_step_tokens() {
    let store = TempStore::create().await;
    let per_row = 1_000;
    let n = keywords::STEP_TOKENS / per_row + 50;
    let mut rows = random_rows(19, n, 1_764_000_000, 60);
    for row in &mut rows {
        row.tokens = (0..per_row).map(|i| format!("t{i}")).collect();
    }
    let mut conn = store.db.connect().unwrap();
    insert_rows(&mut conn, &rows, false);
    let first = keywords::index_next(&mut conn, 1_000_000).unwrap();
    let cut = keywords::STEP_TOKENS / per_row;
    assert_eq!((first.rows, first.mark, first.behind), (cut, cut as i64, 50), "{first:?}");
    let second = keywords::index_next(&mut conn, 1_000_000).unwrap();
    assert_eq!((second.rows, second.mark, second.behind), (50, n as i64, 0), "{second:?}");
    assert_eq!(count(&mut conn, "SELECT coalesce(sum(events), 0) AS n FROM log_token_seconds"), (n * per_row) as i64);
}

#[tokio::test]
async fn every_window_question_equals_a_count_of_the_rows() {
    let store = TempStore::create().await;
    let start = 1_764_000_000;
    let rows = random_rows(7, 3_000, start, 7_200);
    let mut conn = store.db.connect().unwrap();
    // Several batches, as the event store writes them, none indexed yet.
    for chunk in rows.chunks(700) {
        insert_rows(&mut conn, chunk, false);
    }
    let stats = stats(&store);
    assert!(stats.ping().await);
    // The indexer stopped (every row above the mark), behind (half of them), caught up.
    assert_window_answers(&stats, &rows, start).await;
    let half = keywords::index_next(&mut conn, 1_500).unwrap();
    assert_eq!((half.rows, half.behind), (1_500, 1_500));
    assert_window_answers(&stats, &rows, start).await;
    assert_eq!(keywords::index_next(&mut conn, 10_000).unwrap().behind, 0);
    assert_window_answers(&stats, &rows, start).await;
}

/// Rows whose `tokens` is not a JSON array of text (a hand edit, a restore from a damaged file)
/// among good ones. Each made every indexer step fail at it (the indexer never passed it), every
/// keyword answer over it fail with "malformed JSON", and its day's summary fail. Now each counts
/// as its text elements (none when not an array) everywhere: the indexer passes and names them,
/// the answers are the same with it stopped, behind and caught up, and the summary counts them
/// under `invalid_rows`.
#[tokio::test]
async fn rows_with_unreadable_tokens_count_as_their_text_elements_everywhere() {
    const SPOILED: [(&str, &[&str]); 5] = [
        ("not json", &[]),
        ("[1,2]", &[]),
        (r#"{"a":1}"#, &[]),
        (r#"{"timeout":"payment"}"#, &[]),
        (r#"[1,"timeout",{"retry":2},"payment"]"#, &["timeout", "payment"]),
    ];
    let store = TempStore::create().await;
    let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let start = Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap()).timestamp() + 3_600;
    let mut rows = random_rows(23, 3_000, start, 7_200);
    let mut conn = store.db.connect().unwrap();
    for chunk in rows.chunks(700) {
        insert_rows(&mut conn, chunk, false);
    }
    // Rowids are 1.. in the rows' order (a fresh table).
    let mut spoiled = Vec::new();
    for (i, r) in rows.iter_mut().enumerate().filter(|(i, _)| i % 97 == 5) {
        let (text, tokens) = SPOILED[spoiled.len() % SPOILED.len()];
        diesel::sql_query("UPDATE logs SET tokens = ?1 WHERE rowid = ?2")
            .bind::<Text, _>(text)
            .bind::<BigInt, _>(i as i64 + 1)
            .execute(&mut conn)
            .unwrap();
        r.tokens = tokens.iter().map(|t| (*t).to_owned()).collect();
        spoiled.push(i as i64 + 1);
    }
    let stats = stats(&store);
    let set = tracked_set();
    let (first, last) = (start, start + 7_199);
    let (want_seconds, _) = expected_seconds(&rows, first, last, &set);
    let source = SqliteBucketSource::new(store.db.clone());
    let topics = [TOPIC.to_owned()];
    let snapshot = || source.snapshot(&topics, first, last, &set);

    // The indexer stopped: every row above the mark, counted from its tokens.
    assert_window_answers(&stats, &rows, start).await;
    assert_eq!(snapshot().await.unwrap().seconds, want_seconds);
    // Behind: half counted; the step passed the spoiled rows among them and named them.
    let half = keywords::index_next(&mut conn, 1_500).unwrap();
    assert_eq!((half.rows, half.mark, half.behind), (1_500, 1_500, 1_500));
    assert_eq!(half.unreadable, spoiled.iter().copied().filter(|&r| r <= 1_500).collect::<Vec<_>>());
    assert_window_answers(&stats, &rows, start).await;
    assert_eq!(snapshot().await.unwrap().seconds, want_seconds);
    // Caught up.
    let rest = keywords::index_next(&mut conn, 10_000).unwrap();
    assert_eq!((rest.rows, rest.mark, rest.behind), (1_500, 3_000, 0));
    assert_eq!(rest.unreadable, spoiled.iter().copied().filter(|&r| r > 1_500).collect::<Vec<_>>());
    assert_window_answers(&stats, &rows, start).await;
    assert_eq!(snapshot().await.unwrap().seconds, want_seconds);
    // The SQL indexer reads them as the steps did.
    let stepped = token_seconds(&mut conn);
    diesel::sql_query("DELETE FROM log_token_seconds").execute(&mut conn).unwrap();
    keywords::index_rows(&mut conn, 1, 3_000).unwrap();
    assert_eq!(token_seconds(&mut conn), stepped);

    // The day's summary succeeds, the spoiled rows counted as events and under `invalid_rows`.
    let run = summarize_day(&store.db, day, &logger()).await.unwrap();
    assert_eq!(run.invalid_rows, BTreeMap::from([("unreadable_tokens".to_owned(), spoiled.len() as u64)]));
    let read = SqliteSummaryReader::new(store.db.clone()).day(day, None, 100).await.unwrap().expect("summarized");
    assert_eq!(read.invalid_rows, serde_json::json!({"unreadable_tokens": spoiled.len()}));
    assert_eq!(read.users.iter().map(|u| u.total).sum::<i64>(), rows.len() as i64);
    assert_eq!(read.keywords, ranked(rows.iter(), 100));
}

/// Every window question of a grid over `rows` (stored from `start` on) equals a count of them.
async fn assert_window_answers(stats: &SqliteStats, rows: &[Row], start: i64) {
    let ranges = [
        WindowRange::ending_at(start + 3_600, 3_600),
        WindowRange::ending_at(start + 4_000, 60),
        WindowRange::ending_at(start + 7_200, 300),
        WindowRange::ending_at(start + 7_200, 7_200),
        WindowRange::ending_at(start, 60),
    ];
    let mut nonzero = 0;
    for range in ranges {
        for service in [None, Some("billing"), Some("nope")] {
            let q = WindowQuestion::Errors { range, service: service.map(str::to_owned), limit: 100 };
            let want = expected_errors(rows, range, service);
            nonzero += usize::from(want.total > 0);
            match stats.answer(&q).await.unwrap() {
                WindowAnswer::Errors(got) => assert_eq!(got, want, "{q:?}"),
                other => panic!("{other:?}"),
            }
            for word in WORDS.iter().chain(["id3", "absent"].iter()) {
                let q = WindowQuestion::Keyword {
                    range,
                    keyword: Keyword::parse(word).unwrap(),
                    service: service.map(str::to_owned),
                };
                let want = rows
                    .iter()
                    .filter(|r| in_window(r, range) && service.is_none_or(|s| s == r.service))
                    .filter(|r| r.tokens.iter().any(|t| t == word))
                    .count() as u64;
                match stats.answer(&q).await.unwrap() {
                    WindowAnswer::Keyword(got) => assert_eq!(got, want, "{q:?}"),
                    other => panic!("{other:?}"),
                }
            }
        }
        for limit in [1, 2, 10] {
            let counts = TRACKED.iter().map(|k| KeywordCount {
                keyword: (*k).to_owned(),
                count: rows.iter().filter(|r| in_window(r, range) && r.tokens.iter().any(|t| t == k)).count() as u64,
            });
            let want = actors::windows::stats::top_keywords(counts, limit);
            match stats.answer(&WindowQuestion::TopKeywords { range, limit }).await.unwrap() {
                WindowAnswer::TopKeywords(got) => assert_eq!(got, want, "{range:?} limit {limit}"),
                other => panic!("{other:?}"),
            }
        }
    }
    assert!(nonzero >= 8, "the windows hold events: the test compares something");
}

#[tokio::test]
async fn the_snapshot_counts_every_second_and_the_offsets_of_one_moment() {
    let store = TempStore::create().await;
    let start = 1_764_100_000;
    let rows = random_rows(11, 2_000, start, 600);
    let mut conn = store.db.connect().unwrap();
    // Half indexed, half above the indexer's mark: the hits are the sum of both.
    insert(&mut conn, &rows[..1_000]);
    insert_rows(&mut conn, &rows[1_000..], false);
    assert_eq!(keywords::mark(&mut conn).unwrap().rowid, 1_000);
    diesel::sql_query(
        "INSERT INTO kafka_offsets (topic, \"partition\", next_offset, updated_at) VALUES \
         ('logs', 0, 1200, 0), ('logs', 1, 800, 0), ('elsewhere', 0, 5, 0)",
    )
    .execute(&mut conn)
    .unwrap();

    let set = tracked_set();
    let (first, last) = (start + 100, start + 399);
    let rebuilt =
        SqliteBucketSource::new(store.db.clone()).snapshot(&[TOPIC.to_owned()], first, last, &set).await.unwrap();

    let (seconds, newest_us) = expected_seconds(&rows, first, last, &set);
    let beyond = rows
        .iter()
        .filter(|r| r.topic == TOPIC && r.ts >= (last + 1) * 1_000_000)
        .map(|r| r.ts.div_euclid(1_000_000))
        .max();
    assert!(seconds.len() > 100 && beyond.is_some());
    assert_eq!(rebuilt.seconds, seconds);
    assert_eq!(rebuilt.newest_ms, newest_us.map(|us| us.div_euclid(1_000)));
    assert_eq!(rebuilt.beyond_last, beyond);
    assert_eq!(rebuilt.offsets, BTreeMap::from([((TOPIC.to_owned(), 0), 1200), ((TOPIC.to_owned(), 1), 800)]));
}

/// The seconds `first..=last` of TOPIC's `rows` as a rebuild counts them, and the newest row's time.
fn expected_seconds(
    rows: &[Row],
    first: i64,
    last: i64,
    set: &KeywordSet,
) -> (BTreeMap<i64, SecondCounts>, Option<i64>) {
    let mut seconds: BTreeMap<i64, SecondCounts> = BTreeMap::new();
    let mut newest_us = None::<i64>;
    for r in rows
        .iter()
        .filter(|r| r.topic == TOPIC && r.ts.div_euclid(1_000_000) >= first && r.ts.div_euclid(1_000_000) <= last)
    {
        newest_us = newest_us.max(Some(r.ts));
        let counts: &mut Counts = seconds
            .entry(r.ts.div_euclid(1_000_000))
            .or_default()
            .by_service
            .entry(Arc::from(r.service.as_str()))
            .or_default();
        counts.total += 1;
        counts.errors += u64::from(r.level >= 4);
        for t in &r.tokens {
            if let Some(i) = set.position(t) {
                counts.keywords.resize(set.len(), 0);
                counts.keywords[i] += 1;
            }
        }
    }
    (seconds, newest_us)
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

#[tokio::test]
async fn a_summarized_day_reads_back_as_counted_and_a_rerun_replaces_it() {
    let store = TempStore::create().await;
    let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let midnight = Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap()).timestamp();
    // The day itself, and an hour either side that must not count.
    let rows = random_rows(3, 1_500, midnight - 3_600, 86_400 + 7_200);
    let mut conn = store.db.connect().unwrap();
    insert(&mut conn, &rows);
    let noon_us = (midnight + 43_200) * 1_000_000;
    for (reason, at) in
        [("not_json", noon_us), ("not_json", noon_us + 1), ("bad_level", noon_us), ("bad_ts", noon_us + 86_400_000_000)]
    {
        diesel::sql_query(
            "INSERT INTO log_rejects (source, reason, detail, raw, raw_len, rejected_at) VALUES ('http', ?1, 'd', x'00', 1, ?2)",
        )
        .bind::<Text, _>(reason)
        .bind::<BigInt, _>(at)
        .execute(&mut conn)
        .unwrap();
    }

    let jobs = SqliteDailyJobs::new(store.db.clone(), &logger());
    assert_eq!(jobs.last_summarized().await.unwrap(), None);
    let reader = SqliteSummaryReader::new(store.db.clone());
    assert!(reader.day(day, None, 100).await.unwrap().is_none(), "no run yet");
    let first = summarize_day(&store.db, day, &logger()).await.unwrap();
    let again = jobs.summarize(day).await.unwrap();
    assert_eq!((first.rows, first.keywords), (again.rows, again.keywords));
    assert_eq!(jobs.last_summarized().await.unwrap(), Some(day));
    // Two runs at once (the CLI beside the scheduler): both succeed, the day is there once.
    let log = logger();
    let (x, y) = tokio::join!(summarize_day(&store.db, day, &log), jobs.summarize(day));
    assert_eq!((x.unwrap().rows, y.unwrap().rows), (first.rows, first.rows));
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM user_log_summary"),
        again.rows as i64,
        "replaced, not added"
    );
    assert_eq!(again.invalid_rows, BTreeMap::from([("bad_level".to_owned(), 1), ("not_json".to_owned(), 2)]));

    let of_day: Vec<&Row> = rows.iter().filter(|r| r.ts.div_euclid(86_400_000_000) == midnight / 86_400).collect();
    let read = reader.day(day, None, 100).await.unwrap().expect("summarized");
    assert_eq!(read.invalid_rows, serde_json::json!({"bad_level": 1, "not_json": 2}));
    let mut users: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
    for r in &of_day {
        users.entry(r.user_id.clone().unwrap_or_else(|| "(none)".into())).or_default().push(r);
    }
    assert_eq!(read.users.len(), users.len());
    for u in &read.users {
        let mine = &users[&u.user_id];
        assert_eq!(u.total, mine.len() as i64);
        assert_eq!(u.errors, mine.iter().filter(|r| r.level >= 4).count() as i64);
        assert_eq!(u.warnings, mine.iter().filter(|r| r.level == 3).count() as i64);
        assert!((u.error_rate - u.errors as f64 / u.total as f64).abs() < 1e-12);
        let services: BTreeSet<&str> = mine.iter().map(|r| r.service.as_str()).collect();
        assert_eq!(u.services, services.into_iter().collect::<Vec<_>>());
        assert_eq!(u.first_seen.timestamp_micros(), mine.iter().map(|r| r.ts).min().unwrap());
        assert_eq!(u.last_seen.timestamp_micros(), mine.iter().map(|r| r.ts).max().unwrap());
        let top: Vec<serde_json::Value> = ranked(mine.iter().copied(), 10)
            .into_iter()
            .map(|(k, c)| serde_json::json!({"keyword": k, "count": c}))
            .collect();
        assert_eq!(u.top_keywords, serde_json::Value::from(top), "{}", u.user_id);
    }
    let by_total: Vec<(i64, &str)> = read.users.iter().map(|u| (-u.total, u.user_id.as_str())).collect();
    assert!(by_total.windows(2).all(|w| w[0] <= w[1]), "by total, then user_id");
    assert_eq!(read.keywords, ranked(of_day.iter().copied(), 100));

    let one = reader.day(day, Some("u2"), 100).await.unwrap().unwrap();
    assert_eq!(one.users.iter().map(|u| u.user_id.as_str()).collect::<Vec<_>>(), ["u2"]);
}

/// (token, events) by count then bytes, without stop words.
fn ranked<'a>(rows: impl Iterator<Item = &'a Row>, n: usize) -> Vec<(String, i64)> {
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for r in rows {
        for t in r.tokens.iter().filter(|t| !STOP_WORDS.contains(&t.as_str())) {
            *counts.entry(t).or_default() += 1;
        }
    }
    let mut all: Vec<(String, i64)> = counts.into_iter().map(|(k, c)| (k.to_owned(), c)).collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.as_bytes().cmp(b.0.as_bytes())));
    all.truncate(n);
    all
}

#[tokio::test]
async fn retention_deletes_old_days_and_their_keyword_index() {
    let store = TempStore::create().await;
    let today = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
    let today_start = Utc.from_utc_datetime(&today.and_hms_opt(0, 0, 0).unwrap()).timestamp();
    // Four days: today-3 .. today.
    let rows = random_rows(5, 2_000, today_start - 3 * 86_400, 4 * 86_400);
    let mut conn = store.db.connect().unwrap();
    insert(&mut conn, &rows);

    let jobs = SqliteDailyJobs::new(store.db.clone(), &logger());
    let changes = jobs.maintain_partitions(today, 2, 2).await.unwrap();
    assert!(changes.created.is_empty());
    assert_eq!(changes.dropped, [today - chrono::Days::new(3)]);
    let kept: Vec<&Row> = rows.iter().filter(|r| r.ts >= (today_start - 2 * 86_400) * 1_000_000).collect();
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM logs"), kept.len() as i64);
    let tokens: usize = kept.iter().map(|r| r.tokens.len()).sum();
    assert_eq!(
        count(&mut conn, "SELECT coalesce(sum(events), 0) AS n FROM log_token_seconds"),
        tokens as i64,
        "index rows of kept events only"
    );
    assert_eq!(jobs.maintain_partitions(today, 2, 2).await.unwrap().dropped, Vec::<NaiveDate>::new());

    let old = WindowRange { from: today_start - 3 * 86_400, to: today_start - 2 * 86_400 };
    let q = WindowQuestion::Keyword { range: old, keyword: Keyword::parse("timeout").unwrap(), service: None };
    assert!(matches!(stats(&store).answer(&q).await.unwrap(), WindowAnswer::Keyword(0)));
}

/// Retention deleting rows above the indexer's mark, and the newest rows: SQLite then gives new rows
/// rowids it gave before, so the mark comes down with them; nothing is counted twice or never.
#[tokio::test]
async fn retention_of_unindexed_and_of_the_newest_rows_keeps_the_counts_exact() {
    let store = TempStore::create().await;
    let today = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
    let today_start = Utc.from_utc_datetime(&today.and_hms_opt(0, 0, 0).unwrap()).timestamp();
    let day = |d: i64, seed: u64, n: usize| random_rows(seed, n, today_start - d * 86_400, 86_400);
    let mut conn = store.db.connect().unwrap();
    // Indexed: a day 3 days old, then today's first rows; above the mark: rows 3 days old again.
    insert(&mut conn, &day(3, 21, 600));
    insert(&mut conn, &day(0, 22, 400));
    insert_rows(&mut conn, &day(3, 23, 300), false);
    assert_eq!(keywords::mark(&mut conn).unwrap().rowid, 1_000);

    let jobs = SqliteDailyJobs::new(store.db.clone(), &logger());
    assert_eq!(jobs.maintain_partitions(today, 2, 2).await.unwrap().dropped, [today - chrono::Days::new(3)]);
    // The newest rows (1,001..1,300) went: the newest left is 1,000, the mark stays.
    assert_eq!(keywords::mark(&mut conn).unwrap().rowid, 1_000);
    assert_eq!(count(&mut conn, "SELECT max(rowid) AS n FROM logs"), 1_000);
    let later = day(0, 24, 200);
    insert_rows(&mut conn, &later, false);
    assert_eq!(count(&mut conn, "SELECT min(rowid) AS n FROM logs WHERE rowid > 1000"), 1_001, "rowids given again");

    // Today's rows: indexed (601..1,000) and above the mark on reused rowids (1,001..1,200).
    let mut kept: Vec<Row> = day(0, 22, 400);
    kept.extend(later.iter().cloned());
    let answers = |kept: Vec<Row>| {
        let stats = stats(&store);
        async move {
            for word in ["timeout", "payment", "id3"] {
                let range = WindowRange { from: today_start, to: today_start + 86_400 };
                let want = kept.iter().filter(|r| in_window(r, range) && r.tokens.iter().any(|t| t == word)).count();
                let q = WindowQuestion::Keyword { range, keyword: Keyword::parse(word).unwrap(), service: None };
                match stats.answer(&q).await.unwrap() {
                    WindowAnswer::Keyword(got) => assert_eq!(got, want as u64, "{word}"),
                    other => panic!("{other:?}"),
                }
            }
        }
    };
    answers(kept.clone()).await;

    // A whole retention of everything: the table empties, the mark comes down to 0, and rows
    // stored after (rowid 1 on) are counted.
    let changes = jobs.maintain_partitions(today + chrono::Days::new(3), 1, 1).await.unwrap();
    assert!(!changes.dropped.is_empty());
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM logs"), 0);
    assert_eq!(count(&mut conn, "SELECT coalesce(sum(events), 0) AS n FROM log_token_seconds"), 0);
    assert_eq!(keywords::mark(&mut conn).unwrap().rowid, 0);
    let fresh = day(0, 25, 300);
    insert_rows(&mut conn, &fresh, false);
    answers(fresh.clone()).await;
    let step = keywords::index_next(&mut conn, 10_000).unwrap();
    assert_eq!((step.rows, step.mark, step.behind), (300, 300, 0));
    answers(fresh).await;
    let tokens: usize = day(0, 25, 300).iter().map(|r| r.tokens.len()).sum();
    assert_eq!(count(&mut conn, "SELECT coalesce(sum(events), 0) AS n FROM log_token_seconds"), tokens as i64);
}

#[tokio::test]
async fn one_scheduler_per_file_leads_until_it_goes() {
    let store = TempStore::create().await;
    let a = SqliteDailyJobs::new(store.db.clone(), &logger());
    let b = SqliteDailyJobs::new(SqliteDb::at(store.db.path()), &logger());
    assert!(a.lead().await.unwrap());
    assert!(a.lead().await.unwrap(), "a keeps the lead");
    assert!(!b.lead().await.unwrap(), "b waits while a leads");
    drop(a);
    assert!(b.lead().await.unwrap(), "b takes over once a is gone");
}

#[derive(QueryableByName)]
struct StoredPosition {
    #[diesel(sql_type = Text)]
    topic: String,
    #[diesel(sql_type = Integer)]
    partition: i32,
    #[diesel(sql_type = BigInt)]
    offset: i64,
    #[diesel(sql_type = Text)]
    service: String,
}

fn reject(
    conn: &mut SqliteConnection,
    topic: Option<&str>,
    offset: Option<i64>,
    reason: &str,
    raw: &[u8],
    raw_len: i32,
) -> i64 {
    diesel::sql_query(
        "INSERT INTO log_rejects (source, topic, \"partition\", \"offset\", reason, detail, raw, raw_len, kafka_ts, rejected_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, 'old parser', ?6, ?7, ?8, ?8) RETURNING id AS rowid",
    )
    .bind::<Text, _>(if topic.is_some() { "kafka" } else { "http" })
    .bind::<Nullable<Text>, _>(topic)
    .bind::<Nullable<Integer>, _>(topic.map(|_| 0))
    .bind::<Nullable<BigInt>, _>(offset)
    .bind::<Text, _>(reason)
    .bind::<Binary, _>(raw)
    .bind::<Integer, _>(raw_len)
    .bind::<BigInt, _>(Utc::now().timestamp_micros())
    .get_result::<RowId>(conn)
    .unwrap()
    .rowid
}

#[tokio::test]
async fn a_fixed_reject_replays_once_and_only_once() {
    let store = TempStore::create().await;
    let mut conn = store.db.connect().unwrap();
    let fixed = br#"{"level":"error","service":"checkout","message":"payment timeout"}"#;
    reject(&mut conn, Some(TOPIC), Some(41), "store_rejected", fixed, fixed.len() as i32);
    let http_id = reject(
        &mut conn,
        None,
        None,
        "store_rejected",
        br#"{"level":"info","service":"web","message":"hello there"}"#,
        56,
    );
    reject(&mut conn, Some(TOPIC), Some(42), "missing_field", br#"{"level":"info","service":"s"}"#, 30);
    reject(&mut conn, Some(TOPIC), Some(43), "too_large", b"{\"message\":", 9_000);

    let all = rejects::list(&store.db, &RejectFilter::default(), 10).await.unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].raw, fixed);
    assert_eq!(all[1].topic, None);
    let only = RejectFilter { since: None, reason: Some("missing_field".into()) };
    assert_eq!(rejects::list(&store.db, &only, 10).await.unwrap().len(), 1);
    let later = RejectFilter { since: Some(Utc::now() + chrono::Duration::hours(1)), reason: None };
    assert!(rejects::list(&store.db, &later, 10).await.unwrap().is_empty());

    // Two replays at once: each reject is stored by one of them.
    let rules = ParseRules::default();
    let every = RejectFilter::default();
    let (one, two) = tokio::join!(
        rejects::replay(&store.db, &every, &rules, TOPIC, Utc::now()),
        rejects::replay(&store.db, &every, &rules, TOPIC, Utc::now()),
    );
    let (one, two) = (one.unwrap(), two.unwrap());
    assert_eq!(one.replayed + two.replayed, 2);
    assert_eq!(
        one.still_invalid.get("missing_field").copied().unwrap_or(0)
            + two.still_invalid.get("missing_field").copied().unwrap_or(0),
        2
    );
    assert_eq!(one.skipped.get("truncated"), Some(&1));
    let third = rejects::replay(&store.db, &RejectFilter::default(), &rules, TOPIC, Utc::now()).await.unwrap();
    assert_eq!(third.replayed, 0, "nothing is replayed twice");

    let mut stored: Vec<StoredPosition> = diesel::sql_query(
        "SELECT topic, \"partition\", \"offset\", service FROM logs ORDER BY \"partition\" DESC, \"offset\"",
    )
    .load(&mut conn)
    .unwrap();
    assert_eq!(stored.len(), 2);
    let kafka = stored.remove(0);
    assert_eq!(
        (kafka.topic.as_str(), kafka.partition, kafka.offset, kafka.service.as_str()),
        (TOPIC, 0, 41, "checkout")
    );
    let http = stored.remove(0);
    assert_eq!((http.topic.as_str(), http.partition, http.offset, http.service.as_str()), (TOPIC, -1, http_id, "web"));
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM log_rejects WHERE replayed_at IS NOT NULL"), 2);

    // The replayed event counts, above the indexer's mark and then indexed, once.
    let now = Utc::now().timestamp();
    let q = WindowQuestion::Keyword {
        range: WindowRange::ending_at(now + 60, 3_600),
        keyword: Keyword::parse("payment").unwrap(),
        service: None,
    };
    assert!(matches!(stats(&store).answer(&q).await.unwrap(), WindowAnswer::Keyword(1)));
    assert_eq!(keywords::index_next(&mut conn, 100).unwrap().rows, 2);
    assert_eq!(
        count(&mut conn, "SELECT coalesce(sum(events), 0) AS n FROM log_token_seconds WHERE token = 'payment'"),
        1
    );
    assert!(matches!(stats(&store).answer(&q).await.unwrap(), WindowAnswer::Keyword(1)));
}
