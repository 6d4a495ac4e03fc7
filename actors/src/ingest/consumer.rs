//! ConsumerActor: one per assigned partition. Parses the partition's messages into batches (by size
//! and by age) and hands each to a writer, waiting for its commit before taking in more messages —
//! so a slow or absent database stops this partition's intake and the source pauses it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use slog::{debug, error, info, warn, Logger};

use super::batch::{Batch, BatchBuilder, RawMessage};
use super::writer::{Backoff, WriteBatch, WriterPool};
use crate::domain::{ParseRules, RejectReason};
use crate::mailbox::{ActorProbe, Tracked, TrackedRecipient};
use crate::ports::{PartitionControl, SharedClock, StoreError};

// The write task runs beside the actor (not inside its context), so the actor can wait on it.

/// How a consumer batches.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Send the batch when it holds this many messages…
    pub batch_max_events: usize,
    /// …or when its first message has waited this long.
    pub batch_max_wait: Duration,
    /// Send the batch at once, however small, when no message waits behind it and the partition's
    /// writer is idle (see `ConsumerActor::nothing_waits`). Off: by size and age only.
    pub flush_when_idle: bool,
    pub rules: ParseRules,
    /// Pauses between attempts while the store is unavailable.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Attempts at a batch the store refuses for its data before it is split to find the rows at fault.
    pub rejected_attempts: u32,
    /// Observes, for each message with a timestamp, the time from that timestamp to this consumer
    /// taking it: the first stage of freshness (before the batch's age and the write) for messages
    /// stamped when they were accepted, as POST /ingest stamps them; a producer that stamps the
    /// event's own time (Kafka allows any) adds its lateness.
    pub take_delay: Option<prometheus::Histogram>,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            batch_max_events: 5_000,
            batch_max_wait: Duration::from_millis(50),
            flush_when_idle: true,
            rules: ParseRules::default(),
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            rejected_attempts: 3,
            take_delay: None,
        }
    }
}

/// Counters of one consumer.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    pub messages: AtomicU64,
    pub batches: AtomicU64,
    pub retries: AtomicU64,
    /// The partition's stored next offset, as last committed by this consumer.
    pub stored_offset: AtomicU64,
    /// Events and their payload bytes stored by this consumer's batches.
    pub stored_events: AtomicU64,
    pub stored_bytes: AtomicU64,
    /// When the batch being written was handed to a writer (epoch ms; 0 while none is in flight):
    /// readiness reports a partition whose batch has waited too long as stalled.
    pub write_started_ms: AtomicI64,
    /// Times the partition's stored offset had to jump over offsets Kafka no longer has.
    pub offset_gaps: AtomicU64,
    /// Dead letters stored, per reason (indexed like [`RejectReason::ALL`](crate::domain::RejectReason::ALL)).
    pub rejects: [AtomicU64; crate::domain::RejectReason::ALL.len()],
}

/// Announces a committed batch (the window aggregator subscribes to it).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Committed(pub Arc<Batch>);

/// The pipeline of one partition.
pub struct ConsumerActor {
    topic: Arc<str>,
    partition: i32,
    builder: BatchBuilder,
    /// Increments at each flush; a batch-age timer only fires for the batch it was set for.
    batch_seq: u64,
    config: ConsumerConfig,
    writers: Arc<WriterPool>,
    control: Arc<dyn PartitionControl>,
    clock: SharedClock,
    cancelled: Arc<AtomicBool>,
    committed: Option<TrackedRecipient<Committed>>,
    stats: Arc<ConsumerStats>,
    probe: Arc<ActorProbe>,
    /// The batch being written, if any: resolves to whether the partition may go on.
    in_flight: Option<actix_rt::task::JoinHandle<bool>>,
    /// The `batch_seq` of the batch in flight: its `Written` is the one that counts.
    in_flight_seq: u64,
    /// When the batch being filled took its first message (the writers' batch-age histogram).
    opened: Option<Instant>,
    /// The batch being filled passed its age bound while the previous one was being written
    /// (`ConsumerActor::writing`): it goes as soon as that write is stored.
    overdue: bool,
    log: Logger,
}

/// Everything a ConsumerActor is built from.
pub struct ConsumerParts {
    pub topic: Arc<str>,
    pub partition: i32,
    /// The partition's stored next offset: where this consumer starts.
    pub start_offset: i64,
    pub config: ConsumerConfig,
    pub writers: Arc<WriterPool>,
    pub control: Arc<dyn PartitionControl>,
    pub clock: SharedClock,
    /// Shared with the source, which sets it when the partition is revoked.
    pub cancelled: Arc<AtomicBool>,
    pub committed: Option<TrackedRecipient<Committed>>,
    pub stats: Arc<ConsumerStats>,
    /// This consumer's probe: the source queues its messages as `Tracked::queued(message, &probe)`.
    pub probe: Arc<ActorProbe>,
    pub log: Logger,
}

impl ConsumerActor {
    pub fn new(parts: ConsumerParts) -> ConsumerActor {
        let builder =
            BatchBuilder::new(parts.topic.clone(), parts.partition, parts.start_offset, parts.config.rules.clone());
        parts.stats.stored_offset.store(parts.start_offset.max(0) as u64, Ordering::Relaxed);
        ConsumerActor {
            log: parts.log.new(slog::o!("topic" => parts.topic.to_string(), "partition" => parts.partition)),
            topic: parts.topic,
            partition: parts.partition,
            builder,
            batch_seq: 0,
            config: parts.config,
            writers: parts.writers,
            control: parts.control,
            clock: parts.clock,
            cancelled: parts.cancelled,
            committed: parts.committed,
            stats: parts.stats,
            probe: parts.probe,
            in_flight: None,
            in_flight_seq: 0,
            opened: None,
            overdue: false,
        }
    }

    /// Hands the current batch to a writer. One batch per partition is written at a time while the
    /// next one fills; if the next is complete before the previous is stored, this actor (its stream
    /// included) waits — so a slow or absent database stops the partition's intake.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.builder.is_empty() {
            return;
        }
        self.batch_seq += 1;
        self.overdue = false;
        let batch = Arc::new(self.builder.take(self.cancelled.clone()));
        let opened = self.opened.take();
        let seq = self.batch_seq;
        let write = self.write_task(batch, opened, seq, ctx.address());
        match self.in_flight.take() {
            None => {
                self.in_flight = Some(actix_rt::spawn(write));
                self.in_flight_seq = seq;
            }
            Some(previous) => {
                ctx.wait(previous.into_actor(self).map(move |outcome, act, ctx| match outcome {
                    Ok(true) => {
                        act.in_flight = Some(actix_rt::spawn(write));
                        act.in_flight_seq = seq;
                    }
                    _ => ctx.stop(),
                }));
            }
        }
    }

    /// Writes one batch (retrying while the store is unavailable) and announces it once stored.
    /// A batch the store keeps refusing for its data is split until the refused messages are
    /// alone; those become `store_rejected` dead letters and the rest is stored, each part fenced
    /// on its own. Resolves to whether the partition may go on.
    fn write_task(
        &self,
        batch: Arc<Batch>,
        mut opened: Option<Instant>,
        seq: u64,
        me: Addr<Self>,
    ) -> impl std::future::Future<Output = bool> + 'static {
        let writer = PartWriter {
            writers: self.writers.clone(),
            stats: self.stats.clone(),
            probe: self.probe.clone(),
            control: self.control.clone(),
            committed: self.committed.clone(),
            log: self.log.clone(),
            topic: self.topic.clone(),
            partition: self.partition,
            backoff: Backoff::new(self.config.retry_base, self.config.retry_max),
        };
        let rejected_attempts = self.config.rejected_attempts.max(1);
        let clock = self.clock.clone();
        async move {
            let mut writer = writer;
            writer.stats.write_started_ms.store(clock.now().timestamp_millis(), Ordering::Relaxed);
            let mut parts = VecDeque::from([batch]);
            // Only the whole batch is retried on a refusal: the cause may pass (a partition dropped
            // under a cached day); a part of a split batch is refused for its rows.
            let mut attempts = rejected_attempts;
            let outcome = loop {
                let Some(part) = parts.pop_front() else { break Ok(()) };
                match writer.store(&part, attempts, opened.take()).await {
                    Ok(()) => writer.announce(part).await,
                    Err(StoreError::Rejected(reason)) => {
                        attempts = 1;
                        for next in writer.narrow(part, &reason).await.into_iter().rev() {
                            parts.push_front(next);
                        }
                    }
                    Err(other) => break Err(other),
                }
            };
            writer.stats.write_started_ms.store(0, Ordering::Relaxed);
            match outcome {
                Ok(()) => {
                    // What filled up meanwhile goes now, not when its age bound or the next message
                    // comes: the partition's writer has just become idle.
                    me.do_send(Written(seq));
                    true
                }
                Err(StoreError::Fenced { batch_from, stored }) => {
                    info!(writer.log, "fenced: another writer moved this partition; restarting it from the store";
                          "batch_from" => batch_from, "stored" => ?stored);
                    writer.control.restart(&writer.topic, writer.partition);
                    me.do_send(Halt);
                    false
                }
                Err(_) => {
                    debug!(writer.log, "partition revoked; in-flight batch dropped");
                    me.do_send(Halt);
                    false
                }
            }
        }
    }
}

/// Writes the parts of one batch in order and announces each once it is stored.
struct PartWriter {
    writers: Arc<WriterPool>,
    stats: Arc<ConsumerStats>,
    probe: Arc<ActorProbe>,
    control: Arc<dyn PartitionControl>,
    committed: Option<TrackedRecipient<Committed>>,
    log: Logger,
    topic: Arc<str>,
    partition: i32,
    backoff: Backoff,
}

impl PartWriter {
    /// Stores `part`, retrying for as long as the store is unavailable (never skipping data) and up
    /// to `rejected_attempts` times while it refuses the data.
    async fn store(
        &mut self,
        part: &Arc<Batch>,
        rejected_attempts: u32,
        mut opened: Option<Instant>,
    ) -> Result<(), StoreError> {
        let mut refused = 0;
        loop {
            if part.is_cancelled() {
                return Err(StoreError::Cancelled);
            }
            let writer = self.writers.pick();
            let sent = writer.inbox.send(WriteBatch::new(part.clone(), opened.take())).await;
            drop(writer);
            let failure = match sent {
                Ok(Ok(())) => {
                    self.backoff.succeed();
                    return Ok(());
                }
                Ok(Err(StoreError::Unavailable(reason))) => reason,
                Ok(Err(StoreError::Rejected(reason))) => {
                    refused += 1;
                    if refused >= rejected_attempts {
                        return Err(StoreError::Rejected(reason));
                    }
                    reason
                }
                Ok(Err(other)) => return Err(other),
                Err(mailbox) => mailbox.to_string(),
            };
            self.backoff.fail();
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            self.probe.error(format_args!("batch {}..{} not stored: {failure}", part.from, part.to));
            if self.backoff.failures() == 1 || self.backoff.failures().is_multiple_of(10) {
                warn!(self.log, "batch not stored yet; retrying"; "from" => part.from, "to" => part.to,
                      "attempt" => self.backoff.failures(), "error" => failure);
            }
            actix::clock::sleep(self.backoff.delay()).await;
        }
    }

    /// What to try, in order, after the store refused `part`: its two halves, or, for a single
    /// message, its `store_rejected` dead letter.
    async fn narrow(&mut self, part: Arc<Batch>, reason: &str) -> Vec<Arc<Batch>> {
        if let Some((left, right)) = part.split() {
            debug!(self.log, "store refused a batch; splitting it"; "from" => part.from, "to" => part.to,
                   "error" => reason);
            return vec![Arc::new(left), Arc::new(right)];
        }
        let already_dead_letter = part.rejects.first().is_some_and(|r| r.reason == RejectReason::StoreRejected);
        if !part.is_empty() && !already_dead_letter {
            warn!(self.log, "store refused a message; storing it as a dead letter"; "offset" => part.from,
                  "error" => reason);
            return vec![Arc::new(part.store_rejected(reason))];
        }
        if part.is_empty() {
            // Even the bare offset move is refused: that is the store, not the data. Wait and retry.
            self.backoff.fail();
            actix::clock::sleep(self.backoff.delay()).await;
            return vec![part];
        }
        error!(self.log, "store refused even the dead letter of a message; moving past it";
               "offset" => part.from, "error" => reason);
        vec![Arc::new(part.fence_only())]
    }

    /// Counts a stored part and tells the source and the aggregator.
    async fn announce(&self, part: Arc<Batch>) {
        let stats = &self.stats;
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.stored_offset.store(part.to.max(0) as u64, Ordering::Relaxed);
        stats.stored_events.fetch_add(part.events.len() as u64, Ordering::Relaxed);
        stats.stored_bytes.fetch_add(part.payload_bytes, Ordering::Relaxed);
        for reject in &part.rejects {
            stats.rejects[reject.reason.index()].fetch_add(1, Ordering::Relaxed);
        }
        debug!(self.log, "batch stored"; "from" => part.from, "to" => part.to,
               "events" => part.events.len(), "rejects" => part.rejects.len());
        self.control.stored(&self.topic, self.partition, part.to);
        if let Some(committed) = &self.committed {
            // Bounded: the aggregator's mailbox applies backpressure here, not memory.
            let _ = committed.send(Committed(part)).await;
        }
    }
}

/// The batch numbered so is stored: a batch waiting for it may go.
#[derive(Message)]
#[rtype(result = "()")]
struct Written(u64);

impl Handler<Written> for ConsumerActor {
    type Result = ();

    fn handle(&mut self, Written(seq): Written, ctx: &mut Self::Context) {
        // Only the write still in flight counts (a later one may have started since), and only when
        // no message waits in the stream: the last of those flushes as `take` does.
        // A batch whose age bound passed while this write ran was kept filling for it (`overdue`):
        // it goes now too.
        if seq == self.in_flight_seq && self.config.flush_when_idle && (self.probe.mailbox_depth() <= 0 || self.overdue)
        {
            self.flush(ctx);
        }
    }
}

/// Stop this consumer (its partition was fenced or revoked).
#[derive(Message)]
#[rtype(result = "()")]
struct Halt;

impl Handler<Halt> for ConsumerActor {
    type Result = ();

    fn handle(&mut self, _: Halt, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Actor for ConsumerActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        self.probe.started();
        debug!(self.log, "consumer started"; "from" => self.builder.next_offset());
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.probe.stopped();
        debug!(self.log, "consumer stopped"; "next_offset" => self.builder.next_offset());
    }
}

impl StreamHandler<Tracked<RawMessage>> for ConsumerActor {
    fn handle(&mut self, message: Tracked<RawMessage>, ctx: &mut Self::Context) {
        // The stream is this actor's mailbox: its messages come in the same envelope.
        let (message, timer) = message.open();
        self.take(message, ctx);
        timer.finish();
    }

    /// The source closed the stream (revocation or shutdown): what was not flushed is dropped.
    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl ConsumerActor {
    /// The batch size adapts to the backlog (group commit): while no message waits behind this one
    /// and the writer of this partition is idle, the batch is written now, however small — a
    /// trickle is stored at once instead of after `batch_max_wait`. Under backlog the queue is never
    /// empty, or a write is still running, so the batch keeps filling up to `batch_max_events`
    /// (throughput); between the two it grows to what arrives during one write. The age bound
    /// flushes a batch that keeps filling while the writer is idle; while the partition's previous
    /// batch is being written it waits for that write instead (`writing`).
    fn nothing_waits(&self) -> bool {
        self.config.flush_when_idle
            && self.probe.mailbox_depth() <= 0
            && self.in_flight.as_ref().is_none_or(|write| write.is_finished())
    }

    /// Whether this partition's previous batch is still being written, with the batch being filled
    /// free to keep growing meanwhile. Sealing it at its age bound would not store it any sooner
    /// (one batch per partition is written at a time): it would only wait, smaller, and the next
    /// batch would pay another transaction for what arrives meanwhile. So under backlog the age
    /// bound defers to the write in flight, and the batch goes when that write is stored (or when
    /// it is full). Off with `flush_when_idle` (batches by size and age only).
    fn writing(&self) -> bool {
        self.config.flush_when_idle && self.in_flight.as_ref().is_some_and(|write| !write.is_finished())
    }

    fn take(&mut self, message: RawMessage, ctx: &mut Context<Self>) {
        if self.cancelled.load(Ordering::Relaxed) {
            ctx.stop();
            return;
        }
        let was_empty = self.builder.is_empty();
        let now = self.clock.now();
        if let (Some(h), Some(sent)) = (&self.config.take_delay, message.timestamp) {
            // A producer's clock ahead of ours counts as no delay.
            h.observe((now - sent).to_std().map_or(0.0, |d| d.as_secs_f64()));
        }
        if !self.builder.push(message, now) {
            return;
        }
        if was_empty {
            self.opened = Some(Instant::now());
        }
        self.stats.messages.fetch_add(1, Ordering::Relaxed);
        if self.builder.len() >= self.config.batch_max_events || self.nothing_waits() {
            self.flush(ctx);
        } else if was_empty {
            let seq = self.batch_seq;
            ctx.run_later(self.config.batch_max_wait, move |act, ctx| {
                if act.batch_seq == seq {
                    if act.writing() {
                        act.overdue = true;
                    } else {
                        act.flush(ctx);
                    }
                }
            });
        }
    }
}
