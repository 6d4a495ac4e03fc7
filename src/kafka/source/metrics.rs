//! The source's metrics: per partition, what its consumer took in and stored, how far behind the
//! broker it is, and the gaps its stored offset had to jump.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use actors::domain::RejectReason;
use prometheus::{IntCounterVec, IntGaugeVec, Registry};

use super::SourceState;
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
