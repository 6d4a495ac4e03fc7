//! A log event as it arrives (a JSON object in any common shape, or a text line), resolved once at
//! the edge by one function that every input path calls (DESIGN §4).

use std::sync::Arc;

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde_json::Value;

use super::detect::detect_level;
use super::level::Level;
use super::object::{self, Attrs, RawObject};
use super::resolve::{self, FieldNames};
use super::service::{ServiceName, UserId};
use super::text;
use super::timestamp;
use super::tokens::Tokens;

/// Most keys allowed in `attrs` (the fields beyond the known ones).
pub const MAX_ATTRS: usize = 32;
/// How much of a rejected payload is kept in the dead-letter row.
pub const REJECT_RAW_PREFIX_BYTES: usize = 4096;
/// Room for the fields around `message` when judging a whole payload's size.
pub const ENVELOPE_ALLOWANCE_BYTES: usize = 64 * 1024;
/// The service of an event that names none and comes with no usable fallback.
pub const UNKNOWN_SERVICE: &str = "unknown";

/// The stable reason code of a dead-lettered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    NotUtf8,
    NotJson,
    NotObject,
    MissingField,
    BadLevel,
    BadTs,
    TsOutOfRange,
    TooLarge,
    BadField,
    StoreRejected,
    Empty,
}

impl RejectReason {
    pub const ALL: [RejectReason; 11] = [
        RejectReason::NotUtf8,
        RejectReason::NotJson,
        RejectReason::NotObject,
        RejectReason::MissingField,
        RejectReason::BadLevel,
        RejectReason::BadTs,
        RejectReason::TsOutOfRange,
        RejectReason::TooLarge,
        RejectReason::BadField,
        RejectReason::StoreRejected,
        RejectReason::Empty,
    ];

    /// The code stored in `log_rejects.reason` and used as a metric label.
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::NotUtf8 => "not_utf8",
            RejectReason::NotJson => "not_json",
            RejectReason::NotObject => "not_object",
            RejectReason::MissingField => "missing_field",
            RejectReason::BadLevel => "bad_level",
            RejectReason::BadTs => "bad_ts",
            RejectReason::TsOutOfRange => "ts_out_of_range",
            RejectReason::TooLarge => "too_large",
            RejectReason::BadField => "bad_field",
            RejectReason::StoreRejected => "store_rejected",
            RejectReason::Empty => "empty",
        }
    }

    /// Its position in [`RejectReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The reason whose code is `code`.
    pub fn from_code(code: &str) -> Option<RejectReason> {
        RejectReason::ALL.into_iter().find(|r| r.code() == code)
    }
}

/// Why a payload is not a log event: a reason code and a sentence for whoever reads the dead letters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", reason.code())]
pub struct Reject {
    pub reason: RejectReason,
    pub detail: String,
}

impl Reject {
    fn new(reason: RejectReason, detail: impl Into<String>) -> Reject {
        Reject { reason, detail: detail.into() }
    }
}

/// Whether text that is not JSON is an event (`INPUT_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputFormat {
    /// JSON objects and text lines.
    #[default]
    Auto,
    /// JSON objects only: text is a `not_json` reject.
    Json,
}

impl InputFormat {
    pub fn parse(name: &str) -> Option<InputFormat> {
        match name.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(InputFormat::Auto),
            "json" => Some(InputFormat::Json),
            _ => None,
        }
    }
}

/// What resolving needs to know besides the bytes (the settings; cheap to clone).
#[derive(Debug, Clone)]
pub struct ParseRules {
    /// Longest `message`, in bytes (`MAX_MESSAGE_BYTES`).
    pub max_message_bytes: usize,
    /// Days of history kept (`RETENTION_DAYS`): older events cannot be stored.
    pub retention_days: u32,
    /// `INPUT_FORMAT`.
    pub input_format: InputFormat,
    /// `DEFAULT_SERVICE`: the service of events that name none (before the topic).
    pub default_service: Option<ServiceName>,
    /// `DEFAULT_LEVEL`: the level of events that state none and whose message shows none.
    pub default_level: Level,
    /// `FIELDS_*`: the names tried for each field.
    pub fields: Arc<FieldNames>,
}

impl Default for ParseRules {
    fn default() -> Self {
        ParseRules {
            max_message_bytes: 16 * 1024,
            retention_days: 30,
            input_format: InputFormat::Auto,
            default_service: None,
            default_level: Level::Info,
            fields: Arc::default(),
        }
    }
}

impl ParseRules {
    /// The largest whole payload accepted before any parsing.
    pub fn max_payload_bytes(&self) -> usize {
        self.max_message_bytes + ENVELOPE_ALLOWANCE_BYTES
    }

    /// Earliest storable event time: midnight UTC `retention_days` before `now`'s day.
    pub fn earliest(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let today = now.duration_trunc(Duration::days(1)).unwrap_or(now);
        today - Duration::days(i64::from(self.retention_days))
    }

    /// Latest storable event time: one day ahead of `now`.
    pub fn latest(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + Duration::days(1)
    }
}

/// What the caller knows about a message that its payload may not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fallback<'a> {
    /// The time of an event without one: the Kafka message timestamp, or the HTTP receive time.
    /// `None` falls back to `now`.
    pub ts: Option<DateTime<Utc>>,
    /// The service of an event that names none: the Kafka topic, the HTTP `service` parameter, or `unknown`.
    pub service: &'a str,
    /// True when a client asked for `service` explicitly (`POST /ingest?service=`): it then wins over
    /// `DEFAULT_SERVICE`, which in turn wins over a topic name.
    pub service_requested: bool,
}

impl<'a> Fallback<'a> {
    /// A Kafka message: its timestamp and its topic.
    pub fn kafka(ts: Option<DateTime<Utc>>, topic: &'a str) -> Fallback<'a> {
        Fallback { ts, service: topic, service_requested: false }
    }

    /// An HTTP line: the receive time and the request's `service` parameter, if any.
    pub fn http(received: DateTime<Utc>, service: Option<&'a str>) -> Fallback<'a> {
        Fallback {
            ts: Some(received),
            service: service.unwrap_or(UNKNOWN_SERVICE),
            service_requested: service.is_some(),
        }
    }

    fn service_name(&self, rules: &ParseRules) -> ServiceName {
        let own = || ServiceName::parse(self.service).ok();
        let requested = if self.service_requested { own() } else { None };
        requested
            .or_else(|| rules.default_service.clone())
            .or_else(own)
            .unwrap_or_else(|| ServiceName::parse(UNKNOWN_SERVICE).expect("a valid name"))
    }
}

/// A valid log event (DESIGN §4).
#[derive(Debug, Clone, PartialEq)]
pub struct LogEvent {
    /// Event time, at microsecond precision (what PostgreSQL keeps).
    pub ts: DateTime<Utc>,
    pub level: Level,
    pub service: ServiceName,
    pub message: String,
    pub user_id: Option<UserId>,
    /// Every other field of the object, as the JSON text of one object (see `object` for its order).
    pub attrs: Attrs,
    /// `tokenize(message)`, as ranges of one lowercased string.
    pub tokens: Tokens,
}

impl LogEvent {
    /// Resolves one payload — a JSON object in any shape §4 lists, or a text line — into an event.
    /// Every input path calls this, so all of them agree. `now` bounds the accepted time range.
    pub fn parse(
        raw: &[u8],
        fallback: Fallback<'_>,
        now: DateTime<Utc>,
        rules: &ParseRules,
    ) -> Result<LogEvent, Reject> {
        use RejectReason::*;
        if raw.len() > rules.max_payload_bytes() {
            return Err(Reject::new(
                TooLarge,
                format!("payload is {} bytes; at most {} are accepted", raw.len(), rules.max_payload_bytes()),
            ));
        }
        let text = std::str::from_utf8(raw)
            .map_err(|e| Reject::new(NotUtf8, format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
        let start = text.trim_start();
        if start.is_empty() {
            return Err(Reject::new(Empty, "the message is empty or only whitespace"));
        }
        if start.starts_with('{') {
            object::check_json(text).map_err(|e| Reject::new(NotJson, e.to_string()))?;
            // Valid JSON that starts with `{` is an object.
            let fields =
                RawObject::split(text).ok_or_else(|| Reject::new(NotObject, "expected a JSON object".to_string()))?;
            return resolve_object(fields, fallback, now, rules);
        }
        if text::may_be_json_scalar(start) {
            if let Ok(value) = serde_json::from_str::<Value>(text) {
                return Err(Reject::new(NotObject, format!("expected a JSON object, got {}", json_kind(&value))));
            }
        }
        if rules.input_format == InputFormat::Json {
            return Err(Reject::new(NotJson, "not a JSON object, and INPUT_FORMAT=json accepts nothing else"));
        }
        resolve_text(text, fallback, now, rules)
    }
}

impl LogEvent {
    /// The event as JSON, as `log-analyzer parse` and `POST /ingest?dry_run=true` show it.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "ts": self.ts.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            "level": self.level.as_str(),
            "service": self.service.as_str(),
            "message": self.message,
            "user_id": self.user_id.as_ref().map(|u| u.as_str()),
            "attrs": self.attrs.to_value(),
            "tokens": self.tokens,
        })
    }
}

impl Reject {
    /// The reject as JSON, beside [`LogEvent::to_json`].
    pub fn to_json(&self) -> Value {
        serde_json::json!({ "reason": self.reason.code(), "message": self.detail })
    }
}

fn resolve_object(
    mut fields: RawObject<'_>,
    fallback: Fallback<'_>,
    now: DateTime<Utc>,
    rules: &ParseRules,
) -> Result<LogEvent, Reject> {
    use RejectReason::*;
    let names = &*rules.fields;
    let message = match fields.take_first(&names.message, resolve::is_message_value) {
        Some((_, value)) => text::drop_one_line_ending(resolve::message_text(value)),
        None => {
            return Err(Reject::new(
                MissingField,
                format!("no message: none of {} holds a value", names.message.join(", ")),
            ))
        }
    };
    check_message(&message, rules)?;
    let level = match fields.take_first(&names.level, resolve::is_scalar) {
        Some((name, value)) => level_of(name, &value)?,
        None => detect_level(&message).unwrap_or(rules.default_level),
    };
    let service = match fields.take_first(&names.service, resolve::is_scalar) {
        Some((name, value)) => ServiceName::parse(resolve::scalar_text(value))
            .map_err(|e| Reject::new(BadField, format!("service (`{name}`) {e}")))?,
        None => fallback.service_name(rules),
    };
    let user_id = match fields.take_first(&names.user, resolve::is_scalar) {
        Some((name, value)) => Some(
            UserId::parse(resolve::scalar_text(value))
                .map_err(|e| Reject::new(BadField, format!("user_id (`{name}`) {e}")))?,
        ),
        None => None,
    };
    let ts = match fields.take_first(&names.ts, timestamp::is_time_value) {
        Some((name, value)) => {
            timestamp::parse_time_value(&value).map_err(|e| Reject::new(BadTs, format!("ts (`{name}`): {e}")))?
        }
        None => fallback.ts.unwrap_or(now),
    };
    let ts = check_ts(ts, now, rules)?;
    if fields.len() > MAX_ATTRS {
        return Err(Reject::new(
            BadField,
            format!("{} extra fields; at most {MAX_ATTRS} are kept in attrs", fields.len()),
        ));
    }
    // PostgreSQL text and jsonb cannot hold U+0000: such an event could never be stored.
    if user_id.as_ref().is_some_and(|u| u.as_str().contains('\0')) {
        return Err(Reject::new(BadField, "`user_id` contains U+0000, which cannot be stored"));
    }
    if fields.has_nul() {
        return Err(Reject::new(BadField, "an extra field contains U+0000, which cannot be stored"));
    }
    let tokens = Tokens::of(&message);
    Ok(LogEvent { ts, level, service, message, user_id, attrs: fields.into_attrs(), tokens })
}

fn resolve_text(
    text: &str,
    fallback: Fallback<'_>,
    now: DateTime<Utc>,
    rules: &ParseRules,
) -> Result<LogEvent, Reject> {
    let message = text::strip_line_endings(text);
    check_message(message, rules)?;
    let header = super::syslog::parse_syslog(message);
    let level = header.and_then(|h| h.level).or_else(|| detect_level(message)).unwrap_or(rules.default_level);
    let service = header
        .and_then(|h| h.app)
        .and_then(|app| ServiceName::parse(app).ok())
        .unwrap_or_else(|| fallback.service_name(rules));
    let ts = check_ts(fallback.ts.unwrap_or(now), now, rules)?;
    let message = message.to_owned();
    let tokens = Tokens::of(&message);
    Ok(LogEvent { ts, level, service, message, user_id: None, attrs: Attrs::default(), tokens })
}

fn check_message(message: &str, rules: &ParseRules) -> Result<(), Reject> {
    if message.len() > rules.max_message_bytes {
        return Err(Reject::new(
            RejectReason::TooLarge,
            format!("`message` is {} bytes; at most {} are accepted", message.len(), rules.max_message_bytes),
        ));
    }
    if message.contains('\0') {
        return Err(Reject::new(RejectReason::BadField, "`message` contains U+0000, which cannot be stored"));
    }
    Ok(())
}

fn check_ts(ts: DateTime<Utc>, now: DateTime<Utc>, rules: &ParseRules) -> Result<DateTime<Utc>, Reject> {
    let ts = ts.duration_trunc(Duration::microseconds(1)).unwrap_or(ts);
    if ts < rules.earliest(now) || ts > rules.latest(now) {
        return Err(Reject::new(
            RejectReason::TsOutOfRange,
            format!(
                "`ts` {} is outside the storable range {} .. {}",
                ts.to_rfc3339(),
                rules.earliest(now).to_rfc3339(),
                rules.latest(now).to_rfc3339()
            ),
        ));
    }
    Ok(ts)
}

/// A level field's value: a name, or a number read by the field's convention (OTel or syslog/pino).
fn level_of(name: &str, value: &Value) -> Result<Level, Reject> {
    let bad = |detail: String| Reject::new(RejectReason::BadLevel, detail);
    let number = match value {
        Value::Number(n) => Some(n.as_i64().ok_or_else(|| bad(format!("level (`{name}`) {n} is not a whole number")))?),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        Value::String(s) => return Level::parse(s).map_err(|e| bad(format!("level (`{name}`): {e}"))),
        _ => None,
    };
    let Some(n) = number else { return Err(bad(format!("level (`{name}`) is neither a name nor a number"))) };
    let level = if resolve::is_otel_severity_number(name) { Level::from_otel_number(n) } else { Level::from_number(n) };
    level.ok_or_else(|| {
        let ranges = if resolve::is_otel_severity_number(name) {
            "an OpenTelemetry severity number is 1..=24"
        } else {
            "a level number is a syslog severity 0..=7 or a pino/bunyan level 10..=69"
        };
        bad(format!("level (`{name}`) {n}: {ranges}"))
    })
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tokenize;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap()
    }

    fn parse(raw: &[u8]) -> Result<LogEvent, Reject> {
        LogEvent::parse(raw, Fallback::kafka(Some(now()), "topic-a"), now(), &ParseRules::default())
    }

    fn reason(raw: &[u8]) -> RejectReason {
        parse(raw).expect_err("should be rejected").reason
    }

    #[test]
    fn a_full_event_parses_with_attrs_and_tokens() {
        let raw = json!({
            "ts": "2026-11-26T11:59:58.123Z", "level": "ERROR", "service": "checkout",
            "message": "Payment TIMEOUT après 30s", "user_id": "u-42",
            "request_id": "r1", "latency_ms": 30001, "tags": ["a", "b"]
        })
        .to_string();
        let e = parse(raw.as_bytes()).unwrap();
        assert_eq!(e.ts, Utc.with_ymd_and_hms(2026, 11, 26, 11, 59, 58).unwrap() + Duration::milliseconds(123));
        assert_eq!(e.level, Level::Error);
        assert_eq!(e.service.as_str(), "checkout");
        assert_eq!(e.user_id.as_ref().map(|u| u.as_str()), Some("u-42"));
        assert_eq!(e.message, "Payment TIMEOUT après 30s");
        assert_eq!(e.tokens, vec!["payment", "timeout", "après", "30s"]);
        assert_eq!(e.attrs.to_value(), json!({"request_id": "r1", "latency_ms": 30001, "tags": ["a", "b"]}));
    }

    #[test]
    fn missing_ts_level_and_service_fall_back() {
        let fallback = now() - Duration::seconds(5);
        let e = LogEvent::parse(
            br#"{"message":"m"}"#,
            Fallback::kafka(Some(fallback), "orders"),
            now(),
            &ParseRules::default(),
        )
        .unwrap();
        assert_eq!((e.ts, e.level, e.service.as_str()), (fallback, Level::Info, "orders"));
        let no_time = LogEvent::parse(br#"{"message":"m"}"#, Fallback::kafka(None, "t"), now(), &ParseRules::default());
        assert_eq!(no_time.unwrap().ts, now());
        let detected = parse(br#"{"message":"WARN disk at 91%"}"#).unwrap();
        assert_eq!(detected.level, Level::Warn);
        let rules = ParseRules { default_level: Level::Debug, ..ParseRules::default() };
        let e = LogEvent::parse(br#"{"message":"quiet"}"#, Fallback::kafka(None, "t"), now(), &rules).unwrap();
        assert_eq!(e.level, Level::Debug);
    }

    #[test]
    fn service_fallbacks_in_order() {
        let named = ParseRules { default_service: Some(ServiceName::parse("dflt").unwrap()), ..ParseRules::default() };
        let plain = ParseRules::default();
        let service = |raw: &[u8], fb: Fallback<'_>, rules: &ParseRules| {
            LogEvent::parse(raw, fb, now(), rules).unwrap().service.into_inner()
        };
        let text = b"just a line";
        assert_eq!(service(text, Fallback::kafka(None, "logs"), &plain), "logs");
        assert_eq!(service(text, Fallback::kafka(None, "logs"), &named), "dflt");
        assert_eq!(service(text, Fallback::http(now(), None), &plain), "unknown");
        assert_eq!(service(text, Fallback::http(now(), None), &named), "dflt");
        assert_eq!(service(text, Fallback::http(now(), Some("web")), &named), "web");
        assert_eq!(service(br#"{"message":"m","app":"own"}"#, Fallback::http(now(), Some("web")), &named), "own");
        let long_topic = "t".repeat(200);
        assert_eq!(service(text, Fallback::kafka(None, &long_topic), &plain), "unknown");
    }

    #[test]
    fn kinds_of_value() {
        assert_eq!(reason(&[0xff, 0xfe, b'{']), RejectReason::NotUtf8);
        for empty in [&b""[..], b"   ", b"\n", b"\r\n\t "] {
            assert_eq!(reason(empty), RejectReason::Empty);
        }
        assert_eq!(reason(b"  {not json"), RejectReason::NotJson);
        for scalar in [&b"[1]"[..], b"null", b"42", b"\"text\"", b" true", b"-1.5"] {
            assert_eq!(reason(scalar), RejectReason::NotObject, "{:?}", String::from_utf8_lossy(scalar));
        }
        for text in [&b"42 apples"[..], b"[INFO] ok", b"null pointer", b"hello"] {
            assert!(parse(text).is_ok(), "{:?} is a text event", String::from_utf8_lossy(text));
        }
        let json_only = ParseRules { input_format: InputFormat::Json, ..ParseRules::default() };
        let e = LogEvent::parse(b"hello", Fallback::kafka(None, "t"), now(), &json_only);
        assert_eq!(e.unwrap_err().reason, RejectReason::NotJson);
        let e = LogEvent::parse(b"[1]", Fallback::kafka(None, "t"), now(), &json_only);
        assert_eq!(e.unwrap_err().reason, RejectReason::NotObject);
    }

    #[test]
    fn text_events_keep_the_line_and_take_ts_from_the_message() {
        let e = parse(b"2015-10-18 18:01:47,978 ERROR [main] boom\r\n").unwrap();
        assert_eq!(e.message, "2015-10-18 18:01:47,978 ERROR [main] boom");
        assert_eq!((e.level, e.ts, e.service.as_str()), (Level::Error, now(), "topic-a"));
        assert!(e.attrs.is_empty() && e.user_id.is_none());
        let e = parse(b"<11>Feb  5 17:32:18 web1 nginx[12]: upstream timed out").unwrap();
        assert_eq!((e.level, e.service.as_str()), (Level::Error, "nginx"));
        let e = parse(b"Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user webmaster").unwrap();
        assert_eq!((e.level, e.service.as_str()), (Level::Info, "sshd"));
    }

    #[test]
    fn every_reason_code_has_a_trigger() {
        let rules = ParseRules::default();
        let big = "x".repeat(rules.max_message_bytes + 1);
        let cases: Vec<(Vec<u8>, RejectReason)> = vec![
            (vec![0xff, 0xfe, b'{'], RejectReason::NotUtf8),
            (b"{not json".to_vec(), RejectReason::NotJson),
            (b"".to_vec(), RejectReason::Empty),
            (b"[1,2]".to_vec(), RejectReason::NotObject),
            (b"\"text\"".to_vec(), RejectReason::NotObject),
            (br#"{"level":"info","service":"s"}"#.to_vec(), RejectReason::MissingField),
            (br#"{"level":"info","message":null,"log":{"x":1}}"#.to_vec(), RejectReason::MissingField),
            (br#"{"level":"loud","service":"s","message":"m"}"#.to_vec(), RejectReason::BadLevel),
            (br#"{"level":8,"service":"s","message":"m"}"#.to_vec(), RejectReason::BadLevel),
            (br#"{"level":30.5,"service":"s","message":"m"}"#.to_vec(), RejectReason::BadLevel),
            (br#"{"severityNumber":25,"message":"m"}"#.to_vec(), RejectReason::BadLevel),
            (br#"{"ts":"yesterday","level":"info","service":"s","message":"m"}"#.to_vec(), RejectReason::BadTs),
            (br#"{"@timestamp":"2026-11-26T25:00:00Z","message":"m"}"#.to_vec(), RejectReason::BadTs),
            (br#"{"ts":1.5,"level":"info","service":"s","message":"m"}"#.to_vec(), RejectReason::TsOutOfRange),
            (
                br#"{"ts":"2001-01-01T00:00:00Z","level":"info","service":"s","message":"m"}"#.to_vec(),
                RejectReason::TsOutOfRange,
            ),
            (
                br#"{"ts":"2026-11-28T00:00:00Z","level":"info","service":"s","message":"m"}"#.to_vec(),
                RejectReason::TsOutOfRange,
            ),
            (format!(r#"{{"level":"info","service":"s","message":"{big}"}}"#).into_bytes(), RejectReason::TooLarge),
            (big.clone().into_bytes(), RejectReason::TooLarge),
            (vec![b' '; rules.max_payload_bytes() + 1], RejectReason::TooLarge),
            (br#"{"level":"info","service":"","message":"m"}"#.to_vec(), RejectReason::BadField),
            (br#"{"level":"info","service":"a\u0001b","message":"m"}"#.to_vec(), RejectReason::BadField),
            (br#"{"level":"info","service":"s","message":"m","user_id":""}"#.to_vec(), RejectReason::BadField),
            (br#"{"level":"info","service":"s","message":"nul \u0000 here"}"#.to_vec(), RejectReason::BadField),
            (b"text with a \0 nul".to_vec(), RejectReason::BadField),
            (br#"{"level":"info","service":"s","message":"m","user_id":"a\u0000"}"#.to_vec(), RejectReason::BadField),
            (br#"{"level":"info","service":"s","message":"m","x":{"y":["\u0000"]}}"#.to_vec(), RejectReason::BadField),
        ];
        for (raw, want) in &cases {
            assert_eq!(reason(raw), *want, "payload {:?}", String::from_utf8_lossy(raw));
        }
        let covered: std::collections::HashSet<_> = cases.iter().map(|c| c.1).collect();
        // store_rejected comes from the store, never from parsing (ingest::batch tests it).
        let parser_reasons = RejectReason::ALL.iter().filter(|r| **r != RejectReason::StoreRejected).count();
        assert_eq!(covered.len(), parser_reasons, "a reason code has no test");
    }

    #[test]
    fn numbers_in_service_user_and_message_are_their_text() {
        let e = parse(br#"{"message":7,"service":12,"user_id":5}"#).unwrap();
        assert_eq!((e.message.as_str(), e.service.as_str(), e.user_id.unwrap().as_str()), ("7", "12", "5"));
    }

    #[test]
    fn too_many_attrs_is_a_bad_field_and_the_limit_itself_is_fine() {
        let mut obj = json!({"level":"info","service":"s","message":"m"});
        for i in 0..MAX_ATTRS {
            obj[format!("k{i}")] = json!(i);
        }
        assert!(parse(obj.to_string().as_bytes()).is_ok());
        obj["one_more"] = json!(1);
        assert_eq!(reason(obj.to_string().as_bytes()), RejectReason::BadField);
    }

    #[test]
    fn range_edges() {
        let rules = ParseRules::default();
        let earliest = rules.earliest(now());
        assert_eq!(earliest, Utc.with_ymd_and_hms(2026, 10, 27, 0, 0, 0).unwrap());
        let at = |t: DateTime<Utc>| {
            format!(r#"{{"ts":{},"level":"info","service":"s","message":"m"}}"#, t.timestamp_millis())
        };
        assert!(parse(at(earliest).as_bytes()).is_ok());
        assert_eq!(reason(at(earliest - Duration::milliseconds(1)).as_bytes()), RejectReason::TsOutOfRange);
        assert!(parse(at(now() + Duration::days(1)).as_bytes()).is_ok());
        assert_eq!(
            reason(at(now() + Duration::days(1) + Duration::milliseconds(1)).as_bytes()),
            RejectReason::TsOutOfRange
        );
        let old_kafka =
            LogEvent::parse(b"a line", Fallback::kafka(Some(earliest - Duration::days(1)), "t"), now(), &rules);
        assert_eq!(old_kafka.unwrap_err().reason, RejectReason::TsOutOfRange);
    }

    #[test]
    fn reason_codes_round_trip() {
        for r in RejectReason::ALL {
            assert_eq!(RejectReason::from_code(r.code()), Some(r));
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&raw);
        }

        #[test]
        fn never_panics_on_arbitrary_text(s in "\\PC{0,300}") {
            let _ = parse(s.as_bytes());
            let _ = parse(format!("{{\"message\":{}}}", json!(s)).as_bytes());
        }

        #[test]
        fn json_and_text_agree_on_message_and_tokens(line in "[a-eg-mo-su-zA-Z]\\PC{0,200}") {
            let text = parse(line.as_bytes()).unwrap();
            let json = parse(json!({ "message": line }).to_string().as_bytes()).unwrap();
            prop_assert_eq!(&text.message, &json.message);
            prop_assert_eq!(&text.tokens, &json.tokens);
            prop_assert_eq!(text.tokens, tokenize(&line));
            prop_assert_eq!(text.level, json.level);
        }

        #[test]
        fn valid_events_round_trip(
            service in "[a-zA-Z0-9_.-]{1,40}",
            message in "\\PC{0,120}",
            user in proptest::option::of("\\PC{1,30}"),
            level in proptest::sample::select(Level::ALL.to_vec()),
            offset_ms in 0i64..86_400_000,
            extra in proptest::collection::btree_map("x_[a-z]{1,8}", any::<i32>(), 0..5),
        ) {
            let ts = now() - Duration::milliseconds(offset_ms);
            let mut obj = json!({
                "ts": ts.to_rfc3339(), "level": level.as_str(), "service": service, "message": message,
            });
            if let Some(u) = &user { obj["user_id"] = json!(u); }
            for (k, v) in &extra { obj[k] = json!(v); }
            let e = parse(obj.to_string().as_bytes()).unwrap();
            prop_assert_eq!(e.ts, ts);
            prop_assert_eq!(e.level, level);
            prop_assert_eq!(e.service.as_str(), service.as_str());
            prop_assert_eq!(&e.message, &message);
            prop_assert_eq!(e.user_id.map(|u| u.into_inner()), user);
            prop_assert_eq!(e.attrs.len(), extra.len());
            prop_assert_eq!(e.tokens, tokenize(&message));
        }
    }
}
