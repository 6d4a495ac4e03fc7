//! The rdkafka settings of the ingest consumer.

use rdkafka::ClientConfig;

use super::SourceConfig;

/// The consumer's client configuration: offsets live in PostgreSQL, so Kafka never commits or
/// stores them on its own, and a start offset it no longer has is an error rather than a jump.
pub(super) fn consumer_config(config: &SourceConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group)
        .set("client.id", "log-analyzer-ingest")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        // Never jump silently: an offset the broker no longer has is an error the poll loop handles.
        .set("auto.offset.reset", "error")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("queued.max.messages.kbytes", "65536")
        .set("fetch.wait.max.ms", "20")
        // librdkafka backs a partition's fetcher off this long whenever its queue is full or it
        // was paused (1 s by default): with backpressure pausing partitions about once per batch,
        // that capped ingest at one batch per partition per second (docs/BENCHMARKS.md).
        .set("fetch.queue.backoff.ms", "10")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1500")
        .set("topic.metadata.refresh.interval.ms", "10000")
        .set("enable.partition.eof", "false");
    client
}
