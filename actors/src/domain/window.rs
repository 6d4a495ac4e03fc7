//! Window lengths given as `<integer><s|m|h|d>`.

use std::fmt;

use serde::Serialize;

/// A window length in whole seconds, at least one second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    seconds: u64,
}

/// Why a window was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("{0:?} is not a window: use a whole number and a unit, like 10s, 5m, 1h or 7d")]
    Malformed(String),
    #[error("window must be at least 1s")]
    Zero,
    #[error("window {given} is longer than the {max} allowed")]
    TooLong { given: String, max: Window },
}

impl Window {
    /// A window of `seconds` (at least 1).
    pub fn from_seconds(seconds: u64) -> Option<Window> {
        (seconds > 0).then_some(Window { seconds })
    }

    /// Parses `<integer><s|m|h|d>` (e.g. `10s`, `5m`, `1h`, `7d`) no longer than `max`.
    pub fn parse(text: &str, max: Window) -> Result<Window, WindowError> {
        let window = Window::parse_unbounded(text)?;
        if window > max {
            return Err(WindowError::TooLong { given: text.to_owned(), max });
        }
        Ok(window)
    }

    /// Parses `<integer><s|m|h|d>` with no upper bound (configuration values).
    pub fn parse_unbounded(text: &str) -> Result<Window, WindowError> {
        let malformed = || WindowError::Malformed(text.to_owned());
        // Split at the last *character*: a byte index would land inside a multi-byte one ("1é").
        let mut chars = text.chars();
        let unit = chars.next_back().ok_or_else(malformed)?;
        let digits = chars.as_str();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        let scale = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            _ => return Err(malformed()),
        };
        let n: u64 = digits.parse().map_err(|_| malformed())?;
        let seconds = n.checked_mul(scale).ok_or_else(malformed)?;
        Window::from_seconds(seconds).ok_or(WindowError::Zero)
    }

    pub fn seconds(self) -> u64 {
        self.seconds
    }

    pub fn as_duration(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.seconds)
    }
}

impl fmt::Display for Window {
    /// The largest unit that divides the window exactly: 90s → `90s`, 3600s → `1h`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.seconds;
        for (unit, scale) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
            if s.is_multiple_of(scale) {
                return write!(f, "{}{unit}", s / scale);
            }
        }
        write!(f, "{s}s")
    }
}

impl Serialize for Window {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Window::parse_unbounded(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day30() -> Window {
        Window::from_seconds(30 * 86_400).unwrap()
    }

    #[test]
    fn units_scale_to_seconds() {
        assert_eq!(Window::parse("10s", day30()).unwrap().seconds(), 10);
        assert_eq!(Window::parse("5m", day30()).unwrap().seconds(), 300);
        assert_eq!(Window::parse("1h", day30()).unwrap().seconds(), 3_600);
        assert_eq!(Window::parse("30d", day30()).unwrap().seconds(), 30 * 86_400);
        assert_eq!(Window::parse("007s", day30()).unwrap().seconds(), 7);
    }

    #[test]
    fn malformed_zero_and_too_long_windows_are_refused() {
        for bad in ["", "s", "10", "10x", "1.5h", "-1s", "+1s", " 1s", "1s ", "1H", "ten s", "99999999999999999999s"] {
            assert!(
                matches!(Window::parse(bad, day30()), Err(WindowError::Malformed(_))),
                "{bad:?} should be malformed"
            );
        }
        assert_eq!(Window::parse("0s", day30()), Err(WindowError::Zero));
        assert!(matches!(Window::parse("31d", day30()), Err(WindowError::TooLong { .. })));
        // u64 overflow in the multiplication is malformed, not a panic.
        assert!(Window::parse_unbounded("18446744073709551615d").is_err());
        // A multi-byte last character is malformed, not a panic (it once split inside "é").
        for bad in ["1é", "é", "10\u{1F600}", "5m\u{301}", "\u{0}"] {
            assert!(matches!(Window::parse_unbounded(bad), Err(WindowError::Malformed(_))), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panicking(text in "\\PC*", max in 1u64..=u64::MAX) {
            let max = Window::from_seconds(max).unwrap();
            if let Ok(w) = Window::parse(&text, max) {
                proptest::prop_assert!(w <= max && w.seconds() >= 1);
            }
        }

        #[test]
        fn a_window_reads_back_from_its_display(seconds in 1u64..=1_000_000_000) {
            let w = Window::from_seconds(seconds).unwrap();
            proptest::prop_assert_eq!(Window::parse_unbounded(&w.to_string()), Ok(w));
        }
    }

    #[test]
    fn displays_in_the_largest_exact_unit() {
        let show = |s| Window::from_seconds(s).unwrap().to_string();
        assert_eq!(show(10), "10s");
        assert_eq!(show(90), "90s");
        assert_eq!(show(300), "5m");
        assert_eq!(show(3_600), "1h");
        assert_eq!(show(86_400 * 2), "2d");
    }
}
