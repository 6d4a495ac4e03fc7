//! Wires configuration and adapters into the roles the CLI runs.

use anyhow::Context;
use chrono::{Days, Utc};
use slog::{info, Logger};

use crate::config::Settings;
use crate::db;
use crate::kafka::admin::{ensure_topic, TopicState};

/// Days of `logs` partitions made ahead of today by `migrate` and by maintenance.
pub const PARTITIONS_AHEAD_DAYS: u64 = 7;

/// What `migrate` did.
#[derive(Debug)]
pub struct MigrationReport {
    pub applied: Vec<String>,
    pub partitions_created: usize,
    pub topic: TopicState,
}

/// Applies migrations, makes the `logs` partitions from yesterday to a week ahead, and creates the
/// Kafka topic if it is missing. Idempotent.
pub async fn migrate(settings: &Settings, log: &Logger) -> anyhow::Result<MigrationReport> {
    let url = settings.database_url.expose();
    let applied = db::migrate::run_migrations(url).await?;
    info!(log, "migrations applied"; "count" => applied.len(), "versions" => applied.join(","));

    let mut conn = <diesel_async::AsyncPgConnection as diesel_async::AsyncConnection>::establish(url)
        .await
        .context("connecting to PostgreSQL")?;
    let today = Utc::now().date_naive();
    let first = today - Days::new(1);
    let last = today + Days::new(PARTITIONS_AHEAD_DAYS);
    let partitions_created = db::migrate::ensure_partitions(&mut conn, first, last).await?;
    info!(log, "logs partitions ready"; "from" => %first, "to" => %last, "created" => partitions_created);

    let topic = ensure_topic(&settings.kafka_brokers, &settings.kafka_topic, settings.kafka_partitions).await?;
    info!(log, "kafka topic ready"; "topic" => &settings.kafka_topic, "state" => ?topic,
          "partitions" => settings.kafka_partitions);
    Ok(MigrationReport { applied, partitions_created, topic })
}

/// Resolves at the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
