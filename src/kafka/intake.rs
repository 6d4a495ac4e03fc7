//! The intake's adapters put together: its queue is the Kafka topic (an idempotent producer with
//! acks=all, so a line is acknowledged once it is on every in-sync replica), its store is PostgreSQL
//! (`db::idempotency::IntakeStore`: dead letters and Idempotency-Key answers).

use std::time::{Duration, Instant};

use actors::intake::{Claim, DeadLetter, Delivery, IntakeSink, Line, SinkError};
use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::config::Settings;
use crate::db::idempotency::{IntakeSession, IntakeStore};

/// Deliveries one body keeps outstanding at most (the producer's own queue bounds all bodies together).
const MAX_IN_FLIGHT: usize = 20_000;

/// The intake's queue: one topic.
pub struct IntakeProducer {
    producer: FutureProducer,
    topic: String,
}

impl IntakeProducer {
    /// Every delivery ends (acknowledged or failed) within `INGEST_TIMEOUT_MS`, so a request never
    /// outlives it by much, even with Kafka unreachable; a retried send inside the producer never
    /// duplicates a line.
    pub fn new(settings: &Settings) -> anyhow::Result<IntakeProducer> {
        let timeout = settings.ingest_timeout_ms.to_string();
        // A request to a broker must not outlast the delivery it carries.
        let request_timeout = settings.ingest_timeout_ms.min(30_000).to_string();
        let producer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &settings.kafka_brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", &timeout)
            .set("request.timeout.ms", &request_timeout)
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            // Shared by all bodies in flight; a full queue makes a body wait (then fail its lines).
            .set("queue.buffering.max.messages", "200000")
            .create()
            .context("creating the Kafka producer for POST /ingest")?;
        // Intake produces to one topic: the first of the list, like the generator.
        Ok(IntakeProducer { producer, topic: settings.primary_topic().to_owned() })
    }

    /// Produces `lines`, at most `MAX_IN_FLIGHT` outstanding, waiting up to `timeout` for room in the
    /// producer's queue; once `report` says stop, the lines not yet sent are `Skipped`.
    pub async fn queue(
        &self,
        service: Option<&str>,
        lines: &[Line<'_>],
        received: DateTime<Utc>,
        timeout: Duration,
        report: &mut (dyn FnMut(u32, Delivery) -> bool + Send),
    ) {
        let deadline = Instant::now() + timeout;
        // The `?service=` default travels with each line in a header: the consumer resolves the line
        // again, so it needs the default too.
        let headers = service
            .map(|name| OwnedHeaders::new().insert(Header { key: actors::ingest::SERVICE_HEADER, value: Some(name) }));
        let timestamp = received.timestamp_millis();
        let mut in_flight = FuturesUnordered::new();
        let mut sending = true;
        for &Line { number, bytes } in lines {
            if !sending {
                report(number, Delivery::Skipped);
                continue;
            }
            let record = FutureRecord::<(), [u8]>::to(&self.topic).payload(bytes).timestamp(timestamp);
            let mut record = match &headers {
                Some(headers) => record.headers(headers.clone()),
                None => record,
            };
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        in_flight.push(async move {
                            let outcome = match delivery.await {
                                Ok(Ok(_)) => Ok(()),
                                Ok(Err((e, _))) => Err(e),
                                Err(_) => Err(KafkaError::Canceled),
                            };
                            (number, outcome)
                        });
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        if Instant::now() >= deadline {
                            sending &= report(number, Delivery::Refused("Kafka's producer queue stayed full".into()));
                            break;
                        }
                        record = back;
                        // Wait for room: one of ours, or anyone's.
                        match in_flight.next().await {
                            Some((n, outcome)) => sending &= report(n, delivery(outcome)),
                            None => tokio::time::sleep(Duration::from_millis(2)).await,
                        }
                    }
                    Err((e, _)) => {
                        sending &= report(number, Delivery::Refused(format!("Kafka refused it: {e}")));
                        break;
                    }
                }
            }
            while in_flight.len() >= MAX_IN_FLIGHT {
                if let Some((n, outcome)) = in_flight.next().await {
                    sending &= report(n, delivery(outcome));
                }
            }
        }
        while let Some((n, outcome)) = in_flight.next().await {
            report(n, delivery(outcome));
        }
    }
}

fn delivery(outcome: Result<(), KafkaError>) -> Delivery {
    let Err(error) = outcome else { return Delivery::Queued };
    let only_this_line = matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidMessageSize
        )
    );
    Delivery::Failed { error: error.to_string(), only_this_line }
}

/// `IntakeSink` over Kafka and PostgreSQL.
pub struct KafkaPgIntake {
    pub producer: IntakeProducer,
    pub store: IntakeStore,
}

#[async_trait]
impl IntakeSink for KafkaPgIntake {
    type Held = IntakeSession;

    async fn claim(&self, held: &mut IntakeSession, key: &str, hash: &[u8]) -> Result<Claim, SinkError> {
        self.store.claim(held, key, hash).await.map_err(sink_error)
    }

    async fn store_dead_letters(&self, held: &mut IntakeSession, letters: &[DeadLetter<'_>]) -> Result<(), SinkError> {
        self.store.store_dead_letters(held, letters).await.map_err(sink_error)
    }

    async fn seal_dead_letters(&self, held: &mut IntakeSession) -> Result<(), SinkError> {
        self.store.seal_dead_letters(held).await.map_err(sink_error)
    }

    async fn queue(
        &self,
        service: Option<&str>,
        lines: &[Line<'_>],
        received: DateTime<Utc>,
        timeout: Duration,
        report: &mut (dyn FnMut(u32, Delivery) -> bool + Send),
    ) {
        self.producer.queue(service, lines, received, timeout, report).await
    }

    async fn commit(&self, held: IntakeSession, answer: Option<(&str, u16, &[u8])>) -> Result<(), SinkError> {
        self.store.commit(held, answer).await.map_err(sink_error)
    }

    async fn discard(&self, held: IntakeSession, key: Option<&str>) -> Result<(), SinkError> {
        self.store.discard(held, key).await.map_err(sink_error)
    }
}

fn sink_error(e: anyhow::Error) -> SinkError {
    SinkError(format!("{e:#}"))
}
