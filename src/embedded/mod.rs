//! The embedded pipeline: a bounded in-process queue stands where Kafka stands, the same
//! ConsumerActors and supervised WriterActors store into SQLite. A line's 202 is sent once the
//! batch holding it has committed (group commit: one transaction holds the lines of many requests).
//!
//! The queue has one partition per core (parsing runs on the consumers, one per partition), each
//! numbering its lines from the offset stored in SQLite. A line stays retained until the stored
//! offset of its partition passes it, so a consumer restarted after a fence is fed again from
//! what is stored; only retained lines count against the queue's bound.

pub mod intake;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use actix::{Actor, Arbiter, ArbiterHandle, AsyncContext, Supervisor};
use actors::ingest::{Committed, ConsumerActor, ConsumerConfig, ConsumerParts, RawMessage, WriterActor, WriterPool};
use actors::intake::Line;
use actors::mailbox::{ActorProbe, ActorRegistry, Inbox, Tracked, TrackedRecipient};
use actors::ports::{EventStore, OffsetStore, PartitionControl, SharedClock, SystemClock};
use actors::windows::Ownership;
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures::channel::mpsc as chan;
use slog::{info, warn, Logger};
use tokio::sync::{watch, Notify};

use crate::config::Settings;
use crate::http::readiness::IngestView;
use crate::kafka::source::{partition_name, SourceState, TopicPartition};
use crate::sqlite::checkpoint::Checkpointer;
use crate::sqlite::event_store::SqliteEventStore;
use crate::sqlite::indexer::{IndexerConfig, KeywordIndexer};
use crate::sqlite::offset_store::{load_in, SqliteOffsetStore};
use crate::sqlite::{micros, SqliteDb};

/// Lines the queue retains at most, all partitions together.
pub const QUEUE_MESSAGES: usize = 65_536;
/// Payload bytes the queue retains at most: a few thousand 16 KiB lines, or the 64k lines above.
pub const QUEUE_BYTES: usize = 64 * 1024 * 1024;
/// Lines handed to one partition at a time: consecutive offsets, acknowledged together.
pub const CHUNK_LINES: usize = 1_024;
/// How long `stop` waits for what was queued to be stored.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(6);

/// One partition's feed into its ConsumerActor.
struct Feed {
    tx: chan::UnboundedSender<Tracked<RawMessage>>,
    probe: Arc<ActorProbe>,
    cancelled: Arc<AtomicBool>,
}

/// One partition's lines: retained from the stored offset on, numbered up to `next`.
struct Lane {
    retained: VecDeque<RawMessage>,
    next: i64,
    stored: i64,
    feed: Option<Feed>,
}

struct Partition {
    lane: Mutex<Lane>,
    /// The stored next offset, for those waiting on their lines.
    stored: watch::Sender<i64>,
}

/// What is retained, against the bounds.
#[derive(Default)]
struct Room {
    messages: usize,
    bytes: usize,
}

/// What starting a ConsumerActor takes.
struct Wiring {
    writers: Arc<WriterPool>,
    arbiters: Vec<ArbiterHandle>,
    clock: SharedClock,
    committed: Option<TrackedRecipient<Committed>>,
    config: ConsumerConfig,
    actors: ActorRegistry,
    log: Logger,
}

/// The in-process queue of one topic.
pub struct Queue {
    topic: Arc<str>,
    partitions: Vec<Partition>,
    room: Mutex<Room>,
    freed: Notify,
    round_robin: AtomicUsize,
    stopping: AtomicBool,
    state: Arc<SourceState>,
    wiring: Wiring,
    offsets: SqliteOffsetStore,
    me: Weak<Queue>,
}

/// Why the queue did not take a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl Queue {
    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn partition_count(&self) -> usize {
        self.partitions.len()
    }

    fn key(&self, partition: i32) -> TopicPartition {
        (self.topic.to_string(), partition)
    }

    /// Appends `lines` (at most `CHUNK_LINES`) to one partition, waiting until `deadline` for room;
    /// the partition and the offset of the last line.
    pub async fn push(
        &self,
        service: Option<&str>,
        lines: &[Line<'_>],
        received: DateTime<Utc>,
        deadline: Instant,
    ) -> Result<(usize, i64), Refusal> {
        let bytes: usize = lines.iter().map(|l| l.bytes.len()).sum();
        self.reserve(lines.len(), bytes, deadline).await?;
        let index = self.round_robin.fetch_add(1, Ordering::Relaxed) % self.partitions.len();
        let partition = &self.partitions[index];
        let mut lane = partition.lane.lock().expect("queue lane");
        for line in lines {
            let message = RawMessage {
                offset: lane.next,
                timestamp: Some(received),
                payload: Some(line.bytes.to_vec()),
                service: service.map(str::to_owned),
            };
            lane.next += 1;
            lane.retained.push_back(message);
        }
        if let Some(feed) = &lane.feed {
            // The whole chunk is counted into the consumer's mailbox before its first line is sent:
            // a consumer draining the channel while this loop runs would otherwise see an empty
            // mailbox mid-chunk and write half a request in a transaction of its own.
            let chunk = lane.retained.range(lane.retained.len() - lines.len()..);
            let tracked: Vec<_> = chunk.map(|m| Tracked::queued(m.clone(), &feed.probe)).collect();
            for message in tracked {
                // An unbounded channel: what it holds is retained too, so the queue's bound is its bound.
                let _ = feed.tx.unbounded_send(message);
            }
        }
        let last = lane.next - 1;
        self.state.high_watermarks.lock().expect("source state").insert(self.key(index as i32), lane.next);
        Ok((index, last))
    }

    async fn reserve(&self, messages: usize, bytes: usize, deadline: Instant) -> Result<(), Refusal> {
        let started = Instant::now();
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return Err(Refusal("the embedded queue is stopping".into()));
            }
            let freed = self.freed.notified();
            futures::pin_mut!(freed);
            freed.as_mut().enable();
            {
                let mut room = self.room.lock().expect("queue room");
                // An empty queue takes any chunk, so one larger than the bounds still goes through.
                let fits = room.messages + messages <= QUEUE_MESSAGES && room.bytes + bytes <= QUEUE_BYTES;
                if fits || room.messages == 0 {
                    room.messages += messages;
                    room.bytes += bytes;
                    return Ok(());
                }
            }
            let now = Instant::now();
            if now >= deadline || tokio::time::timeout(deadline - now, freed).await.is_err() {
                return Err(Refusal(format!(
                    "the embedded queue stayed full for {} ms",
                    started.elapsed().as_millis()
                )));
            }
        }
    }

    /// The stored next offset of `partition`, as it moves.
    pub fn stored(&self, partition: usize) -> watch::Receiver<i64> {
        self.partitions[partition].stored.subscribe()
    }

    /// Frees what is stored below `next` and tells the waiting lines.
    fn acknowledge(&self, partition: usize, next: i64) {
        let Some(p) = self.partitions.get(partition) else { return };
        let (mut messages, mut bytes) = (0, 0);
        {
            let mut lane = p.lane.lock().expect("queue lane");
            while lane.retained.front().is_some_and(|m| m.offset < next) {
                let m = lane.retained.pop_front().expect("checked");
                messages += 1;
                bytes += m.payload.as_ref().map_or(0, Vec::len);
            }
            lane.stored = lane.stored.max(next);
            lane.next = lane.next.max(next);
        }
        if messages > 0 {
            let mut room = self.room.lock().expect("queue room");
            room.messages -= messages;
            room.bytes -= bytes;
        }
        self.freed.notify_waiters();
        p.stored.send_modify(|stored| *stored = (*stored).max(next));
    }

    /// Starts a ConsumerActor for `partition` at `from`, fed the retained lines from there.
    fn start_consumer(&self, partition: usize, lane: &mut Lane, from: i64) {
        let key = self.key(partition as i32);
        if let Some(old) = lane.feed.take() {
            old.cancelled.store(true, Ordering::SeqCst);
        }
        let (tx, rx) = chan::unbounded();
        let cancelled = Arc::new(AtomicBool::new(false));
        let stats = self.state.stats_for(&key);
        let probe = self.wiring.actors.probe("consumer", partition_name(&key));
        let control: Arc<dyn PartitionControl> = Arc::new(QueueControl(self.me.clone()));
        let parts = ConsumerParts {
            topic: self.topic.clone(),
            partition: partition as i32,
            start_offset: from,
            config: self.wiring.config.clone(),
            writers: self.wiring.writers.clone(),
            control,
            clock: self.wiring.clock.clone(),
            cancelled: cancelled.clone(),
            committed: self.wiring.committed.clone(),
            stats: stats.clone(),
            probe: probe.clone(),
            log: self.wiring.log.clone(),
        };
        let arbiter = &self.wiring.arbiters[partition % self.wiring.arbiters.len()];
        ConsumerActor::start_in_arbiter(arbiter, move |ctx| {
            ctx.add_stream(rx);
            ConsumerActor::new(parts)
        });
        for message in lane.retained.iter().filter(|m| m.offset >= from) {
            let _ = tx.unbounded_send(Tracked::queued(message.clone(), &probe));
        }
        self.state.partitions.lock().expect("source state").insert(key, stats);
        lane.feed = Some(Feed { tx, probe, cancelled });
    }

    /// After a fence: the stored offset read again, and a new consumer from there.
    async fn restart(self: Arc<Self>, partition: usize) {
        let index = partition as i32;
        let stored = loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            match self.offsets.load(&self.topic, &[index]).await {
                Ok(offsets) => break offsets.get(&index).copied().unwrap_or(0),
                Err(e) => {
                    warn!(self.wiring.log, "reading a stored offset failed; retrying"; "partition" => index,
                          "error" => %e);
                    actix::clock::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        self.acknowledge(partition, stored);
        let mut lane = self.partitions[partition].lane.lock().expect("queue lane");
        info!(self.wiring.log, "embedded partition restarted from its stored offset"; "partition" => index,
              "offset" => stored);
        self.wiring.actors.probe("consumer", partition_name(&self.key(index))).restarted();
        self.start_consumer(partition, &mut lane, stored);
    }

    /// Whether every line queued so far is stored.
    fn drained(&self) -> bool {
        self.partitions.iter().all(|p| {
            let lane = p.lane.lock().expect("queue lane");
            lane.stored >= lane.next
        })
    }

    /// Ends every consumer's stream (they stop) and cancels what they hold.
    fn close(&self) {
        for p in &self.partitions {
            if let Some(feed) = p.lane.lock().expect("queue lane").feed.take() {
                feed.cancelled.store(true, Ordering::SeqCst);
            }
        }
        self.state.partitions.lock().expect("source state").clear();
    }
}

/// The consumers' way back to the queue (weak: the queue owns what starts them).
struct QueueControl(Weak<Queue>);

impl PartitionControl for QueueControl {
    fn stored(&self, topic: &str, partition: i32, next_offset: i64) {
        if let Some(queue) = self.0.upgrade().filter(|q| &*q.topic == topic) {
            queue.acknowledge(partition as usize, next_offset);
        }
    }

    fn restart(&self, topic: &str, partition: i32) {
        let Some(queue) = self.0.upgrade().filter(|q| &*q.topic == topic) else { return };
        if partition < 0 || partition as usize >= queue.partitions.len() {
            return;
        }
        // Called from a consumer's write task, on an arbiter: a task there reads the offset.
        actix_rt::spawn(queue.restart(partition as usize));
    }
}

/// A running embedded pipeline. Must be started inside an actix System.
pub struct EmbeddedIngest {
    state: Arc<SourceState>,
    queue: Arc<Queue>,
    db: SqliteDb,
    writers: Arc<WriterPool>,
    /// The keyword indexer behind the writer (held: a supervisor restarts only an actor with an address).
    _indexer: actix::Addr<KeywordIndexer>,
    /// The WAL checkpoints, off the writer's thread.
    checkpointer: Checkpointer,
    arbiters: Vec<Arbiter>,
    log: Logger,
}

impl EmbeddedIngest {
    /// Loads each partition's stored position from `db`, starts the writer (one: SQLite takes one
    /// writer at a time), the keyword indexer behind it, one ConsumerActor per queue partition, and
    /// the queue in front of them.
    pub fn start(
        settings: &Settings,
        db: SqliteDb,
        committed: Option<TrackedRecipient<Committed>>,
        ownership: Option<TrackedRecipient<Ownership>>,
        metrics: &crate::admin::Metrics,
        log: &slog::Logger,
    ) -> anyhow::Result<EmbeddedIngest> {
        EmbeddedIngest::start_tailed(settings, db, None, committed, ownership, metrics, log)
    }

    /// [`start`](EmbeddedIngest::start), the writer publishing each committed batch to `tail`.
    pub fn start_tailed(
        settings: &Settings,
        db: SqliteDb,
        tail: Option<Arc<actors::tail::TailHub>>,
        committed: Option<TrackedRecipient<Committed>>,
        ownership: Option<TrackedRecipient<Ownership>>,
        metrics: &crate::admin::Metrics,
        log: &slog::Logger,
    ) -> anyhow::Result<EmbeddedIngest> {
        let log = log.new(slog::o!("role" => "ingest", "queue" => "embedded"));
        let topic: Arc<str> = Arc::from(settings.primary_topic());
        let count = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).max(1);
        let indexes: Vec<i32> = (0..count as i32).collect();
        let stored = {
            let mut conn = db.connect()?;
            load_in(&mut conn, &topic, &indexes, micros(Utc::now()))
                .with_context(|| format!("reading the embedded queue's positions from {}", db.path().display()))?
        };

        // Before the writer's and the indexer's connections open: they leave checkpoints to it.
        let checkpointer = Checkpointer::start(
            db.clone(),
            metrics.sqlite_checkpoints.clone(),
            log.new(slog::o!("sqlite" => "checkpoint")),
        )
        .context("starting the WAL checkpoint thread")?;
        let writer_arbiter = Arbiter::new();
        let stats = metrics.writers.writer(0);
        let probe = metrics.actors.probe("writer", "0");
        let mut store: Box<dyn EventStore> = Box::new(SqliteEventStore::new(db.clone()));
        if let Some(hub) = tail {
            store = Box::new(actors::tail::AnnouncingStore::new(store, hub));
        }
        let (stats2, probe2, log2) = (stats.clone(), probe.clone(), log.new(slog::o!("writer" => 0)));
        let addr = Supervisor::start_in_arbiter(&writer_arbiter.handle(), move |_| {
            WriterActor::new(0, store, stats2, probe2, log2)
        });
        let writers = Arc::new(WriterPool::new(vec![(Inbox::new(addr, probe), stats)]));
        // The keyword counts, behind the writer, on an arbiter and a connection of their own.
        let indexer_arbiter = Arbiter::new();
        let indexer_config = IndexerConfig {
            interval: Duration::from_millis(settings.sqlite_index_interval_ms),
            chunk_rows: settings.sqlite_index_chunk_rows,
        };
        let (indexer_db, indexer_metrics, indexer_probe, indexer_log) = (
            db.clone(),
            metrics.keyword_index.clone(),
            metrics.actors.probe("keyword_indexer", "0"),
            log.new(slog::o!("indexer" => "keywords")),
        );
        let indexer = Supervisor::start_in_arbiter(&indexer_arbiter.handle(), move |_| {
            KeywordIndexer::new(indexer_db, indexer_config, indexer_metrics, indexer_probe, indexer_log)
        });
        let consumer_arbiters: Vec<Arbiter> = (0..count).map(|_| Arbiter::new()).collect();
        let state = Arc::new(SourceState::default());
        let wiring = Wiring {
            writers: writers.clone(),
            arbiters: consumer_arbiters.iter().map(Arbiter::handle).collect(),
            clock: Arc::new(SystemClock),
            committed,
            config: ConsumerConfig {
                batch_max_events: settings.batch_max_events(),
                batch_max_wait: Duration::from_millis(settings.batch_max_wait_ms),
                rules: settings.parse_rules(),
                take_delay: Some(metrics.writers.take_delay()),
                ..ConsumerConfig::default()
            },
            actors: metrics.actors.clone(),
            log: log.clone(),
        };
        let queue = Arc::new_cyclic(|me| Queue {
            topic: topic.clone(),
            partitions: indexes
                .iter()
                .map(|p| {
                    let at = stored.get(p).copied().unwrap_or(0);
                    Partition {
                        lane: Mutex::new(Lane { retained: VecDeque::new(), next: at, stored: at, feed: None }),
                        stored: watch::channel(at).0,
                    }
                })
                .collect(),
            room: Mutex::new(Room::default()),
            freed: Notify::new(),
            round_robin: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            state: state.clone(),
            wiring,
            offsets: SqliteOffsetStore::new(db.clone()),
            me: me.clone(),
        });
        for (index, p) in queue.partitions.iter().enumerate() {
            let mut lane = p.lane.lock().expect("queue lane");
            let from = lane.stored;
            queue.start_consumer(index, &mut lane, from);
            state.high_watermarks.lock().expect("source state").insert(queue.key(index as i32), from);
        }
        // One process holds every partition of the queue: memory answers are complete.
        if let Some(ownership) = &ownership {
            ownership.do_send(Ownership { owns_all: true });
        }
        metrics.source.watch(state.clone());
        let mut arbiters = vec![writer_arbiter, indexer_arbiter];
        arbiters.extend(consumer_arbiters);
        info!(log, "embedded ingest started"; "topic" => &*topic, "partitions" => count,
              "database" => %db.path().display());
        Ok(EmbeddedIngest { state, queue, db, writers, _indexer: indexer, checkpointer, arbiters, log })
    }

    /// The queue's partitions with their counters (what the Kafka source reports for its own).
    pub fn state(&self) -> Arc<SourceState> {
        self.state.clone()
    }

    /// What readiness sees of the partitions.
    pub fn view(&self) -> Arc<dyn IngestView> {
        Arc::new(crate::ingest::SourceView(self.state.clone()))
    }

    /// The intake's sink over this queue and `db`.
    pub fn intake(&self) -> intake::EmbeddedIntake {
        intake::EmbeddedIntake::new(self.queue.clone(), self.db.clone())
    }

    /// The queue itself (its partitions and stored positions).
    pub fn queue(&self) -> Arc<Queue> {
        self.queue.clone()
    }

    /// Stops taking lines, lets the writer finish what it holds, stops the arbiters.
    pub async fn stop(self) {
        self.queue.stopping.store(true, Ordering::SeqCst);
        self.queue.freed.notify_waiters();
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while !self.queue.drained() && Instant::now() < deadline {
            actix::clock::sleep(Duration::from_millis(10)).await;
        }
        if !self.queue.drained() {
            warn!(self.log, "the embedded queue was not stored in time; what remains is not acknowledged");
        }
        self.queue.close();
        let drains = self.writers.inboxes().iter().map(|writer| writer.send(actors::ingest::writer::Drain));
        if tokio::time::timeout(DRAIN_TIMEOUT, futures::future::join_all(drains)).await.is_err() {
            warn!(self.log, "the writer did not drain in time");
        }
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
        // Joins the thread (within one poll); SQLite checkpoints once more as the last connection closes.
        drop(self.checkpointer);
        info!(self.log, "embedded ingest stopped");
    }
}
