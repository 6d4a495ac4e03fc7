//! A JSON object payload parsed once into fields borrowed from its text: the known fields are read
//! out of it, and `attrs` is the raw text of the fields left (DESIGN §4), so nothing is built into a
//! `Map` of owned values and re-serialised for the jsonb column.
//!
//! Two passes of serde_json, neither allocating per value: [`check_json`] checks the whole text
//! exactly as parsing it into a `Value` would (same grammar, numbers in range, escapes and
//! surrogates, depth limit, same error messages), then [`RawObject::split`] reads the top level as
//! a map of `RawValue` keys and values, slices of the text. The split alone is not the check:
//! serde_json skips a `RawValue` without range-checking numbers, pairing surrogates or counting
//! depth. Only the values a field name asks for are parsed into a `Value`.
//!
//! `attrs` order: the payload's own key order (a duplicated key counts once, at its last place,
//! with its last value, as serde_json's map kept it). Each key and value is its text as sent,
//! blanks inside a nested object or array included (jsonb re-parses it; the embedded store's JSON
//! functions read it as is); only the blanks between the top-level tokens go. Escapes and number
//! spellings are kept (so equal as JSON, not always byte-equal, to what a `Map` would print:
//! `1.0e3` stays `1.0e3`, a 30-digit integer keeps its digits). A nested object a dotted field
//! name was taken out of (`"service": {"name": …, "version": …}`) is printed again without it,
//! compact.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::resolve;

/// `attrs`: the JSON text of an object holding an event's other fields.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    /// The object text, or empty for `{}` (no allocation for the common case).
    text: String,
    keys: usize,
}

impl Attrs {
    /// The object's JSON text (`{}` when it has no keys).
    pub fn as_str(&self) -> &str {
        if self.text.is_empty() {
            "{}"
        } else {
            &self.text
        }
    }

    /// Number of top-level keys.
    pub fn len(&self) -> usize {
        self.keys
    }

    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }

    /// The object as a `Value` (for display and tests; the write path uses the text).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.as_str()).unwrap_or_else(|_| Value::Object(Map::new()))
    }

    /// The object as a map (keys sorted, serde_json's map order).
    pub fn to_map(&self) -> Map<String, Value> {
        match self.to_value() {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    /// Attrs holding `map`'s entries.
    pub fn from_map(map: &Map<String, Value>) -> Attrs {
        if map.is_empty() {
            return Attrs::default();
        }
        Attrs { text: Value::Object(map.clone()).to_string(), keys: map.len() }
    }
}

impl fmt::Debug for Attrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks JSON text as `serde_json::from_str::<Value>` does, keeping nothing.
struct Valid;

impl<'de> Deserialize<'de> for Valid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Valid, D::Error> {
        deserializer.deserialize_any(Valid)
    }
}

impl<'de> Visitor<'de> for Valid {
    type Value = Valid;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_str<E>(self, _: &str) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_unit<E>(self) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Valid, A::Error> {
        while seq.next_element::<Valid>()?.is_some() {}
        Ok(Valid)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Valid, A::Error> {
        while map.next_key::<Valid>()?.is_some() {
            map.next_value::<Valid>()?;
        }
        Ok(Valid)
    }
}

/// Whether `text` is one JSON value; the error is serde_json's, as a `Value` parse would give it.
pub fn check_json(text: &str) -> Result<(), serde_json::Error> {
    serde_json::from_str::<Valid>(text).map(|_| ())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In attrs as sent.
    Live,
    /// In attrs, printed from `parsed` (a dotted name took a field out of it).
    Modified,
    /// Not in attrs: a known field, or an earlier duplicate of a key.
    Gone,
}

#[derive(Debug)]
struct Entry<'a> {
    /// The key as sent, with its quotes.
    key_raw: &'a str,
    key: Cow<'a, str>,
    /// The value as sent.
    raw: &'a str,
    parsed: Option<Value>,
    state: State,
}

impl Entry<'_> {
    fn value(&mut self) -> Option<&mut Value> {
        if self.parsed.is_none() {
            self.parsed = Some(serde_json::from_str(self.raw).ok()?);
        }
        self.parsed.as_mut()
    }
}

/// The top-level entries of an object in payload order, each key and value the text as sent.
/// serde_json finds where each ends (its own grammar), borrowing both from the payload.
struct Fields<'a>(Vec<Entry<'a>>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Fields<'de>, D::Error> {
        deserializer.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut entries = Vec::new();
        while let Some(key_raw) = map.next_key::<&'de RawValue>()? {
            let raw = map.next_value::<&'de RawValue>()?.get();
            let key_raw = key_raw.get();
            let key = if key_raw.contains('\\') {
                Cow::Owned(serde_json::from_str::<String>(key_raw).map_err(de::Error::custom)?)
            } else {
                Cow::Borrowed(&key_raw[1..key_raw.len() - 1])
            };
            entries.push(Entry { key_raw, key, raw, parsed: None, state: State::Live });
        }
        Ok(Fields(entries))
    }
}

/// The top-level fields of a JSON object payload, borrowed from its text.
#[derive(Debug)]
pub struct RawObject<'a> {
    entries: Vec<Entry<'a>>,
}

/// Small objects find duplicate keys by scanning; bigger ones with a set.
const DEDUP_SCAN_MAX: usize = 16;

impl<'a> RawObject<'a> {
    /// Splits `text`, which [`check_json`] accepted as an object. `None` if it is not one.
    pub fn split(text: &'a str) -> Option<RawObject<'a>> {
        let Fields(entries) = serde_json::from_str(text).ok()?;
        let mut object = RawObject { entries };
        object.drop_earlier_duplicates();
        Some(object)
    }

    fn drop_earlier_duplicates(&mut self) {
        let n = self.entries.len();
        if n <= DEDUP_SCAN_MAX {
            for i in 0..n {
                if self.entries[i + 1..].iter().any(|later| later.key == self.entries[i].key) {
                    self.entries[i].state = State::Gone;
                }
            }
            return;
        }
        let mut seen: HashSet<String> = HashSet::with_capacity(n);
        for entry in self.entries.iter_mut().rev() {
            if !seen.insert(entry.key.clone().into_owned()) {
                entry.state = State::Gone;
            }
        }
    }

    fn live(&self) -> impl Iterator<Item = &Entry<'a>> {
        self.entries.iter().filter(|e| e.state != State::Gone)
    }

    fn find(&mut self, key: &str) -> Option<&mut Entry<'a>> {
        self.entries.iter_mut().find(|e| e.state != State::Gone && e.key == key)
    }

    /// Removes and returns the value of the first of `names` that holds a usable value, with the name
    /// that matched (as [`resolve::take_first`] does on a map).
    pub fn take_first<'n>(&mut self, names: &'n [String], usable: fn(&Value) -> bool) -> Option<(&'n str, Value)> {
        names.iter().find_map(|name| self.take(name, usable).map(|v| (name.as_str(), v)))
    }

    /// `path` as a literal key, or split at any of its dots into a key and the rest inside its object.
    pub fn take(&mut self, path: &str, usable: fn(&Value) -> bool) -> Option<Value> {
        if let Some(entry) = self.find(path) {
            if entry.value().is_some_and(|v| usable(v)) {
                entry.state = State::Gone;
                return entry.parsed.take();
            }
        }
        for (dot, _) in path.match_indices('.') {
            let (outer, inner_path) = (&path[..dot], &path[dot + 1..]);
            let Some(entry) = self.find(outer) else { continue };
            if !entry.raw.starts_with('{') {
                continue;
            }
            let Some(Value::Object(inner)) = entry.value() else { continue };
            if let Some(value) = resolve::take(inner, inner_path, usable) {
                entry.state = if inner.is_empty() { State::Gone } else { State::Modified };
                return Some(value);
            }
        }
        None
    }

    /// How many fields are left for attrs.
    pub fn len(&self) -> usize {
        self.live().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a field left holds U+0000 (in a key or any string inside), which PostgreSQL cannot store.
    pub fn has_nul(&self) -> bool {
        self.live().any(|e| {
            e.key.contains('\0')
                || match (e.state, &e.parsed) {
                    (State::Modified, Some(v)) => value_has_nul(v),
                    _ => has_nul_escape(e.raw),
                }
        })
    }

    /// The fields left, as the text of one JSON object.
    pub fn into_attrs(self) -> Attrs {
        let keys = self.len();
        if keys == 0 {
            return Attrs::default();
        }
        let room: usize = self.live().map(|e| e.key_raw.len() + e.raw.len() + 2).sum();
        let mut text = String::with_capacity(room + 1);
        text.push('{');
        for (i, e) in self.live().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(e.key_raw);
            text.push(':');
            match (e.state, &e.parsed) {
                (State::Modified, Some(v)) => text.push_str(&v.to_string()),
                _ => text.push_str(e.raw),
            }
        }
        text.push('}');
        Attrs { text, keys }
    }
}

/// Whether valid JSON text holds a `\u0000` escape (a raw U+0000 cannot be in valid JSON text).
fn has_nul_escape(raw: &str) -> bool {
    let b = raw.as_bytes();
    raw.match_indices("\\u0000").any(|(at, _)| {
        // `\\u0000` is an escaped backslash and the text "u0000": count the backslashes in the run.
        let run = b[..=at].iter().rev().take_while(|&&c| c == b'\\').count();
        run % 2 == 1
    })
}

fn value_has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(value_has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || value_has_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn attrs_of(text: &str) -> Attrs {
        check_json(text).unwrap();
        RawObject::split(text).unwrap().into_attrs()
    }

    #[test]
    fn attrs_keep_the_payload_order_and_the_values_as_sent() {
        let a =
            attrs_of(r#" { "b" : 1 , "a":"x\u00e9\"y", "n": null,"big":123456789012345678901234567890,"e":1.0e3 } "#);
        assert_eq!(a.as_str(), r#"{"b":1,"a":"x\u00e9\"y","n":null,"big":123456789012345678901234567890,"e":1.0e3}"#);
        assert_eq!(a.len(), 5);
        assert_eq!(a.to_value()["a"], json!("xé\"y"));
        assert_eq!(attrs_of("{}").as_str(), "{}");
        assert!(attrs_of(" {\n} ").is_empty());
    }

    #[test]
    fn nested_values_keep_their_text_as_sent_and_the_top_level_loses_its_blanks() {
        let a = attrs_of("{\"o\": { \"k\" : [ 1,\n \"a b\\\" c\" ,{} ] },\n\"s\":\" x \"}");
        assert_eq!(a.as_str(), "{\"o\":{ \"k\" : [ 1,\n \"a b\\\" c\" ,{} ] },\"s\":\" x \"}");
        assert_eq!(a.to_value(), json!({"o": {"k": [1, "a b\" c", {}]}, "s": " x "}));
    }

    #[test]
    fn a_duplicate_key_counts_once_with_its_last_value() {
        let a = attrs_of(r#"{"k":1,"x":true,"k":2}"#);
        assert_eq!(a.as_str(), r#"{"x":true,"k":2}"#);
        let many: Vec<String> = (0..40).map(|i| format!("\"k{}\":{i}", i % 20)).collect();
        let a = attrs_of(&format!("{{{}}}", many.join(",")));
        assert_eq!(a.len(), 20);
        assert_eq!(a.to_value()["k3"], json!(23));
    }

    #[test]
    fn taking_fields_literal_nested_and_mixed() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let text = r#"{"service":{"name":"checkout","version":"2"},"app":"a","log":{"level":"warn"},"m":"x"}"#;
        let mut o = RawObject::split(text).unwrap();
        assert_eq!(
            o.take_first(&names(&["service.name"]), resolve::is_scalar),
            Some(("service.name", json!("checkout")))
        );
        assert_eq!(o.take("log.level", resolve::is_scalar), Some(json!("warn")));
        assert_eq!(o.take("app", resolve::is_scalar), Some(json!("a")));
        assert_eq!(o.take("service", resolve::is_scalar), None, "an object is not a value");
        assert_eq!(o.into_attrs().as_str(), r#"{"service":{"version":"2"},"m":"x"}"#);
        let mut o = RawObject::split(r#"{"a.b":{"c":"x"},"k\u0031":1}"#).unwrap();
        assert_eq!(o.take("a.b.c", resolve::is_scalar), Some(json!("x")));
        assert_eq!(o.take("k1", resolve::is_scalar), Some(json!(1)), "escaped keys are compared decoded");
        assert!(o.into_attrs().is_empty());
    }

    #[test]
    fn nul_is_found_in_escapes_only_when_it_is_one() {
        for (text, nul) in [
            (r#"{"a":"x\u0000"}"#, true),
            (r#"{"a":"x\\u0000"}"#, false),
            (r#"{"a":"x\\\u0000"}"#, true),
            (r#"{"a":{"b":["\u0000"]}}"#, true),
            (r#"{"a\u0000":1}"#, true),
            (r#"{"a":"u0000"}"#, false),
        ] {
            assert_eq!(RawObject::split(text).unwrap().has_nul(), nul, "{text}");
        }
    }

    #[test]
    fn check_json_refuses_what_a_value_parse_refuses_with_the_same_message() {
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(130), "]".repeat(130));
        for bad in [
            r#"{"a":1e400}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00x"}"#,
            r#"{"a":01}"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            "{\"a\":\"tab\tinside\"}",
            r#"{"a":1} x"#,
            &deep,
        ] {
            let want = serde_json::from_str::<Value>(bad).expect_err(bad).to_string();
            assert_eq!(check_json(bad).expect_err(bad).to_string(), want, "{bad}");
        }
    }

    #[test]
    fn the_split_alone_is_not_the_check() {
        // serde_json skips a RawValue by its grammar only: what a Value parse refuses past that
        // still splits, which is why check_json runs first.
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(130), "]".repeat(130));
        for text in [r#"{"a":1e400}"#, r#"{"a":"\ud800"}"#, &deep] {
            assert!(check_json(text).is_err(), "{text}");
            assert_eq!(RawObject::split(text).map(|o| o.len()), Some(1), "{text}");
        }
        for not_object in ["[1]", "1", r#""{}""#, "{", r#"{"a":1,}"#] {
            assert!(RawObject::split(not_object).is_none(), "{not_object}");
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::from),
            r#"["\\\t\n é\x00]{0,6}"#.prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(r#"[a-z"\\ .]{0,4}"#, inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// What the old `Map` path kept, printed by serde_json, is what attrs hold: byte for byte
        /// for serde_json's own (compact, sorted) text, and equal as JSON for a pretty-printed one
        /// (whose nested values keep their blanks).
        #[test]
        fn attrs_equal_the_map_they_replace(map in proptest::collection::btree_map(r#"[a-z"\\. ]{0,6}"#, arb_json(), 0..8)) {
            let map: Map<String, Value> = map.into_iter().collect();
            let compact = Value::Object(map.clone()).to_string();
            let same = attrs_of(&compact);
            prop_assert_eq!(same.as_str(), compact.as_str());
            let pretty = serde_json::to_string_pretty(&Value::Object(map.clone())).unwrap();
            let attrs = attrs_of(&pretty);
            prop_assert_eq!(attrs.len(), map.len());
            // The old path's map is a parse of the payload (serde_json's float parse is not exact, so
            // not always `map` itself).
            let old: Value = serde_json::from_str(&pretty).unwrap();
            prop_assert_eq!(attrs.to_value(), old);
        }

        #[test]
        fn check_json_agrees_with_a_value_parse(s in r#"[{}\[\]":,0-9a-z\\ .eE+-]{0,40}"#) {
            prop_assert_eq!(check_json(&s).is_ok(), serde_json::from_str::<Value>(&s).is_ok(), "{}", s);
        }
    }
}
