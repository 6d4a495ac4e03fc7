//! GeneratorActor: feeds an EventSink at a steady rate until a count or a deadline is reached.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::events::LogGenerator;
use super::rate::TokenBucket;
use crate::mailbox::ActorProbe;
pub use crate::ports::generator::{EventSink, SinkError};
use crate::ports::SharedClock;

/// Live counters of a generator run.
#[derive(Debug, Default)]
pub struct GeneratorStats {
    /// Payloads the sink took.
    pub sent: AtomicU64,
    pub malformed: AtomicU64,
    /// Times the sink was full (the generator then waits).
    pub full: AtomicU64,
    /// The sink's own counts, copied every tick.
    pub acked: AtomicU64,
    pub rejected: AtomicU64,
    pub failed: AtomicU64,
    /// Payloads the sink refused outright at `send` (never delivered).
    pub send_errors: AtomicU64,
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

/// One generator run without the actor: what a tick does, given the time since the start, so a test
/// can drive it with simulated time.
pub struct GeneratorRun {
    generator: LogGenerator,
    bucket: Option<TokenBucket>,
    sink: Box<dyn EventSink>,
    limit: RunLimit,
    pending: Option<(Vec<u8>, i64)>,
    clock: SharedClock,
    stats: Arc<GeneratorStats>,
}

impl GeneratorRun {
    /// `rate` events per second (`None`: as fast as the sink takes them).
    pub fn new(
        generator: LogGenerator,
        rate: Option<f64>,
        sink: Box<dyn EventSink>,
        limit: RunLimit,
        clock: SharedClock,
        stats: Arc<GeneratorStats>,
    ) -> GeneratorRun {
        // A tenth of a second of burst absorbs tick jitter without letting the rate run away.
        let bucket = rate.map(|r| TokenBucket::new(r, (r / 10.0).max(1.0)));
        GeneratorRun { generator, bucket, sink, limit, pending: None, clock, stats }
    }

    /// Whether the run reached its count or its duration at `elapsed`.
    pub fn finished(&self, elapsed: Duration) -> bool {
        let by_count = self.limit.count.is_some_and(|n| self.generator.produced() >= n && self.pending.is_none());
        let by_time = self.limit.duration.is_some_and(|d| elapsed >= d);
        by_count || by_time
    }

    /// Serves the sink and offers it this tick's share of events; `true` once the run is over.
    pub fn step(&mut self, elapsed: Duration) -> bool {
        if self.finished(elapsed) {
            return true;
        }
        let sink = &mut self.sink;
        sink.poll();
        self.stats.acked.store(sink.acked(), Ordering::Relaxed);
        self.stats.rejected.store(sink.rejected(), Ordering::Relaxed);
        self.stats.failed.store(sink.failed(), Ordering::Relaxed);
        if let Some((payload, ts)) = self.pending.take() {
            if let Err(SinkError::Full(payload)) = sink.send(payload, ts) {
                self.pending = Some((payload, ts));
                return false;
            }
            self.stats.sent.fetch_add(1, Ordering::Relaxed);
        }
        let remaining = self.limit.count.map_or(u64::MAX, |n| n.saturating_sub(self.generator.produced()));
        let want = match self.bucket.as_mut() {
            Some(bucket) => bucket.take(elapsed.as_secs_f64(), remaining.min(1_000_000)),
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
                    self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.finished(elapsed)
    }

    /// The sink, for flushing once the run is over.
    pub fn into_sink(self) -> Box<dyn EventSink> {
        self.sink
    }
}

/// Ends a run early (an interrupt): the sink is handed back as when the run reaches its limit.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopGenerator;

/// Generates events and offers them to the sink every few milliseconds.
pub struct GeneratorActor {
    run: Option<GeneratorRun>,
    /// tokio's clock, the one `run_interval` ticks by (a test pauses and drives it).
    started: actix::clock::Instant,
    done: Option<tokio::sync::oneshot::Sender<Box<dyn EventSink>>>,
    probe: Option<Arc<ActorProbe>>,
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
        GeneratorActor {
            run: Some(GeneratorRun::new(generator, rate, sink, limit, clock, stats)),
            started: actix::clock::Instant::now(),
            done: Some(done),
            probe: None,
        }
    }

    /// Counts each tick as a handled message of this probe (the generator drives itself by timer).
    pub fn with_probe(mut self, probe: Arc<ActorProbe>) -> GeneratorActor {
        self.probe = Some(probe);
        self
    }
}

impl Actor for GeneratorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.started = actix::clock::Instant::now();
        if let Some(probe) = &self.probe {
            probe.started();
        }
        ctx.run_interval(TICK, |act, ctx| {
            let elapsed = act.started.elapsed();
            let mut step = || act.run.as_mut().is_none_or(|run| run.step(elapsed));
            let done = match act.probe.clone() {
                Some(probe) => probe.time(step),
                None => step(),
            };
            if done {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if let Some(probe) = &self.probe {
            probe.stopped();
        }
        if let (Some(run), Some(done)) = (self.run.take(), self.done.take()) {
            let _ = done.send(run.into_sink());
        }
    }
}

crate::tracked!(GeneratorActor => StopGenerator);

impl Handler<StopGenerator> for GeneratorActor {
    type Result = ();

    fn handle(&mut self, _: StopGenerator, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::GeneratorConfig;
    use crate::ports::SystemClock;
    use crate::testing::{eventually, paused};
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
        // The ticks and the run's deadline are on tokio's clock: paused, they take no real time.
        paused();
        let stats = Arc::new(GeneratorStats::default());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let generator = LogGenerator::new(GeneratorConfig { malformed_ratio: 0.01, ..GeneratorConfig::default() });
        let stats2 = stats.clone();
        GeneratorActor::new(generator, rate, Box::new(sink), limit, Arc::new(SystemClock), stats2, tx).start();
        (stats, rx)
    }

    /// The whole tick path (bucket, burst, limits) at 10k/s over 10 s of simulated time: 5 ms ticks,
    /// every seventh one 40 ms late as on a busy arbiter.
    #[test]
    fn ten_thousand_per_second_with_simulated_ticks_is_within_five_percent() {
        let sink = VecSink::default();
        let stats = Arc::new(GeneratorStats::default());
        let limit = RunLimit { count: None, duration: Some(Duration::from_secs(10)) };
        let generator = LogGenerator::new(GeneratorConfig::default());
        let mut run = GeneratorRun::new(
            generator,
            Some(10_000.0),
            Box::new(sink.clone()),
            limit,
            Arc::new(SystemClock),
            stats.clone(),
        );
        let (mut t, mut ticks) = (Duration::ZERO, 0u32);
        while !run.step(t) {
            t += Duration::from_millis(if ticks % 7 == 6 { 45 } else { 5 });
            ticks += 1;
        }
        assert!(t >= Duration::from_secs(10) && t < Duration::from_millis(10_050), "stopped at {t:?}");
        let achieved = stats.sent.load(Ordering::Relaxed) as f64 / 10.0;
        assert!((achieved - 10_000.0).abs() / 10_000.0 < 0.05, "achieved {achieved}/s");
        assert_eq!(sink.got.lock().unwrap().len() as u64, stats.sent.load(Ordering::Relaxed));
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
    async fn a_stopped_run_hands_the_sink_back_with_what_it_sent() {
        paused();
        let sink = VecSink::default();
        let stats = Arc::new(GeneratorStats::default());
        let (tx, done) = tokio::sync::oneshot::channel();
        let generator = LogGenerator::new(GeneratorConfig::default());
        let limit = RunLimit { count: None, duration: None };
        let addr = GeneratorActor::new(
            generator,
            Some(1_000.0),
            Box::new(sink.clone()),
            limit,
            Arc::new(SystemClock),
            stats.clone(),
            tx,
        )
        .start();
        eventually("something is sent", || stats.sent.load(Ordering::Relaxed) > 0).await;
        addr.send(StopGenerator).await.unwrap();
        let back = done.await.expect("sink handed back");
        assert_eq!(back.acked(), stats.sent.load(Ordering::Relaxed));
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
