//! Measures `GET /logs` on the embedded store: `SqliteLogSearch` (the keyword index
//! `log_token_seconds` says which seconds may hold a token, `logs_ts` reads them) against FTS5
//! (contentless, on the JSON tokens, kept by a trigger in the writer's transaction) on the same rows,
//! and what each costs the embedded writer (`write_batch` and the keyword indexer's step for the
//! batch, events/s), with and without the position
//! index `logs_position` that `event(topic, partition, offset)` uses.
//!
//! `cargo run --example sqlite_search_index` (ROWS=1000000 SPAN_S=21600 by default; the events are
//! the generator's, tokenized by the one tokenizer, in batches of 5,000 as the writer takes them).
//! Query times are the median of RUNS (5) warm runs of a newest-100 page; "exact" compares each
//! answer with the events counted in memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::domain::batch::BatchBuilder;
use actors::domain::ParseRules;
use actors::generator::{GeneratorConfig, LogGenerator};
use actors::ingest::RawMessage;
use actors::ports::OffsetStore;
use actors::search::{Cursor, LogSearch, SearchParams, SearchQuery};
use diesel::connection::SimpleConnection;
use diesel::sql_types::{BigInt, Integer, Text};
use diesel::{QueryableByName, RunQueryDsl, SqliteConnection};
use log_analyzer::sqlite::event_store::{write_batch, ROWS_PER_INSERT};
use log_analyzer::sqlite::offset_store::SqliteOffsetStore;
use log_analyzer::sqlite::search::SqliteLogSearch;
use log_analyzer::sqlite::{migrate, SqliteDb};

const TOPIC: &str = "logs";
const BATCH: usize = 5_000;
const RUNS: usize = 5;
const LIMIT: usize = 100;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    /// What the migrations make: `logs_ts`, `log_token_seconds`, `logs_position`.
    Kept,
    /// Without `logs_position`.
    NoPosition,
    /// Kept plus a contentless FTS5 table over the tokens.
    Fts5,
}

#[derive(QueryableByName)]
struct Place {
    #[diesel(sql_type = BigInt)]
    ts: i64,
    #[diesel(sql_type = Integer)]
    partition: i32,
    #[diesel(sql_type = BigInt)]
    offset: i64,
    #[diesel(sql_type = Text)]
    topic: String,
}

fn env_or(name: &str, default: i64) -> i64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The generator's payloads with their times spread evenly over the span.
fn payloads(rows: usize, start_ms: i64, span_ms: i64) -> Vec<Vec<u8>> {
    let mut generator = LogGenerator::new(GeneratorConfig { malformed_ratio: 0.0, ..GeneratorConfig::default() });
    (0..rows).map(|i| generator.next(start_ms + span_ms * i as i64 / rows as i64).payload).collect()
}

/// Where an event is in the search order: (ts, partition, offset, topic).
type At = (i64, i32, i64, String);

/// One search case: its name, token, service and cursor.
type Case<'a> = (String, Option<&'a str>, Option<&'a str>, Option<&'a Cursor>);

struct Stored {
    /// (ts, partition, offset, topic) and tokens of every stored event.
    events: Vec<(At, Vec<String>, String)>,
    write: Duration,
}

async fn fill(db: &SqliteDb, variant: Variant, payloads: &[Vec<u8>]) -> Stored {
    migrate::run_migrations(db).await.expect("migrations");
    let mut conn = db.connect().expect("connect");
    match variant {
        Variant::Kept => {}
        Variant::NoPosition => conn.batch_execute("DROP INDEX logs_position").expect("drop"),
        Variant::Fts5 => conn
            .batch_execute(
                "CREATE VIRTUAL TABLE log_fts USING fts5(tokens, content='', contentless_delete=1, detail=none, \
                 tokenize=\"unicode61 tokenchars '_'\"); \
                 CREATE TRIGGER logs_fts AFTER INSERT ON logs BEGIN \
                 INSERT INTO log_fts (rowid, tokens) VALUES (new.rowid, new.tokens); END;",
            )
            .expect("fts5"),
    }
    SqliteOffsetStore::new(db.clone()).load(TOPIC, &[0]).await.expect("offsets");
    let rules = ParseRules::default();
    let now = chrono::Utc::now();
    let mut events = Vec::with_capacity(payloads.len());
    let mut write = Duration::ZERO;
    let topic: Arc<str> = Arc::from(TOPIC);
    for (b, chunk) in payloads.chunks(BATCH).enumerate() {
        let from = (b * BATCH) as i64;
        let mut builder = BatchBuilder::new(topic.clone(), 0, from, rules.clone());
        for (i, p) in chunk.iter().enumerate() {
            let message =
                RawMessage { offset: from + i as i64, timestamp: Some(now), payload: Some(p.clone()), service: None };
            builder.push(message, now);
        }
        let batch = builder.take(Arc::default());
        for s in &batch.events {
            let e = &s.event;
            events.push((
                (e.ts.timestamp_micros(), 0, s.offset, TOPIC.to_owned()),
                e.tokens.iter().map(str::to_owned).collect(),
                e.service.as_str().to_owned(),
            ));
        }
        let started = Instant::now();
        write_batch(&mut conn, &batch, now.timestamp_micros(), ROWS_PER_INSERT).expect("write");
        // The keyword indexer's step for the batch, timed with it: the search reads its counts.
        log_analyzer::sqlite::keywords::index_next(&mut conn, BATCH).expect("index");
        write += started.elapsed();
    }
    Stored { events, write }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// The newest `LIMIT` events after `after` holding `token` (or of `service`), counted in memory.
fn truth(stored: &Stored, token: Option<&str>, service: Option<&str>, after: Option<&Cursor>) -> Vec<At> {
    let mut hits: Vec<At> = stored
        .events
        .iter()
        .filter(|(_, tokens, s)| token.is_none_or(|t| tokens.iter().any(|x| x == t)) && service.is_none_or(|v| v == s))
        .map(|(p, _, _)| p.clone())
        .filter(|p| after.is_none_or(|c| c.precedes(p.0, p.1, p.2, &p.3)))
        .collect();
    hits.sort_by(|a, b| b.cmp(a));
    hits.truncate(LIMIT);
    hits
}

async fn time_port(search: &SqliteLogSearch, query: &SearchQuery) -> (Duration, Vec<At>, bool) {
    let mut times = Vec::new();
    let mut answer = Vec::new();
    let mut truncated = false;
    for _ in 0..RUNS {
        let started = Instant::now();
        let page = search.search(query).await.expect("search");
        times.push(started.elapsed());
        truncated = page.truncated;
        answer =
            page.events.iter().map(|e| (e.ts.timestamp_micros(), e.partition, e.offset, e.topic.clone())).collect();
    }
    (median(times), answer, truncated)
}

/// The same page from FTS5: the token's postings joined to `logs` and ordered by time.
fn time_fts(conn: &mut SqliteConnection, token: &str, after: Option<&Cursor>) -> (Duration, Vec<At>) {
    let (cts, cp, co, ct) = after.map_or((i64::MAX, i32::MAX, i64::MAX, "~".to_owned()), |c| {
        (c.ts_micros, c.partition, c.offset, c.topic.clone())
    });
    let mut times = Vec::new();
    let mut answer = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let rows: Vec<Place> = diesel::sql_query(
            "SELECT l.ts, l.\"partition\", l.\"offset\", l.topic FROM log_fts AS f JOIN logs AS l ON l.rowid = f.rowid \
             WHERE log_fts MATCH ?1 AND l.ts <= ?2 AND (l.ts, l.\"partition\", l.\"offset\", l.topic) < (?2, ?3, ?4, ?5) \
             ORDER BY l.ts DESC, l.\"partition\" DESC, l.\"offset\" DESC, l.topic DESC LIMIT ?6",
        )
        .bind::<Text, _>(format!("\"{token}\""))
        .bind::<BigInt, _>(cts)
        .bind::<Integer, _>(cp)
        .bind::<BigInt, _>(co)
        .bind::<Text, _>(&ct)
        .bind::<BigInt, _>(LIMIT as i64)
        .load(conn)
        .expect("fts query");
        times.push(started.elapsed());
        answer = rows.into_iter().map(|r| (r.ts, r.partition, r.offset, r.topic)).collect();
    }
    (median(times), answer)
}

fn file_mb(path: &Path) -> f64 {
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    (size(path) + size(&wal)) as f64 / 1e6
}

#[actix_rt::main]
async fn main() {
    let rows = env_or("ROWS", 1_000_000) as usize;
    let span_s = env_or("SPAN_S", 21_600);
    let end_ms = chrono::Utc::now().timestamp_millis();
    let payloads = payloads(rows, end_ms - span_s * 1_000, span_s * 1_000);
    let dir = std::env::temp_dir().join(format!("la_search_bench_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    println!("{rows} events over {span_s} s, batches of {BATCH}, {RUNS} runs, newest {LIMIT}");
    println!();
    println!("| variant | writer (events/s) | write time (s) | file (MB) |");
    println!("|---|---:|---:|---:|");
    let mut kept = None;
    let mut fts = None;
    let mut no_position = None;
    // Kept twice, first and last: the spread between its two runs is the noise of the machine.
    for variant in [Variant::Kept, Variant::NoPosition, Variant::Fts5, Variant::Kept] {
        let path = dir.join(format!("{variant:?}{}.db", kept.is_some()));
        let db = SqliteDb::at(&path);
        let stored = fill(&db, variant, &payloads).await;
        let rate = stored.events.len() as f64 / stored.write.as_secs_f64();
        println!("| {variant:?} | {rate:.0} | {:.1} | {:.0} |", stored.write.as_secs_f64(), file_mb(&path));
        match variant {
            Variant::Kept if kept.is_none() => kept = Some((db, stored)),
            Variant::Kept => {}
            Variant::Fts5 => fts = Some(db),
            Variant::NoPosition => no_position = Some(db),
        }
    }
    let (db, stored) = kept.expect("kept");

    // Tokens by share of events: a selective one (closest under 1 %), a common one (closest over 30 %).
    let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (_, tokens, _) in &stored.events {
        for t in tokens {
            *counts.entry(t.as_str()).or_default() += 1;
        }
    }
    let n = stored.events.len();
    let pick = |ok: &dyn Fn(usize) -> bool, target: f64| {
        counts
            .iter()
            .filter(|(t, c)| ok(**c) && t.len() >= 3 && t.chars().all(|ch| ch.is_ascii_alphabetic()))
            .min_by(|a, b| {
                let d = |c: usize| (c as f64 / n as f64 - target).abs();
                d(*a.1).total_cmp(&d(*b.1)).then(a.0.cmp(b.0))
            })
            .map(|(t, c)| ((*t).to_owned(), *c))
            .expect("a token")
    };
    let (selective, sel_n) = pick(&|c| c * 100 <= n, 0.005);
    // The generator may have no word in 30 % of events: then its most common one (the share is printed).
    let (common, com_n) = pick(&|_| true, 0.35);
    let services: Vec<&str> = stored.events.iter().map(|(_, _, s)| s.as_str()).collect();
    let service = services[n / 2].to_owned();
    let deep_at = stored.events[n / 2].0.clone();
    let deep = Cursor { ts_micros: deep_at.0, partition: deep_at.1, offset: deep_at.2, topic: deep_at.3.clone() };
    println!();
    println!(
        "selective `{selective}` in {:.2} % of events, common `{common}` in {:.1} %, service `{service}`, deep cursor at the middle event",
        sel_n as f64 * 100.0 / n as f64,
        com_n as f64 * 100.0 / n as f64
    );
    println!();
    println!("| question | SqliteLogSearch (ms) | exact | FTS5 (ms) | exact |");
    println!("|---|---:|---|---:|---|");
    let search = SqliteLogSearch::new(db.clone(), 10_000_000);
    let mut fts_conn = fts.as_ref().expect("fts").connect().expect("connect");
    let q = |text: Option<&str>, svc: Option<&str>, after: Option<&Cursor>| {
        let mut query = SearchParams { q: text, service: svc, ..SearchParams::default() }.query().expect("query");
        query.limit = LIMIT;
        query.after = after.cloned();
        query
    };
    let absent = "zzqxnotoken";
    let cases: Vec<Case<'_>> = vec![
        (format!("selective `{selective}`"), Some(selective.as_str()), None, None),
        (format!("common `{common}`"), Some(common.as_str()), None, None),
        ("a token in no row".to_owned(), Some(absent), None, None),
        (format!("service `{service}` only"), None, Some(service.as_str()), None),
        (format!("selective `{selective}`, deep cursor"), Some(selective.as_str()), None, Some(&deep)),
        (format!("common `{common}`, deep cursor"), Some(common.as_str()), None, Some(&deep)),
    ];
    for (name, token, svc, after) in cases {
        let want = truth(&stored, token, svc, after);
        let (t, got, truncated) = time_port(&search, &q(token, svc, after)).await;
        assert!(!truncated);
        let (fts_ms, fts_exact) = match (token, svc) {
            (Some(token), None) => {
                let (t, answer) = time_fts(&mut fts_conn, token, after);
                (ms(t), if answer == want { "yes" } else { "no" })
            }
            _ => ("-".to_owned(), "-"),
        };
        println!("| {name} | {} | {} | {fts_ms} | {fts_exact} |", ms(t), if got == want { "yes" } else { "no" });
    }

    // One event by its position, with and without `logs_position`.
    println!();
    println!("| one event by position | median (ms) |");
    println!("|---|---:|");
    for (name, db) in [("logs_position", db.clone()), ("no index", no_position.expect("no position"))] {
        let search = SqliteLogSearch::new(db, 1);
        let mut times = Vec::new();
        for k in 0..RUNS {
            let at = &stored.events[(n / (RUNS + 1)) * (k + 1)].0;
            let started = Instant::now();
            let found = search.event(TOPIC, at.1, at.2).await.expect("event").expect("found");
            times.push(started.elapsed());
            assert_eq!(found.offset, at.2);
        }
        println!("| {name} | {} |", ms(median(times)));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
