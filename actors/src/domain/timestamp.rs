//! Event times in the encodings loggers write (DESIGN §4): ISO 8601 / RFC 3339 text, epoch numbers
//! or digit strings in s/ms/µs/ns by magnitude, fractional seconds, log4j2's `{epochSecond, nanoOfSecond}`.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde_json::Value;

/// Below this magnitude an epoch number is seconds; each further factor of 1000 moves one unit finer.
const SECONDS_BELOW: u64 = 100_000_000_000;

/// True when `value` can be a time at all (a string, a number, or an object with `epochSecond`):
/// the first such field is the event's time.
pub fn is_time_value(value: &Value) -> bool {
    match value {
        Value::String(_) | Value::Number(_) => true,
        Value::Object(map) => map.contains_key("epochSecond"),
        _ => false,
    }
}

/// The time `value` encodes, or why it encodes none.
pub fn parse_time_value(value: &Value) -> Result<DateTime<Utc>, String> {
    match value {
        Value::String(s) => parse_time_text(s),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                from_epoch_integer(i128::from(i))
            } else if let Some(u) = n.as_u64() {
                from_epoch_integer(i128::from(u))
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                from_epoch_seconds_f64(f).ok_or_else(|| format!("{n} is not a representable epoch time"))
            }
        }
        Value::Object(map) => {
            let seconds = map.get("epochSecond").and_then(Value::as_i64).ok_or("`epochSecond` must be an integer")?;
            let nanos = match map.get("nanoOfSecond") {
                None | Some(Value::Null) => 0,
                Some(v) => {
                    v.as_u64().filter(|n| *n < 1_000_000_000).ok_or("`nanoOfSecond` must be an integer 0..1e9")?
                }
            };
            Utc.timestamp_opt(seconds, nanos as u32).single().ok_or_else(|| format!("{seconds} is out of range"))
        }
        _ => Err("expected a time string, an epoch number or {epochSecond, nanoOfSecond}".into()),
    }
}

/// Text: epoch digits (s/ms/µs/ns), decimal epoch seconds, or ISO 8601.
pub fn parse_time_text(s: &str) -> Result<DateTime<Utc>, String> {
    let t = s.trim();
    let digits = t.strip_prefix('-').unwrap_or(t);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let n: i128 = t.parse().map_err(|_| format!("{s:?} is not a representable epoch time"))?;
        return from_epoch_integer(n);
    }
    if let Some((whole, frac)) = digits.split_once('.') {
        if !whole.is_empty()
            && !frac.is_empty()
            && whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
            && !t.starts_with('-')
        {
            let seconds: i64 = whole.parse().map_err(|_| format!("{s:?} is out of range"))?;
            let nanos = fraction_nanos(frac.as_bytes());
            return Utc.timestamp_opt(seconds, nanos).single().ok_or_else(|| format!("{s:?} is out of range"));
        }
    }
    parse_iso8601(t).ok_or_else(|| format!("{s:?} is neither ISO 8601 / RFC 3339 nor an epoch number"))
}

/// An integer epoch whose unit follows from its magnitude (< 10^11 s, < 10^14 ms, < 10^17 µs, else ns).
fn from_epoch_integer(n: i128) -> Result<DateTime<Utc>, String> {
    let magnitude = n.unsigned_abs();
    let (per_second, unit) = match magnitude {
        m if m < u128::from(SECONDS_BELOW) => (1_i128, "s"),
        m if m < u128::from(SECONDS_BELOW) * 1_000 => (1_000, "ms"),
        m if m < u128::from(SECONDS_BELOW) * 1_000_000 => (1_000_000, "µs"),
        _ => (1_000_000_000, "ns"),
    };
    let seconds = n.div_euclid(per_second);
    let nanos = n.rem_euclid(per_second) * (1_000_000_000 / per_second);
    i64::try_from(seconds)
        .ok()
        .and_then(|s| Utc.timestamp_opt(s, nanos as u32).single())
        .ok_or_else(|| format!("{n} (epoch {unit}) is out of range"))
}

/// Fractional epoch seconds, rounded to the microsecond (an f64 holds no finer digits at today's epoch).
fn from_epoch_seconds_f64(f: f64) -> Option<DateTime<Utc>> {
    if !f.is_finite() || f.abs() > 1e15 {
        return None;
    }
    let micros = (f * 1e6).round() as i64;
    Utc.timestamp_micros(micros).single()
}

/// Nanoseconds of a fraction's digits (`123` → 123 000 000); digits past the ninth are dropped.
fn fraction_nanos(frac: &[u8]) -> u32 {
    let mut nanos = 0u32;
    for i in 0..9 {
        nanos = nanos * 10 + frac.get(i).map_or(0, |d| u32::from(d - b'0'));
    }
    nanos
}

/// ISO 8601 date-times as loggers write them: `T`, `t` or a space between date and time; seconds
/// optional; `.` or `,` before the fraction; `Z`, `±hh:mm`, `±hhmm`, `±hh` or no zone (= UTC).
pub fn parse_iso8601(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<u32> {
        let part = b.get(from..from + len)?;
        part.iter().try_fold(0u32, |acc, d| d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0')))
    };
    let year = num(0, 4)?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let (month, day) = (num(5, 2)?, num(8, 2)?);
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let hour = num(11, 2)?;
    if b.get(13) != Some(&b':') {
        return None;
    }
    let minute = num(14, 2)?;
    let mut i = 16;
    let mut second = 0;
    if b.get(i) == Some(&b':') {
        second = num(i + 1, 2)?;
        i += 3;
    }
    let mut nanos = 0;
    if matches!(b.get(i), Some(b'.' | b',')) {
        let start = i + 1;
        let mut end = start;
        while b.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        if end == start {
            return None;
        }
        nanos = fraction_nanos(&b[start..end]);
        i = end;
    }
    let offset_seconds: i32 = match b.get(i..) {
        None | Some([]) | Some(b"Z") | Some(b"z") | Some(b" UTC") | Some(b" Z") => 0,
        Some([sign @ (b'+' | b'-'), rest @ ..]) => {
            let at = i + 1;
            let hours = num(at, 2)?;
            let minutes = match rest.len() {
                2 => 0,
                4 => num(at + 2, 2)?,
                5 if rest[2] == b':' => num(at + 3, 2)?,
                _ => return None,
            };
            if hours > 23 || minutes > 59 {
                return None;
            }
            let total = (hours * 3600 + minutes * 60) as i32;
            if *sign == b'-' {
                -total
            } else {
                total
            }
        }
        _ => return None,
    };
    // A leap second (:60) is kept as the last nanosecond of its minute's 59th second, as chrono does.
    let (second, nanos) = if second == 60 { (59, 1_000_000_000 + nanos.min(999_999_999)) } else { (second, nanos) };
    let naive = NaiveDate::from_ymd_opt(year as i32, month, day)?.and_hms_nano_opt(hour, minute, second, nanos)?;
    Some(naive.and_utc() - chrono::Duration::seconds(i64::from(offset_seconds)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use proptest::prelude::*;
    use serde_json::json;

    fn at(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(ms).unwrap()
    }

    const MS: i64 = 1_764_158_398_123; // 2025-11-26T11:59:58.123Z

    #[test]
    fn every_encoding_gives_the_same_instant() {
        let want = at(MS);
        let cases = [
            json!("2025-11-26T11:59:58.123Z"),
            json!("2025-11-26T11:59:58.123+00:00"),
            json!("2025-11-26 11:59:58.123"),
            json!("2025-11-26 11:59:58,123"),
            json!("2025-11-26t11:59:58.123z"),
            json!("2025-11-26T12:59:58.123+01:00"),
            json!("2025-11-26T12:59:58.123+0100"),
            json!("2025-11-26T12:59:58.123+01"),
            json!("2025-11-26T10:59:58.123-01:00"),
            json!("2025-11-26T11:59:58.1230000Z"),
            json!("2025-11-26T11:59:58.123456789Z"),
            json!("2025-11-26 11:59:58.123 UTC"),
            json!(MS),
            json!(MS.to_string()),
            json!(MS * 1_000 + 456),
            json!((MS * 1_000 + 456).to_string()),
            json!(MS * 1_000_000 + 456_789),
            json!((MS * 1_000_000 + 456_789).to_string()),
            json!(1_764_158_398.123),
            json!("1764158398.123"),
            json!({"epochSecond": 1_764_158_398, "nanoOfSecond": 123_456_789}),
        ];
        for value in cases {
            let got = parse_time_value(&value).unwrap_or_else(|e| panic!("{value}: {e}"));
            let got_ms = got.duration_trunc_ms();
            assert_eq!(got_ms, want, "{value}");
        }
        assert_eq!(parse_time_value(&json!(1_764_158_398)).unwrap(), at(MS - 123));
        assert_eq!(parse_time_value(&json!("2025-11-26T11:59")).unwrap(), at(MS - 58_123));
        assert_eq!(
            parse_time_value(&json!(MS * 1_000_000 + 456_789)).unwrap(),
            at(MS) + Duration::nanoseconds(456_789)
        );
    }

    trait TruncMs {
        fn duration_trunc_ms(self) -> DateTime<Utc>;
    }
    impl TruncMs for DateTime<Utc> {
        fn duration_trunc_ms(self) -> DateTime<Utc> {
            at(self.timestamp_millis())
        }
    }

    #[test]
    fn magnitude_edges_pick_the_unit() {
        let edge = SECONDS_BELOW as i64;
        assert_eq!(parse_time_value(&json!(edge - 1)).unwrap().timestamp(), edge - 1);
        assert_eq!(parse_time_value(&json!(edge)).unwrap().timestamp_millis(), edge);
        assert_eq!(parse_time_value(&json!(edge * 1000)).unwrap().timestamp_micros(), edge * 1000);
        assert_eq!(parse_time_value(&json!(edge * 1_000_000)).unwrap().timestamp_nanos_opt(), Some(edge * 1_000_000));
        assert_eq!(parse_time_value(&json!(0)).unwrap().timestamp(), 0);
    }

    #[test]
    fn bad_times_say_why() {
        for bad in [
            json!("yesterday"),
            json!("2025-13-01T00:00:00Z"),
            json!("2025-11-26T11:59:58.Z"),
            json!("2025-11-26T11:59:58+1"),
            json!("2025-11-26"),
            json!(""),
            json!(1e300),
            json!(true),
            json!({"epochSecond": "x"}),
            json!({"epochSecond": 1, "nanoOfSecond": 2_000_000_000u64}),
        ] {
            assert!(parse_time_value(&bad).is_err(), "{bad} should not be a time");
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_any_text(s in "\\PC{0,40}") {
            let _ = parse_time_text(&s);
        }

        #[test]
        fn rfc3339_from_chrono_round_trips(ms in 0i64..4_000_000_000_000) {
            let t = at(ms);
            prop_assert_eq!(parse_time_text(&t.to_rfc3339()).unwrap(), t);
            prop_assert_eq!(parse_time_text(&t.format("%Y-%m-%d %H:%M:%S,%3f").to_string()).unwrap(), t);
        }
    }
}
