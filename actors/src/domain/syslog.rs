//! Syslog headers of text lines: RFC 5424 (`<PRI>1 TS HOST APP …`) and RFC 3164
//! (`<PRI>Mmm dd hh:mm:ss HOST TAG[pid]: …`), each also without `<PRI>` as files hold them.
//! Only what the event needs is read: the severity (from PRI) and the application (APP-NAME / TAG).

use super::level::Level;

/// What a syslog header says about its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyslogHeader<'a> {
    /// PRI's severity; `None` when the line has no PRI.
    pub level: Option<Level>,
    /// APP-NAME (5424) or TAG without `[pid]` (3164); `None` for `-` or when the header ends early.
    pub app: Option<&'a str>,
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
/// RFC 3164 caps TAG at 32 characters; real daemons exceed it, so anything up to a service name's length is read.
const LONGEST_TAG: usize = 128;

/// The header of `line` when it is a syslog line.
pub fn parse_syslog(line: &str) -> Option<SyslogHeader<'_>> {
    let (level, rest) = match pri(line) {
        Some((severity, rest)) => (Level::from_number(i64::from(severity)), rest),
        None => (None, line),
    };
    if let Some(after_version) = rest.strip_prefix("1 ") {
        if let Some(app) = rfc5424_app(after_version) {
            return Some(SyslogHeader { level, app });
        }
    }
    if let Some(app) = rfc3164_tag(rest) {
        return Some(SyslogHeader { level, app: Some(app) });
    }
    // A PRI alone still says the severity.
    level.map(|level| SyslogHeader { level: Some(level), app: None })
}

/// `<N>` with N in 0..=191: returns the severity (N mod 8) and what follows.
fn pri(line: &str) -> Option<(u8, &str)> {
    let rest = line.strip_prefix('<')?;
    let close = rest.find('>')?;
    let digits = &rest[..close];
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u16 = digits.parse().ok()?;
    (value <= 191).then(|| ((value % 8) as u8, &rest[close + 1..]))
}

/// `TS HOST APP …` after the version: APP unless it is the nil value `-`.
fn rfc5424_app(rest: &str) -> Option<Option<&str>> {
    let mut fields = rest.splitn(4, ' ');
    let ts = fields.next()?;
    if ts != "-" && super::timestamp::parse_iso8601(ts).is_none() {
        return None;
    }
    let _host = fields.next().filter(|h| !h.is_empty())?;
    let app = fields.next().filter(|a| !a.is_empty() && a.len() <= 48)?;
    Some((app != "-").then_some(app))
}

/// `Mmm dd hh:mm:ss HOST TAG[pid]: …` or `RFC3339-TS HOST TAG[pid]: …` (rsyslog's file format): TAG.
fn rfc3164_tag(rest: &str) -> Option<&str> {
    let after_ts = classic_timestamp(rest).or_else(|| iso_timestamp(rest))?;
    let after_ts = after_ts.strip_prefix(' ')?;
    let (host, after_host) = after_ts.split_once(' ')?;
    if host.is_empty() {
        return None;
    }
    let end = after_host.find(['[', ':', ' '])?;
    let tag = &after_host[..end];
    if tag.is_empty() || tag.len() > LONGEST_TAG || tag.chars().any(char::is_control) {
        return None;
    }
    let tail = &after_host[end..];
    let tail = match tail.strip_prefix('[') {
        Some(pid) => &pid[pid.find(']')? + 1..],
        None => tail,
    };
    tail.starts_with(':').then_some(tag)
}

/// `Mmm dd hh:mm:ss` with the day space- or zero-padded: what follows it.
fn classic_timestamp(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    if b.len() < 15 || !MONTHS.iter().any(|m| s.starts_with(m)) || b[3] != b' ' {
        return None;
    }
    let day_ok = (b[4] == b' ' || b[4].is_ascii_digit()) && b[5].is_ascii_digit();
    let time = &b[7..15];
    let time_ok = b[6] == b' '
        && time.iter().enumerate().all(|(i, c)| if i == 2 || i == 5 { *c == b':' } else { c.is_ascii_digit() });
    (day_ok && time_ok).then(|| &s[15..])
}

/// An RFC 3339 timestamp with a `T` (so `2015-10-18 18:01:47,978 INFO …` application lines are not syslog).
fn iso_timestamp(s: &str) -> Option<&str> {
    let token = &s[..s.find(' ')?];
    (token.as_bytes().get(10) == Some(&b'T') && super::timestamp::parse_iso8601(token).is_some())
        .then(|| &s[token.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(level: Option<Level>, app: Option<&str>) -> Option<SyslogHeader<'_>> {
        Some(SyslogHeader { level, app })
    }

    #[test]
    fn every_header_shape_gives_severity_and_app() {
        let cases = [
            ("<34>Oct 11 22:14:15 mymachine su: 'su root' failed", header(Some(Level::Fatal), Some("su"))),
            ("<13>Feb  5 17:32:18 10.0.0.99 myapp[1234]: hello", header(Some(Level::Info), Some("myapp"))),
            ("<190>Feb  5 17:32:18 h cron[7]: x", header(Some(Level::Info), Some("cron"))),
            ("<11>Feb 05 17:32:18 h nginx: x", header(Some(Level::Error), Some("nginx"))),
            (
                "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure",
                header(None, Some("sshd(pam_unix)")),
            ),
            ("Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user webmaster", header(None, Some("sshd"))),
            ("2026-11-26T11:59:58.123456+00:00 web1 kernel: oops", header(None, Some("kernel"))),
            (
                "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [x] msg",
                header(Some(Level::Info), Some("evntslog")),
            ),
            ("<12>1 2003-10-11T22:14:15Z host - - - - msg", header(Some(Level::Warn), None)),
            ("<15>1 - - app - - - msg", header(Some(Level::Debug), Some("app"))),
            ("1 2003-10-11T22:14:15.003Z host billing 42 - - done", header(None, Some("billing"))),
            ("<10>not a header at all", header(Some(Level::Fatal), None)),
        ];
        for (line, want) in cases {
            assert_eq!(parse_syslog(line), want, "{line:?}");
        }
    }

    #[test]
    fn application_lines_are_not_syslog() {
        for line in [
            "2015-10-18 18:01:47,978 INFO [main] org.apache.hadoop.Foo: Created",
            "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1",
            "17/06/09 20:10:40 INFO executor.CoarseGrainedExecutorBackend: Registered",
            "[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok",
            "03-17 16:13:38.811  1702  2395 D WindowManager: x",
            "2015-07-29 17:41:44,747 - INFO  [QuorumPeer[myid=1]/0:0:0:0:0:0:0:0:2181:FastLeaderElection@774] - x",
            "Jun 14 15:16:01 combo no colon after the tag",
            "<192>Oct 11 22:14:15 h su: PRI too large",
            "<>x",
            "",
        ] {
            assert_eq!(parse_syslog(line), None, "{line:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,80}", pri in proptest::option::of(0u16..300)) {
            let line = match pri { Some(p) => format!("<{p}>{s}"), None => s };
            let _ = parse_syslog(&line);
        }
    }
}
