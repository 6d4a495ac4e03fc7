//! The read path over in-memory sources: every way of falling through to the next source.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};

use super::aggregator::Unanswerable;
use super::read_path::{CacheRead, RedisSource, Source, WindowReader, CLOSED_ANSWER_TTL, OPEN_ANSWER_TTL};
use super::stats::{ErrorStats, KeywordCount, ServiceStats, WindowRange};
use crate::domain::Keyword;
use crate::ports::{AnswerCache, CannotAnswer, Clock, WindowAnswer, WindowQuery, WindowQuestion};

const NOW: i64 = 1_800_000_000;

struct FixedClock(DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

type Reply = Box<dyn Fn(&WindowQuestion) -> Result<WindowAnswer, CannotAnswer> + Send + Sync>;

/// A source that answers every question the same way (computed from the question), and counts asks.
struct Scripted {
    reply: Reply,
    asked: AtomicUsize,
}

impl Scripted {
    fn new(reply: impl Fn(&WindowQuestion) -> Result<WindowAnswer, CannotAnswer> + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Scripted { reply: Box::new(reply), asked: AtomicUsize::new(0) })
    }

    /// Answers each question with `total` events (and as many keyword hits).
    fn counting(total: u64) -> Arc<Self> {
        Scripted::new(move |q| Ok(answer_for(q, total)))
    }

    fn refusing(why: CannotAnswer) -> Arc<Self> {
        Scripted::new(move |_| Err(why.clone()))
    }

    fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl WindowQuery for Scripted {
    async fn answer(&self, question: &WindowQuestion) -> Result<WindowAnswer, CannotAnswer> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        (self.reply)(question)
    }
}

fn answer_for(question: &WindowQuestion, total: u64) -> WindowAnswer {
    match question {
        WindowQuestion::Errors { .. } => WindowAnswer::Errors(ErrorStats::from_services(
            [ServiceStats { service: "api".into(), total, errors: 1 }],
            None,
            100,
        )),
        WindowQuestion::Keyword { .. } => WindowAnswer::Keyword(total),
        WindowQuestion::TopKeywords { .. } => {
            WindowAnswer::TopKeywords(vec![KeywordCount { keyword: "timeout".into(), count: total }])
        }
    }
}

/// Redis' kept answers, in a map; `down` makes every call fail as an unreachable Redis does.
#[derive(Default)]
struct KeptAnswers {
    kept: Mutex<HashMap<WindowQuestion, WindowAnswer>>,
    keeps: Mutex<Vec<(WindowQuestion, Duration)>>,
    gets: AtomicUsize,
    down: bool,
}

impl KeptAnswers {
    fn down() -> Arc<Self> {
        Arc::new(KeptAnswers { down: true, ..KeptAnswers::default() })
    }

    fn keeps(&self) -> Vec<(WindowQuestion, Duration)> {
        self.keeps.lock().unwrap().clone()
    }
}

#[async_trait]
impl AnswerCache for KeptAnswers {
    async fn get(&self, question: &WindowQuestion) -> Result<Option<WindowAnswer>, CannotAnswer> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        if self.down {
            return Err(CannotAnswer::Unavailable("store unavailable: redis: connection refused".into()));
        }
        Ok(self.kept.lock().unwrap().get(question).cloned())
    }

    async fn keep(&self, question: &WindowQuestion, answer: &WindowAnswer, ttl: Duration) {
        self.keeps.lock().unwrap().push((question.clone(), ttl));
        if !self.down {
            self.kept.lock().unwrap().insert(question.clone(), answer.clone());
        }
    }
}

/// One reader over the given sources, with the Redis reads it counted.
struct Rig {
    memory: Option<Arc<Scripted>>,
    answers: Arc<KeptAnswers>,
    buckets: Arc<Scripted>,
    postgres: Arc<Scripted>,
    reads: Arc<Mutex<Vec<CacheRead>>>,
}

impl Rig {
    fn new(memory: Option<Arc<Scripted>>, buckets: Arc<Scripted>, postgres: Arc<Scripted>) -> Rig {
        Rig { memory, answers: Arc::default(), buckets, postgres, reads: Arc::default() }
    }

    fn reader(&self) -> WindowReader {
        let clock = Arc::new(FixedClock(Utc.timestamp_opt(NOW, 0).unwrap()));
        let reads = self.reads.clone();
        let mut reader = WindowReader::new(self.postgres.clone(), clock)
            .with_redis(RedisSource { answers: self.answers.clone(), buckets: self.buckets.clone() })
            .observing_redis(Arc::new(move |read| reads.lock().unwrap().push(read)));
        if let Some(memory) = &self.memory {
            reader = reader.with_memory(memory.clone());
        }
        reader
    }

    fn reads(&self) -> Vec<CacheRead> {
        self.reads.lock().unwrap().clone()
    }
}

fn open_window() -> WindowRange {
    WindowRange::ending_at(NOW, 60)
}

fn errors_in(range: WindowRange) -> WindowQuestion {
    WindowQuestion::Errors { range, service: None, limit: 100 }
}

fn missing(why: &str) -> CannotAnswer {
    CannotAnswer::Missing(why.into())
}

fn incomplete_buckets() -> Arc<Scripted> {
    Scripted::refusing(missing("the buckets do not hold this window completely"))
}

#[actix_rt::test]
async fn memory_answers_first_and_no_other_source_is_asked() {
    let rig = Rig::new(Some(Scripted::counting(7)), Scripted::counting(8), Scripted::counting(9));
    let (stats, source) = rig.reader().errors(open_window(), None, 100, None).await.unwrap();
    assert_eq!((stats.total, source), (7, Source::Memory));
    assert_eq!((rig.buckets.asked(), rig.postgres.asked()), (0, 0));
    assert_eq!(rig.answers.gets.load(Ordering::SeqCst), 0);
    assert!(rig.reads().is_empty(), "Redis was not read, so not counted");
    assert!(rig.answers.keeps().is_empty(), "a memory answer is not written back");
}

#[actix_rt::test]
async fn memory_not_ready_not_owner_or_outside_its_horizon_falls_to_redis() {
    for why in [Unanswerable::NotReady, Unanswerable::NotOwner, Unanswerable::OutsideHorizon] {
        let memory = Scripted::refusing(why.clone().into());
        let rig = Rig::new(Some(memory.clone()), Scripted::counting(8), Scripted::counting(9));
        let (count, source) =
            rig.reader().keyword(open_window(), Keyword::parse("timeout").unwrap(), None, None).await.unwrap();
        assert_eq!((count, source), (8, Source::Redis), "after memory said: {why}");
        assert_eq!((memory.asked(), rig.postgres.asked()), (1, 0));
        assert_eq!(rig.reads(), vec![CacheRead::Hit]);
    }
}

#[actix_rt::test]
async fn a_kept_answer_in_redis_is_used_before_the_buckets() {
    let rig =
        Rig::new(Some(Scripted::refusing(Unanswerable::NotReady.into())), incomplete_buckets(), Scripted::counting(9));
    let question = WindowQuestion::TopKeywords { range: open_window(), limit: 3 };
    let kept = WindowAnswer::TopKeywords(vec![KeywordCount { keyword: "kept".into(), count: 5 }]);
    rig.answers.kept.lock().unwrap().insert(question.clone(), kept.clone());
    let (answer, source) = rig.reader().ask(&question, None).await.unwrap();
    assert_eq!((answer, source), (kept, Source::Redis));
    assert_eq!((rig.buckets.asked(), rig.postgres.asked()), (0, 0));
    assert_eq!(rig.reads(), vec![CacheRead::Hit]);
}

#[actix_rt::test]
async fn incomplete_redis_buckets_fall_to_postgres_and_count_a_miss() {
    let rig =
        Rig::new(Some(Scripted::refusing(Unanswerable::NotReady.into())), incomplete_buckets(), Scripted::counting(9));
    let (stats, source) = rig.reader().errors(open_window(), Some("api".into()), 100, None).await.unwrap();
    assert_eq!((stats.total, source), (9, Source::Postgres));
    assert_eq!(rig.buckets.asked(), 1);
    assert_eq!(rig.reads(), vec![CacheRead::Miss]);
}

#[actix_rt::test]
async fn a_keyword_redis_does_not_track_is_counted_by_postgres() {
    let buckets = Scripted::new(|q| match q {
        WindowQuestion::Keyword { .. } => Err(missing("keyword is not tracked in the buckets")),
        other => Ok(answer_for(other, 8)),
    });
    let rig = Rig::new(None, buckets, Scripted::counting(9));
    let reader = rig.reader();
    let untracked = Keyword::parse("rare").unwrap();
    let (count, source) = reader.keyword(open_window(), untracked.clone(), None, None).await.unwrap();
    assert_eq!((count, source), (9, Source::Postgres));
    assert_eq!(rig.reads(), vec![CacheRead::Miss]);
    // The buckets still answer the other questions about the same window.
    assert_eq!(reader.errors(open_window(), None, 100, None).await.unwrap().1, Source::Redis);
    // And the PostgreSQL count, now kept, is Redis' answer next time.
    let (count, source) = reader.keyword(open_window(), untracked, None, None).await.unwrap();
    assert_eq!((count, source), (9, Source::Redis));
    assert_eq!(rig.postgres.asked(), 1);
}

#[actix_rt::test]
async fn a_postgres_answer_is_kept_briefly_while_the_window_is_open_and_long_once_closed() {
    let rig = Rig::new(None, incomplete_buckets(), Scripted::counting(9));
    let reader = rig.reader();
    let open = open_window();
    // A window closes CLOSED_AFTER_SECS after its end: one second short of it, it is still open.
    let almost_closed = WindowRange::ending_at(NOW - 299, 60);
    let closed = WindowRange::ending_at(NOW - 300, 60);
    for range in [open, almost_closed, closed] {
        assert_eq!(reader.errors(range, None, 100, None).await.unwrap().1, Source::Postgres);
    }
    assert_eq!(
        rig.answers.keeps(),
        vec![
            (errors_in(open), OPEN_ANSWER_TTL),
            (errors_in(almost_closed), OPEN_ANSWER_TTL),
            (errors_in(closed), CLOSED_ANSWER_TTL)
        ]
    );
    // Kept under the question asked: the same question is now a Redis hit.
    assert_eq!(reader.errors(closed, None, 100, None).await.unwrap().1, Source::Redis);
}

#[actix_rt::test]
async fn a_forced_postgres_answer_is_kept_too() {
    let rig = Rig::new(Some(Scripted::counting(7)), Scripted::counting(8), Scripted::counting(9));
    let (stats, source) = rig.reader().errors(open_window(), None, 100, Some(Source::Postgres)).await.unwrap();
    assert_eq!((stats.total, source), (9, Source::Postgres));
    assert_eq!(rig.memory.as_ref().unwrap().asked() + rig.buckets.asked(), 0);
    assert_eq!(rig.answers.keeps().len(), 1);
}

#[actix_rt::test]
async fn redis_down_is_counted_as_an_error_and_not_asked_again() {
    let mut rig = Rig::new(None, Scripted::counting(8), Scripted::counting(9));
    rig.answers = KeptAnswers::down();
    let (stats, source) = rig.reader().errors(open_window(), None, 100, None).await.unwrap();
    assert_eq!((stats.total, source), (9, Source::Postgres));
    assert_eq!(rig.reads(), vec![CacheRead::Error]);
    assert_eq!(rig.answers.gets.load(Ordering::SeqCst), 1);
    assert_eq!(rig.buckets.asked(), 0, "the buckets are not read after the kept answers failed");
    assert!(rig.answers.keeps().is_empty(), "no write-back to a Redis that just failed");
}

#[actix_rt::test]
async fn unavailable_buckets_count_an_error() {
    let buckets = Scripted::refusing(CannotAnswer::Unavailable("redis did not answer within 50ms".into()));
    let rig = Rig::new(None, buckets, Scripted::counting(9));
    assert_eq!(rig.reader().errors(open_window(), None, 100, None).await.unwrap().1, Source::Postgres);
    assert_eq!(rig.reads(), vec![CacheRead::Error]);
    assert!(rig.answers.keeps().is_empty());
}

#[actix_rt::test]
async fn a_forced_source_that_cannot_answer_is_an_error_naming_it() {
    let rig =
        Rig::new(Some(Scripted::refusing(Unanswerable::NotOwner.into())), incomplete_buckets(), Scripted::counting(9));
    let reader = rig.reader();
    let err = reader.errors(open_window(), None, 100, Some(Source::Memory)).await.unwrap_err();
    assert_eq!(err.code(), "source_unavailable");
    assert_eq!(
        err.message(),
        "the memory source cannot answer this: memory: this process does not own every partition of the topics"
    );
    let err = reader.errors(open_window(), None, 100, Some(Source::Redis)).await.unwrap_err();
    assert_eq!(err.code(), "source_unavailable");
    assert_eq!(
        err.message(),
        "the redis source cannot answer this: redis: the buckets do not hold this window completely"
    );
    assert_eq!(rig.memory.as_ref().unwrap().asked(), 1, "forcing Redis skips memory");
    assert_eq!(rig.postgres.asked(), 0, "a forced source has no fallback");
}

#[actix_rt::test]
async fn with_every_source_down_the_error_lists_every_reason() {
    let mut rig = Rig::new(
        Some(Scripted::refusing(Unanswerable::NotReady.into())),
        Scripted::counting(8),
        Scripted::refusing(CannotAnswer::Unavailable("store unavailable: pool timed out".into())),
    );
    rig.answers = KeptAnswers::down();
    let err = rig.reader().top_keywords(open_window(), 5, None).await.unwrap_err();
    assert_eq!(err.code(), "no_source");
    assert_eq!(
        err.message(),
        "no source could answer: memory: the in-memory windows are being rebuilt; \
         redis: store unavailable: redis: connection refused; postgres: store unavailable: pool timed out"
    );
}

#[actix_rt::test]
async fn the_api_role_has_no_memory_and_says_so() {
    let rig = Rig::new(None, Scripted::counting(8), Scripted::counting(9));
    let reader = rig.reader();
    assert_eq!(reader.errors(open_window(), None, 100, None).await.unwrap().1, Source::Redis);
    let err = reader.errors(open_window(), None, 100, Some(Source::Memory)).await.unwrap_err();
    assert_eq!(err.message(), "the memory source cannot answer this: memory: this process keeps no windows (api role)");
}

#[actix_rt::test]
async fn a_reader_without_redis_goes_from_memory_to_postgres() {
    let postgres = Scripted::counting(9);
    let clock = Arc::new(FixedClock(Utc.timestamp_opt(NOW, 0).unwrap()));
    let reader =
        WindowReader::new(postgres.clone(), clock).with_memory(Scripted::refusing(Unanswerable::OutsideHorizon.into()));
    assert_eq!(reader.errors(open_window(), None, 100, None).await.unwrap().1, Source::Postgres);
    let err = reader.errors(open_window(), None, 100, Some(Source::Redis)).await.unwrap_err();
    assert_eq!(err.message(), "the redis source cannot answer this: redis: not configured");
}

#[actix_rt::test]
async fn a_store_named_sqlite_labels_its_answers_and_refuses_postgres() {
    let sqlite = Scripted::counting(9);
    let clock = Arc::new(FixedClock(Utc.timestamp_opt(NOW, 0).unwrap()));
    let reader = WindowReader::new(sqlite.clone(), clock)
        .store_named(Source::Sqlite)
        .with_memory(Scripted::refusing(Unanswerable::OutsideHorizon.into()));
    assert_eq!(reader.sources(), vec![Source::Memory, Source::Sqlite]);
    let (stats, source) = reader.errors(open_window(), None, 100, None).await.unwrap();
    assert_eq!((stats.total, source, source.as_str()), (9, Source::Sqlite, "sqlite"));
    assert_eq!(reader.errors(open_window(), None, 100, Some(Source::Sqlite)).await.unwrap().1, Source::Sqlite);
    let asked = sqlite.asked();
    let err = reader.errors(open_window(), None, 100, Some(Source::Postgres)).await.unwrap_err();
    assert_eq!(err.code(), "source_unavailable");
    assert_eq!(
        err.message(),
        "the postgres source cannot answer this: postgres: not a source of this process (its sources: memory, sqlite)"
    );
    assert_eq!(sqlite.asked(), asked, "a forced postgres never asks the sqlite store");
    assert_eq!(Rig::new(None, Scripted::counting(8), Scripted::counting(9)).reader().sources().len(), 3);
}

#[actix_rt::test]
async fn an_answer_to_another_question_is_not_taken() {
    let confused = Scripted::new(|_| Ok(WindowAnswer::Keyword(1)));
    let rig = Rig::new(Some(confused), incomplete_buckets(), Scripted::counting(9));
    let (stats, source) = rig.reader().errors(open_window(), None, 100, None).await.unwrap();
    assert_eq!((stats.total, source), (9, Source::Postgres));
}
