//! The ingest actors against in-memory ports: no Kafka, no database, and no waiting in real time —
//! the batch-age timer, the retry pauses and the writer's restart pause run on tokio's paused clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use futures::channel::mpsc;
use futures::SinkExt;

use super::consumer::{ConsumerParts, ConsumerStats};
use super::writer::WriterStats;
use super::*;
use crate::mailbox::{ActorProbe, Inbox, Tracked};
use crate::ports::EventStore;
use crate::testing::{eventually, paused, MemoryStore, RecordingControl, SimClock, Stored};

/// When the tests' events happen, on the simulated clock.
const NOW_S: i64 = 1_795_000_000;

fn event(offset: i64) -> RawMessage {
    let payload = format!(r#"{{"level":"info","service":"svc","message":"event {offset}"}}"#);
    let timestamp = chrono::DateTime::from_timestamp(NOW_S, 0);
    RawMessage { offset, timestamp, payload: Some(payload.into_bytes()), service: None }
}

struct Harness {
    store: MemoryStore,
    control: Arc<RecordingControl>,
    writer_stats: Arc<WriterStats>,
    consumer_stats: Arc<ConsumerStats>,
    cancelled: Arc<AtomicBool>,
    tx: mpsc::Sender<Tracked<RawMessage>>,
    consumer: Addr<ConsumerActor>,
    writer_probe: Arc<ActorProbe>,
    probe: Arc<ActorProbe>,
}

impl Harness {
    /// Queues a message for the consumer, counted in its mailbox like the source does.
    async fn push(&mut self, message: RawMessage) {
        self.tx.send(Tracked::queued(message, &self.probe)).await.unwrap();
    }

    /// Waits until the partition is stored up to `offset` and the consumer has announced it (its
    /// counters are then final).
    async fn until_stored(&self, offset: i64) {
        self.store.until_offset(2, offset).await;
        let what = format!("offset {offset} announced");
        self.control.calls.until(&what, |c| c.stored.last() == Some(&(2, offset))).await;
    }
}

fn start(start_offset: i64, config: ConsumerConfig, store: MemoryStore) -> Harness {
    start_on(start_offset, config, store.clone(), Box::new(store))
}

/// A store whose every write takes `delay` (on the paused clock) before it lands in `inner`.
struct SlowStore {
    inner: MemoryStore,
    delay: std::time::Duration,
}

#[async_trait::async_trait]
impl EventStore for SlowStore {
    async fn write(&mut self, batch: &Batch) -> Result<(), crate::ports::StoreError> {
        tokio::time::sleep(self.delay).await;
        self.inner.write(batch).await
    }

    fn reset(&mut self) {
        self.inner.reset()
    }
}

/// The default harness whose every write takes `write`, with its first message taken: its write is
/// in flight.
async fn busy_writer(write: std::time::Duration) -> Harness {
    let store = MemoryStore::default();
    let slow = Box::new(SlowStore { inner: store.clone(), delay: write });
    let mut h = start_on(0, ConsumerConfig::default(), store, slow);
    h.push(event(0)).await;
    let stats = h.consumer_stats.clone();
    eventually("the first message taken", || stats.messages.load(Ordering::Relaxed) == 1).await;
    h
}

/// The harness with the writer writing through `boxed`, which lands in `store`.
fn start_on(start_offset: i64, config: ConsumerConfig, store: MemoryStore, boxed: Box<dyn EventStore>) -> Harness {
    paused();
    let writer_stats = Arc::new(WriterStats::default());
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let (stats2, log2) = (writer_stats.clone(), log.clone());
    let writer_probe = ActorProbe::detached("writer", "0");
    let probe2 = writer_probe.clone();
    let writer = Supervisor::start(move |_| WriterActor::new(0, boxed, stats2, probe2, log2));
    let pool = Arc::new(WriterPool::new(vec![(Inbox::new(writer, writer_probe.clone()), writer_stats.clone())]));
    let probe = ActorProbe::detached("consumer", "2");
    let control = Arc::new(RecordingControl::default());
    let consumer_stats = Arc::new(ConsumerStats::default());
    let cancelled = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel(16);
    let parts = ConsumerParts {
        topic: "logs".into(),
        partition: 2,
        start_offset,
        config,
        writers: pool,
        control: control.clone(),
        clock: SimClock::at_second(NOW_S),
        cancelled: cancelled.clone(),
        committed: None,
        stats: consumer_stats.clone(),
        probe: probe.clone(),
        log,
    };
    let consumer = ConsumerActor::create(move |ctx| {
        ctx.add_stream(rx);
        ConsumerActor::new(parts)
    });
    Harness { store, control, writer_stats, writer_probe, consumer_stats, probe, cancelled, tx, consumer }
}

/// The production pauses (batch age, retry backoff): on the paused clock they cost no real time.
/// Batches by size and age only, so the tests know where each batch ends.
fn batching(batch_max_events: usize) -> ConsumerConfig {
    ConsumerConfig { batch_max_events, flush_when_idle: false, ..ConsumerConfig::default() }
}

#[actix_rt::test]
async fn batches_follow_the_backlog_small_when_idle_and_full_under_load() {
    let mut h = start(0, ConsumerConfig { batch_max_events: 10, ..ConsumerConfig::default() }, MemoryStore::default());
    // A lone message with nothing behind it and an idle writer goes at once, alone.
    h.push(event(0)).await;
    h.until_stored(1).await;
    // Sixteen queued before the consumer runs (the channel has room, so pushing never yields): the
    // consumer sees a backlog and fills batches to the cap, then writes the rest when the queue is empty.
    for offset in 1..17 {
        h.push(event(offset)).await;
    }
    h.until_stored(17).await;
    let s = h.store.state.read(Stored::clone);
    assert_eq!(s.batches[0], (0, 1, 1));
    assert_eq!(s.batches[1], (1, 11, 10), "under backlog a batch fills to BATCH_MAX_EVENTS");
    assert_eq!(s.batches.iter().map(|b| b.2).sum::<usize>(), 17);
    assert!(s.batches.windows(2).all(|w| w[0].1 == w[1].0));
}

#[actix_rt::test]
async fn a_batch_waiting_for_a_busy_writer_goes_when_the_write_ends_not_at_its_age_bound() {
    let write = std::time::Duration::from_millis(10);
    // The first message goes at once and keeps the writer busy for 10 ms; the second waits for it.
    let mut h = busy_writer(write).await;
    let queued = tokio::time::Instant::now();
    h.push(event(1)).await;
    h.until_stored(2).await;
    let waited = queued.elapsed();
    let max_wait = ConsumerConfig::default().batch_max_wait;
    assert!(
        waited < max_wait,
        "stored after {waited:?}: it waited for its age bound ({max_wait:?}), not for the write"
    );
    assert!(waited >= write, "stored after {waited:?}, before the first write could end");
    let s = h.store.state.read(Stored::clone);
    assert_eq!(s.batches, vec![(0, 1, 1), (1, 2, 1)]);
}

#[actix_rt::test]
async fn under_a_long_write_the_next_batch_keeps_filling_past_its_age_bound_and_goes_when_it_is_stored() {
    let write = std::time::Duration::from_millis(200);
    let mut h = busy_writer(write).await;
    // Fifteen messages over 150 ms while the first write takes 200: three age bounds (50 ms) pass.
    let queued = tokio::time::Instant::now();
    for offset in 1..16 {
        h.push(event(offset)).await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    h.until_stored(16).await;
    let s = h.store.state.read(Stored::clone);
    assert_eq!(
        s.batches,
        vec![(0, 1, 1), (1, 16, 15)],
        "sealed at its age bound, the second batch would only have waited for the write, smaller"
    );
    // It went when the first write was stored, not a write later.
    assert!(queued.elapsed() < 2 * write + write / 2, "stored after {:?}", queued.elapsed());
}

#[actix_rt::test]
async fn a_batch_goes_to_the_writer_with_the_fewest_batches_out() {
    paused();
    let writer = |id: usize| {
        let probe = ActorProbe::detached("writer", id.to_string());
        let stats = Arc::new(WriterStats::default());
        let boxed: Box<dyn EventStore> = Box::new(MemoryStore::default());
        let (stats2, probe2) = (stats.clone(), probe.clone());
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let addr = Supervisor::start(move |_| WriterActor::new(id, boxed, stats2, probe2, log));
        (Inbox::new(addr, probe), stats)
    };
    let pool = WriterPool::new(vec![writer(0), writer(1)]);
    let name = |picked: &super::writer::Picked<'_>| picked.inbox.probe().instance().to_owned();
    let (a, b) = (pool.pick(), pool.pick());
    assert_eq!((name(&a), name(&b)), ("0".to_owned(), "1".to_owned()), "equals in turn");
    drop(b);
    // Round-robin would pick writer 0 now, which still has a batch out.
    assert_eq!(name(&pool.pick()), "1");
    drop(a);
    let (c, d) = (pool.pick(), pool.pick());
    assert_ne!(name(&c), name(&d), "both idle: one each");
}

#[actix_rt::test]
async fn every_message_is_written_once_in_order_by_size_and_by_age() {
    let mut h = start(0, batching(10), MemoryStore::default());
    for offset in 0..25 {
        h.push(event(offset)).await;
    }
    h.push(RawMessage { offset: 25, timestamp: None, payload: Some(b"{not json".to_vec()), service: None }).await;
    h.until_stored(26).await;
    let s = h.store.state.read(Stored::clone);
    let events: Vec<i64> = s.event_offsets.iter().map(|(_, o)| *o).collect();
    assert_eq!(events, (0..25).collect::<Vec<_>>());
    assert_eq!(s.reject_offsets, vec![(2, 25)]);
    // Two full batches by size, the rest by age; batches are contiguous.
    assert_eq!(s.batches[0], (0, 10, 10));
    assert_eq!(s.batches[1], (10, 20, 10));
    assert!(s.batches.windows(2).all(|w| w[0].1 == w[1].0));
    assert_eq!(h.control.calls.read(|c| c.stored.last().copied()), Some((2, 26)));
    assert_eq!(h.consumer_stats.stored_offset.load(Ordering::Relaxed), 26);
    assert_eq!(h.consumer_stats.stored_events.load(Ordering::Relaxed), 25);
    assert_eq!(h.consumer_stats.rejects[crate::domain::RejectReason::NotJson.index()].load(Ordering::Relaxed), 1);
    // Both mailboxes counted every message in and out.
    assert_eq!((h.probe.handled(), h.probe.mailbox_depth()), (26, 0));
    let batches = s.batches.len() as u64;
    assert_eq!((h.writer_probe.handled(), h.writer_probe.mailbox_depth()), (batches, 0));
}

#[actix_rt::test]
async fn an_unavailable_store_is_retried_and_the_writer_restarted_without_loss() {
    let store = MemoryStore::default();
    store.fail_next.store(3, Ordering::SeqCst);
    let mut h = start(0, batching(5), store);
    for offset in 0..12 {
        h.push(event(offset)).await;
    }
    h.until_stored(12).await;
    assert_eq!(h.store.state.read(|s| s.event_offsets.len()), 12, "nothing lost, nothing doubled");
    assert_eq!(h.writer_stats.restarts.load(Ordering::Relaxed), 3);
    assert_eq!(h.writer_stats.failures.load(Ordering::Relaxed), 3);
    assert_eq!(h.writer_probe.restarts(), 3);
    assert!(h.writer_probe.snapshot().last_error.is_some_and(|e| e.contains("batch logs/2")));
    assert!(h.consumer_stats.retries.load(Ordering::Relaxed) >= 3);
}

#[actix_rt::test]
async fn a_fenced_batch_writes_nothing_and_asks_for_a_restart() {
    let store = MemoryStore::default();
    store.state.update(|s| s.offsets.insert(2, 100)); // another owner got further
    let mut h = start(40, batching(3), store);
    for offset in 40..43 {
        h.push(event(offset)).await;
    }
    h.control.calls.until("restart requested", |c| !c.restarts.is_empty()).await;
    assert_eq!(h.control.calls.read(|c| c.restarts.clone()), vec![2]);
    assert!(h.store.state.read(|s| s.event_offsets.is_empty()));
    let consumer = h.consumer.clone();
    eventually("consumer stopped", || !consumer.connected()).await;
}

#[actix_rt::test]
async fn a_revoked_partition_drops_its_batches() {
    let store = MemoryStore::default();
    store.fail_next.store(1_000, Ordering::SeqCst); // the database is down…
    let mut h = start(0, batching(2), store);
    h.push(event(0)).await;
    h.push(event(1)).await;
    let stats = h.consumer_stats.clone();
    eventually("a retry", || stats.retries.load(Ordering::Relaxed) > 0).await;
    h.cancelled.store(true, Ordering::SeqCst); // …and the partition is revoked meanwhile
    let consumer = h.consumer.clone();
    eventually("consumer stopped", || !consumer.connected()).await;
    assert!(h.store.state.read(|s| s.event_offsets.is_empty()));
    assert!(h.control.calls.read(|c| c.stored.is_empty()));
}

#[actix_rt::test]
async fn rows_the_store_refuses_become_dead_letters_and_the_rest_is_stored_once() {
    use crate::domain::RejectReason;
    let store = MemoryStore::default();
    store.poison.lock().unwrap().extend([3, 17, 18]);
    let mut h = start(0, batching(20), store);
    for offset in 0..20 {
        h.push(event(offset)).await;
    }
    h.push(RawMessage { offset: 20, timestamp: None, payload: Some(b"{not json".to_vec()), service: None }).await;
    for offset in 21..30 {
        h.push(event(offset)).await;
    }
    h.until_stored(30).await;
    let s = h.store.state.read(Stored::clone);
    let mut events: Vec<i64> = s.event_offsets.iter().map(|(_, o)| *o).collect();
    events.sort_unstable();
    let want: Vec<i64> = (0..30).filter(|o| ![3, 17, 18, 20].contains(o)).collect();
    assert_eq!(events, want, "every good event once");
    let mut dead: Vec<(i64, RejectReason)> =
        s.reject_offsets.iter().map(|(_, o)| *o).zip(s.reject_reasons.iter().copied()).collect();
    dead.sort_unstable();
    assert_eq!(
        dead,
        vec![
            (3, RejectReason::StoreRejected),
            (17, RejectReason::StoreRejected),
            (18, RejectReason::StoreRejected),
            (20, RejectReason::NotJson)
        ]
    );
    assert!(s.batches.windows(2).all(|w| w[0].1 == w[1].0), "stored parts are contiguous: {:?}", s.batches);
    assert_eq!(h.consumer_stats.rejects[RejectReason::StoreRejected.index()].load(Ordering::Relaxed), 3);
    // The whole first batch was tried a bounded number of times before it was split.
    assert!(s.refusals >= 3);
    assert_eq!(h.writer_stats.restarts.load(Ordering::Relaxed), 0, "a refusal is not an outage");
    assert_eq!(h.consumer_stats.write_started_ms.load(Ordering::Relaxed), 0);
}

#[actix_rt::test]
async fn each_message_with_a_timestamp_observes_its_time_from_that_timestamp_to_its_take() {
    let opts = prometheus::HistogramOpts::new("take_delay_seconds", "test").buckets(vec![0.1, 1.0, 10.0]);
    let histogram = prometheus::Histogram::with_opts(opts).unwrap();
    let config = ConsumerConfig { take_delay: Some(histogram.clone()), ..batching(4) };
    let mut h = start(0, config, MemoryStore::default());
    let at = |offset: i64, millis_before_now: Option<i64>| RawMessage {
        timestamp: millis_before_now
            .map(|ms| chrono::DateTime::from_timestamp(NOW_S, 0).unwrap() - chrono::Duration::milliseconds(ms)),
        ..event(offset)
    };
    // Sent 2.5 s and 40 ms before the consumer's clock; one without a timestamp; one from a
    // producer whose clock runs 3 s ahead (no delay, not a negative one).
    h.push(at(0, Some(2_500))).await;
    h.push(at(1, Some(40))).await;
    h.push(at(2, None)).await;
    h.push(at(3, Some(-3_000))).await;
    h.until_stored(4).await;
    assert_eq!(histogram.get_sample_count(), 3, "the message without a timestamp is not observed");
    assert!((histogram.get_sample_sum() - 2.54).abs() < 1e-9, "sum {}", histogram.get_sample_sum());
    use prometheus::core::Metric as _;
    let buckets: Vec<u64> =
        histogram.metric().get_histogram().get_bucket().iter().map(|b| b.cumulative_count()).collect();
    assert_eq!(buckets, vec![2, 2, 3], "0 s and 40 ms under 0.1 s, 2.5 s under 10 s");
}
