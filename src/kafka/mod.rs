//! Kafka adapters (rdkafka).

pub mod admin;
pub mod source;
