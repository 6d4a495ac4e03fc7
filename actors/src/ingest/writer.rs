//! WriterActor: writes batches to the EventStore, one transaction each; supervised, so a writer whose
//! store failed is restarted (after a growing pause) with a fresh connection.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use slog::{warn, Logger};

use super::batch::Batch;
use crate::mailbox::{ActorProbe, Inbox};
use crate::ports::{EventStore, StoreError};

/// Exponential backoff with jitter (backon's): nothing after a success, then about `base`, 2×`base`,
/// … each stretched by a random share of itself so that writers and consumers failing together do
/// not retry in step; never more than `max`.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    delays: ExponentialBackoff,
    failures: u32,
    /// The pause drawn at the last failure: callers read it more than once (to log it, then to sleep).
    delay: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff { base, max, delays: Backoff::delays(base, max), failures: 0, delay: Duration::ZERO }
    }

    /// Jitter adds up to the step itself, so the steps stop at half of `max` (and the sum at `max`).
    fn delays(base: Duration, max: Duration) -> ExponentialBackoff {
        ExponentialBuilder::new()
            .with_jitter()
            .with_factor(2.0)
            .with_min_delay(base)
            .with_max_delay((max / 2).max(base))
            .without_max_times()
            .build()
    }

    pub fn fail(&mut self) {
        self.failures = self.failures.saturating_add(1);
        self.delay = self.delays.next().unwrap_or(self.max).min(self.max);
    }

    pub fn succeed(&mut self) {
        self.failures = 0;
        self.delay = Duration::ZERO;
        self.delays = Backoff::delays(self.base, self.max);
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The pause before the next attempt.
    pub fn delay(&self) -> Duration {
        self.delay
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

/// Counters an operator or a test can read while the writer runs.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub batches: AtomicU64,
    pub events: AtomicU64,
    pub rejects: AtomicU64,
    /// Writes that failed because the store was unavailable (the writer restarts).
    pub failures: AtomicU64,
    /// Writes refused by the fence (another writer moved the partition).
    pub fenced: AtomicU64,
    /// Writes the store refused for their data (the consumer narrows the batch down).
    pub rejected: AtomicU64,
    pub restarts: AtomicU64,
    pub dropped: AtomicU64,
    /// Batch sizes (events + rejects) and commit latency, when the process exports them.
    pub batch_events: Option<prometheus::Histogram>,
    pub batch_seconds: Option<prometheus::Histogram>,
    /// Where a batch's time goes before its write (freshness): from its consumer taking its first
    /// message to handing it over, and from then until this writer starts it.
    pub batch_age_seconds: Option<prometheus::Histogram>,
    pub queue_seconds: Option<prometheus::Histogram>,
}

/// Write this batch; answers once it is committed (or why not).
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct WriteBatch {
    pub batch: Arc<Batch>,
    /// When the consumer took the batch's first message (none: not known, e.g. a part of a split).
    pub opened: Option<Instant>,
    /// When it was handed to a writer.
    pub handed: Instant,
}

impl WriteBatch {
    pub fn new(batch: Arc<Batch>, opened: Option<Instant>) -> WriteBatch {
        WriteBatch { batch, opened, handed: Instant::now() }
    }
}

/// Answered once every batch queued before it is handled (shutdown waits on it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

/// Writes batches through its EventStore, one at a time.
pub struct WriterActor {
    id: usize,
    store: Option<Box<dyn EventStore>>,
    backoff: Backoff,
    stats: Arc<WriterStats>,
    probe: Arc<ActorProbe>,
    log: Logger,
}

impl WriterActor {
    pub fn new(
        id: usize,
        store: Box<dyn EventStore>,
        stats: Arc<WriterStats>,
        probe: Arc<ActorProbe>,
        log: Logger,
    ) -> WriterActor {
        WriterActor { id, store: Some(store), backoff: Backoff::default(), stats, probe, log }
    }
}

/// Batches a writer's mailbox holds before senders wait (each consumer has one batch in flight).
pub const WRITER_MAILBOX: usize = 64;

impl Actor for WriterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.probe.started();
        ctx.set_mailbox_capacity(WRITER_MAILBOX);
        let delay = self.backoff.delay();
        if !delay.is_zero() {
            // Restarted after a failure: let the database recover before the next batch.
            ctx.wait(actix::clock::sleep(delay).into_actor(self));
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.probe.stopped();
    }
}

impl Supervised for WriterActor {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.stats.restarts.fetch_add(1, Ordering::Relaxed);
        self.probe.restarted();
        self.backoff.fail();
        if let Some(store) = self.store.as_mut() {
            store.reset();
        }
    }
}

impl Handler<WriteBatch> for WriterActor {
    type Result = AtomicResponse<Self, Result<(), StoreError>>;

    fn handle(&mut self, WriteBatch { batch, opened, handed }: WriteBatch, _ctx: &mut Self::Context) -> Self::Result {
        if let Some(h) = &self.stats.queue_seconds {
            h.observe(handed.elapsed().as_secs_f64());
        }
        if let (Some(h), Some(opened)) = (&self.stats.batch_age_seconds, opened) {
            h.observe(handed.saturating_duration_since(opened).as_secs_f64());
        }
        if batch.is_cancelled() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return AtomicResponse::new(Box::pin(fut::ready(Err(StoreError::Cancelled))));
        }
        let Some(mut store) = self.store.take() else {
            return AtomicResponse::new(Box::pin(fut::ready(Err(StoreError::Unavailable(
                "writer has no store".into(),
            )))));
        };
        let work = async move {
            let started = std::time::Instant::now();
            let result = store.write(&batch).await;
            (store, batch, result, started.elapsed())
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(|(store, batch, result, took), act, ctx| {
            act.store = Some(store);
            match &result {
                Ok(()) => {
                    act.backoff.succeed();
                    if let Some(h) = &act.stats.batch_seconds {
                        h.observe(took.as_secs_f64());
                    }
                    if let Some(h) = &act.stats.batch_events {
                        h.observe((batch.events.len() + batch.rejects.len()) as f64);
                    }
                    act.stats.batches.fetch_add(1, Ordering::Relaxed);
                    act.stats.events.fetch_add(batch.events.len() as u64, Ordering::Relaxed);
                    act.stats.rejects.fetch_add(batch.rejects.len() as u64, Ordering::Relaxed);
                }
                Err(StoreError::Unavailable(reason)) => {
                    act.stats.failures.fetch_add(1, Ordering::Relaxed);
                    act.probe.error(format_args!(
                        "batch {}/{} {}..{}: {reason}",
                        batch.topic, batch.partition, batch.from, batch.to
                    ));
                    warn!(act.log, "batch write failed; restarting writer";
                          "writer" => act.id, "topic" => &*batch.topic, "partition" => batch.partition,
                          "from" => batch.from, "to" => batch.to, "error" => reason);
                    // Stop: the supervisor restarts this writer with a fresh connection after a pause.
                    ctx.stop();
                }
                Err(StoreError::Fenced { .. }) => {
                    act.stats.fenced.fetch_add(1, Ordering::Relaxed);
                }
                Err(StoreError::Rejected(reason)) => {
                    act.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    act.probe.error(format_args!(
                        "batch {}/{} {}..{} refused: {reason}",
                        batch.topic, batch.partition, batch.from, batch.to
                    ));
                    // The connection is fine, but a failed COPY is best not trusted: start afresh.
                    if let Some(store) = act.store.as_mut() {
                        store.reset();
                    }
                }
                Err(StoreError::Cancelled) => {}
            }
            result
        })))
    }
}

crate::tracked!(WriterActor => WriteBatch, Drain);

impl Handler<Drain> for WriterActor {
    type Result = ();

    fn handle(&mut self, _: Drain, _ctx: &mut Self::Context) {}
}

/// The supervised writers, shared by every consumer. A batch goes to the writer with the fewest
/// batches handed to it and not yet answered (round-robin among equals), so it does not queue behind
/// another partition's batch while a writer is idle; each consumer waits for its batch before
/// sending the next, so one partition's batches stay in order.
pub struct WriterPool {
    writers: Vec<Inbox<WriterActor>>,
    stats: Vec<Arc<WriterStats>>,
    /// Per writer, the batches handed to it and not yet answered.
    outstanding: Vec<Arc<AtomicUsize>>,
    next: AtomicUsize,
}

/// A writer picked for one batch; counts as outstanding on it until dropped.
pub struct Picked<'a> {
    pub inbox: &'a Inbox<WriterActor>,
    outstanding: Arc<AtomicUsize>,
}

impl Drop for Picked<'_> {
    fn drop(&mut self) {
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

impl WriterPool {
    pub fn new(writers: Vec<(Inbox<WriterActor>, Arc<WriterStats>)>) -> WriterPool {
        assert!(!writers.is_empty(), "a writer pool needs a writer");
        let (writers, stats): (Vec<_>, Vec<_>) = writers.into_iter().unzip();
        let outstanding = writers.iter().map(|_| Arc::default()).collect();
        WriterPool { writers, stats, outstanding, next: AtomicUsize::new(0) }
    }

    /// The least busy writer, the next in turn among equals; hold the answer while its batch is out.
    pub fn pick(&self) -> Picked<'_> {
        let n = self.writers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let i = (0..n)
            .map(|k| (start + k) % n)
            .min_by_key(|&i| self.outstanding[i].load(Ordering::Relaxed))
            .expect("a writer pool has a writer");
        self.outstanding[i].fetch_add(1, Ordering::Relaxed);
        Picked { inbox: &self.writers[i], outstanding: self.outstanding[i].clone() }
    }

    pub fn inboxes(&self) -> &[Inbox<WriterActor>] {
        &self.writers
    }

    pub fn stats(&self) -> &[Arc<WriterStats>] {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_and_resets() {
        let (base, max) = (Duration::from_millis(100), Duration::from_millis(500));
        let mut b = Backoff::new(base, max);
        assert_eq!(b.delay(), Duration::ZERO);
        // Step n is base·2^(n-1) (at most max/2), stretched by up to itself, never past max.
        let steps = [100, 200, 250, 250, 250];
        for (n, step) in steps.into_iter().enumerate() {
            b.fail();
            let delay = b.delay().as_millis();
            assert!((step..=(2 * step).min(500)).contains(&delay), "failure {}: {delay} ms", n + 1);
            assert_eq!(b.delay().as_millis(), delay, "read twice, the same pause");
        }
        b.succeed();
        assert_eq!((b.delay(), b.failures()), (Duration::ZERO, 0));
        b.fail();
        assert!((100..200).contains(&b.delay().as_millis()), "after a success it starts over: {:?}", b.delay());
        let mut distinct = std::collections::BTreeSet::new();
        for n in 2..=101 {
            b.fail();
            // The second failure since the success is still a 200 ms step; the cap is reached after it.
            let step = if n == 2 { 200 } else { 250 };
            assert!((step..=2 * step).contains(&b.delay().as_millis()), "failure {n}: {:?}", b.delay());
            distinct.insert(b.delay());
        }
        assert!(distinct.len() > 10, "jittered, not one fixed pause: {distinct:?}");
        assert_eq!(b.failures(), 101);
    }
}
