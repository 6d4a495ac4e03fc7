//! The batch side: the scheduler (in `schedule` and `run`), `summary --date`, and `rejects list|replay`.

use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use actors::ports::SystemClock;
use actors::schedule::{ScheduleConfig, SchedulerActor, SummaryRun, SummaryStats};
use anyhow::Context;
use chrono::{NaiveDate, Utc};
use slog::Logger;

use crate::config::Settings;
use crate::db::daily_jobs::{connect, PgDailyJobs};
use crate::db::rejects::{self, RejectFilter, RejectRow, ReplayReport};
use crate::db::summary;
use crate::startup::PARTITIONS_AHEAD_DAYS;

/// How often the scheduler looks at the clock.
const SCHEDULER_TICK: Duration = Duration::from_secs(1);
/// Pause after a failed daily run before trying again.
const SCHEDULER_RETRY: Duration = Duration::from_secs(30);

/// The scheduler's settings.
pub fn schedule_config(settings: &Settings) -> ScheduleConfig {
    ScheduleConfig {
        summary_at: settings.summary_at,
        retention_days: settings.retention_days,
        partitions_ahead_days: PARTITIONS_AHEAD_DAYS as u32,
        tick: SCHEDULER_TICK,
        retry_after: SCHEDULER_RETRY,
    }
}

/// A running SchedulerActor and its counters.
pub struct Scheduler {
    pub addr: actix::Addr<SchedulerActor>,
    pub stats: Arc<SummaryStats>,
    arbiter: actix::Arbiter,
}

impl Scheduler {
    /// Starts the scheduler on its own arbiter (a long summary never holds up other actors).
    pub fn start(settings: &Settings, metrics: &crate::admin::Metrics, log: &Logger) -> Scheduler {
        let stats =
            Arc::new(SummaryStats { duration: Some(metrics.summary_seconds.clone()), ..SummaryStats::default() });
        let probe = metrics.actors.probe("scheduler", "0");
        let jobs = Arc::new(PgDailyJobs::new(settings.database_url.expose(), log));
        let (config, counters, log) = (schedule_config(settings), stats.clone(), log.clone());
        let arbiter = actix::Arbiter::new();
        let addr = SchedulerActor::start_in_arbiter(&arbiter.handle(), move |_| {
            SchedulerActor::new(jobs, Arc::new(SystemClock), config, counters, log).with_probe(probe)
        });
        Scheduler { addr, stats, arbiter }
    }

    /// Stops the actor; a summary in progress is abandoned (its transaction rolls back).
    pub fn stop(self) {
        self.arbiter.stop();
    }
}

/// `summary --date D`: one idempotent run.
pub async fn summary(settings: &Settings, day: NaiveDate, log: &Logger) -> anyhow::Result<SummaryRun> {
    let mut client = connect(settings.database_url.expose()).await.context("connecting to PostgreSQL")?;
    summary::summarize_day(&mut client, day, log).await
}

/// `rejects list`.
pub async fn rejects_list(settings: &Settings, filter: &RejectFilter, limit: i64) -> anyhow::Result<Vec<RejectRow>> {
    let client = connect(settings.database_url.expose()).await.context("connecting to PostgreSQL")?;
    rejects::list(&client, filter, limit).await
}

/// `rejects replay`: with today's parser rules (MAX_MESSAGE_BYTES, RETENTION_DAYS).
pub async fn rejects_replay(settings: &Settings, filter: &RejectFilter) -> anyhow::Result<ReplayReport> {
    let mut client = connect(settings.database_url.expose()).await.context("connecting to PostgreSQL")?;
    rejects::replay(&mut client, filter, &settings.parse_rules(), &settings.kafka_topic, Utc::now()).await
}

/// One line per reject for a terminal: position, reason, sizes, and the start of the payload.
pub fn format_reject(r: &RejectRow) -> String {
    let position = match (&r.topic, r.partition, r.offset) {
        (Some(t), Some(p), Some(o)) => format!("{t}/{p}@{o}"),
        _ => r.source.clone(),
    };
    let mut raw: String = String::from_utf8_lossy(&r.raw).chars().take(80).collect();
    raw = raw.replace(['\n', '\r', '\t'], " ");
    let replayed = r.replayed_at.map_or_else(|| "-".to_string(), |t| t.to_rfc3339());
    format!(
        "{id}\t{at}\t{position}\t{reason}\t{len}B{trunc}\treplayed={replayed}\t{detail}\t{raw}",
        id = r.id,
        at = r.rejected_at.to_rfc3339(),
        reason = r.reason,
        len = r.raw_len,
        trunc = if r.truncated() { " (truncated)" } else { "" },
        detail = r.detail,
    )
}
