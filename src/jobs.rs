//! The batch side: the scheduler (in `schedule` and `run`), `summary --date`, and `rejects list|replay`.

use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use actors::ports::SystemClock;
use actors::schedule::{ScheduleConfig, SchedulerActor, SummaryRun, SummaryStats};
use anyhow::Context;
use chrono::{NaiveDate, Utc};
use slog::Logger;

use crate::config::{Backend, Settings};
use crate::db::rejects::{self, RejectFilter, RejectRow, ReplayReport};
use crate::db::summary;
use crate::startup::PARTITIONS_AHEAD_DAYS;

/// How often the scheduler looks at the clock.
const SCHEDULER_TICK: Duration = Duration::from_secs(1);
/// Pause after a failed daily run before trying again.
const SCHEDULER_RETRY: Duration = Duration::from_secs(30);

/// The scheduler's settings.
pub fn schedule_config(settings: &Settings) -> ScheduleConfig {
    ScheduleConfig {
        summary_at: settings.summary_at,
        retention_days: settings.retention_days,
        partitions_ahead_days: PARTITIONS_AHEAD_DAYS as u32,
        tick: SCHEDULER_TICK,
        retry_after: SCHEDULER_RETRY,
    }
}

/// The daily summary job's metrics: run durations, observed as runs end, and runs by status,
/// copied from the scheduler's counters at each scrape.
pub struct SummaryMetrics {
    seconds: prometheus::Histogram,
    runs: prometheus::IntCounterVec,
    stats: std::sync::Mutex<Option<Arc<SummaryStats>>>,
}

impl SummaryMetrics {
    pub fn new(r: &prometheus::Registry) -> SummaryMetrics {
        use crate::telemetry::metric::{counter, single_histogram};
        SummaryMetrics {
            seconds: single_histogram(
                r,
                "log_analyzer_summary_job_seconds",
                "Duration of a daily summary run",
                prometheus::exponential_buckets(0.1, 3.0, 9).expect("valid buckets"),
            ),
            runs: counter(r, "log_analyzer_summary_runs_total", "Daily summary runs by status", &["status"]),
            stats: std::sync::Mutex::new(None),
        }
    }

    /// Counters for a scheduler of this process, exported from now on.
    fn watch(&self) -> Arc<SummaryStats> {
        let stats = Arc::new(SummaryStats { duration: Some(self.seconds.clone()), ..SummaryStats::default() });
        *self.stats.lock().expect("summary metrics") = Some(stats.clone());
        stats
    }

    pub fn refresh(&self) {
        use crate::telemetry::metric::raise_to;
        use std::sync::atomic::Ordering;
        if let Some(stats) = self.stats.lock().expect("summary metrics").as_ref() {
            raise_to(&self.runs, &["ok"], stats.runs_ok.load(Ordering::Relaxed));
            raise_to(&self.runs, &["failed"], stats.runs_failed.load(Ordering::Relaxed));
        }
    }
}

/// A running SchedulerActor and its counters.
pub struct Scheduler {
    pub addr: actix::Addr<SchedulerActor>,
    pub stats: Arc<SummaryStats>,
    arbiter: actix::Arbiter,
}

impl Scheduler {
    /// Starts the scheduler on its own arbiter (a long summary never holds up other actors).
    /// `jobs` are the store's: `PgDailyJobs` on the stack, `SqliteDailyJobs` in the embedded mode.
    pub fn start(
        settings: &Settings,
        jobs: Arc<dyn actors::ports::DailyJobs>,
        metrics: &crate::admin::Metrics,
        log: &Logger,
    ) -> Scheduler {
        let stats = metrics.summary.watch();
        let probe = metrics.actors.probe("scheduler", "0");
        let (config, counters, log) = (schedule_config(settings), stats.clone(), log.clone());
        let arbiter = actix::Arbiter::new();
        let addr = SchedulerActor::start_in_arbiter(&arbiter.handle(), move |_| {
            SchedulerActor::new(jobs, Arc::new(SystemClock), config, counters, log).with_probe(probe)
        });
        Scheduler { addr, stats, arbiter }
    }

    /// Stops the actor; a summary in progress is abandoned (its transaction rolls back).
    pub fn stop(self) {
        self.arbiter.stop();
    }
}

/// `summary --date D`: one idempotent run, on the store the settings select (the caller warns about
/// a day [`outside_retention`]).
pub async fn summary(settings: &Settings, day: NaiveDate, log: &Logger) -> anyhow::Result<SummaryRun> {
    match settings.backend()? {
        Backend::Stack => {
            let url = settings.database_url.expose();
            let mut client = crate::startup::connect_postgres(url).await?;
            summary::summarize_day(&mut client, day, log).await
        }
        Backend::Embedded => crate::sqlite::summary::summarize_day(&settings.sqlite_db()?, day, log).await,
    }
}

/// Why a summary of `day` will find no events (older than the retention, or not yet begun), if so.
pub fn outside_retention(day: NaiveDate, today: NaiveDate, retention_days: u32) -> Option<String> {
    let oldest = today - chrono::Days::new(u64::from(retention_days.saturating_sub(1)));
    if day < oldest {
        Some(format!(
            "{day} is older than the retention (RETENTION_DAYS={retention_days}: events before {oldest} are \
             dropped), so the summary counts nothing that was stored then"
        ))
    } else if day > today {
        Some(format!("{day} has not begun yet (today is {today} UTC): the summary counts no events"))
    } else {
        None
    }
}

/// The reject filter, its reason checked: an unknown code would silently match nothing.
pub fn checked_filter(filter: &RejectFilter) -> anyhow::Result<()> {
    if let Some(reason) = &filter.reason {
        if actors::domain::RejectReason::from_code(reason).is_none() {
            let codes: Vec<&str> = actors::domain::RejectReason::ALL.iter().map(|r| r.code()).collect();
            anyhow::bail!("--reason {reason:?} is not a reject reason; the reasons are {}", codes.join(", "));
        }
    }
    Ok(())
}

/// `rejects list`.
pub async fn rejects_list(settings: &Settings, filter: &RejectFilter, limit: i64) -> anyhow::Result<Vec<RejectRow>> {
    checked_filter(filter)?;
    match settings.backend()? {
        Backend::Stack => {
            let url = settings.database_url.expose();
            let client = crate::startup::connect_postgres(url).await?;
            rejects::list(&client, filter, limit).await
        }
        Backend::Embedded => crate::sqlite::rejects::list(&settings.sqlite_db()?, filter, limit).await,
    }
}

/// `rejects replay`: with today's parser rules (MAX_MESSAGE_BYTES, RETENTION_DAYS).
pub async fn rejects_replay(settings: &Settings, filter: &RejectFilter) -> anyhow::Result<ReplayReport> {
    checked_filter(filter)?;
    let (rules, topic, now) = (settings.parse_rules(), settings.primary_topic(), Utc::now());
    match settings.backend()? {
        Backend::Stack => {
            let url = settings.database_url.expose();
            let mut client = crate::startup::connect_postgres(url).await?;
            rejects::replay(&mut client, filter, &rules, topic, now).await
        }
        Backend::Embedded => crate::sqlite::rejects::replay(&settings.sqlite_db()?, filter, &rules, topic, now).await,
    }
}

/// One line per reject for a terminal: position, reason, sizes, and the start of the payload.
pub fn format_reject(r: &RejectRow) -> String {
    let position = match (&r.topic, r.partition, r.offset) {
        (Some(t), Some(p), Some(o)) => format!("{t}/{p}@{o}"),
        _ => r.source.clone(),
    };
    let mut raw: String = String::from_utf8_lossy(&r.raw).chars().take(80).collect();
    raw = raw.replace(['\n', '\r', '\t'], " ");
    let replayed = r.replayed_at.map_or_else(|| "-".to_string(), |t| t.to_rfc3339());
    format!(
        "{id}\t{at}\t{position}\t{reason}\t{len}B{trunc}\treplayed={replayed}\t{detail}\t{raw}",
        id = r.id,
        at = r.rejected_at.to_rfc3339(),
        reason = r.reason,
        len = r.raw_len,
        trunc = if r.truncated() { " (truncated)" } else { "" },
        detail = r.detail,
    )
}

/// How many lines `parse` resolved and rejected.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ParseCounts {
    pub events: u64,
    pub rejects: u64,
}

/// `log-analyzer parse`: resolves each line of `input` as if it arrived on Kafka now (on the first
/// topic of `KAFKA_TOPIC`, or as `POST /ingest?service=` asked, when `service` is given) and writes
/// one JSON object per line: `{"line", "event"}` or `{"line", "reject"}`. Blank lines are skipped,
/// as `POST /ingest` skips them.
pub fn parse_lines(
    settings: &Settings,
    input: impl std::io::BufRead,
    service: Option<&str>,
    out: &mut impl std::io::Write,
) -> anyhow::Result<ParseCounts> {
    use actors::domain::{Fallback, LogEvent};
    let rules = settings.parse_rules();
    let topic = settings.primary_topic().to_owned();
    let mut counts = ParseCounts::default();
    for (i, line) in input.split(b'\n').enumerate() {
        let line = line.context("reading the input")?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let now = Utc::now();
        let fallback = match service {
            Some(service) => Fallback { ts: Some(now), service, service_requested: true },
            None => Fallback::kafka(Some(now), &topic),
        };
        let answer = match LogEvent::parse(&line, fallback, now, &rules) {
            Ok(event) => {
                counts.events += 1;
                serde_json::json!({ "line": i + 1, "event": event.to_json() })
            }
            Err(reject) => {
                counts.rejects += 1;
                serde_json::json!({ "line": i + 1, "reject": reject.to_json() })
            }
        };
        serde_json::to_writer(&mut *out, &answer)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_outside_the_retention_is_warned_about() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(outside_retention(day("2026-11-02"), today, 30), None, "the oldest kept day");
        assert_eq!(outside_retention(today, today, 30), None);
        let old = outside_retention(day("2026-11-01"), today, 30).unwrap();
        assert!(old.contains("older than the retention") && old.contains("2026-11-02"), "{old}");
        assert!(outside_retention(day("2026-12-02"), today, 30).unwrap().contains("not begun"));
    }

    #[test]
    fn an_unknown_reject_reason_lists_the_valid_ones() {
        let filter = |reason: &str| RejectFilter { since: None, reason: Some(reason.into()) };
        let err = checked_filter(&filter("nope")).unwrap_err().to_string();
        assert!(err.contains("\"nope\"") && err.contains("not_json") && err.contains("too_large"), "{err}");
        checked_filter(&filter("not_json")).unwrap();
        checked_filter(&RejectFilter { since: None, reason: None }).unwrap();
    }

    #[test]
    fn parse_answers_each_line_with_its_event_or_reject() {
        let settings = Settings::from_vars(vec![("KAFKA_TOPIC".into(), "app-logs,other".into())]).unwrap();
        let input =
            b"{\"level\":30,\"msg\":\"hi\",\"name\":\"svc\"}\n\n2015-10-18 18:01:47,978 WARN [main] x\r\n{oops\n";
        let mut out = Vec::new();
        let counts = parse_lines(&settings, &input[..], None, &mut out).unwrap();
        assert_eq!(counts, ParseCounts { events: 2, rejects: 1 });
        let lines: Vec<serde_json::Value> =
            String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3);
        assert_eq!((lines[0]["line"].as_u64(), lines[0]["event"]["level"].as_str()), (Some(1), Some("info")));
        assert_eq!(lines[0]["event"]["service"], "svc");
        assert_eq!(lines[1]["line"], 3);
        assert_eq!(lines[1]["event"]["message"], "2015-10-18 18:01:47,978 WARN [main] x");
        assert_eq!(
            (lines[1]["event"]["level"].as_str(), lines[1]["event"]["service"].as_str()),
            (Some("warn"), Some("app-logs"))
        );
        assert_eq!((lines[2]["line"].as_u64(), lines[2]["reject"]["reason"].as_str()), (Some(4), Some("not_json")));
        let mut out = Vec::new();
        parse_lines(&settings, &b"plain\n"[..], Some("asked"), &mut out).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("\"service\":\"asked\""));
    }
}
