//! `WindowQuery` and `BucketSource` over SQLite: the window answers memory cannot give, and the
//! buckets memory is rebuilt from. The same questions and answers as `crate::db::stats` on
//! PostgreSQL; times are µs in `logs.ts`, the windows' bounds are seconds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actors::domain::counts::KeywordSet;
use actors::ports::{BucketSource, CannotAnswer, Rebuilt, StoreError, WindowAnswer, WindowQuery, WindowQuestion};
use actors::windows::{Counts, ErrorStats, KeywordCount, ServiceStats, WindowRange};
use async_trait::async_trait;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};

use super::{keywords, SqliteDb};

const MICROS: i64 = 1_000_000;

/// `floor(ts / 1 s)` for any sign of `ts` (SQLite's integer division truncates toward zero).
macro_rules! second_of {
    ($ts:literal) => {
        concat!("((", $ts, " - ((", $ts, " % 1000000) + 1000000) % 1000000) / 1000000)")
    };
}

/// The table `seconds(s)` of the seconds `?from..?to` (a window): `k.second IN (SELECT s FROM
/// seconds) AND k.token = …` makes SQLite look up each second's rows of the token in
/// `log_token_seconds`' key instead of scanning every token of the seconds between.
macro_rules! seconds_cte {
    ($from:literal, $to:literal) => {
        concat!(
            "WITH RECURSIVE seconds(s) AS (SELECT ?",
            $from,
            " WHERE ?",
            $from,
            " < ?",
            $to,
            " UNION ALL SELECT s + 1 FROM seconds WHERE s + 1 < ?",
            $to,
            ") "
        )
    };
}

#[derive(QueryableByName)]
struct SecondSpan {
    #[diesel(sql_type = Nullable<BigInt>)]
    first: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    last: Option<i64>,
}

/// The part of the window `[from, to)` between the oldest and the newest indexed second, so that
/// the per-second lookups walk no empty second outside the stored events (a window may be as long
/// as retention). Two ends of the key; call inside the read transaction of the lookups.
fn indexed_part(conn: &mut SqliteConnection, range: WindowRange) -> diesel::QueryResult<(i64, i64)> {
    let span: SecondSpan = diesel::sql_query(
        "SELECT (SELECT min(second) FROM log_token_seconds) AS first, \
         (SELECT max(second) FROM log_token_seconds) AS last",
    )
    .get_result(conn)?;
    Ok(match (span.first, span.last) {
        (Some(first), Some(last)) => (range.from.max(first), range.to.min(last.saturating_add(1))),
        _ => (0, 0),
    })
}

/// The tail queries read `logs` by its rowid range above the mark: `+l.ts` keeps SQLite from
/// walking `logs_ts` over the whole window instead (the tail is the few rows the indexer has not
/// reached; the window may hold millions).
///
/// The `logs` row `l` (one above the indexer's mark) holds the token bound at `?T` (text), whose
/// JSON quoting ([`keywords::quoted`]) is bound at `?Q`. The substring test is cheap and passes every
/// row that holds the token; `json_each` decides exactly on the few that pass, over the row's
/// tokens as the indexer reads them (`keywords::read_tokens`: a `tokens` that is not a JSON array
/// holds none, a non-text element is none).
macro_rules! tail_has_token {
    ($t:literal, $q:literal) => {
        concat!(
            "(instr(l.tokens, ?",
            $q,
            ") > 0 AND EXISTS (SELECT 1 FROM json_each(",
            keywords::readable_tokens!("l.tokens"),
            ") AS j WHERE j.type = 'text' AND j.value = ?",
            $t,
            "))"
        )
    };
}

/// `topic` is one of the JSON array bound at `?N`.
macro_rules! topic_in {
    ($col:literal, $n:literal) => {
        concat!($col, " IN (SELECT value FROM json_each(?", $n, "))")
    };
}

#[derive(QueryableByName)]
struct ServiceRow {
    #[diesel(sql_type = Text)]
    service: String,
    #[diesel(sql_type = BigInt)]
    total: i64,
    #[diesel(sql_type = BigInt)]
    errors: i64,
}

#[derive(QueryableByName)]
struct CountRow {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

#[derive(QueryableByName)]
struct KeywordRow {
    #[diesel(sql_type = Text)]
    keyword: String,
    #[diesel(sql_type = BigInt)]
    count: i64,
}

#[derive(QueryableByName)]
struct SecondRow {
    #[diesel(sql_type = BigInt)]
    second: i64,
    #[diesel(sql_type = Text)]
    service: String,
    #[diesel(sql_type = BigInt)]
    total: i64,
    #[diesel(sql_type = BigInt)]
    errors: i64,
    #[diesel(sql_type = BigInt)]
    newest_us: i64,
}

#[derive(QueryableByName)]
struct SecondKeywordRow {
    #[diesel(sql_type = BigInt)]
    second: i64,
    #[diesel(sql_type = Text)]
    service: String,
    #[diesel(sql_type = Text)]
    keyword: String,
    #[diesel(sql_type = BigInt)]
    hits: i64,
}

#[derive(QueryableByName)]
struct OffsetRow {
    #[diesel(sql_type = Text)]
    topic: String,
    #[diesel(sql_type = Integer)]
    partition: i32,
    #[diesel(sql_type = BigInt)]
    next_offset: i64,
}

#[derive(QueryableByName)]
struct MaybeSecond {
    #[diesel(sql_type = Nullable<BigInt>)]
    second: Option<i64>,
}

fn json_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    serde_json::Value::from(items.into_iter().collect::<Vec<_>>()).to_string()
}

/// Bounds a read: the blocking thread finishes its statement, but the caller stops waiting.
pub(super) async fn bounded<T, F>(db: &SqliteDb, timeout: Duration, what: &str, work: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut SqliteConnection) -> diesel::QueryResult<T> + Send + 'static,
{
    tokio::time::timeout(timeout, db.read(work)).await.unwrap_or_else(|_| {
        Err(StoreError::Unavailable(format!("{what}: SQLite did not answer within {} ms", timeout.as_millis())))
    })
}

/// Stats queries against `logs` (and its keyword index `log_token_seconds`), bounded by a timeout.
#[derive(Clone)]
pub struct SqliteStats {
    db: SqliteDb,
    /// Every topic of `KAFKA_TOPIC`: stats cover them together.
    topics: Vec<String>,
    /// The tracked keywords: the top-keywords answer ranks only these.
    keywords: Arc<KeywordSet>,
    timeout: Duration,
}

impl SqliteStats {
    pub fn new(db: SqliteDb, topics: Vec<String>, keywords: Arc<KeywordSet>, timeout: Duration) -> SqliteStats {
        SqliteStats { db, topics, keywords, timeout }
    }

    fn topics_json(&self) -> String {
        json_list(self.topics.iter().map(String::as_str))
    }

    pub async fn errors(
        &self,
        range: WindowRange,
        service: Option<String>,
        limit: usize,
    ) -> Result<ErrorStats, StoreError> {
        let topics = self.topics_json();
        let only = service.clone();
        let rows: Vec<ServiceRow> = bounded(&self.db, self.timeout, "errors", move |conn| {
            diesel::sql_query(concat!(
                "SELECT service, count(*) AS total, coalesce(sum(level >= 4), 0) AS errors FROM logs \
                 WHERE ts >= ?2 AND ts < ?3 AND ",
                topic_in!("topic", 1),
                " AND (?4 IS NULL OR service = ?4) GROUP BY service"
            ))
            .bind::<Text, _>(topics)
            .bind::<BigInt, _>(range.from.saturating_mul(MICROS))
            .bind::<BigInt, _>(range.to.saturating_mul(MICROS))
            .bind::<Nullable<Text>, _>(only)
            .load(conn)
        })
        .await?;
        Ok(ErrorStats::from_services(
            rows.into_iter().map(|r| ServiceStats {
                service: r.service,
                total: r.total as u64,
                errors: r.errors as u64,
            }),
            service.as_deref(),
            limit,
        ))
    }

    /// Events of the window whose tokens hold `keyword`: the counts of the indexed rows, plus the
    /// rows above the indexer's mark, in one snapshot.
    pub async fn keyword(
        &self,
        range: WindowRange,
        keyword: String,
        service: Option<String>,
    ) -> Result<u64, StoreError> {
        let topics = self.topics_json();
        let count: i64 = bounded(&self.db, self.timeout, "keyword", move |conn| {
            conn.transaction(|conn| {
                let mark = keywords::mark(conn)?;
                let (from, to) = indexed_part(conn, range)?;
                let indexed: CountRow = diesel::sql_query(concat!(
                    seconds_cte!(3, 4),
                    "SELECT coalesce(sum(k.events), 0) AS count FROM log_token_seconds AS k \
                     WHERE k.second IN (SELECT s FROM seconds) AND k.token = ?2 AND ",
                    topic_in!("k.topic", 1),
                    " AND (?5 IS NULL OR k.service = ?5)"
                ))
                .bind::<Text, _>(&topics)
                .bind::<Text, _>(&keyword)
                .bind::<BigInt, _>(from)
                .bind::<BigInt, _>(to)
                .bind::<Nullable<Text>, _>(&service)
                .get_result(conn)?;
                let tail: CountRow = diesel::sql_query(concat!(
                    "SELECT count(*) AS count FROM logs AS l WHERE l.rowid > ?1 AND +l.ts >= ?2 AND +l.ts < ?3 AND ",
                    topic_in!("l.topic", 4),
                    " AND (?5 IS NULL OR l.service = ?5) AND ",
                    tail_has_token!(6, 7)
                ))
                .bind::<BigInt, _>(mark.rowid)
                .bind::<BigInt, _>(range.from.saturating_mul(MICROS))
                .bind::<BigInt, _>(range.to.saturating_mul(MICROS))
                .bind::<Text, _>(&topics)
                .bind::<Nullable<Text>, _>(&service)
                .bind::<Text, _>(&keyword)
                .bind::<Text, _>(keywords::quoted(&keyword))
                .get_result(conn)?;
                Ok(indexed.count + tail.count)
            })
        })
        .await?;
        Ok(count as u64)
    }

    /// The most frequent of `keywords` in the window, by count then keyword bytes: the indexed
    /// counts plus the rows above the indexer's mark, in one snapshot.
    pub async fn top_keywords(
        &self,
        range: WindowRange,
        keywords: Vec<String>,
        limit: usize,
    ) -> Result<Vec<KeywordCount>, StoreError> {
        let topics = self.topics_json();
        let tracked = json_list(keywords.iter().map(String::as_str));
        let rows: Vec<KeywordRow> = bounded(&self.db, self.timeout, "top keywords", move |conn| {
            conn.transaction(|conn| {
                let mark = keywords::mark(conn)?;
                let (from, to) = indexed_part(conn, range)?;
                let mut rows: Vec<KeywordRow> = diesel::sql_query(concat!(
                    seconds_cte!(3, 4),
                    "SELECT k.token AS keyword, sum(k.events) AS count FROM log_token_seconds AS k \
                     WHERE k.second IN (SELECT s FROM seconds) AND k.token IN (SELECT value FROM json_each(?2)) AND ",
                    topic_in!("k.topic", 1),
                    " GROUP BY k.token"
                ))
                .bind::<Text, _>(&topics)
                .bind::<Text, _>(&tracked)
                .bind::<BigInt, _>(from)
                .bind::<BigInt, _>(to)
                .load(conn)?;
                rows.extend(
                    diesel::sql_query(concat!(
                        "SELECT t.value AS keyword, count(DISTINCT l.rowid) AS count FROM logs AS l, json_each(",
                        keywords::readable_tokens!("l.tokens"),
                        ") AS t WHERE l.rowid > ?1 AND +l.ts >= ?2 AND +l.ts < ?3 AND t.type = 'text' AND ",
                        topic_in!("l.topic", 4),
                        " AND t.value IN (SELECT value FROM json_each(?5)) GROUP BY t.value"
                    ))
                    .bind::<BigInt, _>(mark.rowid)
                    .bind::<BigInt, _>(range.from.saturating_mul(MICROS))
                    .bind::<BigInt, _>(range.to.saturating_mul(MICROS))
                    .bind::<Text, _>(&topics)
                    .bind::<Text, _>(&tracked)
                    .load::<KeywordRow>(conn)?,
                );
                Ok(rows)
            })
        })
        .await?;
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for row in rows {
            *counts.entry(row.keyword).or_default() += row.count as u64;
        }
        Ok(actors::windows::stats::top_keywords(
            counts.into_iter().map(|(keyword, count)| KeywordCount { keyword, count }),
            limit,
        ))
    }

    /// True when SQLite answers a trivial query in time.
    pub async fn ping(&self) -> bool {
        bounded(&self.db, self.timeout, "ping", |conn| diesel::sql_query("SELECT 1").execute(conn)).await.is_ok()
    }
}

/// SQLite as a source of window answers: it holds every stored event, so it fails only by being
/// locked, broken or slow.
#[async_trait]
impl WindowQuery for SqliteStats {
    async fn answer(&self, question: &WindowQuestion) -> Result<WindowAnswer, CannotAnswer> {
        let answer = match question.clone() {
            WindowQuestion::Errors { range, service, limit } => {
                self.errors(range, service, limit).await.map(WindowAnswer::Errors)
            }
            WindowQuestion::Keyword { range, keyword, service } => {
                self.keyword(range, keyword.as_str().to_owned(), service).await.map(WindowAnswer::Keyword)
            }
            WindowQuestion::TopKeywords { range, limit } => {
                let tracked: Vec<String> = self.keywords.iter().map(|k| k.as_str().to_owned()).collect();
                self.top_keywords(range, tracked, limit).await.map(WindowAnswer::TopKeywords)
            }
        };
        answer.map_err(|e| CannotAnswer::Unavailable(e.to_string()))
    }
}

/// Rebuilds windows from one read transaction: under WAL it sees one snapshot, so counts and
/// offsets agree with each other whatever the writer (and the keyword indexer) commits meanwhile;
/// keyword hits are the indexed counts plus the rows above the indexer's mark.
pub struct SqliteBucketSource {
    db: SqliteDb,
    timeout: Duration,
}

impl SqliteBucketSource {
    pub fn new(db: SqliteDb) -> SqliteBucketSource {
        SqliteBucketSource { db, timeout: crate::db::stats::DEFAULT_REBUILD_TIMEOUT }
    }

    /// Gives up waiting for a rebuild after `timeout`; the aggregator retries.
    pub fn with_timeout(mut self, timeout: Duration) -> SqliteBucketSource {
        self.timeout = timeout;
        self
    }
}

#[async_trait]
impl BucketSource for SqliteBucketSource {
    async fn snapshot(
        &self,
        topics: &[String],
        first: i64,
        last: i64,
        keywords: &KeywordSet,
    ) -> Result<Rebuilt, StoreError> {
        let topics = json_list(topics.iter().map(String::as_str));
        let tracked = json_list(keywords.iter().map(|k| k.as_str()));
        let any_tracked = keywords.iter().next().is_some();
        let keywords = keywords.clone();
        let (from_us, to_us) = (first.saturating_mul(MICROS), last.saturating_add(1).saturating_mul(MICROS));
        bounded(&self.db, self.timeout, "rebuilding windows", move |conn| {
            conn.transaction(|conn| {
                let mark = keywords::mark(conn)?;
                let offsets: Vec<OffsetRow> = diesel::sql_query(concat!(
                    "SELECT topic, \"partition\", next_offset FROM kafka_offsets WHERE ",
                    topic_in!("topic", 1)
                ))
                .bind::<Text, _>(&topics)
                .load(conn)?;
                let seconds: Vec<SecondRow> = diesel::sql_query(concat!(
                    "SELECT ",
                    second_of!("ts"),
                    " AS second, service, count(*) AS total, coalesce(sum(level >= 4), 0) AS errors, \
                     max(ts) AS newest_us FROM logs WHERE ts >= ?2 AND ts < ?3 AND ",
                    topic_in!("topic", 1),
                    " GROUP BY 1, 2"
                ))
                .bind::<Text, _>(&topics)
                .bind::<BigInt, _>(from_us)
                .bind::<BigInt, _>(to_us)
                .load(conn)?;
                let mut hits: Vec<SecondKeywordRow> = if any_tracked {
                    diesel::sql_query(concat!(
                        // One range of the key: the rebuild reads every second of it from `logs` too.
                        "SELECT k.second AS second, k.service AS service, k.token AS keyword, sum(k.events) AS hits \
                         FROM log_token_seconds AS k \
                         WHERE k.second >= ?3 AND k.second < ?4 AND k.token IN (SELECT value FROM json_each(?2)) AND ",
                        topic_in!("k.topic", 1),
                        " GROUP BY 1, 2, 3"
                    ))
                    .bind::<Text, _>(&topics)
                    .bind::<Text, _>(&tracked)
                    .bind::<BigInt, _>(first)
                    .bind::<BigInt, _>(last.saturating_add(1))
                    .load(conn)?
                } else {
                    Vec::new()
                };
                if any_tracked {
                    // The rows above the indexer's mark, counted from their tokens.
                    hits.extend(
                        diesel::sql_query(concat!(
                            "SELECT ",
                            second_of!("l.ts"),
                            " AS second, l.service AS service, t.value AS keyword, count(DISTINCT l.rowid) AS hits \
                             FROM logs AS l, json_each(",
                            keywords::readable_tokens!("l.tokens"),
                            ") AS t WHERE l.rowid > ?4 AND +l.ts >= ?2 AND +l.ts < ?3 AND t.type = 'text' AND ",
                            topic_in!("l.topic", 1),
                            " AND t.value IN (SELECT value FROM json_each(?5)) GROUP BY 1, 2, 3"
                        ))
                        .bind::<Text, _>(&topics)
                        .bind::<BigInt, _>(from_us)
                        .bind::<BigInt, _>(to_us)
                        .bind::<BigInt, _>(mark.rowid)
                        .bind::<Text, _>(&tracked)
                        .load::<SecondKeywordRow>(conn)?,
                    );
                }
                let beyond: MaybeSecond = diesel::sql_query(concat!(
                    "SELECT ",
                    second_of!("max(ts)"),
                    " AS second FROM logs WHERE ts >= ?2 AND ",
                    topic_in!("topic", 1)
                ))
                .bind::<Text, _>(&topics)
                .bind::<BigInt, _>(to_us)
                .get_result(conn)?;

                let mut rebuilt = Rebuilt {
                    offsets: offsets.into_iter().map(|o| ((o.topic, o.partition), o.next_offset)).collect(),
                    beyond_last: beyond.second,
                    ..Rebuilt::default()
                };
                let mut names: BTreeMap<String, Arc<str>> = BTreeMap::new();
                let mut intern = |s: String| names.entry(s.clone()).or_insert_with(|| Arc::from(s.as_str())).clone();
                for row in seconds {
                    let newest_ms = row.newest_us.div_euclid(1_000);
                    rebuilt.newest_ms = Some(rebuilt.newest_ms.map_or(newest_ms, |n| n.max(newest_ms)));
                    let counts = rebuilt
                        .seconds
                        .entry(row.second)
                        .or_default()
                        .by_service
                        .entry(intern(row.service))
                        .or_default();
                    counts.total = row.total as u64;
                    counts.errors = row.errors as u64;
                }
                for row in hits {
                    let Some(i) = keywords.position(&row.keyword) else { continue };
                    let counts: &mut Counts = rebuilt
                        .seconds
                        .entry(row.second)
                        .or_default()
                        .by_service
                        .entry(intern(row.service))
                        .or_default();
                    counts.keywords.resize(keywords.len(), 0);
                    counts.keywords[i] += row.hits as u64;
                }
                Ok(rebuilt)
            })
        })
        .await
    }
}
