//! Topic administration.

use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::ClientConfig;

/// Whether `ensure_topic` made the topic or found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicState {
    Created,
    AlreadyExisted,
}

/// Creates `topic` with `partitions` partitions (replication: the broker's default) unless it exists.
pub async fn ensure_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<TopicState> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().context("creating the Kafka admin client")?;
    let options = AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(15)))
        .operation_timeout(Some(Duration::from_secs(15)));
    // -1: the broker's default.replication.factor, right for one node and for a cluster alike.
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    let results = admin
        .create_topics(&[new_topic], &options)
        .await
        .with_context(|| format!("creating Kafka topic {topic} at {brokers}"))?;
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(TopicState::Created),
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(TopicState::AlreadyExisted),
        Some(Err((name, code))) => bail!("creating Kafka topic {name}: {code}"),
        None => bail!("creating Kafka topic {topic}: the broker gave no answer"),
    }
}
