//! What readiness knows of this process's ingest: a read-only view, so the HTTP layer need not know
//! where the partitions come from.

use chrono::Utc;
use serde_json::{json, Value};

/// One owned partition, as readiness sees it.
pub struct PartitionProgress {
    /// `topic/partition`.
    pub name: String,
    /// When the batch being written was handed to a writer (epoch ms; 0 while none is in flight).
    pub write_started_ms: i64,
}

/// The partitions this process ingests now.
pub trait IngestView: Send + Sync {
    /// The owned partitions.
    fn partitions(&self) -> Vec<PartitionProgress>;
    /// The owned partitions not fetched now because their consumer is behind on writing.
    fn paused(&self) -> Vec<String>;
}

/// `{state, waiting_on, partitions, paused, stalled}` of this process's ingest, and whether it is
/// stalled: some partition's batch has waited for PostgreSQL longer than a readiness ping may
/// (`DATABASE_TIMEOUT_MS`), so the process says so well before the write itself times out.
pub fn ingest_health(view: &dyn IngestView, stall_after_ms: u64, store: &str) -> (Value, bool) {
    let now = Utc::now().timestamp_millis();
    let mut owned = Vec::new();
    let mut stalled = Vec::new();
    for partition in view.partitions() {
        let started = partition.write_started_ms;
        if started > 0 && now.saturating_sub(started) > stall_after_ms as i64 {
            stalled.push(partition.name.clone());
        }
        owned.push(partition.name);
    }
    let is_stalled = !stalled.is_empty();
    let body = json!({
        "state": if is_stalled { "stalled" } else { "flowing" },
        "waiting_on": if is_stalled { json!(store) } else { Value::Null },
        "partitions": owned,
        "paused": view.paused(),
        "stalled": stalled,
    });
    (body, is_stalled)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<(&'static str, i64)>, Vec<&'static str>);

    impl IngestView for Fixed {
        fn partitions(&self) -> Vec<PartitionProgress> {
            self.0.iter().map(|(n, s)| PartitionProgress { name: (*n).to_owned(), write_started_ms: *s }).collect()
        }
        fn paused(&self) -> Vec<String> {
            self.1.iter().map(|p| (*p).to_owned()).collect()
        }
    }

    #[test]
    fn a_batch_waiting_longer_than_the_ping_may_makes_the_ingest_stalled() {
        let now = Utc::now().timestamp_millis();
        let view = Fixed(vec![("a/0", 0), ("a/1", now - 60_000), ("b/0", now)], vec!["b/0"]);
        let (body, stalled) = ingest_health(&view, 5_000, "postgres");
        assert!(stalled);
        assert_eq!(body["state"], "stalled");
        assert_eq!(body["waiting_on"], "postgres");
        assert_eq!(body["partitions"], json!(["a/0", "a/1", "b/0"]));
        assert_eq!(body["stalled"], json!(["a/1"]));
        assert_eq!(body["paused"], json!(["b/0"]));

        let (body, stalled) = ingest_health(&Fixed(vec![("a/0", now)], vec![]), 5_000, "sqlite");
        assert!(!stalled);
        assert_eq!(body["state"], "flowing");
        assert_eq!(body["waiting_on"], Value::Null);
    }
}
