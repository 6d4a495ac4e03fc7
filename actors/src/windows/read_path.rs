//! The read path: memory → Redis (a kept answer, then the buckets) → the store (PostgreSQL, or
//! SQLite in the embedded mode) → keep the answer.
//! An outage changes where the answer comes from, never whether there is one (unless every source
//! is down, or the caller forced one that cannot answer).

use super::coalesce::Coalesced;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::stats::{ErrorStats, KeywordCount, WindowRange};
use crate::domain::Keyword;
use crate::ports::{AnswerCache, CannotAnswer, SharedClock, WindowAnswer, WindowQuery, WindowQuestion};

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Memory,
    Redis,
    Postgres,
    /// The embedded mode's store.
    Sqlite,
}

impl Source {
    /// The name used in answers, errors and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Memory => "memory",
            Source::Redis => "redis",
            Source::Postgres => "postgres",
            Source::Sqlite => "sqlite",
        }
    }

    /// Every source name, as `source=` accepts it.
    pub const ALL: [Source; 4] = [Source::Memory, Source::Redis, Source::Postgres, Source::Sqlite];
}

/// How one read of Redis went, for its hit/miss/error counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheRead {
    Hit,
    Miss,
    Error,
}

impl CacheRead {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheRead::Hit => "hit",
            CacheRead::Miss => "miss",
            CacheRead::Error => "error",
        }
    }
}

/// Told how each Redis read went (the shell counts it; the core knows no metrics library).
pub type CacheReadObserver = Arc<dyn Fn(CacheRead) + Send + Sync>;

/// Windows ending this long ago or more are closed: their kept answers live long.
pub const CLOSED_AFTER_SECS: i64 = 300;
pub const OPEN_ANSWER_TTL: Duration = Duration::from_secs(2);
pub const CLOSED_ANSWER_TTL: Duration = Duration::from_secs(3_600);

/// No source (or not the forced one) could answer; every source asked says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct Unanswered {
    pub forced: Option<Source>,
    /// `<source>: <why>`, in the order the sources were asked.
    pub reasons: Vec<String>,
}

impl Unanswered {
    /// The error code of the 503.
    pub fn code(&self) -> &'static str {
        match self.forced {
            Some(_) => "source_unavailable",
            None => "no_source",
        }
    }

    pub fn message(&self) -> String {
        match self.forced {
            Some(source) => format!("the {} source cannot answer this: {}", source.as_str(), self.reasons.join("; ")),
            None => format!("no source could answer: {}", self.reasons.join("; ")),
        }
    }

    fn note(&mut self, source: Source, why: impl std::fmt::Display) {
        self.reasons.push(format!("{}: {why}", source.as_str()));
    }
}

/// Redis as a source: answers kept there, and the buckets every ingest process feeds.
#[derive(Clone)]
pub struct RedisSource {
    pub answers: Arc<dyn AnswerCache>,
    pub buckets: Arc<dyn WindowQuery>,
}

/// Every source a process can read from, asked in order.
#[derive(Clone)]
pub struct WindowReader {
    memory: Option<Arc<dyn WindowQuery>>,
    redis: Option<RedisSource>,
    postgres: Arc<dyn WindowQuery>,
    /// What answers of `postgres` are labelled: `Postgres`, or `Sqlite` in the embedded mode.
    store: Source,
    clock: SharedClock,
    on_redis_read: Option<CacheReadObserver>,
}

impl WindowReader {
    /// A reader of PostgreSQL alone (the authority); add the faster sources with the `with_` calls.
    /// Identical questions that reach the store together share one query ([`Coalesced`]).
    pub fn new(postgres: Arc<dyn WindowQuery>, clock: SharedClock) -> WindowReader {
        let postgres: Arc<dyn WindowQuery> = Arc::new(Coalesced::new(postgres));
        WindowReader { memory: None, redis: None, postgres, store: Source::Postgres, clock, on_redis_read: None }
    }

    /// Names the store's answers `store` (the embedded mode's SQLite) instead of `postgres`.
    pub fn store_named(mut self, store: Source) -> WindowReader {
        self.store = store;
        self
    }

    /// The sources this reader may be forced to: memory, Redis when configured, and its store.
    pub fn sources(&self) -> Vec<Source> {
        let mut sources = vec![Source::Memory];
        if self.redis.is_some() {
            sources.push(Source::Redis);
        }
        sources.push(self.store);
        sources
    }

    /// The in-memory windows of this process (the `run` role).
    pub fn with_memory(mut self, memory: Arc<dyn WindowQuery>) -> WindowReader {
        self.memory = Some(memory);
        self
    }

    pub fn with_redis(mut self, redis: RedisSource) -> WindowReader {
        self.redis = Some(redis);
        self
    }

    pub fn observing_redis(mut self, observer: CacheReadObserver) -> WindowReader {
        self.on_redis_read = Some(observer);
        self
    }

    /// The first exact answer in order memory → Redis → PostgreSQL (only `forced`, when given). A
    /// PostgreSQL answer is kept in Redis: briefly while the window is open, long once closed.
    pub async fn ask(
        &self,
        question: &WindowQuestion,
        forced: Option<Source>,
    ) -> Result<(WindowAnswer, Source), Unanswered> {
        let allowed = |source: Source| forced.is_none_or(|f| f == source);
        let mut misses = Unanswered { forced, reasons: Vec::new() };
        if allowed(Source::Memory) {
            match &self.memory {
                Some(memory) => match exact(memory.answer(question).await, question) {
                    Ok(answer) => return Ok((answer, Source::Memory)),
                    Err(why) => misses.note(Source::Memory, why),
                },
                None => misses.note(Source::Memory, "this process keeps no windows (api role)"),
            }
        }
        let mut redis_down = false;
        if allowed(Source::Redis) {
            match &self.redis {
                Some(redis) => {
                    let (found, read) = read_redis(redis, question, &mut misses).await;
                    if let Some(observe) = &self.on_redis_read {
                        observe(read);
                    }
                    if let Some(answer) = found {
                        return Ok((answer, Source::Redis));
                    }
                    redis_down = read == CacheRead::Error;
                }
                None => misses.note(Source::Redis, "not configured"),
            }
        }
        if allowed(self.store) {
            match exact(self.postgres.answer(question).await, question) {
                Ok(answer) => {
                    // Redis just failed this request: do not wait on it a second time.
                    if let (Some(redis), false) = (&self.redis, redis_down) {
                        redis.answers.keep(question, &answer, self.answer_ttl(question.range())).await;
                    }
                    return Ok((answer, self.store));
                }
                Err(why) => misses.note(self.store, why),
            }
        }
        // Redis and memory noted their own absence above; a store this process does not use did not.
        if forced.is_some_and(|f| matches!(f, Source::Postgres | Source::Sqlite) && f != self.store) {
            misses.reasons.push(format!(
                "{}: not a source of this process (its sources: {})",
                forced.map_or("", Source::as_str),
                self.sources().iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        Err(misses)
    }

    fn answer_ttl(&self, range: WindowRange) -> Duration {
        let closed = range.to <= self.clock.now().timestamp() - CLOSED_AFTER_SECS;
        if closed {
            CLOSED_ANSWER_TTL
        } else {
            OPEN_ANSWER_TTL
        }
    }

    pub async fn errors(
        &self,
        range: WindowRange,
        service: Option<String>,
        limit: usize,
        forced: Option<Source>,
    ) -> Result<(ErrorStats, Source), Unanswered> {
        match self.ask(&WindowQuestion::Errors { range, service, limit }, forced).await? {
            (WindowAnswer::Errors(stats), source) => Ok((stats, source)),
            _ => unreachable!("ask() returns answers of the question's kind"),
        }
    }

    pub async fn keyword(
        &self,
        range: WindowRange,
        keyword: Keyword,
        service: Option<String>,
        forced: Option<Source>,
    ) -> Result<(u64, Source), Unanswered> {
        match self.ask(&WindowQuestion::Keyword { range, keyword, service }, forced).await? {
            (WindowAnswer::Keyword(count), source) => Ok((count, source)),
            _ => unreachable!("ask() returns answers of the question's kind"),
        }
    }

    pub async fn top_keywords(
        &self,
        range: WindowRange,
        limit: usize,
        forced: Option<Source>,
    ) -> Result<(Vec<KeywordCount>, Source), Unanswered> {
        match self.ask(&WindowQuestion::TopKeywords { range, limit }, forced).await? {
            (WindowAnswer::TopKeywords(top), source) => Ok((top, source)),
            _ => unreachable!("ask() returns answers of the question's kind"),
        }
    }
}

/// A source's answer, provided it answers the question asked.
fn exact(answer: Result<WindowAnswer, CannotAnswer>, question: &WindowQuestion) -> Result<WindowAnswer, CannotAnswer> {
    match answer {
        Ok(answer) if answer.answers(question) => Ok(answer),
        Ok(_) => Err(CannotAnswer::Unavailable("answered a different question".into())),
        Err(why) => Err(why),
    }
}

/// A kept answer, else the buckets; an unavailable Redis is not asked a second time.
async fn read_redis(
    redis: &RedisSource,
    question: &WindowQuestion,
    misses: &mut Unanswered,
) -> (Option<WindowAnswer>, CacheRead) {
    match redis.answers.get(question).await {
        Ok(Some(answer)) if answer.answers(question) => return (Some(answer), CacheRead::Hit),
        Ok(_) => {}
        Err(why) => {
            misses.note(Source::Redis, why);
            return (None, CacheRead::Error);
        }
    }
    match exact(redis.buckets.answer(question).await, question) {
        Ok(answer) => (Some(answer), CacheRead::Hit),
        Err(why @ CannotAnswer::Missing(_)) => {
            misses.note(Source::Redis, why);
            (None, CacheRead::Miss)
        }
        Err(why @ CannotAnswer::Unavailable(_)) => {
            misses.note(Source::Redis, why);
            (None, CacheRead::Error)
        }
    }
}
