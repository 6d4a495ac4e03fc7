//! `WindowQuery` and `BucketSource` over SQLite: the window answers memory cannot give, and the
//! buckets memory is rebuilt from. STUB (helper R fills it).

use std::sync::Arc;
use std::time::Duration;

use actors::domain::counts::KeywordSet;
use actors::ports::{BucketSource, CannotAnswer, Rebuilt, StoreError, WindowAnswer, WindowQuery, WindowQuestion};
use async_trait::async_trait;

use super::SqliteDb;

#[derive(Clone)]
pub struct SqliteStats {
    #[allow(dead_code)]
    db: SqliteDb,
    #[allow(dead_code)]
    topics: Vec<String>,
    #[allow(dead_code)]
    keywords: Arc<KeywordSet>,
    #[allow(dead_code)]
    timeout: Duration,
}

impl SqliteStats {
    pub fn new(db: SqliteDb, topics: Vec<String>, keywords: Arc<KeywordSet>, timeout: Duration) -> SqliteStats {
        SqliteStats { db, topics, keywords, timeout }
    }

    /// True when SQLite answers a trivial query in time.
    pub async fn ping(&self) -> bool {
        false
    }
}

#[async_trait]
impl WindowQuery for SqliteStats {
    async fn answer(&self, _question: &WindowQuestion) -> Result<WindowAnswer, CannotAnswer> {
        Err(CannotAnswer::Unavailable("SqliteStats is not written yet".into()))
    }
}

pub struct SqliteBucketSource {
    #[allow(dead_code)]
    db: SqliteDb,
}

impl SqliteBucketSource {
    pub fn new(db: SqliteDb) -> SqliteBucketSource {
        SqliteBucketSource { db }
    }
}

#[async_trait]
impl BucketSource for SqliteBucketSource {
    async fn snapshot(
        &self,
        _topics: &[String],
        _first: i64,
        _last: i64,
        _keywords: &KeywordSet,
    ) -> Result<Rebuilt, StoreError> {
        Err(StoreError::Unavailable("SqliteBucketSource is not written yet".into()))
    }
}
