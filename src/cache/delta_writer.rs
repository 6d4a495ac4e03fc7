//! DeltaWriterActor: applies bucket deltas to Redis one after another (a partition's deltas must
//! arrive in order for the per-partition fence to accept them).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ::actors::mailbox::{ActorProbe, Inbox};
use ::actors::windows::{BucketDelta, DeltaSink, KeywordSet, PartitionOffsets};
use actix::prelude::*;
use prometheus::IntCounter;
use slog::{warn, Logger};

use super::RedisCache;

/// Deltas queued before new ones are dropped (Redis then marks itself incomplete by the fence).
const MAILBOX: usize = 8_192;

#[derive(Message)]
#[rtype(result = "()")]
struct Apply(Arc<BucketDelta>);

#[derive(Message)]
#[rtype(result = "()")]
struct Audit(PartitionOffsets);

impl Handler<Audit> for DeltaWriterActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, Audit(offsets): Audit, _ctx: &mut Self::Context) -> Self::Result {
        let cache = self.cache.clone();
        AtomicResponse::new(Box::pin(async move { cache.audit(&offsets).await }.into_actor(self).map(
            |result, act, _| match result {
                Ok(true) => {}
                Ok(false) => {
                    warn!(act.log, "redis never saw some stored batches; its buckets answer again once they expire")
                }
                Err(e) => warn!(act.log, "redis audit failed"; "error" => %e),
            },
        )))
    }
}

::actors::tracked!(DeltaWriterActor => Apply, Audit);

/// What became of the bucket deltas offered to Redis (`log_analyzer_cache_deltas_total`).
pub struct DeltaMetrics(prometheus::IntCounterVec);

impl DeltaMetrics {
    pub fn new(r: &prometheus::Registry) -> DeltaMetrics {
        DeltaMetrics(crate::telemetry::metric::counter(
            r,
            "log_analyzer_cache_deltas_total",
            "Bucket deltas offered to Redis: applied, duplicate, failed, dropped",
            &["result"],
        ))
    }

    /// Every result is exported (at 0 too) once a process offers deltas, and only then.
    fn counters(&self) -> DeltaCounters {
        DeltaCounters {
            applied: self.0.with_label_values(&["applied"]),
            duplicate: self.0.with_label_values(&["duplicate"]),
            failed: self.0.with_label_values(&["failed"]),
            dropped: self.0.with_label_values(&["dropped"]),
        }
    }
}

#[derive(Clone)]
struct DeltaCounters {
    applied: IntCounter,
    duplicate: IntCounter,
    failed: IntCounter,
    dropped: IntCounter,
}

/// A delta landed in Redis.
struct DeltaApplied;

impl DeltaApplied {
    fn emit(self, metrics: &DeltaCounters) {
        metrics.applied.inc();
    }
}

/// Redis' fence refused a delta it already had (a retry that had landed, or a replay).
struct DeltaDuplicate;

impl DeltaDuplicate {
    fn emit(self, metrics: &DeltaCounters) {
        metrics.duplicate.inc();
    }
}

/// A delta could not be applied after its retries: Redis now has a gap its fence will report.
struct DeltaFailed<'a> {
    error: &'a dyn std::fmt::Display,
}

impl DeltaFailed<'_> {
    fn emit(self, metrics: &DeltaCounters, probe: &ActorProbe, log: &Logger) {
        metrics.failed.inc();
        probe.error(format_args!("delta not applied: {}", self.error));
        warn!(log, "bucket delta not applied to redis"; "error" => %self.error);
    }
}

/// The actor's mailbox was full: the delta never reached Redis.
struct DeltaDropped;

impl DeltaDropped {
    fn emit(self, metrics: &DeltaCounters) {
        metrics.dropped.inc();
    }
}

pub struct DeltaWriterActor {
    cache: RedisCache,
    keywords: Arc<KeywordSet>,
    metrics: DeltaCounters,
    /// A delta was dropped (mailbox full): Redis must be marked incomplete.
    lost: Arc<std::sync::atomic::AtomicBool>,
    probe: Arc<ActorProbe>,
    log: Logger,
}

impl Actor for DeltaWriterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
    }
}

impl Handler<Apply> for DeltaWriterActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, Apply(delta): Apply, _ctx: &mut Self::Context) -> Self::Result {
        let cache = self.cache.clone();
        let keywords = self.keywords.clone();
        AtomicResponse::new(Box::pin(
            async move {
                // The fence makes a retry harmless: a delta that did land is refused the second time.
                // Giving up leaves a gap, which the fence turns into "incomplete" on the next delta.
                let mut backoff = ::actors::ingest::Backoff::new(
                    std::time::Duration::from_millis(50),
                    std::time::Duration::from_secs(2),
                );
                loop {
                    match cache.apply(&delta, &keywords).await {
                        Ok(applied) => return Ok(applied),
                        Err(e) if backoff.failures() >= 8 => return Err(e),
                        Err(_) => {
                            backoff.fail();
                            actix::clock::sleep(backoff.delay()).await;
                        }
                    }
                }
            }
            .into_actor(self)
            .map(|result, act, ctx| match result {
                Ok(true) => {
                    DeltaApplied.emit(&act.metrics);
                    if act.lost.swap(false, Ordering::AcqRel) {
                        let cache = act.cache.clone();
                        ctx.wait(async move { cache.mark_incomplete("dropped-delta").await }.into_actor(act).map(
                            |r, act, _| {
                                if let Err(e) = r {
                                    warn!(act.log, "could not mark redis incomplete"; "error" => %e);
                                }
                            },
                        ));
                    }
                }
                Ok(false) => DeltaDuplicate.emit(&act.metrics),
                Err(e) => {
                    act.lost.store(true, Ordering::Release);
                    DeltaFailed { error: &e }.emit(&act.metrics, &act.probe, &act.log);
                }
            }),
        ))
    }
}

/// The aggregator's way to Redis: never blocks it.
pub struct DeltaWriter {
    inbox: Inbox<DeltaWriterActor>,
    metrics: DeltaCounters,
    lost: Arc<std::sync::atomic::AtomicBool>,
}

impl DeltaWriter {
    pub fn start(
        cache: RedisCache,
        keywords: Arc<KeywordSet>,
        metrics: &DeltaMetrics,
        probe: Arc<ActorProbe>,
        log: &Logger,
    ) -> DeltaWriter {
        let metrics = metrics.counters();
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let actor = DeltaWriterActor {
            cache,
            keywords,
            metrics: metrics.clone(),
            lost: lost.clone(),
            probe: probe.clone(),
            log: log.new(slog::o!("actor" => "delta_writer")),
        };
        DeltaWriter { inbox: Inbox::new(actor.start(), probe), metrics, lost }
    }
}

impl DeltaSink for DeltaWriter {
    fn offer(&self, delta: Arc<BucketDelta>) {
        if self.inbox.try_send(Apply(delta)).is_err() {
            DeltaDropped.emit(&self.metrics);
            self.lost.store(true, Ordering::Release);
        }
    }

    fn rebuilt(&self, offsets: &PartitionOffsets) {
        let _ = self.inbox.try_send(Audit(offsets.clone()));
    }
}
