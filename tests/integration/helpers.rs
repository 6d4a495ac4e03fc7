//! Shared test plumbing: where the stack is, fresh per-test resources, and deadline-bound waiting.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use log_analyzer::config::Settings;

/// Addresses of the real services, from the same variables the application reads.
pub struct Stack {
    pub kafka_brokers: String,
    pub database_url: String,
    pub redis_url: String,
}

pub fn stack() -> Stack {
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    Stack {
        kafka_brokers: var("KAFKA_BROKERS", "127.0.0.1:9092"),
        database_url: var("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/log_analyzer"),
        redis_url: var("REDIS_URL", "redis://127.0.0.1:6379"),
    }
}

/// A name no other test (or earlier run) uses: `<prefix>_<pid>_<micros>_<n>`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let micros =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() % 1_000_000_000_000;
    format!("{prefix}_{}_{micros}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A database of its own for one test, dropped when the test calls `drop_db`.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl TestDatabase {
    pub async fn create() -> TestDatabase {
        let admin_url = stack().database_url;
        let name = unique("la_test");
        let client = connect(&admin_url).await;
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("CREATE DATABASE");
        let url = with_database(&admin_url, &name);
        TestDatabase { name, url, admin_url }
    }

    /// A plain tokio-postgres client to this database, for checking what the application wrote.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }

    pub async fn drop_db(self) {
        let client = connect(&self.admin_url).await;
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .await
            .expect("DROP DATABASE");
    }
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let cut = base.rfind('/').expect("database URL has a path");
    format!("{}/{name}{query}", &base[..cut])
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e} (is `scripts/stack.sh up` running?)"));
    tokio::spawn(connection);
    client
}

/// Settings for a test: the stack's addresses plus the test's own overrides.
pub fn settings(overrides: &[(&str, &str)]) -> Settings {
    let s = stack();
    let mut vars = std::collections::BTreeMap::from([
        ("KAFKA_BROKERS".to_owned(), s.kafka_brokers),
        ("DATABASE_URL".to_owned(), s.database_url),
        ("REDIS_URL".to_owned(), s.redis_url),
    ]);
    vars.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Settings::from_vars(vars).expect("test settings")
}

#[allow(dead_code)] // the ingest and API tests wait with it
/// Polls `check` until it yields `Some`, failing the test with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
