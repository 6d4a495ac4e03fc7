//! What the source shares with whoever runs it: the partitions owned, their counters, lag.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use actors::ingest::ConsumerStats;

/// A partition of one of the subscribed topics: partitions of different topics share numbers.
pub type TopicPartition = (String, i32);

/// How a partition is named where one string must say which (actor instances, readiness).
pub fn partition_name((topic, partition): &TopicPartition) -> String {
    format!("{topic}/{partition}")
}

/// The partitions the source owns, their counters, and what the broker says about them.
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
    /// Why the source stopped on its own: a fatal Kafka error, such as being fenced by another
    /// process that joined under the same INSTANCE_ID.
    failure: Mutex<Option<String>>,
    failed: tokio::sync::Notify,
}

impl SourceState {
    pub fn owned(&self) -> BTreeSet<TopicPartition> {
        self.partitions.lock().expect("source state").keys().cloned().collect()
    }

    pub(super) fn fail(&self, reason: String) {
        self.failure.lock().expect("source state").get_or_insert(reason);
        // A stored permit: whoever waits later still wakes.
        self.failed.notify_one();
    }

    /// Resolves with the reason once the source has stopped on its own (never, while it runs).
    pub async fn failed(&self) -> String {
        loop {
            if let Some(reason) = self.failure.lock().expect("source state").clone() {
                return reason;
            }
            self.failed.notified().await;
        }
    }

    pub fn owns(&self, partition: &TopicPartition) -> bool {
        self.partitions.lock().expect("source state").contains_key(partition)
    }

    /// Every partition ever owned, with its counters.
    pub fn all_partitions(&self) -> Vec<(TopicPartition, Arc<ConsumerStats>)> {
        self.ever.lock().expect("source state").iter().map(|(p, s)| (p.clone(), s.clone())).collect()
    }

    /// The counters of `partition`, kept across the times it is owned.
    pub(crate) fn stats_for(&self, partition: &TopicPartition) -> Arc<ConsumerStats> {
        let mut ever = self.ever.lock().expect("source state");
        if let Some(stats) = ever.get(partition) {
            return stats.clone();
        }
        ever.entry(partition.clone()).or_default().clone()
    }

    pub(super) fn set_paused(&self, partition: &TopicPartition, paused: bool) {
        let mut paused_now = self.paused.lock().expect("source state");
        if paused {
            paused_now.insert(partition.clone());
        } else {
            paused_now.remove(partition);
        }
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
