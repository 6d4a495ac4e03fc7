//! Text events: what a line's bytes become when they are not a JSON object.

/// Text that might parse as a JSON value other than an object (`[1]`, `"s"`, `42`, `null`, `true`):
/// only then is a JSON parse attempted, so plain log lines skip it.
pub fn may_be_json_scalar(start: &str) -> bool {
    matches!(start.as_bytes().first(), Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n'))
}

/// A text event's message: the value without its trailing line-ending characters (`kcat -l` on a
/// CRLF file leaves the `\r`).
pub fn strip_line_endings(text: &str) -> &str {
    text.trim_end_matches(['\r', '\n'])
}

/// A JSON message loses one trailing `\n` or `\r\n` (Docker's json-file keeps the line's own).
pub fn drop_one_line_ending(mut message: String) -> String {
    if message.ends_with('\n') {
        message.pop();
        if message.ends_with('\r') {
            message.pop();
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_endings() {
        assert_eq!(strip_line_endings("a line\r\n"), "a line");
        assert_eq!(strip_line_endings("a line\n\n\r"), "a line");
        assert_eq!(strip_line_endings("  kept leading space "), "  kept leading space ");
        assert_eq!(drop_one_line_ending("x\n\n".into()), "x\n");
        assert_eq!(drop_one_line_ending("x\r\n".into()), "x");
        assert_eq!(drop_one_line_ending("x\r".into()), "x\r");
    }
}
