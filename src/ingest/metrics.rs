//! The writers' metrics: batches committed, failed writes by kind, batch sizes, commit latency and
//! how long batches wait before their write.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use actors::ingest::WriterStats;
use prometheus::{Histogram, HistogramVec, IntCounterVec, Registry};

use crate::telemetry::metric::{counter, histogram, latency_buckets, raise_to, single_histogram};

/// Doubling from 0.5 ms to about 1 s: the stages of freshness (≤ 100 ms end to end) need finer
/// steps than `latency_buckets`' factor of 4.
fn freshness_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.000_5, 2.0, 12).expect("valid buckets")
}

pub struct WriterMetrics {
    batches: IntCounterVec,
    errors: IntCounterVec,
    /// Messages (events + rejects) per committed batch.
    batch_events: Histogram,
    /// Time to commit one batch, per writer.
    batch_seconds: HistogramVec,
    /// A batch's first message taken → the batch handed to a writer.
    batch_age_seconds: Histogram,
    /// Handed to a writer → that writer starts it, per writer.
    queue_seconds: HistogramVec,
    /// A message's timestamp (Kafka's, or the embedded queue's) → its consumer takes it.
    take_delay_seconds: Histogram,
    /// Every writer's counters, by writer id.
    writers: Mutex<Vec<Arc<WriterStats>>>,
}

impl WriterMetrics {
    pub fn new(r: &Registry) -> WriterMetrics {
        WriterMetrics {
            batches: counter(r, "log_analyzer_writer_batches_total", "Batches committed", &["writer"]),
            errors: counter(
                r,
                "log_analyzer_writer_errors_total",
                "Batch writes that failed: unavailable (retried after a restart), fenced, or rejected (data refused)",
                &["writer", "kind"],
            ),
            batch_events: single_histogram(
                r,
                "log_analyzer_writer_batch_events",
                "Messages per committed batch",
                prometheus::exponential_buckets(1.0, 4.0, 9).expect("valid buckets"),
            ),
            batch_seconds: histogram(
                r,
                "log_analyzer_writer_batch_seconds",
                "Time to write and commit one batch",
                latency_buckets(),
                &["writer"],
            ),
            batch_age_seconds: single_histogram(
                r,
                "log_analyzer_writer_batch_age_seconds",
                "Time from a batch's first message taken by its consumer to the batch handed to a writer",
                freshness_buckets(),
            ),
            queue_seconds: histogram(
                r,
                "log_analyzer_writer_queue_seconds",
                "Time a batch handed to a writer waits before the writer starts it",
                freshness_buckets(),
                &["writer"],
            ),
            take_delay_seconds: single_histogram(
                r,
                "log_analyzer_consumer_take_delay_seconds",
                "A message's age when its consumer takes it, by its timestamp (POST /ingest: when the request was \
                 accepted; other producers: what they stamp, often the event's own time)",
                // Up to about a minute: a consumer catching up on a backlog shows here first.
                prometheus::exponential_buckets(0.000_5, 2.0, 18).expect("valid buckets"),
            ),
            writers: Mutex::new(Vec::new()),
        }
    }

    /// What the consumers observe each message's take delay into (`ConsumerConfig::take_delay`).
    pub fn take_delay(&self) -> Histogram {
        self.take_delay_seconds.clone()
    }

    /// The counters writer `id` reports into: its histograms are observed as it commits, the rest
    /// is copied in at each scrape.
    pub fn writer(&self, id: usize) -> Arc<WriterStats> {
        let stats = Arc::new(WriterStats {
            batch_events: Some(self.batch_events.clone()),
            batch_seconds: Some(self.batch_seconds.with_label_values(&[&id.to_string()])),
            batch_age_seconds: Some(self.batch_age_seconds.clone()),
            queue_seconds: Some(self.queue_seconds.with_label_values(&[&id.to_string()])),
            ..WriterStats::default()
        });
        let mut writers = self.writers.lock().expect("writer metrics");
        if writers.len() <= id {
            writers.resize_with(id + 1, Arc::default);
        }
        writers[id] = stats.clone();
        stats
    }

    pub fn refresh(&self) {
        for (i, w) in self.writers.lock().expect("writer metrics").iter().enumerate() {
            let id = i.to_string();
            raise_to(&self.batches, &[&id], w.batches.load(Ordering::Relaxed));
            raise_to(&self.errors, &[&id, "unavailable"], w.failures.load(Ordering::Relaxed));
            raise_to(&self.errors, &[&id, "fenced"], w.fenced.load(Ordering::Relaxed));
            raise_to(&self.errors, &[&id, "rejected"], w.rejected.load(Ordering::Relaxed));
        }
    }
}
