//! Log search on PostgreSQL (DESIGN §13): the `LogSearch` port over `logs`, bounded twice: by
//! `DATABASE_TIMEOUT_MS` (as every query of the read path) and by `SEARCH_MAX_SCAN`, the most rows
//! one page may examine.
//!
//! How a page is found (measured on 2M generated rows, see README's search section and the
//! migration `search_indexes`):
//!
//! 1. Newest first along `logs_newest` (the search order itself, the cursor an index condition),
//!    each row tested against the filter, for at most [`FIRST_SCAN_PER_EVENT`] rows per event asked. A common term, a service,
//!    a level or no filter at all fill a page here after a few hundred or thousand rows.
//! 2. Still short of a page and some token required: the GIN on `tokens` lists the rows holding the
//!    required tokens after where step 1 stopped, at most [`PROBE`] of them. When they are all there
//!    are, the page is the newest of them and it is complete: a rare token (or one in no row) costs
//!    its own rows, never a walk through millions that do not hold it. The planner is kept off
//!    sequential and ordered scans for this step: it would otherwise read a common token's table
//!    in full to produce an unordered LIMIT.
//! 3. More than [`PROBE`] rows hold the tokens, yet few enough are new that step 1 found no page:
//!    back to the ts order from where step 1 stopped, for what is left of `SEARCH_MAX_SCAN`.
//!
//! A page that stopped at the bound says `truncated` and its cursor is the last row examined, so
//! following cursors covers the whole range and skips nothing.

use std::time::Duration;

use actors::search::{Cursor, FoundEvent, LevelFilter, LogSearch, SearchFailed, SearchPage, SearchQuery};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::query_builder::BoxedSqlQuery;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, SmallInt, Text, Timestamptz};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

use super::PgPool;
use crate::search_rows::{pg_columns, EventRow};

/// Rows step 1 examines per event of the page (and never more than a quarter of
/// `SEARCH_MAX_SCAN`): a token in 1 % of rows fills a page of 100 after about 10,000 rows, so
/// 200 per event leaves room for chance; what is rarer goes to the GIN.
pub const FIRST_SCAN_PER_EVENT: u64 = 200;
/// Rows holding the required tokens that step 2 takes at most (half of what step 1 left of
/// `SEARCH_MAX_SCAN` when that is less).
pub const PROBE: u64 = 20_000;

/// Default of `SEARCH_MAX_SCAN`.
pub const DEFAULT_MAX_SCAN: u64 = 100_000;

const ORDER: &str = "ts DESC, \"partition\" DESC, \"offset\" DESC, topic COLLATE \"C\" DESC";

/// Search over `logs`, bounded by a timeout and a scan budget.
#[derive(Clone)]
pub struct PgLogSearch {
    pool: PgPool,
    timeout: Duration,
    max_scan: u64,
}

/// A row's place in the search order.
#[derive(Debug, Clone, PartialEq)]
struct Position {
    ts: DateTime<Utc>,
    partition: i32,
    offset: i64,
    topic: String,
}

impl Position {
    fn cursor(&self) -> Cursor {
        Cursor {
            ts_micros: self.ts.timestamp_micros(),
            partition: self.partition,
            offset: self.offset,
            topic: self.topic.clone(),
        }
    }

    fn of(cursor: &Cursor) -> Position {
        Position {
            ts: FoundEvent::ts_of_micros(cursor.ts_micros),
            partition: cursor.partition,
            offset: cursor.offset,
            topic: cursor.topic.clone(),
        }
    }
}

#[derive(QueryableByName)]
struct ScannedRow {
    #[diesel(sql_type = Timestamptz)]
    ts: DateTime<Utc>,
    #[diesel(sql_type = Integer)]
    partition: i32,
    #[diesel(sql_type = BigInt)]
    offset: i64,
    #[diesel(sql_type = Text)]
    topic: String,
    #[diesel(sql_type = Bool)]
    matched: bool,
    /// 1-based place in the scan.
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct ProbedRow {
    /// Rows holding the required tokens, up to the probe's bound + 1.
    #[diesel(sql_type = BigInt)]
    hits: i64,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    ts: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Integer>)]
    partition: Option<i32>,
    #[diesel(sql_type = Nullable<BigInt>)]
    offset: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    topic: Option<String>,
}

/// A value bound to a `$n` of a statement built at run time.
enum Bind {
    Text(String),
    Texts(Vec<String>),
    SmallInts(Vec<i16>),
    Int(i32),
    BigInt(i64),
    Ts(DateTime<Utc>),
}

/// SQL text and its binds, numbered as they are added.
#[derive(Default)]
struct Statement {
    binds: Vec<Bind>,
}

impl Statement {
    fn bind(&mut self, value: Bind) -> String {
        self.binds.push(value);
        format!("${}", self.binds.len())
    }

    fn query(self, sql: String) -> BoxedSqlQuery<'static, Pg, diesel::query_builder::SqlQuery> {
        let mut query = diesel::sql_query(sql).into_boxed::<Pg>();
        for bind in self.binds {
            query = match bind {
                Bind::Text(v) => query.bind::<Text, _>(v),
                Bind::Texts(v) => query.bind::<Array<Text>, _>(v),
                Bind::SmallInts(v) => query.bind::<Array<SmallInt>, _>(v),
                Bind::Int(v) => query.bind::<Integer, _>(v),
                Bind::BigInt(v) => query.bind::<BigInt, _>(v),
                Bind::Ts(v) => query.bind::<Timestamptz, _>(v),
            };
        }
        query
    }

    /// `[from, to)` and strictly after `after` in the search order.
    fn range(&mut self, query: &SearchQuery, after: Option<&Position>) -> Vec<String> {
        let mut conditions = Vec::new();
        if let Some(from) = query.from_micros {
            conditions.push(format!("ts >= {}", self.bind(Bind::Ts(FoundEvent::ts_of_micros(from)))));
        }
        if let Some(to) = query.to_micros {
            conditions.push(format!("ts < {}", self.bind(Bind::Ts(FoundEvent::ts_of_micros(to)))));
        }
        if let Some(p) = after {
            let (ts, partition, offset, topic) = (
                self.bind(Bind::Ts(p.ts)),
                self.bind(Bind::Int(p.partition)),
                self.bind(Bind::BigInt(p.offset)),
                self.bind(Bind::Text(p.topic.clone())),
            );
            // Written as one row comparison, in the index's column order: the index condition.
            conditions.push(format!(
                "(ts, \"partition\", \"offset\", topic COLLATE \"C\") < ({ts}, {partition}, {offset}, {topic})"
            ));
        }
        conditions
    }

    /// The filter's conditions; `with_include` false leaves out the required tokens (step 2's
    /// index condition states them).
    fn filter(&mut self, query: &SearchQuery, with_include: bool) -> Vec<String> {
        let f = &query.filter;
        let mut conditions = Vec::new();
        if with_include && !f.include.is_empty() {
            conditions.push(format!("tokens @> {}::text[]", self.bind(Bind::Texts(f.include.clone()))));
        }
        if !f.exclude.is_empty() {
            conditions.push(format!("NOT (tokens && {}::text[])", self.bind(Bind::Texts(f.exclude.clone()))));
        }
        if let Some(service) = &f.service {
            conditions.push(format!("service = {}", self.bind(Bind::Text(service.clone()))));
        }
        if f.levels != LevelFilter::Any {
            conditions.push(format!("level = ANY({}::smallint[])", self.bind(Bind::SmallInts(f.levels.numbers()))));
        }
        conditions
    }
}

fn all(conditions: &[String]) -> String {
    if conditions.is_empty() {
        "true".to_owned()
    } else {
        conditions.join(" AND ")
    }
}

/// What one ts-ordered step found.
struct Scanned {
    matches: Vec<Position>,
    /// The last row examined, when the step stopped at its bound (else the range is done).
    stopped_at: Option<Position>,
}

fn failed(e: impl std::fmt::Display) -> SearchFailed {
    SearchFailed::Unavailable(format!("PostgreSQL: {e}"))
}

impl PgLogSearch {
    /// `max_scan` (`SEARCH_MAX_SCAN`, at least 1): the most rows one page examines.
    pub fn new(pool: PgPool, timeout: Duration, max_scan: u64) -> PgLogSearch {
        PgLogSearch { pool, timeout, max_scan: max_scan.max(1) }
    }

    /// Up to `want` matches newest first after `after`, examining at most `bound` rows; the
    /// `bound`-th row comes back as well (matching or not), as where the step stopped.
    async fn scan(
        conn: &mut AsyncPgConnection,
        query: &SearchQuery,
        after: Option<&Position>,
        bound: u64,
        want: usize,
    ) -> Result<Scanned, diesel::result::Error> {
        let mut st = Statement::default();
        let range = all(&st.range(query, after));
        let matched = all(&st.filter(query, true));
        let bound_param = st.bind(Bind::BigInt(bound as i64));
        let want_param = st.bind(Bind::BigInt(want as i64 + 1));
        // The LIMIT inside is the bound; the one outside stops the walk as soon as the page is
        // full (the bound-th row is one of the rows it counts, hence want + 1).
        let sql = format!(
            "SELECT ts, \"partition\", \"offset\", topic, matched, n FROM ( \
                 SELECT ts, \"partition\", \"offset\", topic, ({matched}) AS matched, row_number() OVER () AS n \
                 FROM (SELECT ts, \"partition\", \"offset\", topic, level, service, tokens FROM logs \
                       WHERE {range} ORDER BY {ORDER} LIMIT {bound_param}) walked \
             ) numbered WHERE matched OR n = {bound_param} LIMIT {want_param}"
        );
        let mut rows: Vec<ScannedRow> = st.query(sql).load(conn).await?;
        rows.sort_by_key(|r| r.n);
        let mut scanned = Scanned { matches: Vec::new(), stopped_at: None };
        for row in rows {
            let at_bound = row.n == bound as i64;
            let position = Position { ts: row.ts, partition: row.partition, offset: row.offset, topic: row.topic };
            if at_bound {
                scanned.stopped_at = Some(position.clone());
            }
            if row.matched {
                scanned.matches.push(position);
            }
        }
        Ok(scanned)
    }

    /// The newest `want` matches after `after` among the rows holding the required tokens, when
    /// at most `probe` rows do (`None` when more do: the caller goes back to the ts order).
    async fn probe(
        conn: &mut AsyncPgConnection,
        query: &SearchQuery,
        after: Option<&Position>,
        probe: u64,
        want: usize,
    ) -> Result<Option<Vec<Position>>, diesel::result::Error> {
        let mut st = Statement::default();
        let include = st.bind(Bind::Texts(query.filter.include.clone()));
        let mut range = st.range(query, after);
        range.insert(0, format!("tokens @> {include}::text[]"));
        let range = all(&range);
        let rest = all(&st.filter(query, false));
        let probe_param = st.bind(Bind::BigInt(probe as i64 + 1));
        let want_param = st.bind(Bind::BigInt(want as i64));
        let sql = format!(
            "WITH holding AS MATERIALIZED ( \
                 SELECT ts, \"partition\", \"offset\", topic, level, service, tokens FROM logs \
                 WHERE {range} LIMIT {probe_param}) \
             SELECT c.hits, m.ts, m.\"partition\", m.\"offset\", m.topic \
             FROM (SELECT count(*)::bigint AS hits FROM holding) c \
             LEFT JOIN LATERAL (SELECT ts, \"partition\", \"offset\", topic FROM holding WHERE {rest} \
                                ORDER BY {ORDER} LIMIT {want_param}) m ON true"
        );
        conn.batch_execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = off").await?;
        let rows: Vec<ProbedRow> = st.query(sql).load(conn).await?;
        conn.batch_execute("SET LOCAL enable_seqscan = on; SET LOCAL enable_indexscan = on").await?;
        if <[ProbedRow]>::first(&rows).is_none_or(|r| r.hits as u64 > probe) {
            return Ok(None);
        }
        let mut found: Vec<Position> = rows
            .into_iter()
            .filter_map(|r| Some(Position { ts: r.ts?, partition: r.partition?, offset: r.offset?, topic: r.topic? }))
            .collect();
        // The SQL ordered them already; the tie on topic is bytewise in both.
        found.sort_by(|a, b| {
            (b.ts, b.partition, b.offset, b.topic.as_bytes()).cmp(&(a.ts, a.partition, a.offset, a.topic.as_bytes()))
        });
        Ok(Some(found))
    }

    /// The stored rows at `positions`, in that order.
    async fn fetch(
        conn: &mut AsyncPgConnection,
        positions: &[Position],
    ) -> Result<Vec<EventRow>, diesel::result::Error> {
        if positions.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<EventRow> = diesel::sql_query(format!(
            "SELECT {} FROM unnest($1::timestamptz[], $2::integer[], $3::bigint[], $4::text[]) AS k(ts, p, o, t) \
             JOIN logs l ON l.ts = k.ts AND l.\"partition\" = k.p AND l.\"offset\" = k.o AND l.topic = k.t",
            pg_columns("l.")
        ))
        .bind::<Array<Timestamptz>, _>(positions.iter().map(|p| p.ts).collect::<Vec<_>>())
        .bind::<Array<Integer>, _>(positions.iter().map(|p| p.partition).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(positions.iter().map(|p| p.offset).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(positions.iter().map(|p| p.topic.clone()).collect::<Vec<_>>())
        .load(conn)
        .await?;
        let mut in_order: Vec<Option<EventRow>> = positions.iter().map(|_| None).collect();
        for row in rows {
            let at = positions.iter().position(|p| {
                p.ts.timestamp_micros() == row.ts
                    && p.partition == row.partition
                    && p.offset == row.offset
                    && p.topic == row.topic
            });
            if let Some(i) = at {
                in_order[i].get_or_insert(row);
            }
        }
        Ok(in_order.into_iter().flatten().collect())
    }

    /// The three steps of the module's comment, on one REPEATABLE READ snapshot.
    async fn page(
        conn: &mut AsyncPgConnection,
        query: &SearchQuery,
        max_scan: u64,
    ) -> Result<(Vec<EventRow>, Option<Cursor>, bool), diesel::result::Error> {
        let limit = query.limit;
        let mut after = query.after.as_ref().map(Position::of);
        let mut found: Vec<Position> = Vec::new();
        let mut budget = max_scan;
        let has_tokens = !query.filter.include.is_empty();
        // Without a required token the GIN cannot help: the whole budget goes to the ts order.
        let first =
            if has_tokens { (FIRST_SCAN_PER_EVENT * (limit as u64 + 1)).min((budget / 4).max(1)) } else { budget };
        let mut outcome = Self::scan(conn, query, after.as_ref(), first, limit - found.len()).await?;
        budget -= first;
        found.append(&mut outcome.matches);
        if found.len() <= limit && outcome.stopped_at.is_some() && has_tokens && budget > 1 {
            after = outcome.stopped_at.clone();
            let probe = (budget / 2).clamp(1, PROBE);
            match Self::probe(conn, query, after.as_ref(), probe, limit + 1 - found.len()).await? {
                Some(mut rest) => {
                    found.append(&mut rest);
                    outcome.stopped_at = None;
                }
                // The budget spent, the page ends where step 1 stopped (still `outcome.stopped_at`).
                None if budget <= probe + 1 => {}
                None => {
                    budget -= probe + 1;
                    outcome = Self::scan(conn, query, after.as_ref(), budget, limit - found.len()).await?;
                    found.append(&mut outcome.matches);
                }
            }
        }
        let (next, truncated) = if found.len() > limit {
            found.truncate(limit);
            (found.last().map(Position::cursor), false)
        } else {
            match outcome.stopped_at {
                Some(last_examined) => (Some(last_examined.cursor()), true),
                None => (None, false),
            }
        };
        let rows = Self::fetch(conn, &found).await?;
        Ok((rows, next, truncated))
    }

    async fn bounded<T, F>(&self, work: F) -> Result<T, SearchFailed>
    where
        F: AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, diesel::result::Error>,
    {
        let ms = self.timeout.as_millis();
        let run = async {
            let mut conn = self.pool.get().await.map_err(failed)?;
            work(&mut conn).await.map_err(failed)
        };
        tokio::time::timeout(self.timeout, run).await.map_err(|_| {
            SearchFailed::Unavailable(format!(
                "PostgreSQL did not answer within {ms} ms (DATABASE_TIMEOUT_MS); narrow the search with from/to, service or a rarer term"
            ))
        })?
    }
}

#[async_trait]
impl LogSearch for PgLogSearch {
    async fn search(&self, query: &SearchQuery) -> Result<SearchPage, SearchFailed> {
        let (query, max_scan) = (query.clone(), self.max_scan);
        let (rows, next_cursor, truncated) = self
            .bounded(async move |conn| {
                conn.build_transaction()
                    .repeatable_read()
                    .read_only()
                    .run(async move |conn| Self::page(conn, &query, max_scan).await)
                    .await
            })
            .await?;
        let events = rows.into_iter().map(EventRow::found).collect::<Result<_, _>>()?;
        Ok(SearchPage { events, next_cursor, truncated })
    }

    async fn event(&self, topic: &str, partition: i32, offset: i64) -> Result<Option<FoundEvent>, SearchFailed> {
        let topic = topic.to_owned();
        let rows: Vec<EventRow> = self
            .bounded(async move |conn| {
                diesel::sql_query(format!(
                    "SELECT {} FROM logs WHERE topic = $1 AND \"partition\" = $2 AND \"offset\" = $3 LIMIT 1",
                    pg_columns("")
                ))
                .bind::<Text, _>(topic)
                .bind::<Integer, _>(partition)
                .bind::<BigInt, _>(offset)
                .load(conn)
                .await
            })
            .await?;
        rows.into_iter().next().map(EventRow::found).transpose()
    }

    fn source(&self) -> &'static str {
        "postgres"
    }
}
