//! `LogSearch` over SQLite (the embedded mode's `GET /logs`): the same answers as the core's
//! `Filter::matches_row`, in the core's order (ts, partition, offset, topic, all descending), pages
//! continuing strictly after a keyset cursor.
//!
//! No index of its own is written for it. A query with required tokens walks the seconds backwards
//! through the keyword index `log_token_seconds` (which seconds hold every required token, for the
//! service if one is asked), and reads only those seconds' rows through `logs_ts`; a query without
//! one reads `logs_ts` backwards. Either way the rows' JSON `tokens` decide, so the index only has
//! to say where a match may be, never what matches.
//!
//! Chosen over FTS5 on 1M rows (docs/BENCHMARKS.md, "SQLite search"), equally exact: FTS5 cost the
//! embedded writer 17–39 % of its events/s (a posting per token of each event, in the writer's
//! transaction, where #15 has ingest short of its target already) and was 25–60 × slower on a
//! common token (every posting sorted by time before the first page); it was 3–5 × faster on a rare
//! one, whose cost here is the rows of the seconds holding it. The per-second counts are written
//! anyway and answer "which seconds" by one key lookup per second.
//!
//! The keyword index counts the rows up to the indexer's mark only (`super::keywords`): the rows
//! above it (the tail, written but not yet indexed) are read in the same snapshot, checked by the
//! same row test, and the seconds of those that match are walked as well, so a page is as exact
//! while the indexer is behind as after. That read is not bounded by `max_scan`: its size is the
//! indexer's lag, which the indexer brings back to zero.
//!
//! `max_scan` bounds the work of one page: every `logs` row read and every second walked past
//! (one that cannot hold a match) counts one. At the bound the page ends `truncated`, its cursor at
//! the last row (or second) examined.

use std::sync::Arc;
use std::time::Duration;

use actors::domain::Level;
use actors::search::{Cursor, FoundEvent, LevelFilter, LogSearch, SearchFailed, SearchPage, SearchQuery};
use async_trait::async_trait;
use diesel::sql_types::{BigInt, Bool, Integer, Nullable, Text};
use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};

use std::collections::BTreeSet;

use diesel::connection::DefaultLoadingMode;

use super::keywords::{self, second_of};
use super::stats::bounded;
use super::SqliteDb;
use crate::search_rows::EventRow;

const MICROS: i64 = 1_000_000;

/// `DATABASE_TIMEOUT_MS`' default, until [`SqliteLogSearch::with_timeout`] says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Seconds walked per statement of the token plan: enough to spread a statement's cost, few enough
/// that a page that fills early has not walked far past its last event.
const SECONDS_PER_WALK: i64 = 256;

/// Rows of the first read of a range, per event asked; each further read of the same range doubles,
/// so a rare match costs few statements and a common one reads little past the page.
const ROWS_PER_EVENT_FIRST: usize = 4;

/// Above every topic name: topics are Kafka names (`[a-zA-Z0-9._-]`), all below `~`. With the
/// largest partition and offset it makes the position just after every event of a second (see
/// [`Position::end_of_second_before`]).
const TOPIC_ABOVE_ALL: &str = "~";

/// A place in the search order; the next rows are strictly after (older than) it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    ts: i64,
    partition: i32,
    offset: i64,
    topic: String,
}

impl Position {
    fn of_cursor(c: &Cursor) -> Position {
        Position { ts: c.ts_micros, partition: c.partition, offset: c.offset, topic: c.topic.clone() }
    }

    /// Past every event of `second` and after: the next rows are those of earlier seconds.
    fn end_of_second_before(second: i64) -> Position {
        Position {
            ts: second.saturating_mul(MICROS).saturating_sub(1),
            partition: i32::MAX,
            offset: i64::MAX,
            topic: TOPIC_ABOVE_ALL.to_owned(),
        }
    }

    fn cursor(&self) -> Cursor {
        Cursor { ts_micros: self.ts, partition: self.partition, offset: self.offset, topic: self.topic.clone() }
    }
}

/// One examined row: where it is, and the columns the filter looks at.
#[derive(QueryableByName, Debug)]
struct Examined {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    ts: i64,
    #[diesel(sql_type = Integer)]
    partition: i32,
    #[diesel(sql_type = BigInt)]
    offset: i64,
    #[diesel(sql_type = Text)]
    topic: String,
    #[diesel(sql_type = Integer)]
    level: i32,
    #[diesel(sql_type = Text)]
    service: String,
    #[diesel(sql_type = Text)]
    tokens: String,
}

/// A matching row, whole, with its rowid (the order the page found it in).
#[derive(QueryableByName)]
struct Fetched {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(embed)]
    row: EventRow,
}

/// One walked second of the token plan.
#[derive(QueryableByName)]
struct Walked {
    #[diesel(sql_type = BigInt)]
    second: i64,
    #[diesel(sql_type = Bool)]
    candidate: bool,
}

/// The question as the statements and the row check need it.
struct Bound {
    /// JSON array of the required tokens (the walk's lookups).
    include: String,
    service: Option<String>,
    /// `[from, to)` in µs, open ends as the widest times.
    from: i64,
    to: i64,
    matcher: Matcher,
    /// The seconds of the rows above the indexer's mark that match: the keyword index does not
    /// know them yet.
    tail: BTreeSet<i64>,
}

/// The seconds holding a matching row above the indexer's mark, before `to` if given.
fn tail_seconds(conn: &mut SqliteConnection, bound: &Bound, to: Option<i64>) -> diesel::QueryResult<BTreeSet<i64>> {
    let mark = keywords::mark(conn)?;
    let mut seconds = BTreeSet::new();
    let rows = diesel::sql_query(TAIL)
        .bind::<BigInt, _>(mark.rowid)
        .bind::<BigInt, _>(bound.from)
        .bind::<BigInt, _>(to.map_or(bound.to, |t| t.min(bound.to)))
        .bind::<Nullable<Text>, _>(bound.service.as_deref())
        .load_iter::<Examined, DefaultLoadingMode>(conn)?;
    for row in rows {
        let row = row?;
        if bound.matcher.matches(&row) {
            seconds.insert(second_of(row.ts));
        }
    }
    Ok(seconds)
}

/// `Filter::matches_row` over a row's stored JSON `tokens`, without parsing them. A token is in a
/// row when `"token"` is in its JSON text: tokens are letters, digits and `_` (the tokenizer makes
/// them so, and the query's terms go through the same tokenizer), which JSON writes unescaped and
/// which hold no quote, so the quoted token can only be a whole element of the array. Checked here
/// rather than in SQL: `json_each` per row and token cost ~10 µs a row (measured), a substring
/// search a fraction of that.
///
/// That holds for the writer's form of `tokens` (a compact array of text without escapes,
/// [`writers_form`], checked in the same pass over the text). A row whose `tokens` is anything else
/// (a hand edit, a damaged file: not JSON, an object, escapes, non-text elements) is decided on its
/// tokens as the keyword index and counts read them (`keywords::read_tokens`), so that the text of
/// `{"timeout": 1}` is not a row holding `timeout` here while it counts as none in the index.
struct Matcher {
    include: Vec<String>,
    exclude: Vec<String>,
    /// The same tokens, unquoted (for rows not in the writer's form).
    include_plain: Vec<String>,
    exclude_plain: Vec<String>,
    levels: LevelFilter,
    service: Option<String>,
}

/// Whether `text` is a compact JSON array of strings none of which holds a quote, a backslash or a
/// control character: how the writer stores a tokenizer's tokens (letters, digits, `_`), and where
/// `"token"` is in the text exactly when `token` is an element.
fn writers_form(text: &str) -> bool {
    let bytes = text.as_bytes();
    let [b'[', inner @ .., b']'] = bytes else { return false };
    if inner.is_empty() {
        return true;
    }
    let mut in_string = false;
    let mut after_string = false;
    for &b in inner {
        if in_string {
            match b {
                b'"' => {
                    in_string = false;
                    after_string = true;
                }
                b'\\' | 0..=0x1f => return false,
                _ => {}
            }
        } else {
            match (b, after_string) {
                (b'"', false) => in_string = true,
                (b',', true) => after_string = false,
                _ => return false,
            }
        }
    }
    after_string
}

impl Matcher {
    fn new(filter: &actors::search::Filter) -> Matcher {
        let quoted = |v: &[String]| v.iter().map(|t| format!("\"{t}\"")).collect();
        Matcher {
            include: quoted(&filter.include),
            exclude: quoted(&filter.exclude),
            include_plain: filter.include.clone(),
            exclude_plain: filter.exclude.clone(),
            levels: filter.levels,
            service: filter.service.clone(),
        }
    }

    /// Whether the row's tokens hold every included token and no excluded one.
    fn tokens_match(&self, tokens: &str) -> bool {
        if self.include.is_empty() && self.exclude.is_empty() {
            return true;
        }
        if writers_form(tokens) {
            return self.include.iter().all(|t| tokens.contains(t.as_str()))
                && !self.exclude.iter().any(|t| tokens.contains(t.as_str()));
        }
        let read = keywords::read_tokens(tokens).tokens;
        let has = |t: &String| read.contains(t);
        self.include_plain.iter().all(has) && !self.exclude_plain.iter().any(has)
    }

    fn matches(&self, row: &Examined) -> bool {
        // Without a level asked, a row with a level no `Level` has (a corrupt file) matches, as on
        // PostgreSQL, where the filter then has no level condition: reading it is the error the
        // caller sees, rather than a row silently left out.
        (self.levels == LevelFilter::Any
            || i16::try_from(row.level).ok().and_then(Level::from_i16).is_some_and(|l| self.levels.admits(l)))
            && self.service.as_deref().is_none_or(|s| row.service == s)
            && self.tokens_match(&row.tokens)
    }
}

/// The rows of `[?1, ?2)` after the position `(?3, ?4, ?5, ?6)`, at most `?7`, in search order.
/// `ts <= ?3` lets `logs_ts` bound the range; the row value decides ties.
const EXAMINE: &str = "SELECT rowid AS id, ts, \"partition\", \"offset\", topic, level, service, tokens FROM logs \
     WHERE ts >= ?1 AND ts < ?2 AND ts <= ?3 AND (ts, \"partition\", \"offset\", topic) < (?3, ?4, ?5, ?6) \
     ORDER BY ts DESC, \"partition\" DESC, \"offset\" DESC, topic DESC LIMIT ?7";

/// Up to `?3` seconds of the keyword index from `?1` down to `?2`, newest first, each with whether
/// it holds every required token (`?4`, `?5` of them) for the service `?6` if asked. A second is
/// found by one seek below the last (`max(second) < s`), so seconds without events cost nothing.
const WALK: &str = "WITH RECURSIVE walk(s, n) AS ( \
     SELECT (SELECT max(second) FROM log_token_seconds WHERE second <= ?1), 1 \
     UNION ALL \
     SELECT (SELECT max(second) FROM log_token_seconds WHERE second < walk.s), n + 1 FROM walk \
     WHERE walk.s > ?2 AND n < ?3) \
     SELECT s AS second, (SELECT count(DISTINCT k.token) FROM log_token_seconds AS k \
       WHERE k.second = walk.s AND k.token IN (SELECT value FROM json_each(?4)) \
       AND (?6 IS NULL OR k.service = ?6)) = ?5 AS candidate \
     FROM walk WHERE s IS NOT NULL AND s >= ?2 ORDER BY s DESC";

/// The rows above the indexer's mark `?1` in `[?2, ?3)`, of the service `?4` if asked: a range of
/// rowids (`+ts` keeps SQLite off `logs_ts`, whose range may be the whole store).
const TAIL: &str = "SELECT rowid AS id, ts, \"partition\", \"offset\", topic, level, service, tokens FROM logs \
     WHERE rowid > ?1 AND +ts >= ?2 AND +ts < ?3 AND (?4 IS NULL OR service = ?4)";

const EVENTS: &str =
    "SELECT rowid AS id, ts, level, service, user_id, message, attrs, topic, \"partition\", \"offset\" \
     FROM logs WHERE rowid IN (SELECT value FROM json_each(?1))";

const ONE_EVENT: &str = "SELECT ts, level, service, user_id, message, attrs, topic, \"partition\", \"offset\" \
     FROM logs WHERE \"partition\" = ?2 AND \"offset\" = ?3 AND topic = ?1 LIMIT 1";

/// Where a page stands while it is being read.
struct Page {
    /// Matching rows found, in order (their rowids and positions); one more than asked tells a
    /// next page exists.
    hits: Vec<(i64, Position)>,
    want: usize,
    /// Work left: rows read plus seconds walked.
    budget: usize,
    /// The last position examined.
    last: Option<Position>,
}

impl Page {
    fn full(&self) -> bool {
        self.hits.len() >= self.want
    }

    fn spent(&self) -> bool {
        self.budget == 0
    }
}

fn examine(
    conn: &mut SqliteConnection,
    from: i64,
    to: i64,
    after: &Position,
    rows: usize,
) -> diesel::QueryResult<Vec<Examined>> {
    diesel::sql_query(EXAMINE)
        .bind::<BigInt, _>(from)
        .bind::<BigInt, _>(to)
        .bind::<BigInt, _>(after.ts)
        .bind::<Integer, _>(after.partition)
        .bind::<BigInt, _>(after.offset)
        .bind::<Text, _>(&after.topic)
        .bind::<BigInt, _>(i64::try_from(rows).unwrap_or(i64::MAX))
        .load(conn)
}

/// Reads `[from, to)` after `after` until the page is full, the budget spent or the range done.
/// Returns whether the range is done.
fn read_range(
    conn: &mut SqliteConnection,
    bound: &Bound,
    page: &mut Page,
    from: i64,
    to: i64,
    mut after: Position,
) -> diesel::QueryResult<bool> {
    let mut rows = (page.want * ROWS_PER_EVENT_FIRST).max(64);
    page.last = Some(after.clone());
    loop {
        let ask = rows.min(page.budget);
        if ask == 0 {
            return Ok(false);
        }
        let examined = examine(conn, from, to, &after, ask)?;
        let got = examined.len();
        for row in examined {
            page.budget -= 1;
            let position =
                Position { ts: row.ts, partition: row.partition, offset: row.offset, topic: row.topic.clone() };
            if bound.matcher.matches(&row) {
                page.hits.push((row.id, position.clone()));
            }
            page.last = Some(position);
            if page.full() {
                return Ok(false);
            }
        }
        if got < ask {
            return Ok(true);
        }
        after = page.last.clone().expect("rows were read");
        rows = rows.saturating_mul(2);
    }
}

/// The token plan: walks the indexed seconds from `start` down to `lo`, reading the rows of the
/// seconds that may hold a match.
fn walk_seconds(
    conn: &mut SqliteConnection,
    bound: &Bound,
    page: &mut Page,
    include_count: usize,
    start: Option<Position>,
) -> diesel::QueryResult<()> {
    let lo = second_of(bound.from);
    let mut hi = second_of(bound.to.saturating_sub(1));
    let mut after = start;
    if let Some(a) = &after {
        hi = hi.min(second_of(a.ts));
    }
    loop {
        let steps = SECONDS_PER_WALK.min(i64::try_from(page.budget).unwrap_or(i64::MAX));
        if steps == 0 || hi < lo {
            return Ok(());
        }
        let walked: Vec<Walked> = diesel::sql_query(WALK)
            .bind::<BigInt, _>(hi)
            .bind::<BigInt, _>(lo)
            .bind::<BigInt, _>(steps)
            .bind::<Text, _>(&bound.include)
            .bind::<BigInt, _>(include_count as i64)
            .bind::<Nullable<Text>, _>(bound.service.as_deref())
            .load(conn)?;
        let exhausted = (walked.len() as i64) < steps;
        let floor = if exhausted { lo } else { walked.last().map_or(lo, |w| w.second) };
        let walked = with_tail(walked, &bound.tail, floor, hi);
        if walked.is_empty() {
            return Ok(());
        }
        let mut i = 0;
        while i < walked.len() {
            let newest = walked[i].second;
            if !walked[i].candidate {
                page.budget = page.budget.saturating_sub(1);
                after = None;
                page.last = Some(Position::end_of_second_before(newest));
                if page.spent() {
                    return Ok(());
                }
                i += 1;
                continue;
            }
            // A run of seconds that may hold a match is one range of `logs_ts`, paid for by its
            // rows (so a page always reads one).
            let mut j = i;
            while j + 1 < walked.len() && walked[j + 1].candidate {
                j += 1;
            }
            let oldest = walked[j].second;
            let from = bound.from.max(oldest.saturating_mul(MICROS));
            let to = bound.to.min(newest.saturating_add(1).saturating_mul(MICROS));
            let in_run = after.take().unwrap_or_else(|| Position::end_of_second_before(newest + 1));
            if !read_range(conn, bound, page, from, to, in_run)? {
                // Full or spent inside the run: `last` is where it stopped.
                return Ok(());
            }
            page.last = Some(Position::end_of_second_before(oldest));
            if page.spent() {
                return Ok(());
            }
            i = j + 1;
        }
        if exhausted {
            return Ok(());
        }
        hi = walked.last().expect("not empty").second - 1;
    }
}

/// The seconds walked in the keyword index, newest first, merged with the tail's matching seconds
/// of the span they cover (`floor..=hi`: down to the oldest walked, or to the range's start when
/// the index holds none older); a tail second is a candidate.
fn with_tail(walked: Vec<Walked>, tail: &BTreeSet<i64>, floor: i64, hi: i64) -> Vec<Walked> {
    if tail.is_empty() || floor > hi {
        return walked;
    }
    let mut merged: Vec<Walked> = Vec::with_capacity(walked.len());
    let mut extra = tail.range(floor..=hi).rev().peekable();
    for w in walked {
        while let Some(&&s) = extra.peek() {
            if s <= w.second {
                break;
            }
            merged.push(Walked { second: s, candidate: true });
            extra.next();
        }
        let in_tail = extra.peek().is_some_and(|&&s| s == w.second);
        if in_tail {
            extra.next();
        }
        merged.push(Walked { second: w.second, candidate: w.candidate || in_tail });
    }
    merged.extend(extra.map(|&s| Walked { second: s, candidate: true }));
    merged
}

/// `LogSearch` over the embedded store, on pooled read connections (WAL: the writer never waits).
#[derive(Clone)]
pub struct SqliteLogSearch {
    db: SqliteDb,
    max_scan: usize,
    timeout: Duration,
}

impl SqliteLogSearch {
    /// Reads at most `max_scan` rows (and walked seconds) per page (`SEARCH_MAX_SCAN`).
    pub fn new(db: SqliteDb, max_scan: usize) -> SqliteLogSearch {
        SqliteLogSearch { db, max_scan: max_scan.max(1), timeout: DEFAULT_TIMEOUT }
    }

    /// Gives up waiting for a page after `timeout` (`DATABASE_TIMEOUT_MS`, as the stats reads).
    pub fn with_timeout(mut self, timeout: Duration) -> SqliteLogSearch {
        self.timeout = timeout;
        self
    }
}

/// The embedded mode's search port, on the database the pipeline writes (what `AppState.search`
/// holds in the embedded `run`).
pub fn embedded_search(db: &SqliteDb, max_scan: usize, timeout: Duration) -> Arc<dyn LogSearch> {
    Arc::new(SqliteLogSearch::new(db.clone(), max_scan).with_timeout(timeout))
}

/// A page's rows, its next cursor and whether it stopped at the bound.
type PageRows = (Vec<EventRow>, Option<Cursor>, bool);

fn page(conn: &mut SqliteConnection, query: &SearchQuery, max_scan: usize) -> diesel::QueryResult<PageRows> {
    let filter = &query.filter;
    let mut bound = Bound {
        include: serde_json::Value::from(filter.include.clone()).to_string(),
        service: filter.service.clone(),
        from: query.from_micros.unwrap_or(i64::MIN),
        to: query.to_micros.unwrap_or(i64::MAX),
        matcher: Matcher::new(filter),
        tail: BTreeSet::new(),
    };
    let start = query.after.as_ref().map(Position::of_cursor);
    let mut page = Page { hits: Vec::new(), want: query.limit.saturating_add(1), budget: max_scan, last: None };
    // One read transaction: the keyword index, its mark and the rows are one snapshot.
    conn.transaction(|conn| {
        if !filter.include.is_empty() {
            // Only the token plan reads the index; past a cursor, the seconds after it are not walked.
            let tail = tail_seconds(conn, &bound, start.as_ref().map(|a| a.ts.saturating_add(1)))?;
            bound.tail = tail;
        }
        if filter.include.is_empty() {
            let after = start.unwrap_or_else(|| Position::end_of_second_before(i64::MAX / MICROS));
            read_range(conn, &bound, &mut page, bound.from, bound.to, after)?;
        } else {
            walk_seconds(conn, &bound, &mut page, filter.include.len(), start)?;
        }
        let more = page.hits.len() > query.limit;
        page.hits.truncate(query.limit);
        let ids: Vec<i64> = page.hits.iter().map(|(id, _)| *id).collect();
        let mut rows: Vec<Fetched> = if ids.is_empty() {
            Vec::new()
        } else {
            diesel::sql_query(EVENTS).bind::<Text, _>(serde_json::Value::from(ids.clone()).to_string()).load(conn)?
        };
        let order: std::collections::HashMap<i64, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        rows.sort_by_key(|r| order.get(&r.id).copied().unwrap_or(usize::MAX));
        let rows: Vec<EventRow> = rows.into_iter().map(|f| f.row).collect();
        let (next_cursor, truncated) = if more {
            (page.hits.last().map(|(_, p)| p.cursor()), false)
        } else if page.spent() {
            (page.last.as_ref().map(Position::cursor), true)
        } else {
            (None, false)
        };
        Ok((rows, next_cursor, truncated))
    })
}

#[async_trait]
impl LogSearch for SqliteLogSearch {
    async fn search(&self, query: &SearchQuery) -> Result<SearchPage, SearchFailed> {
        let (query, max_scan) = (query.clone(), self.max_scan);
        let (rows, next_cursor, truncated) =
            bounded(&self.db, self.timeout, "search", move |conn| page(conn, &query, max_scan))
                .await
                .map_err(|e| SearchFailed::Unavailable(e.to_string()))?;
        let events = rows.into_iter().map(EventRow::found).collect::<Result<_, _>>()?;
        Ok(SearchPage { events, next_cursor, truncated })
    }

    async fn event(&self, topic: &str, partition: i32, offset: i64) -> Result<Option<FoundEvent>, SearchFailed> {
        let topic = topic.to_owned();
        let row: Option<EventRow> = bounded(&self.db, self.timeout, "event", move |conn| {
            diesel::sql_query(ONE_EVENT)
                .bind::<Text, _>(topic)
                .bind::<Integer, _>(partition)
                .bind::<BigInt, _>(offset)
                .load::<EventRow>(conn)
                .map(|rows| rows.into_iter().next())
        })
        .await
        .map_err(|e| SearchFailed::Unavailable(e.to_string()))?;
        row.map(EventRow::found).transpose()
    }

    fn source(&self) -> &'static str {
        "sqlite"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_second_comes_after_every_event_of_it_and_before_the_next() {
        let end = Position::end_of_second_before(10).cursor();
        // Every event of second 9 (any partition, offset, Kafka topic) is after it; none of 10 is.
        assert!(end.precedes(9 * MICROS, i32::MAX, i64::MAX - 1, "zzz"));
        assert!(end.precedes(10 * MICROS - 1, i32::MAX, i64::MAX, "Z_-.9"));
        assert!(!end.precedes(10 * MICROS, 0, 0, "a"));
        assert_eq!(Cursor::decode(&end.encode()).unwrap(), end);
    }

    #[test]
    fn the_tails_seconds_join_the_walk_in_its_span_as_candidates() {
        let walk = |seconds: &[(i64, bool)]| -> Vec<Walked> {
            seconds.iter().map(|&(second, candidate)| Walked { second, candidate }).collect()
        };
        let flat = |w: Vec<Walked>| -> Vec<(i64, bool)> { w.into_iter().map(|w| (w.second, w.candidate)).collect() };
        let tail: BTreeSet<i64> = [3, 5, 8, 12, 20].into_iter().collect();
        // A walk of 10..=15 that is not the last: the tail's 12 joins, 8 and 20 are outside its span.
        let walked = walk(&[(15, false), (12, false), (10, true)]);
        assert_eq!(flat(with_tail(walked, &tail, 10, 15)), [(15, false), (12, true), (10, true)]);
        // The last walk (down to the range's start 4): the tail's 8 and 5 come after the index's 9.
        let walked = walk(&[(11, true), (9, false)]);
        assert_eq!(flat(with_tail(walked, &tail, 4, 11)), [(11, true), (9, false), (8, true), (5, true)]);
        // Nothing in the index: the tail alone.
        assert_eq!(flat(with_tail(Vec::new(), &tail, 0, 9)), [(8, true), (5, true), (3, true)]);
        // No tail: the walk as it was.
        assert_eq!(flat(with_tail(walk(&[(7, false)]), &BTreeSet::new(), 0, 9)), [(7, false)]);
    }

    /// A row of `logs` as the walk examines it, with `tokens` as its stored text.
    fn examined(level: Level, service: &str, tokens: String) -> Examined {
        Examined {
            id: 1,
            ts: 0,
            partition: 0,
            offset: 0,
            topic: "logs".into(),
            level: i32::from(level.as_i16()),
            service: service.into(),
            tokens,
        }
    }

    #[test]
    fn a_row_whose_tokens_are_not_the_writers_form_matches_on_its_tokens_as_the_index_reads_them() {
        use actors::search::SearchParams;
        assert!(writers_form(r#"["a","b_1","café"]"#) && writers_form("[]"));
        for text in [r#"["a",]"#, r#"[,"a"]"#, r#"["a""b"]"#, r#"["a", "b"]"#, r#"["a\"b"]"#, r#"{"a":1}"#, "[1]", "["]
        {
            assert!(!writers_form(text), "{text:?}");
        }
        let texts = [
            r#"["timeout","db"]"#,
            "not json",
            r#"{"timeout":1}"#,
            r#"[{"timeout":1},"db"]"#,
            r#"[1,"timeout"]"#,
            r#"["time\u006fut"]"#,
            r#" ["timeout"] "#,
            r#""timeout""#,
        ];
        for text in texts {
            let row = examined(Level::Warn, "api", text.into());
            let tokens = keywords::read_tokens(text).tokens;
            for q in ["timeout", "-timeout", "db -timeout", "timeout db", "other"] {
                let filter = SearchParams { q: Some(q), ..SearchParams::default() }.filter().unwrap();
                assert_eq!(
                    Matcher::new(&filter).matches(&row),
                    filter.matches_row(Level::Warn, "api", &tokens),
                    "{q:?} on {text:?}"
                );
            }
        }
    }

    #[test]
    fn the_row_check_on_json_text_is_the_cores_matches_row() {
        use actors::domain::Tokens;
        use actors::search::SearchParams;
        let messages = ["Upstream timeout after retry", "timeouts: café über_cache", "time out", "naïve Ünïcode 42"];
        let queries =
            ["timeout", "time", "-timeout", "café", "ünïcode 42", "retry -upstream", "über_cache", "out -time"];
        for message in messages {
            let tokens: Vec<String> = Tokens::of(message).iter().map(str::to_owned).collect();
            for (level, service) in [(Level::Warn, "api"), (Level::Info, "web")] {
                let row = examined(level, service, serde_json::to_string(&tokens).unwrap());
                for q in queries {
                    for (svc, lvl) in [(None, None), (Some("api"), Some("warn+"))] {
                        let p = SearchParams { q: Some(q), service: svc, level: lvl, ..SearchParams::default() };
                        let filter = p.filter().unwrap();
                        assert_eq!(
                            Matcher::new(&filter).matches(&row),
                            filter.matches_row(level, service, &tokens),
                            "{q:?} {svc:?} {lvl:?} on {message:?}"
                        );
                    }
                }
            }
        }
    }
}
