//! The scheduler on an in-memory port and a hand-moved clock: nothing here waits in real time.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use async_trait::async_trait;
use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeZone, Utc};

use super::*;
use crate::ports::{DailyJobs, StoreError};
use crate::testing::SimClock;

/// One database as the schedulers would see it: summarized days, partitions, and the lead.
#[derive(Default)]
struct World {
    summarized: Vec<(usize, NaiveDate)>,
    partitions: BTreeSet<NaiveDate>,
    leader: Option<usize>,
    fail_summaries: bool,
}

struct MemoryJobs {
    id: usize,
    world: Arc<Mutex<World>>,
}

#[async_trait]
impl DailyJobs for MemoryJobs {
    async fn lead(&self) -> Result<bool, StoreError> {
        let mut w = self.world.lock().unwrap();
        let leader = *w.leader.get_or_insert(self.id);
        Ok(leader == self.id)
    }

    async fn last_summarized(&self) -> Result<Option<NaiveDate>, StoreError> {
        Ok(self.world.lock().unwrap().summarized.iter().map(|(_, d)| *d).max())
    }

    async fn summarize(&self, day: NaiveDate) -> Result<SummaryRun, StoreError> {
        let mut w = self.world.lock().unwrap();
        if w.fail_summaries {
            return Err(StoreError::Unavailable("database down".into()));
        }
        w.summarized.push((self.id, day));
        Ok(SummaryRun { day, rows: 1, duration_ms: 5, ..SummaryRun::default() })
    }

    async fn maintain_partitions(
        &self,
        today: NaiveDate,
        ahead: u32,
        retention: u32,
    ) -> Result<PartitionChanges, StoreError> {
        let mut w = self.world.lock().unwrap();
        let mut changes = PartitionChanges::default();
        for day in (today - Days::new(1)).iter_days().take(ahead as usize + 2) {
            if w.partitions.insert(day) {
                changes.created.push(day);
            }
        }
        let oldest = today - Days::new(u64::from(retention));
        changes.dropped = w.partitions.iter().copied().filter(|d| *d < oldest).collect();
        w.partitions.retain(|d| *d >= oldest);
        Ok(changes)
    }
}

fn utc(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, s).unwrap()
}

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn config() -> ScheduleConfig {
    ScheduleConfig {
        summary_at: NaiveTime::from_hms_opt(0, 10, 0).unwrap(),
        retention_days: 30,
        partitions_ahead_days: 7,
        // Only the test's Tick messages drive it.
        tick: Duration::from_secs(3_600),
        retry_after: Duration::ZERO,
    }
}

fn start(id: usize, world: &Arc<Mutex<World>>, clock: &Arc<SimClock>) -> (Addr<SchedulerActor>, Arc<SummaryStats>) {
    start_with(id, world, clock, config())
}

fn start_with(
    id: usize,
    world: &Arc<Mutex<World>>,
    clock: &Arc<SimClock>,
    config: ScheduleConfig,
) -> (Addr<SchedulerActor>, Arc<SummaryStats>) {
    let stats = Arc::new(SummaryStats::default());
    let jobs = Arc::new(MemoryJobs { id, world: world.clone() });
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let actor = SchedulerActor::new(jobs, clock.clone(), config, stats.clone(), log);
    (actor.start(), stats)
}

fn days_of(world: &Arc<Mutex<World>>) -> Vec<NaiveDate> {
    world.lock().unwrap().summarized.iter().map(|(_, d)| *d).collect()
}

#[test]
fn due_day_is_yesterday_only_after_summary_at() {
    let at = NaiveTime::from_hms_opt(0, 10, 0).unwrap();
    assert_eq!(last_due_day(utc(2026, 11, 28, 0, 9, 59), at), day(2026, 11, 26));
    assert_eq!(last_due_day(utc(2026, 11, 28, 0, 10, 0), at), day(2026, 11, 27));
    assert_eq!(last_due_day(utc(2026, 11, 28, 23, 0, 0), at), day(2026, 11, 27));
}

#[test]
fn catch_up_starts_after_the_last_run_and_stays_within_retention() {
    let today = day(2026, 11, 28);
    let due = day(2026, 11, 27);
    assert_eq!(days_to_summarize(None, due, today, 30), vec![due]);
    assert_eq!(days_to_summarize(Some(due), due, today, 30), Vec::<NaiveDate>::new());
    assert_eq!(
        days_to_summarize(Some(day(2026, 11, 24)), due, today, 30),
        vec![day(2026, 11, 25), day(2026, 11, 26), day(2026, 11, 27)]
    );
    let long_ago = days_to_summarize(Some(day(2026, 1, 1)), due, today, 3);
    assert_eq!(long_ago, vec![day(2026, 11, 25), day(2026, 11, 26), day(2026, 11, 27)]);
}

#[actix_rt::test]
async fn fires_at_summary_at_on_the_injected_clock_and_catches_up_missed_days() {
    let world = Arc::new(Mutex::new(World::default()));
    world.lock().unwrap().summarized.push((0, day(2026, 11, 25)));
    let clock = SimClock::at(utc(2026, 11, 27, 8, 0, 0));
    let (addr, stats) = start(1, &world, &clock);

    // Start: leads, catches up the 26th (the 25th was done), makes partitions.
    let first = addr.send(Tick).await.unwrap();
    assert!(first.leading);
    assert_eq!(days_of(&world), vec![day(2026, 11, 25), day(2026, 11, 26)]);
    assert!(world.lock().unwrap().partitions.contains(&day(2026, 12, 4)));

    // Just before the time: nothing; at the time: yesterday, once.
    clock.set(utc(2026, 11, 28, 0, 9, 59));
    assert!(addr.send(Tick).await.unwrap().summarized.is_empty());
    clock.set(utc(2026, 11, 28, 0, 10, 0));
    let fired = addr.send(Tick).await.unwrap();
    assert_eq!(fired.summarized.iter().map(|r| r.day).collect::<Vec<_>>(), vec![day(2026, 11, 27)]);
    assert!(addr.send(Tick).await.unwrap().summarized.is_empty());

    // Down over two nights: the next firing makes up for both.
    clock.set(utc(2026, 12, 1, 0, 10, 3));
    let late = addr.send(Tick).await.unwrap();
    assert_eq!(
        late.summarized.iter().map(|r| r.day).collect::<Vec<_>>(),
        vec![day(2026, 11, 28), day(2026, 11, 29), day(2026, 11, 30)]
    );
    assert_eq!(stats.runs_ok.load(std::sync::atomic::Ordering::Relaxed), 5);
    // Partitions move with the days: the new week ahead exists.
    assert!(world.lock().unwrap().partitions.contains(&day(2026, 12, 8)));
}

#[actix_rt::test]
async fn only_the_leader_runs_the_job() {
    let world = Arc::new(Mutex::new(World::default()));
    let clock = SimClock::at(utc(2026, 11, 27, 0, 5, 0));
    let (a, a_stats) = start(1, &world, &clock);
    let (b, b_stats) = start(2, &world, &clock);
    a.send(Tick).await.unwrap();
    b.send(Tick).await.unwrap();
    clock.set(utc(2026, 11, 27, 0, 10, 0));
    let (ra, rb) = (a.send(Tick).await.unwrap(), b.send(Tick).await.unwrap());
    assert!(ra.leading && !rb.leading);
    let summarized = world.lock().unwrap().summarized.clone();
    // The start catch-up did the 25th; the firing the 26th; all by scheduler 1, once each.
    assert_eq!(summarized, vec![(1, day(2026, 11, 25)), (1, day(2026, 11, 26))]);
    assert!(a_stats.leading.load(std::sync::atomic::Ordering::Relaxed));
    assert!(!b_stats.leading.load(std::sync::atomic::Ordering::Relaxed));

    // The leader goes away: the other takes over and catches up at once.
    world.lock().unwrap().leader = Some(2);
    clock.set(utc(2026, 11, 29, 12, 0, 0));
    let taken = b.send(Tick).await.unwrap();
    assert!(taken.leading);
    assert_eq!(taken.summarized.iter().map(|r| r.day).collect::<Vec<_>>(), vec![day(2026, 11, 27), day(2026, 11, 28)]);
}

#[actix_rt::test]
async fn a_failed_run_is_retried_and_counted() {
    let world = Arc::new(Mutex::new(World::default()));
    world.lock().unwrap().fail_summaries = true;
    let clock = SimClock::at(utc(2026, 11, 27, 9, 0, 0));
    let (addr, stats) = start(1, &world, &clock);
    let failed = addr.send(Tick).await.unwrap();
    assert!(failed.failed.is_some());
    world.lock().unwrap().fail_summaries = false;
    let retried = addr.send(Tick).await.unwrap();
    assert_eq!(retried.summarized.iter().map(|r| r.day).collect::<Vec<_>>(), vec![day(2026, 11, 26)]);
    assert!(stats.runs_failed.load(std::sync::atomic::Ordering::Relaxed) >= 1);
}

#[actix_rt::test]
async fn a_failed_run_waits_retry_after_on_the_paused_clock() {
    crate::testing::paused();
    let world = Arc::new(Mutex::new(World::default()));
    world.lock().unwrap().fail_summaries = true;
    let clock = SimClock::at(utc(2026, 11, 27, 9, 0, 0));
    let retry_after = Duration::from_secs(60);
    let (addr, stats) = start_with(1, &world, &clock, ScheduleConfig { retry_after, ..config() });
    // The look at start failed; within the pause nothing is tried, however often the scheduler looks.
    let waiting = addr.send(Tick).await.unwrap();
    assert!(waiting.leading && waiting.summarized.is_empty() && waiting.failed.is_none());
    assert_eq!(stats.runs_failed.load(std::sync::atomic::Ordering::Relaxed), 1);
    world.lock().unwrap().fail_summaries = false;
    tokio::time::advance(retry_after - Duration::from_secs(1)).await;
    assert!(addr.send(Tick).await.unwrap().summarized.is_empty());
    assert!(days_of(&world).is_empty());
    tokio::time::advance(Duration::from_secs(1)).await;
    let retried = addr.send(Tick).await.unwrap();
    assert_eq!(retried.summarized.iter().map(|r| r.day).collect::<Vec<_>>(), vec![day(2026, 11, 26)]);
}

#[actix_rt::test]
async fn maintenance_drops_expired_partitions() {
    let world = Arc::new(Mutex::new(World::default()));
    world.lock().unwrap().partitions.extend([day(2026, 10, 1), day(2026, 10, 28), day(2026, 10, 29)]);
    let clock = SimClock::at(utc(2026, 11, 28, 9, 0, 0));
    let (addr, stats) = start(1, &world, &clock);
    addr.send(Tick).await.unwrap();
    let parts = world.lock().unwrap().partitions.clone();
    // Retention 30 days before the 28th: the 29th of October is the oldest kept.
    assert!(!parts.contains(&day(2026, 10, 1)) && !parts.contains(&day(2026, 10, 28)));
    assert!(parts.contains(&day(2026, 10, 29)) && parts.contains(&day(2026, 12, 5)));
    assert_eq!(stats.partitions_dropped.load(std::sync::atomic::Ordering::Relaxed), 2);
}
