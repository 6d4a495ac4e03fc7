//! The Kafka side of ingest: one poll thread owns the rdkafka consumer (blocking work stays off the
//! actix arbiters), subscribed to every topic of `KAFKA_TOPIC` in one group, seeks each assigned
//! (topic, partition) to its offset stored in PostgreSQL, and feeds each partition's ConsumerActor
//! through a bounded channel, pausing the partition while that channel is full.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use actix::{Actor, ArbiterHandle, AsyncContext};
use actors::ingest::{Committed, ConsumerActor, ConsumerConfig, ConsumerParts, ConsumerStats, RawMessage, WriterPool};
use actors::mailbox::{ActorProbe, ActorRegistry, Tracked, TrackedRecipient};
use actors::ports::{OffsetStore, PartitionControl, SharedClock};
use actors::windows::Ownership;
use anyhow::Context as _;
use chrono::{TimeZone, Utc};
use futures::channel::mpsc as chan;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use slog::{debug, error, info, warn, Logger};

/// Messages buffered between the poll thread and one partition's ConsumerActor.
const PARTITION_CHANNEL: usize = 4_096;
/// How long one poll waits for a message; bounds how quickly commands and shutdown are noticed.
const POLL_TIMEOUT: Duration = Duration::from_millis(20);
/// How long the check of a partition's available offsets waits for the broker.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(5);

/// A partition of one of the subscribed topics: partitions of different topics share numbers.
pub type TopicPartition = (String, i32);

/// How a partition is named where one string must say which (actor instances, readiness).
pub fn partition_name((topic, partition): &TopicPartition) -> String {
    format!("{topic}/{partition}")
}

/// What the source needs to know.
#[derive(Clone)]
pub struct SourceConfig {
    pub brokers: String,
    pub group: String,
    /// The topics subscribed to, all in the one group.
    pub topics: Vec<String>,
    pub consumer: ConsumerConfig,
}

/// What the source shares with whoever runs it: the partitions it owns, their counters.
#[derive(Default)]
pub struct SourceState {
    /// The partitions owned now.
    pub partitions: Mutex<BTreeMap<TopicPartition, Arc<ConsumerStats>>>,
    /// Every partition this process has owned: a partition owned again keeps counting where it
    /// left off, so exported counters never go back.
    ever: Mutex<BTreeMap<TopicPartition, Arc<ConsumerStats>>>,
    /// Each owned partition's high watermark (next offset the broker will assign), refreshed each second.
    pub high_watermarks: Mutex<BTreeMap<TopicPartition, i64>>,
    /// Owned partitions whose fetching is paused (their consumer is behind on writing).
    pub paused: Mutex<BTreeSet<TopicPartition>>,
}

impl SourceState {
    pub fn owned(&self) -> BTreeSet<TopicPartition> {
        self.partitions.lock().expect("source state").keys().cloned().collect()
    }

    pub fn owns(&self, partition: &TopicPartition) -> bool {
        self.partitions.lock().expect("source state").contains_key(partition)
    }

    /// Every partition ever owned, with its counters.
    pub fn all_partitions(&self) -> Vec<(TopicPartition, Arc<ConsumerStats>)> {
        self.ever.lock().expect("source state").iter().map(|(p, s)| (p.clone(), s.clone())).collect()
    }

    /// The counters of `partition`, kept across the times it is owned.
    fn stats_for(&self, partition: &TopicPartition) -> Arc<ConsumerStats> {
        let mut ever = self.ever.lock().expect("source state");
        if let Some(stats) = ever.get(partition) {
            return stats.clone();
        }
        ever.entry(partition.clone()).or_default().clone()
    }

    /// Events in the owned partitions not yet stored, as far as this process knows.
    pub fn lag(&self) -> Option<i64> {
        let partitions = self.partitions.lock().expect("source state");
        let highs = self.high_watermarks.lock().expect("source state");
        let mut lag = 0;
        for (p, stats) in partitions.iter() {
            let high = *highs.get(p)?;
            lag += (high - stats.stored_offset.load(Ordering::Relaxed) as i64).max(0);
        }
        Some(lag)
    }
}

/// Everything the poll thread hands to the ConsumerActors it starts.
pub struct ActorWiring {
    pub writers: Arc<WriterPool>,
    pub arbiters: Vec<ArbiterHandle>,
    pub clock: SharedClock,
    pub committed: Option<TrackedRecipient<Committed>>,
    /// Told whether this process owns every partition of every topic, after each rebalance.
    pub ownership: Option<TrackedRecipient<Ownership>>,
    /// Where each consumer's probe comes from (instance = `topic/partition`).
    pub actors: ActorRegistry,
}

enum RebalanceEvent {
    Assigned(BTreeMap<TopicPartition, i64>),
    Revoked(Vec<TopicPartition>),
}

enum Command {
    Restart(TopicPartition),
}

/// rdkafka callbacks: offsets come from the store at assignment, before any message is fetched.
struct IngestContext {
    topics: Vec<String>,
    offsets: Arc<dyn OffsetStore>,
    /// Runs the offset store's futures inside rdkafka's callbacks, on the poll thread.
    runtime: tokio::runtime::Runtime,
    events: Mutex<Vec<RebalanceEvent>>,
    cancels: Mutex<HashMap<TopicPartition, Arc<AtomicBool>>>,
    /// Partitions whose stored offset had to jump a gap, for the router to count.
    gaps: Mutex<Vec<TopicPartition>>,
    stopping: Arc<AtomicBool>,
    log: Logger,
}

impl IngestContext {
    /// Loads stored offsets, retrying while the store is unavailable (the partitions wait).
    fn load_offsets(&self, partitions: &[TopicPartition]) -> Option<BTreeMap<TopicPartition, i64>> {
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
    fn close_gaps(
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
                    error!(self.log, "stored offset no longer in Kafka; offsets skipped and recorded in offset_gaps";
                           "topic" => topic, "partition" => partition, "from_offset" => *offset,
                           "to_offset" => low, "kafka_low" => low, "kafka_high" => high,
                           "why" => if *offset < low { "deleted by retention before they were stored" }
                                    else { "the partition's offsets went back (topic recreated?)" });
                    self.gaps.lock().expect("gaps").push(key.clone());
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

type IngestConsumer = BaseConsumer<IngestContext>;

/// The ConsumerActors' way back to Kafka.
struct KafkaControl {
    consumer: Weak<IngestConsumer>,
    commands: Mutex<mpsc::Sender<Command>>,
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

struct Slot {
    tx: chan::Sender<Tracked<RawMessage>>,
    /// Messages fetched while the partition's actor was full: still counted in its mailbox.
    pending: VecDeque<Tracked<RawMessage>>,
    probe: Arc<ActorProbe>,
    paused: bool,
    cancelled: Arc<AtomicBool>,
}

/// The poll thread's state besides the consumer itself.
struct Router {
    config: SourceConfig,
    wiring: ActorWiring,
    control: Arc<KafkaControl>,
    state: Arc<SourceState>,
    slots: HashMap<TopicPartition, Slot>,
    /// Reused to look up each message's slot without allocating its topic.
    route_key: TopicPartition,
    next_arbiter: usize,
    log: Logger,
}

impl Router {
    fn start_partition(&mut self, consumer: &IngestConsumer, key: TopicPartition, offset: i64) {
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
        self.slots.insert(key, Slot { tx, pending: VecDeque::new(), probe, paused: false, cancelled });
    }

    fn stop_partition(&mut self, consumer: &IngestConsumer, partition: &TopicPartition) {
        if let Some(slot) = self.slots.remove(partition) {
            slot.cancelled.store(true, Ordering::SeqCst);
            if slot.paused {
                self.set_paused(consumer, partition, false);
            }
            // Dropping the sender ends the actor's stream.
        }
        consumer.context().cancels.lock().expect("cancels").remove(partition);
        self.state.partitions.lock().expect("source state").remove(partition);
    }

    fn set_paused(&self, consumer: &IngestConsumer, partition: &TopicPartition, paused: bool) {
        let mut paused_now = self.state.paused.lock().expect("source state");
        if paused {
            paused_now.insert(partition.clone());
        } else {
            paused_now.remove(partition);
        }
        drop(paused_now);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&partition.0, partition.1);
        let result = if paused { consumer.pause(&tpl) } else { consumer.resume(&tpl) };
        if let Err(e) = result {
            warn!(self.log, "pause/resume failed"; "topic" => &partition.0, "partition" => partition.1,
                  "pause" => paused, "error" => %e);
        }
    }

    fn apply_rebalance(&mut self, consumer: &IngestConsumer) {
        for partition in std::mem::take(&mut *consumer.context().gaps.lock().expect("gaps")) {
            self.state.stats_for(&partition).offset_gaps.fetch_add(1, Ordering::Relaxed);
        }
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
        let owns_all = total.is_some_and(|total| self.slots.len() == total);
        ownership.do_send(Ownership { owns_all });
    }

    /// Refreshes the owned partitions' high watermarks (for lag).
    fn refresh_watermarks(&mut self, consumer: &IngestConsumer) {
        let mut highs = BTreeMap::new();
        for key in self.slots.keys() {
            if let Ok((_, high)) = consumer.fetch_watermarks(&key.0, key.1, Duration::from_millis(200)) {
                highs.insert(key.clone(), high);
            }
        }
        *self.state.high_watermarks.lock().expect("source state") = highs;
    }

    fn restart_partition(&mut self, consumer: &IngestConsumer, partition: TopicPartition) {
        if !self.slots.contains_key(&partition) {
            return; // revoked meanwhile
        }
        self.stop_partition(consumer, &partition);
        let context = consumer.context();
        let Some(offsets) =
            context.load_offsets(std::slice::from_ref(&partition)).and_then(|o| context.close_gaps(consumer, o))
        else {
            return;
        };
        for partition in std::mem::take(&mut *context.gaps.lock().expect("gaps")) {
            self.state.stats_for(&partition).offset_gaps.fetch_add(1, Ordering::Relaxed);
        }
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
    fn offsets_out_of_range(&mut self, consumer: &IngestConsumer, error: &KafkaError) {
        let positions = consumer.position().unwrap_or_default();
        let mut owned: Vec<TopicPartition> = self.slots.keys().cloned().collect();
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

    /// Hands buffered messages on; resumes a paused partition once its backlog is through.
    fn drain_pending(&mut self, consumer: &IngestConsumer) {
        let mut resume = Vec::new();
        for (partition, slot) in self.slots.iter_mut().filter(|(_, s)| s.paused) {
            while let Some(message) = slot.pending.pop_front() {
                match slot.tx.try_send(message) {
                    Ok(()) => {}
                    Err(e) if e.is_full() => {
                        slot.pending.push_front(e.into_inner());
                        break;
                    }
                    Err(_) => {
                        slot.pending.clear(); // the actor is gone (fenced or revoked)
                    }
                }
            }
            if slot.pending.is_empty() {
                slot.paused = false;
                resume.push(partition.clone());
            }
        }
        for partition in resume {
            self.set_paused(consumer, &partition, false);
        }
    }

    fn route(&mut self, consumer: &IngestConsumer, message: &BorrowedMessage<'_>) {
        self.route_key.0.clear();
        self.route_key.0.push_str(message.topic());
        self.route_key.1 = message.partition();
        let Some(slot) = self.slots.get_mut(&self.route_key) else { return };
        let raw = RawMessage {
            offset: message.offset(),
            timestamp: message.timestamp().to_millis().and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
            payload: message.payload().map(<[u8]>::to_vec),
            service: requested_service(message),
        };
        let raw = Tracked::queued(raw, &slot.probe);
        if slot.paused {
            slot.pending.push_back(raw);
            return;
        }
        match slot.tx.try_send(raw) {
            Ok(()) => {}
            Err(e) if e.is_full() => {
                // The partition's actor is busy writing: stop fetching it until it catches up.
                slot.pending.push_back(e.into_inner());
                slot.paused = true;
                let partition = self.route_key.clone();
                self.set_paused(consumer, &partition, true);
            }
            Err(_) => {}
        }
    }
}

/// The service `POST /ingest?service=` put in the message's header, if any.
fn requested_service(message: &BorrowedMessage<'_>) -> Option<String> {
    use rdkafka::message::Headers;
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == actors::ingest::SERVICE_HEADER)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_owned)
}

/// A running Kafka source.
pub struct KafkaSource {
    thread: Option<JoinHandle<()>>,
    stopping: Arc<AtomicBool>,
    pub state: Arc<SourceState>,
}

impl KafkaSource {
    /// Subscribes to the topics and starts the poll thread.
    pub fn start(
        config: SourceConfig,
        offsets: Arc<dyn OffsetStore>,
        wiring: ActorWiring,
        log: Logger,
    ) -> anyhow::Result<KafkaSource> {
        let stopping = Arc::new(AtomicBool::new(false));
        let context = IngestContext {
            topics: config.topics.clone(),
            offsets,
            runtime: tokio::runtime::Builder::new_current_thread().enable_all().build()?,
            events: Mutex::new(Vec::new()),
            cancels: Mutex::new(HashMap::new()),
            gaps: Mutex::new(Vec::new()),
            stopping: stopping.clone(),
            log: log.new(slog::o!("component" => "kafka")),
        };
        let consumer: IngestConsumer = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group)
            .set("client.id", "log-analyzer-ingest")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            // Never jump silently: an offset the broker no longer has is an error the poll loop handles.
            .set("auto.offset.reset", "error")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("queued.max.messages.kbytes", "65536")
            .set("fetch.wait.max.ms", "20")
            // librdkafka backs a partition's fetcher off this long whenever its queue is full or it
            // was paused (1 s by default): with backpressure pausing partitions about once per batch,
            // that capped ingest at one batch per partition per second (docs/BENCHMARKS.md).
            .set("fetch.queue.backoff.ms", "10")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1500")
            .set("topic.metadata.refresh.interval.ms", "10000")
            .set("enable.partition.eof", "false")
            .create_with_context(context)
            .context("creating the Kafka consumer")?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).context("subscribing to the topics")?;
        let consumer = Arc::new(consumer);
        let (commands_tx, commands) = mpsc::channel();
        let control = Arc::new(KafkaControl { consumer: Arc::downgrade(&consumer), commands: Mutex::new(commands_tx) });
        let state = Arc::new(SourceState::default());
        let mut router = Router {
            config,
            wiring,
            control,
            state: state.clone(),
            slots: HashMap::new(),
            route_key: (String::new(), 0),
            next_arbiter: 0,
            log: log.clone(),
        };
        let stop = stopping.clone();
        let thread = std::thread::Builder::new().name("kafka-poll".into()).spawn(move || {
            let mut last_refresh = std::time::Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if last_refresh.elapsed() >= Duration::from_secs(1) {
                    router.refresh_watermarks(&consumer);
                    last_refresh = std::time::Instant::now();
                }
                while let Ok(Command::Restart(partition)) = commands.try_recv() {
                    router.restart_partition(&consumer, partition);
                }
                router.drain_pending(&consumer);
                let polled = consumer.poll(POLL_TIMEOUT);
                router.apply_rebalance(&consumer);
                match polled {
                    Some(Ok(message)) => router.route(&consumer, &message),
                    Some(Err(e))
                        if matches!(
                            e.rdkafka_error_code(),
                            Some(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange)
                        ) =>
                    {
                        router.offsets_out_of_range(&consumer, &e)
                    }
                    Some(Err(e)) => warn!(router.log, "kafka poll error"; "error" => %e),
                    None => {}
                }
            }
            // Stop: cancel what is in flight, end every actor's stream, then leave the group.
            let owned: Vec<TopicPartition> = router.slots.keys().cloned().collect();
            for partition in owned {
                router.stop_partition(&consumer, &partition);
            }
            drop(router);
            match Arc::try_unwrap(consumer) {
                Ok(consumer) => drop(consumer), // closes: revokes, commits nothing, leaves the group
                Err(_) => warn!(log, "kafka consumer still shared at shutdown; the group notices by timeout"),
            }
            info!(log, "kafka source stopped");
        })?;
        Ok(KafkaSource { thread: Some(thread), stopping, state })
    }

    /// A source that runs nothing (what a stopped source leaves behind).
    pub fn stopped() -> KafkaSource {
        KafkaSource { thread: None, stopping: Arc::new(AtomicBool::new(true)), state: Arc::default() }
    }

    /// Stops fetching, leaves the group, and waits for the poll thread (blocking).
    pub fn stop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.stop();
    }
}
