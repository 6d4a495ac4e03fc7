//! The generator's progress report: a redrawn bar on a terminal (indicatif), plain lines otherwise.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bar's resolution: a run's fraction done is shown in thousandths.
const BAR_STEPS: u64 = 1_000;

/// The counters of a run at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Snapshot {
    pub elapsed: Duration,
    pub sent: u64,
    pub acked: u64,
    pub rejected: u64,
    pub errors: u64,
    /// Events sent in the last second.
    pub rate: u64,
}

impl Snapshot {
    /// `generate: 12.0s sent=… acked=… rejected=… rate=…/s errors=…`
    pub fn line(&self) -> String {
        format!(
            "generate: {:>6.1}s sent={} acked={} rejected={} rate={}/s errors={}",
            self.elapsed.as_secs_f64(),
            self.sent,
            self.acked,
            self.rejected,
            self.rate,
            self.errors
        )
    }
}

/// A bar on stderr for a run whose end is known (by count or duration), else the line alone, redrawn.
pub fn terminal_bar(end_known: bool) -> ProgressBar {
    let template = if end_known { "[{bar:24}] {percent:>3}% {msg}" } else { "{msg}" };
    let bar = ProgressBar::with_draw_target(Some(BAR_STEPS), ProgressDrawTarget::stderr());
    bar.set_style(ProgressStyle::with_template(template).expect("a valid template").progress_chars("#-"));
    bar
}

/// Moves the bar to `done` (0..=1; past the end stays at the end) and shows the counters beside it.
pub fn show(bar: &ProgressBar, snapshot: &Snapshot, done: Option<f64>) {
    if let Some(done) = done {
        bar.set_position((done.clamp(0.0, 1.0) * BAR_STEPS as f64).round() as u64);
    }
    bar.set_message(snapshot.line());
}

/// How far a run with these limits is: the larger share of its count or of its duration.
pub fn fraction(count: Option<u64>, duration: Option<Duration>, sent: u64, elapsed: Duration) -> Option<f64> {
    let by_count = count.map(|n| if n == 0 { 1.0 } else { sent as f64 / n as f64 });
    let by_time = duration.map(|d| if d.is_zero() { 1.0 } else { elapsed.as_secs_f64() / d.as_secs_f64() });
    match (by_count, by_time) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_follows_the_nearer_limit_and_plain_lines_have_every_counter() {
        let s = Snapshot { elapsed: Duration::from_secs(3), sent: 250, acked: 240, rejected: 5, errors: 1, rate: 100 };
        assert_eq!(s.line(), "generate:    3.0s sent=250 acked=240 rejected=5 rate=100/s errors=1");
        let done = fraction(Some(1_000), Some(Duration::from_secs(6)), s.sent, s.elapsed);
        assert_eq!(done, Some(0.5));
        let bar = ProgressBar::with_draw_target(Some(BAR_STEPS), ProgressDrawTarget::hidden());
        show(&bar, &s, done);
        assert_eq!((bar.position(), bar.message()), (500, s.line()));
        show(&bar, &s, None);
        assert_eq!(bar.position(), 500, "no known end leaves the bar where it was");
        assert_eq!(fraction(None, None, 5, s.elapsed), None);
        assert_eq!(fraction(Some(100), None, 500, s.elapsed), Some(5.0));
        show(&bar, &s, Some(5.0));
        assert_eq!(bar.position(), BAR_STEPS, "past the end stays at the end");
    }
}
