//! Kafka adapters (rdkafka).

pub mod admin;
pub mod sink;
pub mod source;
