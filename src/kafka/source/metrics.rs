//! The source's metrics: per partition, what its consumer took in and stored, how far behind the
//! broker it is, and the gaps its stored offset had to jump.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use actors::domain::RejectReason;
use prometheus::{IntCounterVec, IntGaugeVec, Registry};
use slog::{error, Logger};

use super::{SourceState, TopicPartition};
use crate::telemetry::metric::{counter, gauge, raise_to};

/// The partitions' metrics, read from the source's counters at each scrape.
pub struct SourceMetrics {
    consumer_messages: IntCounterVec,
    ingested_events: IntCounterVec,
    ingested_bytes: IntCounterVec,
    rejects: IntCounterVec,
    consumer_lag: IntGaugeVec,
    stored_offset: IntGaugeVec,
    offset_gaps: IntCounterVec,
    source: Mutex<Option<Arc<SourceState>>>,
}

impl SourceMetrics {
    pub fn new(r: &Registry) -> SourceMetrics {
        let partition = ["topic", "partition"];
        SourceMetrics {
            ingested_events: counter(
                r,
                "log_analyzer_ingested_events_total",
                "Events stored in PostgreSQL",
                &partition,
            ),
            ingested_bytes: counter(
                r,
                "log_analyzer_ingested_bytes_total",
                "Payload bytes of the messages stored (events and dead letters)",
                &partition,
            ),
            rejects: counter(r, "log_analyzer_rejects_total", "Dead letters stored, by reason", &["reason"]),
            consumer_messages: counter(
                r,
                "log_analyzer_consumer_messages_total",
                "Messages taken in by the partition's consumer",
                &partition,
            ),
            consumer_lag: gauge(
                r,
                "log_analyzer_consumer_lag_events",
                "Broker high watermark minus the offset stored in PostgreSQL",
                &partition,
            ),
            stored_offset: gauge(r, "log_analyzer_stored_offset", "Next offset stored in PostgreSQL", &partition),
            offset_gaps: counter(
                r,
                "log_analyzer_offset_gaps_total",
                "Times the stored offset jumped over offsets Kafka no longer had (see offset_gaps)",
                &partition,
            ),
            source: Mutex::new(None),
        }
    }

    /// Exports `source`'s partitions from now on.
    pub fn watch(&self, source: Arc<SourceState>) {
        *self.source.lock().expect("source metrics") = Some(source);
    }

    /// Copies the partitions' counters in; lag and stored offset only for partitions owned now.
    pub fn refresh(&self) {
        let Some(source) = self.source.lock().expect("source metrics").clone() else { return };
        let highs = source.high_watermarks.lock().expect("source state").clone();
        self.consumer_lag.reset();
        self.stored_offset.reset();
        let mut rejects = [0u64; RejectReason::ALL.len()];
        for (p, stats) in source.all_partitions() {
            let labels = [p.0.as_str(), &p.1.to_string()];
            raise_to(&self.consumer_messages, &labels, stats.messages.load(Ordering::Relaxed));
            raise_to(&self.ingested_events, &labels, stats.stored_events.load(Ordering::Relaxed));
            raise_to(&self.ingested_bytes, &labels, stats.stored_bytes.load(Ordering::Relaxed));
            raise_to(&self.offset_gaps, &labels, stats.offset_gaps.load(Ordering::Relaxed));
            for (total, count) in rejects.iter_mut().zip(&stats.rejects) {
                *total += count.load(Ordering::Relaxed);
            }
            if !source.owns(&p) {
                continue;
            }
            let stored = stats.stored_offset.load(Ordering::Relaxed) as i64;
            self.stored_offset.with_label_values(&labels).set(stored);
            if let Some(high) = highs.get(&p) {
                self.consumer_lag.with_label_values(&labels).set((high - stored).max(0));
            }
        }
        for (reason, total) in RejectReason::ALL.iter().zip(rejects) {
            raise_to(&self.rejects, &[reason.code()], total);
        }
    }
}

/// A partition's stored offset was one Kafka no longer has; the store recorded the gap and moved
/// the offset to the earliest one available, where the partition now starts.
pub(super) struct OffsetGapRecorded<'a> {
    pub partition: &'a TopicPartition,
    /// The stored offset that was no longer there.
    pub from: i64,
    /// The broker's earliest and next offsets: the partition goes on from `kafka_low`.
    pub kafka_low: i64,
    pub kafka_high: i64,
}

impl OffsetGapRecorded<'_> {
    pub(super) fn emit(self, state: &SourceState, log: &Logger) {
        let (topic, partition) = (self.partition.0.as_str(), self.partition.1);
        error!(log, "stored offset no longer in Kafka; offsets skipped and recorded in offset_gaps";
               "topic" => topic, "partition" => partition, "from_offset" => self.from,
               "to_offset" => self.kafka_low, "kafka_low" => self.kafka_low, "kafka_high" => self.kafka_high,
               "why" => if self.from < self.kafka_low { "deleted by retention before they were stored" }
                        else { "the partition's offsets went back (topic recreated?)" });
        state.stats_for(self.partition).offset_gaps.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder;

    fn line<'a>(text: &'a str, name_and_labels: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(name_and_labels)).and_then(|l| l.rsplit(' ').next())
    }

    #[test]
    fn partitions_keep_their_counters_and_only_owned_ones_report_lag() {
        let registry = Registry::new();
        let metrics = SourceMetrics::new(&registry);
        let state = Arc::new(SourceState::default());
        metrics.watch(state.clone());
        let (owned, gone) = (("a".to_owned(), 0), ("b".to_owned(), 3));
        for (partition, events) in [(&owned, 7), (&gone, 5)] {
            let stats = state.stats_for(partition);
            stats.stored_events.store(events, Ordering::Relaxed);
            stats.stored_offset.store(events, Ordering::Relaxed);
            stats.rejects[0].store(1, Ordering::Relaxed);
        }
        state.partitions.lock().unwrap().insert(owned.clone(), state.stats_for(&owned));
        state.high_watermarks.lock().unwrap().insert(owned.clone(), 10);
        OffsetGapRecorded { partition: &gone, from: 2, kafka_low: 5, kafka_high: 9 }
            .emit(&state, &crate::telemetry::discard());
        metrics.refresh();

        let mut out = Vec::new();
        prometheus::TextEncoder::new().encode(&registry.gather(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let at = |metric: &str| line(&text, metric).map(str::to_owned);
        assert_eq!(at(r#"log_analyzer_ingested_events_total{partition="0",topic="a"}"#).as_deref(), Some("7"));
        assert_eq!(at(r#"log_analyzer_ingested_events_total{partition="3",topic="b"}"#).as_deref(), Some("5"));
        assert_eq!(at(r#"log_analyzer_consumer_lag_events{partition="0",topic="a"}"#).as_deref(), Some("3"));
        assert_eq!(at(r#"log_analyzer_stored_offset{partition="0",topic="a"}"#).as_deref(), Some("7"));
        assert_eq!(at(r#"log_analyzer_consumer_lag_events{partition="3""#), None, "not owned: no lag");
        assert_eq!(at(r#"log_analyzer_offset_gaps_total{partition="3",topic="b"}"#).as_deref(), Some("1"));
        let reason = RejectReason::ALL[0].code();
        assert_eq!(at(&format!(r#"log_analyzer_rejects_total{{reason="{reason}"}}"#)).as_deref(), Some("2"));

        // A scrape after nothing changed adds nothing: counters are raised to the atomics, not summed.
        metrics.refresh();
        let mut out = Vec::new();
        prometheus::TextEncoder::new().encode(&registry.gather(), &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), text);
    }
}
