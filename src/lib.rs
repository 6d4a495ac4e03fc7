//! log-analyzer: the shell around the `actors` core — configuration, telemetry, and the Kafka,
//! PostgreSQL and Redis adapters that implement the core's ports.

pub mod admin;
pub mod cache;
pub mod config;
pub mod db;
pub mod embedded;
pub mod generate;
pub mod grpc;
pub mod http;
pub mod ingest;
pub mod jobs;
pub mod kafka;
mod search_rows;
pub mod sqlite;
pub mod startup;
pub mod telemetry;
