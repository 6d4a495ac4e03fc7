//! The ingest role: Kafka source → ConsumerActors → supervised WriterActors → PostgreSQL.

pub mod metrics;

use std::sync::Arc;
use std::time::Duration;

use actix::{Arbiter, Supervisor};
use actors::ingest::{Committed, ConsumerConfig, WriterActor, WriterPool};
use actors::mailbox::{Inbox, TrackedRecipient};
use actors::ports::{EventStore, SystemClock};
use slog::{info, warn, Logger};

use crate::config::Settings;
use crate::db::event_store::PgEventStore;
use crate::db::offset_store::PgOffsetStore;
use crate::http::readiness::{IngestView, PartitionProgress};
use crate::kafka::source::{partition_name, ActorWiring, KafkaSource, SourceConfig, SourceState};

/// How long shutdown waits for writers to finish the batches they hold.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(6);

/// A running ingest pipeline. Must be started inside an actix System.
pub struct Ingest {
    source: KafkaSource,
    writers: Arc<WriterPool>,
    arbiters: Vec<Arbiter>,
    log: Logger,
}

impl Ingest {
    /// Starts writers (each on its own arbiter, under a supervisor), consumer arbiters, and the source.
    pub fn start(
        settings: &Settings,
        committed: Option<TrackedRecipient<Committed>>,
        ownership: Option<TrackedRecipient<actors::windows::Ownership>>,
        metrics: &crate::admin::Metrics,
        log: &Logger,
    ) -> anyhow::Result<Ingest> {
        let log = log.new(slog::o!("role" => "ingest"));
        let mut arbiters = Vec::new();
        let mut writers = Vec::new();
        let write_timeout = Duration::from_millis(settings.database_write_timeout_ms);
        for id in 0..settings.writer_count {
            let arbiter = Arbiter::new();
            let stats = metrics.writers.writer(id);
            let probe = metrics.actors.probe("writer", id.to_string());
            let store: Box<dyn EventStore> = Box::new(
                PgEventStore::new(settings.database_url.expose())
                    .with_timeout(write_timeout)
                    .announcing(settings.tail_notify),
            );
            let (stats2, probe2, log2) = (stats.clone(), probe.clone(), log.new(slog::o!("writer" => id)));
            let addr = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
                WriterActor::new(id, store, stats2, probe2, log2)
            });
            writers.push((Inbox::new(addr, probe), stats));
            arbiters.push(arbiter);
        }
        let writers = Arc::new(WriterPool::new(writers));
        // Parsing runs on the consumer arbiters: one per core keeps every core busy.
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let consumer_arbiters: Vec<Arbiter> = (0..cores).map(|_| Arbiter::new()).collect();
        let wiring = ActorWiring {
            writers: writers.clone(),
            arbiters: consumer_arbiters.iter().map(Arbiter::handle).collect(),
            clock: Arc::new(SystemClock),
            committed,
            ownership,
            actors: metrics.actors.clone(),
        };
        arbiters.extend(consumer_arbiters);
        let config = SourceConfig {
            brokers: settings.kafka_brokers.clone(),
            group: settings.kafka_group.clone(),
            instance_id: settings.instance_id.clone(),
            topics: settings.kafka_topics(),
            consumer: ConsumerConfig {
                batch_max_events: settings.batch_max_events(),
                batch_max_wait: Duration::from_millis(settings.batch_max_wait_ms),
                rules: settings.parse_rules(),
                take_delay: Some(metrics.writers.take_delay()),
                ..ConsumerConfig::default()
            },
        };
        let offsets = Arc::new(PgOffsetStore::new(settings.database_url.expose()).with_timeout(write_timeout));
        let source = KafkaSource::start(config, offsets, wiring, log.clone())?;
        metrics.source.watch(source.state.clone());
        info!(log, "ingest started"; "topics" => &settings.kafka_topic, "group" => &settings.kafka_group,
              "instance_id" => settings.instance_id.as_deref().unwrap_or(""),
              "writers" => settings.writer_count);
        Ok(Ingest { source, writers, arbiters, log })
    }

    /// Partitions this process owns now, with their counters.
    pub fn state(&self) -> Arc<SourceState> {
        self.source.state.clone()
    }

    /// What readiness sees of the owned partitions.
    pub fn view(&self) -> Arc<dyn IngestView> {
        Arc::new(SourceView(self.source.state.clone()))
    }

    /// Stops fetching and leaves the group, lets writers finish what they hold (dropping batches of
    /// partitions no longer ours), then stops the arbiters.
    pub async fn stop(mut self) {
        let mut source = std::mem::replace(&mut self.source, KafkaSource::stopped());
        let _ = tokio::task::spawn_blocking(move || source.stop()).await;
        // A writer answers this only after every batch queued before it. All drain at once under one
        // deadline: waiting for them in turn would stretch shutdown to DRAIN_TIMEOUT per writer.
        let drains = self.writers.inboxes().iter().map(|writer| writer.send(actors::ingest::writer::Drain));
        if tokio::time::timeout(DRAIN_TIMEOUT, futures::future::join_all(drains)).await.is_err() {
            warn!(self.log, "a writer did not drain in time");
        }
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
        info!(self.log, "ingest stopped");
    }
}

/// The source's partitions as readiness reads them (the Kafka source's, or the embedded queue's: it
/// fills the same `SourceState` and pauses nothing).
pub(crate) struct SourceView(pub(crate) Arc<SourceState>);

impl IngestView for SourceView {
    fn partitions(&self) -> Vec<PartitionProgress> {
        let partitions = self.0.partitions.lock().expect("source state");
        partitions
            .iter()
            .map(|(partition, stats)| PartitionProgress {
                name: partition_name(partition),
                write_started_ms: stats.write_started_ms.load(std::sync::atomic::Ordering::Relaxed),
            })
            .collect()
    }

    fn paused(&self) -> Vec<String> {
        self.0.paused.lock().expect("source state").iter().map(partition_name).collect()
    }
}
