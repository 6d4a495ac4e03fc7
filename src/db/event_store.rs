//! The PostgreSQL EventStore: one transaction per batch — fence the partition's offset, binary COPY
//! the events and the dead letters, commit.

use std::collections::HashSet;
use std::time::Duration;

use actors::domain::Tokens;
use actors::ingest::Batch;
use actors::ports::{EventStore, StoreError};
use async_trait::async_trait;
use bytes::{BufMut, BytesMut};
use chrono::NaiveDate;
use futures::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};

const COPY_LOGS: &str =
    "COPY logs (ts, level, service, user_id, message, tokens, attrs, topic, \"partition\", \"offset\") \
                         FROM STDIN (FORMAT binary)";
const LOGS_TYPES: [Type; 10] = [
    Type::TIMESTAMPTZ,
    Type::INT2,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT_ARRAY,
    Type::JSONB,
    Type::TEXT,
    Type::INT4,
    Type::INT8,
];
const COPY_REJECTS: &str =
    "COPY log_rejects (source, topic, \"partition\", \"offset\", reason, detail, raw, raw_len, kafka_ts) \
                            FROM STDIN (FORMAT binary)";
const REJECTS_TYPES: [Type; 9] = [
    Type::TEXT,
    Type::TEXT,
    Type::INT4,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::BYTEA,
    Type::INT4,
    Type::TIMESTAMPTZ,
];
const FENCE: &str = "UPDATE kafka_offsets SET next_offset = $4, updated_at = now() \
                     WHERE topic = $1 AND \"partition\" = $2 AND next_offset = $3";
/// The fence that also announces the batch to live tails: NOTIFY is delivered on commit only, in
/// commit order, and only when the fence moved (one row, one notification); one statement, so the
/// announcement costs no round trip.
const FENCE_ANNOUNCED: &str = "UPDATE kafka_offsets SET next_offset = $4, updated_at = now() \
                               WHERE topic = $1 AND \"partition\" = $2 AND next_offset = $3 \
                               RETURNING pg_notify($5, $6)";

/// `attrs` as a jsonb parameter: the event already holds the object's JSON text, so it is sent as
/// is (jsonb's binary form is a version byte and the text) instead of being printed from a map.
#[derive(Debug)]
pub(crate) struct JsonbText<'a>(pub &'a str);

impl ToSql for JsonbText<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.put_u8(1);
        out.put_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }

    to_sql_checked!();
}

/// `tokens` as a text[] parameter, written from the spans without a `Vec<String>`.
#[derive(Debug)]
pub(crate) struct TokenArray<'a>(pub &'a Tokens);

impl ToSql for TokenArray<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        // The array wire format: dimensions, has-nulls flag, element type, then per dimension its
        // length and lower bound, then each element as length and bytes. No elements: no dimension.
        let n = i32::try_from(self.0.len())?;
        out.put_i32(i32::from(n > 0));
        out.put_i32(0);
        out.put_u32(Type::TEXT.oid());
        if n > 0 {
            out.put_i32(n);
            out.put_i32(1);
        }
        for token in self.0.iter() {
            out.put_i32(i32::try_from(token.len())?);
            out.put_slice(token.as_bytes());
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TEXT_ARRAY
    }

    to_sql_checked!();
}

/// Default bound on one batch's whole write (`DATABASE_WRITE_TIMEOUT_MS`).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The batch's statements, prepared once per connection: each would otherwise cost a round trip
/// to be parsed again, for every batch.
#[derive(Clone)]
struct Prepared {
    fence: Statement,
    fence_announced: Statement,
    copy_logs: Statement,
    copy_rejects: Statement,
}

/// Writes batches over its own connection (COPY needs one the pool cannot lend for long).
pub struct PgEventStore {
    url: String,
    client: Option<Client>,
    /// Prepared on `client`; dropped with it.
    prepared: Option<Prepared>,
    /// Days whose `logs` partition is known to exist.
    known_days: HashSet<NaiveDate>,
    /// A server that stops answering (hung, SIGSTOPped, a dead link) never errors by itself.
    timeout: Duration,
    /// Whether each commit is announced to live tails (`TAIL_NOTIFY`).
    announce: bool,
}

impl PgEventStore {
    pub fn new(url: impl Into<String>) -> PgEventStore {
        PgEventStore {
            url: url.into(),
            client: None,
            prepared: None,
            known_days: HashSet::new(),
            timeout: DEFAULT_WRITE_TIMEOUT,
            announce: true,
        }
    }

    /// Gives up on a write (and its connection) that has not finished within `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> PgEventStore {
        self.timeout = timeout;
        self
    }

    /// Announces each committed batch on [`CHANNEL`](crate::db::tail::CHANNEL) (the default), or not.
    pub fn announcing(mut self, announce: bool) -> PgEventStore {
        self.announce = announce;
        self
    }

    async fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await.map_err(store_error)?;
            tokio::spawn(async move {
                // Errors surface on the client's next call; nothing to do here.
                let _ = connection.await;
            });
            // Every row this connection adds to `logs` is fenced (see the `logs_epoch` migration): its
            // COPY does not bump the epoch that readers of kept window counts check.
            client.batch_execute("SET log_analyzer.fenced = 'on'").await.map_err(store_error)?;
            self.client = Some(client);
            self.prepared = None;
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// The connection and its prepared statements.
    async fn prepared(&mut self) -> Result<(&mut Client, Prepared), StoreError> {
        self.client().await?;
        if self.prepared.is_none() {
            let client = self.client.as_ref().expect("connected above");
            self.prepared = Some(Prepared {
                fence: client.prepare(FENCE).await.map_err(store_error)?,
                fence_announced: client.prepare(FENCE_ANNOUNCED).await.map_err(store_error)?,
                copy_logs: client.prepare(COPY_LOGS).await.map_err(store_error)?,
                copy_rejects: client.prepare(COPY_REJECTS).await.map_err(store_error)?,
            });
        }
        let prepared = self.prepared.clone().expect("prepared above");
        Ok((self.client.as_mut().expect("connected above"), prepared))
    }

    /// Makes sure every day in the batch has its partition, outside the batch's transaction so that
    /// the DDL's lock on `logs` is held only for an instant.
    async fn ensure_days(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let missing: HashSet<NaiveDate> =
            batch.events.iter().map(|e| e.event.ts.date_naive()).filter(|d| !self.known_days.contains(d)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        for day in &missing {
            client.execute("SELECT ensure_logs_partition($1)", &[day]).await.map_err(store_error)?;
        }
        self.known_days.extend(missing);
        Ok(())
    }
}

/// Sorts a failure by what retrying can do: data errors (SQLSTATE classes 22 data exception, 23
/// integrity constraint, 54 program limit) fail the same way every time; everything else —
/// connection, resources, operator intervention, lock and serialization conflicts, errors without a
/// SQLSTATE (I/O) — may pass, so the batch waits and never skips data.
fn store_error(e: tokio_postgres::Error) -> StoreError {
    let text = crate::telemetry::error_chain(&e);
    match e.code().map(|c| c.code().get(..2).unwrap_or_default()) {
        Some("22" | "23" | "54") => StoreError::Rejected(text),
        _ => StoreError::Unavailable(text),
    }
}

/// What a tail listener needs to read the batch's rows back: the range and the rows' time span.
fn announcement(batch: &Batch) -> crate::db::tail::Announcement {
    let times = batch.events.iter().map(|e| e.event.ts.timestamp_micros());
    let ts_micros = times.clone().min().zip(times.max());
    crate::db::tail::Announcement {
        topic: batch.topic.to_string(),
        partition: batch.partition,
        from: batch.from,
        to: batch.to,
        ts_micros,
    }
}

#[async_trait]
impl EventStore for PgEventStore {
    async fn write(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.write_once(batch)).await {
            Ok(result) => result,
            Err(_) => {
                // The server may still hold this transaction (and the partition's row lock); dropping
                // the connection lets it roll back, or commit if COMMIT already reached it — the next
                // attempt is then fenced and the partition restarts from what is stored.
                self.reset();
                Err(StoreError::Unavailable(format!(
                    "PostgreSQL did not finish the batch within {} ms; connection dropped",
                    timeout.as_millis()
                )))
            }
        }
    }

    fn reset(&mut self) {
        self.client = None;
        self.prepared = None;
        // A partition may have been dropped meanwhile; ask again.
        self.known_days.clear();
    }
}

impl PgEventStore {
    async fn write_once(&mut self, batch: &Batch) -> Result<(), StoreError> {
        self.ensure_days(batch).await?;
        let announce = self.announce;
        let (client, prepared) = self.prepared().await?;
        let tx = client.transaction().await.map_err(store_error)?;
        let topic: &str = &batch.topic;
        // The fence first: its row lock also queues a racing writer of this partition behind us.
        let moved = if announce {
            let payload = announcement(batch).payload();
            tx.execute(
                &prepared.fence_announced,
                &[&topic, &batch.partition, &batch.from, &batch.to, &crate::db::tail::CHANNEL, &payload],
            )
            .await
            .map_err(store_error)?
        } else {
            tx.execute(&prepared.fence, &[&topic, &batch.partition, &batch.from, &batch.to])
                .await
                .map_err(store_error)?
        };
        if moved != 1 {
            let stored = tx
                .query_opt(
                    "SELECT next_offset FROM kafka_offsets WHERE topic = $1 AND \"partition\" = $2",
                    &[&topic, &batch.partition],
                )
                .await
                .map_err(store_error)?
                .map(|row| row.get::<_, i64>(0));
            tx.rollback().await.map_err(store_error)?;
            return Err(StoreError::Fenced { batch_from: batch.from, stored });
        }

        if !batch.events.is_empty() {
            let sink = tx.copy_in(&prepared.copy_logs).await.map_err(store_error)?;
            let writer = BinaryCopyInWriter::new(sink, &LOGS_TYPES);
            pin_mut!(writer);
            for stored in &batch.events {
                let e = &stored.event;
                let level = e.level.as_i16();
                let user_id = e.user_id.as_ref().map(|u| u.as_str());
                let attrs = JsonbText(e.attrs.as_str());
                let tokens = TokenArray(&e.tokens);
                let row: [&(dyn ToSql + Sync); 10] = [
                    &e.ts,
                    &level,
                    &e.service.as_str(),
                    &user_id,
                    &e.message,
                    &tokens,
                    &attrs,
                    &topic,
                    &batch.partition,
                    &stored.offset,
                ];
                writer.as_mut().write(&row).await.map_err(store_error)?;
            }
            writer.finish().await.map_err(store_error)?;
        }

        if !batch.rejects.is_empty() {
            let sink = tx.copy_in(&prepared.copy_rejects).await.map_err(store_error)?;
            let writer = BinaryCopyInWriter::new(sink, &REJECTS_TYPES);
            pin_mut!(writer);
            for r in &batch.rejects {
                let raw_len = i32::try_from(r.raw_len).unwrap_or(i32::MAX);
                let row: [&(dyn ToSql + Sync); 9] = [
                    &"kafka",
                    &topic,
                    &batch.partition,
                    &r.offset,
                    &r.reason.code(),
                    &r.detail,
                    &r.raw,
                    &raw_len,
                    &r.timestamp,
                ];
                writer.as_mut().write(&row).await.map_err(store_error)?;
            }
            writer.finish().await.map_err(store_error)?;
        }

        tx.commit().await.map_err(store_error)
    }
}
