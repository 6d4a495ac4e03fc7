//! What every `LogSearch` must answer, whatever its store: the ground truth of a query over stored
//! rows (the core's `Filter::matches_row` and order, computed here), paging through a port while
//! events are stored between pages, and the suite of questions both stores are asked. A store's
//! suite (`search` for PostgreSQL, `search_sqlite` for SQLite) implements [`Backend`] (how lines
//! are stored through its pipeline and read back as stored) and runs the suite's tests on it.

use std::future::Future;
use std::sync::{Arc, Mutex};

use actors::domain::Level;
use actors::search::{Cursor, FoundEvent, LogSearch, SearchFailed, SearchParams, SearchQuery};
use chrono::{DateTime, SecondsFormat, Utc};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;

const SERVICES: [&str; 4] = ["api", "billing", "cart", "web"];
const WORDS: [&str; 12] =
    ["timeout", "payment", "declined", "retry", "disk", "user", "login", "cache", "miss", "queue", "slow", "ok"];
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "fatal"];
/// The events' times: whole seconds of this span, so many share a microsecond and order by
/// (partition, offset, topic).
const SPAN_S: i64 = 900;

/// A store under test, as its suite drives it.
pub(crate) trait Backend {
    /// Stores `lines` (JSON events, each accepted) through the store's pipeline and returns the
    /// rows stored since the last call, as the store keeps them.
    async fn store(&self, lines: &[String]) -> Vec<StoredRow>;

    /// The store's search port, examining at most `max_scan` rows a page (`SEARCH_MAX_SCAN`).
    fn search(&self, max_scan: usize) -> Arc<dyn LogSearch>;
}

/// The lines a suite stores: generated events and the Loghub samples, their times in the `SPAN_S`
/// seconds after `base`, drawn from a seeded generator.
pub(crate) struct Lines {
    pub(crate) base: DateTime<Utc>,
    rng: Mutex<SmallRng>,
}

impl Lines {
    pub(crate) fn new(seed: u64) -> Lines {
        let base = Utc::now() - chrono::Duration::seconds(2 * SPAN_S);
        Lines { base, rng: Mutex::new(SmallRng::seed_from_u64(seed)) }
    }

    fn ts(&self) -> String {
        let offset = self.rng.lock().unwrap().random_range(0..SPAN_S);
        let t = self.base + chrono::Duration::seconds(offset);
        t.to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    /// `n` generated lines: a service, a level and three to six words each.
    pub(crate) fn generated(&self, n: usize, tag: &str) -> Vec<String> {
        (0..n)
            .map(|i| {
                let ts = self.ts();
                let mut rng = self.rng.lock().unwrap();
                let count = rng.random_range(3..7);
                let words: Vec<&str> = (0..count).map(|_| WORDS[rng.random_range(0..WORDS.len())]).collect();
                let service = SERVICES[rng.random_range(0..SERVICES.len())];
                let level = LEVELS[rng.random_range(0..LEVELS.len())];
                // A rare word (about 0.4 % of lines each) for the selective questions.
                let rare =
                    if rng.random_bool(0.008) { format!(" zebra{}", rng.random_range(0..2)) } else { String::new() };
                let message = format!("{}{rare} {tag}{i}", words.join(" "));
                json!({"ts": ts, "level": level, "service": service, "message": message}).to_string()
            })
            .collect()
    }

    /// Every Loghub sample, each line the message of a Vector-like envelope (the level is in the line).
    pub(crate) fn loghub(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for system in crate::loghub::SYSTEMS {
            let sample = crate::loghub::load(system);
            for line in &sample.lines {
                lines.push(
                    json!({"timestamp": self.ts(), "service": system.to_lowercase(), "message": line}).to_string(),
                );
            }
        }
        lines
    }
}

/// One stored event, as the store keeps its searchable columns.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredRow {
    pub(crate) ts_micros: i64,
    pub(crate) level: Level,
    pub(crate) service: String,
    pub(crate) message: String,
    pub(crate) tokens: Vec<String>,
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
}

impl StoredRow {
    fn key(&self) -> (i64, i32, i64, &str) {
        (self.ts_micros, self.partition, self.offset, self.topic.as_str())
    }

    fn is_after(&self, cursor: Option<&Cursor>) -> bool {
        cursor.is_none_or(|c| c.precedes(self.ts_micros, self.partition, self.offset, &self.topic))
    }
}

/// Where an event is: what two answers are compared by.
pub(crate) type Place = (i64, i32, i64, String);

fn place_of_row(r: &StoredRow) -> Place {
    (r.ts_micros, r.partition, r.offset, r.topic.clone())
}

fn place_of_found(e: &FoundEvent) -> Place {
    (e.ts.timestamp_micros(), e.partition, e.offset, e.topic.clone())
}

/// The rows matching `query` (its filter, range and cursor), newest first, ties by partition,
/// offset, topic, all descending.
pub(crate) fn expected<'a>(rows: &'a [StoredRow], query: &SearchQuery) -> Vec<&'a StoredRow> {
    let mut hits: Vec<&StoredRow> = rows
        .iter()
        .filter(|r| query.filter.matches_row(r.level, &r.service, &r.tokens))
        .filter(|r| query.in_range(r.ts_micros))
        .filter(|r| r.is_after(query.after.as_ref()))
        .collect();
    hits.sort_by(|a, b| b.key().cmp(&a.key()));
    hits
}

/// The parameters of (name, value) pairs, or a panic naming them.
pub(crate) fn params<'a>(pairs: &[(&str, &'a str)]) -> SearchParams<'a> {
    SearchParams::from_pairs(pairs.iter().copied()).unwrap_or_else(|e| panic!("{pairs:?}: {e}"))
}

/// The query of these parameters (with `limit`), or a panic naming them.
pub(crate) fn query(params: &SearchParams<'_>, limit: usize) -> SearchQuery {
    let mut q = params.query().unwrap_or_else(|e| panic!("{params:?}: {e}"));
    q.limit = limit;
    q
}

/// What paging through a port gave.
pub(crate) struct Paged {
    pub(crate) events: Vec<FoundEvent>,
    pub(crate) pages: usize,
    pub(crate) truncated_pages: usize,
}

/// Pages through `search` until it has no next cursor. Before every `every`-th page after the
/// first, `store_more` stores events (and returns them as stored) with the cursor the next page
/// starts from; those after it must then be found, those before it must not. Asserts every page
/// holds at most `limit` events, the answers are in search order without a repeat, and the union
/// equals the expected events of `rows` plus the stored ones after their cursor.
pub(crate) async fn page_through<F, Fut>(
    search: &dyn LogSearch,
    rows: &[StoredRow],
    first: &SearchQuery,
    every: usize,
    mut store_more: F,
) -> Paged
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Vec<StoredRow>>,
{
    let mut want: Vec<StoredRow> = expected(rows, first).into_iter().cloned().collect();
    let mut query = first.clone();
    let mut got: Vec<FoundEvent> = Vec::new();
    let (mut pages, mut truncated_pages) = (0, 0);
    loop {
        if pages > 0 && every > 0 && pages % every == 0 {
            let cursor = query.after.clone();
            for row in store_more(pages).await {
                if first.filter.matches_row(row.level, &row.service, &row.tokens)
                    && first.in_range(row.ts_micros)
                    && row.is_after(cursor.as_ref())
                {
                    want.push(row);
                }
            }
        }
        let page = search.search(&query).await.unwrap_or_else(|e| panic!("{query:?}: {e}"));
        pages += 1;
        assert!(page.events.len() <= query.limit, "{} events on a page of {}", page.events.len(), query.limit);
        if page.truncated {
            truncated_pages += 1;
        }
        got.extend(page.events);
        assert!(pages < 100_000, "paging does not end");
        match page.next_cursor {
            Some(c) => query.after = Some(c),
            None => break,
        }
    }
    for pair in got.windows(2) {
        assert!(place_of_found(&pair[0]) > place_of_found(&pair[1]), "out of order or repeated: {pair:?}");
    }
    want.sort_by(|a, b| b.key().cmp(&a.key()));
    let want_places: Vec<Place> = want.iter().map(place_of_row).collect();
    let got_places: Vec<Place> = got.iter().map(place_of_found).collect();
    if got_places != want_places {
        let missing: Vec<&Place> = want_places.iter().filter(|p| !got_places.contains(p)).take(5).collect();
        let extra: Vec<&Place> = got_places.iter().filter(|p| !want_places.contains(p)).take(5).collect();
        panic!(
            "{:?}: {} found, {} expected; missing {missing:?}; unexpected {extra:?}",
            first.filter,
            got_places.len(),
            want_places.len()
        );
    }
    for (e, r) in got.iter().zip(&want) {
        assert_eq!(
            (e.message.as_str(), e.service.as_str(), e.level),
            (r.message.as_str(), r.service.as_str(), r.level)
        );
    }
    Paged { events: got, pages, truncated_pages }
}

/// Tokens of `rows` by how many rows hold them: a rare one (≤ 1 %, in at least two rows) and a
/// common one (≥ 30 % when one is), for the selective and the common query.
pub(crate) fn rare_and_common(rows: &[StoredRow]) -> (String, String) {
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for r in rows {
        for t in &r.tokens {
            *counts.entry(t.as_str()).or_default() += 1;
        }
    }
    let n = rows.len();
    let rare = counts
        .iter()
        .filter(|(t, c)| **c >= 2 && **c * 100 <= n && t.len() >= 3 && t.chars().any(char::is_alphabetic))
        .max_by_key(|(_, c)| **c)
        .map(|(t, _)| (*t).to_owned())
        .expect("a rare token");
    // The least frequent of those in at least 30 % of rows, else the most frequent there is.
    let common = counts
        .iter()
        .filter(|(t, c)| **c * 100 >= n * 30 && t.chars().any(char::is_alphabetic))
        .min_by_key(|(_, c)| **c)
        .or_else(|| counts.iter().max_by_key(|(_, c)| **c))
        .map(|(t, _)| (*t).to_owned())
        .expect("a token");
    (rare, common)
}

/// A limit giving about 12 pages of the expected answer (at least 3 events a page).
fn small_limit(expected: usize) -> usize {
    (expected / 12).clamp(3, 1_000)
}

/// Every Loghub sample and 3,000 generated lines; then twelve questions (rare and common tokens,
/// both, one excluded, a token in no row, services, levels, a range), each paged through in small
/// pages with 40 more lines stored before every fourth page: the pages equal the ground truth in
/// order, and events stored after the cursor are found. Returns the search it asked.
pub(crate) async fn pages_equal_the_ground_truth_while_events_are_stored_between_pages(
    backend: &impl Backend,
    lines: &Lines,
) -> Arc<dyn LogSearch> {
    let mut rows = backend.store(&lines.loghub()).await;
    rows.extend(backend.store(&lines.generated(3_000, "gen")).await);
    let (rare, common) = rare_and_common(&rows);
    let search = backend.search(1_000_000);

    let from = (lines.base + chrono::Duration::seconds(SPAN_S / 3)).to_rfc3339();
    let to = (lines.base + chrono::Duration::seconds(SPAN_S / 2)).to_rfc3339();
    let rare_and_common = format!("{rare} {common}");
    let common_not_rare = format!("{common} -{rare}");
    let cases: Vec<SearchParams<'_>> = vec![
        params(&[("q", &rare)]),
        params(&[("q", &common)]),
        params(&[("q", &common_not_rare)]),
        params(&[("q", &rare_and_common)]),
        params(&[("q", "nosuchtokenanywhere")]),
        params(&[("service", "hadoop")]),
        params(&[("q", "timeout"), ("service", "api"), ("level", "warn+")]),
        params(&[("level", "error")]),
        params(&[("level", "warn+"), ("service", "zookeeper")]),
        params(&[("q", "block -receiving"), ("service", "hdfs")]),
        params(&[("q", &common), ("from", &from), ("to", &to)]),
        params(&[("from", &from), ("to", &to), ("level", "info+")]),
    ];
    let mut nonempty = 0;
    for (i, p) in cases.iter().enumerate() {
        let probe = query(p, 1);
        let n = expected(&rows, &probe).len();
        nonempty += usize::from(n > 0);
        let first = query(p, small_limit(n));
        let added = Mutex::new(Vec::new());
        let added_ref = &added;
        let paged = page_through(search.as_ref(), &rows, &first, 4, |page| {
            let more = lines.generated(40, &format!("more{i}x{page}y"));
            async move {
                let new = backend.store(&more).await;
                added_ref.lock().unwrap().extend(new.iter().cloned());
                new
            }
        })
        .await;
        assert!(paged.pages >= 1 && paged.truncated_pages == 0, "{p:?}: {} pages", paged.pages);
        assert!(n == 0 || paged.events.len() >= n, "{p:?}: the events stored before paging are all found");
        rows.extend(added.into_inner().unwrap());
    }
    assert!(nonempty >= cases.len() - 1, "only the token in no row finds nothing ({nonempty} of {})", cases.len());
    search
}

/// How often a page stopped at the scan bound, for one bound and one question.
pub(crate) struct Bounded {
    pub(crate) max_scan: usize,
    pub(crate) question: String,
    pub(crate) truncated_pages: usize,
}

/// 2,500 generated lines; four questions asked in pages of 1,000 under scan bounds of 1, 37 and
/// 500 rows: following the cursors of pages that stopped at the bound finds exactly the ground
/// truth. Returns how often each stopped there: which questions a bound truncates is the store's
/// plan (SQLite reads every candidate row; PostgreSQL's GIN lists a rare token's rows whole), so
/// each store's suite asserts its own.
pub(crate) async fn a_scan_bound_truncates_pages_and_their_cursors_find_everything(
    backend: &impl Backend,
    lines: &Lines,
) -> Vec<Bounded> {
    let rows = backend.store(&lines.generated(2_500, "bound")).await;
    let (rare, common) = rare_and_common(&rows);
    let common_error = [("q", common.as_str()), ("level", "error+")];
    let questions: [&[(&str, &str)]; 4] = [
        &[("q", rare.as_str())],
        &common_error,
        &[("service", "cart"), ("level", "fatal")],
        &[("q", "nosuchtokenanywhere")],
    ];
    let mut bounded = Vec::new();
    for max_scan in [1, 37, 500] {
        let search = backend.search(max_scan);
        for pairs in questions {
            let p = params(pairs);
            let n = expected(&rows, &query(&p, 1)).len();
            if max_scan == 1 && n > 40 {
                continue; // one row a page: only the selective questions, to stay quick
            }
            // Pages that never fill: the bound is what ends them.
            let first = query(&p, 1_000);
            let paged = page_through(search.as_ref(), &rows, &first, 0, |_| async { Vec::<StoredRow>::new() }).await;
            bounded.push(Bounded { max_scan, question: format!("{pairs:?}"), truncated_pages: paged.truncated_pages });
        }
    }
    bounded
}

/// 300 generated lines; every 37th is found by its position, with what was stored; positions
/// nothing is stored at are `None`. Returns the rows stored.
pub(crate) async fn one_event_is_found_by_its_position_and_a_missing_one_is_none(
    backend: &impl Backend,
    lines: &Lines,
) -> Vec<StoredRow> {
    let rows = backend.store(&lines.generated(300, "one")).await;
    let search = backend.search(10_000);
    for row in rows.iter().step_by(37) {
        let found = search.event(&row.topic, row.partition, row.offset).await.unwrap().expect("found");
        assert_eq!(
            (found.ts.timestamp_micros(), found.message.as_str(), found.service.as_str(), found.level),
            (row.ts_micros, row.message.as_str(), row.service.as_str(), row.level)
        );
        assert_eq!(
            (found.topic.as_str(), found.partition, found.offset),
            (row.topic.as_str(), row.partition, row.offset)
        );
        assert!(found.attrs.is_object(), "{found:?}");
    }
    let last = rows.iter().map(|r| r.offset).max().unwrap();
    let row = &rows[0];
    assert_eq!(search.event(&row.topic, row.partition, last + 1_000).await.unwrap(), None);
    assert_eq!(search.event("elsewhere", row.partition, row.offset).await.unwrap(), None);
    assert_eq!(search.event(&row.topic, 999, row.offset).await.unwrap(), None);
    rows
}

/// What a store answers once `row` (the newest it holds) has level 9, its schema's CHECK bypassed:
/// a corrupt row error for its position and for the newest page without a level (never an event
/// with a level made up), and a page asking for `row`'s own level without it.
pub(crate) async fn a_row_with_level_9_is_a_corrupt_row_error(search: &dyn LogSearch, row: &StoredRow) {
    let corrupt = |r: Result<(), SearchFailed>, what: &str| match r {
        Err(SearchFailed::Corrupt(why)) => assert!(why.contains("level 9"), "{what}: {why}"),
        other => panic!("{what}: not a corrupt row error: {other:?}"),
    };
    corrupt(search.event(&row.topic, row.partition, row.offset).await.map(drop), "event");
    corrupt(search.search(&query(&params(&[]), 10)).await.map(drop), "newest page");
    let page = search.search(&query(&params(&[("level", row.level.as_str())]), 1_000)).await.unwrap();
    assert!(page.events.iter().all(|e| e.level == row.level), "{page:?}");
}
