//! SchedulerActor: once a day at `summary_at` (UTC) it summarizes the previous day and maintains the
//! `logs` partitions; whenever it becomes the leader (at start, or when the previous leader went away)
//! it catches up every day missed since the last successful run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{NaiveDate, NaiveTime, Utc};
use clokwerk::{Interval, Job};
use slog::{debug, error, info, Logger};

use super::time::{self, InjectedTime};
use super::{days_to_summarize, last_due_day, PartitionChanges, SummaryRun, SummaryStats};
use crate::ports::{DailyJobs, SharedClock, StoreError};

/// When and how far the daily jobs reach.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    /// Time of day (UTC) when the previous day is summarized (`SUMMARY_AT`).
    pub summary_at: NaiveTime,
    /// Days of logs kept (`RETENTION_DAYS`): older partitions are dropped, older days never summarized.
    pub retention_days: u32,
    /// Days of partitions made ahead of today.
    pub partitions_ahead_days: u32,
    /// How often the actor looks at the clock (real time).
    pub tick: Duration,
    /// Pause after a failed run before the next attempt (real time).
    pub retry_after: Duration,
}

/// Look at the clock now and run what is due; answers what was done (tests drive the actor with it).
#[derive(Message)]
#[rtype(result = "TickOutcome")]
pub struct Tick;

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickOutcome {
    pub leading: bool,
    pub summarized: Vec<SummaryRun>,
    pub partitions: Option<PartitionChanges>,
    /// The error that stopped the tick's work, if any (retried after `retry_after`).
    pub failed: Option<String>,
}

/// Runs the daily jobs on one scheduler of possibly several; see the module docs.
pub struct SchedulerActor {
    jobs: Arc<dyn DailyJobs>,
    clock: SharedClock,
    config: ScheduleConfig,
    stats: Arc<SummaryStats>,
    schedule: clokwerk::Scheduler<Utc, InjectedTime>,
    /// Set by the clokwerk job when `summary_at` passes.
    due: Arc<AtomicBool>,
    leading: bool,
    /// Work owed: catch-up after becoming leader, or a run that failed.
    owed: bool,
    /// On tokio's clock, like the tick interval (a test pauses and drives it).
    not_before: Option<actix::clock::Instant>,
    probe: Option<Arc<crate::mailbox::ActorProbe>>,
    log: Logger,
}

impl SchedulerActor {
    pub fn new(
        jobs: Arc<dyn DailyJobs>,
        clock: SharedClock,
        config: ScheduleConfig,
        stats: Arc<SummaryStats>,
        log: Logger,
    ) -> SchedulerActor {
        let due = Arc::new(AtomicBool::new(false));
        let mut schedule = clokwerk::Scheduler::with_tz_and_provider::<Utc, InjectedTime>(Utc);
        let flag = due.clone();
        time::at(clock.now(), || {
            schedule
                .every(Interval::Days(1))
                .at_time(config.summary_at)
                .run(move || flag.store(true, Ordering::SeqCst));
        });
        let log = log.new(slog::o!("actor" => "scheduler"));
        SchedulerActor {
            jobs,
            clock,
            config,
            stats,
            schedule,
            due,
            leading: false,
            owed: false,
            not_before: None,
            probe: None,
            log,
        }
    }

    /// Counts each tick as a handled message of this probe, and its failures as the last error.
    pub fn with_probe(mut self, probe: Arc<crate::mailbox::ActorProbe>) -> SchedulerActor {
        self.probe = Some(probe);
        self
    }

    /// One look at the clock: a future that does what is due, and records it on the actor.
    fn tick(&mut self) -> ResponseActFuture<Self, TickOutcome> {
        let started = Instant::now();
        let now = self.clock.now();
        time::at(now, || self.schedule.run_pending());
        let due = self.due.swap(false, Ordering::SeqCst);
        let waiting = self.not_before.is_some_and(|t| actix::clock::Instant::now() < t);
        let owed = self.owed || due;
        let (jobs, config, stats, log) = (self.jobs.clone(), self.config.clone(), self.stats.clone(), self.log.clone());
        let was_leading = self.leading;
        let work = async move {
            let mut outcome = TickOutcome::default();
            match jobs.lead().await {
                Ok(true) => outcome.leading = true,
                // The leader does the work, catch-up included, should this one ever lead.
                Ok(false) => return (outcome, false),
                Err(e) => {
                    outcome.failed = Some(e.to_string());
                    return (outcome, false);
                }
            }
            // Becoming the leader means a schedule may have been missed (down, or another leader
            // gone): catch up.
            if (was_leading && !owed) || waiting {
                return (outcome, owed);
            }
            if !was_leading {
                info!(log, "scheduler leads; catching up"; "summary_at" => %config.summary_at);
            }
            match run_due(&*jobs, now, &config, &stats, &log, &mut outcome).await {
                Ok(()) => (outcome, false),
                Err(e) => {
                    error!(log, "daily jobs failed; will retry"; "error" => %e,
                           "retry_after_s" => config.retry_after.as_secs());
                    outcome.failed = Some(e.to_string());
                    (outcome, true)
                }
            }
        };
        Box::pin(work.into_actor(self).map(move |(outcome, owed), act, _| {
            if outcome.leading != act.leading {
                act.stats.leading.store(outcome.leading, Ordering::Relaxed);
            }
            act.leading = outcome.leading;
            act.not_before = match &outcome.failed {
                Some(_) => Some(actix::clock::Instant::now() + act.config.retry_after),
                // A look inside the pause keeps it: clearing it here would retry at the next tick.
                None if waiting => act.not_before,
                None => None,
            };
            act.owed = owed;
            if let Some(probe) = &act.probe {
                probe.handled_in(started.elapsed());
                if let Some(e) = &outcome.failed {
                    probe.error(e);
                }
            }
            outcome
        }))
    }
}

/// Partitions first (today's events need theirs), then every day due since the last successful run.
async fn run_due(
    jobs: &dyn DailyJobs,
    now: chrono::DateTime<Utc>,
    config: &ScheduleConfig,
    stats: &SummaryStats,
    log: &Logger,
    outcome: &mut TickOutcome,
) -> Result<(), StoreError> {
    let today = now.date_naive();
    let changes = jobs.maintain_partitions(today, config.partitions_ahead_days, config.retention_days).await?;
    stats.partitions_created.fetch_add(changes.created.len() as u64, Ordering::Relaxed);
    stats.partitions_dropped.fetch_add(changes.dropped.len() as u64, Ordering::Relaxed);
    if !changes.created.is_empty() || !changes.dropped.is_empty() {
        info!(log, "partitions maintained"; "created" => changes.created.len(), "dropped" => changes.dropped.len(),
              "dropped_days" => join(&changes.dropped));
    }
    outcome.partitions = Some(changes);
    let last_done = jobs.last_summarized().await?;
    let days = days_to_summarize(last_done, last_due_day(now, config.summary_at), today, config.retention_days);
    debug!(log, "summaries due"; "days" => join(&days));
    for day in days {
        let started = Instant::now();
        match jobs.summarize(day).await {
            Ok(run) => {
                stats.record(true, run.duration_ms);
                outcome.summarized.push(run);
            }
            Err(e) => {
                stats.record(false, started.elapsed().as_millis() as u64);
                return Err(e);
            }
        }
    }
    Ok(())
}

fn join(days: &[NaiveDate]) -> String {
    days.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

impl Actor for SchedulerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(probe) = &self.probe {
            probe.started();
        }
        info!(self.log, "scheduler started"; "summary_at" => %self.config.summary_at,
              "retention_days" => self.config.retention_days);
        // `wait` holds every other event (messages, intervals) until the tick's work is done, so two
        // ticks never overlap.
        let first = self.tick();
        ctx.wait(first.map(|_, _, _| ()));
        ctx.run_interval(self.config.tick, |act, ctx| {
            let tick = act.tick();
            ctx.wait(tick.map(|_, _, _| ()));
        });
    }
}

crate::tracked!(SchedulerActor => Tick);

impl Handler<Tick> for SchedulerActor {
    type Result = AtomicResponse<Self, TickOutcome>;

    fn handle(&mut self, _: Tick, _: &mut Self::Context) -> Self::Result {
        AtomicResponse::new(self.tick())
    }
}
