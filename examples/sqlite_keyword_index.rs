//! Measures the keyword index of the embedded store four ways on the same rows: no index (scan the
//! window by `ts` and look into each row's JSON tokens), FTS5 (contentless, on the tokens), a token
//! table keyed (token, ts, log_id), and the token table `log_tokens` keyed (hour, token, ts, log_id)
//! that `src/sqlite/keywords.rs` keeps (queried through `SqliteStats` itself). Prints the index
//! cost per ingested row, the keyword and top-keywords query times for a 1 h and a 1 min window, the
//! file sizes, and whether every answer equals a count over the rows themselves.
//!
//! `cargo run --example sqlite_keyword_index` (ROWS=1000000 SPAN_HOURS=6 by default; the events are
//! the generator's, tokenized by the one tokenizer).

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
            tokens: e.tokens,
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
fn build(conn: &mut SqliteConnection, index: Index, rows: i64) -> Duration {
    match index {
        Index::None => conn.batch_execute("DROP TABLE log_tokens").expect("drop"),
        Index::HourFirst => conn.batch_execute("DELETE FROM log_tokens").expect("empty"),
        Index::TokenFirst => conn
            .batch_execute(
                "DROP TABLE log_tokens; CREATE TABLE by_token (token TEXT NOT NULL, ts INTEGER NOT NULL, \
                 log_id INTEGER NOT NULL, PRIMARY KEY (token, ts, log_id)) WITHOUT ROWID",
            )
            .expect("by_token"),
        Index::Fts5 => conn
            .batch_execute(
                "DROP TABLE log_tokens; CREATE VIRTUAL TABLE log_fts USING fts5(tokens, content='', \
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
            Index::HourFirst => keywords::index_rows(conn, first, last),
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
        Index::HourFirst => unreachable!("asked through SqliteStats"),
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
        Index::HourFirst => unreachable!("asked through SqliteStats"),
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
    let span_hours = env_or("SPAN_HOURS", 6);
    // Events end now: the parser refuses times too far from the clock.
    let end_s = chrono::Utc::now().timestamp();
    let span_us = span_hours * 3_600_000_000;
    let start_us = end_s * 1_000_000 - span_us;
    let dir: PathBuf = std::env::temp_dir().join(format!("la_keyword_index_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    let started = Instant::now();
    let events = events(rows, start_us, span_us);
    let tokens: usize = events.iter().map(|e| e.tokens.len()).sum();
    println!(
        "{rows} generator events over {span_hours} h, {:.1} tokens per event, generated in {:.1} s",
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
    let windows = [("1 h", WindowRange::ending_at(end_s, 3_600)), ("1 min", WindowRange::ending_at(end_s, 60))];
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
    println!("| index | index cost per row (µs) | file (MB) | window | keyword `timeout` (ms) | keyword `api` (ms) | top 5 of 8 tracked (ms) | equal to a count of the rows |");
    println!("|---|---|---|---|---|---|---|---|");
    let set = Arc::new(KeywordSet::new(tracked.iter().map(|k| Keyword::parse(k).expect("keyword"))));
    for index in [Index::None, Index::Fts5, Index::TokenFirst, Index::HourFirst] {
        let path = dir.join(format!("{index:?}.db"));
        std::fs::copy(base.path(), &path).expect("copy");
        let db = SqliteDb::at(&path);
        let mut conn = db.connect().expect("connect");
        let cost = build(&mut conn, index, rows);
        conn.batch_execute("PRAGMA wal_checkpoint(TRUNCATE)").expect("checkpoint");
        let stats = SqliteStats::new(db.clone(), vec![TOPIC.into()], set.clone(), Duration::from_secs(60));
        for (name, range) in windows {
            let mut exact = true;
            let mut cells = Vec::new();
            for k in probes {
                let (t, n) = timed(|| match index {
                    Index::HourFirst => {
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
                Index::HourFirst => {
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
                "| {index:?} | {:.2} | {} | {name} | {} | {} |",
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
