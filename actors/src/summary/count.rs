//! Counting one day's events: the per-user figures, every (user, token) count and the day's token
//! counts, then the tops with the same order as `ORDER BY count DESC, keyword COLLATE "C"` (bytes).
//!
//! Memory is bounded by the distinct (user, token) pairs (8 bytes each in a per-user hash map, plus the
//! table's slack) and the distinct tokens (interned once each).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use chrono::{DateTime, Utc};

/// Tokens interned among the first this many are counted per user in an array rather than a hash map:
/// the frequent words show up in the first rows, and a user's array stays in cache where a hash map
/// holding its ~1M one-off ids would miss on every word (a third of the job's time).
const DENSE_TOKENS: usize = 1024;

/// A multiplicative hasher (the Fx scheme) for keys of our own: interned ids and token bytes. The
/// default SipHash costs more than the rest of the counting on 73M tokens.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

const SEED: u64 = 0xf135_7aea_2e62_a9c5;

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(SEED).rotate_left(26);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }
    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Strings numbered in order of first appearance.
#[derive(Default)]
struct Interner {
    ids: FastMap<Box<[u8]>, u32>,
}

impl Interner {
    #[inline]
    fn id(&mut self, bytes: &[u8]) -> u32 {
        if let Some(&id) = self.ids.get(bytes) {
            return id;
        }
        let id = self.ids.len() as u32;
        self.ids.insert(bytes.into(), id);
        id
    }

    /// The strings by id (consumes the map: no copy of the keys).
    fn into_names(self) -> Result<Vec<String>, String> {
        let mut names = vec![String::new(); self.ids.len()];
        for (bytes, id) in self.ids {
            names[id as usize] =
                String::from_utf8(bytes.into_vec()).map_err(|_| "text that is not UTF-8".to_owned())?;
        }
        Ok(names)
    }
}

struct UserAcc {
    total: i64,
    errors: i64,
    warnings: i64,
    /// Service ids, sorted.
    services: Vec<u32>,
    first: i64,
    last: i64,
    /// Events by non-stop-word token id, for ids below `DENSE_TOKENS`.
    dense: Vec<u32>,
    /// Non-stop-word token id → events, for the other ids.
    tokens: FastMap<u32, u32>,
}

impl UserAcc {
    #[inline]
    fn count(&mut self, token: u32, events: u32) {
        let i = token as usize;
        if i < DENSE_TOKENS {
            if i >= self.dense.len() {
                self.dense.resize(i + 1, 0);
            }
            self.dense[i] += events;
        } else {
            *self.tokens.entry(token).or_insert(0) += events;
        }
    }

    /// (events, token id) of every token counted.
    fn counts(self) -> Vec<(i64, u32)> {
        let dense = self.dense.into_iter().enumerate().filter(|&(_, c)| c > 0).map(|(t, c)| (i64::from(c), t as u32));
        dense.chain(self.tokens.into_iter().map(|(t, c)| (i64::from(c), t))).collect()
    }
}

/// One summary row, before it is written.
pub struct UserSummary {
    pub user_id: String,
    pub total: i64,
    pub errors: i64,
    pub warnings: i64,
    /// Distinct, sorted by bytes.
    pub services: Vec<String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// (keyword, count), by count then keyword bytes.
    pub top_keywords: Vec<(String, i64)>,
}

/// What the day's events add up to.
pub struct DaySummary {
    /// Sorted by user_id bytes.
    pub users: Vec<UserSummary>,
    /// The day's top keywords, by count then keyword bytes.
    pub keywords: Vec<(String, i64)>,
}

/// The counting state, fed one event at a time.
pub struct DayCount {
    users: Interner,
    /// User id → accumulator.
    accs: Vec<UserAcc>,
    /// The id of the bucket of events without a user_id, interned on first sight.
    null_user: Option<u32>,
    services: Interner,
    tokens: Interner,
    /// Tokens with an id below this are stop words (interned first).
    stop_words: u32,
    /// Token id → events of the day.
    day_counts: Vec<u64>,
}

impl DayCount {
    pub fn new<'a>(stop_words: impl IntoIterator<Item = &'a [u8]>) -> DayCount {
        let mut tokens = Interner::default();
        for w in stop_words {
            tokens.id(w);
        }
        let stop_words = tokens.ids.len() as u32;
        DayCount {
            users: Interner::default(),
            accs: Vec::new(),
            null_user: None,
            services: Interner::default(),
            tokens,
            stop_words,
            day_counts: vec![0; stop_words as usize],
        }
    }

    /// Counts one event: `level` as stored (`Level::as_i16`), `ts` in microseconds since the Unix epoch.
    pub fn event<'t>(
        &mut self,
        user: Option<&[u8]>,
        level: i16,
        service: &[u8],
        ts: i64,
        tokens: impl IntoIterator<Item = &'t [u8]>,
    ) {
        let user = match user {
            Some(name) => self.users.id(name),
            None => match self.null_user {
                Some(id) => id,
                None => {
                    // A name no text value can collide with (NUL bytes are not valid in text).
                    let id = self.users.id(b"\0");
                    self.null_user = Some(id);
                    id
                }
            },
        };
        if user as usize == self.accs.len() {
            self.accs.push(UserAcc {
                total: 0,
                errors: 0,
                warnings: 0,
                services: Vec::new(),
                first: ts,
                last: ts,
                dense: Vec::new(),
                tokens: FastMap::default(),
            });
        }
        let service = self.services.id(service);
        let acc = &mut self.accs[user as usize];
        acc.total += 1;
        acc.errors += i64::from(level >= 4);
        acc.warnings += i64::from(level == 3);
        acc.first = acc.first.min(ts);
        acc.last = acc.last.max(ts);
        if let Err(at) = acc.services.binary_search(&service) {
            acc.services.insert(at, service);
        }
        for token in tokens {
            let id = self.tokens.id(token);
            if id < self.stop_words {
                continue;
            }
            if id as usize == self.day_counts.len() {
                self.day_counts.push(0);
            }
            self.day_counts[id as usize] += 1;
            acc.count(id, 1);
        }
    }

    /// The day's figures, with each user's `user_top` keywords and the day's `day_top`; events without
    /// a user_id are summarized under `no_user` (together with a user_id equal to it, as COALESCE does).
    pub fn finish(self, user_top: usize, day_top: usize, no_user: &str) -> Result<DaySummary, String> {
        let users = self.users.into_names()?;
        let services = self.services.into_names()?;
        let tokens = self.tokens.into_names()?;
        let by_count = |a: &(i64, u32), b: &(i64, u32)| -> Ordering {
            b.0.cmp(&a.0).then_with(|| tokens[a.1 as usize].as_bytes().cmp(tokens[b.1 as usize].as_bytes()))
        };
        let top = |mut counts: Vec<(i64, u32)>, n: usize| -> Vec<(String, i64)> {
            if counts.len() > n && n > 0 {
                counts.select_nth_unstable_by(n - 1, by_count);
            }
            counts.truncate(n);
            counts.sort_unstable_by(by_count);
            counts.into_iter().map(|(c, id)| (tokens[id as usize].clone(), c)).collect()
        };

        // Merge the NULL bucket into a user_id equal to `no_user`, if both exist.
        let mut merged: std::collections::BTreeMap<String, UserAcc> = std::collections::BTreeMap::new();
        for (id, acc) in self.accs.into_iter().enumerate() {
            let name = if Some(id as u32) == self.null_user { no_user.to_owned() } else { users[id].clone() };
            match merged.entry(name) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(acc);
                }
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    let into = o.get_mut();
                    into.total += acc.total;
                    into.errors += acc.errors;
                    into.warnings += acc.warnings;
                    into.first = into.first.min(acc.first);
                    into.last = into.last.max(acc.last);
                    for &s in &acc.services {
                        if let Err(at) = into.services.binary_search(&s) {
                            into.services.insert(at, s);
                        }
                    }
                    for (c, t) in acc.counts() {
                        into.count(t, c as u32);
                    }
                }
            }
        }

        let time = |micros: i64| DateTime::from_timestamp_micros(micros).ok_or_else(|| "a ts out of range".to_owned());
        let mut rows = Vec::with_capacity(merged.len());
        // BTreeMap<String> iterates in byte order.
        for (user_id, acc) in merged {
            let mut service_names: Vec<String> = acc.services.iter().map(|&s| services[s as usize].clone()).collect();
            service_names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            let (total, errors, warnings, first, last) = (acc.total, acc.errors, acc.warnings, acc.first, acc.last);
            let counts = acc.counts();
            rows.push(UserSummary {
                user_id,
                total,
                errors,
                warnings,
                services: service_names,
                first_seen: time(first)?,
                last_seen: time(last)?,
                top_keywords: top(counts, user_top),
            });
        }
        let day: Vec<(i64, u32)> =
            self.day_counts.iter().enumerate().filter(|&(_, &c)| c > 0).map(|(id, &c)| (c as i64, id as u32)).collect();
        Ok(DaySummary { users: rows, keywords: top(day, day_top) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (user_id, level, service, ts, tokens).
    type Event<'a> = (Option<&'a str>, i16, &'a str, i64, &'a [&'a str]);

    #[test]
    fn counts_per_user_and_ranks_by_count_then_bytes() {
        let mut day = DayCount::new(["the".as_bytes(), "to".as_bytes()]);
        let events: &[Event] = &[
            (Some("b"), 4, "s2", 10, &["zeta", "the", "Ärger"]),
            (None, 3, "s1", 5, &["zeta", "alpha"]),
            (Some("b"), 1, "s1", 7, &["zeta", "beta"]),
            (Some("(none)"), 0, "s3", 1, &[]),
        ];
        for (user, level, service, ts, tokens) in events {
            day.event(user.map(str::as_bytes), *level, service.as_bytes(), *ts, tokens.iter().map(|t| t.as_bytes()));
        }
        let day = day.finish(2, 3, "(none)").unwrap();
        let names: Vec<&str> = day.users.iter().map(|u| u.user_id.as_str()).collect();
        assert_eq!(names, ["(none)", "b"], "events without a user_id join a user_id equal to the bucket's name");
        let none = &day.users[0];
        assert_eq!((none.total, none.errors, none.warnings), (2, 0, 1));
        assert_eq!(none.services, ["s1", "s3"]);
        assert_eq!((none.first_seen.timestamp_micros(), none.last_seen.timestamp_micros()), (1, 5));
        let b = &day.users[1];
        assert_eq!((b.total, b.errors, b.warnings), (2, 1, 0));
        assert_eq!(b.services, ["s1", "s2"]);
        assert_eq!(b.top_keywords, [("zeta".to_owned(), 2), ("beta".to_owned(), 1)], "stop words are not counted");
        assert_eq!(day.keywords, [("zeta".to_owned(), 3), ("alpha".to_owned(), 1), ("beta".to_owned(), 1)]);
    }

    #[test]
    fn many_tokens_beyond_the_dense_ones_are_counted_alike() {
        let mut day = DayCount::new([]);
        let words: Vec<String> = (0..3 * DENSE_TOKENS).map(|i| format!("w{i:05}")).collect();
        for round in 0..2 {
            let tokens = words.iter().skip(round).map(|w| w.as_bytes());
            day.event(Some(b"u"), 2, b"s", 0, tokens);
        }
        let day = day.finish(3, 2, "(none)").unwrap();
        assert_eq!(
            day.users[0].top_keywords,
            [("w00001".to_owned(), 2), ("w00002".to_owned(), 2), ("w00003".to_owned(), 2)]
        );
        assert_eq!(day.keywords, [("w00001".to_owned(), 2), ("w00002".to_owned(), 2)]);
    }
}
