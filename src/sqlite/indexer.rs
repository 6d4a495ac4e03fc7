//! The keyword indexer of the embedded store: an actor on an arbiter and a SQLite connection of its
//! own, supervised as the writer is, that adds the per-second keyword counts of the `logs` rows the
//! writer committed (`keywords::index_next`: rows after the mark, counted outside the write lock,
//! written with the new mark in one transaction). The writer's transactions then store the rows
//! only, which is what a 202 waits for.
//!
//! A pass indexes one chunk of at most `chunk_rows` rows, then pauses `interval`: under load the
//! rows of the pause and of the pass itself make the next chunk (each page of the index is written
//! once per chunk, wherever the chunk's times fall, so bigger chunks cost less per row), the writer
//! has SQLite's write lock to itself during the pause, and an idle store costs two small reads per
//! pause. While it is behind, readers count the rows above its mark from their
//! tokens (`stats`, `search`): answers are exact at every moment, only slower the further behind.
//!
//! A failed pass (SQLite busy past its timeout, a full disk) is logged and stops the actor; the
//! supervisor restarts it with a fresh connection after a growing pause. Nothing is lost or counted
//! twice by a failure or a kill at any point: the counts and the mark commit together. A row whose
//! `tokens` is not a JSON array of text is no failure (every pass would fail at it, and the indexer
//! would never pass it): it counts as the tokens it has readable (`keywords::read_tokens`), as
//! readers count it, and is logged once and counted in `log_analyzer_sqlite_index_unreadable_rows_total`.

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

/// `SQLITE_INDEX_INTERVAL_MS`' default: the pause after each pass. Each pass's transaction holds
/// SQLite's one write lock while it upserts counts scattered over the hour's seconds, and the writer
/// (what a 202 waits for) waits for it: passes every 100 ms held ingest of a 1M-event burst to
/// 41,047 events/s, every 1,000 ms let it reach 66,090 (bench/embedded_profile.sh, same build, same
/// run; docs/BENCHMARKS.md). Fewer, larger passes also count more rows per page written.
pub const DEFAULT_INTERVAL_MS: u64 = 1_000;
/// Behind by more than this many rows (or four chunks, if more), the indexer passes again after
/// [`CATCH_UP_PAUSE`] instead of its interval: what readers count from tokens stays bounded.
pub const CATCH_UP_ROWS: i64 = 400_000;
const CATCH_UP_PAUSE: Duration = Duration::from_millis(10);
/// `SQLITE_INDEX_CHUNK_ROWS`' default: rows counted per transaction at most (their tokens and
/// counts are held in memory meanwhile, some 40 MB for 100,000 of the generator's events); a step
/// also ends at [`keywords::STEP_TOKENS`] tokens.
pub const DEFAULT_CHUNK_ROWS: usize = 100_000;

/// How the indexer paces itself.
#[derive(Debug, Clone, Copy)]
pub struct IndexerConfig {
    pub interval: Duration,
    pub chunk_rows: usize,
}

impl IndexerConfig {
    /// The pause before the next pass: the interval, or [`CATCH_UP_PAUSE`] while far behind.
    pub fn pause_after(&self, step: &Step) -> Duration {
        let far = CATCH_UP_ROWS.max(i64::try_from(self.chunk_rows).unwrap_or(i64::MAX).saturating_mul(4));
        if step.behind > far && !step.stale {
            CATCH_UP_PAUSE.min(self.interval)
        } else {
            self.interval
        }
    }
}

impl Default for IndexerConfig {
    fn default() -> Self {
        IndexerConfig { interval: Duration::from_millis(DEFAULT_INTERVAL_MS), chunk_rows: DEFAULT_CHUNK_ROWS }
    }
}

/// The indexer's figures on `/metrics` (and `/debug/actors`).
pub struct IndexerMetrics {
    lag: IntGauge,
    mark: IntGauge,
    rows: IntCounter,
    failures: IntCounter,
    unreadable: IntCounter,
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
            unreadable: plain_counter(
                r,
                "log_analyzer_sqlite_index_unreadable_rows_total",
                "Rows of logs the keyword indexer counted whose tokens were not a JSON array of text (embedded mode)",
            ),
        }
    }

    /// A committed step's figures; each row of it with unreadable tokens is logged once (a step
    /// thrown away names none: its rows are read again).
    fn counted(&self, step: &Step, log: &Logger) {
        self.lag.set(step.behind);
        self.mark.set(step.mark);
        self.rows.inc_by(step.rows as u64);
        self.unreadable.inc_by(step.unreadable.len() as u64);
        for rowid in &step.unreadable {
            warn!(log, "keyword indexer: a row's tokens are not a JSON array of text; counted as its text elements \
                        (none if not an array)"; "rowid" => rowid);
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

    /// One chunk: indexed, or why not.
    fn step(&mut self) -> anyhow::Result<Step> {
        if self.conn.is_none() {
            self.conn = Some(self.db.connect()?);
        }
        let conn = self.conn.as_mut().expect("connected above");
        let db = &self.db;
        match keywords::index_next_in_turn(conn, self.config.chunk_rows, || db.write_turn()) {
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
            Ok(step) => {
                self.backoff.succeed();
                self.metrics.counted(&step, &self.log);
                self.db.note_committed(step.rows as u64);
                // A step thrown away (unindexed rows deleted meanwhile) reads again after the same
                // pause: retention deletes hour after hour, and reading again at once would spin.
                ctx.run_later(self.config.pause_after(&step), |indexer, ctx| indexer.pass(ctx));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_is_the_interval_unless_far_behind() {
        let config = IndexerConfig::default();
        let step = |behind, stale| Step { rows: 10, mark: 10, behind, stale, unreadable: Vec::new() };
        assert_eq!(config.pause_after(&step(0, false)), Duration::from_millis(DEFAULT_INTERVAL_MS));
        assert_eq!(config.pause_after(&step(CATCH_UP_ROWS, false)), config.interval, "at the bound: not yet");
        assert_eq!(config.pause_after(&step(CATCH_UP_ROWS + 1, false)), CATCH_UP_PAUSE, "far behind: catching up");
        assert_eq!(config.pause_after(&step(CATCH_UP_ROWS + 1, true)), config.interval, "thrown away: no spin");
        let big = IndexerConfig { chunk_rows: 200_000, ..config };
        assert_eq!(
            big.pause_after(&step(CATCH_UP_ROWS + 1, false)),
            big.interval,
            "four chunks of 200,000 is the bound"
        );
        let short = IndexerConfig { interval: Duration::from_millis(1), ..config };
        assert_eq!(
            short.pause_after(&step(10 * CATCH_UP_ROWS, false)),
            Duration::from_millis(1),
            "never longer than the interval"
        );
    }

    #[test]
    fn a_committed_steps_unreadable_rows_are_counted() {
        let mut conn = keywords::test_store();
        keywords::insert_test_row(&mut conn, 0, 1_000_000, "api", r#"["timeout"]"#);
        keywords::insert_test_row(&mut conn, 1, 1_000_001, "api", "not json");
        keywords::insert_test_row(&mut conn, 2, 1_000_002, "api", r#"{"a":1}"#);
        keywords::insert_test_row(&mut conn, 3, 1_000_003, "api", r#"["db"]"#);
        let registry = Registry::new();
        let metrics = IndexerMetrics::new(&registry);
        let step = keywords::index_next(&mut conn, 100).unwrap();
        metrics.counted(&step, &crate::telemetry::discard());
        assert_eq!((metrics.rows.get(), metrics.unreadable.get(), metrics.mark(), metrics.lag()), (4, 2, 4, 0));
        // Passed: the next step has nothing to count and names nothing again.
        let again = keywords::index_next(&mut conn, 100).unwrap();
        metrics.counted(&again, &crate::telemetry::discard());
        assert_eq!((again.rows, metrics.unreadable.get()), (0, 2));
        let names: Vec<String> = registry.gather().iter().map(|f| f.name().to_owned()).collect();
        assert!(names.iter().any(|n| n == "log_analyzer_sqlite_index_unreadable_rows_total"), "{names:?}");
    }
}
