use chrono::TimeZone;
use proptest::prelude::*;

use super::*;
use crate::domain::{Fallback, ParseRules};

fn params(pairs: &[(&str, &'static str)]) -> SearchParams<'static> {
    SearchParams::from_pairs(pairs.iter().copied()).expect("known parameters, each once")
}

fn code(pairs: &[(&str, &'static str)]) -> &'static str {
    params(pairs).query().expect_err("should be refused").code
}

fn event(line: &str) -> LogEvent {
    let now = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
    LogEvent::parse(line.as_bytes(), Fallback::kafka(Some(now), "logs"), now, &ParseRules::default())
        .expect("a valid line")
}

#[test]
fn terms_are_tokenized_as_messages_are_and_minus_excludes() {
    let q = params(&[("q", "Timeout  DB:conn -retry timeout")]).query().unwrap();
    assert_eq!(q.filter.include, ["timeout", "db", "conn"]);
    assert_eq!(q.filter.exclude, ["retry"]);
    assert_eq!(q.limit, DEFAULT_LIMIT);
    assert_eq!(q.filter.levels, LevelFilter::Any);
    // A lone "-" is a term without a token, not an empty exclusion.
    assert_eq!(code(&[("q", "-")]), "bad_query");
}

#[test]
fn levels_are_one_or_a_minimum_and_plus_may_arrive_as_a_space() {
    let level = |text: &'static str| params(&[("level", text)]).filter().unwrap().levels;
    assert_eq!(level("error"), LevelFilter::Exactly(Level::Error));
    assert_eq!(level("WARN+"), LevelFilter::AtLeast(Level::Warn));
    assert_eq!(level("warning "), LevelFilter::AtLeast(Level::Warn));
    assert_eq!(LevelFilter::AtLeast(Level::Warn).numbers(), [3, 4, 5]);
    assert_eq!(LevelFilter::Exactly(Level::Info).numbers(), [2]);
    assert_eq!(code(&[("level", "loud")]), "bad_level");
    assert_eq!(code(&[("level", "+")]), "bad_level");
}

#[test]
fn malformed_questions_name_what_to_fix() {
    assert_eq!(code(&[("q", "a")]), "bad_query");
    assert_eq!(code(&[("q", "!!!")]), "bad_query");
    assert_eq!(code(&[("q", "-error:timeout")]), "bad_query");
    assert_eq!(code(&[("q", "timeout -timeout")]), "bad_query");
    let long: &'static str = Box::leak("x".repeat(65).into_boxed_str());
    assert_eq!(code(&[("q", long)]), "bad_query");
    let many: &'static str = Box::leak((0..17).map(|i| format!("t{i}")).collect::<Vec<_>>().join(" ").into_boxed_str());
    assert_eq!(code(&[("q", many)]), "bad_query");
    assert_eq!(code(&[("service", "")]), "bad_service");
    assert_eq!(code(&[("limit", "0")]), "bad_limit");
    assert_eq!(code(&[("limit", "1001")]), "bad_limit");
    assert_eq!(code(&[("limit", "ten")]), "bad_limit");
    assert_eq!(code(&[("from", "yesterday")]), "bad_from");
    assert_eq!(code(&[("to", "-5")]), "bad_to");
    assert_eq!(code(&[("from", "2026-12-01T00:00:00Z"), ("to", "2026-12-01T00:00:00Z")]), "bad_range");
    assert_eq!(code(&[("cursor", "nope")]), "bad_cursor");
    assert_eq!(params(&[("limit", "1000")]).query().unwrap().limit, 1000);
}

#[test]
fn pairs_name_known_parameters_each_once() {
    let p = SearchParams::from_pairs([("q", "timeout"), ("cursor", "c"), ("limit", "5")]).unwrap();
    assert_eq!((p.q, p.cursor, p.limit, p.service), (Some("timeout"), Some("c"), Some("5"), None));
    let unknown = SearchParams::from_pairs([("q", "x"), ("page", "2")]).unwrap_err();
    assert_eq!(unknown.code, "unknown_parameter");
    assert!(unknown.message.contains("\"page\"") && unknown.message.ends_with("limit, cursor"), "{unknown}");
    assert_eq!(SearchParams::from_pairs([("to", "1"), ("to", "2")]).unwrap_err().code, "repeated_parameter");
    // Every name it takes is one of NAMES, and every one of NAMES is taken.
    for name in SearchParams::NAMES {
        assert!(SearchParams::from_pairs([(name, "v")]).is_ok(), "{name}");
    }
}

#[test]
fn times_are_rfc3339_or_epoch_seconds_in_microseconds() {
    let q = params(&[("from", "1764590400.5"), ("to", "2026-12-01T12:00:01.25+01:00")]).query().unwrap();
    assert_eq!(q.from_micros, Some(1_764_590_400_500_000));
    assert_eq!(q.to_micros, Some(Utc.with_ymd_and_hms(2026, 12, 1, 11, 0, 1).unwrap().timestamp_micros() + 250_000));
    assert!(q.in_range(1_764_590_400_500_000));
    assert!(!q.in_range(1_764_590_400_499_999));
    assert!(!q.in_range(q.to_micros.unwrap()));
}

#[test]
fn the_filter_matches_events_and_stored_rows_alike() {
    let e = event(r#"{"level":"error","service":"api","message":"Upstream timeout after retry"}"#);
    let f = |pairs: &[(&str, &'static str)]| params(pairs).filter().unwrap();
    let stored: Vec<String> = e.tokens.iter().map(str::to_owned).collect();
    for (filter, want) in [
        (f(&[("q", "timeout")]), true),
        (f(&[("q", "TIMEOUT upstream")]), true),
        (f(&[("q", "timeout -retry")]), false),
        (f(&[("q", "timeout -db")]), true),
        (f(&[("q", "time")]), false),
        (f(&[("service", "api"), ("level", "warn+")]), true),
        (f(&[("service", "web")]), false),
        (f(&[("level", "fatal+")]), false),
        (f(&[("level", "error")]), true),
        (f(&[]), true),
    ] {
        assert_eq!(filter.matches(&e), want, "{filter:?}");
        assert_eq!(filter.matches_row(e.level, e.service.as_str(), &stored), want, "{filter:?}");
    }
}

#[test]
fn a_cursor_round_trips_and_orders_newest_first() {
    let c = Cursor { ts_micros: 1_764_590_400_000_001, partition: 3, offset: 42, topic: "logs:a".into() };
    assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
    // Older, or as old and lower in (partition, offset, topic): after the cursor.
    assert!(c.precedes(c.ts_micros - 1, 9, 9, "z"));
    assert!(c.precedes(c.ts_micros, 2, 99, "z"));
    assert!(c.precedes(c.ts_micros, 3, 41, "z"));
    assert!(c.precedes(c.ts_micros, 3, 42, "logs"));
    assert!(!c.precedes(c.ts_micros, 3, 42, "logs:a"));
    assert!(!c.precedes(c.ts_micros + 1, 0, 0, ""));
    for bad in ["", "djE6", &URL_SAFE_NO_PAD.encode("v2:1:2:3:t"), &URL_SAFE_NO_PAD.encode("v1:1:-2:3:t")] {
        assert_eq!(Cursor::decode(bad).unwrap_err().code, "bad_cursor", "{bad}");
    }
}

#[test]
fn a_found_event_serializes_with_microsecond_utc_time_and_its_attrs() {
    let e = event(
        r#"{"ts":"2026-12-01T11:59:58.123456Z","level":"warn","service":"api","message":"m","user_id":"u1","k":[1,{"a":2}]}"#,
    );
    let found = FoundEvent::of("logs", 1, 7, &e);
    let json = serde_json::to_value(&found).unwrap();
    assert_eq!(json["ts"], "2026-12-01T11:59:58.123456Z");
    assert_eq!(json["level"], "warn");
    assert_eq!(json["user_id"], "u1");
    assert_eq!(json["attrs"], serde_json::json!({"k": [1, {"a": 2}]}));
    assert_eq!(
        (json["topic"].as_str(), json["partition"].as_i64(), json["offset"].as_i64()),
        (Some("logs"), Some(1), Some(7))
    );
    assert_eq!(Cursor::of(&found).ts_micros, e.ts.timestamp_micros());
}

proptest! {
    /// Whatever the parameters hold, the answer is a question or a named refusal, never a panic.
    #[test]
    fn any_parameters_parse_or_are_refused(q in "\\PC{0,80}", level in "\\PC{0,12}", limit in "\\PC{0,6}",
                                           from in "\\PC{0,30}", cursor in "\\PC{0,40}") {
        let p = SearchParams { q: Some(&q), service: None, level: Some(&level), from: Some(&from), to: None,
                               limit: Some(&limit), cursor: Some(&cursor) };
        if let Err(e) = p.query() {
            prop_assert!(e.code.starts_with("bad_"));
            prop_assert!(!e.message.is_empty());
        }
    }

    /// Include tokens are what tokenizing the terms gives, so a query made of a message's own words
    /// finds that message.
    #[test]
    fn a_message_is_found_by_its_own_words(words in prop::collection::vec("[a-zA-Z0-9_]{2,10}", 1..6)) {
        let line = format!(r#"{{"level":"info","service":"s","message":"{}"}}"#, words.join(" "));
        let e = event(&line);
        let q = words.join(" ");
        let filter = SearchParams { q: Some(&q), ..SearchParams::default() }.filter().unwrap();
        prop_assert!(filter.matches(&e));
    }
}
