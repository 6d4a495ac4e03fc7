//! A window's per-service counts kept between questions, so that the store answers the next second's
//! `by_service` ranking from the rows that changed instead of aggregating the whole window again.
//!
//! An hour of 100k services costs PostgreSQL ~0.65 CPU seconds to aggregate (docs/BENCHMARKS.md,
//! cardinality), and a live window is a new question every second. Moving the window by a second
//! changes the counts only by the rows of the second that left, the second that entered and the rows
//! stored since; the store adapter finds those (src/db/stats.rs) and this type applies them and ranks.

use std::collections::HashMap;

use super::stats::{by_errors_then_name, ErrorStats, OtherServices, ServiceStats};

/// Per-service totals and errors of one window, as of the store snapshot they were counted in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranking {
    counts: HashMap<Box<str>, (u64, u64)>,
    total: u64,
    errors: u64,
}

/// A change that would make a count negative: the rows removed were never counted, so the counts
/// no longer describe the store and must be computed again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the window's counts of service {service:?} would go below zero ({total} events, {errors} errors)")]
pub struct Inconsistent {
    pub service: String,
    pub total: i64,
    pub errors: i64,
}

impl Ranking {
    /// The counts of a whole window: (service, total, errors) per service, each service once.
    pub fn counted(rows: impl IntoIterator<Item = (String, u64, u64)>) -> Ranking {
        let mut ranking = Ranking::default();
        for (service, total, errors) in rows {
            if total == 0 {
                continue;
            }
            ranking.total += total;
            ranking.errors += errors;
            let entry = ranking.counts.entry(service.into_boxed_str()).or_default();
            entry.0 += total;
            entry.1 += errors;
        }
        ranking
    }

    /// How many services have events in the window.
    pub fn services(&self) -> usize {
        self.counts.len()
    }

    /// Adds a signed change to one service's counts (events that entered the window or were stored
    /// since, less those that left it). A service whose count reaches zero leaves the ranking.
    pub fn apply(&mut self, service: &str, total: i64, errors: i64) -> Result<(), Inconsistent> {
        let (had_total, had_errors) = self.counts.get(service).copied().unwrap_or_default();
        let now_total = had_total as i64 + total;
        let now_errors = had_errors as i64 + errors;
        if now_total < 0 || now_errors < 0 || now_errors > now_total {
            return Err(Inconsistent { service: service.to_owned(), total: now_total, errors: now_errors });
        }
        self.total = (self.total as i64 + total) as u64;
        self.errors = (self.errors as i64 + errors) as u64;
        if now_total == 0 {
            self.counts.remove(service);
        } else if let Some(entry) = self.counts.get_mut(service) {
            *entry = (now_total as u64, now_errors as u64);
        } else {
            self.counts.insert(service.into(), (now_total as u64, now_errors as u64));
        }
        Ok(())
    }

    /// The answer every source gives: the `limit` services with the most errors (then by name), the
    /// rest summed in `other`. Only the listed ones are ordered: O(services), not a sort of all.
    pub fn answer(&self, limit: usize) -> ErrorStats {
        let mut all: Vec<ServiceStats> = Vec::new();
        if self.counts.len() <= limit {
            all.extend(self.counts.iter().map(|(s, &(total, errors))| ServiceStats {
                service: s.to_string(),
                total,
                errors,
            }));
        } else {
            // Rank borrowed entries, and own only the listed names.
            let mut entries: Vec<(&str, u64, u64)> =
                self.counts.iter().map(|(s, &(total, errors))| (&**s, total, errors)).collect();
            let order = |a: &(&str, u64, u64), b: &(&str, u64, u64)| b.2.cmp(&a.2).then_with(|| a.0.cmp(b.0));
            if limit > 0 {
                entries.select_nth_unstable_by(limit - 1, order);
            }
            entries.truncate(limit);
            all.extend(entries.into_iter().map(|(service, total, errors)| ServiceStats {
                service: service.to_owned(),
                total,
                errors,
            }));
        }
        let listed_total: u64 = all.iter().map(|s| s.total).sum();
        let listed_errors: u64 = all.iter().map(|s| s.errors).sum();
        all.sort_by(by_errors_then_name);
        ErrorStats {
            total: self.total,
            errors: self.errors,
            by_service: all,
            other: OtherServices { total: self.total - listed_total, errors: self.errors - listed_errors },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services(n: u64) -> Vec<(String, u64, u64)> {
        (0..n).map(|i| (format!("s{i:03}"), 10 + i % 7, i % 5)).collect()
    }

    #[test]
    fn answers_as_the_other_sources_do() {
        for limit in [0, 1, 3, 100, 500] {
            let rows = services(120);
            let ranking = Ranking::counted(rows.clone());
            let expected = ErrorStats::from_services(
                rows.into_iter().map(|(service, total, errors)| ServiceStats { service, total, errors }),
                None,
                limit,
            );
            assert_eq!(ranking.answer(limit), expected, "limit {limit}");
        }
    }

    #[test]
    fn changes_move_services_in_and_out_and_keep_the_sums() {
        let mut ranking = Ranking::counted(vec![("a".into(), 3, 1), ("b".into(), 2, 2)]);
        ranking.apply("a", -3, -1).unwrap();
        ranking.apply("c", 4, 3).unwrap();
        ranking.apply("b", 1, 0).unwrap();
        assert_eq!(ranking.services(), 2);
        let answer = ranking.answer(1);
        assert_eq!((answer.total, answer.errors), (7, 5));
        assert_eq!(answer.by_service, vec![ServiceStats { service: "c".into(), total: 4, errors: 3 }]);
        assert_eq!(answer.other, OtherServices { total: 3, errors: 2 });
        assert_eq!(ranking, Ranking::counted(vec![("b".into(), 3, 2), ("c".into(), 4, 3)]));
    }

    #[test]
    fn removing_what_was_never_counted_is_refused_and_changes_nothing() {
        let mut ranking = Ranking::counted(vec![("a".into(), 2, 1)]);
        let before = ranking.clone();
        assert!(ranking.apply("a", -3, 0).is_err());
        assert!(ranking.apply("a", 0, -2).is_err());
        assert!(ranking.apply("a", -2, 0).is_err(), "errors would exceed the events");
        assert!(ranking.apply("z", -1, 0).is_err());
        assert_eq!(ranking, before);
    }

    /// What one kept service costs, the figure the store adapter's bound on kept counts is chosen
    /// from (`db::ranking::MAX_KEPT_SERVICES`). Run alone:
    /// `cargo test -p actors bytes_per_kept_service -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn bytes_per_kept_service() {
        fn rss_bytes() -> u64 {
            let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
            statm.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) * 4_096
        }
        let n = 250_000u64;
        let before = rss_bytes();
        let ranking = Ranking::counted((0..n).map(|i| (format!("service-{i:06}"), 6, 2)));
        let after = rss_bytes();
        println!(
            "{} bytes for {n} services named like service-000001: {} bytes a service",
            after - before,
            (after - before) / n
        );
        assert_eq!(ranking.services(), n as usize);
    }
}
