//! Measures the keyword index of the embedded store on the same rows: no index (scan the window by
//! `ts` and look into each row's JSON tokens), FTS5 (contentless, on the tokens), a row per (token,
//! event) keyed (token, ts, log_id) or (hour, token, ts, log_id), per-second counts keyed (hour,
//! token, second, topic, service) (`HourSeconds`), and the per-second counts `log_token_seconds`
//! keyed (second, token, topic, service) that `src/sqlite/keywords.rs` keeps (queried through
//! `SqliteStats` itself), counted from the batch's events in Rust as the event store does
//! (`Seconds`) or by one SQL statement over the batch's rowids as a replay does (`SecondsSql`). Prints the index cost per
//! ingested row, the index rows, the keyword and top-keywords query times for a 1 h and a 1 min
//! window, the file sizes, and whether every answer equals a count over the rows themselves.
//!
//! `cargo run --example sqlite_keyword_index` (ROWS=1000000 SPAN_S=21600 by default, VARIANTS a
//! comma-separated subset of the names above, LONG_WINDOW_S a third window's length; the events are the generator's, tokenized by the one
//! tokenizer).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::domain::counts::KeywordSet;
use actors::domain::{Fallback, Keyword, LogEvent, ParseRules};
use actors::generator::{GeneratorConfig, LogGenerator};
use actors::ports::{WindowAnswer, WindowQuery, WindowQuestion};
use actors::windows::{KeywordCount, WindowRange};
use diesel::connection::SimpleConnection;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use diesel::{QueryableByName, RunQueryDsl, SqliteConnection};
use log_analyzer::sqlite::stats::SqliteStats;
use log_analyzer::sqlite::{keywords, migrate, SqliteDb};

const TOPIC: &str = "logs";
/// Rows per write transaction, as the event store batches them.
const BATCH: i64 = 1_000;
const RUNS: usize = 5;

struct Event {
    ts: i64,
    level: i16,
    service: String,
    user_id: Option<String>,
    message: String,
    tokens: Vec<String>,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Ranked {
    #[diesel(sql_type = Text)]
    keyword: String,
    #[diesel(sql_type = BigInt)]
    count: i64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Index {
    None,
    Fts5,
    TokenFirst,
    HourFirst,
    Seconds,
    SecondsSql,
    HourSeconds,
}

const VARIANTS: [Index; 7] = [
    Index::None,
    Index::Fts5,
    Index::TokenFirst,
    Index::HourFirst,
    Index::Seconds,
    Index::SecondsSql,
    Index::HourSeconds,
];

/// The variants `SqliteStats` answers for (the kept table).
fn kept(index: Index) -> bool {
    matches!(index, Index::Seconds | Index::SecondsSql)
}

fn env_or(name: &str, default: i64) -> i64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn events(rows: i64, start_us: i64, span_us: i64) -> Vec<Event> {
    let mut generator = LogGenerator::new(GeneratorConfig::default());
    let rules = ParseRules::default();
    let now = chrono::Utc::now();
    let mut out = Vec::with_capacity(rows as usize);
    let mut refused = 0;
    while (out.len() as i64) < rows {
        let i = out.len() as i64;
        assert!(refused < 1_000, "the parser refuses the generated events");
        let at_ms = (start_us + span_us / rows * i) / 1_000;
        let g = generator.next(at_ms);
        let Ok(e) = LogEvent::parse(&g.payload, Fallback::kafka(None, TOPIC), now, &rules) else {
            refused += 1;
            continue;
        };
        out.push(Event {
            ts: e.ts.timestamp_micros(),
            level: e.level.as_i16(),
            service: e.service.as_str().to_owned(),
            user_id: e.user_id.as_ref().map(|u| u.as_str().to_owned()),
            message: e.message,
            tokens: e.tokens.to_vec(),
        });
    }
    out
}

fn load(conn: &mut SqliteConnection, events: &[Event]) -> Duration {
    let started = Instant::now();
    for (b, chunk) in events.chunks(BATCH as usize).enumerate() {
        conn.immediate_transaction(|conn| {
            for (i, e) in chunk.iter().enumerate() {
                diesel::sql_query(
                    "INSERT INTO logs (ts, level, service, user_id, message, tokens, attrs, topic, \"partition\", \
                     \"offset\", ingested_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, '{}', ?7, 0, ?8, ?1)",
                )
                .bind::<BigInt, _>(e.ts)
                .bind::<Integer, _>(i32::from(e.level))
                .bind::<Text, _>(&e.service)
                .bind::<Nullable<Text>, _>(e.user_id.as_deref())
                .bind::<Text, _>(&e.message)
                .bind::<Text, _>(serde_json::to_string(&e.tokens).expect("tokens"))
                .bind::<Text, _>(TOPIC)
                .bind::<BigInt, _>(b as i64 * BATCH + i as i64)
                .execute(conn)?;
            }
            diesel::QueryResult::Ok(())
        })
        .expect("loading rows");
    }
    started.elapsed()
}

/// Builds `index` batch by batch over the rows already in `logs`, each batch in its own write
/// transaction (what ingest pays per batch); returns the time spent indexing.
fn build(conn: &mut SqliteConnection, index: Index, events: &[Event]) -> Duration {
    let rows = events.len() as i64;
    match index {
        Index::None => conn.batch_execute("DROP TABLE log_token_seconds").expect("drop"),
        Index::Seconds | Index::SecondsSql => conn.batch_execute("DELETE FROM log_token_seconds").expect("empty"),
        Index::HourFirst => conn
            .batch_execute(
                "DROP TABLE log_token_seconds; CREATE TABLE log_tokens (hour INTEGER NOT NULL, token TEXT NOT NULL, \
                 ts INTEGER NOT NULL, log_id INTEGER NOT NULL, PRIMARY KEY (hour, token, ts, log_id)) WITHOUT ROWID",
            )
            .expect("log_tokens"),
        Index::HourSeconds => conn
            .batch_execute(
                "DROP TABLE log_token_seconds; CREATE TABLE by_hour (hour INTEGER NOT NULL, token TEXT NOT NULL, \
                 second INTEGER NOT NULL, topic TEXT NOT NULL, service TEXT NOT NULL, events INTEGER NOT NULL, \
                 PRIMARY KEY (hour, token, second, topic, service)) WITHOUT ROWID",
            )
            .expect("by_hour"),
        Index::TokenFirst => conn
            .batch_execute(
                "DROP TABLE log_token_seconds; CREATE TABLE by_token (token TEXT NOT NULL, ts INTEGER NOT NULL, \
                 log_id INTEGER NOT NULL, PRIMARY KEY (token, ts, log_id)) WITHOUT ROWID",
            )
            .expect("by_token"),
        Index::Fts5 => conn
            .batch_execute(
                "DROP TABLE log_token_seconds; CREATE VIRTUAL TABLE log_fts USING fts5(tokens, content='', \
                 contentless_delete=1, tokenize=\"unicode61 remove_diacritics 0 tokenchars '_'\", detail=none)",
            )
            .expect("fts5"),
    }
    let started = Instant::now();
    let mut first = 1;
    while first <= rows {
        let last = (first + BATCH - 1).min(rows);
        conn.immediate_transaction(|conn| match index {
            Index::None => Ok(()),
            Index::SecondsSql => keywords::index_rows(conn, first, last),
            Index::HourSeconds => diesel::sql_query(
                "INSERT INTO by_hour (hour, token, second, topic, service, events) \
                 SELECT l.ts / 3600000000, t.value, l.ts / 1000000, l.topic, l.service, count(DISTINCT l.rowid) \
                 FROM logs AS l, json_each(l.tokens) AS t WHERE l.rowid BETWEEN ?1 AND ?2 \
                 GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5 \
                 ON CONFLICT DO UPDATE SET events = events + excluded.events",
            )
            .bind::<BigInt, _>(first)
            .bind::<BigInt, _>(last)
            .execute(conn)
            .map(|_| ()),
            Index::Seconds => {
                let mut counts = keywords::TokenSeconds::new();
                for e in &events[(first - 1) as usize..last as usize] {
                    counts.add(e.ts, TOPIC, &e.service, e.tokens.iter().map(String::as_str));
                }
                counts.write(conn)
            }
            Index::HourFirst => diesel::sql_query(
                "INSERT OR IGNORE INTO log_tokens (hour, token, ts, log_id) \
                 SELECT (l.ts - ((l.ts % 3600000000) + 3600000000) % 3600000000) / 3600000000, t.value, l.ts, l.rowid \
                 FROM logs AS l, json_each(l.tokens) AS t WHERE l.rowid BETWEEN ?1 AND ?2 ORDER BY 1, 2, 3, 4",
            )
            .bind::<BigInt, _>(first)
            .bind::<BigInt, _>(last)
            .execute(conn)
            .map(|_| ()),
            Index::TokenFirst => diesel::sql_query(
                "INSERT INTO by_token (token, ts, log_id) SELECT t.value, l.ts, l.rowid \
                 FROM logs AS l, json_each(l.tokens) AS t WHERE l.rowid BETWEEN ?1 AND ?2 \
                 ORDER BY 1, 2, 3",
            )
            .bind::<BigInt, _>(first)
            .bind::<BigInt, _>(last)
            .execute(conn)
            .map(|_| ()),
            Index::Fts5 => diesel::sql_query(
                "INSERT INTO log_fts (rowid, tokens) SELECT l.rowid, \
                 (SELECT group_concat(t.value, ' ') FROM json_each(l.tokens) AS t) FROM logs AS l \
                 WHERE l.rowid BETWEEN ?1 AND ?2",
            )
            .bind::<BigInt, _>(first)
            .bind::<BigInt, _>(last)
            .execute(conn)
            .map(|_| ()),
        })
        .expect("indexing");
        first = last + 1;
    }
    started.elapsed()
}

fn keyword_count(conn: &mut SqliteConnection, index: Index, range: WindowRange, keyword: &str) -> i64 {
    let (from, to) = (range.from * 1_000_000, range.to * 1_000_000);
    let sql = match index {
        Index::None => {
            "SELECT count(*) AS n FROM logs WHERE ts >= ?2 AND ts < ?3 AND topic = ?4 \
             AND EXISTS (SELECT 1 FROM json_each(logs.tokens) WHERE value = ?1)"
        }
        Index::Fts5 => {
            "SELECT count(*) AS n FROM logs WHERE rowid IN (SELECT rowid FROM log_fts WHERE log_fts MATCH \
             '\"' || ?1 || '\"') AND ts >= ?2 AND ts < ?3 AND topic = ?4"
        }
        Index::TokenFirst => {
            "SELECT count(*) AS n FROM by_token AS k JOIN logs AS l ON l.rowid = k.log_id \
             WHERE k.token = ?1 AND k.ts >= ?2 AND k.ts < ?3 AND l.topic = ?4"
        }
        Index::HourFirst => {
            "WITH RECURSIVE hours(h) AS (SELECT ?2 / 3600000000 UNION ALL SELECT h + 1 FROM hours \
             WHERE h < (?3 - 1) / 3600000000) \
             SELECT count(*) AS n FROM log_tokens AS k JOIN logs AS l ON l.rowid = k.log_id \
             WHERE k.hour IN (SELECT h FROM hours) AND k.token = ?1 AND k.ts >= ?2 AND k.ts < ?3 AND l.topic = ?4"
        }
        Index::HourSeconds => {
            "WITH RECURSIVE hours(h) AS (SELECT ?2 / 3600000000 UNION ALL SELECT h + 1 FROM hours \
             WHERE h < (?3 - 1) / 3600000000) \
             SELECT coalesce(sum(events), 0) AS n FROM by_hour WHERE hour IN (SELECT h FROM hours) \
             AND token = ?1 AND second >= ?2 / 1000000 AND second < ?3 / 1000000 AND topic = ?4"
        }
        Index::Seconds | Index::SecondsSql => unreachable!("asked through SqliteStats"),
    };
    diesel::sql_query(sql)
        .bind::<Text, _>(keyword)
        .bind::<BigInt, _>(from)
        .bind::<BigInt, _>(to)
        .bind::<Text, _>(TOPIC)
        .get_result::<Count>(conn)
        .expect("keyword query")
        .n
}

fn top(
    conn: &mut SqliteConnection,
    index: Index,
    range: WindowRange,
    tracked: &[String],
    limit: usize,
) -> Vec<KeywordCount> {
    let (from, to) = (range.from * 1_000_000, range.to * 1_000_000);
    let list = serde_json::to_string(tracked).expect("json");
    let rows: Vec<Ranked> = match index {
        Index::Fts5 => {
            // FTS5 answers one term at a time.
            let counts = tracked
                .iter()
                .map(|k| KeywordCount { keyword: k.clone(), count: keyword_count(conn, index, range, k) as u64 });
            return actors::windows::stats::top_keywords(counts.collect::<Vec<_>>(), limit);
        }
        Index::None => diesel::sql_query(
            "SELECT t.value AS keyword, count(*) AS count FROM logs, json_each(logs.tokens) AS t \
             WHERE ts >= ?2 AND ts < ?3 AND topic = ?4 AND t.value IN (SELECT value FROM json_each(?1)) \
             GROUP BY t.value ORDER BY count DESC, t.value LIMIT ?5",
        ),
        Index::HourFirst => diesel::sql_query(
            "WITH RECURSIVE hours(h) AS (SELECT ?2 / 3600000000 UNION ALL SELECT h + 1 FROM hours \
             WHERE h < (?3 - 1) / 3600000000) \
             SELECT k.token AS keyword, count(*) AS count FROM log_tokens AS k JOIN logs AS l ON l.rowid = k.log_id \
             WHERE k.hour IN (SELECT h FROM hours) AND k.token IN (SELECT value FROM json_each(?1)) \
             AND k.ts >= ?2 AND k.ts < ?3 AND l.topic = ?4 GROUP BY k.token ORDER BY count DESC, k.token LIMIT ?5",
        ),
        Index::HourSeconds => diesel::sql_query(
            "WITH RECURSIVE hours(h) AS (SELECT ?2 / 3600000000 UNION ALL SELECT h + 1 FROM hours \
             WHERE h < (?3 - 1) / 3600000000) \
             SELECT token AS keyword, sum(events) AS count FROM by_hour WHERE hour IN (SELECT h FROM hours) \
             AND token IN (SELECT value FROM json_each(?1)) AND second >= ?2 / 1000000 AND second < ?3 / 1000000 \
             AND topic = ?4 \
             GROUP BY token ORDER BY count DESC, token LIMIT ?5",
        ),
        Index::Seconds | Index::SecondsSql => unreachable!("asked through SqliteStats"),
        Index::TokenFirst => diesel::sql_query(
            "SELECT k.token AS keyword, count(*) AS count FROM by_token AS k JOIN logs AS l ON l.rowid = k.log_id \
             WHERE k.token IN (SELECT value FROM json_each(?1)) AND k.ts >= ?2 AND k.ts < ?3 AND l.topic = ?4 \
             GROUP BY k.token ORDER BY count DESC, k.token LIMIT ?5",
        ),
    }
    .bind::<Text, _>(list)
    .bind::<BigInt, _>(from)
    .bind::<BigInt, _>(to)
    .bind::<Text, _>(TOPIC)
    .bind::<BigInt, _>(limit as i64)
    .load(conn)
    .expect("top query");
    rows.into_iter().map(|r| KeywordCount { keyword: r.keyword, count: r.count as u64 }).collect()
}

/// The median of `RUNS` timings of `work`, and its (last) answer.
fn timed<T>(mut work: impl FnMut() -> T) -> (Duration, T) {
    let mut times = Vec::with_capacity(RUNS);
    let mut answer = None;
    for _ in 0..RUNS {
        let started = Instant::now();
        answer = Some(work());
        times.push(started.elapsed());
    }
    times.sort();
    (times[RUNS / 2], answer.expect("runs"))
}

fn size(path: &Path) -> u64 {
    ["", "-wal"].iter().map(|s| std::fs::metadata(format!("{}{s}", path.display())).map_or(0, |m| m.len())).sum()
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn main() {
    let rows = env_or("ROWS", 1_000_000);
    let span_s = env_or("SPAN_S", 6 * 3_600);
    let chosen: Vec<Index> = match std::env::var("VARIANTS") {
        Ok(names) => names
            .split(',')
            .map(|n| *VARIANTS.iter().find(|v| format!("{v:?}") == n.trim()).expect("a variant"))
            .collect(),
        Err(_) => VARIANTS.to_vec(),
    };
    // Events end now: the parser refuses times too far from the clock.
    let end_s = chrono::Utc::now().timestamp();
    let span_us = span_s * 1_000_000;
    let start_us = end_s * 1_000_000 - span_us;
    let dir: PathBuf = std::env::temp_dir().join(format!("la_keyword_index_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    let started = Instant::now();
    let events = events(rows, start_us, span_us);
    let tokens: usize = events.iter().map(|e| e.tokens.len()).sum();
    println!(
        "{rows} generator events over {span_s} s, {:.1} tokens per event, generated in {:.1} s",
        tokens as f64 / rows as f64,
        started.elapsed().as_secs_f64()
    );

    let base = SqliteDb::at(dir.join("base.db"));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(migrate::run_migrations(&base)).expect("migrate");
    let mut conn = base.connect().expect("connect");
    let loaded = load(&mut conn, &events);
    conn.batch_execute("PRAGMA wal_checkpoint(TRUNCATE)").expect("checkpoint");
    drop(conn);
    println!(
        "logs rows alone: {:.2} µs per row ({:.1} s), {} MB",
        loaded.as_secs_f64() * 1e6 / rows as f64,
        loaded.as_secs_f64(),
        size(base.path()) / 1_000_000
    );

    let tracked: Vec<String> = GeneratorConfig::default().keywords;
    let mut windows = vec![
        ("1 h".to_owned(), WindowRange::ending_at(end_s, 3_600)),
        ("1 min".to_owned(), WindowRange::ending_at(end_s, 60)),
    ];
    // A window as long as retention allows (the API's longest), to see what one lookup per second costs.
    let long_s = env_or("LONG_WINDOW_S", 0);
    if long_s > 0 {
        windows.push((format!("{long_s} s"), WindowRange::ending_at(end_s, long_s as u64)));
    }
    let probes = ["timeout", "api"];
    let in_window = |e: &Event, r: WindowRange| e.ts >= r.from * 1_000_000 && e.ts < r.to * 1_000_000;
    let truth_keyword = |r: WindowRange, k: &str| {
        events.iter().filter(|e| in_window(e, r) && e.tokens.iter().any(|t| t == k)).count() as i64
    };
    let truth_top = |r: WindowRange| {
        let counts: Vec<KeywordCount> =
            tracked.iter().map(|k| KeywordCount { keyword: k.clone(), count: truth_keyword(r, k) as u64 }).collect();
        actors::windows::stats::top_keywords(counts, 5)
    };

    println!();
    println!("| index | index cost per row (µs) | index rows | file (MB) | window | keyword `timeout` (ms) | keyword `api` (ms) | top 5 of 8 tracked (ms) | exact |");
    println!("|---|---:|---:|---:|---|---:|---:|---:|---|");
    let set = Arc::new(KeywordSet::new(tracked.iter().map(|k| Keyword::parse(k).expect("keyword"))));
    for index in chosen {
        let path = dir.join(format!("{index:?}.db"));
        std::fs::copy(base.path(), &path).expect("copy");
        let db = SqliteDb::at(&path);
        let mut conn = db.connect().expect("connect");
        let cost = build(&mut conn, index, &events);
        conn.batch_execute("PRAGMA wal_checkpoint(TRUNCATE)").expect("checkpoint");
        let table = match index {
            Index::None | Index::Fts5 => None,
            Index::TokenFirst => Some("by_token"),
            Index::HourFirst => Some("log_tokens"),
            Index::HourSeconds => Some("by_hour"),
            Index::Seconds | Index::SecondsSql => Some("log_token_seconds"),
        };
        let index_rows = table.map_or("-".to_owned(), |t| {
            diesel::sql_query(format!("SELECT count(*) AS n FROM {t}"))
                .get_result::<Count>(&mut conn)
                .expect("index rows")
                .n
                .to_string()
        });
        let stats = SqliteStats::new(db.clone(), vec![TOPIC.into()], set.clone(), Duration::from_secs(60));
        for (name, range) in windows.iter().cloned() {
            let mut exact = true;
            let mut cells = Vec::new();
            for k in probes {
                let (t, n) = timed(|| match index {
                    i if kept(i) => {
                        let q = WindowQuestion::Keyword {
                            range,
                            keyword: Keyword::parse(k).expect("keyword"),
                            service: None,
                        };
                        match runtime.block_on(stats.answer(&q)).expect("answer") {
                            WindowAnswer::Keyword(n) => n as i64,
                            other => panic!("{other:?}"),
                        }
                    }
                    _ => keyword_count(&mut conn, index, range, k),
                });
                exact &= n == truth_keyword(range, k);
                cells.push(ms(t));
            }
            let (t, answer) = timed(|| match index {
                i if kept(i) => {
                    match runtime.block_on(stats.answer(&WindowQuestion::TopKeywords { range, limit: 5 })) {
                        Ok(WindowAnswer::TopKeywords(top)) => top,
                        other => panic!("{other:?}"),
                    }
                }
                _ => top(&mut conn, index, range, &tracked, 5),
            });
            exact &= answer == truth_top(range);
            cells.push(ms(t));
            println!(
                "| {index:?} | {:.2} | {index_rows} | {} | {name} | {} | {} |",
                cost.as_secs_f64() * 1e6 / rows as f64,
                size(&path) / 1_000_000,
                cells.join(" | "),
                if exact { "yes" } else { "NO" }
            );
        }
        drop(conn);
        let _ = std::fs::remove_file(&path);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
