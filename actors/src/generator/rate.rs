//! The generator's steady rate: governor's GCRA limiter on a clock the caller moves, so ticks of
//! simulated time test it exactly.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::FakeRelativeClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// Grants up to `rate` tokens per second, with at most `burst` saved up.
pub struct TokenBucket {
    limiter: RateLimiter<NotKeyed, InMemoryState, FakeRelativeClock, NoOpMiddleware<Nanos>>,
    clock: FakeRelativeClock,
    burst: NonZeroU32,
    /// The first `take`'s time (the clock's zero) and how far the clock has been moved since.
    origin: Option<f64>,
    advanced_nanos: u64,
}

impl std::fmt::Debug for TokenBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenBucket").field("burst", &self.burst).field("origin", &self.origin).finish()
    }
}

impl TokenBucket {
    /// `rate` per second; `burst` bounds how much an idle period can save (at least one token).
    pub fn new(rate: f64, burst: f64) -> TokenBucket {
        let burst = NonZeroU32::new(burst.clamp(1.0, f64::from(u32::MAX)) as u32).unwrap_or(NonZeroU32::MIN);
        // A rate of zero (or below) grants nothing: one token per century is as good as none.
        let per_token = if rate > 0.0 { (1.0 / rate).min(3.2e9) } else { 3.2e9 };
        let period = Duration::from_secs_f64(per_token).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period).expect("a period of at least 1 ns").allow_burst(burst);
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::direct_with_clock(quota, clock.clone());
        TokenBucket { limiter, clock, burst, origin: None, advanced_nanos: 0 }
    }

    /// Takes up to `want` tokens at time `now_secs` (any monotonic origin); returns how many it got.
    pub fn take(&mut self, now_secs: f64, want: u64) -> u64 {
        match self.origin {
            None => {
                // The limiter starts full; the bucket starts empty at its first use, as the rate is
                // counted from the run's start, not from a saved-up idle period.
                self.origin = Some(now_secs);
                let _ = self.limiter.check_n(self.burst);
            }
            Some(origin) => {
                // Rounded, not truncated: 60.01 s is 60 010 000 000 ns, not one nanosecond short of it.
                let target = ((now_secs - origin).max(0.0) * 1e9).round() as u64;
                if target > self.advanced_nanos {
                    self.clock.advance(Duration::from_nanos(target - self.advanced_nanos));
                    self.advanced_nanos = target;
                }
            }
        }
        let mut granted = 0;
        while granted < want && self.limiter.check().is_ok() {
            granted += 1;
        }
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
