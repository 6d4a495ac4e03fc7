//! The ring of per-second and per-minute buckets that holds the horizon.

use std::collections::HashMap;
use std::sync::Arc;

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

/// The key under which each bucket counts, together, the events of services that have no buckets
/// of their own (over the cap). No service is called so: a service name is never empty.
pub const UNTRACKED: &str = "";

/// The window holds events of services over the cap, and the question needs their detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the window holds events of services beyond MAX_LIVE_SERVICES, whose detail is kept only in the store")]
pub struct PartlyUntracked;

#[derive(Debug, Clone, Copy)]
struct Live {
    /// The newest second it has events in: once older than the horizon, it is forgotten.
    newest: i64,
    /// Admitted while untracked events were held: some of its earlier events may be among them.
    tainted: bool,
}

/// Which services have buckets of their own: at most `cap`, first come first served, each
/// forgotten once its newest event has left the horizon (freeing its place).
#[derive(Debug, Clone)]
struct LiveServices {
    cap: usize,
    services: HashMap<Arc<str>, Live>,
    tainted: usize,
    /// The newest second holding untracked events, while one is still within the horizon.
    untracked_until: Option<i64>,
    /// The oldest second held, as last told by `forget_before`.
    oldest: i64,
}

impl LiveServices {
    fn new(cap: usize) -> LiveServices {
        LiveServices { cap, services: HashMap::new(), tainted: 0, untracked_until: None, oldest: i64::MIN }
    }

    /// Whether `service`'s events of `second` get buckets of their own.
    fn admit(&mut self, service: &Arc<str>, second: i64) -> bool {
        if let Some(live) = self.services.get_mut(service) {
            live.newest = live.newest.max(second);
            return true;
        }
        if self.services.len() < self.cap {
            let tainted = self.untracked_until.is_some();
            self.tainted += usize::from(tainted);
            self.services.insert(service.clone(), Live { newest: second, tainted });
            return true;
        }
        self.untracked_until = Some(self.untracked_until.map_or(second, |u| u.max(second)));
        false
    }

    /// Whether every event of `service` within the horizon is in its own buckets.
    fn exact(&self, service: &str) -> bool {
        self.services.get(service).is_some_and(|live| !live.tainted)
    }

    fn is_tainted(&self, service: &str) -> bool {
        self.tainted > 0 && self.services.get(service).is_some_and(|live| live.tainted)
    }

    fn forget_before(&mut self, first: i64) {
        if first <= self.oldest {
            return;
        }
        self.oldest = first;
        if self.untracked_until.is_some_and(|u| u < first) {
            // No untracked event is held any more: nobody's detail can be missing from its buckets.
            self.untracked_until = None;
            if self.tainted > 0 {
                self.services.values_mut().for_each(|live| live.tainted = false);
                self.tainted = 0;
            }
        }
        if self.services.len() >= self.cap {
            let before = self.services.len();
            self.services.retain(|_, live| live.newest >= first);
            if before != self.services.len() {
                self.tainted = self.services.values().filter(|live| live.tainted).count();
            }
        }
    }

    fn clear(&mut self) {
        *self = LiveServices::new(self.cap);
    }
}

/// Seconds and minutes over the horizon: a window is its whole minutes plus the seconds at its edges.
///
/// Memory policy: at most `cap` services (`MAX_LIVE_SERVICES`) have buckets of their own; the
/// events of any other service are still counted, exactly, in each bucket's [`UNTRACKED`] entry,
/// so a window's total, errors and keyword counts stay exact whatever the number of services. What
/// is lost is only the per-service detail of the untracked services: a question that needs it
/// (one service's counts, or a `by_service` ranking that an untracked service could enter) gets
/// [`PartlyUntracked`], and the read path asks the store instead. Memory is thus bounded by the
/// cap × the horizon's buckets, never by the number of distinct services seen.
#[derive(Debug, Clone)]
pub struct Buckets {
    seconds: BucketRing,
    minutes: BucketRing,
    live: LiveServices,
}

impl Buckets {
    /// Enough room for `span` seconds, every service with buckets of its own.
    pub fn new(span: i64) -> Buckets {
        Buckets::with_service_cap(span, usize::MAX)
    }

    /// Enough room for `span` seconds, at most `cap` services with buckets of their own.
    pub fn with_service_cap(span: i64, cap: usize) -> Buckets {
        let span = span.max(1) as usize;
        Buckets {
            seconds: BucketRing::new(span + 1, 1),
            minutes: BucketRing::new(span / 60 + 2, 60),
            live: LiveServices::new(cap),
        }
    }

    /// Adds the counts of `second`; services over the cap are counted as [`UNTRACKED`].
    pub fn add(&mut self, second: i64, counts: &SecondCounts) {
        let untracked_before = self.live.untracked_until;
        let mut routed: Option<SecondCounts> = None;
        for (service, c) in &counts.by_service {
            if self.live.admit(service, second) {
                if let Some(routed) = &mut routed {
                    routed.by_service.entry(service.clone()).or_default().add(c);
                }
                continue;
            }
            let routed = routed.get_or_insert_with(|| {
                // The services before this one were all admitted.
                let mut admitted = SecondCounts::default();
                for (name, c) in counts.by_service.range(..service.clone()) {
                    admitted.by_service.insert(name.clone(), c.clone());
                }
                admitted
            });
            routed.by_service.entry(Arc::from(UNTRACKED)).or_default().add(c);
        }
        let counts = routed.as_ref().unwrap_or(counts);
        self.seconds.add(second, counts);
        self.minutes.add(second, counts);
        debug_assert!(routed.is_some() || self.live.untracked_until == untracked_before);
    }

    /// Admits first, within the cap, the services given (those worth their own buckets most),
    /// each with the newest second it has events in.
    pub fn admit_first(&mut self, services: impl IntoIterator<Item = (Arc<str>, i64)>) {
        for (service, newest) in services {
            if self.live.services.len() >= self.live.cap {
                break;
            }
            self.live.admit(&service, newest);
        }
    }

    /// Time moved on: `first` is now the oldest second held. Services with no event since then
    /// give their place up.
    pub fn forget_before(&mut self, first: i64) {
        self.live.forget_before(first);
    }

    pub fn clear(&mut self) {
        self.seconds.clear();
        self.minutes.clear();
        self.live.clear();
    }

    /// Seconds holding counts.
    pub fn occupied_seconds(&self) -> usize {
        self.seconds.occupied()
    }

    /// Services with buckets of their own.
    pub fn live_services(&self) -> usize {
        self.live.services.len()
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

    /// Events and errors of the window, its `limit` services with the most errors listed.
    /// With untracked events in the window, the listing is given only when provably the one the
    /// store would give: every listed service exact, and the last listed has more errors than any
    /// unlisted service could have (the untracked errors, plus a tainted service's own).
    pub fn errors<'a>(
        &'a self,
        range: WindowRange,
        service: Option<&str>,
        limit: usize,
    ) -> Result<ErrorStats, PartlyUntracked> {
        let mut per: HashMap<&str, (u64, u64)> = HashMap::new();
        let mut untracked = (0u64, 0u64);
        for bucket in self.each(range) {
            if let Some(c) = bucket.by_service.get(UNTRACKED) {
                untracked.0 += c.total;
                untracked.1 += c.errors;
            }
            let mut count = |name: &'a str, c: &Counts| {
                let entry = per.entry(name).or_default();
                entry.0 += c.total;
                entry.1 += c.errors;
            };
            match service {
                Some(only) => {
                    if let Some((name, c)) = bucket.by_service.get_key_value(only) {
                        count(name, c);
                    }
                }
                None => {
                    for (name, c) in &bucket.by_service {
                        if &**name != UNTRACKED {
                            count(name, c);
                        }
                    }
                }
            }
        }
        let tainted_errors =
            per.iter().filter(|(name, _)| self.live.is_tainted(name)).map(|(_, (_, errors))| *errors).max();
        let mut stats = ErrorStats::from_services(
            per.into_iter().map(|(service, (total, errors))| ServiceStats {
                service: service.to_owned(),
                total,
                errors,
            }),
            service,
            limit,
        );
        if untracked.0 == 0 {
            return Ok(stats);
        }
        if let Some(only) = service {
            return if self.live.exact(only) { Ok(stats) } else { Err(PartlyUntracked) };
        }
        let listed_exact = stats.by_service.len() == limit
            && stats.by_service.iter().all(|s| self.live.exact(&s.service))
            && stats.by_service.last().is_some_and(|last| last.errors > untracked.1 + tainted_errors.unwrap_or(0));
        if !listed_exact {
            return Err(PartlyUntracked);
        }
        stats.total += untracked.0;
        stats.errors += untracked.1;
        stats.other.total += untracked.0;
        stats.other.errors += untracked.1;
        Ok(stats)
    }

    /// Events of the window carrying the keyword of `index` (only of `service` when given).
    pub fn keyword(&self, range: WindowRange, index: usize, service: Option<&str>) -> Result<u64, PartlyUntracked> {
        let hits = |c: &Counts| c.keywords.get(index).copied().unwrap_or(0);
        match service {
            None => Ok(self.each(range).flat_map(|bucket| bucket.by_service.values()).map(hits).sum()),
            Some(only) => {
                let mut untracked = 0;
                let mut found = 0;
                for bucket in self.each(range) {
                    untracked += bucket.by_service.get(UNTRACKED).map_or(0, |c| c.total);
                    found += bucket.by_service.get(only).map_or(0, hits);
                }
                if untracked > 0 && !self.live.exact(only) {
                    return Err(PartlyUntracked);
                }
                Ok(found)
            }
        }
    }

    /// Every tracked keyword's count in the window (untracked services' events included).
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
            let stats = buckets.errors(range, None, 100).unwrap();
            let in_range: Vec<_> = truth.iter().filter(|(s, _, _)| range.contains(*s)).collect();
            assert_eq!(stats.total, in_range.len() as u64, "{range:?}");
            assert_eq!(stats.errors, in_range.iter().map(|t| t.2).sum::<u64>(), "{range:?}");
            let a = buckets.errors(range, Some("a"), 100).unwrap();
            assert_eq!(a.total, in_range.iter().filter(|t| t.1 == "a").count() as u64);
            assert!(a.by_service.iter().all(|s| s.service == "a"));
            assert_eq!(buckets.keyword(range, 0, None).unwrap(), stats.errors);
        }
    }

    #[test]
    fn recycled_slots_forget_old_counts() {
        let mut buckets = Buckets::new(120);
        buckets.add(1_000, &one("a", 0, &[]));
        buckets.add(1_000 + 121, &one("a", 0, &[]));
        let old = WindowRange { from: 1_000, to: 1_001 };
        assert_eq!(buckets.errors(old, None, 100).unwrap().total, 0);
        assert_eq!(buckets.errors(WindowRange { from: 1_121, to: 1_122 }, None, 100).unwrap().total, 1);
    }

    fn many(services: &[(&str, u64, u64)]) -> SecondCounts {
        let mut s = SecondCounts::default();
        for (service, total, errors) in services {
            s.by_service
                .insert(Arc::from(*service), Counts { total: *total, errors: *errors, keywords: vec![*errors] });
        }
        s
    }

    const WHOLE: WindowRange = WindowRange { from: 1_000, to: 1_100 };

    /// Over the cap, totals, errors and keywords stay exact; the detail a question needs is either
    /// exact or refused, never wrong.
    #[test]
    fn services_over_the_cap_are_counted_in_the_totals_and_their_detail_is_refused() {
        let mut buckets = Buckets::with_service_cap(600, 2);
        buckets.forget_before(1_000);
        buckets.add(1_000, &many(&[("a", 10, 9), ("b", 10, 8)]));
        buckets.add(1_001, &many(&[("c", 5, 1), ("d", 4, 2), ("a", 1, 0)]));
        assert_eq!(buckets.live_services(), 2);
        let top = buckets.errors(WHOLE, None, 2).unwrap();
        assert_eq!((top.total, top.errors), (30, 20), "the totals count c and d too");
        assert_eq!(top.by_service.iter().map(|s| s.service.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!((top.other.total, top.other.errors), (9, 3));
        assert_eq!(buckets.keyword(WHOLE, 0, None).unwrap(), 20);
        assert_eq!(buckets.errors(WHOLE, Some("a"), 100).unwrap().total, 11, "a live service is exact");
        assert_eq!(buckets.errors(WHOLE, Some("c"), 100), Err(PartlyUntracked));
        assert_eq!(buckets.keyword(WHOLE, 0, Some("d")), Err(PartlyUntracked));
        assert_eq!(buckets.errors(WHOLE, None, 3), Err(PartlyUntracked), "c or d would be listed third");
        // A window without untracked events is answered whole.
        let first = WindowRange { from: 1_000, to: 1_001 };
        assert_eq!(buckets.errors(first, None, 100).unwrap().by_service.len(), 2);
        assert_eq!(buckets.errors(first, Some("c"), 100).unwrap().total, 0);
    }

    #[test]
    fn a_ranking_an_untracked_service_could_enter_is_refused() {
        let mut buckets = Buckets::with_service_cap(600, 1);
        buckets.add(1_000, &many(&[("a", 5, 2)]));
        buckets.add(1_000, &many(&[("b", 5, 3)]));
        // b (untracked) has more errors than a: listing a alone would be wrong.
        assert_eq!(buckets.errors(WHOLE, None, 1), Err(PartlyUntracked));
        let mut buckets = Buckets::with_service_cap(600, 1);
        buckets.add(1_000, &many(&[("a", 5, 2)]));
        buckets.add(1_000, &many(&[("b", 5, 2)]));
        assert_eq!(buckets.errors(WHOLE, None, 1), Err(PartlyUntracked), "a tie sorts b by name: refuse");
    }

    /// Services whose newest event left the horizon free their place; a service admitted while
    /// untracked events are held is exact only once they are gone.
    #[test]
    fn places_are_freed_by_time_and_late_comers_are_exact_once_the_untracked_events_left() {
        let mut buckets = Buckets::with_service_cap(120, 1);
        buckets.forget_before(900);
        buckets.add(990, &many(&[("a", 1, 0)]));
        buckets.add(1_000, &many(&[("b", 1, 1)])); // over the cap: untracked
        buckets.forget_before(995); // a's events are now all older than the horizon
        assert_eq!(buckets.live_services(), 0);
        buckets.add(1_010, &many(&[("b", 2, 2)]));
        assert_eq!(buckets.live_services(), 1);
        let held = WindowRange { from: 995, to: 1_100 };
        assert_eq!(buckets.errors(held, Some("b"), 10), Err(PartlyUntracked), "b's first event is untracked");
        let later = WindowRange { from: 1_001, to: 1_100 };
        assert_eq!(buckets.errors(later, Some("b"), 10).unwrap().total, 2, "no untracked event in the window");
        buckets.forget_before(1_001);
        assert_eq!(buckets.errors(later, None, 10).unwrap().by_service.len(), 1);
        assert_eq!(buckets.errors(later, Some("b"), 10).unwrap().total, 2, "b is exact over the whole horizon now");
    }

    /// However many services pass, at most `cap` have buckets and each second holds at most
    /// `cap` + 1 entries.
    #[test]
    fn memory_is_bounded_by_the_cap_not_by_the_services_seen() {
        let mut buckets = Buckets::with_service_cap(60, 50);
        let mut errors = 0;
        for second in 0..60 {
            buckets.forget_before(second - 60);
            let names: Vec<String> = (0..500).map(|i| format!("svc-{second}-{i}")).collect();
            let seconds: Vec<(&str, u64, u64)> = names.iter().map(|n| (n.as_str(), 1, 1)).collect();
            buckets.add(second, &many(&seconds));
            errors += 500;
        }
        assert_eq!(buckets.live_services(), 50);
        let held: Vec<usize> = (0..60).filter_map(|s| buckets.seconds.unit(s)).map(|c| c.by_service.len()).collect();
        assert!(held.iter().all(|n| *n <= 51), "{held:?}");
        assert_eq!(
            held.iter().sum::<usize>(),
            50 + 60,
            "30,000 services, 50 with buckets, one untracked entry a second"
        );
        let all = buckets.errors(WindowRange { from: 0, to: 60 }, None, 10);
        assert_eq!(all, Err(PartlyUntracked), "an untracked service may rank above the listed ones");
        let keyword = buckets.keyword(WindowRange { from: 0, to: 60 }, 0, None).unwrap();
        assert_eq!(keyword, errors, "keyword counts stay exact");
    }

    fn rss_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        statm.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) * 4_096
    }

    /// What one service costs in memory, the figure MAX_LIVE_SERVICES's default is chosen from
    /// (README, Operations). Run alone, so that no other test allocates meanwhile:
    /// `cargo test -p actors bytes_per_live_service -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn bytes_per_live_service() {
        let (services, seconds, keywords) = (1_000usize, 600i64, 8usize);
        let names: Vec<Arc<str>> = (0..services).map(|i| Arc::from(format!("service-{i}").as_str())).collect();
        let before = rss_bytes();
        let mut buckets = Buckets::with_service_cap(seconds, services);
        for second in 0..seconds {
            let mut s = SecondCounts::default();
            for name in &names {
                s.by_service.insert(name.clone(), Counts { total: 3, errors: 1, keywords: vec![1; keywords] });
            }
            buckets.add(second, &s);
        }
        let after = rss_bytes();
        let cells = services as u64 * (seconds as u64 + seconds as u64 / 60);
        let per_cell = (after - before) / cells;
        println!(
            "{} bytes for {cells} (second or minute, service) cells: {per_cell} bytes a cell; a service with \
             events every second of a 1 h horizon (3,725 seconds and 63 minutes held): {} KiB",
            after - before,
            per_cell * (3_725 + 63) / 1_024
        );
        assert!(buckets.live_services() == services);
    }
}
