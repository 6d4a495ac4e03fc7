//! The daily jobs: when they are due (clokwerk, on an injected clock), which scheduler runs them (the
//! leader), and what they report. The work itself goes through the `DailyJobs` port.

pub mod actor;
mod time;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use chrono::{DateTime, Days, NaiveDate, NaiveTime, Utc};

pub use crate::ports::jobs::{PartitionChanges, SummaryRun};
pub use actor::{ScheduleConfig, SchedulerActor, Tick, TickOutcome};

/// Counters of the daily jobs, read by the metrics layer at scrape
/// (`log_analyzer_summary_runs_total{status}`, `log_analyzer_summary_job_seconds`).
#[derive(Debug, Default)]
pub struct SummaryStats {
    pub runs_ok: AtomicU64,
    pub runs_failed: AtomicU64,
    /// Sum of the durations of finished runs (ok or failed), in milliseconds.
    pub duration_ms_sum: AtomicU64,
    /// Duration of the last finished run, in milliseconds.
    pub last_duration_ms: AtomicU64,
    pub partitions_created: AtomicU64,
    pub partitions_dropped: AtomicU64,
    /// True while this process holds the scheduler lead.
    pub leading: AtomicBool,
    /// Run durations, when the process exports them.
    pub duration: Option<prometheus::Histogram>,
}

impl SummaryStats {
    /// Records one finished run.
    pub fn record(&self, ok: bool, duration_ms: u64) {
        if let Some(h) = &self.duration {
            h.observe(duration_ms as f64 / 1_000.0);
        }
        if ok {
            self.runs_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.runs_failed.fetch_add(1, Ordering::Relaxed);
        }
        self.duration_ms_sum.fetch_add(duration_ms, Ordering::Relaxed);
        self.last_duration_ms.store(duration_ms, Ordering::Relaxed);
    }
}

/// The newest day whose summary is due at `now`: a day is summarized at `at` on the day after it.
pub fn last_due_day(now: DateTime<Utc>, at: NaiveTime) -> NaiveDate {
    let today = now.date_naive();
    let back = if now.time() >= at { 1 } else { 2 };
    today - Days::new(back)
}

/// The days to summarize now: those after the last successful one up to `last_due`, never older than
/// the retention (their events are gone). Without any earlier run, only `last_due`.
pub fn days_to_summarize(
    last_done: Option<NaiveDate>,
    last_due: NaiveDate,
    today: NaiveDate,
    retention_days: u32,
) -> Vec<NaiveDate> {
    let earliest = today - Days::new(u64::from(retention_days));
    let first = last_done.map_or(last_due, |d| d + Days::new(1)).max(earliest);
    first.iter_days().take_while(|d| *d <= last_due).collect()
}
