//! The daily jobs (summary and partition maintenance) and the lead among schedulers.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::NaiveDate;

use super::store::StoreError;

/// What one summary run of a day wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SummaryRun {
    pub day: NaiveDate,
    /// Rows of `user_log_summary` (one per user, plus the `(none)` bucket).
    pub rows: u64,
    /// Rows of `keyword_daily`.
    pub keywords: u64,
    /// The day's dead letters by reason code.
    pub invalid_rows: BTreeMap<String, u64>,
    pub duration_ms: u64,
}

/// What partition maintenance changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionChanges {
    pub created: Vec<NaiveDate>,
    pub dropped: Vec<NaiveDate>,
}

/// The daily jobs the SchedulerActor runs, and the lead that makes only one scheduler run them.
#[async_trait]
pub trait DailyJobs: Send + Sync + 'static {
    /// Takes or keeps the lead; true while this scheduler is the one that acts. Several schedulers
    /// may ask at once: at most one gets true until it stops or loses its connection.
    async fn lead(&self) -> Result<bool, StoreError>;
    /// The newest day with a successful summary run.
    async fn last_summarized(&self) -> Result<Option<NaiveDate>, StoreError>;
    /// Replaces the summary of `day` (idempotent) and records the run.
    async fn summarize(&self, day: NaiveDate) -> Result<SummaryRun, StoreError>;
    /// Makes the daily partitions from yesterday to `ahead_days` after `today` and drops those older
    /// than `retention_days` before `today`.
    async fn maintain_partitions(
        &self,
        today: NaiveDate,
        ahead_days: u32,
        retention_days: u32,
    ) -> Result<PartitionChanges, StoreError>;
}
