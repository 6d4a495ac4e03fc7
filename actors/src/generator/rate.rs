//! A token bucket: the generator's steady rate, with time passed in so it can be tested exactly.

/// Grants up to `rate` tokens per second, with at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<f64>,
}

impl TokenBucket {
    /// `rate` per second; `burst` bounds how much an idle period can save (at least one token).
    pub fn new(rate: f64, burst: f64) -> TokenBucket {
        TokenBucket { rate, burst: burst.max(1.0), tokens: 0.0, last: None }
    }

    /// Takes up to `want` tokens at time `now_secs` (any monotonic origin); returns how many it got.
    pub fn take(&mut self, now_secs: f64, want: u64) -> u64 {
        let elapsed = self.last.map_or(0.0, |last| (now_secs - last).max(0.0));
        self.last = Some(now_secs);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        // The epsilon keeps 0.1 × 100 from flooring to 9 through rounding.
        let granted = ((self.tokens + 1e-9).floor() as u64).min(want);
        self.tokens -= granted as f64;
        granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The arithmetic, with a simulated clock: 10k/s over 10 s of 10 ms ticks.
    #[test]
    fn ten_thousand_per_second_is_within_five_percent() {
        let mut bucket = TokenBucket::new(10_000.0, 1_000.0);
        let mut sent = 0;
        for tick in 0..=1_000 {
            sent += bucket.take(tick as f64 * 0.01, u64::MAX);
        }
        let achieved = sent as f64 / 10.0;
        assert!((achieved - 10_000.0).abs() / 10_000.0 < 0.05, "achieved {achieved}/s");
        assert!(sent <= 100_000 + 1_000);
    }

    #[test]
    fn an_idle_period_saves_at_most_the_burst() {
        let mut bucket = TokenBucket::new(1_000.0, 50.0);
        bucket.take(0.0, 0);
        assert_eq!(bucket.take(60.0, u64::MAX), 50);
        assert_eq!(bucket.take(60.0, u64::MAX), 0);
        assert_eq!(bucket.take(60.01, u64::MAX), 10);
    }

    #[test]
    fn uneven_ticks_and_small_wants_do_not_lose_tokens() {
        let mut bucket = TokenBucket::new(100.0, 1_000.0);
        let mut got = 0;
        let mut t = 0.0;
        for i in 0..1_000 {
            t += if i % 2 == 0 { 0.003 } else { 0.017 };
            got += bucket.take(t, 1);
        }
        // 9.997 s at 100/s accrue 999.7 tokens, taken one per call: nothing beyond rounding is lost.
        assert!((998..=999).contains(&got), "{got}");
    }
}
