//! Log search on PostgreSQL (issue #18): the shared suite (`search_cases`, the questions SQLite is
//! asked too) on `PgLogSearch` over rows stored by `log-analyzer ingest` from Kafka; and, through
//! `GET /logs` pages, `GET /logs/{topic}/{partition}/{offset}` and `log-analyzer search`, ground
//! truth computed here from what was sent (generated messages and real Loghub lines), while ingest
//! goes on between pages.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actors::domain::{tokenize, Level};
use actors::search::{Filter, LogSearch};
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde_json::{json, Value};

use crate::api::{spawn_role, spawn_role_with, App};
use crate::helpers::*;
use crate::ingest::IngestEnv;
use crate::search_cases::{self, params, Backend, Lines, StoredRow};

const PARTITIONS: i32 = 3;
const VOCABULARY: [&str; 10] =
    ["alpha", "beta", "gamma", "timeout", "refused", "disk", "retry", "conn", "ok", "Überlauf"];
const SERVICES: [&str; 3] = ["api", "web", "db"];

/// One event as sent, and where Kafka put it (filled in once stored).
#[derive(Clone, Debug)]
struct Sent {
    eid: String,
    ts: DateTime<Utc>,
    level: Level,
    service: String,
    message: String,
    tokens: Vec<String>,
    partition: i32,
    offset: i64,
}

impl Sent {
    fn line(&self) -> String {
        json!({
            "ts": self.ts.to_rfc3339_opts(SecondsFormat::Micros, true),
            "level": self.level.as_str(),
            "service": self.service,
            "message": self.message,
            "eid": self.eid,
        })
        .to_string()
    }

    /// The search order: newest first, then partition, then offset (one topic here).
    fn order_key(&self) -> (std::cmp::Reverse<i64>, std::cmp::Reverse<i32>, std::cmp::Reverse<i64>) {
        use std::cmp::Reverse;
        (Reverse(self.ts.timestamp_micros()), Reverse(self.partition), Reverse(self.offset))
    }
}

struct World {
    env: IngestEnv,
    producer: rdkafka::producer::FutureProducer,
    sent: Vec<Sent>,
    rng: Rng,
}

impl World {
    fn event(&mut self, eid: String, ts: DateTime<Utc>, level: Level, service: &str, message: String) -> Sent {
        let tokens = tokenize(&message);
        let partition = self.rng.below(PARTITIONS as u64) as i32;
        Sent { eid, ts, level, service: service.to_owned(), message, tokens, partition, offset: -1 }
    }

    /// Produces `events` and waits until all are stored, then learns their offsets.
    async fn send(&mut self, events: Vec<Sent>) {
        let messages: Vec<Outgoing> = events
            .iter()
            .map(|e| Outgoing {
                partition: e.partition,
                timestamp_ms: e.ts.timestamp_millis(),
                payload: e.line().into(),
            })
            .collect();
        produce_all(&self.producer, &self.env.topic, &messages).await;
        self.sent.extend(events);
        let client = self.env.db.client().await;
        self.env.wait_stored(&client, self.sent.len() as i64, Duration::from_secs(120)).await;
        let rows = client
            .query("SELECT attrs->>'eid', \"partition\", \"offset\" FROM logs", &[])
            .await
            .expect("reading positions");
        let at: HashMap<String, (i32, i64)> = rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect();
        for e in &mut self.sent {
            let (partition, offset) = at[&e.eid];
            assert_eq!(partition, e.partition, "{} stored in the partition it was sent to", e.eid);
            e.offset = offset;
        }
    }

    /// Every sent event the search asks for, in the search order.
    fn truth(&self, pairs: &[(&str, &str)]) -> Vec<Sent> {
        let p = params(pairs);
        let query = p.query().expect("a valid search");
        let filter: &Filter = &query.filter;
        let mut found: Vec<Sent> = self
            .sent
            .iter()
            .filter(|e| filter.matches_row(e.level, &e.service, &e.tokens) && query.in_range(e.ts.timestamp_micros()))
            .cloned()
            .collect();
        found.sort_by_key(Sent::order_key);
        found
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn path_of(pairs: &[(&str, &str)], cursor: Option<&str>) -> String {
    let mut parts: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
    if let Some(c) = cursor {
        parts.push(format!("cursor={}", encode(c)));
    }
    format!("/logs?{}", parts.join("&"))
}

/// Checks one answered event against what was sent; returns its eid.
fn check_event(found: &Value, sent: &HashMap<String, Sent>, topic: &str) -> String {
    let eid = found["attrs"]["eid"].as_str().unwrap_or_else(|| panic!("no eid in {found}")).to_owned();
    let e = sent.get(&eid).unwrap_or_else(|| panic!("{eid} was never sent"));
    assert_eq!(found["ts"], json!(e.ts.to_rfc3339_opts(SecondsFormat::Micros, true)), "{found}");
    assert_eq!(found["level"], json!(e.level.as_str()), "{found}");
    assert_eq!(found["service"], json!(e.service), "{found}");
    assert_eq!(found["message"], json!(e.message), "{found}");
    assert_eq!((found["topic"].as_str(), found["partition"].as_i64()), (Some(topic), Some(e.partition as i64)));
    assert_eq!(found["offset"].as_i64(), Some(e.offset), "{found}");
    eid
}

struct Paged {
    eids: Vec<String>,
    pages: usize,
    truncated_pages: usize,
}

/// Follows `next_cursor` to the end; `between` runs after every page that has a next one.
async fn page_through<F, Fut>(app: &App, world: &mut World, pairs: &[(&str, &str)], mut between: F) -> Paged
where
    F: FnMut(&mut World, usize) -> Fut,
    Fut: std::future::Future<Output = Vec<Sent>>,
{
    let mut paged = Paged { eids: Vec::new(), pages: 0, truncated_pages: 0 };
    let mut cursor: Option<String> = None;
    loop {
        let path = path_of(pairs, cursor.as_deref());
        let (status, body) = get_json(app.port, &path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["source"], "postgres");
        let by_eid: HashMap<String, Sent> = world.sent.iter().map(|e| (e.eid.clone(), e.clone())).collect();
        let events = body["events"].as_array().expect("events");
        let limit: usize = pairs.iter().find(|(k, _)| *k == "limit").map_or(100, |(_, v)| v.parse().unwrap());
        assert!(events.len() <= limit, "{path}: {} events over limit {limit}", events.len());
        for e in events {
            paged.eids.push(check_event(e, &by_eid, &world.env.topic));
        }
        paged.pages += 1;
        if body["truncated"] == true {
            paged.truncated_pages += 1;
        } else {
            assert_eq!(body["truncated"], false);
        }
        assert!(paged.pages < 2_000, "{path}: paging does not end");
        match body["next_cursor"].as_str() {
            Some(next) => {
                cursor = Some(next.to_owned());
                let more = between(world, paged.pages).await;
                if !more.is_empty() {
                    world.send(more).await;
                }
            }
            None => {
                assert!(body["next_cursor"].is_null(), "{body}");
                return paged;
            }
        }
    }
}

fn eids(events: &[Sent]) -> Vec<String> {
    events.iter().map(|e| e.eid.clone()).collect()
}

/// Generated events and real Loghub lines over the 40 minutes after `base`, with ties in time.
fn first_events(world: &mut World, base: DateTime<Utc>) -> Vec<Sent> {
    let mut events = Vec::new();
    let mut last_ts = base;
    for i in 0..420 {
        let words = 2 + world.rng.below(4) as usize;
        let message: Vec<&str> =
            (0..words).map(|_| VOCABULARY[world.rng.below(VOCABULARY.len() as u64) as usize]).collect();
        let message = format!("{} #{i}", message.join(" "));
        // Every seventh event shares its time with the one before: the tie goes by partition, offset.
        let ts = if i % 7 == 6 {
            last_ts
        } else {
            base + chrono::Duration::microseconds(world.rng.below(2_400_000_000) as i64)
        };
        last_ts = ts;
        let level = Level::ALL[world.rng.below(6) as usize];
        let service = SERVICES[world.rng.below(3) as usize];
        events.push(world.event(format!("gen-{i}"), ts, level, service, message));
    }
    for (system, service) in [("Apache", "apache"), ("OpenSSH", "sshd")] {
        let sample = crate::loghub::load(system);
        for (i, line) in sample.lines.iter().take(200).enumerate() {
            let level = sample.levels.as_ref().map_or(Level::Info, |l| l[i]);
            let ts = base + chrono::Duration::microseconds(world.rng.below(2_400_000_000) as i64);
            events.push(world.event(format!("{service}-{i}"), ts, level, service, line.clone()));
        }
    }
    events
}

#[tokio::test]
async fn pages_of_get_logs_and_the_cli_equal_ground_truth_while_ingest_goes_on() {
    let env = IngestEnv::create(PARTITIONS as u32).await;
    let producer = producer(&env.brokers);
    let mut world = World { env, producer, sent: Vec::new(), rng: Rng::new(18) };
    let base = Utc.timestamp_opt(Utc::now().timestamp() - 50 * 60, 0).unwrap();
    let run = spawn_role(&world.env, "run", "", &unique("la_search"));
    // A second reader of the same store whose pages stop after 40 rows.
    let small = spawn_role_with(&world.env, "api", "", &unique("la_search"), &[("SEARCH_MAX_SCAN", "40")]);
    run.wait_listening().await;
    small.wait_listening().await;
    let first = first_events(&mut world, base);
    world.send(first).await;

    let from = (base + chrono::Duration::minutes(10)).to_rfc3339();
    let to = (base + chrono::Duration::minutes(25)).timestamp().to_string();
    let queries: Vec<Vec<(&str, &str)>> = vec![
        vec![("q", "timeout"), ("limit", "7")],
        vec![("q", "timeout -retry"), ("limit", "7")],
        vec![("q", "Alpha BETA"), ("service", "api"), ("limit", "5")],
        vec![("service", "web"), ("level", "warn+"), ("limit", "9")],
        vec![("level", "error"), ("limit", "11")],
        vec![("q", "failed password"), ("limit", "6")],
        vec![("q", "child -scoreboard"), ("service", "apache"), ("limit", "4")],
        vec![("q", "überlauf"), ("from", from.as_str()), ("to", to.as_str()), ("limit", "3")],
        vec![("from", from.as_str()), ("to", to.as_str()), ("level", "info+"), ("limit", "50")],
    ];
    for pairs in &queries {
        let truth = world.truth(pairs);
        assert!(truth.len() >= 3, "{pairs:?} should match a few events, matched {}", truth.len());
        for app in [&run, &small] {
            let paged = page_through(app, &mut world, pairs, |_, _| async { Vec::new() }).await;
            assert_eq!(paged.eids, eids(&truth), "{pairs:?} on port {}", app.port);
        }
    }

    // Ingest between pages: events newer than the first page never show up (they precede the
    // cursor); events older than everything seen so far come at the end, each exactly once.
    let live = [("q", "timeout conn"), ("limit", "4")];
    let before = world.truth(&live);
    let mut older = Vec::new();
    let paged = page_through(&run, &mut world, &live, |world, page| {
        let newer = world.event(format!("new-{page}"), Utc::now(), Level::Error, "api", "conn timeout now".into());
        let old_ts = base - chrono::Duration::seconds(page as i64);
        let old = world.event(format!("old-{page}"), old_ts, Level::Warn, "db", format!("late conn timeout {page}"));
        older.push(old.eid.clone());
        async move { vec![newer, old] }
    })
    .await;
    let mut expected = eids(&before);
    expected.extend(older.iter().cloned());
    assert!(older.len() >= 3, "ingest ran between several pages");
    assert_eq!(paged.eids, expected);

    // Truncated pages: the 40-row reader answers a sparse question in many short pages, and
    // following its cursors gives exactly the same events.
    for pairs in [
        vec![("service", "apache"), ("level", "error"), ("limit", "5")],
        vec![("q", "now"), ("limit", "2")],
        vec![("q", "scoreboard"), ("limit", "2")],
        // Rare and oldest: found through the GIN after the first rows held none.
        vec![("q", "late"), ("limit", "2")],
        vec![("q", "timeout"), ("service", "db"), ("limit", "3")],
    ] {
        let truth = world.truth(&pairs);
        let paged = page_through(&small, &mut world, &pairs, |_, _| async { Vec::new() }).await;
        assert_eq!(paged.eids, eids(&truth), "{pairs:?} truncated");
        if pairs[0].0 == "service" {
            assert!(paged.truncated_pages > 0, "{pairs:?}: some page stopped at SEARCH_MAX_SCAN");
        }
        let full = page_through(&run, &mut world, &pairs, |_, _| async { Vec::new() }).await;
        assert_eq!(full.truncated_pages, 0, "{pairs:?} within the default bound");
        assert_eq!(full.eids, paged.eids);
    }

    // One event by its position.
    let one = world.sent.iter().find(|e| e.eid == "sshd-3").unwrap().clone();
    let path = format!("/logs/{}/{}/{}", world.env.topic, one.partition, one.offset);
    let (status, body) = get_json(run.port, &path).await;
    assert_eq!(status, 200, "{body}");
    let by_eid: HashMap<String, Sent> = world.sent.iter().map(|e| (e.eid.clone(), e.clone())).collect();
    assert_eq!(check_event(&body, &by_eid, &world.env.topic), "sshd-3");
    let (status, body) = get_json(run.port, &format!("/logs/{}/{}/999999", world.env.topic, one.partition)).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")), "{body}");
    let (status, body) = get_json(run.port, &format!("/logs/{}/0/1", unique("other"))).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")), "{body}");
    for (path, code) in [
        ("/logs/t/-1/0", "bad_partition"),
        ("/logs/t/x/0", "bad_partition"),
        ("/logs/t/0/1.5", "bad_offset"),
        ("/logs/t/0/1?x=1", "unknown_parameter"),
    ] {
        let (status, body) = get_json(run.port, path).await;
        assert_eq!((status, body["error"].as_str()), (400, Some(code)), "{path}: {body}");
    }

    // Bad questions: a 400 naming what to fix, never a 500.
    for (query, code) in [
        ("q=a", "bad_query"),
        ("q=timeout+-timeout", "bad_query"),
        ("q=-db:conn", "bad_query"),
        ("level=loud", "bad_level"),
        ("limit=0", "bad_limit"),
        ("limit=1001", "bad_limit"),
        ("from=yesterday", "bad_from"),
        ("to=-3", "bad_to"),
        ("from=20&to=10", "bad_range"),
        ("cursor=bm9wZQ", "bad_cursor"),
        ("service=", "bad_service"),
        ("page=2", "unknown_parameter"),
        ("q=a&q=b", "repeated_parameter"),
    ] {
        let (status, body) = get_json(run.port, &format!("/logs?{query}")).await;
        assert_eq!((status, body["error"].as_str()), (400, Some(code)), "{query}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    }

    // The command line, on the same store: grep's lines, its exit codes.
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_log-analyzer"))
            .arg("search")
            .args(args)
            .env("DATABASE_URL", &world.env.db.url)
            .env("KAFKA_BROKERS", &world.env.brokers)
            .env("KAFKA_TOPIC", &world.env.topic)
            .env("REDIS_URL", "")
            .output()
            .expect("running log-analyzer search");
        (
            output.status.code(),
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let grep_line = |e: &Sent| {
        format!(
            "{} {} {} {}",
            e.ts.to_rfc3339_opts(SecondsFormat::Micros, true),
            e.level.as_str().to_uppercase(),
            e.service,
            e.message
        )
    };
    let truth = world.truth(&[("q", "timeout -retry")]);
    let (code, stdout, stderr) = cli(&["timeout", "-retry", "--limit", "6", "--all"]);
    assert_eq!(code, Some(0), "{stderr}");
    let want: Vec<String> = truth.iter().map(grep_line).collect();
    assert_eq!(stdout.lines().collect::<Vec<_>>(), want);
    let (code, stdout, _) = cli(&["timeout", "-retry", "--limit", "5"]);
    assert_eq!((code, stdout.lines().count()), (Some(0), 5), "one page without --all");
    let truth = world.truth(&[("service", "sshd"), ("q", "failed"), ("level", "info+")]);
    let (code, stdout, stderr) = cli(&["failed", "--service", "sshd", "--level", "info+", "--json", "--all"]);
    assert_eq!(code, Some(0), "{stderr}");
    let by_eid: HashMap<String, Sent> = world.sent.iter().map(|e| (e.eid.clone(), e.clone())).collect();
    let found: Vec<String> = stdout
        .lines()
        .map(|l| check_event(&serde_json::from_str(l).expect("one JSON event per line"), &by_eid, &world.env.topic))
        .collect();
    assert_eq!(found, eids(&truth));
    let (code, stdout, _) = cli(&["nosuchtokenanywhere", "--all"]);
    assert_eq!((code, stdout.as_str()), (Some(1), ""), "nothing matched: exit 1 as grep");
    let (code, _, stderr) = cli(&["--level", "loud"]);
    assert_eq!(code, Some(2), "a bad search exits 2");
    assert!(stderr.contains("bad_level"), "{stderr}");
    let (code, _, stderr) = cli(&["x"]);
    assert!(code == Some(2) && stderr.contains("bad_query"), "{stderr}");

    // A store that does not answer: 503 with the reason, within DATABASE_TIMEOUT_MS.
    let closed = format!("postgres://postgres@127.0.0.1:{}/nowhere", free_port());
    let cut_off = spawn_role_with(
        &world.env,
        "api",
        "",
        &unique("la_search"),
        &[("DATABASE_URL", closed.as_str()), ("DATABASE_TIMEOUT_MS", "500")],
    );
    cut_off.wait_listening().await;
    for path in ["/logs?q=timeout", "/logs/t/0/0"] {
        let (status, body) = get_json(cut_off.port, path).await;
        assert_eq!((status, body["error"].as_str()), (503, Some("search_unavailable")), "{path}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| m.contains("PostgreSQL")), "{body}");
    }

    drop(run);
    drop(small);
    drop(cut_off);
    world.env.db.drop_db().await;
}

/// A PostgreSQL store fed as in production: lines produced to Kafka (spread over the partitions),
/// stored by an `ingest` process; searched in this process by `PgLogSearch`.
struct PgStore {
    env: IngestEnv,
    producer: rdkafka::producer::FutureProducer,
    client: tokio_postgres::Client,
    ingest: crate::helpers::ChildProcess,
    /// Lines produced so far, and the positions already read back.
    sent: Mutex<(usize, HashSet<(i32, i64)>)>,
}

impl PgStore {
    async fn start() -> PgStore {
        let env = IngestEnv::create(PARTITIONS as u32).await;
        let producer = producer(&env.brokers);
        let client = env.db.client().await;
        let ingest = env.spawn_ingest();
        PgStore { env, producer, client, ingest, sent: Mutex::new((0, HashSet::new())) }
    }

    async fn finish(self) {
        drop(self.ingest);
        self.env.db.drop_db().await;
    }
}

impl Backend for PgStore {
    async fn store(&self, lines: &[String]) -> Vec<StoredRow> {
        let first = self.sent.lock().unwrap().0;
        let now_ms = Utc::now().timestamp_millis();
        let messages: Vec<Outgoing> = lines
            .iter()
            .enumerate()
            .map(|(i, line)| Outgoing {
                partition: ((first + i) % PARTITIONS as usize) as i32,
                timestamp_ms: now_ms,
                payload: line.clone().into_bytes(),
            })
            .collect();
        produce_all(&self.producer, &self.env.topic, &messages).await;
        let total = first + lines.len();
        self.sent.lock().unwrap().0 = total;
        self.env.wait_stored(&self.client, total as i64, Duration::from_secs(180)).await;
        let rows = self
            .client
            .query(
                "SELECT (extract(epoch FROM ts) * 1000000)::bigint, level, service, message, tokens, topic, \
                 \"partition\", \"offset\" FROM logs",
                &[],
            )
            .await
            .expect("reading the stored rows");
        let mut sent = self.sent.lock().unwrap();
        let new: Vec<StoredRow> = rows
            .iter()
            .filter(|r| sent.1.insert((r.get(6), r.get(7))))
            .map(|r| StoredRow {
                ts_micros: r.get(0),
                level: Level::from_i16(r.get(1)).expect("a stored level"),
                service: r.get(2),
                message: r.get(3),
                tokens: r.get(4),
                topic: r.get(5),
                partition: r.get(6),
                offset: r.get(7),
            })
            .collect();
        assert_eq!(new.len(), lines.len(), "every line stored as one row");
        new
    }

    fn search(&self, max_scan: usize) -> Arc<dyn LogSearch> {
        // Debug builds on shared cores: a page is timed by the suite's deadline, not this one.
        let timeout = Duration::from_secs(30);
        let pool = log_analyzer::db::pool(&self.env.db.url, 2, timeout);
        Arc::new(log_analyzer::db::search::PgLogSearch::new(pool, timeout, max_scan as u64))
    }
}

#[tokio::test]
async fn shared_suite_pages_equal_the_ground_truth_while_events_are_stored_between_pages() {
    let store = PgStore::start().await;
    let search =
        search_cases::pages_equal_the_ground_truth_while_events_are_stored_between_pages(&store, &Lines::new(18)).await;
    assert_eq!(search.source(), "postgres");
    store.finish().await;
}

#[tokio::test]
async fn shared_suite_a_scan_bound_truncates_pages_and_following_their_cursors_finds_everything() {
    let store = PgStore::start().await;
    let bounded =
        search_cases::a_scan_bound_truncates_pages_and_their_cursors_find_everything(&store, &Lines::new(7)).await;
    // A question without a required token walks the ts order alone: the bound ends its pages. One
    // with a token may be answered whole by the GIN (a rare token's rows are few), so only the
    // answer (checked by the suite) is asserted for it, and that the smallest bound stops its pages.
    assert!(bounded.len() >= 8, "{} questions asked", bounded.len());
    for b in &bounded {
        if !b.question.contains("\"q\"") || b.max_scan == 1 {
            assert!(b.truncated_pages > 0, "{} with max_scan {}: never truncated", b.question, b.max_scan);
        }
    }
    store.finish().await;
}

#[tokio::test]
async fn shared_suite_one_event_is_found_by_its_position_and_a_missing_one_is_none() {
    let store = PgStore::start().await;
    search_cases::one_event_is_found_by_its_position_and_a_missing_one_is_none(&store, &Lines::new(3)).await;
    store.finish().await;
}

/// A row whose level no `Level` has (the table's CHECK dropped, as a hand-written repair might) is
/// an error the caller sees, for its position and for a search without a level; never an `info`
/// event made up. SQLite answers the same (`search_sqlite`).
#[tokio::test]
async fn a_row_with_a_level_out_of_range_is_a_corrupt_row_error() {
    let store = PgStore::start().await;
    let rows = store.store(&Lines::new(5).generated(20, "corrupt")).await;
    let row = rows.iter().max_by_key(|r| (r.ts_micros, r.partition, r.offset)).expect("rows").clone();
    let checks: Vec<String> = store
        .client
        .query(
            "SELECT conname::text FROM pg_constraint WHERE conrelid = 'logs'::regclass AND contype = 'c' \
             AND pg_get_constraintdef(oid) LIKE '%level%'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!checks.is_empty(), "logs has a CHECK on level");
    for check in &checks {
        store.client.batch_execute(&format!("ALTER TABLE logs DROP CONSTRAINT {check}")).await.unwrap();
    }
    let changed = store
        .client
        .execute(
            "UPDATE logs SET level = 9 WHERE topic = $1 AND \"partition\" = $2 AND \"offset\" = $3",
            &[&row.topic, &row.partition, &row.offset],
        )
        .await
        .unwrap();
    assert_eq!(changed, 1);
    search_cases::a_row_with_level_9_is_a_corrupt_row_error(store.search(10_000).as_ref(), &row).await;
    store.finish().await;
}
