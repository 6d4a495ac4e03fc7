//! BucketCacheActor: applies bucket deltas to Redis one after another (a partition's deltas must
//! arrive in order for the per-partition fence to accept them).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ::actors::windows::{BucketDelta, DeltaSink, KeywordSet};
use actix::prelude::*;
use slog::{warn, Logger};

use super::RedisCache;

/// Deltas queued before new ones are dropped (Redis then marks itself incomplete by the fence).
const MAILBOX: usize = 1_024;

#[derive(Message)]
#[rtype(result = "()")]
struct Apply(Arc<BucketDelta>);

#[derive(Message)]
#[rtype(result = "()")]
struct Audit(std::collections::BTreeMap<i32, i64>);

impl Handler<Audit> for BucketCacheActor {
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

#[derive(Debug, Default)]
pub struct DeltaStats {
    pub applied: AtomicU64,
    pub duplicates: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

pub struct BucketCacheActor {
    cache: RedisCache,
    keywords: Arc<KeywordSet>,
    stats: Arc<DeltaStats>,
    log: Logger,
}

impl Actor for BucketCacheActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
    }
}

impl Handler<Apply> for BucketCacheActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, Apply(delta): Apply, _ctx: &mut Self::Context) -> Self::Result {
        let cache = self.cache.clone();
        let keywords = self.keywords.clone();
        AtomicResponse::new(Box::pin(
            async move {
                // The fence makes a retry harmless: a delta that did land is refused the second time.
                let mut last = None;
                for _ in 0..3 {
                    match cache.apply(&delta, &keywords).await {
                        Ok(applied) => return Ok(applied),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.expect("tried"))
            }
            .into_actor(self)
            .map(|result, act, _| match result {
                Ok(true) => {
                    act.stats.applied.fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => {
                    act.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    act.stats.failed.fetch_add(1, Ordering::Relaxed);
                    warn!(act.log, "bucket delta not applied to redis"; "error" => %e);
                }
            }),
        ))
    }
}

/// The aggregator's way to Redis: never blocks it.
pub struct RedisDeltaSink {
    addr: Addr<BucketCacheActor>,
    stats: Arc<DeltaStats>,
}

impl RedisDeltaSink {
    pub fn start(cache: RedisCache, keywords: Arc<KeywordSet>, log: &Logger) -> RedisDeltaSink {
        let stats = Arc::new(DeltaStats::default());
        let actor = BucketCacheActor {
            cache,
            keywords,
            stats: stats.clone(),
            log: log.new(slog::o!("actor" => "bucket_cache")),
        };
        RedisDeltaSink { addr: actor.start(), stats }
    }

    pub fn stats(&self) -> Arc<DeltaStats> {
        self.stats.clone()
    }
}

impl DeltaSink for RedisDeltaSink {
    fn offer(&self, delta: Arc<BucketDelta>) {
        if self.addr.try_send(Apply(delta)).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn rebuilt(&self, offsets: &std::collections::BTreeMap<i32, i64>) {
        let _ = self.addr.try_send(Audit(offsets.clone()));
    }
}
