//! WindowAggregatorActor: folds committed batches into per-second buckets over the horizon and
//! answers window queries from memory — exactly, or not at all.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::prelude::*;
use slog::{info, warn, Logger};

use super::buckets::{BucketDelta, KeywordSet, PartlyUntracked};
use super::memory::MemoryView;
use super::stats::{ErrorStats, KeywordCount, WindowRange};
use crate::domain::Keyword;
use crate::ingest::Committed;
use crate::mailbox::{ActorProbe, Tracked};
pub use crate::ports::windows::{BucketSource, DeltaSink, PartitionOffsets, Rebuilt};
use crate::ports::SharedClock;
use crate::ports::{WindowAnswer, WindowQuestion};

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
    /// policy of [`Buckets`](super::buckets::Buckets).
    pub max_live_services: usize,
}

/// Default of `MAX_LIVE_SERVICES`.
pub const DEFAULT_MAX_LIVE_SERVICES: usize = 1_000;

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
    /// The buckets and what decides whether they answer, shared with the threads that read them.
    view: Arc<MemoryView>,
    /// Per (topic, partition), the offset up to which batches are folded in.
    applied: PartitionOffsets,
    phase: Phase,
    owns_all: bool,
    watermark_ms: Option<i64>,
    source: Arc<dyn BucketSource>,
    deltas: Option<Arc<dyn DeltaSink>>,
    rebuild_seq: u64,
    rebuilds: u64,
    /// Set by fold() when it met a gap while replaying buffered batches.
    needs_rebuild: bool,
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
            view: MemoryView::new(&config, clock, probe.clone()),
            config,
            applied: BTreeMap::new(),
            phase: Phase::Rebuilding { buffered: Vec::new() },
            owns_all: false,
            watermark_ms: None,
            source,
            deltas,
            rebuild_seq: 0,
            rebuilds: 0,
            needs_rebuild: false,
            probe,
            log: log.new(slog::o!("actor" => "window_aggregator")),
        }
    }

    /// Shares this aggregator's buckets through `view` (made with the same config, clock and probe)
    /// instead of its own: the process hands `view` to the read path before the actor starts.
    pub fn with_view(mut self, view: Arc<MemoryView>) -> WindowAggregatorActor {
        self.view = view;
        self
    }

    /// Where readers find this aggregator's buckets without asking its mailbox.
    pub fn view(&self) -> Arc<MemoryView> {
        self.view.clone()
    }

    /// The seconds memory buckets now: `[now − horizon − grace, now + skew]`.
    fn bucketed_span(&self) -> (i64, i64) {
        self.view.span()
    }

    fn set_phase(&mut self, phase: Phase) {
        self.view.write().ready = matches!(phase, Phase::Ready);
        self.phase = phase;
    }

    fn start_rebuild(&mut self, ctx: &mut Context<Self>) {
        self.rebuild_seq += 1;
        let seq = self.rebuild_seq;
        if !matches!(self.phase, Phase::Rebuilding { .. }) {
            self.set_phase(Phase::Rebuilding { buffered: Vec::new() });
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
        let seconds = {
            let mut state = self.view.write();
            // Not ready for readers until the batches buffered meanwhile are folded in too.
            state.ready = false;
            state.changed();
            state.buckets.clear();
            state.buckets.forget_before(first);
            state.unbucketed.clear();
            admit_busiest(&mut state.buckets, &rebuilt, self.config.max_live_services);
            for (second, counts) in &rebuilt.seconds {
                state.buckets.add(*second, counts);
            }
            if let Some(beyond) = rebuilt.beyond_last {
                state.unbucketed.insert((last + 1, beyond));
            }
            state.buckets.occupied_seconds()
        };
        if let Some(sink) = &self.deltas {
            sink.rebuilt(&rebuilt.offsets);
        }
        self.applied = rebuilt.offsets;
        self.watermark_ms = rebuilt.newest_ms;
        self.view.set_watermark(self.watermark_ms);
        self.rebuilds += 1;
        let buffered = match std::mem::replace(&mut self.phase, Phase::Ready) {
            Phase::Rebuilding { buffered } => buffered,
            Phase::Ready => Vec::new(),
        };
        info!(self.log, "windows rebuilt"; "first" => first, "last" => last,
              "seconds" => seconds, "buffered_batches" => buffered.len());
        for delta in buffered {
            if !self.fold(&delta) {
                break; // fold() asked for another rebuild
            }
        }
        self.view.write().ready = matches!(self.phase, Phase::Ready);
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
                self.set_phase(Phase::Rebuilding { buffered: Vec::new() });
                self.needs_rebuild = true;
                return false;
            }
        }
        let (_, last) = self.bucketed_span();
        self.apply(delta, last);
        self.applied.insert(key, delta.to);
        true
    }

    fn apply(&mut self, delta: &BucketDelta, last: i64) {
        let (first, _) = self.bucketed_span();
        let mut state = self.view.write();
        state.changed();
        state.buckets.forget_before(first);
        for (second, counts) in &delta.seconds {
            state.buckets.add(*second, counts);
        }
        // Unbucketed seconds that fell out of the horizon are forgotten here, where the state is written.
        state.unbucketed.retain(|&(_, hi)| hi >= first);
        for &second in &delta.skipped_seconds {
            if second > last {
                state.unbucketed.insert((second, second));
            }
        }
        drop(state);
        if let Some(ms) = delta.newest_ms {
            self.watermark_ms = Some(self.watermark_ms.map_or(ms, |w| w.max(ms)));
            self.view.set_watermark(self.watermark_ms);
        }
    }

    /// The answer from memory, asked through the mailbox (the view answers the same way without it).
    fn answer(&self, question: &WindowQuestion) -> Result<WindowAnswer, Unanswerable> {
        self.view.read().answer(question, self.bucketed_span(), &self.config.keywords)
    }
}

/// With more services stored than may have buckets, those with the most events get them.
fn admit_busiest(buckets: &mut super::buckets::Buckets, rebuilt: &Rebuilt, cap: usize) {
    let mut per: std::collections::HashMap<&Arc<str>, (u64, i64)> = std::collections::HashMap::new();
    for (second, counts) in &rebuilt.seconds {
        for (service, c) in &counts.by_service {
            let entry = per.entry(service).or_insert((0, *second));
            entry.0 += c.total;
            entry.1 = entry.1.max(*second);
        }
    }
    if per.len() <= cap {
        return;
    }
    let mut busiest: Vec<_> = per.into_iter().collect();
    busiest.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then_with(|| a.0.cmp(b.0)));
    buckets.admit_first(busiest.into_iter().map(|(service, (_, newest))| (service.clone(), newest)));
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

crate::tracked!(WindowAggregatorActor => QueryErrors, QueryKeyword, QueryTopKeywords, QueryStatus);

/// The messages that change what the view answers: the view is marked changing before the message
/// leaves the mailbox count and until the change is in, so a reader of the view always sees one or
/// the other and asks the mailbox instead (see `MemoryView::current`).
macro_rules! changes_the_view {
    ($($msg:ty),+) => {$(
        impl Handler<Tracked<$msg>> for WindowAggregatorActor {
            type Result = ();

            fn handle(&mut self, tracked: Tracked<$msg>, ctx: &mut Self::Context) {
                self.view.change_begins();
                let (msg, timer) = tracked.open();
                <Self as Handler<$msg>>::handle(self, msg, ctx);
                self.view.change_ends();
                timer.finish();
            }
        }
    )+};
}

changes_the_view!(Committed, Ownership);

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
        self.view.write().owns_all = msg.owns_all;
        if gained && matches!(self.phase, Phase::Ready) {
            // Partitions came back: what others stored meanwhile is only in the store.
            self.start_rebuild(ctx);
        }
    }
}

impl Handler<QueryErrors> for WindowAggregatorActor {
    type Result = Result<ErrorStats, Unanswerable>;

    fn handle(&mut self, q: QueryErrors, _ctx: &mut Self::Context) -> Self::Result {
        match self.answer(&WindowQuestion::Errors { range: q.range, service: q.service, limit: q.limit })? {
            WindowAnswer::Errors(stats) => Ok(stats),
            _ => unreachable!("answers are of the question's kind"),
        }
    }
}

impl Handler<QueryKeyword> for WindowAggregatorActor {
    type Result = Result<u64, Unanswerable>;

    fn handle(&mut self, q: QueryKeyword, _ctx: &mut Self::Context) -> Self::Result {
        match self.answer(&WindowQuestion::Keyword { range: q.range, keyword: q.keyword, service: q.service })? {
            WindowAnswer::Keyword(count) => Ok(count),
            _ => unreachable!("answers are of the question's kind"),
        }
    }
}

impl Handler<QueryTopKeywords> for WindowAggregatorActor {
    type Result = Result<Vec<KeywordCount>, Unanswerable>;

    fn handle(&mut self, q: QueryTopKeywords, _ctx: &mut Self::Context) -> Self::Result {
        match self.answer(&WindowQuestion::TopKeywords { range: q.range, limit: q.limit })? {
            WindowAnswer::TopKeywords(top) => Ok(top),
            _ => unreachable!("answers are of the question's kind"),
        }
    }
}

impl Handler<QueryStatus> for WindowAggregatorActor {
    type Result = AggregatorStatus;

    fn handle(&mut self, _: QueryStatus, _ctx: &mut Self::Context) -> Self::Result {
        AggregatorStatus {
            ready: matches!(self.phase, Phase::Ready),
            owns_all: self.owns_all,
            watermark_ms: self.watermark_ms,
            seconds_held: self.view.read().buckets.occupied_seconds(),
            rebuilds: self.rebuilds,
            live_services: self.view.read().buckets.live_services(),
        }
    }
}
