//! WindowAggregatorActor: folds committed batches into per-second buckets over the horizon and
//! answers window queries from memory — exactly, or not at all.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use actix::prelude::*;
use slog::{info, warn, Logger};

use super::buckets::{BucketDelta, Buckets, KeywordSet, PartlyUntracked};
use super::stats::{top_keywords, ErrorStats, KeywordCount, WindowRange};
use crate::domain::Keyword;
use crate::ingest::Committed;
use crate::mailbox::ActorProbe;
pub use crate::ports::windows::{BucketSource, DeltaSink, PartitionOffsets, Rebuilt};
use crate::ports::SharedClock;

/// Seconds kept beyond the horizon, so that a window of exactly the horizon, whose end was read off
/// the clock an instant before the aggregator looks, still lies wholly in memory.
pub const HORIZON_GRACE: i64 = 5;

/// How the aggregator buckets.
#[derive(Debug, Clone)]
pub struct WindowConfig {
    /// Every topic of `KAFKA_TOPIC`: memory answers for all of them together.
    pub topics: Vec<String>,
    /// Seconds of history held.
    pub horizon: i64,
    /// Seconds ahead of the clock that are still bucketed.
    pub skew: i64,
    pub keywords: Arc<KeywordSet>,
    /// At most this many services have buckets of their own (`MAX_LIVE_SERVICES`): the memory
    /// policy of [`Buckets`].
    pub max_live_services: usize,
}

/// Default of `MAX_LIVE_SERVICES`.
pub const DEFAULT_MAX_LIVE_SERVICES: usize = 1_000;

/// Entries of `by_service` the memo may hold in all: a memo of 1,024 answers of 1,000 services
/// each would be far more than the buckets themselves.
const MEMO_SERVICES: usize = 64 * 1_024;

/// Why memory does not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unanswerable {
    #[error("the in-memory windows are being rebuilt")]
    NotReady,
    #[error("this process does not own every partition of the topics")]
    NotOwner,
    #[error("the window reaches beyond the in-memory horizon")]
    OutsideHorizon,
    #[error("keyword is not tracked in memory")]
    NotTracked,
    #[error("{0}")]
    Untracked(#[from] PartlyUntracked),
}

#[derive(Message)]
#[rtype(result = "Result<ErrorStats, Unanswerable>")]
pub struct QueryErrors {
    pub range: WindowRange,
    pub service: Option<String>,
    /// Services listed in `by_service`; the rest are summed in `other`.
    pub limit: usize,
}

#[derive(Message)]
#[rtype(result = "Result<u64, Unanswerable>")]
pub struct QueryKeyword {
    pub range: WindowRange,
    pub keyword: Keyword,
    pub service: Option<String>,
}

#[derive(Message)]
#[rtype(result = "Result<Vec<KeywordCount>, Unanswerable>")]
pub struct QueryTopKeywords {
    pub range: WindowRange,
    pub limit: usize,
}

/// The aggregator's state, for freshness fields and health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, MessageResponse)]
pub struct AggregatorStatus {
    pub ready: bool,
    pub owns_all: bool,
    /// Newest committed event time (epoch ms).
    pub watermark_ms: Option<i64>,
    pub seconds_held: usize,
    pub rebuilds: u64,
    /// Services with buckets of their own (at most `MAX_LIVE_SERVICES`).
    pub live_services: usize,
}

#[derive(Message)]
#[rtype(result = "AggregatorStatus")]
pub struct QueryStatus;

/// The partitions this process owns changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ownership {
    pub owns_all: bool,
}

enum Phase {
    Rebuilding { buffered: Vec<Arc<BucketDelta>> },
    Ready,
}

pub struct WindowAggregatorActor {
    config: WindowConfig,
    buckets: Buckets,
    /// Per (topic, partition), the offset up to which batches are folded in.
    applied: PartitionOffsets,
    phase: Phase,
    owns_all: bool,
    watermark_ms: Option<i64>,
    /// Seconds (inclusive ranges) holding stored events that memory did not bucket (too far ahead).
    unbucketed: BTreeSet<(i64, i64)>,
    source: Arc<dyn BucketSource>,
    deltas: Option<Arc<dyn DeltaSink>>,
    clock: SharedClock,
    rebuild_seq: u64,
    rebuilds: u64,
    /// Set by fold() when it met a gap while replaying buffered batches.
    needs_rebuild: bool,
    /// Answers given since the buckets last changed: a dashboard or a load test asks the same
    /// window many times a second, and summing an hour of buckets each time is the expensive part.
    memo: std::collections::HashMap<(WindowRange, Option<String>, usize), ErrorStats>,
    /// `by_service` entries held in `memo`.
    memo_services: usize,
    probe: Arc<ActorProbe>,
    log: Logger,
}

impl WindowAggregatorActor {
    pub fn new(
        config: WindowConfig,
        source: Arc<dyn BucketSource>,
        deltas: Option<Arc<dyn DeltaSink>>,
        clock: SharedClock,
        probe: Arc<ActorProbe>,
        log: Logger,
    ) -> WindowAggregatorActor {
        WindowAggregatorActor {
            buckets: Buckets::with_service_cap(
                config.horizon + HORIZON_GRACE + config.skew + 1,
                config.max_live_services,
            ),
            config,
            applied: BTreeMap::new(),
            phase: Phase::Rebuilding { buffered: Vec::new() },
            owns_all: false,
            watermark_ms: None,
            unbucketed: BTreeSet::new(),
            source,
            deltas,
            clock,
            rebuild_seq: 0,
            rebuilds: 0,
            needs_rebuild: false,
            memo: std::collections::HashMap::new(),
            memo_services: 0,
            probe,
            log: log.new(slog::o!("actor" => "window_aggregator")),
        }
    }

    fn now_second(&self) -> i64 {
        self.clock.now().timestamp()
    }

    /// The seconds memory buckets now: `[now − horizon − grace, now + skew]`.
    fn bucketed_span(&self) -> (i64, i64) {
        let now = self.now_second();
        (now - self.config.horizon - HORIZON_GRACE, now + self.config.skew)
    }

    fn start_rebuild(&mut self, ctx: &mut Context<Self>) {
        self.rebuild_seq += 1;
        let seq = self.rebuild_seq;
        if !matches!(self.phase, Phase::Rebuilding { .. }) {
            self.phase = Phase::Rebuilding { buffered: Vec::new() };
        }
        let (first, last) = self.bucketed_span();
        let source = self.source.clone();
        let topics = self.config.topics.clone();
        let keywords = self.config.keywords.clone();
        let fetch = async move { (source.snapshot(&topics, first, last, &keywords).await, first, last) };
        ctx.spawn(fetch.into_actor(self).map(move |(result, first, last), act, ctx| {
            if act.rebuild_seq != seq {
                return; // a newer rebuild superseded this one
            }
            match result {
                Ok(rebuilt) => {
                    act.install(rebuilt, first, last);
                    if act.needs_rebuild {
                        act.needs_rebuild = false;
                        act.start_rebuild(ctx);
                    }
                }
                Err(e) => {
                    act.probe.error(format_args!("rebuild failed: {e}"));
                    warn!(act.log, "rebuild failed; retrying"; "error" => %e);
                    ctx.run_later(std::time::Duration::from_secs(1), |act, ctx| act.start_rebuild(ctx));
                }
            }
        }));
    }

    fn install(&mut self, rebuilt: Rebuilt, first: i64, last: i64) {
        self.forget_answers();
        self.buckets.clear();
        self.buckets.forget_before(first);
        self.unbucketed.clear();
        self.admit_busiest(&rebuilt);
        for (second, counts) in &rebuilt.seconds {
            self.buckets.add(*second, counts);
        }
        if let Some(beyond) = rebuilt.beyond_last {
            self.unbucketed.insert((last + 1, beyond));
        }
        if let Some(sink) = &self.deltas {
            sink.rebuilt(&rebuilt.offsets);
        }
        self.applied = rebuilt.offsets;
        self.watermark_ms = rebuilt.newest_ms;
        self.rebuilds += 1;
        let buffered = match std::mem::replace(&mut self.phase, Phase::Ready) {
            Phase::Rebuilding { buffered } => buffered,
            Phase::Ready => Vec::new(),
        };
        info!(self.log, "windows rebuilt"; "first" => first, "last" => last,
              "seconds" => self.buckets.occupied_seconds(), "buffered_batches" => buffered.len());
        for delta in buffered {
            if !self.fold(&delta) {
                break; // fold() asked for another rebuild
            }
        }
    }

    /// Folds a batch's delta into memory; returns false if a gap calls for a rebuild instead.
    fn fold(&mut self, delta: &BucketDelta) -> bool {
        let key = (delta.topic.clone(), delta.partition);
        let applied = self.applied.get(&key).copied();
        match applied {
            Some(at) if delta.to <= at => return true, // already in the snapshot
            Some(at) if delta.from == at => {}
            // First sight of a partition from offset 0 is continuous; anything else is a gap:
            // another process stored batches we never saw, so memory cannot be exact any more.
            None if delta.from == 0 => {}
            _ => {
                warn!(self.log, "gap in a partition's batches; rebuilding"; "topic" => &delta.topic,
                      "partition" => delta.partition,
                      "applied" => ?applied, "batch_from" => delta.from);
                self.phase = Phase::Rebuilding { buffered: Vec::new() };
                self.needs_rebuild = true;
                return false;
            }
        }
        let (_, last) = self.bucketed_span();
        self.apply(delta, last);
        self.applied.insert(key, delta.to);
        true
    }

    /// With more services stored than may have buckets, those with the most events get them.
    fn admit_busiest(&mut self, rebuilt: &Rebuilt) {
        let mut per: std::collections::HashMap<&Arc<str>, (u64, i64)> = std::collections::HashMap::new();
        for (second, counts) in &rebuilt.seconds {
            for (service, c) in &counts.by_service {
                let entry = per.entry(service).or_insert((0, *second));
                entry.0 += c.total;
                entry.1 = entry.1.max(*second);
            }
        }
        if per.len() <= self.config.max_live_services {
            return;
        }
        let mut busiest: Vec<_> = per.into_iter().collect();
        busiest.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then_with(|| a.0.cmp(b.0)));
        self.buckets.admit_first(busiest.into_iter().map(|(service, (_, newest))| (service.clone(), newest)));
    }

    fn forget_answers(&mut self) {
        self.memo.clear();
        self.memo_services = 0;
    }

    fn apply(&mut self, delta: &BucketDelta, last: i64) {
        self.forget_answers();
        self.buckets.forget_before(last - self.config.skew - self.config.horizon - HORIZON_GRACE);
        for (second, counts) in &delta.seconds {
            self.buckets.add(*second, counts);
        }
        for &second in &delta.skipped_seconds {
            if second > last {
                self.unbucketed.insert((second, second));
            }
        }
        if let Some(ms) = delta.newest_ms {
            self.watermark_ms = Some(self.watermark_ms.map_or(ms, |w| w.max(ms)));
        }
    }

    /// Checks that memory holds the whole window exactly.
    fn answerable(&mut self, range: WindowRange) -> Result<(), Unanswerable> {
        if !matches!(self.phase, Phase::Ready) {
            return Err(Unanswerable::NotReady);
        }
        if !self.owns_all {
            return Err(Unanswerable::NotOwner);
        }
        let (first, last) = self.bucketed_span();
        self.buckets.forget_before(first);
        if range.from < first || range.to > last + 1 {
            return Err(Unanswerable::OutsideHorizon);
        }
        // Forget unbucketed seconds that fell out of the horizon; refuse windows touching the rest.
        self.unbucketed.retain(|&(_, hi)| hi >= first);
        if self.unbucketed.iter().any(|&(lo, hi)| lo < range.to && hi >= range.from) {
            return Err(Unanswerable::OutsideHorizon);
        }
        Ok(())
    }
}

impl Actor for WindowAggregatorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.probe.started();
        self.start_rebuild(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.probe.stopped();
    }
}

crate::tracked!(WindowAggregatorActor => Committed, Ownership, QueryErrors, QueryKeyword, QueryTopKeywords, QueryStatus);

impl Handler<Committed> for WindowAggregatorActor {
    type Result = ();

    fn handle(&mut self, Committed(batch): Committed, ctx: &mut Self::Context) {
        let (first, last) = self.bucketed_span();
        let delta = Arc::new(BucketDelta::from_batch(&batch, &self.config.keywords, first, last));
        // Redis has its own per-partition fence: it gets every delta, whatever memory's state.
        if let Some(sink) = &self.deltas {
            sink.offer(delta.clone());
        }
        match &mut self.phase {
            Phase::Rebuilding { buffered } => buffered.push(delta),
            Phase::Ready => {
                self.fold(&delta);
            }
        }
        if self.needs_rebuild {
            self.needs_rebuild = false;
            self.start_rebuild(ctx);
        }
    }
}

impl Handler<Ownership> for WindowAggregatorActor {
    type Result = ();

    fn handle(&mut self, msg: Ownership, ctx: &mut Self::Context) {
        let gained = msg.owns_all && !self.owns_all;
        self.owns_all = msg.owns_all;
        if gained && matches!(self.phase, Phase::Ready) {
            // Partitions came back: what others stored meanwhile is only in the store.
            self.start_rebuild(ctx);
        }
    }
}

impl Handler<QueryErrors> for WindowAggregatorActor {
    type Result = Result<ErrorStats, Unanswerable>;

    fn handle(&mut self, q: QueryErrors, _ctx: &mut Self::Context) -> Self::Result {
        self.answerable(q.range)?;
        let key = (q.range, q.service, q.limit);
        if let Some(answer) = self.memo.get(&key) {
            return Ok(answer.clone());
        }
        let answer = self.buckets.errors(key.0, key.1.as_deref(), key.2)?;
        if self.memo.len() >= 1_024 || self.memo_services + answer.by_service.len() > MEMO_SERVICES {
            self.forget_answers();
        }
        self.memo_services += answer.by_service.len();
        self.memo.insert(key, answer.clone());
        Ok(answer)
    }
}

impl Handler<QueryKeyword> for WindowAggregatorActor {
    type Result = Result<u64, Unanswerable>;

    fn handle(&mut self, q: QueryKeyword, _ctx: &mut Self::Context) -> Self::Result {
        let index = self.config.keywords.position(q.keyword.as_str()).ok_or(Unanswerable::NotTracked)?;
        self.answerable(q.range)?;
        Ok(self.buckets.keyword(q.range, index, q.service.as_deref())?)
    }
}

impl Handler<QueryTopKeywords> for WindowAggregatorActor {
    type Result = Result<Vec<KeywordCount>, Unanswerable>;

    fn handle(&mut self, q: QueryTopKeywords, _ctx: &mut Self::Context) -> Self::Result {
        self.answerable(q.range)?;
        Ok(top_keywords(self.buckets.keywords(q.range, &self.config.keywords), q.limit))
    }
}

impl Handler<QueryStatus> for WindowAggregatorActor {
    type Result = AggregatorStatus;

    fn handle(&mut self, _: QueryStatus, _ctx: &mut Self::Context) -> Self::Result {
        AggregatorStatus {
            ready: matches!(self.phase, Phase::Ready),
            owns_all: self.owns_all,
            watermark_ms: self.watermark_ms,
            seconds_held: self.buckets.occupied_seconds(),
            rebuilds: self.rebuilds,
            live_services: self.buckets.live_services(),
        }
    }
}
