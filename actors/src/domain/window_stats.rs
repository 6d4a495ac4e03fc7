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

/// Errors in a window, overall and per service (sorted by service).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ErrorStats {
    pub total: u64,
    pub errors: u64,
    pub by_service: Vec<ServiceStats>,
}

impl ErrorStats {
    /// Builds the answer from per-service counts, keeping only `service` when given.
    pub fn from_services(services: impl IntoIterator<Item = ServiceStats>, only: Option<&str>) -> ErrorStats {
        let mut by_service: Vec<ServiceStats> =
            services.into_iter().filter(|s| only.is_none_or(|o| o == s.service) && s.total > 0).collect();
        by_service.sort_by(|a, b| a.service.cmp(&b.service));
        ErrorStats {
            total: by_service.iter().map(|s| s.total).sum(),
            errors: by_service.iter().map(|s| s.errors).sum(),
            by_service,
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
