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
    if let Some(id) = &config.instance_id {
        // Static membership: a restart under the same id within the session timeout gets its
        // partitions back without a rebalance; the session timeout only matters if it stays away.
        client.set("group.instance.id", id);
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(instance_id: Option<&str>) -> SourceConfig {
        SourceConfig {
            brokers: "127.0.0.1:9092".into(),
            group: "g".into(),
            instance_id: instance_id.map(str::to_owned),
            topics: vec!["logs".into()],
            consumer: actors::ingest::ConsumerConfig::default(),
        }
    }

    #[test]
    fn an_instance_id_makes_the_member_static_and_none_keeps_it_dynamic() {
        assert_eq!(consumer_config(&source(None)).get("group.instance.id"), None);
        assert_eq!(consumer_config(&source(Some("ingest-1"))).get("group.instance.id"), Some("ingest-1"));
    }
}
