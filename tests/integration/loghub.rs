//! Real logs nobody here wrote: the eight Loghub samples (see `../shared/data/loghub/README.md`;
//! Zhu et al., *Loghub*, ISSRE 2023), sent with kcat as plain-text Kafka values and again in Vector's
//! envelope. Checks: nothing rejected, the stored message is the line, the detected level matches
//! Loghub's hand-labelled `Level` column, and the API's keyword counts match the raw lines.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use actors::domain::{tokenize, Level};
use serde_json::{json, Value};

use crate::api::spawn_role;
use crate::helpers::*;
use crate::ingest::IngestEnv;

pub(crate) const SYSTEMS: [&str; 8] = ["Apache", "HDFS", "Hadoop", "Zookeeper", "Spark", "Android", "OpenSSH", "Linux"];
/// Accuracy required of the detected level, per system with a level column.
const LEVEL_GOAL: f64 = 0.99;

/// Where the samples are: `LOGHUB_DIR`, else `../shared/data/loghub` beside the repository, else the
/// shared machine's copy.
fn loghub_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("LOGHUB_DIR") {
        return PathBuf::from(dir);
    }
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/loghub");
    if beside.is_dir() {
        return beside;
    }
    PathBuf::from("/work/shared/data/loghub")
}

pub(crate) struct Sample {
    pub(crate) system: &'static str,
    pub(crate) path: PathBuf,
    /// The raw lines without their line endings.
    pub(crate) lines: Vec<String>,
    /// Loghub's `Level` for each line, when the system has levels.
    pub(crate) levels: Option<Vec<Level>>,
}

pub(crate) fn load(system: &'static str) -> Sample {
    let dir = loghub_dir().join(system);
    let path = dir.join(format!("{system}_2k.log"));
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (set LOGHUB_DIR)", path.display()));
    let lines: Vec<String> = String::from_utf8(raw)
        .expect("Loghub lines are UTF-8")
        .split('\n')
        .map(|l| l.trim_end_matches(['\r', '\n']).to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    let csv = std::fs::read_to_string(dir.join(format!("{system}_2k.log_structured.csv"))).expect("structured CSV");
    let mut rows = csv.lines();
    let header = csv_fields(rows.next().expect("CSV header"));
    let level_column = header.iter().position(|h| h == "Level");
    let levels = level_column.and_then(|column| {
        let levels: Option<Vec<Level>> =
            rows.map(|row| Level::from_name(csv_fields(row).get(column)?.as_str())).collect();
        levels // Linux's column holds host names: no levels there
    });
    if let Some(levels) = &levels {
        assert_eq!(levels.len(), lines.len(), "{system}: one CSV row per line");
    }
    Sample { system, path, lines, levels }
}

/// The fields of one CSV record (quoted fields may hold commas and doubled quotes).
fn csv_fields(row: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = row.trim_end_matches('\r').chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().expect("a field").push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => fields.last_mut().expect("a field").push(c),
        }
    }
    fields
}

/// `kcat -P -l`: each line of `file` becomes one message value.
fn kcat_produce(brokers: &str, topic: &str, file: &Path) {
    let status = std::process::Command::new("kcat")
        .args(["-P", "-b", brokers, "-t", topic, "-p", "0", "-l"])
        .arg(file)
        .status()
        .expect("running kcat (scripts/stack.sh up installs it)");
    assert!(status.success(), "kcat failed on {}", file.display());
}

#[tokio::test]
async fn loghub_lines_as_text_and_in_vector_envelopes_resolve_to_their_level_and_line() {
    let samples: Vec<Sample> = SYSTEMS.into_iter().map(load).collect();
    let env = IngestEnv::create(1).await;
    let sent_at = chrono::Utc::now();
    for sample in &samples {
        kcat_produce(&env.brokers, &env.topic, &sample.path);
    }
    let envelopes = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{}.ndjson", unique("vector")));
    let mut body = String::new();
    for sample in &samples {
        for line in &sample.lines {
            let envelope = json!({"message": line, "host": "loghub", "file": sample.path.to_string_lossy(),
                                  "timestamp": sent_at.to_rfc3339(), "source_type": "file"});
            body.push_str(&envelope.to_string());
            body.push('\n');
        }
    }
    std::fs::write(&envelopes, body).unwrap();
    kcat_produce(&env.brokers, &env.topic, &envelopes);
    let per_copy: usize = samples.iter().map(|s| s.lines.len()).sum();
    let total = 2 * per_copy as i64;

    let app = spawn_role(&env, "run", &stack().redis_url, &unique("la_loghub"));
    let client = env.db.client().await;
    env.wait_stored(&client, total, Duration::from_secs(180)).await;
    let rejects: i64 = client.query_one("SELECT count(*) FROM log_rejects", &[]).await.unwrap().get(0);
    let reasons: Vec<(String, String)> = client
        .query("SELECT reason, detail FROM log_rejects LIMIT 5", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rejects, 0, "first rejects: {reasons:?}");

    let rows = client.query("SELECT message, level, attrs FROM logs ORDER BY \"offset\"", &[]).await.unwrap();
    assert_eq!(rows.len() as i64, total, "one stored event per message");
    let mut report = BTreeMap::new();
    for (copy, kind) in [(0, "text"), (1, "vector")] {
        let mut offset = copy * per_copy;
        for sample in &samples {
            let mut right = 0;
            for (i, line) in sample.lines.iter().enumerate() {
                let row = &rows[offset + i];
                let message: String = row.get(0);
                assert_eq!(&message, line, "{kind} {} line {}", sample.system, i + 1);
                if kind == "vector" {
                    let attrs: Value = row.get(2);
                    assert_eq!(attrs["source_type"], "file", "{} line {}", sample.system, i + 1);
                }
                if let Some(levels) = &sample.levels {
                    right += usize::from(Level::from_i16(row.get::<_, i16>(1)) == Some(levels[i]));
                }
            }
            if sample.levels.is_some() {
                let accuracy = right as f64 / sample.lines.len() as f64;
                report.insert(format!("{kind}/{}", sample.system), accuracy);
            }
            offset += sample.lines.len();
        }
    }
    eprintln!("loghub level accuracy: {report:?}");
    for (system, accuracy) in &report {
        assert!(*accuracy >= LEVEL_GOAL, "{system}: detected level right for {:.2} % of lines", accuracy * 100.0);
    }

    // Keyword counts: the API against the raw lines tokenized by the same core function (×2 copies).
    let mut truth: BTreeMap<String, u64> = BTreeMap::new();
    for line in samples.iter().flat_map(|s| &s.lines) {
        for token in tokenize(line) {
            *truth.entry(token).or_default() += 2;
        }
    }
    let keywords = ["error", "info", "warn", "failed", "session", "block", "connection", "packetresponder", "root"];
    let at = (chrono::Utc::now() + chrono::Duration::seconds(5)).timestamp();
    app.wait_listening().await;
    for keyword in keywords {
        let want = truth.get(keyword).copied().unwrap_or(0);
        assert!(want > 0, "{keyword} should occur in the samples");
        for source in ["", "&source=postgres"] {
            let path = format!("/stats/keywords?q={keyword}&window=2h&at={at}{source}");
            let answer = eventually(&path, Duration::from_secs(30), || {
                let path = path.clone();
                async move {
                    let (status, answer) = get_json(app.port, &path).await;
                    (status == 200).then_some(answer)
                }
            })
            .await;
            assert_eq!(answer["count"], json!(want), "{path}: {answer}");
        }
    }
    let _ = std::fs::remove_file(&envelopes);
    drop(client);
    drop(app);
    env.db.drop_db().await;
}

/// Dead letters of the old strict parser (`missing_field`, `not_json`) that today's resolution
/// understands come back with `rejects replay --reason missing_field`, through the same function.
#[tokio::test]
async fn old_missing_field_dead_letters_replay_through_the_resolution() {
    let env = IngestEnv::create(1).await;
    let client = env.db.client().await;
    let now = chrono::Utc::now();
    let rows: [(&str, &str, i64); 4] = [
        (r#"{"level":50,"time":0,"name":"checkout","msg":"pino line"}"#, "missing_field", 0),
        (r#"{"log.level":"warn","service.name":"storage","message":"ecs line"}"#, "missing_field", 1),
        (r#"{"level":"info","service":"s"}"#, "missing_field", 2),
        ("Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user webmaster", "not_json", 3),
    ];
    for (raw, reason, offset) in rows {
        // pino's `time: 0` would be 1970: use the Kafka timestamp instead by leaving it out.
        let raw = raw.replace(r#""time":0,"#, "");
        client
            .execute(
                "INSERT INTO log_rejects (source, topic, \"partition\", \"offset\", reason, detail, raw, raw_len, kafka_ts) \
                 VALUES ('kafka', $1, 0, $2, $3, 'old parser', $4, $5, $6)",
                &[&env.topic, &offset, &reason, &raw.as_bytes(), &(raw.len() as i32), &now],
            )
            .await
            .unwrap();
    }
    let settings = settings(&[("DATABASE_URL", &env.db.url), ("KAFKA_TOPIC", &env.topic)]);
    let filter = log_analyzer::db::rejects::RejectFilter { since: None, reason: Some("missing_field".into()) };
    let report = log_analyzer::jobs::rejects_replay(&settings, &filter).await.unwrap();
    assert_eq!(report.replayed, 2);
    assert_eq!(report.still_invalid, BTreeMap::from([("missing_field".to_string(), 1)]));
    let stored: Vec<(i64, String, i16, String)> = client
        .query("SELECT \"offset\", service, level, message FROM logs ORDER BY \"offset\"", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        stored,
        vec![
            (0, "checkout".into(), Level::Error.as_i16(), "pino line".into()),
            (1, "storage".into(), Level::Warn.as_i16(), "ecs line".into()),
        ]
    );
    let filter = log_analyzer::db::rejects::RejectFilter { since: None, reason: Some("not_json".into()) };
    let report = log_analyzer::jobs::rejects_replay(&settings, &filter).await.unwrap();
    assert_eq!(report.replayed, 1);
    let sshd: String = client.query_one("SELECT service FROM logs WHERE \"offset\" = 3", &[]).await.unwrap().get(0);
    assert_eq!(sshd, "sshd");
    drop(client);
    env.db.drop_db().await;
}

/// `POST /ingest?dry_run=true` answers like `parse` and stores nothing; `?service=S` names the
/// service of lines without one all the way through Kafka to PostgreSQL.
#[tokio::test]
async fn post_ingest_dry_run_and_service_parameter() {
    let env = IngestEnv::create(1).await;
    let app = spawn_role(&env, "run", &stack().redis_url, &unique("la_dry"));
    app.wait_listening().await;
    let body = "{\"level\":30,\"msg\":\"pino\",\"name\":\"checkout\"}\n<11>Feb  5 17:32:18 web1 nginx[12]: upstream timed out\n{bad\n";
    let (status, raw) = http(app.port, "POST", "/ingest?dry_run=true", body.as_bytes(), &[]).await.unwrap();
    let answer: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(status, 200, "{answer}");
    let lines = answer["lines"].as_array().unwrap();
    assert_eq!(
        (lines[0]["event"]["service"].as_str(), lines[0]["event"]["level"].as_str()),
        (Some("checkout"), Some("info"))
    );
    assert_eq!(
        (lines[1]["event"]["service"].as_str(), lines[1]["event"]["level"].as_str()),
        (Some("nginx"), Some("error"))
    );
    assert_eq!((lines[2]["line"].as_u64(), lines[2]["reject"]["reason"].as_str()), (Some(3), Some("not_json")));

    let long = "s".repeat(200);
    let (status, _) = http(app.port, "POST", &format!("/ingest?service={long}"), b"x", &[]).await.unwrap();
    assert_eq!(status, 400);

    let body = "plain WARN line without a service\n{\"msg\":\"has its own\",\"app\":\"own\"}\n";
    let (status, raw) = http(app.port, "POST", "/ingest?service=websvc", body.as_bytes(), &[]).await.unwrap();
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&raw));
    let client = env.db.client().await;
    env.wait_stored(&client, 2, Duration::from_secs(60)).await;
    let stored: Vec<(String, i16, String)> = client
        .query("SELECT service, level, message FROM logs ORDER BY \"offset\"", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        stored,
        vec![
            ("websvc".into(), Level::Warn.as_i16(), "plain WARN line without a service".into()),
            ("own".into(), Level::Info.as_i16(), "has its own".into()),
        ],
        "the dry run stored nothing, and ?service= reached the consumer"
    );
    drop(client);
    drop(app);
    env.db.drop_db().await;
}
