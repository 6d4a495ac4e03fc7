//! The shared view of the in-memory windows: answers without the mailbox, never missing a batch
//! that was handed to the aggregator before the question.

use std::sync::Arc;

use actix::prelude::*;
use chrono::DateTime;

use super::*;
use crate::domain::{Keyword, ParseRules};
use crate::ingest::{Batch, BatchBuilder, Committed, RawMessage};
use crate::mailbox::{ActorProbe, Inbox, Tracked};
use crate::ports::{WindowAnswer, WindowQuery, WindowQuestion};
use crate::testing::{paused, quiet, MemoryBuckets, SimClock, DEADLINE};

const T0: i64 = 1_795_000_020;

struct Memory {
    inbox: Inbox<WindowAggregatorActor>,
    view: Arc<MemoryView>,
    windows: MemoryWindows,
    probe: Arc<ActorProbe>,
    source: MemoryBuckets,
}

/// An aggregator over an empty store at T0 that owns every partition, its view and its inbox,
/// wired as `run` wires them; returns once memory is ready.
async fn start() -> Memory {
    paused();
    let clock = SimClock::at_second(T0);
    let probe = ActorProbe::detached("window_aggregator", "0");
    let keywords = Arc::new(KeywordSet::new(["timeout"].map(|k| Keyword::parse(k).unwrap())));
    let config = WindowConfig {
        topics: vec!["logs".into()],
        horizon: 3_600,
        skew: 60,
        keywords,
        max_live_services: super::aggregator::DEFAULT_MAX_LIVE_SERVICES,
    };
    let view = MemoryView::new(&config, clock.clone(), probe.clone());
    let source = MemoryBuckets::default();
    let actor = WindowAggregatorActor::new(config, Arc::new(source.clone()), None, clock, probe.clone(), quiet())
        .with_view(view.clone());
    let inbox = Inbox::new(actor.start(), probe.clone());
    inbox.send(Ownership { owns_all: true }).await.unwrap();
    let windows = MemoryWindows::new(view.clone(), inbox.clone());
    let memory = Memory { inbox, view, windows, probe, source };
    tokio::time::timeout(DEADLINE, async {
        while !matches!(memory.view.current(&errors(10)), Some(Ok(_))) {
            tokio::time::advance(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("memory ready");
    memory
}

/// `n` error events of service `api` one second before T0, from `from` on partition 0.
fn errors_batch(from: i64, n: usize) -> Arc<Batch> {
    let mut builder = BatchBuilder::new("logs".into(), 0, from, ParseRules::default());
    let ts = DateTime::from_timestamp(T0 - 1, 0).unwrap();
    for i in 0..n {
        let payload =
            serde_json::json!({"ts": ts.to_rfc3339(), "level": "error", "service": "api", "message": "db timeout"});
        let message = RawMessage {
            offset: from + i as i64,
            timestamp: Some(ts),
            payload: Some(payload.to_string().into_bytes()),
            service: None,
        };
        assert!(builder.push(message, ts));
    }
    Arc::new(builder.take(Arc::default()))
}

/// The last `seconds` before T0.
fn errors(seconds: u64) -> WindowQuestion {
    WindowQuestion::Errors { range: WindowRange::ending_at(T0, seconds), service: None, limit: 100 }
}

fn total(answer: WindowAnswer) -> u64 {
    match answer {
        WindowAnswer::Errors(stats) => stats.total,
        other => panic!("not an errors answer: {other:?}"),
    }
}

#[actix_rt::test]
async fn the_view_answers_what_landed_and_changes_after_each_batch() {
    let m = start().await;
    assert_eq!(total(m.view.current(&errors(10)).unwrap().unwrap()), 0);
    m.inbox.send(Committed(errors_batch(0, 3))).await.unwrap();
    // The same window was memoised at 0 before the batch: the batch must have replaced it.
    assert_eq!(total(m.view.current(&errors(10)).unwrap().unwrap()), 3);
    m.inbox.send(Committed(errors_batch(3, 2))).await.unwrap();
    assert_eq!(total(m.view.current(&errors(10)).unwrap().unwrap()), 5);
    assert_eq!(total(m.view.current(&errors(3_600)).unwrap().unwrap()), 5);
    let keyword = WindowQuestion::Keyword {
        range: WindowRange::ending_at(T0, 60),
        keyword: Keyword::parse("timeout").unwrap(),
        service: Some("api".into()),
    };
    assert_eq!(m.view.current(&keyword).unwrap().unwrap(), WindowAnswer::Keyword(5));
    assert_eq!(m.view.watermark_ms(), Some((T0 - 1) * 1_000));
}

#[actix_rt::test]
async fn a_batch_still_in_the_mailbox_sends_readers_to_the_mailbox() {
    let m = start().await;
    // Counted in as a send is, not yet taken by the aggregator.
    let pending = Tracked::queued(Committed(errors_batch(0, 4)), &m.probe);
    assert_eq!(m.probe.mailbox_depth(), 1);
    assert!(m.view.current(&errors(10)).is_none(), "the view must not answer past a batch in flight");
    m.inbox.addr().do_send(pending);
    // The source falls back to the mailbox, which answers after the batch queued before it.
    assert_eq!(total(m.windows.answer(&errors(10)).await.unwrap()), 4);
    assert_eq!(m.probe.mailbox_depth(), 0);
    assert_eq!(total(m.view.current(&errors(10)).unwrap().unwrap()), 4);
}

#[actix_rt::test]
async fn a_change_being_folded_sends_readers_to_the_mailbox() {
    let m = start().await;
    m.view.change_begins();
    assert!(m.view.current(&errors(10)).is_none());
    // The mailbox still answers meanwhile.
    assert_eq!(total(m.windows.answer(&errors(10)).await.unwrap()), 0);
    m.view.change_ends();
    assert!(m.view.current(&errors(10)).is_some());
}

#[actix_rt::test]
async fn the_view_refuses_what_the_mailbox_refuses() {
    let m = start().await;
    assert_eq!(m.view.readiness(), "ready");
    m.inbox.send(Ownership { owns_all: false }).await.unwrap();
    assert_eq!(m.view.current(&errors(10)), Some(Err(Unanswerable::NotOwner)));
    assert_eq!(m.view.readiness(), "not_owner");
    assert!(m.windows.answer(&errors(10)).await.is_err());
    m.source.hold();
    m.inbox.send(Ownership { owns_all: true }).await.unwrap();
    // Partitions came back: memory rebuilds, and is not ready until the snapshot is in.
    assert_eq!(m.view.current(&errors(10)), Some(Err(Unanswerable::NotReady)));
    assert_eq!(m.view.readiness(), "rebuilding");
    m.source.release();
    let outside = WindowQuestion::Errors { range: WindowRange::ending_at(T0, 7_200), service: None, limit: 100 };
    tokio::time::timeout(DEADLINE, async {
        while m.view.current(&errors(10)) != Some(Ok(WindowAnswer::Errors(ErrorStats::default()))) {
            tokio::time::advance(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("rebuilt");
    assert_eq!(m.view.current(&outside), Some(Err(Unanswerable::OutsideHorizon)));
}
