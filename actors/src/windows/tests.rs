//! The WindowAggregatorActor against an in-memory store (`MemoryBuckets`) and a simulated clock,
//! through its own messages. Rebuild retries run on tokio's paused clock: nothing waits in real time.

use std::sync::Arc;

use actix::prelude::*;
use chrono::{DateTime, TimeDelta};

use super::aggregator::HORIZON_GRACE;
use super::*;
use crate::domain::{Keyword, ParseRules};
use crate::ingest::{Batch, BatchBuilder, Committed, RawMessage};
use crate::mailbox::ActorProbe;
use crate::ports::Clock;
use crate::testing::{paused, quiet, MemoryBuckets, RecordingDeltas, SimClock, DEADLINE};

/// The clock at the start of every test: 20 s past a minute, so windows have second-bucket edges.
const T0: i64 = 1_795_000_020;
const HORIZON: i64 = 3_600;
const SKEW: i64 = 60;

fn keywords() -> Arc<KeywordSet> {
    Arc::new(KeywordSet::new(["timeout", "refused", "denied", "panic"].map(|k| Keyword::parse(k).unwrap())))
}

struct Aggregator {
    addr: Addr<WindowAggregatorActor>,
    source: MemoryBuckets,
    clock: Arc<SimClock>,
    deltas: Arc<RecordingDeltas>,
    probe: Arc<ActorProbe>,
}

/// Starts an aggregator over `source` at T0; it owns every partition unless told otherwise.
fn start(source: &MemoryBuckets, owns_all: bool) -> Aggregator {
    start_capped(source, owns_all, usize::MAX)
}

/// As `start`, with at most `max_live_services` services in buckets of their own.
fn start_capped(source: &MemoryBuckets, owns_all: bool, max_live_services: usize) -> Aggregator {
    paused();
    let clock = SimClock::at_second(T0);
    let deltas = Arc::new(RecordingDeltas::default());
    let probe = ActorProbe::detached("window_aggregator", "0");
    let config = WindowConfig {
        topics: vec!["logs".into()],
        horizon: HORIZON,
        skew: SKEW,
        keywords: keywords(),
        max_live_services,
    };
    let sink: Arc<dyn DeltaSink> = deltas.clone();
    let actor =
        WindowAggregatorActor::new(config, Arc::new(source.clone()), Some(sink), clock.clone(), probe.clone(), quiet());
    let addr = actor.start();
    addr.do_send(Ownership { owns_all });
    Aggregator { addr, source: source.clone(), clock, deltas, probe }
}

/// One batch of partition `partition` from offset `from`: events `(second, service, level, message)`.
fn batch(partition: i32, from: i64, events: &[(i64, &str, &str, &str)]) -> Arc<Batch> {
    let mut builder = BatchBuilder::new("logs".into(), partition, from, ParseRules::default());
    let now = DateTime::from_timestamp(T0, 0).unwrap();
    for (i, &(second, service, level, message)) in events.iter().enumerate() {
        let ts = DateTime::from_timestamp(second, 0).unwrap();
        let payload =
            serde_json::json!({"ts": ts.to_rfc3339(), "level": level, "service": service, "message": message});
        let message = RawMessage {
            offset: from + i as i64,
            timestamp: Some(ts),
            payload: Some(payload.to_string().into_bytes()),
            service: None,
        };
        assert!(builder.push(message, now));
    }
    let batch = builder.take(Arc::default());
    assert_eq!(batch.events.len(), events.len(), "every test event parses");
    Arc::new(batch)
}

/// `n` info events of `service` at `second`.
fn infos(second: i64, service: &'static str, n: usize) -> Vec<(i64, &'static str, &'static str, &'static str)> {
    vec![(second, service, "info", "request served"); n]
}

fn range(from: i64, to: i64) -> WindowRange {
    WindowRange { from, to }
}

/// The whole horizon ending at the simulated clock.
fn horizon_window(a: &Aggregator) -> WindowRange {
    WindowRange::ending_at(a.clock.now().timestamp(), HORIZON as u64)
}

impl Aggregator {
    async fn errors(&self, range: WindowRange, service: Option<&str>) -> Result<ErrorStats, Unanswerable> {
        self.errors_listing(range, service, 100).await
    }

    async fn errors_listing(
        &self,
        range: WindowRange,
        service: Option<&str>,
        limit: usize,
    ) -> Result<ErrorStats, Unanswerable> {
        self.addr.send(QueryErrors { range, service: service.map(str::to_owned), limit }).await.unwrap()
    }

    async fn total(&self, range: WindowRange) -> Result<u64, Unanswerable> {
        self.errors(range, None).await.map(|e| e.total)
    }

    async fn keyword(&self, range: WindowRange, keyword: &str, service: Option<&str>) -> Result<u64, Unanswerable> {
        let keyword = Keyword::parse(keyword).unwrap();
        self.addr.send(QueryKeyword { range, keyword, service: service.map(str::to_owned) }).await.unwrap()
    }

    async fn top(&self, range: WindowRange, limit: usize) -> Result<Vec<KeywordCount>, Unanswerable> {
        self.addr.send(QueryTopKeywords { range, limit }).await.unwrap()
    }

    async fn status(&self) -> AggregatorStatus {
        self.addr.send(QueryStatus).await.unwrap()
    }

    async fn commit(&self, batch: Arc<Batch>) {
        self.addr.send(Committed(batch)).await.unwrap();
    }

    /// Stores the batch (as a writer would) and announces it to the aggregator.
    async fn store_and_commit(&self, batch: Arc<Batch>) {
        self.source.store(batch.clone());
        self.commit(batch).await;
    }

    /// Waits until the aggregator has installed `rebuilds` snapshots and is ready. Its retry timer
    /// runs on the paused clock, which moves whenever the test waits here.
    async fn until_rebuilt(&self, rebuilds: u64) {
        let waited = tokio::time::timeout(DEADLINE, async {
            loop {
                let status = self.status().await;
                if status.ready && status.rebuilds >= rebuilds {
                    return status;
                }
                // Not yet: the snapshot is in flight or its retry is scheduled; let the clock move.
                tokio::time::advance(std::time::Duration::from_millis(10)).await;
            }
        })
        .await;
        let status = waited.unwrap_or_else(|_| panic!("timed out waiting for rebuild {rebuilds}"));
        assert_eq!(status.rebuilds, rebuilds, "no rebuild beyond the expected ones");
    }
}

#[actix_rt::test]
async fn not_ready_until_the_snapshot_lands_then_exact_answers_from_it() {
    let source = MemoryBuckets::default();
    source.store(batch(0, 0, &[(T0 - 10, "api", "error", "db timeout"), (T0 - 10, "api", "info", "ok")]));
    source.store(batch(1, 0, &[(T0 - 3_000, "web", "info", "served"), (T0 - 1, "web", "warn", "slow")]));
    source.hold();
    let a = start(&source, true);
    source.until_asked(1).await;
    let window = horizon_window(&a);

    assert_eq!(a.errors(window, None).await, Err(Unanswerable::NotReady));
    assert_eq!(a.keyword(window, "timeout", None).await, Err(Unanswerable::NotReady));
    assert_eq!(a.top(window, 5).await, Err(Unanswerable::NotReady));
    let status = a.status().await;
    assert!(!status.ready && status.rebuilds == 0);
    // The snapshot covers the whole bucketed span: horizon, grace and skew.
    assert_eq!(source.state.read(|s| s.asked.clone()), vec![(T0 - HORIZON - HORIZON_GRACE, T0 + SKEW)]);

    source.release();
    a.until_rebuilt(1).await;
    let stats = a.errors(window, None).await.unwrap();
    assert_eq!((stats.total, stats.errors), (4, 1));
    assert_eq!(
        stats.by_service,
        vec![
            ServiceStats { service: "api".into(), total: 2, errors: 1 },
            ServiceStats { service: "web".into(), total: 2, errors: 0 },
        ]
    );
    assert_eq!(a.total(range(T0 - 10, T0 - 9)).await, Ok(2));
    assert_eq!(a.total(range(T0 - 9, T0)).await, Ok(1));
    assert_eq!(a.keyword(window, "timeout", None).await, Ok(1));
    let status = a.status().await;
    assert_eq!(status.watermark_ms, Some((T0 - 1) * 1_000));
    assert_eq!(status.seconds_held, 3);
    // The delta sink heard of the rebuild, at the snapshot's offsets.
    let rebuilt = a.deltas.calls.read(|c| c.rebuilt.clone());
    assert_eq!(rebuilt.len(), 1);
    assert_eq!(rebuilt[0].get(&("logs".to_string(), 0)), Some(&2));
    assert_eq!(rebuilt[0].get(&("logs".to_string(), 1)), Some(&2));
}

#[actix_rt::test]
async fn committed_batches_are_folded_into_the_buckets() {
    let source = MemoryBuckets::default();
    let a = start(&source, true);
    a.until_rebuilt(1).await;
    let window = horizon_window(&a);
    assert_eq!(a.total(window).await, Ok(0));

    a.store_and_commit(batch(0, 0, &[(T0 - 5, "api", "error", "connection refused"), (T0 - 5, "api", "info", "ok")]))
        .await;
    a.store_and_commit(batch(0, 2, &[(T0 - 4, "api", "error", "refused again")])).await;
    a.store_and_commit(batch(3, 0, &infos(T0 - 70, "web", 3))).await;

    let stats = a.errors(window, None).await.unwrap();
    assert_eq!((stats.total, stats.errors), (6, 2));
    assert_eq!(a.total(range(T0 - 5, T0 - 4)).await, Ok(2));
    assert_eq!(a.total(range(T0 - 71, T0 - 69)).await, Ok(3));
    assert_eq!(a.keyword(window, "refused", None).await, Ok(2));
    assert_eq!(a.status().await.watermark_ms, Some((T0 - 4) * 1_000));
    // Every delta also went to the sink, with its place in its partition.
    let offered: Vec<(i32, i64, i64)> =
        a.deltas.calls.read(|c| c.offered.iter().map(|d| (d.partition, d.from, d.to)).collect());
    assert_eq!(offered, vec![(0, 0, 2), (0, 2, 3), (3, 0, 3)]);
    // No gap, so no rebuild: memory and the store agree without asking it again.
    assert_eq!(source.asked(), 1);
}

#[actix_rt::test]
async fn windows_reach_exactly_to_the_horizon_grace_and_the_skew() {
    let source = MemoryBuckets::default();
    let first = T0 - HORIZON - HORIZON_GRACE;
    source.store(batch(0, 0, &[(first, "api", "info", "oldest held"), (T0 + SKEW, "api", "info", "newest held")]));
    let a = start(&source, true);
    a.until_rebuilt(1).await;

    // A window of exactly the horizon whose end was read a few seconds ago still lies in memory.
    assert_eq!(a.total(range(first, first + HORIZON)).await, Ok(1));
    assert_eq!(a.total(range(first, first + 1)).await, Ok(1));
    assert_eq!(a.errors(range(first - 1, first + 1), None).await, Err(Unanswerable::OutsideHorizon));
    // Up to the skew ahead of the clock, and not a second further.
    assert_eq!(a.total(range(T0 + SKEW, T0 + SKEW + 1)).await, Ok(1));
    assert_eq!(a.errors(range(T0, T0 + SKEW + 2), None).await, Err(Unanswerable::OutsideHorizon));
    assert_eq!(a.keyword(range(first - 1, T0), "panic", None).await, Err(Unanswerable::OutsideHorizon));
    assert_eq!(a.top(range(T0, T0 + SKEW + 2), 3).await, Err(Unanswerable::OutsideHorizon));
}

#[actix_rt::test]
async fn events_ahead_of_the_clock_count_within_the_skew_and_block_windows_beyond_it() {
    let source = MemoryBuckets::default();
    let a = start(&source, true);
    a.until_rebuilt(1).await;
    a.store_and_commit(batch(
        0,
        0,
        &[
            (T0 + 30, "api", "error", "clock ahead"),
            (T0 + 120, "api", "error", "far ahead"), // beyond the skew: not bucketed
            (T0 - 1, "api", "info", "now"),
        ],
    ))
    .await;
    assert_eq!(a.total(range(T0, T0 + 31)).await, Ok(1));
    assert_eq!(a.total(horizon_window(&a)).await, Ok(1));
    // The event past the skew was stored but not bucketed: once the clock has come close enough for
    // a window to reach it, memory refuses that window rather than answer it without the event.
    a.clock.advance(TimeDelta::seconds(100));
    assert_eq!(a.errors(range(T0 + 100, T0 + 130), None).await, Err(Unanswerable::OutsideHorizon));
    assert_eq!(a.total(range(T0 + 100, T0 + 110)).await, Ok(0));
    assert_eq!(a.total(range(T0 + 30, T0 + 31)).await, Ok(1));
    // The watermark is the newest event committed, skewed or not.
    assert_eq!(a.status().await.watermark_ms, Some((T0 + 120) * 1_000));
}

#[actix_rt::test]
async fn a_stored_event_beyond_the_rebuilt_span_blocks_the_windows_that_reach_it() {
    let source = MemoryBuckets::default();
    source.store(batch(0, 0, &[(T0 - 2, "api", "info", "ok"), (T0 + 500, "api", "info", "far ahead")]));
    let a = start(&source, true);
    a.until_rebuilt(1).await;
    assert_eq!(a.total(horizon_window(&a)).await, Ok(1));
    a.clock.advance(TimeDelta::seconds(480));
    assert_eq!(a.errors(range(T0 + 490, T0 + 510), None).await, Err(Unanswerable::OutsideHorizon));
    // Windows ending where the snapshot's span ended still answer.
    assert_eq!(a.total(range(T0 - 2, T0 + SKEW + 1)).await, Ok(1));
}

#[actix_rt::test]
async fn not_owner_until_every_partition_is_owned_and_a_gained_one_rebuilds() {
    let source = MemoryBuckets::default();
    source.store(batch(0, 0, &infos(T0 - 30, "api", 2)));
    let a = start(&source, false);
    a.until_rebuilt(1).await;
    let window = horizon_window(&a);
    assert_eq!(a.errors(window, None).await, Err(Unanswerable::NotOwner));
    assert_eq!(a.keyword(window, "timeout", None).await, Err(Unanswerable::NotOwner));
    assert_eq!(a.top(window, 3).await, Err(Unanswerable::NotOwner));
    assert!(!a.status().await.owns_all);

    // Meanwhile another process stored batches this one never saw.
    source.store(batch(0, 2, &infos(T0 - 20, "api", 3)));
    source.store(batch(1, 0, &infos(T0 - 10, "web", 1)));
    a.addr.send(Ownership { owns_all: true }).await.unwrap();
    a.until_rebuilt(2).await;
    assert_eq!(source.asked(), 2);
    assert_eq!(a.total(window).await, Ok(6));
    // Nothing new is gained by hearing it again: no rebuild.
    a.addr.send(Ownership { owns_all: true }).await.unwrap();
    assert_eq!(a.status().await.rebuilds, 2);
    assert_eq!(source.asked(), 2);

    a.addr.send(Ownership { owns_all: false }).await.unwrap();
    assert_eq!(a.errors(window, None).await, Err(Unanswerable::NotOwner));
}

#[actix_rt::test]
async fn a_failed_rebuild_is_retried_until_it_succeeds() {
    let source = MemoryBuckets::default();
    source.store(batch(0, 0, &infos(T0 - 3, "api", 4)));
    source.fail_next(2);
    let a = start(&source, true);
    source.until_answered(1).await;
    assert_eq!(a.errors(horizon_window(&a), None).await, Err(Unanswerable::NotReady));
    assert!(a.probe.snapshot().last_error.is_some_and(|e| e.contains("rebuild failed")));

    // The retries wait on the paused clock; waiting here moves it.
    a.until_rebuilt(1).await;
    assert_eq!(source.asked(), 3, "two failures, then the snapshot that landed");
    assert_eq!(a.total(horizon_window(&a)).await, Ok(4));
}

#[actix_rt::test]
async fn a_keyword_not_tracked_is_not_answered() {
    let source = MemoryBuckets::default();
    source.store(batch(0, 0, &[(T0 - 1, "api", "error", "kernel panic: oops")]));
    let a = start(&source, true);
    a.until_rebuilt(1).await;
    let window = horizon_window(&a);
    assert_eq!(a.keyword(window, "panic", None).await, Ok(1));
    assert_eq!(a.keyword(window, "oops", None).await, Err(Unanswerable::NotTracked));
    assert_eq!(a.keyword(window, "kernel", Some("api")).await, Err(Unanswerable::NotTracked));
}

#[actix_rt::test]
async fn top_keywords_are_most_frequent_first_then_alphabetical_within_the_limit() {
    let source = MemoryBuckets::default();
    let a = start(&source, true);
    a.until_rebuilt(1).await;
    let events = [
        (T0 - 9, "api", "error", "upstream timeout"),
        (T0 - 9, "api", "error", "timeout again"),
        (T0 - 8, "web", "error", "timeout"),
        (T0 - 8, "web", "error", "connection refused"),
        (T0 - 7, "web", "error", "refused"),
        (T0 - 7, "api", "error", "refused"),
        (T0 - 6, "api", "warn", "access denied"),
        (T0 - 6, "api", "info", "nothing to see"),
    ];
    a.store_and_commit(batch(0, 0, &events)).await;
    let window = horizon_window(&a);
    let kc = |keyword: &str, count| KeywordCount { keyword: keyword.into(), count };
    assert_eq!(a.top(window, 10).await, Ok(vec![kc("refused", 3), kc("timeout", 3), kc("denied", 1)]));
    assert_eq!(a.top(window, 2).await, Ok(vec![kc("refused", 3), kc("timeout", 3)]));
    assert_eq!(a.top(range(T0 - 6, T0), 10).await, Ok(vec![kc("denied", 1)]));
    assert_eq!(a.top(range(T0 - 5, T0), 10).await, Ok(vec![]));
}

#[actix_rt::test]
async fn a_service_filter_keeps_only_that_service() {
    let source = MemoryBuckets::default();
    let a = start(&source, true);
    a.until_rebuilt(1).await;
    a.store_and_commit(batch(
        0,
        0,
        &[
            (T0 - 3, "api", "error", "timeout"),
            (T0 - 3, "api", "info", "ok"),
            (T0 - 2, "web", "error", "timeout"),
            (T0 - 2, "web", "error", "refused"),
            (T0 - 2, "web", "info", "ok"),
        ],
    ))
    .await;
    let window = horizon_window(&a);
    let web = a.errors(window, Some("web")).await.unwrap();
    assert_eq!((web.total, web.errors), (3, 2));
    assert_eq!(web.by_service, vec![ServiceStats { service: "web".into(), total: 3, errors: 2 }]);
    assert_eq!(a.keyword(window, "timeout", Some("api")).await, Ok(1));
    assert_eq!(a.keyword(window, "refused", Some("api")).await, Ok(0));
    assert_eq!(a.keyword(window, "timeout", None).await, Ok(2));
    let nobody = a.errors(window, Some("db")).await.unwrap();
    assert_eq!((nobody.total, nobody.errors, nobody.by_service.len()), (0, 0, 0));
    // The unfiltered answer, asked after the filtered ones, is not a memo of them.
    assert_eq!(a.total(window).await, Ok(5));
}

#[actix_rt::test]
async fn seconds_slide_out_of_the_horizon_as_the_clock_moves() {
    let source = MemoryBuckets::default();
    let a = start(&source, true);
    a.until_rebuilt(1).await;
    a.store_and_commit(batch(0, 0, &[(T0 - 3_000, "api", "error", "old"), (T0 - 10, "api", "info", "recent")])).await;
    assert_eq!(a.total(horizon_window(&a)).await, Ok(2));
    let old = range(T0 - 3_000, T0 - 2_999);
    assert_eq!(a.total(old).await, Ok(1));

    a.clock.advance(TimeDelta::seconds(700));
    assert_eq!(a.total(horizon_window(&a)).await, Ok(1), "the old second left the horizon");
    assert_eq!(a.errors(old, None).await, Err(Unanswerable::OutsideHorizon));

    // A whole horizon later only what came since is held.
    a.clock.advance(TimeDelta::seconds(3_000));
    a.store_and_commit(batch(0, 2, &infos(T0 + 3_690, "web", 1))).await;
    let stats = a.errors(horizon_window(&a), None).await.unwrap();
    assert_eq!((stats.total, stats.errors, stats.by_service.len()), (1, 0, 1));
    assert_eq!(a.errors(range(T0 - 10, T0 - 9), None).await, Err(Unanswerable::OutsideHorizon));
}

#[actix_rt::test]
async fn batches_committed_during_a_rebuild_and_overlapping_ones_are_counted_once() {
    let source = MemoryBuckets::default();
    let first = batch(0, 0, &infos(T0 - 5, "api", 3));
    let second = batch(0, 3, &infos(T0 - 4, "api", 2));
    let third = batch(0, 5, &infos(T0 - 3, "api", 2));
    source.store(first.clone());
    source.store(second.clone());
    source.hold();
    let a = start(&source, true);
    source.until_asked(1).await;
    // While the snapshot is in flight the writers commit batches it already holds, and one it does not.
    a.commit(first.clone()).await;
    a.commit(second.clone()).await;
    a.store_and_commit(third.clone()).await;
    assert_eq!(a.total(horizon_window(&a)).await, Err(Unanswerable::NotReady));
    source.release();
    a.until_rebuilt(1).await;
    let window = horizon_window(&a);
    // The snapshot held 0..5; of the batches buffered meanwhile only 5..7 was new.
    assert_eq!(a.total(window).await, Ok(7));

    // A redelivered batch, and one overlapping what memory has, change nothing.
    a.commit(second).await;
    a.commit(batch(0, 4, &infos(T0 - 2, "api", 1))).await;
    assert_eq!(a.total(window).await, Ok(7));
    assert_eq!(a.status().await.rebuilds, 1);
    // The next batch in line still counts.
    a.store_and_commit(batch(0, 7, &infos(T0 - 1, "api", 1))).await;
    assert_eq!(a.total(window).await, Ok(8));
}

#[actix_rt::test]
async fn a_gap_in_a_partition_rebuilds_from_the_store() {
    let source = MemoryBuckets::default();
    let a = start(&source, true);
    a.until_rebuilt(1).await;
    a.store_and_commit(batch(0, 0, &infos(T0 - 5, "api", 2))).await;
    // Another writer stored 2..4 (a rebalance); this process sees only 4..5.
    source.store(batch(0, 2, &infos(T0 - 4, "api", 2)));
    a.store_and_commit(batch(0, 4, &infos(T0 - 3, "api", 1))).await;
    a.until_rebuilt(2).await;
    assert_eq!(a.total(horizon_window(&a)).await, Ok(5));
    // A partition first seen past offset 0 is a gap too.
    source.store(batch(2, 0, &infos(T0 - 2, "web", 1)));
    a.store_and_commit(batch(2, 1, &infos(T0 - 2, "web", 1))).await;
    a.until_rebuilt(3).await;
    assert_eq!(a.total(horizon_window(&a)).await, Ok(7));
}

/// Over MAX_LIVE_SERVICES: a rebuild gives buckets to the busiest services, later services are
/// counted in the totals only, and a question needing their detail is left to the store.
#[actix_rt::test]
async fn over_the_service_cap_totals_stay_exact_and_detail_goes_to_the_store() {
    let source = MemoryBuckets::default();
    let mut stored = infos(T0 - 100, "quiet", 1);
    stored.extend(infos(T0 - 90, "busy", 5));
    stored.extend(infos(T0 - 80, "steady", 3));
    stored.push((T0 - 80, "steady", "error", "upstream timeout"));
    source.store(batch(0, 0, &stored));
    let a = start_capped(&source, true, 2);
    a.until_rebuilt(1).await;
    assert_eq!(a.status().await.live_services, 2);
    let window = horizon_window(&a);
    // "quiet", the least busy, got no buckets: its one event is in the totals only.
    let top = a.errors_listing(window, None, 1).await.unwrap();
    assert_eq!((top.total, top.errors), (10, 1));
    assert_eq!(top.by_service.iter().map(|s| (s.service.as_str(), s.errors)).collect::<Vec<_>>(), [("steady", 1)]);
    assert_eq!((top.other.total, top.other.errors), (6, 0));
    assert!(matches!(a.errors(window, Some("quiet")).await, Err(Unanswerable::Untracked(_))));
    assert_eq!(a.errors(window, Some("busy")).await.unwrap().total, 5);
    assert!(matches!(a.errors(window, None).await, Err(Unanswerable::Untracked(_))), "quiet would be listed");

    // New services beyond the cap, committed live: totals and keyword counts stay exact.
    let mut fresh: Vec<_> = (0..50).map(|_| (T0 - 5, "newcomer", "error", "db timeout")).collect();
    fresh.extend(infos(T0 - 5, "another", 7));
    a.store_and_commit(batch(0, stored.len() as i64, &fresh)).await;
    let all = a.errors_listing(window, None, 2).await;
    assert!(matches!(all, Err(Unanswerable::Untracked(_))), "newcomer's 50 errors outrank the listed: {all:?}");
    assert_eq!(a.keyword(window, "timeout", None).await.unwrap(), 51);
    assert!(matches!(a.keyword(window, "timeout", Some("newcomer")).await, Err(Unanswerable::Untracked(_))));
    assert_eq!(a.keyword(window, "timeout", Some("steady")).await.unwrap(), 1);
    let top = a.top(window, 1).await.unwrap();
    assert_eq!((top[0].keyword.as_str(), top[0].count), ("timeout", 51));
    // A window holding no untracked event is answered whole.
    let recent = range(T0 - 5, T0 + 1);
    assert!(matches!(a.errors(recent, None).await, Err(Unanswerable::Untracked(_))));
    let early = range(T0 - 95, T0 - 85);
    assert_eq!(a.errors(early, None).await.unwrap().by_service.len(), 1);
    assert_eq!(a.status().await.live_services, 2, "no more than the cap");
}
