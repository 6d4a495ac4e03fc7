//! A log event as it arrives (one JSON object), parsed once at the edge.

use chrono::{DateTime, Duration, DurationRound, TimeZone, Utc};
use serde_json::{Map, Value};

use super::level::Level;
use super::service::{ServiceName, UserId};
use super::tokens::tokenize;

/// Most keys allowed in `attrs` (the fields beyond the known ones).
pub const MAX_ATTRS: usize = 32;
/// How much of a rejected payload is kept in the dead-letter row.
pub const REJECT_RAW_PREFIX_BYTES: usize = 4096;
/// Room for the fields around `message` when judging a whole payload's size.
pub const ENVELOPE_ALLOWANCE_BYTES: usize = 64 * 1024;

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
}

impl RejectReason {
    pub const ALL: [RejectReason; 10] = [
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

/// What parsing needs to know besides the bytes.
#[derive(Debug, Clone, Copy)]
pub struct ParseRules {
    /// Longest `message`, in bytes (`MAX_MESSAGE_BYTES`).
    pub max_message_bytes: usize,
    /// Days of history kept (`RETENTION_DAYS`): older events cannot be stored.
    pub retention_days: u32,
}

impl Default for ParseRules {
    fn default() -> Self {
        ParseRules { max_message_bytes: 16 * 1024, retention_days: 30 }
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

/// A valid log event (DESIGN §4).
#[derive(Debug, Clone, PartialEq)]
pub struct LogEvent {
    /// Event time, at microsecond precision (what PostgreSQL keeps).
    pub ts: DateTime<Utc>,
    pub level: Level,
    pub service: ServiceName,
    pub message: String,
    pub user_id: Option<UserId>,
    /// Every other field of the object.
    pub attrs: Map<String, Value>,
    /// `tokenize(message)`.
    pub tokens: Vec<String>,
}

impl LogEvent {
    /// Parses one payload. `fallback_ts` (the Kafka message timestamp) is used when `ts` is absent;
    /// `now` bounds the accepted time range.
    pub fn parse(
        raw: &[u8],
        fallback_ts: Option<DateTime<Utc>>,
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
        let value: Value = serde_json::from_str(text).map_err(|e| Reject::new(NotJson, e.to_string()))?;
        let Value::Object(mut fields) = value else {
            return Err(Reject::new(NotObject, format!("expected a JSON object, got {}", json_kind(&value))));
        };

        let level = match fields.remove("level") {
            None | Some(Value::Null) => return Err(Reject::new(MissingField, "`level` is required")),
            Some(Value::String(s)) => Level::parse(&s).map_err(|e| Reject::new(BadLevel, e.to_string()))?,
            Some(other) => {
                return Err(Reject::new(BadLevel, format!("`level` must be a string, got {}", json_kind(&other))))
            }
        };
        let service = ServiceName::parse(required_string(&mut fields, "service")?)
            .map_err(|e| Reject::new(BadField, format!("`service` {e}")))?;
        let message = required_string(&mut fields, "message")?;
        if message.len() > rules.max_message_bytes {
            return Err(Reject::new(
                TooLarge,
                format!("`message` is {} bytes; at most {} are accepted", message.len(), rules.max_message_bytes),
            ));
        }
        let user_id = match fields.remove("user_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                Some(UserId::parse(s).map_err(|e| Reject::new(BadField, format!("`user_id` {e}")))?)
            }
            Some(other) => {
                return Err(Reject::new(BadField, format!("`user_id` must be a string, got {}", json_kind(&other))))
            }
        };
        let ts = match fields.remove("ts") {
            None | Some(Value::Null) => fallback_ts
                .ok_or_else(|| Reject::new(MissingField, "`ts` is missing and the message has no timestamp"))?,
            Some(value) => parse_ts(&value)?,
        };
        let ts = ts.duration_trunc(Duration::microseconds(1)).unwrap_or(ts);
        if ts < rules.earliest(now) || ts > rules.latest(now) {
            return Err(Reject::new(
                TsOutOfRange,
                format!(
                    "`ts` {} is outside the storable range {} .. {}",
                    ts.to_rfc3339(),
                    rules.earliest(now).to_rfc3339(),
                    rules.latest(now).to_rfc3339()
                ),
            ));
        }
        if fields.len() > MAX_ATTRS {
            return Err(Reject::new(
                BadField,
                format!("{} extra fields; at most {MAX_ATTRS} are kept in attrs", fields.len()),
            ));
        }
        // PostgreSQL text and jsonb cannot hold U+0000: such an event could never be stored.
        if message.contains('\0') {
            return Err(Reject::new(BadField, "`message` contains U+0000, which cannot be stored"));
        }
        if user_id.as_ref().is_some_and(|u| u.as_str().contains('\0')) {
            return Err(Reject::new(BadField, "`user_id` contains U+0000, which cannot be stored"));
        }
        if fields.iter().any(|(k, v)| k.contains('\0') || has_nul(v)) {
            return Err(Reject::new(BadField, "an extra field contains U+0000, which cannot be stored"));
        }
        let tokens = tokenize(&message);
        Ok(LogEvent { ts, level, service, message, user_id, attrs: fields, tokens })
    }
}

fn required_string(fields: &mut Map<String, Value>, name: &str) -> Result<String, Reject> {
    match fields.remove(name) {
        None | Some(Value::Null) => Err(Reject::new(RejectReason::MissingField, format!("`{name}` is required"))),
        Some(Value::String(s)) => Ok(s),
        Some(other) => {
            Err(Reject::new(RejectReason::BadField, format!("`{name}` must be a string, got {}", json_kind(&other))))
        }
    }
}

/// `ts` is an RFC 3339 string or integer epoch milliseconds.
fn parse_ts(value: &Value) -> Result<DateTime<Utc>, Reject> {
    let bad = |detail: String| Reject::new(RejectReason::BadTs, detail);
    match value {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| bad(format!("`ts` {s:?} is not RFC 3339: {e}"))),
        Value::Number(n) => {
            let ms = n.as_i64().ok_or_else(|| bad(format!("`ts` {n} is not whole epoch milliseconds")))?;
            Utc.timestamp_millis_opt(ms).single().ok_or_else(|| bad(format!("`ts` {ms} is not a representable time")))
        }
        other => Err(bad(format!("`ts` must be an RFC 3339 string or epoch milliseconds, got {}", json_kind(other)))),
    }
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
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
    use proptest::prelude::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap()
    }

    fn parse(raw: &[u8]) -> Result<LogEvent, Reject> {
        LogEvent::parse(raw, Some(now()), now(), &ParseRules::default())
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
        assert_eq!(Value::Object(e.attrs), json!({"request_id": "r1", "latency_ms": 30001, "tags": ["a", "b"]}));
    }

    #[test]
    fn epoch_millis_and_missing_ts() {
        let ms = now().timestamp_millis() - 1_500;
        let e = parse(format!(r#"{{"ts":{ms},"level":"info","service":"s","message":"m"}}"#).as_bytes()).unwrap();
        assert_eq!(e.ts.timestamp_millis(), ms);
        let fallback = now() - Duration::seconds(5);
        let e = LogEvent::parse(
            br#"{"level":"info","service":"s","message":"m"}"#,
            Some(fallback),
            now(),
            &ParseRules::default(),
        )
        .unwrap();
        assert_eq!(e.ts, fallback);
        let no_time =
            LogEvent::parse(br#"{"level":"info","service":"s","message":"m"}"#, None, now(), &ParseRules::default());
        assert_eq!(no_time.unwrap_err().reason, RejectReason::MissingField);
    }

    #[test]
    fn every_reason_code_has_a_trigger() {
        let rules = ParseRules::default();
        let big = "x".repeat(rules.max_message_bytes + 1);
        let cases: Vec<(Vec<u8>, RejectReason)> = vec![
            (vec![0xff, 0xfe, b'{'], RejectReason::NotUtf8),
            (b"{not json".to_vec(), RejectReason::NotJson),
            (b"".to_vec(), RejectReason::NotJson),
            (b"[1,2]".to_vec(), RejectReason::NotObject),
            (b"\"text\"".to_vec(), RejectReason::NotObject),
            (br#"{"service":"s","message":"m"}"#.to_vec(), RejectReason::MissingField),
            (br#"{"level":"info","message":"m"}"#.to_vec(), RejectReason::MissingField),
            (br#"{"level":"info","service":"s"}"#.to_vec(), RejectReason::MissingField),
            (br#"{"level":"loud","service":"s","message":"m"}"#.to_vec(), RejectReason::BadLevel),
            (br#"{"level":3,"service":"s","message":"m"}"#.to_vec(), RejectReason::BadLevel),
            (br#"{"ts":"yesterday","level":"info","service":"s","message":"m"}"#.to_vec(), RejectReason::BadTs),
            (br#"{"ts":1.5,"level":"info","service":"s","message":"m"}"#.to_vec(), RejectReason::BadTs),
            (br#"{"ts":true,"level":"info","service":"s","message":"m"}"#.to_vec(), RejectReason::BadTs),
            (
                br#"{"ts":"2001-01-01T00:00:00Z","level":"info","service":"s","message":"m"}"#.to_vec(),
                RejectReason::TsOutOfRange,
            ),
            (
                br#"{"ts":"2026-11-28T00:00:00Z","level":"info","service":"s","message":"m"}"#.to_vec(),
                RejectReason::TsOutOfRange,
            ),
            (format!(r#"{{"level":"info","service":"s","message":"{big}"}}"#).into_bytes(), RejectReason::TooLarge),
            (vec![b' '; rules.max_payload_bytes() + 1], RejectReason::TooLarge),
            (br#"{"level":"info","service":"","message":"m"}"#.to_vec(), RejectReason::BadField),
            (br#"{"level":"info","service":"a\u0001b","message":"m"}"#.to_vec(), RejectReason::BadField),
            (br#"{"level":"info","service":"s","message":7}"#.to_vec(), RejectReason::BadField),
            (br#"{"level":"info","service":"s","message":"m","user_id":""}"#.to_vec(), RejectReason::BadField),
            (br#"{"level":"info","service":"s","message":"m","user_id":5}"#.to_vec(), RejectReason::BadField),
            (br#"{"level":"info","service":"s","message":"nul \u0000 here"}"#.to_vec(), RejectReason::BadField),
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
