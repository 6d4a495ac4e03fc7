//! The generator's Kafka sink: a throughput-tuned producer (batching, lz4, acks=all, idempotent).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actors::generator::{EventSink, SinkError};
use anyhow::Context as _;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};

/// Counts delivery reports and keeps the first failure's text.
#[derive(Default, Clone)]
pub struct DeliveryCounter {
    acked: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    first_error: Arc<OnceLock<String>>,
}

impl DeliveryCounter {
    fn note_error(&self, topic: &str, error: &KafkaError) {
        self.first_error.get_or_init(|| explain(topic, error));
    }
}

/// The error as the operator needs it: a missing topic is named as such, with what to do.
fn explain(topic: &str, error: &KafkaError) -> String {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::UnknownTopic | RDKafkaErrorCode::UnknownTopicOrPartition) => format!(
            "topic {topic:?} does not exist ({error}); create it with `log-analyzer migrate` or check KAFKA_TOPIC"
        ),
        _ => format!("topic {topic:?}: {error}"),
    }
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        match result {
            Ok(_) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, message)) => {
                self.note_error(message.topic(), error);
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

pub struct KafkaSink {
    producer: ThreadedProducer<DeliveryCounter>,
    topic: String,
    counter: DeliveryCounter,
}

impl KafkaSink {
    pub fn new(brokers: &str, topic: &str) -> anyhow::Result<KafkaSink> {
        let counter = DeliveryCounter::default();
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            .set("linger.ms", "20")
            .set("batch.size", "1000000")
            .set("queue.buffering.max.messages", "500000")
            .set("queue.buffering.max.kbytes", "524288")
            .set("message.max.bytes", "10485760")
            .create_with_context(counter.clone())
            .context("creating the Kafka producer")?;
        Ok(KafkaSink { producer, topic: topic.to_owned(), counter })
    }
}

impl EventSink for KafkaSink {
    fn send(&mut self, payload: Vec<u8>, timestamp_ms: i64) -> Result<(), SinkError> {
        let record: BaseRecord<'_, (), [u8]> =
            BaseRecord::to(&self.topic).payload(payload.as_slice()).timestamp(timestamp_ms);
        match self.producer.send(record) {
            Ok(()) => Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => Err(SinkError::Full(payload)),
            Err((e, _)) => {
                self.counter.note_error(&self.topic, &e);
                Err(SinkError::Failed(e.to_string()))
            }
        }
    }

    fn acked(&self) -> u64 {
        self.counter.acked.load(Ordering::Relaxed)
    }

    fn failed(&self) -> u64 {
        self.counter.failed.load(Ordering::Relaxed)
    }

    fn first_error(&self) -> Option<String> {
        self.counter.first_error.get().cloned()
    }

    fn flush(&mut self, timeout: Duration) -> Result<(), String> {
        self.producer.flush(timeout).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_topic_is_named_plainly() {
        let missing = KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopic);
        let text = explain("nope", &missing);
        assert!(text.contains("topic \"nope\" does not exist"), "{text}");
        let other = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert!(explain("logs", &other).starts_with("topic \"logs\": "));
        let counter = DeliveryCounter::default();
        counter.note_error("a", &missing);
        counter.note_error("b", &other);
        assert!(counter.first_error.get().unwrap().contains("\"a\""), "the first error is kept");
    }
}
