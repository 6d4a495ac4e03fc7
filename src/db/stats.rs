//! Window statistics computed by PostgreSQL (the authoritative answer), and the consistent snapshot
//! the WindowAggregatorActor rebuilds from. Every user value is a bound parameter.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actors::domain::window_stats::OtherServices;
use actors::ports::{CannotAnswer, StoreError, WindowAnswer, WindowQuery, WindowQuestion};
use actors::windows::{BucketSource, Counts, ErrorStats, KeywordCount, KeywordSet, Rebuilt, ServiceStats, WindowRange};
use async_trait::async_trait;
use diesel::sql_types::{Array, BigInt, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::ranking::{self, RankingCounts, Rankings};
use super::PgPool;

/// A listed service, or (service NULL) the sum of the services after the listed ones.
#[derive(QueryableByName)]
struct RankedRow {
    #[diesel(sql_type = Nullable<Text>)]
    service: Option<String>,
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

/// A keyword and its count (the stats queries and the summary route read this shape).
#[derive(QueryableByName)]
pub(crate) struct KeywordRow {
    #[diesel(sql_type = Text)]
    pub keyword: String,
    #[diesel(sql_type = BigInt)]
    pub count: i64,
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
    newest_ms: i64,
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
    #[diesel(sql_type = diesel::sql_types::Integer)]
    partition: i32,
    #[diesel(sql_type = Text)]
    topic: String,
    #[diesel(sql_type = BigInt)]
    next_offset: i64,
}

#[derive(QueryableByName)]
struct MaybeSecond {
    #[diesel(sql_type = Nullable<BigInt>)]
    second: Option<i64>,
}

/// `work_mem` of the errors query, set for its transaction only: its hash aggregate over 100k
/// services takes ~15 MB (measured, PostgreSQL 15), which the server's 4 MB default (× the hash
/// multiplier, 2) spills to disk. 32 MB keeps ~400k services in memory; it is a bound per query,
/// not an allocation, and the pool (DATABASE_POOL_SIZE, 8) caps how many run at once.
pub(crate) const ERRORS_WORK_MEM: &str = "32MB";

/// Stats queries against `logs`, bounded by a timeout.
#[derive(Clone)]
pub struct PgStats {
    pool: PgPool,
    /// Every topic of `KAFKA_TOPIC`: stats cover them together.
    topics: Vec<String>,
    /// The tracked keywords: the top-keywords answer ranks only these.
    keywords: Arc<KeywordSet>,
    timeout: Duration,
    /// Long windows' per-service counts, kept between questions (see `db::ranking`); None with
    /// `RANKING_KEPT=off`.
    rankings: Option<Arc<Rankings>>,
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl PgStats {
    pub fn new(pool: PgPool, topics: Vec<String>, keywords: Arc<KeywordSet>, timeout: Duration) -> PgStats {
        PgStats { pool, topics, keywords, timeout, rankings: Some(Arc::new(Rankings::new(ranking::PLAIN_PAUSE))) }
    }

    /// Runs `work` on a pooled connection, giving up on the whole (pool wait included) at the timeout;
    /// the pool's connections also carry it as `statement_timeout` (see `db::pool`).
    async fn bounded<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, diesel::result::Error>,
    {
        let ms = self.timeout.as_millis();
        let run = async {
            let mut conn = self.pool.get().await.map_err(failed)?;
            work(&mut conn).await.map_err(failed)
        };
        tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| StoreError::Unavailable(format!("PostgreSQL did not answer within {ms} ms")))?
    }

    /// The window's services ranked in SQL, so that only `limit` rows and the sum of the rest
    /// cross the wire (an hour of 100k services would otherwise be 100k rows). `COLLATE "C"` ranks
    /// ties by bytes, as every other source does.
    ///
    /// The shape is chosen for many services (see docs/BENCHMARKS.md, cardinality): one hash
    /// aggregate per service given `ERRORS_WORK_MEM` so that 100k groups do not spill to disk
    /// (at the default 4 MB: 5 batches and two external-merge sorts), then a top-N heap sort for
    /// the listed services and plain sums for `other`, instead of numbering every service with
    /// a window function (a full sort of all of them). No parallel workers: with few events per
    /// service, each worker's partial aggregate holds nearly every service again (575k rows →
    /// 239k partial groups for 99k services), and sorting and merging those costs more CPU than
    /// the workers save; measured serially the hour of 100k services costs the backend 0.65 CPU
    /// seconds, of which 0.25 are the scan.
    pub async fn errors(
        &self,
        range: WindowRange,
        service: Option<String>,
        limit: usize,
    ) -> Result<ErrorStats, StoreError> {
        if let (Some(rankings), None, true) =
            (self.rankings.clone(), &service, range.to - range.from >= ranking::MIN_WINDOW_SECS)
        {
            if let Some(slot) = rankings.slot(range.to - range.from).filter(|slot| slot.worth_waiting(range)) {
                // Waiting longer than half the bound for the kept counts: the plain query instead.
                if let Ok(mut kept) = tokio::time::timeout(self.timeout / 2, slot.lock()).await {
                    let topics = self.topics.clone();
                    let held = slot.clone();
                    let answer = self
                        .bounded(async move |conn| rankings.answer(&held, conn, &mut kept, &topics, range, limit).await)
                        .await;
                    match answer {
                        Ok(Some(stats)) => return Ok(stats),
                        Ok(None) => {}
                        Err(e) => {
                            // Too slow or failed: the next questions of this length take the plain way.
                            if let Some(rankings) = &self.rankings {
                                rankings.pause(&slot);
                            }
                            return Err(e);
                        }
                    }
                }
            }
        }
        let topics = self.topics.clone();
        let rows: Vec<RankedRow> = self
            .bounded(async move |conn| {
                conn.build_transaction()
                    .read_only()
                    .run(async move |conn| {
                        diesel::sql_query(
                            "SELECT set_config('work_mem', $1, true), \
                                 set_config('max_parallel_workers_per_gather', '0', true)",
                        )
                        .bind::<Text, _>(ERRORS_WORK_MEM)
                        .execute(conn)
                        .await?;
                        diesel::sql_query(
                            "WITH per AS MATERIALIZED (SELECT service, count(*)::bigint AS total, \
                                 count(*) FILTER (WHERE level >= 4)::bigint AS errors \
                                 FROM logs WHERE topic = ANY($1) AND ts >= to_timestamp($2) AND ts < to_timestamp($3) \
                                 AND ($4::text IS NULL OR service = $4) GROUP BY service), \
                             top AS MATERIALIZED (SELECT service, total, errors FROM per \
                                 ORDER BY errors DESC, service COLLATE \"C\" LIMIT $5) \
                             SELECT service, total, errors FROM top \
                             UNION ALL SELECT NULL, \
                                 ((SELECT coalesce(sum(total), 0) FROM per) - (SELECT coalesce(sum(total), 0) FROM top))::bigint, \
                                 ((SELECT coalesce(sum(errors), 0) FROM per) - (SELECT coalesce(sum(errors), 0) FROM top))::bigint",
                        )
                        .bind::<Array<Text>, _>(topics)
                        .bind::<BigInt, _>(range.from)
                        .bind::<BigInt, _>(range.to)
                        .bind::<Nullable<Text>, _>(service)
                        .bind::<BigInt, _>(limit as i64)
                        .load(conn)
                        .await
                    })
                    .await
            })
            .await?;
        let mut listed = Vec::new();
        let mut other = OtherServices::default();
        for row in rows {
            match row.service {
                Some(service) => {
                    listed.push(ServiceStats { service, total: row.total as u64, errors: row.errors as u64 })
                }
                None => other = OtherServices { total: row.total as u64, errors: row.errors as u64 },
            }
        }
        Ok(ErrorStats::listed(listed, other))
    }

    pub async fn keyword(
        &self,
        range: WindowRange,
        keyword: String,
        service: Option<String>,
    ) -> Result<u64, StoreError> {
        let topics = self.topics.clone();
        let row: CountRow = self
            .bounded(async move |conn| {
                    diesel::sql_query(
                        "SELECT count(*)::bigint AS count FROM logs WHERE topic = ANY($1) AND ts >= to_timestamp($2) \
                         AND ts < to_timestamp($3) AND tokens @> ARRAY[$4]::text[] AND ($5::text IS NULL OR service = $5)",
                    )
                    .bind::<Array<Text>, _>(topics)
                    .bind::<BigInt, _>(range.from)
                    .bind::<BigInt, _>(range.to)
                    .bind::<Text, _>(keyword)
                    .bind::<Nullable<Text>, _>(service)
                    .get_result(conn)
                    .await
            })
            .await?;
        Ok(row.count as u64)
    }

    /// The most frequent of `keywords` in the window.
    pub async fn top_keywords(
        &self,
        range: WindowRange,
        keywords: Vec<String>,
        limit: usize,
    ) -> Result<Vec<KeywordCount>, StoreError> {
        let topics = self.topics.clone();
        let rows: Vec<KeywordRow> = self
            .bounded(async move |conn| {
                diesel::sql_query(
                    "SELECT kw AS keyword, count(*)::bigint AS count FROM logs, unnest(tokens) AS kw \
                         WHERE topic = ANY($1) AND ts >= to_timestamp($2) AND ts < to_timestamp($3) \
                         AND tokens && $4 AND kw = ANY($4) GROUP BY kw ORDER BY count DESC, kw LIMIT $5",
                )
                .bind::<Array<Text>, _>(topics)
                .bind::<BigInt, _>(range.from)
                .bind::<BigInt, _>(range.to)
                .bind::<Array<Text>, _>(keywords)
                .bind::<BigInt, _>(limit as i64)
                .load(conn)
                .await
            })
            .await?;
        Ok(rows.into_iter().map(|r| KeywordCount { keyword: r.keyword, count: r.count as u64 }).collect())
    }

    /// Keeps long windows' rankings between questions (the default), or counts every one in full.
    pub fn keeping_rankings(mut self, keep: bool) -> PgStats {
        self.rankings = keep.then(|| Arc::new(Rankings::new(ranking::PLAIN_PAUSE)));
        self
    }

    /// How long a window length whose counts could not be kept (or took too long) is answered by
    /// the plain ranked query before they are tried again (`ranking::PLAIN_PAUSE` unless set).
    pub fn pausing_rankings(mut self, pause: Duration) -> PgStats {
        if self.rankings.is_some() {
            self.rankings = Some(Arc::new(Rankings::new(pause)));
        }
        self
    }

    /// How the long windows' rankings were answered so far.
    pub fn ranking_counts(&self) -> RankingCounts {
        self.rankings.as_ref().map(|r| r.counts()).unwrap_or_default()
    }

    /// True when PostgreSQL answers a trivial query in time.
    pub async fn ping(&self) -> bool {
        self.bounded(async |conn| diesel::sql_query("SELECT 1").execute(conn).await).await.is_ok()
    }
}

/// PostgreSQL as a source of window answers: it holds every stored event, so it fails only by being
/// unreachable or slow.
#[async_trait]
impl WindowQuery for PgStats {
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

/// Rebuilds windows from one REPEATABLE READ snapshot: counts and offsets agree with each other.
pub struct PgBucketSource {
    url: String,
    /// A hung server would otherwise keep the windows rebuilding (and unready) until it wakes.
    timeout: std::time::Duration,
}

/// Default bound on one rebuild (`DATABASE_REBUILD_TIMEOUT_MS`): an hour of a busy topic is a big scan.
pub const DEFAULT_REBUILD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl PgBucketSource {
    pub fn new(url: impl Into<String>) -> PgBucketSource {
        PgBucketSource { url: url.into(), timeout: DEFAULT_REBUILD_TIMEOUT }
    }

    /// Gives up on a rebuild (and drops its connection) after `timeout`; the aggregator retries.
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> PgBucketSource {
        self.timeout = timeout;
        self
    }
}

#[async_trait]
impl BucketSource for PgBucketSource {
    async fn snapshot(
        &self,
        topics: &[String],
        first: i64,
        last: i64,
        keywords: &KeywordSet,
    ) -> Result<Rebuilt, StoreError> {
        let ms = self.timeout.as_millis();
        tokio::time::timeout(self.timeout, self.snapshot_once(topics, first, last, keywords)).await.unwrap_or_else(
            |_| Err(StoreError::Unavailable(format!("rebuilding windows: PostgreSQL did not answer within {ms} ms"))),
        )
    }
}

impl PgBucketSource {
    async fn snapshot_once(
        &self,
        topics: &[String],
        first: i64,
        last: i64,
        keywords: &KeywordSet,
    ) -> Result<Rebuilt, StoreError> {
        let mut conn = AsyncPgConnection::establish(&self.url).await.map_err(failed)?;
        let topics = topics.to_vec();
        let tracked: Vec<String> = keywords.iter().map(|k| k.as_str().to_owned()).collect();
        let keywords = Arc::new(keywords.clone());
        conn.build_transaction()
            .repeatable_read()
            .read_only()
            .run(async move |conn| {
                let offsets: Vec<OffsetRow> = diesel::sql_query(
                    "SELECT topic, \"partition\", next_offset FROM kafka_offsets WHERE topic = ANY($1)",
                )
                .bind::<Array<Text>, _>(&topics)
                .load(conn)
                .await?;
                let seconds: Vec<SecondRow> = diesel::sql_query(
                    "SELECT floor(extract(epoch FROM ts))::bigint AS second, service, count(*)::bigint AS total, \
                         count(*) FILTER (WHERE level >= 4)::bigint AS errors, \
                         floor(extract(epoch FROM max(ts)) * 1000)::bigint AS newest_ms \
                         FROM logs WHERE topic = ANY($1) AND ts >= to_timestamp($2) AND ts < to_timestamp($3) \
                         GROUP BY 1, 2",
                )
                .bind::<Array<Text>, _>(&topics)
                .bind::<BigInt, _>(first)
                .bind::<BigInt, _>(last + 1)
                .load(conn)
                .await?;
                let hits: Vec<SecondKeywordRow> = if tracked.is_empty() {
                    Vec::new()
                } else {
                    diesel::sql_query(
                        "SELECT floor(extract(epoch FROM ts))::bigint AS second, service, kw AS keyword, \
                             count(*)::bigint AS hits FROM logs, unnest(tokens) AS kw \
                             WHERE topic = ANY($1) AND ts >= to_timestamp($2) AND ts < to_timestamp($3) \
                             AND tokens && $4 AND kw = ANY($4) GROUP BY 1, 2, 3",
                    )
                    .bind::<Array<Text>, _>(&topics)
                    .bind::<BigInt, _>(first)
                    .bind::<BigInt, _>(last + 1)
                    .bind::<Array<Text>, _>(&tracked)
                    .load(conn)
                    .await?
                };
                let beyond: MaybeSecond = diesel::sql_query(
                    "SELECT floor(extract(epoch FROM max(ts)))::bigint AS second FROM logs \
                         WHERE topic = ANY($1) AND ts >= to_timestamp($2)",
                )
                .bind::<Array<Text>, _>(&topics)
                .bind::<BigInt, _>(last + 1)
                .get_result(conn)
                .await?;

                let mut rebuilt = Rebuilt {
                    offsets: offsets.into_iter().map(|o| ((o.topic, o.partition), o.next_offset)).collect(),
                    beyond_last: beyond.second,
                    ..Rebuilt::default()
                };
                let mut names: BTreeMap<String, Arc<str>> = BTreeMap::new();
                let mut intern = |s: String| names.entry(s.clone()).or_insert_with(|| Arc::from(s.as_str())).clone();
                for row in seconds {
                    rebuilt.newest_ms = Some(rebuilt.newest_ms.map_or(row.newest_ms, |n| n.max(row.newest_ms)));
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
                    counts.keywords[i] = row.hits as u64;
                }
                Ok::<_, diesel::result::Error>(rebuilt)
            })
            .await
            .map_err(failed)
    }
}
