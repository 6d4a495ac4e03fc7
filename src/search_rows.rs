//! The one row a stored event is read into by either store's search (`db::search::PgLogSearch`,
//! `sqlite::search::SqliteLogSearch`), and the one way it becomes a [`FoundEvent`]. The SQL types
//! are SQLite's (time as µs since the epoch, JSON as text); the PostgreSQL statements cast to them.

use actors::domain::Level;
use actors::search::{FoundEvent, SearchFailed};
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use diesel::QueryableByName;

/// The columns of `logs` an answer shows, under these names.
#[derive(QueryableByName, Debug)]
pub(crate) struct EventRow {
    /// Event time, µs since the epoch.
    #[diesel(sql_type = BigInt)]
    pub ts: i64,
    #[diesel(sql_type = Integer)]
    pub level: i32,
    #[diesel(sql_type = Text)]
    pub service: String,
    #[diesel(sql_type = Text)]
    pub message: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub user_id: Option<String>,
    /// A JSON object, as text.
    #[diesel(sql_type = Text)]
    pub attrs: String,
    #[diesel(sql_type = Text)]
    pub topic: String,
    #[diesel(sql_type = Integer)]
    pub partition: i32,
    #[diesel(sql_type = BigInt)]
    pub offset: i64,
}

/// The select list of [`EventRow`] on PostgreSQL, from `logs` under `alias` (`l.` or empty).
pub(crate) fn pg_columns(alias: &str) -> String {
    format!(
        "(extract(epoch FROM {alias}ts) * 1000000)::bigint AS ts, {alias}level::integer AS level, {alias}service, \
         {alias}message, {alias}user_id, {alias}attrs::text AS attrs, {alias}topic, {alias}\"partition\", {alias}\"offset\""
    )
}

impl EventRow {
    /// The row as a search answers it. A level outside 0..=5 or attrs that are not JSON are a
    /// corrupt row (both schemas CHECK the level; only a file or table written around them holds
    /// one): the caller is told, rather than shown an event with a level or attrs made up.
    pub(crate) fn found(self) -> Result<FoundEvent, SearchFailed> {
        let at = || format!("{}/{}/{}", self.topic, self.partition, self.offset);
        let level = i16::try_from(self.level).ok().and_then(Level::from_i16).ok_or_else(|| {
            SearchFailed::Corrupt(format!("the stored event at {} has level {}, not 0 to 5", at(), self.level))
        })?;
        let attrs = serde_json::from_str(&self.attrs).map_err(|e| {
            SearchFailed::Corrupt(format!("the stored event at {} has attrs that are not JSON: {e}", at()))
        })?;
        Ok(FoundEvent {
            ts: FoundEvent::ts_of_micros(self.ts),
            level,
            service: self.service,
            message: self.message,
            user_id: self.user_id,
            attrs,
            topic: self.topic,
            partition: self.partition,
            offset: self.offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(level: i32, attrs: &str) -> EventRow {
        EventRow {
            ts: 1_764_590_400_123_456,
            level,
            service: "api".into(),
            message: "m".into(),
            user_id: None,
            attrs: attrs.into(),
            topic: "logs".into(),
            partition: 2,
            offset: 7,
        }
    }

    #[test]
    fn a_row_is_found_with_its_level_and_attrs_and_a_corrupt_one_is_an_error() {
        let found = row(4, r#"{"k":[1]}"#).found().unwrap();
        assert_eq!((found.level, found.attrs), (Level::Error, serde_json::json!({"k": [1]})));
        assert_eq!(found.ts.timestamp_micros(), 1_764_590_400_123_456);
        for (level, attrs) in [(6, "{}"), (-1, "{}"), (70_000, "{}"), (2, "{not json")] {
            match row(level, attrs).found() {
                Err(SearchFailed::Corrupt(why)) => assert!(why.contains("logs/2/7"), "{why}"),
                other => panic!("level {level}, attrs {attrs}: {other:?}"),
            }
        }
    }
}
