//! A Loki push entry, with its stream's labels and its structured metadata, as one §4 event line
//! (DESIGN §12): service ← label `service_name`, `service`, `app`, `job`; level ← label `level`,
//! `detected_level`, else detected from the line; ts ← the entry's nanoseconds; message ← the line;
//! the other labels and the structured metadata → attrs (as `labels` and `structured_metadata`).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use crate::domain::Level;

/// Labels that name the service, in the order tried.
pub const SERVICE_LABELS: [&str; 4] = ["service_name", "service", "app", "job"];
/// Labels that name the level, in the order tried.
pub const LEVEL_LABELS: [&str; 2] = ["level", "detected_level"];

/// One entry of a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub ts: DateTime<Utc>,
    pub line: String,
    pub structured_metadata: Vec<(String, String)>,
}

/// The event line of `entry` in a stream labelled `labels`.
pub fn event_line(labels: &[(String, String)], entry: &Entry) -> Vec<u8> {
    let mut rest: Map<String, Value> = labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let mut line = Map::new();
    line.insert("ts".into(), json!(entry.ts.to_rfc3339_opts(SecondsFormat::Nanos, true)));
    let service = SERVICE_LABELS.iter().find(|name| labels.iter().any(|(k, v)| k == *name && !v.is_empty()));
    if let Some(name) = service {
        line.insert("service".into(), rest.remove(*name).expect("the label is there"));
    }
    // Loki writes `detected_level="unknown"` when it could not tell: a label that names no level is
    // kept as a label, and the level is detected from the line as for any text.
    let level =
        LEVEL_LABELS.iter().find_map(|name| labels.iter().find(|(k, v)| k == name && Level::from_name(v).is_some()));
    if let Some((name, value)) = level {
        rest.remove(name);
        line.insert("level".into(), json!(value));
    }
    line.insert("message".into(), json!(entry.line));
    if !rest.is_empty() {
        line.insert("labels".into(), Value::Object(rest));
    }
    if !entry.structured_metadata.is_empty() {
        let metadata: Map<String, Value> =
            entry.structured_metadata.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        line.insert("structured_metadata".into(), Value::Object(metadata));
    }
    serde_json::to_vec(&Value::Object(line)).expect("JSON values serialize")
}

/// A label set in the Prometheus text form a protobuf push carries: `{app="api", level="error"}`.
/// Values may escape `\"`, `\\` and `\n`.
pub fn parse_labels(text: &str) -> Result<Vec<(String, String)>, String> {
    let inner = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(|| format!("labels {text:?} are not in braces"))?;
    let mut labels = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        if chars.peek().is_none() {
            return Ok(labels);
        }
        let mut name = String::new();
        while let Some(c) = chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_') {
            name.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if name.is_empty() || chars.next() != Some('=') {
            return Err(format!("labels {text:?}: expected name=\"value\""));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('"') {
            return Err(format!("labels {text:?}: the value of {name} is not quoted"));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c @ ('"' | '\\')) => value.push(c),
                    _ => return Err(format!("labels {text:?}: a bad escape in the value of {name}")),
                },
                Some(c) => value.push(c),
                None => return Err(format!("labels {text:?}: the value of {name} is not closed")),
            }
        }
        if !matches!(chars.peek(), None | Some(',' | ' ')) {
            return Err(format!("labels {text:?}: expected a comma after the value of {name}"));
        }
        labels.push((name, value));
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::domain::{Fallback, LogEvent, ParseRules};

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn resolve(labels: &[(String, String)], entry: &Entry) -> LogEvent {
        let now = Utc::now();
        LogEvent::parse(&event_line(labels, entry), Fallback::http(now, None), now, &ParseRules::default()).unwrap()
    }

    fn entry(line: &str) -> Entry {
        Entry { ts: Utc::now(), line: line.into(), structured_metadata: vec![] }
    }

    #[test]
    fn labels_metadata_and_nanoseconds_are_mapped() {
        let ts = Utc.timestamp_opt(Utc::now().timestamp(), 123_456_789).unwrap();
        let e = Entry {
            ts,
            line: "GET /cart took 3s".into(),
            structured_metadata: vec![("trace_id".into(), "abc".into())],
        };
        let event = resolve(&labels(&[("job", "nginx"), ("app", "shop"), ("level", "warn"), ("env", "prod")]), &e);
        assert_eq!(event.service.as_str(), "shop", "app comes before job");
        assert_eq!(event.level, Level::Warn);
        assert_eq!(event.message, "GET /cart took 3s");
        assert_eq!(event.ts.timestamp_subsec_nanos(), 123_456_000);
        assert_eq!(event.attrs.to_value()["labels"], json!({"job": "nginx", "env": "prod"}));
        assert_eq!(event.attrs.to_value()["structured_metadata"], json!({"trace_id": "abc"}));
    }

    #[test]
    fn an_unknown_level_label_leaves_the_level_to_detection() {
        let event = resolve(&labels(&[("service_name", "api"), ("detected_level", "unknown")]), &entry("ERROR boom"));
        assert_eq!((event.service.as_str(), event.level), ("api", Level::Error));
        assert_eq!(event.attrs.to_value()["labels"], json!({"detected_level": "unknown"}));
        let event = resolve(&labels(&[]), &entry("all quiet"));
        assert_eq!((event.service.as_str(), event.level), ("unknown", Level::Info));
    }

    #[test]
    fn a_json_line_stays_the_message() {
        let event = resolve(&labels(&[("app", "a")]), &entry(r#"{"level":"debug","msg":"x"}"#));
        assert_eq!(event.message, r#"{"level":"debug","msg":"x"}"#);
    }

    #[test]
    fn prometheus_label_text_is_parsed() {
        assert_eq!(
            parse_labels(r#"{app="api", level="error",msg="say \"hi\"\n\\"}"#).unwrap(),
            labels(&[("app", "api"), ("level", "error"), ("msg", "say \"hi\"\n\\")])
        );
        assert_eq!(parse_labels("{}").unwrap(), vec![]);
        for bad in ["app=\"x\"", "{app=x}", "{app=\"x}", "{=\"x\"}", "{a=\"x\"b=\"y\"}", "{a=\"\\q\"}"] {
            assert!(parse_labels(bad).is_err(), "{bad}");
        }
    }
}
