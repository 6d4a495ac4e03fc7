//! The generator's progress report: a redrawn bar on a terminal, plain lines otherwise.

use std::time::Duration;

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

    /// The line behind a bar of `width` cells filled to `done` (0..=1), when the run's end is known.
    pub fn bar(&self, done: Option<f64>, width: usize) -> String {
        let Some(done) = done else { return self.line() };
        let done = done.clamp(0.0, 1.0);
        let filled = (done * width as f64).round() as usize;
        format!("[{}{}] {:>3.0}% {}", "#".repeat(filled), "-".repeat(width - filled), done * 100.0, self.line())
    }
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
        assert!(s.bar(done, 10).starts_with("[#####-----]  50% generate:"), "{}", s.bar(done, 10));
        assert_eq!(s.bar(None, 10), s.line());
        assert_eq!(fraction(None, None, 5, s.elapsed), None);
        assert_eq!(fraction(Some(100), None, 500, s.elapsed), Some(5.0));
        assert!(s.bar(Some(5.0), 4).starts_with("[####] 100%"));
    }
}
