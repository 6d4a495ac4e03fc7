//! ConsumerActor: one per assigned partition. Parses the partition's messages into batches (by size
//! and by age) and hands each to a writer, waiting for its commit before taking in more messages —
//! so a slow or absent database stops this partition's intake and the source pauses it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use slog::{debug, info, warn, Logger};

use super::batch::{Batch, BatchBuilder, RawMessage};
use super::writer::{Backoff, WriteBatch, WriterPool};
use crate::domain::ParseRules;
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
    pub rules: ParseRules,
    /// Pauses between attempts while the store is unavailable.
    pub retry_base: Duration,
    pub retry_max: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            batch_max_events: 5_000,
            batch_max_wait: Duration::from_millis(50),
            rules: ParseRules::default(),
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
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
        let batch = Arc::new(self.builder.take(self.cancelled.clone()));
        let write = self.write_task(batch, ctx.address());
        match self.in_flight.take() {
            None => self.in_flight = Some(actix_rt::spawn(write)),
            Some(previous) => {
                ctx.wait(previous.into_actor(self).map(move |outcome, act, ctx| match outcome {
                    Ok(true) => act.in_flight = Some(actix_rt::spawn(write)),
                    _ => ctx.stop(),
                }));
            }
        }
    }

    /// Writes one batch (retrying while the store is unavailable) and announces it once stored.
    /// Resolves to whether the partition may go on.
    fn write_task(&self, batch: Arc<Batch>, me: Addr<Self>) -> impl std::future::Future<Output = bool> + 'static {
        let writers = self.writers.clone();
        let stats = self.stats.clone();
        let probe = self.probe.clone();
        let control = self.control.clone();
        let committed = self.committed.clone();
        let log = self.log.clone();
        let topic = self.topic.clone();
        let partition = self.partition;
        let mut backoff = Backoff::new(self.config.retry_base, self.config.retry_max);
        async move {
            let result = loop {
                if batch.is_cancelled() {
                    break Err(StoreError::Cancelled);
                }
                let failure = match writers.pick().send(WriteBatch(batch.clone())).await {
                    Ok(Ok(())) => break Ok(()),
                    Ok(Err(StoreError::Unavailable(reason))) => reason,
                    Ok(Err(other)) => break Err(other),
                    Err(mailbox) => mailbox.to_string(),
                };
                backoff.fail();
                stats.retries.fetch_add(1, Ordering::Relaxed);
                probe.error(format_args!("batch {}..{} not stored: {failure}", batch.from, batch.to));
                if backoff.failures() == 1 || backoff.failures().is_multiple_of(10) {
                    warn!(log, "batch not stored yet; retrying"; "from" => batch.from, "to" => batch.to,
                          "attempt" => backoff.failures(), "error" => failure);
                }
                actix::clock::sleep(backoff.delay()).await;
            };
            match result {
                Ok(()) => {
                    stats.batches.fetch_add(1, Ordering::Relaxed);
                    stats.stored_offset.store(batch.to.max(0) as u64, Ordering::Relaxed);
                    stats.stored_events.fetch_add(batch.events.len() as u64, Ordering::Relaxed);
                    stats.stored_bytes.fetch_add(batch.payload_bytes, Ordering::Relaxed);
                    for reject in &batch.rejects {
                        stats.rejects[reject.reason.index()].fetch_add(1, Ordering::Relaxed);
                    }
                    debug!(log, "batch stored"; "from" => batch.from, "to" => batch.to,
                           "events" => batch.events.len(), "rejects" => batch.rejects.len());
                    control.stored(&topic, partition, batch.to);
                    if let Some(committed) = committed {
                        // Bounded: the aggregator's mailbox applies backpressure here, not memory.
                        let _ = committed.send(Committed(batch)).await;
                    }
                    true
                }
                Err(StoreError::Fenced { batch_from, stored }) => {
                    info!(log, "fenced: another writer moved this partition; restarting it from the store";
                          "batch_from" => batch_from, "stored" => ?stored);
                    control.restart(&topic, partition);
                    me.do_send(Halt);
                    false
                }
                Err(_) => {
                    debug!(log, "partition revoked; in-flight batch dropped");
                    me.do_send(Halt);
                    false
                }
            }
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
    fn take(&mut self, message: RawMessage, ctx: &mut Context<Self>) {
        if self.cancelled.load(Ordering::Relaxed) {
            ctx.stop();
            return;
        }
        let was_empty = self.builder.is_empty();
        if !self.builder.push(message, self.clock.now()) {
            return;
        }
        self.stats.messages.fetch_add(1, Ordering::Relaxed);
        if self.builder.len() >= self.config.batch_max_events {
            self.flush(ctx);
        } else if was_empty {
            let seq = self.batch_seq;
            ctx.run_later(self.config.batch_max_wait, move |act, ctx| {
                if act.batch_seq == seq {
                    act.flush(ctx);
                }
            });
        }
    }
}
