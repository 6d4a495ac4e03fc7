//! The in-memory windows as a source of answers.
//!
//! The WindowAggregatorActor keeps its buckets in a [`MemoryView`] that readers share: a question
//! is answered on the asking thread, under a read lock, instead of a round trip through the
//! aggregator's mailbox, where it would queue behind every batch being folded (at 10k questions/s
//! while ingesting, that queue was the whole p99).
//!
//! Exactness: an answer from the view includes every batch handed to the aggregator before the
//! question was asked. A batch is "in flight" from its send (the mailbox probe counts it) until it
//! is folded in (the view's `changing` flag, raised before the message leaves the mailbox count and
//! lowered once the buckets hold it). A reader that sees anything in flight asks the mailbox
//! instead, which answers only after the batches queued before the question: no answer from memory
//! ever misses a batch that the question followed.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{fence, AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;

use super::aggregator::{
    QueryErrors, QueryKeyword, QueryTopKeywords, Unanswerable, WindowAggregatorActor, WindowConfig, HORIZON_GRACE,
};
use super::buckets::{Buckets, KeywordSet};
use super::stats::{top_keywords, ErrorStats, WindowRange};
use crate::mailbox::{ActorProbe, Inbox};
use crate::ports::{CannotAnswer, SharedClock, WindowAnswer, WindowQuery, WindowQuestion};

impl From<Unanswerable> for CannotAnswer {
    fn from(why: Unanswerable) -> CannotAnswer {
        CannotAnswer::Missing(why.to_string())
    }
}

/// Answers memoised per window: many clients ask the same window within the same second, and
/// summing an hour of buckets each time is the expensive part. Forgotten whenever buckets change.
/// A refusal (the window holds untracked services' events) is memoised too: finding it out costs
/// the same sum, and over the cap every request of a popular window would pay it again before
/// going to the store (~40 ms per request of an hour over 1,000 live services, debug build).
#[derive(Default)]
struct Memo {
    answers: HashMap<(WindowRange, Option<String>, usize), Result<ErrorStats, Unanswerable>>,
    /// `by_service` entries held in `answers`.
    services: usize,
}
const MEMO_CAPACITY: usize = 1_024;
/// Entries of `by_service` the memo may hold in all: a memo of 1,024 answers of 1,000 services
/// each would be far more than the buckets themselves.
const MEMO_SERVICES: usize = 64 * 1_024;

/// What the aggregator holds for answering, behind the view's lock.
pub(super) struct Published {
    pub(super) buckets: Buckets,
    /// The rebuild is installed and every batch buffered meanwhile is folded in.
    pub(super) ready: bool,
    pub(super) owns_all: bool,
    /// Seconds (inclusive ranges) holding stored events that memory did not bucket (too far ahead).
    pub(super) unbucketed: BTreeSet<(i64, i64)>,
    memo: Mutex<Memo>,
}

impl Published {
    /// The buckets changed: memoised answers are stale.
    pub(super) fn changed(&mut self) {
        *self.memo.get_mut().unwrap_or_else(|e| e.into_inner()) = Memo::default();
    }

    /// Whether memory holds the whole window exactly, with `span` the seconds bucketed now.
    fn answerable(&self, range: WindowRange, (first, last): (i64, i64)) -> Result<(), Unanswerable> {
        if !self.ready {
            return Err(Unanswerable::NotReady);
        }
        if !self.owns_all {
            return Err(Unanswerable::NotOwner);
        }
        if range.from < first || range.to > last + 1 {
            return Err(Unanswerable::OutsideHorizon);
        }
        // Unbucketed seconds that fell out of the horizon no longer matter.
        if self.unbucketed.iter().any(|&(lo, hi)| hi >= first && lo < range.to && hi >= range.from) {
            return Err(Unanswerable::OutsideHorizon);
        }
        Ok(())
    }

    fn errors(&self, range: WindowRange, service: Option<String>, limit: usize) -> Result<ErrorStats, Unanswerable> {
        let key = (range, service, limit);
        if let Some(answer) = self.memo.lock().unwrap_or_else(|e| e.into_inner()).answers.get(&key) {
            return answer.clone();
        }
        // Summed outside the memo's lock: two readers of one new window both sum, neither waits.
        let answer = self.buckets.errors(key.0, key.1.as_deref(), key.2).map_err(Unanswerable::from);
        let listed = answer.as_ref().map_or(0, |a| a.by_service.len());
        let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        if memo.answers.len() >= MEMO_CAPACITY || memo.services + listed > MEMO_SERVICES {
            *memo = Memo::default();
        }
        memo.services += listed;
        memo.answers.insert(key, answer.clone());
        answer
    }

    pub(super) fn answer(
        &self,
        question: &WindowQuestion,
        span: (i64, i64),
        keywords: &KeywordSet,
    ) -> Result<WindowAnswer, Unanswerable> {
        match question {
            WindowQuestion::Errors { range, service, limit } => {
                self.answerable(*range, span)?;
                Ok(WindowAnswer::Errors(self.errors(*range, service.clone(), *limit)?))
            }
            WindowQuestion::Keyword { range, keyword, service } => {
                let index = keywords.position(keyword.as_str()).ok_or(Unanswerable::NotTracked)?;
                self.answerable(*range, span)?;
                Ok(WindowAnswer::Keyword(self.buckets.keyword(*range, index, service.as_deref())?))
            }
            WindowQuestion::TopKeywords { range, limit } => {
                self.answerable(*range, span)?;
                Ok(WindowAnswer::TopKeywords(top_keywords(self.buckets.keywords(*range, keywords), *limit)))
            }
        }
    }
}

/// The aggregator's buckets, shared with the threads that answer questions.
pub struct MemoryView {
    state: RwLock<Published>,
    /// A batch (or an ownership change) is being folded in: raised before its message leaves the
    /// mailbox count, lowered once the state holds it.
    changing: AtomicBool,
    /// The aggregator's mailbox probe: its depth counts messages sent and not yet taken.
    probe: Arc<ActorProbe>,
    /// Newest committed event time (epoch ms), `i64::MIN` for none; read by the freshness fields.
    watermark_ms: AtomicI64,
    clock: SharedClock,
    horizon: i64,
    skew: i64,
    keywords: Arc<KeywordSet>,
}

impl MemoryView {
    /// An empty view (not ready) for an aggregator of `config` whose mailbox `probe` counts.
    pub fn new(config: &WindowConfig, clock: SharedClock, probe: Arc<ActorProbe>) -> Arc<MemoryView> {
        Arc::new(MemoryView {
            state: RwLock::new(Published {
                buckets: Buckets::with_service_cap(
                    config.horizon + HORIZON_GRACE + config.skew + 1,
                    config.max_live_services,
                ),
                ready: false,
                owns_all: false,
                unbucketed: BTreeSet::new(),
                memo: Mutex::default(),
            }),
            changing: AtomicBool::new(false),
            probe,
            watermark_ms: AtomicI64::new(i64::MIN),
            clock,
            horizon: config.horizon,
            skew: config.skew,
            keywords: config.keywords.clone(),
        })
    }

    /// The seconds memory buckets now: `[now − horizon − grace, now + skew]`.
    pub(super) fn span(&self) -> (i64, i64) {
        let now = self.clock.now().timestamp();
        (now - self.horizon - HORIZON_GRACE, now + self.skew)
    }

    pub(super) fn read(&self) -> RwLockReadGuard<'_, Published> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn write(&self) -> RwLockWriteGuard<'_, Published> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Called by the aggregator before it takes a message that changes the state out of its envelope.
    pub(super) fn change_begins(&self) {
        self.changing.store(true, Ordering::Relaxed);
        // Pairs with the reader's fence: whoever sees the message gone from the mailbox count sees
        // the flag raised.
        fence(Ordering::Release);
    }

    /// Called once the state holds the change (the write lock released).
    pub(super) fn change_ends(&self) {
        self.changing.store(false, Ordering::Release);
    }

    pub(super) fn set_watermark(&self, watermark_ms: Option<i64>) {
        self.watermark_ms.store(watermark_ms.unwrap_or(i64::MIN), Ordering::Relaxed);
    }

    /// The newest committed event time memory holds (epoch ms), without asking the aggregator.
    pub fn watermark_ms(&self) -> Option<i64> {
        Some(self.watermark_ms.load(Ordering::Relaxed)).filter(|&ms| ms != i64::MIN)
    }

    /// The windows' state as /readyz names it: `ready`, `not_owner`, `rebuilding` (also while the
    /// aggregator holds the lock to install a rebuild) or `down` (the aggregator stopped).
    pub fn readiness(&self) -> &'static str {
        if !self.probe.snapshot().running {
            return "down";
        }
        match self.state.try_read() {
            Ok(state) if state.ready && state.owns_all => "ready",
            Ok(state) if state.ready => "not_owner",
            _ => "rebuilding",
        }
    }

    /// The answer from the buckets as they are, or `None` when a message to the aggregator is in
    /// flight (it may be a batch the question must include) or the aggregator holds the lock
    /// (installing a rebuild): then the mailbox must answer.
    pub fn current(&self, question: &WindowQuestion) -> Option<Result<WindowAnswer, Unanswerable>> {
        if self.probe.mailbox_depth() != 0 {
            return None;
        }
        fence(Ordering::Acquire);
        if self.changing.load(Ordering::Acquire) {
            return None;
        }
        let state = self.state.try_read().ok()?;
        Some(state.answer(question, self.span(), &self.keywords))
    }
}

/// Memory as a source: the shared view when nothing is in flight, else the aggregator's mailbox.
#[derive(Clone)]
pub struct MemoryWindows {
    view: Arc<MemoryView>,
    inbox: Inbox<WindowAggregatorActor>,
}

impl MemoryWindows {
    pub fn new(view: Arc<MemoryView>, inbox: Inbox<WindowAggregatorActor>) -> MemoryWindows {
        MemoryWindows { view, inbox }
    }

    pub fn view(&self) -> &Arc<MemoryView> {
        &self.view
    }
}

#[async_trait]
impl WindowQuery for MemoryWindows {
    async fn answer(&self, question: &WindowQuestion) -> Result<WindowAnswer, CannotAnswer> {
        if let Some(found) = self.view.current(question) {
            return Ok(found?);
        }
        // Sent past the probe: a question waiting here must not count as in flight, or every reader
        // would fall back to the mailbox while one does.
        ask_mailbox(self.inbox.addr(), question).await
    }
}

async fn ask_mailbox(
    addr: &actix::Addr<WindowAggregatorActor>,
    question: &WindowQuestion,
) -> Result<WindowAnswer, CannotAnswer> {
    let stopped = |e: actix::MailboxError| CannotAnswer::Unavailable(e.to_string());
    Ok(match question.clone() {
        WindowQuestion::Errors { range, service, limit } => {
            WindowAnswer::Errors(addr.send(QueryErrors { range, service, limit }).await.map_err(stopped)??)
        }
        WindowQuestion::Keyword { range, keyword, service } => {
            WindowAnswer::Keyword(addr.send(QueryKeyword { range, keyword, service }).await.map_err(stopped)??)
        }
        WindowQuestion::TopKeywords { range, limit } => {
            WindowAnswer::TopKeywords(addr.send(QueryTopKeywords { range, limit }).await.map_err(stopped)??)
        }
    })
}
