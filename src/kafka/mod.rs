//! Kafka adapters (rdkafka).

pub mod admin;
