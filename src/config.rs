//! Settings from the environment (envy); a `.env` file is loaded first when present (see main.rs).
//! Every field is listed with its default in `.env.example`; a test keeps the two in step.

use std::fmt;
use std::net::SocketAddr;

use actors::domain::Window;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// All settings of every role. Field `foo_bar` is read from the variable `FOO_BAR`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Settings {
    /// Kafka bootstrap servers, comma-separated `host:port`; empty: the embedded in-process queue.
    #[serde(default = "defaults::kafka_brokers")]
    pub kafka_brokers: String,
    /// Topics the logs arrive on, comma-separated: `migrate` creates each; ingest consumes them all in one group.
    #[serde(default = "defaults::kafka_topic")]
    pub kafka_topic: String,
    /// Consumer group shared by every ingest process.
    #[serde(default = "defaults::kafka_group")]
    pub kafka_group: String,
    /// This process's stable name in the group (static membership): a restart under the same name
    /// takes its partitions back at once instead of after the session timeout. Unique per process.
    #[serde(default, deserialize_with = "named::optional_text")]
    pub instance_id: Option<String>,
    /// Partitions given to the topic when `migrate` creates it.
    #[serde(default = "defaults::kafka_partitions")]
    pub kafka_partitions: i32,
    /// `sqlite://PATH` (embedded mode, with KAFKA_BROKERS empty) or a `postgres://` URL (the stack).
    #[serde(default = "defaults::database_url")]
    pub database_url: Secret,
    /// Connections per process in the PostgreSQL pool used for queries.
    #[serde(default = "defaults::database_pool_size")]
    pub database_pool_size: u32,
    /// Redis connection URL (stack only); empty: no Redis.
    #[serde(default = "defaults::redis_url")]
    pub redis_url: Secret,
    /// Prefix of every Redis key, so several deployments or tests can share one Redis.
    #[serde(default = "defaults::redis_prefix")]
    pub redis_prefix: String,
    /// Public HTTP listener (stats API, ingest).
    #[serde(default = "defaults::http_addr", deserialize_with = "named::http_addr")]
    pub http_addr: SocketAddr,
    /// Admin listener (metrics, debug, profiles): keep it private.
    #[serde(default = "defaults::admin_addr", deserialize_with = "named::admin_addr")]
    pub admin_addr: SocketAddr,
    /// gRPC listener (OTLP/gRPC, the loganalyzer.v1 API); empty turns it off.
    #[serde(default = "defaults::grpc_addr", deserialize_with = "named::grpc_addr")]
    pub grpc_addr: Option<SocketAddr>,
    /// `term` or `json`; unset means `term` on a terminal, else `json`.
    #[serde(default, deserialize_with = "named::log_format")]
    pub log_format: Option<LogFormat>,
    /// trace, debug, info, warn, error or critical.
    #[serde(default = "defaults::log_level", deserialize_with = "named::log_level")]
    pub log_level: LogLevel,
    /// How much recent history the in-memory windows hold.
    #[serde(default = "defaults::window_horizon", deserialize_with = "named::window_horizon")]
    pub window_horizon: Window,
    /// Keywords counted exactly in memory, comma-separated.
    #[serde(default = "defaults::tracked_keywords")]
    pub tracked_keywords: Vec<String>,
    /// Longest accepted `message`, in bytes.
    #[serde(default = "defaults::max_message_bytes")]
    pub max_message_bytes: usize,
    /// Days of logs kept; older events are rejected and older partitions dropped.
    #[serde(default = "defaults::retention_days")]
    pub retention_days: u32,
    /// Time of day (UTC, `HH:MM`) when the scheduler summarizes the previous day.
    #[serde(default = "defaults::summary_at", deserialize_with = "named::summary_at")]
    pub summary_at: chrono::NaiveTime,
    /// A consumer sends its batch when it holds this many messages… (unset or empty: the mode's
    /// default, [`Settings::batch_max_events`]).
    #[serde(default, deserialize_with = "named::batch_max_events")]
    pub batch_max_events: Option<usize>,
    /// …or when its oldest message has waited this many milliseconds.
    #[serde(default = "defaults::batch_max_wait_ms")]
    pub batch_max_wait_ms: u64,
    /// `on`: every actor message is timed (handling-time histogram, blocked senders); `off`: only
    /// counted (depth, handled), to measure the instrumentation's cost.
    #[serde(default = "defaults::mailbox_metrics", deserialize_with = "named::on_off")]
    pub mailbox_metrics: bool,
    /// Number of WriterActors (each holds one PostgreSQL connection for COPY).
    #[serde(default = "defaults::writer_count")]
    pub writer_count: usize,
    /// Seconds ahead of the clock that the live windows still bucket (clock skew of producers).
    #[serde(default = "defaults::window_skew_seconds")]
    pub window_skew_seconds: i64,
    /// Services with per-service buckets in memory; events of more are counted in the totals only.
    #[serde(default = "defaults::max_live_services")]
    pub max_live_services: usize,
    /// A Redis call gives up after this many milliseconds (the answer then comes from PostgreSQL).
    #[serde(default = "defaults::redis_timeout_ms")]
    pub redis_timeout_ms: u64,
    /// Redis sums a window's bucket fields only up to this many in all; past it the window is left
    /// to PostgreSQL (Redis runs one script at a time: a long sum stalls every other call).
    #[serde(default = "defaults::redis_max_window_fields")]
    pub redis_max_window_fields: u64,
    /// A PostgreSQL stats query gives up after this many milliseconds.
    #[serde(default = "defaults::database_timeout_ms")]
    pub database_timeout_ms: u64,
    /// Most rows one page of a log search (GET /logs, `log-analyzer search`) examines; a page that
    /// reaches it answers what it found with `truncated: true` and a cursor to go on from.
    #[serde(default = "defaults::search_max_scan")]
    pub search_max_scan: u64,
    /// Embedded mode: the keyword indexer's pause (ms) after each pass.
    #[serde(default = "defaults::sqlite_index_interval_ms")]
    pub sqlite_index_interval_ms: u64,
    /// Embedded mode: rows the keyword indexer counts per transaction at most.
    #[serde(default = "defaults::sqlite_index_chunk_rows")]
    pub sqlite_index_chunk_rows: usize,
    /// Ingest gives up on a batch write or an offset load after this many milliseconds, drops the
    /// connection and retries (the partition waits; nothing is skipped).
    #[serde(default = "defaults::database_write_timeout_ms")]
    pub database_write_timeout_ms: u64,
    /// Rebuilding the live windows from PostgreSQL gives up after this many milliseconds and retries.
    #[serde(default = "defaults::database_rebuild_timeout_ms")]
    pub database_rebuild_timeout_ms: u64,
    /// JSON names tried for the event time, in order (comma-separated; replaces the default list).
    #[serde(default = "defaults::fields_ts", deserialize_with = "named::field_list")]
    pub fields_ts: Vec<String>,
    /// JSON names tried for the level, in order.
    #[serde(default = "defaults::fields_level", deserialize_with = "named::field_list")]
    pub fields_level: Vec<String>,
    /// JSON names tried for the service, in order.
    #[serde(default = "defaults::fields_service", deserialize_with = "named::field_list")]
    pub fields_service: Vec<String>,
    /// JSON names tried for the message, in order.
    #[serde(default = "defaults::fields_message", deserialize_with = "named::field_list")]
    pub fields_message: Vec<String>,
    /// JSON names tried for the user id, in order.
    #[serde(default = "defaults::fields_user", deserialize_with = "named::field_list")]
    pub fields_user: Vec<String>,
    /// `auto`: JSON objects and text lines are events; `json`: text lines are `not_json` rejects.
    #[serde(default, deserialize_with = "named::input_format")]
    pub input_format: InputFormatSetting,
    /// Service of events that name none (before the topic name); empty: the topic.
    #[serde(default, deserialize_with = "named::default_service")]
    pub default_service: Option<String>,
    /// Level of events that state none and whose message shows none.
    #[serde(default = "defaults::default_level", deserialize_with = "named::default_level")]
    pub default_level: actors::domain::Level,
    /// Largest accepted POST /ingest body, in bytes.
    #[serde(default = "defaults::ingest_max_body_bytes")]
    pub ingest_max_body_bytes: usize,
    /// POST /ingest waits this many milliseconds at most for Kafka to acknowledge a body's lines.
    #[serde(default = "defaults::ingest_timeout_ms")]
    pub ingest_timeout_ms: u64,
    /// HS256 secret: when set, /stats/* and /ingest require a Bearer token signed with it.
    #[serde(default, deserialize_with = "named::optional_secret")]
    pub jwt_secret: Option<Secret>,
    /// RS256/ES256 public key (PEM text, or the path of a PEM file): the alternative to JWT_SECRET.
    #[serde(default, deserialize_with = "named::optional_text")]
    pub jwt_public_key: Option<String>,
    /// HS256, RS256 or ES256; empty: HS256 with JWT_SECRET, RS256 with JWT_PUBLIC_KEY.
    #[serde(default, deserialize_with = "named::optional_text")]
    pub jwt_algorithm: Option<String>,
    /// Required `iss` of tokens, when set.
    #[serde(default, deserialize_with = "named::optional_text")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` of tokens, when set.
    #[serde(default, deserialize_with = "named::optional_text")]
    pub jwt_audience: Option<String>,
    /// When set, the admin listener's mutating and profiling routes require `Bearer <this>`.
    #[serde(default, deserialize_with = "named::optional_secret")]
    pub admin_token: Option<Secret>,
    /// Requests per second allowed to one client IP on the public API; 0 turns the limit off.
    #[serde(default)]
    pub rate_limit_rps: u32,
    /// Requests one client IP may send at once above its rate; 0 means the same as RATE_LIMIT_RPS.
    #[serde(default)]
    pub rate_limit_burst: u32,
    /// A client must send a request's headers within this many milliseconds, or it is cut.
    #[serde(default = "defaults::http_request_timeout_ms")]
    pub http_request_timeout_ms: u64,
    /// A client must send a whole request body within this many milliseconds (else 408).
    #[serde(default = "defaults::http_body_timeout_ms")]
    pub http_body_timeout_ms: u64,
    /// GET /logs/tail sends a heartbeat comment this often (milliseconds) on a quiet stream.
    #[serde(default = "defaults::tail_heartbeat_ms")]
    pub tail_heartbeat_ms: u64,
    /// Events one tail client may have waiting; one that falls further behind is cut.
    #[serde(default = "defaults::tail_buffer_events")]
    pub tail_buffer_events: usize,
    /// Live tails one process serves at once; more are answered 503.
    #[serde(default = "defaults::tail_max_clients")]
    pub tail_max_clients: usize,
    /// `on`: ingest writers announce each committed batch (pg_notify) so tails in any process see it.
    #[serde(default = "defaults::tail_notify", deserialize_with = "named::on_off")]
    pub tail_notify: bool,
    /// `on`: PostgreSQL answers of long windows' `by_service` rankings keep their per-service counts
    /// and answer the next second from the rows that changed (`db::ranking`); `off`: count in full.
    #[serde(default = "defaults::ranking_kept", deserialize_with = "named::on_off")]
    pub ranking_kept: bool,
    /// Whether ADMIN_ADDR was set: only its default may give way to a free port when taken.
    #[serde(skip)]
    pub admin_addr_given: bool,
}

impl Settings {
    /// The live tail's bounds.
    pub fn tail_limits(&self) -> actors::tail::TailLimits {
        actors::tail::TailLimits { buffer_events: self.tail_buffer_events, max_clients: self.tail_max_clients }
    }
}

mod defaults {
    use super::*;
    use actors::domain::resolve;

    pub fn kafka_brokers() -> String {
        String::new()
    }
    pub fn kafka_topic() -> String {
        "logs".into()
    }
    pub fn kafka_group() -> String {
        "log-analyzer".into()
    }
    pub fn kafka_partitions() -> i32 {
        6
    }
    pub fn database_url() -> Secret {
        Secret("sqlite://log-analyzer.db".into())
    }
    pub fn database_pool_size() -> u32 {
        8
    }
    pub fn redis_url() -> Secret {
        Secret(String::new())
    }
    pub fn redis_prefix() -> String {
        "la".into()
    }
    pub fn http_addr() -> SocketAddr {
        ([0, 0, 0, 0], 8080).into()
    }
    pub fn admin_addr() -> SocketAddr {
        ([127, 0, 0, 1], 9090).into()
    }
    pub fn grpc_addr() -> Option<SocketAddr> {
        Some(([0, 0, 0, 0], 4317).into())
    }
    pub fn log_level() -> LogLevel {
        LogLevel(slog::Level::Info)
    }
    pub fn window_horizon() -> Window {
        Window::from_seconds(3_600).expect("non-zero")
    }
    pub fn tracked_keywords() -> Vec<String> {
        ["timeout", "refused", "denied", "exception", "panic", "failed", "unavailable", "deadline"]
            .map(String::from)
            .to_vec()
    }
    pub fn max_message_bytes() -> usize {
        16 * 1024
    }
    pub fn retention_days() -> u32 {
        30
    }
    pub fn summary_at() -> chrono::NaiveTime {
        chrono::NaiveTime::from_hms_opt(0, 10, 0).expect("a valid time")
    }
    /// With Kafka and PostgreSQL: two writers' binary COPYs of this many rows keep up with the
    /// partitions (docs/BENCHMARKS.md, ingest).
    pub fn batch_max_events() -> usize {
        5_000
    }
    /// The embedded mode's one SQLite writer: every commit rewrites the `logs_ts` pages its rows'
    /// times land on and the checkpoints copy them again, so fewer, larger transactions are most of
    /// what ingest can gain (docs/BENCHMARKS.md, "Where embedded ingest's time goes": 50,000-event
    /// batches took 22 server CPU s per 1M events against 29-33 at 5,000). Two partitions, each with a
    /// batch being written and one filling, fill the queue's 65,536 lines at this size.
    pub fn embedded_batch_max_events() -> usize {
        16_384
    }
    pub fn batch_max_wait_ms() -> u64 {
        50
    }
    pub fn mailbox_metrics() -> bool {
        true
    }
    pub fn writer_count() -> usize {
        2
    }
    pub fn window_skew_seconds() -> i64 {
        60
    }
    pub fn max_live_services() -> usize {
        actors::windows::aggregator::DEFAULT_MAX_LIVE_SERVICES
    }
    pub fn redis_timeout_ms() -> u64 {
        50
    }
    pub fn redis_max_window_fields() -> u64 {
        crate::cache::DEFAULT_MAX_WINDOW_FIELDS
    }
    pub fn database_timeout_ms() -> u64 {
        2_000
    }
    pub fn search_max_scan() -> u64 {
        crate::db::search::DEFAULT_MAX_SCAN
    }
    pub fn sqlite_index_interval_ms() -> u64 {
        crate::sqlite::indexer::DEFAULT_INTERVAL_MS
    }
    pub fn sqlite_index_chunk_rows() -> usize {
        crate::sqlite::indexer::DEFAULT_CHUNK_ROWS
    }
    pub fn database_write_timeout_ms() -> u64 {
        10_000
    }
    pub fn database_rebuild_timeout_ms() -> u64 {
        60_000
    }
    pub fn ingest_max_body_bytes() -> usize {
        8 * 1024 * 1024
    }
    pub fn ingest_timeout_ms() -> u64 {
        5_000
    }
    fn own(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }
    pub fn fields_ts() -> Vec<String> {
        own(resolve::DEFAULT_TS)
    }
    pub fn fields_level() -> Vec<String> {
        own(resolve::DEFAULT_LEVEL)
    }
    pub fn fields_service() -> Vec<String> {
        own(resolve::DEFAULT_SERVICE)
    }
    pub fn fields_message() -> Vec<String> {
        own(resolve::DEFAULT_MESSAGE)
    }
    pub fn fields_user() -> Vec<String> {
        own(resolve::DEFAULT_USER)
    }
    pub fn default_level() -> actors::domain::Level {
        actors::domain::Level::Info
    }
    pub fn http_request_timeout_ms() -> u64 {
        5_000
    }
    pub fn tail_heartbeat_ms() -> u64 {
        15_000
    }
    pub fn tail_buffer_events() -> usize {
        10_000
    }
    pub fn tail_max_clients() -> usize {
        100
    }
    pub fn tail_notify() -> bool {
        true
    }
    pub fn ranking_kept() -> bool {
        true
    }
    pub fn http_body_timeout_ms() -> u64 {
        30_000
    }
}

/// Parsers for fields whose errors would otherwise not say which variable is wrong.
mod named {
    use super::*;
    use serde::de::Error;

    pub fn window_horizon<'de, D: Deserializer<'de>>(d: D) -> Result<Window, D::Error> {
        let text = String::deserialize(d)?;
        Window::parse_unbounded(&text).map_err(|e| D::Error::custom(format!("WINDOW_HORIZON: {e}")))
    }

    fn socket_addr<E: Error>(name: &str, text: &str) -> Result<SocketAddr, E> {
        text.parse().map_err(|e| E::custom(format!("{name}: {text:?} is not host:port with an IP address ({e})")))
    }

    pub fn http_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        socket_addr("HTTP_ADDR", &String::deserialize(d)?)
    }

    pub fn admin_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        socket_addr("ADMIN_ADDR", &String::deserialize(d)?)
    }

    /// Empty means "no gRPC listener".
    pub fn grpc_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim().is_empty() {
            return Ok(None);
        }
        socket_addr("GRPC_ADDR", text.trim()).map(Some)
    }

    /// `on`/`off` (also `true`/`false`).
    pub fn on_off<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        match String::deserialize(d)?.trim().to_ascii_lowercase().as_str() {
            "on" | "true" => Ok(true),
            "off" | "false" => Ok(false),
            other => Err(D::Error::custom(format!("{other:?} is neither on nor off"))),
        }
    }

    /// Empty means "choose by terminal".
    pub fn log_format<'de, D: Deserializer<'de>>(d: D) -> Result<Option<LogFormat>, D::Error> {
        match String::deserialize(d)?.to_ascii_lowercase().as_str() {
            "" => Ok(None),
            "term" => Ok(Some(LogFormat::Term)),
            "json" => Ok(Some(LogFormat::Json)),
            other => Err(D::Error::custom(format!("LOG_FORMAT: {other:?} is neither term nor json"))),
        }
    }

    pub fn summary_at<'de, D: Deserializer<'de>>(d: D) -> Result<chrono::NaiveTime, D::Error> {
        let text = String::deserialize(d)?;
        chrono::NaiveTime::parse_from_str(text.trim(), "%H:%M")
            .or_else(|_| chrono::NaiveTime::parse_from_str(text.trim(), "%H:%M:%S"))
            .map_err(|_| D::Error::custom(format!("SUMMARY_AT: {text:?} is not a time of day HH:MM (UTC)")))
    }

    /// Empty means unset.
    pub fn optional_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let text = String::deserialize(d)?;
        Ok((!text.trim().is_empty()).then_some(text))
    }

    /// `BATCH_MAX_EVENTS`: a count, or empty for the mode's default.
    pub fn batch_max_events<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        let text = String::deserialize(d)?;
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse::<usize>().map(Some).map_err(|_| {
            D::Error::custom(format!(
                "BATCH_MAX_EVENTS={text:?} is not a whole number (or leave it empty for the default)"
            ))
        })
    }

    pub fn optional_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
        Ok(optional_text(d)?.map(Secret))
    }

    /// Comma-separated names; blanks around names are dropped.
    pub fn field_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        let text = String::deserialize(d)?;
        let names: Vec<String> = text.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect();
        if names.is_empty() {
            return Err(D::Error::custom("FIELDS_*: name at least one field (or leave the variable unset)"));
        }
        Ok(names)
    }

    pub fn input_format<'de, D: Deserializer<'de>>(d: D) -> Result<InputFormatSetting, D::Error> {
        let text = String::deserialize(d)?;
        actors::domain::InputFormat::parse(&text)
            .map(InputFormatSetting)
            .ok_or_else(|| D::Error::custom(format!("INPUT_FORMAT: {text:?} is neither auto nor json")))
    }

    pub fn default_service<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let Some(name) = optional_text(d)? else { return Ok(None) };
        actors::domain::ServiceName::parse(name.trim())
            .map(|s| Some(s.into_inner()))
            .map_err(|e| D::Error::custom(format!("DEFAULT_SERVICE {e}")))
    }

    pub fn default_level<'de, D: Deserializer<'de>>(d: D) -> Result<actors::domain::Level, D::Error> {
        let text = String::deserialize(d)?;
        actors::domain::Level::parse(text.trim()).map_err(|e| D::Error::custom(format!("DEFAULT_LEVEL: {e}")))
    }

    pub fn log_level<'de, D: Deserializer<'de>>(d: D) -> Result<LogLevel, D::Error> {
        let text = String::deserialize(d)?;
        parse_log_level(&text).map(LogLevel).map_err(|e| D::Error::custom(format!("LOG_LEVEL: {e}")))
    }
}

/// Shortest JWT_SECRET accepted: HS256's output size.
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// A configuration problem, named so the operator can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid environment: {0}")]
    Env(#[from] envy::Error),
    #[error("{name}: {problem}")]
    Invalid { name: &'static str, problem: String },
}

/// Where events go and answers come from, chosen by `KAFKA_BROKERS` and `DATABASE_URL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One process: the in-process queue, SQLite, no Redis.
    Embedded,
    /// Kafka, PostgreSQL and (when `REDIS_URL` is set) Redis.
    Stack,
}

/// What to set to get each backend, for the errors of a mix that is neither.
const BACKEND_HELP: &str = "leave KAFKA_BROKERS empty and DATABASE_URL empty or sqlite://PATH for the embedded mode, \
     or set KAFKA_BROKERS and a postgres:// DATABASE_URL for the full stack \
     (`scripts/stack.sh env` prints the stack's variables)";

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Settings, ConfigError> {
        Settings::from_vars(std::env::vars())
    }

    /// Reads settings from `(NAME, value)` pairs (tests use this instead of the process environment).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Settings, ConfigError> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let mut settings: Settings = envy::from_iter(vars.iter().cloned())?;
        settings.admin_addr_given =
            vars.iter().any(|(k, v)| k.eq_ignore_ascii_case("ADMIN_ADDR") && !v.trim().is_empty());
        settings.check()?;
        Ok(settings)
    }

    /// Cross-field and range rules that serde cannot express.
    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |name, problem: &str| Err(ConfigError::Invalid { name, problem: problem.to_owned() });
        if self.kafka_partitions < 1 {
            return invalid("KAFKA_PARTITIONS", "must be at least 1");
        }
        if self.kafka_topics().is_empty() {
            return invalid("KAFKA_TOPIC", "must not be empty");
        }
        if let Some(id) = &self.instance_id {
            // Kafka refuses other names at JoinGroup; saying so here names the setting.
            let legal = id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !legal || id.len() > 249 || id == "." || id == ".." {
                return invalid("INSTANCE_ID", "use at most 249 of a-z A-Z 0-9 . _ - (not . or ..)");
            }
        }
        if self.retention_days < 1 {
            return invalid("RETENTION_DAYS", "must be at least 1");
        }
        if self.window_horizon.seconds() > u64::from(self.retention_days) * 86_400 {
            return invalid("WINDOW_HORIZON", "must not be longer than RETENTION_DAYS");
        }
        if self.max_message_bytes == 0 {
            return invalid("MAX_MESSAGE_BYTES", "must be at least 1");
        }
        if self.batch_max_events == Some(0) || self.writer_count == 0 || self.database_pool_size == 0 {
            return invalid("BATCH_MAX_EVENTS/WRITER_COUNT/DATABASE_POOL_SIZE", "must be at least 1");
        }
        if self.window_skew_seconds < 0 {
            return invalid("WINDOW_SKEW_SECONDS", "must not be negative");
        }
        if self.max_live_services == 0 {
            return invalid("MAX_LIVE_SERVICES", "must be at least 1");
        }
        if self.redis_timeout_ms == 0 || self.database_timeout_ms == 0 || self.ingest_max_body_bytes == 0 {
            return invalid("REDIS_TIMEOUT_MS/DATABASE_TIMEOUT_MS/INGEST_MAX_BODY_BYTES", "must be at least 1");
        }
        if self.search_max_scan == 0 {
            return invalid("SEARCH_MAX_SCAN", "must be at least 1");
        }
        if self.sqlite_index_interval_ms == 0 || self.sqlite_index_chunk_rows == 0 {
            return invalid("SQLITE_INDEX_INTERVAL_MS/SQLITE_INDEX_CHUNK_ROWS", "must be at least 1");
        }
        if self.ingest_timeout_ms == 0 {
            return invalid("INGEST_TIMEOUT_MS", "must be at least 1");
        }
        if self.database_write_timeout_ms == 0 || self.database_rebuild_timeout_ms == 0 {
            return invalid("DATABASE_WRITE_TIMEOUT_MS/DATABASE_REBUILD_TIMEOUT_MS", "must be at least 1");
        }
        if self.tail_heartbeat_ms == 0 || self.tail_buffer_events == 0 || self.tail_max_clients == 0 {
            return invalid("TAIL_HEARTBEAT_MS/TAIL_BUFFER_EVENTS/TAIL_MAX_CLIENTS", "must be at least 1");
        }
        if self.http_request_timeout_ms == 0 || self.http_body_timeout_ms == 0 {
            return invalid("HTTP_REQUEST_TIMEOUT_MS/HTTP_BODY_TIMEOUT_MS", "must be at least 1");
        }
        if let Some(secret) = &self.jwt_secret {
            // RFC 7518 §3.2: an HS256 key shorter than the hash (32 bytes) can be brute-forced offline.
            if secret.expose().len() < MIN_HS256_SECRET_BYTES {
                return invalid(
                    "JWT_SECRET",
                    &format!(
                        "an HS256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes (this one is {}); \
                         make one with `openssl rand -base64 32`",
                        secret.expose().len()
                    ),
                );
            }
        }
        if self.jwt_secret.is_some() && self.jwt_public_key.is_some() {
            return invalid("JWT_SECRET/JWT_PUBLIC_KEY", "set one, not both");
        }
        if let Some(alg) = &self.jwt_algorithm {
            let fits = match (alg.as_str(), self.jwt_secret.is_some(), self.jwt_public_key.is_some()) {
                ("HS256", true, _) => true,
                ("RS256" | "ES256", _, true) => true,
                (_, false, false) => return invalid("JWT_ALGORITHM", "set JWT_SECRET or JWT_PUBLIC_KEY too"),
                _ => false,
            };
            if !fits {
                return invalid("JWT_ALGORITHM", "use HS256 with JWT_SECRET, RS256 or ES256 with JWT_PUBLIC_KEY");
            }
        }
        for keyword in &self.tracked_keywords {
            if let Err(e) = actors::domain::Keyword::parse(keyword) {
                return invalid("TRACKED_KEYWORDS", &e.to_string());
            }
        }
        self.backend().map(drop)
    }

    /// The backend `KAFKA_BROKERS` and `DATABASE_URL` select; any other mix says what to set.
    /// `BATCH_MAX_EVENTS`, or the mode's default when it is not set: larger in the embedded mode,
    /// whose one SQLite writer gains most from fewer transactions.
    pub fn batch_max_events(&self) -> usize {
        self.batch_max_events.unwrap_or_else(|| match self.backend() {
            Ok(Backend::Embedded) => defaults::embedded_batch_max_events(),
            _ => defaults::batch_max_events(),
        })
    }

    pub fn backend(&self) -> Result<Backend, ConfigError> {
        let url = self.database_url.expose().trim();
        let brokers = !self.kafka_brokers.trim().is_empty();
        let sqlite = crate::sqlite::is_sqlite_url(url);
        let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
        let invalid = |name, problem: String| Err(ConfigError::Invalid { name, problem });
        match (brokers, sqlite, postgres) {
            (false, true, _) => {
                if !self.redis_url.expose().trim().is_empty() {
                    return invalid(
                        "REDIS_URL",
                        format!("the embedded mode uses no Redis: leave REDIS_URL empty, or {BACKEND_HELP}"),
                    );
                }
                crate::sqlite::path_of(url)
                    .map(|_| Backend::Embedded)
                    .or_else(|e| invalid("DATABASE_URL", format!("{e:#}")))
            }
            (true, false, true) => Ok(Backend::Stack),
            (true, true, _) => invalid(
                "KAFKA_BROKERS/DATABASE_URL",
                format!("KAFKA_BROKERS is set but DATABASE_URL is SQLite: {BACKEND_HELP}"),
            ),
            (false, false, true) => invalid(
                "KAFKA_BROKERS/DATABASE_URL",
                format!("DATABASE_URL is PostgreSQL but KAFKA_BROKERS is empty: {BACKEND_HELP}"),
            ),
            (_, false, false) => invalid(
                "DATABASE_URL",
                format!("neither sqlite: nor postgres:// (it starts {:?}): {BACKEND_HELP}", scheme(url)),
            ),
        }
    }

    /// The embedded store's file (`DATABASE_URL`), for the embedded mode.
    pub fn sqlite_db(&self) -> anyhow::Result<crate::sqlite::SqliteDb> {
        crate::sqlite::SqliteDb::from_url(self.database_url.expose().trim())
    }

    /// The tracked keywords, parsed.
    pub fn keywords(&self) -> Vec<actors::domain::Keyword> {
        self.tracked_keywords.iter().filter_map(|k| actors::domain::Keyword::parse(k).ok()).collect()
    }

    /// The rules LogEvent::parse applies.
    pub fn parse_rules(&self) -> actors::domain::ParseRules {
        actors::domain::ParseRules {
            max_message_bytes: self.max_message_bytes,
            retention_days: self.retention_days,
            input_format: self.input_format.0,
            default_service: self.default_service.as_deref().and_then(|s| actors::domain::ServiceName::parse(s).ok()),
            default_level: self.default_level,
            fields: std::sync::Arc::new(actors::domain::FieldNames {
                ts: self.fields_ts.clone(),
                level: self.fields_level.clone(),
                service: self.fields_service.clone(),
                message: self.fields_message.clone(),
                user: self.fields_user.clone(),
            }),
        }
    }

    /// The topics of `KAFKA_TOPIC` (a comma-separated list), in the order given, without repeats.
    pub fn kafka_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = Vec::new();
        for topic in self.kafka_topic.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if !topics.iter().any(|t| t == topic) {
                topics.push(topic.to_owned());
            }
        }
        topics
    }

    /// The topic events are produced to (POST /ingest, the generator): the first of `KAFKA_TOPIC`.
    pub fn primary_topic(&self) -> &str {
        self.kafka_topic.split(',').map(str::trim).find(|t| !t.is_empty()).unwrap_or("logs")
    }
}

/// The scheme of a URL (never its credentials), for an error message.
fn scheme(url: &str) -> &str {
    url.split_once(':').map_or(url.get(..url.len().min(8)).unwrap_or(""), |(scheme, _)| scheme)
}

/// A value that must not show up in logs (URLs may carry passwords).
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself: only for handing to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

/// `INPUT_FORMAT`, shown by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InputFormatSetting(pub actors::domain::InputFormat);

impl Serialize for InputFormatSetting {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self.0 {
            actors::domain::InputFormat::Auto => "auto",
            actors::domain::InputFormat::Json => "json",
        })
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Term,
    Json,
}

/// A slog level read from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLevel(pub slog::Level);

impl Serialize for LogLevel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

/// Parses `trace|debug|info|warn|warning|error|critical` (case-insensitive).
pub fn parse_log_level(name: &str) -> Result<slog::Level, String> {
    match name.to_ascii_lowercase().as_str() {
        "trace" => Ok(slog::Level::Trace),
        "debug" => Ok(slog::Level::Debug),
        "info" => Ok(slog::Level::Info),
        "warn" | "warning" => Ok(slog::Level::Warning),
        "error" => Ok(slog::Level::Error),
        "critical" | "crit" => Ok(slog::Level::Critical),
        _ => Err(format!("unknown log level {name:?}: use trace, debug, info, warn, error or critical")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_match_the_design() {
        let s = Settings::from_vars(vec![]).unwrap();
        assert_eq!(s.kafka_brokers, "");
        assert_eq!(s.kafka_topic, "logs");
        assert_eq!(s.kafka_partitions, 6);
        assert_eq!(s.database_url.expose(), "sqlite://log-analyzer.db");
        assert_eq!(s.redis_url.expose(), "");
        assert_eq!(s.backend().unwrap(), Backend::Embedded);
        assert_eq!(s.sqlite_db().unwrap().path(), std::path::Path::new("log-analyzer.db"));
        assert_eq!(s.http_addr.port(), 8080);
        assert_eq!(s.admin_addr.to_string(), "127.0.0.1:9090");
        assert_eq!(s.grpc_addr.map(|a| a.to_string()).as_deref(), Some("0.0.0.0:4317"));
        assert_eq!(s.window_horizon.seconds(), 3_600);
        assert_eq!(s.max_message_bytes, 16_384);
        assert_eq!(s.retention_days, 30);
        assert_eq!(s.batch_max_events(), 16_384, "embedded");
        assert_eq!(s.writer_count, 2);
        assert_eq!(s.summary_at.to_string(), "00:10:00");
        assert!(s.tracked_keywords.contains(&"timeout".to_string()));
    }

    #[test]
    fn values_are_read_and_lists_split_on_commas() {
        let s = Settings::from_vars(vars(&[
            ("KAFKA_PARTITIONS", "3"),
            ("TRACKED_KEYWORDS", "oom,Timeout"),
            ("WINDOW_HORIZON", "2h"),
            ("LOG_FORMAT", "json"),
            ("LOG_LEVEL", "Warning"),
        ]))
        .unwrap();
        assert_eq!(s.kafka_partitions, 3);
        assert_eq!(s.tracked_keywords, vec!["oom", "Timeout"]);
        assert_eq!(s.window_horizon.seconds(), 7_200);
        assert_eq!(s.log_format, Some(LogFormat::Json));
        assert_eq!(s.log_level.0, slog::Level::Warning);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases = [
            (("KAFKA_PARTITIONS", "0"), "KAFKA_PARTITIONS"),
            (("KAFKA_PARTITIONS", "many"), "kafka_partitions"),
            (("WINDOW_HORIZON", "1 hour"), "window_horizon"),
            (("WINDOW_HORIZON", "31d"), "WINDOW_HORIZON"),
            (("LOG_LEVEL", "loud"), "log_level"),
            (("TRACKED_KEYWORDS", "two words"), "TRACKED_KEYWORDS"),
            (("HTTP_ADDR", "localhost"), "http_addr"),
            (("ADMIN_ADDR", "x:1"), "ADMIN_ADDR"),
            (("LOG_FORMAT", "xml"), "LOG_FORMAT"),
            (("SUMMARY_AT", "25:00"), "SUMMARY_AT"),
            (("SUMMARY_AT", "midnight"), "SUMMARY_AT"),
            (("JWT_SECRET", "short-secret"), "JWT_SECRET"),
            (("RATE_LIMIT_RPS", "-1"), "rate_limit_rps"),
            (("HTTP_BODY_TIMEOUT_MS", "0"), "HTTP_BODY_TIMEOUT_MS"),
            (("INSTANCE_ID", "ingest 1"), "INSTANCE_ID"),
            (("INSTANCE_ID", ".."), "INSTANCE_ID"),
        ];
        for ((name, value), expect) in cases {
            let err = Settings::from_vars(vars(&[(name, value)])).unwrap_err().to_string();
            let named = err.to_ascii_uppercase().contains(&expect.to_ascii_uppercase());
            assert!(named, "{name}={value}: {err:?} should name {expect}");
        }
    }

    #[test]
    fn instance_id_is_optional_and_kept_as_given() {
        assert_eq!(Settings::from_vars(vars(&[])).unwrap().instance_id, None);
        assert_eq!(Settings::from_vars(vars(&[("INSTANCE_ID", "")])).unwrap().instance_id, None);
        let id = Settings::from_vars(vars(&[("INSTANCE_ID", "ingest-2.eu_west")])).unwrap().instance_id;
        assert_eq!(id.as_deref(), Some("ingest-2.eu_west"));
    }

    const STACK: [(&str, &str); 3] = [
        ("KAFKA_BROKERS", "127.0.0.1:9092"),
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/log_analyzer"),
        ("REDIS_URL", "redis://127.0.0.1:6379"),
    ];

    #[test]
    fn batch_max_events_defaults_by_mode_and_a_set_value_wins_in_both() {
        let batch = |pairs: &[(&str, &str)]| Settings::from_vars(vars(pairs)).unwrap().batch_max_events();
        assert_eq!(batch(&[]), 16_384);
        assert_eq!(batch(&STACK), 5_000);
        assert_eq!(batch(&[("BATCH_MAX_EVENTS", "")]), 16_384, "empty is unset");
        assert_eq!(batch(&[("BATCH_MAX_EVENTS", "700")]), 700);
        let stack_700: Vec<_> = STACK.iter().copied().chain([("BATCH_MAX_EVENTS", "700")]).collect();
        assert_eq!(batch(&stack_700), 700);
        for bad in ["0", "-3", "lots"] {
            let err = Settings::from_vars(vars(&[("BATCH_MAX_EVENTS", bad)])).unwrap_err().to_string();
            assert!(err.to_ascii_uppercase().contains("BATCH_MAX_EVENTS"), "{bad}: {err}");
        }
    }

    #[test]
    fn kafka_brokers_and_database_url_select_the_backend() {
        let backend = |pairs: &[(&str, &str)]| Settings::from_vars(vars(pairs)).map(|s| s.backend().unwrap());
        assert_eq!(backend(&[]).unwrap(), Backend::Embedded);
        assert_eq!(backend(&[("DATABASE_URL", "")]).unwrap(), Backend::Embedded);
        assert_eq!(backend(&[("DATABASE_URL", "sqlite:///tmp/x/la.db")]).unwrap(), Backend::Embedded);
        assert_eq!(backend(&[("DATABASE_URL", "sqlite:la.db"), ("KAFKA_BROKERS", " ")]).unwrap(), Backend::Embedded);
        assert_eq!(backend(&STACK).unwrap(), Backend::Stack);
        assert_eq!(backend(&STACK[..2]).unwrap(), Backend::Stack, "the stack runs without Redis too");
        let stack_pg = [STACK[0], ("DATABASE_URL", "postgresql://u@db/x")];
        assert_eq!(backend(&stack_pg).unwrap(), Backend::Stack);
    }

    #[test]
    fn a_mix_of_the_two_backends_says_what_to_set() {
        let cases: [&[(&str, &str)]; 5] = [
            &[("KAFKA_BROKERS", "127.0.0.1:9092")],
            &[("KAFKA_BROKERS", "127.0.0.1:9092"), ("DATABASE_URL", "sqlite://x.db")],
            &[("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/log_analyzer")],
            &[("DATABASE_URL", "mysql://u:hunter2@db/x")],
            &[("REDIS_URL", "redis://127.0.0.1:6379")],
        ];
        for pairs in cases {
            let err = Settings::from_vars(vars(pairs)).unwrap_err().to_string();
            assert!(err.contains("KAFKA_BROKERS") && err.contains("DATABASE_URL"), "{pairs:?}: {err}");
            assert!(err.contains("postgres://") && err.contains("sqlite://"), "{pairs:?}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        let err = Settings::from_vars(vars(&[("DATABASE_URL", "sqlite::memory:")])).unwrap_err().to_string();
        assert!(err.contains("names no file"), "{err}");
    }

    #[test]
    fn secrets_never_print() {
        let s = Settings::from_vars(vars(&[STACK[0], ("DATABASE_URL", "postgres://u:hunter2@db/x")])).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&s).unwrap().contains("hunter2"));
    }

    /// `.env.example` lists exactly the variables Settings reads, and its values parse.
    #[test]
    fn env_example_and_settings_cannot_drift() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example")).unwrap();
        let mut example: Vec<(String, String)> = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (name, value) = line.split_once('=').unwrap_or_else(|| panic!("not NAME=value: {line}"));
            example.push((name.trim().to_string(), value.trim().to_string()));
        }
        let mut documented: Vec<String> = example.iter().map(|(k, _)| k.clone()).collect();
        documented.sort();
        let settings = Settings::from_vars(example.clone()).expect(".env.example values must parse");
        let serde_json::Value::Object(fields) = serde_json::to_value(&settings).unwrap() else { unreachable!() };
        let mut read: Vec<String> = fields.keys().map(|k| k.to_ascii_uppercase()).collect();
        read.sort();
        assert_eq!(documented, read, ".env.example and Settings disagree");
    }
}
