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

/// A level name that is none of the accepted spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown level {0:?}: expected trace, debug, info, warn, error or fatal")]
pub struct UnknownLevel(pub String);

impl Level {
    /// All levels, lowest first.
    pub const ALL: [Level; 6] = [Level::Trace, Level::Debug, Level::Info, Level::Warn, Level::Error, Level::Fatal];

    /// Parses a level name case-insensitively; `warning` and `critical` are accepted aliases.
    pub fn parse(name: &str) -> Result<Level, UnknownLevel> {
        // Level names are short ASCII: compare without allocating.
        let level = match name.len() {
            4 if name.eq_ignore_ascii_case("info") => Level::Info,
            4 if name.eq_ignore_ascii_case("warn") => Level::Warn,
            5 if name.eq_ignore_ascii_case("trace") => Level::Trace,
            5 if name.eq_ignore_ascii_case("debug") => Level::Debug,
            5 if name.eq_ignore_ascii_case("error") => Level::Error,
            5 if name.eq_ignore_ascii_case("fatal") => Level::Fatal,
            7 if name.eq_ignore_ascii_case("warning") => Level::Warn,
            8 if name.eq_ignore_ascii_case("critical") => Level::Fatal,
            _ => return Err(UnknownLevel(name.to_owned())),
        };
        Ok(level)
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
    fn names_and_aliases_parse_case_insensitively() {
        assert_eq!(Level::parse("TRACE"), Ok(Level::Trace));
        assert_eq!(Level::parse("Debug"), Ok(Level::Debug));
        assert_eq!(Level::parse("info"), Ok(Level::Info));
        assert_eq!(Level::parse("WARNING"), Ok(Level::Warn));
        assert_eq!(Level::parse("warn"), Ok(Level::Warn));
        assert_eq!(Level::parse("eRRor"), Ok(Level::Error));
        assert_eq!(Level::parse("Critical"), Ok(Level::Fatal));
        assert_eq!(Level::parse("fatal"), Ok(Level::Fatal));
    }

    #[test]
    fn unknown_names_are_rejected() {
        for bad in ["", "err", "information", "warn ", " info", "fatal!", "5"] {
            assert!(Level::parse(bad).is_err(), "{bad:?} should not parse");
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
