//! Rebalances: the offsets a newly assigned partition starts from come from the store, before any
//! message is fetched, and a start offset the broker no longer has is recorded as a gap, not skipped.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use actors::ports::OffsetStore;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use slog::{debug, error, info, warn, Logger};

use super::metrics::OffsetGapRecorded;
use super::{SourceState, TopicPartition, WATERMARK_TIMEOUT};

pub(super) enum RebalanceEvent {
    Assigned(BTreeMap<TopicPartition, i64>),
    Revoked(Vec<TopicPartition>),
}

/// rdkafka callbacks: offsets come from the store at assignment, before any message is fetched.
pub(super) struct IngestContext {
    pub(super) topics: Vec<String>,
    pub(super) offsets: Arc<dyn OffsetStore>,
    /// Runs the offset store's futures inside rdkafka's callbacks, on the poll thread.
    pub(super) runtime: tokio::runtime::Runtime,
    pub(super) events: Mutex<Vec<RebalanceEvent>>,
    pub(super) cancels: Mutex<HashMap<TopicPartition, Arc<AtomicBool>>>,
    /// Where a partition's offset gaps are counted.
    pub(super) state: Arc<SourceState>,
    pub(super) stopping: Arc<AtomicBool>,
    pub(super) log: Logger,
}

impl IngestContext {
    /// Loads stored offsets, retrying while the store is unavailable (the partitions wait).
    pub(super) fn load_offsets(&self, partitions: &[TopicPartition]) -> Option<BTreeMap<TopicPartition, i64>> {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in partitions {
            by_topic.entry(topic).or_default().push(*partition);
        }
        let mut all = BTreeMap::new();
        for (topic, partitions) in by_topic {
            let offsets = self.load_topic_offsets(topic, &partitions)?;
            all.extend(offsets.into_iter().map(|(p, o)| ((topic.to_owned(), p), o)));
        }
        Some(all)
    }

    fn load_topic_offsets(&self, topic: &str, partitions: &[i32]) -> Option<BTreeMap<i32, i64>> {
        let mut backoff = actors::ingest::Backoff::default();
        loop {
            match self.runtime.block_on(self.offsets.load(topic, partitions)) {
                Ok(offsets) => return Some(offsets),
                Err(e) => {
                    if self.stopping.load(Ordering::Relaxed) {
                        return None;
                    }
                    backoff.fail();
                    warn!(self.log, "cannot load stored offsets; partitions wait"; "error" => %e,
                          "topic" => topic, "partitions" => ?partitions, "retry_in_ms" => backoff.delay().as_millis());
                    std::thread::sleep(backoff.delay());
                }
            }
        }
    }

    /// Checks each start offset against the offsets the broker still has. One it no longer has
    /// (retention deleted it before it was stored, or the topic was recreated) is never skipped
    /// silently: the gap is logged, counted and recorded in the store, in the transaction that moves
    /// the stored offset to the earliest available one, which is then where the partition starts.
    pub(super) fn close_gaps(
        &self,
        consumer: &BaseConsumer<Self>,
        mut offsets: BTreeMap<TopicPartition, i64>,
    ) -> Option<BTreeMap<TopicPartition, i64>> {
        for (key, offset) in offsets.iter_mut() {
            let (topic, partition) = (key.0.as_str(), key.1);
            loop {
                let (low, high) = match consumer.fetch_watermarks(topic, partition, WATERMARK_TIMEOUT) {
                    Ok(watermarks) => watermarks,
                    Err(e) => {
                        // Not checked now: librdkafka reports an out-of-range start (auto.offset.reset=error).
                        warn!(self.log, "cannot check the partition's available offsets"; "topic" => topic,
                              "partition" => partition, "error" => %e);
                        break;
                    }
                };
                if (low..=high).contains(offset) {
                    break;
                }
                if self.record_gap(topic, partition, *offset, low)? {
                    OffsetGapRecorded { partition: key, from: *offset, kafka_low: low, kafka_high: high }
                        .emit(&self.state, &self.log);
                    *offset = low;
                    break;
                }
                // Someone else moved the partition meanwhile: check from where it stands now.
                *offset = *self.load_topic_offsets(topic, &[partition])?.get(&partition)?;
            }
        }
        Some(offsets)
    }

    /// Records a gap, retrying while the store is unavailable; false when fenced.
    fn record_gap(&self, topic: &str, partition: i32, from: i64, to: i64) -> Option<bool> {
        let mut backoff = actors::ingest::Backoff::default();
        loop {
            match self.runtime.block_on(self.offsets.record_gap(topic, partition, from, to)) {
                Ok(recorded) => return Some(recorded),
                Err(e) => {
                    if self.stopping.load(Ordering::Relaxed) {
                        return None;
                    }
                    backoff.fail();
                    warn!(self.log, "cannot record an offset gap; the partition waits"; "error" => %e,
                          "topic" => topic, "partition" => partition, "retry_in_ms" => backoff.delay().as_millis());
                    std::thread::sleep(backoff.delay());
                }
            }
        }
    }

    fn partitions_of(&self, tpl: &TopicPartitionList) -> Vec<TopicPartition> {
        tpl.elements()
            .iter()
            .filter(|e| self.topics.iter().any(|t| t == e.topic()))
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect()
    }
}

impl ClientContext for IngestContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                error!(self.log, "librdkafka"; "facility" => fac, "message" => message)
            }
            RDKafkaLogLevel::Warning => warn!(self.log, "librdkafka"; "facility" => fac, "message" => message),
            _ => debug!(self.log, "librdkafka"; "facility" => fac, "message" => message),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        warn!(self.log, "kafka client error"; "error" => %error, "reason" => reason);
    }
}

impl ConsumerContext for IngestContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let partitions = self.partitions_of(tpl);
                let offsets = if partitions.is_empty() {
                    Some(BTreeMap::new())
                } else {
                    self.load_offsets(&partitions).and_then(|offsets| self.close_gaps(consumer, offsets))
                };
                if let Some(offsets) = &offsets {
                    for ((topic, partition), offset) in offsets {
                        if let Err(e) = tpl.set_partition_offset(topic, *partition, Offset::Offset(*offset)) {
                            error!(self.log, "cannot set start offset"; "topic" => topic, "partition" => partition,
                                   "error" => %e);
                        }
                    }
                }
                let result = if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) };
                if let Err(e) = result {
                    error!(self.log, "assign failed"; "error" => %e);
                }
                info!(self.log, "partitions assigned"; "offsets" => ?offsets);
                if let Some(offsets) = offsets {
                    self.events.lock().expect("events").push(RebalanceEvent::Assigned(offsets));
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let partitions = self.partitions_of(tpl);
                self.revoke(&partitions);
                let result = if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() };
                if let Err(e) = result {
                    error!(self.log, "unassign failed"; "error" => %e);
                }
                info!(self.log, "partitions revoked"; "partitions" => ?partitions);
            }
            other => {
                error!(self.log, "rebalance error; dropping the assignment"; "error" => ?other);
                let all: Vec<TopicPartition> = self.cancels.lock().expect("cancels").keys().cloned().collect();
                self.revoke(&all);
                let _ = consumer.unassign();
            }
        }
    }
}

impl IngestContext {
    /// Cancels the partitions' in-flight batches at once, then lets the poll loop retire their actors.
    fn revoke(&self, partitions: &[TopicPartition]) {
        let cancels = self.cancels.lock().expect("cancels");
        for p in partitions {
            if let Some(flag) = cancels.get(p) {
                flag.store(true, Ordering::SeqCst);
            }
        }
        drop(cancels);
        self.events.lock().expect("events").push(RebalanceEvent::Revoked(partitions.to_vec()));
    }
}

pub(super) type IngestConsumer = BaseConsumer<IngestContext>;
