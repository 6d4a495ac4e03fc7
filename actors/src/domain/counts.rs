//! Per-second counts of events, and what a committed batch adds to them (BucketDelta).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::batch::Batch;
use super::Keyword;

/// The tracked keywords, each with its index in the count vectors.
#[derive(Debug, Clone, Default)]
pub struct KeywordSet {
    keywords: Vec<Keyword>,
    index: HashMap<String, usize>,
}

impl KeywordSet {
    pub fn new(keywords: impl IntoIterator<Item = Keyword>) -> KeywordSet {
        let mut set = KeywordSet::default();
        for k in keywords {
            if !set.index.contains_key(k.as_str()) {
                set.index.insert(k.as_str().to_owned(), set.keywords.len());
                set.keywords.push(k);
            }
        }
        set
    }

    pub fn len(&self) -> usize {
        self.keywords.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keywords.is_empty()
    }

    pub fn position(&self, keyword: &str) -> Option<usize> {
        self.index.get(keyword).copied()
    }

    pub fn get(&self, i: usize) -> &Keyword {
        &self.keywords[i]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Keyword> {
        self.keywords.iter()
    }
}

/// Counts of one service in one second.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: u64,
    pub errors: u64,
    /// Events carrying each tracked keyword, by KeywordSet index.
    pub keywords: Vec<u64>,
}

impl Counts {
    pub(crate) fn add(&mut self, other: &Counts) {
        self.total += other.total;
        self.errors += other.errors;
        if self.keywords.len() < other.keywords.len() {
            self.keywords.resize(other.keywords.len(), 0);
        }
        for (mine, theirs) in self.keywords.iter_mut().zip(&other.keywords) {
            *mine += theirs;
        }
    }
}

/// One second: counts per service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecondCounts {
    pub by_service: BTreeMap<Arc<str>, Counts>,
}

impl SecondCounts {
    pub(crate) fn add(&mut self, other: &SecondCounts) {
        for (service, counts) in &other.by_service {
            self.by_service.entry(service.clone()).or_default().add(counts);
        }
    }
}

/// What one committed batch adds to the buckets, and where in its partition it stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketDelta {
    pub topic: String,
    pub partition: i32,
    pub from: i64,
    pub to: i64,
    pub seconds: BTreeMap<i64, SecondCounts>,
    /// The newest event time in the batch (epoch ms).
    pub newest_ms: Option<i64>,
    /// Seconds of events left out because they were outside `[first, last]`.
    pub skipped_seconds: Vec<i64>,
}

impl BucketDelta {
    /// Counts the batch's events whose second lies in `[first, last]`; others are noted as skipped.
    pub fn from_batch(batch: &Batch, keywords: &KeywordSet, first: i64, last: i64) -> BucketDelta {
        let mut delta = BucketDelta {
            topic: batch.topic.to_string(),
            partition: batch.partition,
            from: batch.from,
            to: batch.to,
            ..BucketDelta::default()
        };
        let mut services: HashMap<&str, Arc<str>> = HashMap::new();
        for stored in &batch.events {
            let e = &stored.event;
            let ms = e.ts.timestamp_millis();
            delta.newest_ms = Some(delta.newest_ms.map_or(ms, |n| n.max(ms)));
            let second = ms.div_euclid(1_000);
            if second < first || second > last {
                delta.skipped_seconds.push(second);
                continue;
            }
            let service = services.entry(e.service.as_str()).or_insert_with(|| Arc::from(e.service.as_str())).clone();
            let counts = delta.seconds.entry(second).or_default().by_service.entry(service).or_default();
            counts.total += 1;
            counts.errors += u64::from(e.level.is_error());
            if !keywords.is_empty() {
                counts.keywords.resize(keywords.len(), 0);
                for token in e.tokens.iter() {
                    if let Some(i) = keywords.position(token) {
                        counts.keywords[i] += 1;
                    }
                }
            }
        }
        delta
    }
}
