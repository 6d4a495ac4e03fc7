//! Dead letters on the embedded store: `rejects list` and `rejects replay`, as `crate::db::rejects`
//! does them on PostgreSQL (the same rows, filter and report). STUB (helper R fills it).

use actors::domain::ParseRules;
use chrono::{DateTime, Utc};

use super::SqliteDb;
use crate::db::rejects::{RejectFilter, RejectRow, ReplayReport};

pub async fn list(_db: &SqliteDb, _filter: &RejectFilter, _limit: i64) -> anyhow::Result<Vec<RejectRow>> {
    anyhow::bail!("not written yet")
}

pub async fn replay(
    _db: &SqliteDb,
    _filter: &RejectFilter,
    _rules: &ParseRules,
    _topic: &str,
    _now: DateTime<Utc>,
) -> anyhow::Result<ReplayReport> {
    anyhow::bail!("not written yet")
}
