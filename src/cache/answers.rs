//! Redis as a source of window answers: kept answers (`:ans:…`, JSON) and the bucket hashes, whose
//! fields (`<service>\x1ft`, `…\x1fe`, `…\x1fk\x1f<keyword>`) are decoded here, beside the code that
//! writes them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actors::ports::{AnswerCache, CannotAnswer, WindowAnswer, WindowQuery, WindowQuestion};
use actors::windows::{stats::top_keywords, ErrorStats, KeywordCount, KeywordSet, ServiceStats};
use async_trait::async_trait;

use super::{RedisCache, WindowFields, SEP};

/// The key of a question's kept answer (under `<base>:ans:`).
fn answer_key(question: &WindowQuestion) -> String {
    match question {
        WindowQuestion::Errors { range, service, limit } => {
            format!("errors:{}:{}:{}:{limit}", range.from, range.to, service.as_deref().unwrap_or(""))
        }
        WindowQuestion::Keyword { range, keyword, service } => {
            format!("keyword:{}:{}:{}:{}", range.from, range.to, service.as_deref().unwrap_or(""), keyword)
        }
        WindowQuestion::TopKeywords { range, limit } => format!("top:{}:{}:{limit}", range.from, range.to),
    }
}

fn to_json(answer: &WindowAnswer) -> serde_json::Result<String> {
    match answer {
        WindowAnswer::Errors(stats) => serde_json::to_string(stats),
        WindowAnswer::Keyword(count) => serde_json::to_string(count),
        WindowAnswer::TopKeywords(top) => serde_json::to_string(top),
    }
}

fn from_json(question: &WindowQuestion, json: &str) -> serde_json::Result<WindowAnswer> {
    Ok(match question {
        WindowQuestion::Errors { .. } => WindowAnswer::Errors(serde_json::from_str(json)?),
        WindowQuestion::Keyword { .. } => WindowAnswer::Keyword(serde_json::from_str(json)?),
        WindowQuestion::TopKeywords { .. } => WindowAnswer::TopKeywords(serde_json::from_str(json)?),
    })
}

#[async_trait]
impl AnswerCache for RedisCache {
    async fn get(&self, question: &WindowQuestion) -> Result<Option<WindowAnswer>, CannotAnswer> {
        match self.cached(&answer_key(question)).await {
            // An answer that no longer decodes (written by another version) is as good as none.
            Ok(json) => Ok(json.and_then(|json| from_json(question, &json).ok())),
            Err(e) => Err(CannotAnswer::Unavailable(e.to_string())),
        }
    }

    async fn keep(&self, question: &WindowQuestion, answer: &WindowAnswer, ttl: Duration) {
        if let Ok(json) = to_json(answer) {
            let _ = self.cache(&answer_key(question), &json, ttl).await;
        }
    }
}

/// Why Redis cannot answer a window: it answers only windows inside the horizon, and only once every
/// partition a rebuild saw in PostgreSQL has reported to it (a partition that has never had an
/// event has not, so a fresh topic keeps Redis from answering until each partition gets one).
pub const BUCKETS_INCOMPLETE: &str = "the buckets do not hold this window completely (Redis answers only windows \
     inside WINDOW_HORIZON, once every partition of the topics has reported its events to it: a partition that \
     never had an event has not yet; without `source=`, memory or postgres answers meanwhile)";

/// The bucket hashes summed over a window; exact, or no answer.
#[derive(Clone)]
pub struct RedisBuckets {
    cache: RedisCache,
    keywords: Arc<KeywordSet>,
}

impl RedisBuckets {
    pub fn new(cache: RedisCache, keywords: Arc<KeywordSet>) -> RedisBuckets {
        RedisBuckets { cache, keywords }
    }
}

#[async_trait]
impl WindowQuery for RedisBuckets {
    async fn answer(&self, question: &WindowQuestion) -> Result<WindowAnswer, CannotAnswer> {
        let fields = match self.cache.window(question.range()).await {
            Ok(WindowFields::Summed(fields)) => fields,
            Ok(WindowFields::Incomplete) => return Err(CannotAnswer::Missing(BUCKETS_INCOMPLETE.into())),
            Ok(WindowFields::TooMany(n)) => {
                return Err(CannotAnswer::Missing(format!(
                    "the window's buckets hold {n} fields, more than REDIS_MAX_WINDOW_FIELDS \
                     ({}): too many services to sum in Redis without stalling it",
                    self.cache.max_window_fields()
                )))
            }
            Err(e) => return Err(CannotAnswer::Unavailable(e.to_string())),
        };
        Ok(match question {
            WindowQuestion::Errors { service, limit, .. } => {
                WindowAnswer::Errors(errors_from_fields(&fields, service.as_deref(), *limit))
            }
            WindowQuestion::Keyword { keyword, service, .. } => {
                if self.keywords.position(keyword.as_str()).is_none() {
                    return Err(CannotAnswer::Missing("keyword is not tracked in the buckets".into()));
                }
                WindowAnswer::Keyword(keyword_from_fields(&fields, keyword.as_str(), service.as_deref()))
            }
            WindowQuestion::TopKeywords { limit, .. } => {
                WindowAnswer::TopKeywords(top_from_fields(&fields, &self.keywords, *limit))
            }
        })
    }
}

fn errors_from_fields(fields: &HashMap<String, u64>, only: Option<&str>, limit: usize) -> ErrorStats {
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
        limit,
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

#[cfg(test)]
mod tests {
    use super::*;
    use actors::domain::Keyword;

    fn fields(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
        pairs.iter().map(|(f, n)| (f.replace('|', &SEP.to_string()), *n)).collect()
    }

    #[test]
    fn bucket_fields_decode_into_each_answer() {
        let f = fields(&[
            ("api|t", 5),
            ("api|e", 2),
            ("api|k|timeout", 3),
            ("db|t", 4),
            ("db|k|timeout", 1),
            ("db|k|disk", 2),
        ]);
        let all = errors_from_fields(&f, None, 100);
        assert_eq!((all.total, all.errors, all.by_service.len()), (9, 2, 2));
        assert_eq!(errors_from_fields(&f, Some("db"), 100).total, 4);
        assert_eq!(keyword_from_fields(&f, "timeout", None), 4);
        assert_eq!(keyword_from_fields(&f, "timeout", Some("api")), 3);
        let keywords = KeywordSet::new(["disk", "timeout", "absent"].map(|k| Keyword::parse(k).unwrap()));
        let top = top_from_fields(&f, &keywords, 5);
        assert_eq!(
            top,
            vec![
                KeywordCount { keyword: "timeout".into(), count: 4 },
                KeywordCount { keyword: "disk".into(), count: 2 },
            ]
        );
    }

    #[test]
    fn kept_answers_round_trip_and_keys_tell_questions_apart() {
        let range = actors::windows::WindowRange { from: 10, to: 70 };
        let keyword = WindowQuestion::Keyword { range, keyword: Keyword::parse("timeout").unwrap(), service: None };
        let errors = WindowQuestion::Errors { range, service: None, limit: 100 };
        assert_eq!(answer_key(&keyword), "keyword:10:70::timeout");
        assert_eq!(answer_key(&errors), "errors:10:70::100");
        let fewer = WindowQuestion::Errors { range, service: None, limit: 5 };
        assert_ne!(answer_key(&errors), answer_key(&fewer), "a limit is part of the question");
        let answer = WindowAnswer::Keyword(42);
        assert_eq!(from_json(&keyword, &to_json(&answer).unwrap()).unwrap(), answer);
        assert!(from_json(&errors, "42").is_err(), "a count is not an errors answer");
    }
}
