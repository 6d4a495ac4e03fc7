//! An OTLP `LogRecord`, with its resource and scope, as one §4 event line (DESIGN §12):
//! service ← resource `service.name`; level ← `severity_number`, then `severity_text`, then detected
//! from the body; ts ← `time_unix_nano`, then `observed_time_unix_nano`, then the receive time;
//! message ← body; resource, scope and record attributes and the trace and span ids → attrs.
//!
//! Attributes stay grouped (`resource`, `scope`, `attributes`) rather than spread over the top
//! level: an attribute called `message` or `level` must not be taken for the event's own field, and
//! the §4 bound on top-level attrs keys would refuse any record with many attributes.

use serde_json::{json, Map, Value};

use super::{hex, object, rfc3339_nanos, unmappable, AnyValue};
use crate::domain::{Level, Reject};

/// The resource attribute that names the service (OpenTelemetry semantic conventions).
pub const SERVICE_NAME: &str = "service.name";

/// The resource a batch of records comes from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resource {
    pub attributes: Vec<(String, AnyValue)>,
}

/// The instrumentation scope (library) that emitted the records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scope {
    pub name: String,
    pub version: String,
    pub attributes: Vec<(String, AnyValue)>,
}

/// One OTLP `LogRecord`; zero or empty means the field was not set, as on the wire.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogRecord {
    pub time_unix_nano: u64,
    pub observed_time_unix_nano: u64,
    pub severity_number: i32,
    pub severity_text: String,
    pub body: Option<AnyValue>,
    pub attributes: Vec<(String, AnyValue)>,
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    pub flags: u32,
}

/// The event line of `record`; a reject when its ids are not the sizes OTLP requires.
pub fn event_line(resource: &Resource, scope: &Scope, record: &LogRecord) -> Result<Vec<u8>, Reject> {
    if !matches!(record.trace_id.len(), 0 | 16) {
        return Err(unmappable(format!("trace_id is {} bytes; OTLP requires 16", record.trace_id.len())));
    }
    if !matches!(record.span_id.len(), 0 | 8) {
        return Err(unmappable(format!("span_id is {} bytes; OTLP requires 8", record.span_id.len())));
    }
    let mut line = Map::new();
    let ts = [record.time_unix_nano, record.observed_time_unix_nano].into_iter().find(|&n| n > 0);
    if let Some(nanos) = ts {
        line.insert("ts".into(), Value::String(rfc3339_nanos(nanos)));
    }
    // A number outside 1–24 is "unspecified": the text, if any, is the next source.
    if let Some(level) = Level::from_otel_number(i64::from(record.severity_number)) {
        line.insert("level".into(), json!(level.as_str()));
    } else if !record.severity_text.is_empty() {
        line.insert("level".into(), json!(record.severity_text));
    }
    let mut resource_attrs = object(&resource.attributes);
    if let Some(service) = resource_attrs.remove(SERVICE_NAME) {
        line.insert("service".into(), service);
    }
    // No body leaves no `message`: the resolution rejects it as `missing_field`, as for any line.
    // A structured body is the message as its JSON text (an object in `message` is no value, §4).
    match &record.body {
        Some(AnyValue::String(text)) => _ = line.insert("message".into(), json!(text)),
        Some(body) => _ = line.insert("message".into(), json!(body.to_json().to_string())),
        None => {}
    }
    if !resource_attrs.is_empty() {
        line.insert("resource".into(), Value::Object(resource_attrs));
    }
    let mut scope_fields = Map::new();
    if !scope.name.is_empty() {
        scope_fields.insert("name".into(), json!(scope.name));
    }
    if !scope.version.is_empty() {
        scope_fields.insert("version".into(), json!(scope.version));
    }
    if !scope.attributes.is_empty() {
        scope_fields.insert("attributes".into(), Value::Object(object(&scope.attributes)));
    }
    if !scope_fields.is_empty() {
        line.insert("scope".into(), Value::Object(scope_fields));
    }
    if !record.attributes.is_empty() {
        line.insert("attributes".into(), Value::Object(object(&record.attributes)));
    }
    if !record.trace_id.is_empty() {
        line.insert("trace_id".into(), json!(hex(&record.trace_id)));
    }
    if !record.span_id.is_empty() {
        line.insert("span_id".into(), json!(hex(&record.span_id)));
    }
    if record.flags != 0 {
        line.insert("trace_flags".into(), json!(record.flags));
    }
    Ok(serde_json::to_vec(&Value::Object(line)).expect("JSON values serialize"))
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::domain::{Fallback, LogEvent, ParseRules, RejectReason};

    fn s(v: &str) -> AnyValue {
        AnyValue::String(v.into())
    }

    fn resolve(resource: &Resource, record: &LogRecord) -> Result<LogEvent, Reject> {
        let line = event_line(resource, &Scope::default(), record)?;
        let now = Utc::now();
        LogEvent::parse(&line, Fallback::http(now, None), now, &ParseRules::default())
    }

    fn service(name: &str) -> Resource {
        Resource { attributes: vec![(SERVICE_NAME.into(), s(name)), ("host.name".into(), s("web-1"))] }
    }

    #[test]
    fn a_record_maps_every_field_and_keeps_the_rest_in_attrs() {
        let ts = Utc::now().timestamp_nanos_opt().unwrap() as u64 / 1000 * 1000 + 789;
        let record = LogRecord {
            time_unix_nano: ts,
            observed_time_unix_nano: ts + 5_000_000_000,
            severity_number: 17,
            severity_text: "Information".into(),
            body: Some(s("payment failed: timeout")),
            attributes: vec![("message".into(), s("not the body")), ("retry".into(), AnyValue::Int(3))],
            trace_id: vec![0xab; 16],
            span_id: vec![1; 8],
            flags: 1,
        };
        let scope = Scope { name: "checkout".into(), version: "1.2".into(), attributes: vec![] };
        let line = event_line(&service("payments"), &scope, &record).unwrap();
        let now = Utc::now();
        let event = LogEvent::parse(&line, Fallback::http(now, None), now, &ParseRules::default()).unwrap();
        assert_eq!(event.service.as_str(), "payments");
        assert_eq!(event.level, Level::Error, "severity_number wins over severity_text");
        assert_eq!(event.message, "payment failed: timeout");
        assert_eq!(event.ts.timestamp_nanos_opt().unwrap() as u64, ts - 789, "µs precision is kept");
        assert_eq!(event.attrs.to_value()["attributes"], json!({"message": "not the body", "retry": 3}));
        assert_eq!(event.attrs.to_value()["resource"], json!({"host.name": "web-1"}));
        assert_eq!(event.attrs.to_value()["scope"], json!({"name": "checkout", "version": "1.2"}));
        assert_eq!(event.attrs.to_value()["trace_id"], json!("ab".repeat(16)));
        assert_eq!(event.attrs.to_value()["span_id"], json!("0101010101010101"));
        assert_eq!(event.attrs.to_value()["trace_flags"], json!(1));
    }

    #[test]
    fn the_level_falls_back_to_the_text_then_to_the_body() {
        let mut record = LogRecord { body: Some(s("all good")), severity_text: "WARNING".into(), ..Default::default() };
        assert_eq!(resolve(&service("a"), &record).unwrap().level, Level::Warn);
        record.severity_text.clear();
        record.body = Some(s("ERROR disk full"));
        assert_eq!(resolve(&service("a"), &record).unwrap().level, Level::Error);
        record.severity_text = "loud".into();
        assert_eq!(resolve(&service("a"), &record).unwrap_err().reason, RejectReason::BadLevel);
    }

    #[test]
    fn the_time_falls_back_to_observed_then_to_the_receive_time() {
        let observed = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let record = LogRecord {
            observed_time_unix_nano: observed.timestamp_nanos_opt().unwrap() as u64,
            body: Some(s("x")),
            ..Default::default()
        };
        let line: Value =
            serde_json::from_slice(&event_line(&service("a"), &Scope::default(), &record).unwrap()).unwrap();
        assert_eq!(line["ts"], "2026-01-02T03:04:05.000000000Z");
        let record = LogRecord { body: Some(s("x")), ..Default::default() };
        let before = Utc::now();
        let event = resolve(&service("a"), &record).unwrap();
        assert!(event.ts >= before - chrono::Duration::seconds(1));
    }

    #[test]
    fn a_record_without_a_service_or_a_body_resolves_as_any_line_would() {
        let record = LogRecord { body: Some(s("x")), ..Default::default() };
        assert_eq!(resolve(&Resource::default(), &record).unwrap().service.as_str(), "unknown");
        let record = LogRecord::default();
        assert_eq!(resolve(&service("a"), &record).unwrap_err().reason, RejectReason::MissingField);
    }

    #[test]
    fn a_structured_body_is_kept_as_json_text() {
        let body = AnyValue::KvList(vec![("event".into(), s("login")), ("ok".into(), AnyValue::Bool(true))]);
        let record = LogRecord { body: Some(body), ..Default::default() };
        assert_eq!(resolve(&service("a"), &record).unwrap().message, r#"{"event":"login","ok":true}"#);
    }

    #[test]
    fn ids_of_the_wrong_size_are_rejected_with_a_reason() {
        let record = LogRecord { body: Some(s("x")), trace_id: vec![1; 3], ..Default::default() };
        let reject = event_line(&service("a"), &Scope::default(), &record).unwrap_err();
        assert_eq!(reject.reason, RejectReason::BadField);
        assert!(reject.detail.contains("trace_id"), "{reject}");
        let record = LogRecord { body: Some(s("x")), span_id: vec![1; 16], ..Default::default() };
        assert!(event_line(&service("a"), &Scope::default(), &record).unwrap_err().detail.contains("span_id"));
    }
}
