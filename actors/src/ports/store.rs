//! Durable storage of events and partition positions (PostgreSQL in production).

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::domain::batch::Batch;

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
