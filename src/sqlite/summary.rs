//! The daily jobs over SQLite (summary, retention) and reading a summarized day back.
//! STUB (helper R fills it).

use actors::ports::summary::SummarizedDay;
use actors::ports::{DailyJobs, PartitionChanges, StoreError, SummaryReader, SummaryRun};
use async_trait::async_trait;
use chrono::NaiveDate;
use slog::Logger;

use super::SqliteDb;

/// `summary --date D` on the embedded store: one idempotent run.
pub async fn summarize_day(_db: &SqliteDb, _day: NaiveDate, _log: &Logger) -> anyhow::Result<SummaryRun> {
    anyhow::bail!("the SQLite summary is not written yet")
}

pub struct SqliteDailyJobs {
    #[allow(dead_code)]
    db: SqliteDb,
    #[allow(dead_code)]
    log: Logger,
}

impl SqliteDailyJobs {
    pub fn new(db: SqliteDb, log: &Logger) -> SqliteDailyJobs {
        SqliteDailyJobs { db, log: log.clone() }
    }
}

#[async_trait]
impl DailyJobs for SqliteDailyJobs {
    async fn lead(&self) -> Result<bool, StoreError> {
        Ok(true)
    }
    async fn last_summarized(&self) -> Result<Option<NaiveDate>, StoreError> {
        Err(StoreError::Unavailable("not written yet".into()))
    }
    async fn summarize(&self, _day: NaiveDate) -> Result<SummaryRun, StoreError> {
        Err(StoreError::Unavailable("not written yet".into()))
    }
    async fn maintain_partitions(
        &self,
        _today: NaiveDate,
        _ahead_days: u32,
        _retention_days: u32,
    ) -> Result<PartitionChanges, StoreError> {
        Err(StoreError::Unavailable("not written yet".into()))
    }
}

pub struct SqliteSummaryReader {
    #[allow(dead_code)]
    db: SqliteDb,
}

impl SqliteSummaryReader {
    pub fn new(db: SqliteDb) -> SqliteSummaryReader {
        SqliteSummaryReader { db }
    }
}

#[async_trait]
impl SummaryReader for SqliteSummaryReader {
    async fn day(&self, _day: NaiveDate, _user: Option<&str>, _limit: i64) -> Result<Option<SummarizedDay>, String> {
        Err("not written yet".into())
    }
}
