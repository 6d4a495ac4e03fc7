//! POST /ingest's PostgreSQL side: plain tokio-postgres clients (COPY and transactions, which
//! diesel-async does not offer) and the answers stored by `Idempotency-Key`.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use tokio_postgres::{Client, NoTls};

/// Idle clients kept for the next request: enough for a few concurrent bodies with dead letters.
const IDLE_CLIENTS: usize = 4;
/// A body's dead letters go in as one COPY (up to millions of rows for an 8 MiB body of junk), far
/// longer than a stats query may take; this still ends a statement on a hung server.
const STATEMENT_TIMEOUT_MS: u64 = 120_000;

/// Connects on demand and keeps a few idle clients. A client is handed back only after its
/// transaction ended, so a client in an unknown state is dropped (its connection closes and the
/// server rolls back whatever was open).
pub struct DirectClients {
    url: String,
    connect_timeout: Duration,
    idle: Mutex<Vec<Client>>,
}

impl DirectClients {
    pub fn new(url: &str, connect_timeout: Duration) -> DirectClients {
        let separator = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{separator}options=-c%20statement_timeout%3D{STATEMENT_TIMEOUT_MS}");
        DirectClients { url, connect_timeout, idle: Mutex::new(Vec::new()) }
    }

    pub async fn get(&self) -> anyhow::Result<Client> {
        loop {
            let idle = self.idle.lock().expect("idle clients").pop();
            match idle {
                Some(client) if !client.is_closed() => return Ok(client),
                Some(_) => continue,
                None => break,
            }
        }
        let (client, connection) =
            tokio::time::timeout(self.connect_timeout, tokio_postgres::connect(&self.url, NoTls))
                .await
                .map_err(|_| anyhow::anyhow!("connecting to PostgreSQL timed out after {:?}", self.connect_timeout))?
                .context("connecting to PostgreSQL")?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// Keeps `client` for reuse; call only when no transaction is open on it.
    pub fn put(&self, client: Client) {
        let mut idle = self.idle.lock().expect("idle clients");
        if !client.is_closed() && idle.len() < IDLE_CLIENTS {
            idle.push(client);
        }
    }
}

/// What a key's row says when a request claims it.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key is this request's now: go on, then `finish` or `release` it.
    Claimed,
    /// An earlier request with the same body finished: its status and body.
    Answered { status: u16, body: Vec<u8> },
    /// An earlier request with the same body has not finished (still running, or interrupted).
    Running { since: chrono::DateTime<chrono::Utc> },
    /// The key was used with another body.
    OtherBody,
}

/// Claims `key` for a body hashing to `hash`, before anything is produced: the row is committed at
/// once, so a concurrent duplicate finds it and produces nothing. A row older than 24 h is expired and
/// claimed again; expired rows of other keys are deleted on the way.
pub async fn claim(client: &Client, key: &str, hash: &[u8]) -> anyhow::Result<Claim> {
    client
        .execute("DELETE FROM ingest_requests WHERE created_at < now() - interval '24 hours' AND key <> $1", &[&key])
        .await
        .context("expiring idempotency keys")?;
    let claimed = client
        .query_opt(
            "INSERT INTO ingest_requests (key, request_hash) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET request_hash = EXCLUDED.request_hash, status = NULL, response = NULL, \
             created_at = now() WHERE ingest_requests.created_at < now() - interval '24 hours' RETURNING 1",
            &[&key, &hash],
        )
        .await
        .context("claiming the idempotency key")?;
    if claimed.is_some() {
        return Ok(Claim::Claimed);
    }
    let row = client
        .query_opt("SELECT request_hash, status, response, created_at FROM ingest_requests WHERE key = $1", &[&key])
        .await
        .context("reading the idempotency key")?;
    // Released by its request between the two statements: that request produced nothing.
    let Some(row) = row else { return Box::pin(claim(client, key, hash)).await };
    let stored_hash: Vec<u8> = row.get(0);
    if stored_hash != hash {
        return Ok(Claim::OtherBody);
    }
    let status: Option<i16> = row.get(1);
    let body: Option<Vec<u8>> = row.get(2);
    Ok(match (status, body) {
        (Some(status), Some(body)) => Claim::Answered { status: status as u16, body },
        _ => Claim::Running { since: row.get(3) },
    })
}

/// Records the answer of the request holding `key`; run it inside the transaction that stores the
/// request's dead letters, so both or neither are kept.
pub async fn finish(client: &Client, key: &str, status: u16, body: &[u8]) -> anyhow::Result<()> {
    client
        .execute(
            "UPDATE ingest_requests SET status = $2, response = $3 WHERE key = $1",
            &[&key, &(status as i16), &body],
        )
        .await
        .context("recording the answer under the idempotency key")?;
    Ok(())
}

/// Gives `key` up (its request produced nothing), so that a retry runs afresh.
pub async fn release(client: &Client, key: &str) -> anyhow::Result<()> {
    client
        .execute("DELETE FROM ingest_requests WHERE key = $1 AND status IS NULL", &[&key])
        .await
        .context("releasing the idempotency key")?;
    Ok(())
}

/// Opens the transaction a request's dead letters and answer go into.
pub async fn begin(client: &Client) -> anyhow::Result<()> {
    client.batch_execute("BEGIN").await.context("opening the ingest transaction")
}

pub async fn commit(client: &Client) -> anyhow::Result<()> {
    client.batch_execute("COMMIT").await.context("committing the dead letters and the answer")
}

pub async fn rollback(client: &Client) -> anyhow::Result<()> {
    client.batch_execute("ROLLBACK").await.context("rolling back the dead letters")
}
