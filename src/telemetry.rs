//! Structured logging (slog): JSON for machines, a terminal format for people, and a level that the
//! admin listener can change while the process runs.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use slog::{o, Drain, Logger};

use crate::config::{LogFormat, Settings};

/// The process-wide log level, shared by the drain and whoever may change it.
#[derive(Clone)]
pub struct LogLevelHandle(Arc<AtomicUsize>);

impl LogLevelHandle {
    pub fn new(level: slog::Level) -> LogLevelHandle {
        LogLevelHandle(Arc::new(AtomicUsize::new(level.as_usize())))
    }

    pub fn get(&self) -> slog::Level {
        slog::Level::from_usize(self.0.load(Ordering::Relaxed)).unwrap_or(slog::Level::Info)
    }

    pub fn set(&self, level: slog::Level) {
        self.0.store(level.as_usize(), Ordering::Relaxed);
    }
}

/// Drops records less severe than the current level, on the logging thread: in front of the async
/// drain, so a record that will be dropped is never serialized or queued to the writer thread (at
/// 10k requests/s, each request's debug line at the default info level was both).
struct DynamicLevel<D> {
    drain: D,
    level: LogLevelHandle,
}

impl<D: Drain> Drain for DynamicLevel<D> {
    type Ok = ();
    type Err = D::Err;

    fn log(&self, record: &slog::Record, values: &slog::OwnedKVList) -> Result<Self::Ok, Self::Err> {
        if record.level().is_at_least(self.level.get()) {
            self.drain.log(record, values).map(|_| ())
        } else {
            Ok(())
        }
    }

    /// What `Logger::is_enabled` asks: callers skip building a line (or a child logger) for nothing.
    fn is_enabled(&self, level: slog::Level) -> bool {
        level.is_at_least(self.level.get()) && self.drain.is_enabled(level)
    }
}

/// Builds the root logger chosen by `LOG_FORMAT` / `LOG_LEVEL`; output goes to stderr.
pub fn init_logger(settings: &Settings) -> (Logger, LogLevelHandle) {
    let format =
        settings.log_format.unwrap_or(if std::io::stderr().is_terminal() { LogFormat::Term } else { LogFormat::Json });
    let level = LogLevelHandle::new(settings.log_level.0);
    let drain = match format {
        LogFormat::Json => {
            // slog_json writes a record in many small writes; unbuffered, a line printed to stdout
            // meanwhile (a command's report) could land inside it when both go to one file. Buffered
            // to its newline, each record is one write.
            let stderr = std::io::LineWriter::with_capacity(64 * 1024, std::io::stderr());
            slog_async::Async::new(slog_json::Json::default(stderr).fuse()).chan_size(8_192).build()
        }
        LogFormat::Term => {
            let decorator = slog_term::TermDecorator::new().stderr().build();
            let term = slog_term::FullFormat::new(decorator).build().fuse();
            slog_async::Async::new(term).chan_size(8_192).build()
        }
    };
    let drain = DynamicLevel { drain: drain.fuse(), level: level.clone() };
    let logger = Logger::root(drain.fuse(), o!("app" => "log-analyzer", "version" => env!("CARGO_PKG_VERSION")));
    (logger, level)
}

/// A logger that drops everything (tests that do not look at logs).
pub fn discard() -> Logger {
    Logger::root(slog::Discard, o!())
}

/// An error with its whole cause chain on one line, for logging it once. For a plain
/// `std::error::Error` (tokio-postgres' in the event store): an anyhow error prints the same with
/// `{:#}`, but wrapping one there would take the error by value only to format it.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Building blocks for the metrics each component defines beside itself (names
/// `log_analyzer_<name>_<unit>[_total]`); the admin listener's registry exports them.
pub mod metric {
    use prometheus::core::Collector;
    use prometheus::{CounterVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

    pub fn register<C: Collector + Clone + 'static>(registry: &Registry, collector: C) -> C {
        registry.register(Box::new(collector.clone())).expect("metric registered once");
        collector
    }

    pub fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        register(r, IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition"))
    }

    pub fn seconds_counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> CounterVec {
        register(r, CounterVec::new(Opts::new(name, help), labels).expect("metric definition"))
    }

    pub fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        register(r, IntGaugeVec::new(Opts::new(name, help), labels).expect("metric definition"))
    }

    pub fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>, labels: &[&str]) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets);
        register(r, HistogramVec::new(opts, labels).expect("metric definition"))
    }

    pub fn single_histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> prometheus::Histogram {
        let opts = HistogramOpts::new(name, help).buckets(buckets);
        register(r, prometheus::Histogram::with_opts(opts).expect("metric definition"))
    }

    pub fn plain_counter(r: &Registry, name: &str, help: &str) -> IntCounter {
        register(r, IntCounter::new(name, help).expect("metric definition"))
    }

    /// Latency buckets from 100 µs to ~105 s (×4).
    pub fn latency_buckets() -> Vec<f64> {
        prometheus::exponential_buckets(0.000_1, 4.0, 11).expect("valid buckets")
    }

    /// Raises a counter to `value`: what the actors count in atomics only grows, so a scrape adds
    /// the difference.
    pub fn raise_to(c: &IntCounterVec, labels: &[&str], value: u64) {
        let counter = c.with_label_values(labels);
        counter.inc_by(value.saturating_sub(counter.get()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts the records that reach it.
    struct Counting(Arc<AtomicUsize>);

    impl Drain for Counting {
        type Ok = ();
        type Err = slog::Never;
        fn log(&self, _: &slog::Record, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    #[test]
    fn every_level_the_settings_offer_is_logged_once_chosen_at_runtime() {
        let seen = Arc::new(AtomicUsize::new(0));
        let level = LogLevelHandle::new(slog::Level::Info);
        let log = Logger::root(DynamicLevel { drain: Counting(seen.clone()), level: level.clone() }.fuse(), o!());
        slog::trace!(log, "t");
        slog::debug!(log, "d");
        slog::info!(log, "i");
        assert_eq!(seen.load(Ordering::Relaxed), 1, "below info is dropped at info");
        // LOG_LEVEL and PUT /debug/log-level accept trace and debug: neither may be compiled out
        // (slog's defaults drop trace everywhere and debug from release builds).
        level.set(slog::Level::Trace);
        slog::trace!(log, "t");
        slog::debug!(log, "d");
        assert_eq!(seen.load(Ordering::Relaxed), 3, "trace and debug reach the drain at trace");
    }
}
