//! Test support for the actors: in-memory ports that record what they were given and wake the test
//! waiting on them, a simulated wall clock, and waits that always have a deadline.
//!
//! Time in an actor test is tokio's paused clock: call [`paused`] first, and every timer of the
//! actors under test (batch age, retry pauses, a supervisor's restart pause, a rebuild retried)
//! fires as soon as nothing else can run, without waiting for it. A test never sleeps to wait for a
//! result: it awaits a [`Watched`] state ("the store holds offsets up to N") or, for a counter no
//! port sees, [`eventually`], which moves the paused clock in small steps. Both give up after
//! [`DEADLINE`] of paused time, so a test whose condition never comes fails instead of hanging.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use tokio::sync::watch;

use crate::ingest::Batch;
use crate::ports::{Clock, EventStore, PartitionControl, StoreError};
use crate::windows::{
    BucketDelta, BucketSource, Counts, DeltaSink, KeywordSet, PartitionOffsets, Rebuilt, SecondCounts,
};

/// How long (in paused time) a test waits for anything before it fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The step [`eventually`] moves the paused clock by between two looks.
const STEP: Duration = Duration::from_millis(1);

/// Pauses tokio's clock for the rest of the test (call first, inside the actix System's runtime).
pub fn paused() {
    tokio::time::pause();
}

/// Waits until `done` holds, moving the paused clock a millisecond at a time so the actors' timers
/// fire in order; fails after [`DEADLINE`]. For conditions no port reports (an actor's counters,
/// whether it is still running); prefer [`Watched::until`] where a port sees the outcome.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + DEADLINE;
    loop {
        // Ready work first: most conditions come true without the clock moving at all.
        for _ in 0..8 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        assert!(tokio::time::Instant::now() < give_up, "timed out waiting until {what}");
        tokio::time::advance(STEP).await;
    }
}

/// State a port keeps, behind a watch channel: every change wakes the tests waiting on it.
pub struct Watched<T> {
    tx: watch::Sender<T>,
}

impl<T: Default> Default for Watched<T> {
    fn default() -> Self {
        Watched::new(T::default())
    }
}

impl<T> Watched<T> {
    pub fn new(value: T) -> Watched<T> {
        Watched { tx: watch::Sender::new(value) }
    }

    /// Changes the state and wakes the waiters.
    pub fn update<R>(&self, change: impl FnOnce(&mut T) -> R) -> R {
        let mut out = None;
        self.tx.send_modify(|value| out = Some(change(value)));
        out.expect("send_modify runs the change")
    }

    pub fn read<R>(&self, look: impl FnOnce(&T) -> R) -> R {
        look(&self.tx.borrow())
    }

    /// Waits until `done` holds of the state; fails after [`DEADLINE`].
    pub async fn until(&self, what: &str, mut done: impl FnMut(&T) -> bool) {
        let mut rx = self.tx.subscribe();
        let waited = tokio::time::timeout(DEADLINE, rx.wait_for(|value| done(value))).await;
        match waited {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => unreachable!("the sender lives in self"),
            Err(_) => panic!("timed out waiting until {what}"),
        }
    }
}

/// A wall clock the test sets and moves ([`Clock`] for the actors that read the date or the second).
pub struct SimClock(Mutex<DateTime<Utc>>);

impl SimClock {
    pub fn at(t: DateTime<Utc>) -> Arc<SimClock> {
        Arc::new(SimClock(Mutex::new(t)))
    }

    /// At `second` (epoch seconds) exactly.
    pub fn at_second(second: i64) -> Arc<SimClock> {
        SimClock::at(Utc.timestamp_opt(second, 0).single().expect("valid second"))
    }

    pub fn set(&self, t: DateTime<Utc>) {
        *self.0.lock().unwrap() = t;
    }

    pub fn advance(&self, by: chrono::TimeDelta) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// What a [`MemoryStore`] holds.
#[derive(Clone, Default)]
pub struct Stored {
    /// Stored next offset per partition.
    pub offsets: BTreeMap<i32, i64>,
    pub event_offsets: Vec<(i32, i64)>,
    pub reject_offsets: Vec<(i32, i64)>,
    pub reject_reasons: Vec<crate::domain::RejectReason>,
    /// `(from, to, messages)` of each batch written.
    pub batches: Vec<(i64, i64, usize)>,
    /// Writes refused for their data.
    pub refusals: usize,
    /// Writes failed as unavailable.
    pub outages: usize,
}

impl Stored {
    pub fn offset(&self, partition: i32) -> Option<i64> {
        self.offsets.get(&partition).copied()
    }
}

/// An [`EventStore`] in memory that fences like the real one and can be made to fail.
#[derive(Clone, Default)]
pub struct MemoryStore {
    pub state: Arc<Watched<Stored>>,
    /// Writes still to fail as unavailable.
    pub fail_next: Arc<AtomicUsize>,
    /// Offsets of events the store refuses for their data (as a CHECK constraint would).
    pub poison: Arc<Mutex<Vec<i64>>>,
}

impl MemoryStore {
    /// Waits until partition `partition`'s stored next offset is `offset`.
    pub async fn until_offset(&self, partition: i32, offset: i64) {
        let what = format!("partition {partition} stored up to offset {offset}");
        self.state.until(&what, |s| s.offset(partition) == Some(offset)).await;
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn write(&mut self, batch: &Batch) -> Result<(), StoreError> {
        if self.fail_next.load(Ordering::SeqCst) > 0 {
            self.fail_next.fetch_sub(1, Ordering::SeqCst);
            self.state.update(|s| s.outages += 1);
            return Err(StoreError::Unavailable("injected failure".into()));
        }
        let poison = self.poison.lock().unwrap().clone();
        if batch.events.iter().any(|e| poison.contains(&e.offset)) {
            self.state.update(|s| s.refusals += 1);
            return Err(StoreError::Rejected("new row violates check constraint \"no_poison\"".into()));
        }
        self.state.update(|s| {
            let stored = s.offset(batch.partition).unwrap_or(0);
            if stored != batch.from {
                return Err(StoreError::Fenced { batch_from: batch.from, stored: Some(stored) });
            }
            s.offsets.insert(batch.partition, batch.to);
            s.event_offsets.extend(batch.events.iter().map(|e| (batch.partition, e.offset)));
            s.reject_offsets.extend(batch.rejects.iter().map(|r| (batch.partition, r.offset)));
            s.reject_reasons.extend(batch.rejects.iter().map(|r| r.reason));
            s.batches.push((batch.from, batch.to, batch.len()));
            Ok(())
        })
    }

    fn reset(&mut self) {}
}

/// What a [`RecordingControl`] was told.
#[derive(Default)]
pub struct ControlCalls {
    pub stored: Vec<(i32, i64)>,
    pub restarts: Vec<i32>,
}

/// A [`PartitionControl`] that records each call.
#[derive(Default)]
pub struct RecordingControl {
    pub calls: Watched<ControlCalls>,
}

impl PartitionControl for RecordingControl {
    fn stored(&self, _topic: &str, partition: i32, next_offset: i64) {
        self.calls.update(|c| c.stored.push((partition, next_offset)));
    }
    fn restart(&self, _topic: &str, partition: i32) {
        self.calls.update(|c| c.restarts.push(partition));
    }
}

/// What a [`MemoryBuckets`] source holds and was asked.
#[derive(Default)]
pub struct SourceState {
    /// Every batch the store holds, as committed.
    pub batches: Vec<Arc<Batch>>,
    /// The spans `[first, last]` of the snapshots asked for, in order.
    pub asked: Vec<(i64, i64)>,
    /// Snapshots answered (successfully or not).
    pub answered: usize,
    /// Snapshots still to fail.
    pub fail_next: usize,
    /// While set, snapshots taken wait before answering (a slow store): the aggregator stays in its rebuild.
    pub held: bool,
}

/// A [`BucketSource`] over batches kept in memory, counting them as the store's snapshot would.
#[derive(Clone, Default)]
pub struct MemoryBuckets {
    pub state: Arc<Watched<SourceState>>,
}

impl MemoryBuckets {
    /// The store now also holds this batch (as the writers would have stored it).
    pub fn store(&self, batch: Arc<Batch>) {
        self.state.update(|s| s.batches.push(batch));
    }

    pub fn hold(&self) {
        self.state.update(|s| s.held = true);
    }

    pub fn release(&self) {
        self.state.update(|s| s.held = false);
    }

    pub fn fail_next(&self, times: usize) {
        self.state.update(|s| s.fail_next = times);
    }

    pub fn asked(&self) -> usize {
        self.state.read(|s| s.asked.len())
    }

    /// Waits until `n` snapshots have been asked for.
    pub async fn until_asked(&self, n: usize) {
        self.state.until(&format!("{n} snapshots asked for"), |s| s.asked.len() >= n).await;
    }

    /// Waits until `n` snapshots have been answered.
    pub async fn until_answered(&self, n: usize) {
        self.state.until(&format!("{n} snapshots answered"), |s| s.answered >= n).await;
    }
}

#[async_trait]
impl BucketSource for MemoryBuckets {
    async fn snapshot(
        &self,
        _topics: &[String],
        first: i64,
        last: i64,
        keywords: &KeywordSet,
    ) -> Result<Rebuilt, StoreError> {
        // The snapshot is taken when asked for; holding delays only its answer (a slow store).
        let batches = self.state.update(|s| {
            s.asked.push((first, last));
            s.batches.clone()
        });
        self.state.until("the snapshot is released", |s| !s.held).await;
        let failing = self.state.update(|s| {
            let failing = s.fail_next > 0;
            s.fail_next = s.fail_next.saturating_sub(1);
            if failing {
                s.answered += 1;
            }
            failing
        });
        if failing {
            return Err(StoreError::Unavailable("injected snapshot failure".into()));
        }
        let rebuilt = count(&batches, first, last, keywords);
        self.state.update(|s| s.answered += 1);
        Ok(rebuilt)
    }
}

/// Counts stored batches as one consistent snapshot of `[first, last]`.
fn count(batches: &[Arc<Batch>], first: i64, last: i64, keywords: &KeywordSet) -> Rebuilt {
    let mut rebuilt = Rebuilt::default();
    for batch in batches {
        // Everything stored, whatever its second: the delta's skipped seconds name the rest.
        let delta = BucketDelta::from_batch(batch, keywords, i64::MIN, i64::MAX);
        for (second, counts) in delta.seconds {
            if second > last {
                rebuilt.beyond_last = Some(rebuilt.beyond_last.map_or(second, |b| b.max(second)));
            }
            if second < first || second > last {
                continue;
            }
            add(rebuilt.seconds.entry(second).or_default(), &counts);
        }
        if let Some(ms) = delta.newest_ms {
            rebuilt.newest_ms = Some(rebuilt.newest_ms.map_or(ms, |n| n.max(ms)));
        }
        let offset = rebuilt.offsets.entry((batch.topic.to_string(), batch.partition)).or_insert(batch.to);
        *offset = (*offset).max(batch.to);
    }
    rebuilt
}

fn add(into: &mut SecondCounts, counts: &SecondCounts) {
    for (service, c) in &counts.by_service {
        let mine: &mut Counts = into.by_service.entry(service.clone()).or_default();
        mine.total += c.total;
        mine.errors += c.errors;
        if mine.keywords.len() < c.keywords.len() {
            mine.keywords.resize(c.keywords.len(), 0);
        }
        for (m, t) in mine.keywords.iter_mut().zip(&c.keywords) {
            *m += t;
        }
    }
}

/// What a [`RecordingDeltas`] sink got.
#[derive(Default)]
pub struct DeltaCalls {
    pub offered: Vec<Arc<BucketDelta>>,
    pub rebuilt: Vec<PartitionOffsets>,
}

/// A [`DeltaSink`] that records every delta and every rebuild it is told of.
#[derive(Default)]
pub struct RecordingDeltas {
    pub calls: Watched<DeltaCalls>,
}

impl DeltaSink for RecordingDeltas {
    fn offer(&self, delta: Arc<BucketDelta>) {
        self.calls.update(|c| c.offered.push(delta));
    }
    fn rebuilt(&self, offsets: &PartitionOffsets) {
        self.calls.update(|c| c.rebuilt.push(offsets.clone()));
    }
}

/// A logger that drops everything.
pub fn quiet() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}
