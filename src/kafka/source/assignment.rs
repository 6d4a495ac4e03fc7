//! The partitions this process owns: starting and stopping their ConsumerActors as rebalances
//! assign and revoke them, restarting one from its stored offset, and what the broker says about
//! them (high watermarks, whether every partition is owned).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, Weak};
use std::time::Duration;

use actix::{Actor, AsyncContext};
use actors::ingest::{ConsumerActor, ConsumerParts};
use actors::ports::PartitionControl;
use actors::windows::Ownership;
use futures::channel::mpsc as chan;
use rdkafka::consumer::{CommitMode, Consumer, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use slog::{debug, error, info, warn, Logger};

use super::rebalance::{IngestConsumer, RebalanceEvent};
use super::router::Router;
use super::{
    partition_name, ActorWiring, SourceConfig, SourceState, TopicPartition, PARTITION_CHANNEL, WATERMARK_TIMEOUT,
};

/// What the ConsumerActors ask of the poll thread.
pub(super) enum Command {
    Restart(TopicPartition),
}

/// The ConsumerActors' way back to Kafka.
pub(super) struct KafkaControl {
    pub(super) consumer: Weak<IngestConsumer>,
    pub(super) commands: Mutex<mpsc::Sender<Command>>,
}

impl PartitionControl for KafkaControl {
    fn stored(&self, topic: &str, partition: i32, next_offset: i64) {
        // Kafka's own committed offsets only feed lag dashboards; PostgreSQL holds the truth.
        if let Some(consumer) = self.consumer.upgrade() {
            let mut tpl = TopicPartitionList::new();
            if tpl.add_partition_offset(topic, partition, Offset::Offset(next_offset)).is_ok() {
                let _ = consumer.commit(&tpl, CommitMode::Async);
            }
        }
    }

    fn restart(&self, topic: &str, partition: i32) {
        let _ = self.commands.lock().expect("commands").send(Command::Restart((topic.to_owned(), partition)));
    }
}

/// The poll thread's state besides the consumer itself.
pub(super) struct Assignment {
    pub(super) config: SourceConfig,
    pub(super) wiring: ActorWiring,
    pub(super) control: Arc<KafkaControl>,
    pub(super) state: Arc<SourceState>,
    pub(super) router: Router,
    pub(super) next_arbiter: usize,
    pub(super) log: Logger,
}

impl Assignment {
    pub(super) fn start_partition(&mut self, consumer: &IngestConsumer, key: TopicPartition, offset: i64) {
        self.stop_partition(consumer, &key);
        let cancelled = Arc::new(AtomicBool::new(false));
        consumer.context().cancels.lock().expect("cancels").insert(key.clone(), cancelled.clone());
        let (tx, rx) = chan::channel(PARTITION_CHANNEL);
        let stats = self.state.stats_for(&key);
        let probe = self.wiring.actors.probe("consumer", partition_name(&key));
        let parts = ConsumerParts {
            topic: Arc::from(key.0.as_str()),
            partition: key.1,
            start_offset: offset,
            config: self.config.consumer.clone(),
            writers: self.wiring.writers.clone(),
            control: self.control.clone(),
            clock: self.wiring.clock.clone(),
            cancelled: cancelled.clone(),
            committed: self.wiring.committed.clone(),
            stats: stats.clone(),
            probe: probe.clone(),
            log: self.log.clone(),
        };
        let arbiter = &self.wiring.arbiters[self.next_arbiter % self.wiring.arbiters.len()];
        self.next_arbiter += 1;
        ConsumerActor::start_in_arbiter(arbiter, move |ctx| {
            ctx.add_stream(rx);
            ConsumerActor::new(parts)
        });
        self.state.partitions.lock().expect("source state").insert(key.clone(), stats);
        self.router.open(key, tx, probe, cancelled);
    }

    pub(super) fn stop_partition(&mut self, consumer: &IngestConsumer, partition: &TopicPartition) {
        self.router.close(consumer, partition);
        consumer.context().cancels.lock().expect("cancels").remove(partition);
        self.state.partitions.lock().expect("source state").remove(partition);
    }

    pub(super) fn apply_rebalance(&mut self, consumer: &IngestConsumer) {
        let events = std::mem::take(&mut *consumer.context().events.lock().expect("events"));
        if events.is_empty() {
            return;
        }
        for event in events {
            match event {
                RebalanceEvent::Assigned(offsets) => {
                    for (partition, offset) in offsets {
                        self.start_partition(consumer, partition, offset);
                    }
                }
                RebalanceEvent::Revoked(partitions) => {
                    for partition in partitions {
                        self.stop_partition(consumer, &partition);
                    }
                }
            }
        }
        self.announce_ownership(consumer);
    }

    fn announce_ownership(&mut self, consumer: &IngestConsumer) {
        let Some(ownership) = &self.wiring.ownership else { return };
        // A topic whose partitions cannot be counted now counts as not wholly owned.
        let mut total = Some(0);
        for topic in &self.config.topics {
            let partitions = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(2))
                .ok()
                .and_then(|m| m.topics().first().map(|t| t.partitions().len()))
                .filter(|&n| n > 0);
            total = total.zip(partitions).map(|(sum, n)| sum + n);
        }
        let owns_all = total.is_some_and(|total| self.router.len() == total);
        ownership.do_send(Ownership { owns_all });
    }

    /// Refreshes the owned partitions' high watermarks (for lag).
    pub(super) fn refresh_watermarks(&mut self, consumer: &IngestConsumer) {
        let mut highs = BTreeMap::new();
        for key in self.router.partitions() {
            if let Ok((_, high)) = consumer.fetch_watermarks(&key.0, key.1, Duration::from_millis(200)) {
                highs.insert(key.clone(), high);
            }
        }
        *self.state.high_watermarks.lock().expect("source state") = highs;
    }

    pub(super) fn restart_partition(&mut self, consumer: &IngestConsumer, partition: TopicPartition) {
        if !self.router.routes(&partition) {
            return; // revoked meanwhile
        }
        self.stop_partition(consumer, &partition);
        let context = consumer.context();
        let Some(offsets) =
            context.load_offsets(std::slice::from_ref(&partition)).and_then(|o| context.close_gaps(consumer, o))
        else {
            return;
        };
        let Some(&offset) = offsets.get(&partition) else { return };
        if let Err(e) = self.reposition(consumer, &partition, offset) {
            error!(self.log, "seek failed; partition left idle until the next rebalance";
                   "topic" => &partition.0, "partition" => partition.1, "offset" => offset, "error" => %e);
            return;
        }
        info!(self.log, "partition restarted from its stored offset"; "topic" => &partition.0,
              "partition" => partition.1, "offset" => offset);
        self.wiring.actors.probe("consumer", partition_name(&partition)).restarted();
        self.start_partition(consumer, partition, offset);
    }

    /// Points the partition's fetcher at `offset`. A partition whose fetch stopped on an offset out
    /// of range cannot be seeked ("erroneous state"); assigning it again with the offset restarts it.
    fn reposition(&self, consumer: &IngestConsumer, key: &TopicPartition, offset: i64) -> Result<(), KafkaError> {
        let (topic, partition) = (key.0.as_str(), key.1);
        let Err(seek_error) = consumer.seek(topic, partition, Offset::Offset(offset), Duration::from_secs(10)) else {
            return Ok(());
        };
        debug!(self.log, "seek refused; assigning the partition again"; "topic" => topic, "partition" => partition,
               "error" => %seek_error);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
        if matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative) {
            consumer.incremental_unassign(&tpl)?;
            consumer.incremental_assign(&tpl)
        } else {
            let mut assignment = consumer.assignment()?;
            assignment.set_partition_offset(topic, partition, Offset::Offset(offset))?;
            consumer.assign(&assignment)
        }
    }

    /// librdkafka could not fetch from a position (`auto.offset.reset=error` makes it say so rather
    /// than jump): restart each owned partition whose stored offset or fetch position is outside
    /// what the broker has, which records the gap and goes on from the earliest offset.
    pub(super) fn offsets_out_of_range(&mut self, consumer: &IngestConsumer, error: &KafkaError) {
        let positions = consumer.position().unwrap_or_default();
        let mut owned: Vec<TopicPartition> = self.router.partitions().cloned().collect();
        owned.sort_unstable();
        let mut restarted = Vec::new();
        for partition in owned {
            let Ok((low, high)) = consumer.fetch_watermarks(&partition.0, partition.1, WATERMARK_TIMEOUT) else {
                continue;
            };
            let stored = self.state.stats_for(&partition).stored_offset.load(Ordering::Relaxed) as i64;
            let position = positions.find_partition(&partition.0, partition.1).map(|e| e.offset());
            let fetching_outside = match position {
                Some(Offset::Offset(p)) => !(low..=high).contains(&p),
                _ => true,
            };
            if fetching_outside || !(low..=high).contains(&stored) {
                restarted.push(partition_name(&partition));
                self.restart_partition(consumer, partition);
            }
        }
        warn!(self.log, "kafka reports offsets out of range"; "error" => %error, "restarted" => ?restarted);
    }
}
