//! Finding an event's fields in a JSON object: alias lists tried in order, dotted names that match
//! literal keys, nested objects or any mix of both (DESIGN §4).

use serde_json::{Map, Value};

/// The names tried for each field, in order. `FIELDS_*` settings replace a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldNames {
    pub ts: Vec<String>,
    pub level: Vec<String>,
    pub service: Vec<String>,
    pub message: Vec<String>,
    pub user: Vec<String>,
}

pub const DEFAULT_TS: &[&str] = &[
    "ts",
    "timestamp",
    "@timestamp",
    "time",
    "@t",
    "timeUnixNano",
    "observedTimeUnixNano",
    "date",
    "datetime",
    "asctime",
    "instant",
];
pub const DEFAULT_LEVEL: &[&str] = &[
    "level",
    "lvl",
    "severity",
    "severityText",
    "severity_text",
    "log.level",
    "levelname",
    "loglevel",
    "@l",
    "severityNumber",
];
pub const DEFAULT_SERVICE: &[&str] = &[
    "service",
    "service.name",
    "resource.service.name",
    "app",
    "application",
    "appname",
    "app_name",
    "_service",
    "logger",
    "logger_name",
    "loggerName",
    "name",
];
pub const DEFAULT_MESSAGE: &[&str] = &["message", "msg", "body", "short_message", "log", "@m", "@mt", "text"];
pub const DEFAULT_USER: &[&str] = &["user_id", "userId", "user.id", "usr.id", "enduser.id"];

impl Default for FieldNames {
    fn default() -> Self {
        let own = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect();
        FieldNames {
            ts: own(DEFAULT_TS),
            level: own(DEFAULT_LEVEL),
            service: own(DEFAULT_SERVICE),
            message: own(DEFAULT_MESSAGE),
            user: own(DEFAULT_USER),
        }
    }
}

/// Whether a level field holds an OpenTelemetry `SeverityNumber` (1–24) rather than a syslog or pino number.
pub fn is_otel_severity_number(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    last == "severityNumber" || last == "severity_number"
}

/// Removes and returns the value of the first of `names` that holds a usable value, with the name
/// that matched. A nested object left empty by the removal goes too, so attrs keep no `{}` husks.
pub fn take_first<'n>(
    fields: &mut Map<String, Value>,
    names: &'n [String],
    usable: fn(&Value) -> bool,
) -> Option<(&'n str, Value)> {
    names.iter().find_map(|name| take(fields, name, usable).map(|v| (name.as_str(), v)))
}

/// `path` as a literal key, or split at any of its dots into an object key and the rest inside it.
pub fn take(fields: &mut Map<String, Value>, path: &str, usable: fn(&Value) -> bool) -> Option<Value> {
    if fields.get(path).is_some_and(usable) {
        return fields.remove(path);
    }
    for (dot, _) in path.match_indices('.') {
        let (outer, inner_path) = (&path[..dot], &path[dot + 1..]);
        if let Some(Value::Object(inner)) = fields.get_mut(outer) {
            if let Some(value) = take(inner, inner_path, usable) {
                if inner.is_empty() {
                    fields.remove(outer);
                }
                return Some(value);
            }
        }
    }
    None
}

/// A string or a number: what ts, level, service and user_id accept (an object is not a value).
pub fn is_scalar(value: &Value) -> bool {
    matches!(value, Value::String(_) | Value::Number(_))
}

/// The kinds of an OTLP `AnyValue` (`{"stringValue": …}` and its siblings).
const ANY_VALUE_KINDS: [&str; 7] =
    ["stringValue", "boolValue", "intValue", "doubleValue", "arrayValue", "kvlistValue", "bytesValue"];

/// A message is any value but null, and an object only when it is an OTLP `AnyValue`
/// (so ECS's nested `"log": {"level": …}` is not taken as the message).
pub fn is_message_value(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Object(map) => any_value(map).is_some(),
        _ => true,
    }
}

fn any_value(map: &Map<String, Value>) -> Option<&Value> {
    if map.len() != 1 {
        return None;
    }
    let (kind, value) = map.iter().next()?;
    ANY_VALUE_KINDS.contains(&kind.as_str()).then_some(value)
}

/// The message text of a usable message value: a string as it is, an `AnyValue`'s string, any other
/// value as its JSON text.
pub fn message_text(value: Value) -> String {
    match value {
        Value::String(s) => s,
        Value::Object(map) => match any_value(&map) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => Value::Object(map).to_string(),
        },
        other => other.to_string(),
    }
}

/// A string, or a number as its decimal text (service and user_id).
pub fn scalar_text(value: Value) -> String {
    match value {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn dotted_names_match_literal_nested_and_mixed_keys() {
        for (doc, rest) in [
            (json!({"a.b.c": "x", "k": 1}), json!({"k": 1})),
            (json!({"a": {"b": {"c": "x"}}, "k": 1}), json!({"k": 1})),
            (json!({"a": {"b.c": "x", "d": 2}}), json!({"a": {"d": 2}})),
            (json!({"a.b": {"c": "x"}}), json!({})),
        ] {
            let mut fields = obj(doc.clone());
            assert_eq!(take(&mut fields, "a.b.c", is_scalar), Some(json!("x")), "{doc}");
            assert_eq!(Value::Object(fields), rest, "{doc}");
        }
    }

    #[test]
    fn an_object_is_not_a_value_and_the_next_name_is_tried() {
        let names: Vec<String> = DEFAULT_SERVICE.iter().map(|s| s.to_string()).collect();
        let mut fields = obj(json!({"service": {"name": "checkout", "version": "1"}, "app": "other"}));
        assert_eq!(take_first(&mut fields, &names, is_scalar), Some(("service.name", json!("checkout"))));
        assert_eq!(Value::Object(fields), json!({"service": {"version": "1"}, "app": "other"}));
        let mut nulls = obj(json!({"service": null, "app": true, "name": "n"}));
        assert_eq!(take_first(&mut nulls, &names, is_scalar), Some(("name", json!("n"))));
    }

    #[test]
    fn message_values() {
        assert!(!is_message_value(&json!({"level": "info"})));
        assert!(!is_message_value(&Value::Null));
        assert_eq!(message_text(json!({"stringValue": "hi"})), "hi");
        assert_eq!(message_text(json!({"intValue": "5"})), "5");
        assert_eq!(message_text(json!([1, "a"])), "[1,\"a\"]");
        assert_eq!(message_text(json!(7)), "7");
        assert_eq!(message_text(json!(false)), "false");
    }

    #[test]
    fn otel_severity_numbers_are_told_apart_by_name() {
        assert!(is_otel_severity_number("severityNumber"));
        assert!(is_otel_severity_number("record.severity_number"));
        assert!(!is_otel_severity_number("level"));
    }
}
