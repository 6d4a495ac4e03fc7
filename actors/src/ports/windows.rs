//! The live windows' ports: where buckets are rebuilt from, where deltas also go, and the sources
//! that answer window questions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::store::StoreError;
use crate::domain::counts::{BucketDelta, KeywordSet, SecondCounts};
use crate::domain::window_stats::{ErrorStats, KeywordCount, WindowRange};
use crate::domain::Keyword;

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

/// A question about a window, whichever source answers it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WindowQuestion {
    /// Events and errors in the window, per service (only `service` when given): the `limit`
    /// services with the most errors, the rest summed (see [`ErrorStats`]).
    Errors { range: WindowRange, service: Option<String>, limit: usize },
    /// Events carrying `keyword` in the window (only of `service` when given).
    Keyword { range: WindowRange, keyword: Keyword, service: Option<String> },
    /// The `limit` most frequent tracked keywords in the window.
    TopKeywords { range: WindowRange, limit: usize },
}

impl WindowQuestion {
    pub fn range(&self) -> WindowRange {
        match self {
            WindowQuestion::Errors { range, .. }
            | WindowQuestion::Keyword { range, .. }
            | WindowQuestion::TopKeywords { range, .. } => *range,
        }
    }
}

/// The answer to a [`WindowQuestion`], of the variant of the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowAnswer {
    Errors(ErrorStats),
    Keyword(u64),
    TopKeywords(Vec<KeywordCount>),
}

impl WindowAnswer {
    /// Whether this is an answer to `question` at all (its variant matches).
    pub fn answers(&self, question: &WindowQuestion) -> bool {
        matches!(
            (self, question),
            (WindowAnswer::Errors(_), WindowQuestion::Errors { .. })
                | (WindowAnswer::Keyword(_), WindowQuestion::Keyword { .. })
                | (WindowAnswer::TopKeywords(_), WindowQuestion::TopKeywords { .. })
        )
    }
}

/// Why a source gave no answer. The message says why in words the 503 passes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CannotAnswer {
    /// The source works but does not hold this answer exactly (not ready, outside its horizon,
    /// incomplete, keyword not tracked): a miss, the next source may.
    #[error("{0}")]
    Missing(String),
    /// The source failed or did not answer in time: not worth asking again in this request.
    #[error("{0}")]
    Unavailable(String),
}

/// A source of window answers: memory (the aggregator), the Redis buckets, PostgreSQL.
#[async_trait]
pub trait WindowQuery: Send + Sync + 'static {
    /// The exact answer to `question`, or why there is none here.
    async fn answer(&self, question: &WindowQuestion) -> Result<WindowAnswer, CannotAnswer>;
}

/// Answers kept for reuse (Redis in production): what a slower source computed, asked again soon.
#[async_trait]
pub trait AnswerCache: Send + Sync + 'static {
    /// The kept answer to `question`, if there is one.
    async fn get(&self, question: &WindowQuestion) -> Result<Option<WindowAnswer>, CannotAnswer>;
    /// Keeps `answer` for `ttl`, best effort (a failure only costs a slower answer later).
    async fn keep(&self, question: &WindowQuestion, answer: &WindowAnswer, ttl: Duration);
}
