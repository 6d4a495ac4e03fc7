//! The intake's PostgreSQL side: plain tokio-postgres clients (COPY and transactions, which
//! diesel-async does not offer), the answers stored by `Idempotency-Key`, and `IntakeStore`, the
//! store half of the intake's `IntakeSink` (dead letters through `rejects::RejectCopy`).

use std::sync::Mutex;
use std::time::Duration;

use actors::intake::DeadLetter;
use anyhow::Context;
use tokio_postgres::{Client, NoTls};

use super::rejects::RejectCopy;

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

pub use actors::intake::Claim;

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

/// One body's PostgreSQL session: at most one client, the transaction its dead letters and answer
/// go into, and the COPY of its dead letters.
#[derive(Default)]
pub struct IntakeSession {
    client: Option<Client>,
    in_transaction: bool,
    copy: Option<RejectCopy>,
    /// A statement failed on the client: its state is unknown, so it is never reused.
    broken: bool,
}

/// The intake's store: dead letters and Idempotency-Key answers, on clients of its own.
pub struct IntakeStore {
    clients: DirectClients,
}

impl IntakeStore {
    pub fn new(clients: DirectClients) -> IntakeStore {
        IntakeStore { clients }
    }

    pub async fn claim(&self, held: &mut IntakeSession, key: &str, hash: &[u8]) -> anyhow::Result<Claim> {
        let client = self.clients.get().await?;
        let claim = claim(&client, key, hash).await?;
        held.client = Some(client);
        Ok(claim)
    }

    /// The first call opens the transaction and the COPY.
    pub async fn store_dead_letters(&self, held: &mut IntakeSession, letters: &[DeadLetter<'_>]) -> anyhow::Result<()> {
        let stored = async {
            if held.copy.is_none() {
                if held.client.is_none() {
                    held.client = Some(self.clients.get().await?);
                }
                let client = held.client.as_ref().expect("just set");
                begin(client).await?;
                held.in_transaction = true;
                held.copy = Some(RejectCopy::start(client).await?);
            }
            let copy = held.copy.as_mut().expect("just set");
            for letter in letters {
                copy.push(letter.source, letter.reason, &letter.detail, letter.raw).await?;
            }
            anyhow::Ok(())
        }
        .await;
        held.broken |= stored.is_err();
        stored
    }

    pub async fn seal_dead_letters(&self, held: &mut IntakeSession) -> anyhow::Result<()> {
        let Some(copy) = held.copy.take() else { return Ok(()) };
        let sealed = copy.finish().await.map(drop);
        held.broken |= sealed.is_err();
        sealed
    }

    /// Commits the session's transaction, with the answer recorded under its key; a session that
    /// opened none and records nothing only hands its client back.
    pub async fn commit(&self, held: IntakeSession, answer: Option<(&str, u16, &[u8])>) -> anyhow::Result<()> {
        let Some(client) = held.client else { return Ok(()) };
        if held.in_transaction || answer.is_some() {
            if !held.in_transaction {
                begin(&client).await?;
            }
            if let Some((key, status, body)) = answer {
                finish(&client, key, status, body).await?;
            }
            commit(&client).await?;
        }
        self.clients.put(client);
        Ok(())
    }

    /// Rolls back what the session holds and releases `key`: on its own client when that is sound,
    /// else on a fresh one (the server rolls the broken one back as its connection closes).
    pub async fn discard(&self, held: IntakeSession, key: Option<&str>) -> anyhow::Result<()> {
        let IntakeSession { client, in_transaction, copy, broken } = held;
        drop(copy);
        let client = match client {
            Some(client) if !broken => {
                if in_transaction {
                    rollback(&client).await?;
                }
                client
            }
            unsound => {
                drop(unsound);
                if key.is_none() {
                    return Ok(());
                }
                self.clients.get().await?
            }
        };
        if let Some(key) = key {
            release(&client, key).await?;
        }
        self.clients.put(client);
        Ok(())
    }
}
