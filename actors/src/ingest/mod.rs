//! The ingest spine: ConsumerActor (one per partition) → WriterActor pool → EventStore.

pub mod batch;
pub mod consumer;
pub mod writer;

pub use batch::{Batch, BatchBuilder, RawMessage, RejectRecord, StoredEvent, SERVICE_HEADER};
pub use consumer::{Committed, ConsumerActor, ConsumerConfig, ConsumerParts, ConsumerStats};
pub use writer::{Backoff, WriteBatch, WriterActor, WriterPool, WriterStats};

#[cfg(test)]
mod tests;
