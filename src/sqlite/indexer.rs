//! The keyword indexer of the embedded store: an actor on an arbiter and a SQLite connection of its
//! own, supervised as the writer is, that adds the per-second keyword counts of the `logs` rows the
//! writer committed (`keywords::index_next`: rows after the mark, counted outside the write lock,
//! written with the new mark in one transaction). The writer's transactions then store the rows
//! only, which is what a 202 waits for.
//!
//! A pass indexes one chunk of at most `chunk_rows` rows, then pauses `interval`. While the writer
//! has batches waiting (ingest at its ceiling) the indexer waits instead, up to `MAX_LAG_CHUNKS`
//! chunks behind, and then catches up in full chunks: each page of the index is written once per chunk, wherever the chunk's times fall,
//! so bigger chunks cost less per row, and the writer keeps SQLite's write lock to itself while it
//! is busiest. An idle store costs two small reads per pause. While it is behind, readers count the rows above its mark from their
//! tokens (`stats`, `search`): answers are exact at every moment, only slower the further behind.
//!
//! A failed pass (SQLite busy past its timeout, a full disk) is logged and stops the actor; the
//! supervisor restarts it with a fresh connection after a growing pause. Nothing is lost or counted
//! twice by a failure or a kill at any point: the counts and the mark commit together.

use std::sync::Arc;
use std::time::Duration;

use ::actors::ingest::Backoff;
use ::actors::mailbox::ActorProbe;
use actix::prelude::*;
use diesel::SqliteConnection;
use prometheus::{IntCounter, IntGauge, Registry};
use slog::{warn, Logger};

use super::keywords::{self, Step};
use super::SqliteDb;
use crate::telemetry::metric::{plain_counter, register};

/// `SQLITE_INDEX_INTERVAL_MS`' default: the pause after each pass.
pub const DEFAULT_INTERVAL_MS: u64 = 100;
/// `SQLITE_INDEX_CHUNK_ROWS`' default: rows counted per transaction at most (their tokens and
/// counts are held in memory meanwhile, some 40 MB for 100,000 of the generator's events).
pub const DEFAULT_CHUNK_ROWS: usize = 100_000;

/// Chunks of rows the indexer lets pile up at most while it waits for the writer: past it, it
/// indexes whatever the writer does, so the rows readers count from their tokens stay bounded.
pub const MAX_LAG_CHUNKS: i64 = 5;

/// How the indexer paces itself.
#[derive(Clone)]
pub struct IndexerConfig {
    pub interval: Duration,
    pub chunk_rows: usize,
    /// Whether the writer has batches waiting (ingest at its ceiling): the indexer then waits, up to
    /// `MAX_LAG_CHUNKS` chunks behind, so that its transactions do not take the writer's turns.
    pub writer_busy: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
}

impl Default for IndexerConfig {
    fn default() -> Self {
        IndexerConfig {
            interval: Duration::from_millis(DEFAULT_INTERVAL_MS),
            chunk_rows: DEFAULT_CHUNK_ROWS,
            writer_busy: None,
        }
    }
}

/// The indexer's figures on `/metrics` (and `/debug/actors`).
pub struct IndexerMetrics {
    lag: IntGauge,
    mark: IntGauge,
    rows: IntCounter,
    failures: IntCounter,
}

impl IndexerMetrics {
    pub fn new(r: &Registry) -> IndexerMetrics {
        IndexerMetrics {
            lag: register(
                r,
                IntGauge::new(
                    "log_analyzer_sqlite_index_lag_rows",
                    "Rows of logs the keyword indexer has not counted yet, as of its last pass (embedded mode)",
                )
                .expect("metric definition"),
            ),
            mark: register(
                r,
                IntGauge::new(
                    "log_analyzer_sqlite_indexed_rowid",
                    "The newest rowid of logs whose keywords are counted (embedded mode)",
                )
                .expect("metric definition"),
            ),
            rows: plain_counter(
                r,
                "log_analyzer_sqlite_indexed_rows_total",
                "Rows of logs the keyword indexer counted (embedded mode)",
            ),
            failures: plain_counter(
                r,
                "log_analyzer_sqlite_index_failures_total",
                "Keyword indexer passes that failed (the indexer restarts; embedded mode)",
            ),
        }
    }

    /// Rows behind, as of the last pass.
    pub fn lag(&self) -> i64 {
        self.lag.get()
    }

    /// The committed mark, as of the last pass.
    pub fn mark(&self) -> i64 {
        self.mark.get()
    }
}

/// Counts the keywords of the rows the writer stored, behind it.
pub struct KeywordIndexer {
    db: SqliteDb,
    conn: Option<SqliteConnection>,
    config: IndexerConfig,
    metrics: Arc<IndexerMetrics>,
    probe: Arc<ActorProbe>,
    backoff: Backoff,
    log: Logger,
}

impl KeywordIndexer {
    pub fn new(
        db: SqliteDb,
        config: IndexerConfig,
        metrics: Arc<IndexerMetrics>,
        probe: Arc<ActorProbe>,
        log: Logger,
    ) -> KeywordIndexer {
        KeywordIndexer { db, conn: None, config, metrics, probe, backoff: Backoff::default(), log }
    }

    /// One chunk: indexed, or why not; `None` when it waits for the writer.
    fn step(&mut self) -> anyhow::Result<Option<Step>> {
        if self.conn.is_none() {
            self.conn = Some(self.db.connect()?);
        }
        let conn = self.conn.as_mut().expect("connected above");
        let busy = self.config.writer_busy.as_ref().is_some_and(|busy| busy());
        if busy {
            let max_lag = (self.config.chunk_rows as i64).saturating_mul(MAX_LAG_CHUNKS);
            match keywords::lag(conn) {
                Ok(lag) if lag < max_lag => {
                    self.metrics.lag.set(lag);
                    return Ok(None);
                }
                Ok(_) => {}
                Err(e) => {
                    self.conn = None;
                    return Err(anyhow::anyhow!("SQLite: {e}"));
                }
            }
        }
        let db = &self.db;
        match keywords::index_next_in_turn(conn, self.config.chunk_rows, || db.write_turn()).map(Some) {
            Ok(step) => Ok(step),
            Err(e) => {
                self.conn = None;
                Err(anyhow::anyhow!("SQLite: {e}"))
            }
        }
    }

    fn pass(&mut self, ctx: &mut Context<Self>) {
        let probe = self.probe.clone();
        match probe.time(|| self.step()) {
            Ok(None) => {
                self.backoff.succeed();
                ctx.run_later(self.config.interval, |indexer, ctx| indexer.pass(ctx));
            }
            Ok(Some(step)) => {
                self.backoff.succeed();
                self.metrics.lag.set(step.behind);
                self.metrics.mark.set(step.mark);
                self.metrics.rows.inc_by(step.rows as u64);
                // A step thrown away (rows deleted meanwhile) reads again at once.
                let pause = if step.stale { Duration::ZERO } else { self.config.interval };
                ctx.run_later(pause, |indexer, ctx| indexer.pass(ctx));
            }
            Err(e) => {
                self.metrics.failures.inc();
                self.probe.error(format_args!("{e:#}"));
                warn!(self.log, "keyword indexer pass failed; restarting it"; "error" => format!("{e:#}"),
                      "indexed_rowid" => self.metrics.mark(), "lag_rows" => self.metrics.lag());
                // The supervisor restarts it with a fresh connection after a pause.
                ctx.stop();
            }
        }
    }
}

impl Actor for KeywordIndexer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.probe.started();
        // Restarted after a failure: let the database recover first.
        ctx.run_later(self.backoff.delay(), |indexer, ctx| indexer.pass(ctx));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.probe.stopped();
    }
}

impl Supervised for KeywordIndexer {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.probe.restarted();
        self.backoff.fail();
        self.conn = None;
    }
}
