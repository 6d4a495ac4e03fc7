//! The level written inside a message (DESIGN §4 "Detected level"): for text lines and JSON without
//! a level field.

use super::level::{Level, LONGEST_NAME};

/// Only the start of a message is searched: levels sit in the line's header.
pub const DETECT_WINDOW_BYTES: usize = 256;

/// The first level name in the first 256 bytes of `message` that stands alone and is written as a
/// level (upper case, capitalised, or any case inside `[ ]`/`< >` or after `level=`/`lvl=`/`severity=`);
/// a single letter only in the Android logcat position.
pub fn detect_level(message: &str) -> Option<Level> {
    let head = head(message).as_bytes();
    if let Some(level) = logcat_level(head) {
        return Some(level);
    }
    let mut i = 0;
    while i < head.len() {
        if is_boundary(head[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < head.len() && !is_boundary(head[i]) {
            i += 1;
        }
        let word = &head[start..i];
        // Shortest spelled-out name is `err`: shorter words are never levels outside logcat.
        if (3..=LONGEST_NAME).contains(&word.len()) && word.iter().all(u8::is_ascii_alphabetic) {
            // Every byte is ASCII, so this is a str slice.
            let text = std::str::from_utf8(word).unwrap_or_default();
            if let Some(level) = Level::from_name(text) {
                if written_as_level(head, start, i) {
                    return Some(level);
                }
            }
        }
    }
    None
}

fn head(message: &str) -> &str {
    if message.len() <= DETECT_WINDOW_BYTES {
        return message;
    }
    let mut end = DETECT_WINDOW_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

/// Non-ASCII bytes belong to words, so `Erroré` is one word and not a level.
fn is_boundary(b: u8) -> bool {
    b.is_ascii() && !b.is_ascii_alphanumeric()
}

fn written_as_level(head: &[u8], start: usize, end: usize) -> bool {
    let word = &head[start..end];
    let upper = word.iter().all(u8::is_ascii_uppercase);
    let capitalised = word[0].is_ascii_uppercase() && word[1..].iter().all(u8::is_ascii_lowercase);
    if upper || capitalised {
        return true;
    }
    let before = start.checked_sub(1).map(|i| head[i]);
    let after = head.get(end).copied();
    if matches!((before, after), (Some(b'['), Some(b']')) | (Some(b'<'), Some(b'>'))) {
        return true;
    }
    let prefix = &head[..start];
    ["level=", "lvl=", "severity="]
        .iter()
        .any(|key| prefix.len() >= key.len() && prefix[prefix.len() - key.len()..].eq_ignore_ascii_case(key.as_bytes()))
}

/// `MM-DD hh:mm:ss.mmm  PID  TID L TAG: …` (logcat's threadtime format): `L` is the level letter.
fn logcat_level(line: &[u8]) -> Option<Level> {
    let mut p = Cursor { line, at: 0 };
    p.digits(2)?;
    p.byte(b'-')?;
    p.digits(2)?;
    p.byte(b' ')?;
    p.digits(2)?;
    p.byte(b':')?;
    p.digits(2)?;
    p.byte(b':')?;
    p.digits(2)?;
    p.byte(b'.')?;
    p.digits(3)?;
    p.spaces()?;
    p.some_digits()?;
    p.spaces()?;
    p.some_digits()?;
    p.spaces()?;
    let letter = *line.get(p.at)?;
    p.at += 1;
    p.byte(b' ')?;
    match letter {
        b'V' | b'D' | b'I' | b'W' | b'E' | b'F' => Level::from_name(std::str::from_utf8(&[letter]).ok()?),
        _ => None,
    }
}

struct Cursor<'a> {
    line: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn byte(&mut self, want: u8) -> Option<()> {
        (self.line.get(self.at) == Some(&want)).then(|| self.at += 1)
    }

    fn digits(&mut self, n: usize) -> Option<()> {
        let part = self.line.get(self.at..self.at + n)?;
        part.iter().all(u8::is_ascii_digit).then(|| self.at += n)
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.at;
        while self.line.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        (self.at > start).then_some(())
    }

    fn spaces(&mut self) -> Option<()> {
        let start = self.at;
        while self.line.get(self.at) == Some(&b' ') {
            self.at += 1;
        }
        (self.at > start).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn levels_written_as_levels_are_found() {
        let cases = [
            ("2015-10-18 18:01:47,978 INFO [main] org.apache.Foo: Created", Level::Info),
            ("081109 203615 148 WARN dfs.DataNode: slow", Level::Warn),
            ("[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok", Level::Info),
            ("[Sun Dec 04 04:47:44 2005] [error] mod_jk child", Level::Error),
            ("2015-07-29 17:41:44,747 - WARN  [SendWorker:1] - leaving", Level::Warn),
            ("Error: disk full", Level::Error),
            ("something <crit> happened", Level::Fatal),
            ("ts=1 level=debug msg=\"x\"", Level::Debug),
            ("ts=1 LVL=warning msg=x", Level::Warn),
            ("severity=err code=7", Level::Error),
            ("SEVERE: it broke", Level::Error),
            ("Fatal exception in thread main", Level::Fatal),
            ("03-17 16:13:38.811  1702  2395 D WindowManager: printFreezing", Level::Debug),
            ("03-17 16:13:38.811  1702  2395 V Tag: Error here", Level::Trace),
            ("03-17 16:13:38.811  1702  2395 E AndroidRuntime: crash", Level::Error),
            ("03-17 16:13:38.811  1702  2395 F libc: abort", Level::Fatal),
            ("03-17 16:13:38.811  1702  2395 W Tag: hm", Level::Warn),
            ("03-17 16:13:38.811  1702  2395 I Tag: ok", Level::Info),
        ];
        for (line, want) in cases {
            assert_eq!(detect_level(line), Some(want), "{line:?}");
        }
    }

    #[test]
    fn words_that_only_look_like_levels_are_not() {
        for line in [
            "GET /x status: 200 in 3ms",
            "no errors here, information is fine",
            "Errors: 0",
            "ERRORS=0",
            "Erroré",
            "a E b: single letters need the logcat position",
            "user=e level: unknown",
            "errorCode=5",
            "",
            "[warnings]",
        ] {
            assert_eq!(detect_level(line), None, "{line:?}");
        }
    }

    #[test]
    fn the_first_one_wins_and_only_the_head_is_searched() {
        assert_eq!(detect_level("INFO retrying after ERROR"), Some(Level::Info));
        let late = format!("{} ERROR", "x".repeat(DETECT_WINDOW_BYTES));
        assert_eq!(detect_level(&late), None);
        let multibyte = format!("{}ERROR", "é".repeat(DETECT_WINDOW_BYTES / 2 - 1));
        assert_eq!(detect_level(&multibyte), None); // é is a word character, so ÉERROR is one word
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,400}") {
            let _ = detect_level(&s);
        }
    }
}
