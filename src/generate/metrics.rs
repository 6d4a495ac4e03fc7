//! The in-process generator's metrics (`run --generate`): events sent, acknowledged, and failed.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use actors::generator::GeneratorStats;
use prometheus::{IntCounter, Registry};

use crate::telemetry::metric::plain_counter;

pub struct GeneratorMetrics {
    sent: IntCounter,
    acked: IntCounter,
    errors: IntCounter,
    stats: Mutex<Option<Arc<GeneratorStats>>>,
}

impl GeneratorMetrics {
    pub fn new(r: &Registry) -> GeneratorMetrics {
        GeneratorMetrics {
            sent: plain_counter(r, "log_analyzer_generator_sent_total", "Events the generator sent"),
            acked: plain_counter(r, "log_analyzer_generator_acked_total", "Events the generator's target acknowledged"),
            errors: plain_counter(r, "log_analyzer_generator_errors_total", "Events the generator failed to deliver"),
            stats: Mutex::new(None),
        }
    }

    /// Counters for a generator run in this process, exported from now on.
    pub fn watch(&self) -> Arc<GeneratorStats> {
        let stats = Arc::new(GeneratorStats::default());
        *self.stats.lock().expect("generator metrics") = Some(stats.clone());
        stats
    }

    pub fn refresh(&self) {
        let Some(generator) = self.stats.lock().expect("generator metrics").clone() else { return };
        let raise = |c: &IntCounter, value: u64| c.inc_by(value.saturating_sub(c.get()));
        raise(&self.sent, generator.sent.load(Ordering::Relaxed));
        raise(&self.acked, generator.acked.load(Ordering::Relaxed));
        // A payload refused at `send` never reached the target: it failed as much as a lost one.
        raise(&self.errors, generator.failed.load(Ordering::Relaxed) + generator.send_errors.load(Ordering::Relaxed));
    }
}
