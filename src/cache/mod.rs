//! The Redis adapter (bb8-redis): per-second and per-minute bucket hashes fed idempotently by every
//! ingest process, read by any process, plus PostgreSQL answers cached for reuse. Every call is
//! bounded by `REDIS_TIMEOUT_MS`.
//!
//! Keys, under `<REDIS_PREFIX>:<topic>`: `:s:<second>` and `:m:<minute>` hashes with fields
//! `<service>\x1ft` (events), `<service>\x1fe` (errors), `<service>\x1fk\x1f<keyword>`; `:applied`
//! (`<topic>/<partition>` → next offset folded in); `:expect` (offsets a rebuild saw in PostgreSQL: Redis answers
//! only once `:applied` reaches them); `:incomplete` (set, with a TTL, when Redis missed batches);
//! `:future` (seconds of events too far ahead to bucket); `:watermark`; `:ans:…` cached answers.

pub mod answers;
pub mod delta_writer;

use std::collections::HashMap;
use std::time::Duration;

use actors::ports::StoreError;
use actors::windows::{BucketDelta, KeywordSet, WindowRange};
use bb8_redis::redis::{self, AsyncCommands, Script};
use bb8_redis::RedisConnectionManager;

/// Separates the parts of a bucket field; services cannot contain control characters.
pub const SEP: char = '\u{1f}';

/// Default of `REDIS_MAX_WINDOW_FIELDS`. Summing runs at roughly 1–6 µs a field (quiet to loaded
/// 2-core machine), so 20k fields stay near the 50 ms `REDIS_TIMEOUT_MS`; an hour of 1,000 busy
/// services is ~150k fields, of 100k services ~720k (4.6 s of Redis, measured).
pub const DEFAULT_MAX_WINDOW_FIELDS: u64 = 20_000;

/// What Redis's buckets hold of a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowFields {
    /// The summed bucket fields: the window, exactly.
    Summed(HashMap<String, u64>),
    /// The buckets cannot answer it exactly (never fed, a gap, behind the store, out of range).
    Incomplete,
    /// More fields than `REDIS_MAX_WINDOW_FIELDS` (how many): left unread.
    TooMany(u64),
}

/// A handle on the Redis side of the windows; cheap to clone.
#[derive(Clone)]
pub struct RedisCache {
    pool: bb8::Pool<RedisConnectionManager>,
    base: String,
    timeout: Duration,
    horizon: i64,
    skew: i64,
    /// `REDIS_MAX_WINDOW_FIELDS`: the most bucket fields one window read may sum.
    max_window_fields: u64,
    apply_script: std::sync::Arc<Script>,
    read_script: std::sync::Arc<Script>,
    audit_script: std::sync::Arc<Script>,
    breaker: std::sync::Arc<Breaker>,
}

/// After a failure, calls fail fast for a while instead of each waiting out the timeout; a single
/// background probe closes the breaker again once Redis answers.
#[derive(Default)]
struct Breaker {
    /// Epoch ms until which calls fail fast; 0 when closed.
    open_until: std::sync::atomic::AtomicI64,
    probing: std::sync::atomic::AtomicBool,
}

const BREAKER_OPEN_MS: i64 = 1_000;
/// Timeout of writes (bucket deltas), which are off the request path.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// A partition's field in `:applied` and `:expect`: one cache serves every topic of `KAFKA_TOPIC`.
fn partition_field(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

impl RedisCache {
    /// The cache of `settings`' topic, with its timeout, horizon and skew.
    pub fn from_settings(settings: &crate::config::Settings) -> anyhow::Result<RedisCache> {
        RedisCache::new(
            settings.redis_url.expose(),
            &settings.redis_prefix,
            &settings.kafka_topic,
            Duration::from_millis(settings.redis_timeout_ms),
            settings.window_horizon.seconds() as i64,
            settings.window_skew_seconds,
        )
        .map(|cache| cache.summing_at_most(settings.redis_max_window_fields))
    }

    /// Sums at most `fields` bucket fields per window read (`REDIS_MAX_WINDOW_FIELDS`).
    pub fn summing_at_most(mut self, fields: u64) -> RedisCache {
        self.max_window_fields = fields;
        self
    }

    pub fn new(
        url: &str,
        prefix: &str,
        topic: &str,
        timeout: Duration,
        horizon: i64,
        skew: i64,
    ) -> anyhow::Result<RedisCache> {
        let manager = RedisConnectionManager::new(url)?;
        let pool =
            bb8::Pool::builder().max_size(8).min_idle(Some(0)).connection_timeout(timeout).build_unchecked(manager);
        Ok(RedisCache {
            pool,
            base: format!("{prefix}:{topic}"),
            timeout,
            horizon,
            skew,
            max_window_fields: DEFAULT_MAX_WINDOW_FIELDS,
            apply_script: std::sync::Arc::new(Script::new(include_str!("apply_delta.lua"))),
            read_script: std::sync::Arc::new(Script::new(include_str!("read_window.lua"))),
            audit_script: std::sync::Arc::new(Script::new(include_str!("audit.lua"))),
            breaker: std::sync::Arc::default(),
        })
    }

    fn trip(&self) {
        let until = chrono::Utc::now().timestamp_millis() + BREAKER_OPEN_MS;
        self.breaker.open_until.store(until, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether calls should fail fast now; starts the probe that may close the breaker.
    fn short_circuit(&self) -> bool {
        use std::sync::atomic::Ordering;
        let until = self.breaker.open_until.load(Ordering::Relaxed);
        if until == 0 {
            return false;
        }
        if chrono::Utc::now().timestamp_millis() >= until && !self.breaker.probing.swap(true, Ordering::AcqRel) {
            let probe = self.clone();
            actix_rt::spawn(async move {
                let healthy = probe.ping_direct().await;
                if healthy {
                    probe.breaker.open_until.store(0, Ordering::Relaxed);
                } else {
                    probe.trip();
                }
                probe.breaker.probing.store(false, Ordering::Release);
            });
        }
        true
    }

    async fn ping_direct(&self) -> bool {
        let run = async {
            let mut conn = self.pool.get().await.ok()?;
            redis::cmd("PING").query_async::<String>(&mut *conn).await.ok()
        };
        matches!(tokio::time::timeout(self.timeout, run).await, Ok(Some(_)))
    }

    /// A write (delta, audit): reliability over latency, so a longer timeout and no breaker.
    async fn bounded_write<T>(
        &self,
        f: impl AsyncFnOnce(&mut redis::aio::MultiplexedConnection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let run = async {
            let mut conn = self.pool.get().await.map_err(failed)?;
            f(&mut conn).await.map_err(failed)
        };
        tokio::time::timeout(WRITE_TIMEOUT, run)
            .await
            .map_err(|_| StoreError::Unavailable(format!("redis did not answer within {WRITE_TIMEOUT:?}")))?
    }

    /// A read on the request path: within `REDIS_TIMEOUT_MS`, and failing fast while Redis is known
    /// to be failing.
    async fn bounded<T>(
        &self,
        f: impl AsyncFnOnce(&mut redis::aio::MultiplexedConnection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        if self.short_circuit() {
            return Err(StoreError::Unavailable("redis failed recently; not waiting on it".into()));
        }
        // Trip on anything that says Redis is unreachable or slow; a reply error is Redis answering.
        let run = async {
            let mut conn = match self.pool.get().await {
                Ok(conn) => conn,
                Err(e) => return Err((true, failed(e))),
            };
            f(&mut conn).await.map_err(|e| {
                let unreachable =
                    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal();
                (unreachable, failed(e))
            })
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err((unreachable, e))) => {
                if unreachable {
                    self.trip();
                }
                Err(e)
            }
            Err(_) => {
                self.trip();
                Err(StoreError::Unavailable(format!("redis did not answer within {:?}", self.timeout)))
            }
        }
    }

    /// How long incomplete data can linger in buckets: past it, every affected key has expired.
    fn incomplete_ttl(&self) -> i64 {
        self.horizon + self.skew + 120
    }

    /// Folds a committed batch's delta in, at most once. Returns false if it was already there.
    pub async fn apply(&self, delta: &BucketDelta, keywords: &KeywordSet) -> Result<bool, StoreError> {
        let mut invocation = self.apply_script.prepare_invoke();
        invocation
            .arg(&self.base)
            .arg(partition_field(&delta.topic, delta.partition))
            .arg(delta.from)
            .arg(delta.to)
            .arg(self.incomplete_ttl())
            .arg(delta.newest_ms.unwrap_or(-1))
            .arg(self.horizon + 60);
        let now = chrono::Utc::now().timestamp();
        let future: Vec<i64> = delta.skipped_seconds.iter().copied().filter(|s| *s > now).collect();
        invocation.arg(future.len());
        for s in &future {
            invocation.arg(*s);
        }
        for (second, counts) in &delta.seconds {
            let mut fields: Vec<(String, u64)> = Vec::new();
            for (service, c) in &counts.by_service {
                fields.push((format!("{service}{SEP}t"), c.total));
                if c.errors > 0 {
                    fields.push((format!("{service}{SEP}e"), c.errors));
                }
                for (i, hits) in c.keywords.iter().enumerate() {
                    if *hits > 0 {
                        fields.push((format!("{service}{SEP}k{SEP}{}", keywords.get(i)), *hits));
                    }
                }
            }
            invocation.arg(*second).arg(fields.len());
            for (field, n) in fields {
                invocation.arg(field).arg(n);
            }
        }
        let applied: i64 = self.bounded_write(async |conn| invocation.invoke_async(conn).await).await?;
        Ok(applied == 1)
    }

    /// Records the offsets a rebuild saw in PostgreSQL: Redis answers only once it has caught up.
    pub async fn audit(&self, offsets: &actors::windows::PartitionOffsets) -> Result<bool, StoreError> {
        let mut invocation = self.audit_script.prepare_invoke();
        invocation.arg(&self.base).arg(self.incomplete_ttl());
        for ((topic, partition), o) in offsets {
            invocation.arg(partition_field(topic, *partition)).arg(*o);
        }
        let complete: i64 = self.bounded_write(async |conn| invocation.invoke_async(conn).await).await?;
        Ok(complete == 1)
    }

    /// The summed bucket fields of the window, if Redis holds it exactly and it is small enough
    /// to sum (see [`WindowFields`]).
    pub async fn window(&self, range: WindowRange) -> Result<WindowFields, StoreError> {
        let now = chrono::Utc::now().timestamp();
        let grace = actors::windows::aggregator::HORIZON_GRACE;
        if range.from < now - self.horizon - grace || range.to > now + self.skew + 1 {
            return Ok(WindowFields::Incomplete); // buckets outside the horizon have expired or were never written
        }
        let mut invocation = self.read_script.prepare_invoke();
        invocation.arg(&self.base).arg(range.from).arg(range.to).arg(self.max_window_fields);
        let flat: Option<Vec<String>> = self.bounded(async |conn| invocation.invoke_async(conn).await).await?;
        let Some(flat) = flat else { return Ok(WindowFields::Incomplete) };
        match flat.split_first() {
            Some((status, rest)) if status == "ok" => Ok(WindowFields::Summed(
                rest.chunks_exact(2).map(|kv| (kv[0].clone(), kv[1].parse::<u64>().unwrap_or(0))).collect(),
            )),
            Some((status, rest)) if status == "too_many" => {
                Ok(WindowFields::TooMany(rest.first().and_then(|n| n.parse().ok()).unwrap_or(0)))
            }
            _ => Err(StoreError::Unavailable("redis: the window script answered in an unknown shape".into())),
        }
    }

    fn answer_key(&self, key: &str) -> String {
        format!("{}:ans:{key}", self.base)
    }

    /// A cached answer (JSON), if one is there.
    pub async fn cached(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = self.answer_key(key);
        self.bounded(async |conn| conn.get(key).await).await
    }

    /// Caches an answer for `ttl`.
    pub async fn cache(&self, key: &str, json: &str, ttl: Duration) -> Result<(), StoreError> {
        let key = self.answer_key(key);
        let secs = ttl.as_secs().max(1);
        self.bounded(async |conn| conn.set_ex(key, json, secs).await).await
    }

    /// Some delta was dropped on the way: Redis cannot answer until the affected buckets expire.
    pub async fn mark_incomplete(&self, why: &str) -> Result<(), StoreError> {
        let key = format!("{}:incomplete", self.base);
        let ttl = self.incomplete_ttl() as u64;
        self.bounded_write(async |conn| conn.set_ex(key, why, ttl).await).await
    }

    /// Makes the first connection now, so the first request does not pay for it.
    pub async fn warm_up(&self) {
        let _ = self.ping_direct().await;
    }

    /// Newest committed event time any ingest process reported (epoch ms).
    pub async fn watermark(&self) -> Result<Option<i64>, StoreError> {
        let key = format!("{}:watermark", self.base);
        self.bounded(async |conn| conn.get(key).await).await
    }

    /// `REDIS_MAX_WINDOW_FIELDS`.
    pub fn max_window_fields(&self) -> u64 {
        self.max_window_fields
    }

    /// Asks Redis itself (breaker or not): for readiness checks.
    pub async fn ping(&self) -> bool {
        self.ping_direct().await
    }
}
