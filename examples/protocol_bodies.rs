//! Writes the same N generated events as the request bodies of three push protocols, for
//! `scripts/bench.sh protocols` to send again and again at a fixed rate:
//!
//! - `ingest.ndjson`: POST /ingest, one §4 event line per event (the baseline);
//! - `otlp.pb`: POST /v1/logs, an OTLP `ExportLogsServiceRequest` in protobuf, one `ResourceLogs` per
//!   service (`service.name`), as an SDK batches its records;
//! - `loki.pb.snappy`: POST /loki/api/v1/push, a Loki `PushRequest` in protobuf with snappy block
//!   compression, one stream per (service, level) label set, as Promtail groups lines.
//!
//! Each record carries what the event had (time, level, service, message, user and the generator's
//! extra fields), so the three bodies cost the server comparable mapping work.
//!
//! `cargo run --example protocol_bodies -- DIR N [SEED]`

use std::collections::BTreeMap;
use std::path::PathBuf;

use actors::generator::{GeneratorConfig, LogGenerator};
use log_analyzer::http::protocols::logproto;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::{Map, Value};

/// OpenTelemetry severity numbers (the first of each level's range).
fn severity_number(level: &str) -> i32 {
    match level {
        "trace" => 1,
        "debug" => 5,
        "info" => 9,
        "warn" => 13,
        "error" => 17,
        "fatal" => 21,
        other => panic!("the generator wrote an unknown level {other}"),
    }
}

fn string_value(text: &str) -> Option<AnyValue> {
    Some(AnyValue { value: Some(any_value::Value::StringValue(text.to_owned())) })
}

fn attribute(key: &str, value: &Value) -> KeyValue {
    let value = match value {
        Value::String(s) => string_value(s),
        Value::Number(n) if n.is_i64() => {
            Some(AnyValue { value: Some(any_value::Value::IntValue(n.as_i64().unwrap())) })
        }
        other => string_value(&other.to_string()),
    };
    KeyValue { key: key.to_owned(), value }
}

struct Event {
    ts_ms: i64,
    level: String,
    service: String,
    message: String,
    /// Everything else the generator wrote (user_id, request_id, host, region, seq, trace_id).
    extra: Map<String, Value>,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: protocol_bodies DIR N [SEED]";
    let dir = PathBuf::from(args.next().expect(usage));
    let count: usize = args.next().expect(usage).parse().expect("N is a count");
    let seed: u64 = args.next().map(|s| s.parse().expect("SEED is a number")).unwrap_or(17);
    std::fs::create_dir_all(&dir).expect("the output folder can be made");

    // On time and well formed: every event of every body must be stored, so the stored count is
    // a whole number of bodies.
    let config = GeneratorConfig { seed, late_ratio: 0.0, malformed_ratio: 0.0, ..GeneratorConfig::default() };
    let mut generator = LogGenerator::new(config);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut ndjson = Vec::new();
    let mut events = Vec::with_capacity(count);
    for _ in 0..count {
        let generated = generator.next(now_ms);
        ndjson.extend_from_slice(&generated.payload);
        ndjson.push(b'\n');
        let Value::Object(mut fields) = serde_json::from_slice(&generated.payload).expect("generated JSON") else {
            panic!("the generator writes objects");
        };
        let mut take = |name: &str| match fields.remove(name) {
            Some(Value::String(s)) => s,
            other => panic!("generated {name} is {other:?}"),
        };
        let (level, service, message) = (take("level"), take("service"), take("message"));
        fields.remove("ts");
        events.push(Event { ts_ms: generated.ts_ms, level, service, message, extra: fields });
    }

    let mut by_service: BTreeMap<&str, Vec<LogRecord>> = BTreeMap::new();
    for e in &events {
        let nanos = u64::try_from(e.ts_ms).expect("a time after 1970") * 1_000_000;
        by_service.entry(&e.service).or_default().push(LogRecord {
            time_unix_nano: nanos,
            observed_time_unix_nano: nanos,
            severity_number: severity_number(&e.level),
            severity_text: e.level.clone(),
            body: string_value(&e.message),
            attributes: e.extra.iter().map(|(k, v)| attribute(k, v)).collect(),
            ..LogRecord::default()
        });
    }
    let otlp = ExportLogsServiceRequest {
        resource_logs: by_service
            .into_iter()
            .map(|(service, log_records)| ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![attribute("service.name", &Value::String(service.to_owned()))],
                    dropped_attributes_count: 0,
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope { name: "protocol_bodies".into(), ..Default::default() }),
                    log_records,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    };

    let mut streams: BTreeMap<(&str, &str), Vec<logproto::EntryAdapter>> = BTreeMap::new();
    for e in &events {
        streams.entry((&e.service, &e.level)).or_default().push(logproto::EntryAdapter {
            timestamp: Some(prost_types::Timestamp {
                seconds: e.ts_ms.div_euclid(1000),
                nanos: (e.ts_ms.rem_euclid(1000) * 1_000_000) as i32,
            }),
            line: e.message.clone(),
            structured_metadata: e
                .extra
                .iter()
                .map(|(k, v)| logproto::LabelPairAdapter {
                    name: k.clone(),
                    value: v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()),
                })
                .collect(),
        });
    }
    let loki = logproto::PushRequest {
        streams: streams
            .into_iter()
            .map(|((service, level), entries)| logproto::StreamAdapter {
                labels: format!("{{service_name=\"{service}\", level=\"{level}\"}}"),
                entries,
                ..Default::default()
            })
            .collect(),
    };
    let loki = snap::raw::Encoder::new().compress_vec(&loki.encode_to_vec()).expect("snappy compresses any input");

    for (name, body) in [("ingest.ndjson", ndjson), ("otlp.pb", otlp.encode_to_vec()), ("loki.pb.snappy", loki)] {
        std::fs::write(dir.join(name), &body).expect("the body can be written");
        println!("{name} {} bytes", body.len());
    }
}
