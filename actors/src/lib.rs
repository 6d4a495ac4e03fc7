//! The log-analyzer pipeline core: domain types, the actors, and the ports (traits) they talk to.
//!
//! This crate knows nothing of Kafka, PostgreSQL or Redis: the `log-analyzer` crate implements the
//! ports with real adapters, and the unit tests here use in-memory ones.

pub mod domain;
pub mod generator;
pub mod ingest;
pub mod intake;
pub mod mailbox;
pub mod ports;
pub mod protocols;
pub mod schedule;
pub mod search;
pub mod summary;
pub mod tail;
#[cfg(test)]
pub mod testing;
pub mod windows;
