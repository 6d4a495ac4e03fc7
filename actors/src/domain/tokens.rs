//! The one tokenizer: keyword counts in memory, the stored `tokens` column and SQL fallbacks all use it.

use std::collections::HashSet;
use std::fmt;

use serde::Serialize;

/// Shortest token that counts, in characters.
pub const MIN_TOKEN_CHARS: usize = 2;
/// Longest token that counts, in characters.
pub const MAX_TOKEN_CHARS: usize = 64;

/// Tokens too common to say anything about an event; the daily summary's keyword tops leave them out.
/// One list for every use (the summary job interns them first and skips them when counting).
pub const STOP_WORDS: [&str; 48] = [
    "an", "and", "are", "as", "at", "be", "been", "but", "by", "can", "did", "do", "for", "from", "had", "has", "have",
    "he", "if", "in", "into", "is", "it", "its", "no", "not", "of", "on", "or", "our", "she", "so", "than", "that",
    "the", "their", "then", "there", "they", "this", "to", "was", "we", "were", "will", "with", "you", "your",
];

/// True for a token of `STOP_WORDS`.
pub fn is_stop_word(token: &str) -> bool {
    STOP_WORDS.contains(&token)
}

fn is_token_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The distinct tokens of `message`, in order of first appearance, as owned strings (for callers
/// that keep them apart from the event; the ingest path keeps [`Tokens`]).
pub fn tokenize(message: &str) -> Vec<String> {
    Tokens::of(message).iter().map(str::to_owned).collect()
}

/// The distinct tokens of a message as ranges of ONE lowercased copy of it: two allocations per
/// event instead of one per token (the ingest profile spent ~15 % in the allocator).
///
/// The message is lowercased; a token is a maximal run of Unicode alphanumerics and `_`; only tokens
/// of 2..=64 characters count. Each token appears once, in order of first appearance: a keyword's
/// count is the number of events whose message has the token at least once.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    /// The lowercased message.
    text: String,
    /// Byte ranges `[start, end)` of `text`, one per distinct token.
    spans: Vec<(u32, u32)>,
}

impl Tokens {
    pub fn of(message: &str) -> Tokens {
        let text = message.to_lowercase();
        let mut spans: Vec<(u32, u32)> = Vec::new();
        // Short messages dedup by scanning; long ones switch to a set so it never turns quadratic.
        let mut seen: Option<HashSet<&str>> = None;
        let base = text.as_ptr() as usize;
        for run in text.split(|c: char| !is_token_char(c)) {
            // Bytes bound the chars from above (1..=4 bytes each): skip the char count when it cannot pass.
            if run.len() < MIN_TOKEN_CHARS || run.len() > MAX_TOKEN_CHARS * 4 {
                continue;
            }
            let chars = if run.is_ascii() { run.len() } else { run.chars().count() };
            if !(MIN_TOKEN_CHARS..=MAX_TOKEN_CHARS).contains(&chars) {
                continue;
            }
            let fresh = match &mut seen {
                Some(set) => set.insert(run),
                None => !spans.iter().any(|&(s, e)| &text[s as usize..e as usize] == run),
            };
            if fresh {
                // A message is at most MAX_MESSAGE_BYTES (KiBs) and lowercasing at most triples it.
                let start = (run.as_ptr() as usize - base) as u32;
                spans.push((start, start + run.len() as u32));
                if seen.is_none() && spans.len() > 32 {
                    seen = Some(spans.iter().map(|&(s, e)| &text[s as usize..e as usize]).collect());
                }
            }
        }
        Tokens { text, spans }
    }

    /// The tokens, in order of first appearance.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.spans.iter().map(|&(s, e)| &self.text[s as usize..e as usize])
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Whether `token` is one of them.
    pub fn contains(&self, token: &str) -> bool {
        self.iter().any(|t| t == token)
    }

    /// The tokens as owned strings.
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
    }

    /// The lowercased message the spans point into.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The byte ranges of the tokens in [`Tokens::text`].
    pub fn spans(&self) -> &[(u32, u32)] {
        &self.spans
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<S: AsRef<str>> PartialEq<Vec<S>> for Tokens {
    fn eq(&self, other: &Vec<S>) -> bool {
        self.len() == other.len() && self.iter().zip(other).all(|(a, b)| a == b.as_ref())
    }
}

impl<S: AsRef<str>> PartialEq<[S]> for Tokens {
    fn eq(&self, other: &[S]) -> bool {
        self.len() == other.len() && self.iter().zip(other).all(|(a, b)| a == b.as_ref())
    }
}

impl Serialize for Tokens {
    fn serialize<Ser: serde::Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// A keyword query: exactly one token, already lowercased.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Keyword(String);

/// Why a keyword query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a single keyword: use one run of {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} letters, digits or '_'")]
pub struct BadKeyword(pub String);

impl Keyword {
    /// Accepts `q` when, lowercased, it is exactly one countable token.
    pub fn parse(q: &str) -> Result<Keyword, BadKeyword> {
        let lower = q.to_lowercase();
        let chars = lower.chars().count();
        let one_token = (MIN_TOKEN_CHARS..=MAX_TOKEN_CHARS).contains(&chars) && lower.chars().all(is_token_char);
        if one_token {
            Ok(Keyword(lower))
        } else {
            Err(BadKeyword(q.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Keyword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_on_non_word_characters_and_lowercases() {
        assert_eq!(
            tokenize("Upstream TIMEOUT after 30s: connect_timeout=5 (db-01)"),
            vec!["upstream", "timeout", "after", "30s", "connect_timeout", "db", "01"]
        );
    }

    #[test]
    fn short_long_and_repeated_tokens() {
        assert_eq!(tokenize("a bb a bb"), vec!["bb"]);
        let long = "x".repeat(65);
        assert_eq!(tokenize(&format!("{long} ok")), vec!["ok"]);
        assert_eq!(tokenize(&"y".repeat(64)), vec!["y".repeat(64)]);
        assert!(tokenize("").is_empty());
        assert!(tokenize("!!! ... ---").is_empty());
    }

    #[test]
    fn unicode_letters_and_digits_are_token_characters() {
        assert_eq!(tokenize("Zeitüberschreitung bei Ärger"), vec!["zeitüberschreitung", "bei", "ärger"]);
        assert_eq!(tokenize("错误 超时"), vec!["错误", "超时"]);
        assert_eq!(tokenize("٣٤ café🔥fail"), vec!["٣٤", "café", "fail"]);
    }

    #[test]
    fn long_messages_dedup_like_short_ones() {
        let words: Vec<String> = (0..200).map(|i| format!("w{}", i % 50)).collect();
        let tokens = tokenize(&words.join(" "));
        assert_eq!(tokens.len(), 50);
        assert_eq!(tokens[0], "w0");
        assert_eq!(tokens[49], "w49");
    }

    #[test]
    fn keyword_is_exactly_one_token() {
        assert_eq!(Keyword::parse("Timeout").unwrap().as_str(), "timeout");
        assert_eq!(Keyword::parse("connect_timeout").unwrap().as_str(), "connect_timeout");
        for bad in ["", "a", "two words", "time-out", "x'; DROP TABLE logs;--", &"k".repeat(65)] {
            assert!(Keyword::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn spans_point_into_one_lowercased_text() {
        let t = Tokens::of("Disk FULL on /dev/sda1: FULL again, Ärger");
        assert_eq!(t.text(), "disk full on /dev/sda1: full again, ärger");
        assert_eq!(t.spans(), &[(0, 4), (5, 9), (10, 12), (14, 17), (18, 22), (29, 34), (36, 42)]);
        assert_eq!(t, vec!["disk", "full", "on", "dev", "sda1", "again", "ärger"]);
        assert!(t.contains("sda1") && !t.contains("sda") && !t.contains("disk full"));
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"["disk","full","on","dev","sda1","again","ärger"]"#);
        assert!(Tokens::of("! a ?").is_empty());
    }

    proptest! {
        #[test]
        fn spans_agree_with_a_plain_split(msg in "\\PC{0,200}") {
            let lower = msg.to_lowercase();
            let mut want: Vec<&str> = Vec::new();
            for run in lower.split(|c: char| !is_token_char(c)) {
                if (MIN_TOKEN_CHARS..=MAX_TOKEN_CHARS).contains(&run.chars().count()) && !want.contains(&run) {
                    want.push(run);
                }
            }
            let tokens = Tokens::of(&msg);
            prop_assert_eq!(tokens.iter().collect::<Vec<_>>(), want);
        }

        #[test]
        fn tokens_are_lowercase_bounded_distinct_and_found_by_keyword(msg in "\\PC{0,200}") {
            let tokens = tokenize(&msg);
            let mut seen = HashSet::new();
            for t in &tokens {
                prop_assert!(seen.insert(t.clone()), "duplicate token {t}");
                let n = t.chars().count();
                prop_assert!((MIN_TOKEN_CHARS..=MAX_TOKEN_CHARS).contains(&n));
                prop_assert!(t.chars().all(is_token_char));
                // A token of a message is a valid keyword query naming itself.
                let kw = Keyword::parse(t).unwrap();
                prop_assert_eq!(kw.as_str(), t.as_str());
            }
            // Tokenizing is stable: the tokens of the joined tokens are the tokens.
            prop_assert_eq!(tokenize(&tokens.join(" ")), tokens.clone());
        }
    }
}
