//! The ports: what the core needs from the outside world, as traits, one file per concern. The
//! `log-analyzer` crate implements them with Kafka, PostgreSQL and Redis; tests implement them in
//! memory. A port speaks only in domain types (`crate::domain`) or types of its own file, never in
//! those of the actors that use it.

pub mod clock;
pub mod generator;
pub mod intake;
pub mod jobs;
pub mod partition;
pub mod store;
pub mod summary;
pub mod windows;

pub use clock::{Clock, SharedClock, SystemClock};
pub use generator::{EventSink, SinkError};
pub use intake::IntakeSink;
pub use jobs::{DailyJobs, PartitionChanges, SummaryRun};
pub use partition::PartitionControl;
pub use store::{EventStore, OffsetStore, StoreError};
pub use summary::SummaryReader;
pub use windows::{
    AnswerCache, BucketSource, CannotAnswer, DeltaSink, PartitionOffsets, Rebuilt, WindowAnswer, WindowQuery,
    WindowQuestion,
};
