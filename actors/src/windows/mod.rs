//! Live windows: per-second buckets of event time, kept by the WindowAggregatorActor.

pub mod aggregator;
pub mod buckets;
mod coalesce;
pub mod forwarder;
mod memory;
#[cfg(test)]
mod memory_tests;
pub mod ranking;
pub mod read_path;
#[cfg(test)]
mod read_path_tests;
/// The answers are domain types (the ports speak in them); the old path keeps working.
pub use crate::domain::window_stats as stats;

pub use aggregator::{
    AggregatorStatus, BucketSource, DeltaSink, Ownership, PartitionOffsets, QueryErrors, QueryKeyword, QueryStatus,
    QueryTopKeywords, Rebuilt, Unanswerable, WindowAggregatorActor, WindowConfig,
};
pub use buckets::{BucketDelta, BucketRing, Buckets, Counts, KeywordSet, SecondCounts};
pub use coalesce::Coalesced;
pub use memory::{MemoryView, MemoryWindows};
pub use ranking::{Inconsistent, Ranking};
pub use read_path::{CacheRead, CacheReadObserver, RedisSource, Source, Unanswered, WindowReader};
pub use stats::{ErrorStats, KeywordCount, ServiceStats, WindowRange};

#[cfg(test)]
mod tests;
