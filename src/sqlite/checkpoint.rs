//! The embedded store's WAL checkpoints, on a thread and a connection of their own.
//!
//! In WAL mode a commit appends its pages to the `-wal` file, and a checkpoint copies them back into
//! the database file and syncs it (with `synchronous=NORMAL` the only sync). SQLite runs that copy
//! inside the commit that crossed `wal_autocheckpoint`, so the one writer did it while every
//! waiting 202 waited too: under the bench's load `walCheckpoint` was 14.8 % of the server's samples
//! and its `fsync` 5.5 %, with the writer busy 95-98 % of the time (docs/BENCHMARKS.md, "Where
//! embedded ingest's time goes"). Here a thread runs PASSIVE checkpoints after every
//! [`CHECKPOINT_ROWS`] rows the writer and the keyword indexer commit (or [`CHECKPOINT_AFTER`] after
//! the last one): PASSIVE takes no write lock, so the writer commits meanwhile, on the other core.
//! The writing connections keep SQLite's own checkpoint as a backstop at [`BACKSTOP_PAGES`], far
//! above what this thread lets the WAL reach, should it fall behind or fail.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use diesel::sql_types::Integer;
use diesel::{QueryableByName, RunQueryDsl, SqliteConnection};
use prometheus::{Histogram, IntCounter, IntGauge, Registry};
use slog::{debug, warn, Logger};

use super::SqliteDb;
use crate::telemetry::metric::{latency_buckets, plain_counter, register, single_histogram};

/// Rows committed after which the WAL is checkpointed: a few of the embedded mode's batches, so a
/// page that each of them rewrites (the `logs_ts` leaves their late times land on) is copied once
/// for all of them, as the autocheckpoint at 16,384 pages did.
pub const CHECKPOINT_ROWS: u64 = 32_768;
/// A checkpoint also follows this long after the last one when anything was committed since.
pub const CHECKPOINT_AFTER: Duration = Duration::from_secs(1);
/// How often the thread looks at the count.
const POLL: Duration = Duration::from_millis(20);
/// Pause after a failed checkpoint (its connection is opened again).
const AFTER_FAILURE: Duration = Duration::from_secs(1);
/// `wal_autocheckpoint` of every connection while the thread runs: 64Ki pages (256 MiB of WAL).
pub const BACKSTOP_PAGES: u32 = 65_536;

/// What the checkpoints do, for `/metrics`.
pub struct CheckpointMetrics {
    seconds: Histogram,
    failures: IntCounter,
    wal_frames: IntGauge,
}

impl CheckpointMetrics {
    pub fn new(r: &Registry) -> CheckpointMetrics {
        CheckpointMetrics {
            seconds: single_histogram(
                r,
                "log_analyzer_sqlite_checkpoint_seconds",
                "WAL checkpoints run off the writer's thread, how long each took (embedded mode)",
                latency_buckets(),
            ),
            failures: plain_counter(
                r,
                "log_analyzer_sqlite_checkpoint_failures_total",
                "Background WAL checkpoints that failed (retried on a new connection; embedded mode)",
            ),
            wal_frames: register(
                r,
                IntGauge::new(
                    "log_analyzer_sqlite_wal_frames",
                    "Frames (pages) in the WAL at the last background checkpoint (embedded mode)",
                )
                .expect("metric definition"),
            ),
        }
    }
}

/// `PRAGMA wal_checkpoint`'s row.
#[derive(QueryableByName, Debug)]
struct Outcome {
    /// 1 when the checkpoint could not finish (another checkpoint or a reader held it back).
    #[diesel(sql_type = Integer)]
    busy: i32,
    /// Frames in the WAL, and of those copied into the database file.
    #[diesel(sql_type = Integer)]
    log: i32,
    #[diesel(sql_type = Integer)]
    checkpointed: i32,
}

/// Runs one PASSIVE checkpoint on `conn`: the frames the WAL held and those copied.
fn checkpoint(conn: &mut SqliteConnection) -> diesel::QueryResult<Outcome> {
    diesel::sql_query("PRAGMA wal_checkpoint(PASSIVE)").get_result(conn)
}

/// The checkpoint thread; stopped (and joined) when dropped.
pub struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing `db` in the background; its connections opened from now on leave the
    /// checkpoints to this thread (up to [`BACKSTOP_PAGES`]).
    pub fn start(db: SqliteDb, metrics: Arc<CheckpointMetrics>, log: Logger) -> std::io::Result<Checkpointer> {
        db.inner.background_checkpoints.store(true, Ordering::SeqCst);
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(&db, &metrics, &log, &stopped))?;
        Ok(Checkpointer { stop, thread: Some(thread) })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().expect("checkpointer stop") = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(db: &SqliteDb, metrics: &CheckpointMetrics, log: &Logger, stop: &(Mutex<bool>, Condvar)) {
    let mut conn: Option<SqliteConnection> = None;
    let mut done_at = db.committed_rows();
    let mut last = Instant::now();
    let mut pause = POLL;
    loop {
        {
            let (lock, wake) = stop;
            let stopped = lock.lock().expect("checkpointer stop");
            let (stopped, _) = wake.wait_timeout_while(stopped, pause, |s| !*s).expect("checkpointer stop");
            if *stopped {
                return;
            }
        }
        pause = POLL;
        let committed = db.committed_rows();
        let due = committed >= done_at + CHECKPOINT_ROWS || (committed > done_at && last.elapsed() >= CHECKPOINT_AFTER);
        if !due {
            continue;
        }
        let started = Instant::now();
        let outcome = match conn.as_mut() {
            Some(c) => checkpoint(c).map_err(anyhow::Error::from),
            None => db.connect().and_then(|c| {
                let c = conn.insert(c);
                checkpoint(c).map_err(anyhow::Error::from)
            }),
        };
        match outcome {
            Ok(o) => {
                metrics.seconds.observe(started.elapsed().as_secs_f64());
                metrics.wal_frames.set(i64::from(o.log));
                debug!(log, "WAL checkpoint"; "wal_frames" => o.log, "copied" => o.checkpointed, "busy" => o.busy,
                       "ms" => started.elapsed().as_millis() as u64);
                done_at = committed;
                last = Instant::now();
            }
            Err(e) => {
                metrics.failures.inc();
                warn!(log, "WAL checkpoint failed; retrying on a new connection"; "error" => format!("{e:#}"));
                conn = None;
                pause = AFTER_FAILURE;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::connection::SimpleConnection;

    #[derive(QueryableByName)]
    struct AutoCheckpoint {
        #[diesel(sql_type = Integer)]
        wal_autocheckpoint: i32,
    }

    #[test]
    fn commits_are_checkpointed_by_the_thread_and_not_by_the_writer() {
        let dir = std::env::temp_dir().join(format!("la_checkpoint_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.db");
        let db = SqliteDb::at(&path);
        let metrics = Arc::new(CheckpointMetrics::new(&Registry::new()));
        let checkpointer = Checkpointer::start(db.clone(), metrics.clone(), crate::telemetry::discard()).unwrap();
        let mut writer = db.connect().unwrap();
        let pages = diesel::sql_query("PRAGMA wal_autocheckpoint")
            .get_result::<AutoCheckpoint>(&mut writer)
            .unwrap()
            .wal_autocheckpoint;
        assert_eq!(pages, BACKSTOP_PAGES as i32, "the writing connections leave checkpoints to the thread");
        writer.batch_execute("CREATE TABLE t (x BLOB)").unwrap();
        // ~2,000 pages in one commit: over SQLite's default autocheckpoint (1,000), under the backstop.
        writer
            .batch_execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) \
                 INSERT INTO t SELECT randomblob(4000) FROM n",
            )
            .unwrap();
        let file = || std::fs::metadata(&path).unwrap().len();
        assert!(file() < 1 << 20, "the writer's commit checkpointed itself: the file has {} bytes", file());
        std::thread::sleep(POLL * 5);
        assert_eq!(metrics.seconds.get_sample_count(), 0, "a checkpoint before anything was noted as committed");
        db.note_committed(CHECKPOINT_ROWS);
        let deadline = Instant::now() + Duration::from_secs(20);
        while metrics.seconds.get_sample_count() == 0 {
            assert!(Instant::now() < deadline, "no checkpoint after {CHECKPOINT_ROWS} rows were noted");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(file() >= 2_000 * 4_000, "the rows are in the database file after the checkpoint: {} bytes", file());
        assert_eq!(metrics.failures.get(), 0);
        assert!(metrics.wal_frames.get() >= 2_000, "the WAL held the commit: {}", metrics.wal_frames.get());
        std::thread::sleep(POLL * 5);
        assert_eq!(metrics.seconds.get_sample_count(), 1, "one checkpoint for one count");
        drop(checkpointer);
        drop(writer);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
