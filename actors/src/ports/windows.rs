//! The live windows' ports: where buckets are rebuilt from, where deltas also go, and the sources
//! that answer window questions.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::store::StoreError;
use crate::domain::counts::{BucketDelta, KeywordSet, SecondCounts};

/// Stored next offset of each (topic, partition).
pub type PartitionOffsets = BTreeMap<(String, i32), i64>;

/// Counts from the authoritative store, consistent with the partitions' stored offsets.
#[derive(Debug, Clone, Default)]
pub struct Rebuilt {
    pub seconds: BTreeMap<i64, SecondCounts>,
    /// Stored next offset of each partition at the snapshot.
    pub offsets: PartitionOffsets,
    /// Newest event time stored (epoch ms).
    pub newest_ms: Option<i64>,
    /// Latest second of a stored event beyond the rebuilt range, if any.
    pub beyond_last: Option<i64>,
}

/// Where buckets are rebuilt from (PostgreSQL in production).
#[async_trait]
pub trait BucketSource: Send + Sync + 'static {
    /// Counts for seconds `[first, last]` with the stored offsets, from one consistent snapshot.
    async fn snapshot(
        &self,
        topics: &[String],
        first: i64,
        last: i64,
        keywords: &KeywordSet,
    ) -> Result<Rebuilt, StoreError>;
}

/// Where each committed batch's delta is also sent (Redis in production), best effort.
pub trait DeltaSink: Send + Sync + 'static {
    fn offer(&self, delta: Arc<BucketDelta>);
    /// Memory was rebuilt from the store at these partition offsets (a chance to check the sink).
    fn rebuilt(&self, _offsets: &PartitionOffsets) {}
}
