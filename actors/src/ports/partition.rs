//! What the ingest spine tells the queue's source about a partition (Kafka in production).

/// What a ConsumerActor tells the source of its partition.
pub trait PartitionControl: Send + Sync + 'static {
    /// A batch ending before `next_offset` is durably stored (the source may record it for lag tools).
    fn stored(&self, topic: &str, partition: i32, next_offset: i64);
    /// The partition's position is not what this consumer believed (fenced): restart it from the
    /// stored position. The consumer stops after asking.
    fn restart(&self, topic: &str, partition: i32);
}
