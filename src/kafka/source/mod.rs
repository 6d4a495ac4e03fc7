//! The Kafka side of ingest: one poll thread owns the rdkafka consumer (blocking work stays off the
//! actix arbiters), subscribed to every topic of `KAFKA_TOPIC` in one group, seeks each assigned
//! (topic, partition) to its offset stored in PostgreSQL, and feeds each partition's ConsumerActor
//! through a bounded channel, pausing the partition while that channel is full.

mod assignment;
mod config;
pub mod metrics;
mod rebalance;
mod router;
mod state;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use actix::ArbiterHandle;
use actors::ingest::{Committed, ConsumerConfig, RawMessage, WriterPool};
use actors::mailbox::{ActorRegistry, TrackedRecipient};
use actors::ports::{OffsetStore, SharedClock};
use actors::windows::Ownership;
use anyhow::Context as _;
use chrono::{TimeZone, Utc};
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::BorrowedMessage;
use rdkafka::Message;
use slog::{info, warn, Logger};

use assignment::{Assignment, Command, KafkaControl};
use rebalance::{IngestConsumer, IngestContext};
use router::Router;
pub use state::{partition_name, SourceState, TopicPartition};

/// Messages buffered between the poll thread and one partition's ConsumerActor.
pub(crate) const PARTITION_CHANNEL: usize = 4_096;
/// How long one poll waits for a message; bounds how quickly commands and shutdown are noticed.
const POLL_TIMEOUT: Duration = Duration::from_millis(20);
/// How long a static member's clean stop waits for its partitions to be revoked and the group left.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the check of a partition's available offsets waits for the broker.
pub(crate) const WATERMARK_TIMEOUT: Duration = Duration::from_secs(5);

/// What the source needs to know.
#[derive(Clone)]
pub struct SourceConfig {
    pub brokers: String,
    pub group: String,
    /// `group.instance.id` (static membership), from INSTANCE_ID.
    pub instance_id: Option<String>,
    /// The topics subscribed to, all in the one group.
    pub topics: Vec<String>,
    pub consumer: ConsumerConfig,
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

/// What a ConsumerActor is handed of one fetched message.
fn raw_message(message: &BorrowedMessage<'_>) -> RawMessage {
    RawMessage {
        offset: message.offset(),
        timestamp: message.timestamp().to_millis().and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
        payload: message.payload().map(<[u8]>::to_vec),
        service: requested_service(message),
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

/// What a fatal error means to whoever runs the process.
fn fatal_reason(config: &SourceConfig, code: RDKafkaErrorCode, reason: &str) -> String {
    match (code, &config.instance_id) {
        (RDKafkaErrorCode::FencedInstanceId, Some(id)) => format!(
            "fenced: another process joined group {} with INSTANCE_ID={id}; give each process its own ({reason})",
            config.group
        ),
        _ => format!("fatal Kafka error {code:?}: {reason}"),
    }
}

/// A static member's close sends no LeaveGroup (KIP-345): its partitions would wait out the session
/// timeout. Unsubscribing first revokes them through the usual rebalance path and leaves the group,
/// so a clean stop still hands them over at once.
fn leave_group(consumer: &IngestConsumer, log: &Logger) {
    consumer.unsubscribe();
    let deadline = std::time::Instant::now() + LEAVE_TIMEOUT;
    loop {
        // Messages still fetched belong to no partition now: the router drops them.
        let _ = consumer.poll(POLL_TIMEOUT);
        let owned = consumer.assignment().map(|tpl| tpl.count()).unwrap_or(0);
        if owned == 0 {
            break;
        }
        if std::time::Instant::now() >= deadline {
            warn!(log, "partitions still assigned when leaving the group"; "partitions" => owned);
            break;
        }
    }
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
        let state = Arc::new(SourceState::default());
        let context = IngestContext {
            topics: config.topics.clone(),
            offsets,
            runtime: tokio::runtime::Builder::new_current_thread().enable_all().build()?,
            events: Mutex::new(Vec::new()),
            cancels: Mutex::new(HashMap::new()),
            state: state.clone(),
            stopping: stopping.clone(),
            log: log.new(slog::o!("component" => "kafka")),
        };
        let consumer: IngestConsumer =
            config::consumer_config(&config).create_with_context(context).context("creating the Kafka consumer")?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).context("subscribing to the topics")?;
        let consumer = Arc::new(consumer);
        let (commands_tx, commands) = mpsc::channel();
        let control = Arc::new(KafkaControl { consumer: Arc::downgrade(&consumer), commands: Mutex::new(commands_tx) });
        let mut owned = Assignment {
            config,
            wiring,
            control,
            state: state.clone(),
            router: Router::new(state.clone()),
            next_arbiter: 0,
            log: log.clone(),
        };
        let stop = stopping.clone();
        let thread = std::thread::Builder::new().name("kafka-poll".into()).spawn(move || {
            let mut last_refresh = std::time::Instant::now();
            let mut fatal = None;
            // Asked only after a poll error and once a second: the answer takes a lock, and the
            // loop turns once per message.
            let mut check_fatal = false;
            while !stop.load(Ordering::Relaxed) {
                if last_refresh.elapsed() >= Duration::from_secs(1) {
                    owned.refresh_watermarks(&consumer);
                    last_refresh = std::time::Instant::now();
                    check_fatal = true;
                }
                if std::mem::take(&mut check_fatal) {
                    if let Some((code, reason)) = consumer.client().fatal_error() {
                        fatal = Some(fatal_reason(&owned.config, code, &reason));
                        break;
                    }
                }
                while let Ok(Command::Restart(partition)) = commands.try_recv() {
                    owned.restart_partition(&consumer, partition);
                }
                owned.router.drain_pending(&*consumer);
                let polled = consumer.poll(POLL_TIMEOUT);
                owned.apply_rebalance(&consumer);
                match polled {
                    Some(Ok(message)) => {
                        owned.router.route(&*consumer, message.topic(), message.partition(), || raw_message(&message))
                    }
                    Some(Err(e))
                        if matches!(
                            e.rdkafka_error_code(),
                            Some(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange)
                        ) =>
                    {
                        owned.offsets_out_of_range(&consumer, &e)
                    }
                    Some(Err(e)) => {
                        warn!(owned.log, "kafka poll error"; "error" => %e);
                        check_fatal = true;
                    }
                    None => {}
                }
            }
            // Stop: cancel what is in flight, end every actor's stream, then leave the group.
            let partitions: Vec<TopicPartition> = owned.router.partitions().cloned().collect();
            for partition in partitions {
                owned.stop_partition(&consumer, &partition);
            }
            if let Some(reason) = fatal {
                slog::error!(log, "kafka source stopped by a fatal error"; "error" => &reason);
                owned.state.fail(reason);
            } else if owned.config.instance_id.is_some() {
                leave_group(&consumer, &log);
            }
            drop(owned);
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
