//! Query parameters, parsed into domain types with a 400 that says what to fix.

use std::collections::HashMap;

use actors::domain::window_stats::{DEFAULT_SERVICE_LIMIT, MAX_SERVICE_LIMIT};
use actors::domain::{Keyword, ServiceName, Window};
use actors::windows::Source;
use chrono::{DateTime, Utc};

use super::errors::ApiError;

/// The query string of one request, checked against the parameters its route takes.
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn parse(query: &str, allowed: &[&str]) -> Result<Params, ApiError> {
        let pairs = actix_web::web::Query::<Vec<(String, String)>>::from_query(query)
            .map_err(|e| ApiError::bad("bad_query", format!("the query string is not valid: {e}")))?
            .into_inner();
        let mut map = HashMap::new();
        for (name, value) in pairs {
            if !allowed.contains(&name.as_str()) {
                return Err(ApiError::bad(
                    "unknown_parameter",
                    format!("unknown parameter {name:?}; this route takes {}", allowed.join(", ")),
                ));
            }
            if map.insert(name.clone(), value).is_some() {
                return Err(ApiError::bad("repeated_parameter", format!("parameter {name:?} is given more than once")));
            }
        }
        Ok(Params(map))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Every (name, value) given, in no particular order (each name once: `parse` refused repeats).
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `window`: `<integer><s|m|h|d>`, from 1 s to `max`.
    pub fn window(&self, default: &str, max: Window) -> Result<Window, ApiError> {
        let text = self.get("window").unwrap_or(default);
        Window::parse(text, max).map_err(|e| ApiError::bad("bad_window", format!("window: {e}")))
    }

    /// `at`: RFC 3339 or epoch seconds, floored to the second; default now. Returns epoch seconds.
    pub fn at(&self, now: DateTime<Utc>) -> Result<i64, ApiError> {
        let Some(text) = self.get("at") else { return Ok(now.timestamp()) };
        let bad = || {
            ApiError::bad(
                "bad_at",
                format!("at: {text:?} is neither an RFC 3339 time (2026-01-02T03:04:05Z) nor epoch seconds"),
            )
        };
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Ok(t.timestamp());
        }
        let seconds: f64 = text.parse().map_err(|_| bad())?;
        // Years 1970..=9999: anything else is a typo, not a question.
        if !(0.0..=253_402_300_799.0).contains(&seconds) {
            return Err(bad());
        }
        Ok(seconds.floor() as i64)
    }

    pub fn service(&self) -> Result<Option<String>, ApiError> {
        self.get("service")
            .map(|s| {
                ServiceName::parse(s)
                    .map(ServiceName::into_inner)
                    .map_err(|e| ApiError::bad("bad_service", format!("service {e}")))
            })
            .transpose()
    }

    /// `q`: exactly one keyword token.
    pub fn keyword(&self) -> Result<Keyword, ApiError> {
        let q =
            self.get("q").ok_or_else(|| ApiError::bad("missing_parameter", "q is required: the keyword to count"))?;
        Keyword::parse(q).map_err(|e| ApiError::bad("bad_keyword", format!("q: {e}")))
    }

    /// `limit`: 1..=100, default 10.
    pub fn limit(&self) -> Result<usize, ApiError> {
        let Some(text) = self.get("limit") else { return Ok(10) };
        match text.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => Ok(n),
            _ => Err(ApiError::bad("bad_limit", format!("limit: {text:?} is not a whole number from 1 to 100"))),
        }
    }

    /// `limit` of `/stats/errors`: services listed in `by_service`, 1..=MAX_SERVICE_LIMIT, default 100.
    pub fn service_limit(&self) -> Result<usize, ApiError> {
        let Some(text) = self.get("limit") else { return Ok(DEFAULT_SERVICE_LIMIT) };
        match text.parse::<usize>() {
            Ok(n) if (1..=MAX_SERVICE_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::bad(
                "bad_limit",
                format!(
                    "limit: {text:?} is not a whole number from 1 to {MAX_SERVICE_LIMIT} (services listed in by_service; \
                     the rest are summed in other)"
                ),
            )),
        }
    }

    /// `source`: force one path (memory, redis, postgres, sqlite).
    pub fn source(&self) -> Result<Option<Source>, ApiError> {
        self.get("source")
            .map(|s| {
                Source::ALL.into_iter().find(|source| source.as_str() == s).ok_or_else(|| {
                    ApiError::bad("bad_source", format!("source: {s:?} is not memory, redis, postgres or sqlite"))
                })
            })
            .transpose()
    }

    /// `source`, refused with a 400 when this process has no such source (`postgres` or `redis` in
    /// the embedded mode, `sqlite` on the stack): the caller learns what to ask for instead.
    pub fn source_among(&self, offered: &[Source]) -> Result<Option<Source>, ApiError> {
        let forced = self.source()?;
        match forced {
            Some(source) if !offered.contains(&source) => {
                let names: Vec<&str> = offered.iter().map(|s| s.as_str()).collect();
                Err(ApiError::bad(
                    "bad_source",
                    format!(
                        "source: this process has no {} source; its sources are {}",
                        source.as_str(),
                        names.join(", ")
                    ),
                ))
            }
            _ => Ok(forced),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn max() -> Window {
        Window::from_seconds(30 * 86_400).unwrap()
    }

    fn code(r: Result<impl std::fmt::Debug, ApiError>) -> &'static str {
        match r.unwrap_err() {
            ApiError::BadRequest { code, .. } => code,
            other => panic!("not a 400: {other:?}"),
        }
    }

    #[test]
    fn good_parameters_parse() {
        let p = Params::parse(
            "window=5m&at=2026-11-26T10:00:00.900Z&service=api&q=Timeout&limit=7&source=redis",
            &["window", "at", "service", "q", "limit", "source"],
        )
        .unwrap();
        assert_eq!(p.window("60s", max()).unwrap().seconds(), 300);
        assert_eq!(p.at(Utc::now()).unwrap(), 1_795_687_200);
        assert_eq!(p.service().unwrap().as_deref(), Some("api"));
        assert_eq!(p.keyword().unwrap().as_str(), "timeout");
        assert_eq!(p.limit().unwrap(), 7);
        assert_eq!(p.source().unwrap(), Some(Source::Redis));
        let epoch = Params::parse("at=1795140000.7", &["at"]).unwrap();
        assert_eq!(epoch.at(Utc::now()).unwrap(), 1_795_140_000);
    }

    #[test]
    fn bad_parameters_name_the_problem() {
        let all = ["window", "at", "service", "q", "limit", "source"];
        let p = |q: &str| Params::parse(q, &all).unwrap();
        assert_eq!(code(Params::parse("bogus=1", &all).map(|_| ())), "unknown_parameter");
        assert_eq!(code(Params::parse("window=1s&window=2s", &all).map(|_| ())), "repeated_parameter");
        for w in ["0s", "10", "1w", "31d", "-5s", "1.5h", ""] {
            assert_eq!(code(p(&format!("window={w}")).window("60s", max())), "bad_window", "{w}");
        }
        for at in ["yesterday", "-1", "1e30", "2026-13-01T00:00:00Z"] {
            assert_eq!(code(p(&format!("at={at}")).at(Utc::now())), "bad_at", "{at}");
        }
        assert_eq!(code(p(&format!("service={}", "s".repeat(129))).service()), "bad_service");
        assert_eq!(code(p("service=").service()), "bad_service");
        assert_eq!(code(p("").keyword()), "missing_parameter");
        for q in ["a", "two%20words", "x%27%3B%20DROP%20TABLE%20logs"] {
            assert_eq!(code(p(&format!("q={q}")).keyword()), "bad_keyword", "{q}");
        }
        for limit in ["0", "1001", "ten", "-1", "2.5", ""] {
            assert_eq!(code(p(&format!("limit={limit}")).service_limit()), "bad_limit", "{limit}");
        }
        assert_eq!(p("").service_limit().unwrap(), 100);
        assert_eq!(p("limit=1000").service_limit().unwrap(), 1000);
        for limit in ["0", "101", "ten", "-1"] {
            assert_eq!(code(p(&format!("limit={limit}")).limit()), "bad_limit");
        }
        assert_eq!(code(p("source=disk").source()), "bad_source");
        assert_eq!(p("source=sqlite").source().unwrap(), Some(Source::Sqlite));
        let embedded = [Source::Memory, Source::Sqlite];
        assert_eq!(p("source=sqlite").source_among(&embedded).unwrap(), Some(Source::Sqlite));
        assert_eq!(p("").source_among(&embedded).unwrap(), None);
        for refused in ["source=redis", "source=postgres"] {
            let message = p(refused).source_among(&embedded).unwrap_err().to_string();
            assert!(message.ends_with("its sources are memory, sqlite"), "{message}");
            assert_eq!(code(p(refused).source_among(&embedded)), "bad_source");
        }
    }

    /// Percent-encodes every byte, so any byte string (valid UTF-8 or not) reaches the parsers.
    pub(crate) fn encoded(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("%{b:02X}")).collect()
    }

    /// Every getter on one parsed query: each answers a value or a 400, never a panic or a 5xx.
    fn every_getter_answers(p: &Params) -> Result<(), proptest::test_runner::TestCaseError> {
        let checks: [Result<(), ApiError>; 6] = [
            p.window("60s", max()).map(drop),
            p.at(Utc::now()).map(drop),
            p.service().map(drop),
            p.keyword().map(drop),
            p.limit().map(drop),
            p.source().map(drop),
        ];
        for check in checks {
            if let Err(e) = check {
                proptest::prop_assert!(matches!(e, ApiError::BadRequest { .. }), "not a 400: {e:?}");
            }
        }
        Ok(())
    }

    const ALL: [&str; 6] = ["window", "at", "service", "q", "limit", "source"];

    proptest::proptest! {
        #[test]
        fn any_raw_query_string_is_a_400_or_parses(query in "\\PC*") {
            match Params::parse(&query, &ALL) {
                Ok(p) => every_getter_answers(&p)?,
                Err(e) => proptest::prop_assert!(matches!(e, ApiError::BadRequest { .. }), "not a 400: {:?}", e),
            }
        }

        #[test]
        fn any_value_of_any_parameter_is_a_400_or_parses(
            name in proptest::sample::select(ALL.to_vec()),
            value in "\\PC{0,40}",
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..16),
        ) {
            for query in [format!("{name}={}", encoded(value.as_bytes())), format!("{name}={}", encoded(&bytes))] {
                match Params::parse(&query, &ALL) {
                    Ok(p) => every_getter_answers(&p)?,
                    Err(e) => proptest::prop_assert!(matches!(e, ApiError::BadRequest { .. }), "not a 400: {:?}", e),
                }
            }
        }
    }

    #[test]
    fn non_ascii_values_are_400s() {
        for value in ["1%C3%A9", "%C3%A9", "5%E2%82%AC", "%F0%9F%98%80"] {
            let p = Params::parse(&format!("window={value}&limit={value}&at={value}"), &ALL).unwrap();
            assert_eq!(code(p.window("60s", max())), "bad_window", "{value}");
            assert_eq!(code(p.limit()), "bad_limit", "{value}");
            assert_eq!(code(p.at(Utc::now())), "bad_at", "{value}");
        }
        // Bytes that are not UTF-8 are read lossily: still a 400 from the window parser.
        if let Ok(p) = Params::parse("window=1%FF", &ALL) {
            assert_eq!(code(p.window("60s", max())), "bad_window");
        }
    }
}
