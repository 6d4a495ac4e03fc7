//! Log search (DESIGN §13): the question `GET /logs`, `GET /logs/tail` and `log-analyzer search`
//! ask, parsed once here from the raw parameters, and the port the stores answer it through.
//!
//! Order is newest first: `ts` descending, ties by `partition`, then `offset`, then `topic`, all
//! descending. A page ends at an opaque keyset [`Cursor`]: the next page holds the events strictly
//! after it in that order, so pages neither repeat nor skip an event while ingest goes on (an event
//! stored later with an older `ts` than the cursor lands on a later page, as it should).

use std::fmt;

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use crate::domain::tokens::{MAX_TOKEN_CHARS, MIN_TOKEN_CHARS};
use crate::domain::{Level, LogEvent, ServiceName, Tokens};

#[cfg(test)]
mod tests;

/// Events per page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// Most events one page may ask for.
pub const MAX_LIMIT: usize = 1_000;
/// Most terms `q` may hold: each is one more index condition.
pub const MAX_TERMS: usize = 16;
/// Longest `q`, in bytes.
pub const MAX_QUERY_BYTES: usize = 1_024;

/// Which levels match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelFilter {
    Any,
    Exactly(Level),
    /// This level and every more severe one (`warn+`).
    AtLeast(Level),
}

impl LevelFilter {
    pub fn admits(self, level: Level) -> bool {
        match self {
            LevelFilter::Any => true,
            LevelFilter::Exactly(l) => level == l,
            LevelFilter::AtLeast(l) => level >= l,
        }
    }

    /// The admitted levels as their stored numbers (`smallint`), lowest first.
    pub fn numbers(self) -> Vec<i16> {
        Level::ALL.into_iter().filter(|l| self.admits(*l)).map(|l| l as i16).collect()
    }
}

/// Where a page ended: the position of its last event in the search order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Event time in microseconds since the epoch (what the stores keep).
    pub ts_micros: i64,
    pub partition: i32,
    pub offset: i64,
    pub topic: String,
}

impl Cursor {
    const VERSION: &'static str = "v1";

    /// The cursor of a found event.
    pub fn of(event: &FoundEvent) -> Cursor {
        Cursor {
            ts_micros: event.ts.timestamp_micros(),
            partition: event.partition,
            offset: event.offset,
            topic: event.topic.clone(),
        }
    }

    /// Opaque to clients (URL-safe base64): its fields may change; `v1` says how to read them.
    pub fn encode(&self) -> String {
        let text = format!("{}:{}:{}:{}:{}", Cursor::VERSION, self.ts_micros, self.partition, self.offset, self.topic);
        URL_SAFE_NO_PAD.encode(text)
    }

    pub fn decode(text: &str) -> Result<Cursor, BadSearch> {
        let bad = || BadSearch::new("bad_cursor", "cursor: not a cursor this server gave; pass next_cursor as it came");
        let bytes = URL_SAFE_NO_PAD.decode(text.as_bytes()).map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let mut parts = text.splitn(5, ':');
        if parts.next() != Some(Cursor::VERSION) {
            return Err(bad());
        }
        let ts_micros = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let partition = parts.next().and_then(|p| p.parse().ok()).filter(|p: &i32| *p >= 0).ok_or_else(bad)?;
        let offset = parts.next().and_then(|p| p.parse().ok()).filter(|o: &i64| *o >= 0).ok_or_else(bad)?;
        let topic = parts.next().filter(|t| !t.is_empty()).ok_or_else(bad)?.to_owned();
        Ok(Cursor { ts_micros, partition, offset, topic })
    }

    /// Whether an event at this position comes after the cursor in the search order (newest first).
    pub fn precedes(&self, ts_micros: i64, partition: i32, offset: i64, topic: &str) -> bool {
        (ts_micros, partition, offset, topic) < (self.ts_micros, self.partition, self.offset, self.topic.as_str())
    }
}

/// What matches, without the paging: the part `GET /logs/tail` shares with `GET /logs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Tokens the message must all hold (lowercased, as `tokens` stores them), distinct.
    pub include: Vec<String>,
    /// Tokens the message must not hold.
    pub exclude: Vec<String>,
    pub service: Option<String>,
    pub levels: LevelFilter,
}

impl Filter {
    /// Whether `event` matches: the rule every store must implement the same way (tests compare them).
    pub fn matches(&self, event: &LogEvent) -> bool {
        self.levels.admits(event.level)
            && self.service.as_deref().is_none_or(|s| event.service.as_str() == s)
            && self.include.iter().all(|t| event.tokens.contains(t))
            && !self.exclude.iter().any(|t| event.tokens.contains(t))
    }

    /// The same rule over stored columns (a store's row, a test's ground truth).
    pub fn matches_row(&self, level: Level, service: &str, tokens: &[impl AsRef<str>]) -> bool {
        let has = |t: &String| tokens.iter().any(|x| x.as_ref() == t);
        self.levels.admits(level)
            && self.service.as_deref().is_none_or(|s| service == s)
            && self.include.iter().all(has)
            && !self.exclude.iter().any(has)
    }
}

/// One page's question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    pub filter: Filter,
    /// Events at or after this time (microseconds), if bounded.
    pub from_micros: Option<i64>,
    /// Events before this time (microseconds), if bounded.
    pub to_micros: Option<i64>,
    pub limit: usize,
    /// Continue after this position (the previous page's `next_cursor`).
    pub after: Option<Cursor>,
}

impl SearchQuery {
    /// Whether an event at `ts_micros` is in `[from, to)`.
    pub fn in_range(&self, ts_micros: i64) -> bool {
        self.from_micros.is_none_or(|f| ts_micros >= f) && self.to_micros.is_none_or(|t| ts_micros < t)
    }
}

/// The raw parameters, as a route or the command line got them.
#[derive(Debug, Clone, Default)]
pub struct SearchParams<'a> {
    pub q: Option<&'a str>,
    pub service: Option<&'a str>,
    pub level: Option<&'a str>,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub limit: Option<&'a str>,
    pub cursor: Option<&'a str>,
}

/// A malformed search: a stable code and what to fix (HTTP answers it with a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BadSearch {
    pub code: &'static str,
    pub message: String,
}

impl BadSearch {
    fn new(code: &'static str, message: impl Into<String>) -> BadSearch {
        BadSearch { code, message: message.into() }
    }
}

impl<'a> SearchParams<'a> {
    /// Every parameter's name, as `GET /logs` takes them.
    pub const NAMES: [&'static str; 7] = ["q", "service", "level", "from", "to", "limit", "cursor"];

    /// The parameters of (name, value) pairs, as a query string or a test gives them. A name that is
    /// not one of [`SearchParams::NAMES`] (`unknown_parameter`) or is given twice
    /// (`repeated_parameter`) is refused rather than dropped: a typo must not widen the search.
    pub fn from_pairs<'n>(pairs: impl IntoIterator<Item = (&'n str, &'a str)>) -> Result<SearchParams<'a>, BadSearch> {
        let mut p = SearchParams::default();
        for (name, value) in pairs {
            let slot = match name {
                "q" => &mut p.q,
                "service" => &mut p.service,
                "level" => &mut p.level,
                "from" => &mut p.from,
                "to" => &mut p.to,
                "limit" => &mut p.limit,
                "cursor" => &mut p.cursor,
                other => {
                    return Err(BadSearch::new(
                        "unknown_parameter",
                        format!("unknown parameter {other:?}; this route takes {}", SearchParams::NAMES.join(", ")),
                    ))
                }
            };
            if slot.replace(value).is_some() {
                return Err(BadSearch::new(
                    "repeated_parameter",
                    format!("parameter {name:?} is given more than once"),
                ));
            }
        }
        Ok(p)
    }

    /// The filter alone (for the tail, which has no range, limit or cursor).
    pub fn filter(&self) -> Result<Filter, BadSearch> {
        let (include, exclude) = parse_terms(self.q.unwrap_or(""))?;
        let service = self
            .service
            .map(|s| {
                ServiceName::parse(s)
                    .map(ServiceName::into_inner)
                    .map_err(|e| BadSearch::new("bad_service", format!("service {e}")))
            })
            .transpose()?;
        let levels = self.level.map(parse_levels).transpose()?.unwrap_or(LevelFilter::Any);
        Ok(Filter { include, exclude, service, levels })
    }

    /// The whole question of one page.
    pub fn query(&self) -> Result<SearchQuery, BadSearch> {
        let filter = self.filter()?;
        let from_micros = self.from.map(|t| parse_time("from", t)).transpose()?;
        let to_micros = self.to.map(|t| parse_time("to", t)).transpose()?;
        if let (Some(f), Some(t)) = (from_micros, to_micros) {
            if f >= t {
                return Err(BadSearch::new("bad_range", "from must be before to (the range is [from, to))"));
            }
        }
        let limit = match self.limit {
            None => DEFAULT_LIMIT,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(BadSearch::new(
                        "bad_limit",
                        format!("limit: {text:?} is not a whole number from 1 to {MAX_LIMIT}"),
                    ))
                }
            },
        };
        let after = self.cursor.map(Cursor::decode).transpose()?;
        Ok(SearchQuery { filter, from_micros, to_micros, limit, after })
    }
}

/// `q`: terms separated by white space; a term is required, `-term` excluded. A term is tokenized
/// as messages are (`error:timeout` is the two tokens `error` and `timeout`, all required), so what
/// `q` asks is what the stored `tokens` can answer. An excluded term must be one token.
fn parse_terms(q: &str) -> Result<(Vec<String>, Vec<String>), BadSearch> {
    if q.len() > MAX_QUERY_BYTES {
        return Err(BadSearch::new(
            "bad_query",
            format!("q is {} bytes; at most {MAX_QUERY_BYTES} are taken", q.len()),
        ));
    }
    let (mut include, mut exclude) = (Vec::<String>::new(), Vec::<String>::new());
    for term in q.split_whitespace() {
        let (negated, text) = match term.strip_prefix('-') {
            Some(rest) if !rest.is_empty() => (true, rest),
            _ => (false, term),
        };
        let tokens = Tokens::of(text);
        let tokens: Vec<&str> = tokens.iter().collect();
        if tokens.is_empty() {
            return Err(BadSearch::new(
                "bad_query",
                format!(
                    "q: {term:?} holds no token; a token is {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} letters, digits or _"
                ),
            ));
        }
        let too_long =
            text.split(|c: char| !(c.is_alphanumeric() || c == '_')).find(|run| run.chars().count() > MAX_TOKEN_CHARS);
        if let Some(run) = too_long {
            return Err(BadSearch::new(
                "bad_query",
                format!("q: {run:?} is longer than {MAX_TOKEN_CHARS} characters, and no stored token is"),
            ));
        }
        if negated {
            if tokens.len() > 1 {
                return Err(BadSearch::new(
                    "bad_query",
                    format!("q: {term:?} excludes {} tokens; exclude one token per -term", tokens.len()),
                ));
            }
            push_distinct(&mut exclude, tokens[0]);
        } else {
            for token in tokens {
                push_distinct(&mut include, token);
            }
        }
    }
    if include.len() + exclude.len() > MAX_TERMS {
        return Err(BadSearch::new("bad_query", format!("q holds more than {MAX_TERMS} tokens")));
    }
    if let Some(both) = include.iter().find(|t| exclude.contains(t)) {
        return Err(BadSearch::new("bad_query", format!("q both requires and excludes {both:?}: nothing could match")));
    }
    Ok((include, exclude))
}

fn push_distinct(into: &mut Vec<String>, token: &str) {
    if !into.iter().any(|t| t == token) {
        into.push(token.to_owned());
    }
}

/// `level`: one level (`error`), or a minimum (`warn+`). In a query string `+` decodes to a space,
/// so `level=warn+` arrives as `"warn "`: both spellings mean the minimum.
fn parse_levels(text: &str) -> Result<LevelFilter, BadSearch> {
    let (name, at_least) = match text.strip_suffix(['+', ' ']) {
        Some(name) => (name, true),
        None => (text, false),
    };
    let level = Level::parse(name)
        .map_err(|e| BadSearch::new("bad_level", format!("level: {e}; add + for that level and above (warn+)")))?;
    Ok(if at_least { LevelFilter::AtLeast(level) } else { LevelFilter::Exactly(level) })
}

/// `from` / `to`: RFC 3339 or epoch seconds (fractions allowed), as microseconds.
fn parse_time(name: &str, text: &str) -> Result<i64, BadSearch> {
    let bad = || {
        BadSearch::new(
            if name == "from" { "bad_from" } else { "bad_to" },
            format!("{name}: {text:?} is neither an RFC 3339 time (2026-01-02T03:04:05Z) nor epoch seconds"),
        )
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_micros());
    }
    let seconds: f64 = text.parse().map_err(|_| bad())?;
    // Years 1970..=9999: anything else is a typo, not a question.
    if !(0.0..=253_402_300_799.0).contains(&seconds) {
        return Err(bad());
    }
    Ok((seconds * 1e6).floor() as i64)
}

/// One stored event, as a search answers it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FoundEvent {
    #[serde(serialize_with = "rfc3339_micros")]
    pub ts: DateTime<Utc>,
    pub level: Level,
    pub service: String,
    pub message: String,
    pub user_id: Option<String>,
    pub attrs: serde_json::Value,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl FoundEvent {
    /// A stored event as it will be found (for the tail, which sees events as they commit).
    pub fn of(topic: &str, partition: i32, offset: i64, event: &LogEvent) -> FoundEvent {
        FoundEvent {
            ts: event.ts,
            level: event.level,
            service: event.service.as_str().to_owned(),
            message: event.message.clone(),
            user_id: event.user_id.as_ref().map(|u| u.as_str().to_owned()),
            attrs: serde_json::from_str(event.attrs.as_str()).unwrap_or(serde_json::Value::Null),
            topic: topic.to_owned(),
            partition,
            offset,
        }
    }

    /// The event time from stored microseconds.
    pub fn ts_of_micros(micros: i64) -> DateTime<Utc> {
        Utc.timestamp_micros(micros).single().unwrap_or_default()
    }
}

fn rfc3339_micros<S: serde::Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

/// One page of an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage {
    /// Matching events in search order, at most `limit`.
    pub events: Vec<FoundEvent>,
    /// Where the next page starts; `None` when nothing matching is left.
    pub next_cursor: Option<Cursor>,
    /// The store stopped after examining its scan bound (`SEARCH_MAX_SCAN`) rows: `events` may be
    /// fewer than `limit` although more match further on; `next_cursor` continues from the last
    /// row examined.
    pub truncated: bool,
}

/// Why a store could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchFailed {
    /// The store did not answer (down, or not within its timeout): worth asking again.
    #[error("{0}")]
    Unavailable(String),
    /// The store holds a row that is not an event (a level outside 0..=5, attrs that are not
    /// JSON): asking again gives the same answer; the store needs repair.
    #[error("{0}")]
    Corrupt(String),
}

/// The search port: PostgreSQL and SQLite implement it.
#[async_trait]
pub trait LogSearch: Send + Sync {
    /// One page of matching events in search order.
    async fn search(&self, query: &SearchQuery) -> Result<SearchPage, SearchFailed>;

    /// The stored event at one position, if any.
    async fn event(&self, topic: &str, partition: i32, offset: i64) -> Result<Option<FoundEvent>, SearchFailed>;

    /// What answers name as their `source` (`postgres`, `sqlite`).
    fn source(&self) -> &'static str;
}

impl fmt::Display for LevelFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LevelFilter::Any => f.write_str("any"),
            LevelFilter::Exactly(l) => write!(f, "{l}"),
            LevelFilter::AtLeast(l) => write!(f, "{l}+"),
        }
    }
}
