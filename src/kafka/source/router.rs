//! Routing fetched messages to each partition's ConsumerActor, and backpressure: a partition whose
//! actor's channel is full stops being fetched until what was buffered for it has gone through.
//!
//! The decisions are made here; turning fetching off and on is behind [`PartitionFetch`], so they
//! are tested without a broker.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actors::ingest::RawMessage;
use actors::mailbox::{ActorProbe, Tracked};
use futures::channel::mpsc as chan;
use rdkafka::consumer::Consumer;
use rdkafka::TopicPartitionList;
use slog::warn;

use super::rebalance::IngestConsumer;
use super::{SourceState, TopicPartition};

/// Turns the fetching of one partition off (`false`) and on again (`true`).
pub(super) trait PartitionFetch {
    fn set_fetching(&self, partition: &TopicPartition, fetching: bool);
}

impl PartitionFetch for IngestConsumer {
    fn set_fetching(&self, partition: &TopicPartition, fetching: bool) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&partition.0, partition.1);
        let result = if fetching { self.resume(&tpl) } else { self.pause(&tpl) };
        if let Err(e) = result {
            warn!(self.context().log, "pause/resume failed"; "topic" => &partition.0, "partition" => partition.1,
                  "pause" => !fetching, "error" => %e);
        }
    }
}

/// One owned partition's way to its ConsumerActor.
struct Slot {
    tx: chan::Sender<Tracked<RawMessage>>,
    /// Messages fetched while the partition's actor was full: still counted in its mailbox.
    pending: VecDeque<Tracked<RawMessage>>,
    probe: Arc<ActorProbe>,
    paused: bool,
    cancelled: Arc<AtomicBool>,
}

/// Where each owned partition's messages go.
pub(super) struct Router {
    slots: HashMap<TopicPartition, Slot>,
    /// Reused to look up each message's slot without allocating its topic.
    route_key: TopicPartition,
    /// Where the paused partitions are published (readiness reports them).
    state: Arc<SourceState>,
}

impl Router {
    pub(super) fn new(state: Arc<SourceState>) -> Router {
        Router { slots: HashMap::new(), route_key: (String::new(), 0), state }
    }

    /// The partitions routed to now.
    pub(super) fn partitions(&self) -> impl Iterator<Item = &TopicPartition> {
        self.slots.keys()
    }

    pub(super) fn routes(&self, partition: &TopicPartition) -> bool {
        self.slots.contains_key(partition)
    }

    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Routes `partition`'s messages into `tx` from now on; `cancelled` is raised when it closes.
    pub(super) fn open(
        &mut self,
        partition: TopicPartition,
        tx: chan::Sender<Tracked<RawMessage>>,
        probe: Arc<ActorProbe>,
        cancelled: Arc<AtomicBool>,
    ) {
        self.slots.insert(partition, Slot { tx, pending: VecDeque::new(), probe, paused: false, cancelled });
    }

    /// Stops routing `partition`: raises its cancel flag, ends its actor's stream (the sender is
    /// dropped), drops what was buffered, and fetches it again if it was paused, so whoever owns it
    /// next does not start paused.
    pub(super) fn close(&mut self, fetch: &impl PartitionFetch, partition: &TopicPartition) {
        if let Some(slot) = self.slots.remove(partition) {
            slot.cancelled.store(true, Ordering::SeqCst);
            if slot.paused {
                self.set_fetching(fetch, partition, true);
            }
        }
    }

    /// Hands one fetched message to its partition's actor; `message` is only built for a partition
    /// routed to. A full channel buffers it and pauses the partition.
    pub(super) fn route(
        &mut self,
        fetch: &impl PartitionFetch,
        topic: &str,
        partition: i32,
        message: impl FnOnce() -> RawMessage,
    ) {
        self.route_key.0.clear();
        self.route_key.0.push_str(topic);
        self.route_key.1 = partition;
        let Some(slot) = self.slots.get_mut(&self.route_key) else { return };
        let raw = Tracked::queued(message(), &slot.probe);
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
                self.set_fetching(fetch, &partition, false);
            }
            Err(_) => {} // the actor is gone (fenced or revoked)
        }
    }

    /// Hands buffered messages on; fetches a paused partition again once its backlog is through.
    pub(super) fn drain_pending(&mut self, fetch: &impl PartitionFetch) {
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
            self.set_fetching(fetch, &partition, true);
        }
    }

    fn set_fetching(&self, fetch: &impl PartitionFetch, partition: &TopicPartition, fetching: bool) {
        self.state.set_paused(partition, !fetching);
        fetch.set_fetching(partition, fetching);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use actors::mailbox::ActorRegistry;
    use futures::StreamExt;

    use super::*;

    /// Records every pause (`false`) and resume (`true`) asked of the broker.
    #[derive(Default)]
    struct Fetches(RefCell<Vec<(TopicPartition, bool)>>);

    impl PartitionFetch for Fetches {
        fn set_fetching(&self, partition: &TopicPartition, fetching: bool) {
            self.0.borrow_mut().push((partition.clone(), fetching));
        }
    }

    impl Fetches {
        fn take(&self) -> Vec<(TopicPartition, bool)> {
            std::mem::take(&mut *self.0.borrow_mut())
        }
    }

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        (topic.to_owned(), partition)
    }

    fn message(offset: i64) -> RawMessage {
        RawMessage { offset, timestamp: None, payload: Some(b"{}".to_vec()), service: None }
    }

    /// A router with `partition` open on a channel of `capacity` (futures' channels hold one more
    /// message than their buffer: one per sender).
    struct Rig {
        router: Router,
        state: Arc<SourceState>,
        fetches: Fetches,
        registry: ActorRegistry,
    }

    impl Rig {
        fn new() -> Rig {
            let state = Arc::new(SourceState::default());
            Rig {
                router: Router::new(state.clone()),
                state,
                fetches: Fetches::default(),
                registry: ActorRegistry::new(),
            }
        }

        fn open(
            &mut self,
            partition: TopicPartition,
            buffer: usize,
        ) -> (chan::Receiver<Tracked<RawMessage>>, Arc<AtomicBool>) {
            let (tx, rx) = chan::channel(buffer);
            let cancelled = Arc::new(AtomicBool::new(false));
            let probe = self.registry.probe("consumer", partition_name_of(&partition));
            self.router.open(partition, tx, probe, cancelled.clone());
            (rx, cancelled)
        }

        fn route(&mut self, partition: &TopicPartition, offset: i64) {
            self.router.route(&self.fetches, &partition.0, partition.1, || message(offset));
        }

        fn paused(&self) -> Vec<TopicPartition> {
            self.state.paused.lock().unwrap().iter().cloned().collect()
        }
    }

    fn partition_name_of(partition: &TopicPartition) -> String {
        super::super::partition_name(partition)
    }

    /// Takes what is in the channel now, without waiting.
    fn offsets_in(rx: &mut chan::Receiver<Tracked<RawMessage>>) -> Vec<i64> {
        let mut offsets = Vec::new();
        while let Ok(tracked) = rx.try_recv() {
            offsets.push(tracked.open().0.offset);
        }
        offsets
    }

    #[test]
    fn messages_go_to_their_own_partition_and_topic() {
        let mut rig = Rig::new();
        let (mut a0, _) = rig.open(tp("a", 0), 8);
        let (mut b0, _) = rig.open(tp("b", 0), 8);
        rig.route(&tp("a", 0), 1);
        rig.route(&tp("b", 0), 2);
        rig.route(&tp("a", 0), 3);
        assert_eq!(offsets_in(&mut a0), vec![1, 3]);
        assert_eq!(offsets_in(&mut b0), vec![2]);
        assert!(rig.fetches.take().is_empty());
    }

    #[test]
    fn a_message_of_a_partition_not_routed_to_is_not_even_built() {
        let mut rig = Rig::new();
        let (mut a0, _) = rig.open(tp("a", 0), 8);
        rig.router.route(&rig.fetches, "a", 1, || panic!("built a message for a partition not owned"));
        rig.router.route(&rig.fetches, "b", 0, || panic!("built a message for a topic not owned"));
        assert!(offsets_in(&mut a0).is_empty());
    }

    #[test]
    fn a_full_channel_pauses_the_partition_once_and_buffers_in_order() {
        let mut rig = Rig::new();
        let (mut a0, _) = rig.open(tp("a", 0), 0); // holds one message
        let (mut a1, _) = rig.open(tp("a", 1), 8);
        for offset in 10..14 {
            rig.route(&tp("a", 0), offset);
        }
        rig.route(&tp("a", 1), 20);
        assert_eq!(rig.fetches.take(), vec![(tp("a", 0), false)], "paused once, other partitions untouched");
        assert_eq!(rig.paused(), vec![tp("a", 0)]);
        assert_eq!(offsets_in(&mut a1), vec![20]);

        // Still full: nothing resumes.
        rig.router.drain_pending(&rig.fetches);
        assert!(rig.fetches.take().is_empty());

        // The actor takes messages one at a time; the backlog follows in order, then fetching resumes.
        let mut seen = Vec::new();
        for _ in 0..8 {
            seen.extend(offsets_in(&mut a0));
            rig.router.drain_pending(&rig.fetches);
            if !rig.paused().is_empty() {
                assert!(rig.fetches.take().is_empty(), "resumed while messages were still buffered");
            }
        }
        seen.extend(offsets_in(&mut a0));
        assert_eq!(seen, vec![10, 11, 12, 13]);
        assert_eq!(rig.fetches.take(), vec![(tp("a", 0), true)]);
        assert!(rig.paused().is_empty());

        // Flowing again: a message goes straight to the channel.
        rig.route(&tp("a", 0), 14);
        assert_eq!(offsets_in(&mut a0), vec![14]);
        assert!(rig.fetches.take().is_empty());
    }

    #[test]
    fn the_buffered_messages_stay_counted_in_the_actors_mailbox() {
        let mut rig = Rig::new();
        let (_a0, _) = rig.open(tp("a", 0), 0);
        for offset in 0..5 {
            rig.route(&tp("a", 0), offset);
        }
        let probe = rig.registry.probes().into_iter().find(|p| p.instance() == "a/0").expect("probe");
        assert_eq!(probe.mailbox_depth(), 5);
    }

    #[test]
    fn closing_a_paused_partition_cancels_it_and_fetches_it_again() {
        let mut rig = Rig::new();
        let (mut a0, cancelled) = rig.open(tp("a", 0), 0);
        for offset in 0..3 {
            rig.route(&tp("a", 0), offset);
        }
        assert_eq!(rig.fetches.take(), vec![(tp("a", 0), false)]);
        rig.router.close(&rig.fetches, &tp("a", 0));
        assert!(cancelled.load(Ordering::SeqCst));
        assert_eq!(rig.fetches.take(), vec![(tp("a", 0), true)]);
        assert!(rig.paused().is_empty());
        assert!(!rig.router.routes(&tp("a", 0)));
        // The actor's stream ends after what it was sent; the buffered messages are dropped.
        let rest: Vec<i64> = futures::executor::block_on(a0.by_ref().map(|t| t.open().0.offset).collect());
        assert_eq!(rest, vec![0]);
        rig.route(&tp("a", 0), 9);
        assert!(rig.fetches.take().is_empty());
    }

    #[test]
    fn closing_a_flowing_partition_does_not_touch_fetching() {
        let mut rig = Rig::new();
        let (_a0, cancelled) = rig.open(tp("a", 0), 8);
        rig.route(&tp("a", 0), 1);
        rig.router.close(&rig.fetches, &tp("a", 0));
        assert!(cancelled.load(Ordering::SeqCst));
        assert!(rig.fetches.take().is_empty());
    }

    #[test]
    fn a_gone_actor_drops_its_backlog_and_its_partition_resumes() {
        let mut rig = Rig::new();
        let (a0, _) = rig.open(tp("a", 0), 0);
        for offset in 0..4 {
            rig.route(&tp("a", 0), offset);
        }
        assert_eq!(rig.fetches.take(), vec![(tp("a", 0), false)]);
        drop(a0); // fenced: the actor stopped
        rig.router.drain_pending(&rig.fetches);
        assert_eq!(rig.fetches.take(), vec![(tp("a", 0), true)]);
        assert!(rig.paused().is_empty());
        // Routing to it again neither panics nor pauses.
        rig.route(&tp("a", 0), 5);
        assert!(rig.fetches.take().is_empty());
    }
}
