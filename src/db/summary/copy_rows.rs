//! The day's events out of a binary COPY stream of
//! `(user_id text, level int2, service text, ts timestamptz, tokens text[])`, decoded by hand into
//! `actors::summary::DayCount`. Kept over `tokio_postgres::binary_copy::BinaryCopyOutStream`, which
//! was slower on the whole job in 5 of 6 alternating runs on a day of 1M rows (median 37 s against
//! 28.5 s, debug build): it allocates a row and a `Vec` of tokens per event, checks every string's
//! UTF-8 and converts each timestamp, where this reads the fields in place.

use actors::summary::DayCount;
use anyhow::{bail, ensure, Context};

/// The binary COPY signature.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Columns of a row.
const FIELDS: i16 = 5;

/// The decoding state, fed the COPY stream chunk by chunk (rows may span chunks).
#[derive(Default)]
pub struct CopyRows {
    header_done: bool,
    ended: bool,
    /// Bytes of an incomplete row carried to the next chunk.
    pending: Vec<u8>,
}

/// Big-endian readers over a row that is known to be complete.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let bytes = self.buf.get(self.at..end)?;
        self.at = end;
        Some(bytes)
    }
    #[inline]
    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    #[inline]
    fn i32(&mut self) -> Option<i32> {
        self.take(4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A field: `None` when the buffer ends first, `Some(None)` for NULL.
    #[inline]
    fn field(&mut self) -> Option<Option<&'a [u8]>> {
        let len = self.i32()?;
        if len < 0 {
            Some(None)
        } else {
            self.take(len as usize).map(Some)
        }
    }
}

impl CopyRows {
    /// Counts the complete rows of `chunk` (with what was left of the previous one).
    pub fn feed(&mut self, chunk: &[u8], day: &mut DayCount) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            let used = self.rows(chunk, day)?;
            self.pending.extend_from_slice(&chunk[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.pending);
            buf.extend_from_slice(chunk);
            let used = self.rows(&buf, day)?;
            buf.drain(..used);
            self.pending = buf;
        }
        Ok(())
    }

    /// Counts the complete rows at the start of `buf`; returns the bytes used.
    fn rows(&mut self, buf: &[u8], day: &mut DayCount) -> anyhow::Result<usize> {
        let mut used = 0;
        if !self.header_done {
            let mut r = Reader { buf, at: 0 };
            let Some(signature) = r.take(SIGNATURE.len()) else { return Ok(0) };
            ensure!(signature == SIGNATURE, "not a binary COPY stream");
            let Some(_flags) = r.i32() else { return Ok(0) };
            let Some(extension) = r.i32() else { return Ok(0) };
            let Some(_) = r.take(extension.max(0) as usize) else { return Ok(0) };
            self.header_done = true;
            used = r.at;
        }
        while used < buf.len() {
            ensure!(!self.ended, "data after the end of the COPY stream");
            let mut r = Reader { buf, at: used };
            let Some(fields) = r.i16() else { break };
            if fields == -1 {
                self.ended = true;
                used = r.at;
                continue;
            }
            ensure!(fields == FIELDS, "expected {FIELDS} columns, got {fields}");
            let (Some(user), Some(level), Some(service), Some(ts), Some(tokens)) =
                (r.field(), r.field(), r.field(), r.field(), r.field())
            else {
                break; // the row continues in the next chunk
            };
            row(day, user, level, service, ts, tokens)?;
            used = r.at;
        }
        Ok(used)
    }

    /// Checks the stream ended where a row did.
    pub fn finish(&self) -> anyhow::Result<()> {
        ensure!(self.pending.is_empty() && (self.ended || !self.header_done), "the COPY stream ended mid-row");
        Ok(())
    }
}

fn row(
    day: &mut DayCount,
    user: Option<&[u8]>,
    level: Option<&[u8]>,
    service: Option<&[u8]>,
    ts: Option<&[u8]>,
    tokens: Option<&[u8]>,
) -> anyhow::Result<()> {
    let (Some(level), Some(service), Some(ts), Some(tokens)) = (level, service, ts, tokens) else {
        bail!("NULL in a NOT NULL column of logs");
    };
    let level = i16::from_be_bytes(level.try_into().context("level is not an int2")?);
    let ts = i64::from_be_bytes(ts.try_into().context("ts is not a timestamptz")?).saturating_add(PG_EPOCH_MICROS);
    // text[]: ndim, has_null, element type, (length, lower bound) per dimension, then elements.
    let mut r = Reader { buf: tokens, at: 0 };
    let bad = || anyhow::anyhow!("tokens is not a text[]");
    let ndim = r.i32().ok_or_else(bad)?;
    let _has_null = r.i32().ok_or_else(bad)?;
    let _element_type = r.i32().ok_or_else(bad)?;
    let mut elements: usize = if ndim > 0 { 1 } else { 0 };
    for _ in 0..ndim.max(0) {
        let len = r.i32().ok_or_else(bad)?;
        let _lower_bound = r.i32().ok_or_else(bad)?;
        elements *= len.max(0) as usize;
    }
    let mut words = Vec::with_capacity(elements.min(1_024));
    for _ in 0..elements {
        words.push(r.field().ok_or_else(bad)?.context("a NULL token")?);
    }
    day.event(user, level, service, ts, words);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(out: &mut Vec<u8>, v: Option<&[u8]>) {
        match v {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(b) => {
                out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                out.extend_from_slice(b);
            }
        }
    }

    /// (user_id, level, service, ts, tokens).
    type Row<'a> = (Option<&'a str>, i16, &'a str, i64, &'a [&'a str]);

    fn stream(rows: &[Row]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
        for (user, level, service, ts, tokens) in rows {
            out.extend_from_slice(&FIELDS.to_be_bytes());
            field(&mut out, user.map(str::as_bytes));
            field(&mut out, Some(&level.to_be_bytes()));
            field(&mut out, Some(service.as_bytes()));
            field(&mut out, Some(&ts.to_be_bytes()));
            let mut array = Vec::new();
            array.extend_from_slice(&(if tokens.is_empty() { 0i32 } else { 1 }).to_be_bytes());
            array.extend_from_slice(&0i32.to_be_bytes());
            array.extend_from_slice(&25i32.to_be_bytes());
            if !tokens.is_empty() {
                array.extend_from_slice(&(tokens.len() as i32).to_be_bytes());
                array.extend_from_slice(&1i32.to_be_bytes());
            }
            for t in *tokens {
                field(&mut array, Some(t.as_bytes()));
            }
            field(&mut out, Some(&array));
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    #[test]
    fn counts_rows_split_anywhere_and_ranks_by_count_then_bytes() {
        let rows: &[Row] = &[
            (Some("b"), 4, "s2", 10, &["zeta", "the", "Ärger"]),
            (None, 3, "s1", 5, &["zeta", "alpha"]),
            (Some("b"), 1, "s1", 7, &["zeta", "beta"]),
            (Some("(none)"), 0, "s3", 1, &[]),
        ];
        let bytes = stream(rows);
        for split in [1, 3, 7, 64, bytes.len()] {
            let mut day = DayCount::new(["the".as_bytes(), "to".as_bytes()]);
            let mut rows = CopyRows::default();
            for chunk in bytes.chunks(split) {
                rows.feed(chunk, &mut day).unwrap();
            }
            rows.finish().unwrap();
            let day = day.finish(2, 3, "(none)").unwrap();
            let names: Vec<&str> = day.users.iter().map(|u| u.user_id.as_str()).collect();
            assert_eq!(names, ["(none)", "b"]);
            let none = &day.users[0];
            assert_eq!((none.total, none.errors, none.warnings), (2, 0, 1));
            assert_eq!(none.services, ["s1", "s3"]);
            assert_eq!(
                (none.first_seen.timestamp_micros(), none.last_seen.timestamp_micros()),
                (PG_EPOCH_MICROS + 1, PG_EPOCH_MICROS + 5)
            );
            let b = &day.users[1];
            assert_eq!((b.total, b.errors, b.warnings), (2, 1, 0));
            assert_eq!(b.top_keywords, [("zeta".to_owned(), 2), ("beta".to_owned(), 1)]);
            assert_eq!(day.keywords, [("zeta".to_owned(), 3), ("alpha".to_owned(), 1), ("beta".to_owned(), 1)]);
        }
    }
}
