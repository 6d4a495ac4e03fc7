//! One table row per shape that loggers and shippers write (DESIGN §4), every field checked.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};

use super::event::{Fallback, LogEvent, ParseRules, RejectReason};
use super::level::Level;
use super::resolve::FieldNames;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap()
}

/// 2026-11-26T11:30:00.250Z, the time every row below writes in its own encoding.
fn t() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 11, 30, 0).unwrap() + Duration::milliseconds(250)
}

/// The Kafka message timestamp of rows that carry no time.
fn kafka_ts() -> DateTime<Utc> {
    now() - Duration::seconds(1)
}

struct Shape {
    name: &'static str,
    line: Value,
    ts: DateTime<Utc>,
    level: Level,
    service: &'static str,
    message: &'static str,
    user_id: Option<&'static str>,
    attrs: Value,
}

fn shapes() -> Vec<Shape> {
    vec![
        Shape {
            name: "pino",
            line: json!({"level": 30, "time": 1_795_692_600_250_i64, "pid": 42, "hostname": "web1",
                         "name": "checkout", "msg": "order placed", "userId": "u1"}),
            ts: t(),
            level: Level::Info,
            service: "checkout",
            message: "order placed",
            user_id: Some("u1"),
            attrs: json!({"pid": 42, "hostname": "web1"}),
        },
        Shape {
            name: "bunyan",
            line: json!({"name": "checkout", "hostname": "web1", "pid": 42, "level": 50, "msg": "payment failed",
                         "time": "2026-11-26T11:30:00.250Z", "v": 0}),
            ts: t(),
            level: Level::Error,
            service: "checkout",
            message: "payment failed",
            user_id: None,
            attrs: json!({"hostname": "web1", "pid": 42, "v": 0}),
        },
        Shape {
            name: "ECS dotted",
            line: json!({"@timestamp": "2026-11-26T11:30:00.250Z", "log.level": "warn", "message": "disk 91%",
                         "service.name": "storage", "user.id": "u2", "ecs.version": "1.6.0"}),
            ts: t(),
            level: Level::Warn,
            service: "storage",
            message: "disk 91%",
            user_id: Some("u2"),
            attrs: json!({"ecs.version": "1.6.0"}),
        },
        Shape {
            name: "ECS nested",
            line: json!({"@timestamp": "2026-11-26T11:30:00.250Z", "log": {"level": "error", "logger": "db"},
                         "message": "connection lost", "service": {"name": "storage", "version": "2"},
                         "user": {"id": "u3"}, "ecs": {"version": "8.11"}}),
            ts: t(),
            level: Level::Error,
            service: "storage",
            message: "connection lost",
            user_id: Some("u3"),
            attrs: json!({"log": {"logger": "db"}, "service": {"version": "2"}, "ecs": {"version": "8.11"}}),
        },
        Shape {
            name: "OpenTelemetry log JSON",
            line: json!({"timeUnixNano": "1795692600250000000", "observedTimeUnixNano": "1795692601000000000",
                         "severityNumber": 17, "severityText": "ERROR", "body": {"stringValue": "charge declined"},
                         "resource": {"service.name": "billing"}, "attributes": {"http.status": 402},
                         "traceId": "5b8efff798038103d269b633813fc60c"}),
            ts: t(),
            level: Level::Error,
            service: "billing",
            message: "charge declined",
            user_id: None,
            attrs: json!({"observedTimeUnixNano": "1795692601000000000", "severityNumber": 17,
                          "attributes": {"http.status": 402}, "traceId": "5b8efff798038103d269b633813fc60c"}),
        },
        Shape {
            name: "OpenTelemetry with a severity number only",
            line: json!({"observedTimeUnixNano": 1_795_692_600_250_000_000_i64, "severityNumber": 13,
                         "body": {"stringValue": "queue at 80%"}, "resource": {"service": {"name": "queue"}}}),
            ts: t(),
            level: Level::Warn,
            service: "queue",
            message: "queue at 80%",
            user_id: None,
            attrs: json!({}),
        },
        Shape {
            name: "zap",
            line: json!({"level": "info", "ts": 1_795_692_600.25, "logger": "api", "caller": "main.go:12",
                         "msg": "listening", "port": 8080}),
            ts: t(),
            level: Level::Info,
            service: "api",
            message: "listening",
            user_id: None,
            attrs: json!({"caller": "main.go:12", "port": 8080}),
        },
        Shape {
            name: "logrus",
            line: json!({"level": "warning", "msg": "slow query", "time": "2026-11-26T12:30:00.25+01:00",
                         "duration_ms": 1200}),
            ts: t(),
            level: Level::Warn,
            service: "orders",
            message: "slow query",
            user_id: None,
            attrs: json!({"duration_ms": 1200}),
        },
        Shape {
            name: "Serilog CLEF",
            line: json!({"@t": "2026-11-26T11:30:00.2500000Z", "@m": "User u4 logged in",
                         "@mt": "User {UserId} logged in", "@l": "Warning", "UserId": "u4", "app": "portal"}),
            ts: t(),
            level: Level::Warn,
            service: "portal",
            message: "User u4 logged in",
            user_id: None,
            attrs: json!({"@mt": "User {UserId} logged in", "UserId": "u4"}),
        },
        Shape {
            name: "GELF",
            line: json!({"version": "1.1", "host": "web1", "short_message": "Backend down", "full_message": "trace…",
                         "timestamp": 1_795_692_600.25, "level": 3, "_service": "gateway", "_user_id": "u5"}),
            ts: t(),
            level: Level::Error,
            service: "gateway",
            message: "Backend down",
            user_id: None,
            attrs: json!({"version": "1.1", "host": "web1", "full_message": "trace…", "_user_id": "u5"}),
        },
        Shape {
            name: "python-json-logger",
            line: json!({"asctime": "2026-11-26 11:30:00,250", "levelname": "CRITICAL", "name": "worker.tasks",
                         "message": "task failed", "taskName": null}),
            ts: t(),
            level: Level::Fatal,
            service: "worker.tasks",
            message: "task failed",
            user_id: None,
            attrs: json!({"taskName": null}),
        },
        Shape {
            name: "log4j2 JsonLayout",
            line: json!({"instant": {"epochSecond": 1_795_692_600, "nanoOfSecond": 250_000_000}, "thread": "main",
                         "level": "WARN", "loggerName": "com.acme.Billing", "message": "retrying", "endOfBatch": false,
                         "loggerFqcn": "org.apache.logging.log4j.spi.AbstractLogger", "threadId": 1}),
            ts: t(),
            level: Level::Warn,
            service: "com.acme.Billing",
            message: "retrying",
            user_id: None,
            attrs: json!({"thread": "main", "endOfBatch": false,
                          "loggerFqcn": "org.apache.logging.log4j.spi.AbstractLogger", "threadId": 1}),
        },
        Shape {
            name: "Docker json-file",
            line: json!({"log": "GET /health 200\n", "stream": "stdout", "time": "2026-11-26T11:30:00.250000000Z"}),
            ts: t(),
            level: Level::Info,
            service: "orders",
            message: "GET /health 200",
            user_id: None,
            attrs: json!({"stream": "stdout"}),
        },
        Shape {
            name: "Vector envelope",
            line: json!({"message": "2015-10-18 18:01:47,978 ERROR [main] o.a.Foo: boom", "host": "web1",
                         "file": "/var/log/app.log", "timestamp": "2026-11-26T11:30:00.250Z", "source_type": "file"}),
            ts: t(),
            level: Level::Error,
            service: "orders",
            message: "2015-10-18 18:01:47,978 ERROR [main] o.a.Foo: boom",
            user_id: None,
            attrs: json!({"host": "web1", "file": "/var/log/app.log", "source_type": "file"}),
        },
        Shape {
            name: "Filebeat envelope",
            line: json!({"@timestamp": "2026-11-26T11:30:00.250Z", "message": "WARN low memory",
                         "log": {"file": {"path": "/var/log/app.log"}}, "host": {"name": "web1"},
                         "agent": {"type": "filebeat"}}),
            ts: t(),
            level: Level::Warn,
            service: "orders",
            message: "WARN low memory",
            user_id: None,
            attrs: json!({"log": {"file": {"path": "/var/log/app.log"}}, "host": {"name": "web1"},
                          "agent": {"type": "filebeat"}}),
        },
        Shape {
            name: "house format",
            line: json!({"ts": "2026-11-26T11:30:00.250Z", "level": "debug", "service": "s", "message": "m",
                         "user_id": "u6"}),
            ts: t(),
            level: Level::Debug,
            service: "s",
            message: "m",
            user_id: Some("u6"),
            attrs: json!({}),
        },
        Shape {
            name: "no time at all",
            line: json!({"msg": "Starting up"}),
            ts: kafka_ts(),
            level: Level::Info,
            service: "orders",
            message: "Starting up",
            user_id: None,
            attrs: json!({}),
        },
    ]
}

fn resolve(raw: &[u8], rules: &ParseRules) -> Result<LogEvent, super::event::Reject> {
    LogEvent::parse(raw, Fallback::kafka(Some(kafka_ts()), "orders"), now(), rules)
}

#[test]
fn every_shape_resolves_every_field() {
    for shape in shapes() {
        let raw = shape.line.to_string();
        let e = resolve(raw.as_bytes(), &ParseRules::default()).unwrap_or_else(|r| panic!("{}: {r}", shape.name));
        assert_eq!(e.ts, shape.ts, "{}: ts", shape.name);
        assert_eq!(e.level, shape.level, "{}: level", shape.name);
        assert_eq!(e.service.as_str(), shape.service, "{}: service", shape.name);
        assert_eq!(e.message, shape.message, "{}: message", shape.name);
        assert_eq!(e.user_id.as_ref().map(|u| u.as_str()), shape.user_id, "{}: user_id", shape.name);
        assert_eq!(e.attrs.to_value(), shape.attrs, "{}: attrs", shape.name);
        assert_eq!(e.tokens, super::tokenize(shape.message), "{}: tokens", shape.name);
    }
}

#[test]
fn earlier_names_win_and_later_ones_stay_in_attrs() {
    let cases = [
        (json!({"ts": "2026-11-26T11:30:00.250Z", "timestamp": "2026-11-26T10:00:00Z", "message": "m"}), "ts"),
        (json!({"level": "error", "severity": "info", "message": "m"}), "level"),
        (json!({"severityText": "WARN", "severityNumber": 9, "message": "m"}), "level"),
        (json!({"message": "chosen", "msg": "other"}), "message"),
        (json!({"service": "s", "app": "a", "name": "n", "message": "m"}), "service"),
        (json!({"user_id": "u", "userId": "v", "message": "m"}), "user"),
    ];
    for (line, field) in cases {
        let e = resolve(line.to_string().as_bytes(), &ParseRules::default()).unwrap();
        match field {
            "ts" => {
                assert_eq!(e.ts, t());
                assert_eq!(e.attrs.to_value(), json!({"timestamp": "2026-11-26T10:00:00Z"}));
            }
            "level" if line.get("severity").is_some() => {
                assert_eq!(e.level, Level::Error);
                assert_eq!(e.attrs.to_value(), json!({"severity": "info"}));
            }
            "level" => {
                assert_eq!(e.level, Level::Warn);
                assert_eq!(e.attrs.to_value(), json!({"severityNumber": 9}));
            }
            "message" => {
                assert_eq!(e.message, "chosen");
                assert_eq!(e.attrs.to_value(), json!({"msg": "other"}));
            }
            "service" => {
                assert_eq!(e.service.as_str(), "s");
                assert_eq!(e.attrs.to_value(), json!({"app": "a", "name": "n"}));
            }
            _ => {
                assert_eq!(e.user_id.unwrap().as_str(), "u");
                assert_eq!(e.attrs.to_value(), json!({"userId": "v"}));
            }
        }
    }
}

#[test]
fn a_present_but_unusable_value_lets_the_next_name_answer() {
    let e = resolve(br#"{"level":null,"lvl":"warn","message":{"k":1},"msg":"real"}"#, &ParseRules::default()).unwrap();
    assert_eq!((e.level, e.message.as_str()), (Level::Warn, "real"));
    assert_eq!(e.attrs.to_value(), json!({"level": null, "message": {"k": 1}}));
}

#[test]
fn fields_settings_replace_the_default_names() {
    let fields = FieldNames {
        ts: vec!["when".into()],
        level: vec!["sev".into(), "meta.sev_no".into()],
        service: vec!["svc.id".into()],
        message: vec!["line".into()],
        user: vec!["who".into()],
    };
    let rules = ParseRules { fields: Arc::new(fields), ..ParseRules::default() };
    let e = resolve(
        br#"{"when":"2026-11-26T11:30:00.250Z","sev":"ERR","svc":{"id":"pay"},"line":"x","who":"u","service":"ignored","message":"kept"}"#,
        &rules,
    )
    .unwrap();
    assert_eq!((e.ts, e.level, e.service.as_str(), e.message.as_str()), (t(), Level::Error, "pay", "x"));
    assert_eq!(e.user_id.unwrap().as_str(), "u");
    assert_eq!(e.attrs.to_value(), json!({"service": "ignored", "message": "kept"}));
    let e = resolve(br#"{"meta":{"sev_no":4},"line":"x"}"#, &rules).unwrap();
    assert_eq!(e.level, Level::Warn, "a number outside severityNumber names is a syslog severity");
    let missing = resolve(br#"{"message":"x"}"#, &rules).unwrap_err();
    assert_eq!(missing.reason, RejectReason::MissingField);
    assert!(missing.detail.contains("line"), "{}", missing.detail);
}

#[test]
fn every_level_number_convention_through_the_whole_function() {
    for (line, want) in [
        (r#"{"level":10,"msg":"m"}"#, Level::Trace),
        (r#"{"level":20,"msg":"m"}"#, Level::Debug),
        (r#"{"level":30,"msg":"m"}"#, Level::Info),
        (r#"{"level":40,"msg":"m"}"#, Level::Warn),
        (r#"{"level":50,"msg":"m"}"#, Level::Error),
        (r#"{"level":60,"msg":"m"}"#, Level::Fatal),
        (r#"{"level":"30","msg":"m"}"#, Level::Info),
        (r#"{"level":0,"msg":"m"}"#, Level::Fatal),
        (r#"{"level":3,"msg":"m"}"#, Level::Error),
        (r#"{"level":4,"msg":"m"}"#, Level::Warn),
        (r#"{"level":6,"msg":"m"}"#, Level::Info),
        (r#"{"level":7,"msg":"m"}"#, Level::Debug),
        (r#"{"severityNumber":1,"body":"m"}"#, Level::Trace),
        (r#"{"severityNumber":5,"body":"m"}"#, Level::Debug),
        (r#"{"severityNumber":9,"body":"m"}"#, Level::Info),
        (r#"{"severityNumber":13,"body":"m"}"#, Level::Warn),
        (r#"{"severityNumber":17,"body":"m"}"#, Level::Error),
        (r#"{"severityNumber":24,"body":"m"}"#, Level::Fatal),
        (r#"{"severity_text":"notice","body":"m"}"#, Level::Info),
        (r#"{"loglevel":"emerg","msg":"m"}"#, Level::Fatal),
        (r#"{"severity":"FINEST","msg":"m"}"#, Level::Trace),
    ] {
        let e = resolve(line.as_bytes(), &ParseRules::default()).unwrap_or_else(|r| panic!("{line}: {r}"));
        assert_eq!(e.level, want, "{line}");
    }
}
