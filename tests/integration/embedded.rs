//! The embedded mode (issue #15): one binary, one SQLite file, no Kafka and no Redis. Each test has a
//! temporary directory of its own with the database file inside it, and reads what the application
//! stored straight from that file (diesel's SqliteConnection), while the application runs or after
//! it was killed.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{Days, NaiveDate, SecondsFormat, Utc};
use diesel::connection::SimpleConnection;
use diesel::sql_types::{BigInt, Double, Nullable, Text};
use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};
use serde_json::{json, Value};

use crate::api::App;
use crate::ground_truth::{pick, Truth};
use crate::helpers::*;
use crate::sqlite_read::TokenSecond;

/// A temporary directory holding one embedded database file, removed when dropped.
pub struct EmbeddedDir {
    pub path: PathBuf,
}

impl EmbeddedDir {
    pub fn create() -> EmbeddedDir {
        let path = std::env::temp_dir().join(unique("la_embedded"));
        std::fs::create_dir_all(&path).expect("temporary directory");
        EmbeddedDir { path }
    }

    pub fn db_path(&self) -> PathBuf {
        self.path.join("log-analyzer.db")
    }

    /// `sqlite:///abs/path`: the file, whatever the child's working directory.
    pub fn url(&self) -> String {
        format!("sqlite://{}", self.db_path().display())
    }

    /// The environment that selects the embedded mode on this file. KAFKA_BROKERS and REDIS_URL are
    /// set empty explicitly: the test's own environment may carry the stack's addresses.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("DATABASE_URL".into(), self.url()),
            ("KAFKA_BROKERS".into(), String::new()),
            ("REDIS_URL".into(), String::new()),
        ]
    }
}

impl Drop for EmbeddedDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A child of the binary with the embedded environment of `dir` plus `extra`.
pub fn spawn_child(dir: &EmbeddedDir, args: &[&str], extra: &[(&str, &str)]) -> ChildProcess {
    let env = dir.env();
    let mut vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    vars.extend_from_slice(extra);
    ChildProcess::spawn(args, &vars)
}

/// `log-analyzer run` in the embedded mode on its own ports.
pub fn spawn_embedded(dir: &EmbeddedDir, extra: &[(&str, &str)]) -> App {
    let (port, admin_port) = (free_port(), free_port());
    let (http_addr, admin_addr) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{admin_port}"));
    let mut vars = vec![("HTTP_ADDR", http_addr.as_str()), ("ADMIN_ADDR", admin_addr.as_str())];
    vars.extend_from_slice(extra);
    App { process: spawn_child(dir, &["run"], &vars), port, admin_port }
}

/// A connection of the test's own to the application's file (WAL: it reads beside the writer).
pub fn sqlite(path: &Path) -> SqliteConnection {
    let url = path.to_str().expect("UTF-8 path");
    let mut conn = SqliteConnection::establish(url).unwrap_or_else(|e| panic!("opening {url}: {e}"));
    conn.batch_execute("PRAGMA busy_timeout = 10000;").expect("busy_timeout");
    conn
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// A `SELECT count(*) AS n …` on the file.
pub fn count(path: &Path, sql: &str) -> i64 {
    diesel::sql_query(sql).get_result::<Count>(&mut sqlite(path)).unwrap_or_else(|e| panic!("{sql}: {e}")).n
}

#[derive(QueryableByName)]
struct Integrity {
    #[diesel(sql_type = Text)]
    integrity_check: String,
}

/// SQLite's own check of the file: `ok`, or what is broken.
pub fn integrity(path: &Path) -> String {
    let rows =
        diesel::sql_query("PRAGMA integrity_check").load::<Integrity>(&mut sqlite(path)).expect("integrity_check");
    rows.into_iter().map(|r| r.integrity_check).collect::<Vec<_>>().join("; ")
}

#[derive(QueryableByName)]
struct Eid {
    #[diesel(sql_type = Nullable<Text>)]
    eid: Option<String>,
}

/// The `eid` field of every stored row, in no order (duplicates kept: the caller looks for them).
pub fn stored_eids(path: &Path) -> Vec<Option<String>> {
    diesel::sql_query("SELECT json_extract(attrs, '$.eid') AS eid FROM logs")
        .load::<Eid>(&mut sqlite(path))
        .expect("reading logs")
        .into_iter()
        .map(|r| r.eid)
        .collect()
}

/// Waits until `app` answers /healthz, failing at once with its log if it exited first.
pub async fn wait_up(app: &mut App) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = app.process.child.try_wait().expect("try_wait") {
            panic!("log-analyzer exited ({status}) before it listened:\n{}", app.process.log_tail());
        }
        if let Some((200, _)) = http(app.port, "GET", "/healthz", b"", &[]).await {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "not listening after 60 s:\n{}", app.process.log_tail());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post(port: u16, body: &[u8]) -> (u16, Value) {
    let (status, raw) = http(port, "POST", "/ingest", body, &[]).await.expect("POST /ingest answered");
    let answer = serde_json::from_slice(&raw)
        .unwrap_or_else(|_| panic!("POST /ingest {status}: not JSON: {}", String::from_utf8_lossy(&raw)));
    (status, answer)
}

// ---------------------------------------------------------------------------------------------
// kill -9 during a steady load

const LOAD_SERVICES: [&str; 3] = ["checkout", "payments", "search-api"];
const LINES_PER_REQUEST: u64 = 100;

/// What the test knows of one line of the load by its id alone: (service, is_error).
fn load_line(request: u64, j: u64) -> (&'static str, bool) {
    (LOAD_SERVICES[((request + j) % 3) as usize], (request * 7 + j).is_multiple_of(11))
}

#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    /// A 202 that accepted every line: each must be stored exactly once.
    Acknowledged,
    /// A 202 that did not take every line: the lines it lists as queued (0-based here) must be
    /// stored exactly once, the others may be absent or present once.
    Partial(Vec<u64>),
    /// No answer (the process was killed, or not yet listening): absent or present once.
    Failed,
}

impl Outcome {
    fn name(&self) -> &'static str {
        match self {
            Outcome::Acknowledged => "acknowledged",
            Outcome::Partial(_) => "partial",
            Outcome::Failed => "failed",
        }
    }

    fn acknowledges(&self, j: u64) -> bool {
        match self {
            Outcome::Acknowledged => true,
            Outcome::Partial(lines) => lines.contains(&j),
            Outcome::Failed => false,
        }
    }
}

/// The 0-based lines of `queued_lines` (1-based inclusive ranges `[from, to]`) in a 202's answer.
fn queued_lines(answer: &Value) -> Vec<u64> {
    let ranges = answer["queued_lines"].as_array().cloned().unwrap_or_default();
    ranges
        .iter()
        .filter_map(|r| Some((r[0].as_u64()?, r[1].as_u64()?)))
        .flat_map(|(from, to)| (from..=to).map(|line| line - 1))
        .collect()
}

/// An open-loop POST /ingest load: one request every `every`, whether or not earlier ones were
/// answered, each with LINES_PER_REQUEST lines of unique ids `r{request}-{j}`.
struct SteadyLoad {
    /// Where requests go: each restart listens on a port of its own.
    port: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicU64>,
    /// Requests sent and not yet answered.
    in_flight: Arc<AtomicU64>,
    handle: tokio::task::JoinHandle<Vec<(u64, i64, Outcome)>>,
}

impl SteadyLoad {
    fn start(port: u16, every: Duration) -> SteadyLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicU64::new(0));
        let port = Arc::new(AtomicU16::new(port));
        let in_flight_now = Arc::new(AtomicU64::new(0));
        let (stop2, acked2, port2, open2) = (stop.clone(), acknowledged.clone(), port.clone(), in_flight_now.clone());
        let handle = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            let mut in_flight = Vec::new();
            let mut request = 0_u64;
            while !stop2.load(Ordering::SeqCst) {
                ticker.tick().await;
                let ts_ms = Utc::now().timestamp_millis();
                let body: String = (0..LINES_PER_REQUEST)
                    .map(|j| {
                        let (service, error) = load_line(request, j);
                        let level = if error { "error" } else { "info" };
                        format!(
                            "{{\"ts\":{ts_ms},\"level\":\"{level}\",\"service\":\"{service}\",\"message\":\"steady {request} {j}\",\"eid\":\"r{request}-{j}\"}}\n"
                        )
                    })
                    .collect();
                let (acked, port, open) = (acked2.clone(), port2.load(Ordering::SeqCst), open2.clone());
                open.fetch_add(1, Ordering::SeqCst);
                in_flight.push(tokio::spawn(async move {
                    let answer = http(port, "POST", "/ingest", body.as_bytes(), &[]).await;
                    open.fetch_sub(1, Ordering::SeqCst);
                    let outcome = match answer {
                        Some((202, raw)) => {
                            let answer: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
                            let all = answer["accepted"].as_u64() == Some(LINES_PER_REQUEST)
                                && answer["not_queued"].as_u64().unwrap_or(0) == 0;
                            if all {
                                acked.fetch_add(1, Ordering::SeqCst);
                                Outcome::Acknowledged
                            } else {
                                Outcome::Partial(queued_lines(&answer))
                            }
                        }
                        _ => Outcome::Failed,
                    };
                    (request, ts_ms, outcome)
                }));
                request += 1;
            }
            let mut outcomes = Vec::with_capacity(in_flight.len());
            for task in in_flight {
                outcomes.push(task.await.expect("a load request"));
            }
            outcomes
        });
        SteadyLoad { port, stop, acknowledged, in_flight: in_flight_now, handle }
    }

    /// Waits (briefly, at millisecond grain) until a request is on its way, so that a kill now
    /// meets one; returns how many are.
    async fn wait_in_flight(&self) -> u64 {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            let open = self.in_flight.load(Ordering::SeqCst);
            if open > 0 || std::time::Instant::now() > deadline {
                return open;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn retarget(&self, port: u16) {
        self.port.store(port, Ordering::SeqCst);
    }

    fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Ordering::SeqCst)
    }

    /// Waits until `more` further requests were acknowledged.
    async fn wait_acknowledged(&self, more: u64) {
        let target = self.acknowledged() + more;
        let what = format!("{more} more acknowledged requests");
        eventually(&what, Duration::from_secs(60), || async move { (self.acknowledged() >= target).then_some(()) })
            .await;
    }

    async fn finish(self) -> Vec<(u64, i64, Outcome)> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.await.expect("the load task")
    }
}

#[tokio::test]
async fn kill_9_five_times_under_a_steady_post_ingest_load_loses_no_acknowledged_line_and_stores_none_twice() {
    let dir = EmbeddedDir::create();
    let mut rng = Rng::new(15);
    // 50 requests/s of 100 lines: 5,000 lines/s; each kill waits for a request on its way.
    let mut app = spawn_embedded(&dir, &[]);
    wait_up(&mut app).await;
    let load = SteadyLoad::start(app.port, Duration::from_millis(20));
    let mut interrupted = 0;
    for kill in 0..5 {
        load.wait_acknowledged(20 + rng.below(40)).await;
        let open = load.wait_in_flight().await;
        app.process.kill9();
        interrupted += open;
        eprintln!("kill -9 #{}: {} requests acknowledged so far, {open} in flight", kill + 1, load.acknowledged());
        app = spawn_embedded(&dir, &[]);
        wait_up(&mut app).await;
        load.retarget(app.port);
    }
    load.wait_acknowledged(20).await;
    let outcomes = load.finish().await;

    let mut sent: HashMap<String, (i64, &'static str, bool)> = HashMap::new();
    let mut must = HashSet::new();
    let mut tally: HashMap<&str, u64> = HashMap::new();
    for (request, ts_ms, outcome) in &outcomes {
        *tally.entry(outcome.name()).or_default() += 1;
        for j in 0..LINES_PER_REQUEST {
            let id = format!("r{request}-{j}");
            let (service, error) = load_line(*request, j);
            sent.insert(id.clone(), (ts_ms.div_euclid(1000), service, error));
            if outcome.acknowledges(j) {
                must.insert(id);
            }
        }
    }
    eprintln!("{} requests: {tally:?}", outcomes.len());
    assert!(tally.get("failed").copied().unwrap_or(0) > 0, "the kills interrupted the load: {tally:?}");
    assert!(interrupted > 0, "a kill met a request in flight");
    assert!(must.len() >= 100 * LINES_PER_REQUEST as usize, "{} lines acknowledged", must.len());

    // The last process is killed too, so that the file is read as a crash leaves it.
    app.process.kill9();
    let db = dir.db_path();
    assert_eq!(integrity(&db), "ok", "the file after six kills");
    let positions =
        count(&db, "SELECT count(*) AS n FROM (SELECT DISTINCT topic, \"partition\", \"offset\" FROM logs)");
    assert_eq!(positions, count(&db, "SELECT count(*) AS n FROM logs"), "no queue position stored twice");
    let mut stored = HashSet::new();
    for eid in stored_eids(&dir.db_path()) {
        let eid = eid.expect("every stored row has its eid");
        assert!(sent.contains_key(&eid), "{eid} was never sent");
        assert!(stored.insert(eid.clone()), "{eid} stored twice");
    }
    let missing: Vec<&String> = must.iter().filter(|id| !stored.contains(*id)).take(10).collect();
    assert!(missing.is_empty(), "acknowledged but not stored (first 10): {missing:?}");
    eprintln!(
        "{} lines acknowledged, {} stored ({} of unanswered requests)",
        must.len(),
        stored.len(),
        stored.len() - must.len()
    );

    // Restart: the first memory answer is exact over what the file holds.
    let truth = Truth {
        events: stored
            .iter()
            .map(|id| {
                let (second, service, error) = sent[id];
                (second, service.to_owned(), error, Vec::new())
            })
            .collect(),
    };
    let at = truth.events.iter().map(|e| e.0).max().unwrap() + 1;
    let app = spawn_embedded(&dir, &[]);
    app.wait_memory_ready().await;
    let (status, answer) = get_json(app.port, &format!("/stats/errors?window=1h&at={at}&source=memory")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(pick(&answer, &["total", "errors", "by_service"]), truth.errors(at, 3_600, None), "{answer}");
    drop(app);
}

// ---------------------------------------------------------------------------------------------
// kill -9 while the keyword indexer is behind the writer

/// The file's keyword index against SQL over the rows up to the indexer's mark (SQLite's own
/// `json_each` over the stored tokens, nothing of the indexer's code): equal means every row up to
/// the mark counted once and none above it. Returns (mark, newest rowid).
fn assert_index_is_the_rows_up_to_the_mark(path: &Path) -> (i64, i64) {
    let mut conn = sqlite(path);
    let mark = count(path, "SELECT indexed_rowid AS n FROM log_index WHERE id = 1");
    let newest = count(path, "SELECT coalesce(max(rowid), 0) AS n FROM logs");
    let index: Vec<TokenSecond> = diesel::sql_query(
        "SELECT second, token, topic, service, events FROM log_token_seconds ORDER BY second, token, topic, service",
    )
    .load(&mut conn)
    .expect("reading log_token_seconds");
    let rows: Vec<TokenSecond> = diesel::sql_query(
        "SELECT (l.ts - ((l.ts % 1000000) + 1000000) % 1000000) / 1000000 AS second, t.value AS token, l.topic AS topic, \
         l.service AS service, count(DISTINCT l.rowid) AS events FROM logs AS l, json_each(l.tokens) AS t \
         WHERE l.rowid <= ?1 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
    )
    .bind::<BigInt, _>(mark)
    .load(&mut conn)
    .expect("counting the rows up to the mark");
    assert!(mark <= newest, "mark {mark} above the newest row {newest}");
    assert_eq!(index.len(), rows.len(), "index rows against the rows up to mark {mark}");
    assert!(index == rows, "the keyword index differs from the rows up to mark {mark}");
    (mark, newest)
}

/// The keyword answers (`source=sqlite`: the index plus the rows above its mark) and a search
/// paged to the end, against what the file's rows are known to hold by their ids.
async fn assert_keyword_answers(port: u16, truth: &Truth, at: i64) {
    for service in [None, Some("checkout"), Some("search-api")] {
        let service_param = service.map(|s| format!("&service={s}")).unwrap_or_default();
        let want = truth.keyword(at, 3_600, "steady", service);
        assert!(want > 0);
        let path = format!("/stats/keywords?q=steady&window=1h&at={at}{service_param}&source=sqlite");
        let (status, answer) = get_json(port, &path).await;
        assert_eq!((status, answer["source"].as_str()), (200, Some("sqlite")), "{path}: {answer}");
        assert_eq!(answer["count"], want, "{path}");

        let mut found = 0_u64;
        let mut cursor: Option<String> = None;
        for page in 0.. {
            assert!(page < 1_000, "paging does not end");
            let after = cursor.as_deref().map(|c| format!("&cursor={c}")).unwrap_or_default();
            let path = format!("/logs?q=steady{service_param}&limit=1000&to={at}{after}");
            let (status, body) = get_json(port, &path).await;
            assert_eq!(status, 200, "{path}: {body}");
            found += body["events"].as_array().expect("events").len() as u64;
            match body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        // Every stored row is within the hour before `at`: the search finds the same rows.
        assert_eq!(found, want, "GET /logs?q=steady{service_param}");
    }
}

#[tokio::test]
async fn kill_9_while_the_keyword_indexer_is_behind_counts_every_row_once_and_answers_stay_exact() {
    let dir = EmbeddedDir::create();
    let db = dir.db_path();
    // A slow indexer: 300 rows a pass, 100 ms between passes (~3,000 rows/s at best) under the load's
    // 5,000 lines/s, so that each kill finds it behind, and sometimes in a pass.
    let slow = [("SQLITE_INDEX_CHUNK_ROWS", "300"), ("SQLITE_INDEX_INTERVAL_MS", "100")];
    let mut app = spawn_embedded(&dir, &slow);
    wait_up(&mut app).await;
    let load = SteadyLoad::start(app.port, Duration::from_millis(20));
    let mut behind_at_kill = Vec::new();
    for kill in 0..3 {
        load.wait_acknowledged(30).await;
        app.process.kill9();
        let (mark, newest) = assert_index_is_the_rows_up_to_the_mark(&db);
        eprintln!("kill -9 #{}: indexed up to rowid {mark} of {newest}", kill + 1);
        behind_at_kill.push(newest - mark);
        app = spawn_embedded(&dir, &slow);
        wait_up(&mut app).await;
        load.retarget(app.port);
    }
    load.wait_acknowledged(20).await;
    let outcomes = load.finish().await;
    app.process.kill9();
    let (mark, newest) = assert_index_is_the_rows_up_to_the_mark(&db);
    behind_at_kill.push(newest - mark);
    assert!(behind_at_kill.iter().all(|&b| b > 0), "the indexer was behind at every kill: {behind_at_kill:?}");

    // What the file holds, by the ids of the lines sent.
    let sent: HashMap<String, (i64, &'static str, bool)> = outcomes
        .iter()
        .flat_map(|(request, ts_ms, _)| {
            (0..LINES_PER_REQUEST).map(move |j| {
                let (service, error) = load_line(*request, j);
                (format!("r{request}-{j}"), (ts_ms.div_euclid(1000), service, error))
            })
        })
        .collect();
    let stored: Vec<String> = stored_eids(&db).into_iter().map(|e| e.expect("every row has its eid")).collect();
    assert_eq!(stored.iter().collect::<HashSet<_>>().len(), stored.len(), "no line stored twice");
    let truth = Truth {
        events: stored
            .iter()
            .map(|id| {
                let (second, service, error) = sent[id];
                (second, service.to_owned(), error, vec!["steady".to_owned()])
            })
            .collect(),
    };
    let at = truth.events.iter().map(|e| e.0).max().unwrap() + 1;

    // Restarted with the indexer all but stopped (one row a pass, an hour between passes): the
    // answers come from the rows above its mark.
    let stopped = [("SQLITE_INDEX_CHUNK_ROWS", "1"), ("SQLITE_INDEX_INTERVAL_MS", "3600000")];
    let mut app = spawn_embedded(&dir, &stopped);
    wait_up(&mut app).await;
    app.wait_memory_ready().await;
    let (mark, newest) = assert_index_is_the_rows_up_to_the_mark(&db);
    assert!(newest - mark > 1_000, "the indexer is behind by {} rows", newest - mark);
    assert_keyword_answers(app.port, &truth, at).await;
    drop(app);

    // With its defaults it catches up; the lag shows on /metrics and /debug/actors, and goes to 0.
    let mut app = spawn_embedded(&dir, &[]);
    wait_up(&mut app).await;
    let admin = app.admin_port;
    let mark_line = format!("log_analyzer_sqlite_indexed_rowid {newest}");
    let mark_line = &mark_line;
    eventually("the keyword indexer caught up", Duration::from_secs(60), || async move {
        let (status, body) = http(admin, "GET", "/metrics", b"", &[]).await?;
        let text = String::from_utf8_lossy(&body).into_owned();
        let caught_up = text.lines().any(|l| l == "log_analyzer_sqlite_index_lag_rows 0")
            && text.lines().any(|l| l == mark_line.as_str());
        (status == 200 && caught_up).then_some(())
    })
    .await;
    let (status, actors) = get_json(admin, "/debug/actors").await;
    assert_eq!(status, 200);
    let indexer = actors["actors"]
        .as_array()
        .and_then(|list| list.iter().find(|a| a["actor"] == "keyword_indexer"))
        .cloned()
        .unwrap_or_else(|| panic!("no keyword_indexer in /debug/actors: {actors}"));
    assert_eq!((indexer["running"].as_bool(), indexer["lag_rows"].as_i64()), (Some(true), Some(0)), "{indexer}");
    assert_eq!(indexer["indexed_rowid"].as_i64(), Some(newest), "{indexer}");
    let (mark, newest) = assert_index_is_the_rows_up_to_the_mark(&db);
    assert_eq!(mark, newest);
    assert_keyword_answers(app.port, &truth, at).await;
    drop(app);
}

// ---------------------------------------------------------------------------------------------
// The daily summary on SQLite

type UserRow = crate::summary::UserRow;

#[derive(QueryableByName)]
struct SummaryRow {
    #[diesel(sql_type = Text)]
    user_id: String,
    #[diesel(sql_type = BigInt)]
    total: i64,
    #[diesel(sql_type = BigInt)]
    errors: i64,
    #[diesel(sql_type = BigInt)]
    warnings: i64,
    #[diesel(sql_type = Double)]
    error_rate: f64,
    #[diesel(sql_type = Text)]
    services: String,
    #[diesel(sql_type = BigInt)]
    first_seen: i64,
    #[diesel(sql_type = BigInt)]
    last_seen: i64,
    #[diesel(sql_type = Text)]
    top_keywords: String,
}

#[derive(QueryableByName)]
struct KeywordRow {
    #[diesel(sql_type = Text)]
    keyword: String,
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// What the summary tables of the file hold for `day`, in the shape `summary::expected` gives.
fn stored_summary(path: &Path, day: NaiveDate) -> (Vec<UserRow>, Vec<(String, i64)>) {
    let mut conn = sqlite(path);
    let micros = |us: i64| chrono::TimeZone::timestamp_micros(&Utc, us).unwrap();
    let users = diesel::sql_query(
        "SELECT user_id, total, errors, warnings, error_rate, services, first_seen, last_seen, top_keywords \
         FROM user_log_summary WHERE day = ? ORDER BY user_id",
    )
    .bind::<Text, _>(day.to_string())
    .load::<SummaryRow>(&mut conn)
    .expect("reading user_log_summary")
    .into_iter()
    .map(|r| {
        let services: Vec<String> = serde_json::from_str(&r.services).expect("services is a JSON array");
        let top: Value = serde_json::from_str(&r.top_keywords).expect("top_keywords is JSON");
        (
            r.user_id,
            r.total,
            r.errors,
            r.warnings,
            r.error_rate,
            services,
            micros(r.first_seen),
            micros(r.last_seen),
            top,
        )
    })
    .collect();
    let mut keywords: Vec<(String, i64)> = diesel::sql_query("SELECT keyword, count FROM keyword_daily WHERE day = ?")
        .bind::<Text, _>(day.to_string())
        .load::<KeywordRow>(&mut conn)
        .expect("reading keyword_daily")
        .into_iter()
        .map(|r| (r.keyword, r.count))
        .collect();
    keywords.sort_by(|a, b| a.0.cmp(&b.0));
    (users, keywords)
}

fn ok_runs(path: &Path, day: NaiveDate) -> i64 {
    count(
        path,
        &format!("SELECT count(*) AS n FROM job_runs WHERE job = 'summary' AND status = 'ok' AND day = '{day}'"),
    )
}

/// The summary's events as NDJSON lines, with their microsecond timestamps.
fn summary_lines(events: &[crate::summary::Ev]) -> Vec<String> {
    const NAMES: [&str; 6] = ["trace", "debug", "info", "warn", "error", "fatal"];
    events
        .iter()
        .map(|e| {
            let mut line = json!({"ts": e.ts.to_rfc3339_opts(SecondsFormat::Micros, true),
                                  "level": NAMES[e.level as usize], "service": e.service, "message": e.message});
            if let Some(u) = &e.user_id {
                line["user_id"] = json!(u);
            }
            line.to_string()
        })
        .collect()
}

fn assert_summary(path: &Path, day: NaiveDate, events: &[crate::summary::Ev]) {
    let (users, keywords) = stored_summary(path, day);
    let (want_users, want_keywords) = crate::summary::expected(events, day);
    assert_eq!(users.len(), want_users.len(), "users summarized for {day}");
    for (got, want) in users.iter().zip(&want_users) {
        assert_eq!(got, want, "{day}: user {}", want.0);
    }
    assert!(users.iter().any(|u| u.0 == "(none)"), "events without user_id are summarized under (none)");
    assert_eq!(keywords, want_keywords, "{day}: keyword_daily");
}

#[tokio::test]
async fn the_summary_job_and_the_schedulers_run_summarize_sqlite_exactly() {
    let dir = EmbeddedDir::create();
    let today = Utc::now().date_naive();
    let (day, yesterday) = (crate::summary::test_day(), today - Days::new(1));
    let mut events = crate::summary::generate(5, day, 3_000);
    events.extend(crate::summary::generate(6, yesterday, 3_000));

    // First process: SUMMARY_AT 23:59 makes the day before yesterday its last due day (unless the
    // test runs in the day's last minute), so its scheduler leaves yesterday for the second one.
    let mut first = spawn_embedded(&dir, &[("SUMMARY_AT", "23:59")]);
    wait_up(&mut first).await;
    for chunk in summary_lines(&events).chunks(2_000) {
        let (status, answer) = post(first.port, chunk.join("\n").as_bytes()).await;
        assert_eq!((status, answer["accepted"].as_u64()), (202, Some(chunk.len() as u64)), "{answer}");
    }
    let status = first.process.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", first.process.log_tail());
    assert_eq!(count(&dir.db_path(), "SELECT count(*) AS n FROM logs"), events.len() as i64);
    assert_eq!(ok_runs(&dir.db_path(), yesterday), 0, "yesterday is not due for the first process");

    // `summary --date D`, and again: the same rows.
    let day_text = day.to_string();
    for run in 1..=2 {
        let mut job = spawn_child(&dir, &["summary", "--date", &day_text], &[]);
        let status = crate::summary::wait_exit(&mut job, Duration::from_secs(60)).await;
        assert!(status.success(), "summary run {run}: {}", job.log_tail());
        assert_summary(&dir.db_path(), day, &events);
        assert_eq!(ok_runs(&dir.db_path(), day), run);
    }

    // Second process: SUMMARY_AT 00:00 makes yesterday due; its scheduler catches up at start.
    let mut second = spawn_embedded(&dir, &[("SUMMARY_AT", "00:00")]);
    eventually("the scheduler summarized yesterday", Duration::from_secs(60), || async {
        (ok_runs(&dir.db_path(), yesterday) == 1).then_some(())
    })
    .await;
    assert_summary(&dir.db_path(), yesterday, &events);
    wait_up(&mut second).await;
    let (status, answer) = get_json(second.port, &format!("/stats/summary?date={yesterday}&user_id=lonely")).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.to_string().contains("lonely"), "{answer}");
    drop(second);
}

// ---------------------------------------------------------------------------------------------
// Dead letters on SQLite

fn replay_report(dir: &EmbeddedDir) -> Value {
    let mut replay = spawn_child(dir, &["rejects", "replay"], &[]);
    let status = replay.child.wait().expect("rejects replay");
    assert!(status.success(), "{}", replay.log_tail());
    let output = std::fs::read_to_string(&replay.log_path).unwrap();
    let line =
        output.lines().find(|l| l.starts_with(r#"{"replayed""#)).unwrap_or_else(|| panic!("no report: {output}"));
    serde_json::from_str(line).unwrap()
}

#[tokio::test]
async fn dead_letters_on_sqlite_are_listed_and_replayed_exactly_once() {
    let dir = EmbeddedDir::create();
    // INPUT_FORMAT=json: text lines are `not_json` dead letters; the default (auto) makes them events.
    let mut app = spawn_embedded(&dir, &[("INPUT_FORMAT", "json")]);
    wait_up(&mut app).await;
    let now_ms = Utc::now().timestamp_millis();
    let mut lines = Vec::new();
    for i in 0..10 {
        lines.push(format!(r#"{{"ts":{now_ms},"level":"info","service":"web","message":"fine {i}","eid":"v{i}"}}"#));
    }
    for i in 0..6 {
        lines.push(format!("2026-12-01 10:00:0{i} ERROR worker {i} lost its upstream: timeout"));
    }
    for i in 0..3 {
        lines.push(format!("{{broken {i}"));
    }
    for i in 0..2 {
        lines.push(format!(r#"{{"level":"loud","service":"web","message":"m {i}"}}"#));
    }
    let (status, answer) = post(app.port, lines.join("\n").as_bytes()).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!((answer["accepted"].as_u64(), answer["rejected"].as_u64()), (Some(10), Some(11)), "{answer}");
    let db = dir.db_path();
    assert_eq!(count(&db, "SELECT count(*) AS n FROM log_rejects WHERE source = 'http'"), 11);
    let status = app.process.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", app.process.log_tail());

    let report = replay_report(&dir);
    assert_eq!(report["replayed"], 6, "{report}");
    assert_eq!(report["still_invalid"], json!({"not_json": 3, "bad_level": 2}), "{report}");
    assert_eq!(count(&db, "SELECT count(*) AS n FROM logs"), 16);
    assert_eq!(count(&db, "SELECT count(*) AS n FROM logs WHERE message LIKE '%lost its upstream: timeout'"), 6);
    assert_eq!(count(&db, "SELECT count(*) AS n FROM logs WHERE level = 4 AND message LIKE '%ERROR worker%'"), 6);
    assert_eq!(count(&db, "SELECT count(*) AS n FROM log_rejects WHERE replayed_at IS NOT NULL"), 6);

    let again = replay_report(&dir);
    assert_eq!(again["replayed"], 0, "a second replay adds nothing: {again}");
    assert_eq!(count(&db, "SELECT count(*) AS n FROM logs"), 16);

    let mut list = spawn_child(&dir, &["rejects", "list", "--reason", "bad_level"], &[]);
    assert!(list.child.wait().unwrap().success(), "{}", list.log_tail());
    let listed = std::fs::read_to_string(&list.log_path).unwrap();
    assert_eq!(listed.lines().filter(|l| l.contains("\tbad_level\t")).count(), 2, "{listed}");
}

// ---------------------------------------------------------------------------------------------
// Nothing configured

/// The defaults a start with nothing configured takes: HTTP_ADDR, ADMIN_ADDR, GRPC_ADDR.
const DEFAULT_ADDRS: [&str; 3] = ["0.0.0.0:8080", "127.0.0.1:9090", "0.0.0.0:4317"];

#[tokio::test]
async fn a_start_with_nothing_configured_in_an_empty_directory_answers_and_keeps_its_file_there() {
    for addr in DEFAULT_ADDRS {
        if let Err(e) = std::net::TcpListener::bind(addr) {
            panic!("{addr} is taken ({e}): this test starts the binary on its default ports; free it and rerun");
        }
    }
    let dir = EmbeddedDir::create();
    let log_path = dir.path.join("run.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_log-analyzer"));
    command
        .arg("run")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
        .current_dir(&dir.path)
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let child = command.spawn().expect("starting log-analyzer");
    let mut app = App { process: ChildProcess { child, log_path }, port: 8080, admin_port: 9090 };
    wait_up(&mut app).await;

    let now = Utc::now();
    let body = [
        json!({"ts": now.timestamp_millis(), "level": "info", "service": "web", "message": "hello"}),
        json!({"ts": now.timestamp_millis(), "level": "error", "service": "web", "message": "upstream timeout"}),
        json!({"ts": now.timestamp_millis(), "level": "warn", "service": "db", "message": "slow"}),
    ]
    .map(|l| l.to_string())
    .join("\n");
    let (status, answer) = post(8080, body.as_bytes()).await;
    assert_eq!(status, 202, "{answer}\n{}", app.process.log_tail());
    assert_eq!(answer["accepted"], 3, "{answer}");
    app.wait_memory_ready().await;
    // Memory folds a batch in right after its commit: a moment after the 202 at most.
    let at = now.timestamp() + 1;
    let want = json!({"total": 3, "errors": 1, "source": "memory", "by_service": [
        {"service": "web", "total": 2, "errors": 1}, {"service": "db", "total": 1, "errors": 0}]});
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, answer) = get_json(8080, &format!("/stats/errors?window=1m&at={at}")).await;
        let got = pick(&answer, &["total", "errors", "by_service", "source"]);
        if status == 200 && got == want {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status} {answer}\nwant {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dir.path.join("log-analyzer.db").is_file(), "./log-analyzer.db is where the data lives");
    assert_eq!(count(&dir.path.join("log-analyzer.db"), "SELECT count(*) AS n FROM logs"), 3);
    // The in-process queue stamps each line when POST /ingest accepts it: its consumer timed each
    // take from that moment, a moment ago.
    let (status, body) = http(9090, "GET", "/metrics", b"", &[]).await.unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body).into_owned();
    let value = |name: &str| -> f64 {
        let line = text.lines().find(|l| l.split(' ').next() == Some(name));
        line.and_then(|l| l.split(' ').nth(1)).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no {name}"))
    };
    assert_eq!(value("log_analyzer_consumer_take_delay_seconds_count"), 3.0);
    assert!(value("log_analyzer_consumer_take_delay_seconds_sum") < 30.0);
    let status = app.process.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", app.process.log_tail());
}
