//! Batches: a run of one partition's messages `[from, to)`, parsed into events and dead letters.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::domain::event::REJECT_RAW_PREFIX_BYTES;
use crate::domain::{Fallback, LogEvent, ParseRules, RejectReason};

/// A message as the source delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    pub offset: i64,
    /// The message timestamp (producer create time or broker log-append time), if any.
    pub timestamp: Option<DateTime<Utc>>,
    /// `None` for a message without a value (a tombstone).
    pub payload: Option<Vec<u8>>,
    /// The service a producer asked for (header [`SERVICE_HEADER`], set by `POST /ingest?service=`)
    /// for events that name none.
    pub service: Option<String>,
}

/// Kafka header carrying the service `POST /ingest?service=S` asked for, so the consumer resolves
/// the line exactly as the HTTP answer did.
pub const SERVICE_HEADER: &str = "log-analyzer-service";

/// A valid event and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub offset: i64,
    pub event: LogEvent,
}

/// A dead letter: why the message at `offset` is not an event, and the start of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectRecord {
    pub offset: i64,
    pub reason: RejectReason,
    pub detail: String,
    /// The first `REJECT_RAW_PREFIX_BYTES` of the payload.
    pub raw: Vec<u8>,
    /// The payload's full length.
    pub raw_len: usize,
    pub timestamp: Option<DateTime<Utc>>,
}

/// One partition's messages `[from, to)`, ready to be written in one transaction.
#[derive(Debug, Clone)]
pub struct Batch {
    pub topic: Arc<str>,
    pub partition: i32,
    /// The partition's stored next offset when the batch began (the fence).
    pub from: i64,
    /// One past the last message's offset: the stored next offset after this batch commits.
    pub to: i64,
    pub events: Vec<StoredEvent>,
    pub rejects: Vec<RejectRecord>,
    /// Payload bytes of every message in the batch (events and rejects).
    pub payload_bytes: u64,
    /// Set when the partition is revoked or the process stops: a writer drops the batch unwritten.
    pub cancelled: Arc<AtomicBool>,
}

impl Batch {
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Messages in the batch (events and rejects).
    pub fn len(&self) -> usize {
        self.events.len() + self.rejects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The batch cut in two at the offset of its middle message: `[from, mid)` and `[mid, to)`,
    /// each fenced on its own. `None` for a batch of fewer than two messages.
    pub fn split(&self) -> Option<(Batch, Batch)> {
        if self.len() < 2 {
            return None;
        }
        let mut offsets: Vec<i64> =
            self.events.iter().map(|e| e.offset).chain(self.rejects.iter().map(|r| r.offset)).collect();
        offsets.sort_unstable();
        let mid = offsets[offsets.len() / 2];
        let left_share = (offsets.len() / 2) as u64;
        let left_bytes = self.payload_bytes * left_share / offsets.len() as u64;
        let part = |from: i64, to: i64, payload_bytes: u64| Batch {
            topic: self.topic.clone(),
            partition: self.partition,
            from,
            to,
            events: self.events.iter().filter(|e| (from..to).contains(&e.offset)).cloned().collect(),
            rejects: self.rejects.iter().filter(|r| (from..to).contains(&r.offset)).cloned().collect(),
            payload_bytes,
            cancelled: self.cancelled.clone(),
        };
        Some((part(self.from, mid, left_bytes), part(mid, self.to, self.payload_bytes - left_bytes)))
    }

    /// The same range with every message turned into a `store_rejected` dead letter carrying the
    /// store's `error`. An event's original bytes are not kept in a batch, so its dead letter holds
    /// the event re-encoded as a JSON object (which `rejects replay` parses back).
    pub fn store_rejected(&self, error: &str) -> Batch {
        let error: String = error.chars().take(REJECT_DETAIL_MAX_CHARS).collect();
        let mut rejects: Vec<RejectRecord> = self
            .events
            .iter()
            .map(|e| {
                let encoded = reencode(&e.event);
                let raw_len = encoded.len();
                let mut raw = encoded;
                raw.truncate(REJECT_RAW_PREFIX_BYTES);
                RejectRecord {
                    offset: e.offset,
                    reason: RejectReason::StoreRejected,
                    detail: error.clone(),
                    raw,
                    raw_len,
                    timestamp: None,
                }
            })
            .collect();
        rejects.extend(self.rejects.iter().map(|r| RejectRecord {
            reason: RejectReason::StoreRejected,
            detail: format!("{error} (was {}: {})", r.reason.code(), r.detail),
            ..r.clone()
        }));
        rejects.sort_by_key(|r| r.offset);
        Batch { events: Vec::new(), rejects, ..self.clone_empty() }
    }

    /// The same range with nothing in it: storing it only moves the partition's offset.
    pub fn fence_only(&self) -> Batch {
        Batch { payload_bytes: 0, ..self.clone_empty() }
    }

    fn clone_empty(&self) -> Batch {
        Batch {
            topic: self.topic.clone(),
            partition: self.partition,
            from: self.from,
            to: self.to,
            events: Vec::new(),
            rejects: Vec::new(),
            payload_bytes: self.payload_bytes,
            cancelled: self.cancelled.clone(),
        }
    }
}

/// Longest store error text kept in a `store_rejected` dead letter.
const REJECT_DETAIL_MAX_CHARS: usize = 4_096;

/// An event as a JSON object with the field names the parser reads first.
fn reencode(event: &LogEvent) -> Vec<u8> {
    let mut object = event.attrs.to_map();
    object.insert("ts".into(), event.ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true).into());
    object.insert("level".into(), event.level.as_str().into());
    object.insert("service".into(), event.service.as_str().into());
    object.insert("message".into(), event.message.clone().into());
    if let Some(user) = &event.user_id {
        object.insert("user_id".into(), user.as_str().into());
    }
    serde_json::Value::Object(object).to_string().into_bytes()
}

/// Accumulates parsed messages for one partition.
#[derive(Debug)]
pub struct BatchBuilder {
    topic: Arc<str>,
    partition: i32,
    from: i64,
    to: i64,
    events: Vec<StoredEvent>,
    rejects: Vec<RejectRecord>,
    payload_bytes: u64,
    rules: ParseRules,
}

impl BatchBuilder {
    /// Starts at the partition's stored next offset.
    pub fn new(topic: Arc<str>, partition: i32, from: i64, rules: ParseRules) -> BatchBuilder {
        BatchBuilder {
            topic,
            partition,
            from,
            to: from,
            events: Vec::new(),
            rejects: Vec::new(),
            payload_bytes: 0,
            rules,
        }
    }

    /// The offset the next batch will start at.
    pub fn next_offset(&self) -> i64 {
        self.to
    }

    pub fn len(&self) -> usize {
        self.events.len() + self.rejects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parses and adds a message. Messages before the current position (a redelivery) are ignored
    /// and `false` is returned.
    pub fn push(&mut self, message: RawMessage, now: DateTime<Utc>) -> bool {
        if message.offset < self.to {
            return false;
        }
        self.to = message.offset + 1;
        let payload = message.payload.unwrap_or_default();
        self.payload_bytes += payload.len() as u64;
        let fallback = match &message.service {
            Some(service) => Fallback { ts: message.timestamp, service, service_requested: true },
            None => Fallback::kafka(message.timestamp, &self.topic),
        };
        match LogEvent::parse(&payload, fallback, now, &self.rules) {
            Ok(event) => self.events.push(StoredEvent { offset: message.offset, event }),
            Err(reject) => {
                let keep = payload.len().min(REJECT_RAW_PREFIX_BYTES);
                let mut raw = payload;
                let raw_len = raw.len();
                raw.truncate(keep);
                self.rejects.push(RejectRecord {
                    offset: message.offset,
                    reason: reject.reason,
                    detail: reject.detail,
                    raw,
                    raw_len,
                    timestamp: message.timestamp,
                });
            }
        }
        true
    }

    /// Takes the accumulated batch, leaving an empty builder that starts where it ended.
    pub fn take(&mut self, cancelled: Arc<AtomicBool>) -> Batch {
        let batch = Batch {
            topic: self.topic.clone(),
            partition: self.partition,
            from: self.from,
            to: self.to,
            events: std::mem::take(&mut self.events),
            rejects: std::mem::take(&mut self.rejects),
            payload_bytes: std::mem::take(&mut self.payload_bytes),
            cancelled,
        };
        self.from = self.to;
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn msg(offset: i64, payload: &[u8]) -> RawMessage {
        RawMessage { offset, timestamp: Some(now()), payload: Some(payload.to_vec()), service: None }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap()
    }

    #[test]
    fn batches_cover_from_stored_offset_to_last_message_across_gaps() {
        let mut b = BatchBuilder::new("t".into(), 3, 10, ParseRules::default());
        assert!(b.push(msg(10, br#"{"level":"info","service":"s","message":"a"}"#), now()));
        // 11 and 12 are transaction markers the consumer never sees.
        assert!(b.push(msg(13, b"{garbage"), now()));
        let batch = b.take(Arc::default());
        assert_eq!((batch.from, batch.to, batch.events.len(), batch.rejects.len()), (10, 14, 1, 1));
        assert_eq!(batch.rejects[0].reason, RejectReason::NotJson);
        assert_eq!(batch.rejects[0].offset, 13);
        assert!(b.is_empty());
        assert!(b.push(msg(14, br#"{"level":"warn","service":"s","message":"b"}"#), now()));
        let next = b.take(Arc::default());
        assert_eq!((next.from, next.to), (14, 15));
    }

    fn mixed_batch() -> Batch {
        let mut b = BatchBuilder::new("t".into(), 1, 100, ParseRules::default());
        for offset in 100..107 {
            let payload: &[u8] = if offset == 103 {
                b"{junk"
            } else {
                br#"{"level":"warn","service":"s","message":"m","user_id":"u","k":1}"#
            };
            b.push(msg(offset, payload), now());
        }
        // 107 and 108 are transaction markers: the range runs to 109.
        b.push(msg(109, br#"{"level":"info","service":"s","message":"last"}"#), now());
        b.take(Arc::default())
    }

    #[test]
    fn a_split_covers_the_range_in_two_contiguous_halves() {
        let batch = mixed_batch();
        assert_eq!((batch.from, batch.to, batch.len()), (100, 110, 8));
        let (left, right) = batch.split().unwrap();
        assert_eq!((left.from, left.to, right.from, right.to), (100, 104, 104, 110));
        assert_eq!((left.len(), right.len()), (4, 4));
        assert_eq!(left.rejects.len(), 1);
        assert_eq!(left.payload_bytes + right.payload_bytes, batch.payload_bytes);
        let (l, r) = left.split().unwrap();
        assert_eq!((l.from, l.to, r.from, r.to), (100, 102, 102, 104));
        let single = r.split().unwrap().1;
        assert_eq!((single.from, single.to, single.len()), (103, 104, 1));
        assert!(single.split().is_none());
    }

    #[test]
    fn store_rejected_dead_letters_reparse_to_the_same_event() {
        let batch = mixed_batch();
        let rejected = batch.store_rejected("db error: violates check constraint");
        assert!(rejected.events.is_empty());
        assert_eq!((rejected.from, rejected.to, rejected.rejects.len()), (100, 110, 8));
        assert!(rejected.rejects.iter().all(|r| r.reason == RejectReason::StoreRejected));
        assert!(rejected.rejects.windows(2).all(|w| w[0].offset < w[1].offset));
        let was_junk = rejected.rejects.iter().find(|r| r.offset == 103).unwrap();
        assert_eq!(was_junk.raw, b"{junk");
        assert!(was_junk.detail.contains("was not_json"), "{}", was_junk.detail);
        let first = &rejected.rejects[0];
        let reparsed = LogEvent::parse(&first.raw, Fallback::kafka(None, "t"), now(), &ParseRules::default()).unwrap();
        assert_eq!(reparsed, batch.events[0].event);
        assert!(batch.fence_only().is_empty());
    }

    #[test]
    fn redelivered_messages_are_ignored() {
        let mut b = BatchBuilder::new("t".into(), 0, 5, ParseRules::default());
        assert!(!b.push(msg(4, b"{}"), now()));
        assert!(b.push(msg(5, b"{}"), now()));
        assert!(!b.push(msg(5, b"{}"), now()));
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn rejects_keep_a_4_kib_prefix_and_the_full_length() {
        let mut b = BatchBuilder::new("t".into(), 0, 0, ParseRules::default());
        let big = vec![0xff; 10_000];
        b.push(msg(0, &big), now());
        b.push(RawMessage { offset: 1, timestamp: None, payload: None, service: None }, now());
        let batch = b.take(Arc::default());
        assert_eq!(batch.rejects[0].raw.len(), REJECT_RAW_PREFIX_BYTES);
        assert_eq!(batch.rejects[0].raw_len, 10_000);
        assert_eq!(batch.rejects[1].reason, RejectReason::Empty);
        assert_eq!(batch.rejects[1].raw_len, 0);
    }
}
