//! The live tail (`GET /logs/tail`): events reach tail clients only after their batch committed, so
//! every tailed line can be found by a search.
//!
//! A [`TailHub`] per process holds the connected clients, each with its [`Filter`] and a bounded
//! queue. Feeders publish committed events into it: in embedded mode the one writer, through
//! [`AnnouncingStore`]; on PostgreSQL a listener that hears every ingest process's commits and reads
//! the rows back, keeping a [`Progress`] so that each stored offset is published once.
//!
//! A client that falls behind by its whole queue is cut: its queue is emptied (the memory goes at
//! once, not when its connection finally closes) and the stream says so. Publishing never waits.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::domain::batch::Batch;
use crate::ports::{EventStore, StoreError};
use crate::search::{Filter, FoundEvent};

#[cfg(test)]
mod tests;

/// Bounds of the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailLimits {
    /// Events one client may have waiting before it is cut (`TAIL_BUFFER_EVENTS`).
    pub buffer_events: usize,
    /// Clients at once (`TAIL_MAX_CLIENTS`).
    pub max_clients: usize,
}

/// One event as every client that wants it gets it: serialized once, shared.
#[derive(Debug)]
pub struct TailEvent {
    /// `topic/partition/offset`: where the event is stored.
    pub id: String,
    /// The event as search answers it ([`FoundEvent`] as JSON, on one line).
    pub json: String,
}

/// What a client's stream reads next.
#[derive(Debug, Clone)]
pub enum TailItem {
    Event(Arc<TailEvent>),
    /// The client fell `buffer_events` behind and was dropped from the hub; its stream ends here.
    Cut,
}

#[derive(Debug, Default)]
struct Queue {
    events: VecDeque<Arc<TailEvent>>,
    cut: bool,
}

/// One client's side of the hub.
#[derive(Debug)]
struct Client {
    filter: Filter,
    queue: Mutex<Queue>,
    wake: Notify,
}

impl Client {
    /// Queues `event`, or cuts the client when its queue is full. False when it was cut now.
    fn offer(&self, event: &Arc<TailEvent>, capacity: usize) -> bool {
        let mut queue = self.queue.lock().expect("tail queue");
        if queue.cut {
            return true;
        }
        let kept = if queue.events.len() >= capacity {
            queue.cut = true;
            queue.events = VecDeque::new();
            false
        } else {
            queue.events.push_back(event.clone());
            true
        };
        drop(queue);
        self.wake.notify_one();
        kept
    }
}

/// Counters an operator or a test can read.
#[derive(Debug, Default)]
pub struct TailStats {
    /// Events queued to clients (one per client that got it).
    pub delivered: AtomicU64,
    /// Clients cut for falling behind.
    pub cut: AtomicU64,
    /// Clients refused because `max_clients` were connected.
    pub refused: AtomicU64,
}

/// Starts what feeds the hub the first time a client connects (a PostgreSQL listener need not run
/// in a process nobody tails).
pub type FeedStarter = Box<dyn FnOnce(Arc<TailHub>) + Send>;

/// The clients of one process and the fan-out to them.
pub struct TailHub {
    limits: TailLimits,
    clients: Mutex<Vec<Arc<Client>>>,
    feed: Mutex<Option<FeedStarter>>,
    me: Weak<TailHub>,
    pub stats: TailStats,
}

/// `max_clients` are connected already.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{connected} live tails are open, the most this server takes (TAIL_MAX_CLIENTS); try again later")]
pub struct TailFull {
    pub connected: usize,
}

impl TailHub {
    /// A hub fed by whoever holds it (embedded mode: [`AnnouncingStore`]).
    pub fn new(limits: TailLimits) -> Arc<TailHub> {
        TailHub::with_feed(limits, None)
    }

    /// A hub whose feed starts when the first client connects.
    pub fn with_feed(limits: TailLimits, feed: Option<FeedStarter>) -> Arc<TailHub> {
        Arc::new_cyclic(|me| TailHub {
            limits,
            clients: Mutex::new(Vec::new()),
            feed: Mutex::new(feed),
            me: me.clone(),
            stats: TailStats::default(),
        })
    }

    pub fn limits(&self) -> TailLimits {
        self.limits
    }

    /// Clients connected (cut ones no longer count).
    pub fn clients(&self) -> usize {
        self.clients.lock().expect("tail clients").len()
    }

    /// Whether publishing would reach anyone: feeders skip reading events nobody waits for.
    pub fn has_clients(&self) -> bool {
        self.clients() > 0
    }

    /// Connects a client that sees the matching events published from now on.
    pub fn subscribe(&self, filter: Filter) -> Result<TailSubscription, TailFull> {
        let client = Arc::new(Client { filter, queue: Mutex::default(), wake: Notify::new() });
        {
            let mut clients = self.clients.lock().expect("tail clients");
            if clients.len() >= self.limits.max_clients {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                return Err(TailFull { connected: clients.len() });
            }
            clients.push(client.clone());
        }
        let starter = self.feed.lock().expect("tail feed").take();
        if let (Some(start), Some(me)) = (starter, self.me.upgrade()) {
            start(me);
        }
        Ok(TailSubscription { client, hub: self.me.clone() })
    }

    /// Offers one stored event to every client whose filter matches. `tokens` are the event's
    /// stored tokens (what the filter reads).
    pub fn publish(&self, event: &FoundEvent, tokens: &[&str]) {
        let clients = self.clients.lock().expect("tail clients");
        if clients.is_empty() {
            return;
        }
        let mut shared: Option<Arc<TailEvent>> = None;
        let mut cut = Vec::new();
        for (index, client) in clients.iter().enumerate() {
            if !client.filter.matches_row(event.level, &event.service, tokens) {
                continue;
            }
            let tail_event = shared.get_or_insert_with(|| Arc::new(TailEvent::of(event)));
            if client.offer(tail_event, self.limits.buffer_events) {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
            } else {
                cut.push(index);
            }
        }
        drop(clients);
        if !cut.is_empty() {
            let mut clients = self.clients.lock().expect("tail clients");
            clients.retain(|c| !c.queue.lock().expect("tail queue").cut);
            self.stats.cut.fetch_add(cut.len() as u64, Ordering::Relaxed);
        }
    }

    /// Publishes a committed batch's events (embedded mode: the batch is what was stored).
    pub fn publish_batch(&self, batch: &Batch) {
        if !self.has_clients() {
            return;
        }
        for stored in &batch.events {
            let found = FoundEvent::of(&batch.topic, batch.partition, stored.offset, &stored.event);
            let tokens: Vec<&str> = stored.event.tokens.iter().collect();
            self.publish(&found, &tokens);
        }
    }

    fn leave(&self, client: &Arc<Client>) {
        self.clients.lock().expect("tail clients").retain(|c| !Arc::ptr_eq(c, client));
    }
}

impl TailEvent {
    pub fn of(event: &FoundEvent) -> TailEvent {
        TailEvent {
            id: format!("{}/{}/{}", event.topic, event.partition, event.offset),
            json: serde_json::to_string(event).unwrap_or_else(|_| "null".to_owned()),
        }
    }
}

/// A connected client: read it with [`next`](TailSubscription::next); dropping it disconnects.
pub struct TailSubscription {
    client: Arc<Client>,
    hub: Weak<TailHub>,
}

impl TailSubscription {
    /// The next event, or `Cut` (after which there is nothing more).
    pub async fn next(&self) -> TailItem {
        loop {
            {
                let mut queue = self.client.queue.lock().expect("tail queue");
                if queue.cut {
                    return TailItem::Cut;
                }
                if let Some(event) = queue.events.pop_front() {
                    return TailItem::Event(event);
                }
            }
            // A wake-up given while nobody waited is kept (notify_one), so none is lost here.
            self.client.wake.notified().await;
        }
    }
}

impl Drop for TailSubscription {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.leave(&self.client);
        }
    }
}

/// Where a feeder stands in each partition: the next offset it has published. Every stored offset
/// is published once: a range below it is never read again, a range beyond it (announcements were
/// missed) is read from it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Progress {
    next: HashMap<(String, i32), i64>,
}

/// Offsets of one partition to read and publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub topic: String,
    pub partition: i32,
    pub offsets: Range<i64>,
    /// Whether the announcement's time bounds cover every offset (false when a gap before it is
    /// read too: those events' times are unknown).
    pub announced_only: bool,
}

impl Progress {
    pub fn next(&self, topic: &str, partition: i32) -> Option<i64> {
        self.next.get(&(topic.to_owned(), partition)).copied()
    }

    /// A batch `[from, to)` committed. A partition not seen yet starts at `from`: the feeder
    /// listened before it read the stored positions, so nothing of it committed unheard.
    pub fn stored(&mut self, topic: &str, partition: i32, from: i64, to: i64) -> Option<Due> {
        let next = self.next.entry((topic.to_owned(), partition)).or_insert(from);
        if to <= *next {
            return None;
        }
        let start = *next;
        *next = to;
        Some(Due { topic: topic.to_owned(), partition, offsets: start..to, announced_only: start >= from })
    }

    /// The stored position of a partition, read after (re)connecting: a partition not seen yet
    /// starts there (what was stored before the first client is not replayed); one seen before
    /// catches up on what was committed while the feeder was not listening.
    pub fn resume(&mut self, topic: &str, partition: i32, stored_next: i64) -> Option<Due> {
        let next = self.next.entry((topic.to_owned(), partition)).or_insert(stored_next);
        if stored_next <= *next {
            return None;
        }
        let start = *next;
        *next = stored_next;
        Some(Due { topic: topic.to_owned(), partition, offsets: start..stored_next, announced_only: false })
    }

    /// Offsets from `first_unpublished` on were not published after all (a read failed): the next
    /// catch-up or announcement reads them.
    pub fn rewind(&mut self, topic: &str, partition: i32, first_unpublished: i64) {
        if let Some(next) = self.next.get_mut(&(topic.to_owned(), partition)) {
            *next = (*next).min(first_unpublished);
        }
    }
}

/// An event store that publishes each batch to the tail once it is committed (the embedded
/// writer: it is the only one, so what it commits is all there is).
pub struct AnnouncingStore {
    inner: Box<dyn EventStore>,
    hub: Arc<TailHub>,
}

impl AnnouncingStore {
    pub fn new(inner: Box<dyn EventStore>, hub: Arc<TailHub>) -> AnnouncingStore {
        AnnouncingStore { inner, hub }
    }
}

#[async_trait]
impl EventStore for AnnouncingStore {
    async fn write(&mut self, batch: &Batch) -> Result<(), StoreError> {
        self.inner.write(batch).await?;
        self.hub.publish_batch(batch);
        Ok(())
    }

    fn reset(&mut self) {
        self.inner.reset();
    }
}
