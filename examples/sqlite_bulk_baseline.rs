//! The bare SQLite bulk insert the embedded ingest is measured against: the events of an NDJSON file
//! (resolved with `LogEvent::parse`, as the consumer does) inserted into a fresh database with the
//! embedded schema (migrations/sqlite: the same columns and index), through SQLite's C API — one
//! prepared INSERT, bound and stepped per row, in ONE transaction, with the store's pragmas.
//!
//! `--store N [R]` writes the same rows through `SqliteEventStore` instead, in batches of N (one
//! transaction each, fenced), R rows per INSERT, to compare the adapter with the bare insert.
//!
//! Usage: `sqlite_bulk_baseline EVENTS.ndjson DB_FILE [--store N [R]]`
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
const INSERT: &str = "INSERT INTO logs (ts, level, service, user_id, message, tokens, attrs, topic, \"partition\", \
                      \"offset\", ingested_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

/// One row as the bare insert binds it.
struct Row {
    ts: i64,
    level: i32,
    service: String,
    user_id: Option<String>,
    message: String,
    tokens: String,
    attrs: String,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(events), Some(db_file)) = (args.first(), args.get(1)) else {
        bail!("usage: sqlite_bulk_baseline EVENTS.ndjson DB_FILE [--store BATCH [ROWS_PER_INSERT]]");
    };
    let usage = "usage: sqlite_bulk_baseline EVENTS.ndjson DB_FILE [--store BATCH [ROWS_PER_INSERT]]";
    let through_store = match (args.get(2).map(String::as_str), args.get(3), args.get(4)) {
        (Some("--store"), Some(n), rows) => Some((
            n.parse::<usize>().context("--store takes a batch size")?,
            match rows {
                Some(rows) => rows.parse::<usize>().context("rows per INSERT")?,
                None => log_analyzer::sqlite::event_store::ROWS_PER_INSERT,
            },
        )),
        (None, _, _) => None,
        _ => bail!(usage),
    };
    let text = std::fs::read(events).with_context(|| format!("reading {events}"))?;
    let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    let _ = std::fs::remove_file(db_file);
    let _ = std::fs::remove_file(format!("{db_file}-wal"));
    let _ = std::fs::remove_file(format!("{db_file}-shm"));

    let (rows, seconds) = match through_store {
        None => bare_insert(&lines, db_file)?,
        Some((batch, rows)) => store_insert(&lines, db_file, batch, rows)?,
    };
    println!("rows={rows} seconds={seconds:.3} rows_per_s={:.0}", rows as f64 / seconds);
    Ok(())
}

fn bare_insert(lines: &[&[u8]], db_file: &str) -> anyhow::Result<(usize, f64)> {
    let now = Utc::now();
    let rules = ParseRules::default();
    let fallback = Fallback { ts: Some(now), service: "unknown", service_requested: false };
    let rows: Vec<Row> = lines
        .iter()
        .filter_map(|line| LogEvent::parse(line, fallback, now, &rules).ok())
        .map(|e| Row {
            ts: e.ts.timestamp_micros(),
            level: i32::from(e.level.as_i16()),
            service: e.service.as_str().to_owned(),
            user_id: e.user_id.as_ref().map(|u| u.as_str().to_owned()),
            tokens: serde_json::to_string(&e.tokens).expect("tokens encode"),
            attrs: serde_json::to_string(&e.attrs).expect("attrs encode"),
            message: e.message,
        })
        .collect();
    let db = Db::open(db_file)?;
    db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -65536;")?;
    db.exec(SCHEMA)?;
    let ingested = now.timestamp_micros();
    let started = Instant::now();
    db.exec("BEGIN IMMEDIATE")?;
    let insert = db.prepare(INSERT)?;
    for (offset, row) in rows.iter().enumerate() {
        // SAFETY: `insert` is a live statement of `db`; text binds are SQLITE_TRANSIENT (copied).
        unsafe {
            ffi::sqlite3_bind_int64(insert, 1, row.ts);
            ffi::sqlite3_bind_int(insert, 2, row.level);
            bind_text(insert, 3, &row.service);
            match &row.user_id {
                Some(user) => bind_text(insert, 4, user),
                None => {
                    ffi::sqlite3_bind_null(insert, 4);
                }
            };
            bind_text(insert, 5, &row.message);
            bind_text(insert, 6, &row.tokens);
            bind_text(insert, 7, &row.attrs);
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
    db.exec("COMMIT")?;
    Ok((rows.len(), started.elapsed().as_secs_f64()))
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
