//! The `generate` role: synthetic load into Kafka, into `POST /ingest`, or into a file (NDJSON, or CSV
//! shaped like the `logs` table for COPY baselines).

pub mod http;
pub mod metrics;
pub mod progress;

use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use actors::domain::{Fallback, LogEvent, ParseRules};
use actors::generator::{
    EventSink, GeneratorActor, GeneratorConfig, GeneratorStats, LogGenerator, RunLimit, SinkError, StopGenerator,
};
use actors::ports::{SharedClock, SystemClock};
use chrono::{TimeZone, Utc};

use crate::config::Settings;
use crate::kafka::sink::KafkaSink;
use http::{HttpSink, HttpSinkOptions, HttpTarget};
use progress::Snapshot;

/// Where generated events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Kafka,
    /// NDJSON batches to `POST /ingest` of a running server.
    Http(HttpTarget),
    Ndjson(PathBuf),
    /// Rows of the `logs` table (valid events only), for `COPY logs FROM … CSV`.
    Csv(PathBuf),
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("http://") || s.starts_with("https://") {
            return s.parse().map(Target::Http);
        }
        match s.split_once(':') {
            None if s == "kafka" => Ok(Target::Kafka),
            Some(("ndjson", path)) if !path.is_empty() => Ok(Target::Ndjson(path.into())),
            Some(("csv", path)) if !path.is_empty() => Ok(Target::Csv(path.into())),
            _ => Err(format!("{s:?}: use kafka, http://HOST:PORT, ndjson:PATH or csv:PATH")),
        }
    }
}

/// A generator run.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Events per second; `None` means as fast as the target takes them.
    pub rate: Option<f64>,
    pub limit: RunLimit,
    pub target: Target,
    pub config: GeneratorConfig,
    /// Batching, concurrency and token for `Target::Http`.
    pub http: HttpSinkOptions,
}

/// The outcome of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerateSummary {
    pub sent: u64,
    /// Confirmed by the destination (Kafka's acks, the events a 202 accepted, lines written).
    pub acked: u64,
    /// Refused as invalid by the destination (only `POST /ingest` checks events as it takes them).
    pub rejected: u64,
    /// Not delivered.
    pub failed: u64,
    pub malformed: u64,
    pub seconds: f64,
}

/// Runs the generator to its limit (or SIGINT/SIGTERM) inside the current actix System, reporting
/// progress on stderr; an interrupted run still flushes and prints its summary.
pub async fn run(settings: &Settings, options: GenerateOptions) -> anyhow::Result<GenerateSummary> {
    run_observed(settings, options, Arc::default(), None).await
}

/// [`run`], counting into `stats` and, with a probe, each generator tick as a handled message
/// (`run --generate` exports both on its admin listener).
pub async fn run_observed(
    settings: &Settings,
    options: GenerateOptions,
    stats: Arc<GeneratorStats>,
    probe: Option<Arc<actors::mailbox::ActorProbe>>,
) -> anyhow::Result<GenerateSummary> {
    let sink: Box<dyn EventSink> = match &options.target {
        Target::Kafka => Box::new(KafkaSink::new(&settings.kafka_brokers, settings.primary_topic())?),
        Target::Http(target) => Box::new(HttpSink::new(target.clone(), options.http.clone())?),
        Target::Ndjson(path) => {
            Box::new(FileSink::create(path, false, settings.parse_rules(), settings.primary_topic())?)
        }
        Target::Csv(path) => Box::new(FileSink::create(path, true, settings.parse_rules(), settings.primary_topic())?),
    };
    let (done_tx, mut done) = tokio::sync::oneshot::channel();
    let clock: SharedClock = Arc::new(SystemClock);
    let generator = LogGenerator::new(options.config.clone());
    let mut actor = GeneratorActor::new(generator, options.rate, sink, options.limit, clock, stats.clone(), done_tx);
    if let Some(probe) = probe {
        actor = actor.with_probe(probe);
    }
    let actor = actor.start();
    let interrupted = crate::startup::shutdown_signal();
    tokio::pin!(interrupted);
    let mut stopping = false;

    let started = Instant::now();
    let limit = options.limit;
    let bar = std::io::stderr()
        .is_terminal()
        .then(|| progress::terminal_bar(limit.count.is_some() || limit.duration.is_some()));
    // The counters now, with the rate since `last_sent` was read a second ago.
    let snapshot = |last_sent: u64| {
        let sent = stats.sent.load(Ordering::Relaxed) + stats.send_errors.load(Ordering::Relaxed);
        Snapshot {
            elapsed: started.elapsed(),
            sent,
            acked: stats.acked.load(Ordering::Relaxed),
            rejected: stats.rejected.load(Ordering::Relaxed),
            errors: stats.failed.load(Ordering::Relaxed) + stats.send_errors.load(Ordering::Relaxed),
            rate: sent.saturating_sub(last_sent),
        }
    };
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut last_sent = 0;
    let sink = loop {
        tokio::select! {
            sink = &mut done => break sink?,
            _ = &mut interrupted, if !stopping => {
                stopping = true;
                actor.do_send(StopGenerator);
            }
            _ = ticker.tick() => {
                let now = snapshot(last_sent);
                last_sent = now.sent;
                if let Some(bar) = &bar {
                    progress::show(bar, &now, progress::fraction(limit.count, limit.duration, now.sent, now.elapsed));
                } else {
                    eprintln!("{}", now.line());
                }
            }
        }
    };
    let mut sink = sink;
    let flushed = tokio::task::spawn_blocking(move || {
        let result = sink.flush(Duration::from_secs(60));
        (sink, result)
    })
    .await?;
    let (sink, result) = flushed;
    if let Some(bar) = bar {
        // The last state stays on screen above the summary.
        bar.abandon();
    }
    // An event the sink refused at once was offered all the same: it counts as sent and failed,
    // so failed never exceeds sent.
    let refused = stats.send_errors.load(Ordering::Relaxed);
    let summary = GenerateSummary {
        sent: stats.sent.load(Ordering::Relaxed) + refused,
        acked: sink.acked(),
        rejected: sink.rejected(),
        failed: sink.failed() + refused,
        malformed: stats.malformed.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
    };
    eprintln!(
        "generate: done sent={} acked={} rejected={} failed={} malformed={} in {:.2}s ({:.0}/s)",
        summary.sent,
        summary.acked,
        summary.rejected,
        summary.failed,
        summary.malformed,
        summary.seconds,
        summary.sent as f64 / summary.seconds.max(1e-9)
    );
    result.map_err(|e| anyhow::anyhow!("flushing the generator's output: {e}"))?;
    if summary.failed > 0 {
        let why = sink.first_error().unwrap_or_else(|| "the target gave no reason".into());
        anyhow::bail!("{} of {} events were not delivered; first error: {why}", summary.failed, summary.sent);
    }
    Ok(summary)
}

/// Writes payloads to a file: as they are (NDJSON), or as `logs` rows (CSV).
struct FileSink {
    out: BufWriter<std::fs::File>,
    csv: bool,
    rules: ParseRules,
    topic: String,
    written: u64,
    error: Option<String>,
}

impl FileSink {
    fn create(path: &std::path::Path, csv: bool, rules: ParseRules, topic: &str) -> anyhow::Result<FileSink> {
        let file = std::fs::File::create(path).map_err(|e| anyhow::anyhow!("creating {}: {e}", path.display()))?;
        Ok(FileSink {
            out: BufWriter::with_capacity(1 << 20, file),
            csv,
            rules,
            topic: topic.to_owned(),
            written: 0,
            error: None,
        })
    }

    fn write_csv_row(&mut self, payload: &[u8], timestamp_ms: i64) -> std::io::Result<()> {
        let kafka_ts = Utc.timestamp_millis_opt(timestamp_ms).single();
        let Ok(event) = LogEvent::parse(payload, Fallback::kafka(kafka_ts, &self.topic), Utc::now(), &self.rules)
        else {
            return Ok(()); // COPY baselines hold valid rows only
        };
        let n = self.written as i64;
        let tokens = format!("{{{}}}", event.tokens.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(","));
        let attrs = event.attrs.as_str().to_owned();
        let fields = [
            event.ts.to_rfc3339(),
            event.level.as_i16().to_string(),
            event.service.into_inner(),
            event.user_id.map(|u| u.into_inner()).unwrap_or_default(),
            event.message,
            tokens,
            attrs,
            self.topic.clone(),
            (n % 6).to_string(),
            n.to_string(),
        ];
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                self.out.write_all(b",")?;
            }
            // user_id: an empty unquoted field is NULL in CSV COPY.
            if i == 3 && field.is_empty() {
                continue;
            }
            self.out.write_all(b"\"")?;
            self.out.write_all(field.replace('"', "\"\"").as_bytes())?;
            self.out.write_all(b"\"")?;
        }
        self.out.write_all(b"\n")
    }
}

impl EventSink for FileSink {
    fn send(&mut self, payload: Vec<u8>, timestamp_ms: i64) -> Result<(), SinkError> {
        let result = if self.csv {
            self.write_csv_row(&payload, timestamp_ms)
        } else {
            self.out.write_all(&payload).and_then(|()| self.out.write_all(b"\n"))
        };
        match result {
            Ok(()) => {
                self.written += 1;
                Ok(())
            }
            Err(e) => {
                self.error = Some(e.to_string());
                Err(SinkError::Failed(e.to_string()))
            }
        }
    }

    fn acked(&self) -> u64 {
        self.written
    }

    fn flush(&mut self, _timeout: Duration) -> Result<(), String> {
        self.out.flush().map_err(|e| e.to_string())?;
        self.error.take().map_or(Ok(()), Err)
    }
}
