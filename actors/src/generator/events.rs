//! Realistic synthetic events: services, Zipf-distributed users, levels, keyword-bearing messages,
//! late/out-of-order timestamps, and an exact share of malformed payloads.

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde_json::json;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    pub seed: u64,
    pub services: usize,
    pub users: usize,
    /// Share of events at level error or fatal.
    pub error_ratio: f64,
    /// Share of payloads that are deliberately malformed (an exact count: floor(n × ratio)).
    pub malformed_ratio: f64,
    /// Share of events whose `ts` lies up to `late_max_ms` in the past (late and out of order).
    pub late_ratio: f64,
    pub late_max_ms: i64,
    /// Share of messages that carry one of `keywords`.
    pub keyword_ratio: f64,
    pub keywords: Vec<String>,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 1,
            services: 12,
            users: 1_000,
            error_ratio: 0.05,
            malformed_ratio: 0.0,
            late_ratio: 0.02,
            late_max_ms: 120_000,
            keyword_ratio: 0.2,
            keywords: ["timeout", "refused", "denied", "exception", "panic", "failed", "unavailable", "deadline"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// One generated payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub payload: Vec<u8>,
    /// The event time written into it (or that it would have had, for a malformed one).
    pub ts_ms: i64,
    pub malformed: bool,
}

/// A deterministic event stream: the same seed and config give the same payloads for the same clock.
pub struct LogGenerator {
    config: GeneratorConfig,
    /// Seeded, so a seed replays the same stream (within one version of rand).
    rng: SmallRng,
    /// Users 1..=users with weight 1/k^1.1.
    users: Zipf<f64>,
    service_names: Vec<String>,
    produced: u64,
}

const REGIONS: [&str; 4] = ["eu-west-1", "us-east-1", "ap-south-1", "sa-east-1"];
const SERVICE_STEMS: [&str; 12] = [
    "checkout",
    "payments",
    "search",
    "auth",
    "catalog",
    "cart",
    "shipping",
    "ledger",
    "notify",
    "profile",
    "gateway",
    "inventory",
];
const INFO_MESSAGES: [&str; 6] = [
    "GET /api/v1/orders/{n} 200 in {ms}ms",
    "cache hit for key sku:{n}",
    "user {user} signed in from {region}",
    "processed batch {n} with {ms} items",
    "POST /api/v1/cart/{n}/items 201 in {ms}ms",
    "scheduled job reconcile_{n} finished",
];
const ERROR_MESSAGES: [&str; 6] = [
    "upstream {kw} after {ms}ms calling {svc}",
    "connection to db-{n}:5432 {kw}",
    "payment {n} {kw}: card declined by issuer",
    "unhandled {kw} in worker {n}: index out of range",
    "request {n} {kw} for user {user}",
    "grpc call {svc}/Get {kw}",
];

impl LogGenerator {
    pub fn new(config: GeneratorConfig) -> LogGenerator {
        let users = Zipf::new(config.users.max(1) as f64, 1.1).expect("n ≥ 1 and s > 0");
        let service_names = (0..config.services.max(1))
            .map(|i| {
                let stem = SERVICE_STEMS[i % SERVICE_STEMS.len()];
                if i < SERVICE_STEMS.len() {
                    stem.to_owned()
                } else {
                    format!("{stem}-{}", i / SERVICE_STEMS.len())
                }
            })
            .collect();
        let rng = SmallRng::seed_from_u64(config.seed);
        LogGenerator { config, rng, users, service_names, produced: 0 }
    }

    /// How many payloads so far.
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// The next payload, stamped relative to `now_ms`.
    pub fn next(&mut self, now_ms: i64) -> Generated {
        let i = self.produced;
        self.produced += 1;
        // Exactly floor(n × ratio) of the first n payloads are malformed.
        let ratio = self.config.malformed_ratio;
        let malformed = ((i + 1) as f64 * ratio).floor() > (i as f64 * ratio).floor();
        let late = self.chance(self.config.late_ratio);
        let ts_ms = if late { now_ms - 1 - self.rng.random_range(0..self.config.late_max_ms.max(1)) } else { now_ms };
        if malformed {
            return Generated { payload: self.malformed(i, ts_ms), ts_ms, malformed: true };
        }
        let service = self.service_names[self.rng.random_range(0..self.service_names.len())].clone();
        let user = self.zipf_user();
        let is_error = self.chance(self.config.error_ratio);
        let level = if is_error {
            if self.chance(0.1) {
                "fatal"
            } else {
                "error"
            }
        } else {
            ["debug", "info", "info", "info", "info", "warn"][self.rng.random_range(0..6)]
        };
        let with_keyword = is_error || self.chance(self.config.keyword_ratio);
        let template = if with_keyword {
            ERROR_MESSAGES[self.rng.random_range(0..ERROR_MESSAGES.len())]
        } else {
            INFO_MESSAGES[self.rng.random_range(0..INFO_MESSAGES.len())]
        };
        let keyword = if self.config.keywords.is_empty() {
            "failed".to_owned()
        } else {
            self.config.keywords[self.rng.random_range(0..self.config.keywords.len())].clone()
        };
        let other = self.service_names[self.rng.random_range(0..self.service_names.len())].clone();
        let message = template
            .replace("{n}", &self.rng.random_range(0..100_000u32).to_string())
            .replace("{ms}", &self.rng.random_range(1..=5_000u32).to_string())
            .replace("{user}", &user)
            .replace("{svc}", &other)
            .replace("{kw}", &keyword)
            .replace("{region}", REGIONS[self.rng.random_range(0..REGIONS.len())]);
        let mut event = json!({
            "ts": ts_ms,
            "level": level,
            "service": service,
            "message": message,
            "request_id": format!("{:016x}", self.rng.random::<u64>()),
            "trace_id": format!("{:016x}{:016x}", self.rng.random::<u64>(), self.rng.random::<u64>()),
            "host": format!("{}-{}", service, self.rng.random_range(0..8u32)),
            "region": REGIONS[self.rng.random_range(0..REGIONS.len())],
            "seq": i,
        });
        if !user.is_empty() {
            event["user_id"] = json!(user);
        }
        Generated { payload: event.to_string().into_bytes(), ts_ms, malformed: false }
    }

    /// Users 1..=n with weight 1/k^1.1; one event in ten has no user.
    fn zipf_user(&mut self) -> String {
        if self.chance(0.1) {
            return String::new();
        }
        let k = self.users.sample(&mut self.rng) as u64;
        format!("user-{k}")
    }

    /// True with probability `p` (any `p`: at or below 0 never, at or above 1 always).
    fn chance(&mut self, p: f64) -> bool {
        self.rng.random::<f64>() < p
    }

    fn malformed(&mut self, i: u64, ts_ms: i64) -> Vec<u8> {
        match i % 5 {
            0 => b"{\"level\":\"info\",\"service\":\"trunc".to_vec(),
            1 => format!(r#"{{"ts":{ts_ms},"level":"loud","service":"gen","message":"bad level {i}"}}"#).into_bytes(),
            2 => format!(r#"{{"ts":{ts_ms},"level":"info","service":"gen","text_is_missing":{i}}}"#).into_bytes(),
            3 => vec![0xff, 0xfe, 0xfd, b'{'],
            _ => format!("[{i}]").into_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Fallback, LogEvent, ParseRules};
    use chrono::{TimeZone, Utc};

    const NOW: i64 = 1_795_000_000_000;

    #[test]
    fn output_parses_except_the_exact_malformed_share() {
        let config = GeneratorConfig { malformed_ratio: 0.013, ..GeneratorConfig::default() };
        let mut g = LogGenerator::new(config);
        let now = Utc.timestamp_millis_opt(NOW).unwrap();
        let (mut bad, mut flagged) = (0, 0);
        for _ in 0..10_000 {
            let out = g.next(NOW);
            let parsed = LogEvent::parse(&out.payload, Fallback::kafka(None, "t"), now, &ParseRules::default());
            assert_eq!(parsed.is_err(), out.malformed, "{:?}", String::from_utf8_lossy(&out.payload));
            bad += usize::from(parsed.is_err());
            flagged += usize::from(out.malformed);
        }
        assert_eq!(bad, 130);
        assert_eq!(flagged, 130);
    }

    #[test]
    fn the_seed_makes_it_reproducible() {
        let run = |seed| {
            let mut g = LogGenerator::new(GeneratorConfig { seed, ..GeneratorConfig::default() });
            (0..500).map(|_| g.next(NOW).payload).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn errors_users_and_lateness_follow_the_config() {
        let config = GeneratorConfig { error_ratio: 0.2, late_ratio: 0.1, users: 100, ..GeneratorConfig::default() };
        let mut g = LogGenerator::new(config);
        let now = Utc.timestamp_millis_opt(NOW).unwrap();
        let (mut errors, mut late, mut user1, mut with_user) = (0, 0, 0, 0);
        let n = 20_000;
        for _ in 0..n {
            let out = g.next(NOW);
            let e = LogEvent::parse(&out.payload, Fallback::kafka(None, "t"), now, &ParseRules::default()).unwrap();
            errors += usize::from(e.level.is_error());
            late += usize::from(out.ts_ms < NOW);
            if let Some(u) = &e.user_id {
                with_user += 1;
                user1 += usize::from(u.as_str() == "user-1");
            }
            assert!(e.ts.timestamp_millis() <= NOW && e.ts.timestamp_millis() >= NOW - 120_000);
        }
        let share = |x: usize| x as f64 / n as f64;
        assert!((share(errors) - 0.2).abs() < 0.02, "errors {}", share(errors));
        assert!((share(late) - 0.1).abs() < 0.02, "late {}", share(late));
        // Zipf: the first user is by far the most frequent (≈ 1/H(100, 1.1) ≈ 23 %).
        let top = user1 as f64 / with_user as f64;
        assert!(top > 0.15 && top < 0.30, "user-1 share {top}");
    }
}

#[cfg(test)]
mod parse_speed {
    use super::*;
    use crate::domain::{Fallback, LogEvent, ParseRules};
    use chrono::{TimeZone, Utc};

    /// `cargo test -p actors --lib parse_speed -- --ignored --nocapture`: events/s of the resolution
    /// on the generator's (the bench's) events.
    #[test]
    #[ignore]
    fn events_per_second_on_generator_events() {
        let now_ms = 1_795_000_000_000;
        let now = Utc.timestamp_millis_opt(now_ms).unwrap();
        let mut g = LogGenerator::new(GeneratorConfig::default());
        let payloads: Vec<Vec<u8>> = (0..200_000).map(|_| g.next(now_ms).payload).collect();
        let rules = ParseRules::default();
        let mut best = f64::MAX;
        for _ in 0..3 {
            let started = std::time::Instant::now();
            let ok = payloads
                .iter()
                .filter(|p| LogEvent::parse(p, Fallback::kafka(Some(now), "logs"), now, &rules).is_ok())
                .count();
            assert_eq!(ok, payloads.len());
            best = best.min(started.elapsed().as_secs_f64());
        }
        eprintln!("parse: {:.0} events/s", payloads.len() as f64 / best);
    }

    /// The same on the Loghub samples as plain-text lines (`LOGHUB_DIR`, default the shared copy).
    #[test]
    #[ignore]
    fn events_per_second_on_loghub_text_lines() {
        let dir = std::env::var("LOGHUB_DIR").unwrap_or_else(|_| "/work/shared/data/loghub".into());
        let mut lines: Vec<Vec<u8>> = Vec::new();
        for system in ["Apache", "HDFS", "Hadoop", "Zookeeper", "Spark", "Android", "OpenSSH", "Linux"] {
            let raw = std::fs::read(format!("{dir}/{system}/{system}_2k.log")).expect("a Loghub sample");
            lines.extend(raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec));
        }
        let now = Utc::now();
        let rules = ParseRules::default();
        let mut best = f64::MAX;
        for _ in 0..5 {
            let started = std::time::Instant::now();
            let ok = lines
                .iter()
                .filter(|l| LogEvent::parse(l, Fallback::kafka(Some(now), "logs"), now, &rules).is_ok())
                .count();
            assert_eq!(ok, lines.len());
            best = best.min(started.elapsed().as_secs_f64());
        }
        eprintln!("parse loghub text: {:.0} events/s", lines.len() as f64 / best);
    }
}
