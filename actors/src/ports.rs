//! The ports: what the actors need from the outside world, as traits. The `log-analyzer` crate
//! implements them with Kafka and PostgreSQL; tests implement them in memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use crate::ingest::batch::Batch;
use crate::schedule::{PartitionChanges, SummaryRun};

/// Why a store could not take a batch. Callers branch on the kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The stored position of the partition is not where the batch starts: another writer (a zombie,
    /// or a new owner after a rebalance) got there first. Nothing was written.
    #[error("fenced: batch starts at offset {batch_from}, but the stored next offset is {stored:?}")]
    Fenced { batch_from: i64, stored: Option<i64> },
    /// The store cannot be reached or failed transiently; the same batch may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store refused the batch's data (a constraint, an encoding error), not its reachability:
    /// retrying the same rows fails the same way. Nothing was written.
    #[error("store rejected the batch: {0}")]
    Rejected(String),
    /// The batch was dropped because its partition was revoked or the process is stopping.
    #[error("batch cancelled: its partition is no longer ours")]
    Cancelled,
}

/// Durable storage of events, dead letters and partition positions, all in one transaction.
#[async_trait]
pub trait EventStore: Send + 'static {
    /// Writes the batch's events and rejects and moves the partition's stored position from
    /// `batch.from` to `batch.to`, atomically. Fails with `Fenced` (writing nothing) when the stored
    /// position is not `batch.from`.
    async fn write(&mut self, batch: &Batch) -> Result<(), StoreError>;

    /// Drops any connection so the next write starts afresh (after a failure).
    fn reset(&mut self);
}

/// Where each partition's ingestion stands: the first offset not yet stored.
#[async_trait]
pub trait OffsetStore: Send + Sync + 'static {
    /// The stored next offset of each partition; partitions never seen start at 0 (and get a row).
    async fn load(&self, topic: &str, partitions: &[i32]) -> Result<BTreeMap<i32, i64>, StoreError>;

    /// Records that offsets `from..to` of the partition can no longer be read (retention deleted
    /// them, or the topic was recreated and `to < from`) and moves the stored next offset from
    /// `from` to `to`, in one transaction fenced like a batch. False (nothing done) when the stored
    /// next offset is not `from`.
    async fn record_gap(&self, topic: &str, partition: i32, from: i64, to: i64) -> Result<bool, StoreError>;
}

/// What a ConsumerActor tells the source of its partition.
pub trait PartitionControl: Send + Sync + 'static {
    /// A batch ending before `next_offset` is durably stored (the source may record it for lag tools).
    fn stored(&self, topic: &str, partition: i32, next_offset: i64);
    /// The partition's position is not what this consumer believed (fenced): restart it from the
    /// stored position. The consumer stops after asking.
    fn restart(&self, topic: &str, partition: i32);
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

/// The time, injectable so tests control it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;
