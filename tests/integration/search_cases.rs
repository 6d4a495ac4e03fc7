//! What every `LogSearch` must answer, whatever its store: the ground truth of a query over stored
//! rows (the core's `Filter::matches_row` and order, computed here), and paging through a port
//! while events are stored between pages. The SQLite suite (`search_sqlite`) calls it; a store's
//! suite gives the rows as it stored them and a way to store more.

use std::future::Future;

use actors::domain::Level;
use actors::search::{Cursor, FoundEvent, LogSearch, SearchParams, SearchQuery};

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
