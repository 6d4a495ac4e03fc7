//! The daily summary, the scheduler, partition maintenance and dead-letter replay against the real
//! PostgreSQL (and Kafka for replay): every figure is computed here from the events the test wrote.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::Actor;
use actors::domain::{is_stop_word, tokenize};
use actors::ports::Clock;
use actors::schedule::{ScheduleConfig, SchedulerActor, SummaryStats, Tick};
use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use futures::pin_mut;
use serde_json::{json, Value};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use log_analyzer::db::daily_jobs::PgDailyJobs;
use log_analyzer::db::summary::day_start;
use log_analyzer::telemetry;

use crate::helpers::*;

/// One event as written to `logs`.
#[derive(Debug, Clone)]
pub(crate) struct Ev {
    pub(crate) ts: DateTime<Utc>,
    pub(crate) level: i16,
    pub(crate) service: String,
    pub(crate) user_id: Option<String>,
    pub(crate) message: String,
}

const SERVICES: [&str; 5] = ["checkout", "payments", "search-api", "Zeta", "édition"];
const WORDS: [&str; 16] = [
    "timeout",
    "refused",
    "the",
    "to",
    "of",
    "db",
    "upstream",
    "Überlauf",
    "接続",
    "panic",
    "deadline_exceeded",
    "a",
    "user",
    "x9",
    "and",
    "cache",
];

/// `n` events of `day`, plus a few just outside it (which the summary must ignore).
pub(crate) fn generate(seed: u64, day: NaiveDate, n: usize) -> Vec<Ev> {
    let mut rng = Rng::new(seed);
    let start = day_start(day).timestamp_micros();
    let mut events = Vec::with_capacity(n + 4);
    for i in 0..n {
        let ts = match i {
            0 => start,                      // the first microsecond of the day counts
            1 => start + 86_400_000_000 - 1, // and the last
            _ => start + rng.below(86_400_000_000) as i64,
        };
        let words: Vec<&str> = (0..1 + rng.below(8)).map(|_| WORDS[rng.below(WORDS.len() as u64) as usize]).collect();
        // A request id per event: far more distinct tokens than keyword_daily keeps (its cut-off is tested).
        let message = format!("{} req{}", words.join(" "), rng.below(5_000));
        events.push(Ev {
            ts: Utc.timestamp_micros(ts).unwrap(),
            level: rng.below(6) as i16,
            service: SERVICES[rng.below(SERVICES.len() as u64) as usize].to_owned(),
            user_id: (rng.below(10) != 0).then(|| format!("user-{}", rng.below(40))),
            message,
        });
    }
    // A user with one event: every token seen once, ties broken by keyword.
    events.push(Ev {
        ts: day_start(day) + chrono::Duration::hours(5),
        level: 3,
        service: "lonely".into(),
        user_id: Some("lonely".into()),
        message: "zeta beta alpha req1 gamma the to 1 22".into(),
    });
    for (k, ts) in
        [day_start(day) - chrono::Duration::microseconds(1), day_start(day + Days::new(1))].into_iter().enumerate()
    {
        events.push(Ev {
            ts,
            level: 4,
            service: "outside".into(),
            user_id: Some(format!("outsider-{k}")),
            message: "timeout".into(),
        });
    }
    events
}

async fn migrated(days: &[NaiveDate]) -> TestDatabase {
    let db = TestDatabase::create().await;
    log_analyzer::db::migrate::run_migrations(&db.url).await.expect("migrations");
    let client = db.client().await;
    for day in days {
        client.execute("SELECT ensure_logs_partition($1)", &[day]).await.expect("partition");
    }
    db
}

/// Binary COPY of the events, like the ingest path.
async fn insert(client: &tokio_postgres::Client, events: &[Ev], first_offset: i64) {
    let sink = client
        .copy_in(
            "COPY logs (ts, level, service, user_id, message, tokens, topic, \"partition\", \"offset\") \
             FROM STDIN (FORMAT binary)",
        )
        .await
        .unwrap();
    let types = [
        Type::TIMESTAMPTZ,
        Type::INT2,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT_ARRAY,
        Type::TEXT,
        Type::INT4,
        Type::INT8,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for (i, e) in events.iter().enumerate() {
        let tokens = tokenize(&e.message);
        let offset = first_offset + i as i64;
        let row: [&(dyn ToSql + Sync); 9] =
            [&e.ts, &e.level, &e.service, &e.user_id, &e.message, &tokens, &"t", &0_i32, &offset];
        writer.as_mut().write(&row).await.unwrap();
    }
    writer.finish().await.unwrap();
}

/// Dead letters at given times (the summary counts those of its day by reason).
async fn insert_rejects(client: &tokio_postgres::Client, rejects: &[(&str, DateTime<Utc>)]) {
    for (reason, at) in rejects {
        client
            .execute(
                "INSERT INTO log_rejects (source, reason, detail, raw, raw_len, rejected_at) \
                 VALUES ('http', $1, 'test', '\\x00'::bytea, 1, $2)",
                &[reason, at],
            )
            .await
            .unwrap();
    }
}

pub(crate) type UserRow = (String, i64, i64, i64, f64, Vec<String>, DateTime<Utc>, DateTime<Utc>, Value);

/// What the summary of `day` must be, computed from the events alone.
pub(crate) fn expected(events: &[Ev], day: NaiveDate) -> (Vec<UserRow>, Vec<(String, i64)>) {
    #[derive(Default)]
    struct Acc {
        total: i64,
        errors: i64,
        warnings: i64,
        services: BTreeSet<String>,
        first: Option<DateTime<Utc>>,
        last: Option<DateTime<Utc>>,
        tokens: BTreeMap<String, i64>,
    }
    let (from, to) = (day_start(day), day_start(day + Days::new(1)));
    let mut users: BTreeMap<String, Acc> = BTreeMap::new();
    let mut day_tokens: BTreeMap<String, i64> = BTreeMap::new();
    for e in events.iter().filter(|e| e.ts >= from && e.ts < to) {
        let a = users.entry(e.user_id.clone().unwrap_or_else(|| "(none)".into())).or_default();
        a.total += 1;
        a.errors += i64::from(e.level >= 4);
        a.warnings += i64::from(e.level == 3);
        a.services.insert(e.service.clone());
        a.first = Some(a.first.map_or(e.ts, |f| f.min(e.ts)));
        a.last = Some(a.last.map_or(e.ts, |l| l.max(e.ts)));
        for t in tokenize(&e.message).into_iter().filter(|t| !is_stop_word(t)) {
            *a.tokens.entry(t.clone()).or_default() += 1;
            *day_tokens.entry(t).or_default() += 1;
        }
    }
    let top = |counts: &BTreeMap<String, i64>, n: usize| -> Vec<(String, i64)> {
        let mut v: Vec<(String, i64)> = counts.iter().map(|(k, c)| (k.clone(), *c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.as_bytes().cmp(b.0.as_bytes())));
        v.truncate(n);
        v
    };
    let rows = users
        .into_iter()
        .map(|(user, a)| {
            let keywords: Vec<Value> =
                top(&a.tokens, 10).into_iter().map(|(k, c)| json!({"keyword": k, "count": c})).collect();
            (
                user,
                a.total,
                a.errors,
                a.warnings,
                a.errors as f64 / a.total as f64,
                a.services.into_iter().collect(),
                a.first.unwrap(),
                a.last.unwrap(),
                Value::Array(keywords),
            )
        })
        .collect();
    let mut keywords = top(&day_tokens, 1_000);
    keywords.sort_by(|a, b| a.0.cmp(&b.0));
    (rows, keywords)
}

/// What the tables hold for `day`.
async fn stored(client: &tokio_postgres::Client, day: NaiveDate) -> (Vec<UserRow>, Vec<(String, i64)>) {
    let users = client
        .query(
            "SELECT user_id, total, errors, warnings, error_rate, services, first_seen, last_seen, top_keywords \
             FROM user_log_summary WHERE day = $1 ORDER BY user_id",
            &[&day],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6), r.get(7), r.get(8)))
        .collect();
    let keywords = client
        .query("SELECT keyword, count FROM keyword_daily WHERE day = $1 ORDER BY keyword", &[&day])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    (users, keywords)
}

/// `log-analyzer summary --date day` as a child process, to its exit.
fn run_summary(db: &TestDatabase, day: NaiveDate) -> ChildProcess {
    ChildProcess::spawn(&["summary", "--date", &day.to_string()], &[("DATABASE_URL", &db.url)])
}

pub(crate) async fn wait_exit(child: &mut ChildProcess, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "summary did not finish in {timeout:?}: {}", child.log_tail());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `job_runs` of the summary job for `day`: (status, rows, invalid_rows).
async fn runs(client: &tokio_postgres::Client, day: NaiveDate) -> Vec<(String, Option<i64>, Value)> {
    client
        .query(
            "SELECT status, rows, invalid_rows FROM job_runs WHERE job = 'summary' AND day = $1 ORDER BY id",
            &[&day],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

pub(crate) fn test_day() -> NaiveDate {
    Utc::now().date_naive() - Days::new(3)
}

#[tokio::test]
async fn every_summary_column_matches_the_events_and_a_rerun_changes_nothing() {
    let day = test_day();
    let db = migrated(&[day - Days::new(1), day, day + Days::new(1)]).await;
    let client = db.client().await;
    let events = generate(5, day, 6_000);
    insert(&client, &events, 0).await;
    let noon = day_start(day) + chrono::Duration::hours(12);
    insert_rejects(
        &client,
        &[("not_json", noon), ("not_json", noon), ("too_large", noon), ("bad_level", noon - chrono::Duration::days(1))],
    )
    .await;

    let mut first = run_summary(&db, day);
    assert!(wait_exit(&mut first, Duration::from_secs(60)).await.success(), "{}", first.log_tail());
    let (users, keywords) = stored(&client, day).await;
    let (want_users, want_keywords) = expected(&events, day);
    assert_eq!(users.len(), want_users.len());
    for (got, want) in users.iter().zip(&want_users) {
        assert_eq!(got, want, "user {}", want.0);
    }
    assert!(users.iter().any(|u| u.0 == "(none)"), "events without user_id are summarized under (none)");
    assert_eq!(keywords.len(), 1_000, "the day's top 1,000 keywords");
    assert_eq!(keywords, want_keywords);
    assert_eq!(
        runs(&client, day).await,
        vec![("ok".to_string(), Some(want_users.len() as i64), json!({"not_json": 2, "too_large": 1}))]
    );
    let log = std::fs::read_to_string(&first.log_path).unwrap();
    assert!(
        log.lines().any(|l| l.contains("day summarized") && l.contains(r#"{\"not_json\":2,\"too_large\":1}"#)),
        "one structured line with the invalid rows by reason: {log}"
    );

    let mut second = run_summary(&db, day);
    assert!(wait_exit(&mut second, Duration::from_secs(60)).await.success(), "{}", second.log_tail());
    assert_eq!(stored(&client, day).await, (users, keywords), "a rerun leaves the tables identical");
    assert_eq!(runs(&client, day).await.len(), 2);
    db.drop_db().await;
}

#[tokio::test]
async fn a_summary_killed_mid_job_leaves_the_previous_state_and_a_rerun_completes() {
    let day = test_day();
    let db = migrated(&[day - Days::new(1), day, day + Days::new(1)]).await;
    let client = db.client().await;
    let mut events = generate(9, day, 2_000);
    insert(&client, &events, 0).await;
    let mut first = run_summary(&db, day);
    assert!(wait_exit(&mut first, Duration::from_secs(60)).await.success(), "{}", first.log_tail());
    let before = stored(&client, day).await;
    assert_eq!(before, expected(&events, day));

    // Late events arrive; the next run would change the day.
    let more = generate(10, day, 500);
    insert(&client, &more, 1_000_000).await;
    events.extend(more);

    // Hold keyword_daily so the run stops after replacing user_log_summary in its transaction.
    let mut blocker = db.client().await;
    let hold = blocker.transaction().await.unwrap();
    hold.batch_execute("LOCK TABLE keyword_daily IN SHARE MODE").await.unwrap();
    let mut victim = run_summary(&db, day);
    eventually("the summary to wait on keyword_daily", Duration::from_secs(60), || async {
        let waiting: i64 = client
            .query_one("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'keyword_daily'::regclass", &[])
            .await
            .unwrap()
            .get(0);
        (waiting > 0).then_some(())
    })
    .await;
    victim.kill9();
    hold.rollback().await.unwrap();

    assert_eq!(stored(&client, day).await, before, "the killed run changed nothing");
    let statuses: Vec<String> = runs(&client, day).await.into_iter().map(|r| r.0).collect();
    assert_eq!(statuses, vec!["ok", "running"], "the killed run never finished");

    let mut rerun = run_summary(&db, day);
    assert!(wait_exit(&mut rerun, Duration::from_secs(60)).await.success(), "{}", rerun.log_tail());
    assert_eq!(stored(&client, day).await, expected(&events, day));
    db.drop_db().await;
}

/// A clock the test moves by hand.
struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    fn set(&self, t: DateTime<Utc>) {
        *self.0.lock().unwrap() = t;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

fn scheduler(db: &TestDatabase, clock: &Arc<ManualClock>) -> (actix::Arbiter, actix::Addr<SchedulerActor>) {
    let jobs = Arc::new(PgDailyJobs::new(db.url.clone(), &telemetry::discard()));
    let config = ScheduleConfig {
        summary_at: NaiveTime::from_hms_opt(0, 10, 0).unwrap(),
        retention_days: 30,
        partitions_ahead_days: 7,
        // The test drives it with Tick messages.
        tick: Duration::from_secs(3_600),
        retry_after: Duration::ZERO,
    };
    let clock = clock.clone();
    let arbiter = actix::Arbiter::new();
    let addr = SchedulerActor::start_in_arbiter(&arbiter.handle(), move |_| {
        SchedulerActor::new(jobs, clock, config, Arc::new(SummaryStats::default()), telemetry::discard())
    });
    (arbiter, addr)
}

async fn partitions(client: &tokio_postgres::Client) -> BTreeSet<NaiveDate> {
    client
        .query("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'logs'::regclass", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| NaiveDate::parse_from_str(r.get::<_, &str>(0).trim_start_matches("logs_"), "%Y%m%d").unwrap())
        .collect()
}

async fn ok_days(client: &tokio_postgres::Client) -> Vec<NaiveDate> {
    client
        .query("SELECT day FROM job_runs WHERE job = 'summary' AND status = 'ok' ORDER BY day, id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[actix_rt::test]
async fn two_schedulers_run_each_day_once_at_summary_at_and_a_successor_catches_up() {
    let db = migrated(&[]).await;
    let client = db.client().await;
    let d = |n: u32| NaiveDate::from_ymd_opt(2026, 6, n).unwrap();
    // Partitions from before the retention, at its edge, and inside it.
    for day in [d(1) - Days::new(40), d(10) - Days::new(31), d(10) - Days::new(30)] {
        client.execute("SELECT ensure_logs_partition($1)", &[&day]).await.unwrap();
    }
    let at = |day: NaiveDate, h: u32, m: u32| day_start(day) + chrono::Duration::minutes(i64::from(h * 60 + m));
    let clock = Arc::new(ManualClock(Mutex::new(at(d(10), 0, 9))));
    let a = scheduler(&db, &clock);
    let b = scheduler(&db, &clock);
    let (ta, tb) = (a.1.send(Tick).await.unwrap(), b.1.send(Tick).await.unwrap());
    assert!(ta.leading != tb.leading, "exactly one leads: {ta:?} {tb:?}");
    let ((leader_arbiter, leader), (_follower_arbiter, follower)) = if ta.leading { (a, b) } else { (b, a) };

    // Started at 00:09: the catch-up did the 8th only (the 9th is due at 00:10); partitions moved.
    assert_eq!(ok_days(&client).await, vec![d(8)]);
    let parts = partitions(&client).await;
    assert!((9..=17).all(|n| parts.contains(&d(n))), "yesterday to a week ahead: {parts:?}");
    assert!(!parts.contains(&(d(1) - Days::new(40))) && !parts.contains(&(d(10) - Days::new(31))), "{parts:?}");
    assert!(parts.contains(&(d(10) - Days::new(30))), "the oldest retained day stays: {parts:?}");

    clock.set(at(d(10), 0, 10));
    let (fired, idle) = (leader.send(Tick).await.unwrap(), follower.send(Tick).await.unwrap());
    assert_eq!(fired.summarized.iter().map(|r| r.day).collect::<Vec<_>>(), vec![d(9)]);
    assert!(idle.summarized.is_empty() && !idle.leading);
    assert_eq!(ok_days(&client).await, vec![d(8), d(9)], "each day once");

    // The leader goes away (its lock session ends); two nights pass; the other takes over and catches up.
    drop(leader);
    leader_arbiter.stop();
    clock.set(at(d(12), 7, 0));
    let taken = eventually("the follower to take the lead", Duration::from_secs(30), || async {
        let t = follower.send(Tick).await.unwrap();
        t.leading.then_some(t)
    })
    .await;
    assert_eq!(taken.summarized.iter().map(|r| r.day).collect::<Vec<_>>(), vec![d(10), d(11)]);
    assert_eq!(ok_days(&client).await, vec![d(8), d(9), d(10), d(11)]);
    assert!(partitions(&client).await.contains(&d(19)));
    db.drop_db().await;
}

/// Messages for the replay test: (payload, what a replay with the default rules does with it).
fn replay_messages(now: DateTime<Utc>) -> Vec<(Vec<u8>, &'static str)> {
    let ts = now.to_rfc3339();
    let event = |i: usize, len: usize| {
        let message = format!("replay {i} {}", "x".repeat(len));
        json!({"ts": ts, "level": "warn", "service": "replayed", "user_id": format!("u{i}"), "message": message})
            .to_string()
            .into_bytes()
    };
    let mut out = Vec::new();
    for i in 0..50 {
        let kind = i % 10;
        let message = match kind {
            0..=3 => (event(i, 10), "valid"),
            4..=8 => (event(i, 200), "replayed"),
            _ if i % 20 == 9 => (event(i, 5_000), "truncated"),
            _ => (format!("{{not json {i}").into_bytes(), "not_json"),
        };
        out.push(message);
    }
    out
}

async fn count_logs(client: &tokio_postgres::Client) -> i64 {
    client.query_one("SELECT count(*) FROM logs", &[]).await.unwrap().get(0)
}

async fn replay_report(env: &crate::ingest::IngestEnv) -> Value {
    let mut replay =
        ChildProcess::spawn(&["rejects", "replay"], &[("DATABASE_URL", &env.db.url), ("KAFKA_TOPIC", &env.topic)]);
    assert!(wait_exit(&mut replay, Duration::from_secs(60)).await.success(), "{}", replay.log_tail());
    let output = std::fs::read_to_string(&replay.log_path).unwrap();
    let line =
        output.lines().find(|l| l.starts_with(r#"{"replayed""#)).unwrap_or_else(|| panic!("no report: {output}"));
    serde_json::from_str(line).unwrap()
}

#[tokio::test]
async fn rejects_made_valid_by_a_parser_change_are_replayed_exactly_once() {
    let env = crate::ingest::IngestEnv::create(1).await;
    let client = env.db.client().await;
    let now = Utc::now();
    let sent = replay_messages(now);
    let outgoing: Vec<Outgoing> = sent
        .iter()
        .map(|(payload, _)| Outgoing { partition: 0, timestamp_ms: now.timestamp_millis(), payload: payload.clone() })
        .collect();
    // First the messages meet a stricter parser: anything over 100 bytes of message is too_large.
    let mut ingest = ChildProcess::spawn(
        &["ingest"],
        &[
            ("DATABASE_URL", &env.db.url),
            ("KAFKA_BROKERS", &env.brokers),
            ("KAFKA_TOPIC", &env.topic),
            ("KAFKA_GROUP", &env.group),
            ("ADMIN_ADDR", "127.0.0.1:0"),
            ("MAX_MESSAGE_BYTES", "100"),
        ],
    );
    produce_all(&producer(&env.brokers), &env.topic, &outgoing).await;
    env.wait_stored(&client, sent.len() as i64, Duration::from_secs(120)).await;
    ingest.kill9();
    let count = |kind: &str| sent.iter().filter(|(_, k)| *k == kind).count() as i64;
    assert_eq!(count_logs(&client).await, count("valid"));

    // A POST /ingest reject has no Kafka position: it is stored at partition -1, offset = its id.
    let http_payload = json!({"level": "info", "service": "http", "message": "from POST /ingest"}).to_string();
    let http_id: i64 = client
        .query_one(
            "INSERT INTO log_rejects (source, reason, detail, raw, raw_len, kafka_ts) \
             VALUES ('http', 'too_large', 'test', $1, $2, $3) RETURNING id",
            &[&http_payload.as_bytes(), &(http_payload.len() as i32), &now],
        )
        .await
        .unwrap()
        .get(0);

    let report = replay_report(&env).await;
    assert_eq!(
        report,
        json!({"replayed": count("replayed") + 1, "still_invalid": {"not_json": count("not_json")},
               "skipped": {"truncated": count("truncated")}})
    );
    assert_eq!(count_logs(&client).await, count("valid") + count("replayed") + 1);
    let http_row = client
        .query_one("SELECT topic, message FROM logs WHERE \"partition\" = -1 AND \"offset\" = $1", &[&http_id])
        .await
        .unwrap();
    assert_eq!(http_row.get::<_, String>(0), env.topic);
    assert_eq!(http_row.get::<_, String>(1), "from POST /ingest");
    // Each replayed event sits at its reject's Kafka position, with the fields it was sent with.
    let rows = client
        .query(
            "SELECT l.\"offset\", l.message, l.level, l.user_id FROM logs l JOIN log_rejects r \
             ON r.topic = l.topic AND r.\"partition\" = l.\"partition\" AND r.\"offset\" = l.\"offset\" \
             WHERE r.replayed_at IS NOT NULL ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len() as i64, count("replayed"));
    for row in rows {
        let offset: i64 = row.get(0);
        let (payload, kind) = &sent[offset as usize];
        assert_eq!(*kind, "replayed");
        let original: Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(row.get::<_, String>(1), original["message"].as_str().unwrap());
        assert_eq!(row.get::<_, i16>(2), 3);
        assert_eq!(row.get::<_, Option<String>>(3).as_deref(), original["user_id"].as_str());
    }

    let again = replay_report(&env).await;
    assert_eq!(again["replayed"], json!(0), "a second replay adds nothing: {again}");
    assert_eq!(count_logs(&client).await, count("valid") + count("replayed") + 1);

    let mut list = ChildProcess::spawn(&["rejects", "list", "--reason", "too_large"], &[("DATABASE_URL", &env.db.url)]);
    assert!(wait_exit(&mut list, Duration::from_secs(30)).await.success());
    let listed = std::fs::read_to_string(&list.log_path).unwrap();
    let too_large = listed.lines().filter(|l| l.contains("\ttoo_large\t")).count() as i64;
    assert_eq!(too_large, count("replayed") + count("truncated") + 1, "{listed}");
    env.db.drop_db().await;
}

#[tokio::test]
async fn stats_summary_answers_the_stored_rows_behind_the_jwt_guard() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let env = crate::ingest::IngestEnv::create(1).await;
    let day = test_day();
    let client = env.db.client().await;
    for d in [day - Days::new(1), day, day + Days::new(1)] {
        client.execute("SELECT ensure_logs_partition($1)", &[&d]).await.unwrap();
    }
    let events = generate(21, day, 1_500);
    insert(&client, &events, 0).await;
    let mut run = run_summary(&env.db, day);
    assert!(wait_exit(&mut run, Duration::from_secs(60)).await.success(), "{}", run.log_tail());

    let port = free_port();
    let (addr, admin) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{}", free_port()));
    let prefix = unique("la_sum");
    let redis_url = stack().redis_url;
    let app = ChildProcess::spawn(
        &["api"],
        &[
            ("DATABASE_URL", env.db.url.as_str()),
            ("KAFKA_BROKERS", &env.brokers),
            ("KAFKA_TOPIC", &env.topic),
            ("REDIS_URL", &redis_url),
            ("REDIS_PREFIX", &prefix),
            ("HTTP_ADDR", &addr),
            ("ADMIN_ADDR", &admin),
            ("JWT_SECRET", "summary-secret-at-least-32-bytes-long"),
        ],
    );
    eventually("HTTP listening", Duration::from_secs(30), || async move {
        http(port, "GET", "/healthz", b"", &[]).await.filter(|(s, _)| *s == 200).map(|_| ())
    })
    .await;
    let claims = json!({"exp": Utc::now().timestamp() + 600});
    let token =
        encode(&Header::default(), &claims, &EncodingKey::from_secret(b"summary-secret-at-least-32-bytes-long"))
            .unwrap();
    let bearer = format!("Bearer {token}");
    let get = |path: String| {
        let bearer = bearer.clone();
        async move {
            let (status, body) =
                http(port, "GET", &path, b"", &[("Authorization", bearer.as_str())]).await.expect("GET");
            (status, serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null))
        }
    };

    let (status, _) = http(port, "GET", &format!("/stats/summary?date={day}"), b"", &[]).await.unwrap();
    assert_eq!(status, 401, "the /stats guard covers the summary");

    let (want_users, want_keywords) = expected(&events, day);
    let (status, body) = get(format!("/stats/summary?date={day}&limit=1000")).await;
    assert_eq!(status, 200, "{body}");
    let users = body["users"].as_array().unwrap();
    assert_eq!(users.len(), want_users.len());
    let mut by_total = want_users.clone();
    by_total.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (got, want) in users.iter().zip(&by_total) {
        assert_eq!(got["user_id"], json!(want.0));
        assert_eq!(
            (got["total"].as_i64(), got["errors"].as_i64(), got["warnings"].as_i64()),
            (Some(want.1), Some(want.2), Some(want.3))
        );
        assert_eq!(got["services"], json!(want.5));
        assert_eq!(got["top_keywords"], want.8);
    }
    let mut top: Vec<(String, i64)> = want_keywords.clone();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.as_bytes().cmp(b.0.as_bytes())));
    let keywords: Vec<(String, i64)> = body["keywords"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["keyword"].as_str().unwrap().to_owned(), k["count"].as_i64().unwrap()))
        .collect();
    assert_eq!(keywords, top);

    let one = &want_users[0];
    let (status, body) = get(format!("/stats/summary?date={day}&user_id={}", one.0)).await;
    assert_eq!(status, 200);
    assert_eq!(body["users"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["users"][0]["total"], json!(one.1));
    let (_, body) = get(format!("/stats/summary?date={day}&limit=3")).await;
    assert_eq!(body["users"].as_array().map(Vec::len), Some(3));

    let never = day - Days::new(1);
    let (status, body) = get(format!("/stats/summary?date={never}")).await;
    assert_eq!((status, body["error"].clone()), (404, json!("not_summarized")), "{body}");
    for (query, code) in [
        ("date=2026-13-01", "bad_date"),
        ("date=yesterday", "bad_date"),
        ("", "missing_parameter"),
        (&format!("date={day}&limit=0") as &str, "bad_limit"),
        (&format!("date={day}&limit=1001") as &str, "bad_limit"),
        (&format!("date={day}&bogus=1") as &str, "unknown_parameter"),
    ] {
        let (status, body) = get(format!("/stats/summary?{query}")).await;
        assert_eq!((status, body["error"].clone()), (400, json!(code)), "{query}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    drop(app);
    env.db.drop_db().await;
}

#[tokio::test]
async fn the_schedule_role_catches_up_at_start_and_keeps_the_partitions() {
    let db = migrated(&[]).await;
    let client = db.client().await;
    let now = Utc::now();
    let due = actors::schedule::last_due_day(now, NaiveTime::from_hms_opt(0, 10, 0).unwrap());
    let expired = now.date_naive() - Days::new(45);
    client.execute("SELECT ensure_logs_partition($1)", &[&expired]).await.unwrap();
    let mut scheduler = ChildProcess::spawn(
        &["schedule"],
        &[("DATABASE_URL", db.url.as_str()), ("ADMIN_ADDR", "127.0.0.1:0"), ("SUMMARY_AT", "00:10")],
    );
    eventually("the due day summarized at start", Duration::from_secs(60), || async {
        (ok_days(&client).await == vec![due]).then_some(())
    })
    .await;
    let parts = partitions(&client).await;
    let week = now.date_naive().iter_days().take(8);
    assert!(week.clone().all(|d| parts.contains(&d)), "today and 7 days ahead: {parts:?}");
    assert!(!parts.contains(&expired), "{parts:?}");
    let status = scheduler.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", scheduler.log_tail());
    db.drop_db().await;
}
