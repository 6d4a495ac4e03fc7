//! The ring of per-second and per-minute buckets that holds the horizon.

use std::collections::BTreeMap;

pub use crate::domain::counts::{BucketDelta, Counts, KeywordSet, SecondCounts};
use crate::domain::window_stats::{ErrorStats, KeywordCount, ServiceStats, WindowRange};

/// Counts per unit of `width` seconds (1: seconds, 60: minutes), in a ring reused as time moves on.
#[derive(Debug, Clone)]
pub struct BucketRing {
    width: i64,
    slots: Vec<(i64, SecondCounts)>,
}

impl BucketRing {
    /// A ring of `len` units of `width` seconds.
    pub fn new(len: usize, width: i64) -> BucketRing {
        BucketRing { width: width.max(1), slots: vec![(i64::MIN, SecondCounts::default()); len.max(1)] }
    }

    fn slot(&self, unit: i64) -> usize {
        unit.rem_euclid(self.slots.len() as i64) as usize
    }

    /// Adds counts of `second` to its unit (the slot is recycled if it held an older unit).
    pub fn add(&mut self, second: i64, counts: &SecondCounts) {
        let unit = second.div_euclid(self.width);
        let i = self.slot(unit);
        let slot = &mut self.slots[i];
        if slot.0 != unit {
            *slot = (unit, SecondCounts::default());
        }
        slot.1.add(counts);
    }

    /// The counts of one unit, if the ring holds it.
    pub fn unit(&self, unit: i64) -> Option<&SecondCounts> {
        let (held, counts) = &self.slots[self.slot(unit)];
        (*held == unit).then_some(counts)
    }

    /// Units that hold counts.
    pub fn occupied(&self) -> usize {
        self.slots.iter().filter(|(u, _)| *u != i64::MIN).count()
    }

    pub fn clear(&mut self) {
        for slot in &mut self.slots {
            *slot = (i64::MIN, SecondCounts::default());
        }
    }
}

/// Seconds and minutes over the horizon: a window is its whole minutes plus the seconds at its edges.
#[derive(Debug, Clone)]
pub struct Buckets {
    seconds: BucketRing,
    minutes: BucketRing,
}

impl Buckets {
    /// Enough room for `span` seconds.
    pub fn new(span: i64) -> Buckets {
        let span = span.max(1) as usize;
        Buckets { seconds: BucketRing::new(span + 1, 1), minutes: BucketRing::new(span / 60 + 2, 60) }
    }

    pub fn add(&mut self, second: i64, counts: &SecondCounts) {
        self.seconds.add(second, counts);
        self.minutes.add(second, counts);
    }

    pub fn clear(&mut self) {
        self.seconds.clear();
        self.minutes.clear();
    }

    /// Seconds holding counts.
    pub fn occupied_seconds(&self) -> usize {
        self.seconds.occupied()
    }

    /// Every bucket of the window, each second counted once.
    fn each(&self, range: WindowRange) -> impl Iterator<Item = &SecondCounts> + '_ {
        let first_minute = range.from.div_euclid(60) + i64::from(range.from.rem_euclid(60) != 0);
        let end_minute = range.to.div_euclid(60);
        let (head, minutes, tail) = if first_minute < end_minute {
            (range.from..first_minute * 60, first_minute..end_minute, end_minute * 60..range.to)
        } else {
            (range.from..range.to, 0..0, 0..0)
        };
        head.chain(tail).filter_map(|s| self.seconds.unit(s)).chain(minutes.filter_map(|m| self.minutes.unit(m)))
    }

    pub fn errors(&self, range: WindowRange, service: Option<&str>) -> ErrorStats {
        let mut per: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for bucket in self.each(range) {
            for (name, counts) in &bucket.by_service {
                if service.is_some_and(|s| s != &**name) {
                    continue;
                }
                let entry = per.entry(name).or_default();
                entry.0 += counts.total;
                entry.1 += counts.errors;
            }
        }
        ErrorStats::from_services(
            per.into_iter().map(|(service, (total, errors))| ServiceStats {
                service: service.to_owned(),
                total,
                errors,
            }),
            service,
        )
    }

    pub fn keyword(&self, range: WindowRange, index: usize, service: Option<&str>) -> u64 {
        self.each(range)
            .flat_map(|bucket| bucket.by_service.iter())
            .filter(|(name, _)| service.is_none_or(|s| s == &***name))
            .map(|(_, counts)| counts.keywords.get(index).copied().unwrap_or(0))
            .sum()
    }

    pub fn keywords(&self, range: WindowRange, keywords: &KeywordSet) -> Vec<KeywordCount> {
        let mut sums = vec![0u64; keywords.len()];
        for bucket in self.each(range) {
            for counts in bucket.by_service.values() {
                for (sum, c) in sums.iter_mut().zip(&counts.keywords) {
                    *sum += c;
                }
            }
        }
        sums.into_iter()
            .enumerate()
            .map(|(i, count)| KeywordCount { keyword: keywords.get(i).as_str().to_owned(), count })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn one(service: &str, errors: u64, keyword_hits: &[u64]) -> SecondCounts {
        let mut s = SecondCounts::default();
        s.by_service.insert(Arc::from(service), Counts { total: 1, errors, keywords: keyword_hits.to_vec() });
        s
    }

    /// Every window over a stretch of random seconds sums to what a plain loop over the seconds gives.
    #[test]
    fn minute_and_second_buckets_agree_with_a_plain_sum() {
        let mut buckets = Buckets::new(3_600);
        let mut truth: Vec<(i64, &str, u64)> = Vec::new();
        let base = 1_795_000_000 - 1_795_000_000 % 60 + 17;
        let mut x: u64 = 12345;
        for i in 0..3_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let second = base + (x >> 33) as i64 % 3_500;
            let service = if i % 3 == 0 { "a" } else { "b" };
            let err = (x >> 20).is_multiple_of(4);
            buckets.add(second, &one(service, u64::from(err), &[u64::from(err)]));
            truth.push((second, service, u64::from(err)));
        }
        for (from_off, len) in [(0, 1), (3, 59), (0, 60), (43, 61), (60, 120), (1, 3_499), (0, 3_500), (599, 1)] {
            let range = WindowRange { from: base + from_off, to: base + from_off + len };
            let stats = buckets.errors(range, None);
            let in_range: Vec<_> = truth.iter().filter(|(s, _, _)| range.contains(*s)).collect();
            assert_eq!(stats.total, in_range.len() as u64, "{range:?}");
            assert_eq!(stats.errors, in_range.iter().map(|t| t.2).sum::<u64>(), "{range:?}");
            let a = buckets.errors(range, Some("a"));
            assert_eq!(a.total, in_range.iter().filter(|t| t.1 == "a").count() as u64);
            assert!(a.by_service.iter().all(|s| s.service == "a"));
            assert_eq!(buckets.keyword(range, 0, None), stats.errors);
        }
    }

    #[test]
    fn recycled_slots_forget_old_counts() {
        let mut buckets = Buckets::new(120);
        buckets.add(1_000, &one("a", 0, &[]));
        buckets.add(1_000 + 121, &one("a", 0, &[]));
        let old = WindowRange { from: 1_000, to: 1_001 };
        assert_eq!(buckets.errors(old, None).total, 0);
        assert_eq!(buckets.errors(WindowRange { from: 1_121, to: 1_122 }, None).total, 1);
    }
}
