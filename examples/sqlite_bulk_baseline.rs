//! The bare SQLite bulk insert the embedded ingest is measured against: the events of an NDJSON file
//! (resolved with `LogEvent::parse`, as the consumer does) inserted into a fresh database with the
//! embedded schema (migrations/sqlite: the same columns and index), through SQLite's C API — one
//! prepared INSERT, bound and stepped per row, in ONE transaction, with the store's pragmas.
//!
//! `--store N [R]` writes the same rows through `SqliteEventStore` instead, in batches of N (one
//! transaction each, fenced), R rows per INSERT, to compare the adapter with the bare insert.
//!
//! `--pipeline L` takes the file through the embedded pipeline as POST /ingest does, minus HTTP:
//! bodies of L lines, two at a time per core, through the intake use case, the in-process queue, the
//! consumers and the writer (timed from the first body to the last 202, each a commit).
//!
//! `--encode` times the JSON columns' encoding (tokens, attrs) with the insert, as the store must do
//! it; without it they are encoded before the clock starts (the strictest baseline).
//!
//! `--keywords` adds the keyword index the embedded store keeps (`log_token_seconds`, one count per
//! second, token, topic and service, counted in memory and upserted in key order) in the same one
//! transaction: what the index costs a bulk insert at best, apart from the batching.
//!
//! Usage: `sqlite_bulk_baseline EVENTS.ndjson DB_FILE [--encode | --keywords | --store N [R] | --pipeline L]`
//! Prints `rows=N seconds=S rows_per_s=R` (the timed part is the insert alone, not the parsing).

use std::ffi::{c_int, CStr, CString};
use std::time::Instant;

use actors::domain::{Fallback, LogEvent, ParseRules};
use actors::ingest::{BatchBuilder, RawMessage};
use actors::ports::{EventStore, OffsetStore};
use anyhow::{bail, Context};
use chrono::Utc;
use libsqlite3_sys as ffi;

const SCHEMA: &str = include_str!("../migrations/sqlite/2026-12-01-200000_embedded/up.sql");
const KEYWORD_SCHEMA: &str = include_str!("../migrations/sqlite/2026-12-01-210000_keyword_index/up.sql");
const UPSERT: &str =
    "INSERT INTO log_token_seconds (second, token, topic, service, events) VALUES (?1, ?2, ?3, ?4, ?5) \
                      ON CONFLICT DO UPDATE SET events = events + excluded.events";
const INSERT: &str = "INSERT INTO logs (ts, level, service, user_id, message, tokens, attrs, topic, \"partition\", \
                      \"offset\", ingested_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(events), Some(db_file)) = (args.first(), args.get(1)) else {
        bail!("usage: sqlite_bulk_baseline EVENTS.ndjson DB_FILE [--store BATCH [ROWS_PER_INSERT]]");
    };
    let usage = "usage: sqlite_bulk_baseline EVENTS.ndjson DB_FILE [--encode | --keywords | --store BATCH [ROWS_PER_INSERT] | --pipeline LINES_PER_BODY]";
    let through_store = match (args.get(2).map(String::as_str), args.get(3), args.get(4)) {
        (Some("--store"), Some(n), rows) => Some((
            n.parse::<usize>().context("--store takes a batch size")?,
            match rows {
                Some(rows) => rows.parse::<usize>().context("rows per INSERT")?,
                None => log_analyzer::sqlite::event_store::ROWS_PER_INSERT,
            },
        )),
        (Some("--pipeline"), Some(n), _) => {
            let per_body = n.parse::<usize>().context("--pipeline takes lines per body")?;
            let text = std::fs::read(events).with_context(|| format!("reading {events}"))?;
            let (rows, seconds) = pipeline_insert(&text, db_file, per_body)?;
            println!("rows={rows} seconds={seconds:.3} rows_per_s={:.0}", rows as f64 / seconds);
            return Ok(());
        }
        (None | Some("--encode" | "--keywords"), _, _) => None,
        _ => bail!(usage),
    };
    let text = std::fs::read(events).with_context(|| format!("reading {events}"))?;
    let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    let _ = std::fs::remove_file(db_file);
    let _ = std::fs::remove_file(format!("{db_file}-wal"));
    let _ = std::fs::remove_file(format!("{db_file}-shm"));

    let (rows, seconds) = match through_store {
        None => bare_insert(
            &lines,
            db_file,
            args.get(2).is_some_and(|a| a == "--encode"),
            args.get(2).is_some_and(|a| a == "--keywords"),
        )?,
        Some((batch, rows)) => store_insert(&lines, db_file, batch, rows)?,
    };
    println!("rows={rows} seconds={seconds:.3} rows_per_s={:.0}", rows as f64 / seconds);
    Ok(())
}

fn bare_insert(lines: &[&[u8]], db_file: &str, encode_in_loop: bool, keywords: bool) -> anyhow::Result<(usize, f64)> {
    let now = Utc::now();
    let rules = ParseRules::default();
    let fallback = Fallback { ts: Some(now), service: "unknown", service_requested: false };
    let events: Vec<LogEvent> =
        lines.iter().filter_map(|line| LogEvent::parse(line, fallback, now, &rules).ok()).collect();
    let encode = |e: &LogEvent| (serde_json::to_string(&e.tokens).expect("tokens encode"), e.attrs.as_str().to_owned());
    let encoded: Vec<(String, String)> = if encode_in_loop { Vec::new() } else { events.iter().map(encode).collect() };
    let db = Db::open(db_file)?;
    db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -65536;")?;
    db.exec(SCHEMA)?;
    if keywords {
        db.exec(KEYWORD_SCHEMA)?;
    }
    let ingested = now.timestamp_micros();
    let started = Instant::now();
    db.exec("BEGIN IMMEDIATE")?;
    let insert = db.prepare(INSERT)?;
    for (offset, e) in events.iter().enumerate() {
        let json;
        let (tokens, attrs) = if encode_in_loop {
            json = encode(e);
            (&json.0, &json.1)
        } else {
            (&encoded[offset].0, &encoded[offset].1)
        };
        // SAFETY: `insert` is a live statement of `db`; text binds are SQLITE_TRANSIENT (copied).
        unsafe {
            ffi::sqlite3_bind_int64(insert, 1, e.ts.timestamp_micros());
            ffi::sqlite3_bind_int(insert, 2, i32::from(e.level.as_i16()));
            bind_text(insert, 3, e.service.as_str());
            match &e.user_id {
                Some(user) => bind_text(insert, 4, user.as_str()),
                None => {
                    ffi::sqlite3_bind_null(insert, 4);
                }
            };
            bind_text(insert, 5, &e.message);
            bind_text(insert, 6, tokens);
            bind_text(insert, 7, attrs);
            bind_text(insert, 8, "logs");
            ffi::sqlite3_bind_int(insert, 9, 0);
            ffi::sqlite3_bind_int64(insert, 10, offset as i64);
            ffi::sqlite3_bind_int64(insert, 11, ingested);
            if ffi::sqlite3_step(insert) != ffi::SQLITE_DONE {
                bail!("insert failed: {}", db.error());
            }
            ffi::sqlite3_reset(insert);
        }
    }
    // SAFETY: finalized once, before the connection closes.
    unsafe { ffi::sqlite3_finalize(insert) };
    if keywords {
        upsert_keywords(&db, &events)?;
    }
    db.exec("COMMIT")?;
    Ok((events.len(), started.elapsed().as_secs_f64()))
}

/// Every event counted once per token in its second, the counts upserted in key order.
fn upsert_keywords(db: &Db, events: &[LogEvent]) -> anyhow::Result<()> {
    let mut counts: std::collections::HashMap<(i64, &str, &str), i64> = std::collections::HashMap::new();
    for e in events {
        let second = e.ts.timestamp_micros().div_euclid(1_000_000);
        for token in e.tokens.iter() {
            *counts.entry((second, token, e.service.as_str())).or_insert(0) += 1;
        }
    }
    let mut rows: Vec<_> = counts.into_iter().collect();
    rows.sort_unstable();
    let upsert = db.prepare(UPSERT)?;
    for ((second, token, service), events) in rows {
        // SAFETY: `upsert` is a live statement of `db`; text binds are SQLITE_TRANSIENT (copied).
        unsafe {
            ffi::sqlite3_bind_int64(upsert, 1, second);
            bind_text(upsert, 2, token);
            bind_text(upsert, 3, "logs");
            bind_text(upsert, 4, service);
            ffi::sqlite3_bind_int64(upsert, 5, events);
            if ffi::sqlite3_step(upsert) != ffi::SQLITE_DONE {
                bail!("upsert failed: {}", db.error());
            }
            ffi::sqlite3_reset(upsert);
        }
    }
    // SAFETY: finalized once, before the connection closes.
    unsafe { ffi::sqlite3_finalize(upsert) };
    Ok(())
}

/// The same rows through the embedded event store, in batches as the consumer makes them.
fn store_insert(
    lines: &[&[u8]],
    db_file: &str,
    batch_size: usize,
    rows_per_insert: usize,
) -> anyhow::Result<(usize, f64)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let db = log_analyzer::sqlite::SqliteDb::at(db_file);
        log_analyzer::sqlite::migrate::run_migrations(&db).await?;
        log_analyzer::sqlite::offset_store::SqliteOffsetStore::new(db.clone()).load("logs", &[0]).await?;
        let now = Utc::now();
        let mut batches = Vec::new();
        let mut offset = 0_i64;
        for chunk in lines.chunks(batch_size.max(1)) {
            let mut builder = BatchBuilder::new("logs".into(), 0, offset, ParseRules::default());
            for line in chunk {
                let message = RawMessage { offset, timestamp: Some(now), payload: Some(line.to_vec()), service: None };
                builder.push(message, now);
                offset += 1;
            }
            batches.push(builder.take(Default::default()));
        }
        let rows: usize = batches.iter().map(|b| b.events.len()).sum();
        let mut store =
            log_analyzer::sqlite::event_store::SqliteEventStore::new(db).with_rows_per_insert(rows_per_insert);
        let started = Instant::now();
        for batch in &batches {
            store.write(batch).await?;
        }
        Ok((rows, started.elapsed().as_secs_f64()))
    })
}

/// The file through `EmbeddedIngest` and the intake, `per_body` lines a body, a few bodies at once.
fn pipeline_insert(text: &[u8], db_file: &str, per_body: usize) -> anyhow::Result<(usize, f64)> {
    use actors::intake::{Intake, IntakeOptions, IntakeOutcome, Lines};
    use futures::StreamExt;

    let bodies: Vec<&[u8]> = {
        let mut bodies = Vec::new();
        let (mut start, mut count) = (0, 0);
        for (i, b) in text.iter().enumerate() {
            if *b == b'\n' {
                count += 1;
                if count == per_body.max(1) {
                    bodies.push(&text[start..=i]);
                    (start, count) = (i + 1, 0);
                }
            }
        }
        if start < text.len() {
            bodies.push(&text[start..]);
        }
        bodies
    };
    let url = format!("sqlite://{db_file}");
    let vars = [("KAFKA_BROKERS", ""), ("DATABASE_URL", url.as_str()), ("REDIS_URL", "")];
    let settings = log_analyzer::config::Settings::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))?;
    actix_rt::System::new().block_on(async move {
        let db = log_analyzer::sqlite::SqliteDb::from_url(&url)?;
        log_analyzer::sqlite::migrate::run_migrations(&db).await?;
        let metrics = log_analyzer::admin::Metrics::new();
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let ingest = log_analyzer::embedded::EmbeddedIngest::start(&settings, db, None, None, &metrics, &log)?;
        let intake = Intake::new(ingest.intake(), settings.parse_rules(), std::time::Duration::from_secs(60));
        let at_once = 2 * std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let started = Instant::now();
        let mut accepted = 0_usize;
        let mut takes = futures::stream::iter(bodies.iter().map(|body| {
            let options = IntakeOptions {
                service: None,
                idempotency: None,
                dry_run: false,
                received: Utc::now(),
                source: "http",
            };
            intake.take(Lines::Body(body), options, &log)
        }))
        .buffer_unordered(at_once);
        while let Some(outcome) = takes.next().await {
            match outcome {
                Ok(IntakeOutcome::Accepted { body }) => {
                    let answer: serde_json::Value = serde_json::from_slice(&body)?;
                    accepted += answer["accepted"].as_u64().unwrap_or(0) as usize;
                }
                other => bail!("a body was not accepted: {other:?}"),
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        drop(takes);
        ingest.stop().await;
        Ok((accepted, seconds))
    })
}

struct Db(*mut ffi::sqlite3);

impl Db {
    fn open(path: &str) -> anyhow::Result<Db> {
        let path = CString::new(path)?;
        let mut handle = std::ptr::null_mut();
        // SAFETY: a valid C string and an out pointer; the handle is closed in Drop.
        let rc = unsafe { ffi::sqlite3_open(path.as_ptr(), &mut handle) };
        let db = Db(handle);
        if rc != ffi::SQLITE_OK {
            bail!("opening the database: {}", db.error());
        }
        Ok(db)
    }

    fn exec(&self, sql: &str) -> anyhow::Result<()> {
        let sql = CString::new(sql)?;
        // SAFETY: a live connection and a valid C string; no callback.
        let rc = unsafe { ffi::sqlite3_exec(self.0, sql.as_ptr(), None, std::ptr::null_mut(), std::ptr::null_mut()) };
        if rc != ffi::SQLITE_OK {
            bail!("{}", self.error());
        }
        Ok(())
    }

    fn prepare(&self, sql: &str) -> anyhow::Result<*mut ffi::sqlite3_stmt> {
        let sql = CString::new(sql)?;
        let mut stmt = std::ptr::null_mut();
        // SAFETY: a live connection, a valid C string (-1: up to its NUL).
        let rc = unsafe { ffi::sqlite3_prepare_v2(self.0, sql.as_ptr(), -1, &mut stmt, std::ptr::null_mut()) };
        if rc != ffi::SQLITE_OK {
            bail!("preparing: {}", self.error());
        }
        Ok(stmt)
    }

    fn error(&self) -> String {
        // SAFETY: sqlite3_errmsg returns a NUL-terminated string owned by the connection.
        unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(self.0)) }.to_string_lossy().into_owned()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        // SAFETY: the handle came from sqlite3_open and every statement is finalized.
        unsafe { ffi::sqlite3_close(self.0) };
    }
}

/// Binds `text` to parameter `index`, copied by SQLite.
unsafe fn bind_text(stmt: *mut ffi::sqlite3_stmt, index: c_int, text: &str) {
    // SAFETY: the caller passes a live statement; SQLITE_TRANSIENT makes SQLite copy the bytes.
    unsafe {
        ffi::sqlite3_bind_text(stmt, index, text.as_ptr().cast(), text.len() as c_int, ffi::SQLITE_TRANSIENT());
    }
}
