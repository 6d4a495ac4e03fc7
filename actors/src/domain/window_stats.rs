//! Answers: what a window holds, whichever source computed it.

use serde::{Deserialize, Serialize};

/// The seconds `[from, to)` of a window (epoch seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WindowRange {
    pub from: i64,
    pub to: i64,
}

impl WindowRange {
    /// The window of `seconds` ending at `to`.
    pub fn ending_at(to: i64, seconds: u64) -> WindowRange {
        WindowRange { from: to - seconds as i64, to }
    }

    pub fn contains(&self, second: i64) -> bool {
        self.from <= second && second < self.to
    }
}

/// Totals and errors of one service in a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStats {
    pub service: String,
    pub total: u64,
    pub errors: u64,
}

/// How many services `by_service` lists when the caller does not say (`limit`).
pub const DEFAULT_SERVICE_LIMIT: usize = 100;
/// The most `limit` may ask for: beyond it an answer is megabytes, and a caller wanting every
/// service's detail wants the store's logs, not a window answer.
pub const MAX_SERVICE_LIMIT: usize = 1_000;

/// The services of a window left out of `by_service`, summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OtherServices {
    pub total: u64,
    pub errors: u64,
}

/// Errors in a window, overall and for its `limit` services with the most errors (errors
/// descending, then service name); the services after them are summed in `other`, so that
/// `total` = Σ `by_service.total` + `other.total` (the same for errors), whichever source answers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ErrorStats {
    pub total: u64,
    pub errors: u64,
    pub by_service: Vec<ServiceStats>,
    #[serde(default)]
    pub other: OtherServices,
}

/// The order of `by_service`: most errors first, then by name (so that ties are stable).
pub fn by_errors_then_name(a: &ServiceStats, b: &ServiceStats) -> std::cmp::Ordering {
    b.errors.cmp(&a.errors).then_with(|| a.service.cmp(&b.service))
}

impl ErrorStats {
    /// Builds the answer from per-service counts, keeping only `service` when given, listing the
    /// `limit` first in [`by_errors_then_name`] order and summing the rest into `other`.
    pub fn from_services(
        services: impl IntoIterator<Item = ServiceStats>,
        only: Option<&str>,
        limit: usize,
    ) -> ErrorStats {
        let mut by_service: Vec<ServiceStats> =
            services.into_iter().filter(|s| only.is_none_or(|o| o == s.service) && s.total > 0).collect();
        let total = by_service.iter().map(|s| s.total).sum();
        let errors = by_service.iter().map(|s| s.errors).sum();
        let mut other = OtherServices::default();
        if by_service.len() > limit {
            // Only the first `limit` need ordering: the rest are summed whatever their order.
            by_service.select_nth_unstable_by(limit, by_errors_then_name);
            for rest in by_service.drain(limit..) {
                other.total += rest.total;
                other.errors += rest.errors;
            }
        }
        by_service.sort_by(by_errors_then_name);
        ErrorStats { total, errors, by_service, other }
    }

    /// The answer of a source that ranked and summed itself: `by_service` already the first
    /// `limit` (put in [`by_errors_then_name`] order here), the rest in `other`.
    pub fn listed(mut by_service: Vec<ServiceStats>, other: OtherServices) -> ErrorStats {
        by_service.retain(|s| s.total > 0);
        by_service.sort_by(by_errors_then_name);
        ErrorStats {
            total: by_service.iter().map(|s| s.total).sum::<u64>() + other.total,
            errors: by_service.iter().map(|s| s.errors).sum::<u64>() + other.errors,
            by_service,
            other,
        }
    }

    /// errors / total, 0 for an empty window.
    pub fn error_rate(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.errors as f64 / self.total as f64
        }
    }
}

/// A keyword and how many events carried it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeywordCount {
    pub keyword: String,
    pub count: u64,
}

/// Most frequent first, then alphabetical; at most `limit`; zero counts left out.
pub fn top_keywords(counts: impl IntoIterator<Item = KeywordCount>, limit: usize) -> Vec<KeywordCount> {
    let mut all: Vec<KeywordCount> = counts.into_iter().filter(|k| k.count > 0).collect();
    all.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.keyword.cmp(&b.keyword)));
    all.truncate(limit);
    all
}
