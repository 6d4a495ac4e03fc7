//! The ingest spine: ConsumerActor (one per partition) → WriterActor pool → EventStore.

/// Batches are domain types (the ports speak in them); the old path keeps working.
pub use crate::domain::batch;
pub mod consumer;
pub mod writer;

pub use batch::{Batch, BatchBuilder, RawMessage, RejectRecord, StoredEvent, SERVICE_HEADER};
pub use consumer::{Committed, ConsumerActor, ConsumerConfig, ConsumerParts, ConsumerStats};
pub use writer::{Backoff, WriteBatch, WriterActor, WriterPool, WriterStats};

#[cfg(test)]
mod tests;
