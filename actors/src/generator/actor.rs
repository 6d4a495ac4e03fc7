//! GeneratorActor: feeds an EventSink at a steady rate until a count or a deadline is reached.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::events::LogGenerator;
use super::rate::TokenBucket;
use crate::ports::SharedClock;

/// Why a sink did not take a payload.
#[derive(Debug)]
pub enum SinkError {
    /// The sink's queue is full: offer the same payload again later.
    Full(Vec<u8>),
    /// The sink is broken.
    Failed(String),
}

/// Where generated payloads go (Kafka, a file, an HTTP endpoint).
pub trait EventSink: Send + 'static {
    /// Queues a payload; must not block.
    fn send(&mut self, payload: Vec<u8>, timestamp_ms: i64) -> Result<(), SinkError>;
    /// Serves delivery reports (non-blocking).
    fn poll(&mut self) {}
    /// Payloads the destination confirmed.
    fn acked(&self) -> u64;
    /// Payloads the destination refused.
    fn failed(&self) -> u64 {
        0
    }
    /// Waits (blocking, up to `timeout`) until everything queued is delivered.
    fn flush(&mut self, timeout: Duration) -> Result<(), String>;
}

/// Live counters of a generator run.
#[derive(Debug, Default)]
pub struct GeneratorStats {
    pub sent: AtomicU64,
    pub malformed: AtomicU64,
    pub full: AtomicU64,
    pub acked: AtomicU64,
    pub failed: AtomicU64,
}

/// How long a run lasts.
#[derive(Debug, Clone, Copy)]
pub struct RunLimit {
    pub count: Option<u64>,
    pub duration: Option<Duration>,
}

const TICK: Duration = Duration::from_millis(5);
/// Payloads per tick when the rate is unlimited (keeps the actor responsive).
const UNLIMITED_CHUNK: u64 = 4_000;

/// Generates events and offers them to the sink.
pub struct GeneratorActor {
    generator: LogGenerator,
    bucket: Option<TokenBucket>,
    sink: Option<Box<dyn EventSink>>,
    limit: RunLimit,
    started: Instant,
    pending: Option<(Vec<u8>, i64)>,
    clock: SharedClock,
    stats: Arc<GeneratorStats>,
    done: Option<tokio::sync::oneshot::Sender<Box<dyn EventSink>>>,
    probe: Option<Arc<crate::mailbox::ActorProbe>>,
}

impl GeneratorActor {
    /// `rate` events per second (`None`: as fast as the sink takes them). When the run ends the sink
    /// is handed back through `done` so the caller can flush it off the arbiter.
    pub fn new(
        generator: LogGenerator,
        rate: Option<f64>,
        sink: Box<dyn EventSink>,
        limit: RunLimit,
        clock: SharedClock,
        stats: Arc<GeneratorStats>,
        done: tokio::sync::oneshot::Sender<Box<dyn EventSink>>,
    ) -> GeneratorActor {
        // A tenth of a second of burst absorbs tick jitter without letting the rate run away.
        let bucket = rate.map(|r| TokenBucket::new(r, (r / 10.0).max(1.0)));
        GeneratorActor {
            generator,
            bucket,
            sink: Some(sink),
            limit,
            started: Instant::now(),
            pending: None,
            clock,
            stats,
            done: Some(done),
            probe: None,
        }
    }

    /// Counts each tick as a handled message of this probe (the generator drives itself by timer).
    pub fn with_probe(mut self, probe: Arc<crate::mailbox::ActorProbe>) -> GeneratorActor {
        self.probe = Some(probe);
        self
    }

    fn finished(&self) -> bool {
        let by_count = self.limit.count.is_some_and(|n| self.generator.produced() >= n && self.pending.is_none());
        let by_time = self.limit.duration.is_some_and(|d| self.started.elapsed() >= d);
        by_count || by_time
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.finished() {
            ctx.stop();
            return;
        }
        let Some(sink) = self.sink.as_mut() else { return };
        sink.poll();
        self.stats.acked.store(sink.acked(), Ordering::Relaxed);
        self.stats.failed.store(sink.failed(), Ordering::Relaxed);
        if let Some((payload, ts)) = self.pending.take() {
            if let Err(SinkError::Full(payload)) = sink.send(payload, ts) {
                self.pending = Some((payload, ts));
                return;
            }
            self.stats.sent.fetch_add(1, Ordering::Relaxed);
        }
        let remaining = self.limit.count.map_or(u64::MAX, |n| n.saturating_sub(self.generator.produced()));
        let now_secs = self.started.elapsed().as_secs_f64();
        let want = match self.bucket.as_mut() {
            Some(bucket) => bucket.take(now_secs, remaining.min(1_000_000)),
            None => remaining.min(UNLIMITED_CHUNK),
        };
        let now_ms = self.clock.now().timestamp_millis();
        for _ in 0..want {
            let generated = self.generator.next(now_ms);
            if generated.malformed {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            }
            match sink.send(generated.payload, generated.ts_ms) {
                Ok(()) => {
                    self.stats.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(SinkError::Full(payload)) => {
                    // The sink is saturated: this payload waits; the rest of this tick's share is
                    // not generated (the rate then falls below target, and the summary says so).
                    self.stats.full.fetch_add(1, Ordering::Relaxed);
                    self.pending = Some((payload, generated.ts_ms));
                    break;
                }
                Err(SinkError::Failed(_)) => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if self.finished() {
            ctx.stop();
        }
    }
}

impl Actor for GeneratorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.started = Instant::now();
        if let Some(probe) = &self.probe {
            probe.started();
        }
        ctx.run_interval(TICK, |act, ctx| match act.probe.clone() {
            Some(probe) => probe.time(|| act.tick(ctx)),
            None => act.tick(ctx),
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if let Some(probe) = &self.probe {
            probe.stopped();
        }
        if let (Some(sink), Some(done)) = (self.sink.take(), self.done.take()) {
            let _ = done.send(sink);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::GeneratorConfig;
    use crate::ports::SystemClock;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct VecSink {
        got: Arc<Mutex<Vec<Vec<u8>>>>,
        capacity: usize,
    }

    impl EventSink for VecSink {
        fn send(&mut self, payload: Vec<u8>, _ts: i64) -> Result<(), SinkError> {
            let mut got = self.got.lock().unwrap();
            if self.capacity > 0 && got.len() >= self.capacity {
                return Err(SinkError::Full(payload));
            }
            got.push(payload);
            Ok(())
        }
        fn acked(&self) -> u64 {
            self.got.lock().unwrap().len() as u64
        }
        fn flush(&mut self, _: Duration) -> Result<(), String> {
            Ok(())
        }
    }

    fn run(
        sink: VecSink,
        rate: Option<f64>,
        limit: RunLimit,
    ) -> (Arc<GeneratorStats>, tokio::sync::oneshot::Receiver<Box<dyn EventSink>>) {
        let stats = Arc::new(GeneratorStats::default());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let generator = LogGenerator::new(GeneratorConfig { malformed_ratio: 0.01, ..GeneratorConfig::default() });
        let stats2 = stats.clone();
        GeneratorActor::new(generator, rate, Box::new(sink), limit, Arc::new(SystemClock), stats2, tx).start();
        (stats, rx)
    }

    #[actix_rt::test]
    async fn a_count_limited_run_sends_exactly_the_count_and_hands_the_sink_back() {
        let sink = VecSink::default();
        let (stats, done) = run(sink.clone(), None, RunLimit { count: Some(12_345), duration: None });
        let mut back = done.await.expect("sink handed back");
        assert_eq!(back.acked(), 12_345);
        assert!(back.flush(Duration::from_secs(1)).is_ok());
        assert_eq!(stats.sent.load(Ordering::Relaxed), 12_345);
        assert_eq!(stats.malformed.load(Ordering::Relaxed), 123);
        assert_eq!(sink.got.lock().unwrap().len(), 12_345);
    }

    #[actix_rt::test]
    async fn a_full_sink_holds_the_payload_instead_of_dropping_it() {
        let sink = VecSink { capacity: 100, ..VecSink::default() };
        let (stats, done) =
            run(sink.clone(), None, RunLimit { count: Some(1_000), duration: Some(Duration::from_millis(200)) });
        done.await.unwrap();
        assert_eq!(sink.got.lock().unwrap().len(), 100);
        assert_eq!(stats.sent.load(Ordering::Relaxed), 100);
        assert!(stats.full.load(Ordering::Relaxed) >= 1);
    }
}
