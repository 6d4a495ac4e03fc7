//! Kafka adapters (rdkafka).

pub mod admin;
pub mod intake;
pub mod sink;
pub mod source;
