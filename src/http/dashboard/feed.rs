//! The dashboard's one feed: once a second it asks the window use cases (the same `WindowReader` as
//! the REST routes, memory first) what the last seconds, the last minute and the last five minutes
//! hold, keeps the per-second series of the last 300 s, and fans one JSON frame out to every open
//! dashboard. Sessions only forward frames: nothing is computed per client.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actors::windows::{ErrorStats, KeywordCount, Source, WindowRange, WindowReader};
use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

/// One JSON frame, shared by every session: cloning it counts a reference (the socket's codec takes
/// it as it is), so a tick costs one serialization however many dashboards are open.
pub type Frame = bytestring::ByteString;

/// Seconds of per-second history a new dashboard gets (its 5-minute sparkline).
pub const HISTORY_SECONDS: usize = 300;
/// Services a frame names; the rest are summed in `other` (the page has room for about this many rows).
pub const SERVICES_SHOWN: usize = 20;
/// Seconds each delta re-reads: events of a second still arrive after it ends (ingest latency),
/// so the last few are sent again with what arrived since and the page overwrites them.
pub const RESEND_SECONDS: i64 = 3;
/// Frames a session may fall behind before it is cut: a client that cannot keep up is closed,
/// never buffered for.
pub const FRAMES_BEHIND: usize = 4;
/// The keywords shown (5 minutes).
const TOP_KEYWORDS: usize = 10;
/// Seconds averaged into `events_per_second`: one second alone jumps with batching.
const RATE_SECONDS: usize = 10;

/// What happened in one second of event time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecondFigures {
    /// Epoch second.
    pub t: i64,
    pub total: u64,
    pub errors: u64,
    /// `service → [total, errors]` for the services with the most errors in that second.
    pub by_service: BTreeMap<String, [u64; 2]>,
}

impl SecondFigures {
    fn of(t: i64, stats: &ErrorStats) -> SecondFigures {
        let by_service = stats.by_service.iter().map(|s| (s.service.clone(), [s.total, s.errors])).collect();
        SecondFigures { t, total: stats.total, errors: stats.errors, by_service }
    }
}

/// How fresh the answers are: `{watermark, lag_events}` as the REST answers carry it.
pub type FreshnessProbe = Arc<dyn Fn() -> BoxFuture<'static, Value> + Send + Sync>;

/// Where the feed reads: the stats use cases and the freshness of their answers.
#[derive(Clone)]
pub struct FeedSources {
    pub reader: WindowReader,
    pub freshness: FreshnessProbe,
}

/// The figures of one tick that are not per second.
#[derive(Debug, Clone, Serialize)]
struct Totals {
    /// The last 60 s (`/stats/errors?window=60s`), or why it could not be answered.
    minute: Value,
    /// The last 5 m (`/stats/keywords/top?window=5m`).
    top: Value,
    freshness: Value,
    events_per_second: f64,
}

#[derive(Default)]
struct History {
    seconds: VecDeque<SecondFigures>,
    last: Option<(i64, Totals)>,
    /// The snapshot of the last tick, serialized once for every session joining during it.
    snapshot: Option<(i64, Frame)>,
}

impl History {
    /// Puts `fresh` in place of the seconds it re-reads, keeping the series ordered and at most
    /// [`HISTORY_SECONDS`] long.
    fn merge(&mut self, fresh: &[SecondFigures]) {
        for figures in fresh {
            match self.seconds.iter().position(|s| s.t >= figures.t) {
                Some(i) if self.seconds[i].t == figures.t => self.seconds[i] = figures.clone(),
                Some(i) => self.seconds.insert(i, figures.clone()),
                None => self.seconds.push_back(figures.clone()),
            }
        }
        while self.seconds.len() > HISTORY_SECONDS {
            self.seconds.pop_front();
        }
    }

    fn events_per_second(&self) -> f64 {
        // The newest second is still filling; the ones before it are what was ingested.
        let settled: Vec<u64> = self.seconds.iter().rev().skip(1).take(RATE_SECONDS).map(|s| s.total).collect();
        if settled.is_empty() {
            return 0.0;
        }
        settled.iter().sum::<u64>() as f64 / settled.len() as f64
    }
}

/// A dashboard's view of the feed: the snapshot to start from, then every frame after it.
pub struct Subscription {
    pub snapshot: Option<Frame>,
    pub frames: broadcast::Receiver<Frame>,
}

/// The one feed of a process; sessions subscribe to it.
pub struct DashboardFeed {
    frames: broadcast::Sender<Frame>,
    history: Mutex<History>,
    /// Whether the last tick's minute came from memory: then a tick costs nothing outside the
    /// process and the feed keeps the history full while nobody watches.
    from_memory: std::sync::atomic::AtomicBool,
}

impl Default for DashboardFeed {
    fn default() -> Self {
        DashboardFeed::new()
    }
}

impl DashboardFeed {
    pub fn new() -> DashboardFeed {
        let (frames, _) = broadcast::channel(FRAMES_BEHIND);
        DashboardFeed { frames, history: Mutex::new(History::default()), from_memory: Default::default() }
    }

    /// Subscribes first and takes the snapshot after, so no frame falls between the two (one may be
    /// in both: the page overwrites a second it already has).
    pub fn subscribe(&self) -> Subscription {
        let frames = self.frames.subscribe();
        Subscription { snapshot: self.snapshot(), frames }
    }

    /// Open dashboards.
    pub fn sessions(&self) -> usize {
        self.frames.receiver_count()
    }

    /// The last 300 s and the last tick's figures, or nothing before the first tick.
    fn snapshot(&self) -> Option<Frame> {
        let mut history = self.history.lock().expect("dashboard history lock");
        let (at, totals) = history.last.clone()?;
        if let Some((cached_at, frame)) = &history.snapshot {
            if *cached_at == at {
                return Some(frame.clone());
            }
        }
        let frame: Frame = frame_json("snapshot", at, history.seconds.iter(), &totals).into();
        history.snapshot = Some((at, frame.clone()));
        Some(frame)
    }

    /// Asks the use cases about the time up to `now` (an epoch second), records it and sends the
    /// delta to every session; returns the delta.
    pub async fn tick(&self, sources: &FeedSources, now: i64) -> Frame {
        let reader = &sources.reader;
        let mut fresh = Vec::new();
        for t in now - RESEND_SECONDS..now {
            // A second no source can answer is left as it was: a gap, not a zero.
            if let Ok((stats, _)) = reader.errors(WindowRange::ending_at(t + 1, 1), None, SERVICES_SHOWN, None).await {
                fresh.push(SecondFigures::of(t, &stats));
            }
        }
        let minute = match reader.errors(WindowRange::ending_at(now, 60), None, SERVICES_SHOWN, None).await {
            Ok((stats, source)) => {
                self.from_memory.store(source == Source::Memory, std::sync::atomic::Ordering::Relaxed);
                minute_json(&stats, source)
            }
            Err(why) => unanswered(why.code(), why.message()),
        };
        let top = match reader.top_keywords(WindowRange::ending_at(now, 300), TOP_KEYWORDS, None).await {
            Ok((keywords, source)) => top_json(&keywords, source),
            Err(why) => unanswered(why.code(), why.message()),
        };
        let freshness = (sources.freshness)().await;
        let frame: Frame = {
            let mut history = self.history.lock().expect("dashboard history lock");
            history.merge(&fresh);
            let totals = Totals { minute, top, freshness, events_per_second: history.events_per_second() };
            let frame = frame_json("delta", now, fresh.iter(), &totals);
            history.last = Some((now, totals));
            frame.into()
        };
        // No session open is not an error: the history is kept for the next one.
        let _ = self.frames.send(frame.clone());
        frame
    }

    /// Ticks once a second, a quarter second after the second turns (so the second just ended has
    /// had a moment to arrive), for as long as the process runs — but while no dashboard is open
    /// only as long as memory answers: an `api` process (Redis, PostgreSQL) asks nothing of them
    /// for a page nobody watches. Its next page starts with the seconds it missed as gaps.
    pub fn start(self: &Arc<Self>, sources: FeedSources) {
        let feed = self.clone();
        actix_rt::spawn(async move {
            loop {
                let now = chrono::Utc::now();
                let into_second = u64::from(now.timestamp_subsec_millis().min(999));
                let wait = Duration::from_millis((1_250 - into_second) % 1_000);
                actix_rt::time::sleep(wait).await;
                let idle = feed.sessions() == 0 && !feed.from_memory.load(std::sync::atomic::Ordering::Relaxed);
                // Every 30 s even then, so a process whose memory becomes ready is noticed.
                if idle && chrono::Utc::now().timestamp() % 30 != 0 {
                    continue;
                }
                feed.tick(&sources, chrono::Utc::now().timestamp()).await;
            }
        });
    }
}

fn unanswered(code: &str, message: String) -> Value {
    serde_json::json!({ "error": code, "message": message })
}

fn minute_json(stats: &ErrorStats, source: Source) -> Value {
    let by_service: Vec<Value> = stats
        .by_service
        .iter()
        .map(|s| {
            let rate = if s.total == 0 { 0.0 } else { s.errors as f64 / s.total as f64 };
            serde_json::json!({ "service": s.service, "total": s.total, "errors": s.errors, "error_rate": rate })
        })
        .collect();
    serde_json::json!({
        "window": "60s",
        "total": stats.total,
        "errors": stats.errors,
        "error_rate": stats.error_rate(),
        "by_service": by_service,
        "other": stats.other,
        "source": source,
    })
}

fn top_json(keywords: &[KeywordCount], source: Source) -> Value {
    serde_json::json!({ "window": "5m", "keywords": keywords, "source": source })
}

fn frame_json<'a>(kind: &str, at: i64, seconds: impl Iterator<Item = &'a SecondFigures>, totals: &Totals) -> String {
    let seconds: Vec<&SecondFigures> = seconds.collect();
    serde_json::json!({
        "type": kind,
        "at": at,
        "seconds": seconds,
        "minute": totals.minute,
        "top": totals.top,
        "freshness": totals.freshness,
        "events_per_second": totals.events_per_second,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actors::ports::{CannotAnswer, WindowAnswer, WindowQuery, WindowQuestion};
    use actors::windows::ServiceStats;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A store where second `t` holds `t % 7` events of `api`, of which `t % 3` are errors, and
    /// every five minutes hold one keyword; it counts the questions it is asked.
    #[derive(Default)]
    struct Arithmetic {
        asked: AtomicUsize,
    }

    impl Arithmetic {
        fn second(t: i64) -> (u64, u64) {
            ((t % 7) as u64, ((t % 3) as u64).min((t % 7) as u64))
        }
    }

    #[async_trait]
    impl WindowQuery for Arithmetic {
        async fn answer(&self, question: &WindowQuestion) -> Result<WindowAnswer, CannotAnswer> {
            self.asked.fetch_add(1, Ordering::Relaxed);
            Ok(match question {
                WindowQuestion::Errors { range, .. } => {
                    let (total, errors) = (range.from..range.to)
                        .map(Arithmetic::second)
                        .fold((0, 0), |(t, e), (t1, e1)| (t + t1, e + e1));
                    let api = ServiceStats { service: "api".into(), total, errors };
                    WindowAnswer::Errors(ErrorStats::from_services([api], None, SERVICES_SHOWN))
                }
                WindowQuestion::TopKeywords { .. } => {
                    WindowAnswer::TopKeywords(vec![KeywordCount { keyword: "timeout".into(), count: 3 }])
                }
                WindowQuestion::Keyword { .. } => WindowAnswer::Keyword(0),
            })
        }
    }

    fn sources(store: Arc<Arithmetic>) -> FeedSources {
        let reader = WindowReader::new(store, Arc::new(actors::ports::SystemClock));
        let freshness: FreshnessProbe =
            Arc::new(|| Box::pin(async { serde_json::json!({"watermark": null, "lag_events": 5}) }));
        FeedSources { reader, freshness }
    }

    fn parse(frame: &str) -> Value {
        serde_json::from_str(frame).unwrap()
    }

    #[actix_rt::test]
    async fn a_delta_carries_the_last_seconds_the_minute_the_top_keywords_and_freshness() {
        let store = Arc::new(Arithmetic::default());
        let sources = sources(store.clone());
        let feed = DashboardFeed::new();
        let now = 1_000_000;
        let delta = parse(&feed.tick(&sources, now).await);
        assert_eq!(delta["type"], "delta");
        assert_eq!(delta["at"], now);
        let seconds = delta["seconds"].as_array().unwrap();
        assert_eq!(seconds.len(), RESEND_SECONDS as usize);
        for (i, second) in seconds.iter().enumerate() {
            let t = now - RESEND_SECONDS + i as i64;
            let (total, errors) = Arithmetic::second(t);
            assert_eq!(second["t"], t);
            assert_eq!(second["total"], total);
            // A second without events names no service.
            let expected = if total == 0 { Value::Null } else { serde_json::json!([total, errors]) };
            assert_eq!(second["by_service"]["api"], expected);
        }
        let (total, errors) = (now - 60..now).map(Arithmetic::second).fold((0, 0), |(t, e), (t1, e1)| (t + t1, e + e1));
        assert_eq!(delta["minute"]["total"], total);
        assert_eq!(delta["minute"]["errors"], errors);
        assert_eq!(delta["minute"]["by_service"][0]["service"], "api");
        assert_eq!(delta["minute"]["source"], "postgres");
        assert_eq!(delta["top"]["keywords"][0]["keyword"], "timeout");
        assert_eq!(delta["freshness"]["lag_events"], 5);
        // Three seconds, the minute and the top keywords: five questions a tick, whoever watches.
        assert_eq!(store.asked.load(Ordering::Relaxed), 5);
    }

    #[actix_rt::test]
    async fn a_new_session_first_gets_the_last_300_seconds() {
        let sources = sources(Arc::new(Arithmetic::default()));
        let feed = DashboardFeed::new();
        assert!(feed.subscribe().snapshot.is_none(), "nothing before the first tick");
        let start = 2_000_000;
        for now in start..start + 400 {
            feed.tick(&sources, now).await;
        }
        let last = start + 399;
        let snapshot = parse(&feed.subscribe().snapshot.unwrap());
        assert_eq!(snapshot["type"], "snapshot");
        assert_eq!(snapshot["at"], last);
        let seconds = snapshot["seconds"].as_array().unwrap();
        assert_eq!(seconds.len(), HISTORY_SECONDS);
        let ts: Vec<i64> = seconds.iter().map(|s| s["t"].as_i64().unwrap()).collect();
        let expected: Vec<i64> = (last - HISTORY_SECONDS as i64..last).collect();
        assert_eq!(ts, expected, "the last 300 s, in order, each once");
        assert_eq!(seconds[10]["total"], Arithmetic::second(ts[10]).0);
        // Settled seconds only: the newest is left out of the rate.
        let rate = (last - 11..last - 1).map(|t| Arithmetic::second(t).0).sum::<u64>() as f64 / 10.0;
        assert!((snapshot["events_per_second"].as_f64().unwrap() - rate).abs() < 1e-9);
    }

    #[actix_rt::test]
    async fn every_session_gets_the_same_frame_and_a_session_that_falls_behind_is_told() {
        let store = Arc::new(Arithmetic::default());
        let sources = sources(store.clone());
        let feed = DashboardFeed::new();
        let mut keeping_up = feed.subscribe().frames;
        let mut asleep = feed.subscribe().frames;
        assert_eq!(feed.sessions(), 2);
        for now in 0..(FRAMES_BEHIND as i64 + 3) {
            let sent = feed.tick(&sources, 3_000_000 + now).await;
            // The same bytes, not a copy: a session's frame is the feed's.
            assert!(std::ptr::eq(keeping_up.recv().await.unwrap().as_ptr(), sent.as_ptr()), "the one frame, shared");
        }
        assert_eq!(store.asked.load(Ordering::Relaxed), 5 * (FRAMES_BEHIND + 3), "no question per session");
        assert!(matches!(asleep.recv().await, Err(broadcast::error::RecvError::Lagged(_))));
    }
}
