//! What the shippers' protocols carry (OTLP log records, Loki entries), mapped to one JSON event
//! line in the §4 input shape (DESIGN §12). The line then goes through the same resolution
//! ([`crate::domain::LogEvent::parse`]) and the same queue as a `POST /ingest` line, so every input
//! path agrees on what an event is.
//!
//! The input types are plain structs: the wire formats (protobuf, JSON) are decoded in the shell,
//! which keeps this crate free of generated code.

pub mod loki;
pub mod otlp;

use serde_json::{Map, Value};

use crate::domain::{Reject, RejectReason};

/// An OTLP `AnyValue`: what an attribute or a body holds.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyValue {
    String(String),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(Vec<u8>),
    Array(Vec<AnyValue>),
    KvList(Vec<(String, AnyValue)>),
}

impl AnyValue {
    /// The value as plain JSON: bytes as base64 (what OTLP/JSON uses), a non-finite double as its
    /// name (JSON has no NaN), a key list as an object (a repeated key: the last one wins).
    pub fn to_json(&self) -> Value {
        match self {
            AnyValue::String(s) => Value::String(s.clone()),
            AnyValue::Bool(b) => Value::Bool(*b),
            AnyValue::Int(i) => Value::from(*i),
            AnyValue::Double(d) => {
                serde_json::Number::from_f64(*d).map_or_else(|| Value::String(d.to_string()), Value::Number)
            }
            AnyValue::Bytes(b) => Value::String(base64(b)),
            AnyValue::Array(items) => Value::Array(items.iter().map(AnyValue::to_json).collect()),
            AnyValue::KvList(pairs) => Value::Object(object(pairs)),
        }
    }
}

/// Key/value pairs (attributes) as a JSON object.
pub fn object(pairs: &[(String, AnyValue)]) -> Map<String, Value> {
    pairs.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()
}

/// A record that cannot become an event line; counted as rejected with this reason.
pub(crate) fn unmappable(detail: impl Into<String>) -> Reject {
    Reject { reason: RejectReason::BadField, detail: detail.into() }
}

/// Nanoseconds since the epoch as RFC 3339 with every digit: unambiguous, where a bare number would
/// be read by its magnitude (§4) and a small one taken for seconds.
pub(crate) fn rfc3339_nanos(nanos: u64) -> String {
    let secs = (nanos / 1_000_000_000) as i64;
    let sub = (nanos % 1_000_000_000) as u32;
    chrono::DateTime::from_timestamp(secs, sub)
        .expect("u64 nanoseconds are within chrono's range")
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanoseconds_keep_every_digit() {
        assert_eq!(rfc3339_nanos(1_700_000_000_123_456_789), "2023-11-14T22:13:20.123456789Z");
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn any_values_become_plain_json() {
        let v = AnyValue::KvList(vec![
            ("a".into(), AnyValue::Array(vec![AnyValue::Int(1), AnyValue::Bool(true)])),
            ("b".into(), AnyValue::Double(f64::NAN)),
            ("c".into(), AnyValue::Bytes(b"hi".to_vec())),
        ]);
        assert_eq!(v.to_json(), serde_json::json!({"a": [1, true], "b": "NaN", "c": "aGk="}));
    }
}
