//! Log severity.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Severity of a log event, stored as a `smallint` (0 = trace … 5 = fatal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Fatal = 5,
}

/// Longest level name (`informational`), in bytes.
pub const LONGEST_NAME: usize = 13;

/// A level name that is none of the accepted spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown level {0:?}: expected trace, debug, info, warn, error or fatal")]
pub struct UnknownLevel(pub String);

impl Level {
    /// All levels, lowest first.
    pub const ALL: [Level; 6] = [Level::Trace, Level::Debug, Level::Info, Level::Warn, Level::Error, Level::Fatal];

    /// Parses a level name, any case, with every spelling of DESIGN §4 (`err`, `notice`, `v`, `severe`, …).
    pub fn parse(name: &str) -> Result<Level, UnknownLevel> {
        Level::from_name(name).ok_or_else(|| UnknownLevel(name.to_owned()))
    }

    /// The level a name spells, if any (names are short ASCII: compared without allocating).
    pub fn from_name(name: &str) -> Option<Level> {
        let bytes = name.as_bytes();
        let mut lower = [0u8; LONGEST_NAME];
        if bytes.is_empty() || bytes.len() > LONGEST_NAME {
            return None;
        }
        for (d, s) in lower.iter_mut().zip(bytes) {
            *d = s.to_ascii_lowercase();
        }
        let level = match &lower[..bytes.len()] {
            b"trace" | b"verbose" | b"finest" | b"finer" | b"v" => Level::Trace,
            b"debug" | b"fine" | b"config" | b"d" => Level::Debug,
            b"info" | b"information" | b"informational" | b"notice" | b"i" => Level::Info,
            b"warn" | b"warning" | b"w" => Level::Warn,
            b"error" | b"err" | b"severe" | b"e" => Level::Error,
            b"fatal" | b"critical" | b"crit" | b"alert" | b"emerg" | b"emergency" | b"panic" | b"f" => Level::Fatal,
            _ => return None,
        };
        Some(level)
    }

    /// An OpenTelemetry `SeverityNumber` (1–4 trace … 21–24 fatal).
    pub fn from_otel_number(n: i64) -> Option<Level> {
        let level = match n {
            1..=4 => Level::Trace,
            5..=8 => Level::Debug,
            9..=12 => Level::Info,
            13..=16 => Level::Warn,
            17..=20 => Level::Error,
            21..=24 => Level::Fatal,
            _ => return None,
        };
        Some(level)
    }

    /// A number in a level field: 0–7 is a syslog severity, 10–69 a pino/bunyan level (by its tens).
    pub fn from_number(n: i64) -> Option<Level> {
        let level = match n {
            0..=2 => Level::Fatal,
            3 => Level::Error,
            4 => Level::Warn,
            5 | 6 => Level::Info,
            7 => Level::Debug,
            10..=69 => Level::ALL[usize::try_from(n / 10 - 1).ok()?],
            _ => return None,
        };
        Some(level)
    }

    /// The canonical lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Fatal => "fatal",
        }
    }

    /// The `smallint` stored in PostgreSQL.
    pub fn as_i16(self) -> i16 {
        self as i16
    }

    /// The level stored as `code`, if any.
    pub fn from_i16(code: i16) -> Option<Level> {
        Level::ALL.get(usize::try_from(code).ok()?).copied()
    }

    /// Error and fatal events count as errors.
    pub fn is_error(self) -> bool {
        self >= Level::Error
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = UnknownLevel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Level::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_every_level_parses_in_any_case() {
        let table: [(Level, &[&str]); 6] = [
            (Level::Trace, &["trace", "verbose", "finest", "finer", "v"]),
            (Level::Debug, &["debug", "fine", "config", "d"]),
            (Level::Info, &["info", "information", "informational", "notice", "i"]),
            (Level::Warn, &["warn", "warning", "w"]),
            (Level::Error, &["error", "err", "severe", "e"]),
            (Level::Fatal, &["fatal", "critical", "crit", "alert", "emerg", "emergency", "panic", "f"]),
        ];
        for (level, names) in table {
            for name in names {
                let upper = name.to_uppercase();
                let capitalised = format!("{}{}", &upper[..1], &name[1..]);
                for spelling in [name.to_string(), upper, capitalised] {
                    assert_eq!(Level::parse(&spelling), Ok(level), "{spelling:?}");
                }
            }
        }
    }

    #[test]
    fn unknown_names_are_rejected() {
        for bad in ["", "loud", "warn ", " info", "fatal!", "5", "informationally", "é", "infö"] {
            assert!(Level::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn number_ranges_map_as_documented() {
        let otel = [
            (0, None),
            (1, Some(Level::Trace)),
            (4, Some(Level::Trace)),
            (5, Some(Level::Debug)),
            (8, Some(Level::Debug)),
            (9, Some(Level::Info)),
            (12, Some(Level::Info)),
            (13, Some(Level::Warn)),
            (16, Some(Level::Warn)),
            (17, Some(Level::Error)),
            (20, Some(Level::Error)),
            (21, Some(Level::Fatal)),
            (24, Some(Level::Fatal)),
            (25, None),
            (-1, None),
        ];
        for (n, want) in otel {
            assert_eq!(Level::from_otel_number(n), want, "otel {n}");
        }
        let numbers = [
            (-1, None),
            (0, Some(Level::Fatal)),
            (1, Some(Level::Fatal)),
            (2, Some(Level::Fatal)),
            (3, Some(Level::Error)),
            (4, Some(Level::Warn)),
            (5, Some(Level::Info)),
            (6, Some(Level::Info)),
            (7, Some(Level::Debug)),
            (8, None),
            (9, None),
            (10, Some(Level::Trace)),
            (19, Some(Level::Trace)),
            (20, Some(Level::Debug)),
            (30, Some(Level::Info)),
            (40, Some(Level::Warn)),
            (50, Some(Level::Error)),
            (60, Some(Level::Fatal)),
            (69, Some(Level::Fatal)),
            (70, None),
            (100, None),
        ];
        for (n, want) in numbers {
            assert_eq!(Level::from_number(n), want, "number {n}");
        }
    }

    #[test]
    fn smallint_round_trips_and_errors_are_error_and_fatal() {
        for level in Level::ALL {
            assert_eq!(Level::from_i16(level.as_i16()), Some(level));
            assert_eq!(Level::parse(level.as_str()), Ok(level));
        }
        assert_eq!(Level::from_i16(6), None);
        assert_eq!(Level::from_i16(-1), None);
        let errors: Vec<Level> = Level::ALL.into_iter().filter(|l| l.is_error()).collect();
        assert_eq!(errors, vec![Level::Error, Level::Fatal]);
    }
}
