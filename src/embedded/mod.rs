//! The embedded pipeline: a bounded in-process queue stands where Kafka stands, the same
//! ConsumerActors and supervised WriterActors store into SQLite. A line's 202 is sent once the
//! batch holding it has committed (group commit: one transaction holds the lines of many requests).
//! STUB (helper W fills it).

pub mod intake;

use std::sync::Arc;

use actors::ingest::Committed;
use actors::mailbox::TrackedRecipient;

use crate::config::Settings;
use crate::http::readiness::IngestView;
use crate::kafka::source::SourceState;
use crate::sqlite::SqliteDb;

/// A running embedded pipeline. Must be started inside an actix System.
pub struct EmbeddedIngest {
    state: Arc<SourceState>,
}

impl EmbeddedIngest {
    /// Loads each partition's stored position from `db`, starts the writer (one: SQLite takes one
    /// writer at a time), one ConsumerActor per queue partition, and the queue in front of them.
    pub fn start(
        _settings: &Settings,
        _db: SqliteDb,
        _committed: Option<TrackedRecipient<Committed>>,
        _ownership: Option<TrackedRecipient<actors::windows::Ownership>>,
        _metrics: &crate::admin::Metrics,
        _log: &slog::Logger,
    ) -> anyhow::Result<EmbeddedIngest> {
        anyhow::bail!("the embedded pipeline is not written yet")
    }

    /// The queue's partitions with their counters (what the Kafka source reports for its own).
    pub fn state(&self) -> Arc<SourceState> {
        self.state.clone()
    }

    /// What readiness sees of the partitions.
    pub fn view(&self) -> Arc<dyn IngestView> {
        unimplemented!("stub")
    }

    /// The intake's sink over this queue and `db`.
    pub fn intake(&self) -> intake::EmbeddedIntake {
        unimplemented!("stub")
    }

    /// Stops taking lines, lets the writer finish what it holds, stops the arbiters.
    pub async fn stop(self) {}
}
