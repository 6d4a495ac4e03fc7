//! The embedded mode's store: one SQLite file in WAL mode (diesel's sqlite backend, libsqlite3
//! compiled in), standing where PostgreSQL stands in the full stack. Every adapter of this module
//! implements a port of `actors` over a [`SqliteDb`].
//!
//! SQLite takes one writer at a time. Readers do not wait for it (WAL), so queries run on pooled
//! connections of their own, on tokio's blocking threads; writes go through the one writer.

pub mod checkpoint;
pub mod event_store;
pub mod idempotency;
pub mod indexer;
pub mod keywords;
pub mod migrate;
pub mod offset_store;
pub mod rejects;
pub mod search;
pub mod stats;
pub mod summary;
pub(crate) mod tables;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actors::ports::StoreError;
use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};

/// `DATABASE_URL`'s default: the file in the working directory.
pub const DEFAULT_PATH: &str = "log-analyzer.db";

/// How long a connection waits for another's lock before it reports `database is locked`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// WAL pages after which a commit copies the WAL back into the database file (SQLite's default is
/// 1,000). Events late by up to an hour scatter a batch over the `logs_ts` index and a keyword
/// indexer's chunk over the per-second keyword counts (when the writer still wrote those, one
/// commit of 5,000 such events wrote ~4,800 pages to the WAL
/// (bench/sqlite_write_pattern.py: 191,732 frames for 200k events against 24,337 in time order)): at
/// the default every such commit would also checkpoint, copying its pages again and syncing twice. At
/// 16,384 (64 MiB) a checkpoint comes every few commits and copies a page rewritten by each of them
/// once. The WAL file keeps its largest size between checkpoints.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 16_384;

/// The WAL file is cut back to this size when it starts over after a checkpoint: under sustained
/// load the background checkpoints (`checkpoint`) let it grow past it between restarts.
const JOURNAL_SIZE_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// Idle read connections kept for reuse.
const READERS_KEPT: usize = 8;

/// Whether `DATABASE_URL` names the embedded store: empty, or `sqlite:…`.
pub fn is_sqlite_url(url: &str) -> bool {
    url.is_empty() || url.starts_with("sqlite:")
}

/// The file a `DATABASE_URL` names: empty → [`DEFAULT_PATH`]; `sqlite://PATH` and `sqlite:PATH` →
/// PATH (`sqlite:///abs/path` is absolute, `sqlite://rel/path` relative to the working directory).
/// Any query string (`?mode=…`) is ignored.
pub fn path_of(url: &str) -> anyhow::Result<PathBuf> {
    if url.is_empty() {
        return Ok(PathBuf::from(DEFAULT_PATH));
    }
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .with_context(|| format!("DATABASE_URL {url:?} is not a sqlite: URL"))?;
    let rest = rest.split('?').next().unwrap_or_default();
    anyhow::ensure!(
        !rest.is_empty() && rest != ":memory:",
        "DATABASE_URL {url:?} names no file: the embedded store needs one (e.g. sqlite://log-analyzer.db)"
    );
    Ok(PathBuf::from(rest))
}

/// Microseconds since the Unix epoch: how this store keeps a time.
pub fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The time kept as `micros`.
pub fn from_micros(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us).single().unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// A store failure as the ports report it: `database is locked` and I/O errors may pass, the rest
/// is the data's fault.
pub fn store_error(e: diesel::result::Error) -> StoreError {
    StoreError::Unavailable(format!("SQLite: {e}"))
}

/// One SQLite database file, with a pool of read connections.
#[derive(Clone)]
pub struct SqliteDb {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    readers: Mutex<Vec<SqliteConnection>>,
    turns: Turns,
    /// Rows the writer and the keyword indexer committed: what `checkpoint` paces itself by.
    committed_rows: std::sync::atomic::AtomicU64,
    /// A `checkpoint::Checkpointer` runs: connections leave the checkpoints to it.
    background_checkpoints: std::sync::atomic::AtomicBool,
}

/// Turns at SQLite's one write lock for the embedded writer and the keyword indexer, first come
/// first served. Without them the two meet only in SQLite's busy handler, which retries after
/// sleeps of up to 100 ms: under load the writer, back in a new transaction within microseconds of
/// its commit, would keep the indexer out until its busy timeout. With them each waits at most one
/// transaction of the other. (Other writers, the intake's short transactions and the daily jobs,
/// still meet them in the busy handler.)
#[derive(Default)]
struct Turns {
    next: std::sync::atomic::AtomicU64,
    serving: Mutex<u64>,
    served: std::sync::Condvar,
}

/// A turn at the write lock, until dropped.
pub struct WriteTurn<'a> {
    turns: &'a Turns,
}

impl Drop for WriteTurn<'_> {
    fn drop(&mut self) {
        *self.turns.serving.lock().expect("write turns") += 1;
        self.turns.served.notify_all();
    }
}

impl std::fmt::Debug for SqliteDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteDb").field("path", &self.inner.path).finish()
    }
}

impl SqliteDb {
    /// The database of `DATABASE_URL` (see [`path_of`]); the file is made on the first connection.
    pub fn from_url(url: &str) -> anyhow::Result<SqliteDb> {
        Ok(SqliteDb::at(path_of(url)?))
    }

    pub fn at(path: impl Into<PathBuf>) -> SqliteDb {
        SqliteDb {
            inner: Arc::new(Inner {
                path: path.into(),
                readers: Mutex::new(Vec::new()),
                turns: Turns::default(),
                committed_rows: Default::default(),
                background_checkpoints: Default::default(),
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// A new connection, in WAL mode, waiting up to `BUSY_TIMEOUT` for locks. `synchronous=NORMAL`:
    /// a commit survives the process being killed (the WAL is in the OS's hands); only a power cut
    /// may lose the last commits.
    pub fn connect(&self) -> anyhow::Result<SqliteConnection> {
        let path = &self.inner.path;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let url = path.to_str().with_context(|| format!("{} is not valid UTF-8", path.display()))?;
        let mut conn = SqliteConnection::establish(url).with_context(|| format!("opening SQLite {url}"))?;
        // busy_timeout first: `journal_mode` takes a lock, and while another connection (the
        // writer, the keyword indexer) holds the file it would fail at once with "database is
        // locked" instead of waiting like every later statement.
        let autocheckpoint = if self.inner.background_checkpoints.load(std::sync::atomic::Ordering::SeqCst) {
            checkpoint::BACKSTOP_PAGES
        } else {
            WAL_AUTOCHECKPOINT_PAGES
        };
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA temp_store = MEMORY; PRAGMA cache_size = -65536; PRAGMA wal_autocheckpoint = {autocheckpoint}; \
             PRAGMA journal_size_limit = {};",
            BUSY_TIMEOUT.as_millis(),
            JOURNAL_SIZE_LIMIT_BYTES,
        ))
        .with_context(|| format!("setting up SQLite {url}"))?;
        Ok(conn)
    }

    /// Counts `rows` committed (the writer's and the keyword indexer's): the background checkpoints
    /// follow this count.
    pub fn note_committed(&self, rows: u64) {
        self.inner.committed_rows.fetch_add(rows, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn committed_rows(&self) -> u64 {
        self.inner.committed_rows.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits for this process's turn at SQLite's write lock (see `Turns`): hold it from before
    /// `BEGIN IMMEDIATE` to the commit. Blocks the thread.
    pub fn write_turn(&self) -> WriteTurn<'_> {
        let turns = &self.inner.turns;
        let ticket = turns.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut serving = turns.serving.lock().expect("write turns");
        while *serving != ticket {
            serving = turns.served.wait(serving).expect("write turns");
        }
        WriteTurn { turns }
    }

    /// Runs `work` on a pooled read connection on a blocking thread.
    pub async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> diesel::QueryResult<T> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = db.inner.readers.lock().expect("sqlite readers").pop();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => db.connect().map_err(|e| StoreError::Unavailable(format!("{e:#}")))?,
            };
            let result = work(&mut conn).map_err(store_error);
            let mut readers = db.inner.readers.lock().expect("sqlite readers");
            if readers.len() < READERS_KEPT {
                readers.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("a SQLite read did not finish: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_files() {
        assert_eq!(path_of("").unwrap(), PathBuf::from("log-analyzer.db"));
        assert_eq!(path_of("sqlite://data/la.db").unwrap(), PathBuf::from("data/la.db"));
        assert_eq!(path_of("sqlite:///var/lib/la.db").unwrap(), PathBuf::from("/var/lib/la.db"));
        assert_eq!(path_of("sqlite:la.db?mode=rwc").unwrap(), PathBuf::from("la.db"));
        assert!(path_of("sqlite::memory:").is_err());
        assert!(path_of("postgres://x").is_err());
        assert!(is_sqlite_url("") && is_sqlite_url("sqlite:x") && !is_sqlite_url("postgres://x"));
    }

    #[test]
    fn times_round_trip_in_micros() {
        let t = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap() + chrono::Duration::microseconds(7);
        assert_eq!(from_micros(micros(t)), t);
    }
}
