//! The ground-truth stats suite, one function run on each backend: every window, `at`, service,
//! keyword and top list, from every source the backend has, equals the answer computed here from the
//! events sent, before and after a restart.
//!
//! - Stack: Kafka + PostgreSQL + Redis, events produced to Kafka; sources memory, redis, postgres.
//! - Embedded: one SQLite file in a temporary directory, no Kafka and no Redis, events sent by
//!   POST /ingest (each 202 means committed); sources memory, sqlite.
//!
//! The events are generated ones (every timestamp shape, Unicode services and words) plus the real
//! Loghub samples nobody here wrote (`../shared/data/loghub`), each line sent with the level Loghub's
//! hand-checked CSV gives it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::api::{spawn_role, App};
use crate::embedded::{spawn_embedded, EmbeddedDir};
use crate::helpers::*;
use crate::ingest::{dataset, IngestEnv};

pub const TRACKED: [&str; 3] = ["timeout", "refused", "panic"];

/// What the test sent, in the shape of the answers.
pub struct Truth {
    /// (second, service, is_error, tokens)
    pub events: Vec<(i64, String, bool, Vec<String>)>,
}

impl Truth {
    pub fn of(data: &crate::ingest::Dataset) -> Truth {
        let events = data
            .events
            .values()
            .map(|e| (e.ts.timestamp(), e.service.clone(), e.level >= 4, actors::domain::tokenize(&e.message)))
            .collect();
        Truth { events }
    }

    fn in_range<'a>(
        &'a self,
        to: i64,
        window: i64,
        service: Option<&'a str>,
    ) -> impl Iterator<Item = &'a (i64, String, bool, Vec<String>)> + 'a {
        self.events.iter().filter(move |e| e.0 >= to - window && e.0 < to && service.is_none_or(|s| s == e.1))
    }

    pub fn errors(&self, to: i64, window: i64, service: Option<&str>) -> Value {
        let mut per: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for e in self.in_range(to, window, service) {
            let entry = per.entry(&e.1).or_default();
            entry.0 += 1;
            entry.1 += u64::from(e.2);
        }
        // As every source lists them: most errors first, then by name.
        let mut ranked: Vec<_> = per.iter().collect();
        ranked.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then_with(|| a.0.cmp(b.0)));
        let by_service: Vec<Value> =
            ranked.iter().map(|(s, (t, e))| json!({"service": s, "total": t, "errors": e})).collect();
        json!({
            "total": per.values().map(|v| v.0).sum::<u64>(),
            "errors": per.values().map(|v| v.1).sum::<u64>(),
            "by_service": by_service,
        })
    }

    pub fn keyword(&self, to: i64, window: i64, keyword: &str, service: Option<&str>) -> u64 {
        self.in_range(to, window, service).filter(|e| e.3.iter().any(|t| t == keyword)).count() as u64
    }
}

pub fn pick(answer: &Value, fields: &[&str]) -> Value {
    Value::Object(fields.iter().map(|f| (f.to_string(), answer[*f].clone())).collect())
}

/// The services every grid asks about besides "all": generated ones and a Loghub one.
pub const GRID_SERVICES: [Option<&str>; 4] = [None, Some("payments"), Some("认证服务"), Some("hadoop")];

/// Asks every source for the grid of windows × `at` × services × keywords and compares with the truth.
pub async fn assert_grid(port: u16, truth: &Truth, sources: &[&str], at_values: &[i64], services: &[Option<&str>]) {
    for &at in at_values {
        for window in [("10s", 10), ("1m", 60), ("5m", 300), ("30m", 1_800)] {
            for &service in services {
                let want = truth.errors(at, window.1, service);
                let service_param = service.map(|s| format!("&service={}", urlencode(s))).unwrap_or_default();
                for source in sources {
                    let path = format!("/stats/errors?window={}&at={at}{service_param}&source={source}", window.0);
                    let (status, answer) = get_json(port, &path).await;
                    assert_eq!(status, 200, "{path}: {answer}");
                    assert_eq!(answer["source"], *source, "{path}");
                    assert_eq!(pick(&answer, &["total", "errors", "by_service"]), want, "{path}");
                }
                for keyword in TRACKED {
                    let want = truth.keyword(at, window.1, keyword, service);
                    for source in sources {
                        let path = format!(
                            "/stats/keywords?q={keyword}&window={}&at={at}{service_param}&source={source}",
                            window.0
                        );
                        let (status, answer) = get_json(port, &path).await;
                        assert_eq!(status, 200, "{path}: {answer}");
                        assert_eq!(answer["source"], *source, "{path}");
                        assert_eq!(answer["count"], want, "{path}");
                    }
                }
            }
            let mut top: Vec<(u64, &str)> =
                TRACKED.iter().map(|k| (truth.keyword(at, window.1, k, None), *k)).filter(|c| c.0 > 0).collect();
            top.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
            let want: Vec<Value> = top.iter().take(2).map(|(c, k)| json!({"keyword": k, "count": c})).collect();
            for source in sources {
                let path = format!("/stats/keywords/top?window={}&at={at}&limit=2&source={source}", window.0);
                let (status, answer) = get_json(port, &path).await;
                assert_eq!(status, 200, "{path}: {answer}");
                assert_eq!(answer["keywords"], json!(want), "{path}");
            }
        }
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One event to send: where Kafka would put it, and its JSON (always with its own `ts`, so that
/// the HTTP path, where a missing `ts` means the receive time, stores the same time as Kafka's).
struct Sent {
    partition: i32,
    timestamp_ms: i64,
    payload: Value,
}

/// The generated dataset plus the Loghub samples with levels, and the truth of all of them.
fn events(seed: u64, n: usize, partitions: i32) -> (Vec<Sent>, Truth) {
    let data = dataset(seed, n, partitions, 0);
    let mut truth = Truth::of(&data);
    let mut sent: Vec<Sent> = data
        .messages
        .iter()
        .map(|m| {
            let mut payload: Value = serde_json::from_slice(&m.payload).expect("generated payloads are JSON");
            if payload.get("ts").is_none() {
                payload["ts"] = json!(m.timestamp_ms);
            }
            Sent { partition: m.partition, timestamp_ms: m.timestamp_ms, payload }
        })
        .collect();
    let mut rng = Rng::new(seed ^ 0x10_6b0b);
    let now_ms = chrono::Utc::now().timestamp_millis();
    const NAMES: [&str; 6] = ["trace", "debug", "info", "warn", "error", "fatal"];
    for sample in crate::loghub::SYSTEMS.into_iter().map(crate::loghub::load) {
        let Some(levels) = &sample.levels else { continue };
        let service = sample.system.to_lowercase();
        for (i, (line, level)) in sample.lines.iter().zip(levels).enumerate() {
            // Within the last 30 minutes: inside the memory horizon even on a slow run.
            let ts_ms = now_ms - rng.below(1_800_000) as i64;
            let payload = json!({"ts": ts_ms, "level": NAMES[level.as_i16() as usize], "service": service,
                                 "message": line, "eid": format!("loghub-{}-{i}", sample.system)});
            truth.events.push((
                ts_ms.div_euclid(1000),
                service.clone(),
                level.as_i16() >= 4,
                actors::domain::tokenize(line),
            ));
            sent.push(Sent { partition: rng.below(partitions as u64) as i32, timestamp_ms: ts_ms, payload });
        }
    }
    (sent, truth)
}

/// The backend a run of the suite stands on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backend {
    Stack,
    Embedded,
}

/// One backend's resources, its `run` processes and how events reach it.
struct Deployment {
    backend: Backend,
    stack: Option<(IngestEnv, String)>,
    dir: Option<EmbeddedDir>,
}

impl Deployment {
    async fn create(backend: Backend, partitions: u32) -> Deployment {
        match backend {
            Backend::Stack => Deployment {
                backend,
                stack: Some((IngestEnv::create(partitions).await, unique("la_truth"))),
                dir: None,
            },
            Backend::Embedded => Deployment { backend, stack: None, dir: Some(EmbeddedDir::create()) },
        }
    }

    fn spawn(&self) -> App {
        match (&self.stack, &self.dir) {
            (Some((env, prefix)), _) => spawn_role(env, "run", &stack().redis_url, prefix),
            (None, Some(dir)) => spawn_embedded(dir, &[]),
            _ => unreachable!(),
        }
    }

    /// The sources a forced `source=` may name, fastest first.
    fn sources(&self) -> &'static [&'static str] {
        match self.backend {
            Backend::Stack => &["memory", "redis", "postgres"],
            Backend::Embedded => &["memory", "sqlite"],
        }
    }

    /// The authoritative store's source name.
    fn store(&self) -> &'static str {
        match self.backend {
            Backend::Stack => "postgres",
            Backend::Embedded => "sqlite",
        }
    }

    /// Sends every event and returns once every one is stored.
    async fn feed(&self, app: &App, sent: &[Sent]) {
        match (&self.stack, &self.dir) {
            (Some((env, _)), _) => {
                let messages: Vec<Outgoing> = sent
                    .iter()
                    .map(|s| Outgoing {
                        partition: s.partition,
                        timestamp_ms: s.timestamp_ms,
                        payload: s.payload.to_string().into_bytes(),
                    })
                    .collect();
                produce_all(&producer(&env.brokers), &env.topic, &messages).await;
                let client = env.db.client().await;
                env.wait_stored(&client, messages.len() as i64, Duration::from_secs(120)).await;
            }
            (None, Some(dir)) => {
                app.wait_listening().await;
                for chunk in sent.chunks(2_000) {
                    let body: String = chunk.iter().map(|s| format!("{}\n", s.payload)).collect();
                    let (status, raw) =
                        http(app.port, "POST", "/ingest", body.as_bytes(), &[]).await.expect("POST /ingest answered");
                    let answer: Value = serde_json::from_slice(&raw).unwrap_or_else(|_| {
                        panic!("POST /ingest {status}: {}\n{}", String::from_utf8_lossy(&raw), app.process.log_tail())
                    });
                    assert_eq!(status, 202, "{answer}");
                    assert_eq!(
                        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
                        (Some(chunk.len() as u64), Some(0)),
                        "{answer}"
                    );
                }
                // A 202 means committed: the rows are in the file already.
                let stored = crate::embedded::count(&dir.db_path(), "SELECT count(*) AS n FROM logs");
                assert_eq!(stored, sent.len() as i64, "every acknowledged line is in SQLite");
            }
            _ => unreachable!(),
        }
    }

    async fn finish(self) {
        if let Some((env, _)) = self.stack {
            env.db.drop_db().await;
        }
    }
}

/// Waits until `source` answers the 30-minute total of the truth at `at`.
async fn wait_caught_up(port: u16, source: &str, at: i64, want: Value) {
    eventually(&format!("{source} caught up"), Duration::from_secs(30), || {
        let want = want.clone();
        async move {
            let (_, a) = get_json(port, &format!("/stats/errors?window=30m&at={at}&source={source}")).await;
            (a["total"] == want).then_some(())
        }
    })
    .await;
}

/// The suite: the grid from every source, an untracked keyword from the store (memory says why it
/// cannot), and after a graceful restart the first memory answer exact.
pub async fn ground_truth_on(backend: Backend) {
    let deployment = Deployment::create(backend, 3).await;
    let (sent, truth) = events(41, 20_000, 3);
    let generated_at = chrono::Utc::now().timestamp();
    let mut app = deployment.spawn();
    deployment.feed(&app, &sent).await;
    app.wait_memory_ready().await;
    // Windows end at `generated_at + 1` and reach back at most 30 minutes: inside the horizon even
    // if the test runs slowly.
    let at = generated_at + 1;
    let total = truth.errors(at, 1_800, None)["total"].clone();
    // Stored is not yet folded in everywhere (Redis is fed after memory): wait for each cache.
    for source in deployment.sources().iter().filter(|s| **s != deployment.store()) {
        wait_caught_up(app.port, source, at, total.clone()).await;
    }
    let at_values = [at, generated_at - 300, generated_at - 1_500];
    assert_grid(app.port, &truth, deployment.sources(), &at_values, &GRID_SERVICES).await;

    // An untracked keyword is counted by the store; memory says it cannot, with a reason.
    let (status, answer) = get_json(app.port, &format!("/stats/keywords?q=user&window=30m&at={at}")).await;
    assert_eq!((status, answer["source"].clone()), (200, json!(deployment.store())), "{answer}");
    assert_eq!(answer["count"], truth.keyword(at, 1_800, "user", None));
    let (status, answer) =
        get_json(app.port, &format!("/stats/keywords?q=user&window=30m&at={at}&source=memory")).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"], "source_unavailable");

    // Restart: the first memory answer after ready is already exact.
    let status = app.process.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", app.process.log_tail());
    let app = deployment.spawn();
    app.wait_memory_ready().await;
    let (status, answer) = get_json(app.port, &format!("/stats/errors?window=30m&at={at}&source=memory")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(pick(&answer, &["total", "errors", "by_service"]), truth.errors(at, 1_800, None));
    assert!(answer["freshness"]["watermark"].is_string(), "{answer}");
    drop(app);
    deployment.finish().await;
}

#[tokio::test]
async fn stack_memory_redis_and_postgres_all_give_the_exact_answer_even_after_a_restart() {
    ground_truth_on(Backend::Stack).await;
}

#[tokio::test]
async fn embedded_memory_and_sqlite_give_the_exact_answer_even_after_a_restart() {
    ground_truth_on(Backend::Embedded).await;
}
