//! `SummaryReader`: reading a summarized day back (the port GET /stats/summary asks).

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

/// One user's row of a summarized day, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct UserDay {
    pub user_id: String,
    pub total: i64,
    pub errors: i64,
    pub warnings: i64,
    pub error_rate: f64,
    pub services: Vec<String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// `[{keyword, count}]`, as stored.
    pub top_keywords: Value,
}

/// A summarized day as the newest successful run left it.
#[derive(Debug, Clone, PartialEq)]
pub struct SummarizedDay {
    pub summarized_at: DateTime<Utc>,
    /// The day's dead letters by reason, as the run counted them.
    pub invalid_rows: Value,
    /// By total (descending), then user_id.
    pub users: Vec<UserDay>,
    /// (keyword, count) by count (descending), then keyword bytes.
    pub keywords: Vec<(String, i64)>,
}

/// Reads summarized days.
#[async_trait]
pub trait SummaryReader: Send + Sync + 'static {
    /// `day` (only `user`, if given), at most `limit` users and keywords; `None` when no run of the
    /// day succeeded. The error says why the store did not answer.
    async fn day(&self, day: NaiveDate, user: Option<&str>, limit: i64) -> Result<Option<SummarizedDay>, String>;
}
