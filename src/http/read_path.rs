//! The read path: memory → Redis (cached answer, then buckets) → PostgreSQL → cache the answer.
//! An outage changes where the answer comes from, never whether there is one (unless every source
//! is down, or the caller forced one that cannot answer).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actors::domain::Keyword;
use actors::mailbox::Inbox;
use actors::windows::{
    aggregator::{QueryErrors, QueryKeyword, QueryTopKeywords},
    stats::top_keywords,
    ErrorStats, KeywordCount, KeywordSet, ServiceStats, WindowAggregatorActor, WindowRange,
};
use serde::{de::DeserializeOwned, Serialize};

use super::errors::ApiError;
use crate::cache::{RedisCache, SEP};
use crate::db::stats::PgStats;

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Memory,
    Redis,
    Postgres,
}

/// Windows ending this long ago or more are closed: their cached answers live long.
const CLOSED_AFTER_SECS: i64 = 300;
const OPEN_ANSWER_TTL: Duration = Duration::from_secs(2);
const CLOSED_ANSWER_TTL: Duration = Duration::from_secs(3_600);

/// Every source a process can read from.
#[derive(Clone)]
pub struct StatsReader {
    pub aggregator: Option<Inbox<WindowAggregatorActor>>,
    pub redis: Option<RedisCache>,
    pub pg: PgStats,
    pub keywords: Arc<KeywordSet>,
    /// Counts Redis reads by result (`hit`, `miss`, `error`).
    pub cache_results: Option<prometheus::IntCounterVec>,
}

/// Why one source gave no answer (kept for the 503 message when none does).
struct Misses(Vec<String>);

impl Misses {
    fn note(&mut self, source: &str, why: impl std::fmt::Display) {
        self.0.push(format!("{source}: {why}"));
    }

    fn into_error(self, forced: Option<Source>) -> ApiError {
        match forced {
            Some(source) => ApiError::unavailable(
                "source_unavailable",
                format!("the {} source cannot answer this: {}", source.as_str(), self.0.join("; ")),
            ),
            None => ApiError::unavailable("no_source", format!("no source could answer: {}", self.0.join("; "))),
        }
    }
}

impl Source {
    /// The name used in answers, errors and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Memory => "memory",
            Source::Redis => "redis",
            Source::Postgres => "postgres",
        }
    }
}

fn allowed(forced: Option<Source>, source: Source) -> bool {
    forced.is_none_or(|f| f == source)
}

impl StatsReader {
    pub async fn errors(
        &self,
        range: WindowRange,
        service: Option<String>,
        forced: Option<Source>,
    ) -> Result<(ErrorStats, Source), ApiError> {
        let mut misses = Misses(Vec::new());
        if allowed(forced, Source::Memory) {
            match &self.aggregator {
                Some(agg) => match agg.send(QueryErrors { range, service: service.clone() }).await {
                    Ok(Ok(stats)) => return Ok((stats, Source::Memory)),
                    Ok(Err(why)) => misses.note("memory", why),
                    Err(e) => misses.note("memory", e),
                },
                None => misses.note("memory", "this process keeps no windows (api role)"),
            }
        }
        let key = format!("errors:{}:{}:{}", range.from, range.to, service.as_deref().unwrap_or(""));
        if allowed(forced, Source::Redis) {
            if let Some(stats) = self
                .redis_answer(&key, range, &mut misses, |fields| Some(errors_from_fields(fields, service.as_deref())))
                .await
            {
                return Ok((stats, Source::Redis));
            }
        }
        if allowed(forced, Source::Postgres) {
            match self.pg.errors(range, service.clone()).await {
                Ok(stats) => {
                    self.cache_answer(&key, range, &stats).await;
                    return Ok((stats, Source::Postgres));
                }
                Err(e) => misses.note("postgres", e),
            }
        }
        Err(misses.into_error(forced))
    }

    pub async fn keyword(
        &self,
        range: WindowRange,
        keyword: Keyword,
        service: Option<String>,
        forced: Option<Source>,
    ) -> Result<(u64, Source), ApiError> {
        let mut misses = Misses(Vec::new());
        if allowed(forced, Source::Memory) {
            match &self.aggregator {
                Some(agg) => {
                    match agg.send(QueryKeyword { range, keyword: keyword.clone(), service: service.clone() }).await {
                        Ok(Ok(count)) => return Ok((count, Source::Memory)),
                        Ok(Err(why)) => misses.note("memory", why),
                        Err(e) => misses.note("memory", e),
                    }
                }
                None => misses.note("memory", "this process keeps no windows (api role)"),
            }
        }
        let key = format!("keyword:{}:{}:{}:{}", range.from, range.to, service.as_deref().unwrap_or(""), keyword);
        if allowed(forced, Source::Redis) {
            let tracked = self.keywords.position(keyword.as_str()).is_some();
            let found = self
                .redis_answer(&key, range, &mut misses, |fields| {
                    tracked.then(|| keyword_from_fields(fields, keyword.as_str(), service.as_deref()))
                })
                .await;
            if let Some(count) = found {
                return Ok((count, Source::Redis));
            }
        }
        if allowed(forced, Source::Postgres) {
            match self.pg.keyword(range, keyword.as_str().to_owned(), service.clone()).await {
                Ok(count) => {
                    self.cache_answer(&key, range, &count).await;
                    return Ok((count, Source::Postgres));
                }
                Err(e) => misses.note("postgres", e),
            }
        }
        Err(misses.into_error(forced))
    }

    pub async fn top_keywords(
        &self,
        range: WindowRange,
        limit: usize,
        forced: Option<Source>,
    ) -> Result<(Vec<KeywordCount>, Source), ApiError> {
        let mut misses = Misses(Vec::new());
        if allowed(forced, Source::Memory) {
            match &self.aggregator {
                Some(agg) => match agg.send(QueryTopKeywords { range, limit }).await {
                    Ok(Ok(top)) => return Ok((top, Source::Memory)),
                    Ok(Err(why)) => misses.note("memory", why),
                    Err(e) => misses.note("memory", e),
                },
                None => misses.note("memory", "this process keeps no windows (api role)"),
            }
        }
        let key = format!("top:{}:{}:{limit}", range.from, range.to);
        if allowed(forced, Source::Redis) {
            let found = self
                .redis_answer(&key, range, &mut misses, |fields| Some(top_from_fields(fields, &self.keywords, limit)))
                .await;
            if let Some(top) = found {
                return Ok((top, Source::Redis));
            }
        }
        if allowed(forced, Source::Postgres) {
            let tracked: Vec<String> = self.keywords.iter().map(|k| k.as_str().to_owned()).collect();
            match self.pg.top_keywords(range, tracked, limit).await {
                Ok(top) => {
                    self.cache_answer(&key, range, &top).await;
                    return Ok((top, Source::Postgres));
                }
                Err(e) => misses.note("postgres", e),
            }
        }
        Err(misses.into_error(forced))
    }

    /// A cached answer, else the sum of the window's buckets mapped by `from_fields`.
    async fn redis_answer<T: DeserializeOwned>(
        &self,
        key: &str,
        range: WindowRange,
        misses: &mut Misses,
        from_fields: impl FnOnce(&HashMap<String, u64>) -> Option<T>,
    ) -> Option<T> {
        let Some(redis) = &self.redis else {
            misses.note("redis", "not configured");
            return None;
        };
        let (answer, result) = Self::read_redis(redis, key, range, misses, from_fields).await;
        if let Some(counter) = &self.cache_results {
            counter.with_label_values(&[result]).inc();
        }
        answer
    }

    async fn read_redis<T: DeserializeOwned>(
        redis: &RedisCache,
        key: &str,
        range: WindowRange,
        misses: &mut Misses,
        from_fields: impl FnOnce(&HashMap<String, u64>) -> Option<T>,
    ) -> (Option<T>, &'static str) {
        match redis.cached(key).await {
            Ok(Some(json)) => {
                if let Ok(value) = serde_json::from_str(&json) {
                    return (Some(value), "hit");
                }
            }
            Ok(None) => {}
            Err(e) => {
                misses.note("redis", e);
                return (None, "error"); // down or slow: do not wait on it twice
            }
        }
        match redis.window(range).await {
            Ok(Some(fields)) => match from_fields(&fields) {
                Some(value) => (Some(value), "hit"),
                None => {
                    misses.note("redis", "keyword is not tracked in the buckets");
                    (None, "miss")
                }
            },
            Ok(None) => {
                misses.note("redis", "the buckets do not hold this window completely");
                (None, "miss")
            }
            Err(e) => {
                misses.note("redis", e);
                (None, "error")
            }
        }
    }

    /// Writes a PostgreSQL answer back to Redis: briefly while the window is open, long once closed.
    async fn cache_answer<T: Serialize>(&self, key: &str, range: WindowRange, value: &T) {
        let Some(redis) = &self.redis else { return };
        let closed = range.to <= chrono::Utc::now().timestamp() - CLOSED_AFTER_SECS;
        let ttl = if closed { CLOSED_ANSWER_TTL } else { OPEN_ANSWER_TTL };
        if let Ok(json) = serde_json::to_string(value) {
            let _ = redis.cache(key, &json, ttl).await;
        }
    }
}

fn errors_from_fields(fields: &HashMap<String, u64>, only: Option<&str>) -> ErrorStats {
    let mut per: HashMap<&str, (u64, u64)> = HashMap::new();
    for (field, n) in fields {
        let mut parts = field.split(SEP);
        let (Some(service), Some(kind), None) = (parts.next(), parts.next(), parts.next()) else { continue };
        let entry = per.entry(service).or_default();
        match kind {
            "t" => entry.0 += n,
            "e" => entry.1 += n,
            _ => {}
        }
    }
    ErrorStats::from_services(
        per.into_iter().map(|(service, (total, errors))| ServiceStats { service: service.to_owned(), total, errors }),
        only,
    )
}

fn keyword_from_fields(fields: &HashMap<String, u64>, keyword: &str, only: Option<&str>) -> u64 {
    fields
        .iter()
        .filter_map(|(field, n)| {
            let mut parts = field.split(SEP);
            match (parts.next(), parts.next(), parts.next()) {
                (Some(service), Some("k"), Some(k)) if k == keyword && only.is_none_or(|o| o == service) => Some(*n),
                _ => None,
            }
        })
        .sum()
}

fn top_from_fields(fields: &HashMap<String, u64>, keywords: &KeywordSet, limit: usize) -> Vec<KeywordCount> {
    top_keywords(
        keywords.iter().map(|k| KeywordCount {
            keyword: k.as_str().to_owned(),
            count: keyword_from_fields(fields, k.as_str(), None),
        }),
        limit,
    )
}
